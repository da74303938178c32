import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqa_store.fit.grid import CellPrediction
from iqa_store.report import aggregate, format_summary, scatter_predicted_vs_mos, to_json_records, trend_plot

METRICS = ["srcc", "plcc", "plcc_logistic", "krcc", "rmse"]


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("live", "koniq"):
        for combination in ("brisque", "clip-vitb16", "brisque+clip-vitb16"):
            for regressor in ("ridge", "mlp"):
                for split in range(4 if dataset == "live" else 3):
                    rows.append({"dataset": dataset, "combination": combination, "regressor": regressor,
                                 "protocol": "random-80-20", "split": split, "n_train": 80, "n_val": 0,
                                 "n_test": 20, "alpha": 1.0, **dict(zip(METRICS, rng.uniform(0, 1, 5)))})
    return pd.DataFrame(rows)


def test_aggregate_matches_numpy(table):
    agg = aggregate(table)
    assert len(agg) == 2 * 3 * 2
    assert list(agg.columns[:5]) == ["dataset", "combination", "regressor", "protocol", "n_splits"]
    for _, row in agg.iterrows():
        mask = ((table.dataset == row.dataset) & (table.combination == row.combination)
                & (table.regressor == row.regressor))
        assert row.n_splits == mask.sum() == (4 if row.dataset == "live" else 3)
        for metric in METRICS:
            values = table.loc[mask, metric].to_numpy()
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            assert row[f"{metric}_median"] == pytest.approx(np.median(values), abs=1e-12)
    # Groups keep their order of first appearance.
    assert agg["dataset"].tolist()[:6] == ["live"] * 6


def test_aggregate_single_split_std_is_nan(table):
    agg = aggregate(table[table.split == 0])
    assert agg["srcc_std"].isna().all() and (agg["n_splits"] == 1).all()


def test_aggregate_missing_columns():
    with pytest.raises(ValueError, match="lacks"):
        aggregate(pd.DataFrame({"dataset": ["x"]}))


def test_format_summary_is_fixed_width(table):
    agg = aggregate(table)
    text = format_summary(agg)
    lines = text.splitlines()
    assert len(lines) == 2 + len(agg)
    assert lines[0].split()[:5] == ["dataset", "combination", "regressor", "protocol", "n"]
    first = agg.iloc[0]
    assert f"{first.srcc_mean:.4f}±{first.srcc_std:.4f}" in lines[2]
    assert f"{first.srcc_median:.4f}" in lines[2]
    # Columns line up: every row's SRCC cell ends where the header's does.
    end = lines[0].index("SRCC") + len("SRCC")
    assert all(line[end - 1] != " " and line[end] == " " for line in lines[2:])


def test_to_json_records_is_plain_json(table):
    agg = aggregate(table[table.split == 0])
    records = to_json_records(agg)
    text = json.dumps(records, allow_nan=False)
    assert json.loads(text)[0]["srcc_std"] is None
    assert records[0]["srcc_mean"] == pytest.approx(agg["srcc_mean"].iloc[0])
    assert isinstance(records[0]["n_splits"], int)


def predictions(combination="clip", regressor="ridge", n_splits=3):
    rng = np.random.default_rng(1)
    out = []
    for split in range(n_splits):
        y = rng.uniform(1, 5, 40)
        out.append(CellPrediction("live", combination, regressor, "random-80-20", split, np.arange(40),
                                  y, y + rng.normal(0, 0.3, 40)))
    return out


def test_scatter_png(tmp_path):
    (path,) = scatter_predicted_vs_mos(predictions(), tmp_path / "plots" / "scatter.png", "LIVE")
    assert path == tmp_path / "plots" / "scatter.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (600, 600)
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn


def test_scatter_rejects_mixed_groups(tmp_path):
    with pytest.raises(ValueError, match="mix"):
        scatter_predicted_vs_mos(predictions() + predictions(combination="brisque"), tmp_path / "x.png")


def test_scatter_into_directory_writes_one_png_per_group(tmp_path):
    paths = scatter_predicted_vs_mos(predictions() + predictions(combination="openclip:ViT-B/16"), tmp_path, "LIVE")
    assert [p.name for p in paths] == ["live__clip__ridge__random-80-20.png",
                                       "live__openclip_ViT-B_16__ridge__random-80-20.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_trend_plot_png(tmp_path, table):
    path = trend_plot(aggregate(table[table.regressor == "ridge"]), tmp_path / "trend.png", size=(8, 4), dpi=50)
    with Image.open(path) as image:
        assert image.size == (400, 200)
    with pytest.raises(ValueError, match="no 'r2_mean'"):
        trend_plot(aggregate(table), tmp_path / "bad.png", metric="r2")

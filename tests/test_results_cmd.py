"""``iqa-store results`` and ``iqa-store report RUN``: every run listed, one shown, tidy tables and
features exported for pandas and xarray, a run's report with a paired comparison; each checked
against the run's own results.csv, the HDF5 export and scipy."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from iqa_store.cli import cli
from iqa_store.fit.schema import METRICS, TIDY_COLUMNS
from iqa_store.store import FeatureStore

DATASET = ["-d", "csv", "-o", "labels=labels.csv"]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """BRISQUE and a random 8-d feature on 24 images, fitted with ridge and linear over 5 splits."""
    from conftest import write_images
    base = tmp_path_factory.mktemp("results")
    root = base / "data"
    names = write_images(root, 24, size=(64, 80))
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, 24)}).to_csv(root / "labels.csv", index=False)
    store = str(base / "store")
    invoke("extract", "-m", "brisque", *DATASET, "--root", str(root), "--store", store, "--workers", "0")
    with h5py.File(base / "noise.h5", "w") as handle:
        handle.create_dataset("features", data=np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32))
        handle.create_dataset("ids", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
    invoke("import", str(base / "noise.h5"), *DATASET, "--root", str(root), "--name", "noise", "--store", store)
    out = json.loads(invoke("fit", "-f", "brisque", "-f", "noise", "-f", "brisque+noise", "-r", "ridge", "-r", "linear",
                            "--splits", "5", "--store", store, "--format", "json"))
    run = Path(out["run"] if isinstance(out, dict) else out[0]["run"]).name
    results = pd.read_csv(next((base / "store" / "results" / run).rglob("results.csv")))
    return {"base": base, "store": store, "run": run, "results": results}


def test_ls_lists_the_run_with_its_cells(fitted: dict) -> None:
    runs = json.loads(invoke("results", "ls", "--store", fitted["store"], "--format", "json"))
    [run] = [r for r in runs if r["run"] == fitted["run"]]
    assert run["cells"] == len(fitted["results"]) == 3 * 2 * 5 and run["datasets"] == ["csv"]
    assert run["splits"] == 5 and run["regressors"] == ["linear", "ridge"]
    assert fitted["run"] in invoke("results", "ls", "--store", fitted["store"])


def test_show_gives_the_spec_and_the_summary_of_its_rows(fitted: dict) -> None:
    shown = json.loads(invoke("results", "show", fitted["run"][:12], "--store", fitted["store"], "--format", "json"))
    assert shown["specs"][0]["combinations"] == ["brisque", "noise", "brisque+noise"]
    means = fitted["results"].groupby(["combination", "regressor"])["srcc"].mean()
    for line in shown["summary"]:
        assert line["srcc_mean"] == pytest.approx(means[line["combination"], line["regressor"]])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_is_one_row_per_cell_and_metric(fitted: dict, suffix: str) -> None:
    out = fitted["base"] / f"tidy{suffix}"
    invoke("results", "export", fitted["run"], "-o", str(out), "--store", fitted["store"])
    tidy = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(tidy.columns) == list(TIDY_COLUMNS) and len(tidy) == len(fitted["results"]) * len(METRICS)
    wide = tidy.pivot_table(index=["combination", "regressor", "split"], columns="metric", values="value")
    expected = fitted["results"].set_index(["combination", "regressor", "split"])[list(METRICS)]
    pd.testing.assert_frame_equal(wide.loc[expected.index, list(METRICS)], expected, check_names=False)
    everything = fitted["base"] / f"all{suffix}"
    invoke("results", "export", "--all", "-o", str(everything), "--store", fitted["store"])
    assert len(pd.read_parquet(everything) if suffix == ".parquet" else pd.read_csv(everything)) == len(tidy)


def test_export_refuses_what_it_cannot_write(fitted: dict) -> None:
    result = CliRunner().invoke(cli, ["results", "export", fitted["run"], "-o", "x.xlsx", "--store", fitted["store"]])
    assert result.exit_code == 2 and "write .parquet or .csv" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["results", "export", "-o", "x.csv", "--store", fitted["store"]])
    assert result.exit_code == 2 and "RUNS or give --all" in result.output


def test_features_as_netcdf_hold_what_hdf5_export_holds(fitted: dict) -> None:
    import xarray as xr
    store = FeatureStore(fitted["store"])
    [feature_set] = store.feature_sets("csv", "brisque")
    netcdf, hdf5 = fitted["base"] / "brisque.nc", fitted["base"] / "brisque.h5"
    invoke("results", "features", feature_set.name, str(netcdf), "--store", fitted["store"])
    invoke("export", feature_set.name, str(hdf5), "--store", fitted["store"])
    with xr.open_dataset(netcdf, engine="h5netcdf") as data, h5py.File(hdf5) as handle:
        np.testing.assert_array_equal(data["features"].to_numpy(), handle["features"][()])
        assert list(data["image"].to_numpy()) == [i.decode() for i in handle["ids"][()]]
        assert data.attrs["feature_set"] == feature_set.name
        mos = dict(zip(store.load_manifest("csv").ids, store.load_manifest("csv").mos))
        np.testing.assert_allclose(data["mos"].to_numpy(), [mos[i] for i in data["image"].to_numpy()])


def test_report_of_a_run_compares_two_rows_like_scipy(fitted: dict) -> None:
    out = fitted["base"] / "report"
    built = json.loads(invoke("report", fitted["run"], "--compare", "brisque+noise", "brisque", "--out", str(out),
                              "--store", fitted["store"], "--format", "json"))
    assert Path(built["html"]).exists() and (out / "tables" / "all.csv").exists()
    results = fitted["results"]
    for comparison in built["comparisons"]:
        # rows of one regressor: the first the run lists, when the comparison names none
        regressor = results["regressor"].iloc[0]
        a = results[(results["combination"] == "brisque+noise") & (results["regressor"] == regressor)].set_index("split")
        b = results[(results["combination"] == "brisque") & (results["regressor"] == regressor)].set_index("split")
        assert comparison["n_splits"] == 5
        assert comparison["mean_difference"] == pytest.approx(float((a["srcc"] - b["srcc"]).mean()))
        assert comparison["p_value"] == pytest.approx(stats.wilcoxon(a["srcc"], b["srcc"]).pvalue)


def test_report_open_hands_the_page_to_the_browser(fitted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    out = fitted["base"] / "opened"
    invoke("report", fitted["run"], "--out", str(out), "--open", "--store", fitted["store"])
    assert opened == [(out / "index.html").resolve().as_uri()]


def test_scatter_draws_each_combinations_fitted_logistic() -> None:
    """The curve through the points is the 4-parameter logistic fitted from prediction to MOS."""
    from iqa_store.fit.metrics import fit_logistic, logistic4
    from iqa_store.report.figures import logistic_scatter
    from iqa_store.report.plots import _figure
    rng = np.random.default_rng(2)
    predicted = rng.uniform(0, 1, 40)
    mos = 1 + 4 / (1 + np.exp(-(predicted - 0.5) / 0.1)) + rng.normal(0, 0.1, 40)
    axes = _figure((4, 4), 100).add_subplot()
    logistic_scatter(axes, mos, predicted, "clip", "C0")
    [curve] = axes.get_lines()
    x, y = curve.get_data()
    np.testing.assert_allclose(y, logistic4(x, *fit_logistic(predicted, mos)))
    assert np.abs(y - (1 + 4 / (1 + np.exp(-(x - 0.5) / 0.1)))).max() < 0.3  # near the curve the points came from
    assert x.min() == pytest.approx(predicted.min()) and x.max() == pytest.approx(predicted.max())
    np.testing.assert_allclose(axes.collections[0].get_offsets(), np.column_stack([predicted, mos]))


def test_run_takes_a_missing_datasets_root_from_the_command_line(fitted: dict) -> None:
    spec = fitted["base"] / "toy.yaml"
    spec.write_text("name: toy\ndatasets:\n  - {name: csv, options: {labels: labels.csv}}\n  - {name: koniq}\n"
                    "extract:\n  - model: brisque\n  - model: slique-v9\n"
                    "fit:\n  - {features: [brisque], regressors: [linear], splits: 2}\n")
    store = str(fitted["base"] / "toy-store")
    without = CliRunner().invoke(cli, ["run", str(spec), "--store", store, "-q"], env={"IQA_KONIQ_ROOT": None})
    assert without.exit_code == 0, without.output
    assert "skip dataset csv: not on this machine; pass --root csv=DIR" in without.stdout
    assert "skip dataset koniq: not on this machine; set IQA_KONIQ_ROOT=DIR or pass --root koniq=DIR" in without.stdout
    assert "no fits ran in this pipeline" in without.stdout
    given = CliRunner().invoke(cli, ["run", str(spec), "--store", store, "-q", "--workers", "0",
                                     "--root", f"csv={fitted['base'] / 'data'}", "--format", "json"],
                               env={"IQA_KONIQ_ROOT": None})
    assert given.exit_code == 0, given.output
    done = json.loads(given.stdout)
    assert [r["summary"][0]["combination"] for r in done["runs"]] == ["brisque"] and Path(done["report"]).exists()
    assert any(line.startswith("slique-v9: not built yet") for line in done["skipped"])

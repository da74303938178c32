"""Every paper pipeline runs end to end on miniature official-layout trees with tiny random-init models
and produces every table and figure of its paper.

The shipped ``pipelines/<paper>.yaml`` is run as written but for the trees' roots, tiny networks of
each model's own family, 3 splits, a few training steps and least squares in place of the FC head (see
``tests/paper_trees.py``). Checked: each table's rows, columns and published numbers are in place
(in the CSV, Markdown and LaTeX forms), each of our cells equals the mean (std) or median of the
per-split rows read back from the run's results.csv files, the best of each column is the one
marked, averages are recomputed, each figure is a PNG and an SVG (or says why not), every dataset
and model this machine lacks is named, and the published numbers are the paper's own (read
from the paper's text when it is beside the repository).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from paper_trees import REPO, build_trees, paper_spec, tiny_models
from iqa_store import api
from iqa_store.datasets import DATASETS
from iqa_store.fit.schema import HIGHER_IS_BETTER
from iqa_store.pipeline import Pipeline, run_pipeline
from iqa_store.report.paper import PaperSpec
from iqa_store.store import FeatureStore

PAPERS = {"onuoha2024": "onuoha2024-clip-features-for-iqa", "reiqa": "saha2023-reiqa",
          "qualiclip": "agnolucci2024-qualiclip", "slique": "zhou2024-slique-tadac",
          "mpiqe": "pan2024-mpiqe-multimodal-prompts"}
PAPER_TEXTS = REPO.parent / "shared" / "papers"
# the datasets each pipeline runs on here (the rest of its list must be named as missing)
HERE = {"onuoha2024": ["clive", "cid2013"], "reiqa": ["koniq", "csiq"],
        "qualiclip": ["koniq", "clive", "flive", "spaq", "kadid10k"],
        "slique": ["live", "csiq", "tid2013", "kadid10k"], "mpiqe": ["clive", "koniq"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_clip_env: None) -> dict[str, Any]:
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("papers")
    with pytest.MonkeyPatch.context() as patch:
        for name in DATASETS.names():  # only the trees given: every other dataset is missing here
            variable = DATASETS.get(name).env_var
            if variable:
                patch.delenv(variable, raising=False)
        trees = build_trees(base / "data")
        patch.setenv("IQA_REIQA_CONTENT_IMAGES", str(trees["clive"] / "Images"))
        patch.setenv("IQA_REIQA_QUALITY_IMAGES", str(trees["clive"] / "Images"))
        yield {"base": base, "trees": trees, "runs": {}}
    torch.set_num_threads(threads)


def ran(workspace: dict[str, Any], name: str) -> dict[str, Any]:
    """The pipeline run once per module: its spec, what ran and was skipped, the report."""
    if name not in workspace["runs"]:
        folder = workspace["base"] / name
        folder.mkdir()
        models = tiny_models(folder, transformers_models=name == "onuoha2024")
        spec = paper_spec(name, workspace["trees"], models, folder, datasets=HERE[name])
        store = FeatureStore(folder / "store")
        lines: list[str] = []
        pipeline = Pipeline.load(spec)
        run = run_pipeline(pipeline, store, device="cpu", workers=0, progress=False, log=lines.append)
        report = api.report(spec, store=store)
        workspace["runs"][name] = {"pipeline": pipeline, "run": run, "report": report, "store": store, "log": lines}
    return workspace["runs"][name]


def results_read_back(store: FeatureStore) -> pd.DataFrame:
    """Every per-split row the run wrote, read straight from its results.csv files."""
    frames = [pd.read_csv(path) for path in sorted(store.results_dir.rglob("results.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def expected_cell(rows: pd.DataFrame, combination: str | None, dataset: str, metric: str, regressor: str | None,
                  protocol: str | None, statistic: str) -> tuple[float, float]:
    if combination is None or rows.empty:
        return math.nan, math.nan
    wanted = set(combination.split("+"))
    chosen = rows[(rows["dataset"] == dataset) & rows["combination"].map(lambda c: set(c.split("+")) == wanted)]
    if regressor:
        chosen = chosen[chosen["regressor"] == regressor]
    if protocol:
        chosen = chosen[chosen["protocol"] == protocol]
    values = chosen[metric].to_numpy(float)
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    return (float(np.median(values)) if statistic == "median" else float(np.mean(values)),
            float(np.std(values, ddof=1)) if values.size > 1 else math.nan)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


def check_tables(done: dict[str, Any]) -> int:
    """Structure and numbers of every table; returns how many of our cells hold a number."""
    spec: PaperSpec = done["pipeline"].report
    rows = results_read_back(done["store"])
    folder = done["report"].folder / "tables"
    numbers = 0
    for table in spec.tables:
        frame = pd.read_csv(folder / f"{table.id}.csv")
        assert list(zip(frame["row"], frame["column"])) == [(r.label, c.label) for r in table.rows for c in table.columns]
        markdown = (folder / f"{table.id}.md").read_text().splitlines()
        assert markdown[2] == "| " + " | ".join(["row", *(c.label for c in table.columns)]) + " |"
        assert [line.split(" | ")[0] for line in markdown[4:]] == [f"| {r.label}" for r in table.rows]
        latex = (folder / f"{table.id}.tex").read_text()
        assert "\\begin{tabular}{l" + "r" * len(table.columns) + "}" in latex and latex.count("\\\\") == len(table.rows) + 1
        for row in table.rows:
            plain = {}
            for column in table.columns:
                line = frame[(frame["row"] == row.label) & (frame["column"] == column.label)].iloc[0]
                published = table.published_value(row.label, column.label)
                assert same(line["published"], published.value if published else math.nan)
                if column.is_average:
                    continue
                dataset = f"{column.train or row.train}->{column.dataset}" if (column.train or row.train) else column.dataset
                value, std = expected_cell(rows, row.combination, dataset, column.metric, row.regressor,
                                           column.protocol or row.protocol, table.statistic)
                assert same(line["ours"], value), (table.id, row.label, column.label)
                assert same(line["ours_std"], std)
                if published and math.isfinite(value):
                    assert line["difference"] == pytest.approx(value - published.value)
                plain[column.label] = (value, int(line["n_splits"]))
                numbers += math.isfinite(value)
            check_averages(table, frame, row, plain, rows)
        for column in table.columns:
            cells = frame[frame["column"] == column.label]
            finite = cells[np.isfinite(cells["ours"])]
            sign = 1 if HIGHER_IS_BETTER[column.metric] else -1
            best = set(finite.loc[sign * finite["ours"] == (sign * finite["ours"]).max(), "row"]) if len(finite) else set()
            assert set(cells.loc[cells["best"], "row"]) == best, (table.id, column.label)
    return numbers


def check_averages(table: Any, frame: pd.DataFrame, row: Any, plain: dict[str, tuple[float, int]],
                   rows: pd.DataFrame) -> None:
    for column in (c for c in table.columns if c.is_average):
        parts = [c for c in table.columns if not c.is_average and c.metric == column.metric]
        values = np.array([plain[c.label][0] for c in parts])
        if column.dataset == "weighted-average":  # by each dataset's image count, from its rows
            weights = np.array([rows.loc[rows["dataset"] == c.dataset, ["n_train", "n_val", "n_test"]].iloc[0].sum()
                                if np.isfinite(plain[c.label][0]) else 1 for c in parts], float)
        else:
            weights = np.ones(len(parts))
        expected = float(np.sum(values * weights) / weights.sum()) if np.all(np.isfinite(values)) else math.nan
        line = frame[(frame["row"] == row.label) & (frame["column"] == column.label)].iloc[0]
        assert same(line["ours"], expected), (table.id, row.label, column.label)


def check_figures(done: dict[str, Any]) -> list[str]:
    """Every figure is a PNG and an SVG, or says why not; returns the ids drawn."""
    drawn = []
    by_id = {f.id: f for f in done["report"].figures}
    for figure in done["pipeline"].report.figures:
        result = by_id[figure.id]
        pngs = [p for p in result.files if p.suffix == ".png"]
        if pngs:
            for png in pngs:
                with Image.open(png) as image:
                    assert image.format == "PNG" and image.size[0] > 100
                assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
            drawn.append(figure.id)
        else:
            assert result.note, figure.id
    return drawn


def check_named(done: dict[str, Any], name: str) -> None:
    """Each dataset not here is named with its variable; each model that made no set is named."""
    skipped = "\n".join(done["run"].skipped)
    for step in done["pipeline"].datasets:
        if step.name not in HERE[name]:
            assert f"dataset {step.name}: not on this machine; set {DATASETS.get(step.name).env_var}=DIR" in skipped
    extractors = {fs.extractor for fs in done["store"].feature_sets()}
    for step in done["pipeline"].extract:
        if step.request.model not in extractors:
            assert re.search(rf"(^|\n){re.escape(step.request.model)}[ :]", skipped), (step.request.model, skipped)


def check_page(done: dict[str, Any]) -> None:
    page = done["report"].html.read_text()
    for table in done["pipeline"].report.tables:
        assert f'data-table="{table.id}"' in page
    pngs = sum(1 for f in done["report"].figures for p in f.files if p.suffix == ".png")
    assert page.count('src="data:image/png;base64,') == pngs
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page and "<link" not in page


def check_all(done: dict[str, Any], name: str) -> list[str]:
    assert check_tables(done) > 0, "no cell of ours holds a number"
    check_named(done, name)
    check_page(done)
    return check_figures(done)


@pytest.mark.slow
def test_onuoha2024(workspace: dict[str, Any]) -> None:
    done = ran(workspace, "onuoha2024")
    drawn = check_all(done, "onuoha2024")
    assert {"figure3", "figure4", "figure7"} <= set(drawn)  # trend; scatter on LIVE Challenge and CID2013
    rows = results_read_back(done["store"])
    assert set(rows.loc[rows["dataset"] == "cid2013", "protocol"]) == {"scenes-4-2"}  # its dataset's protocol
    assert set(rows.loc[rows["dataset"] == "clive", "protocol"]) == {"random-80-20"}
    fitted = {frozenset(c.split("+")) for c in rows["combination"]}
    for lmm in ("clip-vitb16", "align", "altclip", "hps"):
        assert {frozenset([lmm]), frozenset([lmm, "brisque"]), frozenset([lmm, "cnniqa"])} <= fitted
    assert len(done["report"].comparisons) == 2 * 2  # two pairs on two datasets


@pytest.mark.slow
def test_reiqa(workspace: dict[str, Any]) -> None:
    done = ran(workspace, "reiqa")
    assert "pretraining-loss" in check_all(done, "reiqa")  # from both tiny encoders' provenance
    rows = results_read_back(done["store"])
    assert {frozenset(c.split("+")) for c in rows["combination"]} >= {frozenset(["reiqa-content", "reiqa-quality"])}
    assert set(rows["protocol"]) == {"random-70-10-20"} and (rows["n_val"] > 0).all()


def test_qualiclip(workspace: dict[str, Any]) -> None:
    done = ran(workspace, "qualiclip")
    assert {"figure1-kadid10k", "figure1-clipiqa-kadid10k"} <= set(check_all(done, "qualiclip"))
    rows = results_read_back(done["store"])
    assert set(rows["protocol"]) == {"zero-shot"} and (rows["n_test"] == rows["n_train"] + rows["n_test"]).all()
    table1 = pd.read_csv(done["report"].folder / "tables" / "table1.csv")
    average = table1[(table1["row"] == "QualiCLIP") & (table1["column"] == "Average SRCC")].iloc[0]
    assert math.isfinite(average["ours"])  # all four authentic datasets are here


def test_slique(workspace: dict[str, Any]) -> None:
    done = ran(workspace, "slique")
    check_all(done, "slique")
    table = pd.read_csv(done["report"].folder / "tables" / "tableI.csv")
    brisque = table[(table["row"] == "BRISQUE")].set_index("column")["ours"]
    plain = np.mean([brisque[f"{d} SROCC"] for d in ("LIVE", "CSIQ", "TID2013", "KADID")])
    assert math.isfinite(brisque["Weighted Average SROCC"]) and brisque["Weighted Average SROCC"] != pytest.approx(plain)
    assert any(line.startswith("fit live->csiq") for line in done["run"].skipped)  # no SLIQUE / Re-IQA sets here
    before = results_read_back(done["store"])
    again: list[str] = []
    run_pipeline(done["pipeline"], done["store"], device="cpu", workers=0, progress=False, log=again.append)
    extracted = [line for line in again if "/brisque/" in line]
    assert len(extracted) == 4 and all(": cached" in line for line in extracted)  # nothing extracted twice
    pd.testing.assert_frame_equal(results_read_back(done["store"]), before)  # nor fitted twice


@pytest.mark.slow
def test_mpiqe(workspace: dict[str, Any]) -> None:
    done = ran(workspace, "mpiqe")
    check_all(done, "mpiqe")
    table = pd.read_csv(done["report"].folder / "tables" / "table2.csv").set_index(["row", "column"])
    assert math.isfinite(table.loc[("CLIP-IQA", "LIVEC SRCC"), "ours"])  # zero-shot
    assert math.isfinite(table.loc[("CLIP-IQA+", "LIVEC SRCC"), "ours"])  # a context trained per split


@pytest.mark.slow
def test_paired_comparison_of_a_run_is_scipys_wilcoxon(workspace: dict[str, Any]) -> None:
    from scipy import stats
    done = ran(workspace, "onuoha2024")
    rows = results_read_back(done["store"])
    for comparison in done["report"].comparisons:
        def per_split(combination: str) -> pd.Series:
            wanted = set(combination.split("+"))
            chosen = rows[(rows["dataset"] == comparison.dataset) & (rows["protocol"] == comparison.protocol)
                          & rows["combination"].map(lambda c: set(c.split("+")) == wanted)]
            return chosen.set_index("split")[comparison.metric].sort_index()
        a, b = per_split(comparison.a), per_split(comparison.b)
        assert list(a.index) == list(b.index) and comparison.n_splits == len(a)
        difference = a.to_numpy() - b.to_numpy()
        assert comparison.mean_difference == pytest.approx(difference.mean())
        assert (comparison.wins_a, comparison.wins_b, comparison.ties) == (
            int((difference > 0).sum()), int((difference < 0).sum()), int((difference == 0).sum()))
        if np.any(difference != 0):
            assert comparison.p_value == pytest.approx(stats.wilcoxon(a.to_numpy(), b.to_numpy()).pvalue)
        else:
            assert math.isnan(comparison.p_value)


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_published_numbers_are_the_papers(name: str) -> None:
    """Each table's published row (or, for a table the paper prints transposed, each column) is a run of
    numbers in the paper's text, in the spec's order."""
    text = PAPER_TEXTS / f"{PAPERS[name]}.txt"
    if not text.exists():
        pytest.skip(f"the paper's text is not beside the repository ({text})")
    # a number printed with a LaTeX superscript (MP-IQE's "0.759superscript0.7590.759^{\ast}") counts once
    numbers = re.compile(r"\d\.\d+|(?<![\w.])[-_](?![\w.])")
    lines = [" ".join(numbers.findall(re.sub(r"superscript\S+", " ", line))) for line in text.read_text().splitlines()]
    data = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
    for table in data["report"]["tables"]:
        printed = {row: [" ".join(numbers.findall(str(c))) for c in cells] for row, cells in table["published"].items()}
        by_row = [" ".join(cells) for cells in printed.values()]
        by_column = [" ".join(column) for column in zip(*printed.values())]
        found = all(any(run in line for line in lines) for run in by_row) or \
            all(any(run in line for line in lines) for run in by_column)
        assert found, (name, table["id"])


def test_every_shipped_paper_spec_loads_with_its_report() -> None:
    for name in PAPERS:
        pipeline = Pipeline.load(REPO / "pipelines" / f"{name}.yaml")
        assert pipeline.report and pipeline.report.tables and pipeline.report.published
        for table in pipeline.report.tables:
            assert {p.row for p in table.published} <= {r.label for r in table.rows}


def test_paired_comparison_is_scipys_wilcoxon_on_the_shared_splits() -> None:
    """Rows pair up by split (and only on splits both have); p is scipy's on exactly those values."""
    from scipy import stats

    from iqa_store.report.compare import compare_rows
    rng = np.random.default_rng(3)
    rows = []
    for combination, splits, shift in (("clip+brisque", range(10), 0.02), ("clip", range(1, 10), 0.0)):
        for split in splits:
            rows.append({"dataset": "koniq", "combination": combination, "regressor": "ridge", "protocol": "random-80-20",
                         "split": split, "srcc": 0.8 + shift + 0.01 * rng.standard_normal(), "rmse": rng.uniform(1, 2)})
    table = pd.DataFrame(rows)
    [result] = compare_rows(table, "brisque+clip", "clip", "srcc")
    a = table[table["combination"] == "clip+brisque"].set_index("split")["srcc"].loc[1:]
    b = table[table["combination"] == "clip"].set_index("split")["srcc"]
    assert result.n_splits == 9 and result.mean_difference == pytest.approx(float((a - b).mean()))
    assert result.p_value == pytest.approx(stats.wilcoxon(a.to_numpy(), b.to_numpy()).pvalue)
    assert result.wins_a == int(((a - b) > 0).sum()) and result.wins_a + result.wins_b + result.ties == 9
    [lower] = compare_rows(table, "clip+brisque", "clip", "rmse")  # lower is better: wins flip
    difference = (table[table["combination"] == "clip+brisque"].set_index("split")["rmse"].loc[1:] - table[
        table["combination"] == "clip"].set_index("split")["rmse"])
    assert lower.wins_a == int((difference < 0).sum())


@pytest.mark.slow
def test_onuoha2024_on_the_demo_alone_from_a_clean_clone(tmp_path: Path) -> None:
    """A fresh clone, no dataset but the demo, no weights: the pipeline runs what it can (BRISQUE and
    the FC head on the demo), names everything else, prints the paper's tables and writes the page."""
    import os
    import subprocess
    import sys
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not (k.startswith("IQA_") and k.endswith("_ROOT"))}
    env.update({"PYTHONPATH": str(clone), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                "OMP_NUM_THREADS": "1"})
    done = subprocess.run([str(Path(sys.executable).parent / "iqa-store"), "run", "pipelines/onuoha2024.yaml",
                           "--store", str(tmp_path / "store"), "-q", "--device", "cpu"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    page = tmp_path / "store" / "reports" / "onuoha2024" / "index.html"
    assert f"report: {page}" in out and page.exists()
    assert "**Table 2. LMM visual features and distortion features alone**" in out
    assert "| BRISQUE | — [paper 0.5071 (0.050)] |" in out  # the paper's cell beside ours (no LIVE here)
    assert "| brisque (mlp) |" in out  # the demo's row in the table of every result
    for dataset, variable in (("clive", "IQA_CLIVE_ROOT"), ("koniq", "IQA_KONIQ_ROOT"), ("spaq", "IQA_SPAQ_ROOT"),
                              ("cid2013", "IQA_CID2013_ROOT")):
        assert f"dataset {dataset}: not on this machine; set {variable}=DIR or pass --root {dataset}=DIR" in out
    for model in ("clip-vitb16", "align", "altclip", "hps"):
        assert f"{model}: needs weights this machine lacks" in out
    text = page.read_text()
    assert 'data-table="table2"' in text and "brisque (mlp)" in text

"""Pipeline YAML steps are requests: a file says what the command line says, and gives the same results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from iqa_store import api
from iqa_store.cli import cli
from iqa_store.pipeline import Pipeline, PipelineError
from iqa_store.requests import ExtractRequest, FitRequest
from iqa_store.store import FeatureStore
from tests.conftest import write_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def two_datasets(tmp_path: Path) -> tuple[Path, Path]:
    roots = []
    for name, seed in (("a", 0), ("b", 5)):
        root = tmp_path / name
        images = write_images(root, 12, size=(64, 80), seed=seed)
        pd.DataFrame({"path": images, "mos": np.random.default_rng(seed).uniform(1, 5, 12)}).to_csv(
            root / "labels.csv", index=False)
        roots.append(root)
    return roots[0], roots[1]


def _spec(tmp_path: Path, roots: tuple[Path, Path], model: str) -> Path:
    spec = tmp_path / "cross.yaml"
    spec.write_text(f"""
name: cross
datasets:
  - {{name: csv, root: {roots[0]}, options: {{labels: labels.csv, dataset_name: a}}}}
  - {{name: csv, root: {roots[1]}, options: {{labels: labels.csv, dataset_name: b}}}}
extract:
  - model: brisque
  - model: {model}
    random_init: true
    policy: full
    settings: {{normalize: true}}
fit:
  - features: [brisque, openclip, brisque+openclip]  # short names of openclip-* sets
    regressors: [ridge]
    train: a
    test: b
""")
    return spec


def test_a_pipeline_reproduces_the_same_jobs_given_on_the_command_line(tmp_path: Path, two_datasets: tuple,
                                                                       tiny_clip: str) -> None:
    spec = _spec(tmp_path, two_datasets, tiny_clip)
    pipeline = Pipeline.load(spec)
    assert pipeline.extract[1].request.policy == "full" and pipeline.extract[1].request.settings == {"normalize": True}
    assert pipeline.fit[0] == FitRequest(features=("brisque", "openclip", "brisque+openclip"), regressors=("ridge",),
                                         train="a", test="b")
    piped = CliRunner().invoke(cli, ["run", str(spec), "--store", str(tmp_path / "piped"), "--workers", "0", "-q",
                                     "--device", "cpu", "--format", "json"])
    assert piped.exit_code == 0, piped.output

    by_hand = FeatureStore(tmp_path / "by-hand")
    for name, root in zip("ab", two_datasets):
        options = {"labels": "labels.csv", "dataset_name": name}
        for request in (ExtractRequest(model="brisque", dataset="csv", root=str(root), dataset_options=options),
                        ExtractRequest(model=tiny_clip, dataset="csv", root=str(root), dataset_options=options,
                                       random_init=True, policy="full", settings={"normalize": True})):
            api.extract(request, store=by_hand, device="cpu", workers=0, progress=False, log=lambda line: None)
    outcome = api.fit(pipeline.fit[0], store=by_hand, progress=False)

    piped_store = FeatureStore(tmp_path / "piped")
    clip_sets = piped_store.feature_sets(extractor=tiny_clip.replace(":", "-"))
    assert len(clip_sets) == 2
    assert {fs.attrs["extractor_settings"]["preprocess"]["policy"] for fs in clip_sets} == {"full"}
    assert all(fs.attrs["extractor_settings"]["normalize"] is True for fs in clip_sets)
    assert sorted(fs.name for fs in piped_store.feature_sets()) == sorted(fs.name for fs in by_hand.feature_sets())
    piped_table = pd.read_csv(next((tmp_path / "piped" / "results").glob("*/a->b/results.csv")))
    columns = ["combination", "srcc", "plcc", "rmse"]
    expected = outcome.table[columns].sort_values("combination").reset_index(drop=True)
    pd.testing.assert_frame_equal(piped_table[columns].sort_values("combination").reset_index(drop=True), expected)


def test_unknown_and_misplaced_step_keys_are_named(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("datasets: [{name: demo}]\nextract:\n  - model: brisque\n    polcy: full\n")
    with pytest.raises(PipelineError, match=r"extract step 1: unknown key 'polcy'"):
        Pipeline.load(spec)
    spec.write_text("datasets: [{name: demo}]\nextract:\n  - model: brisque\n    root: /data\n")
    with pytest.raises(PipelineError, match=r"'root' comes from the pipeline's datasets list"):
        Pipeline.load(spec)


def test_the_shipped_pipelines_load() -> None:
    for spec in sorted(Path(__file__).resolve().parents[1].glob("pipelines/*.yaml")):
        pipeline = Pipeline.load(spec)
        assert pipeline.datasets and (pipeline.extract or pipeline.fit), spec

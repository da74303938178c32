"""Fit through the store: name resolution, stored splits, plots, a Dask LocalCluster, pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import write_images
from iqa_store import api
from iqa_store.cli import cli
from iqa_store.store import FeatureStore, StoreError


@pytest.fixture()
def fitted_store(tmp_path: Path, tiny_clip: str) -> tuple[FeatureStore, str]:
    """BRISQUE and tiny-CLIP features of 40 images whose MOS follows image brightness."""
    root = tmp_path / "data"
    names = write_images(root, 40, size=(64, 80))
    mos = [float(np.asarray(Image.open(root / n), float).mean()) for n in names]
    pd.DataFrame({"path": names, "mos": mos}).to_csv(root / "labels.csv", index=False)
    store = FeatureStore(tmp_path / "store")
    options = {"labels": "labels.csv", "dataset_name": "toy"}
    for model, extra in (("brisque", {}), (tiny_clip, {"random_init": True})):
        report = api.extract(model, "csv", root=root, store=store, workers=0, progress=False,
                             dataset_options=options, **extra)
        assert report.status == "complete" and not report.failures
    return store, tiny_clip


def test_fit_resolves_short_names_and_reuses_stored_splits(fitted_store: tuple[FeatureStore, str], tmp_path: Path) -> None:
    store, _ = fitted_store
    first = api.fit(["brisque", "brisque+openclip"], regressors=["ridge", "linear"], splits=3, store=store,
                    progress=False, plot_dir=tmp_path / "plots")
    assert set(first.table["combination"]) == {"brisque", "brisque+openclip"}
    assert len(first.table) == 2 * 2 * 3
    split_files = list((store.root / "splits" / "toy").glob("*.json"))
    assert len(split_files) == 1  # one split set shared by every combination
    second = api.fit(["brisque"], regressors=["ridge"], splits=3, store=store, progress=False)
    again = first.table[(first.table.combination == "brisque") & (first.table.regressor == "ridge")]
    assert np.array_equal(again["srcc"].to_numpy(), second.table["srcc"].to_numpy())
    assert first.plots and all(Image.open(p).size[0] > 100 for p in first.plots)
    key = ["combination", "regressor", "split"]  # rows are appended as tasks finish, not in table order
    saved = pd.read_csv(first.run_dir / "toy" / "results.csv").sort_values(key).reset_index(drop=True)
    assert np.allclose(saved["srcc"], first.table.sort_values(key).reset_index(drop=True)["srcc"])


def test_rows_stay_aligned_with_labels_through_import_and_fit(fitted_store: tuple[FeatureStore, str],
                                                              tmp_path: Path) -> None:
    """A feature equal to MOS, imported in shuffled row order, must predict MOS perfectly."""
    from iqa_store.store.transfer import import_feature_set
    store, _ = fitted_store
    manifest = store.load_manifest("toy")
    order = np.random.default_rng(3).permutation(len(manifest))
    np.save(tmp_path / "oracle.npy", manifest.mos[order][:, None].astype(np.float32))
    (tmp_path / "oracle.ids.txt").write_text("\n".join(np.array(manifest.ids)[order]) + "\n")
    import_feature_set(store, tmp_path / "oracle.npy", manifest, "oracle")
    table = api.fit(["oracle"], regressors=["linear"], splits=3, store=store, progress=False).table
    assert np.allclose(table["srcc"], 1.0) and np.allclose(table["rmse"], 0.0, atol=1e-3)


def test_a_registered_extractor_name_is_not_widened_to_its_siblings(fitted_store: tuple[FeatureStore, str],
                                                                     tmp_path: Path) -> None:
    """``-f qualiclip`` (the score) must not fit on ``qualiclip-embedding`` when the score was never extracted."""
    from iqa_store.store.transfer import import_feature_set
    store, _ = fitted_store
    manifest = store.load_manifest("toy")
    np.save(tmp_path / "embedding.npy", np.random.default_rng(0).normal(size=(len(manifest), 4)).astype(np.float32))
    (tmp_path / "embedding.ids.txt").write_text("\n".join(manifest.ids) + "\n")
    import_feature_set(store, tmp_path / "embedding.npy", manifest, "qualiclip-embedding")
    with pytest.raises(StoreError, match=r"complete feature sets for all of \['qualiclip'\]"):
        api.fit(["qualiclip"], splits=2, store=store, progress=False)
    with pytest.raises(StoreError, match="no complete feature set 'qualiclip' for dataset 'toy'"):
        api.fit(["qualiclip"], datasets=["toy"], splits=2, store=store, progress=False)
    assert len(api.fit(["qualiclip-embedding"], regressors=["ridge"], splits=2, store=store, progress=False).table) == 2


def test_features_stored_under_a_name_of_their_own(fitted_store: tuple[FeatureStore, str]) -> None:
    """``name``: a variant of a model beside the model's own set, each found by its name."""
    store, _ = fitted_store
    manifest = store.load_manifest("toy")
    options = {"labels": "labels.csv", "dataset_name": "toy"}
    report = api.extract("brisque", "csv", root=manifest.root, store=store, workers=0, progress=False,
                         dataset_options=options, name="brisque-copy")
    assert report.status == "complete" and report.feature_set.startswith("toy/brisque-copy/")
    copy, own = store.resolve("brisque-copy", "toy"), store.resolve("brisque", "toy")
    assert copy.path != own.path and np.array_equal(copy.read(), own.read())
    tables = [api.fit([name], regressors=["ridge"], splits=2, store=store, progress=False).table
              for name in ("brisque", "brisque-copy")]
    assert np.array_equal(tables[0]["srcc"].to_numpy(), tables[1]["srcc"].to_numpy())
    result = CliRunner().invoke(cli, ["extract", "-m", "brisque", "-d", "csv", "--root", str(manifest.root),
                                      "-o", "labels=labels.csv", "--name", "brisque+x", "--store", str(store.root)])
    assert result.exit_code == 2 and "'+' joins features" in result.output and "Traceback" not in result.output


def test_ambiguous_short_name_lists_candidates(fitted_store: tuple[FeatureStore, str]) -> None:
    store, tiny = fitted_store
    manifest = store.load_manifest("toy")
    api.extract(tiny, "csv", root=manifest.root, store=store, workers=0, progress=False, random_init=True,
                normalize=True, dataset_options={"labels": "labels.csv", "dataset_name": "toy"})
    with pytest.raises(StoreError, match="ambiguous") as error:
        api.fit(["brisque+openclip"], datasets=["toy"], splits=2, store=store, progress=False)
    assert str(error.value).count("toy/openclip-TinyViT-test-none/") == 2


def test_dask_local_cluster_equals_in_process(fitted_store: tuple[FeatureStore, str]) -> None:
    store, _ = fitted_store
    local = api.fit(["brisque", "openclip"], regressors=["ridge"], splits=4, store=store, progress=False)
    with api.dask_executor(workers=2) as executor:
        distributed = api.fit(["brisque", "openclip"], regressors=["ridge"], splits=4, store=store, progress=False,
                              executor=executor)
    key = ["combination", "regressor", "split"]
    a, b = local.table.sort_values(key).reset_index(drop=True), distributed.table.sort_values(key).reset_index(drop=True)
    for column in ("srcc", "plcc", "krcc", "rmse", "alpha"):
        assert np.allclose(a[column], b[column], rtol=1e-12, equal_nan=True), column


def test_pipeline_runs_and_skips_cached(tmp_path: Path, image_dataset: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(f"""
name: toy
datasets:
  - name: csv
    root: {image_dataset}
    options: {{labels: labels.csv, dataset_name: toy}}
extract:
  - model: brisque
  - model: clip-vitb16
    optional: true
fit:
  - features: [brisque, brisque+clip-vitb16]
    regressors: [ridge]
    splits: 2
""")
    runner = CliRunner()
    store = tmp_path / "store"
    first = runner.invoke(cli, ["run", str(spec), "--store", str(store), "--workers", "0", "-q"],
                          env={"HF_HUB_OFFLINE": "1"})
    assert first.exit_code == 0, first.output
    assert "skip clip-vitb16" in first.output and "brisque" in first.output
    second = runner.invoke(cli, ["run", str(spec), "--store", str(store), "--workers", "0", "-q", "--format", "json"],
                           env={"HF_HUB_OFFLINE": "1"})
    assert second.exit_code == 0, second.output
    summary = json.loads(second.output)["runs"][0]["summary"]
    assert {row["combination"] for row in summary} == {"brisque"}


def test_same_fit_again_resumes_its_run_without_refitting(fitted_store: tuple[FeatureStore, str]) -> None:
    store, _ = fitted_store
    first = api.fit(["brisque"], regressors=["linear"], splits=2, store=store, progress=False)
    results = first.run_dir / "toy" / "results.csv"
    table = pd.read_csv(results)
    table.loc[0, "srcc"] = 42.0  # a marker a refit would overwrite
    table.to_csv(results, index=False)
    again = api.fit(["brisque"], regressors=["linear"], splits=2, store=store, progress=False)
    assert again.run_dir == first.run_dir and again.table.loc[0, "srcc"] == 42.0
    other = api.fit(["brisque"], regressors=["linear"], splits=2, seed=1, store=store, progress=False)
    assert other.run_dir != first.run_dir  # another protocol seed is another run

"""Protocols over stored features: stored grouped splits, cross-dataset, zero-shot, `splits show`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_images
from scipy import stats
from test_dataset_cid2013 import build_release as build_cid
from test_dataset_kadid import build_release as build_kadid

from iqa_store import api
from iqa_store.cli import cli
from iqa_store.datasets.cid2013 import CID2013
from iqa_store.datasets.kadid import KADID10k
from iqa_store.fit.cells import TABLE_COLUMNS
from iqa_store.splits import list_stored_splits, stored_splits
from iqa_store.splits import ProtocolSpec
from iqa_store.store import FeatureStore


def csv_dataset(root: Path, count: int, scale: float, seed: int) -> Path:
    names = write_images(root, count, size=(48, 64), seed=seed)
    pd.DataFrame({"path": names, "mos": scale * np.linspace(0.1, 1.0, count)}).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """Datasets "a" (MOS 0-5) and "b" (MOS 0-100) with BRISQUE features; "a" also a one-column score."""
    base = tmp_path_factory.mktemp("protocols")
    store = FeatureStore(base / "store")
    for name, count, scale, seed in (("a", 24, 5.0, 0), ("b", 16, 100.0, 1)):
        root = csv_dataset(base / name, count, scale, seed)
        api.extract("brisque", "csv", root=root, store=store, workers=0, progress=False,
                    dataset_options={"labels": "labels.csv", "dataset_name": name})
    manifest = store.load_manifest("a")
    score = manifest.mos + np.random.default_rng(0).normal(0, 0.8, len(manifest))
    np.save(base / "score.npy", score.reshape(-1, 1).astype(np.float32))
    (base / "score.ids.txt").write_text("\n".join(manifest.ids) + "\n")
    result = CliRunner().invoke(cli, ["import", str(base / "score.npy"), "--dataset", "a", "--name", "score",
                                      "--ids", str(base / "score.ids.txt"), "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    return store


def test_cross_dataset_fits_on_all_of_one_and_tests_on_all_of_the_other(store: FeatureStore) -> None:
    outcome = api.fit(["brisque"], train="a", test="b", regressors=["ridge", "linear"], store=store, progress=False)
    table = outcome.table
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["dataset"].tolist() == ["a->b", "a->b"] and set(table["protocol"]) == {"cross-dataset"}
    assert table["n_train"].tolist() == [24, 24] and table["n_test"].tolist() == [16, 16]
    same_protocol_columns = api.fit(["brisque"], datasets=["a"], splits=2, store=store, progress=False).table
    assert list(same_protocol_columns.columns) == list(table.columns)
    # the test MOS is mapped onto the training scale (0-5 by the data's range): RMSE is in those units
    assert table["rmse"].max() < 5.0


def test_cross_dataset_needs_both_sides_and_matching_settings(store: FeatureStore) -> None:
    with pytest.raises(ValueError, match="needs both a training dataset"):
        api.fit(["brisque"], train="a", store=store, progress=False)
    with pytest.raises(ValueError, match=r"b has no score feature set with the settings of a/score/.*it has: none"):
        api.fit(["score"], train="a", test="b", store=store, progress=False)


def test_zero_shot_scores_the_whole_dataset_without_fitting(store: FeatureStore) -> None:
    outcome = api.fit(["score"], datasets=["a"], protocol="zero-shot", store=store, progress=False)
    (row,) = outcome.table.to_dict("records")
    assert list(outcome.table.columns) == list(TABLE_COLUMNS)
    assert (row["regressor"], row["n_train"], row["n_val"], row["n_test"]) == ("none", 0, 0, 24)
    manifest = store.load_manifest("a")
    score = np.load(Path(store.root).parent / "score.npy").ravel()
    assert row["srcc"] == pytest.approx(stats.spearmanr(score, manifest.mos)[0])
    assert row["plcc"] == pytest.approx(stats.pearsonr(score, manifest.mos)[0], abs=1e-6)
    again = api.fit(["score"], datasets=["a"], protocol="zero-shot", store=store, progress=False)
    assert again.table.equals(outcome.table)
    with pytest.raises(ValueError, match="brisque has 36 columns, not 1"):
        api.fit(["brisque"], datasets=["a"], protocol="zero-shot", store=store, progress=False)


def test_splits_show_lists_and_details_stored_sets(store: FeatureStore) -> None:
    api.fit(["brisque"], datasets=["a"], protocol="random-70-10-20", splits=3, seed=5, store=store, progress=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["splits", "show", "a", "--protocol", "random-70-10-20", "--format", "json",
                                 "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["protocol"], row["n_splits"], row["seed"], row["n_rows"]) == ("random-70-10-20", 3, 5, 24)
    assert (row["n_train"], row["n_val"], row["n_test"]) == ([17], [2], [5])
    detail = runner.invoke(cli, ["splits", "show", "a", "--key", row["key"][:6], "--format", "json",
                                 "--store", str(store.root)])
    splits = json.loads(detail.output)["splits"]
    ids = store.load_manifest("a").ids
    assert len(splits) == 3 and sorted(splits[0]["train"] + splits[0]["val"] + splits[0]["test"]) == sorted(ids)
    text = runner.invoke(cli, ["splits", "show", "--store", str(store.root)])
    assert text.exit_code == 0 and "random-70-10-20" in text.output and "17/" not in text.output
    missing = runner.invoke(cli, ["splits", "show", "--key", "zzzz", "--store", str(store.root)])
    assert missing.exit_code != 0 and "0 stored split sets match key 'zzzz'" in missing.output


def test_grouped_stored_splits_never_share_a_reference(tmp_path: Path) -> None:
    manifest = KADID10k().manifest(build_kadid(tmp_path / "kadid"))
    spec = ProtocolSpec("random-80-20", n_splits=5, seed=3)
    splits = stored_splits(tmp_path / "splits", manifest, spec)
    refs = np.array(manifest.reference_ids)
    for split in splits:
        assert not set(refs[split.train]) & set(refs[split.test])
    assert stored_splits(tmp_path / "splits", manifest, spec) == splits  # read back, identical
    (stored,) = list_stored_splits(tmp_path / "splits", "kadid10k")
    assert stored.summary()["grouped_by"] == "reference image"


def test_cid2013_scene_splits_are_stored_by_scene_within_image_set(tmp_path: Path) -> None:
    manifest = CID2013().manifest(build_cid(tmp_path / "cid"))
    splits = stored_splits(tmp_path / "splits", manifest, ProtocolSpec("scenes-4-2", n_splits=4))
    groups, strata = np.array(manifest.split_groups), np.array(manifest.strata)
    for split in splits:
        assert not set(groups[split.train]) & set(groups[split.test])
        for image_set in ("IS1", "IS2"):  # three scene subsets each: 2 train, 1 test (ratios 4:2)
            assert len(set(groups[split.test][strata[split.test] == image_set])) == 1
    (stored,) = list_stored_splits(tmp_path / "splits")
    assert stored.summary()["grouped_by"] == "group within stratum"

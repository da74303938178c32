"""CNNIQA: its input and network against their definitions, and per-split training without leakage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import scipy.stats
import torch
from click.testing import CliRunner

from iqa_store import api
from iqa_store.cli import cli
from iqa_store.nets.cnniqa import CNNIQA, grey, image_patches, normalise, patch_grid
from iqa_store.splits import ProtocolSpec
from iqa_store.store import FeatureStore, StoreError, list_encoders
from tests.conftest import write_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CSV = {"labels": "labels.csv", "dataset_name": "memo"}
TINY = {"fc_width": 64, "dropout": 0.0, "patches_per_image": 4}
# enough for the network to memorise 19 images' random MOS (checked below), a few seconds a split
TRAINING = {"steps": 100, "batch_size": 8, "lr": 1e-2, "device": "cpu", "workers": 0}


# --- input and network ----------------------------------------------------------------------

def test_local_contrast_normalisation_matches_its_definition() -> None:
    luma = np.random.default_rng(0).uniform(0, 255, (10, 13))
    padded = np.pad(luma, 1, mode="symmetric")  # lidq92's boundary='symm'
    expected = np.empty_like(luma)
    for y in range(luma.shape[0]):
        for x in range(luma.shape[1]):
            window = padded[y:y + 3, x:x + 3]
            expected[y, x] = (luma[y, x] - window.mean()) / (window.std() + 1.0)
    np.testing.assert_allclose(normalise(torch.from_numpy(luma)).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_grey_is_bt601_luma_on_the_0_255_scale() -> None:
    image = torch.rand(3, 4, 5, dtype=torch.float64)
    expected = 255 * (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])
    assert torch.allclose(grey(image), expected)


@pytest.mark.parametrize(("height", "width", "grid"), [(64, 96, (2, 3)), (63, 95, (1, 2)), (32, 32, (1, 1))])
def test_every_complete_patch_of_the_grid_is_taken(height: int, width: int, grid: tuple[int, int]) -> None:
    plane = torch.arange(height * width, dtype=torch.float64).reshape(height, width)
    patches = patch_grid(plane)
    assert patches.shape == (grid[0] * grid[1], 1, 32, 32)
    for k, (row, column) in enumerate(np.ndindex(*grid)):  # row by row, as the docstring says
        assert torch.equal(patches[k, 0], plane[32 * row:32 * row + 32, 32 * column:32 * column + 32])


def test_an_image_without_a_complete_patch_is_refused() -> None:
    with pytest.raises(ValueError, match="no complete 32x32 patch"):
        image_patches(torch.rand(3, 31, 200))


def test_features_are_max_and_min_pooled_correlations_through_two_layers() -> None:
    torch.manual_seed(0)
    model = CNNIQA(fc_width=8).double().eval()
    patch = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    maps = [scipy.signal.correlate2d(patch[0, 0].numpy(), kernel[0], mode="valid") + bias
            for kernel, bias in zip(weights["conv.weight"], weights["conv.bias"])]
    assert maps[0].shape == (26, 26)  # 32 - 7 + 1
    pooled = np.concatenate([[m.max() for m in maps], [m.min() for m in maps]])
    hidden = np.maximum(weights["fc1.weight"] @ pooled + weights["fc1.bias"], 0)
    features = np.maximum(weights["fc2.weight"] @ hidden + weights["fc2.bias"], 0)
    with torch.no_grad():
        np.testing.assert_allclose(model.features(patch)[0].numpy(), features, rtol=1e-10)
        np.testing.assert_allclose(model(patch).item(), weights["fc3.weight"][0] @ features + weights["fc3.bias"][0])


# --- per split, without leakage ----------------------------------------------------------------

@pytest.fixture(scope="module")
def memorised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FeatureStore, list, list]:
    """24 photographs with random MOS, CNNIQA trained on each of 2 splits and extracted per split."""
    root = tmp_path_factory.mktemp("memo")
    names = write_images(root, 24, size=(64, 64), seed=3)
    mos = np.random.default_rng(7).uniform(1, 5, len(names))  # unrelated to the pixels: only memorisable
    pd.DataFrame({"path": names, "mos": mos}).to_csv(root / "labels.csv", index=False)
    store = FeatureStore(tmp_path_factory.mktemp("store"))
    torch.set_num_threads(1)
    reports = api.train("cnniqa", dataset="csv", root=root, dataset_options=CSV, protocol="random-80-20", splits=2,
                        hyperparameters=TINY, store=store, progress=False, log=lambda line: None, **TRAINING)
    extracted = api.extract("cnniqa", "csv", root=root, dataset_options=CSV, protocol="random-80-20", splits=2,
                            store=store, settings={"output": "score"}, device="cpu", workers=0, progress=False,
                            log=lambda line: None)
    return root, store, reports, extracted


def _splits(store: FeatureStore) -> list:
    return store.splits(store.load_manifest("memo"), ProtocolSpec("random-80-20", 2, 0))


def test_each_split_trains_on_its_training_rows_only(memorised: tuple) -> None:
    _, store, reports, _ = memorised
    manifest, splits = store.load_manifest("memo"), _splits(store)
    ids = np.asarray(manifest.ids)
    assert len(reports) == len(list_encoders(store)) == 2
    for report, split in zip(reports, splits):
        record = report.encoder
        assert record.scope.split == split.index and record.scope.splits_key == split.key
        seen = set(record.provenance["data"]["training_ids"])
        assert seen == set(ids[split.train])
        assert seen.isdisjoint(ids[split.test])
        assert record.config["reader"] == "cnniqa" and record.config["fc_width"] == 64


def test_the_model_memorises_so_a_leak_would_show(memorised: tuple) -> None:
    """The positive control: split 0's model scores split 1's test rows it trained on almost perfectly."""
    _, store, _, extracted = memorised
    manifest, splits = store.load_manifest("memo"), _splits(store)
    scores = [store.get(report.feature_set).read()[:, 0] for report in extracted]
    for split, values in zip(splits, scores):
        assert scipy.stats.spearmanr(values[split.train], manifest.mos[split.train])[0] > 0.9
    seen_by_other = np.intersect1d(splits[1].test, splits[0].train)
    assert seen_by_other.size >= 3
    leaked = scipy.stats.spearmanr(scores[0][seen_by_other], manifest.mos[seen_by_other])[0]
    assert leaked > 0.8


def test_fit_uses_each_split_with_the_set_trained_on_it(memorised: tuple) -> None:
    _, store, _, extracted = memorised
    outcome = api.fit(["cnniqa"], datasets=["memo"], splits=2, regressors=["linear"], store=store, progress=False)
    spec = json.loads((outcome.run_dir / "memo" / "spec.json").read_text())
    used = spec["features"]["cnniqa"]
    assert used == [report.feature_set for report in extracted]
    assert [store.get(name).scope.split for name in used] == [0, 1]
    assert sorted(outcome.table["split"].unique().tolist()) == [0, 1]


@pytest.mark.parametrize(("fields", "reason"), [
    ({"splits": 2, "seed": 1}, "no feature set trained for split 0 of random-80-20"),
    ({"splits": 3}, "no feature set trained for split 0 of random-80-20"),
    ({"splits": 2, "protocol": "random-70-10-20"}, "trained for random-80-20"),
])
def test_a_fit_on_splits_the_feature_was_not_trained_for_is_refused(memorised: tuple, fields: dict,
                                                                     reason: str) -> None:
    _, store, _, _ = memorised
    with pytest.raises(StoreError, match=reason) as error:
        api.fit(["cnniqa"], datasets=["memo"], regressors=["linear"], store=store, progress=False, **fields)
    assert "only used on the split it was trained on" in str(error.value)


def test_cross_dataset_uses_the_model_trained_on_all_of_the_training_dataset(memorised: tuple,
                                                                             tmp_path: Path) -> None:
    root, store, _, _ = memorised
    other = tmp_path / "other"
    names = write_images(other, 10, size=(64, 64), seed=11)
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, 10)}).to_csv(other / "labels.csv", index=False)
    short = {**TRAINING, "steps": 5}
    [report] = api.train("cnniqa", dataset="csv", root=root, dataset_options=CSV, protocol="train-all",
                         hyperparameters=TINY, store=store, progress=False, log=lambda line: None, **short)
    assert len(report.encoder.provenance["data"]["training_ids"]) == 24
    api.extract("cnniqa", "csv", root=root, dataset_options=CSV, protocol="train-all", store=store, device="cpu",
                workers=0, progress=False, log=lambda line: None)
    api.extract("cnniqa", "csv", root=other, dataset_options={"labels": "labels.csv", "dataset_name": "other"},
                weights=f"registry:{report.encoder.id}", store=store, device="cpu", workers=0, progress=False,
                log=lambda line: None)
    outcome = api.fit(["cnniqa"], train="memo", test="other", regressors=["ridge"], store=store, progress=False)
    assert outcome.table["dataset"].tolist() == ["memo->other"] and outcome.table["n_test"].tolist() == [10]


def test_supervised_stages_refuse_a_folder_or_a_missing_protocol(memorised: tuple, tmp_path: Path) -> None:
    root, store, _, _ = memorised
    with pytest.raises(ValueError, match="learns from MOS"):
        api.train("cnniqa", images=root, store=store)
    result = CliRunner().invoke(cli, ["train", "cnniqa", "--dataset", "csv", "--root", str(root), "--store",
                                      str(tmp_path / "S")])
    assert result.exit_code == 2 and "--protocol" in result.output


@pytest.mark.slow
def test_brisque_plus_cnniqa_on_the_demo_dataset_end_to_end(tmp_path: Path) -> None:
    """README's CNNIQA walk-through on the embedded demo set, small settings, through the CLI."""
    runner = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    steps = [["extract", "-m", "brisque", "-d", "demo", "--workers", "0", "-q", *store],
             ["train", "cnniqa", "-d", "demo", "-p", "random-80-20", "--splits", "2", "--steps", "10",
              "--fc-width", "32", "--patches-per-image", "8", "--device", "cpu", "--workers", "0", "-q", *store],
             ["extract", "-m", "cnniqa", "-d", "demo", "--protocol", "random-80-20", "--splits", "2",
              "--device", "cpu", "--workers", "0", "-q", *store]]
    for args in steps:
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    fitted = runner.invoke(cli, ["fit", "-f", "brisque+cnniqa", "-d", "demo", "--splits", "2", "-q", *store,
                                 "--format", "json"])
    assert fitted.exit_code == 0, fitted.output
    rows = json.loads(fitted.output)["splits"]
    assert {row["combination"] for row in rows} == {"brisque+cnniqa"} and {row["split"] for row in rows} == {0, 1}


def test_two_splits_with_the_same_training_rows_are_two_encoders(tmp_path: Path) -> None:
    """The run's identity holds its split: a split whose rows equal another's is not the other's cached run."""
    from iqa_store.store.scope import Scope
    from iqa_store.train.cnniqa import CnniqaStage
    from iqa_store.train.data import TrainingData
    from iqa_store.train.trainer import TrainConfig, train
    names = write_images(tmp_path / "images", 4, size=(64, 64))
    paths = [tmp_path / "images" / n for n in names]
    store = FeatureStore(tmp_path / "store")
    reports = [train(CnniqaStage(**TINY), TrainingData.from_paths("memo", paths, names, [1.0, 2.0, 3.0, 4.0],
                                                                  Scope("memo", "random-80-20", "k", split)),
                     TrainConfig(steps=1, batch_size=2, workers=0), store, progress=False, log=lambda line: None)
               for split in (0, 1)]
    assert [r.status for r in reports] == ["trained", "trained"]
    assert sorted(r.scope.split for r in list_encoders(store)) == [0, 1]

"""CLIP-IQA+: the CoOp token layout against CLIP's own text path, the score's definition, per-split training
that never reads a split's test images, and the score on another dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_CLIP_RN_ARCH, write_images
from test_clipiqa import reference_scores
from iqa_store import api
from iqa_store.nets.coop import coop_prompts, coop_text_features
from iqa_store.nets.openclip import open_clip_module
from iqa_store.splits import ProtocolSpec
from iqa_store.store import FeatureStore, list_encoders
from iqa_store.train import data as training_data

pytestmark = pytest.mark.usefixtures("tiny_clip", "one_torch_thread")

CSV = {"labels": "labels.csv", "dataset_name": "plus"}
TINY = {"arch": TINY_CLIP_RN_ARCH, "pretrained": "none"}
TRAINING = {"steps": 6, "batch_size": 4, "lr": 0.5, "device": "cpu", "workers": 0}
QUIET = {"progress": False, "log": lambda line: None}


def _tiny_clip(seed: int) -> Any:
    torch.manual_seed(seed)
    return open_clip_module().create_model(TINY_CLIP_RN_ARCH, pretrained=None, force_quick_gelu=True).eval()


# --- the prompts ---------------------------------------------------------------------------------

def test_the_context_sits_around_the_class_words_as_in_the_official_layout() -> None:
    """The official prompt "X x 16 Good photo.." with the class words (the name's 3 tokens, counted on
    "Good photo." alone) moved between the context halves. CLIP's BPE makes "photo.." into "photo" + "..":
    with every context vector the embedding of "x", a prompt is the plain text "x x8 good photo.. x x8"
    through CLIP's own encode_text."""
    model = _tiny_clip(0)
    tokenizer = open_clip_module().get_tokenizer(TINY_CLIP_RN_ARCH)
    x_token = tokenizer(["x"])[0, 1]
    context = model.token_embedding.weight[x_token].detach().repeat(16, 1)
    prompts = coop_prompts(tokenizer, ["Good photo.", "Bad photo."])
    assert prompts.name_lengths == (3, 3)
    half = " ".join(["X"] * 8)
    with torch.no_grad():
        ours = coop_text_features(model, prompts, context)
        plain = model.encode_text(tokenizer([f"{half} Good photo.. {half}", f"{half} Bad photo.. {half}"]),
                                  normalize=True)
        other_layout = model.encode_text(tokenizer([f"{half} Good photo. {half}.", f"{half} Bad photo. {half}."]),
                                         normalize=True)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, other_layout, atol=1e-3)  # the layout matters: this test can fail


def test_an_odd_context_is_refused() -> None:
    with pytest.raises(ValueError, match="even number"):
        coop_prompts(open_clip_module().get_tokenizer(TINY_CLIP_RN_ARCH), ["Good photo."], 15)


# --- per split, never reading a split's test images --------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_clip_configs: Path) -> Any:
    """20 images, CLIP-IQA+ trained on each of 2 splits (every image the training read recorded), then extracted."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IQA_OPENCLIP_MODEL_CONFIGS", str(tiny_clip_configs))
        patch.setenv("HF_HUB_OFFLINE", "1")
        root = tmp_path_factory.mktemp("plus")
        names = write_images(root, 20, size=(64, 64), seed=5)
        mos = np.random.default_rng(1).uniform(0, 100, len(names))
        pd.DataFrame({"path": names, "mos": mos}).to_csv(root / "labels.csv", index=False)
        store = FeatureStore(tmp_path_factory.mktemp("store"))
        reads: list[list[str]] = []
        real_read = training_data.read_rgb

        def recorded(path: Path, *args: Any, **kwargs: Any) -> Any:
            reads[-1].append(Path(path).name)
            return real_read(path, *args, **kwargs)

        reports = []
        with pytest.MonkeyPatch.context() as guard:  # every image a training run decodes
            guard.setattr(training_data, "read_rgb", recorded)
            for split in (0, 1):
                reads.append([])
                reports += api.train("clipiqa-plus", dataset="csv", root=root, dataset_options=CSV,
                                     protocol="random-80-20", splits=2, only_splits=[split], hyperparameters=TINY,
                                     store=store, **TRAINING, **QUIET)
        extracted = api.extract("clipiqa-plus", "csv", root=root, dataset_options=CSV, protocol="random-80-20",
                                splits=2, store=store, device="cpu", workers=0, **QUIET)
        yield root, store, reports, extracted, reads


def _splits(store: FeatureStore) -> list:
    return store.splits(store.load_manifest("plus"), ProtocolSpec("random-80-20", 2, 0))


def test_each_split_reads_only_its_training_images(trained: Any) -> None:
    _, store, reports, _, reads = trained
    manifest, splits = store.load_manifest("plus"), _splits(store)
    paths = np.asarray(manifest.table["path"])
    for report, split, read in zip(reports, splits, reads):
        assert read and set(read) == set(paths[split.train])  # the guard saw the training images...
        assert set(read).isdisjoint(paths[split.test])  # ...and never a test image
        record = report.encoder
        assert record.scope.split == split.index and record.config["reader"] == "clipiqa-plus"
        assert set(record.provenance["data"]["training_ids"]) == set(np.asarray(manifest.ids)[split.train])
        training_mos = manifest.mos[split.train]  # CSV declares no scale: the training rows' own extremes
        assert record.config["mos_range"] == [training_mos.min(), training_mos.max()]
        assert record.config["base_weights"] == {"random_init": True, "seed": 0}


def test_only_the_context_is_learned_and_exported(trained: Any) -> None:
    _, _, reports, _, _ = trained
    state = reports[0].encoder.load_state_dict()
    assert list(state) == ["context"] and tuple(state["context"].shape) == (16, 64)
    other = reports[1].encoder.load_state_dict()["context"]
    assert not torch.equal(state["context"], other)  # two splits, two contexts
    torch.manual_seed(0)  # the trainer's seed: what the context started from
    _tiny_clip(0)
    start = torch.empty(16, 64).normal_(std=0.02)
    assert not torch.allclose(state["context"], start)  # SGD moved it


def test_the_stored_score_is_the_softmax_of_the_learned_prompts(trained: Any) -> None:
    root, store, reports, extracted, _ = trained
    model = _tiny_clip(0)  # the base: random initialisation of seed 0, as the encoder's config says
    tokenizer = open_clip_module().get_tokenizer(TINY_CLIP_RN_ARCH)
    manifest = store.load_manifest("plus")
    for report, feature in zip(reports, extracted):
        context = report.encoder.load_state_dict()["context"]
        with torch.no_grad():
            prompts = coop_text_features(model, coop_prompts(tokenizer, ["Good photo.", "Bad photo."]), context)
        expected = reference_scores(model, manifest.paths, prompts.double().numpy(), 100.0, False)
        stored = store.get(feature.feature_set).read()
        assert store.get(feature.feature_set).scope == report.encoder.scope
        np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-5)


def test_fit_uses_each_split_with_the_context_trained_on_it(trained: Any) -> None:
    _, store, _, extracted, _ = trained
    outcome = api.fit(["clipiqa-plus"], datasets=["plus"], splits=2, regressors=["linear"], store=store, progress=False)
    assert sorted(outcome.table["split"].unique().tolist()) == [0, 1]
    used = [store.get(report.feature_set).scope.split for report in extracted]
    assert used == [0, 1]


def test_a_context_trained_on_all_of_one_dataset_scores_another(trained: Any, tmp_path: Path) -> None:
    root, store, _, _, _ = trained
    other = tmp_path / "other"
    names = write_images(other, 6, size=(64, 96), seed=9)
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, 6)}).to_csv(other / "labels.csv", index=False)
    [report] = api.train("clipiqa-plus", dataset="csv", root=root, dataset_options=CSV, protocol="train-all",
                         hyperparameters=TINY, store=store, **{**TRAINING, "steps": 2}, **QUIET)
    assert len(report.encoder.provenance["data"]["training_ids"]) == 20
    common = {"store": store, "device": "cpu", "workers": 0, **QUIET}
    api.extract("clipiqa-plus", "csv", root=root, dataset_options=CSV, protocol="train-all", **common)
    scored = api.extract("clipiqa-plus", "csv", root=other, dataset_options={**CSV, "dataset_name": "other"},
                         weights=f"registry:{report.encoder.id}", **common)
    values = store.get(scored.feature_set).read()
    assert values.shape == (6, 1) and ((values >= 0) & (values <= 1)).all()
    outcome = api.fit(["clipiqa-plus"], train="plus", test="other", regressors=["linear"], store=store, progress=False)
    assert outcome.table["dataset"].tolist() == ["plus->other"] and outcome.table["n_test"].tolist() == [6]


def test_a_folder_or_a_missing_protocol_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="learns from MOS"):
        api.train("clipiqa-plus", images=tmp_path, hyperparameters=TINY, store=tmp_path / "S")
    assert not list_encoders(FeatureStore(tmp_path / "S"))


@pytest.mark.parametrize("declared", [None, (0.0, 10.0)])
def test_the_mos_scale_of_a_split_never_comes_from_its_test_rows(declared, tmp_path: Path) -> None:
    """A csv file without mos_range has its scale from the data's extremes; a split then scales by its
    training rows' own extremes (the test rows hold the dataset's), a declared scale is used as it is."""
    from iqa_store.datasets import load_manifest
    from iqa_store.store.scope import Scope
    names = write_images(tmp_path, 6, size=(32, 32))
    mos = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0]
    pd.DataFrame({"path": names, "mos": mos}).to_csv(tmp_path / "labels.csv", index=False)
    options = {"labels": "labels.csv", "dataset_name": "scale", **({"mos_range": declared} if declared else {})}
    manifest = load_manifest("csv", tmp_path, **options)
    training_rows = [1, 2, 3]  # MOS 2-4; the extremes 1 and 9 are test rows
    data = training_data.TrainingData.from_split(manifest, training_rows, Scope("scale", "random-80-20", "k", 0))
    assert data.mos_range == (declared or (2.0, 4.0))
    assert manifest.mos_range == (declared or (1.0, 9.0))

"""MP-IQE: prompt placement by hooks, every ablation, the loss and Eq. 10 by hand, the label sources,
and per-split training that never reads a test image, then per-split features, scores and fits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from click.testing import CliRunner

from conftest import TINY_CLIP_ARCH, write_images
from iqa_store import api
from iqa_store.cli import cli
from iqa_store.nets.mpiqe import MpiqeConfig, MpiqeModel, MpiqeOutput, window_similarity
from iqa_store.nets.mpiqe_labels import (LabelError, class_lists, dataset_distortions, read_liqe_labels,
                                         zero_shot_prompts)
from iqa_store.nets.openclip import open_clip_module
from iqa_store.splits import ProtocolSpec
from iqa_store.store import FeatureStore, list_encoders
from iqa_store.train import data as training_data
from iqa_store.train.mpiqe import LossWeights, MpiqeStage, total_loss
from iqa_store.train.trainer import TrainConfig, train

pytestmark = pytest.mark.usefixtures("tiny_clip_env", "one_torch_thread")

CSV = {"labels": "labels.csv", "dataset_name": "mp"}
TINY = {"arch": TINY_CLIP_ARCH, "pretrained": "none", "window": 2, "heads": 2, "decoder_layers": 1, "crops": 2}
TRAINING = {"steps": 4, "batch_size": 4, "lr": 1e-3, "device": "cpu", "workers": 0}
QUIET = {"progress": False, "log": lambda line: None}
LAYERS, WIDTH, TEXT_WIDTH, GRID = 2, 64, 64, 49  # the tiny ViT: 2 layers, width 64, 224 / 32 = 7 x 7 patches


def _model(**config: Any) -> MpiqeModel:
    torch.manual_seed(0)
    clip = open_clip_module().create_model(TINY_CLIP_ARCH, pretrained=None, force_quick_gelu=True)
    settings = {"window": 2, "heads": 2, "decoder_layers": 1, **config}
    return MpiqeModel(clip, open_clip_module().get_tokenizer(TINY_CLIP_ARCH), MpiqeConfig(**settings)).eval()


def _block_inputs(model: MpiqeModel, pixels: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every transformer block's input and output, seen by hooks on the blocks themselves."""
    inputs, outputs = [], []

    def record(module: Any, args: tuple, output: torch.Tensor) -> None:
        inputs.append(args[0].detach())
        outputs.append(output.detach())

    handles = [block.register_forward_hook(record) for block in model.clip.visual.transformer.resblocks]
    with torch.no_grad():
        model(pixels)
    for handle in handles:
        handle.remove()
    return inputs, outputs


def _embedded(model: MpiqeModel, pixels: torch.Tensor) -> torch.Tensor:
    """ln_pre([CLS, patches] + positions), written out from the tower's parts."""
    visual = model.clip.visual
    patches = torch.nn.functional.conv2d(pixels, visual.conv1.weight, stride=32).flatten(2).transpose(1, 2)
    tokens = torch.cat([visual.class_embedding.expand(len(pixels), 1, -1), patches], dim=1)
    return visual.ln_pre(tokens + visual.positional_embedding)


# --- where the visual prompts go -------------------------------------------------------------------

def test_deep_prompts_sit_between_the_class_token_and_the_patches_at_every_layer() -> None:
    model = _model(visual_prompts=3)
    pixels = torch.randn(2, 3, 224, 224)
    inputs, outputs = _block_inputs(model, pixels)
    embedded = _embedded(model, pixels).detach()
    assert len(inputs) == LAYERS
    for layer, x in enumerate(inputs):
        assert x.shape == (2, 1 + 3 + GRID, WIDTH)
        for image in range(2):  # this layer's own fresh prompts at positions 1..3, for every image
            torch.testing.assert_close(x[image, 1:4], model.visual_prompts[layer].detach())
        if layer == 0:
            torch.testing.assert_close(x[:, :1], embedded[:, :1])
            torch.testing.assert_close(x[:, 4:], embedded[:, 1:])
        else:  # class token and patches come from the previous layer; its prompt outputs are discarded
            torch.testing.assert_close(x[:, :1], outputs[layer - 1][:, :1])
            torch.testing.assert_close(x[:, 4:], outputs[layer - 1][:, 4:])
            assert not torch.allclose(outputs[layer - 1][:, 1:4], x[:, 1:4])


def test_shallow_prompts_enter_at_the_first_layer_only_and_none_leaves_the_sequence_alone() -> None:
    model = _model(visual_prompts=2, visual_depth="shallow")
    assert tuple(model.visual_prompts.shape) == (1, 2, WIDTH)
    inputs, outputs = _block_inputs(model, torch.randn(1, 3, 224, 224))
    torch.testing.assert_close(inputs[0][0, 1:3], model.visual_prompts[0].detach())
    torch.testing.assert_close(inputs[1], outputs[0])  # carried through, not replaced
    plain = _model(visual_depth="none")
    pixels = torch.randn(1, 3, 224, 224)
    inputs, _ = _block_inputs(plain, pixels)
    assert plain.visual_prompts is None and inputs[0].shape == (1, 1 + GRID, WIDTH)
    torch.testing.assert_close(inputs[0], _embedded(plain, pixels).detach())


# --- ablations (Table 4) and prompt lengths (Table 6) ----------------------------------------------

def _learned(model: MpiqeModel) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}


def _count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(int(np.prod(shape)) for shape in shapes.values())


@pytest.mark.parametrize(("change", "removed", "queries"), [
    ({"scene_prompts": False}, 8 * TEXT_WIDTH, 11),
    ({"distortion_prompts": False}, 8 * TEXT_WIDTH, 9),
    ({"visual_depth": "none"}, LAYERS * 4 * WIDTH, 20),
    ({"visual_depth": "shallow"}, (LAYERS - 1) * 4 * WIDTH, 20),
    ({"text_context": 2}, 2 * 6 * TEXT_WIDTH, 20),
    ({"visual_prompts": 1}, LAYERS * 3 * WIDTH, 20),
])
def test_each_ablation_removes_what_it_says(change: dict[str, Any], removed: int, queries: int) -> None:
    full, ablated = _model(), _model(**change)
    assert _count(_learned(full)) - _count(_learned(ablated)) == removed
    assert not any(p.requires_grad for p in ablated.clip.parameters())
    seen: list[int] = []
    handle = ablated.decoder[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]) and None)
    with torch.no_grad():
        out = ablated(torch.randn(2, 3, 224, 224))
    handle.remove()
    assert seen == [queries]  # the multimodal encoder's queries: the prompts that are left
    assert (out.scene_logits is None) == (change.get("scene_prompts") is False)
    assert (out.distortion_logits is None) == (change.get("distortion_prompts") is False)
    if "scene_prompts" in change:
        assert not hasattr(ablated, "scene_context") and not hasattr(ablated, "scene_tokens")


def test_longer_prompts_of_table_6_grow_what_is_learned() -> None:
    assert _learned(_model(text_context=16))["scene_context"] == (16, TEXT_WIDTH)
    assert _learned(_model(visual_prompts=8))["visual_prompts"] == (LAYERS, 8, WIDTH)


def test_both_text_families_off_is_refused() -> None:
    with pytest.raises(ValueError, match="keep at least one"):
        MpiqeStage(**{**TINY, "scene_prompts": False, "distortion_prompts": False}).check()


# --- Eq. 10 and Eq. 15 by hand ---------------------------------------------------------------------

def test_window_similarity_is_eq_10_with_max_pooled_windows() -> None:
    rng = np.random.default_rng(0)
    patches, texts = rng.normal(size=(2, 16, 5)), rng.normal(size=(3, 5))
    tau = 0.3
    got = window_similarity(torch.tensor(patches), torch.tensor(texts), 2, tau).numpy()
    for image in range(2):
        grid = patches[image].reshape(4, 4, 5)
        windows = [grid[r:r + 2, c:c + 2].reshape(4, 5).max(axis=0) for r in (0, 2) for c in (0, 2)]
        for c, text in enumerate(texts):
            sims = np.array([w @ text / np.linalg.norm(w) / np.linalg.norm(text) for w in windows])
            weights = np.exp(sims / tau) / np.exp(sims / tau).sum()
            assert got[image, c] == pytest.approx(float((weights * sims).sum()), rel=1e-10)


@pytest.mark.parametrize("kind", ["smooth-l1", "l1"])
def test_the_loss_is_scene_ce_plus_distortion_ce_plus_lambda_2_score_loss(kind: str) -> None:
    rng = np.random.default_rng(1)
    scene, distortion = rng.normal(size=(4, 9)), rng.normal(size=(4, 11))
    score, target = rng.uniform(size=4), rng.uniform(size=4)
    scene_target = np.zeros((4, 9))
    scene_target[0, [1, 4]] = 1  # two scenes share the mass
    scene_target[1, 2] = scene_target[2, 8] = 1  # row 3: no scene label, left out of the mean
    distortion_target = np.eye(11)[[3, 0, 10, 5]]
    output = MpiqeOutput(torch.tensor(scene), torch.tensor(distortion), torch.zeros(4, 1), torch.tensor(score))
    targets = {"scene": torch.tensor(scene_target), "distortion": torch.tensor(distortion_target),
               "score": torch.tensor(target)}
    got = total_loss(output, targets, LossWeights(1.0, 1.0, 0.5), kind, 0.05).item()

    def log_softmax(row: np.ndarray) -> np.ndarray:
        return row - np.log(np.exp(row).sum())

    scene_ce = np.mean([-0.5 * (log_softmax(scene[0])[1] + log_softmax(scene[0])[4]),
                        -log_softmax(scene[1])[2], -log_softmax(scene[2])[8]])
    distortion_ce = np.mean([-log_softmax(distortion[i])[c] for i, c in enumerate([3, 0, 10, 5])])
    error = np.abs(score - target)
    per_item = error if kind == "l1" else np.where(error < 0.05, 0.5 * error ** 2 / 0.05, error - 0.025)
    assert got == pytest.approx(scene_ce + distortion_ce + 0.5 * per_item.mean(), rel=1e-6)
    without_scene = dataclasses.replace(output, scene_logits=None)
    assert total_loss(without_scene, targets, LossWeights(1.0, 1.0, 0.5), kind, 0.05).item() == pytest.approx(
        distortion_ce + 0.5 * per_item.mean(), rel=1e-6)


def test_lambda_2_is_0_1_on_live_and_csiq_and_0_5_elsewhere() -> None:
    from iqa_store.store import Scope
    for dataset, expected in (("live", 0.1), ("csiq", 0.1), ("koniq", 0.5), ("kadid10k", 0.5)):
        stage = MpiqeStage(**TINY, label_source="none")
        data = dataclasses.replace(training_data.TrainingData("x", (), (), "id"), mos_range=(0.0, 1.0),
                                   scope=Scope(dataset, "random-80-20", "k", 0))
        stage.prepare(data)
        assert stage.loss_weights() == LossWeights(0.0, 0.0, expected)
    assert MpiqeStage(**TINY, lambda_score="0.7").loss_weights().score == 0.7


# --- where labels come from ------------------------------------------------------------------------

def _liqe_folder(folder: Path, rows: list[str], name: str = "live_train_clip.txt") -> Path:
    (folder / "splits2" / "1").mkdir(parents=True, exist_ok=True)
    (folder / "splits2" / "1" / name).write_text("\n".join(rows) + "\n")
    return folder


def test_liqe_rows_are_matched_by_path_and_mapped_to_the_classes(tmp_path: Path) -> None:
    classes = class_lists()
    liqe = read_liqe_labels(_liqe_folder(tmp_path, [
        "jp2k/img1.bmp\t50.1\tjpeg2000 compression\tnight\tstill_life\tinvalid",
        "wn/img1.bmp\t40.0\twhite noise\tanimal\tinvalid\tinvalid",
        "Images/7.JPG\t61.0\tdarken\tindoor\tinvalid\tinvalid"]))
    first = liqe.lookup("/data/databaserelease2/jp2k/img1.bmp")
    assert first.scenes == (classes.scene.index("night scene"), classes.scene.index("still-life"))
    assert first.distortion == classes.distortion.index("JPEG2000 compression")
    assert liqe.lookup("databaserelease2/wn/img1.bmp").distortion == classes.distortion.index("noise")
    assert liqe.lookup("images/7.jpg").distortion == classes.distortion.index("under-exposure")
    assert liqe.lookup("gblur/img1.bmp") is None  # two rows of that name, neither in that folder
    assert liqe.lookup("512x384/7.JPG").distortion == classes.distortion.index("under-exposure")  # the only 7.JPG
    with pytest.raises(LabelError, match="several LIQE rows"):  # a bare name: two rows could be meant
        liqe.lookup("img1.bmp")


@pytest.mark.parametrize(("row", "reason"), [
    ("a.bmp\t1\tblur", "expected 6 tab-separated fields"),
    ("a.bmp\t1\tsmudge\thuman\tinvalid\tinvalid", "unknown LIQE distortion 'smudge'"),
    ("a.bmp\t1\tcontrast\tspaceship\tinvalid\tinvalid", "unknown LIQE scene 'spaceship'"),
])
def test_a_bad_liqe_row_is_one_error_naming_file_and_line(tmp_path: Path, row: str, reason: str) -> None:
    folder = _liqe_folder(tmp_path, ["ok.bmp\t1\tcontrast\thuman\tinvalid\tinvalid", row])
    with pytest.raises(LabelError, match=reason) as error:
        read_liqe_labels(folder)
    assert "live_train_clip.txt:2" in str(error.value)


def test_the_synthetic_layouts_name_their_distortions() -> None:
    classes = class_lists()
    kadid = dataset_distortions("kadid10k", ["images/I01_01_03.png", "images/I81_16_5.png", "images/odd.png"])
    assert kadid == [classes.distortion.index("blur"), classes.distortion.index("over-exposure"), None]
    live = dataset_distortions("live", ["r/jpeg/img3.bmp", "r/fastfading/img1.bmp"])
    assert live == [classes.distortion.index("JPEG compression"), classes.distortion.index("JPEG2000 compression")]
    assert dataset_distortions("koniq", ["a.jpg"]) is None
    assert zero_shot_prompts("scene")[3] == "a photo of a indoor scene."
    assert len(class_lists().scene) == 9 and len(class_lists().distortion) == 11


# --- per split, without leakage --------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_clip_env: None) -> Any:
    """20 images with random MOS; MP-IQE trained on each of 2 splits (every decoded image recorded),
    then its features and scores extracted per split."""
    root = tmp_path_factory.mktemp("mp")
    names = write_images(root, 20, size=(64, 80), seed=4)
    mos = np.random.default_rng(2).uniform(1, 5, len(names))
    pd.DataFrame({"path": names, "mos": mos}).to_csv(root / "labels.csv", index=False)
    liqe = _liqe_folder(tmp_path_factory.mktemp("liqe"), [f"{n}\t0\tgaussian blur\tplant\tinvalid\tinvalid"
                                                          for n in names[::2]], "mp_train_clip.txt")
    store = FeatureStore(tmp_path_factory.mktemp("store"))
    reads: list[list[str]] = []
    real_read = training_data.read_rgb

    def recorded(path: Path, *args: Any, **kwargs: Any) -> Any:
        reads[-1].append(Path(path).name)
        return real_read(path, *args, **kwargs)

    reports = []
    with pytest.MonkeyPatch.context() as guard:
        guard.setattr(training_data, "read_rgb", recorded)  # the stage's zero-shot labelling reads through it too
        for split in (0, 1):
            reads.append([])
            reports += api.train("mpiqe", dataset="csv", root=root, dataset_options=CSV, protocol="random-80-20",
                                 splits=2, only_splits=[split], hyperparameters={**TINY, "labels": str(liqe)},
                                 store=store, **TRAINING, **QUIET)
    extracted = {output: api.extract("mpiqe", "csv", root=root, dataset_options=CSV, protocol="random-80-20",
                                     splits=2, store=store, settings={"output": output, "crops": 3}, device="cpu",
                                     workers=0,
                                     **QUIET)
                 for output in ("features", "score")}
    return root, store, reports, extracted, reads, set(names[::2])


def _splits(store: FeatureStore) -> list:
    return store.splits(store.load_manifest("mp"), ProtocolSpec("random-80-20", 2, 0))


def test_each_split_trains_on_and_reads_only_its_training_images(trained: Any) -> None:
    _, store, reports, _, reads, _ = trained
    manifest, splits = store.load_manifest("mp"), _splits(store)
    ids, paths = np.asarray(manifest.ids), np.asarray(manifest.table["path"])
    for report, split, read in zip(reports, splits, reads):
        record = report.encoder
        assert record.scope.split == split.index and record.scope.splits_key == split.key
        seen = set(record.provenance["data"]["training_ids"])
        assert seen == set(ids[split.train]) and seen.isdisjoint(ids[split.test])
        assert read and set(read) == set(paths[split.train])  # sampling and zero-shot labelling...
        assert set(read).isdisjoint(paths[split.test])  # ...never decode a test image
        assert record.config["reader"] == "mpiqe" and record.config["feature_dim"] == 32


def test_labels_come_from_liqe_where_it_has_them_and_zero_shot_otherwise(trained: Any) -> None:
    _, store, reports, _, _, in_liqe = trained
    manifest, splits = store.load_manifest("mp"), _splits(store)
    for report, split in zip(reports, splits):
        train_paths = set(np.asarray(manifest.table["path"])[split.train])
        counts = report.encoder.config["labels"]["counts"]
        expected = {"liqe": len(train_paths & in_liqe), "zero-shot": len(train_paths - in_liqe)}
        assert counts["scene"] == counts["distortion"] == {k: v for k, v in expected.items() if v}
        assert report.encoder.config["lambda_score"] == 0.5


def test_only_the_prompts_and_the_encoder_are_exported(trained: Any) -> None:
    _, _, reports, _, _, _ = trained
    state = reports[0].encoder.load_state_dict()
    assert not any(key.startswith("clip.") for key in state)
    assert tuple(state["visual_prompts"].shape) == (LAYERS, 4, WIDTH)
    assert tuple(state["scene_context"].shape) == tuple(state["distortion_context"].shape) == (8, TEXT_WIDTH)
    other = reports[1].encoder.load_state_dict()
    assert not torch.equal(state["visual_prompts"], other["visual_prompts"])  # two splits, two models


def test_the_stored_vectors_are_the_model_on_the_images_crops(trained: Any) -> None:
    """Rebuilt from the base CLIP its config names (seed 0) and the exported tensors, on the crops the
    extractor draws: the mean pooled feature and the mean score on the MOS scale."""
    from iqa_store.extractors import create_extractor
    _, store, reports, extracted, _, _ = trained
    record = reports[0].encoder
    model = _model(**{k: v for k, v in record.config["mpiqe"].items()})
    model.load_learned_state(record.load_state_dict(), "export")
    manifest = store.load_manifest("mp")
    reader = create_extractor("mpiqe", weights=str(record.weights_path), encoder_config=record.config, crops=3)
    crops = reader.load_item(manifest.paths[3])
    assert crops.shape == (3, 3, 224, 224)
    with torch.no_grad():
        out = model(crops)
    low, high = manifest.mos_range
    features = store.get(extracted["features"][0].feature_set).read()
    scores = store.get(extracted["score"][0].feature_set).read()
    np.testing.assert_allclose(features[3], out.features.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    assert scores[3, 0] == pytest.approx(low + out.score.mean().item() * (high - low), rel=1e-4)


def test_the_base_clip_must_be_the_one_trained_on(trained: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from iqa_store.extractors import ExtractorError, RunOptions, create_extractor
    record = trained[2][0].encoder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    published = {**record.config, "base_weights": {"open_clip": f"{TINY_CLIP_ARCH}:openai"}}
    with pytest.raises(ExtractorError, match="base_weights_file"):
        create_extractor("mpiqe", weights=str(record.weights_path), encoder_config=published).prepare(RunOptions())
    other = tmp_path / "other.pt"
    torch.save({"x": torch.zeros(1)}, other)
    from_file = {**record.config, "base_weights": {"file": "clip.pt", "sha256": "0" * 64}}
    with pytest.raises(ExtractorError, match="not the CLIP checkpoint"):
        create_extractor("mpiqe", weights=str(record.weights_path), encoder_config=from_file,
                         base_weights_file=str(other)).prepare(RunOptions())
    with pytest.raises(ExtractorError, match="give it as -s base_weights_file"):
        create_extractor("mpiqe", weights=str(record.weights_path), encoder_config=from_file).prepare(RunOptions())


def test_its_own_score_is_evaluated_per_split_like_a_fitted_model(trained: Any) -> None:
    """A linear map of the score fitted on a split's training rows leaves SRCC and PLCC on its test
    rows those of the raw score (times the sign of the fitted slope, that of the training rows'
    correlation): recomputed here with scipy from the stored scores."""
    _, store, _, extracted, _, _ = trained
    outcome = api.fit(["mpiqe-score"], datasets=["mp"], splits=2, regressors=["linear"], store=store, progress=False)
    manifest, splits = store.load_manifest("mp"), _splits(store)
    table = outcome.table.set_index("split")
    for report, split in zip(extracted["score"], splits):
        stored = store.get(report.feature_set).read()[:, 0]
        slope = np.sign(scipy.stats.pearsonr(stored[split.train], manifest.mos[split.train])[0])
        values, mos = stored[split.test], manifest.mos[split.test]
        assert table.loc[split.index, "srcc"] == pytest.approx(slope * scipy.stats.spearmanr(values, mos)[0], abs=1e-9)
        assert table.loc[split.index, "plcc"] == pytest.approx(slope * scipy.stats.pearsonr(values, mos)[0], abs=1e-6)
    features = api.fit(["mpiqe"], datasets=["mp"], splits=2, regressors=["ridge"], store=store, progress=False)
    assert sorted(features.table["split"].tolist()) == [0, 1]
    spec = json.loads((features.run_dir / "mp" / "spec.json").read_text())
    assert spec["features"]["mpiqe"] == [r.feature_set for r in extracted["features"]]


@pytest.mark.parametrize("change", [{"scene_prompts": False}, {"distortion_prompts": False},
                                    {"visual_depth": "none"}, {"visual_depth": "shallow"},
                                    {"text_context": 2, "visual_prompts": 1}, {"label_source": "none"}])
def test_every_ablation_trains(trained: Any, tmp_path: Path, change: dict[str, Any]) -> None:
    from iqa_store.store import Scope
    root, store, _, _, _, _ = trained
    manifest, split = store.load_manifest("mp"), _splits(store)[0]
    data = training_data.TrainingData.from_split(manifest, split.train, Scope("mp", "random-80-20", split.key, 0))
    report = train(MpiqeStage(**TINY, **change), data, TrainConfig(steps=1, batch_size=2, device="cpu", lr=1e-3),
                   FeatureStore(tmp_path), **QUIET)
    assert np.isfinite(report.losses).all() and len(report.losses) == 1
    exported = report.encoder.load_state_dict()
    assert ("scene_context" in exported) == change.get("scene_prompts", True)
    assert ("visual_prompts" in exported) == (change.get("visual_depth") != "none")


def test_the_cli_refuses_a_resnet_and_a_missing_protocol(trained: Any, tmp_path: Path) -> None:
    root = trained[0]
    base = ["train", "mpiqe", "-d", "csv", "--root", str(root), "-o", "labels=labels.csv", "--store", str(tmp_path)]
    missing = CliRunner().invoke(cli, base)
    assert missing.exit_code == 2 and "--protocol" in missing.output
    resnet = CliRunner().invoke(cli, [*base, "-p", "random-80-20", "--arch", "RN50"])
    assert resnet.exit_code == 2 and "CLIP ResNet" in resnet.output and "Traceback" not in resnet.output


@pytest.mark.slow
def test_mpiqe_score_on_the_demo_dataset_end_to_end(tmp_path: Path) -> None:
    """README's MP-IQE walk-through on the embedded demo set, tiny settings, through the CLI."""
    runner = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    tiny = ["--arch", TINY_CLIP_ARCH, "--pretrained", "none", "--window", "2", "--heads", "2",
            "--decoder-layers", "1", "--crops", "2"]
    split = ["-d", "demo", "--protocol", "random-80-20", "--splits", "2"]
    steps = [["train", "mpiqe", *split, *tiny, "--steps", "3", "--batch-size", "4", "--device", "cpu",
              "--workers", "0", "-q", *store],
             ["extract", "-m", "mpiqe", *split, "-s", "output=score", "--device", "cpu", "--workers", "0", "-q",
              *store]]
    for args in steps:
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    fitted = runner.invoke(cli, ["fit", "-f", "mpiqe-score", "-d", "demo", "--splits", "2", "--regressor", "linear",
                                 "-q", *store, "--format", "json"])
    assert fitted.exit_code == 0, fitted.output
    rows = json.loads(fitted.output)["splits"]
    assert {row["combination"] for row in rows} == {"mpiqe-score"} and {row["split"] for row in rows} == {0, 1}
    assert all(np.isfinite(row["srcc"]) for row in rows)
    assert len(list_encoders(FeatureStore(tmp_path / "store"))) == 2


@pytest.mark.slow
def test_torchrun_ddp_on_cpu_trains_one_split_into_one_encoder(tmp_path: Path, tiny_clip_configs: Path) -> None:
    """Two processes (gloo) share each batch; rank 0 registers the split's encoder, with its scope."""
    import os
    import subprocess
    import sys
    root = tmp_path / "mp"
    names = write_images(root, 10, size=(64, 80), seed=4)
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, len(names))}).to_csv(root / "labels.csv", index=False)
    store = tmp_path / "store"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
               str(Path(sys.executable).parent / "iqa-store"), "train", "mpiqe", "-d", "csv", "--root", str(root),
               "-o", "labels=labels.csv", "-o", "dataset_name=mp", "-p", "random-80-20", "--splits", "2",
               "--split", "1",
               "--arch", TINY_CLIP_ARCH, "--pretrained", "none", "--window", "2", "--heads", "2",
               "--decoder-layers", "1", "--crops", "2", "--steps", "2", "--batch-size", "2", "--device", "cpu",
               "--workers", "0", "-q", "--store", str(store), "--format", "json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IQA_OPENCLIP_MODEL_CONFIGS": str(tiny_clip_configs),
           "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    [record] = list_encoders(FeatureStore(store))
    assert record.provenance["world_size"] == 2 and record.scope.split == 1
    assert run.stdout.count(record.id) == 2  # each rank reports the one registered encoder

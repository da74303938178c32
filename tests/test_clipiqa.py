"""CLIP-IQA and QualiCLIP scores recomputed from their definitions, against what a real extraction stores.

A tiny random CLIP ResNet (``tiny_rn_clip``) is saved in each official layout (OpenAI's fp16
state dict, open_clip's safetensors, the published ``qualiclip.pth``, the QualiCLIP stage's
registry export); ``iqa_store.api.extract`` runs on a small image tree of two sizes into a real
store. The reference is independent of the extractor: pixels normalised in numpy, the
attention pool written out in float64 without positions (``manual_pool_without_positions``),
per-pair softmax of scale x cosine in numpy, the mean over pairs for QualiCLIP.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import TINY_CLIP_RN_ARCH, write_images
from test_clip_quality import manual_pool_without_positions, random_prompt_features, tiny_rn_clip, write_layout
from iqa_store import api
from iqa_store.extractors import ExtractorError, RunOptions, create_extractor
from iqa_store.nets.clip_quality import CLIP_MEAN, CLIP_STD, prompt_pairs, qualiclip_tensors
from iqa_store.store import FeatureStore
from iqa_store.store.encoders import save_encoder

pytestmark = pytest.mark.usefixtures("tiny_clip", "one_torch_thread")


@functools.cache
def tiny_model(seed: int) -> Any:
    """The tiny CLIP ResNet of seed ``seed`` (configs folder from the tiny_clip fixture's environment)."""
    return tiny_rn_clip(Path(os.environ["IQA_OPENCLIP_MODEL_CONFIGS"]), seed)


def fp16_rounded(model: Any) -> Any:
    """What a model saved in OpenAI's fp16 layout loads back as."""
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return rounded


def reference_pooled(model: Any, path: Path) -> np.ndarray:
    """The unnormalised attention-pool output of one whole image, pool written out in float64."""
    pixels = (np.asarray(Image.open(path).convert("RGB"), np.float64) / 255 - CLIP_MEAN) / CLIP_STD
    x = torch.from_numpy(pixels.transpose(2, 0, 1)[None].astype(np.float32))
    visual = model.visual
    with torch.no_grad():
        feature_map = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
        return manual_pool_without_positions(visual.attnpool, feature_map).numpy()[0]


def reference_text_features(model: Any, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Each prompt through the text tower alone, L2-normalised in numpy, in pair order."""
    from iqa_store.nets.openclip import open_clip_module
    tokenizer = open_clip_module().get_tokenizer(TINY_CLIP_RN_ARCH)
    with torch.no_grad():
        rows = [model.encode_text(tokenizer([text]))[0].double().numpy() for pair in pairs for text in pair]
    return np.stack([row / np.linalg.norm(row) for row in rows])


def reference_scores(model: Any, paths: list[Path], prompt_features: np.ndarray, scale: float,
                     mean_over_pairs: bool) -> np.ndarray:
    """Per image, per pair: exp(s cos+) / (exp(s cos+) + exp(s cos-)); QualiCLIP: their mean."""
    rows = []
    for path in paths:
        image = reference_pooled(model, path).astype(np.float64)
        cosine = (np.asarray(prompt_features, np.float64) @ (image / np.linalg.norm(image))).reshape(-1, 2)
        positive = 1.0 / (1.0 + np.exp(scale * (cosine[:, 1] - cosine[:, 0])))
        rows.append([positive.mean()] if mean_over_pairs else positive)
    return np.asarray(rows)


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A csv dataset: images of two sizes (64 x 96 and 96 x 128), so the pool runs on two grids."""
    root = tmp_path_factory.mktemp("clipiqa-data")
    names = [f"small/{n}" for n in write_images(root / "small", 3, (64, 96), seed=1)]
    names += [f"large/{n}" for n in write_images(root / "large", 2, (96, 128), seed=2)]
    pd.DataFrame({"path": names, "mos": np.arange(1.0, len(names) + 1)}).to_csv(root / "labels.csv", index=False)
    return root


def stored(model: str, root: Path, store: Path, weights: str, **settings: Any) -> tuple[np.ndarray, list[Path], Any]:
    """Extract through the API into a real store: (values, image paths in row order, feature set)."""
    report = api.extract(model, "csv", root=str(root), dataset_options={"labels": "labels.csv", "dataset_name": "toy"},
                         store=str(store), weights=weights, settings={"arch": TINY_CLIP_RN_ARCH, **settings},
                         device="cpu", workers=0, batch_size=2, progress=False, log=lambda _: None)
    assert report.status == "complete" and not report.failures
    feature_set = FeatureStore(store).get(report.feature_set)
    return feature_set.read(), [root / p for p in feature_set.rel_paths], feature_set


def pairs_of(name: str) -> list[tuple[str, str]]:
    return [pair.texts for pair in prompt_pairs(name)]


@pytest.mark.parametrize("layout", ["openai", "open_clip", "qualiclip"])
@pytest.mark.parametrize("prompts", ["clipiqa", "clipiqa-attributes"])
def test_clipiqa_columns_equal_the_definition(layout: str, prompts: str, image_tree: Path, tmp_path: Path) -> None:
    model = tiny_model(0)
    suffix = ".safetensors" if layout == "open_clip" else ".pth"
    weights = write_layout(model, layout, tmp_path / f"w{suffix}", random_prompt_features(7, 32))
    values, paths, feature_set = stored("clipiqa", image_tree, tmp_path / "store", str(weights), prompts=prompts)
    loaded = fp16_rounded(model) if layout == "openai" else model
    expected = reference_scores(loaded, paths, reference_text_features(loaded, pairs_of(prompts)), 100.0, False)
    assert values.shape == (5, len(prompt_pairs(prompts)))
    np.testing.assert_allclose(values, expected, atol=1e-5, rtol=0)
    declared = feature_set.attrs["extractor_settings"]["score"]
    assert declared["columns"] == [pair.name for pair in prompt_pairs(prompts)] and declared["range"] == [0.0, 1.0]


@pytest.mark.parametrize("scale", [100.0, 50.0])
def test_qualiclip_score_uses_the_checkpoints_prompt_features(scale: float, image_tree: Path, tmp_path: Path) -> None:
    """The published layout: the score is taken against ``prompts_features``, not the text tower."""
    model = tiny_model(0)
    prompts = random_prompt_features(7, 32, seed=4)
    weights = write_layout(model, "qualiclip", tmp_path / "qualiclip.pth", prompts)
    values, paths, feature_set = stored("qualiclip", image_tree, tmp_path / "store", str(weights), scale=scale)
    np.testing.assert_allclose(values, reference_scores(model, paths, prompts.numpy(), scale, True), atol=1e-5, rtol=0)
    from_text = reference_scores(model, paths, reference_text_features(model, pairs_of("qualiclip")), scale, True)
    assert np.abs(values - from_text).max() > 1e-3
    assert feature_set.attrs["extractor_settings"]["scale"] == scale


def test_qualiclip_without_prompt_features_encodes_its_seven_pairs(image_tree: Path, tmp_path: Path) -> None:
    model = tiny_model(1)
    weights = write_layout(model, "open_clip", tmp_path / "w.safetensors")
    values, paths, _ = stored("qualiclip", image_tree, tmp_path / "store", str(weights))
    expected = reference_scores(model, paths, reference_text_features(model, pairs_of("qualiclip")), 100.0, True)
    np.testing.assert_allclose(values, expected, atol=1e-5, rtol=0)


def test_a_registry_encoder_in_the_export_layout(image_tree: Path, tmp_path: Path) -> None:
    """What ``iqa-store train qualiclip`` registers (image tower + prompt features) read by -m qualiclip
    and -m qualiclip-embedding; the arch comes from the encoder's config."""
    model = tiny_model(2)
    prompts = random_prompt_features(7, 32, seed=6)
    store = FeatureStore(tmp_path / "store")
    save_encoder(store, "qualiclip", qualiclip_tensors(model.visual.state_dict(), prompts),
                 {"reader": "qualiclip", "arch": TINY_CLIP_RN_ARCH}, {"stage": "test"})
    report = api.extract("qualiclip", "csv", root=str(image_tree), store=store, weights="registry:qualiclip",
                         dataset_options={"labels": "labels.csv", "dataset_name": "toy"}, device="cpu", workers=0,
                         progress=False, log=lambda _: None)
    feature_set = store.get(report.feature_set)
    paths = [image_tree / p for p in feature_set.rel_paths]
    np.testing.assert_allclose(feature_set.read(), reference_scores(model, paths, prompts.numpy(), 100.0, True),
                               atol=1e-5, rtol=0)
    embedding = api.extract("qualiclip", "csv", root=str(image_tree), store=store, weights="registry:qualiclip",
                            dataset_options={"labels": "labels.csv", "dataset_name": "toy"}, device="cpu", workers=0,
                            settings={"output": "embedding"}, progress=False, log=lambda _: None)
    assert embedding.feature_set.split("/")[1] == "qualiclip-embedding"
    np.testing.assert_allclose(store.get(embedding.feature_set).read(), [reference_pooled(model, p) for p in paths],
                               atol=1e-5, rtol=1e-4)


def test_embedding_models_store_the_pool_output(image_tree: Path, tmp_path: Path) -> None:
    model = tiny_model(0)
    weights = write_layout(model, "qualiclip", tmp_path / "qualiclip.pth", random_prompt_features(7, 32))
    for name in ("clipiqa-embedding", "qualiclip-embedding"):
        values, paths, feature_set = stored(name, image_tree, tmp_path / "store", str(weights))
        assert feature_set.extractor == name and "score" not in feature_set.attrs["extractor_settings"]
        np.testing.assert_allclose(values, [reference_pooled(model, p) for p in paths], atol=1e-5, rtol=1e-4)


def test_clipiqa_embedding_is_clip_rn50_at_native_size(image_tree: Path, tmp_path: Path) -> None:
    """Our pool forward and clip-rn50's (open_clip's pool with its table zeroed) give the same numbers."""
    weights = str(write_layout(tiny_model(3), "open_clip", tmp_path / "w.safetensors"))
    ours, _, _ = stored("clipiqa-embedding", image_tree, tmp_path / "store", weights)
    clip, _, _ = stored("clip-rn50", image_tree, tmp_path / "store", weights, policy="full")
    np.testing.assert_allclose(ours, clip, atol=1e-5, rtol=1e-5)


def test_written_out_prompt_pairs_and_bad_settings() -> None:
    extractor = create_extractor("clipiqa", prompts="Sharp photo./Blurry photo.; Noisy photo./Clean photo.")
    assert extractor.settings()["prompts"] == [["Sharp photo.", "Blurry photo."], ["Noisy photo.", "Clean photo."]]
    assert extractor.dim == 2 and extractor.settings()["score"]["higher_is_better"] == [None, None]
    with pytest.raises(ExtractorError, match="prompts 'nope': not a prompt set"):
        create_extractor("clipiqa", prompts="nope")
    assert [p.name for p in create_extractor("clipiqa", prompts="clipiqa-attributes:noisiness,quality").pairs()] == \
        ["noisiness", "quality"]
    with pytest.raises(ExtractorError, match=r"clipiqa-attributes has no pair \['loud'\]; it has quality, bright"):
        create_extractor("clipiqa", prompts="clipiqa-attributes:loud")
    with pytest.raises(ExtractorError, match="pair 2 'Bad photo.' is not POSITIVE/NEGATIVE"):
        create_extractor("clipiqa", prompts="Good photo./x;Bad photo.")
    with pytest.raises(ExtractorError, match="normalize .* goes with output=embedding"):
        create_extractor("qualiclip", normalize=True)
    assert create_extractor("qualiclip-embedding", normalize=True).dim == 1024


def test_clipiqa_refuses_an_image_encoder_export(tmp_path: Path) -> None:
    model = tiny_model(0)
    weights = write_layout(model, "qualiclip-visual", tmp_path / "export.safetensors", random_prompt_features(7, 32))
    extractor = create_extractor("clipiqa", arch=TINY_CLIP_RN_ARCH, weights=str(weights))
    with pytest.raises(ExtractorError, match="holds only an image encoder .* read it with -m qualiclip"):
        extractor.prepare(RunOptions())


def test_qualiclip_without_weights_names_the_published_file() -> None:
    with pytest.raises(ExtractorError, match=r"qualiclip.pth .*--weights"):
        create_extractor("qualiclip").prepare(RunOptions())


@pytest.mark.parametrize("prompts, sign", [("clipiqa", 1.0), ("clipiqa-attributes:noisiness", -1.0)])
def test_zero_shot_reads_the_declared_orientation(prompts: str, sign: float, image_tree: Path, tmp_path: Path) -> None:
    """"Noisy photo." first: a higher score means a noisier image, so zero-shot negates it."""
    from scipy import stats
    weights = write_layout(tiny_model(0), "open_clip", tmp_path / "w.safetensors")
    values, _, feature_set = stored("clipiqa", image_tree, tmp_path / "store", str(weights), prompts=prompts)
    assert feature_set.attrs["extractor_settings"]["score"]["higher_is_better"] == [sign > 0]
    outcome = api.fit(["clipiqa"], datasets=["toy"], protocol="zero-shot", store=str(tmp_path / "store"),
                      progress=False)
    mos = FeatureStore(tmp_path / "store").load_manifest("toy").mos
    (row,) = outcome.table.to_dict("records")
    assert row["srcc"] == pytest.approx(sign * stats.spearmanr(values[:, 0], mos)[0])


def test_a_score_outside_its_declared_range_is_refused() -> None:
    from iqa_store.fit.evaluation import ScoreDeclaration
    declared = ScoreDeclaration.of_settings({"score": {"columns": ["q"], "higher_is_better": [False], "range": [0, 1]}})
    assert declared == ScoreDeclaration(False, 0.0, 1.0)
    np.testing.assert_array_equal(declared.oriented("clipiqa", np.array([0.2, 0.9])), [-0.2, -0.9])
    with pytest.raises(ValueError, match=r"clipiqa declares scores in \[0.0, 1.0\] but has 1 outside \(e.g. 1.5\)"):
        declared.oriented("clipiqa", np.array([0.2, 1.5]))
    assert ScoreDeclaration.of_settings({"normalize": False}) is None


# --- iqa-store plot levels -----------------------------------------------------------------------

KADID_ROWS = [(ref, kind, level) for ref in (1, 2) for kind in (1, 10, 18) for level in range(1, 6)]


def test_plot_levels_draws_the_stored_means_per_type_and_level(tmp_path: Path) -> None:
    """A tiny KADID-10k tree scored by qualiclip; the plotted means are a groupby of the stored scores."""
    from click.testing import CliRunner

    from iqa_store.cli import cli
    from iqa_store.datasets.levels import KADID_TYPES
    from iqa_store.datasets.testing import write_image
    from iqa_store.report.plots import level_means_plot
    root = tmp_path / "kadid10k"
    names = [f"I{ref:02d}_{kind:02d}_{level:02d}.png" for ref, kind, level in KADID_ROWS]
    lines = ["dist_img,ref_img,dmos,var"] + [f"{n},I{n[1:3]}.png,{1 + (i % 5) * 0.9:.2f},0.1" for i, n in enumerate(names)]
    (root / "dmos.csv").parent.mkdir(parents=True)
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    for seed, name in enumerate(names + ["I01.png", "I02.png"]):
        write_image(root / "images" / name, size=(64, 48), seed=seed)
    weights = write_layout(tiny_model(0), "qualiclip", tmp_path / "qualiclip.pth", random_prompt_features(7, 32))
    store = tmp_path / "store"
    api.extract("qualiclip", "kadid10k", root=str(root), store=str(store), weights=str(weights),
                settings={"arch": TINY_CLIP_RN_ARCH}, device="cpu", workers=0, progress=False, log=lambda _: None)
    result = CliRunner().invoke(cli, ["plot", "levels", "--feature", "qualiclip", "--dataset", "kadid10k",
                                      "--store", str(store), "-o", str(tmp_path / "figures"), "--format", "json"])
    assert result.exit_code == 0, result.output
    feature_set = FeatureStore(store).resolve("qualiclip", "kadid10k")
    truth = pd.DataFrame([(KADID_TYPES[kind - 1], level) for _, kind, level in KADID_ROWS],
                         columns=["distortion", "level"], index=names)
    frame = truth.loc[feature_set.ids].assign(score=feature_set.read()[:, 0])
    expected = frame.groupby(["distortion", "level"])["score"].mean().unstack("level")
    written = pd.read_csv(tmp_path / "figures" / "qualiclip__kadid10k__levels.csv", index_col=0)
    np.testing.assert_allclose(written.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-6)
    assert sorted(expected.index) == ["gaussian blur", "jpeg", "mean shift"]
    for suffix in ("png", "svg"):
        assert (tmp_path / "figures" / f"qualiclip__kadid10k__levels.{suffix}").stat().st_size > 1000
    drawn = level_means_plot(frame, tmp_path / "again", title="t")
    plotted = {line.get_label(): line.get_ydata() for line in drawn.figure.axes[0].lines}
    for distortion, row in expected.iterrows():
        np.testing.assert_allclose(plotted[distortion], row.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(plotted["all images"], frame.groupby("level")["score"].mean().to_numpy(), rtol=1e-6)


def test_distortion_labels_of_each_release() -> None:
    from iqa_store.datasets.levels import distortion_levels
    from iqa_store.datasets.manifest import Manifest, ManifestError

    def labels(dataset: str, ids: list[str]) -> list[tuple[str, Any]]:
        table = pd.DataFrame({"image_id": ids, "path": ids, "mos": np.ones(len(ids))})
        frame = distortion_levels(Manifest(dataset, Path("."), table, (0.0, 1.0), "higher_better"))
        return list(zip(frame["distortion"], frame["level"]))

    assert labels("kadid10k", ["I81_25_05.png"]) == [("contrast change", 5)]
    assert labels("tid2013", ["i01_08_4.bmp", "I25_24_1.BMP"]) == [("gaussian blur", 4),
                                                                   ("sparse sampling and reconstruction", 1)]
    assert labels("csiq", ["blur/1600.BLUR.2.png"]) == [("blur", 2)]
    assert labels("live", ["jp2k/img3.bmp"])[0][0] == "jp2k" and pd.isna(labels("live", ["jp2k/img3.bmp"])[0][1])
    with pytest.raises(ManifestError, match=r"kadid10k image 'I01_26_01.png': distortion type 26 \(the release has 25\)"):
        labels("kadid10k", ["I01_26_01.png"])
    with pytest.raises(ManifestError, match="koniq has no distortion types and levels"):
        labels("koniq", ["1.jpg"])

"""The transformers extractors (``align``, ``altclip``) against direct transformers calls.

Tiny random models of the real architectures are saved with ``save_pretrained``; the reference
is ``model.get_image_features(pixel_values=processor(...).pixel_values).pooler_output`` with the
image processor built here from the values published in each repository's
preprocessor_config.json, never through the extractor classes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import PicklePayload, assert_pickle_refused, offline_cli, the_error_line
from iqa_store import api
from iqa_store.cli import cli
from iqa_store.datasets import load_manifest
from iqa_store.extraction.runner import extract
from iqa_store.extractors import ExtractorError, RunOptions, create_extractor
from iqa_store.store import FeatureStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# https://huggingface.co/kakaobrain/align-base/blob/main/preprocessor_config.json
ALIGN_PUBLISHED = {"do_resize": True, "size": {"height": 346, "width": 346}, "resample": 2, "do_center_crop": True,
                   "crop_size": {"height": 289, "width": 289}, "do_rescale": True, "rescale_factor": 0.00784313725490196,
                   "rescale_offset": True, "do_normalize": False, "image_mean": [0.5, 0.5, 0.5],
                   "image_std": [0.5, 0.5, 0.5], "include_top": False}
# https://huggingface.co/BAAI/AltCLIP preprocessor_config.json
ALTCLIP_PUBLISHED = {"do_resize": True, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
                     "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
                     "rescale_factor": 0.00392156862745098, "do_normalize": True,
                     "image_mean": [0.48145466, 0.4578275, 0.40821073],
                     "image_std": [0.26862954, 0.26130258, 0.27577711]}
TEXT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
DIMS = {"align": 80, "altclip": 24}  # the tiny models' image embedding sizes


def tiny_model(kind: str, seed: int) -> Any:
    """A small random model of the real architecture, with weights large enough to give distinct outputs."""
    import transformers
    torch.manual_seed(seed)
    if kind == "align":
        config = transformers.AlignConfig(
            text_config={**TEXT, "max_position_embeddings": 32}, projection_dim=80,
            vision_config={"width_coefficient": 0.25, "depth_coefficient": 0.3, "image_size": 64})  # 7 blocks, 80 channels
        model = transformers.AlignModel(config)
        with torch.no_grad():  # the default init (std 0.02) makes the pooled output vanish (~1e-28)
            for module in model.vision_model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
    else:
        config = transformers.AltCLIPConfig(
            text_config={**TEXT, "project_dim": 16, "max_position_embeddings": 40}, projection_dim=24,
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "image_size": 224, "patch_size": 32})
        model = transformers.AltCLIPModel(config)
    return model.eval()


def processor(kind: str, **changes: Any) -> Any:
    import transformers
    if kind == "align":
        return transformers.EfficientNetImageProcessor(**{**ALIGN_PUBLISHED, **changes})
    return transformers.CLIPImageProcessor(**{**ALTCLIP_PUBLISHED, **changes})


def direct(model: Any, kind: str, images: list[Image.Image], **kwargs: Any) -> np.ndarray:
    """get_image_features of the whole transformers model on the processor's pixels."""
    pixels = processor(kind, **kwargs.pop("processor", {}))(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        return model.get_image_features(pixel_values=pixels, **kwargs).pooler_output.numpy()


def native(model: Any, kind: str, images: list[Image.Image]) -> np.ndarray:
    """The whole image, unresized, normalised by the processor (positions interpolated for the ViT)."""
    kwargs = {"interpolate_pos_encoding": True} if kind == "altclip" else {}
    return np.concatenate([direct(model, kind, [image], processor={"do_resize": False, "do_center_crop": False}, **kwargs)
                           for image in images])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    """Each tiny model and the folder save_pretrained wrote (config.json + model.safetensors)."""
    out = {}
    for kind in ("align", "altclip"):
        model = tiny_model(kind, seed=1)
        folder = tmp_path_factory.mktemp(f"{kind}-pretrained")
        model.save_pretrained(folder)
        out[kind] = (model, folder)
    return out


@pytest.fixture()
def toy(image_dataset: Path):
    return load_manifest("csv", image_dataset, labels="labels.csv", dataset_name="toy")


def images_of(manifest: Any) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in manifest.paths]


def cli_extract(kind: str, dataset: Path, store: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["extract", "-m", kind, "-d", "csv", "--root", str(dataset), "-o", "labels=labels.csv",
                                      "-o", "dataset_name=toy", "--device", "cpu", "--workers", "0", "--batch-size", "8",
                                      "-q", "--store", str(store), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "complete" and report["failed"] == 0
    return FeatureStore(store).get(report["feature_set"])


def state_dict_file(model: Any, config_from: Path, folder: Path) -> Path:
    """The model's live state dict as safetensors, its config.json beside it."""
    from safetensors.torch import save_file
    folder.mkdir()
    shutil.copy(config_from / "config.json", folder / "config.json")
    path = folder / "whole-model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("kind", ["align", "altclip"])
def test_default_policy_matches_get_image_features(kind: str, saved, toy, image_dataset: Path, tmp_path: Path) -> None:
    model, folder = saved[kind]
    expected = direct(model, kind, images_of(toy))
    assert expected.shape == (24, DIMS[kind]) and np.abs(expected).max() > 1e-2
    assert np.abs(expected - expected[:1]).max() > 1e-3  # images give different embeddings

    # --weights DIR (a save_pretrained folder), through the API the CLI wraps
    report = api.extract(kind, "csv", root=image_dataset, store=tmp_path / "S", device="cpu", workers=0, batch_size=8,
                         weights=str(folder), dataset_options={"labels": "labels.csv", "dataset_name": "toy"},
                         progress=False, log=lambda _: None)
    assert report.status == "complete" and not report.failures
    from_dir = FeatureStore(tmp_path / "S").get(report.feature_set)
    np.testing.assert_allclose(from_dir.read(), expected, atol=1e-5, rtol=1e-4)
    assert from_dir.ids == toy.ids
    identity = from_dir.attrs["fingerprint_inputs"]["weights"]
    assert identity["dir"] == folder.name and set(identity["files"]) == {"model.safetensors"}

    # --weights FILE through the CLI: the live state dict (other key names than save_pretrained writes)
    weights = state_dict_file(model, folder, tmp_path / "file")
    from_file = cli_extract(kind, image_dataset, tmp_path / "S", "--weights", str(weights))
    np.testing.assert_allclose(from_file.read(), expected, atol=1e-5, rtol=1e-4)
    assert from_file.attrs["fingerprint_inputs"]["weights"]["file"] == weights.name
    assert from_file.fingerprint != from_dir.fingerprint
    settings = from_file.attrs["extractor_settings"]["preprocess"]
    assert settings["processor"]["crop_size"] == (ALIGN_PUBLISHED if kind == "align" else ALTCLIP_PUBLISHED)["crop_size"]

    # the weights are really used: another random model gives other numbers
    other = direct(tiny_model(kind, seed=2), kind, images_of(toy)[:2])
    assert np.abs(other - expected[:2]).max() > 1e-3


@pytest.mark.parametrize("kind", ["align", "altclip"])
def test_full_and_twoscale_policies(kind: str, saved, toy, image_dataset: Path, tmp_path: Path) -> None:
    model, folder = saved[kind]
    weights = str(folder / "model.safetensors")  # a file with its config.json beside it
    images = images_of(toy)
    expected = native(model, kind, images)

    full = cli_extract(kind, image_dataset, tmp_path / "S", "--weights", weights, "--policy", "full")
    np.testing.assert_allclose(full.read(), expected, atol=1e-5, rtol=1e-4)
    if kind == "altclip":  # 96 x 128 px is a 3 x 4 patch grid, not the trained 7 x 7
        assert np.abs(expected - direct(model, kind, images)).max() > 1e-3

    twoscale = cli_extract(kind, image_dataset, tmp_path / "S", "--weights", weights, "--policy", "twoscale")
    stored = twoscale.read()
    assert stored.shape == (24, 2 * DIMS[kind])
    halves = [image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC) for image in images[:3]]
    np.testing.assert_allclose(stored[:, :DIMS[kind]], expected, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(stored[:3, DIMS[kind]:], native(model, kind, halves), atol=1e-5, rtol=1e-4)


def test_pickle_payload_is_refused(saved, image_dataset: Path, tmp_path: Path) -> None:
    model, folder = saved["align"]
    marker = tmp_path / "payload-ran"
    (tmp_path / "w").mkdir()
    shutil.copy(folder / "config.json", tmp_path / "w" / "config.json")
    bad = tmp_path / "w" / "bad.pt"
    torch.save({"state_dict": model.state_dict(), "extra": PicklePayload(marker)}, bad)
    result = CliRunner().invoke(cli, ["extract", "-m", "align", "-d", "csv", "--root", str(image_dataset),
                                      "-o", "labels=labels.csv", "-o", "dataset_name=toy", "--device", "cpu",
                                      "--workers", "0", "-q", "--weights", str(bad), "--store", str(tmp_path / "S")])
    assert_pickle_refused(result, marker)


def test_weights_that_do_not_fit(saved, toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureStore(tmp_path / "S")
    # AltCLIP's state dict with ALIGN's config beside it
    wrong = state_dict_file(saved["altclip"][0], saved["align"][1], tmp_path / "wrong")
    with pytest.raises(ExtractorError, match=r"does not fit AlignModel.*missing image keys \['vision_model\."):
        extract(toy, create_extractor("align", weights=str(wrong)), store, RunOptions(), progress=False, log=lambda _: None)
    # ALIGN's folder for AltCLIP: the config says what it is
    with pytest.raises(ExtractorError, match="is a 'align' config, not 'altclip'"):
        create_extractor("altclip", weights=str(saved["align"][1])).dim
    with pytest.raises(ExtractorError, match="--weights not found"):
        create_extractor("align", weights=str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExtractorError, match="has no config.json"):
        create_extractor("align", weights=str(empty)).dim
    # a state-dict file alone, offline, with nothing in the Hugging Face cache: no architecture to build
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    alone = empty / "weights.safetensors"
    shutil.copy(saved["align"][1] / "model.safetensors", alone)
    with pytest.raises(ExtractorError, match="no config.json for align next to .*weights.safetensors nor in the Hugging"):
        create_extractor("align", weights=str(alone)).fingerprint()


def test_missing_weights_offline_names_what_to_download(image_dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    result = offline_cli(["extract", "-m", "align", "-d", "csv", "--root", str(image_dataset), "-o", "labels=labels.csv",
                          "-o", "dataset_name=toy", "--device", "cpu", "--workers", "0", "-q",
                          "--store", str(tmp_path / "S")], tmp_path / "empty-hf-home")
    message = the_error_line(result)
    assert "kakaobrain/align-base" in message and "HF_HUB_OFFLINE" in message
    assert "config.json" in message and "--weights" in message
    assert result.stdout == ""

    # the same for AltCLIP, in this process: an empty cache, offline
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    extractor = create_extractor("altclip")
    assert not extractor.weights_available()
    assert extractor.published_dim == 768  # what listings show when no config is on this machine
    with pytest.raises(ExtractorError, match=r"BAAI/AltCLIP .*gated.*--weights DIR"):
        extractor.fingerprint()
    with pytest.raises(ExtractorError, match="no config.json"):
        extractor.dim


def test_published_dimensions_from_configs(tmp_path: Path) -> None:
    import transformers
    from iqa_store.extractors.align import Align
    from iqa_store.extractors.altclip import AltClip
    # transformers documents AlignConfig() as the kakaobrain/align-base configuration (EfficientNet-B7)
    align = transformers.AlignConfig()
    assert (align.vision_config.width_coefficient, align.vision_config.depth_coefficient) == (2.0, 3.1)
    assert Align.dim_of(align) == Align.published_dim == 640
    # BAAI/AltCLIP: a CLIP ViT-L/14 image tower, projection to 768
    altclip = transformers.AltCLIPConfig(projection_dim=768, vision_config={
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
        "patch_size": 14, "image_size": 224})
    assert AltClip.dim_of(altclip) == AltClip.published_dim == 768
    # the extractors read them from a config.json alone (no weights needed for the dimension)
    for kind, config in (("align", align), ("altclip", altclip)):
        config.save_pretrained(tmp_path / kind)
        extractor = create_extractor(kind, weights=str(tmp_path / kind))
        assert extractor.dim == (640 if kind == "align" else 768)
        assert create_extractor(kind, weights=str(tmp_path / kind), policy="twoscale").dim == 2 * extractor.dim


def test_preprocessing_follows_the_processor(saved, tmp_path: Path, image_dataset: Path) -> None:
    image = Image.open(next(image_dataset.glob("*.jpg"))).convert("RGB")
    align = create_extractor("align", weights=str(saved["align"][1]))
    assert align.input_size() == 289 and align.normalization() == ((0.5,) * 3, (0.5,) * 3)
    pixels = align.default_transform()(image)
    assert pixels.shape == (3, 289, 289) and -1 <= float(pixels.min()) and float(pixels.max()) <= 1
    torch.testing.assert_close(pixels, processor("align")(images=image, return_tensors="pt").pixel_values[0])

    altclip = create_extractor("altclip", weights=str(saved["altclip"][1]))
    assert altclip.input_size() == 224
    np.testing.assert_allclose(altclip.normalization(), (ALTCLIP_PUBLISHED["image_mean"], ALTCLIP_PUBLISHED["image_std"]))
    torch.testing.assert_close(altclip.default_transform()(image),
                               processor("altclip")(images=image, return_tensors="pt").pixel_values[0])

    # a preprocessor_config.json next to the weights overrides the recorded values
    folder = tmp_path / "align-other-crop"
    shutil.copytree(saved["align"][1], folder)
    changes = {"crop_size": {"height": 257, "width": 257}, "resample": 3}
    processor("align", **changes).save_pretrained(folder)
    other = create_extractor("align", weights=str(folder))
    assert other.input_size() == 257
    torch.testing.assert_close(other.default_transform()(image),
                               processor("align", **changes)(images=image, return_tensors="pt").pixel_values[0])
    assert other.fingerprint() != align.fingerprint()


def test_random_init_is_for_tests(saved, toy) -> None:
    extractor = create_extractor("altclip", weights=str(saved["altclip"][1]), random_init=True, seed=3)
    assert extractor.weights_identity()["random_init"] is True and extractor.weights_available()
    extractor.prepare(RunOptions())
    batch = extractor.collate([extractor.load_item(p) for p in toy.paths[:2]])
    values = extractor.compute(batch)
    assert values.shape == (2, DIMS["altclip"]) and np.isfinite(values).all()
    assert np.abs(values - direct(saved["altclip"][0], "altclip", images_of(toy)[:2])).max() > 1e-3


def test_sharded_folder_and_hub_cache(saved, toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sharded save_pretrained folder, and the hub repository found in the Hugging Face cache (offline)."""
    model, folder = saved["align"]
    expected = direct(model, "align", images_of(toy)[:2])

    def embed(extractor: Any) -> np.ndarray:
        extractor.prepare(RunOptions())
        return extractor.compute(extractor.collate([extractor.load_item(p) for p in toy.paths[:2]]))

    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    extractor = create_extractor("align", weights=str(sharded))
    assert len(extractor.weights_identity()["files"]) > 1
    np.testing.assert_allclose(embed(extractor), expected, atol=1e-5, rtol=1e-4)

    # the layout huggingface_hub writes: refs/main names the snapshot folder of the files
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--kakaobrain--align-base" / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    published = create_extractor("align")
    assert published.weights_available() and published.dim == DIMS["align"]
    assert published.weights_identity() == {"hf_hub": "kakaobrain/align-base", "commit": commit}
    np.testing.assert_allclose(embed(published), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["align", "altclip"])
def test_device_decode_matches_the_processor_as_tensor_ops(kind: str, saved, toy, image_dataset: Path,
                                                            tmp_path: Path) -> None:
    """device_decode (run on CPU here): torchvision decoding and the processor's resize/crop/rescale as tensor ops."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2
    model, folder = saved[kind]
    if kind == "align":  # squash to 346 x 346 (bilinear), crop 289, x / 127.5 - 1
        steps = v2.Compose([v2.Resize([346, 346], interpolation=v2.InterpolationMode.BILINEAR), v2.CenterCrop(289)])
        mean, std = torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.5)
    else:  # CLIP's recipe
        steps = v2.Compose([v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(224)])
        mean = torch.tensor(ALTCLIP_PUBLISHED["image_mean"])[:, None, None]
        std = torch.tensor(ALTCLIP_PUBLISHED["image_std"])[:, None, None]
    pixels = torch.stack([(steps(decode_image(str(p), mode=ImageReadMode.RGB).float() / 255).clamp(0, 1) - mean) / std
                          for p in toy.paths])
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    stored = cli_extract(kind, image_dataset, tmp_path / "S", "--weights", str(folder), "-s", "device_decode=true").read()
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=1e-4)
    processed = direct(model, kind, images_of(toy))  # the Pillow + processor path: nearly the same vectors
    cosine = (stored * processed).sum(1) / np.linalg.norm(stored, axis=1) / np.linalg.norm(processed, axis=1)
    assert cosine.min() > 0.99

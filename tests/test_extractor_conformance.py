"""Every registered extractor through the conformance suite of ``iqa_store.extractors.testing``.

One subclass per registered extractor, or per distinct class and builder of a family: the clip-*
names share one class (``OpenAIClip``) and builder, checked here on clip-rn50's builder with a
tiny CLIP ResNet; any other open_clip pair goes through the ``openclip:`` prefix, checked on a
tiny ViT. The tiny models and their independent references come from the per-family test modules.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from conftest import TINY_CLIP_ARCH, TINY_CLIP_RN_ARCH, PicklePayload
from test_brisque import _slow_brisque
from test_clip_quality import random_prompt_features
from test_clipiqa import pairs_of, reference_scores, reference_text_features
from test_clipiqa import tiny_model as tiny_clip_quality_model
from test_hf_extractors import direct, tiny_model
from test_metaiqa import reference_features as metaiqa_reference
from test_reiqa_extractor import published_checkpoint, random_state, reference_features
from test_slique import reference_features as slique_reference
from test_slique import released_layout, tiny_network
from test_vlm_models import _model, _open_clip, _tiny_state
from iqa_store.extraction.jobs import build_extractor
from iqa_store.extraction.runner import extract
from iqa_store.extraction.weights import ResolvedWeights
from iqa_store.extractors import Extractor, create_extractor
from iqa_store.extractors.brisque import rgb2gray_uint8
from iqa_store.extractors.testing import ExtractorTests, covered_by
from iqa_store.nets.cnniqa import CNNIQA
from iqa_store.store import FeatureStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Conformance(ExtractorTests):
    """The suite wired to this repository's runner, store and pickle payload."""

    payload_class = PicklePayload

    @pytest.fixture
    def run_extract(self, tmp_path: Path) -> Callable[..., tuple[Any, Any]]:
        def run(manifest: Any, extractor: Extractor, options: Any) -> tuple[Any, Any]:
            store = FeatureStore(tmp_path / "store")
            report = extract(manifest, extractor, store, options, progress=False, log=lambda _: None)
            return report, store.get(report.feature_set)
        return run

    def test_build_extractor_gives_an_equal_extractor(self, extractor: Extractor) -> None:
        """What a run builds (weights resolved to a file, options the extractor takes) from the same choices."""
        fields = {f.name: getattr(extractor, f.name) for f in dataclasses.fields(extractor)
                  if f.init and f.name != "name"}
        path = fields.pop("weights", None)
        weights = ResolvedWeights("file", path) if path else ResolvedWeights("published")
        built = build_extractor(self.registry_name, weights, device="cpu", random_init=fields.pop("random_init", False),
                                **fields)
        assert built == extractor and built.fingerprint() == extractor.fingerprint()


# --- the open_clip family ------------------------------------------------------------------------

def _safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _encode(arch: str, state: dict[str, torch.Tensor], quick_gelu: bool, size: int, paths: list[Path]) -> np.ndarray:
    """open_clip alone: encode_image on its own eval transform (OpenAI mean/std)."""
    preprocess = _open_clip().image_transform(size, is_train=False)
    with torch.no_grad():
        return _model(arch, state, quick_gelu).encode_image(
            torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])).numpy()


@functools.cache
def _clip_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    return _tiny_state(arch, seed)


@pytest.mark.usefixtures("tiny_clip")
class TestOpenClip(Conformance):
    """``openclip:ARCH:TAG`` (OpenClipExtractor): a tiny ViT, random init."""

    registry_name = f"openclip:{TINY_CLIP_ARCH}:none"
    changing_settings = [("seed", 1), ("normalize", True), ("policy", "full"), ("policy", "multicrop:2"),
                         ("policy", "twoscale"), ("device_decode", True)]

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor(self.registry_name, random_init=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _clip_state(TINY_CLIP_ARCH, 3)

    def reference(self, paths: list[Path]) -> np.ndarray:
        return _encode(TINY_CLIP_ARCH, _clip_state(TINY_CLIP_ARCH, 0), False, 224, paths)  # random_init's seed 0


@pytest.mark.usefixtures("tiny_clip")
class TestOpenAIClip(Conformance):
    """The clip-* builders (one class, OpenAIClip, one builder): clip-rn50's on a tiny CLIP ResNet in safetensors."""

    registry_name = "clip-rn50"
    covers = ("clip-*",)
    changing_settings = [("normalize", True), ("policy", "full"), ("policy", "multicrop:2")]

    def make_extractor(self, folder: Path) -> Extractor:
        weights = _safetensors(self.state_dict(), folder / "tiny-rn.safetensors")
        return create_extractor("clip-rn50", arch=TINY_CLIP_RN_ARCH, weights=str(weights))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _clip_state(TINY_CLIP_RN_ARCH, 5)

    def reference(self, paths: list[Path]) -> np.ndarray:
        return _encode(TINY_CLIP_RN_ARCH, self.state_dict(), True, 64, paths)  # OpenAI's weights: QuickGELU


@pytest.mark.usefixtures("tiny_clip")
class TestHps(Conformance):
    """HPS v1: hpc.pth, an OpenAI-CLIP state dict under 'state_dict' with TorchScript extras, on a tiny ViT."""

    registry_name = "hps"
    weights_name = "hpc.pth"
    changing_settings = [("normalize", True), ("policy", "full")]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _clip_state(TINY_CLIP_ARCH, 9)

    def write_weights(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.weights_name
        torch.save({"state_dict": {**self.state_dict(), "input_resolution": torch.tensor(224)}, **(extra or {})}, path)
        return path

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor("hps", arch=TINY_CLIP_ARCH, weights=str(self.write_weights(folder)))

    def reference(self, paths: list[Path]) -> np.ndarray:
        return _encode(TINY_CLIP_ARCH, self.state_dict(), True, 224, paths)


@pytest.mark.usefixtures("tiny_clip")
class TestHpsV2(Conformance):
    """HPS v2.1: HPS_v2.1_compressed.pt (the state under 'state_dict'), on a tiny ViT; GELU as LAION's ViT-H-14."""

    registry_name = "hpsv2"
    weights_name = "HPS_v2.1_compressed.pt"
    changing_settings = [("normalize", True), ("policy", "twoscale")]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _clip_state(TINY_CLIP_ARCH, 2)

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor("hpsv2", arch=TINY_CLIP_ARCH, weights=str(self.write_weights(folder)))

    def reference(self, paths: list[Path]) -> np.ndarray:
        return _encode(TINY_CLIP_ARCH, self.state_dict(), False, 224, paths)


# --- transformers dual encoders ------------------------------------------------------------------

@functools.cache
def _hf_model(kind: str) -> Any:
    return tiny_model(kind, seed=1)


class _TransformersSuite(Conformance):
    """A tiny random model of the real architecture in a save_pretrained folder."""

    kind: ClassVar[str]
    weights_name = "whole-model.pt"

    def make_extractor(self, folder: Path) -> Extractor:
        _hf_model(self.kind).save_pretrained(folder)
        return create_extractor(self.kind, weights=str(folder))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _hf_model(self.kind).state_dict()

    def write_weights(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        """The whole model's state dict in one torch file, its config.json beside it."""
        folder.mkdir(parents=True, exist_ok=True)
        _hf_model(self.kind).config.save_pretrained(folder)
        return super().write_weights(folder, extra)

    def reference(self, paths: list[Path]) -> np.ndarray:
        return direct(_hf_model(self.kind), self.kind, [Image.open(p).convert("RGB") for p in paths])


class TestAlign(_TransformersSuite):
    registry_name = kind = "align"
    changing_settings = [("normalize", True), ("policy", "full")]


class TestAltClip(_TransformersSuite):
    registry_name = kind = "altclip"
    changing_settings = [("normalize", True), ("policy", "full"), ("policy", "twoscale")]


# --- CLIP-IQA and QualiCLIP ---------------------------------------------------------------------

@pytest.mark.usefixtures("tiny_clip")
class _ClipQualitySuite(Conformance):
    """A tiny random CLIP ResNet (test_clipiqa's model and definition-based reference)."""

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor(self.registry_name, arch=TINY_CLIP_RN_ARCH, weights=str(self.write_weights(folder)))


class TestClipIqa(_ClipQualitySuite):
    registry_name = "clipiqa"
    covers = ("clipiqa-embedding",)
    changing_settings = [("scale", 50.0), ("prompts", "clipiqa-attributes"), ("output", "embedding")]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return tiny_clip_quality_model(0).state_dict()

    def reference(self, paths: list[Path]) -> np.ndarray:
        model = tiny_clip_quality_model(0)
        return reference_scores(model, paths, reference_text_features(model, pairs_of("clipiqa")), 100.0, False)


class TestQualiClip(_ClipQualitySuite):
    """The published qualiclip.pth layout: clip_model.* + prompts_features."""

    registry_name = "qualiclip"
    covers = ("qualiclip-embedding",)
    changing_settings = [("scale", 50.0), ("output", "embedding")]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"clip_model.{k}": v for k, v in tiny_clip_quality_model(0).state_dict().items()},
                "prompts_features": random_prompt_features(7, 32)}

    def reference(self, paths: list[Path]) -> np.ndarray:
        return reference_scores(tiny_clip_quality_model(0), paths, random_prompt_features(7, 32).numpy(), 100.0, True)


@pytest.mark.usefixtures("tiny_clip")
class TestClipIqaPlus(Conformance):
    """A learned context (safetensors, as training exports it) on the random-init base its config names."""

    registry_name = "clipiqa-plus"
    changing_settings = [("scale", 50.0),
                         ("encoder_config", {"arch": TINY_CLIP_RN_ARCH, "base_weights": {"random_init": True, "seed": 1}})]
    config: ClassVar[dict[str, Any]] = {"arch": TINY_CLIP_RN_ARCH, "base_weights": {"random_init": True, "seed": 0}}

    def make_extractor(self, folder: Path) -> Extractor:
        context = _safetensors(self.state_dict(), folder / "context.safetensors")
        return create_extractor("clipiqa-plus", weights=str(context), encoder_config=self.config)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"context": torch.randn(16, 64, generator=torch.Generator().manual_seed(0)) * 0.02}

    def reference(self, paths: list[Path]) -> np.ndarray:
        from iqa_store.nets.coop import coop_prompts, coop_text_features
        torch.manual_seed(0)  # the base the config names
        model = _open_clip().create_model(TINY_CLIP_RN_ARCH, pretrained=None, force_quick_gelu=True).eval()
        prompts = coop_prompts(_open_clip().get_tokenizer(TINY_CLIP_RN_ARCH), ["Good photo.", "Bad photo."])
        with torch.no_grad():
            features = coop_text_features(model, prompts, self.state_dict()["context"]).double().numpy()
        return reference_scores(model, paths, features, 100.0, False)


# --- Re-IQA --------------------------------------------------------------------------------------

@functools.cache
def _reiqa_state() -> dict[str, torch.Tensor]:
    return random_state(seed=1)


class _ReiqaSuite(Conformance):
    """The published checkpoint layout (a DataParallel MoCo model under 'model') of a tiny ResNet."""

    normalize: ClassVar[bool]
    weights_name = "aware_tiny.pth"

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _reiqa_state()

    def write_weights(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)  # the training head is random: the same file each time
        return published_checkpoint(self.state_dict(), folder / self.weights_name, **(extra or {}))

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor(self.registry_name, weights=str(self.write_weights(folder)))

    def reference(self, paths: list[Path]) -> np.ndarray:
        return reference_features(self.state_dict(), paths, self.normalize)


class TestReiqaContent(_ReiqaSuite):
    registry_name = "reiqa-content"
    normalize = True
    changing_settings = [("precision", "bf16"),
                         ("encoder_config", {"backbone": "resnet-tiny", "input_normalization": "none"})]


class TestReiqaQuality(_ReiqaSuite):
    registry_name = "reiqa-quality"
    normalize = False
    changing_settings = [("precision", "bf16"),
                         ("encoder_config", {"backbone": "resnet-tiny", "input_normalization": "imagenet"})]


# --- SLIQUE --------------------------------------------------------------------------------------

@functools.cache
def _slique_network() -> Any:
    return tiny_network(4)


class TestSlique(Conformance):
    """The released SLIQUE.tar layout (CON_model: visual.* and model.encoder.<i>.*, text parts) of a tiny ResNet."""

    registry_name = "slique"
    weights_name = "SLIQUE.tar"
    changing_settings = [("precision", "bf16")]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return released_layout(_slique_network())

    def write_weights(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        """A flat state dict, as demo_feat.py loads it (no 'state_dict' wrapper)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.weights_name
        torch.save({**self.state_dict(), **(extra or {})}, path)
        return path

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor("slique", weights=str(self.write_weights(folder)), backbone="resnet-tiny")

    def reference(self, paths: list[Path]) -> np.ndarray:
        return slique_reference(_slique_network(), paths)


# --- CNNIQA --------------------------------------------------------------------------------------

def _cnniqa_reference(state: dict[str, torch.Tensor], paths: list[Path]) -> np.ndarray:
    """BT.601 luma on 0-255, (I - mean) / (std + 1) over 3x3 windows (symmetric borders), every complete
    32x32 patch, the mean of the network's penultimate activations over the patches."""
    model = CNNIQA(int(state["fc1.weight"].shape[0]))
    model.load_state_dict(state)
    model.eval()
    rows = []
    for path in paths:
        luma = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
        mean = ndimage.uniform_filter(luma, 3, mode="reflect")
        std = np.sqrt(np.maximum(ndimage.uniform_filter(luma * luma, 3, mode="reflect") - mean * mean, 0))
        lcn = (luma - mean) / (std + 1.0)
        patches = [lcn[y:y + 32, x:x + 32] for y in range(0, lcn.shape[0] - 31, 32)
                   for x in range(0, lcn.shape[1] - 31, 32)]
        with torch.no_grad():
            rows.append(model.features(torch.tensor(np.stack(patches)[:, None], dtype=torch.float32)).mean(0).numpy())
    return np.stack(rows)


class TestCnniqa(Conformance):
    """Random init at fc_width 16; weights as safetensors (what training exports) or a tensor-only torch file."""

    registry_name = "cnniqa"
    changing_settings = [("seed", 1), ("fc_width", 8), ("output", "score")]
    weights_name = "model.safetensors"
    atol = 1e-4  # float32 network input against float64 normalisation

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor("cnniqa", random_init=True, fc_width=16)

    def state_dict(self) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # what random_init with seed 0 builds
        return CNNIQA(16).state_dict()

    def write_weights(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if extra is None:
            return _safetensors(self.state_dict(), folder / self.weights_name)
        path = folder / "model.pt"  # a torch file: the only kind that can carry a pickle
        torch.save({"state_dict": self.state_dict(), **extra}, path)
        return path

    def reference(self, paths: list[Path]) -> np.ndarray:
        return _cnniqa_reference(self.state_dict(), paths)


# --- MetaIQA -------------------------------------------------------------------------------------

class TestMetaiqa(Conformance):
    """Random init of a resnet-tiny network at 64 px; weights as safetensors (what training exports) or a
    tensor-only torch file; the reference is torchvision's resize, Normalize and ResNet, the head written out."""

    registry_name = "metaiqa"
    changing_settings = [("seed", 1), ("layer", "gap"), ("output", "score"), ("size", 48)]
    weights_name = "model.safetensors"
    atol = 1e-4

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor("metaiqa", random_init=True, backbone="resnet-tiny", size=64)

    def state_dict(self) -> dict[str, torch.Tensor]:
        from iqa_store.nets.metaiqa import MetaIQANet
        torch.manual_seed(0)  # what random_init with seed 0 builds
        return MetaIQANet("resnet-tiny").state_dict()

    def write_weights(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        return TestCnniqa.write_weights(self, folder, extra)

    def reference(self, paths: list[Path]) -> np.ndarray:
        return metaiqa_reference(self.state_dict(), paths, 64)


# --- BRISQUE -------------------------------------------------------------------------------------

class TestBrisque(Conformance):
    registry_name = "brisque"
    no_weights_reason = "BRISQUE is hand-crafted: it takes no weights file"

    def make_extractor(self, folder: Path) -> Extractor:
        return create_extractor("brisque")

    def reference(self, paths: list[Path]) -> np.ndarray:
        """The plain implementation of test_brisque (2-D window, np.roll, generic imresize) on MATLAB's grey."""
        return np.stack([_slow_brisque(rgb2gray_uint8(np.asarray(Image.open(p).convert("RGB")))) for p in paths])


# --- coverage ------------------------------------------------------------------------------------

def _suites() -> list[type[ExtractorTests]]:
    return [value for name, value in globals().items()
            if name.startswith("Test") and isinstance(value, type) and issubclass(value, ExtractorTests)]


# --- MP-IQE --------------------------------------------------------------------------------------

@pytest.mark.usefixtures("tiny_clip")
class TestMpiqe(Conformance):
    """Learned prompts (safetensors, as training exports them) on the random-init tiny ViT its config names."""

    registry_name = "mpiqe"
    weights_name = "mpiqe.pt"
    config: ClassVar[dict[str, Any]] = {"arch": TINY_CLIP_ARCH, "base_weights": {"random_init": True, "seed": 0},
                                        "mpiqe": {"window": 2, "heads": 2, "decoder_layers": 1},
                                        "mos_range": [1.0, 5.0], "feature_dim": 32}
    changing_settings = [("crop_seed", 1), ("crops", 2), ("output", "score"),
                         ("encoder_config", {**config, "base_weights": {"random_init": True, "seed": 1}})]

    def make_extractor(self, folder: Path) -> Extractor:
        prompts = _safetensors(self.state_dict(), folder / "model.safetensors")
        return create_extractor("mpiqe", weights=str(prompts), encoder_config=self.config)

    def state_dict(self) -> dict[str, torch.Tensor]:
        from iqa_store.nets.mpiqe import MpiqeConfig, MpiqeModel
        torch.manual_seed(0)  # the base the config names, then the learned tensors drawn after it
        clip = _open_clip().create_model(TINY_CLIP_ARCH, pretrained=None, force_quick_gelu=True)
        return MpiqeModel(clip, _open_clip().get_tokenizer(TINY_CLIP_ARCH),
                          MpiqeConfig(**self.config["mpiqe"])).learned_state()


def test_every_registered_extractor_has_a_conformance_suite() -> None:
    names, prefixes = covered_by(_suites())
    assert not names, f"registered extractors without a subclass of ExtractorTests here: {names}"
    assert not prefixes, f"registered name prefixes without a subclass of ExtractorTests here: {prefixes}"


def test_the_coverage_check_notices_a_missing_suite() -> None:
    names, prefixes = covered_by([TestBrisque, TestOpenAIClip])
    assert "cnniqa" in names and "clip-vitl14" not in names and prefixes == ["openclip:"]

"""CLIP image embeddings through open_clip.

Stored vector: the projected image embedding (``encode_image``), NOT L2-normalised unless
``normalize=True``; that choice is part of the fingerprint. Preprocessing policies: see
``iqa_store.extractors.embedder``; ``default`` is open_clip's own eval transform for the tag.

Weights, in order: ``weights`` (a local checkpoint file: safetensors, or a torch file read
with ``weights_only=True``; a state dict possibly under 'state_dict', 'module.' prefixes
stripped), else the published file through the Hugging Face cache (looked up locally first,
downloaded only when absent and HF_HUB_OFFLINE is not set), else a clear error naming what to
get. ``random_init`` is for tests only.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from iqa_store.extractors.base import ExtractorError, RunOptions
from iqa_store.extractors.embedder import ImageEmbedder, TensorRecipe, swapped_parameter
from iqa_store.extractors.neural import existing_weights_file, load_state_dict, local_weights_identity
from iqa_store.nets.openclip import open_clip_module as _open_clip

_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Entries of OpenAI's TorchScript archives that are not weights (openai/CLIP drops them too).
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class OpenClipExtractor(ImageEmbedder):
    """Any open_clip architecture and pretrained tag."""

    name: str = "openclip"  # the registry name, e.g. clip-vitb16
    arch: str = "ViT-B-16"
    pretrained: str = "openai"
    version = "3"  # 3: preprocessing policies; 2: QuickGELU for tags trained with it (OpenAI weights)
    licence: ClassVar[str] = "see the tag's model card (open_clip pretrained list)"
    _transform: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights is not None:
            self.weights = existing_weights_file(self.weights)

    def settings(self) -> dict[str, Any]:
        return {"arch": self.arch, "pretrained": self.pretrained, "quick_gelu": self.quick_gelu(), **super().settings()}

    @property
    def channels_last(self) -> bool:  # type: ignore[override]
        return self.arch.startswith("RN")

    def quick_gelu(self) -> bool:
        """OpenAI's CLIP weights were trained with QuickGELU; open_clip's plain ``ViT-B-16`` config uses GELU."""
        return bool(self._tag().get("quick_gelu", False))

    def _tag(self) -> dict[str, Any]:
        return _open_clip().get_pretrained_cfg(self.arch, self.pretrained) or {}

    @property
    def embedding_dim(self) -> int:
        config = _open_clip().get_model_config(self.arch)
        if config is None:
            raise ExtractorError(f"open_clip has no architecture {self.arch!r}")
        return int(config["embed_dim"])

    def input_size(self) -> int:
        size = (_open_clip().get_model_config(self.arch) or {}).get("vision_cfg", {}).get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    def smallest_side(self) -> int:
        vision = (_open_clip().get_model_config(self.arch) or {}).get("vision_cfg", {})
        return 32 if isinstance(vision.get("layers"), (list, tuple)) else int(vision.get("patch_size", 16))

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        tag = self._tag()
        return (tuple(tag.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                tuple(tag.get("std", (0.26862954, 0.26130258, 0.27577711))))

    def preprocess_config(self) -> dict[str, Any]:
        """Resize + centre crop to the model's input size with the tag's mean/std (open_clip defaults)."""
        tag = self._tag()
        config = super().preprocess_config()
        if self.policy == "default":
            config.update(interpolation=tag.get("interpolation", "bicubic"), resize_mode=tag.get("resize_mode", "shortest"))
        return config

    def weights_identity(self) -> dict[str, Any]:
        return local_weights_identity(self.weights, self.random_init, self.seed) or self.published_identity()

    def published_identity(self) -> dict[str, Any]:
        tag = self._tag()
        return {"open_clip": f"{self.arch}:{self.pretrained}", "hf_hub": tag.get("hf_hub", ""), "url": tag.get("url", "")}

    def tensor_recipe(self) -> TensorRecipe:
        tag = self._tag()
        if tag.get("resize_mode", "shortest") != "shortest":
            return super().tensor_recipe()
        mean, std = self.normalization()
        return TensorRecipe("shortest", self.input_size(), self.input_size(), tag.get("interpolation", "bicubic"),
                            mean, std)

    # --- worker side -------------------------------------------------------------------------
    def default_transform(self) -> Callable:
        if self._transform is None:
            from open_clip.transform import PreprocessCfg, image_transform_v2
            cfg = self.preprocess_config()
            self._transform = image_transform_v2(PreprocessCfg(size=cfg["input_size"], mean=tuple(cfg["mean"]),
                                                               std=tuple(cfg["std"]), interpolation=cfg["interpolation"],
                                                               resize_mode=cfg["resize_mode"]), is_train=False)
        return self._transform

    # --- weights -----------------------------------------------------------------------------
    def hub_files(self) -> tuple[str, tuple[str, ...]] | None:
        """The Hugging Face repo and the candidate file names of the published weights."""
        repo = self._tag().get("hf_hub", "").strip("/")
        if not repo:
            return None
        parts = repo.split("/")
        if len(parts) > 2:  # "org/repo/file"
            return "/".join(parts[:2]), ("/".join(parts[2:]),)
        return repo, _HF_FILES

    def weights_source(self) -> str:
        hub = self.hub_files()
        if hub:
            return f"Hugging Face {hub[0]}"
        return self._tag().get("url", "") or f"open_clip {self.arch}:{self.pretrained}"

    def weights_available(self) -> bool:
        """True when the weights are on disk already (no network needed)."""
        return self.random_init or bool(self.weights) or self._cached_hub_file() is not None

    def _cached_hub_file(self) -> str | None:
        from huggingface_hub import try_to_load_from_cache
        hub = self.hub_files()
        for candidate in hub[1] if hub else ():
            found = try_to_load_from_cache(hub[0], candidate)
            if isinstance(found, str):
                return found
        return None

    def _resolve_weights(self) -> str:
        return self.weights or self.published_weights_file()

    def published_weights_file(self) -> str:
        """The published checkpoint: from the Hugging Face cache, else downloaded (unless offline)."""
        cached = self._cached_hub_file()
        if cached:
            return cached
        if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True"):
            raise ExtractorError(self._missing_message("HF_HUB_OFFLINE is set"))
        try:
            return self._download()
        except ExtractorError:
            raise
        except Exception as error:  # network failures come in many types; the message says what to do
            raise ExtractorError(self._missing_message(f"{type(error).__name__}: {error}")) from error

    def _download(self) -> str:
        tag = self._tag()
        if not tag:
            raise ExtractorError(f"open_clip knows no pretrained tag {self.pretrained!r} for {self.arch}; "
                                 f"known: {_open_clip().list_pretrained_tags_by_model(self.arch)}")
        from open_clip.pretrained import download_pretrained
        return download_pretrained(tag)

    def _missing_message(self, why: str) -> str:
        return (f"weights for {self.name} ({self.arch}, {self.pretrained}) are not in the local cache and could not be "
                f"downloaded ({why}). Download them from {self.weights_source()} on a machine with internet (they go to "
                f"the Hugging Face cache, HF_HOME), or pass --weights FILE pointing at the checkpoint.")

    # --- main-process side -------------------------------------------------------------------
    def load_model(self, device: str) -> Any:
        import torch
        open_clip = _open_clip()
        if self.random_init:
            torch.manual_seed(self.seed)
            model = open_clip.create_model(self.arch, pretrained=None, force_quick_gelu=self.quick_gelu())
        else:
            path = self._resolve_weights()
            model = open_clip.create_model(self.arch, pretrained=None, force_quick_gelu=self.quick_gelu())
            state = {k: v for k, v in load_state_dict(path).items() if k not in _NOT_WEIGHTS}
            try:
                missing, unexpected = model.load_state_dict(state, strict=False)
            except RuntimeError as error:  # shape mismatches raise even with strict=False
                raise ExtractorError(f"{path} does not fit {self.arch}: {str(error)[:500]}") from error
            if missing or unexpected:
                raise ExtractorError(f"{path} does not fit {self.arch}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.eval().to(device)

    def prepare(self, options: RunOptions) -> None:
        super().prepare(options)
        if self.policy in ("full", "twoscale"):
            self._check_native_resolution()

    def embed(self, pixels: Any) -> Any:
        return self._model.encode_image(pixels)

    def _check_native_resolution(self) -> None:
        visual = self._model.visual
        if not (hasattr(visual, "attnpool") or hasattr(visual, "grid_size")):
            raise ExtractorError(f"policy {self.policy!r} needs a CLIP ViT or ResNet image tower; "
                                 f"{self.arch} has a {type(visual).__name__}")

    def native_resolution(self, height: int, width: int) -> contextlib.AbstractContextManager:
        visual = self._model.visual
        if hasattr(visual, "attnpool"):
            return _without_attention_pool_positions(visual.attnpool)
        grid = (height // visual.patch_size[0], width // visual.patch_size[1])
        if grid == tuple(visual.grid_size):
            return contextlib.nullcontext()
        return swapped_parameter(visual, "positional_embedding",
                                 resample_positions(visual.positional_embedding.data, tuple(visual.grid_size), grid))


def resample_positions(positions: Any, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Any:
    """A ViT's [1 + h * w, C] positional embedding (class token first) for another patch grid:
    bicubic, antialiased when shrinking; the class token's row is kept."""
    import torch
    width = positions.shape[-1]
    grid = positions[1:].float().reshape(1, *old_grid, width).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([positions[:1].float(), grid.permute(0, 2, 3, 1).reshape(-1, width)])


@contextlib.contextmanager
def _without_attention_pool_positions(attnpool: Any) -> Any:
    """CLIP ResNets' attention pooling with no positional embedding, at any feature-map size."""
    import torch

    def zero_positions(module: Any, inputs: tuple[Any, ...]) -> None:
        height, width = inputs[0].shape[-2:]
        module.positional_embedding.data = torch.zeros(height * width + 1, original.shape[1],
                                                       device=original.device, dtype=original.dtype)

    original = attnpool.positional_embedding.data
    handle = attnpool.register_forward_pre_hook(zero_positions)
    try:
        yield
    finally:
        handle.remove()
        attnpool.positional_embedding.data = original


@dataclass
class OpenAIClip(OpenClipExtractor):
    """OpenAI's published CLIP weights (open_clip tag ``openai``)."""

    licence: ClassVar[str] = "MIT (openai/CLIP); research use per its model card"

    def quick_gelu(self) -> bool:
        return True  # every OpenAI CLIP was trained with QuickGELU, whatever architecture config is used


def _builder(name: str, arch: str) -> Any:
    def build(**settings: Any) -> OpenClipExtractor:
        settings.setdefault("arch", arch)
        return OpenAIClip(name=name, **settings)
    build.__name__ = name.replace("-", "_")
    return build


clip_vitb16 = _builder("clip-vitb16", "ViT-B-16")
clip_vitb32 = _builder("clip-vitb32", "ViT-B-32")
clip_vitl14 = _builder("clip-vitl14", "ViT-L-14")
clip_vitl14_336 = _builder("clip-vitl14-336", "ViT-L-14-336")
clip_rn50 = _builder("clip-rn50", "RN50")
clip_rn101 = _builder("clip-rn101", "RN101")
clip_rn50x4 = _builder("clip-rn50x4", "RN50x4")
clip_rn50x16 = _builder("clip-rn50x16", "RN50x16")
clip_rn50x64 = _builder("clip-rn50x64", "RN50x64")


def from_spec(spec: str) -> Any:
    """``openclip:ARCH:PRETRAINED`` -> a builder for that pair."""
    arch, _, pretrained = spec.partition(":")
    name = f"openclip-{arch}-{pretrained or 'none'}"

    def build(**settings: Any) -> OpenClipExtractor:
        settings.setdefault("pretrained", pretrained or "openai")
        settings.setdefault("arch", arch)
        return OpenClipExtractor(name=name, **settings)
    return build

"""CLIP image embeddings through open_clip.

Stored vector: the projected image embedding (``encode_image``), NOT L2-normalised unless
``normalize=True``; that choice is part of the fingerprint.

Weights, in order: ``weights`` (a local checkpoint file: safetensors, or a torch file read
with ``weights_only=True``; a state dict possibly under 'state_dict', 'module.' prefixes
stripped), else the published tag through open_clip's normal Hugging Face cache (looked
up locally first, downloaded only when absent), else a clear error naming what to get.
``random_init`` is for tests only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions, read_rgb
from iqa_store.extractors.neural import autocast, cached_sha256, check_precision, existing_weights_file, load_state_dict

# Extra open_clip model-config folders (JSON files, one per architecture) for custom or tiny
# architectures; a path list separated by os.pathsep.
CONFIG_DIRS_ENV = "IQA_OPENCLIP_MODEL_CONFIGS"
_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _open_clip() -> Any:
    import open_clip
    for folder in filter(None, os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep)):
        open_clip.add_model_config(folder)
    return open_clip


@dataclass
class OpenClipExtractor(Extractor):
    """Any open_clip architecture and pretrained tag."""

    name: str = "openclip"  # the registry name, e.g. clip-vitb16
    arch: str = "ViT-B-16"
    pretrained: str = "openai"
    weights: str | None = None
    random_init: bool = False
    seed: int = 0  # only used with random_init
    normalize: bool = False
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; CUDA only)
    version = "2"  # 2: QuickGELU when the pretrained tag was trained with it (OpenAI weights)
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    _transform: Any = field(default=None, init=False, repr=False, compare=False)
    _device: str = field(default="cpu", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.weights is not None:
            self.weights = existing_weights_file(self.weights)

    def settings(self) -> dict[str, Any]:
        return {"arch": self.arch, "pretrained": self.pretrained, "normalize": self.normalize,
                "precision": self.precision, "quick_gelu": self.quick_gelu(), "preprocess": self.preprocess_config()}

    def quick_gelu(self) -> bool:
        """OpenAI's CLIP weights were trained with QuickGELU; open_clip's plain ``ViT-B-16`` config uses GELU."""
        return bool((_open_clip().get_pretrained_cfg(self.arch, self.pretrained) or {}).get("quick_gelu", False))

    @property
    def dim(self) -> int:
        config = _open_clip().get_model_config(self.arch)
        if config is None:
            raise ExtractorError(f"open_clip has no architecture {self.arch!r}")
        return int(config["embed_dim"])

    def preprocess_config(self) -> dict[str, Any]:
        """Resize + centre crop to the model's input size with the tag's mean/std (open_clip defaults)."""
        open_clip = _open_clip()
        config = open_clip.get_model_config(self.arch) or {}
        size = config.get("vision_cfg", {}).get("image_size", 224)
        tag = open_clip.get_pretrained_cfg(self.arch, self.pretrained) or {}
        return {"policy": "default", "image_size": size,
                "mean": list(tag.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                "std": list(tag.get("std", (0.26862954, 0.26130258, 0.27577711))),
                "interpolation": tag.get("interpolation", "bicubic"), "resize_mode": tag.get("resize_mode", "shortest")}

    def weights_identity(self) -> dict[str, Any]:
        if self.random_init:
            return {"random_init": True, "seed": self.seed}
        if self.weights:
            return {"file": Path(self.weights).name, "sha256": cached_sha256(self.weights)}
        tag = _open_clip().get_pretrained_cfg(self.arch, self.pretrained) or {}
        return {"open_clip": f"{self.arch}:{self.pretrained}", "hf_hub": tag.get("hf_hub", ""), "url": tag.get("url", "")}

    # --- worker side -----------------------------------------------------------------------
    def transform(self) -> Any:
        if self._transform is None:
            from open_clip.transform import PreprocessCfg, image_transform_v2
            cfg = self.preprocess_config()
            self._transform = image_transform_v2(PreprocessCfg(size=cfg["image_size"], mean=tuple(cfg["mean"]),
                                                               std=tuple(cfg["std"]), interpolation=cfg["interpolation"],
                                                               resize_mode=cfg["resize_mode"]), is_train=False)
        return self._transform

    def load_item(self, path: Path) -> Any:
        return self.transform()(read_rgb(path))

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the settings, never the model.
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    # --- main-process side -----------------------------------------------------------------
    def weights_available(self) -> bool:
        """True when the weights are on disk already (no network needed)."""
        return self.random_init or bool(self.weights) or self._cached_hub_file() is not None

    def _cached_hub_file(self) -> str | None:
        from huggingface_hub import try_to_load_from_cache
        repo = (_open_clip().get_pretrained_cfg(self.arch, self.pretrained) or {}).get("hf_hub", "").strip("/")
        if not repo:
            return None
        repo_id, _, filename = repo.partition("/") if repo.count("/") > 1 else (repo, "", "")
        if repo.count("/") > 1:
            repo_id, filename = "/".join(repo.split("/")[:2]), "/".join(repo.split("/")[2:])
        for candidate in ([filename] if filename else _HF_FILES):
            found = try_to_load_from_cache(repo_id, candidate)
            if isinstance(found, str):
                return found
        return None

    def _resolve_weights(self) -> str:
        if self.weights:
            return self.weights
        cached = self._cached_hub_file()
        if cached:
            return cached
        tag = _open_clip().get_pretrained_cfg(self.arch, self.pretrained)
        if not tag:
            raise ExtractorError(f"open_clip knows no pretrained tag {self.pretrained!r} for {self.arch}; "
                                 f"known: {_open_clip().list_pretrained_tags_by_model(self.arch)}")
        where = f"Hugging Face repo {tag.get('hf_hub', '').strip('/')}" if tag.get("hf_hub") else tag.get("url", "")
        if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True"):
            raise ExtractorError(self._missing_message(where, "HF_HUB_OFFLINE is set"))
        try:
            from open_clip.pretrained import download_pretrained
            return download_pretrained(tag)
        except Exception as error:  # network failures come in many types; the message says what to do
            raise ExtractorError(self._missing_message(where, f"{type(error).__name__}: {error}")) from error

    def _missing_message(self, where: str, why: str) -> str:
        return (f"weights for {self.arch} ({self.pretrained}) are not in the local cache and could not be downloaded ({why}). "
                f"Download them from {where} on a machine with internet (open_clip stores them in the Hugging Face "
                f"cache, HF_HOME), or pass --weights FILE pointing at the checkpoint.")

    def prepare(self, options: RunOptions) -> None:
        import torch
        open_clip = _open_clip()
        if self.random_init:
            torch.manual_seed(self.seed)
            model = open_clip.create_model(self.arch, pretrained=None, force_quick_gelu=self.quick_gelu())
        else:
            path = self._resolve_weights()
            model = open_clip.create_model(self.arch, pretrained=None, force_quick_gelu=self.quick_gelu())
            state = load_state_dict(path)
            try:
                missing, unexpected = model.load_state_dict(state, strict=False)
            except RuntimeError as error:  # shape mismatches raise even with strict=False
                raise ExtractorError(f"{path} does not fit {self.arch}: {str(error)[:500]}") from error
            if missing or unexpected:
                raise ExtractorError(f"{path} does not fit {self.arch}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        self._device = options.device
        self._model = model.eval().to(options.device)

    def compute(self, batch: Any) -> np.ndarray:
        import torch
        batch = batch.to(self._device, non_blocking=True)
        with torch.inference_mode(), autocast(batch.device.type, self.precision):
            features = self._model.encode_image(batch)
        if self.normalize:
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.float().cpu().numpy()


def _builder(name: str, arch: str) -> Any:
    def build(**settings: Any) -> OpenClipExtractor:
        return OpenClipExtractor(name=name, arch=arch, **settings)
    build.__name__ = name.replace("-", "_")
    return build


clip_vitb16 = _builder("clip-vitb16", "ViT-B-16")
clip_vitb32 = _builder("clip-vitb32", "ViT-B-32")
clip_vitl14 = _builder("clip-vitl14", "ViT-L-14")
clip_rn50 = _builder("clip-rn50", "RN50")


def from_spec(spec: str) -> Any:
    """``openclip:ARCH:PRETRAINED`` -> a builder for that pair."""
    arch, _, pretrained = spec.partition(":")
    name = f"openclip-{arch}-{pretrained or 'none'}"

    def build(**settings: Any) -> OpenClipExtractor:
        settings.setdefault("pretrained", pretrained or "openai")
        return OpenClipExtractor(name=name, arch=arch, **settings)
    return build

"""MP-IQE features and scores (Pan et al. 2024), from the prompts ``iqa-store train mpiqe`` learned per split.

Each image gives ``crops`` random crops of the ViT's input size (224 for ViT-B/16; "during training
and inference, we randomly crop 8 sub-images"), their positions drawn from a generator seeded by
``crop_seed`` and the file name, so the same image always gets the same crops. The stored vector is
the mean over the crops of the multimodal encoder's pooled output (``output="features"``, the
``mpiqe`` feature, 512-d for ViT-B/16), or of the predicted score on the training rows' MOS scale
(``output="score"``, the ``mpiqe-score`` feature, 1-d, higher is better). The network is
``iqa_store.nets.mpiqe``, the code the training stage runs.

MP-IQE learns from MOS, so it has no published weights: its encoders are trained per split and
found by their scope (``extract -m mpiqe --protocol P``), or given as ``--weights registry:mpiqe/FP``
or a file of the learned tensors (safetensors, or a tensor-only torch file). The frozen base CLIP
is the one the encoder's config names: an open_clip tag through the Hugging Face cache (as
``clip-vitb16``), a random initialisation's seed, or a local checkpoint (``base_weights_file``,
checked against the sha256 the encoder recorded).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions
from iqa_store.extractors.neural import cached_sha256, existing_weights_file, load_state_dict
from iqa_store.images import read_rgb
from iqa_store.nets.openclip import open_clip_module

if TYPE_CHECKING:
    import torch

OUTPUTS = ("features", "score")
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")  # entries of OpenAI's archives


@dataclass
class Mpiqe(Extractor):
    """MP-IQE: the multimodal encoder's pooled output (or its score), mean over random crops."""

    name: str = "mpiqe"
    weights: str | None = None  # the learned tensors (a registry encoder's model.safetensors)
    encoder_config: dict[str, Any] | None = None  # the encoder's config: architecture, base CLIP, MOS range
    output: str = "features"
    crops: int = 8
    crop_seed: int = 0
    base_weights_file: str | None = None  # the base CLIP checkpoint, when it was trained from a local file
    version = "1"
    description = "MP-IQE multi-modal prompts (Pan et al. 2024), trained per split with `iqa-store train mpiqe`"
    licence: ClassVar[str] = "OpenAI CLIP weights: MIT (research use per its model card); prompts you train: yours"
    _state: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    _device: str = field(default="cpu", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ExtractorError(f"mpiqe: output must be one of {OUTPUTS}, not {self.output!r}")
        if not (isinstance(self.crops, int) and self.crops >= 1):
            raise ExtractorError(f"mpiqe: crops must be a positive integer, not {self.crops!r}")
        self.name = "mpiqe" if self.output == "features" else "mpiqe-score"
        if self.weights:
            self.weights = existing_weights_file(self.weights)
        if self.base_weights_file:
            self.base_weights_file = existing_weights_file(self.base_weights_file)

    # --- what the encoder says -------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return dict(self.encoder_config or {})

    @property
    def arch(self) -> str:
        return str(self.config.get("arch", "ViT-B-16"))

    def base_weights(self) -> dict[str, Any]:
        return dict(self.config.get("base_weights") or {"open_clip": f"{self.arch}:openai"})

    def mos_range(self) -> tuple[float, float]:
        low, high = self.config.get("mos_range") or (0.0, 1.0)
        return float(low), float(high)

    def crop_side(self) -> int:
        vision = (open_clip_module().get_model_config(self.arch) or {}).get("vision_cfg", {})
        size = vision.get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    @property
    def dim(self) -> int:
        if self.output == "score":
            return 1
        if "feature_dim" in self.config:
            return int(self.config["feature_dim"])
        return int((open_clip_module().get_model_config(self.arch) or {}).get("embed_dim", 512))

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"output": self.output, "crops": self.crops, "crop_seed": self.crop_seed,
                                    "arch": self.arch, "mpiqe": self.config.get("mpiqe", {}),
                                    "quick_gelu": bool(self.config.get("quick_gelu", True))}
        if self.output == "score":
            settings.update(mos_range=list(self.mos_range()),
                            score={"columns": ["mpiqe"], "higher_is_better": [True]})
        return settings

    # --- weights ---------------------------------------------------------------------------------
    def weights_identity(self) -> dict[str, Any]:
        if not self.weights:
            raise self._no_weights_error()
        base = self.base_weights()
        if base.get("random_init"):
            base_identity: dict[str, Any] = {"random_init": True, "seed": int(base["seed"])}
        elif self.base_weights_file:
            base_identity = {"sha256": cached_sha256(self.base_weights_file)}
        elif "sha256" in base:
            base_identity = {"sha256": base["sha256"]}
        else:
            base_identity = {"open_clip": base["open_clip"]}
        return {"prompts": {"file": Path(self.weights).name, "sha256": cached_sha256(self.weights)},
                "base": base_identity}

    def weights_source(self) -> str:
        return "--protocol P (the encoders of `iqa-store train mpiqe`), --weights registry:mpiqe/FP or a file"

    def weights_available(self) -> bool:
        return bool(self.weights)

    def _no_weights_error(self) -> ExtractorError:
        return ExtractorError("mpiqe needs prompts learned on MOS: train them with `iqa-store train mpiqe --dataset D "
                              "--protocol P`, then extract with --protocol P (or --weights registry:mpiqe/FP)")

    def _base_clip(self) -> Any:
        """The frozen CLIP the prompts were trained on."""
        import torch

        from iqa_store.extractors.clip import OpenClipExtractor
        base = self.base_weights()
        quick_gelu = bool(self.config.get("quick_gelu", True))
        create = open_clip_module().create_model
        if base.get("random_init"):
            torch.manual_seed(int(base["seed"]))  # the seed the stage drew it from
            return create(self.arch, pretrained=None, force_quick_gelu=quick_gelu)
        if self.base_weights_file:
            if "sha256" in base and cached_sha256(self.base_weights_file) != base["sha256"]:
                raise ExtractorError(f"{self.base_weights_file} is not the CLIP checkpoint these prompts were "
                                     f"trained on: its sha256 differs from {base['sha256']}")
            path = self.base_weights_file
        elif "sha256" in base:
            raise ExtractorError(f"these prompts were trained on a local CLIP checkpoint ({base.get('file')}): "
                                 "give it as -s base_weights_file=PATH")
        else:
            arch, _, tag = str(base["open_clip"]).partition(":")
            try:
                path = OpenClipExtractor(arch=arch, pretrained=tag or "openai").published_weights_file()
            except ExtractorError as error:
                raise ExtractorError(f"the base CLIP of these prompts ({base['open_clip']}) is not available: "
                                     f"{error} (for mpiqe, --weights is the prompts; the CLIP checkpoint goes in "
                                     "-s base_weights_file=PATH)") from None
        model = create(self.arch, pretrained=None, force_quick_gelu=quick_gelu)
        state = {k: v for k, v in load_state_dict(path).items() if k not in _NOT_WEIGHTS}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ExtractorError(f"{path} does not fit {self.arch}: {str(error)[:300]}") from None
        return model

    # --- worker side -----------------------------------------------------------------------------
    def load_item(self, path: Path) -> "torch.Tensor":
        import torch

        from iqa_store.nets.clip_quality import CLIP_MEAN, CLIP_STD
        from iqa_store.nets.mpiqe import random_crops
        pixels = np.asarray(read_rgb(path), dtype=np.float32) / 255.0
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        key = f"{self.crop_seed}:{Path(path).name}".encode()
        generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:7], "big"))
        crops = random_crops(image, self.crops, self.crop_side(), generator)
        mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
        return (crops - mean) / std

    def collate(self, items: Sequence["torch.Tensor"]) -> "torch.Tensor":
        import torch
        return torch.stack(list(items))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # workers get the settings, never the weights
        state["_model"] = state["_state"] = None
        return state

    # --- main-process side -----------------------------------------------------------------------
    def prepare(self, options: RunOptions) -> None:
        from iqa_store.nets.mpiqe import MpiqeConfig, MpiqeModel
        if not self.weights:
            raise self._no_weights_error()
        state = load_state_dict(self.weights)
        clip = self._base_clip()
        try:
            model = MpiqeModel(clip, open_clip_module().get_tokenizer(self.arch),
                               MpiqeConfig(**self.config.get("mpiqe", {})))
            model.load_learned_state(state, self.weights)
        except (TypeError, ValueError) as error:
            raise ExtractorError(f"{self.weights}: {error}") from None
        self._device = options.device
        self._model = model.eval().to(options.device)

    def compute(self, batch: "torch.Tensor") -> np.ndarray:
        import torch
        images, crops = batch.shape[:2]
        with torch.inference_mode():
            output = self._model(batch.flatten(0, 1).to(self._device))
        if self.output == "features":
            values = output.features.float().view(images, crops, -1).mean(dim=1)
        else:
            low, high = self.mos_range()
            values = (low + output.score.float().view(images, crops).mean(dim=1) * (high - low))[:, None]
        return values.cpu().numpy().astype(np.float32)

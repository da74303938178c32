"""MetaIQA features (Zhu et al. 2020; onuoha2024 section 3.3.3 uses them as a distortion feature).

The stored vector is, by ``layer``: ``head`` (default) the 512-d penultimate activation of the
head, ``gap`` the ResNet's pooled 512-d output, ``logits`` its 1000-d classifier output; with
``output="score"`` the sigmoid score mapped back to the MOS scale of the rows it was trained on
(1-d, higher is better). The whole image is resized to ``size`` x ``size`` (224, the official
test-time input), ImageNet mean/std; the network and its input are ``iqa_store.nets.metaiqa``, the
code the training stages (``iqa-store train metaiqa-prior`` / ``metaiqa``) run.

Weights: encoders fine-tuned per split are found by their scope (``extract -m metaiqa --protocol
P``); ``--weights registry:metaiqa-prior/FP`` reads a prior itself (never on the datasets it was
meta-trained on: its config lists them); or a file (safetensors or a tensor-only torch file with
the network's keys, ``backbone.*`` and ``head.*``). The official whole-module pickles are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions
from iqa_store.extractors.embedder import pixels_to_input
from iqa_store.extractors.neural import TrainedWeights, existing_weights_file, load_state_dict
from iqa_store.images import read_rgb

if TYPE_CHECKING:
    import torch

OUTPUTS = ("features", "score")
LAYER_DIMS = {"head": 512, "logits": 1000}  # gap: the backbone's width


@dataclass
class Metaiqa(TrainedWeights, Extractor):
    """MetaIQA: head penultimate activation (or another layer, or the score) of the whole image at 224 px."""

    weights: str | None = None
    encoder_config: dict[str, Any] | None = None  # a registry encoder's config (backbone, size, MOS range)
    output: str = "features"
    layer: str = "head"
    backbone: str = "resnet18"  # used with random_init; a file's or encoder's own network wins
    size: int = 224
    random_init: bool = False
    seed: int = 0  # only used with random_init
    name = "metaiqa"
    version = "1"
    description = "MetaIQA ResNet-18 + head (Zhu et al. 2020), prior by `train metaiqa-prior`, fine-tuned per split"
    licence = "encoders you train: yours"

    def __post_init__(self) -> None:
        from iqa_store.nets.metaiqa import LAYERS
        if self.output not in OUTPUTS:
            raise ExtractorError(f"metaiqa: output must be one of {OUTPUTS}, not {self.output!r}")
        if self.layer not in LAYERS:
            raise ExtractorError(f"metaiqa: layer must be one of {LAYERS}, not {self.layer!r}")
        if self.weights and self.random_init:
            raise ExtractorError("metaiqa: give --weights or --random-init, not both")
        config = self.encoder_config or {}
        self.backbone = str(config.get("backbone", self.backbone))
        self.size = int(config.get("size", self.size))
        if self.weights:
            self.weights = existing_weights_file(self.weights)
            self._state = load_state_dict(self.weights)
            self.backbone = _backbone_of(self._state, self.weights)

    @property
    def dim(self) -> int:
        if self.output == "score":
            return 1
        from iqa_store.nets.resnet import feature_dim
        return LAYER_DIMS.get(self.layer) or feature_dim(self.backbone)

    def mos_range(self) -> tuple[float, float]:
        """The MOS scale the sigmoid's [0, 1] stands for (a prior's: [0, 1])."""
        low, high = (self.encoder_config or {}).get("mos_range", (0.0, 1.0))
        return float(low), float(high)

    def settings(self) -> dict[str, Any]:
        return {"output": self.output, "layer": self.layer if self.output == "features" else None,
                "backbone": self.backbone, "size": self.size, "mos_range": list(self.mos_range()),
                "preprocess": f"whole image bilinear (antialiased) to {self.size}x{self.size}, ImageNet mean/std"}

    def weights_source(self) -> str:
        return ("--protocol P (the encoders of `iqa-store train metaiqa`), --weights registry:metaiqa-prior/FP, "
                "registry:metaiqa/FP or a file")

    def _no_weights_error(self) -> ExtractorError:
        return ExtractorError("metaiqa needs trained weights: `iqa-store train metaiqa-prior`, then `iqa-store train "
                              "metaiqa --dataset D --protocol P --prior metaiqa-prior`, then extract with --protocol P "
                              "(or --weights registry:NAME/FP)")

    def load_item(self, path: Path) -> "torch.Tensor":
        from iqa_store.nets.metaiqa import eval_view
        return eval_view(pixels_to_input(read_rgb(path)), self.size)

    def prepare(self, options: RunOptions) -> None:
        from iqa_store.nets.metaiqa import MetaIQANet
        self._place(lambda: MetaIQANet(self.backbone), self._load, options.device)

    def _load(self, model: Any, state: dict[str, Any]) -> None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ExtractorError(f"{self.weights} does not fit the MetaIQA network: "
                                 f"{str(error).splitlines()[0][:300]}") from None

    def compute(self, batch: "torch.Tensor") -> np.ndarray:
        import torch
        with torch.inference_mode():
            images = batch.to(self._device)
            if self.output == "features":
                values = self._model.features(images, self.layer)
            else:
                low, high = self.mos_range()
                values = (self._model(images) * (high - low) + low)[:, None]
        return values.float().cpu().numpy().astype(np.float32)


def _backbone_of(state: dict[str, Any], source: str) -> str:
    """The registered ResNet whose block type and depth the state dict's backbone keys show."""
    from iqa_store.nets.resnet import BACKBONES
    if "head.fc1.weight" not in state or "backbone.fc.weight" not in state:
        raise ExtractorError(f"{source} is not a MetaIQA checkpoint: it has no head.fc1.weight / backbone.fc.weight "
                             f"(keys: {sorted(state)[:5]})")
    block = "bottleneck" if "backbone.layer1.0.conv3.weight" in state else "basic"
    depth = tuple(len({k.split(".")[2] for k in state if k.startswith(f"backbone.layer{i}.")}) for i in range(1, 5))
    for name in BACKBONES.names():
        spec = BACKBONES.get(name)
        if spec.block == block and tuple(spec.layers) == depth:
            return name
    raise ExtractorError(f"{source}: its ResNet ({block} blocks {depth}) is none of {BACKBONES.names()}")

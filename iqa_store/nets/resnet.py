"""Encoder backbones for the contrastive stages and the extractors that read their encoders.

Every backbone maps a float image batch [B, 3, H, W] (any H, W) to a pooled feature vector
[B, feature_dim]: a torchvision ResNet with its classifier removed (``fc`` is an identity),
so its state-dict keys are torchvision's (``conv1.weight``, ``layer1.0.bn1.running_mean``...)
and a published Re-IQA checkpoint's ``encoder.*`` weights load into it unchanged.

``resnet-tiny`` (one basic block per stage) exists so CPU tests and short experiments run in
seconds; ``resnet50`` is the paper's network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from iqa_store.registry import Registry

if TYPE_CHECKING:
    import torch

# ImageNet statistics used by torchvision and MoCo-v2; the content encoder sees normalised input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]

    @property
    def feature_dim(self) -> int:
        return 512 if self.block == "basic" else 2048


BACKBONES: Registry = Registry("backbone")
BACKBONES.register("resnet50", BackboneSpec("bottleneck", (3, 4, 6, 3)), help="ResNet-50 (2048-d), the paper's encoder")
BACKBONES.register("resnet34", BackboneSpec("basic", (3, 4, 6, 3)), help="ResNet-34 (512-d)")
BACKBONES.register("resnet18", BackboneSpec("basic", (2, 2, 2, 2)), help="ResNet-18 (512-d)")
BACKBONES.register("resnet-tiny", BackboneSpec("basic", (1, 1, 1, 1)), help="one basic block per stage (512-d); tests and CPU runs")


def feature_dim(name: str) -> int:
    return BACKBONES.get(name).feature_dim


def build_backbone(name: str) -> "torch.nn.Module":
    """A randomly initialised backbone (torchvision's initialisation) returning pooled features."""
    import torch
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    spec: BackboneSpec = BACKBONES.get(name)
    model = ResNet(BasicBlock if spec.block == "basic" else Bottleneck, list(spec.layers))
    model.fc = torch.nn.Identity()
    return model

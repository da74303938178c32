"""MetaIQA's network (Zhu, Li, Wu, Dong and Shi, CVPR 2020; the official code zhuhancheng/MetaIQA).

An ImageNet ResNet-18 *including* its 1000-way classifier, then the head of the official code:
Linear 1000 -> 1024, BatchNorm, PReLU, Dropout 0.5, Linear 1024 -> 512, BatchNorm, PReLU,
Dropout 0.5, Linear 512 -> 1, Sigmoid (a score in [0, 1]). ``../shared/SUPERVISED.md`` section 3.1.

What a feature can be (``LAYERS``): ``head`` the 512-d penultimate activation (after the second
BatchNorm and PReLU, before dropout; the default), ``gap`` the backbone's pooled 512-d output,
``logits`` the 1000-d classifier output the head consumes. onuoha2024 does not say which layer
it used.

Input (section 3.4): training views are the image resized to 256 x 256 (aspect not kept), a
horizontal flip with probability 0.5 and a random 224 crop; at test time the whole image is
resized to 224 x 224. Both then take ImageNet's mean and standard deviation.

State-dict keys: ``backbone.<torchvision ResNet key>`` (``fc`` included) and ``head.<key>``, so a
torchvision ResNet-18 checkpoint loads into ``backbone`` unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.nets.resnet import BACKBONES, IMAGENET_MEAN, IMAGENET_STD
from iqa_store.nets.weights import WeightsError

__all__ = ["LAYERS", "MetaIQANet", "WeightsError", "eval_view", "imagenet_backbone_state", "load_into",
           "train_view"]

LAYERS = ("head", "gap", "logits")
CLASSES = 1000  # the ImageNet classifier is part of the network
HEAD_WIDTHS = (1024, 512)
TRAIN_RESIZE, CROP = 256, 224
# torchvision's published ImageNet weights per backbone (the file name carries its sha256 prefix)
IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}


class MetaIQANet(nn.Module):
    def __init__(self, backbone: str = "resnet18", dropout: float = 0.5) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
        spec = BACKBONES.get(backbone)
        self.backbone = ResNet(BasicBlock if spec.block == "basic" else Bottleneck, list(spec.layers), CLASSES)
        wide, narrow = HEAD_WIDTHS
        self.head = nn.ModuleDict({
            "fc1": nn.Linear(CLASSES, wide), "bn1": nn.BatchNorm1d(wide), "act1": nn.PReLU(),
            "fc2": nn.Linear(wide, narrow), "bn2": nn.BatchNorm1d(narrow), "act2": nn.PReLU(),
            "fc3": nn.Linear(narrow, 1)})
        self.dropout = nn.Dropout(dropout)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's global average pool [B, 512] (2048 for a bottleneck ResNet)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return torch.flatten(b.avgpool(b.layer4(b.layer3(b.layer2(b.layer1(x))))), 1)

    def penultimate(self, logits: torch.Tensor) -> torch.Tensor:
        h = self.head
        hidden = h["act1"](h["bn1"](h["fc1"](logits)))
        return h["act2"](h["bn2"](h["fc2"](self.dropout(hidden))))

    def features(self, x: torch.Tensor, layer: str = "head") -> torch.Tensor:
        if layer not in LAYERS:
            raise ValueError(f"metaiqa: layer must be one of {LAYERS}, not {layer!r}")
        pooled = self.pooled(x)
        if layer == "gap":
            return pooled
        logits = self.backbone.fc(pooled)
        return logits if layer == "logits" else self.penultimate(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1], [B]."""
        hidden = self.penultimate(self.backbone.fc(self.pooled(x)))
        return torch.sigmoid(self.head["fc3"](self.dropout(hidden))).squeeze(1)


# --- input ----------------------------------------------------------------------------------------

def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels - mean) / std


def _resized(image: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(image[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0]


def eval_view(image: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> the whole image resized to size x size, ImageNet-normalised."""
    return _normalise(_resized(image, size).clamp(0, 1))


def train_view(image: torch.Tensor, generator: torch.Generator, resize: int = TRAIN_RESIZE,
               crop: int = CROP) -> torch.Tensor:
    """Resize to resize x resize, flip with probability 0.5, a random crop x crop, ImageNet-normalised."""
    view = _resized(image, resize).clamp(0, 1)
    if torch.rand((), generator=generator) < 0.5:
        view = view.flip(-1)
    top, left = (int(torch.randint(resize - crop + 1, (), generator=generator)) for _ in range(2))
    return _normalise(view[:, top:top + crop, left:left + crop])


# --- weights --------------------------------------------------------------------------------------

def imagenet_backbone_state(backbone: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights of ``backbone`` from torch hub's checkpoint cache (downloaded
    there if absent, the file's sha256 prefix checked), read with ``weights_only=True``."""
    if backbone not in IMAGENET_WEIGHTS:
        raise WeightsError(f"metaiqa: torchvision publishes no ImageNet weights for {backbone!r} "
                           f"(only {sorted(IMAGENET_WEIGHTS)}); start from 'random' or a file")
    import torchvision.models as models
    weights = getattr(models, IMAGENET_WEIGHTS[backbone]).IMAGENET1K_V1
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, weights_only=True)
    except Exception as error:  # URLError offline, RuntimeError for a bad hash
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WeightsError(f"metaiqa: cannot get torchvision's ImageNet {backbone} weights ({type(error).__name__}: "
                           f"{str(error)[:200]}); put {Path(weights.url).name} in {cached.parent} or start from "
                           "a file") from None


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``state`` into ``module`` strictly, one clear error when it does not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:  # missing / unexpected keys, shape mismatches
        raise WeightsError(f"{source} does not fit the network: {str(error).splitlines()[0][:300]} "
                           f"(keys: {sorted(state)[:4]})") from None

"""SLIQUE's networks (Zhou et al. 2024): the image encoder F and the text encoder G.

Image encoder (section IV-A: "ResNet-50 followed by an adaptive pooling layer and 2 MLP
layers", outputs 512-d): a torchvision ResNet trunk (``build_trunk``: any ``BACKBONES`` depth,
and a base ``width`` other than torchvision's 64 for small CPU runs) whose adaptive average
pool gives h; h L2-normalised is the feature extraction keeps (the released ``demo_feat.py``
stores it). Two heads on it, used in training only:

* ``text_projection``: one linear map h -> ``embed_dim`` (512, no bias, std d^-0.5 as the
  released CLIP code initialises ``image_projection``) into the space shared with the texts;
* ``image_head``: the 2-layer MLP (Linear, ReLU, Linear) into the image-image space.

Text encoder: open_clip's own ``TextTransformer`` (CLIP's causal transformer with QuickGELU,
pre-LN blocks, argmax (EOT) pooling and a linear projection), width 512, 12 layers, 8 heads,
context 77, vocabulary 49,408, randomly initialised as CLIP does; CLIP's lower-cased BPE
tokenizer (open_clip's ``SimpleTokenizer`` and its bundled vocabulary file).

``trunk_state`` finds the trunk's tensors in any checkpoint layout we read (ours, the released
``SLIQUE.tar``, a bare torchvision state dict) under torchvision's key names.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.nets.resnet import BACKBONES, build_backbone

# The released CON_model (Iceuro/SLIQUE ``modules/new_caption_img_model.py``) holds the ResNet-50
# twice: ``visual.*`` (the whole torchvision network, fc included) and ``model.encoder.<i>.*``
# (CONTRIQUE's ``nn.Sequential(children[:-2])``, the path its ``demo_feat.py`` features take).
_SEQUENTIAL_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_EXPORT_PREFIX = "trunk."  # our registry encoders
TORCHVISION_WIDTH = 64  # the base width of every torchvision ResNet
VOCAB_SIZE = 49408  # CLIP's BPE vocabulary


def trunk_dim(backbone: str, width: int = TORCHVISION_WIDTH) -> int:
    """Width of the pooled feature h: 8 x width (basic blocks) or 32 x width (bottlenecks)."""
    return BACKBONES.get(backbone).feature_dim * width // TORCHVISION_WIDTH


def build_trunk(backbone: str, width: int = TORCHVISION_WIDTH) -> nn.Module:
    """A randomly initialised ResNet returning adaptively pooled features [B, trunk_dim].

    At width 64 this is ``iqa_store.nets.build_backbone`` (torchvision's network, its keys);
    another width rebuilds the stem and the four stages with torchvision's own ``_make_layer``
    at width, 2 x, 4 x and 8 x width, so the keys stay torchvision's.
    """
    if width < 1:
        raise ValueError(f"the trunk width must be positive, got {width}")
    model = build_backbone(backbone)
    if width == TORCHVISION_WIDTH:
        return model
    layers = BACKBONES.get(backbone).layers
    block = type(model.layer1[0])
    model.inplanes = width
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.layer1 = model._make_layer(block, width, layers[0])
    model.layer2 = model._make_layer(block, 2 * width, layers[1], stride=2)
    model.layer3 = model._make_layer(block, 4 * width, layers[2], stride=2)
    model.layer4 = model._make_layer(block, 8 * width, layers[3], stride=2)
    for module in model.modules():  # torchvision's initialisation of the rebuilt layers
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return model


def pooled_features(trunk: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """h / ||h||: the trunk's pooled features, L2-normalised (what extraction stores per scale)."""
    return F.normalize(trunk(images), dim=1)


class ImageEncoder(nn.Module):
    """F: the trunk and whichever training heads the objective uses (None: absent)."""

    def __init__(self, backbone: str, width: int, embed_dim: int | None, head_hidden: int | None,
                 head_dim: int | None) -> None:
        super().__init__()
        self.trunk = build_trunk(backbone, width)
        dim = trunk_dim(backbone, width)
        self.text_projection = None
        if embed_dim:
            self.text_projection = nn.Linear(dim, embed_dim, bias=False)
            nn.init.normal_(self.text_projection.weight, std=dim ** -0.5)
        self.image_head = None
        if head_dim:
            hidden = head_hidden or dim
            self.image_head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, head_dim))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.trunk, images)

    def for_texts(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings in the image-text space."""
        return F.normalize(self.text_projection(self.features(images)), dim=1)

    def for_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings in the image-image space."""
        return F.normalize(self.image_head(self.features(images)), dim=1)


def build_text_tower(width: int = 512, layers: int = 12, heads: int = 8, context_length: int = 77,
                     embed_dim: int = 512) -> nn.Module:
    """open_clip's TextTransformer with CLIP's settings (QuickGELU, argmax pooling), random init."""
    from open_clip.transformer import QuickGELU, TextTransformer
    if width % heads:
        raise ValueError(f"the text width {width} does not divide into {heads} heads")
    return TextTransformer(context_length=context_length, vocab_size=VOCAB_SIZE, width=width, heads=heads,
                           layers=layers, output_dim=embed_dim, act_layer=QuickGELU)


@lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer(context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """CLIP's lower-cased BPE token ids [N, context_length] (open_clip's tokenizer: SOT, text, EOT, zeros)."""
    return _tokenizer(context_length)(list(texts))


def encode_texts(tower: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """G(t), L2-normalised."""
    return F.normalize(tower(tokens), dim=1)


def trunk_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trunk's tensors of a checkpoint under torchvision's keys (``module.`` already stripped).

    Our export (``trunk.*``), the released layout (``model.encoder.<i>.*``, else ``visual.*``), or
    a bare torchvision ResNet; classifier (``fc.*``) and training heads are dropped.
    """
    if any(key.startswith(_EXPORT_PREFIX) for key in state):
        return {k.removeprefix(_EXPORT_PREFIX): v for k, v in state.items() if k.startswith(_EXPORT_PREFIX)}
    sequential = {k.removeprefix("model.encoder."): v for k, v in state.items() if k.startswith("model.encoder.")}
    if sequential:
        renamed = {}
        for key, value in sequential.items():
            index, _, rest = key.partition(".")
            if index not in _SEQUENTIAL_CHILDREN:
                raise ValueError(f"unexpected key model.encoder.{key}: CONTRIQUE's encoder has no child {index} "
                                 "with weights")
            renamed[f"{_SEQUENTIAL_CHILDREN[index]}.{rest}"] = value
        return renamed
    if any(key.startswith("visual.") for key in state):
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def load_trunk(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``state`` (any layout ``trunk_state`` reads) into ``trunk``, exactly: every key, every shape."""
    found = trunk_state(state)
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(found) & set(expected) if tuple(found[k].shape) != tuple(expected[k].shape))
    problems = [f"{label} ({len(keys)}): {keys[:3]}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
    if problems:
        raise ValueError(f"{source} does not fit this trunk: {'; '.join(problems)}")
    trunk.load_state_dict(found, strict=True)

"""SLIQUE (Zhou et al. 2024): joint image-text and image-image contrastive pretraining, from scratch.

Per training image (``sample``), as the paper describes it (section III):

* image-image branch: two ``crop`` x ``crop`` overlap-area crops of the image whose shared area
  is 10-30 % of a crop (``iqa_store.train.crops.ola_pair``, Re-IQA's OLA; section III-D); an
  image whose shorter side cannot hold such a pair is first upscaled (bicubic). The views are
  "augmented in the same manner as" CONTRIQUE (section IV-A; ``iqa_store.train.augment``): the
  pair cut at x1 or x1/2, each view in a random colour space and flipped with p = 0.5. The
  released code has none of this (``--augment none``);
* image-text branch: one ``crop`` x ``crop`` window where the image's saliency sums highest
  (section III-A). The paper's saliency network ([59], Zhou et al. TIP 2020) has no public
  code; the stand-in is the classical spectral residual of Hou and Zhang (CVPR 2007), computed
  here (``saliency``); and one of the image's texts, drawn uniformly (its content, distortion
  and appearance annotations, from the store's annotation table, each kind switchable).

Loss (Eq. 1-4): InfoNCE with temperature tau (0.1) in both branches, every other image of the
batch a negative: L1 (image-text) with the salient crop's embedding as query and the batch's
texts as keys; L2 (image-image) with the first crop as query and the batch's second crops as
keys; L_joint = (1 - alpha) L1 + alpha L2, alpha 0.7. The paper calls a pair positive "if the
text comes from the descriptions of the content, distortion or appearance of the image,
otherwise negative": a key text that is also one of the query image's own descriptions (the
same phrase drawn for another image) is therefore not counted as a negative (left out of the
denominator). ``objective`` switches a branch off (Table IV's ablations): then its network
parts are not built at all (image-image only has no text tower).

Schedule (section IV-A): SGD, lr 0.006, batch 1024, cosine decay, 30 epochs, 2 warm-up
epochs (the trainer turns them into steps; ``--warmup-steps`` overrides), from scratch. Under DDP each process contrasts its share of the batch.

Export (read by the ``slique`` extractor): the image encoder, ``trunk.<torchvision key>`` plus
the training heads ``text_projection.*`` and ``image_head.*``; the text tower is not exported
(the features are the image encoder's alone, section III-B).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from iqa_store.distortions._random import randint, uniform
from iqa_store.nets import BACKBONES
from iqa_store.nets.slique import (ImageEncoder, build_text_tower, encode_texts, load_trunk, tokenize, trunk_dim)
from iqa_store.nets.resize import upscaled_to
from iqa_store.nets.weights import read_state_dict
from iqa_store.train.augment import contrique_view, half_scale
from iqa_store.train.crops import Box, cut, min_side, ola_pair
from iqa_store.train.stage import Data, Example, Export, Stage, StepContext, TrainingDefaults, option

OBJECTIVES = ("joint", "image-image", "image-text")
TEXT_KINDS = ("content", "distortion", "appearance")
SALIENCY_WIDTH = 64  # Hou and Zhang compute the spectral residual on an image 64 pixels wide
SALIENCY_SIGMA = 2.5  # their smoothing Gaussian, fspecial('gaussian', [10, 10], 2.5), in pixels of that image
SALIENCY_TRUNCATE = 2.0  # a radius of 5 pixels: their 10 x 10 window


# --- InfoNCE ---------------------------------------------------------------------------------------

def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float,
             not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 averaged over the queries: query i's positive is key i, every other key a negative.

    ``queries``, ``keys``: L2-normalised [N, D]. ``not_negative`` [N, N] (bool): keys j that are
    left out of query i's denominator (another positive of it); the diagonal is ignored.
    """
    logits = queries @ keys.T / temperature
    if not_negative is not None:
        off_diagonal = not_negative & ~torch.eye(len(queries), dtype=torch.bool, device=queries.device)
        logits = logits.masked_fill(off_diagonal, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


# --- saliency-placed crops ---------------------------------------------------------------------------

def saliency(image: torch.Tensor) -> np.ndarray:
    """Spectral-residual saliency (Hou and Zhang 2007) of a [3, H, W] image, at 64 pixels wide.

    As the authors' MATLAB code: the grey image resized to 64 px wide; log amplitude spectrum
    minus its 3 x 3 average (replicated borders), the spectral residual; back with the original
    phase, squared magnitude; a Gaussian (sigma 2.5, a 10 x 10 window, zero borders). Returns
    a non-negative [h, 64] map.
    """
    grey = image.mean(dim=0)
    height, width = grey.shape
    size = (max(1, round(height * SALIENCY_WIDTH / width)), SALIENCY_WIDTH)
    small = F.interpolate(grey[None, None], size=size, mode="area")[0, 0].double().numpy()
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-12)
    residual = log_amplitude - ndimage.uniform_filter(log_amplitude, size=3, mode="nearest")
    saliency_map = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    return ndimage.gaussian_filter(saliency_map, SALIENCY_SIGMA, mode="constant", truncate=SALIENCY_TRUNCATE)


def salient_box(image: torch.Tensor, crop: int) -> Box:
    """The ``crop`` x ``crop`` window of ``image`` [3, H, W] whose summed saliency is largest.

    The saliency map is brought back to the image's size (bilinear) and every window position
    is scored with an integral image; ties go to the first position in raster order.
    """
    height, width = image.shape[-2:]
    if min(height, width) < crop:
        raise ValueError(f"image {height}x{width} is smaller than the {crop}-pixel crop")
    small = torch.from_numpy(saliency(image))[None, None]
    full = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = full.cumsum(0).cumsum(1)
    sums = (integral[crop:, crop:] - integral[:-crop, crop:] - integral[crop:, :-crop] + integral[:-crop, :-crop])
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return Box(int(top), int(left), crop)


# --- the model -------------------------------------------------------------------------------------

class SliqueModel(nn.Module):
    """F (the image encoder) and, when the objective has the image-text branch, G (the text tower)."""

    def __init__(self, image: ImageEncoder, text: nn.Module | None) -> None:
        super().__init__()
        self.image = image
        self.text = text

    def forward(self, pairs: torch.Tensor, salient: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embeddings of a batch; one trunk pass over all its crops (empty inputs: branch off)."""
        crops = [part for part in (pairs.flatten(0, 1) if pairs.numel() else pairs, salient) if part.numel()]
        pooled = self.image.features(torch.cat(crops))
        out: dict[str, torch.Tensor] = {}
        if pairs.numel():
            both = F.normalize(self.image.image_head(pooled[:2 * len(pairs)]), dim=1).view(len(pairs), 2, -1)
            out["first"], out["second"] = both[:, 0], both[:, 1]
            pooled = pooled[2 * len(pairs):]
        if salient.numel():
            out["image"] = F.normalize(self.image.text_projection(pooled), dim=1)
            out["text"] = encode_texts(self.text, tokens)
        return out


class SliqueSample(NamedTuple):
    pairs: torch.Tensor  # [2, 3, crop, crop] OLA crops, or empty (no image-image branch)
    salient: torch.Tensor  # [3, crop, crop] the saliency-placed crop, or empty (no image-text branch)
    tokens: torch.Tensor  # [context_length] the drawn text's token ids, or empty
    text: str  # the drawn text
    texts: tuple[str, ...]  # all of the image's texts (which other texts of the batch are its own)


_EMPTY = torch.empty(0)


@dataclass
class SliqueStage(Stage):
    """SLIQUE: joint image-text (content, distortion, appearance texts) and image-image (OLA) InfoNCE."""

    name: ClassVar[str] = "slique"
    data: ClassVar[Data] = Data.IMAGES_TEXTS
    reader: ClassVar[str] = "slique"
    # section IV-A: SGD, lr 0.006, batch 1024, cosine decay, 30 epochs (weight decay 1e-4: the released train_.py)
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=30, batch_size=1024, lr=0.006, warmup_epochs=2)

    objective: Literal["joint", "image-image", "image-text"] = option(
        "joint", "joint, image-image (no text tower) or image-text (no image-image head): Table IV")
    alpha: float = option(0.7, "weight of the image-image loss: (1 - alpha) L_image-text + alpha L_image-image")
    temperature: float = option(0.1, "InfoNCE temperature tau of both branches")
    backbone: str = option("resnet50", "image trunk depth (iqa_store.nets.BACKBONES)")
    width: int = option(64, "base width of the trunk (64: torchvision's ResNet; smaller for CPU runs)")
    init_weights: str = option("", "a local file with trunk weights to start from (torchvision, SLIQUE.tar or ours); "
                                   "empty: random initialisation (the paper: from scratch)")
    embed_dim: int = option(512, "width of the shared image-text space (image projection and text tower output)")
    head_hidden: int = option(0, "hidden width of the image-image MLP head; 0 = the trunk's feature width")
    head_dim: int = option(512, "output width of the image-image MLP head")
    text_width: int = option(512, "text transformer width")
    text_layers: int = option(12, "text transformer layers")
    text_heads: int = option(8, "text transformer attention heads")
    context_length: int = option(77, "text tokens (CLIP's BPE, truncated with EOT kept)")
    crop: int = option(224, "side of the saliency crop and of the OLA crops")
    ola_min: float = option(0.10, "smallest overlap of the two OLA crops, as a fraction of a crop's area")
    ola_max: float = option(0.30, "largest overlap of the two OLA crops")
    augment: Literal["contrique", "none"] = option(
        "contrique", "image-image views as CONTRIQUE's (a pair at x1 or x1/2, each view a random colour space "
                     "and flip; the paper) or none (the OLA crops as they are)")
    content_texts: bool = option(True, "learn from the content texts (A photo of a(n) {label}.)")
    distortion_texts: bool = option(True, "learn from the distortion texts (synthetic type and level)")
    appearance_texts: bool = option(True, "learn from the appearance texts (brightness, contrast, sharpness, "
                                          "colourfulness)")

    # --- what the objective uses ---------------------------------------------------------------
    @property
    def image_image(self) -> bool:
        return self.objective in ("joint", "image-image")

    @property
    def image_text(self) -> bool:
        return self.objective in ("joint", "image-text")

    def text_kinds(self) -> tuple[str, ...]:
        """The annotation kinds this run learns from; none without the image-text branch."""
        if not self.image_text:
            return ()
        wanted = {"content": self.content_texts, "distortion": self.distortion_texts,
                  "appearance": self.appearance_texts}
        return tuple(kind for kind in TEXT_KINDS if wanted[kind])

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"slique: objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.augment not in ("contrique", "none"):
            raise ValueError(f"slique: augment must be contrique or none, not {self.augment!r}")
        BACKBONES.get(self.backbone)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"slique: alpha must lie in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"slique: the temperature must be positive, got {self.temperature}")
        if min(self.width, self.embed_dim, self.head_dim, self.text_width, self.text_layers, self.text_heads) < 1:
            raise ValueError("slique: widths, layers and heads must be positive")
        if self.text_width % self.text_heads:
            raise ValueError(f"slique: text width {self.text_width} does not divide into {self.text_heads} heads")
        if self.context_length < 3 or self.crop < 16:
            raise ValueError("slique: context_length must be at least 3 tokens and crop at least 16 pixels")
        if not 0.0 < self.ola_min <= self.ola_max <= 1.0:
            raise ValueError(f"slique: OLA bounds must satisfy 0 < ola_min <= ola_max <= 1, got "
                             f"{self.ola_min}, {self.ola_max}")
        if self.image_text and not self.text_kinds():
            raise ValueError("slique: every kind of text is switched off, but the objective has the image-text branch")
        if self.init_weights and not Path(self.init_weights).expanduser().is_file():
            raise ValueError(f"slique: init_weights file not found: {Path(self.init_weights).expanduser()}")

    def prepare(self, data: Any) -> None:
        if not self.image_text:
            return
        texts = getattr(data, "texts", None)
        if texts is None:
            raise ValueError("slique: the training data carries no texts (the image-text branch needs annotations)")
        bare = [image_id for image_id, own in zip(data.ids, texts) if not own]
        if bare:
            raise ValueError(f"slique: {len(bare)} of {len(data.ids)} images have no texts of the kinds "
                             f"{', '.join(self.text_kinds())} (first: {bare[0]}); switch another kind on")

    # --- model ---------------------------------------------------------------------------------
    def build_model(self) -> SliqueModel:
        image = ImageEncoder(self.backbone, self.width, self.embed_dim if self.image_text else None,
                             self.head_hidden or None, self.head_dim if self.image_image else None)
        if self.init_weights:
            path = Path(self.init_weights).expanduser()
            load_trunk(image.trunk, read_state_dict(path), str(path))
        text = None
        if self.image_text:
            text = build_text_tower(self.text_width, self.text_layers, self.text_heads, self.context_length,
                                    self.embed_dim)
        return SliqueModel(image, text)

    # --- data ----------------------------------------------------------------------------------
    def sample(self, example: Example, generator: torch.Generator) -> SliqueSample:
        pairs = salient = tokens = _EMPTY
        text = ""
        if self.image_image:
            pairs = self.image_pair(example.image, generator)
        if self.image_text:
            image = upscaled_to(example.image, self.crop)
            salient = cut(image, salient_box(image, self.crop)).clone()
            text = example.texts[randint(generator, len(example.texts))]
            tokens = tokenize([text], self.context_length)[0]
        return SliqueSample(pairs, salient, tokens, text, tuple(example.texts))

    def image_pair(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Two OLA crops of one image, augmented as CONTRIQUE unless ``augment`` is none: [2, 3, crop, crop]."""
        contrique = self.augment == "contrique"
        if contrique and uniform(generator) < 0.5:
            image = half_scale(image)
        image = upscaled_to(image, min_side(self.crop))
        first, second = ola_pair(image.shape[-2], image.shape[-1], self.crop, (self.ola_min, self.ola_max), generator)
        views = [cut(image, first), cut(image, second)]
        return torch.stack([contrique_view(v, generator) for v in views] if contrique else views)

    def collate(self, samples: Sequence[SliqueSample]) -> dict[str, torch.Tensor]:
        batch = {"pairs": _EMPTY, "salient": _EMPTY, "tokens": _EMPTY, "own_text": _EMPTY}
        if self.image_image:
            batch["pairs"] = torch.stack([s.pairs for s in samples])
        if self.image_text:
            batch["salient"] = torch.stack([s.salient for s in samples])
            batch["tokens"] = torch.stack([s.tokens for s in samples])
            # own_text[i, j]: the text drawn for image j is one of image i's own descriptions
            batch["own_text"] = torch.tensor([[other.text in sample.texts for other in samples] for sample in samples])
        return batch

    # --- loss ----------------------------------------------------------------------------------
    def branch_losses(self, out: dict[str, torch.Tensor], own_text: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = {}
        if self.image_image:
            losses["image-image"] = info_nce(out["first"], out["second"], self.temperature)
        if self.image_text:
            losses["image-text"] = info_nce(out["image"], out["text"], self.temperature, own_text)
        return losses

    def loss(self, model: nn.Module, trainable: nn.Module, batch: dict[str, torch.Tensor],
             context: StepContext) -> torch.Tensor:
        out = trainable(batch["pairs"], batch["salient"], batch["tokens"])
        losses = self.branch_losses({k: v.float() for k, v in out.items()}, batch["own_text"])
        if self.objective == "joint":
            return (1.0 - self.alpha) * losses["image-text"] + self.alpha * losses["image-image"]
        return losses[self.objective]

    # --- export --------------------------------------------------------------------------------
    def export(self, model: nn.Module) -> Export:
        state = {key: value.detach().clone() for key, value in model.image.state_dict().items()}
        config = {"feature_dim": 2 * trunk_dim(self.backbone, self.width), "backbone": self.backbone,
                  "width": self.width, "layout": "slique-image-encoder",
                  "input": "whole image at native resolution and at half scale, values in [0, 1]; pooled trunk "
                           "features L2-normalised per scale, concatenated"}
        return Export(state, config)

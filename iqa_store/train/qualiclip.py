"""QualiCLIP (Agnolucci et al. 2024): the CLIP image encoder fine-tuned to rank degraded crops, no labels.

Per pristine training image (section 3.2; ``sample``):

1. two random overlapping crops of ``crop`` pixels (``overlapping_crops``). The paper does not
   state its overlap rule; ours: the second crop is the first shifted by an offset drawn
   uniformly in [-max_shift * crop, +max_shift * crop] along each axis (limited to what the
   image allows), so the two always share at least (1 - max_shift)^2 of their area (a quarter
   by default) and at most all of it. Images smaller than a crop are first upscaled (bicubic);
2. one distortion of the ``kadid24`` bank: a group at random, then a type in it (D = 1);
3. that type at each of the 5 levels, each level applied to the two PRISTINE crops (not one
   level on top of the other), levels in rising order: the bank's level index, which for the
   reference code's non-monotone types (mean shift, linear contrast) is already the order of
   measured severity (``iqa_store.distortions.banks``); equally strong mirror-image levels
   (a +0.08 and a -0.08 shift) are ranked in the bank's convention like any other pair, as
   Eq. 2-3 rank every j > i. Distortions act on the crops, as the paper describes;
4. the 10 crops normalised with CLIP's mean/std (its inference normalisation).

Loss (section 3.3): with c the cosine between L2-normalised image and prompt features (no
logit scale), per image and prompt pair L_cons (Eq. 1, 10 hinges, margin 2.5e-3), L_pos and
L_neg (Eq. 2-3, 40 hinges each, margin 6.75e-2), weighted 1, 1, 1 (Eq. 4). The 7 pairs
(``pairs_in_loss``): ``mean-similarity`` (default) averages each crop's cosines with the 7
positive prompts and with the 7 negative ones before the hinges, as S8.1 says ("we average the
similarities"); ``per-pair`` computes the losses for each pair and averages them. An image's
loss is the sum of its hinge terms, as the equations write it; the batch's is the mean over
its images, so the step size does not depend on the batch size (under DDP each process
averages its images and DDP averages the gradients: the same mean).

Only the image tower is trained (the attention pool's positional table, unused without the
positional embedding, is frozen); the text tower encodes the prompts once when the model is
built and is then dropped. BatchNorm: ``frozen_batchnorm`` (default) keeps CLIP's running
statistics (the layers run in eval mode; their affine weights train), since a batch is ten
versions of each of a few images; ``--no-frozen-batchnorm`` updates them from the batches.

Optimiser: AdamW, weight decay 1e-2, 3 epochs, batch 16 images (160 crops), constant rate
(the paper names no schedule). The printed learning rate 1e-9 cannot move a weight by more
than about 1e-9 per step; the default here is 1e-6, measured (README, benchmarks/RESULTS.md).

Export (read by the ``qualiclip`` extractor): ``clip_model.visual.<key>`` + ``prompts_features``
(the layout of ``iqa_store.nets.clip_quality.qualiclip_tensors``), with the architecture, the
base weights and the prompts in its config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.distortions import LEVELS, apply, get_bank
from iqa_store.distortions._random import randint
from iqa_store.fingerprint import file_sha256
from iqa_store.nets.clip_quality import (CLIP_MEAN, CLIP_STD, encode_prompts, load_clip_state, pooled_image_features,
                                         prompt_pairs, prompt_sets, qualiclip_tensors, read_clip_state)
from iqa_store.nets.openclip import open_clip_module
from iqa_store.nets.resize import upscaled_to
from iqa_store.train.crops import Box, cut
from iqa_store.train.stage import Data, Example, Export, Stage, StepContext, TrainingDefaults, option

PAIRS_IN_LOSS = ("mean-similarity", "per-pair")
NO_WEIGHTS = "none"  # the ``pretrained`` tag of a random initialisation (tests, the demo experiment)


# --- the three losses (Eq. 1-3), per image (or image and pair) -----------------------------------

def consistency_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 1. ``positive``/``negative``: cosines [N, L, 2] (level, crop) with t_p / t_n -> [N]."""
    return (_hinge((positive[..., 0] - positive[..., 1]).abs() - margin)
            + _hinge((negative[..., 0] - negative[..., 1]).abs() - margin)).sum(dim=-1)


def positive_ranking_loss(positive: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 2: every crop of a more degraded level j is less similar to t_p than every crop of level i < j."""
    return (_hinge(_later_minus_earlier(positive) + margin) * _later_mask(positive)).flatten(1).sum(dim=1)


def negative_ranking_loss(negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 3: every crop of a more degraded level j is more similar to t_n than every crop of level i < j."""
    return (_hinge(margin - _later_minus_earlier(negative)) * _later_mask(negative)).flatten(1).sum(dim=1)


def _later_minus_earlier(similarity: torch.Tensor) -> torch.Tensor:
    """[N, L, 2] -> [N, i, j, k, l] = similarity[j, k] - similarity[i, l]."""
    return similarity[:, None, :, :, None] - similarity[:, :, None, None, :]


def _later_mask(similarity: torch.Tensor) -> torch.Tensor:
    """1 where j > i in ``_later_minus_earlier``'s layout."""
    levels = similarity.shape[1]
    later = torch.ones(levels, levels, device=similarity.device, dtype=similarity.dtype).triu(diagonal=1)
    return later[None, :, :, None, None]


def _hinge(value: torch.Tensor) -> torch.Tensor:
    return value.clamp_min(0.0)


# --- crops and degradations ----------------------------------------------------------------------

def overlapping_crops(height: int, width: int, crop: int, max_shift: float,
                      generator: torch.Generator) -> tuple[Box, Box]:
    """Two ``crop`` boxes inside a height x width image, the second the first shifted by at most
    ``max_shift * crop`` pixels along each axis (uniform offset, then a uniform position)."""
    if min(height, width) < crop:
        raise ValueError(f"image {height}x{width} is smaller than the {crop}-pixel crop")
    top, shifted_top = _shifted_pair(height, crop, max_shift, generator)
    left, shifted_left = _shifted_pair(width, crop, max_shift, generator)
    return Box(top, left, crop), Box(shifted_top, shifted_left, crop)


def _shifted_pair(size: int, crop: int, max_shift: float, generator: torch.Generator) -> tuple[int, int]:
    room = size - crop
    limit = min(room, math.floor(max_shift * crop))
    shift = randint(generator, 2 * limit + 1) - limit
    start = max(0, -shift) + randint(generator, room - abs(shift) + 1)
    return start, start + shift






def draw_distortion(bank: str, generator: torch.Generator) -> str:
    """A group of ``bank`` uniformly, then a type of that group uniformly."""
    groups = list(get_bank(bank).groups.values())
    types = groups[randint(generator, len(groups))]
    return types[randint(generator, len(types))]


def degraded_levels(crops: torch.Tensor, bank: str, kind: str, generator: torch.Generator) -> torch.Tensor:
    """[2, 3, H, W] pristine crops -> [L, 2, 3, H, W]: ``kind`` at each level (rising), each on the pristine crops."""
    return torch.stack([apply(crops, bank, kind, level, generator) for level in LEVELS])


# --- the model -----------------------------------------------------------------------------------

class ImageTower(nn.Module):
    """A CLIP ResNet image tower whose forward is the attention pool without positional embedding."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        # unused without the positional embedding: frozen, so DDP does not wait for its gradient
        visual.attnpool.positional_embedding.requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pooled_image_features(self.visual, pixels)


class QualiclipModel(nn.Module):
    """The image tower being fine-tuned and the fixed [2P, D] prompt features."""

    def __init__(self, tower: ImageTower, prompts_features: torch.Tensor, frozen_batchnorm: bool) -> None:
        super().__init__()
        self.tower = tower
        self.register_buffer("prompts_features", prompts_features.float())
        self.frozen_batchnorm = frozen_batchnorm

    def train(self, mode: bool = True) -> "QualiclipModel":
        super().train(mode)
        if self.frozen_batchnorm:
            for module in self.tower.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


@dataclass(frozen=True)
class BaseClip:
    """A CLIP model to start from and what identifies its weights."""

    model: nn.Module
    identity: dict[str, Any]
    prompts_features: torch.Tensor | None = None  # from a QualiCLIP checkpoint


def base_clip(arch: str, pretrained: str, weights: str, quick_gelu: bool) -> BaseClip:
    """``arch`` with the weights of ``weights`` (a file: OpenAI, open_clip or QualiCLIP layout), else
    the open_clip tag ``pretrained`` through its cache, else (``none``) a random initialisation."""
    open_clip = open_clip_module()
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CLIP weights not found: {path}")
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
        state = read_clip_state(path)
        load_clip_state(model, state, str(path))
        return BaseClip(model, {"file": path.name, "sha256": file_sha256(path)}, state.prompts_features)
    if pretrained == NO_WEIGHTS:  # the seed torch drew it from: a reader rebuilds the same model from it
        return BaseClip(open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu),
                        {"random_init": True, "seed": torch.initial_seed()})
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=quick_gelu)
    except Exception as error:  # network and cache failures come in many types; say what to do
        raise ValueError(f"cannot get the open_clip weights {arch}:{pretrained} ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); download them on a machine with "
                         "internet or give a local checkpoint as weights") from None
    return BaseClip(model, {"open_clip": f"{arch}:{pretrained}"})


@dataclass
class ClipStage(Stage):
    """What the CLIP stages share: the base model's fields, its image tower, the normalisation."""

    arch: str = option("RN50", "open_clip architecture of the CLIP ResNet (RN50 in both papers)")
    pretrained: str = option("openai", "open_clip weights tag of the base model ('none': random initialisation)")
    weights: str = option("", "a local CLIP checkpoint (OpenAI, open_clip or qualiclip.pth layout) instead of the tag")
    quick_gelu: bool = option(True, "QuickGELU in the text tower (OpenAI's weights were trained with it)")

    def __post_init__(self) -> None:
        self._base_identity: dict[str, Any] = {}

    def check_base(self) -> None:
        config = open_clip_module().get_model_config(self.arch)
        if config is None:
            raise ValueError(f"{self.name}: open_clip has no architecture {self.arch!r}")
        if not isinstance(config.get("vision_cfg", {}).get("layers"), (list, tuple)):
            raise ValueError(f"{self.name}: {self.arch} is not a CLIP ResNet (its image tower has no attention pool)")

    def base(self) -> BaseClip:
        """The base CLIP (its identity kept for the export's config)."""
        base = base_clip(self.arch, self.pretrained, self.weights, self.quick_gelu)
        self._base_identity = base.identity
        return base

    def base_config(self, feature_dim: int) -> dict[str, Any]:
        return {"feature_dim": feature_dim, "arch": self.arch, "quick_gelu": self.quick_gelu,
                "base_weights": self._base_identity, "normalization": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
                "input": "whole image at native resolution, ToTensor + CLIP mean/std; attention pool without "
                         "positional embedding"}


def clip_normalise(pixels: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in [0, 1] -> CLIP's normalisation."""
    mean = torch.tensor(CLIP_MEAN, dtype=pixels.dtype).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels - mean) / std


@dataclass
class QualiclipStage(ClipStage):
    """QualiCLIP (Agnolucci et al. 2024): CLIP's image encoder fine-tuned to rank degraded crop pairs, no labels."""

    name: ClassVar[str] = "qualiclip"
    data: ClassVar[Data] = Data.IMAGES
    reader: ClassVar[str] = "qualiclip"
    # section 4.2: AdamW, weight decay 1e-2, 3 epochs, batch 16; lr 1e-6 measured (1e-9 as printed moves nothing)
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=3, batch_size=16, lr=1e-6, optimizer="adamw",
                                                            weight_decay=1e-2, schedule="constant")

    prompt_set: str = option("qualiclip", "antonym prompt pairs (iqa_store/nets/prompts): QualiCLIP's 7")
    crop: int = option(224, "side of the two crops")
    max_shift: float = option(0.5, "largest offset between the two crops per axis, as a fraction of the crop "
                                   "(overlap at least (1 - max_shift)^2 of a crop)")
    bank: str = option("kadid24", "distortion bank (7 groups: a group, then a type in it)")
    margin_consistency: float = option(2.5e-3, "m_cons of Eq. 1")
    margin_ranking: float = option(6.75e-2, "m_rank of Eq. 2 and 3")
    weight_consistency: float = option(1.0, "lambda_cons of Eq. 4")
    weight_positive: float = option(1.0, "lambda_pos of Eq. 4")
    weight_negative: float = option(1.0, "lambda_neg of Eq. 4")
    pairs_in_loss: str = option("mean-similarity", "how the prompt pairs enter the losses: mean-similarity "
                                                   "(cosines averaged over the pairs, S8.1) or per-pair (losses averaged)")
    frozen_batchnorm: bool = option(True, "keep CLIP's BatchNorm running statistics (eval-mode BatchNorm)")

    def check(self) -> None:
        self.check_base()
        if self.prompt_set not in prompt_sets():
            raise ValueError(f"qualiclip: unknown prompt set {self.prompt_set!r}; known: {', '.join(prompt_sets())}")
        if self.pairs_in_loss not in PAIRS_IN_LOSS:
            raise ValueError(f"qualiclip: pairs_in_loss must be one of {PAIRS_IN_LOSS}, not {self.pairs_in_loss!r}")
        if self.crop < 32 or not 0 <= self.max_shift < 1:
            raise ValueError("qualiclip: crop must be at least 32 pixels and max_shift in [0, 1) (crops must overlap)")
        if min(self.margin_consistency, self.margin_ranking, self.weight_consistency, self.weight_positive,
               self.weight_negative) < 0:
            raise ValueError("qualiclip: margins and loss weights must not be negative")
        get_bank(self.bank)

    def build_model(self) -> nn.Module:
        base = self.base()
        prompts = base.prompts_features  # a QualiCLIP checkpoint brings its own
        if prompts is None:
            pairs = [pair.texts for pair in prompt_pairs(self.prompt_set)]
            prompts = encode_prompts(base.model, open_clip_module().get_tokenizer(self.arch), pairs)
        return QualiclipModel(ImageTower(base.model.visual), prompts, self.frozen_batchnorm)

    def trainable(self, model: nn.Module) -> nn.Module:
        return model.tower

    def sample(self, example: Example, generator: torch.Generator) -> torch.Tensor:
        """[L, 2, 3, crop, crop]: the two overlapping crops at each level of one distortion, CLIP-normalised."""
        image = upscaled_to(example.image, self.crop)
        first, second = overlapping_crops(image.shape[-2], image.shape[-1], self.crop, self.max_shift, generator)
        crops = torch.stack([cut(image, first), cut(image, second)])
        kind = draw_distortion(self.bank, generator)
        return clip_normalise(degraded_levels(crops, self.bank, kind, generator))

    def collate(self, samples: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(samples))

    def loss(self, model: nn.Module, trainable: nn.Module, batch: torch.Tensor, context: StepContext) -> torch.Tensor:
        images, levels, crops = batch.shape[:3]
        features = F.normalize(trainable(batch.flatten(0, 2)).float(), dim=-1)
        cosines = (features @ model.prompts_features.T).view(images, levels, crops, -1, 2)
        return self.image_losses(cosines).mean()

    def image_losses(self, cosines: torch.Tensor) -> torch.Tensor:
        """[B, L, 2, P, 2] cosines (image, level, crop, pair, positive/negative) -> each image's loss [B]."""
        if self.pairs_in_loss == "mean-similarity":
            return self._losses(cosines[..., 0].mean(dim=-1), cosines[..., 1].mean(dim=-1))
        images, levels, crops, pairs = cosines.shape[:4]
        per_pair = cosines.permute(0, 3, 1, 2, 4).reshape(images * pairs, levels, crops, 2)
        return self._losses(per_pair[..., 0], per_pair[..., 1]).view(images, pairs).mean(dim=1)

    def _losses(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return (self.weight_consistency * consistency_loss(positive, negative, self.margin_consistency)
                + self.weight_positive * positive_ranking_loss(positive, self.margin_ranking)
                + self.weight_negative * negative_ranking_loss(negative, self.margin_ranking))

    def export(self, model: nn.Module) -> Export:
        config = {**self.base_config(int(model.prompts_features.shape[1])),
                  "layout": "qualiclip-visual", "prompt_set": self.prompt_set,
                  "prompts": [list(pair.texts) for pair in prompt_pairs(self.prompt_set)]}
        return Export(qualiclip_tensors(model.tower.visual.state_dict(), model.prompts_features), config)

"""CLIP-IQA+ (Wang, Chan, Loy 2023): a CoOp context learned on MOS, every CLIP weight frozen, per split.

The model (IceClear/CLIP-IQA ``coopclipiqa.py``, ``configs/clipiqa/clipiqa_coop_koniq.py``):

* 16 context token embeddings, one context shared by the prompts "Good photo." and "Bad photo.",
  the class words in the middle (``[SOS] ctx[0:8] good photo .. ctx[8:16] [EOS]``, the official
  code's layout under CLIP's tokeniser: ``iqa_store.nets.coop``), initialised N(0, 0.02)
  (``ctx_init=""``);
* the image: the whole image at native resolution, ToTensor + CLIP mean/std, a horizontal flip
  with probability 0.5 (the official training augmentation), the RN50 attention pool without
  its positional embedding (``iqa_store.nets.clip_quality``);
* score = softmax(100 cos(image, [t_good, t_bad]))[good], in [0, 1];
* loss: MSE between the score and the MOS scaled to [0, 1] by the dataset's declared MOS range
  (KonIQ's 0-100 file: MOS / 100 as the official code; an adapter's range otherwise), so the
  score keeps the official meaning whatever the dataset's scale;
* only the context trains; CLIP (both towers, BatchNorm statistics included) stays in eval mode.

Trained per split on the split's training rows only (``Data.IMAGES_MOS``), as CNNIQA. Defaults:
SGD lr 0.002, cosine decay, batch 64 images; 725 epochs = the released ``iter_80000`` checkpoint
on KonIQ's 7,058 training images (80,000 x 64 / 7,058). The trainer's SGD uses momentum 0.9; the
official config has none (torch's default 0), so a run here takes larger steps at the same lr.

Export (read by the ``clipiqa-plus`` extractor): the learned context (``context``, [16, width])
and, in its config, the identity of the base CLIP weights (an open_clip tag, a file's sha256, or
a random initialisation's seed), which the extractor loads again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.distortions._random import uniform
from iqa_store.nets.clip_quality import LOGIT_SCALE, pair_probabilities, pooled_image_features, prompt_pairs
from iqa_store.nets.coop import N_CONTEXT, CoopPrompts, coop_prompts, coop_text_features
from iqa_store.nets.openclip import open_clip_module
from iqa_store.train.data import TrainingData
from iqa_store.train.qualiclip import ClipStage, clip_normalise
from iqa_store.train.stage import Data, Example, Export, StepContext, TrainingDefaults, option

PROMPT_SET = "clipiqa"  # "Good photo." / "Bad photo."


class CoopModel(nn.Module):
    """A frozen CLIP and the learned context of its two prompts; forward: P(good) per image."""

    def __init__(self, clip: nn.Module, prompts: CoopPrompts, context_std: float) -> None:
        super().__init__()
        self.clip = clip.requires_grad_(False)
        width = clip.token_embedding.weight.shape[1]
        self.context = nn.Parameter(torch.empty(prompts.n_context, width).normal_(std=context_std))
        self.register_buffer("tokens", prompts.tokens)
        self.name_lengths = prompts.name_lengths

    def train(self, mode: bool = True) -> "CoopModel":
        super().train(mode)
        self.clip.eval()  # frozen: BatchNorm keeps CLIP's statistics
        return self

    def text_features(self) -> torch.Tensor:
        prompts = CoopPrompts(self.tokens, self.name_lengths, self.context.shape[0])
        return coop_text_features(self.clip, prompts, self.context)

    def forward(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            features = self.image_features(images)
        return pair_probabilities(features, self.text_features(), LOGIT_SCALE)[:, 0]

    def image_features(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Native-resolution images: one batch if they share a size, else one by one."""
        if len({tuple(image.shape) for image in images}) == 1:
            return pooled_image_features(self.clip.visual, torch.stack(list(images)))
        return torch.cat([pooled_image_features(self.clip.visual, image[None]) for image in images])


@dataclass
class ClipiqaPlusStage(ClipStage):
    """CLIP-IQA+ (Wang et al. 2023): a 16-token CoOp context on a frozen CLIP RN50, MSE on MOS, trained per split."""

    name: ClassVar[str] = "clipiqa-plus"
    data: ClassVar[Data] = Data.IMAGES_MOS
    reader: ClassVar[str] = "clipiqa-plus"
    # configs/clipiqa/clipiqa_coop_koniq.py: SGD lr 0.002, batch 64, cosine; iter_80000 on 7,058 images ~ 725 epochs
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=725, batch_size=64, lr=0.002, optimizer="sgd",
                                                            weight_decay=0.0, schedule="cosine")

    n_context: int = option(N_CONTEXT, "learned context tokens, half before and half after the class words")
    context_std: float = option(0.02, "standard deviation of the context's random initialisation")
    hflip: bool = option(True, "horizontal flip with probability 0.5 (the official augmentation)")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._mos_range: tuple[float, float] | None = None

    def check(self) -> None:
        self.check_base()
        if self.n_context < 2 or self.n_context % 2 or self.context_std <= 0:
            raise ValueError("clipiqa-plus: n_context must be even and at least 2, context_std positive")

    def prepare(self, data: TrainingData) -> None:
        if data.mos_range is None:
            raise ValueError("clipiqa-plus trains on MOS: its data must be a split's training rows")
        low, high = data.mos_range
        if not high > low:
            raise ValueError(f"clipiqa-plus: the dataset's MOS range {data.mos_range} is empty")
        self._mos_range = (low, high)

    def names(self) -> tuple[str, str]:
        return prompt_pairs(PROMPT_SET)[0].texts

    def build_model(self) -> nn.Module:
        base = self.base()
        prompts = coop_prompts(open_clip_module().get_tokenizer(self.arch), self.names(), self.n_context)
        return CoopModel(base.model, prompts, self.context_std)

    def sample(self, example: Example, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mos_range is None or example.mos is None:
            raise ValueError("clipiqa-plus trains on MOS: its data must be a split's training rows")
        image = example.image
        if self.hflip and uniform(generator) < 0.5:
            image = image.flip(-1)
        low, high = self._mos_range
        return clip_normalise(image), torch.tensor((example.mos - low) / (high - low), dtype=torch.float32)

    def collate(self, samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [image for image, _ in samples], torch.stack([target for _, target in samples])

    def loss(self, model: nn.Module, trainable: nn.Module, batch: tuple[list[torch.Tensor], torch.Tensor],
             context: StepContext) -> torch.Tensor:
        images, targets = batch
        return F.mse_loss(trainable(images), targets)

    def export(self, model: nn.Module) -> Export:
        config: dict[str, Any] = {**self.base_config(1), "prompts": list(self.names()), "n_context": self.n_context,
                                  "class_token_position": "middle", "mos_range": list(self._mos_range or ()),
                                  "score": "softmax(100 cos(image, [good, bad]))[good], in [0, 1]"}
        return Export({"context": model.context.detach().float()}, config)

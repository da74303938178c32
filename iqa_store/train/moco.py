"""Momentum contrast (MoCo-v2) as an objective: a query encoder, its momentum copy, a queue.

``ContrastiveModel`` holds both encoders and the queue and computes the InfoNCE loss of one
batch of (query, key) pairs. ``ContrastiveStage`` is the part of the stage contract every MoCo
stage shares (the Re-IQA stages): its model, loss and export; a stage adds only the views it
makes of an image. The trainer owns the optimiser and the loop. Under DDP the keys
are computed with shuffled BatchNorm across processes (MoCo's "shuffle BN": a query and its
key never share batch statistics) and every process enqueues the keys of all processes, so
the queue is identical everywhere.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.nets import BACKBONES, build_backbone, feature_dim
from iqa_store.train import distributed
from iqa_store.train.stage import Data, Example, Export, Stage, StepContext, option


class Encoder(nn.Module):
    """Backbone (the features extraction keeps) + MLP projection head (used only in training)."""

    def __init__(self, backbone: str, head_hidden: int | None, head_dim: int) -> None:
        super().__init__()
        width = feature_dim(backbone)
        self.backbone = build_backbone(backbone)
        self.head = nn.Sequential(nn.Linear(width, head_hidden or width), nn.ReLU(inplace=True),
                                  nn.Linear(head_hidden or width, head_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=1)


class ContrastiveModel(nn.Module):
    def __init__(self, backbone: str, head_hidden: int | None, head_dim: int, queue_size: int, momentum: float,
                 temperature: float, batch_negatives: bool) -> None:
        super().__init__()
        if queue_size < 0 or (queue_size == 0 and not batch_negatives):
            raise ValueError(f"queue_size must be positive{' or 0 (in-batch negatives only)' if batch_negatives else ''}, "
                             f"got {queue_size}")
        self.query = Encoder(backbone, head_hidden, head_dim)
        self.key = copy.deepcopy(self.query)
        for parameter in self.key.parameters():
            parameter.requires_grad = False
        self.momentum, self.temperature, self.batch_negatives = momentum, temperature, batch_negatives
        # a random start, as in MoCo: the first batches contrast against noise until replaced
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, head_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        for key, query in zip(self.key.parameters(), self.query.parameters()):
            key.mul_(self.momentum).add_(query.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def keys(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not distributed.active():
            return self.key(images)
        return distributed.shuffled_forward(self.key, images, generator)

    def loss(self, query_encoder: nn.Module, queries: torch.Tensor, keys_images: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """InfoNCE of each query against its key (positive), the queue and, optionally, the other keys.

        ``query_encoder`` is ``self.query`` or its DDP wrapper. With ``batch_negatives`` the
        other keys of the batch are negatives too: that is what makes a differently distorted
        crop of the same image (Re-IQA's half-swapped pairs) a negative in the same step.
        """
        q = query_encoder(queries)
        self.update_key_encoder()
        k = self.keys(keys_images, generator)
        positives = (q * k).sum(dim=1, keepdim=True)
        parts = [positives]
        if self.batch_negatives:
            in_batch = q @ k.T
            parts.append(in_batch.masked_fill(torch.eye(len(q), dtype=torch.bool, device=q.device), float("-inf")))
        parts.append(q @ self.queue.clone().detach().T)
        logits = torch.cat(parts, dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        self.enqueue(distributed.gather(k))
        return loss

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        size, count = self.queue.shape[0], keys.shape[0]
        if size == 0:
            return
        start = int(self.queue_ptr)
        index = (torch.arange(count, device=keys.device) + start) % size
        self.queue[index[-size:]] = keys[-size:]
        self.queue_ptr.fill_((start + count) % size)


@dataclass
class ContrastiveStage(Stage):
    """A MoCo stage: pairs of views of each image, InfoNCE against a queue (and the batch's keys).

    The exported encoder is the query network: ``backbone.<torchvision ResNet key>`` (the
    features its reader extracts) and ``head.<key>`` (the projection head, training only).
    """

    data: ClassVar[Data] = Data.IMAGES
    input_normalization: ClassVar[str]  # "none" or "imagenet": what the encoder expects at extraction
    batch_negatives: ClassVar[bool]

    backbone: str = option("resnet50", "encoder network (iqa_store.nets.BACKBONES)")
    head_hidden: int = option(0, "hidden width of the MLP projection head; 0 = the backbone's feature width")
    head_dim: int = option(128, "output width of the projection head")
    queue_size: int = option(65536, "negatives kept in the MoCo queue (0: the batch's own keys only, stages with in-batch negatives)")
    momentum: float = option(0.999, "key encoder momentum m in theta_k <- m theta_k + (1 - m) theta_q")
    temperature: float = option(0.2, "InfoNCE temperature tau")

    @abstractmethod
    def views(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, keys) for one image given as float [3, H, W] in [0, 1]; rows pair up as positives."""

    def check(self) -> None:
        BACKBONES.get(self.backbone)  # an unknown backbone fails here, before any work

    def build_model(self) -> ContrastiveModel:
        return ContrastiveModel(self.backbone, self.head_hidden or None, self.head_dim, self.queue_size,
                                self.momentum, self.temperature, self.batch_negatives)

    def trainable(self, model: nn.Module) -> nn.Module:
        return model.query  # the key encoder follows by momentum, the queue by enqueueing

    def sample(self, example: Example, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views(example.image, generator)

    def collate(self, samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([q for q, _ in samples]), torch.cat([k for _, k in samples])

    def loss(self, model: nn.Module, trainable: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
             context: StepContext) -> torch.Tensor:
        queries, keys = batch
        return model.loss(trainable, queries, keys, context.generator)

    def export(self, model: nn.Module) -> Export:
        config: dict[str, Any] = {"backbone": self.backbone, "feature_dim": feature_dim(self.backbone),
                                  "input_normalization": self.input_normalization}
        return Export(model.query.state_dict(), config)

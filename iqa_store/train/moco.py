"""Momentum contrast (MoCo-v2): a query encoder, its momentum copy for keys, a queue of negatives.

``ContrastiveModel`` holds both encoders and the queue and computes the InfoNCE loss of one
batch of (query, key) pairs; the trainer owns the optimiser and the loop. Under DDP the keys
are computed with shuffled BatchNorm across processes (MoCo's "shuffle BN": a query and its
key never share batch statistics) and every process enqueues the keys of all processes, so
the queue is identical everywhere.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.train import distributed
from iqa_store.nets.resnet import build_backbone, feature_dim


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

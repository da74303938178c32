"""The few collective operations the contrastive stages need under torchrun (DDP).

Outside torchrun every function is the identity, so the single-process path has no
branches of its own.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def requested() -> bool:
    """torchrun sets WORLD_SIZE; more than one process means DDP."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def init(device: str) -> str:
    """Join the process group torchrun describes; returns this process's device."""
    if not requested():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return f"cuda:{local_rank}"
    dist.init_process_group("gloo")
    return device


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process (rank order); no gradient flows back."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def shuffled_forward(model: nn.Module, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """MoCo's shuffle BN: run ``model`` on a random share of all processes' images, then undo it.

    ``generator`` is seeded identically on every process, so all agree on the permutation
    without a broadcast.
    """
    everything = gather(images)
    permutation = torch.randperm(len(everything), generator=generator).to(images.device)
    share = len(images)
    mine = permutation[rank() * share:(rank() + 1) * share]
    outputs = gather(model(everything[mine]))
    restored = torch.empty_like(outputs)
    restored[permutation] = outputs
    return restored[rank() * share:(rank() + 1) * share]

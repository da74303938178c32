"""Per-image random streams, so that a batch gives the same result as its images one by one.

A distortion that needs randomness first draws one 63-bit seed per image from the caller's
``torch.Generator`` and then draws everything for image ``i`` from a generator seeded with seed
``i``. Consequences: the result for an image does not depend on the other images of the batch,
applying a batch equals applying its images one at a time in order with the same generator,
and the numbers drawn depend only on the generator (not on the device of the images): a CPU
generator gives the same pixels on CPU and CUDA. Pass a CUDA generator to draw on the GPU.
"""

from __future__ import annotations

from typing import Sequence

import torch

_SEED_HIGH = 2**63 - 1


def image_generators(generator: torch.Generator | None, count: int) -> list[torch.Generator]:
    """One fresh generator per image, seeded from ``generator`` (the global RNG when None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    seeds = torch.randint(0, _SEED_HIGH, (count,), generator=generator, device=device).tolist()
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def randn(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal numbers drawn on the generator's device, returned on ``like``'s device and dtype."""
    values = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return values.to(device=like.device, dtype=like.dtype)


def rand(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, returned on ``like``'s device and dtype."""
    values = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return values.to(device=like.device, dtype=like.dtype)


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One uniform number in [low, high) as a Python float."""
    value = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
    return low + (high - low) * value


def randint(generator: torch.Generator, high: int) -> int:
    """One integer in [0, high)."""
    return int(torch.randint(0, high, (), generator=generator, device=generator.device).item())

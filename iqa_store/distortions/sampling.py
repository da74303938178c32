"""Seeded draws from a bank: Re-IQA's n_aug distinct distortions per image, each at a random level.

Everything is drawn from the caller's ``torch.Generator``, so a seed gives the same draws on
every machine. No torch import at module level: the package stays importable without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iqa_store.distortions.banks import LEVELS, Bank, get_bank

if TYPE_CHECKING:
    import torch


def sample_distinct(bank: str | Bank, n: int, generator: "torch.Generator") -> list[tuple[str, int]]:
    """``n`` (type, level) pairs of ``bank``: distinct types, each level uniform over 1..5.

    The types come in random order (a random permutation of the bank, cut to ``n``).
    """
    import torch

    from iqa_store.distortions import DistortionError  # the package imports this module first

    bank = get_bank(bank)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(bank):
        raise DistortionError(f"cannot draw {n!r} distinct distortions from bank {bank.name!r}: "
                              f"it has {len(bank)} types")
    device = generator.device
    order = torch.randperm(len(bank), generator=generator, device=device)[:n].tolist()
    levels = torch.randint(0, len(LEVELS), (n,), generator=generator, device=device).tolist()
    return [(bank.types[index], LEVELS[level]) for index, level in zip(order, levels)]

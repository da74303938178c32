"""Feature combinations to fit: explicit "a+b" strings, all subsets of a list, cross products.

A combination is a tuple of feature names. Names inside a combination are ordered by their
first appearance anywhere in the spec, so "clip+brisque" and "brisque+clip" are one
combination; the list keeps the first occurrence of each combination, in spec order:
explicit features, then subsets (by size, then in list order), then cross pairs.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Sequence, TypeVar

T = TypeVar("T")

__all__ = ["MAX_COMBINATIONS", "combination_name", "parse_combinations", "split_combination"]

SEPARATOR = "+"
# Subsets grow as 2^n; a spec that asks for more than this is almost surely a mistake.
MAX_COMBINATIONS = 4096


def split_combination(text: str) -> tuple[str, ...]:
    """ "a+b" -> ("a", "b"); raises ValueError for empty or repeated names."""
    if not isinstance(text, str):
        raise ValueError(f"a feature combination must be a string like 'a+b', got {text!r}")
    names = tuple(part.strip() for part in text.split(SEPARATOR))
    if not text.strip() or any(not name for name in names):
        raise ValueError(f"invalid feature combination {text!r}: empty feature name")
    if len(set(names)) != len(names):
        raise ValueError(f"invalid feature combination {text!r}: a feature is repeated")
    return names


def combination_name(combination: Sequence[str]) -> str:
    """("a", "b") -> "a+b", the name used in result tables."""
    return SEPARATOR.join(combination)


def _as_list(value: Sequence[str] | str | None, argument: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # a lone string is one entry, not a sequence of characters
        return [value]
    items = list(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"{argument} must be a list of strings, got {value!r}")
    return items


def parse_combinations(features: Sequence[str] | str = (), all_combos: Sequence[str] | None = None,
                       max_size: int | None = None, cross: Sequence[str] | None = None,
                       with_: Sequence[str] | None = None) -> list[tuple[str, ...]]:
    """The combinations named by a spec (see the module docstring).

    features: "a+b" strings, one combination each. all_combos: names whose non-empty subsets
    of at most ``max_size`` names are all combinations. cross, with_: every pair of an entry
    of ``cross`` and one of ``with_`` (entries may themselves be "a+b").
    """
    explicit = [split_combination(t) for t in _as_list(features, "features")]
    pool = [split_combination(t) for t in _as_list(all_combos, "all_combos")]
    left = [split_combination(t) for t in _as_list(cross, "cross")]
    right = [split_combination(t) for t in _as_list(with_, "with_")]

    if max_size is not None and not pool:
        raise ValueError("max_size needs all_combos")
    if bool(left) != bool(right):
        raise ValueError("cross and with_ must be given together")
    if any(len(combo) > 1 for combo in pool):
        raise ValueError(f"all_combos takes single feature names, got {all_combos!r}")
    pool_names = _unique(combo[0] for combo in pool)
    subsets = _subsets(pool_names, max_size) if pool_names else []
    pairs = []
    for a, b in itertools.product(left, right):
        if set(a) & set(b):
            raise ValueError(f"cross pair {combination_name(a)!r} x {combination_name(b)!r} shares a feature")
        pairs.append(a + b)

    combos = explicit + subsets + pairs
    if not combos:
        raise ValueError("no feature combinations given (use features, all_combos, or cross with with_)")
    # Canonical name order: first appearance in the whole spec, in argument order.
    rank = {name: i for i, name in enumerate(_unique(
        name for group in (explicit, pool, left, right) for combo in group for name in combo))}
    return _unique(tuple(sorted(combo, key=rank.__getitem__)) for combo in combos)


def _subsets(names: list[str], max_size: int | None) -> list[tuple[str, ...]]:
    """Non-empty subsets of at most ``max_size`` names, by size then in list order."""
    if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1):
        raise ValueError(f"max_size must be a positive integer, got {max_size!r}")
    largest = len(names) if max_size is None else min(max_size, len(names))
    count = sum(math.comb(len(names), k) for k in range(1, largest + 1))
    if count > MAX_COMBINATIONS:
        raise ValueError(f"all_combos of {len(names)} features gives {count} combinations "
                         f"(limit {MAX_COMBINATIONS}); set max_size")
    return [subset for size in range(1, largest + 1) for subset in itertools.combinations(names, size)]


def _unique(items: Iterable[T]) -> list[T]:
    """Items in first-appearance order without repeats."""
    return list(dict.fromkeys(items))

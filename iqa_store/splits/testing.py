"""A conformance test suite every split protocol runs (needs pytest).

Subclass ``ProtocolTests`` in a test module, set the class attributes and override the fixtures
for the inputs the protocol needs (``n_rows`` always; ``groups``, ``official``, ``strata`` and
``covered_rows`` where they matter)::

    class TestRandom8020(ProtocolTests):
        protocol_name = "random-80-20"
        expected_ratios = (0.8, 0.0, 0.2)
        repeated = grouped = True

        @pytest.fixture
        def n_rows(self) -> int:
            return 101

The checks compare the splits with what the class declares and with sizes counted here from
the fixtures, never with the protocol's own arithmetic. The class name does not start with
``Test``, so pytest collects only the subclasses.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import numpy as np
import pytest

from iqa_store.splits.protocols import (PROTOCOLS, ProtocolSpec, Split, SplitProtocol, make_splits, splits_from_json,
                                        splits_key, splits_to_json)

__all__ = ["ProtocolTests"]

PARTS = ("train", "val", "test")
# Settings of the splits under test: more than one split and a non-default seed, so a protocol
# that ignored either would be caught; few splits, so the suite stays fast.
SETTINGS: dict[str, Any] = {"n_splits": 4, "seed": 3}
CUSTOM_RATIOS = (0.5, 0.2, 0.3)  # differs from every default in all three parts

def parts_of(splits: list[Split]) -> list[list[list[int]]]:
    """The row indices of every split, comparable with ``==`` (Split equality also compares keys)."""
    return [[getattr(s, p).tolist() for p in PARTS] for s in splits]


def units_per_part(split: Split, units: np.ndarray, strata: np.ndarray) -> dict[Any, tuple[int, int, int, int]]:
    """For each stratum: its number of units, and how many of them each part holds."""
    counts = {}
    for stratum in np.unique(strata):
        in_stratum = strata == stratum
        per_part = [np.unique(units[part][in_stratum[part]]).size for part in (split.train, split.val, split.test)]
        counts[stratum] = (np.unique(units[in_stratum]).size, *per_part)
    return counts


class ProtocolTests:
    """Generic checks of one registered protocol on the inputs the subclass's fixtures give."""

    protocol_name: ClassVar[str]
    expected_ratios: ClassVar[tuple[float, float, float] | None] = None  # documented defaults; None: no ratios
    repeated: ClassVar[bool] = False  # n_splits random splits drawn from seed; False: one split whatever both are
    grouped: ClassVar[bool] = False  # no group is split between parts (checked when the groups fixture gives some)

    # --- inputs (override) ---------------------------------------------------------------------

    @pytest.fixture
    def n_rows(self) -> int:
        raise NotImplementedError("override the n_rows fixture")

    @pytest.fixture
    def groups(self) -> list[str] | None:
        return None

    @pytest.fixture
    def official(self) -> list[Any] | None:
        return None

    @pytest.fixture
    def strata(self) -> list[str] | None:
        return None

    @pytest.fixture
    def covered_rows(self, n_rows: int) -> np.ndarray:
        """The rows every split puts in some part: all of them, unless the protocol leaves some out."""
        return np.arange(n_rows)

    # --- helpers -------------------------------------------------------------------------------

    @property
    def protocol(self) -> SplitProtocol:
        return PROTOCOLS.get(self.protocol_name)

    @pytest.fixture
    def inputs(self, groups: list[str] | None, official: list[Any] | None,
               strata: list[str] | None) -> dict[str, Any]:
        return {"groups": groups, "official": official, "strata": strata}

    @pytest.fixture
    def make(self, n_rows: int, inputs: dict[str, Any]) -> Callable[..., list[Split]]:
        """Splits of this protocol on the fixtures' inputs, with SETTINGS updated by the keywords."""
        return lambda **settings: make_splits(self.spec(**settings), n_rows, **inputs)

    @pytest.fixture
    def key(self, n_rows: int, inputs: dict[str, Any]) -> Callable[..., str]:
        return lambda **settings: splits_key(self.spec(**settings), n_rows, **inputs)

    @pytest.fixture
    def splits(self, make: Callable[..., list[Split]]) -> list[Split]:
        return make()

    def spec(self, **settings: Any) -> ProtocolSpec:
        return ProtocolSpec(self.protocol_name, **{**SETTINGS, **settings})

    def uses(self, setting: str) -> bool:
        return self.expected_ratios is not None if setting == "ratios" else self.repeated

    # --- the contract --------------------------------------------------------------------------

    def test_declares_the_documented_ratios(self) -> None:
        ratios = self.spec().resolved_ratios()
        if self.expected_ratios is None:
            assert ratios is None
        else:
            assert ratios == pytest.approx(self.expected_ratios)

    def test_parts_are_disjoint_sorted_int64_indices_in_range(self, splits: list[Split], n_rows: int) -> None:
        for split in splits:
            for part in (split.train, split.val, split.test):
                assert part.dtype == np.int64 and part.ndim == 1
                assert np.all(np.diff(part) > 0), "indices must be sorted and unique"
                assert np.all((part >= 0) & (part < n_rows)), (part.min(), part.max(), n_rows)
            joined = np.concatenate([split.train, split.val, split.test])
            assert np.unique(joined).size == joined.size, "parts overlap"

    def test_parts_cover_the_expected_rows(self, splits: list[Split], covered_rows: np.ndarray) -> None:
        for split in splits:
            joined = np.sort(np.concatenate([split.train, split.val, split.test]))
            np.testing.assert_array_equal(joined, covered_rows)

    def test_parts_present_as_declared(self, splits: list[Split]) -> None:
        # a fitted protocol needs rows to fit on; a tested one needs rows to report metrics on
        for split in splits:
            assert (split.train.size > 0) == self.protocol.fitted, (split.train.size, self.protocol.fitted)
            assert (split.test.size > 0) == self.protocol.tested, (split.test.size, self.protocol.tested)

    def test_split_count_and_numbering(self, splits: list[Split]) -> None:
        count = SETTINGS["n_splits"] if self.repeated else 1
        assert [s.index for s in splits] == list(range(count))

    def test_same_spec_gives_identical_splits(self, make: Callable[..., list[Split]], splits: list[Split]) -> None:
        assert make() == splits

    def test_split_i_does_not_depend_on_n_splits(self, make: Callable[..., list[Split]], splits: list[Split]) -> None:
        fewer = make(n_splits=2)
        assert parts_of(fewer) == parts_of(splits)[:2]

    def test_seed_draws_other_splits_only_where_used(self, make: Callable[..., list[Split]],
                                                     splits: list[Split]) -> None:
        other = parts_of(make(seed=SETTINGS["seed"] + 1))
        if self.repeated:
            assert all(a != b for a, b in zip(other, parts_of(splits)))
        else:
            assert other == parts_of(splits)

    def test_key_is_stable(self, key: Callable[..., str], splits: list[Split]) -> None:
        assert {s.key for s in splits} == {key()} and key() == key()
        if self.expected_ratios is not None:  # the default ratios spelled out are the same settings
            assert key(ratios=self.expected_ratios) == key()

    @pytest.mark.parametrize("setting, value", [("seed", SETTINGS["seed"] + 1), ("n_splits", 2),
                                                ("ratios", CUSTOM_RATIOS)])
    def test_key_changes_with_each_setting_used(self, key: Callable[..., str], setting: str, value: Any) -> None:
        if not self.uses(setting):
            pytest.skip(f"{self.protocol_name} does not use {setting}")
        assert key(**{setting: value}) != key()

    def test_json_round_trip(self, splits: list[Split]) -> None:
        restored = splits_from_json(splits_to_json(splits))
        assert restored == splits
        assert all(getattr(s, p).dtype == np.int64 for s in restored for p in PARTS)

    def test_no_group_in_two_parts(self, splits: list[Split], groups: list[str] | None) -> None:
        if not self.grouped or groups is None:
            pytest.skip("the protocol does not keep groups together, or no groups are given")
        labels = np.asarray(groups)
        for split in splits:
            train, val, test = (set(labels[part].tolist()) for part in (split.train, split.val, split.test))
            assert not (train & val or train & test or val & test)

    @pytest.mark.parametrize("custom", [False, True], ids=["default-ratios", "custom-ratios"])
    def test_ratios_met_on_units_within_rounding(self, make: Callable[..., list[Split]], n_rows: int,
                                                 groups: list[str] | None, strata: list[str] | None,
                                                 custom: bool) -> None:
        if self.expected_ratios is None:
            pytest.skip(f"{self.protocol_name} has no ratios")
        ratios = CUSTOM_RATIOS if custom else self.expected_ratios
        # units: groups where the protocol keeps them together, else rows; dealt within each stratum
        units = np.asarray(groups) if self.grouped and groups is not None else np.arange(n_rows)
        stratum_of_row = np.zeros(n_rows, int) if strata is None else np.asarray(strata)
        for split in make(ratios=ratios if custom else None):
            for stratum, (n_units, *sizes) in units_per_part(split, units, stratum_of_row).items():
                context = (stratum, sizes, n_units, ratios)
                # every unit in one part; val and test rounded to whole units, train the rest
                assert sum(sizes) == n_units, context
                for size, ratio in zip(sizes[1:], ratios[1:]):
                    assert math.fabs(size - ratio * n_units) <= 0.5 + 1e-9, context

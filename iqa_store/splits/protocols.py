"""Train/validation/test splits of a dataset's manifest rows, one registry of protocols.

Every split is a pure function of (protocol spec, number of rows, reference groups, official
labels): the random generator of split ``i`` is seeded with ``(seed, i)``, so the same
settings give identical splits in every run and for every feature combination, and the
``key`` fingerprint of those inputs lets a caller store the splits and find them again.

Grouped splitting (synthetic datasets, where many distorted images share one reference):
the *reference groups* are shuffled and dealt out, so no reference appears in two parts. The
ratios are met on the number of groups, as in sklearn's GroupShuffleSplit and the papers'
"split by reference image" practice; the row ratios then follow only approximately when the
groups differ in size.

Stratified grouped splitting (CID2013): each group belongs to one *stratum* (its image set),
and the groups of every stratum are dealt out separately, so every stratum keeps the ratios:
``scenes-4-2`` puts four scene subsets of every image set in train and two in test
(onuoha2024, section 4.1).

``zero-shot`` is one split whose test part is the whole dataset: nothing is fitted, a score
feature is evaluated directly (QualiCLIP, CLIP-IQA).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from iqa_store.fingerprint import fingerprint
from iqa_store.registry import Registry

__all__ = [
    "PROTOCOLS",
    "ProtocolSpec",
    "Split",
    "make_splits",
    "splits_from_json",
    "splits_key",
    "splits_to_json",
]

_FORMAT = "iqa-store-splits"
_VERSION = 1
_PARTS = ("train", "val", "test")


def _index_array(values: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.sort(np.asarray(values, dtype=np.int64).ravel())
    array.flags.writeable = False  # a split is shared by every cell of a grid: keep it fixed
    return array


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted row indices into the manifest for each part; ``val`` may be empty.

    ``index`` is the split's number within its set and ``key`` the fingerprint of the
    settings that produced the set (equal for all splits of one set).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    index: int = 0
    key: str = ""

    def __post_init__(self) -> None:
        for part in _PARTS:
            object.__setattr__(self, part, _index_array(getattr(self, part)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (self.index, self.key) == (other.index, other.key) and all(
            np.array_equal(getattr(self, p), getattr(other, p)) for p in _PARTS)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, **{p: getattr(self, p).tolist() for p in _PARTS}}


@dataclass(frozen=True)
class ProtocolSpec:
    """A protocol name with its settings; ``ratios`` (train, val, test) default per protocol.

    ``official`` ignores ``n_splits``, ``seed`` and ``ratios``: it gives the one labelled split.
    """

    name: str
    n_splits: int = 10
    seed: int = 0
    ratios: tuple[float, float, float] | None = None

    def resolved_ratios(self) -> tuple[float, float, float] | None:
        """The ratios in effect: given ones, else the protocol's default (None for official)."""
        protocol = PROTOCOLS.get(self.name)
        return protocol.default_ratios if self.ratios is None else tuple(float(r) for r in self.ratios)

    def to_dict(self) -> dict[str, Any]:
        ratios = self.resolved_ratios()
        return {"name": self.name, "n_splits": self.n_splits, "seed": self.seed,
                "ratios": None if ratios is None else list(ratios)}


class SplitProtocol(Protocol):
    """What every registered protocol declares (``ProtocolTests`` checks each one).

    ``fitted``: a regressor is fitted on the train part (False: a score is evaluated as it is);
    ``tested``: the splits have test rows to report metrics on (False: training only).
    """

    default_ratios: tuple[float, float, float] | None
    fitted: bool
    tested: bool

    def make(self, spec: ProtocolSpec, n_rows: int, groups: np.ndarray | None,
             official: list[str | None] | None,
             strata: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(train, val, test) index arrays for each split."""
        ...


def _part_sizes(n_units: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Units (rows or groups) per part: test and val rounded half up, train the rest."""
    test = math.floor(ratios[2] * n_units + 0.5)
    val = math.floor(ratios[1] * n_units + 0.5)
    train = n_units - test - val
    for name, size, ratio in zip(_PARTS, (train, val, test), ratios):
        if ratio > 0 and size < 1:
            raise ValueError(f"{n_units} units are too few for a {name} part of ratio {ratio}")
    return train, val, test


def _check_ratios(ratios: tuple[float, float, float]) -> None:
    if len(ratios) != 3 or any(not math.isfinite(r) or r < 0 for r in ratios):
        raise ValueError(f"ratios must be three non-negative numbers (train, val, test), got {ratios}")
    if ratios[0] <= 0 or ratios[2] <= 0:
        raise ValueError(f"train and test ratios must be positive, got {ratios}")
    if abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"ratios must sum to 1, got {ratios} (sum {sum(ratios)})")


@dataclass(frozen=True)
class RandomProtocol:
    """Random splits by row, or by group when groups are given, dealt within each stratum.

    ``needs_groups``: the protocol is defined on groups (scene subsets), never on rows.
    ``by_image``: rows are dealt one by one even where groups exist, so one reference image's
    distorted versions fall into several parts (what some papers did on synthetic datasets).
    """

    default_ratios: tuple[float, float, float]
    needs_groups: bool = False
    by_image: bool = False
    fitted: bool = True
    tested: bool = True

    def make(self, spec: ProtocolSpec, n_rows: int, groups: np.ndarray | None,
             official: list[str | None] | None,
             strata: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        ratios = spec.resolved_ratios()
        _check_ratios(ratios)
        if self.by_image:
            groups = None
        if groups is None and self.needs_groups:
            raise ValueError(f"protocol {spec.name!r} splits by groups (scene subsets), and this dataset has none")
        unit_of_row = np.arange(n_rows) if groups is None else np.unique(groups, return_inverse=True)[1]
        units_by_stratum = _units_by_stratum(unit_of_row, strata)
        sizes = [_part_sizes(units.size, ratios) for units in units_by_stratum]
        out = []
        for i in range(spec.n_splits):
            # One generator per split, seeded by (seed, index): split i does not depend on
            # how many splits were asked for.
            rng = np.random.default_rng([spec.seed, i])
            part_of_unit = np.empty(int(unit_of_row.max()) + 1, np.int8)
            for units, (n_train, n_val, _) in zip(units_by_stratum, sizes):
                order = units[rng.permutation(units.size)]
                part_of_unit[order[:n_train]] = 0
                part_of_unit[order[n_train:n_train + n_val]] = 1
                part_of_unit[order[n_train + n_val:]] = 2
            part_of_row = part_of_unit[unit_of_row]
            out.append(tuple(np.flatnonzero(part_of_row == k) for k in range(3)))
        return out


def _units_by_stratum(unit_of_row: np.ndarray, strata: np.ndarray | None) -> list[np.ndarray]:
    """The units (rows or groups) of each stratum, strata in sorted order; one list without strata.

    A group spread over two strata could not be dealt within each: that is an error.
    """
    if strata is None:
        return [np.unique(unit_of_row)]
    stratum_of_row = np.unique(strata, return_inverse=True)[1]
    stratum_of_unit = np.full(int(unit_of_row.max()) + 1, -1)
    stratum_of_unit[unit_of_row] = stratum_of_row
    spread = np.unique(unit_of_row[stratum_of_unit[unit_of_row] != stratum_of_row])
    if spread.size:
        raise ValueError(f"{spread.size} group(s) span several strata; every group must lie in one stratum")
    return [np.flatnonzero(stratum_of_unit == k) for k in range(int(stratum_of_row.max()) + 1)]


@dataclass(frozen=True)
class OfficialProtocol:
    """The dataset's own split labels "train"/"val"/"test"; unlabelled rows are left out."""

    default_ratios: None = None
    fitted: bool = True
    tested: bool = True

    def make(self, spec: ProtocolSpec, n_rows: int, groups: np.ndarray | None,
             official: list[str | None] | None,
             strata: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        labels = _official_labels(official, n_rows)
        if labels is None:
            raise ValueError("protocol 'official' needs the dataset's official split, and it has none")
        parts = tuple(np.flatnonzero(labels == p) for p in _PARTS)
        if parts[0].size == 0 or parts[2].size == 0:
            raise ValueError("the official split has no train or no test rows")
        return [parts]


@dataclass(frozen=True)
class ZeroShotProtocol:
    """No fitting: one split whose test part is every row."""

    default_ratios: None = None
    fitted: bool = False
    tested: bool = True

    def make(self, spec: ProtocolSpec, n_rows: int, groups: np.ndarray | None,
             official: list[str | None] | None,
             strata: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        empty = np.empty(0, np.int64)
        return [(empty, empty, np.arange(n_rows))]


@dataclass(frozen=True)
class TrainAllProtocol:
    """One split whose train part is every row and whose test part is empty.

    For training only: a stage trained on it learns from the whole dataset, and what it
    exports is the feature a cross-dataset fit (train on A, test on B) uses on both sides.
    """

    default_ratios: None = None
    fitted: bool = True
    tested: bool = False

    def make(self, spec: ProtocolSpec, n_rows: int, groups: np.ndarray | None,
             official: list[str | None] | None,
             strata: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        empty = np.empty(0, np.int64)
        return [(np.arange(n_rows), empty, empty)]


PROTOCOLS: Registry = Registry("protocol")
PROTOCOLS.register("random-80-20", RandomProtocol((0.8, 0.0, 0.2)),
                   help="random train/test 80/20, repeated (onuoha2024)")
PROTOCOLS.register("random-70-10-20", RandomProtocol((0.7, 0.1, 0.2)),
                   help="random train/val/test 70/10/20, regulariser chosen on val (reiqa, slique)")
PROTOCOLS.register("random-70-10-20-by-image", RandomProtocol((0.7, 0.1, 0.2), by_image=True),
                   help="70/10/20 by image, ignoring reference images: contents shared between parts "
                        "(inflates synthetic-dataset results; for comparison with papers that did this)")
PROTOCOLS.register("official", OfficialProtocol(), help="the dataset's official train/val/test labels, one split")
PROTOCOLS.register("scenes-4-2", RandomProtocol((4 / 6, 0.0, 2 / 6), needs_groups=True),
                   help="CID2013: in every image set, 4 scene subsets train and 2 test, repeated (onuoha2024 4.1)")
PROTOCOLS.register("zero-shot", ZeroShotProtocol(), help="no fitting: a score feature on the whole dataset")
PROTOCOLS.register("train-all", TrainAllProtocol(),
                   help="training only: every row in train, no test (encoders for cross-dataset fits)")


def _official_labels(official: Sequence[Any] | None, n_rows: int) -> np.ndarray | None:
    """Labels as a str array ("" for unlabelled rows), or None when nothing is labelled."""
    if official is None:
        return None
    # Manifests from pandas may hold None or NaN for unlabelled rows.
    labels = np.array([v if isinstance(v, str) else "" for v in official], dtype=object)
    if labels.size != n_rows:
        raise ValueError(f"official split has {labels.size} labels for {n_rows} rows")
    unknown = sorted(set(labels.tolist()) - {"", *_PARTS})
    if unknown:
        raise ValueError(f"official split labels must be train/val/test, got {unknown}")
    return None if not np.any(labels != "") else labels.astype(str)


def _groups_array(groups: Sequence[Any] | np.ndarray | None, n_rows: int) -> np.ndarray | None:
    if groups is None:
        return None
    array = np.asarray([str(g) for g in groups])
    if array.size != n_rows:
        raise ValueError(f"groups has {array.size} labels for {n_rows} rows")
    return array


def splits_key(spec: ProtocolSpec, n_rows: int, *, groups: Sequence[Any] | None = None,
               official: Sequence[Any] | None = None, strata: Sequence[Any] | None = None) -> str:
    """Fingerprint of everything the splits depend on (look stored splits up by it)."""
    group_array = _groups_array(groups, n_rows)
    labels = _official_labels(official, n_rows)
    inputs = {
        "format": _FORMAT, "version": _VERSION, "protocol": spec.to_dict(), "n_rows": n_rows,
        "groups": None if group_array is None else fingerprint(group_array.tolist()),
        "official": None if labels is None else fingerprint(labels.tolist()),
    }
    strata_array = _groups_array(strata, n_rows)
    if strata_array is not None:  # only when given: keys of unstratified splits stay those already stored
        inputs["strata"] = fingerprint(strata_array.tolist())
    return fingerprint(inputs)


def make_splits(spec: ProtocolSpec, n_rows: int, *, groups: Sequence[Any] | None = None,
                official: Sequence[Any] | None = None, strata: Sequence[Any] | None = None) -> list[Split]:
    """The splits of ``spec`` over ``n_rows`` manifest rows.

    ``groups``: one reference id (or scene subset) per row (grouped random splits);
    ``official``: one label per row ("train"/"val"/"test", or None/NaN for unlabelled rows);
    ``strata``: one stratum per row, groups dealt within each (CID2013's image sets).
    """
    if not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
    if not isinstance(spec.n_splits, (int, np.integer)) or spec.n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {spec.n_splits!r}")
    protocol = PROTOCOLS.get(spec.name)
    group_array = _groups_array(groups, n_rows)
    key = splits_key(spec, n_rows, groups=groups, official=official, strata=strata)
    parts = protocol.make(spec, int(n_rows), group_array, None if official is None else list(official),
                          _groups_array(strata, n_rows))
    return [Split(train=tr, val=va, test=te, index=i, key=key) for i, (tr, va, te) in enumerate(parts)]


def splits_to_json(splits: Sequence[Split], meta: dict[str, Any] | None = None) -> str:
    """JSON text of a split set (all splits must share one key); ``meta`` describes it for listings."""
    keys = {s.key for s in splits}
    if len(keys) > 1:
        raise ValueError(f"splits from different sets cannot be stored together: {sorted(keys)}")
    return json.dumps({"format": _FORMAT, "version": _VERSION, "key": keys.pop() if keys else "",
                       **({"meta": meta} if meta else {}), "splits": [s.to_dict() for s in splits]})


def splits_from_json(text: str) -> list[Split]:
    """Splits written by ``splits_to_json``."""
    data = json.loads(text)
    if data.get("format") != _FORMAT or data.get("version") != _VERSION:
        raise ValueError(f"not an {_FORMAT} v{_VERSION} document")
    return [Split(train=s["train"], val=s["val"], test=s["test"], index=s["index"], key=data["key"])
            for s in data["splits"]]

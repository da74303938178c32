"""Evaluation beyond the split grid: cross-dataset and zero-shot.

Cross-dataset (slique, qualiclip): fit on every row of one dataset, test on every row of
another, each feature name resolved to sets made by the same extractor with the same settings.
Zero-shot (qualiclip, CLIP-IQA): a one-column score feature evaluated on the whole dataset,
nothing fitted. Both give rows with the grid's metric columns, so they sit in one table with
the other protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from iqa_store.fingerprint import fingerprint
from iqa_store.splits import Split

__all__ = ["CROSS_DATASET", "ScoreDeclaration", "cross_dataset_inputs", "cross_dataset_name", "evaluate",
           "match_feature_sets", "zero_shot"]

CROSS_DATASET = "cross-dataset"


# --- cross-dataset ---------------------------------------------------------------------------------


def match_feature_sets(train_sets: dict[str, Any], test_candidates: dict[str, Sequence[Any]],
                       test_dataset: str) -> dict[str, Any]:
    """For each name, the test dataset's set with the same extractor fingerprint as the training set.

    ``test_candidates``: name -> complete sets of the test dataset by the same extractor. A
    model fitted on CLIP features at one resolution means nothing on another's: settings
    must match exactly, and a name without a match is an error listing what the test has.
    """
    matched = {}
    for name, fs in train_sets.items():
        wanted = fs.attrs["extractor_fingerprint"]
        same = [c for c in test_candidates.get(name, []) if c.attrs["extractor_fingerprint"] == wanted]
        if not same:
            have = ", ".join(f"{c.name} {c.attrs['extractor_settings']}" for c in test_candidates.get(name, [])) or "none"
            raise ValueError(f"{test_dataset} has no {fs.extractor} feature set with the settings of {fs.name} "
                             f"({fs.attrs['extractor_settings']}); it has: {have}. Extract it with the same settings")
        matched[name] = same[-1]  # several equal-settings sets differ only in their manifest: take the newest
    return matched


def cross_dataset_inputs(train: tuple[Any, Any], test: tuple[Any, Any]) -> tuple[Any, np.ndarray, Split]:
    """One feature matrix, MOS vector and split: train on every row of one dataset, test on the other.

    ``train`` and ``test``: (FeatureMatrix, Manifest). The test MOS is mapped linearly from
    its dataset's published range onto the training range, so predictions and targets share
    a scale: correlations are unchanged, and RMSE is in training-MOS units.
    """
    from iqa_store.fit.cells import FeatureMatrix
    (train_matrix, train_manifest), (test_matrix, test_manifest) = train, test
    if train_matrix.ranges != test_matrix.ranges:
        raise ValueError(f"feature sets differ between {train_manifest.dataset} and {test_manifest.dataset}: "
                         f"{train_matrix.ranges} vs {test_matrix.ranges}")
    matrix = FeatureMatrix(np.vstack([train_matrix.values, test_matrix.values]), dict(train_matrix.ranges),
                           np.vstack([train_matrix.ok, test_matrix.ok]))
    (lo, hi), (test_lo, test_hi) = train_manifest.mos_range, test_manifest.mos_range
    mapped = lo + (test_manifest.mos - test_lo) * (hi - lo) / (test_hi - test_lo)
    n_train, n_test = len(train_manifest), len(test_manifest)
    key = fingerprint({"protocol": CROSS_DATASET, "train": [train_manifest.dataset, train_manifest.manifest_hash()],
                       "test": [test_manifest.dataset, test_manifest.manifest_hash()]})
    split = Split(train=np.arange(n_train), val=np.empty(0, np.int64), test=n_train + np.arange(n_test), key=key)
    return matrix, np.concatenate([train_manifest.mos, mapped]), split


def cross_dataset_name(train: str, test: str) -> str:
    """The ``dataset`` label of cross-dataset rows: where it was fitted and where tested."""
    return f"{train}->{test}"


# --- zero-shot ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreDeclaration:
    """What an extractor declares of a one-column score feature (its settings' ``score`` entry:
    ``{"columns": [name], "higher_is_better": [true | false | null], "range": [low, high]}``)."""

    higher_is_better: bool | None
    low: float
    high: float

    @classmethod
    def of_settings(cls, settings: Mapping[str, Any]) -> "ScoreDeclaration | None":
        """The declaration in an extractor's settings; None for features declaring none (or several columns)."""
        score = settings.get("score")
        if not isinstance(score, Mapping) or len(score.get("higher_is_better", ())) != 1:
            return None
        low, high = score.get("range", (-np.inf, np.inf))
        return cls(score["higher_is_better"][0], float(low), float(high))

    def oriented(self, name: str, values: np.ndarray) -> np.ndarray:
        """``values`` checked against the declared range, negated where a higher score means worse
        quality, so correlations with MOS are positive for a good score."""
        outside = values[(values < self.low) | (values > self.high)]
        if outside.size:
            raise ValueError(f"{name} declares scores in [{self.low}, {self.high}] but has {outside.size} outside "
                             f"(e.g. {outside[0]}): its stored set is not what its extractor declares")
        return -values if self.higher_is_better is False else values


def zero_shot(matrix: Any, combinations: Sequence[tuple[str, ...]], mos: np.ndarray, split: Split, *,
              dataset: str, declared: Mapping[str, ScoreDeclaration | None] | None = None) -> list[Any]:
    """Every one-column combination's values taken as predicted scores on the split's test rows.

    ``declared``: feature name -> its extractor's score declaration: values are checked against
    its range and a score whose higher means worse (CLIP-IQA's "Noisy photo." column) is negated.
    Each cell carries the grid's columns (``regressor`` "none", ``n_train`` 0, ``alpha`` NaN)
    so it aggregates and saves like any fit.
    """
    from iqa_store.fit.cells import Cell, CellContext, cell_result
    context = CellContext(dataset, "zero-shot")
    results = []
    for combination in combinations:
        columns = matrix.columns(combination)
        if columns.size != 1:
            raise ValueError(f"zero-shot evaluates a score: {'+'.join(combination)} has {columns.size} columns, "
                             "not 1 (a quality score feature such as a CLIP-IQA or QualiCLIP score)")
        test = split.test[matrix.usable(combination, mos)[split.test]]
        if test.size < 2:
            raise ValueError(f"{dataset} {'+'.join(combination)}: {test.size} usable rows; need at least 2")
        scores = matrix.values[test, columns[0]]
        declaration = (declared or {}).get(combination[0])
        if declaration is not None:
            scores = declaration.oriented(combination[0], scores)
        results.append(cell_result(Cell(tuple(combination), split, "none"), context,
                                   (np.empty(0, np.int64), 0, test), mos[test], scores, float("nan")))
    return results


def evaluate(matrix: Any, combinations: Sequence[tuple[str, ...]], mos: np.ndarray, splits: Sequence[Split],
             regressors: Sequence[str], *, dataset: str, protocol: str, log: Any = None,
             scores: Mapping[str, ScoreDeclaration | None] | None = None, **running: Any) -> Any:
    """``fit_grid`` for protocols that fit; a protocol that fits nothing (zero-shot) evaluates its score
    features as they are, oriented as their extractors declare (``scores``; ``running``: fit_grid's options)."""
    import pandas as pd

    from iqa_store.fit.cells import TABLE_COLUMNS
    from iqa_store.fit.grid import GridResult, fit_grid
    from iqa_store.splits import PROTOCOLS
    declared = PROTOCOLS.get(protocol)
    if not declared.tested:
        raise ValueError(f"protocol {protocol!r} has no test rows (it trains encoders); fit with another protocol")
    if declared.fitted:
        return fit_grid(matrix, combinations, mos, splits, regressors, dataset=dataset, protocol=protocol, log=log,
                        **running)
    results = zero_shot(matrix, combinations, mos, splits[0], dataset=dataset, declared=scores)
    if log is not None:  # the same run again finds its rows there: record each cell once
        done = log.finished()
        log.append([r for r in results if r.key not in done])
    return GridResult(pd.DataFrame([r.row for r in results], columns=list(TABLE_COLUMNS)),
                      [r.prediction for r in results])

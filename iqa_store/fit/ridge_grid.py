"""Ridge for many feature combinations of one split at once, sharing the linear algebra.

Each ridge cell (``RidgeRegressor``: training-statistics standardisation, alpha chosen on the
validation rows or by inner K-fold CV, intercept = mean MOS) solves

    (Z'Z + alpha I) b = Z'(y - mean y)

for standardised columns Z of its combination. Done cell by cell, every cell recomputes Z'Z.
Here, for the union of the feature sets a split's combinations use:

- *Moments once per set of rows*: one pass over the training rows gives the centred Gram
  matrix, column sums and X'y (``Moments``); the inner-CV fold of rows "training minus
  held-out part k" is a difference of two such sums (the held-out parts cost one more pass in
  all), re-centred at the fold's own mean. The variances on the Gram diagonal give the
  standardisation, so a combination's Z'Z is a block submatrix of the union's, scaled.
- *Cholesky factors shared along prefixes*: the Cholesky factor of a leading principal
  submatrix is the leading block of the full factor, so the combinations of a split form a
  trie (sets ordered largest first) and each trie node extends its parent's factor by one
  block row (a triangular solve and a Cholesky of the new block) instead of factoring from
  scratch. Every alpha walks the trie once. For all subsets of six KonIQ-sized feature sets
  this is ~4x fewer flops than a Cholesky per combination, and ~5x fewer than one
  eigendecomposition per combination (which on these sizes costs about 13 Choleskys).
- *Dual form where it is cheaper*: a combination with more columns than training rows is
  solved through the n x n kernel (``ridge_path``), as the single-cell regressor does.

The results equal ``RidgeRegressor`` fitted per cell to round-off (the tests hold them to
1e-6 relative, and to scikit-learn's ``Ridge``), because the same rows, statistics, folds and
selection rule are used; only the order of floating-point operations differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from scipy import linalg

from iqa_store.fit.cells import Cell, CellContext, CellResult, FeatureMatrix, cell_result, usable_parts
from iqa_store.fit.combinations import combination_name
from iqa_store.fit.regressors import (RidgeRegressor, cv_folds, gram_ridge_path, ridge_path, scale_from_moments,
                                      score_alphas)
from iqa_store.splits import Split

__all__ = ["fit_ridge_cells"]

# Combinations of at most this many columns are solved by eigendecomposition, not the trie.
_SMALL = 256
# Rows converted to float64 at a time: ~40 MB for 2,500 columns, big enough for efficient GEMM.
_ROW_BLOCK = 2048

Combination = tuple[str, ...]
Coefficients = dict[str, np.ndarray]  # set name -> (n_alphas, set dims), on standardised columns


@dataclass(frozen=True)
class Layout:
    """The feature sets one group of combinations uses, and where they sit: ``columns`` are
    columns of the ``FeatureMatrix``; ``ranges`` are positions within those columns."""

    columns: np.ndarray
    ranges: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, matrix: FeatureMatrix, combinations: Sequence[Combination]) -> "Layout":
        used = {name for combo in combinations for name in combo}
        names = [name for name in matrix.ranges if name in used]
        stops = np.cumsum([0, *(np.subtract(*matrix.ranges[n][::-1]) for n in names)])
        return cls(matrix.columns(names), {n: (int(stops[i]), int(stops[i + 1])) for i, n in enumerate(names)})

    def size(self, combination: Combination) -> int:
        return sum(self.ranges[n][1] - self.ranges[n][0] for n in combination)

    def rows(self, matrix: FeatureMatrix, rows: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """The layout's columns of ``rows``, as float64 blocks of rows."""
        for start in range(0, rows.size, _ROW_BLOCK):
            part = slice(start, start + _ROW_BLOCK)
            yield part, matrix.values[np.ix_(rows[part], self.columns)].astype(np.float64)


@dataclass(frozen=True)
class Moments:
    """Sums over some rows of features centred at a fixed ``centre`` and MOS at ``y_centre``."""

    n: int
    gram: np.ndarray  # sum (x - centre)(x - centre)'
    colsum: np.ndarray  # sum (x - centre)
    xty: np.ndarray  # sum (x - centre)(y - y_centre)
    ysum: float  # sum (y - y_centre)

    @classmethod
    def of(cls, matrix: FeatureMatrix, layout: Layout, rows: np.ndarray, y: np.ndarray, centre: np.ndarray,
           y_centre: float) -> "Moments":
        d = layout.columns.size
        gram, colsum, xty = np.zeros((d, d)), np.zeros(d), np.zeros(d)
        for part, block in layout.rows(matrix, rows):
            block -= centre
            gram += block.T @ block
            colsum += block.sum(axis=0)
            xty += block.T @ (y[rows[part]] - y_centre)
        return cls(rows.size, gram, colsum, xty, float(np.sum(y[rows] - y_centre)))

    def __sub__(self, other: "Moments") -> "Moments":
        return Moments(self.n - other.n, self.gram - other.gram, self.colsum - other.colsum,
                       self.xty - other.xty, self.ysum - other.ysum)


@dataclass(frozen=True)
class Problem:
    """A standardised ridge problem over a layout: ``gram`` = Z'Z, ``zty`` = Z'(y - mean y),
    with the column ``mean`` and ``scale`` of its training ``rows``."""

    gram: np.ndarray
    zty: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    y_mean: float
    rows: np.ndarray

    @classmethod
    def of(cls, moments: Moments, centre: np.ndarray, y_centre: float, rows: np.ndarray) -> "Problem":
        """Re-centre the sums at the rows' own means (small shifts: the sums are already centred
        near them, so nothing cancels badly) and scale to unit variance."""
        n = moments.n
        shift = moments.colsum / n
        mean = centre + shift
        gram = moments.gram - n * np.outer(shift, shift)
        scale = scale_from_moments(mean, np.diag(gram) / n, n)
        gram /= scale[:, None]
        gram /= scale[None, :]
        zty = (moments.xty - shift * moments.ysum) / scale
        return cls(gram, zty, mean, scale, y_centre + moments.ysum / n, rows)

    def project(self, matrix: FeatureMatrix, layout: Layout, rows: np.ndarray) -> np.ndarray:
        """Rows standardised with this problem's statistics, all layout columns."""
        return (matrix.values[np.ix_(rows, layout.columns)] - self.mean) / self.scale


def _fit_matrix(matrix: FeatureMatrix, layout: Layout, rows: np.ndarray, y: np.ndarray) -> tuple[Moments, np.ndarray,
                                                                                                 float]:
    """Moments of ``rows`` centred at their own means, with those means."""
    total = np.zeros(layout.columns.size)
    for _, block in layout.rows(matrix, rows):
        total += block.sum(axis=0)
    centre, y_centre = total / rows.size, float(np.mean(y[rows]))
    return Moments.of(matrix, layout, rows, y, centre, y_centre), centre, y_centre


def solve(problem: Problem, layout: Layout, requests: dict[Combination, np.ndarray], matrix: FeatureMatrix,
          y: np.ndarray) -> dict[Combination, Coefficients]:
    """Ridge coefficients of each requested combination for each of its alphas.

    Primal (n >= d, as in ``ridge_path``) combinations share Cholesky factors along the trie;
    wider ones are solved in dual form on their explicit standardised rows; small ones by one
    eigendecomposition of their Gram block, which then costs less than the ~40 us Python
    overhead of each triangular solve and Cholesky call of a trie walk per alpha.
    """
    n = problem.rows.size
    out: dict[Combination, Coefficients] = {}
    for combo, alphas in requests.items():
        d, columns = layout.size(combo), _local_columns(layout, combo)
        if d > n:
            Z = problem.project(matrix, layout, problem.rows)[:, columns]
            out[combo] = _split_blocks(ridge_path(Z, y[problem.rows] - problem.y_mean, alphas), layout, combo)
        elif d <= _SMALL:
            gram = problem.gram[np.ix_(columns, columns)]
            out[combo] = _split_blocks(gram_ridge_path(gram, problem.zty[columns], alphas), layout, combo)
    primal = {c: a for c, a in requests.items() if c not in out}
    for alpha in sorted({float(a) for alphas in primal.values() for a in alphas}):
        wanted = [c for c, alphas in primal.items() if alpha in alphas]
        for combo, coef in _cholesky_trie(problem, layout, wanted, alpha).items():
            out.setdefault(combo, {})
            for name, block in coef.items():
                out[combo].setdefault(name, []).append((alpha, block))
    for combo in primal:
        order = {float(a): i for i, a in enumerate(primal[combo])}
        out[combo] = {name: np.stack([b for _, b in sorted(blocks, key=lambda ab: order[ab[0]])])
                      for name, blocks in out[combo].items()}
    return out


def _local_columns(layout: Layout, combo: Combination) -> np.ndarray:
    return np.concatenate([np.arange(*layout.ranges[name]) for name in combo])


def _split_blocks(coef: np.ndarray, layout: Layout, combo: Combination) -> Coefficients:
    stops = np.cumsum([0, *(layout.size((name,)) for name in combo)])
    return {name: coef[:, stops[i]:stops[i + 1]] for i, name in enumerate(combo)}


def _cholesky_trie(problem: Problem, layout: Layout, combos: list[Combination],
                   alpha: float) -> dict[Combination, dict[str, np.ndarray]]:
    """Solve (Z'Z + alpha I) b = Z'y for every combination, extending Cholesky factors along
    prefixes. Sets are ordered largest first: appending a small block to a large factor costs
    a triangular solve, while appending the large block last would redo most of the work."""
    rank = {name: (-layout.size((name,)), i) for i, name in enumerate(layout.ranges)}
    paths = {tuple(sorted(combo, key=rank.__getitem__)): combo for combo in combos}
    children: dict[Combination, list[str]] = {}
    for path in paths:
        for depth in range(len(path)):
            siblings = children.setdefault(path[:depth], [])
            if path[depth] not in siblings:
                siblings.append(path[depth])
    size = max(layout.size(p) for p in paths)
    factor, forward = np.empty((size, size)), np.empty(size)
    out: dict[Combination, dict[str, np.ndarray]] = {}

    def visit(prefix: Combination, spans: list[tuple[str, int, int]]) -> None:
        offset = sum(n for _, _, n in spans)
        for name in children.get(prefix, []):
            _extend(problem, layout, factor, forward, spans, name, alpha)
            extended = [*spans, (name, offset, layout.size((name,)))]
            path = (*prefix, name)
            if path in paths:
                out[paths[path]] = _back_substitute(factor, forward, extended)
            visit(path, extended)

    visit((), [])
    return out


def _extend(problem: Problem, layout: Layout, factor: np.ndarray, forward: np.ndarray,
            spans: list[tuple[str, int, int]], name: str, alpha: float) -> None:
    """Append set ``name`` to the factor of the sets in ``spans`` (and to the forward solve)."""
    s0, s1 = layout.ranges[name]
    p, b = sum(n for _, _, n in spans), s1 - s0
    row = factor[p:p + b, :p]  # the new block row, filled one column block at a time
    for other, o, n in spans:
        a0, a1 = layout.ranges[other]
        rhs = problem.gram[s0:s1, a0:a1] - row[:, :o] @ factor[o:o + n, :o].T
        row[:, o:o + n] = linalg.solve_triangular(factor[o:o + n, o:o + n], rhs.T, lower=True,
                                                  check_finite=False).T
    schur = problem.gram[s0:s1, s0:s1] - row @ row.T
    schur.flat[::b + 1] += alpha
    factor[p:p + b, p:p + b] = linalg.cholesky(schur, lower=True, overwrite_a=True, check_finite=False)
    forward[p:p + b] = linalg.solve_triangular(factor[p:p + b, p:p + b], problem.zty[s0:s1] - row @ forward[:p],
                                               lower=True, check_finite=False)


def _back_substitute(factor: np.ndarray, forward: np.ndarray,
                     spans: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    """Solve L' b = z block by block, last block first; returns b per set."""
    end = sum(n for _, _, n in spans)
    coef = np.empty(end)
    for _, o, n in reversed(spans):
        rhs = forward[o:o + n] - factor[o + n:end, o:o + n].T @ coef[o + n:end]
        coef[o:o + n] = linalg.solve_triangular(factor[o:o + n, o:o + n], rhs, lower=True, trans="T",
                                                check_finite=False)
    return {name: coef[o:o + n] for name, o, n in spans}


def _predict(projected: np.ndarray, layout: Layout, coef: Coefficients, y_mean: float) -> np.ndarray:
    """Predictions (rows, alphas) from standardised rows, summed set by set (no column copies)."""
    return sum(projected[:, slice(*layout.ranges[name])] @ block.T for name, block in coef.items()) + y_mean


def fit_ridge_cells(matrix: FeatureMatrix, mos: np.ndarray, split: Split, combinations: Sequence[Combination],
                    template: RidgeRegressor, regressor: str, context: CellContext) -> list[CellResult]:
    """The cells (combination, ``split``, ``regressor``) of a ``RidgeRegressor`` template, fitted
    together; equal to ``fit_cell`` on each. Combinations with the same usable rows share work."""
    alphas = template.validated_params()
    groups: dict[bytes, list[Combination]] = {}
    for combo in combinations:
        groups.setdefault(np.packbits(matrix.usable(combo, mos)).tobytes(), []).append(tuple(combo))
    results = []
    for combos in groups.values():
        usable = matrix.usable(combos[0], mos)
        train, val, test = usable_parts(split, usable, f"{context.dataset} {combination_name(combos[0])}")
        layout = Layout.of(matrix, combos)
        best, problem, coefs = _select(matrix, layout, mos, (train, val), combos, template, alphas)
        projected = problem.project(matrix, layout, test)
        for combo in combos:
            y_pred = _predict(projected, layout, coefs[combo], problem.y_mean)[:, 0]
            results.append(cell_result(Cell(combo, split, regressor), context, (train, val.size, test), mos[test],
                                       y_pred, alphas[best[combo]]))
    return results


def _select(matrix: FeatureMatrix, layout: Layout, y: np.ndarray, parts: tuple[np.ndarray, np.ndarray],
            combos: list[Combination], template: RidgeRegressor,
            alphas: np.ndarray) -> tuple[dict[Combination, int], Problem, dict[Combination, Coefficients]]:
    """The chosen alpha index per combination, the training problem, and each combination's
    coefficients at its chosen alpha (as a one-row stack)."""
    train, val = parts
    moments, centre, y_centre = _fit_matrix(matrix, layout, train, y)
    if len(alphas) == 1:
        best = dict.fromkeys(combos, 0)
    elif val.size:
        problem = Problem.of(moments, centre, y_centre, train)
        coefs = solve(problem, layout, dict.fromkeys(combos, alphas), matrix, y)
        scores = _scores(problem, layout, coefs, matrix, y, val, template.select_by)
        best = {combo: int(np.argmax(scores[combo])) for combo in combos}
        return best, problem, {c: {n: b[best[c]:best[c] + 1] for n, b in coefs[c].items()} for c in combos}
    else:
        best = _cv_choice(matrix, layout, y, train, (moments, centre, y_centre), combos, template, alphas)
    problem = Problem.of(moments, centre, y_centre, train)
    requests = {combo: alphas[best[combo]:best[combo] + 1] for combo in combos}
    return best, problem, solve(problem, layout, requests, matrix, y)


def _scores(problem: Problem, layout: Layout, coefs: dict[Combination, Coefficients], matrix: FeatureMatrix,
            y: np.ndarray, rows: np.ndarray, select_by: str) -> dict[Combination, np.ndarray]:
    projected = problem.project(matrix, layout, rows)
    return {combo: score_alphas(y[rows], _predict(projected, layout, coef, problem.y_mean), select_by)
            for combo, coef in coefs.items()}


def _cv_choice(matrix: FeatureMatrix, layout: Layout, y: np.ndarray, train: np.ndarray,
               fitted: tuple[Moments, np.ndarray, float], combos: list[Combination], template: RidgeRegressor,
               alphas: np.ndarray) -> dict[Combination, int]:
    """Alpha by mean held-out score over the inner folds, each fold standardised with its own
    statistics, exactly as ``RidgeRegressor._cv_scores``."""
    moments, centre, y_centre = fitted
    totals = {combo: np.zeros(alphas.size) for combo in combos}
    folds = cv_folds(train.size, int(template.cv), template.random_state)
    for inside, held_out in folds:
        held = Moments.of(matrix, layout, train[held_out], y, centre, y_centre)
        problem = Problem.of(moments - held, centre, y_centre, train[inside])
        coefs = solve(problem, layout, dict.fromkeys(combos, alphas), matrix, y)
        for combo, scores in _scores(problem, layout, coefs, matrix, y, train[held_out], template.select_by).items():
            totals[combo] += scores
    return {combo: int(np.argmax(total / len(folds))) for combo, total in totals.items()}

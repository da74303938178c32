"""Agreement between predicted scores and MOS: SRCC, PLCC (raw and logistic-mapped), KRCC, RMSE.

The correlations are scipy's; ``plcc_logistic`` follows the VQEG practice of mapping the
predictions through a fitted 4-parameter logistic before the Pearson correlation, so that a
monotonic but non-linear predictor is not penalised for the shape of its scale.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats

from iqa_store.fit.schema import METRICS

__all__ = [
    "METRIC_NAMES",
    "LogisticFitWarning",
    "compute_metrics",
    "fit_logistic",
    "krcc",
    "logistic4",
    "plcc",
    "plcc_logistic",
    "rmse",
    "srcc",
]

METRIC_NAMES = METRICS  # the results schema's names (iqa_store.fit.schema)


class LogisticFitWarning(RuntimeWarning):
    """The logistic mapping could not be fitted; raw PLCC was reported instead."""


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64).ravel()
    b = np.asarray(y_pred, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"y_true has {a.size} values but y_pred has {b.size}")
    return a, b


def _degenerate(a: np.ndarray, b: np.ndarray) -> bool:
    # A correlation is undefined for fewer than 2 points or a constant side; we return NaN
    # ourselves rather than let scipy warn once per grid cell.
    return a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0


def srcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman rank-order correlation (NaN when undefined)."""
    a, b = _pair(y_true, y_pred)
    return float("nan") if _degenerate(a, b) else float(stats.spearmanr(a, b).statistic)


def plcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson linear correlation of the raw predictions (NaN when undefined)."""
    a, b = _pair(y_true, y_pred)
    return float("nan") if _degenerate(a, b) else float(stats.pearsonr(a, b).statistic)


def krcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kendall rank correlation, tau-b (NaN when undefined)."""
    a, b = _pair(y_true, y_pred)
    return float("nan") if _degenerate(a, b) else float(stats.kendalltau(a, b).statistic)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error of the raw predictions, on the MOS scale."""
    a, b = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = -(np.asarray(x, dtype=np.float64) - b3) / np.abs(b4)
    # exp overflows to inf for far-out points, which correctly maps them to b2; silence it.
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic(y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Fit ``logistic4`` from predictions to MOS; returns (b1, b2, b3, b4) with b4 > 0.

    Raises ``RuntimeError`` when the fit does not converge. The predictions are standardised
    for the fit (curve_fit is sensitive to the scale of x) and the parameters mapped back.
    """
    x, y = np.asarray(y_pred, np.float64).ravel(), np.asarray(y_true, np.float64).ravel()
    if x.size < 5:  # four parameters need at least five points to say anything
        raise RuntimeError(f"logistic fit needs at least 5 points, got {x.size}")
    centre, spread = x.mean(), x.std()
    if spread == 0 or np.ptp(y) == 0:
        raise RuntimeError("logistic fit of constant data")
    z = (x - centre) / spread
    # Start from a gentle increasing sigmoid spanning the MOS range; its slope is about one
    # third of the prediction spread, so the start is near-linear over the data.
    p0 = [y.max(), y.min(), 0.0, 1.0 / 3.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        params, _ = optimize.curve_fit(logistic4, z, y, p0=p0, maxfev=20000)
    if not np.all(np.isfinite(params)):
        raise RuntimeError("logistic fit gave non-finite parameters")
    b1, b2, b3, b4 = params
    return np.array([b1, b2, centre + spread * b3, spread * abs(b4)])


def plcc_logistic(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """PLCC after mapping the predictions to MOS with the fitted 4-parameter logistic.

    Falls back to raw PLCC, with a ``LogisticFitWarning``, when the fit fails or maps every
    prediction to one value.
    """
    a, b = _pair(y_true, y_pred)
    if _degenerate(a, b):
        return float("nan")
    try:
        mapped = logistic4(b, *fit_logistic(b, a))
    except (RuntimeError, ValueError) as error:
        warnings.warn(f"logistic fit failed ({error}); using raw PLCC", LogisticFitWarning, stacklevel=2)
        return plcc(a, b)
    if np.ptp(mapped) == 0 or not np.all(np.isfinite(mapped)):
        warnings.warn("logistic fit is flat; using raw PLCC", LogisticFitWarning, stacklevel=2)
        return plcc(a, b)
    return plcc(a, mapped)


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All metrics, keyed srcc, plcc, plcc_logistic, krcc, rmse."""
    a, b = _pair(y_true, y_pred)
    return {
        "srcc": srcc(a, b),
        "plcc": plcc(a, b),
        "plcc_logistic": plcc_logistic(a, b),
        "krcc": krcc(a, b),
        "rmse": rmse(a, b),
    }

import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from iqa_store.fit.metrics import (LogisticFitWarning, compute_metrics, fit_logistic, krcc, logistic4, plcc,
                                   plcc_logistic, rmse, srcc)


@pytest.fixture
def scores():
    rng = np.random.default_rng(1)
    y = rng.uniform(1, 5, 300)
    pred = y + rng.normal(0, 0.7, 300)
    return y, np.round(pred, 1)  # rounding makes ties, which the rank metrics must handle like scipy


def test_correlations_equal_scipy(scores):
    y, p = scores
    assert srcc(y, p) == pytest.approx(stats.spearmanr(y, p).statistic, abs=1e-12)
    assert plcc(y, p) == pytest.approx(stats.pearsonr(y, p).statistic, abs=1e-12)
    assert krcc(y, p) == pytest.approx(stats.kendalltau(y, p).statistic, abs=1e-12)
    assert rmse(y, p) == pytest.approx(np.sqrt(np.mean((y - p) ** 2)), abs=1e-12)


def test_compute_metrics_keys_and_values(scores):
    y, p = scores
    result = compute_metrics(y, p)
    assert list(result) == ["srcc", "plcc", "plcc_logistic", "krcc", "rmse"]
    assert result["srcc"] == srcc(y, p) and result["rmse"] == rmse(y, p)
    assert all(isinstance(v, float) for v in result.values())


def test_logistic_fit_recovers_parameters():
    rng = np.random.default_rng(2)
    truth = np.array([80.0, 10.0, 3.0, 1.5])  # b1, b2, b3, b4 on a prediction scale unlike the MOS scale
    x = rng.uniform(-4, 10, 500)
    y = logistic4(x, *truth) + rng.normal(0, 0.5, x.size)
    found = fit_logistic(x, y)
    np.testing.assert_allclose(found, truth, rtol=0.03)


def test_plcc_logistic_beats_raw_plcc_on_sigmoid_relation():
    rng = np.random.default_rng(3)
    x = rng.uniform(-6, 6, 400)
    y = logistic4(x, 5.0, 1.0, 0.0, 0.5) + rng.normal(0, 0.05, x.size)
    raw, mapped = plcc(y, x), plcc_logistic(y, x)
    assert mapped > raw + 0.05
    # Independent reference: fit the logistic directly with curve_fit on the raw scale.
    params, _ = optimize.curve_fit(logistic4, x, y, p0=[y.max(), y.min(), x.mean(), 1.0], maxfev=20000)
    assert mapped == pytest.approx(stats.pearsonr(y, logistic4(x, *params)).statistic, abs=1e-6)


def test_plcc_logistic_falls_back_with_warning():
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.1, 1.9, 3.2, 3.9])  # too few points for 4 parameters
    with pytest.warns(LogisticFitWarning):
        value = plcc_logistic(y, p)
    assert value == pytest.approx(stats.pearsonr(y, p).statistic)


def test_undefined_correlations_are_nan_without_warnings():
    y = np.arange(10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_metrics(y, np.full(10, 3.0))
    assert np.isnan(result["srcc"]) and np.isnan(result["plcc"]) and np.isnan(result["plcc_logistic"])
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((y - 3.0) ** 2)))


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        srcc([1, 2, 3], [1, 2])

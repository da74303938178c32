from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from iqa_store.fit.grid import TABLE_COLUMNS, fit_grid, list_cells, usable_rows
from iqa_store.fit.regressors import RidgeRegressor
from iqa_store.fit.splits import ProtocolSpec, make_splits

N = 200


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, 3)) * [1.0, 10.0, 0.1]
    b = rng.normal(size=(N, 5))
    mos = 3 + a[:, 0] + 0.1 * a[:, 1] + b[:, :2].sum(1) + rng.normal(0, 0.3, N)
    return {"a": a, "b": b}, mos


def reference_metrics(X, mos, train, test, estimator):
    prediction = make_pipeline(StandardScaler(), estimator).fit(X[train], mos[train]).predict(X[test])
    return stats.spearmanr(mos[test], prediction).statistic, stats.pearsonr(mos[test], prediction).statistic


def test_table_shape_and_values_match_independent_fits(data):
    features, mos = data
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=3), N)
    result = fit_grid(features, [("a",), ("b",), ("a", "b")], mos, splits, ["ridge", "linear"],
                      dataset="toy", protocol="random-80-20", progress=False)
    table = result.table
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == 3 * 3 * 2 and len(result.predictions) == len(table)
    assert table["combination"].unique().tolist() == ["a", "b", "a+b"]
    assert (table["n_train"] == 160).all() and (table["n_test"] == 40).all() and (table["n_val"] == 0).all()
    assert table.loc[table.regressor == "linear", "alpha"].isna().all()
    assert table.loc[table.regressor == "ridge", "alpha"].notna().all()

    X = np.hstack([features["a"], features["b"]])
    for _, row in table[table.combination == "a+b"].iterrows():
        split = splits[row["split"]]
        estimator = Ridge(alpha=row["alpha"]) if row["regressor"] == "ridge" else LinearRegression()
        expected_srcc, expected_plcc = reference_metrics(X, mos, split.train, split.test, estimator)
        assert row["srcc"] == pytest.approx(expected_srcc, abs=1e-10)
        assert row["plcc"] == pytest.approx(expected_plcc, abs=1e-10)


def test_invalid_rows_are_dropped_per_combination(data):
    features, mos = data
    features = {"a": features["a"].copy(), "b": features["b"]}
    features["a"][5, 1] = np.nan
    valid = {"b": np.ones(N, bool)}
    valid["b"][[10, 11, 12]] = False
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=2), N)
    result = fit_grid(features, ["a", "b", "a+b"], mos, splits, ["linear"], dataset="toy",
                      protocol="random-80-20", valid=valid, progress=False)
    dropped = {"a": {5}, "b": {10, 11, 12}, "a+b": {5, 10, 11, 12}}
    for prediction, (_, row) in zip(result.predictions, result.table.iterrows()):
        split = splits[row["split"]]
        bad = dropped[row["combination"]]
        assert set(prediction.test_index.tolist()) == set(split.test.tolist()) - bad
        assert row["n_train"] == len(set(split.train.tolist()) - bad)
        np.testing.assert_array_equal(prediction.y_true, mos[prediction.test_index])
    np.testing.assert_array_equal(np.flatnonzero(~usable_rows(features, ("a", "b"), mos, valid)), [5, 10, 11, 12])


def test_validation_part_is_passed_to_regressors_that_take_it(data):
    features, mos = data
    splits = make_splits(ProtocolSpec("random-70-10-20", n_splits=2), N)
    templates = {"ridge": RidgeRegressor(), "sklearn-ridge": Ridge(alpha=1.0)}
    result = fit_grid(features, ["a+b"], mos, splits, templates, dataset="toy", protocol="random-70-10-20",
                      progress=False)
    table = result.table.set_index(["regressor", "split"])
    assert (table.loc["ridge", "n_val"] == 20).all() and (table.loc["sklearn-ridge", "n_val"] == 0).all()
    # The ridge cell chose alpha on the validation rows, as a direct fit does.
    X = np.hstack([features["a"], features["b"]])
    split = splits[1]
    direct = RidgeRegressor().fit(X[split.train], mos[split.train], X[split.val], mos[split.val])
    assert table.loc[("ridge", 1), "alpha"] == direct.alpha_
    # Templates are cloned, never fitted themselves.
    assert not hasattr(templates["ridge"], "coef_") and not hasattr(templates["sklearn-ridge"], "coef_")


def test_executor_gives_the_same_table(data, capsys):
    features, mos = data
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=3), N)
    args = (features, ["a", "a+b"], mos, splits, ["ridge"])
    serial = fit_grid(*args, dataset="toy", protocol="p", progress=False)
    assert capsys.readouterr().err == ""  # progress=False writes nothing
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = fit_grid(*args, dataset="toy", protocol="p", progress=True, executor=pool)
    assert "fit toy" in capsys.readouterr().err  # the progress bar goes to stderr
    pd.testing.assert_frame_equal(serial.table, parallel.table)
    with ProcessPoolExecutor(max_workers=2) as pool:  # cells and templates must pickle
        processes = fit_grid(*args, dataset="toy", protocol="p", progress=False, executor=pool)
    pd.testing.assert_frame_equal(serial.table, processes.table)
    for a, b in zip(serial.predictions, processes.predictions):
        np.testing.assert_array_equal(a.y_pred, b.y_pred)


def test_keep_predictions_false(data):
    features, mos = data
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=1), N)
    result = fit_grid(features, ["a"], mos, splits, ["linear"], dataset="toy", protocol="p",
                      progress=False, keep_predictions=False)
    assert result.predictions == [] and len(result.table) == 1


def test_errors(data):
    features, mos = data
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=1), N)
    with pytest.raises(ValueError, match="not loaded"):
        fit_grid(features, ["a+c"], mos, splits, ["linear"], dataset="toy", protocol="p", progress=False)
    with pytest.raises(KeyError, match="unknown regressor"):
        fit_grid(features, ["a"], mos, splits, ["svr"], dataset="toy", protocol="p", progress=False)
    with pytest.raises(ValueError, match="rows"):
        fit_grid(features, ["a"], mos[:-1], splits, ["linear"], dataset="toy", protocol="p", progress=False)
    with pytest.raises(ValueError, match="usable"):
        fit_grid(features, ["a"], mos, splits, ["linear"], dataset="toy", protocol="p", progress=False,
                 valid={"a": np.zeros(N, bool)})


def test_list_cells_order():
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=2), 10)
    cells = list_cells([("a",), ("b",)], splits, ["ridge", "mlp"])
    assert [(c.combination, c.split.index, c.regressor) for c in cells][:3] == [
        (("a",), 0, "ridge"), (("a",), 0, "mlp"), (("a",), 1, "ridge")]
    assert len(cells) == 8

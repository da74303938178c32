from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from iqa_store.fit.cells import Cell, FeatureMatrix
from iqa_store.fit.grid import TABLE_COLUMNS, fit_grid, list_cells
from iqa_store.fit.regressors import RidgeRegressor
from iqa_store.fit.results import RunLog
from iqa_store.splits import ProtocolSpec, make_splits

N = 200


@pytest.fixture
def one_blas_thread():
    """Small eigh/Cholesky calls on two busy cores run ~15x slower with two OpenBLAS threads."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield


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
    matrix = FeatureMatrix.from_features(features, ["a", "b"], valid)
    np.testing.assert_array_equal(np.flatnonzero(~matrix.usable(("a", "b"), mos)), [5, 10, 11, 12])


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


class LosingPool(ThreadPoolExecutor):
    """Cancels every task that uses one of its first ``losses`` shares, as Dask does with the
    tasks whose scattered data died with its workers."""

    def __init__(self, losses: int) -> None:
        super().__init__(max_workers=2)
        self.losses = losses
        self.shares: list[object] = []

    def share(self, value):
        self.shares.append(box := [value])
        return box

    def submit(self, fn, task, box):
        if len(self.shares) <= self.losses:
            future = Future()
            future.cancel()
            future.set_running_or_notify_cancel()  # as Dask's executor does, so waiters wake up
            return future
        return super().submit(fn, task, box[0])


def test_tasks_cancelled_with_their_shared_data_run_again(data):
    features, mos = data
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=3), N)
    args = (features, ["a", "a+b"], mos, splits, ["ridge"])
    serial = fit_grid(*args, dataset="toy", protocol="p", progress=False)
    with LosingPool(losses=2) as pool:
        again = fit_grid(*args, dataset="toy", protocol="p", progress=False, executor=pool)
    assert len(pool.shares) == 3
    pd.testing.assert_frame_equal(serial.table, again.table)
    with LosingPool(losses=3) as pool, pytest.raises(RuntimeError, match=r"cancelled \d+ grid task\(s\) 3 times"):
        fit_grid(*args, dataset="toy", protocol="p", progress=False, executor=pool)


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


def wide_data(n=160, seed=1):
    """Sets on different scales and offsets; "w" is wider than the inner-CV folds (dual form),
    "c" holds a constant column, and "b" has a NaN row (its combinations use fewer rows)."""
    rng = np.random.default_rng(seed)
    dims = {"a": 6, "b": 9, "c": 3, "w": 150}
    features = {k: rng.normal(size=(n, d)) * rng.uniform(0.1, 40, d) + rng.uniform(-60, 60, d) for k, d in dims.items()}
    features["c"][:, 1] = 0.1
    features["b"][7, 2] = np.nan
    z = {k: (v - np.nanmean(v, 0)) / (np.nanstd(v, 0) + 1e-12) for k, v in features.items()}
    mos = 3 + z["a"][:, 0] + 0.5 * np.nan_to_num(z["b"][:, 1]) + 0.3 * z["w"][:, :5].sum(1) + rng.normal(0, 1.5, n)
    return features, mos


@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("protocol", ["random-80-20", "random-70-10-20"])  # inner CV, validation rows
def test_shared_ridge_equals_cell_by_cell_fits_and_sklearn(protocol):
    from iqa_store.fit.cells import CellContext
    from iqa_store.fit.combinations import parse_combinations
    from iqa_store.fit.grid import fit_cell

    features, mos = wide_data()
    combos = parse_combinations(all_combos=["a", "b", "c", "w"])
    splits = make_splits(ProtocolSpec(protocol, n_splits=2, seed=3), mos.size)
    templates = {"ridge": RidgeRegressor(), "rmse-cv3": RidgeRegressor(select_by="rmse", cv=3),
                 "one-alpha": RidgeRegressor(alphas=[10.0])}
    grid = fit_grid(features, combos, mos, splits, templates, dataset="toy", protocol=protocol, progress=False)
    matrix = FeatureMatrix.from_features(features, ["a", "b", "c", "w"])
    assert len(grid.table) == len(combos) * 2 * 3
    assert grid.table.alpha.nunique() > 2  # the choice matters in this data
    for prediction, row in zip(grid.predictions, grid.table.to_dict("records")):
        combo, split = tuple(row["combination"].split("+")), splits[row["split"]]
        cell = fit_cell(Cell(combo, split, row["regressor"]), matrix.values, mos, matrix.usable(combo, mos),
                        templates[row["regressor"]], CellContext("toy", protocol), columns=matrix.columns(combo))
        assert cell.row["alpha"] == row["alpha"] and cell.row["n_val"] == row["n_val"]
        np.testing.assert_array_equal(cell.prediction.test_index, prediction.test_index)
        np.testing.assert_allclose(prediction.y_pred, cell.prediction.y_pred, rtol=1e-6)
        # Independent reference: scikit-learn at the chosen alpha, standardised on the same rows.
        X = matrix.values[:, matrix.columns(combo)]
        train = split.train[matrix.usable(combo, mos)[split.train]]
        expected = make_pipeline(StandardScaler(), Ridge(alpha=row["alpha"])).fit(X[train], mos[train])
        np.testing.assert_allclose(prediction.y_pred, expected.predict(X[prediction.test_index]), rtol=1e-6)


def test_tasks_cover_every_cell_once_and_keep_splits_whole_in_process(data):
    from iqa_store.fit.grid import plan_tasks

    features, _ = data
    matrix = FeatureMatrix.from_features(features, ["a", "b"])
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=6), N)
    cells = list_cells([("a",), ("b",), ("a", "b")], splits, ["ridge", "linear"])
    for parallelism in (None, 1, 64):
        tasks = plan_tasks(cells, matrix, parallelism)
        flat = [cell for task in tasks for cell in task]
        assert sorted(map(id, flat)) == sorted(map(id, cells))
    # Tiny cells: whole splits are joined into tasks of ~100 ms, never cut.
    tasks = plan_tasks(cells, matrix, None)
    assert len(tasks) < len(splits)
    assert all(len(task) % 6 == 0 for task in tasks)  # 3 combinations x 2 regressors per split


def test_big_splits_are_cut_only_when_workers_would_idle():
    from iqa_store.fit.grid import plan_tasks

    matrix = FeatureMatrix.allocate(1000, {"a": 400, "b": 400, "c": 400})
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=2), 1000)
    cells = list_cells([("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")], splits, ["ridge"])
    assert len(plan_tasks(cells, matrix, None)) == 2  # one per split
    many = plan_tasks(cells, matrix, 8)
    assert len(many) > 2
    assert all(len({c.split.index for c in task}) == 1 for task in many)


def test_interrupted_grid_resumes_without_refitting(tmp_path, data):
    features, mos = data
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=2), N)
    args = (features, ["a", "b", "a+b"], mos, splits, ["ridge", "linear"])
    with RunLog(tmp_path, {"grid": "toy"}) as log:
        fit_grid(features, ["a"], mos, splits, ["ridge", "linear"], dataset="toy", protocol="p", progress=False,
                 log=log)  # the first cells of the grid below, as if it had stopped there
    table = pd.read_csv(tmp_path / "results.csv")
    table.loc[0, "srcc"] = 42.0  # a marker: a refitted cell would lose it
    table.to_csv(tmp_path / "results.csv", index=False)
    with RunLog(tmp_path, {"grid": "toy"}) as log:
        resumed = fit_grid(*args, dataset="toy", protocol="p", progress=False, log=log)
    fresh = fit_grid(*args, dataset="toy", protocol="p", progress=False)
    assert resumed.table.loc[0, "srcc"] == 42.0
    pd.testing.assert_frame_equal(resumed.table.drop(index=0), fresh.table.drop(index=0), check_dtype=False)
    assert [p.test_index.tolist() for p in resumed.predictions] == [p.test_index.tolist() for p in fresh.predictions]
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(fresh.table)  # each cell once

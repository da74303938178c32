import json

import numpy as np
import pandas as pd
import pytest

from iqa_store.fit.grid import fit_grid
from iqa_store.fit.cells import CellResult
from iqa_store.fit.results import RunLog, load_predictions, load_results, load_spec, save_run
from iqa_store.splits import ProtocolSpec, make_splits


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    features = {"x": rng.normal(size=(60, 3)), "y": rng.normal(size=(60, 2))}
    mos = features["x"].sum(1) + rng.normal(0, 0.5, 60)
    splits = make_splits(ProtocolSpec("random-80-20", n_splits=2), 60)
    return fit_grid(features, ["x", "x+y"], mos, splits, ["ridge", "linear"], dataset="toy",
                    protocol="random-80-20", progress=False)


def test_save_and_load_round_trip(tmp_path, result):
    spec = {"dataset": "toy", "features": ["x", "y"], "alphas": np.logspace(-1, 1, 3), "path": tmp_path}
    directory = save_run(tmp_path / "runs" / "run-1", result, spec)
    assert sorted(p.name for p in directory.iterdir()) == ["lock", "predictions", "results.csv", "spec.json"]
    stored_spec = load_spec(directory)
    assert stored_spec["alphas"] == pytest.approx([0.1, 1.0, 10.0]) and stored_spec["path"] == str(tmp_path)
    assert json.loads((directory / "spec.json").read_text()) == stored_spec

    loaded = load_results(tmp_path / "runs")
    assert loaded.columns[0] == "run_id" and set(loaded["run_id"]) == {"run-1"}
    pd.testing.assert_frame_equal(loaded.drop(columns="run_id"), result.table, check_dtype=False)

    predictions = load_predictions(directory)
    assert len(predictions) == len(result.predictions)
    for mine, theirs in zip(predictions, result.predictions):
        assert (mine.dataset, mine.combination, mine.regressor, mine.protocol, mine.split) == (
            theirs.dataset, theirs.combination, theirs.regressor, theirs.protocol, theirs.split)
        np.testing.assert_array_equal(mine.test_index, theirs.test_index)
        np.testing.assert_array_equal(mine.y_pred, theirs.y_pred)
        np.testing.assert_array_equal(mine.y_true, theirs.y_true)


def test_load_results_concatenates_runs(tmp_path, result):
    save_run(tmp_path / "a", result, {"n": 1})
    save_run(tmp_path / "nested" / "b", result, {"n": 2})
    table = load_results(tmp_path)
    assert len(table) == 2 * len(result.table)
    assert table["run_id"].unique().tolist() == ["a", "nested/b"]


def test_existing_run_is_not_overwritten_by_accident(tmp_path, result):
    save_run(tmp_path, result, {})
    with pytest.raises(FileExistsError):
        save_run(tmp_path, result, {})
    save_run(tmp_path, result, {"again": True}, overwrite=True)
    assert load_spec(tmp_path) == {"again": True}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_unserialisable_spec_raises_before_writing_results(tmp_path, result):
    with pytest.raises(TypeError):
        save_run(tmp_path, result, {"bad": object()})
    assert not (tmp_path / "results.csv").exists()


def test_empty_root(tmp_path):
    table = load_results(tmp_path)
    assert table.empty and "run_id" in table.columns and "srcc" in table.columns


def cells_of(result):
    return [CellResult(row, prediction) for row, prediction in zip(result.table.to_dict("records"), result.predictions)]


def test_run_log_appends_and_survives_a_torn_line_and_an_orphan_part(tmp_path, result):
    cells = cells_of(result)
    with RunLog(tmp_path, {"grid": 1}) as log:
        log.append(cells[:3])
        log.append(cells[3:5])
    # A crash inside the next append: its part landed, its rows only half.
    with RunLog(tmp_path, {"grid": 1}) as log:
        log.append(cells[5:6])
    text = (tmp_path / "results.csv").read_text()
    (tmp_path / "results.csv").write_text(text[: text.rstrip("\n").rfind("\n") + 1] + text.splitlines()[-1][:7])
    with RunLog(tmp_path, {"grid": 1}) as log:
        assert log.finished() == {c.key for c in cells[:5]}
        log.append(cells[5:])  # the resumed run refits the lost cell and the rest
        stored = log.load()
    assert list(stored) == [c.key for c in cells]  # each cell once, in append order
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(cells)
    for cell in cells:
        np.testing.assert_array_equal(stored[cell.key].prediction.y_pred, cell.prediction.y_pred)
        assert stored[cell.key].row["srcc"] == cell.row["srcc"]  # floats round-trip exactly through the CSV


def test_run_log_refuses_another_spec_and_a_second_writer_waits(tmp_path, result):
    import threading
    entered = threading.Event()
    seen: list[int] = []

    def second_writer() -> None:
        with RunLog(tmp_path, {"grid": 1}) as log:
            seen.append(len(log.finished()))
            entered.set()

    with RunLog(tmp_path, {"grid": 1}) as log:
        log.append(cells_of(result)[:1])
        waiter = threading.Thread(target=second_writer)
        waiter.start()
        assert not entered.wait(0.5), "a second writer entered while the first held the log"
    waiter.join(timeout=30)
    assert seen == [1]  # it waited, then found the first writer's cell
    with pytest.raises(ValueError, match="different spec"):
        RunLog(tmp_path, {"grid": 2}).__enter__()
    with RunLog(tmp_path, {"grid": 1}) as log:  # the refusal released the lock
        assert len(log.finished()) == 1

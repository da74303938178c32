"""Wrong input on every command: exit 2, one line saying what is wrong, never a traceback.

The walk is generated from the command registry (``COMMANDS``, every group's subcommands, every
training stage), so a new command is walked without a line here. Each leaf command gets the
wrong options its own parameters allow: an unknown option, its required ones left out, a word
for every number or choice, a missing file for every path that must exist, a folder that is no
store for ``--store``, a malformed ``-o`` and, for every command that reads a dataset through
its adapter, a csv dataset without labels, with an unknown option and with an ill-typed one.
Then a table of the errors only a command's meaning can produce (unknown names, malformed
feature expressions, bad ``--set`` values, bad pipeline files). Everything runs in-process
through the real ``iqa-store`` group (click's CliRunner); two subprocesses check the real
entry point.

Accepted output: click's own usage errors (``Usage:`` ... one ``Error:`` line), or exactly one
``error: ...`` line from the command.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import click
import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from conftest import write_images
from iqa_store.cli import COMMANDS, cli
from iqa_store.datasets import load_manifest
from iqa_store.store import FeatureStore
from iqa_store.store.transfer import import_feature_set

CLI = str(Path(sys.executable).parent / "iqa-store")
NOT_A_NUMBER = "not-a-number"


# ---------------------------------------------------------------------------------------------
# the walk: every leaf command reachable from COMMANDS


def _leaves(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1])
        for name in command.list_commands(ctx):
            yield from _leaves(command.get_command(ctx, name), (*path, name))
    else:
        yield path, command


def _walk() -> dict[tuple[str, ...], click.Command]:
    ctx = click.Context(cli, info_name="iqa-store")
    leaves: dict[tuple[str, ...], click.Command] = {}
    for name in COMMANDS:
        leaves.update(_leaves(cli.get_command(ctx, name), (name,)))
    return leaves


LEAVES = _walk()


def _params(path: tuple[str, ...]) -> list[click.Parameter]:
    return [p for p in LEAVES[path].params if p.name not in ("help", "version")]


def _arguments(path: tuple[str, ...], **given: str) -> list[str]:
    """A value for every positional argument (``given`` by name, else a placeholder word)."""
    return [given.get(p.name, "x") for p in _params(path) if isinstance(p, click.Argument)]


# ---------------------------------------------------------------------------------------------
# what a clean failure looks like


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, prog_name="iqa-store")


def assert_clean(result: Result, code: int = 2) -> str:
    """Exit ``code``, no traceback, and stderr one ``error:`` line or click's usage block; the message."""
    where = f"{result.exit_code}\n{result.output}\n{result.stderr}"
    assert result.exception is None or isinstance(result.exception, SystemExit), where
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, where
    assert result.exit_code == code, where
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("Usage:"):  # click's own usage error
        errors = [line for line in lines if line.startswith("Error: ")]
        assert errors == [lines[-1]], where
        return lines[-1]
    assert len(lines) == 1 and lines[0].startswith("error: "), where
    return lines[0]


# ---------------------------------------------------------------------------------------------
# fixtures: a small csv dataset, a store holding one imported feature set, a folder that is no store


@dataclasses.dataclass(frozen=True)
class World:
    data: Path  # a csv dataset: images plus labels.csv
    store: Path  # a store with features "feat" of dataset "toy"
    empty: Path  # a fresh store
    junk: Path  # a folder of other things
    features: Path  # an HDF5 file of features for the csv dataset
    missing: Path  # a path that does not exist


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    top = tmp_path_factory.mktemp("errors")
    data = top / "data"
    names = write_images(data, 6, size=(32, 32))
    pd.DataFrame({"path": names, "mos": np.arange(6.0)}).to_csv(data / "labels.csv", index=False)
    pd.DataFrame({"path": ["elsewhere.jpg"], "mos": [1.0]}).to_csv(data / "other.csv", index=False)
    features = top / "features.h5"
    with h5py.File(features, "w") as handle:
        handle["features"] = np.arange(24, dtype=np.float32).reshape(6, 4)
        handle["ids"] = np.array(names, dtype=object).astype(h5py.string_dtype())
    store = FeatureStore(top / "store")
    import_feature_set(store, features, load_manifest("csv", data, labels="labels.csv", dataset_name="toy"), "feat")
    junk = top / "junk"
    junk.mkdir()
    (junk / "holiday.jpg").write_bytes(b"not a store")
    (top / "empty").mkdir()
    return World(data, store.root, top / "empty", junk, features, top / "missing" / "nothing.txt")


# ---------------------------------------------------------------------------------------------
# (a) what each command's parameters allow: generated for every leaf


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(path) for path in LEAVES])
def test_unknown_option(path: tuple[str, ...]) -> None:
    message = assert_clean(invoke([*path, "--no-such-option"]))
    assert "No such option" in message


def _some(select: Callable[[tuple[str, ...]], list]) -> list[tuple[str, ...]]:
    """The leaves for which ``select`` finds something to try."""
    return [path for path in LEAVES if select(path)]


def _required(path: tuple[str, ...]) -> list[click.Parameter]:
    return [p for p in _params(path) if p.required]


def _typed_options(path: tuple[str, ...]) -> list[click.Option]:
    """Options that take a number or a choice: a word must be refused."""
    kinds = (click.types.IntParamType, click.types.FloatParamType, click.Choice)
    return [p for p in _params(path) if isinstance(p, click.Option) and not p.is_flag and isinstance(p.type, kinds)]


def _must_exist(path: tuple[str, ...]) -> list[click.Parameter]:
    return [p for p in _params(path) if isinstance(p.type, click.Path) and p.type.exists]


def _takes(path: tuple[str, ...], name: str) -> bool:
    return name in {p.name for p in _params(path)}


def _names(paths: list[tuple[str, ...]]) -> list[str]:
    return [" ".join(path) for path in paths]


@pytest.mark.parametrize("path", _some(_required), ids=_names(_some(_required)))
def test_missing_required(path: tuple[str, ...], world: World) -> None:
    store = ["--store", str(world.empty)] if _takes(path, "store") else []
    assert "Missing" in assert_clean(invoke([*path, *store]))


@pytest.mark.parametrize("path", _some(_typed_options), ids=_names(_some(_typed_options)))
def test_words_for_numbers_and_choices(path: tuple[str, ...]) -> None:
    for option in _typed_options(path):
        message = assert_clean(invoke([*path, option.opts[0], NOT_A_NUMBER, *_arguments(path)]))
        assert option.opts[0] in message or option.name in message, (option.opts, message)


@pytest.mark.parametrize("path", _some(_must_exist), ids=_names(_some(_must_exist)))
def test_missing_files(path: tuple[str, ...], world: World) -> None:
    for param in _must_exist(path):
        if isinstance(param, click.Argument):
            args = _arguments(path, **{param.name: str(world.missing)})
        else:
            args = [param.opts[0], str(world.missing), *_arguments(path)]
        assert "does not exist" in assert_clean(invoke([*path, *args]))


STORE_LEAVES = [path for path in LEAVES if _takes(path, "store")]


@pytest.mark.parametrize("path", STORE_LEAVES, ids=_names(STORE_LEAVES))
def test_a_store_that_is_not_a_store(path: tuple[str, ...], world: World) -> None:
    for store in (world.junk, world.features):  # a folder of other things; a file
        message = assert_clean(invoke([*path, "--store", str(store), *_arguments(path)]))
        assert "--store" in message


DATASET_LEAVES = [path for path in LEAVES if _takes(path, "dataset_options")]

# what each command that reads a dataset needs besides it, to get as far as reading it
DATASET_BASE: dict[str, Callable[[World], list[str]]] = {
    "extract": lambda w: ["-m", "brisque", "-q"],
    "import": lambda w: [str(w.features), "-n", "mine"],
    "verify": lambda w: [],
    "annotate": lambda w: ["-q"],
}


def _dataset_args(path: tuple[str, ...], world: World, dataset: str, *options: str) -> list[str]:
    """``path`` reading ``dataset`` from the csv tree with ``options`` (a positional NAME for verify)."""
    if path[0] in ("train", "pretrain"):
        supervised = any(p.name == "protocol" for p in _params(path))
        base = ["-p", "random-80-20", "--splits", "1"] if supervised else []
        base += ["--steps", "1", "--device", "cpu", "-q"]
    else:
        assert path[-1] in DATASET_BASE, f"add what `{' '.join(path)}` needs to DATASET_BASE"
        base = DATASET_BASE[path[-1]](world)
    named = ["--dataset", dataset] if _takes(path, "dataset") else []
    positional = [] if named else [dataset]
    store = ["--store", str(world.empty)] if _takes(path, "store") else []
    return [*path, *positional, *named, "--root", str(world.data), *options, *store, *base]


@pytest.mark.parametrize("path", DATASET_LEAVES, ids=_names(DATASET_LEAVES))
def test_dataset_options_checked_alike(path: tuple[str, ...], world: World) -> None:
    """Every command reading a dataset: the same one-line errors for missing, unknown and
    ill-typed adapter options, and an unknown dataset name."""
    message = assert_clean(invoke(_dataset_args(path, world, "csv")))
    assert "dataset 'csv': missing option(s) 'labels'" in message and "labels (text, required)" in message
    message = assert_clean(invoke(_dataset_args(path, world, "csv", "-o", "labels=labels.csv", "-o", "bogus=1")))
    assert "dataset 'csv': unknown option(s) 'bogus'" in message
    message = assert_clean(invoke(_dataset_args(path, world, "csv", "-o", "labels=labels.csv",
                                                "-o", "higher-is-better=maybe")))
    assert "option 'higher_is_better' must be true or false, got 'maybe'" in message
    message = assert_clean(invoke(_dataset_args(path, world, "csv", "-o", "labels=labels.csv",
                                                "-o", "mos_range=1")))
    assert "option 'mos_range' must be 2 numbers" in message
    assert "not KEY=VALUE" in assert_clean(invoke(_dataset_args(path, world, "csv", "-o", "labels")))
    assert "unknown dataset 'nosuch'" in assert_clean(invoke(_dataset_args(path, world, "nosuch")))


DEVICE_LEAVES = [path for path in LEAVES if _takes(path, "device") and path[0] != "extract"]


@pytest.mark.parametrize("path", DEVICE_LEAVES, ids=_names(DEVICE_LEAVES))
def test_a_misspelt_device(path: tuple[str, ...]) -> None:
    assert "device must be" in assert_clean(invoke([*path, "--device", "gpu0", *_arguments(path)]))


# ---------------------------------------------------------------------------------------------
# (b) what only a command's meaning can refuse

PIPELINES = {
    "not valid YAML": "[1, 2",
    "must be a mapping with keys": "- 1",
    "unknown key(s) ['extrat']": "extrat: []",
    "dataset 1: unknown option(s) 'bogus'": "datasets: [{name: csv, bogus: 1}]",
    "datasets must be a list of steps": "datasets: {name: csv}",
    "fit step 1: unknown key 'bogus'": "fit: [{features: [feat], bogus: 2}]",
    "fit step 1: option 'splits' must be an integer, got 'ten'": "fit: [{features: [feat], splits: ten}]",
    "fit step 1: splits must be at least 1": "fit: [{features: [feat], splits: 0}]",
    "extract step 1: option 'settings' must be a mapping": "extract: [{model: brisque, settings: 5}]",
    "extract step 1: precision must be one of": "extract: [{model: brisque, precision: fp64}]",
    "dataset 'csv': missing option(s) 'labels'": "datasets: [{name: csv, root: DATA}]\nextract: [{model: brisque}]",
    "model 'brisque' does not take option(s) ['bogus']":
        "datasets: [{name: csv, root: DATA, options: {labels: labels.csv}}]\n"
        "extract: [{model: brisque, settings: {bogus: 1}}]",
    "model 'cnniqa': option 'fc_width' must be an integer, got 'wide'":
        "datasets: [{name: csv, root: DATA, options: {labels: labels.csv}}]\n"
        "extract: [{model: cnniqa, random_init: true, settings: {fc_width: wide}}]",
}


@pytest.mark.parametrize("expected", PIPELINES)
def test_bad_pipeline_files(expected: str, world: World, tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(PIPELINES[expected].replace("DATA", str(world.data)))
    message = assert_clean(invoke(["run", str(spec), "--store", str(tmp_path / "S"), "-q", "--device", "cpu"]))
    assert expected in message, message


def _cases(w: World) -> dict[str, tuple[list[str], str]]:
    """A name for each case: (arguments, a part of the one-line message)."""
    s = ["--store", str(w.store)]
    csv = ["-d", "csv", "--root", str(w.data), "-o", "labels=labels.csv"]
    fit = ["fit", *s, "-q", "-d", "toy"]
    return {
        "extract unknown model": (["extract", "-m", "nosuch", *csv, *s], "unknown extractor 'nosuch'"),
        "extract --set unknown": (["extract", "-m", "brisque", *csv, *s, "-s", "bogus=1"], "does not take option(s)"),
        "extract --set no value": (["extract", "-m", "brisque", *csv, *s, "-s", "bogus"], "not KEY=VALUE"),
        "extract --set wrong type": (["extract", "-m", "cnniqa", "--random-init", *csv, *s, "-s", "seed=1.5"],
                                     "option 'seed' must be an integer, got 1.5"),
        "extract missing weights": (["extract", "-m", "brisque", *csv, *s, "--weights", str(w.missing)],
                                    "weights not found"),
        "extract unknown protocol": (["extract", "-m", "cnniqa", *csv, *s, "--protocol", "nosuch"],
                                     "unknown protocol 'nosuch'"),
        "extract bad shard": (["extract", "-m", "brisque", *csv, *s, "--shard", "3"], "I/N"),
        "extract bad device": (["extract", "-m", "brisque", *csv, *s, "--device", "gpu0"], "device must be"),
        "extract root is a file": (["extract", "-m", "brisque", "-d", "csv", "--root", str(w.features), *s],
                                   "is a file"),
        "fit malformed features": ([*fit, "-f", "feat++"], "invalid feature combination 'feat++'"),
        "fit unknown feature": ([*fit, "-f", "nosuch"], "'nosuch'"),
        "fit unknown regressor": ([*fit, "-f", "feat", "-r", "nosuch"], "unknown regressor 'nosuch'"),
        "fit unknown protocol": ([*fit, "-f", "feat", "-p", "nosuch"], "unknown protocol 'nosuch'"),
        "fit unknown dataset": (["fit", *s, "-f", "feat", "-d", "nosuch"], "no labels for dataset 'nosuch'"),
        "fit nothing to fit": (["fit", *s], "no feature combinations given"),
        "fit train without test": ([*fit, "-f", "feat", "--train", "toy"], "--test"),
        "show malformed name": (["show", "toy/feat", *s], "must look like DATASET/EXTRACTOR/FINGERPRINT"),
        "show unknown name": (["show", "toy/feat/0000", *s], "no feature set 'toy/feat/0000'"),
        "rm unknown name": (["rm", "toy/nosuch/0000", "-y", *s], "no feature set"),
        "export into a missing folder": (["export", "toy/feat", str(w.missing.parent / "out.h5"), *s], "does not exist"),
        "import not a feature file": (["import", str(w.data / "labels.csv"), "-d", "toy", "-n", "x", *s],
                                      "not a numeric .npy array"),
        "import dataset without labels": (["import", str(w.features), "-d", "koniq", "-n", "x", *s],
                                          "no labels for dataset 'koniq'"),
        "import ids of another dataset": (["import", str(w.features), "-d", "csv", "--root", str(w.data),
                                           "-o", "labels=other.csv", "-n", "x", *s], "are not in dataset 'csv'"),
        "splits show unknown key": (["splits", "show", "--key", "zz", *s], "0 stored split sets match key 'zz'"),
        "datasets verify root not a folder": (["datasets", "verify", "koniq", "--root", str(w.features)], "is a file"),
        "distortions apply unknown type": (["distortions", "apply", "--type", "nosuch", "--level", "3",
                                            str(w.data / "img000.jpg"), str(w.empty / "o.png")],
                                           "distortion 'nosuch' is not in bank 'reiqa'"),
        "distortions apply level out of range": (["distortions", "apply", "--type", "jpeg", "--level", "9",
                                                  str(w.data / "img000.jpg"), str(w.empty / "o.png")], "1..5"),
        "distortions apply unknown format": (["distortions", "apply", "--type", "jpeg", "--level", "1",
                                              str(w.data / "img000.jpg"), str(w.empty / "o.weird")],
                                             "cannot tell an image format"),
        "distortions apply not an image": (["distortions", "apply", "--type", "jpeg", "--level", "1",
                                            str(w.data / "labels.csv"), str(w.empty / "o.png")], "cannot decode"),
        "distortions sheet unknown format": (["distortions", "sheet", str(w.data / "img000.jpg"),
                                              "--out", str(w.empty / "s.weird")], "cannot write a sheet"),
        "train unknown protocol": (["train", "cnniqa", *csv, *s, "-p", "nosuch"], "unknown protocol 'nosuch'"),
        "train bad stage option": (["train", "cnniqa", *csv, *s, "-p", "random-80-20", "--dropout", "5"],
                                   "dropout in [0, 1)"),
        "train missing image folder": (["train", "reiqa-quality", "--images", str(w.missing), *s], "not found"),
        "train images and dataset": (["train", "reiqa-quality", "--images", str(w.data), *csv, *s],
                                     "exactly one of images"),
    }


CASE_NAMES = list(_cases(World(*[Path("x")] * 6)))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_meaningful_errors(case: str, world: World) -> None:
    args, expected = _cases(world)[case]
    message = assert_clean(invoke(args))
    assert expected in message, message


def test_train_reads_a_csv_dataset_through_its_options(world: World) -> None:
    """As far as the split's training rows (5 of the 6 labelled images), which the batch outgrows."""
    result = invoke(["train", "cnniqa", "-d", "csv", "--root", str(world.data), "-o", "labels=labels.csv",
                     "--store", str(world.empty), "-p", "random-80-20", "--splits", "1", "--batch-size", "64", "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == "error: batch size 64 is larger than the 5 training images"


def test_every_top_level_command_is_walked() -> None:
    assert {path[0] for path in LEAVES} == set(COMMANDS)
    from iqa_store.train import STAGES
    assert {path[1] for path in LEAVES if path[0] == "train"} == set(STAGES.names())


# ---------------------------------------------------------------------------------------------
# the real entry point, in two subprocesses


def test_the_installed_command_prints_one_line(world: World, tmp_path: Path) -> None:
    done = subprocess.run([CLI, "extract", "-m", "brisque", "-d", "csv", "--root", str(world.data),
                           "--store", str(tmp_path / "S")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: dataset 'csv': missing option(s) 'labels'")
    done = subprocess.run([CLI, "ls", "--store", str(world.junk)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--store'")


# ---------------------------------------------------------------------------------------------
# import reads a csv dataset through -o like every other command


def test_import_a_csv_dataset_with_its_options(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    names = write_images(data, 5, size=(16, 16))
    pd.DataFrame({"file": names, "score": [3.0, 1.0, 4.0, 1.5, 5.0]}).to_csv(data / "mos.csv", index=False)
    rng = np.random.default_rng(0)
    order = [3, 0, 4, 1]  # rows in another order than the labels, and one image absent
    vectors = {names[i]: rng.normal(size=3).astype(np.float32) for i in order}
    with h5py.File(tmp_path / "mine.h5", "w") as handle:
        handle["features"] = np.stack([vectors[names[i]] for i in order])
        handle["ids"] = np.array([names[i] for i in order], dtype=object).astype(h5py.string_dtype())
    store = tmp_path / "fresh"
    result = invoke(["import", str(tmp_path / "mine.h5"), "-d", "csv", "--root", str(data), "-o", "labels=mos.csv",
                     "-o", "path_column=file", "-o", "mos-column=score", "-o", "dataset_name=photos",
                     "-n", "mine", "--store", str(store)])
    assert result.exit_code == 0, result.output + result.stderr
    [fs] = FeatureStore(store).feature_sets("photos")
    assert fs.ids == names and fs.dim == 3 and fs.is_complete
    stored = fs.read()
    for row, image_id in enumerate(fs.ids):
        if image_id in vectors:
            np.testing.assert_array_equal(stored[row], vectors[image_id])
    assert set(fs.failures()) == {names.index(names[2])}  # the image the file lacks
    labels = FeatureStore(store).load_manifest("photos")
    assert labels.table["mos"].tolist() == [3.0, 1.0, 4.0, 1.5, 5.0]

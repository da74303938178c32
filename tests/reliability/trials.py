"""What the fault trials share: tiny datasets on disk, the commands they run, kill points, comparisons.

Every trial runs the real ``iqa-store`` command (forked by ``forkserver``), faults it, runs the
same command again, and compares with an uninterrupted run of that command: the reference is
computed by the product itself, once per kind of run, and the comparison is exact.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from tests.conftest import write_images
from tests.reliability.forkserver import Child, ForkServer

SEED = 20261203  # every kill point of the suite is drawn from this seed (and the trial's name)
RERUN = ".venv/bin/python -m pytest -m reliability {}"  # the command that reruns one trial


def rerun(module: str, selector: str | None = None) -> str:
    return RERUN.format(f"tests/reliability/{module}" + (f" -k '{selector}'" if selector else ""))


def draws(name: str, count: int, low: float = 0.03, high: float = 0.9) -> list[float]:
    """``count`` kill points for trial ``name``, as fractions of its reference run's duration."""
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    return [float(u) for u in rng.uniform(low, high, count)]


# --- a small image dataset (csv adapter) ----------------------------------------------------------
IMAGES = 60
IMAGE_SIZE = (48, 64)
ROWS_PER_CHUNK = 3  # 20 row chunks of BRISQUE's 36 features: a commit every few milliseconds


def image_tree(root: Path, count: int = IMAGES) -> Path:
    names = write_images(root, count, size=IMAGE_SIZE, seed=3)
    mos = np.random.default_rng(11).uniform(1, 5, len(names))
    pd.DataFrame({"path": names, "mos": mos}).to_csv(root / "labels.csv", index=False)
    return root


def extract_args(root: Path, store: Path, model: str = "brisque", dataset_name: str = "toy",
                 *extra: str) -> list[str]:
    return ["extract", "-m", model, "-d", "csv", "--root", str(root), "-o", "labels=labels.csv",
            "-o", f"dataset_name={dataset_name}", "--store", str(store), "--workers", "0",
            "--batch-size", str(ROWS_PER_CHUNK), "--device", "cpu", "-q", "--format", "json", *extra]


def precreate(store: Path, root: Path, model: str = "brisque", dataset_name: str = "toy",
              rows_per_chunk: int = ROWS_PER_CHUNK, random_init: bool = False):
    """The empty feature set the CLI will fill, with small row chunks (the CLI's default layout
    has one chunk for a dataset this small; an existing set keeps its own layout)."""
    from iqa_store.datasets import load_manifest
    from iqa_store.extraction.runner import feature_identity
    from iqa_store.extractors import create_extractor
    from iqa_store.store import FeatureStore
    extractor = create_extractor(model, random_init=random_init) if random_init else create_extractor(model)
    manifest = load_manifest("csv", root, labels="labels.csv", dataset_name=dataset_name)
    fs, created = FeatureStore(store, chunk_bytes=rows_per_chunk * extractor.dim * 4).open_or_create(
        manifest, feature_identity(extractor))
    assert created and fs.rows_per_chunk == rows_per_chunk
    return fs


# --- a fit grid on imported features ----------------------------------------------------------------
GRID_ROWS = 600
GRID_DIMS = {"a": 48, "b": 48}  # 3 cells per split, a task per split (linear: fitted cell by cell, never packed)
GRID_SPLITS = 9
GRID_COMBOS = ("a", "b", "a+b")
KEY = ["combination", "regressor", "split"]


def grid_store(folder: Path) -> Path:
    """A store with two random feature sets and their labels (imported: no extraction needed)."""
    from iqa_store.datasets import load_manifest
    from iqa_store.store import FeatureStore
    from iqa_store.store.transfer import import_feature_set
    root = folder / "grid-data"
    root.mkdir(parents=True)
    names = [f"i{i:04d}.jpg" for i in range(GRID_ROWS)]
    for name in names:
        (root / name).write_bytes(b"never decoded")
    rng = np.random.default_rng(5)
    features = {name: rng.normal(size=(GRID_ROWS, dim)).astype(np.float32) for name, dim in GRID_DIMS.items()}
    mos = features["a"][:, :5].sum(1) + features["b"][:, 0] + rng.normal(0, 1, GRID_ROWS)
    pd.DataFrame({"path": names, "mos": mos}).to_csv(root / "labels.csv", index=False)
    manifest = load_manifest("csv", root, labels="labels.csv", dataset_name="grid")
    store = FeatureStore(folder / "grid-store")
    store.save_manifest(manifest)
    for name, values in features.items():
        np.save(folder / f"{name}.npy", values)
        (folder / f"{name}.ids.txt").write_text("\n".join(manifest.ids) + "\n")
        import_feature_set(store, folder / f"{name}.npy", manifest, name)
    return store.root


def fit_args(store: Path, combos: tuple[str, ...] = GRID_COMBOS) -> list[str]:
    flags = [arg for combo in combos for arg in ("-f", combo)]
    return ["fit", *flags, "-d", "grid", "--splits", str(GRID_SPLITS), "-r", "linear", "--workers", "1",
            "--store", str(store), "-q", "--format", "json"]


def results_table(store: Path, run: str = "*") -> pd.DataFrame:
    [path] = store.glob(f"results/{run}/grid/results.csv")
    return pd.read_csv(path)


def committed_cells(store: Path) -> int:
    """Rows of the results table that a reader counts: complete lines after the header."""
    found = list(store.glob("results/*/grid/results.csv"))
    if not found:
        return 0
    lines = found[0].read_bytes().split(b"\n")[:-1]  # a torn last line has no newline
    return max(0, len(lines) - 1)


@dataclass
class Snapshot:
    """What a feature set holds at one moment: its committed chunks' markers and rows."""

    markers: dict[int, str]
    values: np.ndarray
    status: np.ndarray

    @classmethod
    def of(cls, fs) -> "Snapshot":
        from iqa_store.store import FeatureSet
        fresh = FeatureSet(fs.path)
        done = fresh.done_chunks()
        markers = {k: (fresh.path / "chunks" / f"{k}.json").read_text() for k in done}
        return cls(markers, fresh.read(), fresh.status())

    def intact(self, reference: np.ndarray, ref_status: np.ndarray) -> bool:
        """What a reader sees after a crash: committed rows exactly as in the reference, the rest
        pending and NaN (the bytes of a chunk killed mid-write never show)."""
        committed = self.status != 0
        shown_status = np.where(committed, ref_status, 0)
        shown = np.where(committed[:, None], reference, np.nan)
        return rows_differing(self.values, self.status, shown, shown_status) == 0

    def committed_rows(self, rows_per_chunk: int, n_rows: int) -> int:
        return sum(min(rows_per_chunk, n_rows - k * rows_per_chunk) for k in self.markers)


def rows_differing(values: np.ndarray, status: np.ndarray, reference: np.ndarray, ref_status: np.ndarray) -> int:
    """Rows whose status or bytes differ from the reference (NaN rows equal NaN rows)."""
    same_status = status == ref_status
    same_values = np.array([np.array_equal(a, b, equal_nan=True) for a, b in zip(values, reference)])
    return int((~(same_status & same_values)).sum())


def kill_after(server: ForkServer, argv: list[str], seconds: float, name: str, env: dict | None = None) -> Child:
    """Start ``iqa-store ARGV`` and SIGKILL it ``seconds`` after its start (if it is still running)."""
    child = server.run(argv, env, name)
    deadline = child.started + seconds
    while child.alive() and time.monotonic() < deadline:
        time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
    if child.alive():
        child.kill()
    else:
        child.wait()
    return child


def kill_when(server: ForkServer, argv: list[str], ready: Callable[[], bool], delay: float, name: str,
              env: dict | None = None) -> Child:
    """Start ``iqa-store ARGV``, wait until ``ready()`` (e.g. k chunks committed), then ``delay``
    seconds more, then SIGKILL it: for runs whose start (building a model) or whose few large
    commits would make kill points drawn over the whole run land mostly in one place."""
    child = server.run(argv, env, name)
    while child.alive() and not ready():
        time.sleep(0.001)
    deadline = time.monotonic() + delay
    while child.alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    if child.alive():
        child.kill()
    else:
        child.wait()
    assert child.status == -9, f"{name} ended ({child.status}) before its kill point:\n{child.stderr[-2000:]}"
    return child


def killed_midway(server: ForkServer, fresh: Callable[[], list[str]], fraction: float, reference_seconds: float,
                  name: str, env: dict | None = None) -> tuple[Child, float]:
    """A run killed at ``fraction`` of the reference run's duration. ``fresh()`` sets up the run's
    starting state and returns its argv; a run that finished before its kill point (a machine
    can be faster than during the reference run) is set up and started again with half the delay."""
    for _ in range(6):
        seconds = fraction * reference_seconds
        child = kill_after(server, fresh(), seconds, name, env)
        if child.status == -9:
            return child, seconds
        assert child.status == 0, f"{name} exited {child.status}:\n{child.stderr[-2000:]}"
        fraction /= 2
    raise AssertionError(f"{name}: the run always finished before its kill point")

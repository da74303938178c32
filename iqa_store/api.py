"""The Python API: what the CLI calls, usable on its own from a notebook.

    from iqa_store import api
    api.extract("brisque", "demo")
    outcome = api.fit(["brisque"], datasets=["demo"], regressors=["ridge"])
    print(outcome.summary)
"""

from __future__ import annotations

import datetime as _dt
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from iqa_store.datasets import load_manifest
from iqa_store.extractors import RunOptions, create_extractor
from iqa_store.store import FeatureStore, StoreError


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers() -> int:
    import os
    return min(4, os.cpu_count() or 1)


def build_extractor(model: str, *, device: str = "cpu", weights: str | None = None, random_init: bool = False,
                    precision: str | None = None, encoder: str | None = None, store: FeatureStore | None = None,
                    **settings: Any) -> Any:
    """Only the options a model accepts are passed (BRISQUE has no weights)."""
    import dataclasses

    from iqa_store.extractors import EXTRACTORS
    builder = EXTRACTORS.get(model)
    wanted = {"weights": weights, "random_init": random_init or None, "encoder": encoder,
              "precision": precision or ("bf16" if device.startswith("cuda") else None), **settings}
    probe = builder()
    accepted = {f.name for f in dataclasses.fields(probe) if f.init}
    given = {k: v for k, v in wanted.items() if v is not None}
    rejected = sorted(k for k in given if k not in accepted and k != "precision")
    if rejected:
        raise ValueError(f"model {model!r} does not take option(s) {rejected}")
    return builder(**{k: v for k, v in given.items() if k in accepted})


def extract(model: str, dataset: str, *, root: str | Path | None = None, store: FeatureStore | str | None = None,
            device: str = "auto", batch_size: int = 32, workers: int | None = None, weights: str | None = None,
            random_init: bool = False, precision: str | None = None, dataset_options: dict[str, Any] | None = None,
            progress: bool = True, log: Callable[[str], None] = print, **settings: Any) -> Any:
    """Extract ``model`` features for ``dataset`` into the store (cached, resumable).

    ``settings`` are extractor fields (e.g. ``normalize=True`` for CLIP).
    """
    from iqa_store.extract import extract as run_extraction
    store = _store(store)
    device = resolve_device(device)
    manifest = load_manifest(dataset, root, **(dataset_options or {}))
    extractor = build_extractor(model, device=device, weights=weights, random_init=random_init, precision=precision,
                                **settings)
    options = RunOptions(device=device, batch_size=batch_size, workers=default_workers() if workers is None else workers)
    return run_extraction(manifest, extractor, store, options, progress=progress, log=log)


@dataclass
class FitOutcome:
    table: Any  # tidy per-split results (pandas DataFrame)
    aggregate: Any  # mean/std/median per dataset, combination, regressor, protocol
    run_dir: Path | None
    plots: list[Path] = field(default_factory=list)

    @property
    def summary(self) -> str:
        from iqa_store.report import format_summary
        return format_summary(self.aggregate)


def fit(features: Sequence[str] = (), *, all_combos: Sequence[str] | None = None, max_size: int | None = None,
        cross: Sequence[str] | None = None, with_: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
        protocol: str = "random-80-20", splits: int = 10, seed: int = 0, regressors: Sequence[str] = ("ridge",),
        store: FeatureStore | str | None = None, plot_dir: str | Path | None = None, progress: bool = True,
        executor: Any = None) -> FitOutcome:
    """Fit every combination x split x regressor on every dataset that has all named features.

    ``executor``: any concurrent.futures.Executor for the cells, e.g. ``dask_executor(...)``.
    """
    import pandas as pd

    from iqa_store.fit import parse_combinations, save_run
    from iqa_store.report import aggregate
    store = _store(store)
    combos = parse_combinations(list(features), all_combos=list(all_combos) if all_combos else None, max_size=max_size,
                                cross=list(cross) if cross else None, with_=list(with_) if with_ else None)
    names = sorted({n for combo in combos for n in combo})
    targets = list(datasets) if datasets else [d for d in store.datasets() if _has_all(store, d, names)]
    if not targets:
        raise StoreError(f"no dataset in {store.root} has complete feature sets for all of {names}; see `iqa-store ls`")
    tables, plots, run_id = [], [], _run_id()
    for dataset in targets:
        result = _fit_dataset(store, dataset, combos, names, protocol, splits, seed, list(regressors), progress, executor)
        save_run(store.results_dir / run_id / dataset, result,
                 {"dataset": dataset, "combinations": ["+".join(c) for c in combos], "protocol": protocol,
                  "splits": splits, "seed": seed, "regressors": list(regressors)})
        tables.append(result.table)
        if plot_dir:
            plots += _plots(result, Path(plot_dir), dataset)
    table = pd.concat(tables, ignore_index=True)
    return FitOutcome(table, aggregate(table), store.results_dir / run_id, plots)


def _fit_dataset(store: FeatureStore, dataset: str, combos: list[tuple[str, ...]], names: list[str], protocol: str,
                 n_splits: int, seed: int, regressors: list[str], progress: bool, executor: Any) -> Any:
    from iqa_store.fit import ProtocolSpec, fit_grid
    manifest = store.load_manifest(dataset)
    sets = {name: store.resolve(name, dataset, manifest.manifest_hash()) for name in names}
    features, valid = {}, {}
    for name, fs in sets.items():
        features[name], valid[name] = _aligned(fs, manifest.ids)
    splits = _splits(store, manifest, ProtocolSpec(name=protocol, n_splits=n_splits, seed=seed))
    return fit_grid(features, combos, manifest.mos, splits, regressors, dataset=dataset, protocol=protocol,
                    valid=valid, progress=progress, executor=executor)


def _aligned(fs: Any, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The set's rows in the order of ``ids``; images it lacks are invalid rows."""
    values, ok = fs.read(), fs.valid_mask()
    where = {image_id: row for row, image_id in enumerate(fs.ids)}
    out = np.full((len(ids), fs.dim), np.nan, np.float32)
    mask = np.zeros(len(ids), bool)
    for row, image_id in enumerate(ids):
        source = where.get(image_id)
        if source is not None and ok[source]:
            out[row], mask[row] = values[source], True
    return out, mask


def _splits(store: FeatureStore, manifest: Any, spec: Any) -> list[Any]:
    """Splits are stored under their key and reused: identical for every combination and run.

    Datasets with reference images (synthetic distortions) are split by reference, so no
    content appears on both sides.
    """
    from iqa_store.fit import make_splits, splits_from_json, splits_key, splits_to_json
    groups, official = manifest.reference_ids, manifest.official_split
    key = splits_key(spec, len(manifest), groups=groups, official=official)
    path = store.splits_dir / manifest.dataset / f"{spec.name}-{key}.json"
    if path.exists():
        return splits_from_json(path.read_text())
    splits = make_splits(spec, len(manifest), groups=groups, official=official)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(splits_to_json(splits))
    return splits


@contextmanager
def dask_executor(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """An executor on an existing Dask cluster (``scheduler`` address) or a LocalCluster of ``workers``.

    Each local worker is one process with one thread and one BLAS thread: the regressors'
    linear algebra is the parallel unit, not threads inside it.
    """
    from distributed import Client, LocalCluster
    if scheduler:
        client = Client(scheduler)
        cluster = None
    else:
        cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                                             "MKL_NUM_THREADS": "1"})
        client = Client(cluster)
    try:
        yield client.get_executor()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _plots(result: Any, folder: Path, dataset: str) -> list[Path]:
    from iqa_store.report.plots import scatter_predicted_vs_mos
    folder.mkdir(parents=True, exist_ok=True)
    return scatter_predicted_vs_mos(result.predictions, folder, title=dataset)


def _has_all(store: FeatureStore, dataset: str, names: list[str]) -> bool:
    try:
        for name in names:
            store.resolve(name, dataset)
    except StoreError:
        return False
    return True


def _store(store: FeatureStore | str | Path | None) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore(store)


def _run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]

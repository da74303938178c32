"""The Python API: what the CLI calls, usable on its own from a notebook.

    from iqa_store import api
    api.extract("brisque", "demo")
    outcome = api.fit(["brisque"], datasets=["demo"], regressors=["ridge"])
    print(outcome.summary)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
    """Only the options a model accepts are passed (BRISQUE has no weights).

    ``encoder`` names an encoder in ``store``'s registry (Re-IQA extractors); the store is only
    where it is looked up, never part of the features' identity.
    """
    import dataclasses

    from iqa_store.extractors import EXTRACTORS
    builder = EXTRACTORS.get(model)
    wanted = {"weights": weights, "random_init": random_init or None, "encoder": encoder,
              "store": str(store.root) if encoder and store is not None else None,
              "precision": precision or ("bf16" if device.startswith("cuda") else None), **settings}
    probe = builder()
    accepted = {f.name for f in dataclasses.fields(probe) if f.init}
    given = {k: v for k, v in wanted.items() if v is not None}
    rejected = sorted(k for k in given if k not in accepted and k not in ("precision", "store"))
    if rejected:
        raise ValueError(f"model {model!r} does not take option(s) {rejected}")
    return builder(**{k: v for k, v in given.items() if k in accepted})


def extract(model: str, dataset: str, *, root: str | Path | None = None, store: FeatureStore | str | None = None,
            device: str = "auto", batch_size: int = 32, workers: int | None = None, weights: str | None = None,
            random_init: bool = False, precision: str | None = None, encoder: str | None = None,
            dataset_options: dict[str, Any] | None = None, shard: tuple[int, int] | str | None = None,
            scheduler: str | None = None, shards: int | None = None,
            progress: bool = True, log: Callable[[str], None] = print, **settings: Any) -> Any:
    """Extract ``model`` features for ``dataset`` into the store (cached, resumable).

    ``settings`` are extractor fields (e.g. ``normalize=True`` for CLIP). ``encoder``: an encoder
    of the store's registry, ``NAME`` or ``NAME/FINGERPRINT`` (Re-IQA extractors).

    ``shard=(i, n)`` (or ``"i/n"``): compute only the row chunks ``k`` with ``k % n == i``, so n
    processes (one per GPU, or on machines sharing the store's filesystem) can split one set;
    the last to finish marks it complete, and a shard that ends first reports status
    "partial" with the number of chunks still pending. A run without ``shard`` computes
    whatever is left.

    ``scheduler``: the address of an existing Dask cluster (``tcp://host:8786``) whose workers
    share the store's filesystem: ``shards`` shard tasks run there (default: one per GPU when the
    workers advertise a ``GPU`` resource, each task then taking one; otherwise one per worker),
    the device resolved on each worker; returns the combined ``ClusterReport``. Workers started
    by a nanny (the default) are daemonic and cannot start decoding processes, so tasks decode in
    their own thread and say so; start workers with ``--no-nanny`` (or the config
    ``distributed.worker.daemon: False``) to decode with ``workers`` processes.
    """
    from iqa_store.extraction.runner import check_shard, parse_shard
    store = _store(store)
    if isinstance(shard, str):
        shard = parse_shard(shard)
    elif shard is not None:
        shard = check_shard(shard)
    if shards is not None and not scheduler:
        raise ValueError("--shards (the number of shard tasks) needs --scheduler; to run one shard here, "
                         "give --shard I/N")
    if scheduler:
        if shard is not None:
            raise ValueError("give --shard I/N (one shard, here) or --scheduler (every shard, on a Dask cluster), "
                             "not both")
        if shards is not None and shards < 1:
            raise ValueError(f"--shards must be at least 1; got {shards}")
        return _extract_on_cluster(scheduler, shards, log, {
            "model": model, "dataset": dataset, "root": _absolute(root), "device": device,
            "store": FeatureStore(store.root.absolute(), store.chunk_bytes), "batch_size": batch_size,
            "workers": workers, "weights": _absolute(weights), "random_init": random_init, "precision": precision,
            "encoder": encoder, "dataset_options": dataset_options, **settings})
    from iqa_store.extraction.runner import extract as run_extraction
    device = resolve_device(device)
    manifest = load_manifest(dataset, root, **(dataset_options or {}))
    extractor = build_extractor(model, device=device, weights=weights, random_init=random_init, precision=precision,
                                encoder=encoder, store=store, **settings)
    options = RunOptions(device=device, batch_size=batch_size, workers=default_workers() if workers is None else workers)
    return run_extraction(manifest, extractor, store, options, shard=shard, progress=progress, log=log)


def _extract_on_cluster(scheduler: str, shards: int | None, log: Callable[[str], None], task: dict[str, Any]) -> Any:
    """``extract`` as shard tasks on a Dask cluster (see ``iqa_store.extraction.cluster``)."""
    from iqa_store.extraction.cluster import extract_on_cluster
    return extract_on_cluster(scheduler, task, shards, log=log)


def _absolute(path: str | Path | None) -> str | None:
    """A path as the workers of a cluster must see it: absolute (on the shared filesystem)."""
    return str(Path(path).expanduser().absolute()) if path else None


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
        executor: Any = None, train: str | None = None, test: str | None = None) -> FitOutcome:
    """Fit every combination x split x regressor on every dataset that has all named features.

    ``executor``: any concurrent.futures.Executor for the cells, e.g. ``dask_executor(...)``.
    The run's directory is named by a fingerprint of everything that decides its numbers
    (resolved feature sets, combinations, protocol, splits, seed, regressor parameters): the
    same call again resumes an interrupted run, fitting only the cells not yet in its table.
    """
    import pandas as pd

    from iqa_store.fingerprint import fingerprint
    from iqa_store.fit import REGRESSORS, ProtocolSpec, parse_combinations
    from iqa_store.report import aggregate
    store = _store(store)
    combos = parse_combinations(list(features), all_combos=list(all_combos) if all_combos else None, max_size=max_size,
                                cross=list(cross) if cross else None, with_=list(with_) if with_ else None)
    names = sorted({n for combo in combos for n in combo})
    if train or test:  # cross-dataset: fit on all of `train`, test on all of `test`
        return _fit_cross(store, (train, test), combos, names, list(regressors), plot_dir,
                          {"progress": progress, "executor": executor})
    targets = list(datasets) if datasets else [d for d in store.datasets() if _has_all(store, d, names)]
    if not targets:
        raise StoreError(f"no dataset in {store.root} has complete feature sets for all of {names}; see `iqa-store ls`")
    spec = ProtocolSpec(name=protocol, n_splits=splits, seed=seed)
    grid = {"combinations": ["+".join(c) for c in combos], "protocol": spec.to_dict(),
            "regressors": {name: REGRESSORS.get(name)().get_params() for name in regressors}}
    sets = {dataset: _resolve_sets(store, dataset, names) for dataset in targets}
    run_id = "fit-" + fingerprint({**grid, "features": {d: {n: fs.name for n, fs in s.items()} for d, s in sets.items()}})
    tables, plots = [], []
    for dataset in targets:
        run_spec = {"dataset": dataset, "features": {n: fs.name for n, fs in sets[dataset].items()}, **grid}
        result = _fit_dataset(store, dataset, sets[dataset], combos, spec, list(regressors),
                              {"progress": progress, "executor": executor},
                              (store.results_dir / run_id / dataset, run_spec))
        tables.append(result.table)
        if plot_dir:
            plots += _plots(result, Path(plot_dir), dataset)
    table = pd.concat(tables, ignore_index=True)
    return FitOutcome(table, aggregate(table), store.results_dir / run_id, plots)


def _fit_cross(store: FeatureStore, pair: tuple[str | None, str | None], combos: list[tuple[str, ...]],
               names: list[str], regressors: list[str], plot_dir: str | Path | None,
               running: dict[str, Any]) -> FitOutcome:
    """Cross-dataset: the test dataset's sets must match the training sets' extractor settings."""
    from iqa_store.fingerprint import fingerprint
    from iqa_store.fit import REGRESSORS, RunLog, fit_grid
    from iqa_store.fit.evaluation import CROSS_DATASET, cross_dataset_inputs, cross_dataset_name, match_feature_sets
    from iqa_store.report import aggregate
    train, test = pair
    if not (train and test):
        raise ValueError("cross-dataset fitting needs both a training dataset (--train) and a test dataset (--test)")
    train_sets = _resolve_sets(store, train, names)
    test_sets = match_feature_sets(train_sets, {n: [c for c in store.feature_sets(test, fs.extractor) if c.is_complete]
                                                for n, fs in train_sets.items()}, test)
    manifests = [store.load_manifest(train), store.load_manifest(test, next(iter(test_sets.values())).attrs["manifest_hash"])]
    matrix, mos, split = cross_dataset_inputs(*((_feature_matrix(sets, m.ids), m)
                                                for sets, m in zip((train_sets, test_sets), manifests)))
    dataset = cross_dataset_name(train, test)
    spec = {"dataset": dataset, "combinations": ["+".join(c) for c in combos], "protocol": CROSS_DATASET,
            "features": {d: {n: fs.name for n, fs in s.items()} for d, s in ((train, train_sets), (test, test_sets))},
            "regressors": {name: REGRESSORS.get(name)().get_params() for name in regressors}}
    run_dir = store.results_dir / ("fit-" + fingerprint(spec))
    with RunLog(run_dir / dataset, spec) as log:
        result = fit_grid(matrix, combos, mos, [split], regressors, dataset=dataset, protocol=CROSS_DATASET,
                          log=log, **running)
    plots = _plots(result, Path(plot_dir), dataset) if plot_dir else []
    return FitOutcome(result.table, aggregate(result.table), run_dir, plots)


def _resolve_sets(store: FeatureStore, dataset: str, names: list[str]) -> dict[str, Any]:
    manifest_hash = store.load_manifest(dataset).manifest_hash()
    return {name: store.resolve(name, dataset, manifest_hash) for name in names}


def _fit_dataset(store: FeatureStore, dataset: str, sets: dict[str, Any], combos: list[tuple[str, ...]], spec: Any,
                 regressors: list[str], running: dict[str, Any], run: tuple[Path, dict[str, Any]]) -> Any:
    """One dataset's grid, appended to (and resumed from) the run directory ``run[0]``.

    ``running``: ``progress`` and ``executor`` for ``fit_grid``.
    """
    from iqa_store.fit import RunLog
    from iqa_store.fit.evaluation import evaluate  # fit_grid, or no fitting for zero-shot
    manifest = store.load_manifest(dataset)
    matrix = _feature_matrix(sets, manifest.ids)
    splits = _splits(store, manifest, spec)
    with RunLog(*run) as log:
        return evaluate(matrix, combos, manifest.mos, splits, regressors, dataset=dataset, protocol=spec.name,
                        log=log, **running)


def _feature_matrix(sets: dict[str, Any], ids: list[str]) -> Any:
    """All sets side by side in one float32 matrix (the one copy the grid holds), rows in the
    order of ``ids``; images a set lacks are invalid rows of that set."""
    from iqa_store.fit import FeatureMatrix
    matrix = FeatureMatrix.allocate(len(ids), {name: fs.dim for name, fs in sets.items()})
    for i, (name, fs) in enumerate(sets.items()):
        matrix.ok[:, i] = _aligned(fs, ids, matrix.block(name))
    matrix.mark_non_finite()
    return matrix


def _aligned(fs: Any, ids: list[str], out: np.ndarray) -> np.ndarray:
    """Writes the set's rows into ``out`` in the order of ``ids``; returns which are valid."""
    values, ok = fs.read(), fs.valid_mask()
    where = {image_id: row for row, image_id in enumerate(fs.ids)}
    out[...] = np.nan
    mask = np.zeros(len(ids), bool)
    for row, image_id in enumerate(ids):
        source = where.get(image_id)
        if source is not None and ok[source]:
            out[row], mask[row] = values[source], True
    return mask


def _splits(store: FeatureStore, manifest: Any, spec: Any) -> list[Any]:
    """Splits are stored under their key and reused: identical for every combination and run.

    Datasets with reference images (synthetic distortions) are split by reference, CID2013 by
    scene subset within each image set, so no content appears on both sides.
    """
    from iqa_store.splits import stored_splits
    return stored_splits(store.splits_dir, manifest, spec)


def dask_executor(scheduler: str | None = None, workers: int | None = None) -> Any:
    """A context manager giving an executor on an existing Dask cluster (``scheduler``
    address) or on a LocalCluster of ``workers`` processes; see ``iqa_store.fit.cluster``."""
    from iqa_store.fit.cluster import dask_executor as make_executor
    return make_executor(scheduler, workers)


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

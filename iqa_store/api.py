"""The Python API: what the CLI calls, usable on its own from a notebook.

    from iqa_store import api
    api.extract("brisque", "demo")
    api.train("cnniqa", dataset="demo", protocol="random-80-20", steps=200)
    api.extract("cnniqa", "demo", protocol="random-80-20")
    outcome = api.fit(["brisque", "brisque+cnniqa"], datasets=["demo"], regressors=["ridge"])
    print(outcome.summary)

Every job is also a request (``iqa_store.requests``): ``api.extract(ExtractRequest(...))``,
``api.fit(FitRequest(...))``, the same data the CLI and pipeline files are made of.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from iqa_store.requests import ExtractRequest, FitRequest
from iqa_store.store import FeatureStore, StoreError


def resolve_device(device: str = "auto") -> str:
    from iqa_store.extraction.jobs import resolve_device as resolve
    return resolve(device)


def default_workers() -> int:
    from iqa_store.extraction.jobs import default_workers as workers
    return workers()


def build_extractor(model: str, *, weights: str | None = None, store: FeatureStore | str | None = None,
                    device: str = "cpu", random_init: bool = False, precision: str | None = None,
                    **settings: Any) -> Any:
    """The extractor ``model``, its weights resolved (``registry:NAME``, a path, or published)."""
    from iqa_store.extraction.jobs import build_extractor as build
    from iqa_store.extraction.weights import resolve_weights
    return build(model, resolve_weights(weights, model, _store(store)), device=device, random_init=random_init,
                 precision=precision, **settings)


def extract(request: ExtractRequest | str | None = None, dataset: str | None = None, *,
            store: FeatureStore | str | None = None, encoder: str | None = None, progress: bool = True,
            log: Callable[[str], None] = print, **fields: Any) -> Any:
    """Extract features into the store (cached, resumable); see ``ExtractRequest`` for every field.

    Keywords that are not request fields are extractor settings (``normalize=True``).

        api.extract("clip-vitb16", "koniq", root="~/data/koniq10k", settings={"normalize": True})
        api.extract(ExtractRequest(model="cnniqa", dataset="demo", protocol="random-80-20"))

    ``encoder`` (kept from before ``weights`` took ``registry:``) is ``weights="registry:NAME"``.
    Returns an ``ExtractionReport``, one per split for a ``protocol`` request, or the combined
    ``ClusterReport`` for a ``scheduler`` request. Shards: ``shard="i/n"`` computes only the row
    chunks ``k`` with ``k % n == i``; the last shard to finish marks the set complete, one that
    ends first reports "partial". Dask workers started by a nanny (the default) cannot start
    decoding processes, so tasks decode in their own thread and say so.
    """
    from iqa_store.extraction.jobs import run_request
    if encoder:
        if fields.get("weights"):
            raise ValueError("give --weights or --encoder (an alias of --weights registry:NAME), not both")
        fields["weights"] = f"registry:{encoder}"
    if isinstance(fields.get("shard"), tuple):  # (i, n), as the runner takes it
        from iqa_store.extraction.runner import check_shard
        fields["shard"] = "{}/{}".format(*check_shard(fields["shard"]))
    known = {f.name for f in dataclasses.fields(ExtractRequest)}
    extra = {k: fields.pop(k) for k in list(fields) if k not in known}
    if extra:  # extractor fields given directly (backbone=..., normalize=...): the request's settings
        fields["settings"] = {**dict(fields.get("settings") or {}), **extra}
    if not isinstance(request, ExtractRequest):
        request = ExtractRequest(model=request, dataset=dataset, **fields)
    elif dataset is not None or fields:
        request = dataclasses.replace(request, **({"dataset": dataset} if dataset else {}), **fields)
    return run_request(request, _store(store), progress=progress, log=log)


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


def fit(request: FitRequest | Sequence[str] = (), *, store: FeatureStore | str | None = None,
        progress: bool = True, executor: Any = None, log: Callable[[str], None] | None = None,
        **fields: Any) -> FitOutcome:
    """Fit every combination x split x regressor on every dataset that has all named features.

        api.fit(["clip+brisque"], datasets=["koniq"], regressors=["ridge", "mlp"])
        api.fit(FitRequest(features=("brisque+cnniqa",), datasets=("demo",)))

    ``fields``: ``FitRequest`` fields. ``executor``: any concurrent.futures.Executor for the cells.
    Else the request's ``scheduler`` names a Dask cluster, ``workers=1`` fits in this process,
    ``workers=N`` on a LocalCluster of N processes, and without either each grid goes where it
    is fastest (``iqa_store.fit.cluster.LocalLayout``: one process for small grids, local
    single-threaded workers, one per core, for grids big enough to pay for starting them),
    and ``log`` (default: stderr while ``progress``) gets one line saying which. A feature trained per
    split (its sets carry a scope) is used on each split with the set trained on that split's
    training rows, and refused on splits it was not trained for. The run's directory is named
    by a fingerprint of everything that decides its numbers (resolved feature sets,
    combinations, protocol, splits, seed, regressor parameters): the same call again resumes an
    interrupted run, fitting only the cells not yet in its table.
    """
    if not isinstance(request, FitRequest):
        request = FitRequest(features=tuple(request), **{k: _as_tuple(v) for k, v in fields.items()})
    elif fields:
        request = dataclasses.replace(request, **{k: _as_tuple(v) for k, v in fields.items()})
    if executor is not None:
        where: Any = nullcontext({"executor": executor})
    elif request.scheduler:
        where = _entered(dask_executor(request.scheduler, request.workers), "executor")
    else:
        from iqa_store.fit.cluster import LocalLayout
        where = _entered(LocalLayout(request.workers, log or (_progress_line if progress else _silent)), "layout")
    with where as running:
        return _fit(request, _store(store), {"progress": progress, **running})


@contextmanager
def _entered(context: Any, keyword: str) -> Iterator[dict[str, Any]]:
    """``context`` entered, as the fit grid's keyword argument ``keyword``."""
    with context as value:
        yield {keyword: value}


def _progress_line(line: str) -> None:
    from tqdm import tqdm
    tqdm.write(line, file=sys.stderr)  # above a progress bar, not through it


def _silent(line: str) -> None:
    pass


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _fit(request: FitRequest, store: FeatureStore, running: dict[str, Any]) -> FitOutcome:
    import pandas as pd

    from iqa_store.fingerprint import fingerprint
    from iqa_store.fit import REGRESSORS, parse_combinations
    from iqa_store.report import aggregate
    from iqa_store.splits import ProtocolSpec
    combos = parse_combinations(list(request.features), all_combos=_listed(request.all_combos),
                                max_size=request.max_size, cross=_listed(request.cross), with_=_listed(request.with_))
    names = sorted({n for combo in combos for n in combo})
    regressors = list(request.regressors)
    if request.cross_dataset:  # fit on all of `train`, test on all of `test`
        return _fit_cross(store, (request.train, request.test), combos, names, regressors, request.plot_dir, running)
    targets = list(request.datasets) if request.datasets else [d for d in store.datasets() if _has_all(store, d, names)]
    if not targets:
        raise StoreError(f"no dataset in {store.root} has complete feature sets for all of {names}; see `iqa-store ls`")
    spec = ProtocolSpec(name=request.protocol, n_splits=request.splits, seed=request.seed)
    grid = {"combinations": ["+".join(c) for c in combos], "protocol": spec.to_dict(),
            "regressors": {name: REGRESSORS.get(name)().get_params() for name in regressors}}
    sets = {dataset: _resolve_split_sets(store, dataset, names, spec) for dataset in targets}
    run_id = "fit-" + fingerprint({**grid, "features": {d: _set_names(s) for d, s in sets.items()}})
    tables, plots = [], []
    for dataset in targets:
        run_spec = {"dataset": dataset, "features": _set_names(sets[dataset]), **grid}
        result = _fit_dataset(store, dataset, sets[dataset], combos, spec, regressors, running,
                              (store.results_dir / run_id / dataset, run_spec))
        tables.append(result.table)
        if request.plot_dir:
            plots += _plots(result, Path(request.plot_dir), dataset)
    table = pd.concat(tables, ignore_index=True)
    return FitOutcome(table, aggregate(table), store.results_dir / run_id, plots)


def _listed(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


@dataclass(frozen=True)
class _SplitSets:
    """Each split's feature sets: the same unscoped sets for every split, scoped ones split by split."""

    splits: list[Any]
    per_split: list[dict[str, Any]]  # split i -> name -> FeatureSet
    scoped: frozenset[str]


def _extractor_names() -> frozenset[str]:
    """The registered extractor names: a feature name that is one is never widened to its family."""
    from iqa_store.extractors import EXTRACTORS
    return frozenset(EXTRACTORS.names())


def _resolve_split_sets(store: FeatureStore, dataset: str, names: list[str], spec: Any) -> _SplitSets:
    """Resolve every name once, or per split for features trained per split (by their scope)."""
    from iqa_store.store import Scope, ScopedFeatureError
    manifest = store.load_manifest(dataset)
    manifest_hash = manifest.manifest_hash()
    splits = store.splits(manifest, spec)
    shared, scoped = {}, []
    for name in names:
        try:
            shared[name] = store.resolve(name, dataset, manifest_hash, extractors=_extractor_names())
        except ScopedFeatureError:
            scoped.append(name)
    per_split = [{**shared, **{name: store.resolve(name, dataset, manifest_hash,
                                                   Scope(dataset, spec.name, split.key, split.index), _extractor_names())
                               for name in scoped}} for split in splits]
    return _SplitSets(splits, [{name: sets[name] for name in names} for sets in per_split], frozenset(scoped))


def _set_names(sets: _SplitSets) -> dict[str, Any]:
    """What a run's spec records: a set's name, or its name on every split for a scoped feature."""
    return {name: ([s[name].name for s in sets.per_split] if name in sets.scoped else sets.per_split[0][name].name)
            for name in sets.per_split[0]}


def _fit_cross(store: FeatureStore, pair: tuple[str | None, str | None], combos: list[tuple[str, ...]],
               names: list[str], regressors: list[str], plot_dir: str | Path | None,
               running: dict[str, Any]) -> FitOutcome:
    """Cross-dataset: the test dataset's sets must match the training sets' extractor settings.

    A feature trained per split takes its set trained on every row of the training dataset
    (``iqa-store train STAGE --protocol train-all``), on both sides.
    """
    from iqa_store.fingerprint import fingerprint
    from iqa_store.fit import REGRESSORS, RunLog, fit_grid
    from iqa_store.fit.evaluation import CROSS_DATASET, cross_dataset_inputs, cross_dataset_name, match_feature_sets
    from iqa_store.report import aggregate
    train, test = pair
    if not (train and test):
        raise ValueError("cross-dataset fitting needs both a training dataset (--train) and a test dataset (--test)")
    train_sets = _resolve_training_sets(store, train, names)
    test_sets = match_feature_sets(train_sets, {n: [c for c in store.feature_sets(test, fs.extractor)
                                                    if c.is_complete and c.scope == fs.scope]
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


def _resolve_training_sets(store: FeatureStore, dataset: str, names: list[str]) -> dict[str, Any]:
    """The training dataset's sets; scoped features: the set trained on all of its rows (train-all)."""
    from iqa_store.splits import ProtocolSpec
    from iqa_store.store import Scope, ScopedFeatureError
    manifest = store.load_manifest(dataset)
    manifest_hash = manifest.manifest_hash()
    resolved = {}
    for name in names:
        try:
            resolved[name] = store.resolve(name, dataset, manifest_hash, extractors=_extractor_names())
        except ScopedFeatureError:
            split = store.splits(manifest, ProtocolSpec("train-all"))[0]
            resolved[name] = store.resolve(name, dataset, manifest_hash, Scope(dataset, "train-all", split.key, 0),
                                           _extractor_names())
    return resolved


def _fit_dataset(store: FeatureStore, dataset: str, sets: _SplitSets, combos: list[tuple[str, ...]], spec: Any,
                 regressors: list[str], running: dict[str, Any], run: tuple[Path, dict[str, Any]]) -> Any:
    """One dataset's grid, appended to (and resumed from) the run directory ``run[0]``.

    Without scoped features one matrix serves every split; with them, each split is fitted on
    its own matrix, whose scoped blocks are the sets trained on that split.
    """
    import pandas as pd

    from iqa_store.fit import GridResult, RunLog
    from iqa_store.fit.evaluation import evaluate  # fit_grid, or no fitting for zero-shot
    manifest = store.load_manifest(dataset)
    groups = [(sets.splits, sets.per_split[0])] if not sets.scoped else \
        [([split], split_sets) for split, split_sets in zip(sets.splits, sets.per_split)]
    results = []
    with RunLog(*run) as log:
        for splits, split_sets in groups:
            matrix = _feature_matrix(split_sets, manifest.ids)
            results.append(evaluate(matrix, combos, manifest.mos, splits, regressors, dataset=dataset,
                                    protocol=spec.name, log=log, scores=_declared_scores(split_sets), **running))
    if len(results) == 1:
        return results[0]
    return GridResult(pd.concat([r.table for r in results], ignore_index=True),
                      [p for r in results for p in r.predictions])


def _declared_scores(sets: dict[str, Any]) -> dict[str, Any]:
    """Each set's score declaration (higher-is-better, range) from its extractor's recorded settings."""
    from iqa_store.fit.evaluation import ScoreDeclaration
    return {name: ScoreDeclaration.of_settings(fs.attrs.get("extractor_settings") or {}) for name, fs in sets.items()}


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


def train(stage: str, *, store: FeatureStore | str | None = None, **arguments: Any) -> list[Any]:
    """Train ``stage`` and register its encoder(s): one report per model (``iqa_store.train.train``).

        api.train("reiqa-quality", images="~/data/kadis", steps=1000, batch_size=64)
        api.train("cnniqa", dataset="koniq", protocol="random-80-20")   # one model per split
    """
    from iqa_store.train import train as run
    return run(stage, store=_store(store), **arguments)


def report(target: str | Path, *, store: FeatureStore | str | None = None, out: str | Path | None = None,
           compare: Sequence[tuple[str, str]] = (), metric: str = "srcc") -> Any:
    """A report of a pipeline (its file, or its name once run on this store) or of one fit run (its id).

        api.report("pipelines/onuoha2024.yaml")            # the paper's tables, figures, page
        api.report("fit-3fa2c1", compare=[("clip", "clip+brisque")])

    Writes under ``out`` (default ``<store>/reports/<name>``); returns ``iqa_store.report.build.Report``.
    """
    from iqa_store.pipeline import Pipeline, pipeline_record
    from iqa_store.report.build import build_report, collect_runs
    from iqa_store.report.paper import Comparison
    feature_store = _store(store)
    target = str(target)
    spec, title, notes = None, target, []
    if target.endswith((".yaml", ".yml")) or (feature_store.results_dir / "pipelines" / target).is_dir():
        pipeline = Pipeline.load(target) if target.endswith((".yaml", ".yml")) else None
        record = pipeline_record(feature_store, pipeline.name if pipeline else target)
        if pipeline is None and record.get("spec") and Path(record["spec"]).exists():
            pipeline = Pipeline.load(record["spec"])
        spec, runs, notes = (pipeline.report if pipeline else None), record["runs"], record["skipped"]
        title = (spec.paper if spec and spec.paper else "") or record["pipeline"]
        name = record["pipeline"]
    elif (feature_store.results_dir / target).is_dir():
        runs, name = [target], target
    else:
        raise FileNotFoundError(2, "not a pipeline file, a pipeline run on this store, or a fit run id "
                                   "(`iqa-store results ls` lists runs)", target)
    folder = Path(out) if out else feature_store.reports_dir / name
    pairs = [Comparison(a, b, metric) for a, b in compare]
    return build_report(collect_runs(feature_store.results_dir, runs), spec, folder, feature_store, title=title,
                        notes=notes, compare=pairs)


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
    from iqa_store.store import ScopedFeatureError
    try:
        for name in names:
            try:
                store.resolve(name, dataset, extractors=_extractor_names())
            except ScopedFeatureError:
                continue  # trained per split: resolved split by split when fitted
    except StoreError:
        return False
    return True


def _store(store: FeatureStore | str | Path | None) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore(store)


def annotate(dataset: str | None = None, root: str | Path | None = None, images: str | Path | None = None,
             dataset_options: dict[str, Any] | None = None, store: FeatureStore | str | None = None, *,
             kinds: Sequence[str] = ("content", "distortion", "appearance"), captioner: str | None = None,
             labels: str | Path | None = None, pristine: bool = False, variants: int = 1, seed: int = 0,
             refresh: bool = False, workers: int = 1, progress: bool = True,
             log: Callable[[str], None] = _progress_line) -> Any:
    """The text table (``iqa_store.texts``) of a dataset or an image folder: read from the store, or
    made and saved there. The key covers the images (ids, sizes, mtimes), their labels and types,
    the settings and the phrase files, so any change makes a new table; ``refresh`` remakes it.

        api.annotate("demo")
        api.annotate(images="~/data/kadis/ref_imgs", pristine=True, kinds=("distortion", "appearance"))
        api.annotate("csv", root="~/data/mine", dataset_options={"labels": "mos.csv", "labels_column": "scene"})

    ``labels``: a CSV of ``image_id`` (or ``reference_id``) and ``label`` for content texts;
    ``captioner``: a transformers image-text-to-text model for images without a label;
    ``pristine`` (folders only): the images are undistorted and get pristine texts; ``workers``:
    processes measuring the images' appearance (not part of the key: the texts are the same).
    """
    from iqa_store.texts import AnnotationSettings, ImageSet, annotation_key, read_label_file
    from iqa_store.texts import annotate as make_texts
    if (dataset is None) == (images is None):
        raise ValueError("annotate needs a dataset or an image folder (images), not both")
    if pristine and images is None:
        raise ValueError("pristine applies to an image folder (images); a dataset's manifest says which images are pristine")
    settings = AnnotationSettings(kinds=tuple(kinds), captioner=captioner, variants=variants, seed=seed)
    label_map = read_label_file(labels) if labels is not None else None
    if images is not None:
        image_set = ImageSet.from_folder(images, pristine=pristine, labels=label_map)
    else:
        from iqa_store.datasets import load_manifest
        image_set = ImageSet.from_manifest(load_manifest(dataset, root, **dict(dataset_options or {})), label_map)
    key = annotation_key(image_set, settings)
    texts = _store(store)
    table = None if refresh else texts.load_texts(image_set.name, key)
    if table is None:
        table = make_texts(image_set, settings, workers=workers, progress=progress, log=log)
        info = {"root": str(image_set.root), "images": len(image_set.ids), "settings": settings.to_dict(),
                "skipped": table.attrs["skipped"]}
        texts.save_texts(image_set.name, key, table, info)
        table.attrs.update({"key": key, "info": info})
    table.attrs["skipped"] = table.attrs["info"]["skipped"]
    return table

"""Declarative experiment specs (YAML): which extractors on which datasets, which fits, the paper's report.

    name: demo
    datasets:
      - name: demo                      # plus root: and options: for real datasets
      - name: cid2013
        protocol: scenes-4-2            # this dataset's splits, for every step that fits or trains per split
    train:                              # each step: a training stage (`iqa-store train STAGE`)
      - stage: cnniqa                   # with a protocol: one model per split, on every dataset
        protocol: random-80-20
        steps: 2000                     # other keys: TrainConfig fields, or hyperparameters: {...}
      - stage: reiqa-quality            # without one: once, on a folder of images
        images: ${IQA_KADIS_ROOT}/ref_imgs
    extract:                            # each step: ExtractRequest's fields, less the dataset
      - model: brisque
      - model: clip-rn50
        policy: full                    # --policy
        settings: {normalize: true}     # --set
      - model: reiqa-quality
        weights: registry:reiqa-quality/1443   # an encoder from `iqa-store train` (or a FILE)
      - model: cnniqa
        protocol: random-80-20          # a model trained per split: one set per split
    fit:                                # each step: FitRequest's fields
      - features: [brisque, brisque+clip-rn50]
        regressors: [ridge, linear, mlp]
        protocol: random-80-20
        splits: 10
      - features: [brisque]
        train: koniq                    # cross-dataset: fit on all of koniq, test on all of clive
        test: clive
    report: {...}                       # the paper's tables, figures, published numbers (report.paper)

A step says everything the command line can: its keys are the request's fields (``with`` for
``with_``). Everything cached is skipped: re-running a pipeline only does what is missing.
Nothing missing is fatal: a dataset that is not on this machine, a model whose weights are
not, a model or stage not built yet, each is skipped with one line saying what it needs; the
fits then use what there is.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from iqa_store.registry import checked_options
from iqa_store.report.paper import PaperSpec, PaperSpecError
from iqa_store.requests import ExtractRequest, FitRequest, RequestError, request_from_mapping

RUNS_FILE = "pipeline.json"  # in <store>/results/pipelines/<name>/: what the last run did, for `report`


class PipelineError(ValueError):
    """A pipeline file that does not describe a valid experiment."""


@dataclass(frozen=True)
class DatasetStep:
    name: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None  # this dataset's splits in this experiment (scenes-4-2 on CID2013, official on FLIVE)


@dataclass(frozen=True)
class ExtractStep:
    """An extraction for every dataset of the pipeline; ``request`` has the dataset left empty."""

    request: ExtractRequest


@dataclass(frozen=True)
class TrainStep:
    """A training stage: per split on every dataset (``protocol``), once on a folder (``images``), or
    once on the data its own hyperparameters name (neither: MetaIQA's prior, from its datasets' variables)."""

    stage: str
    protocol: str | None = None
    splits: int = 10
    split_seed: int = 0
    images: str | None = None
    datasets: list[str] | None = None  # with a protocol: only these of the pipeline's datasets
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields: steps, batch_size, lr ...


@dataclass(frozen=True)
class Pipeline:
    name: str
    datasets: list[DatasetStep]
    extract: list[ExtractStep]
    fit: list[FitRequest]
    train: list[TrainStep] = field(default_factory=list)
    report: PaperSpec | None = None
    path: Path | None = None
    explicit_protocol: tuple[bool, ...] = ()  # per fit step: its own protocol beats its datasets'

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}" if mark else str(path)
            raise PipelineError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
        unknown = sorted(set(data) - _KEYS) if isinstance(data, dict) else None
        if unknown is None or unknown:
            raise PipelineError(f"{path}: must be a mapping with keys {', '.join(sorted(_KEYS))}"
                                + (f"; unknown key(s) {unknown}" if unknown else ""))
        try:
            fits = _steps(data, "fit", path)
            return cls(name=data.get("name", path.stem),
                       datasets=[_dataset_step(d, f"{path}: dataset {i + 1}")
                                 for i, d in enumerate(_steps(data, "datasets", path))],
                       extract=[_extract_step(e, f"{path}: extract step {i + 1}")
                                for i, e in enumerate(_steps(data, "extract", path))],
                       fit=[request_from_mapping(FitRequest, f, f"{path}: fit step {i + 1}")
                            for i, f in enumerate(fits)],
                       train=[_train_step(s, f"{path}: train step {i + 1}")
                              for i, s in enumerate(_steps(data, "train", path))],
                       report=PaperSpec.from_mapping(data["report"], f"{path}: report") if "report" in data else None,
                       path=path, explicit_protocol=tuple(isinstance(f, dict) and "protocol" in f for f in fits))
        except (TypeError, RequestError, PaperSpecError) as error:
            raise PipelineError(f"{path}: {error}" if str(path) not in str(error) else str(error)) from error

    def dataset(self, name: str) -> DatasetStep | None:
        return next((d for d in self.datasets if d.name == name), None)


_KEYS = {"name", "datasets", "train", "extract", "fit", "report"}


def _steps(data: dict[str, Any], key: str, path: Path) -> list[Any]:
    steps = data.get(key) or []
    if not isinstance(steps, list):
        raise PipelineError(f"{path}: {key} must be a list of steps, got {type(steps).__name__}")
    return steps


def _dataset_step(data: Any, where: str) -> DatasetStep:
    _require_mapping(data, where)
    return DatasetStep(**checked_options(DatasetStep, data, where, RequestError))


def _require_mapping(data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise RequestError(f"{where}: must be a mapping of keys to values, got {type(data).__name__}")


def _extract_step(data: dict[str, Any], where: str) -> ExtractStep:
    _require_mapping(data, where)
    data = dict(data)
    data.pop("optional", None)  # from before every model whose weights are absent was skipped: accepted, changes nothing
    if "encoder" in data:  # the key before weights took registry: names
        data["weights"] = f"registry:{data.pop('encoder')}"
    for key in ("dataset", "root", "dataset_options"):
        if key in data:
            raise RequestError(f"{where}: {key!r} comes from the pipeline's datasets list, not from a step")
    return ExtractStep(request_from_mapping(ExtractRequest, {"dataset": "", **data}, where))


def _train_step(data: Any, where: str) -> TrainStep:
    _require_mapping(data, where)
    data = dict(data)
    if "stage" not in data:
        raise RequestError(f"{where}: needs a stage (`iqa-store train --help` lists them)")
    own = {f.name for f in dataclasses.fields(TrainStep)} - {"training"}
    step = TrainStep(**checked_options(TrainStep, {k: v for k, v in data.items() if k in own}, where, RequestError),
                     training={k: v for k, v in data.items() if k not in own})
    if step.protocol is not None and step.images is not None:
        raise RequestError(f"{where}: give a protocol (trained per split on every dataset) or images "
                           "(a folder, trained once), not both")
    return step


@dataclass
class PipelineRun:
    """What a run did: the fits' outcomes, and one line per thing skipped (what it needs)."""

    outcomes: list[Any] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    record: Path | None = None


def run_pipeline(pipeline: Pipeline, store: Any, *, device: str = "auto", workers: int | None = None,
                 roots: dict[str, str] | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> PipelineRun:
    """Train, extract on every dataset there is, then fit; skips (with a line) what cannot run here.

    ``roots``: dataset name -> root folder, over the pipeline's own (the CLI's ``--root NAME=DIR``).
    """
    from iqa_store import api
    from iqa_store.datasets import load_manifest
    from iqa_store.store import StoreError
    run = PipelineRun()

    def skip(line: str) -> None:
        run.skipped.append(line)
        log(f"skip {line}")

    datasets = [dataclasses.replace(d, root=(roots or {}).get(d.name, d.root)) for d in pipeline.datasets]
    present = []
    for dataset in datasets:
        missing = _missing_root(dataset)
        if missing:
            skip(missing)
            continue
        manifest = load_manifest(dataset.name, dataset.root, **dataset.options)
        log(f"dataset {manifest.dataset}: {len(manifest)} images ({manifest.info.get('labels', 'labels as published')})")
        present.append((dataset, manifest.dataset))
    run.datasets = [name for _, name in present]
    _run_training(pipeline.train, present, store, device, progress, log, skip)
    available: dict[str, set[str]] = {name: set() for _, name in present}
    for dataset, name in present:
        for step in pipeline.extract:
            request = dataclasses.replace(step.request, dataset=dataset.name, root=dataset.root,
                                          dataset_options=dataset.options, device=device, workers=workers,
                                          **_split_fields(step.request.protocol, dataset))
            why = _cannot_extract(request, store)
            if why:
                if name == present[0][1]:  # say it once, not once per dataset
                    skip(f"{request.model}: {why}")
                continue
            try:
                result = api.extract(request, store=store, progress=progress, log=log)
            except StoreError as error:  # a model trained per split whose encoders are not all in the store
                skip(f"{request.model} on {name}: {error}")
                continue
            for report in result if isinstance(result, list) else [result]:
                log(report.summary())
            available[name].add(request.model)
    for index, step in enumerate(pipeline.fit):
        run.outcomes += _run_fit(step, pipeline, index, available, store, progress, skip)
    run.record = _record(pipeline, store, run)
    return run


def _missing_root(dataset: DatasetStep) -> str | None:
    """Why a dataset is not on this machine (no root given, none in its variable, no default), else None."""
    from iqa_store.datasets import build_adapter
    from iqa_store.datasets.manifest import ManifestError
    adapter = build_adapter(dataset.name, dataset.options)
    if dataset.root is not None or (adapter.env_var and os.environ.get(adapter.env_var)):
        return None  # given: anything wrong with it is an error, not a skip
    try:
        adapter.resolve_root(None)  # the variable, or the adapter's own default (the demo's cache)
    except ManifestError:
        hint = f"set {adapter.env_var}=DIR or pass" if adapter.env_var else "pass"
        return f"dataset {dataset.name}: not on this machine; {hint} --root {dataset.name}=DIR ({adapter.layout})"
    return None


def _split_fields(protocol: str | None, dataset: DatasetStep) -> dict[str, Any]:
    """A per-split step on ``dataset`` uses the dataset's protocol when it declares one."""
    return {"protocol": dataset.protocol} if protocol and dataset.protocol else {}


def _run_training(steps: list[TrainStep], present: list[tuple[DatasetStep, str]], store: Any, device: str,
                  progress: bool, log: Callable[[str], None], skip: Callable[[str], None]) -> None:
    """Every training step (each cached by its run's fingerprint: a re-run registers nothing new)."""
    from iqa_store.store import StoreError
    from iqa_store.train import STAGES
    for step in steps:
        if step.stage not in STAGES:
            skip(f"train {step.stage}: not built yet (no training stage {step.stage!r} is registered; "
                 f"known: {', '.join(STAGES.names())})")
            continue
        if step.images is not None:
            folder = Path(os.path.expandvars(step.images)).expanduser()
            if "$" in str(folder) or not folder.is_dir():
                skip(f"train {step.stage}: its images {step.images} are not on this machine")
                continue
            jobs: list[dict[str, Any]] = [{"images": str(folder)}]
        elif step.protocol is None:
            jobs = [{}]
        else:
            jobs = [{"dataset": d.name, "root": d.root, "dataset_options": d.options,
                     "protocol": d.protocol or step.protocol, "splits": step.splits, "split_seed": step.split_seed}
                    for d, name in present if step.datasets is None or name in step.datasets]
        from iqa_store import api
        for job in jobs:
            try:
                reports = api.train(step.stage, store=store, hyperparameters=step.hyperparameters, progress=progress,
                                    log=log, **job, **{"device": device, **step.training})
            except (ValueError, TypeError, StoreError) as error:  # what the stage needs and the step, data or store lack
                skip(f"train {step.stage}{' on ' + job['dataset'] if 'dataset' in job else ''}: {error}")
                continue
            for report in reports:
                log(report.summary())


def _cannot_extract(request: ExtractRequest, store: Any) -> str | None:
    """Why ``request`` cannot run on this machine now (model not built, weights missing), else None."""
    from iqa_store import api
    from iqa_store.extractors import EXTRACTORS
    from iqa_store.store import StoreError
    if request.model not in EXTRACTORS and request.model.partition(":")[0] not in EXTRACTORS.prefixes():
        return f"not built yet (no extractor {request.model!r} is registered; `iqa-store models` lists them)"
    if request.protocol:
        return None  # encoders trained per split are in the store: a missing one is named by extraction itself
    try:
        extractor = api.build_extractor(request.model, weights=request.weights, store=store,
                                        random_init=request.random_init, **request.extractor_settings())
    except StoreError as error:
        return f"its encoder is not in the store ({error}); train it first (a train step, or `iqa-store train`)"
    if not extractor.weights_available():
        return f"needs weights this machine lacks ({extractor.weights_source()}; see README, 'Real weights')"
    return None


def _run_fit(step: FitRequest, pipeline: Pipeline, index: int, available: dict[str, set[str]], store: Any,
             progress: bool, skip: Callable[[str], None]) -> list[Any]:
    from iqa_store import api
    from iqa_store.store import StoreError
    if step.cross_dataset:
        missing = [d for d in (step.train, step.test) if d not in available]
        lacking = [] if missing else [f for f in step.features
                                      if not _extracted(f, available[step.train] & available[step.test])]
        if missing or lacking:
            skip(f"fit {step.train}->{step.test}: " + (f"dataset(s) {', '.join(map(str, missing))} not here" if missing
                                                       else f"{', '.join(lacking)} not extracted on both datasets"))
            return []
        try:
            return [api.fit(step, store=store, progress=progress)]
        except StoreError as error:  # sets of a per-split model, or of other settings, on one side only
            skip(f"fit {step.train}->{step.test}: {error}")
            return []
    outcomes = []
    for dataset, models in available.items():
        if step.datasets and dataset not in step.datasets:
            continue
        features = tuple(f for f in step.features if _extracted(f, models))
        lacking = sorted(set(step.features) - set(features))
        if lacking:
            skip(f"fit on {dataset}: {', '.join(lacking)} (features not extracted)")
        if not (features or step.all_combos or step.cross):
            continue
        declared = pipeline.dataset(dataset)
        protocol = {} if pipeline.explicit_protocol[index] or declared is None or not declared.protocol else \
            {"protocol": declared.protocol}
        outcomes.append(api.fit(dataclasses.replace(step, features=features, datasets=(dataset,), **protocol),
                                store=store, progress=progress))
    return outcomes


def _extracted(combination: str, models: set[str]) -> bool:
    """Whether every feature of ``combination`` was extracted: by its model's name, or a short name of
    it as the store resolves one (``openclip`` for ``openclip:ARCH:TAG``)."""
    names = {m.replace(":", "-") for m in models}
    return all(n in models or any(m.startswith(n + "-") for m in names) for n in combination.split("+"))


def _record(pipeline: Pipeline, store: Any, run: PipelineRun) -> Path:
    """``results/pipelines/<name>/pipeline.json``: the spec file, its runs and what was skipped."""
    folder = store.results_dir / "pipelines" / pipeline.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUNS_FILE
    runs = sorted({str(o.run_dir.relative_to(store.results_dir)) for o in run.outcomes if o.run_dir is not None})
    path.write_text(json.dumps({"pipeline": pipeline.name, "spec": str(pipeline.path.resolve()) if pipeline.path else None,
                                "runs": runs, "datasets": run.datasets, "skipped": run.skipped}, indent=2) + "\n")
    return path


def pipeline_record(store: Any, name: str) -> dict[str, Any]:
    """What the last ``run`` of pipeline ``name`` recorded (``_record``)."""
    path = store.results_dir / "pipelines" / name / RUNS_FILE
    if not path.exists():
        raise FileNotFoundError(2, f"pipeline {name!r} has not been run on this store (no record)", str(path))
    return json.loads(path.read_text())

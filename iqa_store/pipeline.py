"""Declarative experiment specs (YAML): which extractors on which datasets, which fits.

    name: demo
    datasets:
      - name: demo                      # plus root: and options: for real datasets
    extract:                            # each step: ExtractRequest's fields, less the dataset
      - model: brisque
      - model: clip-rn50
        policy: full                    # --policy
        settings: {normalize: true}     # --set
        optional: true                  # skipped, with a note, when its weights are not on disk
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

A step says everything the command line can: its keys are the request's fields (``with`` for
``with_``). Everything cached is skipped: re-running a pipeline only does what is missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from iqa_store.registry import checked_options
from iqa_store.requests import ExtractRequest, FitRequest, RequestError, request_from_mapping


class PipelineError(ValueError):
    """A pipeline file that does not describe a valid experiment."""


@dataclass(frozen=True)
class DatasetStep:
    name: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractStep:
    """An extraction for every dataset of the pipeline; ``request`` has the dataset left empty."""

    request: ExtractRequest
    optional: bool = False


@dataclass(frozen=True)
class Pipeline:
    name: str
    datasets: list[DatasetStep]
    extract: list[ExtractStep]
    fit: list[FitRequest]

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
            return cls(name=data.get("name", path.stem),
                       datasets=[_dataset_step(d, f"{path}: dataset {i + 1}")
                                 for i, d in enumerate(_steps(data, "datasets", path))],
                       extract=[_extract_step(e, f"{path}: extract step {i + 1}")
                                for i, e in enumerate(_steps(data, "extract", path))],
                       fit=[request_from_mapping(FitRequest, f, f"{path}: fit step {i + 1}")
                            for i, f in enumerate(_steps(data, "fit", path))])
        except (TypeError, RequestError) as error:
            raise PipelineError(f"{path}: {error}" if str(path) not in str(error) else str(error)) from error


_KEYS = {"name", "datasets", "extract", "fit"}


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
    optional = bool(data.pop("optional", False))
    if "encoder" in data:  # the key before weights took registry: names
        data["weights"] = f"registry:{data.pop('encoder')}"
    for key in ("dataset", "root", "dataset_options"):
        if key in data:
            raise RequestError(f"{where}: {key!r} comes from the pipeline's datasets list, not from a step")
    return ExtractStep(request_from_mapping(ExtractRequest, {"dataset": "", **data}, where), optional)


def run_pipeline(pipeline: Pipeline, store: Any, *, device: str = "auto", workers: int | None = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> list[Any]:
    """Run every extraction on every dataset, then every fit; returns the fit outcomes."""
    from iqa_store import api
    from iqa_store.datasets import load_manifest
    available: dict[str, set[str]] = {}
    for dataset in pipeline.datasets:
        manifest = load_manifest(dataset.name, dataset.root, **dataset.options)
        log(f"dataset {manifest.dataset}: {len(manifest)} images ({manifest.info.get('labels', 'labels as published')})")
        available[manifest.dataset] = set()
        for step in pipeline.extract:
            request = dataclasses.replace(step.request, dataset=dataset.name, root=dataset.root,
                                          dataset_options=dataset.options, device=device, workers=workers)
            if step.optional and not _weights_on_disk(request, store):
                log(f"skip {request.model}: its weights are not on this machine (optional in this pipeline; "
                    f"see README, 'Real weights')")
                continue
            result = api.extract(request, store=store, progress=progress, log=log)
            for report in result if isinstance(result, list) else [result]:
                log(report.summary())
            available[manifest.dataset].add(request.model)
    outcomes = []
    for step in pipeline.fit:
        if step.cross_dataset:
            outcomes.append(api.fit(step, store=store, progress=progress))
            continue
        for dataset, models in available.items():
            features = tuple(f for f in step.features if set(f.split("+")) <= models)
            skipped = sorted(set(step.features) - set(features))
            if skipped:
                log(f"fit on {dataset}: skipping {skipped} (features not extracted)")
            if not (features or step.all_combos or step.cross):
                continue
            outcomes.append(api.fit(dataclasses.replace(step, features=features, datasets=(dataset,)), store=store,
                                    progress=progress))
    return outcomes


def _weights_on_disk(request: ExtractRequest, store: Any) -> bool:
    from iqa_store import api
    if request.protocol:
        return True  # encoders trained per split are in the store: a missing one is named by extraction itself
    extractor = api.build_extractor(request.model, weights=request.weights, store=store,
                                    random_init=request.random_init, **request.extractor_settings())
    return extractor.weights_available()

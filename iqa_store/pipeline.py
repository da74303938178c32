"""Declarative experiment specs (YAML): which extractors on which datasets, which fits.

    name: demo
    datasets:
      - name: demo                      # plus root: and options: for real datasets
    extract:
      - model: brisque
      - model: clip-vitb16
        optional: true                  # skipped, with a note, when its weights are not on disk
      - model: reiqa-quality
        encoder: reiqa-quality/1443     # an encoder from `iqa-store pretrain` (or weights: FILE)
    fit:
      - features: [brisque, brisque+clip-vitb16]
        regressors: [ridge, linear, mlp]
        protocol: random-80-20
        splits: 10

Everything cached is skipped: re-running a pipeline only does what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml


class PipelineError(ValueError):
    """A pipeline file that does not describe a valid experiment."""


@dataclass(frozen=True)
class DatasetStep:
    name: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractStep:
    model: str
    optional: bool = False
    batch_size: int = 32
    weights: str | None = None
    encoder: str | None = None  # a registry encoder (``iqa-store ls``), for the Re-IQA extractors


@dataclass(frozen=True)
class FitStep:
    features: list[str] = field(default_factory=list)
    all_combos: list[str] | None = None
    max_size: int | None = None
    cross: list[str] | None = None
    with_: list[str] | None = None
    regressors: list[str] = field(default_factory=lambda: ["ridge"])
    protocol: str = "random-80-20"
    splits: int = 10
    seed: int = 0
    plot: str | None = None


@dataclass(frozen=True)
class Pipeline:
    name: str
    datasets: list[DatasetStep]
    extract: list[ExtractStep]
    fit: list[FitStep]

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise PipelineError(f"{path}: not valid YAML: {error}") from error
        try:
            return cls(name=data.get("name", path.stem),
                       datasets=[DatasetStep(**d) for d in data.get("datasets", [])],
                       extract=[ExtractStep(**e) for e in data.get("extract", [])],
                       fit=[FitStep(**{("with_" if k == "with" else k): v for k, v in f.items()}) for f in data.get("fit", [])])
        except TypeError as error:
            raise PipelineError(f"{path}: {error}") from error


def run_pipeline(pipeline: Pipeline, store: Any, *, device: str = "auto", workers: int | None = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> list[Any]:
    """Run every extraction on every dataset, then every fit; returns the fit outcomes."""
    from iqa_store import api
    from iqa_store.datasets import load_manifest
    from iqa_store.extraction.runner import extract
    from iqa_store.extractors import RunOptions
    device = api.resolve_device(device)
    available: dict[str, set[str]] = {}
    for dataset in pipeline.datasets:
        manifest = load_manifest(dataset.name, dataset.root, **dataset.options)
        log(f"dataset {manifest.dataset}: {len(manifest)} images ({manifest.info.get('labels', 'labels as published')})")
        available[manifest.dataset] = set()
        for step in pipeline.extract:
            extractor = api.build_extractor(step.model, device=device, weights=step.weights, encoder=step.encoder,
                                            store=store)
            if step.optional and hasattr(extractor, "weights_available") and not extractor.weights_available():
                log(f"skip {step.model}: its weights are not on this machine (optional in this pipeline; "
                    f"see README, 'Real weights')")
                continue
            options = RunOptions(device=device, batch_size=step.batch_size,
                                 workers=api.default_workers() if workers is None else workers)
            report = extract(manifest, extractor, store, options, progress=progress, log=log)
            log(report.summary())
            available[manifest.dataset].add(step.model)
    outcomes = []
    for step in pipeline.fit:
        for dataset, models in available.items():
            features = [f for f in step.features if set(f.split("+")) <= models]
            skipped = sorted(set(step.features) - set(features))
            if skipped:
                log(f"fit on {dataset}: skipping {skipped} (features not extracted)")
            if not (features or step.all_combos or step.cross):
                continue
            outcomes.append(api.fit(features, all_combos=step.all_combos, max_size=step.max_size, cross=step.cross,
                                    with_=step.with_, datasets=[dataset], protocol=step.protocol, splits=step.splits,
                                    seed=step.seed, regressors=step.regressors, store=store, plot_dir=step.plot,
                                    progress=progress))
    return outcomes

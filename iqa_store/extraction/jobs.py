"""An ``ExtractRequest`` carried out: dataset, weights and extractor resolved, then the runner.

The one place a request becomes work, for the Python API, the CLI, pipelines and the Dask
shard tasks alike. A request with a ``protocol`` extracts a model trained per split: one
feature set per split, each computed with the encoder trained on that split's training rows.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from iqa_store.datasets import load_manifest
from iqa_store.extraction.runner import ExtractionReport, check_shard, extract, parse_shard, resolve_device
from iqa_store.extraction.weights import REGISTRY_PREFIX, ResolvedWeights, resolve_weights, scoped_weights
from iqa_store.extractors import EXTRACTORS, RunOptions
from iqa_store.registry import checked_options
from iqa_store.requests import ExtractRequest, RequestError
from iqa_store.store import FeatureStore, Scope

__all__ = ["build_extractor", "default_workers", "resolve_device", "run_request"]


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def build_extractor(model: str, weights: ResolvedWeights = ResolvedWeights("published"), *, device: str = "cpu",
                    random_init: bool = False, precision: str | None = None, **settings: Any) -> Any:
    """The extractor ``model`` with its resolved weights; only the options it accepts are passed.

    ``device`` may be "auto": it is resolved (importing torch) only for a model whose default
    precision depends on it (bf16 on CUDA), so building BRISQUE never imports torch.
    """
    builder = EXTRACTORS.get(model)
    accepted = {f.name for f in dataclasses.fields(builder()) if f.init}
    if precision is None and "precision" in accepted:
        precision = "bf16" if resolve_device(device).startswith("cuda") else None
    wanted = {"weights": weights.path, "random_init": random_init or None,
              "encoder_config": weights.config if weights.source == "registry" and "encoder_config" in accepted else None,
              "precision": precision, **settings}
    given = {k: v for k, v in wanted.items() if v is not None}
    rejected = sorted(k for k in given if k not in accepted and k != "precision")
    if rejected:
        raise ValueError(f"model {model!r} does not take option(s) {rejected}")
    settings = {k: v for k, v in given.items() if k in accepted}
    return builder(**checked_options(type(builder()), settings, f"model {model!r}"))


def run_request(request: ExtractRequest, store: FeatureStore, *, progress: bool = True,
                log: Callable[[str], None] = print) -> Any:
    """Carry out ``request`` here, or as shard tasks on its Dask cluster; a report, or one per split."""
    _check(request)
    if request.scheduler:
        from iqa_store.extraction.cluster import extract_on_cluster
        return extract_on_cluster(request.scheduler, request.with_absolute_paths(),
                                  FeatureStore(store.root.absolute(), store.chunk_bytes), request.shards, log=log)
    shard = parse_shard(request.shard) if request.shard else None
    device = request.device  # "auto" stays unresolved until a model runs: a cached set imports no torch
    manifest = load_manifest(request.dataset, request.root, **dict(request.dataset_options))
    options = RunOptions(device=device, batch_size=request.batch_size,
                         workers=default_workers() if request.workers is None else request.workers)
    reports: list[ExtractionReport] = []
    for weights in _weights(request, store, manifest):
        _refuse_prior_datasets(weights, manifest.dataset)
        extractor = build_extractor(request.model, weights, device=device, random_init=request.random_init,
                                    precision=request.precision, **request.extractor_settings())
        reports.append(extract(manifest, extractor, store, options, shard=shard, scope=weights.scope,
                               name=request.name, progress=progress, log=log))
    return reports if request.protocol else reports[0]


def run_shard(request: ExtractRequest, store: FeatureStore, shard: tuple[int, int], *,
              log: Callable[[str], None]) -> ExtractionReport:
    """One shard of ``request``, as a cluster's worker runs it (the device resolved there)."""
    index, count = check_shard(shard)
    local = dataclasses.replace(request, scheduler=None, shards=None, shard=f"{index}/{count}")
    return run_request(local, store, progress=False, log=log)


def _refuse_prior_datasets(weights: ResolvedWeights, dataset: str) -> None:
    """An encoder learned from the MOS of every row of some datasets (a prior, or a model fine-tuned
    from one: ``prior_datasets`` in its config) makes no features of those datasets, except one
    trained for a split set without test rows there (the training side of a cross-dataset fit)."""
    from iqa_store.splits import PROTOCOLS
    seen = weights.config.get("prior_datasets") or ()
    untested = weights.scope is not None and not PROTOCOLS.get(weights.scope.protocol).tested
    if dataset in seen and not untested:
        raise RequestError(f"{weights.label} learned from the MOS of every row of {dataset} (its prior was trained on "
                           f"{', '.join(seen)}): its features there would score images it was trained on")


def _check(request: ExtractRequest) -> None:
    if request.shards is not None and not request.scheduler:
        raise RequestError("--shards (the number of shard tasks) needs --scheduler; to run one shard here, "
                           "give --shard I/N")
    if request.scheduler and request.shard is not None:
        raise RequestError("give --shard I/N (one shard, here) or --scheduler (every shard, on a Dask cluster), "
                           "not both")
    if request.shards is not None and request.shards < 1:
        raise RequestError(f"--shards must be at least 1; got {request.shards}")
    if request.protocol and request.scheduler:
        raise RequestError("--protocol extracts one set per split here; run it without --scheduler "
                           "(or give each split's encoder as --weights registry:NAME/FINGERPRINT)")


def _weights(request: ExtractRequest, store: FeatureStore, manifest: Any) -> list[ResolvedWeights]:
    """One resolved weights (the request's), or one per split for a model trained per split."""
    if not request.protocol:
        return [resolve_weights(request.weights, request.model, store)]
    name = None
    if request.weights:
        if not request.weights.startswith(REGISTRY_PREFIX) or "/" in request.weights:
            raise RequestError("with --protocol the encoders are found by their split; --weights may only name "
                               "them: registry:NAME")
        name = request.weights.removeprefix(REGISTRY_PREFIX)
    from iqa_store.splits import ProtocolSpec
    splits = store.splits(manifest, ProtocolSpec(request.protocol, request.splits, request.split_seed))
    scopes = [Scope(manifest.dataset, request.protocol, split.key, split.index) for split in splits]
    command = (f"iqa-store train {request.model} --dataset {request.dataset} --protocol {request.protocol} "
               f"--splits {request.splits} --split-seed {request.split_seed}")
    return scoped_weights(store, request.model, scopes, name, command)

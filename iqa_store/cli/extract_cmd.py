"""``iqa-store extract``: options made from ``ExtractRequest``'s fields."""

from __future__ import annotations

import sys
from typing import Any

import click

from iqa_store.cli.fields import field_options, values
from iqa_store.cli.options import dataset_options, emit, format_option, store_option
from iqa_store.requests import ExtractRequest

_HELP = """Extract MODEL features for every image of DATASET into the store.

    Cached: a second run does no model work; an interrupted run resumes from its last
    finished chunk; unreadable images are reported by file and the rest is extracted.

    Several GPUs or machines: --shard I/N in N processes, or --scheduler to run the shards on a
    Dask cluster. Dask workers started with a nanny (the default) cannot start decoding
    processes, so images are decoded in the task's thread (with a warning); start them with
    --no-nanny for parallel decoding. A shard that finishes before the others exits 0 with
    status "partial"; a failed shard task makes the command exit 1 (run it again to resume).

    A model trained per split (cnniqa) is extracted with --protocol: one feature set per split,
    each from the encoder trained on that split's training rows (`iqa-store train`).

    \b
    Examples:
      iqa-store extract --model brisque --dataset demo
      iqa-store extract --model clip-vitb16 --dataset koniq --root ~/data/koniq10k
      iqa-store extract -m clip-vitb16 -d csv --root ~/photos -o labels=mos.csv -o mos_column=score
      iqa-store extract -m clip-vitb16 -d koniq --weights ~/ckpt/ViT-B-16.safetensors
      iqa-store extract -m reiqa-quality -d koniq --weights reiqa_ckpts/quality_aware_r50.pth
      iqa-store extract -m reiqa-content -d koniq --weights registry:reiqa-content/3fa2
      iqa-store extract -m cnniqa -d koniq --protocol random-80-20
      iqa-store extract -m clip-rn50 -d koniq --policy full -s normalize=true
      CUDA_VISIBLE_DEVICES=1 iqa-store extract -m clip-vitb16 -d koniq --shard 1/4
      iqa-store extract -m clip-vitb16 -d koniq --scheduler tcp://10.0.0.5:8786
    """


def _run(**params: Any) -> None:
    from iqa_store import api
    fmt, store, strict, quiet, encoder, root, options = (
        params.pop(k) for k in ("fmt", "store", "strict", "quiet", "encoder", "root", "dataset_options"))
    request = ExtractRequest(**values(ExtractRequest, params), root=root, dataset_options=options)
    result = api.extract(request, store=store, encoder=encoder, progress=not quiet,
                         log=lambda line: click.echo(line, err=True))
    reports = result if isinstance(result, list) else [result]
    emit(fmt, [r.to_dict() for r in reports] if isinstance(result, list) else result.to_dict(),
         lambda: "\n".join(r.summary() for r in reports))
    if any(r.status == "interrupted" for r in reports):
        sys.exit(130)
    if any(r.status == "failed" for r in reports):  # a shard task on the cluster failed; its committed chunks are kept
        sys.exit(1)
    if strict and any(r.failures for r in reports):
        sys.exit(1)


extract = click.Command("extract", callback=_run, help=_HELP, short_help="Extract a model's features into the store.",
                        params=[*field_options(ExtractRequest),
                                click.Option(["--encoder"], help="Alias of --weights registry:NAME[/FINGERPRINT]."),
                                click.Option(["--strict"], is_flag=True, help="Exit non-zero when any image failed."),
                                click.Option(["--quiet", "-q"], is_flag=True, help="No progress bar.")])
extract = format_option(store_option(dataset_options(extract)))

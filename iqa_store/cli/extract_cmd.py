from __future__ import annotations

import sys

import click

from iqa_store.cli.options import emit, format_option, parse_key_values, store_option


@click.command()
@click.option("--model", "-m", required=True, help="Extractor name (`iqa-store models` lists them).")
@click.option("--dataset", "-d", required=True, help="Dataset adapter: demo, koniq, csv, ...")
@click.option("--root", type=click.Path(), help="Dataset root folder (or the dataset's environment variable).")
@click.option("--option", "-o", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset adapter option, e.g. -o labels=scores.csv -o mos_column=MOS for --dataset csv.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", type=click.IntRange(0), help="DataLoader decoding processes [default: min(4, cores)].")
@click.option("--weights", type=click.Path(), help="Local checkpoint: a safetensors or torch state dict file, or a transformers save_pretrained folder.")
@click.option("--encoder", help="Re-IQA: an encoder of the store's registry, NAME or NAME/FINGERPRINT (iqa-store ls).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), help="[default: bf16 on CUDA, fp32 on CPU]")
@click.option("--policy", help="Preprocessing of neural models: default (the model's resize + centre crop), full (native "
              "resolution), multicrop:N (mean of N crops) or twoscale (full + half scale, concatenated).")
@click.option("--set", "-s", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any other extractor setting, e.g. -s normalize=true (iqa-store models --format json lists them).")
@click.option("--random-init", is_flag=True, help="Random weights. For tests only: the features mean nothing.")
@click.option("--strict", is_flag=True, help="Exit non-zero when any image failed.")
@click.option("--shard", metavar="I/N", help="Compute only shard I of N (the row chunks k with k % N == I); run N such "
              "processes (one per GPU or machine, sharing the store) to split the work; the last one to finish "
              "completes the set.")
@click.option("--scheduler", metavar="ADDRESS", help="Run the shards as tasks on an existing Dask cluster, e.g. "
              "tcp://10.0.0.5:8786 (workers share the store's filesystem; the device is chosen on each worker).")
@click.option("--shards", type=click.IntRange(1), help="With --scheduler: number of shard tasks [default: one per GPU "
              "when the workers advertise --resources GPU=1, else one per worker].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@store_option
@format_option
def extract(model: str, dataset: str, root: str | None, dataset_options: tuple[str, ...], device: str, batch_size: int,
            workers: int | None, weights: str | None, encoder: str | None, precision: str | None, policy: str | None,
            settings: tuple[str, ...], random_init: bool, shard: str | None, scheduler: str | None, shards: int | None,
            strict: bool, quiet: bool, store: str, fmt: str) -> None:
    """Extract MODEL features for every image of DATASET into the store.

    Cached: a second run does no model work; an interrupted run resumes from its last
    finished chunk; unreadable images are reported by file and the rest is extracted.

    Several GPUs or machines: --shard I/N in N processes, or --scheduler to run the shards on a
    Dask cluster. Dask workers started with a nanny (the default) cannot start decoding
    processes, so images are decoded in the task's thread (with a warning); start them with
    --no-nanny for parallel decoding. A shard that finishes before the others exits 0 with
    status "partial"; a failed shard task makes the command exit 1 (run it again to resume).

    \b
    Examples:
      iqa-store extract --model brisque --dataset demo
      iqa-store extract --model clip-vitb16 --dataset koniq --root ~/data/koniq10k
      iqa-store extract -m clip-vitb16 -d csv --root ~/photos -o labels=mos.csv -o mos_column=score
      iqa-store extract -m clip-vitb16 -d koniq --weights ~/ckpt/ViT-B-16.safetensors
      iqa-store extract -m reiqa-quality -d koniq --weights reiqa_ckpts/quality_aware_r50.pth
      iqa-store extract -m reiqa-content -d koniq --encoder reiqa-content/3fa2
      iqa-store extract -m clip-rn50 -d koniq --policy full -s normalize=true
      CUDA_VISIBLE_DEVICES=1 iqa-store extract -m clip-vitb16 -d koniq --shard 1/4
      iqa-store extract -m clip-vitb16 -d koniq --scheduler tcp://10.0.0.5:8786
    """
    from iqa_store import api
    report = api.extract(model, dataset, root=root, store=store, device=device, batch_size=batch_size, workers=workers,
                         weights=weights, encoder=encoder, random_init=random_init, precision=precision,
                         dataset_options=parse_key_values(dataset_options), shard=shard, scheduler=scheduler,
                         shards=shards, progress=not quiet,
                         log=lambda line: click.echo(line, err=True),
                         **parse_key_values(settings, "--set", numbers=True), **({"policy": policy} if policy else {}))
    emit(fmt, report.to_dict(), report.summary)
    if report.status == "interrupted":
        sys.exit(130)
    if report.status == "failed":  # a shard task on the cluster failed; its committed chunks are kept
        sys.exit(1)
    if strict and report.failures:
        sys.exit(1)

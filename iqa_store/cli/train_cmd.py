"""``iqa-store train STAGE``: one subcommand per registered stage, its options made from its fields.

``iqa-store pretrain STAGE`` is the same group under its earlier name.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from iqa_store.cli.fields import field_options, values
from iqa_store.cli.options import checked_device, dataset_options, emit, format_option, store_option


class StageGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        from iqa_store.train import STAGES
        return STAGES.names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from iqa_store.train import STAGES
        return _stage_command(name, STAGES.get(name)) if name in STAGES.names() else None


@click.group(cls=StageGroup)
def train() -> None:
    """Train a learned model; each finished run registers an encoder in the store.

    Stages that learn from MOS (cnniqa) train one model per split of --protocol, each on that
    split's training rows only; `iqa-store extract --protocol` then writes one feature set per
    split, and `iqa-store fit` uses each on its own split.

    \b
    Examples:
      iqa-store train reiqa-quality --images ~/data/kadis/pristine --batch-size 64 --epochs 25
      iqa-store train reiqa-quality --dataset demo --backbone resnet18 --patch 96 --steps 300 --lr 0.05
      iqa-store train cnniqa --dataset koniq --protocol random-80-20
      iqa-store train cnniqa --dataset koniq --protocol train-all   # for cross-dataset fits
      iqa-store train metaiqa-prior --roots kadid10k=~/data/kadid10k,tid2013=~/data/tid2013
      iqa-store train metaiqa --dataset clive --protocol random-70-10-20 --prior metaiqa-prior
      torchrun --nproc_per_node 8 -m iqa_store.cli train reiqa-content --images ~/data/imagenet/train
    """


@click.group(cls=StageGroup)
def pretrain() -> None:
    """The earlier name of `iqa-store train`: the same stages with the same options.

    \b
    Examples:
      iqa-store pretrain reiqa-quality --images ~/data/kadis/pristine --batch-size 64 --epochs 25
      iqa-store pretrain reiqa-content --dataset demo --backbone resnet-tiny --steps 100
    """


def _stage_command(name: str, stage: Any) -> click.Command:
    from iqa_store.train.stage import Data
    defaults = stage.defaults
    supervised = stage.data is Data.IMAGES_MOS
    own_data = stage.data is Data.DATASETS_MOS  # its datasets are its own options
    data = [] if own_data else [click.Option(["--dataset", "-d"], required=supervised,
                                             help="Train on this dataset's split training rows." if supervised else
                                             "Train on a registered dataset's images (labels are not used).")]
    if own_data:
        data += [click.Option(["--checkpoint-dir"], type=click.Path(file_okay=False), help="[default: STORE/pretrain/NAME-RUN]")]
    elif supervised:
        data += [click.Option(["--protocol", "-p"], required=True,
                              help="Split protocol: one model per split, each on its training rows (train-all: "
                                   "every row, for cross-dataset fits)."),
                 click.Option(["--splits"], type=click.IntRange(1), default=10, show_default=True,
                              help="Number of splits (as fit's --splits)."),
                 click.Option(["--split-seed"], type=int, default=0, show_default=True, help="Seed of the splits (fit's --seed)."),
                 click.Option(["--split", "only_splits"], type=click.IntRange(0), multiple=True,
                              help="Train only this split (repeat) [default: every split].")]
    else:
        data += [click.Option(["--images"], type=click.Path(file_okay=False), help="Folder of training images (searched recursively)."),
                 click.Option(["--checkpoint-dir"], type=click.Path(file_okay=False), help="[default: STORE/pretrain/NAME-RUN]")]
    params = [*field_options(stage), *data,
              click.Option(["--epochs"], type=click.IntRange(1), help=f"Passes over the images [default: {defaults.epochs}]."),
              click.Option(["--steps"], type=click.IntRange(1), help="Total optimiser steps; overrides --epochs."),
              click.Option(["--batch-size"], type=click.IntRange(1), help=f"Source images per step, all processes together [default: {defaults.batch_size}]."),
              click.Option(["--lr"], type=float, help=f"Peak learning rate [default: {defaults.lr}]."),
              click.Option(["--optimizer"], type=click.Choice(["sgd", "adam", "adamw"]), help=f"[default: {defaults.optimizer}]"),
              click.Option(["--weight-decay"], type=float, help=f"[default: {defaults.weight_decay}]"),
              click.Option(["--schedule"], type=click.Choice(["cosine", "constant"]), help=f"Learning-rate schedule [default: {defaults.schedule}]."),
              click.Option(["--warmup-steps"], type=click.IntRange(0), help=f"Linear warm-up steps [default: {defaults.warmup_epochs:g} epoch(s) of steps]."),
              click.Option(["--seed"], type=int, default=0, show_default=True, help="Seed of the weights and of every random draw."),
              click.Option(["--precision"], type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="bf16 autocast (CUDA)."),
              click.Option(["--device"], default="auto", show_default=True, callback=checked_device,
                           help="auto, cpu, cuda (under torchrun: each process its own GPU)."),
              click.Option(["--workers"], type=click.IntRange(0), help="DataLoader processes making the samples [default: min(4, cores)]."),
              click.Option(["--checkpoint-every"], type=click.IntRange(1), default=100, show_default=True, help="Steps between checkpoints."),
              click.Option(["--name"], help=f"Registry name of the encoder [default: {name}]."),
              click.Option(["--plot"], type=click.Path(dir_okay=False), help="Write the loss curve to this PNG (one model)."),
              click.Option(["--quiet", "-q"], is_flag=True, help="No progress bar.")]
    command = click.Command(name, params=params, callback=lambda **kw: _run(name, stage, kw),
                            help=(stage.__doc__ or "").strip() or None, short_help=_first_line(stage))
    return format_option(store_option(command if own_data else dataset_options(command)))


def _run(name: str, stage: Any, options: dict[str, Any]) -> None:
    from iqa_store import api
    from iqa_store.train.trainer import TrainingInterrupted

    hyper = values(stage, options)
    fmt, quiet, plot, workers = options.pop("fmt"), options.pop("quiet"), options.pop("plot"), options.pop("workers")
    if "only_splits" in options:
        options["only_splits"] = list(options["only_splits"]) or None
    try:
        reports = api.train(
            name, dataset_options=options.pop("dataset_options", None), hyperparameters=hyper,
            progress=not quiet, log=lambda line: click.echo(line, err=True),
            device=api.resolve_device(options.pop("device")),
            workers=api.default_workers() if workers is None else workers, **options)
    except TrainingInterrupted as stopped:
        click.echo(f"interrupted: {stopped}", err=True)
        sys.exit(130)
    emit(fmt, reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports],
         lambda: "\n".join(r.summary() for r in reports))
    if plot:
        from iqa_store.report.plots import loss_curve
        curve = reports[0].encoder.provenance["loss_curve"]  # the whole run's, also when resumed or cached
        click.echo(f"loss curve: {loss_curve(curve, plot, f'{name}: {reports[0].encoder.id}')}", err=True)


def _first_line(stage: Any) -> str:
    return (stage.__doc__ or "").strip().splitlines()[0] if stage.__doc__ else ""

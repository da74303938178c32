"""``iqa-store pretrain STAGE``: one subcommand per registered stage, options made from its fields."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from iqa_store.cli.options import emit, format_option, parse_key_values, store_option

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


class StageGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        from iqa_store.train import STAGES
        return STAGES.names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from iqa_store.train import STAGES
        return _stage_command(name, STAGES.get(name)) if name in STAGES.names() else None


@click.group(cls=StageGroup)
def pretrain() -> None:
    """Contrastive pretraining stages; each finished run registers an encoder in the store.

    \b
    Examples:
      iqa-store pretrain reiqa-quality --images ~/data/kadis/pristine --batch-size 64 --epochs 25
      iqa-store pretrain reiqa-quality --dataset demo --backbone resnet18 --patch 96 --steps 300 --lr 0.05
      torchrun --nproc_per_node 8 -m iqa_store.cli pretrain reiqa-content --images ~/data/imagenet/train
    """


def _stage_command(name: str, stage: Any) -> click.Command:
    defaults = stage.defaults
    params = [_field_option(f) for f in dataclasses.fields(stage) if f.init]
    params += [
        click.Option(["--images"], type=click.Path(file_okay=False), help="Folder of training images (searched recursively)."),
        click.Option(["--dataset", "-d"], help="Train on a registered dataset's images instead (labels are not used)."),
        click.Option(["--root"], type=click.Path(), help="Dataset root (or the dataset's environment variable)."),
        click.Option(["--option", "-o", "dataset_options"], multiple=True, metavar="KEY=VALUE", help="Dataset adapter option."),
        click.Option(["--epochs"], type=click.IntRange(1), help=f"Passes over the images [default: {defaults.epochs}]."),
        click.Option(["--steps"], type=click.IntRange(1), help="Total optimiser steps; overrides --epochs."),
        click.Option(["--batch-size"], type=click.IntRange(1), help=f"Source images per step, all processes together [default: {defaults.batch_size}]."),
        click.Option(["--lr"], type=float, help=f"Peak learning rate, cosine-annealed [default: {defaults.lr}]."),
        click.Option(["--optimizer"], type=click.Choice(["sgd", "adamw"]), help=f"[default: {defaults.optimizer}]"),
        click.Option(["--weight-decay"], type=float, help=f"[default: {defaults.weight_decay}]"),
        click.Option(["--warmup-steps"], type=click.IntRange(0), default=0, show_default=True),
        click.Option(["--seed"], type=int, default=0, show_default=True),
        click.Option(["--precision"], type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="bf16 autocast (CUDA)."),
        click.Option(["--device"], default="auto", show_default=True, help="auto, cpu, cuda (under torchrun: each process its own GPU)."),
        click.Option(["--workers"], type=click.IntRange(0), help="DataLoader processes making the views [default: min(4, cores)]."),
        click.Option(["--checkpoint-every"], type=click.IntRange(1), default=100, show_default=True, help="Steps between checkpoints."),
        click.Option(["--checkpoint-dir"], type=click.Path(file_okay=False), help="[default: STORE/pretrain/NAME-RUN]"),
        click.Option(["--name"], help=f"Registry name of the encoder [default: {name}]."),
        click.Option(["--plot"], type=click.Path(dir_okay=False), help="Write the loss curve to this PNG."),
        click.Option(["--quiet", "-q"], is_flag=True, help="No progress bar."),
    ]
    command = click.Command(name, params=params, callback=lambda **kw: _run(name, stage, kw),
                            help=(stage.__doc__ or "").strip() or None, short_help=_first_line(stage))
    return format_option(store_option(command))


def _field_option(field: dataclasses.Field) -> click.Option:
    flag = "--" + field.name.replace("_", "-")
    kind = _TYPES[field.type if isinstance(field.type, str) else field.type.__name__]
    if kind is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", field.name], default=field.default, show_default=True,
                            help=field.metadata.get("help"))
    return click.Option([flag, field.name], type=kind, default=field.default, show_default=True,
                        help=field.metadata.get("help"))


def _run(name: str, stage: Any, options: dict[str, Any]) -> None:
    from iqa_store import api
    from iqa_store.train import pretrain as run_pretraining
    from iqa_store.train.trainer import TrainingInterrupted

    hyper = {f.name: options.pop(f.name) for f in dataclasses.fields(stage) if f.init}
    fmt, quiet, plot = options.pop("fmt"), options.pop("quiet"), options.pop("plot")
    workers = options.pop("workers")
    try:
        report = run_pretraining(
            name, images=options.pop("images"), dataset=options.pop("dataset"), root=options.pop("root"),
            dataset_options=parse_key_values(options.pop("dataset_options")), store=options.pop("store"),
            hyperparameters=hyper, checkpoint_dir=options.pop("checkpoint_dir"), progress=not quiet,
            log=lambda line: click.echo(line, err=True), device=api.resolve_device(options.pop("device")),
            workers=api.default_workers() if workers is None else workers, **options)
    except TrainingInterrupted as stopped:
        click.echo(f"interrupted: {stopped}", err=True)
        sys.exit(130)
    emit(fmt, report.to_dict(), report.summary)
    if plot:
        from iqa_store.report.plots import loss_curve
        curve = report.encoder.provenance["loss_curve"]  # the whole run's, also when resumed or cached
        click.echo(f"loss curve: {loss_curve(curve, plot, f'{name}: {report.encoder.id}')}", err=True)


def _first_line(stage: Any) -> str:
    return (stage.__doc__ or "").strip().splitlines()[0] if stage.__doc__ else ""
train = pretrain

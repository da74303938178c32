"""``iqa-store results ls / show / export / features``: the fitted runs of a store, for notebooks."""

from __future__ import annotations

from pathlib import Path

import click

from iqa_store.cli.options import emit, format_option, store_option, table


@click.group()
def results() -> None:
    """Fitted runs in the store: list them, show one, export tidy tables and features.

    \b
    Examples:
      iqa-store results ls
      iqa-store results show fit-3fa2c1d0
      iqa-store results export --all -o results.parquet
      iqa-store results features koniq/clip-vitb16/3fa2 clip_koniq.nc
    """


@results.command(name="ls")
@store_option
@format_option
def ls(store: str, fmt: str) -> None:
    """Every fit run: datasets, protocol, combinations, regressors, cells."""
    from iqa_store.report.export import list_runs
    from iqa_store.store import FeatureStore
    runs = list_runs(FeatureStore(store).results_dir)
    rows = [{"run": r["run"], "datasets": ",".join(r["datasets"]), "protocol": ",".join(r["protocol"]),
             "combinations": len(r["combinations"]), "regressors": ",".join(r["regressors"]),
             "splits": r["splits"], "cells": r["cells"]} for r in runs]
    emit(fmt, [{k: v for k, v in r.items() if k != "specs"} for r in runs],
         lambda: table(rows, ["run", "datasets", "protocol", "combinations", "regressors", "splits", "cells"]))


@results.command()
@click.argument("run")
@store_option
@format_option
def show(run: str, store: str, fmt: str) -> None:
    """One run: its spec (what decided its numbers) and its summary over splits."""
    from iqa_store.report import aggregate, format_summary, to_json_records
    from iqa_store.report.export import list_runs
    from iqa_store.store import FeatureStore
    found = [r for r in list_runs(FeatureStore(store).results_dir) if r["run"] == run or r["run"].startswith(run)]
    if len(found) != 1:
        raise ValueError(f"run {run!r} matches {len(found)} runs; `iqa-store results ls` lists them")
    from iqa_store.fit.results import load_results
    summary = aggregate(load_results(FeatureStore(store).results_dir / found[0]["run"]))
    emit(fmt, {**found[0], "summary": to_json_records(summary)},
         lambda: "\n".join([f"run {found[0]['run']}", *(_spec_lines(s) for s in found[0]["specs"]), "",
                            format_summary(summary)]))


def _spec_lines(spec: dict) -> str:
    import json
    return f"spec of {spec.get('dataset')}: " + json.dumps(spec, sort_keys=True)


@results.command()
@click.argument("runs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every run in the store.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="OUT.parquet or OUT.csv: one row per dataset x combination x regressor x split x metric.")
@store_option
def export(runs: tuple[str, ...], every: bool, out: str, store: str) -> None:
    """Tidy results of RUNS (or --all) as Parquet or CSV, readable with pandas."""
    from iqa_store.report.build import collect_runs
    from iqa_store.report.export import list_runs, tidy_results, write_tidy
    from iqa_store.store import FeatureStore
    results_dir = FeatureStore(store).results_dir
    if every == bool(runs):
        raise click.UsageError("name RUNS or give --all, not both or neither")
    names = [r["run"] for r in list_runs(results_dir)] if every else list(runs)
    path = write_tidy(tidy_results(collect_runs(results_dir, names).table), Path(out))
    click.echo(f"wrote {path}")


@results.command()
@click.argument("name")
@click.argument("out", type=click.Path(dir_okay=False))
@store_option
def features(name: str, out: str, store: str) -> None:
    """A feature set (DATASET/EXTRACTOR/FINGERPRINT) as NetCDF for xarray: features, valid, MOS, attributes.

    The same content as `iqa-store export NAME OUT.h5`; open it with xarray.open_dataset(OUT).
    """
    from iqa_store.report.export import feature_set_to_xarray, write_netcdf
    from iqa_store.store import FeatureStore
    feature_store = FeatureStore(store)
    feature_set = feature_store.get(name)
    manifest = feature_store.load_manifest(feature_set.dataset)
    click.echo(f"wrote {write_netcdf(feature_set_to_xarray(feature_set, manifest), Path(out))}")

from __future__ import annotations

import click

from iqa_store.cli.options import emit, format_option, store_option


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command()
@click.option("--features", "-f", multiple=True, help="A combination such as clip+brisque; repeat for more.")
@click.option("--all-combos", help="Every non-empty subset of a comma list, e.g. clip,brisque,reiqa.")
@click.option("--max-size", type=click.IntRange(1), help="Largest subset size for --all-combos.")
@click.option("--cross", help="First group of a cross product, e.g. clip,align,altclip,hps.")
@click.option("--with", "with_", help="Second group of the cross product, e.g. brisque,cnniqa,metaiqa.")
@click.option("--dataset", "-d", "datasets", multiple=True, help="Only these datasets [default: every dataset that has all features].")
@click.option("--protocol", "-p", default="random-80-20", show_default=True,
              help="random-80-20, random-70-10-20, official, scenes-4-2 (CID2013) or zero-shot (a score feature, "
                   "no fitting); grouped by reference image on synthetic datasets.")
@click.option("--train", help="Cross-dataset: fit on all of this dataset (with --test).")
@click.option("--test", help="Cross-dataset: test on all of this dataset (with --train).")
@click.option("--splits", default=10, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--regressor", "-r", "regressors", multiple=True, default=("ridge",), show_default=True,
              help="ridge, linear or mlp; repeat for several.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), help="Write predicted-vs-MOS scatter plots here.")
@click.option("--workers", type=click.IntRange(1),
              help="Fit on a Dask LocalCluster of N worker processes (BLAS threads: cores // N each).")
@click.option("--scheduler", help="Fit on an existing Dask cluster, e.g. tcp://10.0.0.5:8786.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@store_option
@format_option
def fit(features: tuple[str, ...], all_combos: str | None, max_size: int | None, cross: str | None, with_: str | None,
        datasets: tuple[str, ...], protocol: str, splits: int, seed: int, regressors: tuple[str, ...],
        train: str | None, test: str | None, plot_dir: str | None, workers: int | None, scheduler: str | None,
        quiet: bool, store: str, fmt: str) -> None:
    """Fit regressors on stored features against MOS, over combinations and splits.

    Short names resolve per dataset: `clip` is that dataset's clip-vitb16 set when it is the
    only clip-* set; `clip-vitb16@3fa2` picks a fingerprint. Results are appended under
    STORE/results/ as cells finish and summarised (mean, std, median over splits); the same
    command again resumes an interrupted run, fitting only the missing cells.

    \b
    Examples:
      iqa-store fit --features clip+brisque
      iqa-store fit -f clip -f brisque -f clip+brisque -r ridge -r mlp --plot plots/
      iqa-store fit --all-combos clip,brisque,reiqa --max-size 2 --protocol random-70-10-20
      iqa-store fit --cross clip,align,altclip,hps --with brisque,cnniqa,metaiqa --dataset koniq
      iqa-store fit -f clip+brisque --scheduler tcp://scheduler:8786
      iqa-store fit -f clip+brisque --train koniq --test clive
      iqa-store fit -f clipiqa --protocol zero-shot
    """
    from contextlib import nullcontext

    from iqa_store import api
    from iqa_store.report import to_json_records
    cluster = api.dask_executor(scheduler, workers) if (scheduler or workers) else nullcontext(None)
    with cluster as executor:
        outcome = api.fit(list(features), all_combos=_split_list(all_combos), max_size=max_size, cross=_split_list(cross),
                          with_=_split_list(with_), datasets=list(datasets) or None, protocol=protocol, splits=splits,
                          seed=seed, regressors=list(regressors), store=store, plot_dir=plot_dir, progress=not quiet,
                          executor=executor, train=train, test=test)
    emit(fmt, {"run": str(outcome.run_dir), "summary": to_json_records(outcome.aggregate),
               "splits": to_json_records(outcome.table), "plots": [str(p) for p in outcome.plots]},
         lambda: outcome.summary + f"\n\nresults saved in {outcome.run_dir}"
         + "".join(f"\nplot: {p}" for p in outcome.plots))

"""``iqa-store fit``: options made from ``FitRequest``'s fields."""

from __future__ import annotations

import sys
from typing import Any

import click

from iqa_store.cli.fields import field_options, values
from iqa_store.cli.options import emit, format_option, store_option
from iqa_store.requests import FitRequest

_HELP = """Fit regressors on stored features against MOS, over combinations and splits.

    Short names resolve per dataset: `clip` is that dataset's clip-vitb16 set when it is the
    only clip-* set; `clip-vitb16@3fa2` picks a fingerprint. A feature trained per split
    (cnniqa) is used on each split with the set trained on that split's training rows, and a
    fit on splits it was not trained for is refused. Results are appended under STORE/results/
    as cells finish and summarised (mean, std, median over splits); the same command again
    resumes an interrupted run, fitting only the missing cells.

    \b
    Examples:
      iqa-store fit --features clip+brisque
      iqa-store fit -f clip -f brisque -f clip+brisque -r ridge -r mlp --plot plots/
      iqa-store fit --all-combos clip,brisque,reiqa --max-size 2 --protocol random-70-10-20
      iqa-store fit --cross clip,align,altclip,hps --with brisque,cnniqa,metaiqa --dataset koniq
      iqa-store fit -f brisque+cnniqa --dataset demo
      iqa-store fit -f clip+brisque --scheduler tcp://scheduler:8786
      iqa-store fit -f clip+brisque --train koniq --test clive
      iqa-store fit -f clipiqa --protocol zero-shot
    """


def _run(**params: Any) -> None:
    from iqa_store import api
    from iqa_store.report import to_json_records
    fmt, store, quiet = params.pop("fmt"), params.pop("store"), params.pop("quiet")
    request = FitRequest(**values(FitRequest, params))
    try:
        outcome = api.fit(request, store=store, progress=not quiet)
    except OSError as error:
        if not (request.scheduler and _lost_connection(error)):
            raise
        click.echo(f"error: the Dask scheduler at {request.scheduler} cannot be reached or went away "
                   f"({type(error).__name__}: {error}); the cells that finished are kept in the run's table: "
                   "run the same command again once the cluster is back", err=True)
        sys.exit(1)
    emit(fmt, {"run": str(outcome.run_dir), "summary": to_json_records(outcome.aggregate),
               "splits": to_json_records(outcome.table), "plots": [str(p) for p in outcome.plots]},
         lambda: outcome.summary + f"\n\nresults saved in {outcome.run_dir}"
         + "".join(f"\nplot: {p}" for p in outcome.plots))


def _lost_connection(error: BaseException | None) -> bool:
    """Whether the error, or one it was raised from, is a connection to the scheduler that failed."""
    from distributed.comm.core import CommClosedError
    while error is not None:
        if isinstance(error, (CommClosedError, ConnectionError, TimeoutError)):
            return True
        error = error.__cause__
    return False


fit = click.Command("fit", callback=_run, help=_HELP, short_help="Fit regressors on stored features.",
                    params=[*field_options(FitRequest),
                            click.Option(["--quiet", "-q"], is_flag=True, help="No progress bar.")])
fit = format_option(store_option(fit))

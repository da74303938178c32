"""``iqa-store report``: a paper's tables, figures, paired comparisons and one HTML page."""

from __future__ import annotations

import click

from iqa_store.cli.options import emit, format_option, store_option
from iqa_store.fit.schema import METRICS


@click.command()
@click.argument("target")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Folder for the report [default: <store>/reports/NAME].")
@click.option("--compare", nargs=2, multiple=True, metavar="A B",
              help="Also compare two rows (combinations) over their shared splits; repeat.")
@click.option("--metric", default="srcc", show_default=True,
              type=click.Choice(METRICS), help="Metric of --compare.")
@click.option("--open", "open_page", is_flag=True, help="Open index.html in the web browser.")
@store_option
@format_option
def report(target: str, out: str | None, compare: tuple[tuple[str, str], ...], metric: str, open_page: bool,
           store: str, fmt: str) -> None:
    """Report TARGET: a pipeline file, a pipeline's name once run, or a fit run id.

    Tables as Markdown, LaTeX and CSV (mean (std) or median as the protocol says, the best of ours
    per column marked, the paper's value and our difference beside each cell), figures as PNG and
    SVG, paired comparisons (Wilcoxon signed-rank over the same splits), and one self-contained
    index.html.

    \b
    Examples:
      iqa-store report pipelines/onuoha2024.yaml --open
      iqa-store report fit-3fa2c1d0 --compare clip-vitb16 clip-vitb16+brisque
    """
    from iqa_store import api
    built = api.report(target, store=store, out=out, compare=compare, metric=metric)
    if open_page:
        import webbrowser
        webbrowser.open(built.html.resolve().as_uri())
    emit(fmt, {"html": str(built.html), "files": [str(p) for p in built.files],
               "comparisons": [c.to_dict() for c in built.comparisons]},
         lambda: f"{built.markdown}\n\nreport: {built.html}")

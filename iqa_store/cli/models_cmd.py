"""``iqa-store models``: the extractors, their dimensions, weights and licences."""

from __future__ import annotations

import click

from iqa_store.cli.options import emit, format_option, table


@click.command()
@format_option
def models(fmt: str) -> None:
    """Every extractor: stored dimension, where the weights come from, licence note and whether
    the weights are on this machine already (nothing is downloaded). JSON adds each model's
    settings, which `iqa-store extract --set KEY=VALUE` changes.

    \b
    Examples:
      iqa-store models
      iqa-store models --format json
    """
    from iqa_store.extractors.catalog import describe_models
    rows = describe_models()

    def text() -> str:
        shown = [{"model": r["name"], "dim": r["dim"] or "-",
                  "weights": {True: "present", False: "missing", None: "-"}[r["weights_present"]],
                  "source": r["source"] or "-", "licence": r["licence"] or "-"} for r in rows]
        return table(shown, ["model", "dim", "weights", "source", "licence"])
    emit(fmt, rows, text)

"""Options shared by several commands."""

from __future__ import annotations

import json
from typing import Any, Callable

import click

store_option = click.option("--store", "store", envvar="IQA_STORE", default="stores", show_default=True,
                            type=click.Path(file_okay=False), help="Store root (env IQA_STORE).")
format_option = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
                             help="Output format.")


def emit(fmt: str, data: Any, text: Callable[[], str]) -> None:
    """Print ``data`` as JSON or ``text()`` as plain text."""
    click.echo(json.dumps(data, indent=2, default=str) if fmt == "json" else text())

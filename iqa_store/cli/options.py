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


def parse_key_values(pairs: tuple[str, ...], option: str = "--option", numbers: bool = False) -> dict[str, object]:
    """KEY=VALUE pairs as keyword arguments: dashes become underscores, true/false booleans and,
    with ``numbers`` (settings, not file or column names), integers and decimals numbers."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        options[key.replace("-", "_")] = _value(value, numbers)
    return options


def _value(text: str, numbers: bool) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float) if numbers else ():
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def table(rows: list[dict], columns: list[str]) -> str:
    """Rows as aligned text columns under a header line."""
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)

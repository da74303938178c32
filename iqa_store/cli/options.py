"""Options shared by several commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

def _store_root(ctx: click.Context, param: click.Parameter, root: str) -> str:
    """Refuse a folder that holds other things and none of a store's: a mistyped --store must not
    become a store inside someone's photos (a new or empty folder becomes one)."""
    from iqa_store.store import FeatureStore
    path = Path(root)
    if not path.is_dir():
        return root
    store = FeatureStore(path)
    layout = {getattr(store, name).name for name in dir(FeatureStore) if name.endswith("_dir")}
    entries = {entry.name for entry in path.iterdir()}
    if entries & layout or all(name.startswith(".") for name in entries):
        return root
    raise click.BadParameter(f"{root} is not a store: it holds other files and none of {', '.join(sorted(layout))}; "
                             "give a new or empty folder, or an existing store", ctx, param)


store_option = click.option("--store", "store", envvar="IQA_STORE", default="stores", show_default=True,
                            type=click.Path(file_okay=False), callback=_store_root, help="Store root (env IQA_STORE).")
format_option = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
                             help="Output format.")


def dataset_options(command: click.Command) -> click.Command:
    """``--root`` and ``-o KEY=VALUE``: the one definition of how every command that reads a
    dataset through its adapter (extract, import, train, datasets verify) is told where it is and
    how to read it. The options arrive as ``root`` and ``dataset_options`` (a dict of text values;
    the adapter checks and types them, so every command reports a bad option the same way).
    They are listed right after the command's ``--dataset`` when it has one."""
    names = [p.name for p in command.params]
    at = names.index("dataset") + 1 if "dataset" in names else len(names)
    command.params[at:at] = [
        click.Option(["--root"], type=click.Path(file_okay=False),
                     help="Dataset root folder [default: the dataset's environment variable]."),
        click.Option(["--option", "-o", "dataset_options"], multiple=True, metavar="KEY=VALUE",
                     callback=lambda ctx, param, pairs: split_key_values(pairs, "--option"),
                     help="Dataset adapter option, e.g. -o labels=scores.csv -o mos_column=MOS for --dataset csv "
                          "(`iqa-store datasets list` shows each dataset's options).")]
    return command


def checked_device(ctx: click.Context, param: click.Parameter, device: str) -> str:
    """A ``--device`` callback: a misspelt device fails before any work."""
    from iqa_store.requests import RequestError, check_device
    try:
        return check_device(device)
    except RequestError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def emit(fmt: str, data: Any, text: Callable[[], str]) -> None:
    """Print ``data`` as JSON or ``text()`` as plain text."""
    click.echo(json.dumps(data, indent=2, default=str) if fmt == "json" else text())


def split_key_values(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """KEY=VALUE pairs as keyword arguments of text values; dashes in keys become underscores."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        options[key.strip().replace("-", "_")] = value
    return options


def parse_key_values(pairs: tuple[str, ...], option: str, numbers: bool = False) -> dict[str, object]:
    """KEY=VALUE pairs as keyword arguments: true/false booleans and, with ``numbers`` (settings,
    not file or column names), integers and decimals numbers."""
    return {key: _value(value, numbers) for key, value in split_key_values(pairs, option).items()}


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

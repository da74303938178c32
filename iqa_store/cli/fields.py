"""Click options made from dataclass fields: requests and training stages need no CLI code.

Every field type a request or a stage may have becomes an option: ``int``, ``float``, ``str``,
``Path``; ``bool`` as ``--x/--no-x``; an ``Enum`` or ``Literal`` (or ``choices`` metadata) as a
choice; ``X | None`` as an optional ``X``; ``tuple[X, ...]`` and ``list[X]`` as a repeatable
option that also takes commas (``--levels 1,2,3`` or ``--levels 1 --levels 2``); a mapping as
repeatable ``KEY=VALUE``. The help shows each default. ``values(cls, params)`` turns the
parsed options back into the field values, typed.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from pathlib import Path
from typing import Any, Mapping

import click

from iqa_store.cli.options import parse_key_values
from iqa_store.registry import without_none

_SCALARS: dict[Any, Any] = {int: click.INT, float: click.FLOAT, str: click.STRING, Path: click.Path(path_type=Path)}


@dataclasses.dataclass(frozen=True)
class _Kind:
    """How one field is parsed: its click type, and whether it repeats or is KEY=VALUE pairs."""

    click_type: Any
    item: Any  # the Python type of one value
    many: bool = False
    mapping: bool = False
    flag: bool = False


def field_options(cls: type, *, prefix: str = "", skip: tuple[str, ...] = ()) -> list[click.Option]:
    """One option per init field of dataclass ``cls`` (``metadata["cli"]`` False leaves one out)."""
    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip or not f.metadata.get("cli", True):
            continue
        options.append(_option(f, hints[f.name], prefix))
    return options


def values(cls: type, params: dict[str, Any], *, prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Pop the parsed options of ``cls``'s fields from ``params``: field name -> typed value."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        key = prefix.replace("-", "_") + f.name
        if not f.init or f.name in skip or key not in params:
            continue
        out[f.name] = _convert(params.pop(key), _kind(hints[f.name], f), f, " / ".join(_flags(f, prefix)))
    return out


def _flags(f: dataclasses.Field, prefix: str) -> list[str]:
    """The field's option names: ``--prefix-name`` and its extra ``flags``."""
    return ["--" + prefix + f.name.rstrip("_").replace("_", "-"), *f.metadata.get("flags", ())]


def _option(f: dataclasses.Field, hint: Any, prefix: str) -> click.Option:
    kind = _kind(hint, f)
    flag, *extra = _flags(f, prefix)
    names = [flag, *extra, prefix.replace("-", "_") + f.name]
    default = _default(f)
    help_text = f.metadata.get("help") or ""
    if kind.flag:
        return click.Option([f"{flag}/--no-{flag[2:]}", *f.metadata.get("flags", ()), names[-1]],
                            default=bool(default), show_default=True, help=help_text)
    shown = _shown(default)
    if shown is not None:
        help_text = f"{help_text} [default: {shown}]".strip()
    return click.Option(names, type=kind.click_type, multiple=kind.many or kind.mapping,
                        required=bool(f.metadata.get("required")), metavar=f.metadata.get("metavar"),
                        help=help_text)  # no default: click then enforces required (None would count as given)


def _kind(hint: Any, f: dataclasses.Field) -> _Kind:
    hint = without_none(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    choices = f.metadata.get("choices")
    if hint is bool:
        return _Kind(None, bool, flag=True)
    if origin in (tuple, list) or hint in (tuple, list):
        item = without_none(args[0]) if args else str
        return _Kind(click.STRING, item, many=True)
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping) or _is_mapping(origin):
        return _Kind(click.STRING, dict, mapping=True)
    if origin is typing.Literal:
        return _Kind(click.Choice([str(a) for a in args]), type(args[0]))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _Kind(click.Choice([m.value for m in hint]), hint)
    if choices:
        return _Kind(click.Choice(list(choices)), hint)
    if hint not in _SCALARS:
        raise TypeError(f"field {f.name}: no command-line form for type {hint!r}")
    minimum = f.metadata.get("minimum")
    if minimum is not None and hint in (int, float):
        return _Kind((click.IntRange if hint is int else click.FloatRange)(min=minimum), hint)
    return _Kind(_SCALARS[hint], hint)


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _shown(default: Any) -> str | None:
    if default is None or default == () or default == {}:
        return None
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, (tuple, list)):
        return ",".join(str(v) for v in default)
    return str(default)


def _convert(raw: Any, kind: _Kind, f: dataclasses.Field, hint: str) -> Any:
    """A parsed option as the field's value; None (not given) means the field's default.
    ``hint`` names the option in errors, as click does."""
    if kind.flag:
        return bool(raw)
    if kind.mapping:
        return parse_key_values(tuple(raw or ()), hint, numbers=True) if raw else _default(f)
    if kind.many:
        if not raw:
            return _default(f)
        items = [part.strip() for text in raw for part in str(text).split(",") if part.strip()]
        return tuple(_item(item, kind.item, hint) for item in items)
    if raw is None:
        return _default(f)
    return _item(raw, kind.item, hint)


def _item(text: Any, item: Any, hint: str) -> Any:
    if isinstance(item, type) and issubclass(item, enum.Enum):
        return item(text)
    if item in (int, float, Path):
        try:
            return item(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a valid {item.__name__}", param_hint=hint) from None
    return text

"""One registry pattern for extractors, datasets, regressors and pretraining stages.

Entries are registered either directly (a decorator on the builder) or lazily as a
``"module:attribute"`` string, so listing names never imports torch or a model module.
Names may also be resolved by prefix (``openclip:ViT-B-16:openai``) through a factory that
receives the part after the prefix.

The builders are dataclasses whose fields are their options; ``checked_options`` checks and
types the options a user gives one (text from a command line, values from YAML), so every
kind reports an unknown, missing or ill-typed option the same way.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass
class _Entry:
    target: Any  # the object, or a "module:attribute" string until first use
    help: str = ""

    def resolve(self) -> Any:
        if isinstance(self.target, str):
            module_name, _, attribute = self.target.partition(":")
            self.target = getattr(importlib.import_module(module_name), attribute)
        return self.target


class Registry(Generic[T]):
    """Named builders of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, _Entry] = {}
        self._prefixes: dict[str, _Entry] = {}

    def register(self, name: str, target: Any = None, *, help: str = "") -> Any:
        """Register ``target`` under ``name``; used bare it is a decorator.

        ``target`` may be a ``"module:attribute"`` string, resolved on first ``get``.
        """
        if target is None:
            def decorator(obj: T) -> T:
                self.register(name, obj, help=help)
                return obj
            return decorator
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = _Entry(target, help)
        return target

    def register_prefix(self, prefix: str, factory: Any, *, help: str = "") -> None:
        """Resolve every name ``prefix:rest`` by calling ``factory(rest)``."""
        if prefix in self._prefixes:
            raise RegistryError(f"{self.kind} prefix {prefix!r} is already registered")
        self._prefixes[prefix] = _Entry(factory, help)

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name].resolve()
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._prefixes:
            return self._prefixes[prefix].resolve()(rest)
        known = ", ".join(self.names()) or "none"
        raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}")

    def help(self, name: str) -> str:
        return self._entries[name].help

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def prefixes(self) -> list[str]:
        return sorted(self._prefixes)

    def prefix_help(self, prefix: str) -> str:
        return self._prefixes[prefix].help

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def lazy_builder(target: str) -> Callable[..., Any]:
    """A callable that imports ``module:attribute`` only when called."""
    entry = _Entry(target)
    return lambda *args, **kwargs: entry.resolve()(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# options: a builder's dataclass fields, checked against what a user gives


class OptionError(ValueError):
    """An option a builder does not take, lacks or cannot read (wrong type)."""


@dataclass(frozen=True)
class Option:
    """One option of a builder: a dataclass init field, described for users."""

    name: str
    type: Any  # the field's type, ``| None`` removed; Any when it cannot be evaluated
    optional: bool  # None is accepted
    required: bool
    default: Any = None

    def describe(self) -> str:
        """``name (type, required)``, ``name (type, default D)`` or ``name (type, optional)``."""
        need = "required" if self.required else "optional" if self.default is None else f"default {self.default!r}"
        return f"{self.name} ({type_name(self.type)}, {need})"


def options_of(cls: type) -> list[Option]:
    """The options (init fields) of dataclass ``cls``, with their types."""
    found = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = _field_type(cls, f)
        inner = without_none(hint)
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        found.append(Option(f.name, inner, inner is not hint, not has_default, default))
    return found


def checked_options(cls: type, options: Mapping[str, Any], what: str,
                    error: type[OptionError] = OptionError) -> dict[str, Any]:
    """``options`` for dataclass ``cls``, each as its field's type; text is parsed ("true", "3",
    "1,5" for a pair), typed values checked. Unknown, missing and ill-typed options raise
    ``error`` naming ``what`` (e.g. "dataset 'csv'"), the option and the accepted options."""
    known = {o.name: o for o in options_of(cls)}
    listing = ("; its options: " + ", ".join(o.describe() for o in known.values())) if known else \
        "; it takes no options"
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise error(f"{what}: unknown option(s) {', '.join(map(repr, unknown))}{listing}")
    missing = [repr(o.name) for o in known.values() if o.required and o.name not in options]
    if missing:
        raise error(f"{what}: missing option(s) {', '.join(missing)}{listing}")
    typed = {}
    for key, value in options.items():
        option = known[key]
        try:
            typed[key] = None if value is None and option.optional else _convert(option.type, value)
        except (TypeError, ValueError):
            raise error(f"{what}: option {key!r} must be {type_name(option.type)}, got {value!r}") from None
    return typed


def type_name(hint: Any) -> str:
    """A type as users read it: "an integer", "true or false", "2 numbers, as a list or ..."."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        item = {int: "integer", float: "number"}.get(args[0], "value") if args else "value"
        count = "several" if not args or args[-1] is Ellipsis else str(len(args))
        return f"{count} {item}s, as a list or separated by commas"
    if _is_mapping(hint):
        return "a mapping of keys to values"
    names = {str: "text", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}
    return names.get(hint, "any value" if hint is Any else str(hint))


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    """A field's annotation evaluated in the module of the class that declares it (postponed
    annotations; ``get_type_hints`` would also evaluate every ClassVar). Any when it names
    something imported only for type checkers."""
    if not isinstance(f.type, str):
        return f.type
    owner = next((c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {})), cls)
    try:
        return eval(f.type, vars(sys.modules[owner.__module__]))  # our own source's annotation, not user input
    except NameError:
        return Any


def without_none(hint: Any) -> Any:
    """``X | None`` -> ``X``; any other hint unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _is_mapping(hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, Mapping)


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as ``hint``; TypeError or ValueError when it is not one. Types without a
    reading here (unions, mappings, Any) pass unchanged: the builder checks those itself."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        if args and args[-1] is not Ellipsis and len(items) != len(args):
            raise ValueError(f"{len(items)} values")
        return tuple(_convert(args[0] if args else Any, item) for item in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _TRUE + _FALSE:
            raise ValueError(text)
        return text in _TRUE
    if _is_mapping(hint):
        if not isinstance(value, Mapping):
            raise TypeError(type(value).__name__)
        return value
    if hint not in (int, float, str, Path):
        return value
    if isinstance(value, (bool, list, tuple, dict)):
        raise TypeError(type(value).__name__)  # true/false or a list where one scalar is wanted
    if hint is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return hint(value)

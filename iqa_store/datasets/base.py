"""The dataset adapter contract, and the one place where adapter options are checked."""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from iqa_store.datasets.manifest import Manifest, ManifestError

if TYPE_CHECKING:
    from iqa_store.datasets.official import Published


class DatasetOptionError(ManifestError):
    """An adapter option that is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class AdapterOption:
    """One option of a dataset adapter: a dataclass field, described for users."""

    name: str
    type: Any  # the field's type with ``| None`` removed
    optional: bool  # None is accepted
    required: bool
    default: Any = None

    def describe(self) -> str:
        """``name (type, required)``, ``name (type, default D)`` or ``name (type, optional)``."""
        need = "required" if self.required else "optional" if self.default is None else f"default {self.default!r}"
        return f"{self.name} ({_type_name(self.type)}, {need})"


@dataclass
class DatasetAdapter(ABC):
    """Reads one dataset's official layout. Dataclass fields are the adapter's options."""

    name: ClassVar[str]
    env_var: ClassVar[str | None] = None  # where the root comes from when --root is not given
    layout: ClassVar[str] = ""  # human description of the expected tree, used in errors and listings
    citation: ClassVar[str] = ""
    published: ClassVar["Published | None"] = None  # counts and scale `datasets verify` checks against

    @classmethod
    def options(cls) -> list[AdapterOption]:
        """The adapter's options (its init fields), with their types."""
        found = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            hint = _field_type(cls, f)
            inner = _without_none(hint)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            found.append(AdapterOption(f.name, inner, inner is not hint, required, default))
        return found

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "DatasetAdapter":
        """The adapter built from user options (text from a command line, or typed values from
        YAML), each checked against its field: unknown, missing and ill-typed options are a
        ``DatasetOptionError`` naming the dataset, the option and the accepted options."""
        known = {o.name: o for o in cls.options()}
        listing = "; its options: " + ", ".join(o.describe() for o in known.values()) if known else \
            "; it takes no options"
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise DatasetOptionError(f"dataset {cls.name!r}: unknown option(s) {', '.join(map(repr, unknown))}{listing}")
        missing = [o for o in known.values() if o.required and o.name not in options]
        if missing:
            raise DatasetOptionError(f"dataset {cls.name!r}: missing option(s) "
                                     f"{', '.join(repr(o.name) for o in missing)}{listing}")
        return cls(**{key: _typed(cls.name, known[key], value) for key, value in options.items()})

    def resolve_root(self, root: str | Path | None) -> Path:
        if root is None and self.env_var:
            root = os.environ.get(self.env_var)
        if root is None:
            hint = f" or set {self.env_var}" if self.env_var else ""
            raise ManifestError(f"{self.name}: no dataset root given; pass --root DIR{hint}. Expected layout: {self.layout}")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ManifestError(f"{self.name}: dataset root {path} is not a directory. Expected layout: {self.layout}")
        return path

    def manifest(self, root: str | Path | None = None) -> Manifest:
        return self.read(self.resolve_root(root))

    @abstractmethod
    def read(self, root: Path) -> Manifest: ...


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    """A field's annotation evaluated in the module of the class that declares it (the adapters
    use postponed annotations, and ``get_type_hints`` would also need the ClassVars' names)."""
    if not isinstance(f.type, str):
        return f.type
    owner = next(c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {}))
    return eval(f.type, vars(sys.modules[owner.__module__]))  # noqa: S307 - our own source's annotations


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        item = {int: "integer", float: "number"}.get(args[0], "value") if args else "value"
        count = "several" if not args or args[-1] is Ellipsis else str(len(args))
        return f"{count} {item}s separated by commas"
    return {str: "text", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}.get(hint, str(hint))


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _typed(dataset: str, option: AdapterOption, value: Any) -> Any:
    """``value`` as the option's type; text (command line) is parsed, typed values (YAML) checked."""
    if value is None and option.optional:
        return None
    try:
        return _convert(option.type, value)
    except (TypeError, ValueError):
        raise DatasetOptionError(f"dataset {dataset!r}: option {option.name!r} must be "
                                 f"{_type_name(option.type)}, got {value!r}") from None


def _convert(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        if args and args[-1] is not Ellipsis and len(items) != len(args):
            raise ValueError(f"{len(items)} values")
        return tuple(_convert(args[0] if args else str, item) for item in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _TRUE + _FALSE:
            raise ValueError(text)
        return text in _TRUE
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        raise TypeError(type(value).__name__)  # true/false or a list where a scalar is wanted
    if hint is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if hint in (float, str, Path):
        return hint(value)
    return value

"""One registry pattern for extractors, datasets, regressors and pretraining stages.

Entries are registered either directly (a decorator on the builder) or lazily as a
``"module:attribute"`` string, so listing names never imports torch or a model module.
Names may also be resolved by prefix (``openclip:ViT-B-16:openai``) through a factory that
receives the part after the prefix.
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

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

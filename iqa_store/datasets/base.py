"""The dataset adapter contract; ``from_options`` is where every adapter is built from user options."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.registry import Option, OptionError, checked_options, options_of

if TYPE_CHECKING:
    from iqa_store.datasets.official import Published


class DatasetOptionError(OptionError, ManifestError):
    """A dataset adapter option that is missing, unknown or of the wrong type."""


@dataclass
class DatasetAdapter(ABC):
    """Reads one dataset's official layout. Dataclass fields are the adapter's options."""

    name: ClassVar[str]
    env_var: ClassVar[str | None] = None  # where the root comes from when --root is not given
    layout: ClassVar[str] = ""  # human description of the expected tree, used in errors and listings
    citation: ClassVar[str] = ""
    published: ClassVar["Published | None"] = None  # counts and scale `datasets verify` checks against

    @classmethod
    def options(cls) -> list[Option]:
        """The adapter's options (its init fields), with their types."""
        return options_of(cls)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "DatasetAdapter":
        """The adapter built from user options (text from a command line, or typed values from
        YAML), each checked against its field: unknown, missing and ill-typed options are a
        ``DatasetOptionError`` naming the dataset, the option and the accepted options."""
        return cls(**checked_options(cls, options, f"dataset {cls.name!r}", DatasetOptionError))

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


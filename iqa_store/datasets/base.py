"""The dataset adapter contract."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from iqa_store.datasets.manifest import Manifest, ManifestError

if TYPE_CHECKING:
    from iqa_store.datasets.official import Published


@dataclass
class DatasetAdapter(ABC):
    """Reads one dataset's official layout. Dataclass fields are the adapter's options."""

    name: ClassVar[str]
    env_var: ClassVar[str | None] = None  # where the root comes from when --root is not given
    layout: ClassVar[str] = ""  # human description of the expected tree, used in errors and listings
    citation: ClassVar[str] = ""
    published: ClassVar["Published | None"] = None  # counts and scale `datasets verify` checks against

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

"""Dataset adapters, registered by name. Each reads an official release into a Manifest.

To add a dataset: write its module (a ``DatasetAdapter`` subclass) and add one
``DATASETS.register`` line below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError, resolve_inside
from iqa_store.registry import Registry

__all__ = ["DATASETS", "DatasetAdapter", "Manifest", "ManifestError", "load_manifest", "resolve_inside"]

DATASETS: Registry = Registry("dataset")

DATASETS.register("demo", "iqa_store.datasets.demo:DemoDataset",
                  help="embedded offline demo: real photographs, synthetic distortions, SYNTHETIC labels")
DATASETS.register("koniq", "iqa_store.datasets.koniq:KonIQ", help="KonIQ-10k (Hosu et al. 2020), official release")
DATASETS.register("csv", "iqa_store.datasets.csv_folder:CsvDataset", help="any image folder plus a CSV of paths and MOS")


def load_manifest(name: str, root: str | Path | None = None, **options: Any) -> Manifest:
    """Read dataset ``name`` from ``root`` (or its environment variable) into a Manifest."""
    adapter: DatasetAdapter = DATASETS.get(name)(**options)
    return adapter.manifest(root)

"""Dataset adapters, registered by name. Each reads an official release into a Manifest.

To add a dataset: write its module (a ``DatasetAdapter`` subclass) and add one
``DATASETS.register`` line below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from iqa_store.datasets.base import DatasetAdapter, DatasetOptionError
from iqa_store.datasets.manifest import Manifest, ManifestError, resolve_inside
from iqa_store.registry import Registry

__all__ = ["DATASETS", "DatasetAdapter", "DatasetOptionError", "Manifest", "ManifestError",
           "build_adapter", "load_manifest", "resolve_inside"]

DATASETS: Registry = Registry("dataset")

DATASETS.register("demo", "iqa_store.datasets.demo:DemoDataset",
                  help="embedded offline demo: real photographs, synthetic distortions, SYNTHETIC labels")
DATASETS.register("koniq", "iqa_store.datasets.koniq:KonIQ", help="KonIQ-10k (Hosu et al. 2020), official release")
DATASETS.register("csv", "iqa_store.datasets.csv_folder:CsvDataset", help="any image folder plus a CSV of paths and MOS")
DATASETS.register("clive", "iqa_store.datasets.clive:CLIVE", help="LIVE In the Wild Challenge (Ghadiyaram & Bovik 2016)")
DATASETS.register("spaq", "iqa_store.datasets.spaq:SPAQ", help="SPAQ smartphone photographs (Fang et al. 2020)")
DATASETS.register("cid2013", "iqa_store.datasets.cid2013:CID2013", help="CID2013 camera images (Virtanen et al. 2015)")
DATASETS.register("kadid10k", "iqa_store.datasets.kadid:KADID10k", help="KADID-10k synthetic distortions (Lin et al. 2019)")
DATASETS.register("csiq", "iqa_store.datasets.csiq:CSIQ", help="CSIQ synthetic distortions (Larson & Chandler 2010)")
DATASETS.register("live", "iqa_store.datasets.live:LIVE", help="LIVE IQA release 2 (Sheikh et al. 2006)")
DATASETS.register("tid2013", "iqa_store.datasets.tid2013:TID2013", help="TID2013 synthetic distortions (Ponomarenko et al. 2015)")
DATASETS.register("flive", "iqa_store.datasets.flive:FLIVE", help="FLIVE / PaQ-2-PiQ (Ying et al. 2020)")
DATASETS.register("bid", "iqa_store.datasets.bid:BID", help="BID blurred images (Ciancio et al. 2011)")


def build_adapter(name: str, options: Mapping[str, Any] | None = None) -> DatasetAdapter:
    """The adapter of dataset ``name`` with ``options`` checked (unknown, missing, wrong type):
    every caller builds adapters here, so every command checks options the same way."""
    return DATASETS.get(name).from_options(options or {})


def load_manifest(name: str, root: str | Path | None = None, **options: Any) -> Manifest:
    """Read dataset ``name`` from ``root`` (or its environment variable) into a Manifest."""
    return build_adapter(name, options).manifest(root)

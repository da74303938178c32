"""iqa-store: blind image quality assessment on a cached Zarr feature store.

This package is the notebook face: the few names a session needs, each loaded on first use
(PEP 562), so ``import iqa_store`` imports no model library (torch, open_clip, transformers,
scikit-learn) until a name that needs one is used::

    import iqa_store

    iqa_store.EXTRACTORS.names()                 # listing imports no model
    iqa_store.extract("brisque", "demo")         # features into the store (cached, resumable)
    outcome = iqa_store.fit(["brisque"], datasets=["demo"], regressors=["ridge"])
    print(outcome.summary)

    store = iqa_store.FeatureStore()             # --store, $IQA_STORE or ./stores
    manifest = iqa_store.load_manifest("demo")

``iqa_store.fit`` and ``iqa_store.train`` are always the ``iqa_store.api`` functions, never the
subpackages of the same names: reach those with ``from iqa_store.fit import ...`` or
``importlib.import_module("iqa_store.train")`` (``import iqa_store.fit as x`` gives the function).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["DATASETS", "EXTRACTORS", "PROTOCOLS", "REGRESSORS", "STAGES", "FeatureStore", "extract", "fit",
           "load_manifest", "train"]

_SOURCES: dict[str, tuple[str, ...]] = {
    "iqa_store.api": ("extract", "fit", "train"),
    "iqa_store.store": ("FeatureStore",),
    "iqa_store.datasets": ("DATASETS", "load_manifest"),
    "iqa_store.extractors": ("EXTRACTORS",),
    "iqa_store.fit": ("REGRESSORS",),
    "iqa_store.splits": ("PROTOCOLS",),
    "iqa_store.train": ("STAGES",),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

if TYPE_CHECKING:  # static analysers see the real imports
    from iqa_store.api import extract, fit, train
    from iqa_store.datasets import DATASETS, load_manifest
    from iqa_store.extractors import EXTRACTORS
    from iqa_store.fit import REGRESSORS
    from iqa_store.splits import PROTOCOLS
    from iqa_store.store import FeatureStore
    from iqa_store.train import STAGES


class _Package(types.ModuleType):
    """The type of this module: the import system cannot rebind ``fit`` or ``train`` to a subpackage."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Loading iqa_store.fit (say, through iqa_store.REGRESSORS) binds the subpackage here as
        # ``fit``; without this, iqa_store.fit would be the api function or the module depending
        # on what a session happened to import first. The subpackage stays in sys.modules.
        if name in _SOURCES["iqa_store.api"] and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        # AttributeError lets ``from iqa_store import api`` fall back to importing the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Fitting regressors on feature combinations: splits, metrics, regressors, the fit grid.

Pure numpy / scikit-learn / torch; nothing here knows about the feature store. Names are
loaded on first access (PEP 562), so ``from iqa_store.fit import make_splits`` does not
import scikit-learn, and nothing imports torch until an MLP is fitted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "PROTOCOLS", "REGRESSORS", "Cell", "CellPrediction", "FeatureMatrix", "GridResult", "LinearRegressor",
    "MLPRegressor", "ProtocolSpec", "RidgeRegressor", "RunLog", "Split", "combination_name", "compute_metrics", "fit_cell", "fit_grid",
    "krcc", "list_cells", "load_predictions", "load_results", "load_spec", "make_splits", "parse_combinations", "plcc",
    "plcc_logistic", "rmse", "save_run", "splits_from_json", "splits_key", "splits_to_json", "srcc",
]

_SOURCES = {
    "metrics": ("compute_metrics", "krcc", "plcc", "plcc_logistic", "rmse", "srcc"),
    "iqa_store.splits": ("PROTOCOLS", "ProtocolSpec", "Split", "make_splits", "splits_from_json", "splits_key",
               "splits_to_json"),
    "regressors": ("REGRESSORS", "LinearRegressor", "MLPRegressor", "RidgeRegressor"),
    "combinations": ("combination_name", "parse_combinations"),
    "cells": ("Cell", "CellPrediction", "FeatureMatrix"),
    "grid": ("GridResult", "fit_cell", "fit_grid", "list_cells"),
    "results": ("RunLog", "load_predictions", "load_results", "load_spec", "save_run"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

if TYPE_CHECKING:  # static analysers see the real imports
    from iqa_store.fit.combinations import combination_name, parse_combinations
    from iqa_store.fit.cells import Cell, CellPrediction, FeatureMatrix
    from iqa_store.fit.grid import GridResult, fit_cell, fit_grid, list_cells
    from iqa_store.fit.metrics import compute_metrics, krcc, plcc, plcc_logistic, rmse, srcc
    from iqa_store.fit.regressors import REGRESSORS, LinearRegressor, MLPRegressor, RidgeRegressor
    from iqa_store.fit.results import RunLog, load_predictions, load_results, load_spec, save_run
    from iqa_store.splits import (PROTOCOLS, ProtocolSpec, Split, make_splits, splits_from_json, splits_key,
                                  splits_to_json)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _MODULE_OF[name]
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Results and features for notebooks: tidy tables (Parquet, CSV) and feature sets as xarray / NetCDF.

The tidy table has one row per dataset x combination x regressor x split x metric
(``TIDY_COLUMNS``): ``pd.read_parquet`` or ``pd.read_csv`` gives it back, and a pivot
(``table.pivot_table(index=..., columns="metric", values="value")``) any paper layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from iqa_store.fit.schema import METRICS, TIDY_COLUMNS

__all__ = ["feature_set_to_xarray", "list_runs", "tidy_results", "write_tidy"]

TIDY_SUFFIXES = (".parquet", ".csv")


def tidy_results(table: pd.DataFrame) -> pd.DataFrame:
    """Per-split rows (``run_id`` + TABLE_COLUMNS) in long form, one row per metric."""
    metrics = [m for m in METRICS if m in table.columns]
    keys = [c for c in TIDY_COLUMNS if c not in ("metric", "value")]
    long = table.melt(id_vars=keys, value_vars=metrics, var_name="metric", value_name="value")
    order = {m: i for i, m in enumerate(METRICS)}
    long = long.sort_values(["run_id", "dataset", "combination", "regressor", "split", "metric"],
                            key=lambda s: s.map(order) if s.name == "metric" else s, kind="stable")
    return long[list(TIDY_COLUMNS)].reset_index(drop=True)


def write_tidy(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as Parquet (pyarrow) or CSV, by the file's suffix."""
    if path.suffix not in TIDY_SUFFIXES:
        raise ValueError(f"{path}: write .parquet or .csv, not {path.suffix or 'no suffix'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False, engine="pyarrow")
    else:
        frame.to_csv(path, index=False)
    return path


def list_runs(results_dir: Path) -> list[dict[str, Any]]:
    """Every fit run in the store: its id, datasets, protocol, combinations, regressors, cells."""
    from iqa_store.fit.results import load_results, load_spec
    runs = []
    for folder in sorted(p for p in results_dir.glob("fit-*") if p.is_dir()):
        table = load_results(folder)
        specs = [load_spec(csv.parent) for csv in sorted(folder.rglob("results.csv"))]
        if not specs:
            continue
        runs.append({"run": folder.name, "datasets": sorted(set(table["dataset"])),
                     "protocol": sorted(set(table["protocol"])), "combinations": specs[0].get("combinations", []),
                     "regressors": sorted(set(table["regressor"])), "cells": len(table),
                     "splits": int(table["split"].nunique()), "specs": specs})
    return runs


def feature_set_to_xarray(feature_set: Any, manifest: Any = None) -> Any:
    """An ``xarray.Dataset``: ``features`` (image x feature), ``valid`` (image), MOS where the manifest
    gives it, and the set's attributes (JSON text) — the same content ``export`` writes to HDF5."""
    import numpy as np
    import xarray as xr
    ids = list(feature_set.ids)
    data = {"features": (("image", "feature"), feature_set.read()),
            "valid": (("image",), feature_set.valid_mask().astype(np.int8))}
    if manifest is not None:
        mos = dict(zip(manifest.ids, manifest.mos))
        data["mos"] = (("image",), np.array([mos.get(i, np.nan) for i in ids], float))
    return xr.Dataset(data, coords={"image": ids, "feature": np.arange(feature_set.dim)},
                      attrs={"feature_set": feature_set.name,
                             "attributes": json.dumps(feature_set.attrs, default=str, sort_keys=True)})


def write_netcdf(dataset: Any, path: Path) -> Path:
    """A NetCDF-4 file (h5netcdf: the HDF5 library h5py already brings)."""
    dataset.to_netcdf(path, engine="h5netcdf")
    return path

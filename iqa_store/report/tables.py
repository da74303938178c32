"""Summaries of a tidy results table: per-group statistics, a text table, JSON records."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from iqa_store.fit.schema import CELL_KEYS, METRIC_LABELS, METRICS, STATISTICS

__all__ = ["GROUP_KEYS", "METRICS", "aggregate", "format_summary", "to_json_records"]

GROUP_KEYS = CELL_KEYS  # the results schema (iqa_store.fit.schema) names every key and metric


def aggregate(table: pd.DataFrame, extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (dataset, combination, regressor, protocol, *extra_keys).

    Columns: the keys, ``n_splits`` (distinct splits), then ``<metric>_mean``,
    ``<metric>_std`` (ddof=1, NaN for one split) and ``<metric>_median`` for each metric in
    the table. Groups keep their order of first appearance.
    """
    keys = [*GROUP_KEYS, *extra_keys]
    missing = [c for c in [*keys, "split"] if c not in table.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}")
    metrics = [m for m in METRICS if m in table.columns]
    groups = table.groupby(keys, sort=False, dropna=False)
    stats = groups[metrics].agg(list(STATISTICS))  # pandas std is ddof=1
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    out = pd.concat([groups["split"].nunique().rename("n_splits"), stats], axis=1)
    return out.reset_index()


def _mean_std(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.{digits}f}" if not math.isfinite(std) else f"{mean:.{digits}f}±{std:.{digits}f}"


def format_summary(agg: pd.DataFrame, digits: int = 4) -> str:
    """A fixed-width text table of ``aggregate`` output: keys, n, metrics as mean±std."""
    columns: list[tuple[str, list[str], bool]] = []  # (header, cells, right-aligned)
    for key in GROUP_KEYS:
        columns.append((key, [str(v) for v in agg[key]], False))
    columns.append(("n", [str(int(v)) for v in agg["n_splits"]], True))
    for metric, label in METRIC_LABELS.items():
        if f"{metric}_mean" in agg:
            cells = [_mean_std(m, s, digits) for m, s in zip(agg[f"{metric}_mean"], agg[f"{metric}_std"])]
            columns.append((label, cells, True))
    if "srcc_median" in agg:
        columns.append(("median SRCC", [f"{v:.{digits}f}" for v in agg["srcc_median"]], True))

    widths = [max(len(header), *(len(c) for c in cells)) if cells else len(header) for header, cells, _ in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, (_, _, right) in zip(values, widths, columns)).rstrip()

    rows = [line([header for header, _, _ in columns]), line(["-" * w for w in widths])]
    rows += [line([cells[i] for _, cells, _ in columns]) for i in range(len(agg))]
    return "\n".join(rows)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def to_json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values (NaN -> None), ready for ``json.dumps``."""
    return [{str(k): _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]

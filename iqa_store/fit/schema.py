"""The results schema: the one place that names a fit's metrics, cell keys and table columns.

``fit`` writes rows with these columns, ``run`` prints them, ``report`` and ``results`` read
them; nothing else spells a metric name. Standard library only, so every layer can import it.
"""

from __future__ import annotations

__all__ = ["CELL_KEYS", "HIGHER_IS_BETTER", "METRICS", "METRIC_LABELS", "STATISTICS", "TABLE_COLUMNS",
           "TIDY_COLUMNS", "metric_label"]

# agreement between predictions and MOS, in the order tables show them
METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")
METRIC_LABELS = {"srcc": "SRCC", "plcc": "PLCC", "plcc_logistic": "PLCC-log", "krcc": "KRCC", "rmse": "RMSE"}
HIGHER_IS_BETTER = {"srcc": True, "plcc": True, "plcc_logistic": True, "krcc": True, "rmse": False}

# what identifies a group of cells fitted alike (one row of a summary, across its splits)
CELL_KEYS = ("dataset", "combination", "regressor", "protocol")

# one row per fitted cell in results.csv
TABLE_COLUMNS = (*CELL_KEYS, "split", "n_train", "n_val", "n_test", "alpha", *METRICS)

# the long form `iqa-store results export` writes: one row per cell and metric
TIDY_COLUMNS = ("run_id", *CELL_KEYS, "split", "n_train", "n_val", "n_test", "alpha", "metric", "value")

# summary statistics over splits (std with ddof=1)
STATISTICS = ("mean", "std", "median")


def metric_label(metric: str) -> str:
    """How tables head a metric column (SRCC, PLCC-log ...)."""
    return METRIC_LABELS[metric]

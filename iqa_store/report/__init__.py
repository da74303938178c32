"""Reports of fitted grids: aggregated tables, a text summary, JSON records, figures.

Plots import matplotlib only when called.
"""

from iqa_store.report.plots import scatter_predicted_vs_mos, trend_plot
from iqa_store.report.tables import aggregate, format_summary, to_json_records

__all__ = ["aggregate", "format_summary", "scatter_predicted_vs_mos", "to_json_records", "trend_plot"]

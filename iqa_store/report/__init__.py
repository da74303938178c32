"""Reports of fitted grids: aggregated tables, a text summary, JSON records, figures.

A paper's report (``iqa-store report``): ``paper`` (the spec's tables, figures and published
numbers), ``paper_tables`` (cells filled from our runs: Markdown, LaTeX, CSV), ``figures``,
``compare`` (paired Wilcoxon comparisons), ``page`` (the self-contained HTML), ``build`` (all of
it from some runs); ``export``: tidy tables and feature sets for notebooks (``iqa-store results``).
Plots import matplotlib only when called.
"""

from iqa_store.report.plots import scatter_predicted_vs_mos, trend_plot
from iqa_store.report.tables import aggregate, format_summary, to_json_records

__all__ = ["aggregate", "format_summary", "scatter_predicted_vs_mos", "to_json_records", "trend_plot"]

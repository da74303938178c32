"""A whole report from fitted runs: paper tables, figures, paired comparisons, one HTML page.

    report = build_report(collect_runs(store.results_dir, runs), spec, Path("reports/onuoha2024"), store)
    print(report.markdown)        # the tables; report.html is the page

Writes ``tables/<id>.md|.tex|.csv``, ``figures/<id>.png|.svg``, ``comparisons.csv``,
``report.md`` and ``index.html`` under the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from iqa_store.fit.schema import TABLE_COLUMNS
from iqa_store.report.compare import PairedComparison, compare_rows
from iqa_store.report.figures import DrawnFigure, draw_figure
from iqa_store.report.paper import Comparison, PaperSpec
from iqa_store.report.paper_tables import FilledTable, fill_table, generic_table
from iqa_store.report.page import render_page

__all__ = ["Report", "RunResults", "build_report", "collect_runs"]


@dataclass(frozen=True)
class RunResults:
    """Per-split rows of some runs (TABLE_COLUMNS plus ``run_id``) and their test predictions."""

    table: pd.DataFrame
    predictions: list[Any]


@dataclass
class Report:
    folder: Path
    tables: list[FilledTable]
    figures: list[DrawnFigure]
    comparisons: list[PairedComparison]
    markdown: str
    html: Path
    files: list[Path] = field(default_factory=list)


def collect_runs(results_dir: Path, runs: Sequence[str]) -> RunResults:
    """The rows and predictions of every run folder named (relative to ``results_dir``)."""
    from iqa_store.fit.results import load_predictions, load_results
    tables, predictions = [], []
    for run in runs:
        folder = results_dir / run
        if not folder.is_dir():
            raise FileNotFoundError(2, "no such run in the store", str(folder))
        table = load_results(folder)
        table["run_id"] = run
        tables.append(table)
        predictions += [p for csv in sorted(folder.rglob("results.csv")) for p in load_predictions(csv.parent)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["run_id", *TABLE_COLUMNS])
    return RunResults(table, predictions)


def build_report(runs: RunResults, spec: PaperSpec | None, folder: Path, store: Any = None, *, title: str = "",
                 notes: Sequence[str] = (), compare: Sequence[Comparison] = ()) -> Report:
    """Every table, figure and comparison of ``spec`` (a generic table when None) from ``runs``."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = [*(spec.tables if spec else ()), *([generic_table(runs.table, "all")] if len(runs.table) else [])]
    filled = [fill_table(t, runs.table) for t in tables]
    files = [path for table in filled for path in table.write(folder / "tables")]
    figures = [draw_figure(f, runs.table, runs.predictions, folder / "figures", store) for f in (spec.figures if spec else ())]
    files += [path for figure in figures for path in figure.files]
    comparisons = [c for pair in [*(spec.compare if spec else ()), *compare]
                   for c in compare_rows(runs.table, pair.a, pair.b, pair.metric, pair.regressor)]
    comparisons_csv = folder / "comparisons.csv"
    pd.DataFrame([c.to_dict() for c in comparisons]).to_csv(comparisons_csv, index=False)
    heading = title or (spec.paper if spec else "iqa-store report")
    lists = [("Figures", [f"- {f.id}: " + (", ".join(str(p) for p in f.files) or f.note) for f in figures]),
             ("Paired comparisons", [f"- {c.sentence()}" for c in comparisons]),
             ("Skipped on this machine", [f"- {n}" for n in notes])]
    markdown = "\n\n".join([f"# {heading}", *(t.markdown() for t in filled),
                            *(f"## {name}\n\n" + "\n".join(lines) for name, lines in lists if lines)])
    (folder / "report.md").write_text(markdown + "\n")
    subtitle = (f"{len(runs.table)} fitted cells from {runs.table['run_id'].nunique() if len(runs.table) else 0} "
                f"run(s); {spec.paper if spec else ''}")
    page = folder / "index.html"
    page.write_text(render_page(heading, subtitle, filled, figures, comparisons, notes))
    return Report(folder, filled, figures, comparisons, markdown, page,
                  [*files, comparisons_csv, folder / "report.md", page])

"""A paper's table filled from our results: each cell ours (mean (std) or median over splits),
the published value and our difference beside it, the best of ours per column marked.

Rendered as Markdown, LaTeX and CSV. Rows match results by their combination's set of features
(``clip+brisque`` is ``brisque+clip``), the row's regressor and protocol where it names them,
and the dataset of the column (``A->B`` for a cross-dataset row trained on A).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from iqa_store.fit.schema import HIGHER_IS_BETTER, metric_label
from iqa_store.report.paper import Column, Published, Row, Table

__all__ = ["Cell", "FilledTable", "fill_table", "generic_table", "rows_of", "same_combination"]


@dataclass(frozen=True)
class Cell:
    row: str
    column: str
    dataset: str
    metric: str
    value: float  # NaN when we have no result for it
    std: float
    n_splits: int
    published: Published | None
    best: bool = False

    @property
    def difference(self) -> float:
        return self.value - self.published.value if self.published and math.isfinite(self.value) else float("nan")


@dataclass(frozen=True)
class FilledTable:
    table: Table
    cells: tuple[Cell, ...]

    def cell(self, row: str, column: str) -> Cell:
        return next(c for c in self.cells if c.row == row and c.column == column)

    def to_frame(self) -> pd.DataFrame:
        """The long CSV form: one line per cell."""
        return pd.DataFrame([{"table": self.table.id, "row": c.row, "column": c.column, "dataset": c.dataset,
                              "metric": c.metric, "statistic": self.table.statistic, "ours": c.value,
                              "ours_std": c.std, "n_splits": c.n_splits,
                              "published": c.published.value if c.published else np.nan,
                              "published_std": c.published.std if c.published and c.published.std is not None else np.nan,
                              "difference": c.difference, "best": c.best} for c in self.cells])

    def markdown(self) -> str:
        columns = self.table.columns
        lines = [f"**{self.table.title}** ({self._statistic_words()})", "",
                 "| " + " | ".join(["row", *(c.label for c in columns)]) + " |",
                 "|" + "---|" * (len(columns) + 1)]
        for row in self.table.rows:
            cells = [self._text(self.cell(row.label, c.label), lambda ours: f"**{ours}**") for c in columns]
            lines.append("| " + " | ".join([row.label, *cells]) + " |")
        return "\n".join(lines)

    def latex(self) -> str:
        columns = self.table.columns
        escape = _latex_escape
        lines = [r"\begin{table}", r"\centering", f"\\caption{{{escape(self.table.title)} ({self._statistic_words()})}}",
                 r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\hline",
                 " & ".join(["Method", *(escape(c.label) for c in columns)]) + r" \\", r"\hline"]
        for row in self.table.rows:
            cells = [self._text(self.cell(row.label, c.label), lambda ours: f"\\textbf{{{ours}}}", escape) for c in columns]
            lines.append(" & ".join([escape(row.label), *cells]) + r" \\")
        lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines)

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{self.table.id}.{kind}" for kind in ("md", "tex", "csv")]
        paths[0].write_text(self.markdown() + "\n")
        paths[1].write_text(self.latex() + "\n")
        self.to_frame().to_csv(paths[2], index=False)
        return paths

    def _statistic_words(self) -> str:
        return "ours: median over splits" if self.table.statistic == "median" else "ours: mean (std) over splits"

    def _text(self, cell: Cell, bold: Callable[[str], str], escape: Callable[[str], str] = str) -> str:
        """``ours [paper value, difference]``; ours through ``bold`` when best in its column."""
        if not math.isfinite(cell.value):
            ours = "—"
        elif self.table.statistic == "mean" and math.isfinite(cell.std):
            ours = f"{cell.value:.4f} ({cell.std:.4f})"
        else:
            ours = f"{cell.value:.4f}"
        ours = bold(escape(ours)) if cell.best else escape(ours)
        if cell.published is None:
            return ours
        difference = f", {cell.difference:+.4f}" if math.isfinite(cell.difference) else ""
        return ours + escape(f" [paper {cell.published.text}{difference}]")


def same_combination(a: str, b: str) -> bool:
    """Whether two combination names hold the same features, in any order."""
    return frozenset(a.split("+")) == frozenset(b.split("+"))


def rows_of(results: pd.DataFrame, row: Row, dataset: str, protocol: str | None = None) -> pd.DataFrame:
    """The per-split results of ``row`` on ``dataset`` (one regressor and protocol: the row's, else the first)."""
    if row.combination is None or results.empty:
        return results.iloc[0:0]
    chosen = results[(results["dataset"] == dataset)
                     & results["combination"].map(lambda c: same_combination(c, row.combination))]
    for key, wanted in (("regressor", row.regressor), ("protocol", protocol or row.protocol)):
        if wanted is not None:
            chosen = chosen[chosen[key] == wanted]
        elif not chosen.empty:
            chosen = chosen[chosen[key] == chosen[key].iloc[0]]
    return chosen.drop_duplicates(subset=["split"], keep="last")


def fill_table(table: Table, results: pd.DataFrame) -> FilledTable:
    """Every cell of ``table`` from the per-split ``results`` (TABLE_COLUMNS rows)."""
    measured = {(row.label, column.label): _measure(table, results, row, column)
                for row in table.rows for column in table.columns if not column.is_average}
    for row in table.rows:
        for column in (c for c in table.columns if c.is_average):
            measured[row.label, column.label] = _average(table, results, row, column, measured)
    best = _best(table, measured)
    cells = tuple(Cell(row.label, column.label, row.dataset(column), column.metric, *measured[row.label, column.label],
                       table.published_value(row.label, column.label), (row.label, column.label) in best)
                  for row in table.rows for column in table.columns)
    return FilledTable(table, cells)


def _measure(table: Table, results: pd.DataFrame, row: Row, column: Column) -> tuple[float, float, int]:
    values = rows_of(results, row, row.dataset(column), column.protocol)[column.metric].to_numpy(float)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan"), 0
    centre = float(np.median(values)) if table.statistic == "median" else float(values.mean())
    return centre, float(values.std(ddof=1)) if values.size > 1 else float("nan"), int(values.size)


def _average(table: Table, results: pd.DataFrame, row: Row, column: Column,
             measured: dict[tuple[str, str], tuple[float, float, int]]) -> tuple[float, float, int]:
    """The mean of the row's other columns of this metric; ``weighted-average``: weighted by image count."""
    parts = [c for c in table.columns if not c.is_average and c.metric == column.metric]
    values = np.array([measured[row.label, c.label][0] for c in parts])
    if not parts or not np.all(np.isfinite(values)):
        return float("nan"), float("nan"), 0
    weights = np.ones(len(parts))
    if column.dataset == "weighted-average":
        weights = np.array([_images(results, row, row.dataset(c)) for c in parts], float)
    return float(np.average(values, weights=weights)), float("nan"), min(measured[row.label, c.label][2] for c in parts)


def _images(results: pd.DataFrame, row: Row, dataset: str) -> int:
    first = rows_of(results, row, dataset).iloc[0]
    return int(first["n_train"] + first["n_val"] + first["n_test"])


def _best(table: Table, measured: dict[tuple[str, str], tuple[float, float, int]]) -> set[tuple[str, str]]:
    best = set()
    for column in table.columns:
        sign = 1.0 if HIGHER_IS_BETTER[column.metric] else -1.0
        scored = [(sign * measured[r.label, column.label][0], r.label) for r in table.rows
                  if math.isfinite(measured[r.label, column.label][0])]
        if scored:
            top = max(score for score, _ in scored)
            best |= {(label, column.label) for score, label in scored if score == top}
    return best


def _latex_escape(text: str) -> str:
    for char, replacement in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                              ("—", "--"), ("->", r"$\rightarrow$")):
        text = text.replace(char, replacement)
    return text


def generic_table(results: pd.DataFrame, table_id: str = "results") -> Table:
    """A table for a run without a paper: a row per combination and regressor, SRCC and PLCC per dataset."""
    rows = tuple(Row(f"{c} ({r})", c, r, p) for c, r, p in
                 results[["combination", "regressor", "protocol"]].drop_duplicates().itertuples(index=False))
    columns = tuple(Column(f"{d} {metric_label(m)}", d, m) for d in dict.fromkeys(results["dataset"])
                    for m in ("srcc", "plcc"))
    return Table(table_id, "Results (every combination and regressor)", "mean", rows, columns)

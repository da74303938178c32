"""A paper's tables, figures and published numbers, as a pipeline spec's ``report`` section.

    report:
      paper: Onuoha et al. 2024, Electronics 13(4) 803
      tables:
        - id: table2
          title: LMM and distortion features alone
          statistic: mean            # mean (std) over splits, or median
          regressor: mlp             # default of every row (a row may say its own)
          rows:                      # the paper's row label: our combination ...
            BRISQUE: brisque
            CLIP: clip-vitb16
            PQR: null                #   ... or null: a method we do not run (published values only)
            QualiCLIP: {combination: qualiclip, protocol: zero-shot, regressor: none}
          columns:                   # the paper's column label: dataset and metric
            LIVE PLCC: {dataset: clive, metric: plcc}
            LIVE SRCC: {dataset: clive, metric: srcc}
          published:                 # each row's cells as printed, in column order ("-": none)
            BRISQUE: ["0.5071 (0.050)", "0.4846 (0.052)"]
      figures:
        - {id: fig3, kind: trend, title: ..., table: table2 ...}
      compare:                       # paired comparisons over the same splits
        - {a: clip-vitb16, b: clip-vitb16+brisque, metric: srcc}

A row or a column may carry ``train: DATASET`` (cross-dataset: fitted on all of it, tested on the
column's dataset); a row its ``protocol``. A column's ``dataset`` may be ``average`` or ``weighted-average``
(over the table's other columns of its metric; weighted by each dataset's image count).
Every published number becomes one ``Published`` record (value, table, row, column, metric),
so a report can put it beside ours. Standard library only: the spec is read before anything heavy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from iqa_store.fit.schema import METRICS

__all__ = ["AVERAGES", "FIGURE_KINDS", "Column", "Comparison", "Figure", "PaperSpec", "PaperSpecError", "Published",
           "Row", "Table", "parse_published"]

AVERAGES = ("average", "weighted-average")
FIGURE_KINDS = ("trend", "scatter", "levels", "loss")
_STATISTICS = ("mean", "median")
_PRINTED = re.compile(r"\s*([-+]?\d*\.?\d+)\s*(?:\(\s*([-+]?\d*\.?\d+)\s*\))?\s*")


class PaperSpecError(ValueError):
    """A report section that does not describe tables we can build."""


@dataclass(frozen=True)
class Published:
    """One number of a paper's table, as printed (``std`` when printed beside it)."""

    value: float
    table: str
    row: str
    column: str
    metric: str
    std: float | None = None
    printed: str = ""  # as the paper prints it ("0.9056 (0.000)"), for the report to show

    @property
    def text(self) -> str:
        return self.printed or (f"{self.value:g}" + (f" ({self.std:g})" if self.std is not None else ""))


@dataclass(frozen=True)
class Row:
    label: str
    combination: str | None  # None: a method we do not run; its published values only
    regressor: str | None = None
    protocol: str | None = None
    train: str | None = None  # cross-dataset: fitted on all of this dataset

    def dataset(self, column: "Column") -> str:
        """The results' dataset label of this row's cell in ``column`` (``A->B``: fitted on A, tested on B)."""
        train = column.train or self.train
        return f"{train}->{column.dataset}" if train else column.dataset


@dataclass(frozen=True)
class Column:
    label: str
    dataset: str
    metric: str
    protocol: str | None = None
    train: str | None = None  # a cross-dataset column: every row fitted on all of this dataset

    @property
    def is_average(self) -> bool:
        return self.dataset in AVERAGES


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    statistic: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    published: tuple[Published, ...] = ()

    def published_value(self, row: str, column: str) -> Published | None:
        for number in self.published:
            if number.row == row and number.column == column:
                return number
        return None


@dataclass(frozen=True)
class Figure:
    id: str
    kind: str
    title: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    metric: str = "srcc"
    regressor: str | None = None


@dataclass(frozen=True)
class PaperSpec:
    paper: str
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    compare: tuple[Comparison, ...] = ()

    @property
    def published(self) -> list[Published]:
        return [number for table in self.tables for number in table.published]

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> "PaperSpec":
        mapping = _mapping(data, where, {"paper", "tables", "figures", "compare"})
        tables = tuple(_table(t, f"{where}: table {i + 1}") for i, t in enumerate(_list(mapping, "tables", where)))
        ids = [t.id for t in tables]
        if len(set(ids)) != len(ids):
            raise PaperSpecError(f"{where}: table ids repeat: {ids}")
        figures = tuple(_figure(f, f"{where}: figure {i + 1}") for i, f in enumerate(_list(mapping, "figures", where)))
        compare = tuple(Comparison(**_mapping(c, f"{where}: compare {i + 1}", {"a", "b", "metric", "regressor"},
                                              required={"a", "b"}))
                        for i, c in enumerate(_list(mapping, "compare", where)))
        for comparison in compare:
            _check_metric(comparison.metric, where)
        return cls(str(mapping.get("paper", "")), tables, figures, compare)


def parse_published(text: Any, where: str) -> tuple[float, float | None] | None:
    """A printed cell: ``0.5071 (0.050)`` -> (0.5071, 0.05), ``0.939`` -> (0.939, None), ``-`` -> None."""
    if text is None or (isinstance(text, str) and text.strip() in {"-", "_", "—", ""}):
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text), None
    match = _PRINTED.fullmatch(str(text))
    if not match:
        raise PaperSpecError(f"{where}: {text!r} is not a printed number such as 0.5071 or 0.5071 (0.050)")
    return float(match.group(1)), (float(match.group(2)) if match.group(2) else None)


def _mapping(data: Any, where: str, keys: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise PaperSpecError(f"{where}: must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - keys)
    if unknown:
        raise PaperSpecError(f"{where}: unknown key(s) {unknown}; known: {', '.join(sorted(keys))}")
    missing = sorted(required - set(data))
    if missing:
        raise PaperSpecError(f"{where}: missing key(s) {missing}")
    return dict(data)


def _list(mapping: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = mapping.get(key) or []
    if not isinstance(value, list):
        raise PaperSpecError(f"{where}: {key} must be a list, got {type(value).__name__}")
    return value


def _check_metric(metric: str, where: str) -> None:
    if metric not in METRICS:
        raise PaperSpecError(f"{where}: unknown metric {metric!r}; known: {', '.join(METRICS)}")


def _table(data: Any, where: str) -> Table:
    table = _mapping(data, where, {"id", "title", "statistic", "regressor", "protocol", "rows", "columns",
                                   "published"}, required={"id", "rows", "columns"})
    statistic = table.get("statistic", "mean")
    if statistic not in _STATISTICS:
        raise PaperSpecError(f"{where}: statistic must be one of {', '.join(_STATISTICS)}, got {statistic!r}")
    rows = tuple(_row(label, spec, table, f"{where}: row {label!r}") for label, spec in
                 _mapping(table["rows"], f"{where}: rows", set(table["rows"] or {})).items())
    columns = tuple(_column(label, spec, f"{where}: column {label!r}") for label, spec in
                    _mapping(table["columns"], f"{where}: columns", set(table["columns"] or {})).items())
    table_id = str(table["id"])
    published = []
    for label, cells in _mapping(table.get("published") or {}, f"{where}: published", {r.label for r in rows}).items():
        if not isinstance(cells, list) or len(cells) != len(columns):
            raise PaperSpecError(f"{where}: published row {label!r} must list {len(columns)} cells (one per column), "
                                 f"got {cells!r}")
        for column, cell in zip(columns, cells):
            printed = parse_published(cell, f"{where}: published {label!r}, {column.label!r}")
            if printed is not None:
                published.append(Published(printed[0], table_id, label, column.label, column.metric, printed[1],
                                           " ".join(str(cell).split())))
    return Table(table_id, str(table.get("title", table_id)), statistic, rows, columns, tuple(published))


def _row(label: str, spec: Any, table: Mapping[str, Any], where: str) -> Row:
    if spec is None or isinstance(spec, str):
        spec = {"combination": spec}
    row = _mapping(spec, where, {"combination", "regressor", "protocol", "train"})
    return Row(str(label), row.get("combination"), row.get("regressor", table.get("regressor")),
               row.get("protocol", table.get("protocol")), row.get("train"))


def _column(label: str, spec: Any, where: str) -> Column:
    column = _mapping(spec, where, {"dataset", "metric", "protocol", "train"}, required={"dataset", "metric"})
    _check_metric(column["metric"], where)
    return Column(str(label), str(column["dataset"]), column["metric"], column.get("protocol"), column.get("train"))


def _figure(data: Any, where: str) -> Figure:
    figure = dict(_mapping(data, where, set(data) if isinstance(data, Mapping) else set(), required={"id", "kind"}))
    kind = figure.pop("kind")
    if kind not in FIGURE_KINDS:
        raise PaperSpecError(f"{where}: kind must be one of {', '.join(FIGURE_KINDS)}, got {kind!r}")
    figure_id = str(figure.pop("id"))
    return Figure(figure_id, kind, str(figure.pop("title", figure_id)), figure)

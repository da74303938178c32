"""Any image folder plus a CSV of image paths and scores.

Also home of the small label-file helpers the dataset adapters share: a CSV reader that keeps
the line number of every row (so errors can say ``labels.csv, line 17``), number parsing with
precise messages, split-name normalisation, and the path check that keeps every image a label
file names inside the dataset root.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable

import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError, resolve_inside

__all__ = ["CsvDataset", "LabelTable", "normalise_split", "parse_number", "read_label_csv", "read_label_text",
           "safe_relative_path"]

_SPLITS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------
# shared label-file helpers


@dataclass(frozen=True)
class LabelTable:
    """The rows of one CSV label file, every row with the line it starts on (1-based)."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]

    def where(self, line: int) -> str:
        return f"{self.path}, line {line}"

    def require(self, names: Iterable[str | None]) -> None:
        """Raise naming the file and the available columns if a needed column is absent or repeated."""
        needed = [n for n in names if n is not None]
        missing = [n for n in needed if n not in self.columns]
        if missing:
            raise ManifestError(f"{self.path}: missing column(s) {missing}; available columns: {self.columns}")
        repeated = sorted({n for n in needed if self.columns.count(n) > 1})
        if repeated:
            raise ManifestError(f"{self.path}: column(s) {repeated} appear more than once in the header")


def read_label_text(path: Path, encoding: str = "utf-8-sig", *, remedy: str = "save it as UTF-8") -> str:
    """The text of a label file, decoded whole; bytes that are not ``encoding`` are an error naming the line."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except LookupError:
        raise ManifestError(f"{path}: unknown text encoding {encoding!r}") from None
    except UnicodeDecodeError as error:  # offsets are into error.object: the bytes after a byte-order mark
        line = error.object[:error.start].count(b"\n") + 1
        raise ManifestError(f"{path}, line {line}: byte 0x{error.object[error.start]:02x} is not {encoding} text "
                            f"({error.reason}); {remedy}") from None


def read_label_csv(path: str | Path, *, delimiter: str = ",", encoding: str = "utf-8-sig",
                   remedy: str = "save it as UTF-8") -> LabelTable:
    """Read a CSV label file: the first non-blank row is the header (quoted or not).

    Blank rows and rows of empty fields are skipped but still counted, so the line numbers in
    errors are those an editor shows. CRLF line ends and a UTF-8 byte-order mark are accepted.
    Trailing empty fields beyond the header (spreadsheet exports) are ignored; any other
    field-count mismatch is an error naming the line. ``remedy``: what the error for bytes that
    are not ``encoding`` suggests.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"label file {path} not found")
    reader = csv.reader(io.StringIO(read_label_text(path, encoding, remedy=remedy), newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    line_after = 0
    try:
        for fields in reader:
            line, line_after = line_after + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) > len(header) and not any(f.strip() for f in fields[len(header):]):
                fields = fields[:len(header)]
            if len(fields) != len(header):
                raise ManifestError(f"{path}, line {line}: {len(fields)} field(s) where the header has "
                                    f"{len(header)}")
            rows.append((line, dict(zip(header, fields))))
    except csv.Error as error:
        raise ManifestError(f"{path}: malformed CSV near line {reader.line_num}: {error}") from None
    if header is None:
        raise ManifestError(f"{path}: empty file, expected a header row")
    return LabelTable(path, header, rows)


def parse_number(text: str, *, source: str, what: str = "MOS") -> float:
    """A finite float from ``text``, or a ManifestError naming ``source`` and the value."""
    value = str(text).strip()
    if not value:
        raise ManifestError(f"{source}: empty {what}")
    try:
        number = float(value)
    except ValueError:
        raise ManifestError(f"{source}: {what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ManifestError(f"{source}: {what} is {value!r}, not a finite number")
    return number


def normalise_split(text: str, *, source: str) -> str:
    """Map an official split label (training/validation/test and variants) to train/val/test."""
    key = str(text).strip().lower()
    if key not in _SPLITS:
        raise ManifestError(f"{source}: unknown split {text!r}; expected one of {sorted(_SPLITS)}")
    return _SPLITS[key]


def safe_relative_path(root: Path, text: str, *, source: str) -> str:
    """The normalised relative path ``text`` names under ``root``; refuses anything leaving it.

    Absolute paths, ``..`` segments that climb out and symlinks resolving outside ``root`` are
    errors (see ``resolve_inside``). The returned path is the lexical form (``a/./b.jpg`` ->
    ``a/b.jpg``), not the symlink target, so ids stay the names the label file used.
    """
    cleaned = str(text).strip().replace("\\", "/")
    if "\x00" in cleaned:
        raise ManifestError(f"{source}: image path {cleaned!r} contains a NUL byte")
    resolve_inside(root, cleaned, source=source)
    normal = posixpath.normpath(cleaned)
    if normal in (".", "..") or normal.startswith("../"):
        raise ManifestError(f"{source}: image path {cleaned!r} does not name a file inside the dataset root {root}")
    resolve_inside(root, normal, source=source)
    return normal


# ---------------------------------------------------------------------------------------------
# the generic adapter


@dataclass
class CsvDataset(DatasetAdapter):
    """Images under the root, scores in a CSV.

    ``labels`` is the CSV (relative to the root unless absolute). Each row names one image by
    its path relative to the root; that path (normalised, extension kept) is the image id.
    Paths in the CSV may never leave the root: absolute paths, ``..`` and symlinks out are errors.
    ``higher_is_better=False`` flips the direction inside the scale:
    ``mos = lo + hi - published``, with ``(lo, hi) = mos_range`` (default: the data's min and max);
    ``mos_original`` keeps the published value. ``dataset_name`` is the name in the store, so
    several CSV datasets can coexist. Missing image files are not an error here: extraction
    reports them per row. ``labels_column`` names a column of scene or object labels (text, may be
    empty), kept as ``info["content_labels"]`` for content texts (``iqa-store annotate``).
    """

    name: ClassVar[str] = "csv"
    env_var: ClassVar[str | None] = None  # several CSV datasets coexist: pass the root
    layout: ClassVar[str] = ("ROOT/<any image tree> and a CSV (option labels=, relative to ROOT or absolute) "
                             "with a header; columns path and mos by default, paths relative to ROOT")
    citation: ClassVar[str] = ""

    labels: str
    path_column: str = "path"
    mos_column: str = "mos"
    std_column: str | None = None
    reference_column: str | None = None
    split_column: str | None = None
    labels_column: str | None = None  # scene/object label of each image, for content texts
    higher_is_better: bool = True
    mos_range: tuple[float, float] | None = None
    dataset_name: str = "csv"
    delimiter: str = ","
    encoding: str = "utf-8-sig"

    def _check_options(self) -> tuple[float, float] | None:
        if not _DATASET_NAME.match(str(self.dataset_name)):
            raise ManifestError(f"csv: dataset_name {self.dataset_name!r} must be letters, digits, '_', '.' or '-'")
        if self.mos_range is None:
            return None
        try:
            lo, hi = (float(v) for v in self.mos_range)
        except (TypeError, ValueError):
            raise ManifestError(f"csv: mos_range must be two numbers (low, high), got {self.mos_range!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ManifestError(f"csv: mos_range must be finite with low < high, got {self.mos_range!r}")
        return lo, hi

    def labels_path(self, root: Path) -> Path:
        path = Path(self.labels).expanduser()
        return path if path.is_absolute() else Path(root) / path

    def read(self, root: Path) -> Manifest:
        root = Path(root)
        given_range = self._check_options()
        table = read_label_csv(self.labels_path(root), delimiter=self.delimiter, encoding=self.encoding,
                               remedy="pass its encoding (option encoding) or save it as UTF-8")
        table.require([self.path_column, self.mos_column, self.std_column, self.reference_column,
                       self.split_column, self.labels_column])
        if not table.rows:
            raise ManifestError(f"{table.path}: no data rows after the header")

        first_line: dict[str, int] = {}
        records = []
        content_labels: dict[str, str] = {}
        for line, row in table.rows:
            where = table.where(line)
            path = safe_relative_path(root, row[self.path_column], source=where)
            if path in first_line:
                raise ManifestError(f"{where}: duplicate image path {path!r} (first listed on line {first_line[path]})")
            first_line[path] = line
            where = f"{where} ({path})"
            score = parse_number(row[self.mos_column], source=where, what=f"score in column {self.mos_column!r}")
            if given_range is not None and not given_range[0] <= score <= given_range[1]:
                raise ManifestError(f"{where}: score {score:g} is outside mos_range {given_range}")
            std = math.nan
            if self.std_column is not None and row[self.std_column].strip():
                std = parse_number(row[self.std_column], source=where, what=f"std in column {self.std_column!r}")
                if std < 0:
                    raise ManifestError(f"{where}: negative std {std:g} in column {self.std_column!r}")
            reference = None
            if self.reference_column is not None:
                reference = row[self.reference_column].strip() or None
            split = None
            if self.split_column is not None and row[self.split_column].strip():
                split = normalise_split(row[self.split_column], source=where)
            if self.labels_column is not None and row[self.labels_column].strip():
                content_labels[path] = " ".join(row[self.labels_column].split())
            records.append({"image_id": path, "path": path, "mos_original": score, "mos_std": std,
                            "reference_id": reference, "split": split})

        frame = pd.DataFrame.from_records(records)
        original = frame["mos_original"].astype(float)
        lo, hi = given_range if given_range is not None else (float(original.min()), float(original.max()))
        frame["mos"] = original if self.higher_is_better else (lo + hi) - original
        return Manifest(
            dataset=self.dataset_name, root=root, table=frame, mos_range=(lo, hi),
            original_direction="higher_better" if self.higher_is_better else "lower_better",
            info={"label_file": str(table.path), "mos_column": self.mos_column,
                  **({"mos_range_source": "data"} if given_range is None else {}),
                  **({"content_labels": content_labels} if self.labels_column else {})},
        )

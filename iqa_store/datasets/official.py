"""Helpers the official-release adapters share.

Each release ships its labels in its own format (MATLAB ``.mat``, Excel, CSV, plain text) and
its images in its own tree, with traps: mixed-case names, headers away from cell A1, files one
folder lower than expected. These helpers read those formats and find those files, and every
error they raise names the file (and row or entry) and what was expected there.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from iqa_store.datasets.csv_folder import parse_number, safe_relative_path
from iqa_store.datasets.manifest import ManifestError
from iqa_store.datasets.matfile import MatFileError, read_mat_file

__all__ = ["IMAGE_SUFFIXES", "FolderIndex", "Published", "SheetTable", "cell_number", "cell_text", "flip_scale",
           "locate_file", "mat_numbers", "mat_strings", "mat_variable", "read_mat", "read_sheet", "require_dir",
           "require_file", "require_lengths", "std_from_variance", "in_range", "non_negative"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Published:
    """What the authors published about a release: ``datasets verify`` compares a tree with it.

    ``images``: scored images an adapter lists; ``references``: distinct reference images
    (synthetic datasets); ``splits``: images per official part; ``scale``: the score as
    published, for listings.
    """

    images: int
    scale: str
    references: int | None = None
    splits: dict[str, int] = field(default_factory=dict)


# --- finding files -------------------------------------------------------------------------------


def locate_file(root: Path, names: Sequence[str], *, dataset: str) -> Path | None:
    """The first of ``names`` (relative paths, the known variants) in ``root``, else one folder below.

    Releases are often unpacked with one extra folder (``ROOT/kadid10k/dmos.csv``). Finding the
    same name in two sub-folders is an error: which copy to use is the user's choice.
    """
    for name in names:
        if (root / name).is_file():
            return root / name
    for name in names:
        found = sorted(p for p in root.glob(f"*/{name}") if p.is_file())
        if len(found) > 1:
            raise ManifestError(f"{dataset}: {name} found in several folders under {root}: "
                                f"{[p.relative_to(root).as_posix() for p in found]}; pass the one to use as the root")
        if found:
            return found[0]
    return None


def require_file(root: Path, names: Sequence[str], *, dataset: str, layout: str) -> Path:
    """``locate_file``, or an error saying what was expected and where."""
    found = locate_file(root, names, dataset=dataset)
    if found is None:
        wanted = " or ".join(names)
        raise ManifestError(f"{dataset}: {wanted} not found in {root} nor one folder below it. "
                            f"Expected layout: {layout}")
    return found


def require_dir(base: Path, names: Sequence[str], *, dataset: str, layout: str) -> Path:
    """The first existing folder of ``names`` under ``base`` (case-insensitive), or a precise error."""
    entries = {p.name.lower(): p for p in base.iterdir() if p.is_dir()} if base.is_dir() else {}
    for name in names:
        if name.lower() in entries:
            return entries[name.lower()]
    raise ManifestError(f"{dataset}: image folder {' or '.join(f'{n}/' for n in names)} not found in {base}. "
                        f"Expected layout: {layout}")


class FolderIndex:
    """The files under one folder, found case-insensitively, by path or by file name.

    Official releases mix case (TID2013's ``I01.BMP`` beside ``i25.bmp``, CLIVE's ``.JPG``) and
    are copied through case-insensitive file systems, so a label file's spelling need not be
    the file's. A bare file name is looked for at the top of the folder, then anywhere below it
    (CID2013 names images without their scene folders). A name without its extension, or with
    another image extension than the file (SPAQ copies differ), matches by stem. A match must
    be unique; two candidates count as no match.
    """

    def __init__(self, root: Path, folder: Path) -> None:
        self.root, self.folder = root, folder
        self._index: dict[str, set[str]] = {}
        for directory, _, files in os.walk(folder):
            for file in files:
                relative = Path(directory, file).relative_to(folder).as_posix()
                for key in _lookup_keys(relative.lower(), is_file=True):
                    self._index.setdefault(key, set()).add(relative)

    def find(self, name: str, *, source: str) -> str | None:
        """The path relative to the dataset root of the file ``name`` names, or None.

        ``source`` (file and row) is named if the match is a link leading outside the root.
        """
        for key in _lookup_keys(name.strip().replace("\\", "/").lower(), is_file=False):
            candidates = self._index.get(key, set())
            if len(candidates) == 1:
                found = (self.folder / next(iter(candidates))).relative_to(self.root).as_posix()
                return safe_relative_path(self.root, found, source=source)
        return None

    def resolve(self, name: str, *, source: str) -> str:
        """``find``, else the path as the label file spells it (never leaving the root).

        A missing image is not an error here: extraction marks its row failed and
        ``datasets verify`` names it.
        """
        found = self.find(name, source=source)
        if found is not None:
            return found
        folder = self.folder.relative_to(self.root).as_posix()
        return safe_relative_path(self.root, f"{folder}/{name.strip()}", source=source)

    def folders(self, relative_path: str) -> tuple[str, ...]:
        """The folder names between the indexed folder and the file ``relative_path`` (root-relative)."""
        return (self.root / relative_path).relative_to(self.folder).parts[:-1]


def _lookup_keys(path: str, *, is_file: bool) -> list[str]:
    """Index keys of a lower-case relative path, most exact first.

    A file is indexed under its path, its name and their stems; a query tries the same kinds in
    that order, by name only when it names no folder.
    """
    pure = PurePosixPath(path)
    stem = pure.with_suffix("").as_posix() if pure.suffix in IMAGE_SUFFIXES else None
    if not is_file and "/" in path:
        return [f"path:{path}"] + ([f"stem:{stem}"] if stem else [f"stem:{path}"])
    keys = [f"path:{path}", f"name:{pure.name}"]
    if is_file:
        return keys + ([f"stem:{stem}", f"namestem:{PurePosixPath(stem).name}"] if stem else [])
    bare = stem or path  # a query without an image extension may be a stem already
    return keys + [f"stem:{bare}", f"namestem:{PurePosixPath(bare).name}"]


# --- MATLAB files ----------------------------------------------------------------------------------


def read_mat(path: Path) -> dict[str, Any]:
    """The variables of a MATLAB v5-v7 file (what the LIVE releases ship), read by ``matfile``
    rather than scipy, whose C reader crashes the process on some damaged files."""
    if path.stat().st_size == 0:
        raise ManifestError(f"{path}: empty file, expected a MATLAB file")
    try:
        contents = read_mat_file(path)
    except MatFileError as error:
        hint = " (re-save it with save(..., '-v7'))" if "v7.3" in str(error) else ""
        raise ManifestError(f"{path}: not a readable MATLAB file: {error}{hint}") from None
    return {k: v for k, v in contents.items() if not k.startswith("__")}


def mat_variable(contents: dict[str, Any], path: Path, name: str) -> np.ndarray:
    if name not in contents:
        raise ManifestError(f"{path}: variable {name!r} not found; the file holds {sorted(contents)}")
    return np.asarray(contents[name])


def mat_strings(contents: dict[str, Any], path: Path, name: str) -> list[str]:
    """A MATLAB cell array of strings (any orientation) as a list."""
    values = []
    for index, cell in enumerate(mat_variable(contents, path, name).ravel(order="F")):
        text = np.asarray(cell).ravel()
        if text.size != 1 or not isinstance(text[0], str):
            raise ManifestError(f"{path}: {name}, entry {index + 1} is not a string: {cell!r}")
        values.append(text[0].strip())
    return values


def mat_numbers(contents: dict[str, Any], path: Path, name: str) -> np.ndarray:
    """A MATLAB numeric vector (row or column) as a flat float array; NaN entries are an error."""
    array = mat_variable(contents, path, name)
    try:
        values = array.astype(np.float64).ravel(order="F")
    except (TypeError, ValueError):
        raise ManifestError(f"{path}: {name} is not numeric (MATLAB class {array.dtype})") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ManifestError(f"{path}: {name} entry {bad[0] + 1} is {values[bad[0]]}, not a finite number")
    return values


def require_lengths(lengths: dict[str, int], *, dataset: str) -> int:
    """The common length of parallel label vectors; an error listing them when they differ."""
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ManifestError(f"{dataset}: label vectors differ in length ({listing}); they must be parallel")
    return next(iter(lengths.values()))


# --- Excel files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SheetTable:
    """Data rows under a header found by content; ``rows`` are the rows' Excel numbers (1-based)."""

    path: Path
    sheet: str
    frame: pd.DataFrame  # one column per requested header, named as requested
    rows: list[int]

    def where(self, position: int) -> str:
        return f"{self.path}, sheet {self.sheet!r}, row {self.rows[position]}"

    def named_rows(self) -> Iterator[tuple[str, str, tuple[Any, ...]]]:
        """(where, name, other cells) per row, the first column being a non-empty image name."""
        for position, (name, *cells) in enumerate(self.frame.itertuples(index=False)):
            text = cell_text(name)
            if not text:
                raise ManifestError(f"{self.where(position)}: empty {self.frame.columns[0]}")
            yield f"{self.where(position)} ({text})", text, tuple(cells)


def _header_key(value: Any) -> str:
    # Headers differ in spacing and case between copies (CID2013's "Image set specific  MOS").
    return " ".join(str(value).split()).casefold() if isinstance(value, str) else ""


def read_sheet(path: Path, columns: Sequence[str], *, sheet: str | None = None,
               optional: Sequence[str] = ()) -> SheetTable:
    """The rows of the first sheet (``sheet`` first when given) whose header row holds ``columns``.

    The header is found by content, anywhere in the sheet: CSIQ's starts at cell D4 of its
    second sheet. Columns of ``optional`` present in that header are read too. Data rows are
    those below the header with any of ``columns`` filled.
    """
    frames = _read_workbook(path)
    order = sorted(frames, key=lambda name: name != sheet)  # stable: the workbook's order otherwise
    wanted = [_header_key(c) for c in columns]
    for name in order:
        found = _find_header(frames[name], wanted)
        if found is not None:
            header_row, positions = found
            keys = [_header_key(v) for v in frames[name].iloc[header_row].tolist()]
            extra = [c for c in optional if _header_key(c) in keys]
            body = frames[name].iloc[header_row + 1:, positions + [keys.index(_header_key(c)) for c in extra]]
            body.columns = list(columns) + extra
            body = body[body[list(columns)].notna().any(axis=1)]
            return SheetTable(path, name, body.reset_index(drop=True), [int(i) + 1 for i in body.index])
    where = f"sheet {sheet!r} nor any other sheet" if sheet else "any sheet"
    raise ManifestError(f"{path}: no header row with columns {list(columns)} in {where} "
                        f"(sheets: {list(frames)})")


def _read_workbook(path: Path) -> dict[str, pd.DataFrame]:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic not in (b"PK\x03\x04", b"\xd0\xcf\x11\xe0"):  # .xlsx is a zip archive, .xls an OLE2 file
        raise ManifestError(f"{path}: {'an empty file' if not magic else 'not an Excel workbook'}; "
                            "expected an .xlsx (zip) or .xls file")
    try:
        # only empty cells are missing: "n/a" or "NA" in a score cell is an error to report, not a gap
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object, keep_default_na=False, na_values=[""])
    except ImportError as error:  # .xls needs xlrd, which iqa-store does not require
        raise ManifestError(f"{path}: reading this Excel format needs an extra package ({error}); "
                            f"install it, or save the file as .xlsx") from None
    except Exception as error:  # zipfile, openpyxl and pandas raise many types on damaged files (BadZipFile, ...)
        raise ManifestError(f"{path}: not a readable Excel workbook ({type(error).__name__}: {error})") from None


def _find_header(frame: pd.DataFrame, wanted: list[str]) -> tuple[int, list[int]] | None:
    for row in range(len(frame)):
        keys = [_header_key(v) for v in frame.iloc[row].tolist()]
        if all(w in keys for w in wanted):
            return row, [keys.index(w) for w in wanted]
    return None


def cell_number(value: Any, *, source: str, what: str) -> float:
    """A finite float from a spreadsheet cell (number or numeric text); empty cells are an error."""
    empty = value is None or (isinstance(value, float) and math.isnan(value))
    return parse_number("" if empty else str(value), source=source, what=what)


def cell_text(value: Any) -> str:
    """A cell as text; whole numbers lose the ``.0`` Excel gives them (CSIQ's image 1600)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


# --- scores ----------------------------------------------------------------------------------------


def flip_scale(values: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """A lower-is-better score turned higher-is-better inside its scale: ``lo + hi - value``.

    The conversion is linear and order-reversing, so correlations with predictions are those
    against the published DMOS with the sign flipped; the published value is kept as
    ``mos_original``.
    """
    return (scale[0] + scale[1]) - np.asarray(values, dtype=np.float64)


def std_from_variance(variance: float, *, source: str) -> float:
    return math.sqrt(non_negative(variance, source=source, what="variance"))


def in_range(value: float, bounds: tuple[float, float], *, source: str, what: str) -> float:
    """``value`` when inside the published ``bounds``; else an error naming ``source``."""
    if not bounds[0] <= value <= bounds[1]:
        raise ManifestError(f"{source}: {what} {value:g} outside {bounds[0]:g}-{bounds[1]:g}")
    return value


def non_negative(value: float, *, source: str, what: str) -> float:
    if value < 0:
        raise ManifestError(f"{source}: negative {what} {value:g}")
    return value

"""Bad-input trial: broken label files for every dataset adapter, through the real CLI.

Each adapter gets a tiny tree in its official layout (the label file in the release's own
format: CSV, plain text, MATLAB .mat or Excel .xlsx) and then one broken copy per case: a
missing column, a NaN and a text MOS, a duplicate id, a path leaving the root, bytes that are
not UTF-8 (for a binary format: a file that is not one at all), a header and no rows, an empty
file. ``iqa-store extract`` must stop with exit code 2 and one line naming the file, the row
(line, Excel row or vector entry) and what is wrong, and write nothing to the store. CRLF line
ends must work: the same manifest as LF.

Then hypothesis mutates valid label files (bytes, lines, cells, variables) for every parser
the adapters use; a reader may accept a file or raise ManifestError, never anything else, and
what it accepts is a valid manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from scipy.io import savemat

from iqa_store.cli import cli
from iqa_store.datasets import DATASETS, ManifestError, load_manifest
from iqa_store.datasets.testing import mat_cell, write_image, write_workbook

pytestmark = pytest.mark.reliability

RERUN = ".venv/bin/python -m pytest -m reliability tests/reliability/test_bad_labels.py"
EXAMPLES = 100  # hypothesis examples per parser


# --- releases: a valid miniature of each adapter's official layout --------------------------------


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Any]]

    def column(self, name: str) -> int:
        return self.header.index(name)

    def replaced(self, row: int, name: str, value: Any) -> "Table":
        rows = [list(r) for r in self.rows]
        rows[row][self.column(name)] = value
        return Table(list(self.header), rows)

    def without(self, name: str) -> "Table":
        k = self.column(name)
        return Table(self.header[:k] + self.header[k + 1:], [r[:k] + r[k + 1:] for r in self.rows])


@dataclass(frozen=True)
class Release:
    """One adapter's official layout: its label table, where it lives and the images its rows name."""

    name: str
    fmt: str  # "csv", "txt", "mat" or "xlsx"
    table: Table
    id_col: str
    mos_col: str
    images: Callable[[list[Any]], list[str]]  # files (relative to the root) a row needs
    label: str = ""  # the label file (csv, txt, xlsx), relative to the root
    mat_files: dict[str, str] = field(default_factory=dict)  # mat: column -> file (variable = column)
    sheet: tuple[str, int, int] = ("Sheet1", 0, 0)  # xlsx: sheet, header row and column (0-based)
    other_sheets: dict[str, pd.DataFrame] = field(default_factory=dict)
    escape: str | None = None  # an id value that leaves the root (None: ids are not paths)
    target: int = 1  # the row a mutation changes
    options: dict[str, str] = field(default_factory=dict)
    ids_from_positions: bool = False  # LIVE: an entry's file comes from its position, ids cannot repeat

    def file_of(self, column: str) -> str:
        return self.mat_files[column] if self.fmt == "mat" else self.label

    def location(self, row: int) -> str:
        """How the adapter's errors name data row ``row`` (0-based) of the label file."""
        return {"csv": f"line {row + 2}", "txt": f"line {row + 1}", "mat": f"entry {row + 1}",
                "xlsx": f"row {self.sheet[1] + 2 + row}"}[self.fmt]

    def build(self, root: Path, table: Table | None = None, *, encoding: str = "utf-8", newline: str = "\n") -> Path:
        root.mkdir(parents=True, exist_ok=True)
        for seed, row in enumerate(self.table.rows):
            for image in self.images(row):
                if not (root / image).exists():
                    write_image(root / image, seed=seed)
        self.write_labels(root, table or self.table, encoding=encoding, newline=newline)
        return root

    def write_labels(self, root: Path, table: Table, *, encoding: str = "utf-8", newline: str = "\n") -> None:
        if self.fmt in ("csv", "txt"):
            lines = [" ".join(map(str, r)) for r in table.rows] if self.fmt == "txt" else \
                [",".join(table.header)] + [",".join(map(str, r)) for r in table.rows]
            (root / self.label).parent.mkdir(parents=True, exist_ok=True)
            (root / self.label).write_bytes("".join(line + newline for line in lines).encode(encoding))
        elif self.fmt == "mat":
            by_file: dict[str, dict[str, Any]] = {}
            changed = set()
            for column, file in self.mat_files.items():
                if column in table.header:
                    values = [r[table.column(column)] for r in table.rows]
                    by_file.setdefault(file, {})[column] = mat_vector(values)
                    if values != [r[self.table.column(column)] for r in self.table.rows]:
                        changed.add(file)
                else:  # a missing variable: its file holds another name
                    by_file.setdefault(file, {})[f"{column}_renamed"] = np.zeros((1, 1))
                    changed.add(file)
            for file, variables in by_file.items():
                if file in changed or not (root / file).is_file():  # savemat of LIVE's 982 names takes 0.1 s
                    (root / file).parent.mkdir(parents=True, exist_ok=True)
                    savemat(root / file, variables)
        else:
            name, row, column = self.sheet
            sheets = {sheet: (frame, 0, 0) for sheet, frame in self.other_sheets.items()}
            sheets[name] = (pd.DataFrame(table.rows, columns=table.header), row, column)
            write_workbook(root / self.label, sheets)

    def cli_args(self, root: Path) -> list[str]:
        options = [a for k, v in self.options.items() for a in ("-o", f"{k}={v}")]
        return ["-d", self.name, "--root", str(root), *options]

    def manifest(self, root: Path):
        return load_manifest(self.name, root, **self.options)


def mat_vector(values: list[Any]) -> np.ndarray:
    """A MATLAB vector as the releases store it: a cell array of strings, else a 1 x n double row."""
    if any(isinstance(v, str) or v is None for v in values):
        return mat_cell([str(v) for v in values])
    return np.array([values], dtype=np.float64).reshape(1, len(values))


KONIQ_NAMES = ["10004473376.jpg", "10007357496.jpg", "10007903636.jpg", "100117038.jpg"]
LIVE_ENTRIES = {0: ("jp2k/img1.bmp", "bikes.bmp", 25.0), 226: ("jp2k/img227.bmp", "parrots.bmp", 70.5),
                227: ("jpeg/img1.bmp", "bikes.bmp", 0.5), 981: ("fastfading/img174.bmp", "parrots.bmp", 48.0)}
LIVE_FILES = [f"{folder}/img{j}.bmp" for folder, count in (("jp2k", 227), ("jpeg", 233), ("wn", 174),
                                                            ("gblur", 174), ("fastfading", 174))
              for j in range(1, count + 1)]


def live_table() -> Table:
    rows = []
    for entry in range(982):
        file, reference, dmos = LIVE_ENTRIES.get(entry, (LIVE_FILES[entry], "bikes.bmp", 10.0))
        rows.append([dmos, 0.0 if entry in LIVE_ENTRIES else 1.0, reference, file])
    return Table(["dmos", "orgs", "refnames_all", "file"], rows)


def cid_id(image_set: int, scene: int, device: int) -> str:
    return f"IS_{'I' * image_set}_C{scene:02d}_D{device:02d}"


CID_IMAGES = [(s, c, d) for s in (1, 2) for c in (1, 2) for d in (1, 2)]

RELEASES = [
    Release("csv", "csv", Table(["path", "mos"], [[f"img{k}.jpg", 1.0 + k] for k in range(4)]), "path", "mos",
            lambda r: [r[0]], label="labels.csv", escape="../outside.jpg", options={"labels": "labels.csv"}),
    Release("koniq", "csv", Table(["image_name", "c1", "MOS", "SD", "MOS_zscore"],
                                  [[n, 3, 2.0 + 0.5 * k, 0.5, 40.0 + k] for k, n in enumerate(KONIQ_NAMES)]),
            "image_name", "MOS", lambda r: [f"1024x768/{r[0]}"], label="koniq10k_scores_and_distributions.csv",
            escape="../../outside.jpg"),
    Release("kadid10k", "csv", Table(["dist_img", "ref_img", "dmos", "var"],
                                     [[f"I0{k // 2 + 1}_01_0{k % 2 + 1}.png", f"I0{k // 2 + 1}.png", 1.5 + k, 0.25]
                                      for k in range(4)]),
            "dist_img", "dmos", lambda r: [f"images/{r[0]}", f"images/{r[1]}"], label="dmos.csv",
            escape="../../outside.png"),
    Release("flive", "csv", Table(["name", "mos"], [[f"voc_emotic_ava/pic{k}.jpg", 20.0 + 10 * k] for k in range(4)]),
            "name", "mos", lambda r: [f"database/{r[0]}"], label="database/labels_image.csv",
            escape="../../outside.jpg"),
    Release("tid2013", "txt", Table(["mos", "name"], [[1.5 + k, f"I0{k + 1}_01_1.bmp"] for k in range(4)]),
            "name", "mos", lambda r: [f"distorted_images/{r[1]}", f"reference_images/{r[1][:3]}.bmp"],
            label="mos_with_names.txt", escape="../../outside.bmp"),
    Release("clive", "mat", Table(["AllImages_release", "AllMOS_release", "AllStdDev_release"],
                                  [[f"{k}.bmp", 20.0 + 15 * k, 9.0] for k in range(1, 5)]),
            "AllImages_release", "AllMOS_release", lambda r: [f"Images/{r[0]}"],
            mat_files={c: f"Data/{c}.mat" for c in ("AllImages_release", "AllMOS_release", "AllStdDev_release")},
            escape="../../outside.bmp"),
    Release("live", "mat", live_table(), "refnames_all", "dmos",
            lambda r: [r[3], f"refimgs/{r[2]}"] if r[1] == 0.0 else [],
            mat_files={"dmos": "dmos.mat", "orgs": "dmos.mat", "refnames_all": "refnames_all.mat"},
            escape="../../outside.bmp", target=226, ids_from_positions=True),
    Release("csiq", "xlsx", Table(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"],
                                  [[1600, 1, "noise", 1, 0.02, 0.06], [1600, 2, "jpeg", 3, 0.05, 0.34],
                                   ["bridge", 3, "blur", 4, 0.07, 0.81], ["bridge", 4, "contrast", 2, 0.04, 0.25]]),
            "image", "dmos",
            lambda r: [f"dst_imgs/{dict(noise='awgn').get(r[2], r[2])}/{r[0]}.{dict(noise='awgn').get(r[2], r[2])}"
                       f".{r[3]}.png", f"src_imgs/{r[0]}.png"],
            label="csiq.DMOS.xlsx", sheet=("all_by_image", 3, 3),
            other_sheets={"all_by_distortion": pd.DataFrame({"dst_type": ["noise"], "mean dmos": [0.2]})},
            escape="../../../outside"),
    Release("spaq", "xlsx", Table(["Image name", "MOS", "Brightness"], [[f"0000{k}.jpg", 10.0 + 20 * k, 50.0]
                                                                          for k in range(1, 5)]),
            "Image name", "MOS", lambda r: [f"TestImage/{r[0]}"],
            label="Annotations/MOS and Image attribute scores.xlsx", escape="../../outside.jpg"),
    Release("bid", "xlsx", Table(["Image Number", "Average Subjective Grade", "Number of Grades", "Grade #1",
                                  "Grade #2"], [[n, 1.0 + n / 2, 2, 1, 2] for n in (1, 3, 4, 5)]),
            "Image Number", "Average Subjective Grade", lambda r: [f"ImageDatabase/DatabaseImage{r[0]:04d}.JPG"],
            label="DatabaseGrades.xlsx", sheet=("Plan1", 0, 0)),
    Release("cid2013", "xlsx", Table(["Source_ID", "Image set specific  MOS", "Realigned MOS"],
                                     [[cid_id(*i), 80.0 - 5 * k, 10.0 + 7 * k] for k, i in enumerate(CID_IMAGES)]),
            "Source_ID", "Realigned MOS", lambda r: [f"IS{r[0].count('I') - 1}/co{int(r[0][-6:-4])}/{r[0]}.jpg"],
            label="CID2013 data - version 12112014.xlsx", sheet=("CID2013 MOS", 0, 0),
            other_sheets={"Info": pd.DataFrame({"About": ["CID2013"]})}, escape="../../outside"),
]
BY_NAME = {r.name: r for r in RELEASES}


def test_every_adapter_has_a_release() -> None:
    assert set(DATASETS.names()) - {"demo"} == set(BY_NAME), "a dataset adapter without a bad-label trial"


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_the_miniature_releases_are_valid(release: Release, tmp_path: Path) -> None:
    manifest = release.manifest(release.build(tmp_path / "root"))
    assert len(manifest) == len([r for r in release.table.rows if release.images(r)])
    assert all(p.is_file() for p in manifest.paths)


# --- the broken copies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    """A broken label file: its table (or raw bytes), where the error must point and what it must say."""

    file: str  # the label file the error names (relative to the root)
    says: str  # regex of what is wrong
    where: str | None = None  # the row it must name ("line 3", "row 5", "entry 2")
    table: Table | None = None
    raw: bytes | None = None
    encoding: str = "utf-8"


def missing_column(r: Release) -> Broken:
    return Broken(r.file_of(r.mos_col), re.escape(r.mos_col), table=r.table.without(r.mos_col))


def nan_mos(r: Release) -> Broken:
    value = float("nan") if r.fmt == "mat" else "NaN"
    return Broken(r.file_of(r.mos_col), "(?i)nan|not a finite", r.location(r.target),
                  r.table.replaced(r.target, r.mos_col, value))


def text_mos(r: Release) -> Broken:
    if r.fmt == "mat":  # a vector of strings where numbers belong: the file says what it holds instead
        table = Table(r.table.header, [[*row] for row in r.table.rows])
        k = table.column(r.mos_col)
        for row in table.rows:
            row[k] = "good"
        return Broken(r.file_of(r.mos_col), "not numeric", table=table)
    return Broken(r.file_of(r.mos_col), "'good'", r.location(r.target), r.table.replaced(r.target, r.mos_col, "good"))


def duplicate_id(r: Release) -> Broken | None:
    if r.ids_from_positions:
        return None
    table = Table(r.table.header, [*r.table.rows, list(r.table.rows[0])])
    return Broken(r.file_of(r.id_col), "(?i)duplicate", r.location(len(r.table.rows)), table)


def escaping_path(r: Release) -> Broken | None:
    if r.escape is None:
        return None
    return Broken(r.file_of(r.id_col), "outside|inside the dataset root|no image file", r.location(r.target),
                  r.table.replaced(r.target, r.id_col, r.escape))


def not_utf8(r: Release) -> Broken:
    if r.fmt in ("mat", "xlsx"):  # binary formats: a file that is not one
        return Broken(r.file_of(r.id_col), "not a readable|not an Excel workbook",
                      raw=b"\xff\xfe\x00\x81 not a label file \xe9\xe8\n" * 8)
    value = r.table.rows[r.target][r.table.column(r.id_col)]
    return Broken(r.label, "(?i)utf-8", r.location(r.target),
                  r.table.replaced(r.target, r.id_col, f"caf\u00e9-{value}"), encoding="latin-1")


def header_only(r: Release) -> Broken | None:
    if r.fmt == "txt":  # the text format has no header: its empty case covers it
        return None
    says = "no data rows|no .*under the header|no images|no scored|differ in length|every entry"
    return Broken(r.file_of(r.id_col), says, table=Table(r.table.header, []))


def empty_file(r: Release) -> Broken:
    return Broken(r.file_of(r.id_col), "(?i)empty|not a readable|no lines", raw=b"")


CASES: dict[str, Callable[[Release], Broken | None]] = {
    "missing column": missing_column, "NaN MOS": nan_mos, "text MOS": text_mos, "duplicate id": duplicate_id,
    "path escaping the root": escaping_path, "non-UTF-8": not_utf8, "header only": header_only,
    "empty file": empty_file}


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_broken_label_file_is_one_precise_line(release: Release, case: str, tmp_path: Path, ledger) -> None:
    broken = CASES[case](release)
    if broken is None:
        pytest.skip(f"{release.name}: no {case} in its format")
    root = release.build(tmp_path / "root")
    if broken.raw is not None:
        (root / broken.file).write_bytes(broken.raw)
    else:
        release.write_labels(root, broken.table, encoding=broken.encoding)
    store = tmp_path / "store"
    result = CliRunner().invoke(cli, ["extract", "-m", "brisque", *release.cli_args(root), "--store", str(store),
                                      "-q", "--workers", "0"])
    problems = []
    try:
        line = one_error_line(result)
    except AssertionError as error:
        line, problems = "", [f"not one error line with exit code 2: {error}"]
    if line:
        if Path(broken.file).name not in line:
            problems.append(f"the error does not name {broken.file}")
        if broken.where is not None and not re.search(rf"\b{broken.where}\b", line):
            problems.append(f"the error does not point at {broken.where}")
        if not re.search(broken.says, line):
            problems.append(f"the error does not say /{broken.says}/")
    if files_in(store):
        problems.append(f"the store was written: {files_in(store)}")
    ledger.record("bad label files", RERUN, survived=not problems)
    assert not problems, (problems, line)


@pytest.mark.parametrize("release", [r for r in RELEASES if r.fmt in ("csv", "txt")], ids=lambda r: r.name)
def test_crlf_line_ends_read_as_lf(release: Release, tmp_path: Path, ledger) -> None:
    lf = release.manifest(release.build(tmp_path / "lf"))
    root = release.build(tmp_path / "crlf", newline="\r\n")
    assert b"\r\n" in (root / release.label).read_bytes()
    store = tmp_path / "store"
    result = CliRunner().invoke(cli, ["extract", "-m", "brisque", *release.cli_args(root), "--store", str(store),
                                      "-q", "--workers", "0"])
    crlf = release.manifest(root)
    same = crlf.ids == lf.ids and np.array_equal(crlf.mos, lf.mos) and \
        crlf.table["path"].tolist() == lf.table["path"].tolist()
    ledger.record("bad label files", RERUN, survived=result.exit_code == 0 and same)
    assert result.exit_code == 0, result.output
    assert same


@pytest.mark.parametrize("release", [r for r in RELEASES if r.fmt == "xlsx"], ids=lambda r: r.name)
def test_crlf_inside_excel_cells_reads_as_without(release: Release, tmp_path: Path, ledger) -> None:
    """Excel has no line ends; names pasted from Windows text carry a CRLF: read as without it."""
    plain = release.manifest(release.build(tmp_path / "plain"))
    k = release.table.column(release.id_col)
    pasted = Table(release.table.header, [[*r[:k], f"{r[k]}\r\n", *r[k + 1:]] for r in release.table.rows])
    root = release.build(tmp_path / "pasted", pasted)
    try:
        read = release.manifest(root)
        same = read.ids == plain.ids and np.array_equal(read.mos, plain.mos)
    except ManifestError as error:
        same, read = False, error
    ledger.record("bad label files", RERUN, survived=same)
    assert same, read


# --- hypothesis: mutated label files -------------------------------------------------------------------


FORMATS = {"csv": [r for r in RELEASES if r.fmt == "csv"], "txt": [r for r in RELEASES if r.fmt == "txt"],
           "mat": [r for r in RELEASES if r.fmt == "mat"], "xlsx": [r for r in RELEASES if r.fmt == "xlsx"]}
AWKWARD_TEXT = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e309", "-0", "0x10", "1,5", "\"", "\"\"",
                                "a\"b", "\r", "\n", "\t", "\x00", "../x", "/etc/passwd", "C:\\x", "\u00e9",
                                "\ufeff", "1_000", "True", "None", "NULL", "#N/A", "=1+1"])
CELL = st.one_of(AWKWARD_TEXT, st.text(max_size=12), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-10**12, 10**12), st.booleans(), st.none())


def byte_edits(data: bytes) -> st.SearchStrategy[bytes]:
    """The file with one to three edits: bytes replaced, inserted or deleted, or the file cut short."""
    ops = st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete", "cut"]), st.integers(0, 10**6),
                             st.binary(min_size=1, max_size=8)), min_size=1, max_size=3)
    return ops.map(lambda chosen: _edit_bytes(data, chosen))


def _edit_bytes(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    for kind, position, payload in ops:
        position = position % (len(data) + 1)
        if kind == "replace":
            data = data[:position] + payload + data[position + len(payload):]
        elif kind == "insert":
            data = data[:position] + payload + data[position:]
        elif kind == "delete":
            data = data[:position] + data[position + len(payload) + 1:]
        else:
            data = data[:position]
    return data


def table_edits(table: Table) -> st.SearchStrategy[Table]:
    """The table with one to three edits: a cell or header replaced, a row repeated or dropped, a column dropped."""
    n_rows, n_cols = len(table.rows), len(table.header)
    op = st.one_of(
        st.tuples(st.just("cell"), st.integers(0, n_rows - 1), st.integers(0, n_cols - 1), CELL),
        st.tuples(st.just("header"), st.integers(0, n_cols - 1), st.text(max_size=10)),
        st.tuples(st.just("repeat"), st.integers(0, n_rows - 1)),
        st.tuples(st.just("drop row"), st.integers(0, n_rows - 1)),
        st.tuples(st.just("drop column"), st.integers(0, n_cols - 1)))
    return st.lists(op, min_size=1, max_size=3).map(lambda ops: _edit_table(table, ops))


def _edit_table(table: Table, ops: list) -> Table:
    header, rows = list(table.header), [list(r) for r in table.rows]
    for op in ops:
        kind = op[0]
        if kind == "cell" and op[1] < len(rows) and op[2] < len(header):
            rows[op[1]][op[2]] = op[3]
        elif kind == "header" and op[1] < len(header):
            header[op[1]] = op[2]
        elif kind == "repeat" and op[1] < len(rows):
            rows.append(list(rows[op[1]]))
        elif kind == "drop row" and op[1] < len(rows):
            del rows[op[1]]
        elif kind == "drop column" and op[1] < len(header) and len(header) > 1:
            del header[op[1]]
            rows = [r[:op[1]] + r[op[1] + 1:] for r in rows]
    return Table(header, rows)


def read_or_refuse(release: Release, root: Path) -> str | None:
    """One mutated file: a valid manifest or a ManifestError; anything else is returned as the finding."""
    try:
        manifest = release.manifest(root)
    except ManifestError:
        return None
    except Exception as error:  # the finding: anything else escaping a reader
        return f"{release.name}: {type(error).__name__}: {error}"
    problems = [] if manifest.table["image_id"].is_unique else ["repeated ids"]
    lo, hi = manifest.mos_range
    if not (np.isfinite(manifest.mos).all() and ((manifest.mos >= lo) & (manifest.mos <= hi)).all()):
        problems.append(f"MOS outside {manifest.mos_range}: {manifest.mos}")
    return f"{release.name}: accepted an invalid manifest: {problems}" if problems else None


def label_files(release: Release) -> list[str]:
    return sorted(set(release.mat_files.values())) if release.fmt == "mat" else [release.label]


@pytest.fixture(scope="module")
def valid_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, bytes]]]:
    """One valid tree per adapter, and its label files' bytes to restore after each example."""
    trees = {}
    for release in RELEASES:
        root = release.build(tmp_path_factory.mktemp(release.name))
        trees[release.name] = (root, {f: (root / f).read_bytes() for f in label_files(release)})
    return trees


def fuzz(fmt: str, valid_trees, ledger, mutate: Callable[[Release, Path, Any], None],
         strategy: Callable[[Release], st.SearchStrategy]) -> None:
    """EXAMPLES mutated label files of the adapters reading ``fmt``; each is one run of the trial."""
    releases = FORMATS[fmt]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def example(data) -> None:
        release = BY_NAME[data.draw(st.sampled_from([r.name for r in releases]), label="adapter")]
        root, originals = valid_trees[release.name]
        try:
            mutate(release, root, data.draw(strategy(release), label="mutation"))
            finding = read_or_refuse(release, root)
        finally:
            for file, original in originals.items():
                (root / file).write_bytes(original)
        ledger.record(f"mutated label files: {fmt} (hypothesis)", RERUN, survived=finding is None)
        assert finding is None, finding

    example()


def edited_file(release: Release, originals: dict[str, bytes]) -> st.SearchStrategy[tuple[str, bytes]]:
    files = st.sampled_from(sorted(originals))
    return files.flatmap(lambda file: byte_edits(originals[file]).map(lambda data: (file, data)))


def write_edited_file(release: Release, root: Path, change: tuple[str, bytes]) -> None:
    file, data = change
    (root / file).write_bytes(data)


def write_table(release: Release, root: Path, table: Table) -> None:
    from openpyxl.utils.exceptions import IllegalCharacterError
    try:
        release.write_labels(root, table)
    except IllegalCharacterError:  # text Excel cannot hold (control characters): not a file anyone has
        reject()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_mutated_bytes_only_raise_manifest_errors(fmt: str, valid_trees, ledger) -> None:
    fuzz(fmt, valid_trees, ledger, write_edited_file, lambda r: edited_file(r, valid_trees[r.name][1]))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_mutated_tables_only_raise_manifest_errors(fmt: str, valid_trees, ledger) -> None:
    fuzz(fmt, valid_trees, ledger, write_table, table_edits_of)


def table_edits_of(release: Release) -> st.SearchStrategy[Table]:
    return table_edits(release.table)

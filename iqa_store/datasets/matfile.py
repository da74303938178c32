"""A reader of MATLAB level-5 MAT files (v5 to v7) in Python, bounds-checked at every step.

The official LIVE and LIVE Challenge releases ship their labels as MATLAB files. scipy's
``loadmat`` walks them in C and, on a damaged file (a variable name cut short, a size field
changed), reads past its buffers and kills the process with a segmentation fault: nothing
can catch that, so a damaged download would end a run with no message. This reader checks
every tag against the bytes it has before it reads, and every failure is a ``MatFileError``
naming the byte offset.

It reads what label files hold: numeric and logical arrays of every MATLAB class, char
arrays, cell arrays of those, inside compressed (v7) or plain elements, in either byte
order. Values come back the way ``scipy.io.loadmat(path, mat_dtype=True)`` returns them
(arrays of the MATLAB class shaped like the MATLAB dimensions, char arrays as arrays of row
strings, cells as object arrays), so a file reads the same with either. Structs, objects, sparse and complex arrays
are refused by name: no label file needs them.

Format: MathWorks, "MAT-File Format" (matfile_format.pdf), chapter 1.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MatFileError", "read_mat_file"]

HEADER_BYTES = 128
MAX_INFLATED = 1 << 30  # a label file is kilobytes; a compressed element inflating past 1 GiB is a bomb

# data types of a tag (miINT8 ...): numpy kinds, before byte order
DATA_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8",
              16: "utf-8", 17: "utf-16", 18: "utf-32"}
MATRIX, COMPRESSED = 14, 15
# array classes (mxCELL_CLASS ...)
CELL, STRUCT, OBJECT, CHAR, SPARSE = 1, 2, 3, 4, 5
NUMERIC_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
REFUSED_CLASSES = {STRUCT: "a struct", OBJECT: "an object", SPARSE: "a sparse matrix", 16: "a function handle",
                   17: "an opaque object"}
COMPLEX_FLAG, LOGICAL_FLAG = 0x0800, 0x0200
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MatFileError(ValueError):
    """A MAT file this reader cannot read; the message says where and why."""


@dataclass
class Element:
    """One data element: its type, where its data starts in ``buffer`` and how many bytes it has."""

    kind: int
    start: int
    size: int


class Cursor:
    """Reads tagged data elements from one buffer (the file, or an inflated compressed element)."""

    def __init__(self, buffer: bytes, order: str, origin: str) -> None:
        self.buffer, self.order, self.origin, self.position = buffer, order, origin, 0

    def fail(self, at: int, problem: str) -> MatFileError:
        return MatFileError(f"{problem} at byte {at}{self.origin}")

    def at_end(self) -> bool:
        return self.position >= len(self.buffer)

    def next_element(self) -> Element:
        at = self.position
        if at + 8 > len(self.buffer):
            raise self.fail(at, f"a data element's tag is cut short ({len(self.buffer) - at} of 8 bytes)")
        first, second = np.frombuffer(self.buffer, dtype=f"{self.order}u4", count=2, offset=at).tolist()
        if first >> 16:  # small data element: type and size share the first word, data in the second
            kind, size, start, padded = first & 0xFFFF, first >> 16, at + 4, 4
            if size > 4:
                raise self.fail(at, f"a small data element claims {size} bytes (at most 4)")
        else:
            kind, size, start = first, second, at + 8
            padded = size if kind == COMPRESSED else -(-size // 8) * 8
        if start + size > len(self.buffer):
            raise self.fail(at, f"a data element claims {size} bytes but {len(self.buffer) - start} remain")
        self.position = min(start + padded, len(self.buffer))
        return Element(kind, start, size)

    def numbers(self, element: Element, what: str) -> np.ndarray:
        kind = DATA_TYPES.get(element.kind)
        if kind is None or kind.startswith("utf"):
            raise self.fail(element.start, f"{what}: data type {element.kind} is not numeric")
        dtype = np.dtype(f"{self.order}{kind}")
        if element.size % dtype.itemsize:
            raise self.fail(element.start, f"{what}: {element.size} bytes is not a whole number of {kind} values")
        return np.frombuffer(self.buffer, dtype=dtype, count=element.size // dtype.itemsize, offset=element.start)

    def text(self, element: Element, what: str) -> str:
        raw = self.buffer[element.start:element.start + element.size]
        kind = DATA_TYPES.get(element.kind)
        try:
            if kind in ("i1", "u1", "utf-8"):
                return raw.decode("utf-8")
            if kind in ("u2", "i2", "utf-16"):
                return raw.decode("utf-16-le" if self.order == "<" else "utf-16-be")
            if kind == "utf-32":
                return raw.decode("utf-32-le" if self.order == "<" else "utf-32-be")
        except UnicodeDecodeError as error:
            raise self.fail(element.start, f"{what}: not valid text ({error.reason})") from None
        raise self.fail(element.start, f"{what}: data type {element.kind} is not text")


def read_mat_file(path: Path) -> dict[str, object]:
    """The variables of a level-5 MAT file, by name, as ``scipy.io.loadmat`` returns them."""
    data = Path(path).read_bytes()
    order = header_byte_order(data)
    cursor = Cursor(data, order, "")
    cursor.position = HEADER_BYTES
    variables: dict[str, object] = {}
    while not cursor.at_end():
        element = cursor.next_element()
        if element.kind == COMPRESSED:
            inner = Cursor(inflate(data, element, cursor), order, f" of the compressed element at byte {element.start - 8}")
            element, cursor_of_matrix = inner.next_element(), inner
        else:
            cursor_of_matrix = cursor
        if element.kind != MATRIX:
            raise cursor_of_matrix.fail(element.start, f"a top-level element of type {element.kind}, not a matrix")
        name, value = read_matrix(cursor_of_matrix, element, top_level=True)
        variables[name] = value
    return variables


def header_byte_order(data: bytes) -> str:
    if len(data) < HEADER_BYTES:
        raise MatFileError(f"{len(data)} bytes, shorter than the 128-byte MAT-file header")
    version, endian = data[124:126], data[126:128]
    if endian == b"IM":
        order, number = "<", int.from_bytes(version, "little")
    elif endian == b"MI":
        order, number = ">", int.from_bytes(version, "big")
    else:
        raise MatFileError("no MATLAB level-5 header (a MATLAB v4 file, or not a MAT file)")
    if number == 0x0200:
        raise MatFileError("a MATLAB v7.3 (HDF5) file")
    if number != 0x0100:
        raise MatFileError(f"MAT-file version {number:#06x}, not a level-5 file")
    return order


def inflate(data: bytes, element: Element, cursor: Cursor) -> bytes:
    stream = zlib.decompressobj()
    try:
        inflated = stream.decompress(data[element.start:element.start + element.size], MAX_INFLATED)
    except zlib.error as error:
        raise cursor.fail(element.start, f"a compressed element does not inflate ({error})") from None
    if stream.unconsumed_tail:
        raise cursor.fail(element.start, f"a compressed element inflates past {MAX_INFLATED} bytes")
    return inflated


def read_matrix(cursor: Cursor, element: Element, top_level: bool = False) -> tuple[str, object]:
    """One miMATRIX element: its name and its value."""
    if element.size == 0:  # MATLAB writes an empty cell entry as a matrix element with no bytes
        return "", np.empty((0, 0), dtype=np.float64)
    body = Cursor(cursor.buffer[element.start:element.start + element.size], cursor.order,
                  f" of the matrix at byte {element.start - 8}{cursor.origin}")
    flags = body.numbers(body.next_element(), "array flags")
    if flags.size < 2:
        raise body.fail(0, "the array flags are cut short")
    word = int(flags[0])
    array_class = word & 0xFF
    dims = tuple(int(d) for d in body.numbers(body.next_element(), "dimensions"))
    if len(dims) < 2 or min(dims) < 0:
        raise body.fail(8, f"dimensions {dims} are not a MATLAB array's")
    name = body.text(body.next_element(), "array name")
    if top_level and not IDENTIFIER.fullmatch(name):
        raise body.fail(0, f"variable name {name!r} is not a MATLAB identifier")
    if array_class in REFUSED_CLASSES:
        raise body.fail(0, f"variable {name!r} is {REFUSED_CLASSES[array_class]}, which label files never hold")
    if word & COMPLEX_FLAG:
        raise body.fail(0, f"variable {name!r} is complex, which label files never hold")
    count = int(np.prod(dims, dtype=object))
    if array_class == CELL:
        return name, read_cell(body, dims, count)
    if array_class == CHAR:
        return name, read_char(body, dims, count, name)
    if array_class not in NUMERIC_CLASSES:
        raise body.fail(0, f"variable {name!r} has array class {array_class}, not one MATLAB defines")
    return name, read_numeric(body, dims, count, array_class, bool(word & LOGICAL_FLAG), name)


def read_cell(body: Cursor, dims: tuple[int, ...], count: int) -> np.ndarray:
    if count > len(body.buffer):  # every entry needs a tag: a count past the bytes is a damaged size
        raise body.fail(8, f"a cell of {count} entries in {len(body.buffer)} bytes")
    cells = np.empty(count, dtype=object)
    for index in range(count):
        entry = body.next_element()
        if entry.kind != MATRIX:
            raise body.fail(entry.start, f"cell entry {index + 1} is data type {entry.kind}, not a matrix")
        cells[index] = read_matrix(body, entry)[1]
    return cells.reshape(dims, order="F")


def real_part(body: Cursor, count: int, name: str) -> np.ndarray:
    if body.at_end():
        if count:
            raise body.fail(body.position, f"variable {name!r} has no data for its {count} values")
        return np.empty(0)
    values = body.numbers(body.next_element(), f"variable {name!r}")
    if values.size != count:
        raise body.fail(body.position, f"variable {name!r} holds {values.size} values, its dimensions say {count}")
    return values


def read_numeric(body: Cursor, dims: tuple[int, ...], count: int, array_class: int, logical: bool,
                 name: str) -> np.ndarray:
    values = real_part(body, count, name)
    target = np.dtype(bool) if logical else np.dtype(NUMERIC_CLASSES[array_class]).newbyteorder("=")
    return values.astype(target).reshape(dims, order="F")


def read_char(body: Cursor, dims: tuple[int, ...], count: int, name: str) -> np.ndarray:
    """A char array as scipy returns it: one string per row (over the last dimension)."""
    if body.at_end():
        text = ""
    else:
        element = body.next_element()
        if DATA_TYPES.get(element.kind, "").startswith("utf") or element.kind in (1, 2):
            text = body.text(element, f"variable {name!r}")
        else:
            codes = body.numbers(element, f"variable {name!r}")
            try:
                text = "".join(map(chr, codes.tolist()))
            except (ValueError, OverflowError):
                raise body.fail(element.start, f"variable {name!r} holds a character code past Unicode") from None
    if len(text) != count:
        raise body.fail(body.position, f"variable {name!r} holds {len(text)} characters, its dimensions say {count}")
    if count == 0:
        return np.full(dims[:-1], "", dtype="U1")
    letters = np.array(list(text), dtype="U1").reshape(dims, order="F")
    rows = letters.reshape(-1, dims[-1])
    return np.array(["".join(row) for row in rows]).reshape(dims[:-1])

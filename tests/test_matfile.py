"""The MAT-file reader against scipy's ``loadmat(mat_dtype=True)`` on files scipy writes, on a
big-endian file built here from the format specification, and on damaged files: every
truncation and every single-byte change of a label file is a ``MatFileError`` or a read,
never another exception (scipy's own reader segfaults on some of these)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import loadmat, savemat
from scipy.sparse import csc_matrix

from iqa_store.datasets.matfile import MatFileError, read_mat_file


def cellstr(names: list[str], column: bool = True) -> np.ndarray:
    cells = np.empty((len(names), 1) if column else (1, len(names)), dtype=object)
    for index, name in enumerate(names):
        cells.flat[index] = name
    return cells


VARIABLES = {
    "row": np.array([[1.0, 2.5, -3.0]]),
    "column": np.arange(5.0).reshape(5, 1),
    "matrix": np.arange(12.0).reshape(3, 4),
    "cube": np.arange(24.0).reshape(2, 3, 4),
    "single": np.array([[1.5, 2.25]], dtype=np.float32),
    "small_ints": np.array([[0, 1, 255]], dtype=np.uint8),
    "signed": np.array([[-128, 0, 127]], dtype=np.int8),
    "int16": np.array([[-3000, 3000]], dtype=np.int16),
    "uint32": np.array([[4_000_000_000]], dtype=np.uint32),
    "int64": np.array([[-2**40, 2**40]], dtype=np.int64),
    "flags": np.array([[True, False, True]]),
    "scalar": np.float64(7.0),
    "empty": np.zeros((0, 0)),
    "word": "pristine",
    "accented": "caf\u00e9 \u00e0 Montr\u00e9al",
    "blank": "",
    "names": cellstr(["I01.bmp", "i02_01_1.bmp", "long name with spaces.JPG"]),
    "names_row": cellstr(["a", "bc"], column=False),
    "char_rows": np.array(["ab", "cd", "ef"]),
    "nested": cellstr([cellstr(["x", "y"]), np.array([[1.0, 2.0]])]),
}


def same(ours: object, theirs: object) -> None:
    theirs_array, ours_array = np.asarray(theirs), np.asarray(ours)
    assert ours_array.shape == theirs_array.shape
    if theirs_array.dtype == object:
        assert ours_array.dtype == object
        for mine, reference in zip(ours_array.ravel(), theirs_array.ravel()):
            same(mine, reference)
    else:
        assert ours_array.dtype == theirs_array.dtype.newbyteorder("=")  # ours in native order
        np.testing.assert_array_equal(ours_array, theirs_array)


@pytest.mark.parametrize("compressed", [False, True], ids=["v5", "v7 compressed"])
def test_reads_what_scipy_reads(compressed: bool, tmp_path: Path) -> None:
    path = tmp_path / "labels.mat"
    savemat(path, VARIABLES, do_compression=compressed)
    reference = {k: v for k, v in loadmat(path, mat_dtype=True).items() if not k.startswith("__")}
    ours = read_mat_file(path)
    assert sorted(ours) == sorted(reference) == sorted(VARIABLES)
    for name in VARIABLES:
        same(ours[name], reference[name])


def element(kind: int, payload: bytes, order: str) -> bytes:
    """A data element as the specification lays it out, small format for up to 4 bytes."""
    if 0 < len(payload) <= 4:
        return struct.pack(f"{order}I", (len(payload) << 16) | kind) + payload.ljust(4, b"\0")
    padded = payload + b"\0" * (-len(payload) % 8)
    return struct.pack(f"{order}II", kind, len(payload)) + padded


def handmade_file(order: str) -> bytes:
    """A MAT file holding mos = [1.5 2 42] (a double row) and name = 'ab', written field by field."""
    header = b"MATLAB 5.0 MAT-file, handmade".ljust(116, b" ") + b"\0" * 8
    header += struct.pack(f"{order}H", 0x0100) + (b"IM" if order == "<" else b"MI")

    def matrix(array_class: int, dims: tuple[int, ...], name: bytes, data: bytes) -> bytes:
        body = element(6, struct.pack(f"{order}II", array_class, 0), order)
        body += element(5, struct.pack(f"{order}{len(dims)}i", *dims), order)
        body += element(1, name, order) + data
        return element(14, body, order)

    mos = matrix(6, (1, 3), b"mos", element(9, struct.pack(f"{order}3d", 1.5, 2.0, 42.0), order))
    name = matrix(4, (1, 2), b"name", element(4, struct.pack(f"{order}2H", ord("a"), ord("b")), order))
    return header + mos + name


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_a_file_built_from_the_specification(order: str, tmp_path: Path) -> None:
    path = tmp_path / "handmade.mat"
    path.write_bytes(handmade_file(order))
    ours, reference = read_mat_file(path), loadmat(path, mat_dtype=True)
    np.testing.assert_array_equal(ours["mos"], [[1.5, 2.0, 42.0]])
    for name in ("mos", "name"):
        same(ours[name], reference[name])


@pytest.mark.parametrize("variables, refusal", [
    ({"s": {"field": 1.0}}, "'s' is a struct"),
    ({"z": np.array([[1 + 2j]])}, "'z' is complex"),
    ({"sp": csc_matrix(np.eye(3))}, "'sp' is a sparse matrix"),
])
def test_classes_label_files_never_hold_are_refused_by_name(variables, refusal: str, tmp_path: Path) -> None:
    path = tmp_path / "odd.mat"
    savemat(path, variables)
    with pytest.raises(MatFileError, match=refusal):
        read_mat_file(path)


@pytest.mark.parametrize("header, refusal", [
    (b"MATLAB 7.3 MAT-file".ljust(124, b" ") + b"\x00\x02IM", "v7.3 \\(HDF5\\)"),
    (b"\x00" * 200, "no MATLAB level-5 header"),
    (b"MATLAB 5.0".ljust(124) + b"\x05\x00IM", "MAT-file version 0x0005"),
    (b"short", "shorter than the 128-byte"),
])
def test_headers_that_are_not_level_5(header: bytes, refusal: str, tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    path.write_bytes(header)
    with pytest.raises(MatFileError, match=refusal):
        read_mat_file(path)


def label_file(tmp_path: Path, compressed: bool) -> bytes:
    path = tmp_path / "valid.mat"
    savemat(path, {"dmos": np.array([[1.0, 2.0, 3.5]]), "orgs": np.array([[0.0, 1.0, 0.0]]),
                   "refnames_all": cellstr(["a.bmp", "b.bmp"], column=False)}, do_compression=compressed)
    return path.read_bytes()


def read_or_refuse(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        read_mat_file(path)
    except MatFileError:
        pass


@pytest.mark.parametrize("compressed", [False, True], ids=["v5", "v7 compressed"])
def test_every_truncation_and_byte_change_is_a_read_or_a_matfile_error(compressed: bool, tmp_path: Path) -> None:
    data, path = label_file(tmp_path, compressed), tmp_path / "damaged.mat"
    for length in range(len(data)):
        read_or_refuse(path, data[:length])
    for position in range(len(data)):
        for value in (0x00, 0x01, 0x7F, 0xFF):
            read_or_refuse(path, data[:position] + bytes([value]) + data[position + 1:])
        read_or_refuse(path, data[:position] + data[position + 5:])  # the edit that crashed scipy: bytes removed


def test_the_deleted_name_that_crashes_scipy_is_one_error(tmp_path: Path) -> None:
    data, path = label_file(tmp_path, compressed=False), tmp_path / "damaged.mat"
    at = data.index(b"orgs")
    path.write_bytes(data[:at] + data[at + 5:])  # the name and the next tag's first byte gone
    with pytest.raises(MatFileError, match=r"at byte \d+"):
        read_mat_file(path)


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=0, max_size=8), st.integers(0, 8)),
                      min_size=1, max_size=4), compressed=st.booleans())
def test_random_edits_are_a_read_or_a_matfile_error(edits, compressed: bool, tmp_path_factory) -> None:
    tmp = tmp_path_factory.mktemp("mat")
    data = label_file(tmp, compressed)
    for position, payload, removed in edits:
        position %= len(data) + 1
        data = data[:position] + payload + data[position + removed:]
    read_or_refuse(tmp / "damaged.mat", data)


def test_a_compressed_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zlib

    from iqa_store.datasets import matfile
    monkeypatch.setattr(matfile, "MAX_INFLATED", 1 << 16)  # the real limit is 1 GiB; the rule is the same
    inflated = b"\0" * (1 << 20)
    data = bytearray(label_file(tmp_path, compressed=False)[:128])
    data += struct.pack("<II", 15, len(zlib.compress(inflated))) + zlib.compress(inflated)
    path = tmp_path / "bomb.mat"
    path.write_bytes(bytes(data))
    with pytest.raises(MatFileError, match="inflates past 65536 bytes"):
        read_mat_file(path)

"""BID adapter on miniature copies of the official release (gaps in the numbering, grades per rater)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqa_store.datasets import ManifestError
from iqa_store.datasets.bid import BID
from iqa_store.datasets.testing import DatasetAdapterTests, write_image, write_workbook

# image number (2 is one of the release's gaps), average grade, individual grades
ROWS = [(1, 3.4, [3, 4, 3, 4, 3]), (3, 1.2, [1, 1, 2, 1]), (4, 4.6, [5, 4, 5]), (345, 2.5, [2, 3]), (347, 0.0, [0])]


def grades_table(rows=ROWS) -> pd.DataFrame:
    records = []
    for number, mean, grades in rows:
        record = {"Image Number": number, "Average Subjective Grade": mean, "Number of Grades": len(grades)}
        record.update({f"Grade #{k + 1}": g for k, g in enumerate(grades)})
        records.append(record)
    return pd.DataFrame.from_records(records)


def build_release(base: Path, rows=ROWS, images_in_root: bool = False) -> Path:
    write_workbook(base / "DatabaseGrades.xlsx", {"Plan1": (grades_table(rows), 0, 0)})
    folder = base if images_in_root else base / "ImageDatabase"
    for number, _, _ in (r for r in rows if isinstance(r[0], int)):
        write_image(folder / f"DatabaseImage{number:04d}.JPG", seed=number)
    return base


class TestBID(DatasetAdapterTests):
    adapter_cls = BID
    expected_len = len(ROWS)
    best_id, worst_id = "DatabaseImage0004.JPG", "DatabaseImage0347.JPG"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "BID")


class TestBIDImagesInRoot(DatasetAdapterTests):
    adapter_cls = BID
    expected_len = len(ROWS)
    best_id, worst_id = "DatabaseImage0004.JPG", "DatabaseImage0347.JPG"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "BID", images_in_root=True)


def test_values_and_std_from_grades(tmp_path: Path) -> None:
    manifest = BID().manifest(build_release(tmp_path))
    assert manifest.ids == [f"DatabaseImage{n:04d}.JPG" for n, _, _ in ROWS]
    assert manifest.table["path"].tolist() == [f"ImageDatabase/DatabaseImage{n:04d}.JPG" for n, _, _ in ROWS]
    np.testing.assert_allclose(manifest.mos, [m for _, m, _ in ROWS])
    expected_std = [np.std(g, ddof=1) if len(g) > 1 else np.nan for _, _, g in ROWS]
    np.testing.assert_allclose(manifest.table["mos_std"], expected_std)


def test_xls_name_is_read_by_its_content(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "DatabaseGrades.xlsx").rename(root / "DatabaseGrades.xls")
    assert BID().manifest(root).ids[0] == "DatabaseImage0001.JPG"


def test_legacy_xls_without_xlrd_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import xlrd  # noqa: F401
        pytest.skip("xlrd is installed here: legacy .xls files are readable")
    except ImportError:
        pass
    root = build_release(tmp_path)
    (root / "DatabaseGrades.xlsx").unlink()
    # the OLE2 signature of a legacy Excel file, which pandas reads only through xlrd
    (root / "DatabaseGrades.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    with pytest.raises(ManifestError, match=r"DatabaseGrades.xls: reading this Excel format needs an extra package"):
        BID().manifest(root)


@pytest.mark.parametrize("number, message", [(2.5, r"Image Number 2.5 is not a positive whole number"),
                                             ("x", r"Image Number 'x' is not a number")])
def test_bad_image_number(tmp_path: Path, number, message: str) -> None:
    root = build_release(tmp_path, rows=ROWS[:1] + [(number, 2.0, [2])])
    with pytest.raises(ManifestError, match=rf"sheet 'Plan1', row 3: {message}"):
        BID().manifest(root)

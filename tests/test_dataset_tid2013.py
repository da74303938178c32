"""TID2013 adapter on miniature copies of the official release (mixed-case names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqa_store.datasets import ManifestError
from iqa_store.datasets.testing import DatasetAdapterTests, write_image
from iqa_store.datasets.tid2013 import TID2013

# name in mos_with_names.txt, file on disk, MOS, std, reference file on disk
ROWS = [("I01_01_1.bmp", "i01_01_1.bmp", 5.51429, 0.13, "I01.BMP"),
        ("I01_11_1.bmp", "I01_11_1.BMP", 4.1, 0.2, "I01.BMP"),
        ("I12_07_5.bmp", "i12_07_5.bmp", 0.7, 0.31, "I12.BMP"),
        ("I25_24_3.bmp", "i25_24_3.bmp", 7.2, 0.11, "i25.bmp")]


def build_release(base: Path, rows=ROWS, with_std: bool = True) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "mos_with_names.txt").write_text("".join(f"{r[2]} {r[0]}\r\n" for r in rows))
    if with_std:
        (base / "mos_std.txt").write_text("".join(f"{r[3]}\n" for r in rows))
    for seed, row in enumerate(rows):
        write_image(base / "distorted_images" / row[1], seed=seed)  # .bmp / .BMP: Pillow writes BMP for both
        write_image(base / "reference_images" / row[4], seed=100)
    return base


class TestTID2013(DatasetAdapterTests):
    adapter_cls = TID2013
    expected_len = len(ROWS)
    best_id, worst_id = "I25_24_3.bmp", "I12_07_5.bmp"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "tid2013")


def test_mixed_case_names_resolve(tmp_path: Path) -> None:
    manifest = TID2013().manifest(build_release(tmp_path))
    assert manifest.ids == [r[0] for r in ROWS]
    assert manifest.table["path"].tolist() == [f"distorted_images/{r[1]}" for r in ROWS]
    assert manifest.reference_ids == [f"reference_images/{r[4]}" for r in ROWS]
    np.testing.assert_allclose(manifest.mos, [r[2] for r in ROWS])
    np.testing.assert_allclose(manifest.table["mos_std"], [r[3] for r in ROWS])
    assert manifest.mos_range == (0.0, 9.0)


def test_std_file_is_optional(tmp_path: Path) -> None:
    assert TID2013().manifest(build_release(tmp_path, with_std=False)).table["mos_std"].isna().all()


def test_std_count_mismatch(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "mos_std.txt").write_text("0.1\n0.2\n")
    with pytest.raises(ManifestError, match=r"mos_with_names.txt: 4, mos_std.txt: 2"):
        TID2013().manifest(root)


@pytest.mark.parametrize("line, message", [
    ("5.1", r"line 2: expected 'MOS image_name', got '5.1'"),
    ("high I01_02_1.bmp", r"line 2 \(I01_02_1.bmp\): MOS 'high' is not a number"),
    ("9.5 I01_02_1.bmp", r"line 2 \(I01_02_1.bmp\): MOS 9.5 outside 0-9"),
])
def test_malformed_line(tmp_path: Path, line: str, message: str) -> None:
    root = build_release(tmp_path)
    (root / "mos_with_names.txt").write_text(f"5.5 I01_01_1.bmp\n{line}\n")
    with pytest.raises(ManifestError, match=message):
        TID2013().manifest(root)

"""SPAQ adapter on miniature copies of the official release (.xlsx written by pandas/openpyxl)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqa_store.datasets import ManifestError
from iqa_store.datasets.spaq import SPAQ, resize_short_side
from iqa_store.datasets.testing import DatasetAdapterTests, write_image, write_workbook

LABELS = "Annotations/MOS and Image attribute scores.xlsx"
ROWS = [("00001.jpg", 42.0), ("00002.jpg", 80.5), ("00003.jpg", 12.25), ("00004.jpg", 61.0)]
SIZES = [(40, 30), (30, 40), (50, 20), (20, 20)]  # landscape, portrait, wide, square


def attribute_table(rows=ROWS) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["Image name", "MOS"])
    for attribute in ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"):
        frame[attribute] = 50.0
    return frame


def build_release(base: Path, rows=ROWS, sheet: str = "Sheet1") -> Path:
    write_workbook(base / LABELS, {sheet: (attribute_table(rows), 0, 0)})
    for seed, ((name, _), size) in enumerate(zip(rows, SIZES)):
        write_image(base / "TestImage" / name, size=size, seed=seed)
    return base


class TestSPAQ(DatasetAdapterTests):
    adapter_cls = SPAQ
    expected_len = len(ROWS)
    best_id, worst_id = "00002.jpg", "00003.jpg"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "SPAQ")


def test_values(tmp_path: Path) -> None:
    manifest = SPAQ().manifest(build_release(tmp_path, sheet="MOS"))
    assert manifest.ids == [r[0] for r in ROWS]
    assert manifest.table["path"].tolist() == [f"TestImage/{r[0]}" for r in ROWS]
    np.testing.assert_allclose(manifest.mos, [r[1] for r in ROWS])
    assert manifest.table["mos_std"].isna().all() and manifest.reference_ids is None
    assert manifest.info["sheet"] == "MOS" and "preprocessing" not in manifest.info


def test_png_names_in_the_sheet_match_jpg_files_by_stem(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    write_workbook(root / LABELS, {"Sheet1": (attribute_table([(n.replace(".jpg", ".png"), m) for n, m in ROWS]), 0, 0)})
    assert SPAQ().manifest(root).table["path"].tolist()[0] == "TestImage/00001.jpg"


def test_short_side_resize_goes_to_the_cache_and_into_the_hash(tmp_path: Path) -> None:
    root = build_release(tmp_path / "SPAQ")
    cache = tmp_path / "cache"
    original = SPAQ().manifest(root)
    resized = SPAQ(short_side=10, cache_dir=str(cache)).manifest(root)
    assert resized.root == cache and resized.ids == original.ids
    assert resized.table["path"].tolist() == [f"TestImage/{r[0][:-4]}.png" for r in ROWS]
    sizes = [Image.open(p).size for p in resized.paths]
    assert sizes == [(13, 10), (10, 13), (25, 10), (10, 10)]
    assert resized.info["preprocessing"] == {"resize_short_side": 10, "filter": "bicubic", "format": "png"}
    assert resized.manifest_hash() != original.manifest_hash()
    other = SPAQ(short_side=12, cache_dir=str(tmp_path / "cache12")).manifest(root)
    assert other.manifest_hash() != resized.manifest_hash()
    mtimes = [p.stat().st_mtime_ns for p in resized.paths]
    again = SPAQ(short_side=10, cache_dir=str(cache)).manifest(root)  # cached copies are not rewritten
    assert [p.stat().st_mtime_ns for p in again.paths] == mtimes
    assert again.manifest_hash() == resized.manifest_hash()


def test_resize_keeps_aspect_ratio() -> None:
    image = Image.new("RGB", (4000, 3000))
    assert resize_short_side(image, 512).size == (683, 512)


@pytest.mark.parametrize("bad", [0, -5, "512"])
def test_bad_short_side(tmp_path: Path, bad) -> None:
    with pytest.raises(ManifestError, match="short_side must be a positive integer"):
        SPAQ(short_side=bad).manifest(build_release(tmp_path))


def test_bad_mos_names_sheet_and_row(tmp_path: Path) -> None:
    root = build_release(tmp_path, rows=ROWS[:2] + [("00003.jpg", "n/a")] + ROWS[3:])
    with pytest.raises(ManifestError, match=r"sheet 'Sheet1', row 4 \(00003.jpg\): MOS 'n/a' is not a number"):
        SPAQ().manifest(root)


def test_missing_header(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    write_workbook(root / LABELS, {"Sheet1": (pd.DataFrame({"name": ["00001.jpg"], "score": [1.0]}), 0, 0)})
    with pytest.raises(ManifestError, match=r"no header row with columns \['Image name', 'MOS'\] in any sheet"):
        SPAQ().manifest(root)


def test_missing_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "SPAQ"
    write_workbook(root / LABELS, {"Sheet1": (attribute_table(), 0, 0)})
    with pytest.raises(ManifestError, match=r"spaq: image folder TestImage/ not found in .*SPAQ"):
        SPAQ().manifest(root)

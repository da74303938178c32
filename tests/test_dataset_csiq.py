"""CSIQ adapter on miniature copies of the official release (header at D4 of a non-first sheet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqa_store.datasets import ManifestError
from iqa_store.datasets.csiq import CSIQ
from iqa_store.datasets.testing import DatasetAdapterTests, write_image, write_workbook

# image, dst_idx, dst_type, dst_lev, dmos_std, dmos; and the file the release names it
ROWS = [(1600, 1, "noise", 1, 0.02, 0.062, "awgn/1600.AWGN.1.png"),
        (1600, 2, "jpeg", 3, 0.05, 0.338, "jpeg/1600.JPEG.3.png"),
        ("bridge", 3, "jpeg 2000", 4, 0.07, 0.812, "jpeg2000/bridge.jpeg2000.4.png"),
        ("bridge", 4, "fnoise", 2, 0.04, 0.25, "fnoise/bridge.fnoise.2.png"),
        ("child_swimming", 5, "blur", 5, 0.09, 0.933, "blur/child_swimming.BLUR.5.png"),
        ("child_swimming", 6, "contrast", 1, 0.01, 0.0, "contrast/child_swimming.contrast.1.png")]
COLUMNS = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]


def build_release(base: Path, rows=ROWS) -> Path:
    table = pd.DataFrame([r[:6] for r in rows], columns=COLUMNS)
    summary = pd.DataFrame({"dst_type": ["noise", "jpeg"], "mean dmos": [0.2, 0.3]})
    write_workbook(base / "csiq.DMOS.xlsx", {"all_by_distortion": (summary, 0, 0), "all_by_image": (table, 3, 3)})
    for seed, row in enumerate(rows):
        write_image(base / "dst_imgs" / row[6], seed=seed)
        write_image(base / "src_imgs" / f"{row[0]}.png", seed=100)
    return base


class TestCSIQ(DatasetAdapterTests):
    adapter_cls = CSIQ
    expected_len = len(ROWS)
    best_id, worst_id = "contrast/child_swimming.contrast.1.png", "blur/child_swimming.blur.5.png"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "CSIQ")


def test_header_at_d4_dmos_flipped_and_kept(tmp_path: Path) -> None:
    manifest = CSIQ().manifest(build_release(tmp_path))
    assert manifest.table["path"].tolist() == [f"dst_imgs/{r[6]}" for r in ROWS]
    np.testing.assert_allclose(manifest.table["mos_original"], [r[5] for r in ROWS])
    np.testing.assert_allclose(manifest.mos, [1.0 - r[5] for r in ROWS])
    np.testing.assert_allclose(manifest.table["mos_std"], [r[4] for r in ROWS])
    assert manifest.original_direction == "lower_better" and manifest.mos_range == (0.0, 1.0)
    assert manifest.reference_ids == [f"src_imgs/{r[0]}.png" for r in ROWS]
    assert manifest.info["sheet"] == "all_by_image"


def test_unknown_distortion_names_the_row(tmp_path: Path) -> None:
    rows = ROWS[:2] + [("bridge", 3, "pink noise", 4, 0.07, 0.8, "fnoise/bridge.fnoise.4.png")]
    with pytest.raises(ManifestError, match=r"sheet 'all_by_image', row 7: image 'bridge' with dst_type 'pink noise'"):
        CSIQ().manifest(build_release(tmp_path, rows))


def test_dmos_outside_0_1(tmp_path: Path) -> None:
    rows = ROWS[:1] + [(1600, 2, "jpeg", 3, 0.05, 1.4, "jpeg/1600.JPEG.3.png")]
    with pytest.raises(ManifestError, match=r"row 6 \(jpeg/1600.jpeg.3.png\): dmos 1.4 outside 0-1"):
        CSIQ().manifest(build_release(tmp_path, rows))


def test_sheet_without_the_header(tmp_path: Path) -> None:
    write_workbook(tmp_path / "csiq.DMOS.xlsx", {"all_by_image": (pd.DataFrame({"img": [1]}), 0, 0)})
    (tmp_path / "dst_imgs").mkdir()
    (tmp_path / "src_imgs").mkdir()
    with pytest.raises(ManifestError, match=r"no header row with columns \['image', 'dst_type', 'dst_lev', 'dmos_std', "
                                            r"'dmos'\] in sheet 'all_by_image' nor any other sheet"):
        CSIQ().manifest(tmp_path)

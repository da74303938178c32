"""CID2013 adapter on miniature copies of the official release (.xlsx written by pandas/openpyxl)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqa_store.datasets import ManifestError
from iqa_store.datasets.cid2013 import CID2013
from iqa_store.datasets.testing import DatasetAdapterTests, write_image, write_workbook

LABELS = "CID2013 data - version 12112014.xlsx"
ROMAN = ["I", "II"]
# (image set, scene, device): two image sets of three scene subsets, two cameras each
IMAGES = [(s, c, d) for s in (1, 2) for c in (1, 2, 3) for d in (1, 2)]


def source_id(image_set: int, scene: int, device: int) -> str:
    return f"IS_{ROMAN[image_set - 1]}_C{scene:02d}_D{device:02d}"


REALIGNED = [round(-5.0 + 7.5 * i, 2) for i in range(len(IMAGES))]  # -5 .. 77.5: one negative
SET_SPECIFIC = [round(90.0 - 6.0 * i, 2) for i in range(len(IMAGES))]


def mos_table() -> pd.DataFrame:
    return pd.DataFrame({"Source_ID": [source_id(*i) for i in IMAGES], "Image set specific  MOS": SET_SPECIFIC,
                         "Realigned MOS": REALIGNED, "Realigned MOS std": 1.0})


def build_release(base: Path, table: pd.DataFrame | None = None, name: str = LABELS) -> Path:
    info = pd.DataFrame({"About": ["CID2013, Virtanen et al."]})
    write_workbook(base / name, {"Info": (info, 0, 0), "CID2013 MOS": (mos_table() if table is None else table, 0, 0)})
    for seed, (s, c, d) in enumerate(IMAGES):
        write_image(base / f"IS{s}" / f"co{c}" / f"{source_id(s, c, d)}.jpg", seed=seed)
    return base


class TestCID2013(DatasetAdapterTests):
    adapter_cls = CID2013
    expected_len = len(IMAGES)
    best_id, worst_id = source_id(2, 3, 2), source_id(1, 1, 1)

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "CID2013")


class TestCID2013ImageSetScore(DatasetAdapterTests):
    adapter_cls = CID2013
    expected_len = len(IMAGES)
    best_id, worst_id = source_id(1, 1, 1), source_id(2, 3, 2)

    @pytest.fixture
    def adapter(self) -> CID2013:
        return CID2013(score="image_set")

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "CID2013")


def test_values_groups_and_strata(tmp_path: Path) -> None:
    manifest = CID2013().manifest(build_release(tmp_path))
    assert manifest.ids == [source_id(*i) for i in IMAGES]
    assert manifest.table["path"].tolist() == [f"IS{s}/co{c}/{source_id(s, c, d)}.jpg" for s, c, d in IMAGES]
    np.testing.assert_allclose(manifest.mos, REALIGNED)
    assert manifest.mos.min() < 0  # the realigned MOS can be negative
    assert manifest.split_groups == [f"IS{s}/co{c}" for s, c, _ in IMAGES]
    assert manifest.strata == [f"IS{s}" for s, _, _ in IMAGES]
    assert manifest.reference_ids is None and manifest.official_split is None
    np.testing.assert_allclose(CID2013(score="image_set").manifest(tmp_path).mos, SET_SPECIFIC)


def test_other_workbook_version_is_accepted(tmp_path: Path) -> None:
    root = build_release(tmp_path, name="CID2013 data - version 01012015.xlsx")
    assert len(CID2013().manifest(root)) == len(IMAGES)


def test_unknown_score_option(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="score 'mean' is not one of"):
        CID2013(score="mean").manifest(build_release(tmp_path))


def test_image_missing_names_row(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "IS2" / "co1" / f"{source_id(2, 1, 2)}.jpg").unlink()
    with pytest.raises(ManifestError, match=rf"sheet 'CID2013 MOS', row 9 \({source_id(2, 1, 2)}\): no image file"):
        CID2013().manifest(root)


def test_image_outside_a_scene_folder(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "IS1" / "co1" / f"{source_id(1, 1, 1)}.jpg").rename(root / "IS1" / f"{source_id(1, 1, 1)}.jpg")
    with pytest.raises(ManifestError, match=r"is not in an ISn/coK/ folder"):
        CID2013().manifest(root)


def test_missing_workbook(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"cid2013: CID2013 data - version 12112014.xlsx not found"):
        CID2013().manifest(tmp_path)

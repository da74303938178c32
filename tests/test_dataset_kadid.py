"""KADID-10k adapter on miniature copies of the official release."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from iqa_store.datasets import ManifestError
from iqa_store.datasets.kadid import KADID10k
from iqa_store.datasets.testing import DatasetAdapterTests, write_image

# dist_img, ref_img, dmos (really a MOS: higher is better), var
ROWS = [("I01_01_01.png", "I01.png", 4.57, 0.496), ("I01_01_05.png", "I01.png", 1.23, 0.25),
        ("I02_03_02.png", "I02.png", 3.1, 1.0), ("I02_10_04.png", "I02.png", 2.0, 0.64),
        ("I03_24_03.png", "I03.png", 4.93, 0.0)]


def build_release(base: Path, rows=ROWS, header: str = "dist_img,ref_img,dmos,var") -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "dmos.csv").write_text("\n".join([header] + [",".join(map(str, r)) for r in rows]) + "\n")
    for seed, name in enumerate(sorted({r[0] for r in rows} | {r[1] for r in rows})):
        write_image(base / "images" / name, seed=seed)
    return base


class TestKADID(DatasetAdapterTests):
    adapter_cls = KADID10k
    expected_len = len(ROWS)
    best_id, worst_id = "I03_24_03.png", "I01_01_05.png"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        build_release(tmp_path / "root" / "kadid10k")  # the zip unpacks into kadid10k/
        return tmp_path / "root"


def test_dmos_column_is_kept_as_higher_is_better_mos(tmp_path: Path) -> None:
    manifest = KADID10k().manifest(build_release(tmp_path))
    assert manifest.ids == [r[0] for r in ROWS]
    np.testing.assert_allclose(manifest.mos, [r[2] for r in ROWS])
    np.testing.assert_allclose(manifest.table["mos_original"], [r[2] for r in ROWS])
    assert manifest.original_direction == "higher_better"
    np.testing.assert_allclose(manifest.table["mos_std"], [math.sqrt(r[3]) for r in ROWS])
    assert manifest.reference_ids == [f"images/{r[1]}" for r in ROWS]
    assert manifest.split_groups == manifest.reference_ids
    assert manifest.table["path"].tolist() == [f"images/{r[0]}" for r in ROWS]


def test_dmos_outside_1_to_5(tmp_path: Path) -> None:
    root = build_release(tmp_path, rows=ROWS[:1] + [("I01_01_05.png", "I01.png", 7.0, 0.2)])
    with pytest.raises(ManifestError, match=r"dmos.csv, line 3 \(I01_01_05.png\): dmos \(a MOS, higher is better\) 7 "
                                            r"outside 1-5"):
        KADID10k().manifest(root)


def test_negative_variance(tmp_path: Path) -> None:
    root = build_release(tmp_path, rows=ROWS[:1] + [("I01_01_05.png", "I01.png", 2.0, -0.2)])
    with pytest.raises(ManifestError, match=r"line 3 \(I01_01_05.png\): negative variance -0.2"):
        KADID10k().manifest(root)


def test_missing_column(tmp_path: Path) -> None:
    root = build_release(tmp_path, header="dist_img,ref_img,mos,var")
    with pytest.raises(ManifestError, match=r"dmos.csv: missing column\(s\) \['dmos'\]"):
        KADID10k().manifest(root)


def test_reference_path_cannot_leave_the_root(tmp_path: Path) -> None:
    root = build_release(tmp_path / "root", rows=ROWS[:1] + [("I01_01_05.png", "../../secret.png", 2.0, 0.2)])
    with pytest.raises(ManifestError, match=r"line 3 \(I01_01_05.png\): image path .* leads outside"):
        KADID10k().manifest(root)

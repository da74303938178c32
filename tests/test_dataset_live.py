"""LIVE IQA release 2 adapter on miniature copies of the official release (.mat written by scipy).

The label vectors keep the release's 982 entries (their position gives the image's folder);
all but a few entries are marked reference copies (orgs == 1), so the tree stays small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from iqa_store.datasets import ManifestError
from iqa_store.datasets.live import LIVE
from iqa_store.datasets.testing import DatasetAdapterTests, mat_cell, write_image

# entry (0-based) -> (file, reference, dmos, realigned dmos, realigned std)
ENTRIES = {0: ("jp2k/img1.bmp", "bikes.bmp", 25.0, 30.0, 8.0),
           226: ("jp2k/img227.bmp", "womanhat.bmp", 70.5, 66.0, 11.0),
           227: ("jpeg/img1.bmp", "bikes.bmp", 0.5, -2.0, 3.0),
           500: ("wn/img41.bmp", "parrots.bmp", 111.7, 104.0, 9.0),
           981: ("fastfading/img174.bmp", "parrots.bmp", 48.0, 50.5, 12.5)}
N = 982


def vectors(column: int) -> np.ndarray:
    values = np.zeros((1, N))
    for entry, row in ENTRIES.items():
        values[0, entry] = row[column]
    return values


def build_release(base: Path, n: int = N) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    orgs = np.ones((1, n))
    orgs[0, [e for e in ENTRIES if e < n]] = 0
    refnames = ["bikes.bmp"] * n
    for entry, row in ENTRIES.items():
        if entry < n:
            refnames[entry] = row[1]
    savemat(base / "dmos.mat", {"dmos": vectors(2)[:, :n], "orgs": orgs})
    savemat(base / "dmos_realigned.mat", {"dmos_new": vectors(3)[:, :n], "dmos_std": vectors(4)[:, :n], "orgs": orgs})
    savemat(base / "refnames_all.mat", {"refnames_all": mat_cell(refnames, column=False)})
    for seed, row in enumerate(ENTRIES.values()):
        write_image(base / row[0], seed=seed)
        write_image(base / "refimgs" / row[1], seed=100)
    return base


class TestLIVE(DatasetAdapterTests):
    adapter_cls = LIVE
    expected_len = len(ENTRIES)
    best_id, worst_id = "jpeg/img1.bmp", "wn/img41.bmp"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        build_release(tmp_path / "root" / "databaserelease2")
        return tmp_path / "root"


class TestLIVERealigned(DatasetAdapterTests):
    adapter_cls = LIVE
    expected_len = len(ENTRIES)
    best_id, worst_id = "jpeg/img1.bmp", "wn/img41.bmp"

    @pytest.fixture
    def adapter(self) -> LIVE:
        return LIVE(realigned=True)

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "live")


def test_positions_map_to_folders_references_and_flipped_dmos(tmp_path: Path) -> None:
    manifest = LIVE().manifest(build_release(tmp_path))
    rows = list(ENTRIES.values())
    assert manifest.ids == [r[0] for r in rows]
    assert manifest.table["path"].tolist() == [r[0] for r in rows]
    assert manifest.reference_ids == [f"refimgs/{r[1]}" for r in rows]
    np.testing.assert_allclose(manifest.table["mos_original"], [r[2] for r in rows])
    np.testing.assert_allclose(manifest.mos, [110.0 - r[2] for r in rows])  # flipped inside the bounds -10..120
    assert manifest.original_direction == "lower_better"
    assert manifest.table["mos_std"].isna().all()
    realigned = LIVE(realigned=True).manifest(tmp_path)
    np.testing.assert_allclose(realigned.table["mos_original"], [r[3] for r in rows])
    np.testing.assert_allclose(realigned.table["mos_std"], [r[4] for r in rows])


def test_reference_copies_are_left_out(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    orgs = np.ones((1, N))
    orgs[0, [0, 981]] = 0
    savemat(root / "dmos.mat", {"dmos": vectors(2), "orgs": orgs})
    assert LIVE().manifest(root).ids == ["jp2k/img1.bmp", "fastfading/img174.bmp"]


def test_vectors_shorter_than_the_five_folders(tmp_path: Path) -> None:
    root = build_release(tmp_path, n=900)
    with pytest.raises(ManifestError, match=r"live: label vectors differ in length \(dmos.mat dmos: 900, dmos.mat orgs: "
                                            r"900, refnames_all.mat refnames_all: 900, images in the five folders: "
                                            r"982\)"):
        LIVE().manifest(root)


def test_missing_realigned_file(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "dmos_realigned.mat").unlink()
    with pytest.raises(ManifestError, match="live: dmos_realigned.mat not found"):
        LIVE(realigned=True).manifest(root)

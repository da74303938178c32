"""CLIVE adapter on miniature copies of the official release (.mat files written by scipy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from iqa_store.datasets import ManifestError
from iqa_store.datasets.clive import CLIVE
from iqa_store.datasets.testing import DatasetAdapterTests, mat_cell, write_image

TRAINING = [f"t{k}.bmp" for k in range(1, 8)]
IMAGES = ["3.bmp", "10.JPG", "100.bmp", "1000.JPG", "1001.jpg"]
NAMES = TRAINING + IMAGES
MOS = [50.0] * 7 + [63.97, 25.34, 91.37, 3.42, 48.0]
STD = [10.0] * 7 + [18.4, 13.1, 9.8, 7.1, 16.0]


def build_release(base: Path, names=NAMES, mos=MOS, std=STD) -> Path:
    data = base / "Data"
    data.mkdir(parents=True, exist_ok=True)
    savemat(data / "AllImages_release.mat", {"AllImages_release": mat_cell(names)})
    savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.array([std])})
    for seed, name in enumerate(names):
        write_image(base / "Images" / ("trainingImages" if name in TRAINING else "") / name, seed=seed)
    return base


class TestCLIVE(DatasetAdapterTests):
    adapter_cls = CLIVE
    expected_len = len(IMAGES)
    best_id, worst_id = "100.bmp", "1000.JPG"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "ChallengeDB_release")


class TestCLIVEParentFolder(DatasetAdapterTests):
    """The user points at the folder that holds ChallengeDB_release/."""

    adapter_cls = CLIVE
    expected_len = len(IMAGES)
    best_id, worst_id = "100.bmp", "1000.JPG"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        build_release(tmp_path / "ChallengeDB_release")
        return tmp_path


def test_values_and_training_images_excluded(tmp_path: Path) -> None:
    manifest = CLIVE().manifest(build_release(tmp_path))
    assert manifest.ids == IMAGES
    assert manifest.table["path"].tolist() == [f"Images/{n}" for n in IMAGES]
    np.testing.assert_allclose(manifest.mos, MOS[7:])
    np.testing.assert_allclose(manifest.table["mos_std"], STD[7:])
    assert manifest.reference_ids is None and manifest.official_split is None
    assert manifest.mos_range == (0.0, 100.0) and manifest.original_direction == "higher_better"


def test_names_resolve_case_insensitively(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "Images" / "10.JPG").rename(root / "Images" / "10.jpg")
    assert CLIVE().manifest(root).table["path"].tolist()[1] == "Images/10.jpg"


def test_column_vectors_are_accepted(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([MOS]).T})
    np.testing.assert_allclose(CLIVE().manifest(root).mos, MOS[7:])


def test_length_mismatch_names_the_vectors(tmp_path: Path) -> None:
    root = build_release(tmp_path, mos=MOS[:-1])
    with pytest.raises(ManifestError, match=r"AllImages_release.mat: 12, AllMOS_release.mat: 11, AllStdDev_release.mat: 12"):
        CLIVE().manifest(root)


def test_wrong_variable_lists_what_the_file_holds(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    savemat(root / "Data" / "AllMOS_release.mat", {"mos": np.array([MOS])})
    with pytest.raises(ManifestError, match=r"AllMOS_release.mat: variable 'AllMOS_release' not found; "
                                            r"the file holds \['mos'\]"):
        CLIVE().manifest(root)


def test_mos_out_of_range_names_entry(tmp_path: Path) -> None:
    root = build_release(tmp_path, mos=MOS[:9] + [140.0] + MOS[10:])
    with pytest.raises(ManifestError, match=r"AllImages_release.mat, entry 10 \(100.bmp\): MOS 140 outside 0-100"):
        CLIVE().manifest(root)


def test_missing_data_folder(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "Data" / "AllStdDev_release.mat").unlink()
    with pytest.raises(ManifestError, match=r"clive: Data/AllStdDev_release.mat not found in .* Expected layout"):
        CLIVE().manifest(root)


def test_not_a_mat_file(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "Data" / "AllMOS_release.mat").write_text("not matlab")
    with pytest.raises(ManifestError, match="AllMOS_release.mat: not a readable MATLAB file"):
        CLIVE().manifest(root)

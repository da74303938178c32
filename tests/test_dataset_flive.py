"""FLIVE adapter on miniature copies of the official release (CRLF label files, database/ folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqa_store.datasets import ManifestError
from iqa_store.datasets.flive import FLIVE
from iqa_store.datasets.testing import DatasetAdapterTests, write_image

ROWS = [("blur_dataset/motion0012.jpg", 55.1), ("voc_emotic_ava/AVA__21394.jpg", 72.3),
        ("voc_emotic_ava/EMOTIC__COCO_train2014_000000115.jpg", 63.0), ("voc_emotic_ava/VOC2012__2008_000123.jpg", 40.2),
        ("voc_emotic_ava/JPEGImages__2007_000027.JPG", 93.9), ("EE371R/pic1.jpg", 12.5)]
TEST = ["voc_emotic_ava/AVA__21394.jpg", "EE371R/pic1.jpg"]
VALID = ["blur_dataset/motion0012.jpg"]


def crlf(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def build_release(database: Path, rows=ROWS, with_split: bool = True) -> Path:
    database.mkdir(parents=True, exist_ok=True)
    (database / "labels_image.csv").write_bytes(crlf(["name,mos"] + [f"{n},{m}" for n, m in rows]))
    if with_split:
        (database / "labels640.csv").write_bytes(crlf(["name_image,mos,left,top"] + [f"{n},50,0,0" for n in TEST]))
        train = [n for n, _ in rows if n not in TEST]
        (database / "labels=640_padded.csv").write_bytes(
            crlf(["name_image,mos,is_valid"] + [f"{n},50,{n in VALID}" for n in train]))
    for seed, (name, _) in enumerate(rows):
        write_image(database / name, seed=seed)
    return database


class TestFLIVE(DatasetAdapterTests):
    adapter_cls = FLIVE
    expected_len = len(ROWS)
    best_id, worst_id = "voc_emotic_ava/JPEGImages__2007_000027.JPG", "EE371R/pic1.jpg"
    expected_splits = {"train": 3, "val": 1, "test": 2}

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "FLIVE_Database" / "database").parent  # the folder holding database/


class TestFLIVEDatabaseFolderWithoutSplit(DatasetAdapterTests):
    adapter_cls = FLIVE
    expected_len = len(ROWS)
    best_id, worst_id = "voc_emotic_ava/JPEGImages__2007_000027.JPG", "EE371R/pic1.jpg"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "database", with_split=False)


def test_values_paths_and_split(tmp_path: Path) -> None:
    manifest = FLIVE().manifest(build_release(tmp_path / "database").parent)
    assert manifest.ids == [n for n, _ in ROWS]
    assert manifest.table["path"].tolist() == [f"database/{n}" for n, _ in ROWS]
    np.testing.assert_allclose(manifest.mos, [m for _, m in ROWS])
    assert manifest.official_split == ["val", "test", "train", "train", "train", "test"]


def test_one_split_file_alone_is_an_error(tmp_path: Path) -> None:
    database = build_release(tmp_path / "database")
    (database / "labels=640_padded.csv").unlink()
    with pytest.raises(ManifestError, match=r"needs both labels640.csv and labels=640_padded.csv; .* is missing"):
        FLIVE().manifest(database)


def test_split_list_naming_an_unknown_image(tmp_path: Path) -> None:
    database = build_release(tmp_path / "database")
    (database / "labels640.csv").write_bytes(crlf(["name_image,mos", "EE371R/pic1.jpg,50", "EE371R/none.jpg,50"]))
    with pytest.raises(ManifestError, match=r"labels640.csv, line 3: image 'EE371R/none.jpg' is not in labels_image"):
        FLIVE().manifest(database)


def test_bad_mos(tmp_path: Path) -> None:
    database = build_release(tmp_path / "database", rows=ROWS[:2] + [("EE371R/pic1.jpg", 101.0)], with_split=False)
    with pytest.raises(ManifestError, match=r"labels_image.csv, line 4 \(EE371R/pic1.jpg\): MOS 101 outside 0-100"):
        FLIVE().manifest(database)

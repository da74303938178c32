"""A conformance test suite every dataset adapter runs (needs pytest).

Subclass ``DatasetAdapterTests`` in a test module, set the class attributes and override the
``dataset_root`` fixture to build a miniature tree in the dataset's official layout::

    class TestKonIQ(DatasetAdapterTests):
        adapter_cls = KonIQ
        expected_len = 4
        best_id, worst_id = "a.jpg", "d.jpg"

        @pytest.fixture
        def dataset_root(self, tmp_path):
            write_image(tmp_path / "1024x768" / "a.jpg")
            ...
            return tmp_path

``best_id`` and ``worst_id`` are required. Override the ``adapter`` fixture to test non-default
options. The class name does not start with ``Test``, so pytest collects only the subclasses.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import COLUMNS, Manifest, ManifestError

__all__ = ["DatasetAdapterTests", "mat_cell", "write_image", "write_workbook"]

SPLIT_NAMES = {"train", "val", "test"}


def write_image(path: str | Path, size: tuple[int, int] = (16, 12), seed: int = 0) -> Path:
    """Write a small real image (format from the suffix: .jpg, .png, .bmp ...) with random content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def mat_cell(strings: list[str], *, column: bool = True) -> np.ndarray:
    """A MATLAB cell array of strings for ``scipy.io.savemat`` (n x 1, or 1 x n)."""
    cell = np.empty((len(strings), 1) if column else (1, len(strings)), dtype=object)
    for index, text in enumerate(strings):
        cell.flat[index] = text
    return cell


def write_workbook(path: str | Path, sheets: dict[str, tuple[pd.DataFrame, int, int]]) -> Path:
    """An .xlsx file (pandas + openpyxl): each sheet's table with its header at (row, column), 0-based."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, (frame, row, column) in sheets.items():
            frame.to_excel(writer, sheet_name=name, startrow=row, startcol=column, index=False)
    return path


def modify_file(path: Path) -> None:
    """Change a file the way an edited or replaced image would: new size, new mtime."""
    before = path.stat()
    with open(path, "ab") as handle:
        handle.write(b"\0" * 16)  # decoders ignore bytes after the end of the image
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))


class DatasetAdapterTests:
    """Generic checks of one adapter on one miniature tree."""

    adapter_cls: ClassVar[type[DatasetAdapter]]
    expected_len: ClassVar[int]
    expected_dataset: ClassVar[str | None] = None  # Manifest.dataset; default: adapter_cls.name
    # Required: the images the published labels call best and worst. The pairwise order check
    # below passes for any consistent flip, so only these pin the direction of mos.
    best_id: ClassVar[str | None] = None
    worst_id: ClassVar[str | None] = None
    expected_splits: ClassVar[dict[str, int] | None] = None  # images per official split; None: no split

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        raise NotImplementedError("override the dataset_root fixture to build a miniature tree")

    @pytest.fixture
    def adapter(self) -> DatasetAdapter:
        return self.adapter_cls()

    @pytest.fixture
    def manifest(self, adapter: DatasetAdapter, dataset_root: Path) -> Manifest:
        return adapter.manifest(dataset_root)

    # --- the contract ------------------------------------------------------------------------

    def test_adapter_is_a_registered_dataclass(self, adapter: DatasetAdapter) -> None:
        from iqa_store.datasets import DATASETS

        assert dataclasses.is_dataclass(adapter)
        assert DATASETS.get(adapter.name) is type(adapter)
        assert adapter.layout, "layout describes the expected tree in errors"

    def test_rebuilt_from_fields_gives_same_manifest(self, adapter: DatasetAdapter, dataset_root: Path,
                                                     manifest: Manifest) -> None:
        options = {f.name: getattr(adapter, f.name) for f in dataclasses.fields(adapter)}
        again = type(adapter)(**options).manifest(dataset_root)
        assert again.table.equals(manifest.table)

    def test_table_shape(self, manifest: Manifest) -> None:
        assert list(manifest.table.columns) == list(COLUMNS)
        assert len(manifest) == self.expected_len
        assert manifest.dataset == (self.expected_dataset or self.adapter_cls.name)

    def test_ids_unique_non_empty_strings(self, manifest: Manifest) -> None:
        ids = manifest.ids
        assert all(isinstance(i, str) and i for i in ids)
        assert len(set(ids)) == len(ids)

    def test_paths_inside_root(self, manifest: Manifest, dataset_root: Path) -> None:
        root_real = os.path.realpath(dataset_root)
        for relative, full in zip(manifest.table["path"], manifest.paths):
            assert not os.path.isabs(relative) and ".." not in relative.split("/"), relative
            real = os.path.realpath(full)
            assert os.path.commonpath([root_real, real]) == root_real, relative

    def test_images_exist(self, manifest: Manifest) -> None:
        missing = [str(p) for p in manifest.paths if not p.is_file()]
        assert not missing, f"the miniature tree has every image; the adapter points elsewhere: {missing}"

    def test_mos_finite_within_range(self, manifest: Manifest) -> None:
        lo, hi = manifest.mos_range
        assert np.isfinite([lo, hi]).all() and lo <= hi
        mos = manifest.mos
        assert np.isfinite(mos).all()
        assert ((mos >= lo) & (mos <= hi)).all(), (mos.min(), mos.max(), manifest.mos_range)

    def test_higher_is_better(self, manifest: Manifest) -> None:
        mos = manifest.mos
        original = manifest.table["mos_original"].to_numpy(dtype=float)
        assert manifest.original_direction in ("higher_better", "lower_better")
        sign = 1.0 if manifest.original_direction == "higher_better" else -1.0
        # mos must order images as the published value does, flipped for lower-is-better scores
        assert (np.sign(np.subtract.outer(mos, mos)) == sign * np.sign(np.subtract.outer(original, original))).all()
        if self.best_id is None or self.worst_id is None:
            pytest.fail(f"{type(self).__name__} must set best_id and worst_id: the ids of the images with the "
                        "highest and lowest published quality in its miniature tree")
        by_id = dict(zip(manifest.ids, mos))
        missing = {self.best_id, self.worst_id} - set(by_id)
        assert not missing, f"best_id/worst_id not in the manifest: {sorted(missing)}"
        assert by_id[self.best_id] > by_id[self.worst_id]
        assert by_id[self.best_id] == mos.max() and by_id[self.worst_id] == mos.min()

    def test_mos_std_non_negative_or_nan(self, manifest: Manifest) -> None:
        std = manifest.table["mos_std"].to_numpy(dtype=float)
        assert (np.isnan(std) | (std >= 0)).all()

    def test_official_split(self, manifest: Manifest) -> None:
        split = manifest.official_split
        if self.expected_splits is None:
            assert split is None
        else:
            assert split is not None and set(split) <= SPLIT_NAMES
            assert dict(Counter(split)) == self.expected_splits

    def test_manifest_hash_stable_across_reads(self, adapter: DatasetAdapter, dataset_root: Path,
                                               manifest: Manifest) -> None:
        again = adapter.manifest(dataset_root)
        assert again.ids == manifest.ids
        assert again.manifest_hash() == manifest.manifest_hash()

    def test_manifest_hash_changes_when_an_image_changes(self, adapter: DatasetAdapter, dataset_root: Path,
                                                         manifest: Manifest) -> None:
        before = manifest.manifest_hash()
        modify_file(manifest.paths[len(manifest) // 2])
        assert adapter.manifest(dataset_root).manifest_hash() != before
        assert manifest.manifest_hash() != before  # the hash follows the files, not a cached value

    def test_root_from_environment(self, adapter: DatasetAdapter, dataset_root: Path, manifest: Manifest,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
        if adapter.env_var is None:
            pytest.skip("adapter has no environment variable")
        monkeypatch.setenv(adapter.env_var, str(dataset_root))
        assert adapter.manifest(None).ids == manifest.ids

    def test_missing_root_is_a_clear_error(self, adapter: DatasetAdapter, tmp_path: Path) -> None:
        with pytest.raises(ManifestError, match="not a directory"):
            adapter.manifest(tmp_path / "no-such-root")

    def test_empty_root_is_a_clear_error(self, adapter: DatasetAdapter, tmp_path: Path) -> None:
        empty = tmp_path / "empty-root"
        empty.mkdir()
        with pytest.raises(ManifestError):
            adapter.manifest(empty)

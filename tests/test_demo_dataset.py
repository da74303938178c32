"""The embedded demo dataset: generated once, deterministic, synthetic labels that fall with the level."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_store.datasets import DATASETS, load_manifest
from iqa_store.datasets.demo import (DEMO_BANK, DEMO_TYPES, INDEX_NAME, IMAGES_DIR, LEVELS, PHOTOS, DemoDataset,
                                     default_root, synthetic_mos)
from iqa_store.distortions import apply
from iqa_store.distortions.measures import ssim


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the shared fixture in conftest


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-a")


@pytest.fixture(scope="module")
def manifest(root):
    return DemoDataset().manifest(root)


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0


def test_registered_as_demo(root, manifest):
    assert DATASETS.get("demo") is DemoDataset
    again = load_manifest("demo", root)
    assert again.ids == manifest.ids


def test_rows_ids_references(manifest):
    assert len(manifest) == len(PHOTOS) * len(DEMO_TYPES) * len(LEVELS) == 240
    assert len(set(manifest.ids)) == len(manifest)
    assert "coffee_jpeg_3" in manifest.ids
    assert sorted(set(manifest.reference_ids)) == sorted(PHOTOS)
    counts = manifest.table["reference_id"].value_counts()
    assert set(counts) == {len(DEMO_TYPES) * len(LEVELS)}
    assert manifest.official_split is None
    assert manifest.table["mos_std"].isna().all()


def test_every_image_exists_decodes_and_has_its_photo_size(manifest):
    sizes = {}
    for photo in PHOTOS:
        with Image.open(IMAGES_DIR / f"{photo}.jpg") as image:
            sizes[photo] = image.size
            assert max(image.size) <= 384
    for path, photo in zip(manifest.paths, manifest.reference_ids):
        assert path.is_file()
        with Image.open(path) as image:
            image.load()
            assert image.size == sizes[photo]


def test_labels_are_finite_in_range_and_documented_as_synthetic(manifest):
    mos = manifest.mos
    assert np.isfinite(mos).all()
    assert manifest.mos_range == (0.0, 100.0)
    assert mos.min() >= 0.0 and mos.max() <= 100.0
    assert mos.std() > 10.0  # labels spread over the scale
    assert manifest.info["labels"].startswith("synthetic")
    assert manifest.info["synthetic"] is True
    assert "SSIM" in manifest.info["label_formula"]


def test_labels_follow_the_documented_formula(manifest):
    images = manifest.info["images"]
    for image_id, mos in zip(manifest.ids, manifest.mos):
        row = images[image_id]
        assert mos == pytest.approx(synthetic_mos(row["ssim"], row["level"]), abs=1e-6)
    # recompute the SSIM of two stored images from the files themselves
    for image_id in ("coffee_white_noise_4", "rocket_jpeg_5"):
        path = manifest.root / manifest.table.set_index("image_id").at[image_id, "path"]
        photo = image_id.split("_")[0]
        pristine = read_rgb_jpeg(IMAGES_DIR / f"{photo}.jpg")
        half = torch.nn.functional.avg_pool2d
        value = float(ssim(half(read_rgb(path)[None], 2), half(pristine[None], 2)))
        assert value == pytest.approx(images[image_id]["ssim"], abs=2e-6)
        assert 0.3 < value < 0.95


def read_rgb_jpeg(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255.0


def test_labels_fall_with_the_level_for_every_type(manifest):
    images = manifest.info["images"]
    table = manifest.table.assign(distortion=[images[i]["distortion"] for i in manifest.ids],
                                  level=[images[i]["level"] for i in manifest.ids])
    means = table.groupby(["distortion", "level"])["mos"].mean().unstack()
    assert sorted(means.index) == sorted(DEMO_TYPES)
    for distortion, row in means.iterrows():
        values = row.to_numpy()
        assert (np.diff(values) < 0).all(), (distortion, values)
    assert means[1].min() > 80 and means[5].max() < 60


def test_jpeg_artefacts_survive_storage(manifest):
    path = manifest.root / "images" / "coffee_jpeg_5.png"
    pristine = read_rgb_jpeg(IMAGES_DIR / "coffee.jpg")
    expected = apply(pristine, DEMO_BANK, "jpeg", 5)  # quality 4
    assert torch.equal(read_rgb(path), expected)
    assert not torch.equal(read_rgb(path), pristine)


def test_second_call_does_not_regenerate(root, manifest):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert (root / INDEX_NAME) in files and len(files) == len(manifest) + 1
    before = {p: p.stat().st_mtime_ns for p in files}
    again = DemoDataset().manifest(root)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert again.ids == manifest.ids and np.array_equal(again.mos, manifest.mos)


def test_deterministic_across_cache_dirs_and_repairs_a_missing_image(tmp_path, root, manifest):
    other = DemoDataset().manifest(tmp_path / "b")
    assert other.ids == manifest.ids
    assert np.array_equal(other.mos, manifest.mos)
    assert digests(tmp_path / "b") == digests(root)
    # a missing image: only its photograph is redone, identically; the others are not touched
    missing = tmp_path / "b" / "images" / "hubble_pixelate_2.png"
    untouched = tmp_path / "b" / "images" / "coffee_jpeg_3.png"
    stamp = untouched.stat().st_mtime_ns
    missing.unlink()
    repaired = DemoDataset().manifest(tmp_path / "b")
    assert missing.is_file()
    assert untouched.stat().st_mtime_ns == stamp
    assert digests(tmp_path / "b") == digests(root)
    assert np.array_equal(repaired.mos, manifest.mos)


@pytest.mark.parametrize("damage", ["not json", "other spec", "truncated image"])
def test_a_damaged_tree_is_regenerated(tmp_path, root, monkeypatch, damage):
    import shutil

    import iqa_store.datasets.demo as demo

    target = tmp_path / "copy"
    shutil.copytree(root, target)
    index_path = target / INDEX_NAME
    if damage == "not json":
        index_path.write_text("{ not json")
    elif damage == "other spec":
        index = json.loads(index_path.read_text())
        index["spec"] = "0" * 16
        index_path.write_text(json.dumps(index))
    else:
        (target / "images" / "retina_jpeg_1.png").write_bytes(b"\x89PNG")
    calls = []
    monkeypatch.setattr(demo, "_generate", lambda root, spec, photos, previous: calls.append(list(photos)) or [])
    demo.ensure_generated(target)
    assert calls == ([["retina"]] if damage == "truncated image" else [list(PHOTOS)])


def test_root_from_argument_environment_or_cache(monkeypatch, tmp_path, root):
    adapter = DemoDataset()
    assert adapter.resolve_root(root) == root
    monkeypatch.setenv("IQA_DEMO_ROOT", str(root))
    assert adapter.resolve_root(None) == root
    monkeypatch.delenv("IQA_DEMO_ROOT")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert adapter.resolve_root(None) == tmp_path / "xdg" / "iqa-store" / default_root().name
    assert default_root().name.startswith("demo-v")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        adapter.resolve_root(a_file)


def test_licences_list_every_photo():
    text = (IMAGES_DIR / "LICENSES.md").read_text()
    for photo in PHOTOS:
        assert f"`{photo}.jpg`" in text
    shipped = sorted(p.stem for p in IMAGES_DIR.glob("*.jpg"))
    assert shipped == sorted(PHOTOS)
    assert sum(p.stat().st_size for p in IMAGES_DIR.iterdir()) < 2_000_000

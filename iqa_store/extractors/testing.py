"""A conformance test suite every registered extractor runs (needs pytest, numpy and torch).

Subclass ``ExtractorTests`` in a test module, once per registered extractor (for a family sharing
one class and builder, once for the family), and say how to build it small and offline::

    class TestCnniqa(ExtractorTests):
        registry_name = "cnniqa"
        changing_settings = [("seed", 1), ("output", "score")]

        def make_extractor(self, folder):
            return create_extractor("cnniqa", random_init=True, fc_width=16)

        def state_dict(self):
            torch.manual_seed(0)
            return CNNIQA(16).state_dict()

The class name does not start with ``Test``, so pytest collects only the subclasses.

What a subclass supplies:

* ``registry_name``: the ``EXTRACTORS`` name (or ``prefix:spec``) whose builder makes this
  extractor; ``covers``: further registered names (fnmatch patterns) the subclass stands for.
* ``make_extractor(folder)``: the extractor, small and offline: random initialisation or tiny
  weights written into ``folder`` (an empty folder) in the official file layout. Building it
  twice into the same folder must give an equal extractor.
* ``changing_settings``: ``(field, value)`` pairs, each of which changes the numbers (entries
  may be ``pytest.param((field, value), marks=...)``).
* ``reference(paths)``: the vectors the extractor built by ``make_extractor`` must give for
  these image files, computed independently of the extractor; ``None`` (the default) where
  there is no independent reference.
* for an extractor that takes a weights file: ``state_dict()`` (tensors fitting the model) and,
  where the official file is not a torch dict with the state under 'state_dict',
  ``write_weights``; for one without: ``no_weights_reason``, which skips the weight checks.
* the ``run_extract`` fixture (``iqa_store.extractors`` sits below the runner and the store, so
  this module cannot import them): ``run(manifest, extractor, options) -> (report, feature_set)``,
  calling ``iqa_store.extraction.runner.extract`` on a fresh ``FeatureStore``. A test module
  usually overrides it once in an intermediate class that its subclasses share.

Every test runs offline: ``HF_HUB_OFFLINE=1`` and an empty Hugging Face cache.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import pickle
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqa_store.extractors import EXTRACTORS
from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions

__all__ = ["ExtractorTests", "MkdirOnUnpickle", "covered_by", "write_photos"]

CPU = RunOptions(device="cpu", batch_size=2, workers=0)
# unreadable files a dataset may hold: text named .jpg, a zero-byte file, a JPEG marker then garbage
BROKEN = {"text.jpg": b"this is text, not a JPEG\n", "empty.jpg": b"",
          "garbage.jpg": b"\xff\xd8\xff\xe0 not a JPEG after its start marker"}


class MkdirOnUnpickle:
    """Unpickling this creates the folder ``marker``: proof that a checkpoint was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def write_photos(folder: Path, count: int, size: tuple[int, int] = (128, 96), seed: int = 0) -> list[Path]:
    """``count`` smooth colour JPEGs with texture, ``size`` = (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    paths = []
    for i in range(count):
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - 2 * i), np.sin(4 * (xx + yy) + 3 * i)], axis=-1)
        pixels = np.clip(127 + 90 * base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        path = folder / f"photo{i}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def covered_by(suites: Sequence[type["ExtractorTests"]]) -> tuple[list[str], list[str]]:
    """The registered names and ``prefix:`` forms that none of ``suites`` covers."""
    patterns = [pattern for suite in suites for pattern in (suite.registry_name, *suite.covers)]
    names = [name for name in EXTRACTORS.names() if not any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    prefixes = [f"{prefix}:" for prefix in EXTRACTORS.prefixes()
                if not any(p.startswith(f"{prefix}:") for p in patterns)]
    return names, prefixes


def _tensors_in(value: Any, where: str) -> list[str]:
    """Where tensors or modules sit in a (nested) container of an extractor's state."""
    import torch
    if isinstance(value, (torch.Tensor, torch.nn.Module)):
        return [where]
    if isinstance(value, dict):
        return [hit for key, item in value.items() for hit in _tensors_in(item, f"{where}[{key!r}]")]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [hit for index, item in enumerate(value) for hit in _tensors_in(item, f"{where}[{index}]")]
    return []


def _differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-6, equal_nan=True)


class ExtractorTests:
    """Generic checks of one extractor, built small and offline."""

    registry_name: ClassVar[str]
    covers: ClassVar[tuple[str, ...]] = ()
    changing_settings: ClassVar[Sequence[Any]] = ()
    no_weights_reason: ClassVar[str | None] = None  # set: takes no weights file; why the weight checks skip
    weights_field: ClassVar[str] = "weights"
    weights_name: ClassVar[str] = "weights.pt"  # the file name write_weights uses
    image_size: ClassVar[tuple[int, int]] = (128, 96)  # (width, height) of the test images
    atol: ClassVar[float] = 1e-5  # against the reference
    rtol: ClassVar[float] = 1e-4
    payload_class: ClassVar[Callable[[Path], Any]] = MkdirOnUnpickle

    # --- what a subclass supplies --------------------------------------------------------------
    def make_extractor(self, folder: Path) -> Extractor:
        raise NotImplementedError("a subclass builds its extractor small and offline in make_extractor(folder)")

    def reference(self, paths: list[Path]) -> np.ndarray | None:
        """Independent reference vectors of make_extractor's extractor for ``paths``; None: none."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors of a checkpoint that fits make_extractor's model."""
        raise NotImplementedError("an extractor taking weights supplies state_dict() (or set no_weights_reason)")

    def write_weights(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        """A weights file in the official layout in ``folder``; ``extra`` entries saved beside the state
        dict in the same torch file (a pickle payload, for the refusal check)."""
        import torch
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.weights_name
        torch.save({"state_dict": self.state_dict(), **(extra or {})}, path)
        return path

    def with_weights(self, extractor: Extractor, path: Path | None) -> Extractor:
        """``extractor`` reading its weights from ``path`` (None: its published weights)."""
        changes: dict[str, Any] = {self.weights_field: None if path is None else str(path)}
        if "random_init" in {f.name for f in dataclasses.fields(extractor)}:
            changes["random_init"] = False
        return dataclasses.replace(extractor, **changes)

    @pytest.fixture
    def run_extract(self) -> Callable[..., tuple[Any, Any]]:
        pytest.fail("ExtractorTests needs the runner: override the run_extract fixture with one returning "
                    "run(manifest, extractor, options) -> (report, feature_set) through "
                    "iqa_store.extraction.runner.extract and a FeatureStore")

    # --- fixtures ------------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "setting" in metafunc.fixturenames:
            settings = list(self.changing_settings) or [
                pytest.param(None, marks=pytest.mark.skip(reason="no setting of this extractor changes its numbers"))]
            metafunc.parametrize("setting", settings, ids=[_setting_id(s) for s in settings])

    @pytest.fixture(autouse=True)
    def _offline(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        try:
            from huggingface_hub import constants
        except ImportError:
            return
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))

    @pytest.fixture
    def extractor(self, tmp_path: Path) -> Extractor:
        folder = tmp_path / "model"
        folder.mkdir()
        return self.make_extractor(folder)

    @pytest.fixture
    def image_paths(self, tmp_path: Path) -> list[Path]:
        return write_photos(tmp_path / "images", 3, self.image_size)

    @pytest.fixture
    def broken_dataset(self, tmp_path: Path) -> Path:
        """A csv dataset: three photos and, between them, the unreadable files of BROKEN."""
        root = tmp_path / "broken-data"
        photos = [p.name for p in write_photos(root, 3, self.image_size, seed=1)]
        for name, content in BROKEN.items():
            (root / name).write_bytes(content)
        names = [photos[0], "text.jpg", photos[1], "empty.jpg", "garbage.jpg", photos[2]]  # batches of 2 mix them
        pd.DataFrame({"path": names, "mos": np.arange(1.0, len(names) + 1)}).to_csv(root / "labels.csv", index=False)
        return root

    # --- helpers -------------------------------------------------------------------------------
    def _compute(self, extractor: Extractor, paths: list[Path]) -> np.ndarray:
        """load_item + collate + compute on ``paths``, as the runner does (after prepare)."""
        import torch
        batch = extractor.collate([extractor.load_item(path) for path in paths])
        with torch.inference_mode():
            return extractor.compute(batch)

    def _prepared(self, extractor: Extractor) -> Extractor:
        extractor.prepare(CPU)
        return extractor

    def _needs_weights(self) -> None:
        if self.no_weights_reason is not None:
            pytest.skip(self.no_weights_reason)

    # --- the contract --------------------------------------------------------------------------
    def test_registered_builder_rebuilds_it(self, extractor: Extractor) -> None:
        """The registry's builder, given the dataclass fields, makes an equal extractor."""
        assert dataclasses.is_dataclass(extractor) and isinstance(extractor, Extractor)
        fields = {f.name: getattr(extractor, f.name) for f in dataclasses.fields(extractor)
                  if f.init and f.name != "name"}  # the builder names what it builds
        rebuilt = EXTRACTORS.get(self.registry_name)(**fields)
        assert type(rebuilt) is type(extractor) and rebuilt.name == extractor.name
        assert rebuilt == extractor
        assert rebuilt.fingerprint() == extractor.fingerprint()

    def test_fingerprint_is_stable_and_serialisable(self, extractor: Extractor, tmp_path: Path) -> None:
        again = self.make_extractor(tmp_path / "model")  # built twice, the same way
        assert again == extractor
        assert again.fingerprint() == extractor.fingerprint() == extractor.fingerprint()
        # what the store records must be plain JSON
        assert json.loads(json.dumps(extractor.settings())) == extractor.settings()
        json.dumps(extractor.fingerprint_inputs())
        assert extractor.fingerprint_inputs()["extractor"] == extractor.name

    def test_fingerprint_changes_with_the_decoding_rules(self, extractor: Extractor,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        """Sets decoded under older read_rgb rules hold other pixels: a new rule set is a new fingerprint."""
        from iqa_store.extractors import base
        before = extractor.fingerprint()
        monkeypatch.setattr(base, "DECODING_VERSION", base.DECODING_VERSION + 1)
        assert extractor.fingerprint() != before

    def test_fingerprint_changes_with_setting(self, extractor: Extractor, image_paths: list[Path],
                                              setting: tuple[str, Any]) -> None:
        """Each declared setting changes the numbers (checked), so it must change the fingerprint."""
        field, value = setting
        assert field in {f.name for f in dataclasses.fields(extractor) if f.init}, f"{field} is not a field"
        assert getattr(extractor, field) != value, f"{field}={value!r} is the extractor's own value"
        changed = dataclasses.replace(extractor, **{field: value})
        before = self._compute(self._prepared(extractor), image_paths)
        after = self._compute(self._prepared(changed), image_paths)
        assert _differ(before, after), f"{field}={value!r} does not change the numbers: not a changing setting"
        assert changed.fingerprint() != extractor.fingerprint(), \
            f"{field}={value!r} changes the numbers, not the fingerprint"
        assert after.shape == (len(image_paths), changed.dim)

    def test_picklable_before_prepare(self, extractor: Extractor) -> None:
        copy = pickle.loads(pickle.dumps(extractor))
        assert type(copy) is type(extractor)
        assert copy == extractor and copy.fingerprint() == extractor.fingerprint()

    def test_workers_carry_no_weights(self, extractor: Extractor, image_paths: list[Path]) -> None:
        """What a DataLoader worker unpickles holds no tensors, before and after prepare, and decodes the same."""
        if not any("__getstate__" in vars(k) for k in type(extractor).__mro__ if k is not object):
            pytest.skip(f"{type(extractor).__name__} defines no __getstate__: workers get its whole state")
        import torch
        copy = pickle.loads(pickle.dumps(extractor))
        assert not _tensors_in(vars(copy), "worker"), "unpickled before prepare"
        self._prepared(extractor)
        copy = pickle.loads(pickle.dumps(extractor))
        assert not _tensors_in(vars(copy), "worker"), "unpickled after prepare"
        ours, theirs = copy.load_item(image_paths[0]), extractor.load_item(image_paths[0])
        for a, b in zip(_leaves(ours), _leaves(theirs)):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b)
            else:
                np.testing.assert_array_equal(a, b)

    def test_compute_returns_float32_rows(self, extractor: Extractor, image_paths: list[Path]) -> None:
        values = self._compute(self._prepared(extractor), image_paths)
        assert isinstance(values, np.ndarray) and values.dtype == np.float32
        assert values.shape == (len(image_paths), extractor.dim)
        assert np.isfinite(values).all()
        assert np.abs(values - values[:1]).max() > 1e-6, "every image gives the same vector"
        alone = self._compute(extractor, image_paths[1:2])  # a row does not depend on its batch
        np.testing.assert_allclose(alone[0], values[1], rtol=1e-4, atol=1e-5)
        expected = self.reference(image_paths)
        if expected is not None:
            np.testing.assert_allclose(values, expected, rtol=self.rtol, atol=self.atol)

    def test_unreadable_images_fail_their_rows_only(self, extractor: Extractor, broken_dataset: Path,
                                                    run_extract: Callable[..., tuple[Any, Any]]) -> None:
        from iqa_store.datasets import load_manifest
        manifest = load_manifest("csv", broken_dataset, labels="labels.csv", dataset_name="conformance")
        report, feature_set = run_extract(manifest, extractor, CPU)
        assert report.status == "complete"
        broken = {row for row, image_id in enumerate(manifest.ids) if image_id in BROKEN}
        assert {f.row for f in report.failures} == broken == set(feature_set.failures())
        for failure in report.failures:
            assert failure.image_id in failure.reason, f"the reason does not name the file: {failure.reason!r}"
            assert feature_set.failures()[failure.row] == failure.reason
        assert feature_set.counts() == {"pending": 0, "done": len(manifest) - len(broken), "failed": len(broken)}
        values = feature_set.read()
        good = [row for row in range(len(manifest)) if row not in broken]
        assert np.isfinite(values[good]).all() and np.isnan(values[sorted(broken)]).all()
        alone = self._compute(extractor, [manifest.paths[row] for row in good])  # the same vectors as without them
        np.testing.assert_allclose(values[good], alone, rtol=1e-4, atol=1e-5)

    def test_missing_weights_file_is_named(self, extractor: Extractor, tmp_path: Path) -> None:
        self._needs_weights()
        missing = tmp_path / "absent" / self.weights_name
        with pytest.raises((ExtractorError, FileNotFoundError)) as error:
            pointed = self.with_weights(extractor, missing)
            pointed.fingerprint()
            pointed.prepare(CPU)
        message = str(error.value)
        assert str(missing) in message or str(missing.resolve()) in message, message

    def test_absent_published_weights_offline_are_a_clear_error(self, extractor: Extractor) -> None:
        """Without a weights file, offline, with nothing cached: an ExtractorError saying what to pass."""
        self._needs_weights()
        with pytest.raises(ExtractorError, match="--weights"):
            published = self.with_weights(extractor, None)
            published.fingerprint()
            published.prepare(CPU)

    def test_pickled_checkpoint_is_refused(self, extractor: Extractor, tmp_path: Path,
                                           image_paths: list[Path]) -> None:
        self._needs_weights()
        clean = self.with_weights(extractor, self.write_weights(tmp_path / "clean"))
        values = self._compute(self._prepared(clean), image_paths[:2])  # the file itself loads
        assert values.shape == (2, clean.dim) and np.isfinite(values).all()

        marker = tmp_path / "payload-ran"
        pickled = self.write_weights(tmp_path / "pickled", extra={"payload": self.payload_class(marker)})
        with pytest.raises(ExtractorError, match="refusing to load") as error:
            refused = self.with_weights(extractor, pickled)
            refused.fingerprint()
            refused.prepare(CPU)
        assert pickled.name in str(error.value) and "weights_only=True" in str(error.value)
        assert not marker.exists(), "the checkpoint was unpickled: its payload ran"


def _leaves(item: Any) -> list[Any]:
    if isinstance(item, (list, tuple)):
        return [leaf for part in item for leaf in _leaves(part)]
    return [item]


def _setting_id(setting: Any) -> str:
    values = getattr(setting, "values", None)
    if values is not None:  # a pytest.param
        setting = values[0]
    if setting is None:
        return "none"
    field, value = setting
    return f"{field}={value}"

"""Bad-input trial: a catalogue of broken and odd image files, extracted through the real CLI.

One csv dataset holds every case of the catalogue, generated here, beside a plain control
image. BRISQUE and a tiny random-init open_clip extract it with ``iqa-store extract``:

* a broken file (truncated JPEG and PNG, zero bytes, HTML saved as .jpg, a PNG header claiming
  more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``) fails its own row, named with its reason
  in the report, and every other row is extracted;
* an odd but valid file (CMYK, 16-bit, palette with transparency, RGBA, animated GIF,
  EXIF-rotated, WebP, TIFF, 1x1) extracts, and to the pixels the README's rules ("What happens
  to odd images") promise. Each has a twin in the same dataset: a plain 8-bit RGB PNG of the
  expected pixels, computed here in numpy from the file's stored values (np.rot90 for EXIF
  orientation, the alpha blend formula, the high byte of 16-bit samples, the CMYK formula).
  The odd file's features must equal its twin's.

Every case is one run of the ledger's trial for its extractor.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from iqa_store.cli import cli
from iqa_store.images import read_rgb
from iqa_store.store import FeatureStore

pytestmark = pytest.mark.reliability

RERUN = ".venv/bin/python -m pytest -m reliability tests/reliability/test_bad_images.py"
MODELS = {"brisque": ["-m", "brisque", "--workers", "2"],
          "tiny open_clip": ["-m", "openclip:TinyViT-test:none", "--random-init", "--device", "cpu",
                             "--workers", "0"]}
# the catalogue, for test ids (the catalogue fixture writes the files)
ODD = ("cmyk.jpg", "grey16.png", "rgb16.png", "palette-transparent.png", "rgba.png", "animated.gif",
       "exif-orientation-6.jpg", "exif-orientation-3.jpg", "lossless.webp", "lzw.tiff", "1x1.png")
BROKEN = ("truncated.jpg", "truncated.png", "zero-bytes.jpg", "html-page.jpg", "bomb-100000x100000.png",
          "bomb-9500x9500.png")
# where iqa-store's rules differ from Pillow's plain convert("RGB")
RULED = ("grey16.png", "palette-transparent.png", "rgba.png", "exif-orientation-6.jpg", "exif-orientation-3.jpg")
SIZE = (64, 48)  # (width, height): not square, so a quarter turn changes the shape


@dataclass(frozen=True)
class Case:
    """One catalogue file; ``reason`` (a regex of the failure) for broken ones, ``twin`` for valid ones."""

    file: str
    reason: str | None = None
    twin: str | None = None
    bad_for: tuple[str, ...] = ()  # models that must fail it although it decodes (1x1 has no BRISQUE statistics)


def textured(seed: int, size: tuple[int, int] = SIZE, channels: int = 3, top: int = 255) -> np.ndarray:
    """Smooth random content with texture and no symmetry, values 0..top."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    rng = np.random.default_rng(seed)
    base = np.stack([np.sin((5 + c) * xx + 3 * yy * c + seed) for c in range(channels)], axis=-1)
    values = 0.5 + 0.35 * base + rng.normal(0, 0.05, base.shape) + 0.1 * xx[..., None] * yy[..., None]
    return np.clip(np.rint(values * top), 0, top)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixel data (a decompression-bomb probe)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def with_twin(root: Path, name: str, expected: np.ndarray) -> str:
    twin = f"twin-{Path(name).stem}.png"
    Image.fromarray(np.ascontiguousarray(expected, dtype=np.uint8), "RGB").save(root / twin)
    return twin


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """R = (255 - C)(255 - K)/255 in Pillow's integer rounding (x*y/255 as ((t >> 8) + t) >> 8, t = x*y + 128)."""
    values = cmyk.astype(np.int64)
    inverse_k = 255 - values[..., 3:4]
    product = values[..., :3] * inverse_k + 128
    return inverse_k - (((product >> 8) + product) >> 8)


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(colour * weight + 255.0 * (1.0 - weight))


def odd_cases(root: Path) -> list[Case]:
    """The odd but valid files, each with the twin its decoded pixels must equal."""
    cases = []

    cmyk = textured(1, channels=4).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(root / "cmyk.jpg", quality=95)
    stored = np.asarray(Image.open(root / "cmyk.jpg"))  # the CMYK values as decoded, before conversion
    assert stored.shape[-1] == 4
    cases.append(Case("cmyk.jpg", twin=with_twin(root, "cmyk.jpg", cmyk_to_rgb(stored))))

    grey16 = textured(2, channels=1, top=65535)[..., 0].astype(np.uint16)
    Image.fromarray(grey16).save(root / "grey16.png")
    assert Image.open(root / "grey16.png").mode.startswith("I;16")
    high = (grey16 >> 8).astype(np.uint8)
    cases.append(Case("grey16.png", twin=with_twin(root, "grey16.png", np.repeat(high[..., None], 3, axis=-1))))

    rgb16 = textured(3, top=65535).astype(np.uint16)
    import cv2  # Pillow cannot write 16-bit colour PNGs
    cv2.imwrite(str(root / "rgb16.png"), rgb16[..., ::-1])
    cases.append(Case("rgb16.png", twin=with_twin(root, "rgb16.png", rgb16 >> 8)))

    palette = np.random.default_rng(4).integers(0, 256, (16, 3))
    alpha = np.where(np.arange(16) % 4 == 0, 0, 255)  # every fourth colour fully transparent
    indices = (textured(4, channels=1, top=15)[..., 0]).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    image.save(root / "palette-transparent.png", transparency=bytes(alpha.astype(np.uint8).tolist()))
    cases.append(Case("palette-transparent.png",
                      twin=with_twin(root, "palette-transparent.png", over_white(palette[indices], alpha[indices]))))

    rgba = textured(5, channels=4).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    cases.append(Case("rgba.png", twin=with_twin(root, "rgba.png", over_white(rgba[..., :3], rgba[..., 3]))))

    frames = [(textured(6 + k, channels=1, top=31)[..., 0]).astype(np.uint8) for k in range(2)]
    gif_palette = np.random.default_rng(6).integers(0, 256, (32, 3))
    pictures = []
    for frame in frames:
        picture = Image.fromarray(frame, "P")
        picture.putpalette(gif_palette.astype(np.uint8).ravel().tolist())
        pictures.append(picture)
    pictures[0].save(root / "animated.gif", save_all=True, append_images=pictures[1:], duration=100, loop=0)
    assert getattr(Image.open(root / "animated.gif"), "n_frames", 1) == 2
    cases.append(Case("animated.gif", twin=with_twin(root, "animated.gif", gif_palette[frames[0]])))

    for orientation, quarter_turns in ((6, -1), (3, 2)):  # 6: turn 90 degrees clockwise to view; 3: 180
        name = f"exif-orientation-{orientation}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(textured(7 + orientation).astype(np.uint8)).save(root / name, quality=95, exif=exif)
        stored = np.asarray(Image.open(root / name).convert("RGB"))  # Pillow alone ignores the tag
        cases.append(Case(name, twin=with_twin(root, name, np.rot90(stored, quarter_turns))))

    webp = textured(10).astype(np.uint8)
    Image.fromarray(webp).save(root / "lossless.webp", lossless=True)
    cases.append(Case("lossless.webp", twin=with_twin(root, "lossless.webp", webp)))

    tiff = textured(11).astype(np.uint8)
    Image.fromarray(tiff).save(root / "lzw.tiff", compression="tiff_lzw")
    cases.append(Case("lzw.tiff", twin=with_twin(root, "lzw.tiff", tiff)))

    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(root / "1x1.png")
    cases.append(Case("1x1.png", reason="non-finite", twin=with_twin(root, "1x1.png", [[[200, 30, 90]]]),
                      bad_for=("brisque",)))
    return cases


def broken_cases(root: Path) -> list[Case]:
    """Files no decoder can read; each must fail its row with this reason."""
    pixels = textured(20).astype(np.uint8)
    Image.fromarray(pixels).save(root / "whole.jpg", quality=90)
    Image.fromarray(pixels).save(root / "whole.png")
    whole_jpeg, whole_png = (root / "whole.jpg").read_bytes(), (root / "whole.png").read_bytes()
    (root / "whole.jpg").unlink()
    (root / "whole.png").unlink()
    files = {"truncated.jpg": (whole_jpeg[:len(whole_jpeg) // 2], "truncated"),
             "truncated.png": (whole_png[:len(whole_png) // 2], "truncated"),
             "zero-bytes.jpg": (b"", "empty file"),
             "html-page.jpg": (b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n",
                               "cannot identify"),
             # Pillow refuses this one itself (over twice its limit) ...
             "bomb-100000x100000.png": (png_header(100_000, 100_000), "MAX_IMAGE_PIXELS"),
             # ... and only warns about this one (just over the limit): iqa-store refuses it too
             "bomb-9500x9500.png": (png_header(9_500, 9_500), "MAX_IMAGE_PIXELS")}
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    return [Case(name, reason=reason) for name, (_, reason) in files.items()]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("catalogue")
    Image.fromarray(textured(30).astype(np.uint8)).save(root / "control.jpg", quality=90)
    cases = odd_cases(root) + broken_cases(root)
    files = ["control.jpg"] + [c.file for c in cases] + [c.twin for c in cases if c.twin]
    pd.DataFrame({"path": files, "mos": np.linspace(1, 5, len(files))}).to_csv(root / "labels.csv", index=False)
    return root, cases


@dataclass(frozen=True)
class Extraction:
    failures: dict[str, str]  # file -> reason, as the report gives them
    summary: str
    rows: dict[str, np.ndarray]  # file -> features, rows that were extracted


@pytest.fixture(scope="module")
def extractions(catalogue, tiny_clip_env, tmp_path_factory) -> dict[str, Extraction]:
    root, _ = catalogue
    done = {}
    for model, args in MODELS.items():
        store = tmp_path_factory.mktemp("store")
        common = ["extract", *args, "-d", "csv", "--root", str(root), "-o", "labels=labels.csv",
                  "-o", "dataset_name=catalogue", "--store", str(store), "-q"]
        result = CliRunner().invoke(cli, [*common, "--format", "json"])
        assert result.exit_code == 0, result.output  # failed rows are reported, not fatal
        report = json.loads(result.stdout)
        text = CliRunner().invoke(cli, common)  # cached now: the human summary of the same run
        assert text.exit_code == 0, text.output
        feature_set = FeatureStore(store).get(report["feature_set"])
        values, ok = feature_set.read(), feature_set.valid_mask()
        failures = {Path(f["path"]).name: f["reason"] for f in report["failures"]}
        rows = {Path(i).name: values[k] for k, i in enumerate(feature_set.ids) if ok[k]}
        done[model] = Extraction(failures, text.output, rows)
    return done


def test_catalogue_names_match(catalogue) -> None:
    assert [c.file for c in catalogue[1]] == [*ODD, *BROKEN]


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("file", [*ODD, *BROKEN])
def test_case_behaves_as_specified(model: str, file: str, catalogue, extractions, ledger) -> None:
    _, cases = catalogue
    case = next(c for c in cases if c.file == file)
    run = extractions[model]
    problems = []
    if "control.jpg" not in run.rows:
        problems.append("the control image was not extracted")
    if case.twin is None or model in case.bad_for:
        reason = run.failures.get(case.file)
        if reason is None:
            problems.append(f"{case.file} did not fail its row")
        elif not re.search(case.reason, reason):
            problems.append(f"{case.file} failed for another reason: {reason}")
        if f"{case.file}: " not in run.summary:
            problems.append(f"the summary does not name {case.file}")
        if case.file in run.rows:
            problems.append(f"{case.file} has a feature row")
    else:
        if case.file in run.failures:
            problems.append(f"{case.file} failed: {run.failures[case.file]}")
        elif case.twin not in run.rows:
            problems.append(f"its twin {case.twin} was not extracted: {run.failures.get(case.twin)}")
        elif not np.allclose(run.rows[case.file], run.rows[case.twin], rtol=1e-4, atol=1e-5):
            difference = np.abs(run.rows[case.file] - run.rows[case.twin]).max()
            problems.append(f"{case.file}'s features differ from those of {case.twin} (max {difference:.3g})")
    ledger.record(f"bad images: {model}", RERUN, survived=not problems)
    assert not problems, problems


@pytest.mark.parametrize("file", ODD)
def test_decoded_pixels_equal_the_expectation(file: str, catalogue) -> None:
    """What every extractor decodes (read_rgb) is the twin's pixels exactly."""
    root, cases = catalogue
    case = next(c for c in cases if c.file == file)
    decoded = np.asarray(read_rgb(root / case.file))
    expected = np.asarray(Image.open(root / case.twin))
    assert decoded.shape == expected.shape and np.array_equal(decoded, expected)


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_the_twins_can_tell_a_wrong_rule(catalogue) -> None:
    """Each rule changes the pixels: decoding without it (Pillow's plain convert) misses the twin."""
    root, cases = catalogue
    for case in (c for c in cases if c.file in RULED):
        plain = np.asarray(Image.open(root / case.file).convert("RGB"))
        expected = np.asarray(Image.open(root / case.twin))
        assert plain.shape != expected.shape or not np.array_equal(plain, expected), case.file

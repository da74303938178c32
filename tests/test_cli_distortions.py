"""``iqa-store distortions``: list against the banks, apply against the library call, sheet, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from conftest import one_line_error, write_images
from iqa_store.cli import cli
from iqa_store.distortions import BANKS, apply

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["distortions", *args])


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    return tmp_path / write_images(tmp_path, 1, size=(48, 64))[0]


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_list_json_has_every_type_of_both_banks_with_its_five_values() -> None:
    result = run("list", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert sorted(listed) == ["kadid24", "reiqa"]
    for name in ("reiqa", "kadid24"):
        bank = BANKS.get(name)
        rows = {row["type"]: row for row in listed[name]["types"]}
        assert list(rows) == list(bank.types) and len(rows) == len(bank)
        for entry in bank.entries:
            assert rows[entry.type]["values"] == list(entry.values) and len(entry.values) == 5
            assert rows[entry.type]["group"] == entry.group and rows[entry.type]["help"]
    assert len(listed["reiqa"]["types"]) == 26 and len(listed["kadid24"]["types"]) == 24

    only = json.loads(run("list", "--bank", "kadid24", "--format", "json").stdout)
    assert list(only) == ["kadid24"]
    text = run("list").stdout
    assert all(t in text for t in BANKS.get("reiqa").types) and "0.1, 0.5, 1, 2, 5" in text


@pytest.mark.parametrize(("bank", "type_", "level", "seed"),
                         [("kadid24", "jpeg", 3, 0), ("reiqa", "white_noise", 5, 3), ("reiqa", "jitter", 2, 1)])
def test_apply_writes_what_the_library_call_returns(photo: Path, tmp_path: Path, bank: str, type_: str, level: int,
                                                    seed: int) -> None:
    out = tmp_path / "out.png"
    result = run("apply", "--bank", bank, "--type", type_, "--level", str(level), "--seed", str(seed), str(photo),
                 str(out))
    assert result.exit_code == 0, result.output

    pristine = torch.from_numpy(decoded(photo).copy()).permute(2, 0, 1).float() / 255
    expected = apply(pristine, bank, type_, level, torch.Generator().manual_seed(seed))
    expected = (expected.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    written = decoded(out)
    np.testing.assert_array_equal(written, expected)
    assert np.abs(written.astype(int) - decoded(photo)).mean() > 0.5  # it is distorted


def test_apply_seed_and_jpeg_output(photo: Path, tmp_path: Path) -> None:
    for seed, name in ((0, "a.png"), (0, "b.png"), (1, "c.png"), (0, "d.jpg")):
        result = run("apply", "--type", "white_noise", "--level", "4", "--seed", str(seed), str(photo),
                     str(tmp_path / name))
        assert result.exit_code == 0, result.output
    a, b, c, d = (decoded(tmp_path / n).astype(int) for n in ("a.png", "b.png", "c.png", "d.jpg"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # JPEG at quality 95 without chroma subsampling: far closer to the exact PNG than Pillow's default JPEG
    Image.fromarray(a.astype(np.uint8)).save(tmp_path / "default.jpg")
    assert np.abs(d - a).mean() < 0.5 * np.abs(decoded(tmp_path / "default.jpg").astype(int) - a).mean()


def test_unknown_type_or_level_is_a_clear_error(photo: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out.png")
    message = one_line_error(run("apply", "--type", "sepia", "--level", "2", str(photo), out))
    assert "distortion 'sepia' is not in bank 'reiqa'" in message and "gaussian_blur" in message
    message = one_line_error(run("apply", "--type", "jpeg2000", "--level", "2", str(photo), out))
    assert "'jpeg2000' is not in bank 'reiqa'" in message  # a KADID-24 type only
    message = one_line_error(run("apply", "--bank", "kadid24", "--type", "jpeg", "--level", "6", str(photo), out))
    assert "level must be an integer in 1..5, got 6" in message
    assert not Path(out).exists()

    for args in (["apply", "--type", "jpeg", "--level", "2", str(photo), str(tmp_path / "out.unknownext")],
                 ["apply", "--type", "jpeg", "--level", "2", str(tmp_path / "absent.png"), out],
                 ["sheet", str(photo), "--out", out, "--type", "sepia"]):
        result = run(*args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "'sepia'" in result.stderr and "not in bank 'reiqa'" in result.stderr


def test_sheet_has_a_row_per_type(photo: Path, tmp_path: Path) -> None:
    sizes = {}
    for types in (("jpeg", "gaussian_blur"), ("jpeg", "gaussian_blur", "white_noise", "pixelate")):
        out = tmp_path / f"sheet{len(types)}.png"
        options = [option for t in types for option in ("--type", t)]
        result = run("sheet", str(photo), "--out", str(out), "--bank", "kadid24", "--tile", "40", *options)
        assert result.exit_code == 0, result.output
        pixels = decoded(out)
        assert pixels.std() > 10  # images, not a blank canvas
        sizes[len(types)] = pixels.shape[:2]
    (height2, width2), (height4, width4) = sizes[2], sizes[4]
    assert width2 == width4 >= 6 * 40  # pristine + 5 levels, at least one tile wide each
    assert height4 - height2 >= 2 * 30  # two more rows, each at least a 40 x 30 tile high


def test_help_and_list_do_not_import_torch() -> None:
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from iqa_store.cli import cli\n"
            "for args in (['distortions', '--help'], ['distortions', 'apply', '--help'], ['distortions', 'list']):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0\n"
            "    print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]

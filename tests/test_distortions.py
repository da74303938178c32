"""The distortion bank: table facts, severity order on a real photograph, determinism, batching."""

from __future__ import annotations

import colorsys
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_store.distortions import (BANKS, DISTORTIONS, LEVELS, PARAMETERS, DistortionError, apply, get_bank,
                                  sample_distinct)
from iqa_store.distortions.measures import psnr, ssim

PHOTOS = Path(__file__).resolve().parents[1] / "iqa_store" / "datasets" / "demo_images"
BANK_TYPES = [(bank, t) for bank in ("reiqa", "kadid24") for t in get_bank(bank).types]
RANDOM_TYPES = {"motion_blur", "color_shift", "white_noise", "white_noise_ycbcr", "impulse_noise",
                "multiplicative_noise", "denoise", "jitter", "non_eccentricity", "color_block"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the shared fixture in conftest


def load_photo(name: str, width: int) -> torch.Tensor:
    with Image.open(PHOTOS / f"{name}.jpg") as image:
        image = image.convert("RGB")
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255.0


@pytest.fixture(scope="module")
def coffee() -> torch.Tensor:
    return load_photo("coffee", 256)  # [1,3,171,256], a real photograph


@pytest.fixture(scope="module")
def trio() -> torch.Tensor:
    """Three different real photographs of one size."""
    return torch.cat([load_photo(name, 128)[..., :80, :] for name in ("chelsea", "rocket", "raccoon")])


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the table -------------------------------------------------------------------------------------

def test_every_table_row_is_registered_and_every_registered_type_is_in_a_bank():
    assert set(PARAMETERS) == set(DISTORTIONS.names())
    in_banks = set(get_bank("reiqa").types) | set(get_bank("kadid24").types)
    assert in_banks == set(DISTORTIONS.names())


def test_bank_sizes_and_kadid_groups():
    assert BANKS.names() == ["kadid24", "reiqa"]
    assert len(get_bank("reiqa")) == 26  # the released Re-IQA code's 26 entries
    kadid = get_bank("kadid24")
    assert len(kadid) == 24
    assert {group: len(types) for group, types in kadid.groups.items()} == {
        "blur": 3, "color": 4, "compression": 2, "noise": 4, "brightness": 3, "spatial": 5, "sharpness_contrast": 3}
    assert "jpeg2000" in kadid and "jpeg2000" not in get_bank("reiqa")
    assert "denoise" in get_bank("reiqa") and "denoise" not in kadid


def test_values_are_the_reference_facts():
    reiqa, kadid = get_bank("reiqa"), get_bank("kadid24")
    assert reiqa.entry("jpeg").values == (70, 43, 36, 24, 7)
    assert kadid.entry("jpeg").values == (43, 36, 24, 7, 4)
    assert kadid.entry("jpeg2000").values == (16, 32, 45, 120, 170)
    assert reiqa.entry("motion_blur").values == (12, 16, 20, 24, 28)
    assert kadid.entry("motion_blur").values == (1, 2, 4, 6, 10)
    assert kadid.entry("gaussian_blur").values == (0.1, 0.5, 1, 2, 5)
    assert kadid.entry("gaussian_blur").options["truncate"] == 2.0
    assert kadid.entry("white_noise").value(5) == 0.01
    assert reiqa.entry("resize_nearest").values == (2, 3, 4, 5, 6)
    assert kadid.entry("quantization").values == (20, 16, 13, 10, 7)


@pytest.mark.parametrize("name", ["mean_shift", "linear_contrast"])
def test_reordered_levels_keep_the_reference_values(name):
    for bank in ("reiqa", "kadid24"):
        entry = get_bank(bank).entry(name)
        assert entry.reference_values is not None
        assert sorted(entry.values) == sorted(entry.reference_values)
    assert get_bank("kadid24").entry("mean_shift").reference_values == (0, 0.08, -0.08, 0.15, -0.15)
    assert get_bank("reiqa").entry("linear_contrast").reference_values == (0.3, 0.15, 0, -0.4, -0.6)


def test_ranks_mark_mirror_image_levels_as_ties():
    assert get_bank("kadid24").entry("mean_shift").ranks == (1, 2, 2, 3, 3)
    assert get_bank("kadid24").entry("linear_contrast").ranks == (1, 1, 2, 3, 4)
    assert get_bank("kadid24").entry("jpeg").ranks == (1, 2, 3, 4, 5)


# --- severity --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bank,name", BANK_TYPES)
def test_severity_grows_with_level_on_a_photograph(coffee, bank, name):
    """PSNR against the pristine photograph falls strictly from one severity rank to the next.

    Levels of equal rank (mirror-image values such as a +0.08 and a -0.08 mean shift) are
    compared as a class: every level of rank r is milder than every level of rank r + 1.
    """
    entry = get_bank(bank).entry(name)
    scores = [float(psnr(apply(coffee, bank, name, level, generator(7)), coffee)) for level in LEVELS]
    by_rank: dict[int, list[float]] = {}
    for rank, score in zip(entry.ranks, scores):
        by_rank.setdefault(rank, []).append(score)
    ranks = sorted(by_rank)
    for milder, stronger in zip(ranks, ranks[1:]):
        assert min(by_rank[milder]) > max(by_rank[stronger]), (bank, name, scores)
    assert scores[-1] < 35.0, (bank, name, scores)  # the strongest level is clearly visible


def test_ties_are_near_ties(coffee):
    contrast = [float(psnr(apply(coffee, "kadid24", "linear_contrast", level), coffee)) for level in (1, 2)]
    assert contrast[0] == pytest.approx(contrast[1], abs=0.05)  # +-0.2 around the identity amount -0.2
    shift = [float(psnr(apply(coffee, "kadid24", "mean_shift", level), coffee)) for level in (2, 3)]
    assert shift[0] == pytest.approx(shift[1], abs=1.5)


# --- determinism, shapes, batching ----------------------------------------------------------------

@pytest.mark.parametrize("bank,name", BANK_TYPES)
def test_same_seed_same_result_and_input_untouched(trio, bank, name):
    before = trio.clone()
    first = apply(trio, bank, name, 4, generator(3))
    second = apply(trio, bank, name, 4, generator(3))
    assert torch.equal(first, second)
    assert torch.equal(trio, before)
    others = [apply(trio, bank, name, 4, generator(seed)) for seed in (4, 5, 6, 8)]
    if name in RANDOM_TYPES:
        assert any(not torch.equal(first, other) for other in others), "a random type ignored the seed"
    else:
        assert all(torch.equal(first, other) for other in others), "a deterministic type depends on the seed"


@pytest.mark.parametrize("bank,name", BANK_TYPES)
def test_shape_dtype_and_range_are_kept(trio, bank, name):
    for dtype in (torch.float32, torch.float64):
        out = apply(trio.to(dtype), bank, name, 5, generator())
        assert out.shape == trio.shape and out.dtype == dtype and out.device == trio.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.isfinite(out).all()
    single = apply(trio[1], bank, name, 2, generator())
    assert single.shape == trio[1].shape


@pytest.mark.parametrize("bank,name", BANK_TYPES)
def test_batch_equals_images_one_by_one(trio, bank, name):
    batch = apply(trio, bank, name, 3, generator(11))
    shared = generator(11)
    one_by_one = torch.cat([apply(trio[i:i + 1], bank, name, 3, shared) for i in range(len(trio))])
    torch.testing.assert_close(batch, one_by_one, atol=1e-5, rtol=0)


def test_half_precision_input_is_processed_in_float32(trio):
    out = apply(trio.half(), "kadid24", "gaussian_blur", 4)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), apply(trio, "kadid24", "gaussian_blur", 4), atol=2e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_with_a_cpu_generator(trio):
    for name in ("gaussian_blur", "white_noise", "motion_blur", "jpeg", "brighten"):
        cpu = apply(trio, "kadid24", name, 3, generator(2))
        gpu = apply(trio.cuda(), "kadid24", name, 3, generator(2))
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


# --- what individual types compute -----------------------------------------------------------------

def test_hsv_saturation_matches_colorsys():
    rng = np.random.default_rng(0)
    pixels = rng.random((50, 3))
    image = torch.from_numpy(pixels.T.copy()).view(1, 3, 50, 1)
    for level, factor in ((1, 0.4), (5, -0.4)):
        out = apply(image, "kadid24", "color_saturation_hsv", level)[0, :, :, 0].T.numpy()
        for pixel, got in zip(pixels, out):
            h, s, v = colorsys.rgb_to_hsv(*pixel)
            expected = np.clip(colorsys.hsv_to_rgb(h, s * factor, v), 0, 1)
            np.testing.assert_allclose(got, expected, atol=1e-9)


def test_tone_curves_hit_their_control_points():
    grey = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    # darken: the curve's mid-point is 0.5 - amount / 2; level 3 of both banks is amount 0.2
    torch.testing.assert_close(apply(grey, "kadid24", "darken", 3), torch.full_like(grey, 0.4), atol=1e-6, rtol=0)
    # linear contrast: amount 0.15 moves 0.3 to 0.25 - 0.15 / 4 and keeps 0.5
    ramp = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    out = apply(ramp, "kadid24", "linear_contrast", 3)[0, 0, 0]
    torch.testing.assert_close(out, torch.tensor([0.2125, 0.5, 0.7875], dtype=torch.float64), atol=1e-6, rtol=0)


def test_white_noise_has_the_table_variance():
    grey = torch.full((2, 3, 128, 128), 0.5)
    out = apply(grey, "kadid24", "white_noise", 5, generator())  # variance 0.01: no clipping at 0.5 +- 5 sigma
    assert float((out - grey).var()) == pytest.approx(0.01, rel=0.03)
    assert abs(float((out - grey).mean())) < 0.002


def test_impulse_noise_density_and_values():
    grey = torch.full((1, 3, 200, 200), 0.5)
    out = apply(grey, "reiqa", "impulse_noise", 5, generator())  # density 0.03, whole pixels
    hit = (out != 0.5).any(dim=1)
    assert float(hit.float().mean()) == pytest.approx(0.03, rel=0.1)
    assert set(torch.unique(out).tolist()) == {0.0, 0.5, 1.0}
    assert torch.equal(out[:, :1].expand_as(out), out)  # pixels, not channels, are hit


def test_jpeg_level_is_pillows_round_trip(coffee):
    import io

    array = (coffee[0].permute(1, 2, 0) * 255).round().byte().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=24)
    expected = torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(apply(coffee, "kadid24", "jpeg", 3)[0], expected, atol=0, rtol=0)


def test_reiqa_motion_blur_is_horizontal_or_vertical():
    dot = torch.zeros(1, 3, 41, 41)
    dot[..., 20, 20] = 1.0
    for seed in range(4):
        out = apply(dot, "reiqa", "motion_blur", 1, generator(seed))[0, 0]  # length 12
        rows, cols = torch.nonzero(out > 1e-6, as_tuple=True)
        assert (rows == 20).all() or (cols == 20).all()
        assert int(max(rows.max() - rows.min(), cols.max() - cols.min())) + 1 == 13  # 12 px + anti-aliased ends
        assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)


# --- measures --------------------------------------------------------------------------------------

def test_ssim_and_psnr_match_scikit_image_values():
    rng = np.random.default_rng(0)
    x = rng.random((40, 56, 3))
    x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1)) / 3
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    tx, ty = (torch.from_numpy(a).permute(2, 0, 1) for a in (x, y))
    # skimage.metrics.structural_similarity(x, y, channel_axis=2, gaussian_weights=True, sigma=1.5,
    #     use_sample_covariance=False, data_range=1.0) and peak_signal_noise_ratio, scikit-image 0.26
    assert float(ssim(ty, tx)) == pytest.approx(0.9537514092070721, abs=1e-9)
    assert float(psnr(ty, tx)) == pytest.approx(26.055218606260535, abs=1e-9)
    assert float(ssim(tx, tx)) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(float(psnr(tx, tx)))


# --- sampling (Re-IQA's n_aug distinct distortions at random levels) ------------------------------

def test_sample_distinct_draws_distinct_bank_types_at_valid_levels():
    for bank in ("reiqa", "kadid24"):
        draws = sample_distinct(bank, 11, generator(0))
        types = [t for t, _ in draws]
        assert len(draws) == 11 and len(set(types)) == 11
        assert set(types) <= set(get_bank(bank).types)
        assert all(level in (1, 2, 3, 4, 5) for _, level in draws)
    everything = sample_distinct("kadid24", 24, generator(1))
    assert sorted(t for t, _ in everything) == sorted(get_bank("kadid24").types)
    assert sample_distinct("reiqa", 0, generator(0)) == []


def test_sample_distinct_is_reproducible_from_the_seed():
    assert sample_distinct("reiqa", 11, generator(5)) == sample_distinct("reiqa", 11, generator(5))
    assert sample_distinct("reiqa", 11, generator(5)) != sample_distinct("reiqa", 11, generator(6))
    shared = generator(7)  # successive draws from one generator differ
    assert sample_distinct("reiqa", 11, shared) != sample_distinct("reiqa", 11, shared)


def test_sample_distinct_levels_and_types_are_uniform_over_many_draws():
    shared = generator(0)
    draws = [pair for _ in range(2000) for pair in sample_distinct("reiqa", 11, shared)]
    levels = np.bincount([level for _, level in draws], minlength=6)[1:] / len(draws)
    np.testing.assert_allclose(levels, 0.2, atol=0.015)  # 22,000 draws: 3 sigma is about 0.008
    counts = {t: 0 for t in get_bank("reiqa").types}
    for t, _ in draws:
        counts[t] += 1
    expected = 2000 * 11 / len(counts)
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values()), counts


def test_sample_distinct_refuses_more_types_than_the_bank_has():
    with pytest.raises(DistortionError, match="cannot draw 27 distinct distortions from bank 'reiqa': it has 26 types"):
        sample_distinct("reiqa", 27, generator(0))
    with pytest.raises(DistortionError, match="cannot draw -1"):
        sample_distinct("kadid24", -1, generator(0))


# --- errors and laziness ---------------------------------------------------------------------------

def test_invalid_requests_raise_clear_errors(trio):
    for level in (0, 6, 2.0, True):
        with pytest.raises(DistortionError, match="level"):
            apply(trio, "kadid24", "jpeg", level)
    with pytest.raises(DistortionError, match="not in bank 'reiqa'"):
        apply(trio, "reiqa", "jpeg2000", 1)
    with pytest.raises(DistortionError, match="floating point"):
        apply((trio * 255).byte(), "kadid24", "jpeg", 1)
    with pytest.raises(DistortionError, match=r"\[B,3,H,W\]"):
        apply(trio[:, :1], "kadid24", "jpeg", 1)
    with pytest.raises(KeyError, match="unknown distortion bank"):
        get_bank("kadid10k")


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, iqa_store.distortions as d; "
            "assert len(d.get_bank('kadid24')) == 24 and 'jpeg' in d.DISTORTIONS; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

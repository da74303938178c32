"""BRISQUE: agreement with the MATLAB definition, an independent slow reference, properties.

How we know the reference values are right
------------------------------------------
``tests/fixtures/brisque/reference.npz`` holds features computed by GNU Octave 7.3 from
``tests/fixtures/brisque/brisque_reference.m``: a line-by-line transcription of the LIVE
release (``brisque_feature.m``, ``estimateggdparam.m``, ``estimateaggdparam.m``) run with
Octave's native ``filter2``, ``circshift``, ``gamma``, ``mean`` and ``min``, plus MATLAB's
``rgb2gray`` weights and MATLAB's ``imresize`` ``contributions()`` (bicubic, antialiasing,
mirrored indices) written out, because Octave's own ``imresize`` is a different algorithm.
``make_reference.py`` regenerates the file (it needs ``octave``). That transcription shares
no code with ``iqa_store/extractors/brisque.py``, and this file adds a third, plain
implementation (``_slow_brisque``: a 2-D 7x7 window, ``np.roll``, boolean masks, a generic
``contributions()``) that is checked against both. The generic ``contributions()`` is in
turn checked against documented MATLAB outputs (bilinear ``imresize([0 1 2], [1 5])``) and
``rgb2gray`` against MATLAB's documented primaries. Agreement is to ~1e-13; the tolerance
asked of the features is 1e-6 (absolute, or relative above 1).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.special import gamma

from iqa_store.extractors import create_extractor
from iqa_store.extractors import brisque as bq

FIXTURE = Path(__file__).parent / "fixtures" / "brisque" / "reference.npz"


# --------------------------------------------------------------------------- slow reference


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) // 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def _filter2_same(window: np.ndarray, image: np.ndarray) -> np.ndarray:
    """MATLAB filter2(window, image, 'same'): 2-D correlation, zero padding."""
    r = window.shape[0] // 2
    padded = np.pad(image, r)
    out = np.zeros_like(image)
    for a in range(window.shape[0]):
        for b in range(window.shape[1]):
            out += window[a, b] * padded[a:a + image.shape[0], b:b + image.shape[1]]
    return out


def _ggd_fit(vec: np.ndarray) -> tuple[float, float]:
    gam = np.arange(200, 10001) / 1000.0
    r_gam = gamma(1 / gam) * gamma(3 / gam) / gamma(2 / gam) ** 2
    sigma_sq = np.mean(vec ** 2)
    rho = sigma_sq / np.mean(np.abs(vec)) ** 2
    return gam[np.argmin(np.abs(rho - r_gam))], np.sqrt(sigma_sq)


def _aggd_fit(vec: np.ndarray) -> tuple[float, float, float]:
    gam = np.arange(200, 10001) / 1000.0
    r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt(np.mean(vec[vec < 0] ** 2)) if np.any(vec < 0) else np.nan
        right = np.sqrt(np.mean(vec[vec > 0] ** 2)) if np.any(vec > 0) else np.nan
        g = left / right
        rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec ** 2)
        rnorm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    return gam[np.argmin((r_gam - rnorm) ** 2)], left, right


def _contributions(in_len: int, out_len: int, scale: float, kernel, width: float, antialias: bool):
    """MATLAB imresize contributions(): weights and 0-based indices, one row per output."""
    if scale < 1 and antialias:
        h = lambda x: scale * kernel(scale * x)  # noqa: E731
        width = width / scale
    else:
        h = kernel
    x = np.arange(1, out_len + 1, dtype=float)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    p = int(np.ceil(width)) + 2
    indices = left[:, None] + np.arange(p)[None, :]
    weights = h(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    indices = aux[np.mod(indices.astype(int) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _keys(x):
    a = np.abs(x)
    return np.where(a <= 1, 1.5 * a ** 3 - 2.5 * a ** 2 + 1,
                    np.where(a <= 2, -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2, 0.0))


def _triangle(x):
    return np.where(np.abs(x) <= 1, 1 - np.abs(x), 0.0)


def _slow_imresize(image: np.ndarray, out_shape, scale, kernel=_keys, width=4.0) -> np.ndarray:
    out = np.asarray(image, dtype=float)
    for axis in (0, 1):
        weights, indices = _contributions(out.shape[axis], out_shape[axis], scale, kernel, width, True)
        moved = np.moveaxis(out, axis, 0)
        result = np.zeros((out_shape[axis],) + moved.shape[1:])
        for k in range(out_shape[axis]):
            for j in range(weights.shape[1]):
                result[k] += weights[k, j] * moved[indices[k, j]]
        out = np.moveaxis(result, 0, axis)
    return out


def _slow_brisque(grey: np.ndarray) -> np.ndarray:
    window = _fspecial_gaussian(7, 7 / 6)
    window = window / window.sum()
    im = np.asarray(grey, dtype=float)
    feat: list[float] = []
    for _ in range(2):
        mu = _filter2_same(window, im)
        sigma = np.sqrt(np.abs(_filter2_same(window, im * im) - mu * mu))
        structdis = (im - mu) / (sigma + 1)
        alpha, overall = _ggd_fit(structdis.ravel(order="F"))
        feat += [alpha, overall ** 2]
        for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            shifted = np.roll(structdis, shift, axis=(0, 1))  # MATLAB circshift
            pair = (structdis * shifted).ravel(order="F")
            alpha, left, right = _aggd_fit(pair)
            const = np.sqrt(gamma(1 / alpha)) / np.sqrt(gamma(3 / alpha))
            mean = (right - left) * (gamma(2 / alpha) / gamma(1 / alpha)) * const
            feat += [alpha, mean, left ** 2, right ** 2]
        im = _slow_imresize(im, (-(-im.shape[0] // 2), -(-im.shape[1] // 2)), 0.5)
    return np.array(feat)


def _assert_features_close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-6) -> None:
    assert actual.shape == expected.shape == (36,)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    ok = ~np.isnan(expected)
    error = np.abs(actual[ok] - expected[ok]) / np.maximum(1.0, np.abs(expected[ok]))
    worst = int(np.argmax(error))
    assert error.max() <= tol, (f"feature {np.flatnonzero(ok)[worst]} off by {error.max():.3g}: "
                                f"{actual[ok][worst]!r} vs {expected[ok][worst]!r}")


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Natural-looking random texture on 0-255 without flat 7x7 windows."""
    from scipy import ndimage
    field = sum(s * ndimage.gaussian_filter(rng.standard_normal(shape), s, mode="wrap") for s in (1, 2, 4, 8))
    field = (field - field.mean()) / field.std()
    return np.clip(128 + 35 * field + 3 * rng.standard_normal(shape), 1, 254)


# --------------------------------------------------------------------------- MATLAB (Octave) reference


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _image_names(reference, prefix_resize: bool):
    names = sorted({key.split("/")[0] for key in reference if "/" in key})
    return [n for n in names if n.startswith("resize_") == prefix_resize]


def test_fixture_has_images(reference):
    assert len(_image_names(reference, False)) >= 5
    assert len(_image_names(reference, True)) >= 4


def test_features_match_octave_transcription_of_matlab(reference):
    for name in _image_names(reference, False):
        image, expected = reference[f"{name}/image"], reference[f"{name}/features"]
        if image.ndim == 3:
            assert image.dtype == np.uint8
        _assert_features_close(bq.brisque_features(image), expected)


def test_grey_and_half_scale_match_octave(reference):
    for name in _image_names(reference, False):
        image = reference[f"{name}/image"]
        grey = bq.rgb2gray_uint8(image) if image.ndim == 3 else image
        np.testing.assert_array_equal(grey, reference[f"{name}/grey"])
        np.testing.assert_allclose(bq.imresize_half(grey), reference[f"{name}/half"], rtol=0, atol=1e-9)


def test_imresize_half_matches_octave_on_small_matrices(reference):
    for name in _image_names(reference, True):
        expected = reference[f"{name}/half"]
        np.testing.assert_allclose(bq.imresize_half(reference[f"{name}/image"]), expected, rtol=0, atol=1e-12)


def test_fast_and_exact_one_sided_sums_agree_with_octave(reference):
    # The default path takes one-sided sums of p^2 as differences and falls back to the
    # cancellation-free path when a side is tiny; both must match MATLAB on their own.
    ws = bq._workspace()
    for name in ("texture_rgb", "gradient_grey", "noise_grey"):
        image = reference[f"{name}/image"]
        grey = bq.rgb2gray_uint8(image) if image.ndim == 3 else image
        expected = reference[f"{name}/features"]
        for exact in (False, True):
            features = bq._scale_features(grey, ws, exact=exact)
            features += bq._scale_features(bq._imresize_half(grey, ws).copy(), ws, exact=exact)
            _assert_features_close(np.array(features), expected)


def test_cancellation_guard_switches_to_exact_sums():
    sums = bq._PairSums()
    sums.left_sq, sums.right_sq = 1e-9, 1.0
    assert sums.needs_exact()
    sums.left_sq = 0.2
    assert not sums.needs_exact()
    sums.left_sq = float("nan")
    assert sums.needs_exact()


def test_slow_reference_matches_octave(reference):
    # Validates the plain implementation below against the independent Octave one.
    for name in ("gradient_grey", "odd_rgb", "tiny_grey"):
        image = reference[f"{name}/image"]
        grey = bq.rgb2gray_uint8(image) if image.ndim == 3 else image
        _assert_features_close(_slow_brisque(grey), reference[f"{name}/features"], tol=1e-9)


# --------------------------------------------------------------------------- slow reference


@pytest.mark.parametrize("shape", [(37, 53), (64, 48), (20, 101), (9, 8), (3, 5), (130, 170)])
def test_matches_slow_reference(shape):
    rng = np.random.default_rng(sum(shape))
    grey = _texture(rng, shape)
    _assert_features_close(bq.brisque_features(grey), _slow_brisque(grey), tol=1e-9)


def test_matches_slow_reference_with_exact_zeros_in_mscn():
    # Inside a patch of zeros mu = 0 exactly, so MSCN and the products are exactly 0 in any
    # summation order; such products must be left out of both AGGD sides (vec<0, vec>0).
    # The patches touch the first row and the last column to exercise the wrap-around.
    rng = np.random.default_rng(3)
    grey = np.round(_texture(rng, (60, 70)))
    grey[0:12, 30:70] = 0.0
    grey[40:55, 5:25] = 0.0
    assert np.count_nonzero(bq.mscn(grey) == 0) > 300
    _assert_features_close(bq.brisque_features(grey), _slow_brisque(grey), tol=1e-9)


def test_mscn_matches_direct_formula():
    rng = np.random.default_rng(11)
    grey = _texture(rng, (45, 77))
    window = _fspecial_gaussian(7, 7 / 6)
    mu = _filter2_same(window, grey)
    sigma = np.sqrt(np.abs(_filter2_same(window, grey * grey) - mu * mu))
    np.testing.assert_allclose(bq.mscn(grey), (grey - mu) / (sigma + 1), rtol=0, atol=1e-12)


def test_workspace_reuse_across_sizes_gives_same_result():
    rng = np.random.default_rng(5)
    big, small = _texture(rng, (90, 120)), _texture(rng, (31, 17))
    first = bq.brisque_features(big)
    bq.brisque_features(small)
    bq.brisque_features(np.round(big).astype(np.uint8)[:, :, None].repeat(3, axis=2))
    np.testing.assert_array_equal(bq.brisque_features(big), first)


# --------------------------------------------------------------------------- imresize facts


def test_generic_contributions_reproduce_documented_matlab_output():
    # MATLAB: imresize([0 1 2], [1 5], 'bilinear') returns [0 0.4 1 1.6 2]
    # (quoted on Stack Overflow, "imresize bilinear matlab", question 42020435).
    weights, indices = _contributions(3, 5, 5 / 3, _triangle, 2.0, True)
    np.testing.assert_allclose((weights * np.array([0.0, 1.0, 2.0])[indices]).sum(axis=1),
                               [0, 0.4, 1, 1.6, 2], atol=1e-12)


def test_half_taps_are_matlab_antialiased_bicubic():
    weights, indices = _contributions(100, 50, 0.5, _keys, 4.0, True)
    assert weights.shape[1] == 8  # 10 candidates, the two zero columns killed
    for k in range(5, 45):  # interior rows: one shared set of weights, inputs 2k-3 .. 2k+4
        np.testing.assert_allclose(weights[k], bq._half_taps(), rtol=0, atol=1e-15)
        np.testing.assert_array_equal(indices[k], np.arange(2 * k - 3, 2 * k + 5))
    taps = bq._half_taps()
    assert abs(taps.sum() - 1) < 1e-15
    np.testing.assert_allclose(taps, taps[::-1], rtol=0, atol=0)
    # 0.5 * cubic(0.5 * d) at d = 3.5, 2.5, 1.5, 0.5 (they already sum to 1).
    np.testing.assert_allclose(taps[:4], 0.5 * _keys(0.5 * np.array([3.5, 2.5, 1.5, 0.5])), atol=1e-15)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (2, 2), (3, 7), (8, 5), (25, 30), (31, 33)])
def test_imresize_half_matches_generic_contributions(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    image = 255 * rng.random(shape)
    expected_shape = (-(-shape[0] // 2), -(-shape[1] // 2))
    out = bq.imresize_half(image)
    assert out.shape == expected_shape  # ceil(size / 2)
    np.testing.assert_allclose(out, _slow_imresize(image, expected_shape, 0.5), rtol=0, atol=1e-11)


def test_imresize_half_keeps_constants_and_mirrors_edges():
    np.testing.assert_allclose(bq.imresize_half(np.full((13, 9), 42.5)), 42.5, rtol=0, atol=1e-12)
    # Mirrored (not clamped, not zero) borders: a linear ramp along the columns stays
    # linear inside but bends at the edges exactly as symmetric padding predicts.
    ramp = np.tile(np.arange(12.0), (4, 1))
    out = bq.imresize_half(ramp)[0]
    mirrored = np.concatenate([ramp[0, 2::-1], ramp[0], ramp[0, :-4:-1]])
    taps = bq._half_taps()
    expected = [taps @ mirrored[2 * k:2 * k + 8] for k in range(6)]
    np.testing.assert_allclose(out, expected, atol=1e-12)
    np.testing.assert_allclose(out[2:4], [4.5, 6.5], atol=1e-12)  # outputs clear of the borders
    assert abs(out[0] - 0.5) > 0.01 and abs(out[-1] - 10.5) > 0.01  # the bend


# --------------------------------------------------------------------------- grey conversion


def test_rgb2gray_matches_matlab_primaries():
    # MATLAB: rgb2gray(uint8([255 0 0])) = 76, green 150, blue 29, white 255.
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(bq.rgb2gray_uint8(rgb), [[76, 150, 29, 255, 0]])


def test_rgb2gray_rounding_is_exact_for_every_uint8_triple():
    # MATLAB's uint8() rounds half away from zero: floor(y + 0.5). No weighted sum of a uint8
    # triple lies within 4.5e-6 of a half-integer, so summation order and the rounding rule
    # used cannot matter; the implementation is checked on all 256^3 triples anyway.
    w_r, w_g, w_b = bq.RGB2GRAY_WEIGHTS
    v = np.arange(256.0)
    red_green = v[:, None] * w_r + v[None, :] * w_g
    rgb = np.empty((256, 256, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1] = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    closest = 1.0
    for b in range(256):
        y = red_green + b * w_b
        closest = min(closest, float(np.min(np.abs(y - np.floor(y) - 0.5))))
        rgb[..., 2] = b
        np.testing.assert_array_equal(bq.rgb2gray_uint8(rgb), np.floor(y + 0.5))
    assert closest > 4e-6


def test_rgb_input_equals_its_matlab_grey():
    rng = np.random.default_rng(8)
    rgb = np.clip(np.round(_texture(rng, (40, 50))[..., None] + rng.normal(0, 9, (40, 50, 3))), 0, 255).astype(np.uint8)
    grey = bq.rgb2gray_uint8(rgb)
    assert np.all(grey == np.round(grey))
    np.testing.assert_array_equal(bq.brisque_features(rgb), bq.brisque_features(grey))


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        bq.brisque_features(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        bq.brisque_features(np.zeros((0, 5)))
    with pytest.raises(ValueError):
        bq.rgb2gray_uint8(np.zeros((4, 4, 3), dtype=np.float64))


# --------------------------------------------------------------------------- properties


def test_shape_fits_recover_known_distributions():
    rng = np.random.default_rng(2)
    gauss, laplace = rng.standard_normal(400_000), rng.laplace(size=400_000)
    for sample, shape in ((gauss, 2.0), (laplace, 1.0)):
        alpha, variance = bq._ggd(float(sample @ sample), float(np.abs(sample).sum()), sample.size)
        assert abs(alpha - shape) < 0.03
        assert variance == pytest.approx(np.mean(sample ** 2), rel=1e-12)
    # AGGD of a symmetric Gaussian: shape 2, mean 0, equal sides.
    sums = bq._PairSums()
    sums.n = gauss.size
    sums.sum_abs = float(np.abs(gauss).sum())
    sums.left_sq = float(np.sum(gauss[gauss < 0] ** 2))
    sums.right_sq = float(np.sum(gauss[gauss > 0] ** 2))
    sums.n_left, sums.n_right = int(np.sum(gauss < 0)), int(np.sum(gauss > 0))
    alpha, mean, left, right = sums.features()
    assert abs(alpha - 2) < 0.03 and abs(mean) < 0.01 and left == pytest.approx(right, rel=0.02)
    assert (alpha, left, right) == pytest.approx(_aggd_fit(gauss)[:1] + tuple(s * s for s in _aggd_fit(gauss)[1:]))


def test_white_noise_features():
    # The MSCN map of white Gaussian noise is close to Gaussian but platykurtic (the 7x7
    # local normalisation bounds it): GGD shape about 3; neighbour products of nearly
    # independent coefficients are Bessel-K0-like (AGGD shape about 1), slightly negative
    # on average because neighbours share most of their local mean.
    rng = np.random.default_rng(4)
    f = bq.brisque_features(128 + 20 * rng.standard_normal((256, 256)))
    assert 2.6 < f[0] < 3.3
    for k in range(4):
        assert 0.85 < f[2 + 4 * k] < 1.15
        assert -0.2 < f[3 + 4 * k] < 0


def test_transpose_swaps_horizontal_and_vertical():
    rng = np.random.default_rng(6)
    grey = _texture(rng, (50, 71))
    f, ft = bq.brisque_features(grey), bq.brisque_features(grey.T)
    for scale in (0, 18):
        h, v, d1, d2 = (slice(scale + 2 + 4 * k, scale + 6 + 4 * k) for k in range(4))
        np.testing.assert_allclose(ft[scale:scale + 2], f[scale:scale + 2], rtol=1e-9)
        np.testing.assert_allclose(ft[h], f[v], rtol=1e-9)
        np.testing.assert_allclose(ft[v], f[h], rtol=1e-9)
        np.testing.assert_allclose(ft[d1], f[d1], rtol=1e-9)
        np.testing.assert_allclose(ft[d2], f[d2], rtol=1e-9)
    assert not np.allclose(f[2:6], f[6:10])  # the directions do differ on this image


def test_odd_sizes_and_degenerate_sides():
    # 7x5 -> 4x3 at scale 2, where some direction has no negative product: NaN sides and
    # shape 0.2, as MATLAB (mean of an empty vector is NaN; min of all-NaN gives index 1).
    rng = np.random.default_rng(9)
    f = bq.brisque_features(255 * rng.random((7, 5)))
    assert np.all(np.isfinite(f[:18]))
    nan_sides = [k for k in range(4) if np.isnan(f[18 + 2 + 4 * k + 2])]
    for k in nan_sides:
        assert f[18 + 2 + 4 * k] == 0.2 and np.isnan(f[18 + 2 + 4 * k + 1])


def test_lookup_matches_full_scan_and_matlab_nan_rule():
    gam, r_ggd, r_aggd = bq._shape_table()
    assert gam.size == 9801 and gam[0] == 0.2 and gam[-1] == 10.0
    rng = np.random.default_rng(1)
    for value in np.concatenate([rng.uniform(1.0, 3.0, 50), r_ggd[::977]]):
        assert bq._shape_from_table(r_ggd, value, squared=False) == gam[np.argmin(np.abs(r_ggd - value))]
    for value in rng.uniform(0.2, 0.9, 50):
        assert bq._shape_from_table(r_aggd, value, squared=True) == gam[np.argmin((r_aggd - value) ** 2)]
    assert bq._shape_from_table(r_aggd, float("nan"), squared=True) == 0.2


# --------------------------------------------------------------------------- extractor


def test_extractor_contract(tmp_path):
    extractor = create_extractor("brisque")
    assert isinstance(extractor, bq.Brisque)
    assert extractor.dim == 36 == len(bq.FEATURE_NAMES) == len(set(bq.FEATURE_NAMES))
    assert extractor.name == "brisque" and extractor.version == "1" and extractor.description
    rng = np.random.default_rng(12)
    rgb = np.clip(np.round(_texture(rng, (48, 64))[..., None] + rng.normal(0, 6, (48, 64, 3))), 0, 255)
    path = tmp_path / "img.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    item = extractor.load_item(path)
    assert item.dtype == np.float32 and item.shape == (36,)
    np.testing.assert_array_equal(item, bq.brisque_features(rgb.astype(np.uint8)).astype(np.float32))
    batch = extractor.compute(extractor.collate([item, item]))
    assert batch.dtype == np.float32 and batch.shape == (2, 36)
    assert extractor.compute([item]).shape == (1, 36)
    assert len(extractor.fingerprint()) > 8


def _odd_image_files(folder: Path) -> list[Path]:
    """One small file of each kind the decoder treats differently: plain RGB (JPEG, PNG), grey,
    RGBA and palette transparency, 16-bit grey, CMYK, EXIF-rotated, an RGB PNG with a tRNS colour."""
    rng = np.random.default_rng(13)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to view
    palette = Image.fromarray(rng.integers(0, 16, (24, 40), dtype=np.uint8), "P")
    palette.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tolist())
    saved = {"rgb.jpg": (Image.fromarray(rgb), {"quality": 90}), "rgb.png": (Image.fromarray(rgb), {}),
             "exif6.jpg": (Image.fromarray(rgb), {"exif": exif}), "grey.png": (Image.fromarray(rgb[..., 0]), {}),
             "rgba.png": (Image.fromarray(np.dstack([rgb, rgb[..., 1]]), "RGBA"), {}),
             "palette.png": (palette, {"transparency": 3}),
             "grey16.png": (Image.fromarray(rng.integers(0, 65536, (24, 40)).astype(np.uint16)), {}),
             "cmyk.jpg": (Image.fromarray(np.dstack([rgb, rgb[..., 2]]), "CMYK"), {}),
             "rgb-trns.png": (Image.fromarray(rgb), {"transparency": tuple(int(v) for v in rgb[0, 0])})}
    for name, (image, options) in saved.items():
        image.save(folder / name, **options)
    return [folder / name for name in saved]


def test_read_rgb_array_is_read_rgb_pixels(tmp_path):
    # The extractor reads pixels with read_rgb_array (no copy of an RGB decode): the same
    # pixels as read_rgb, which the reliability catalogue checks against numpy twins.
    from iqa_store.images import read_rgb, read_rgb_array
    for path in _odd_image_files(tmp_path):
        expected = np.asarray(read_rgb(path))
        pixels = read_rgb_array(path)
        assert pixels.dtype == np.uint8 and pixels.shape == expected.shape, path.name
        np.testing.assert_array_equal(pixels, expected, err_msg=path.name)
        np.testing.assert_array_equal(create_extractor("brisque").load_item(path),
                                      bq.brisque_features(expected).astype(np.float32), err_msg=path.name)
    assert read_rgb_array(tmp_path / "exif6.jpg").shape == (40, 24, 3)  # the orientation was applied


def test_module_import_is_light():
    code = ("import sys, iqa_store.extractors.brisque; "
            "print('torch' in sys.modules, 'cv2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]

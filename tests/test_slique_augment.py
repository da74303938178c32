"""CONTRIQUE's view augmentation for SLIQUE's image-image branch, against independent references:
colorsys for HSV, BT.601 by hand, published CIE L*a*b* values of the sRGB primaries, and
CONTRIQUE's own MS transform written with scipy.ndimage as its loader does."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import scipy.ndimage
import torch

from iqa_store.distortions._random import randint, uniform
from iqa_store.train.augment import (COLOUR_SPACES, CONVERSIONS, contrique_view, half_scale, mean_subtracted,
                                     to_grey, to_hsv, to_lab)
from iqa_store.train.crops import cut, min_side, ola_pair
from iqa_store.nets.resize import upscaled_to
from iqa_store.train.slique import SliqueStage


@pytest.fixture()
def image() -> torch.Tensor:
    return torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_grey_is_bt601_luma_in_every_channel(image: torch.Tensor) -> None:
    pixels = image.numpy()
    luma = 0.299 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2]
    np.testing.assert_allclose(to_grey(image).numpy(), np.stack([luma] * 3), rtol=1e-12)


def test_hsv_equals_colorsys_pixel_by_pixel(image: torch.Tensor) -> None:
    image[:, 0, 0] = torch.tensor([0.3, 0.3, 0.3], dtype=image.dtype)  # grey: hue and saturation 0
    image[:, 0, 1] = 0.0  # black
    ours = to_hsv(image).numpy()
    pixels = image.numpy()
    for y in range(image.shape[1]):
        for x in range(image.shape[2]):
            np.testing.assert_allclose(ours[:, y, x], colorsys.rgb_to_hsv(*pixels[:, y, x]), atol=1e-12)


@pytest.mark.parametrize(("rgb", "lab"), [  # CIE L*a*b* (D65) of the sRGB primaries, as published
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)), ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)), ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))])
def test_lab_of_the_primaries_is_the_published_value_encoded_as_8_bit_lab(rgb, lab) -> None:
    pixel = torch.tensor(rgb, dtype=torch.float64).view(3, 1, 1)
    encoded = to_lab(pixel).view(3).numpy()
    decoded = np.array([encoded[0] * 100, encoded[1] * 255 - 128, encoded[2] * 255 - 128])
    expected = np.clip(lab, [0, -128, -128], [100, 127, 127])  # 8-bit LAB clips b* of blue at -128
    np.testing.assert_allclose(decoded, expected, atol=0.02)


def test_mean_subtracted_equals_contriques_scipy_transform(image: torch.Tensor) -> None:
    taps = np.exp(-0.5 * np.arange(-3, 4) ** 2 / (7 / 6) ** 2)
    window = taps / taps.sum()  # skvideo.utils.mscn.gen_gauss_window(3, 7/6)
    expected = []
    for plane in image.numpy() * 255:
        mean = scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(plane, window, 0, mode="reflect"),
                                         window, 1, mode="reflect")
        detail = plane - mean
        expected.append((detail - detail.min()) / (np.ptp(detail) + 1e-3))
    np.testing.assert_allclose(mean_subtracted(image).numpy(), np.stack(expected), rtol=1e-10, atol=1e-12)


def test_a_view_takes_every_colour_space_and_flips_about_half_the_time(image: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(1)
    converted = {name: CONVERSIONS[name](image) for name in COLOUR_SPACES}
    seen, flips, draws = set(), 0, 400
    for _ in range(draws):
        view = contrique_view(image, generator)
        matches = [(name, flip) for name, out in converted.items() for flip in (False, True)
                   if torch.equal(view, out.flip(-1) if flip else out)]
        assert matches, "a view is one colour space of the crop, flipped or not"
        seen.add(matches[0][0])
        flips += matches[0][1]
    assert seen == set(COLOUR_SPACES)
    assert 0.4 < flips / draws < 0.6


def test_the_stage_pairs_are_ola_crops_of_one_scale_with_their_own_view_draws() -> None:
    stage = SliqueStage(crop=32, backbone="resnet-tiny", width=8, objective="image-image")
    photo = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(2))
    for seed in range(12):
        pair = stage.image_pair(photo, torch.Generator().manual_seed(seed))
        replay = torch.Generator().manual_seed(seed)  # the same draws, in the documented order
        scaled = half_scale(photo) if uniform(replay) < 0.5 else photo
        scaled = upscaled_to(scaled, min_side(32))
        boxes = ola_pair(scaled.shape[-2], scaled.shape[-1], 32, (0.1, 0.3), replay)
        for view, box in zip(pair, boxes):
            expected = CONVERSIONS[COLOUR_SPACES[randint(replay, len(COLOUR_SPACES))]](cut(scaled, box))
            expected = expected.flip(-1) if uniform(replay) < 0.5 else expected
            assert torch.equal(view, expected)
    plain = SliqueStage(crop=32, backbone="resnet-tiny", width=8, objective="image-image", augment="none")
    generator, replay = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    boxes = ola_pair(96, 128, 32, (0.1, 0.3), replay)
    assert torch.equal(plain.image_pair(photo, generator), torch.stack([cut(photo, b) for b in boxes]))


def test_half_scale_halves_each_side_and_keeps_a_flat_image_flat() -> None:
    flat = torch.full((3, 31, 40), 0.25)
    halved = half_scale(flat)
    assert halved.shape == (3, 15, 20)
    assert torch.allclose(halved, torch.full_like(halved, 0.25))

"""QualiCLIP training: the three losses against explicit loops, the crop pairs, the level order, a run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from iqa_store import api
from iqa_store.cli import cli
from iqa_store.distortions import LEVELS, apply, get_bank
from iqa_store.distortions.measures import psnr
from iqa_store.extractors import create_extractor
from iqa_store.nets.clip_quality import CLIP_MEAN, CLIP_STD, read_clip_state
from iqa_store.store import FeatureStore, list_encoders
from iqa_store.train.qualiclip import (QualiclipStage, consistency_loss, cut, degraded_levels, draw_distortion,
                                       negative_ranking_loss, overlapping_crops, positive_ranking_loss)
from iqa_store.train.stage import Example
from tests.conftest import TINY_CLIP_RN_ARCH, write_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"arch": TINY_CLIP_RN_ARCH, "pretrained": "none", "crop": 64}


# --- the losses, one hinge at a time --------------------------------------------------------------

def _hinge(value: float) -> float:
    return max(0.0, value)


def _reference_losses(pos: np.ndarray, neg: np.ndarray, m_cons: float, m_rank: float) -> tuple[float, float, float, list[int]]:
    """Eq. 1-3 for one image and prompt pair, written as the paper's sums; also the number of hinge terms."""
    levels = range(pos.shape[0])
    cons = pos_loss = neg_loss = 0.0
    counts = [0, 0, 0]
    for i in levels:
        for sim in (pos, neg):
            cons += _hinge(abs(sim[i, 0] - sim[i, 1]) - m_cons)
            counts[0] += 1
    for i in levels:
        for j in levels:
            if j <= i:
                continue
            for k in (0, 1):
                for earlier in (0, 1):
                    pos_loss += _hinge(pos[j, k] - pos[i, earlier] + m_rank)
                    neg_loss += _hinge(neg[i, earlier] - neg[j, k] + m_rank)
                    counts[1] += 1
                    counts[2] += 1
    return cons, pos_loss, neg_loss, counts


@pytest.mark.parametrize(("m_cons", "m_rank"), [(2.5e-3, 6.75e-2), (5.0, 5.0)])  # 5.0: every hinge is active
def test_the_three_losses_equal_the_papers_sums(m_cons: float, m_rank: float) -> None:
    generator = torch.Generator().manual_seed(0)
    pos = torch.rand(3, 5, 2, generator=generator, dtype=torch.float64) * 0.2 - 0.1
    neg = torch.rand(3, 5, 2, generator=generator, dtype=torch.float64) * 0.2 - 0.1
    cons, ranked_pos, ranked_neg = (consistency_loss(pos, neg, m_cons), positive_ranking_loss(pos, m_rank),
                                    negative_ranking_loss(neg, m_rank))
    for n in range(3):
        expected = _reference_losses(pos[n].numpy(), neg[n].numpy(), m_cons, m_rank)
        assert expected[3] == [10, 40, 40]
        np.testing.assert_allclose([cons[n].item(), ranked_pos[n].item(), ranked_neg[n].item()], expected[:3],
                                   rtol=1e-12, atol=1e-15)
    constant = torch.full((1, 5, 2), 0.3, dtype=torch.float64)  # every hinge equals its margin: the sums count terms
    assert consistency_loss(constant, constant, -1.0).item() == pytest.approx(10.0)
    assert positive_ranking_loss(constant, 1.0).item() == pytest.approx(40.0)
    assert negative_ranking_loss(constant, 1.0).item() == pytest.approx(40.0)


def test_a_well_ordered_image_costs_nothing() -> None:
    """Similarity to t_p falling and to t_n rising with the level by more than the margin, crops equal: zero loss."""
    pos = torch.linspace(0.5, 0.1, 5, dtype=torch.float64)[None, :, None].repeat(1, 1, 2)
    neg = torch.linspace(0.1, 0.5, 5, dtype=torch.float64)[None, :, None].repeat(1, 1, 2)
    assert consistency_loss(pos, neg, 2.5e-3).item() == 0.0
    assert positive_ranking_loss(pos, 6.75e-2).item() == 0.0 and negative_ranking_loss(neg, 6.75e-2).item() == 0.0
    assert positive_ranking_loss(pos.flip(1), 6.75e-2).item() > 0 and negative_ranking_loss(neg.flip(1), 6.75e-2).item() > 0


@pytest.mark.parametrize("pairs_in_loss", ["mean-similarity", "per-pair"])
def test_prompt_pairs_enter_the_loss_as_documented(pairs_in_loss: str) -> None:
    stage = QualiclipStage(pairs_in_loss=pairs_in_loss)
    cosines = torch.rand(2, 5, 2, 7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5
    expected = []
    for image in range(2):
        c = cosines[image].numpy()  # [level, crop, pair, pos/neg]
        if pairs_in_loss == "mean-similarity":
            terms = [_reference_losses(c[..., 0].mean(-1), c[..., 1].mean(-1), 2.5e-3, 6.75e-2)]
        else:
            terms = [_reference_losses(c[:, :, p, 0], c[:, :, p, 1], 2.5e-3, 6.75e-2) for p in range(7)]
        expected.append(np.mean([sum(t[:3]) for t in terms]))
    np.testing.assert_allclose(stage.image_losses(cosines).numpy(), expected, rtol=1e-12)


# --- crops and levels ----------------------------------------------------------------------------

@pytest.mark.parametrize(("height", "width", "crop", "max_shift"),
                         [(384, 256, 224, 0.5), (224, 300, 224, 0.5), (96, 128, 64, 0.9), (64, 64, 64, 0.5), (500, 90, 80, 0.0)])
def test_the_crops_of_a_pair_overlap_and_lie_inside_the_image(height: int, width: int, crop: int,
                                                             max_shift: float) -> None:
    generator = torch.Generator().manual_seed(2)
    overlaps = []
    for _ in range(300):
        first, second = overlapping_crops(height, width, crop, max_shift, generator)
        for box in (first, second):
            assert box.size == crop and 0 <= box.top <= height - crop and 0 <= box.left <= width - crop
        assert abs(first.top - second.top) <= max_shift * crop and abs(first.left - second.left) <= max_shift * crop
        overlaps.append(first.overlap_fraction(second))
    assert min(overlaps) >= (1 - max_shift) ** 2 - 1e-12 and min(overlaps) > 0
    if height - crop >= crop // 2 and width - crop >= crop // 2 and max_shift == 0.5:
        assert min(overlaps) < 0.4 and max(overlaps) > 0.9  # the whole allowed range is drawn


def test_each_level_is_the_banks_distortion_of_the_pristine_crops_in_rising_order() -> None:
    crops = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for kind in ("gaussian_blur", "white_noise", "mean_shift"):
        levels = degraded_levels(crops, "kadid24", kind, torch.Generator().manual_seed(4))
        generator = torch.Generator().manual_seed(4)
        for index, level in enumerate(LEVELS):
            assert torch.equal(levels[index], apply(crops, "kadid24", kind, level, generator))
    blurred = degraded_levels(crops, "kadid24", "gaussian_blur", torch.Generator())
    quality = [psnr(blurred[i], crops).mean().item() for i in range(5)]
    assert quality == sorted(quality, reverse=True)  # rising severity, each from the pristine crops
    twice = apply(blurred[2], "kadid24", "gaussian_blur", 4)
    assert (twice - blurred[3]).abs().max() > 0.01  # level 4 is not level 4 on top of level 3


def test_a_sample_is_one_distortion_of_one_crop_pair_at_every_level() -> None:
    stage = QualiclipStage(crop=64)
    image = torch.rand(3, 100, 140, generator=torch.Generator().manual_seed(5))
    sample = stage.sample(Example(image, "x"), torch.Generator().manual_seed(6))
    generator = torch.Generator().manual_seed(6)
    first, second = overlapping_crops(100, 140, 64, stage.max_shift, generator)
    kind = draw_distortion("kadid24", generator)
    pristine = torch.stack([cut(image, first), cut(image, second)])
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    assert sample.shape == (5, 2, 3, 64, 64)
    for index, level in enumerate(LEVELS):
        expected = (apply(pristine, "kadid24", kind, level, generator) - mean) / std
        torch.testing.assert_close(sample[index], expected, rtol=0, atol=1e-6)


def test_every_group_and_every_type_in_it_is_drawn() -> None:
    bank = get_bank("kadid24")
    assert len(bank.groups) == 7 and len(bank) == 24
    generator = torch.Generator().manual_seed(7)
    drawn = [draw_distortion("kadid24", generator) for _ in range(3000)]
    assert set(drawn) == set(bank.types)
    by_group = {g: sum(d in types for d in drawn) for g, types in bank.groups.items()}
    assert all(abs(count / 3000 - 1 / 7) < 0.03 for count in by_group.values())  # a group first, uniformly


# --- a run end to end ------------------------------------------------------------------------------

def test_the_stages_initial_model_is_the_extractors_random_initialisation(tiny_clip: str) -> None:
    """The demo experiment's 'before' arm: the qualiclip extractor at random_init, seed S, is the
    model a training run with seed S starts from (same tower, same prompt features)."""
    torch.manual_seed(3)
    model = QualiclipStage(**TINY).build_model()
    extractor = create_extractor("qualiclip", arch=TINY_CLIP_RN_ARCH, random_init=True, seed=3)
    clip = extractor.load_model("cpu")
    expected = clip.visual.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.tower.visual.state_dict().items())
    torch.testing.assert_close(model.prompts_features, extractor._prompt_features)


def test_train_qualiclip_on_a_folder_registers_an_encoder_its_extractor_reads(tiny_clip: str, tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 4, size=(80, 96))
    store = tmp_path / "store"
    result = CliRunner().invoke(cli, ["train", "qualiclip", "--images", str(tmp_path / "photos"), "--arch",
                                      TINY_CLIP_RN_ARCH, "--pretrained", "none", "--crop", "64", "--steps", "3",
                                      "--batch-size", "2", "--lr", "1e-3", "--device", "cpu", "--workers", "0", "-q",
                                      "--store", str(store)])
    assert result.exit_code == 0, result.output
    [record] = list_encoders(FeatureStore(store))
    assert record.config["reader"] == "qualiclip" and record.config["arch"] == TINY_CLIP_RN_ARCH
    assert record.config["base_weights"] == {"random_init": True, "seed": 0} and record.scope is None
    assert record.provenance["steps"] == 3 and len(record.provenance["loss_curve"]) == 3
    state = read_clip_state(record.weights_path)
    assert state.layout == "qualiclip-visual" and tuple(state.prompts_features.shape) == (14, 32)

    names = write_images(tmp_path / "data", 5, size=(64, 80), seed=2)
    pd.DataFrame({"path": names, "mos": np.arange(5.0)}).to_csv(tmp_path / "data" / "labels.csv", index=False)
    options = {"labels": "labels.csv", "dataset_name": "tiny"}
    common = {"root": tmp_path / "data", "dataset_options": options, "store": store, "device": "cpu", "workers": 0,
              "progress": False, "log": lambda line: None}
    trained = api.extract("qualiclip", "csv", weights=f"registry:{record.id}", **common)
    before = api.extract("qualiclip", "csv", random_init=True, settings={"arch": TINY_CLIP_RN_ARCH}, **common)
    opened = FeatureStore(store)
    scores, initial = opened.get(trained.feature_set).read()[:, 0], opened.get(before.feature_set).read()[:, 0]
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert not np.allclose(scores, initial)  # three steps at 1e-3 moved the tower


def test_refused_settings_say_what_is_wrong(tiny_clip: str, tmp_path: Path) -> None:
    for options, message in [(["--max-shift", "1"], "crops must overlap"),
                             (["--pairs-in-loss", "both"], "pairs_in_loss must be one of"),
                             (["--arch", "ViT-B-16"], "is not a CLIP ResNet"),
                             (["--prompt-set", "nope"], "unknown prompt set")]:
        result = CliRunner().invoke(cli, ["train", "qualiclip", "--images", str(tmp_path), "--store",
                                          str(tmp_path / "S"), *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)

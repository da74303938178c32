"""Re-IQA pretraining stages: crops, views, the MoCo loss, training, exact resume, the registry."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from iqa_store.cli import cli
from iqa_store.distortions import apply as distort
from iqa_store.distortions import get_bank
from iqa_store.train import STAGES, train
from iqa_store.train.crops import min_side, ola_pair
from iqa_store.train.moco import ContrastiveModel, Encoder
from iqa_store.train.reiqa import ContentStage, QualityStage, distort_window, half_swap
from iqa_store.train.trainer import learning_rate
from iqa_store.store import FeatureStore, get_encoder, list_encoders
from tests.conftest import write_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a configuration small enough for CPU tests: tiny ResNet, 32-pixel patches, short queue
TINY = {"backbone": "resnet-tiny", "patch": 32, "n_aug": 3, "queue_size": 256, "momentum": 0.99}
TINY_TRAINING = {"batch_size": 4, "lr": 0.1, "workers": 0}


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_images(folder, 8, size=(96, 128))
    return folder


# --- OLA crops ------------------------------------------------------------------------------

def _mask(box, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[box.top:box.top + box.size, box.left:box.left + box.size] = True
    return mask


def test_ola_pairs_stay_inside_the_image_with_overlap_within_bounds() -> None:
    generator = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(min_side(40), 200, size=2))
        first, second = ola_pair(height, width, 40, (0.1, 0.3), generator)
        a, b = _mask(first, height, width), _mask(second, height, width)
        assert a.sum() == b.sum() == 40 * 40  # fully inside: nothing was cut off by the borders
        fractions.append((a & b).sum() / (40 * 40))  # overlap counted pixel by pixel
    assert 0.1 <= min(fractions) and max(fractions) <= 0.3
    assert max(fractions) - min(fractions) > 0.15  # the whole range is used, not one value


def test_ola_pair_refuses_impossible_requests() -> None:
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="smaller than"):
        ola_pair(30, 100, 40, (0.1, 0.3), generator)
    with pytest.raises(ValueError, match="bounds"):
        ola_pair(100, 100, 40, (0.5, 0.2), generator)


# --- views ----------------------------------------------------------------------------------

def _coordinate_image(height: int, width: int) -> torch.Tensor:
    """Pixel values encode their own position, so a crop tells where it was taken."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xx / (width - 1), yy / (height - 1), torch.full_like(xx, 0.5, dtype=torch.float32)]).float()


def test_quality_views_shapes_determinism_and_pristine_overlap() -> None:
    stage = QualityStage(**{**TINY, "n_aug": 5})
    image = _coordinate_image(240, 300)
    q1, k1 = stage.views(image, torch.Generator().manual_seed(7))
    q2, k2 = stage.views(image, torch.Generator().manual_seed(7))
    assert q1.shape == k1.shape == (stage.pairs_per_image(), 3, 32, 32) == (12, 3, 32, 32)
    assert torch.equal(q1, q2) and torch.equal(k1, k2)
    q3, _ = stage.views(image, torch.Generator().manual_seed(8))
    assert not torch.equal(q1, q3)
    # row 0 of the full-scale chunk is the pristine pair: the two crops' top-left corners give
    # their positions; the overlap of two 32-pixel squares there must be within 10-30 %
    corners = [(round(float(v[1, 0, 0]) * 239), round(float(v[0, 0, 0]) * 299)) for v in (q1[0], k1[0])]
    dy, dx = abs(corners[0][0] - corners[1][0]), abs(corners[0][1] - corners[1][1])
    overlap = max(0, 32 - dy) * max(0, 32 - dx) / 32 ** 2
    assert 0.1 - 0.02 <= overlap <= 0.3 + 0.02  # +-1 pixel from decoding the coordinates


def test_half_scale_chunk_is_the_distorted_image_downscaled() -> None:
    """As the released code makes it: distort the whole image, downscale it (antialiased bicubic,
    as extraction's half scale), then crop; our chunk distorts only a region and must give the
    same crops."""
    stage = QualityStage(**{**TINY, "n_aug": 2})
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 208, 272, generator=torch.Generator().manual_seed(0)),
                                            5, stride=1, padding=2)[0]
    draws = [("gaussian_blur", 5), ("mean_shift", 5)]  # deterministic types: no noise to redraw
    generator = torch.Generator().manual_seed(3)
    replay = torch.Generator()
    replay.set_state(generator.get_state())
    queries, keys = stage._chunk_pairs(smooth, 2, draws, generator)
    boxes = ola_pair(104, 136, 32, (0.1, 0.3), replay)
    for row, version in enumerate([smooth] + [distort(smooth, "reiqa", kind, level) for kind, level in draws]):
        half = torch.nn.functional.interpolate(version[None], size=[104, 136], mode="bicubic", antialias=True,
                                               align_corners=False)[0].clamp(0, 1)
        expected = [half[:, box.top:box.top + 32, box.left:box.left + 32] for box in boxes]
        got = sorted([queries[row], keys[row]], key=lambda crop: not torch.allclose(crop, expected[0], atol=1e-5))
        assert torch.allclose(got[0], expected[0], atol=1e-5) and torch.allclose(got[1], expected[1], atol=1e-5)


def test_whole_image_budgets_are_spent_on_the_whole_image_not_the_window() -> None:
    """color_block pastes ten 32 px squares per image at level 5: a 64 px window of a 512 px image
    is covered about as often as any other part (1 - (1 - 32**2 / 481**2) ** 10 = 4 %), not by
    all ten squares, which is what distorting the cut-out would do."""
    image = torch.full((3, 512, 512), 0.5)
    window = (slice(None), slice(224, 288), slice(224, 288))
    covered, covered_if_cut = [], []
    for seed in range(20):
        out = distort_window(image, window, "reiqa", "color_block", 5, torch.Generator().manual_seed(seed))
        assert torch.equal(out, distort(image, "reiqa", "color_block", 5, torch.Generator().manual_seed(seed))[window])
        covered.append(float((out != 0.5).any(0).float().mean()))
        cut = distort(image[window], "reiqa", "color_block", 5, torch.Generator().manual_seed(seed))
        covered_if_cut.append(float((cut != 0.5).any(0).float().mean()))
    expected = 1 - (1 - 32 ** 2 / 481 ** 2) ** 10
    assert abs(np.mean(covered) - expected) < 0.05 and np.mean(covered_if_cut) > 0.5
    # a type without a whole-image budget is applied to the window alone
    blurred = distort_window(image, window, "reiqa", "gaussian_blur", 3, torch.Generator().manual_seed(0))
    assert torch.equal(blurred, distort(image[window], "reiqa", "gaussian_blur", 3, torch.Generator().manual_seed(0)))
    assert {e.type for bank in ("reiqa", "kadid24") for e in get_bank(bank).entries if e.per_image} == {
        "color_block", "non_eccentricity", "jpeg2000"}


def test_half_swap_exchanges_exactly_half_of_the_pairs() -> None:
    first, second = torch.arange(12.0).reshape(12, 1), -torch.arange(12.0).reshape(12, 1)
    a, b = half_swap(first.clone(), second.clone(), torch.Generator().manual_seed(3))
    swapped = (a != first).any(dim=1)
    assert int(swapped.sum()) == 6
    assert torch.equal(a[swapped], second[swapped]) and torch.equal(b[swapped], first[swapped])
    assert torch.equal(a[~swapped], first[~swapped]) and torch.equal(b[~swapped], second[~swapped])


def test_content_views_are_normalised_crops_of_the_requested_size() -> None:
    stage = ContentStage(backbone="resnet-tiny", crop=48)
    q, k = stage.views(torch.rand(3, 90, 120), torch.Generator().manual_seed(0))
    assert q.shape == k.shape == (1, 3, 48, 48)
    assert not torch.equal(q, k)  # two independent augmentations
    assert float(q.min()) < 0  # ImageNet normalisation moved values below zero


# --- MoCo -----------------------------------------------------------------------------------

def _model(batch_negatives: bool, queue: int = 16) -> ContrastiveModel:
    torch.manual_seed(0)
    return ContrastiveModel("resnet-tiny", 32, 8, queue, 0.9, 0.2, batch_negatives)


@pytest.mark.parametrize(("batch_negatives", "queue"), [(False, 16), (True, 16), (True, 0)])
def test_infonce_loss_matches_a_direct_computation(batch_negatives: bool, queue: int) -> None:
    model = _model(batch_negatives, queue).train()
    queue_before = model.queue.clone()
    images_q, images_k = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    key_state = {k: v.clone() for k, v in model.key.state_dict().items()}
    loss = model.loss(model.query, images_q, images_k, torch.Generator())

    # independent: recompute q and k, then the InfoNCE of eq. 3 in float64 numpy
    reference_key = Encoder("resnet-tiny", 32, 8).train()
    reference_key.load_state_dict(key_state)
    with torch.no_grad():
        for p_key, p_query in zip(reference_key.parameters(), model.query.parameters()):
            p_key.mul_(0.9).add_(0.1 * p_query)  # theta_k <- m theta_k + (1 - m) theta_q
        q = model.query(images_q).double().numpy()
        k = reference_key(images_k).double().numpy()
    negatives = queue_before.double().numpy()
    expected = []
    for i in range(4):
        logits = [q[i] @ k[i]] + ([q[i] @ k[j] for j in range(4) if j != i] if batch_negatives else [])
        logits = np.array(logits + list(negatives @ q[i])) / 0.2
        expected.append(-(logits[0] - np.log(np.exp(logits).sum())))
    assert float(loss.detach()) == pytest.approx(np.mean(expected), rel=1e-5)
    if queue:
        assert torch.allclose(model.queue[:4].double(), torch.from_numpy(k), atol=1e-5)  # keys were enqueued
    assert int(model.queue_ptr) == min(queue, 4)


@pytest.mark.parametrize(("batch_negatives", "queue"), [(False, 0), (True, -1)])
def test_a_queue_that_leaves_no_negatives_is_refused(batch_negatives: bool, queue: int) -> None:
    with pytest.raises(ValueError, match="queue_size must be positive"):
        _model(batch_negatives, queue)


def test_queue_is_a_ring_buffer() -> None:
    model = _model(False, queue=6)
    batches = [torch.nn.functional.normalize(torch.randn(4, 8), dim=1) for _ in range(3)]
    for keys in batches:
        model.enqueue(keys)
    expected = torch.cat(batches)  # 12 keys through a ring of 6: the last six remain, in ring order
    ring = torch.empty(6, 8)
    for position, key in enumerate(expected):
        ring[position % 6] = key
    assert torch.equal(model.queue, ring) and int(model.queue_ptr) == 12 % 6


def test_cosine_learning_rate_schedule() -> None:
    assert learning_rate(0, 100, 0.6) == pytest.approx(0.6)
    assert learning_rate(50, 100, 0.6) == pytest.approx(0.3)
    assert learning_rate(100, 100, 0.6) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(25, 100, 0.6) == pytest.approx(0.6 * (1 + math.cos(math.pi / 4)) / 2)
    assert learning_rate(4, 110, 1.0, warmup=10) == pytest.approx(0.5)  # warm-up: linear to the peak


# --- training -------------------------------------------------------------------------------

def test_quality_training_lowers_the_loss_and_registers_the_encoder(photos: Path, tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    [report] = train("reiqa-quality", images=photos, store=store, hyperparameters=TINY, steps=30, progress=False,
                      log=lambda line: None, **TINY_TRAINING)
    losses = report.losses
    # the queue (256) is full of real keys from step 4 on (4 images x 8 pairs x 2 scales = 64 a step);
    # before that the loss rises as random negatives are replaced by harder real ones
    assert np.mean(losses[-8:]) < np.mean(losses[4:12]) - 0.1
    record = report.encoder
    assert record.config["backbone"] == "resnet-tiny" and record.config["input_normalization"] == "none"
    assert record.provenance["steps"] == 30 and len(record.provenance["loss_curve"]) == 30
    assert record.provenance["data"]["images"] == 8 and record.provenance["seed"] == 0
    # round trip: the registry's weights are the trained query encoder, loadable into a fresh one
    loaded = get_encoder(store, record.id)
    encoder = Encoder("resnet-tiny", None, 128)
    encoder.load_state_dict(loaded.load_state_dict())
    assert set(loaded.load_state_dict()) == set(encoder.state_dict())
    # the same command again trains nothing
    [again] = train("reiqa-quality", images=photos, store=store, hyperparameters=TINY, steps=30, progress=False,
                     log=lambda line: None, **TINY_TRAINING)
    assert again.status == "cached" and again.encoder.id == record.id
    assert len(list_encoders(store)) == 1


def test_content_training_runs_and_records_imagenet_normalisation(photos: Path, tmp_path: Path) -> None:
    [report] = train("reiqa-content", images=photos, store=tmp_path / "store", steps=3, progress=False,
                      hyperparameters={"backbone": "resnet-tiny", "crop": 48, "queue_size": 64}, log=lambda line: None,
                      **TINY_TRAINING)
    assert report.status == "trained" and len(report.losses) == 3 and all(np.isfinite(report.losses))
    assert report.encoder.config["input_normalization"] == "imagenet"


def test_unreadable_training_images_are_named_and_skipped(photos: Path, tmp_path: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "empty.png").write_bytes(b"")
    lines: list[str] = []
    [report] = train("reiqa-quality", images=photos, store=tmp_path / "store", hyperparameters=TINY, steps=1,
                      progress=False, log=lines.append, **TINY_TRAINING)
    assert report.encoder.provenance["data"]["images"] == 8
    assert any("broken.jpg" in line for line in lines) and any("empty.png: empty file" in line for line in lines)


def test_a_checkpoint_of_another_run_is_refused(photos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"format": 1, "run": "someone-else", "step": 3}, folder / "checkpoint.pt")
    with pytest.raises(ValueError, match="another run"):
        train("reiqa-quality", images=photos, store=tmp_path / "store", hyperparameters=TINY, steps=2,
                 checkpoint_dir=folder, progress=False, log=lambda line: None, **TINY_TRAINING)
    torch.save({"format": 1, "run": "x", "payload": Path("pickled")}, folder / "checkpoint.pt")  # needs unpickling
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        train("reiqa-quality", images=photos, store=tmp_path / "store", hyperparameters=TINY, steps=2,
                 checkpoint_dir=folder, progress=False, log=lambda line: None, **TINY_TRAINING)


def _cli_args(photos: Path, store: Path, steps: int, workers: int) -> list[str]:
    return ["pretrain", "reiqa-quality", "--images", str(photos), "--store", str(store), "--backbone", "resnet-tiny",
            "--patch", "32", "--n-aug", "3", "--queue-size", "256", "--momentum", "0.99", "--steps", str(steps),
            "--batch-size", "4", "--lr", "0.1", "--workers", str(workers), "--checkpoint-every", "2", "--quiet",
            "--device", "cpu"]


@pytest.mark.slow  # the slow suite
def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(photos: Path, tmp_path: Path) -> None:
    steps = 14
    [whole] = train("reiqa-quality", images=photos, store=tmp_path / "whole", hyperparameters=TINY, steps=steps,
                     progress=False, log=lambda line: None, **TINY_TRAINING)

    store = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from iqa_store.cli import main; main()", *_cli_args(photos, store, steps, 2)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = next(iter((store / "pretrain").glob("*/checkpoint.pt")), None) if (store / "pretrain").exists() else None
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        checkpoints = list((store / "pretrain").glob("*/checkpoint.pt")) if (store / "pretrain").exists() else []
        if checkpoints and torch.load(checkpoints[0], weights_only=True)["step"] >= 4:
            checkpoint = checkpoints[0]
            break
        time.sleep(0.05)
    process.kill()  # SIGKILL: no chance to write anything more
    process.wait()
    assert checkpoint is not None, process.stderr.read().decode()
    stopped_at = torch.load(checkpoint, weights_only=True)["step"]
    assert 4 <= stopped_at < steps

    result = CliRunner().invoke(cli, [*_cli_args(photos, store, steps, 2), "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"resuming from step {stopped_at}" in result.output
    resumed = list_encoders(FeatureStore(store))
    assert len(resumed) == 1 and resumed[0].provenance["resumed_from_step"] == stopped_at
    expected = whole.encoder.load_state_dict()
    actual = resumed[0].load_state_dict()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)  # bit for bit
    assert resumed[0].provenance["loss_curve"] == whole.encoder.provenance["loss_curve"]
    assert not checkpoint.exists()  # removed once the encoder is registered


def test_cli_lists_stages_and_ls_shows_the_encoder(photos: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    listing = runner.invoke(cli, ["pretrain", "--help"])
    assert all(name in listing.output for name in STAGES.names())
    result = runner.invoke(cli, [*_cli_args(photos, tmp_path / "store", 2, 0), "--plot", str(tmp_path / "loss.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "loss.png").size == (700, 400)
    shown = runner.invoke(cli, ["ls", "--store", str(tmp_path / "store")])
    assert "reiqa-quality/" in shown.output
    bad = runner.invoke(cli, ["pretrain", "reiqa-quality", "--images", str(photos), "--backbone", "resnet-9000",
                              "--store", str(tmp_path / "store")])
    assert bad.exit_code == 2 and "resnet-9000" in bad.output


@pytest.mark.slow  # the slow suite
def test_torchrun_ddp_on_cpu_registers_one_encoder(photos: Path, tmp_path: Path) -> None:
    """Two processes (gloo): shuffle BN, gathered keys; rank 0 writes, both report the same encoder."""
    store = tmp_path / "store"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--no-python", str(Path(sys.executable).parent / "iqa-store"), *_cli_args(photos, store, 3, 0),
               "--format", "json"]
    run = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    records = list_encoders(FeatureStore(store))
    assert len(records) == 1 and records[0].provenance["world_size"] == 2
    assert run.stdout.count(records[0].id) == 2  # each rank reports the one registered encoder


def test_pretrained_encoder_extracts_and_fits_end_to_end(tmp_path: Path, image_dataset: Path) -> None:
    """pretrain -> registry -> extract --encoder -> fit, all through the CLI."""
    runner = CliRunner()
    store = tmp_path / "store"
    trained = runner.invoke(cli, [*_cli_args(image_dataset, store, 2, 0), "--format", "json"])
    assert trained.exit_code == 0, trained.output
    encoder_id = list_encoders(FeatureStore(store))[0].id
    extracted = runner.invoke(cli, ["extract", "--model", "reiqa-quality", "--encoder", encoder_id, "--dataset", "csv",
                                    "--root", str(image_dataset), "-o", "labels=labels.csv", "--store", str(store),
                                    "--device", "cpu", "--workers", "0", "--quiet", "--strict"])
    assert extracted.exit_code == 0, extracted.output
    feature_set = FeatureStore(store).feature_sets(extractor="reiqa-quality")[0]
    features = feature_set.read()
    assert features.shape == (24, 2 * 512) and np.isfinite(features).all()
    # the stored vector is the registered backbone at full and half scale ([0, 1] input, no normalisation)
    backbone = Encoder("resnet-tiny", None, 128).backbone.eval()
    weights = get_encoder(FeatureStore(store), encoder_id).load_state_dict()
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")})
    first = Image.open(image_dataset / "img000.jpg").convert("RGB")
    halves = [first, first.resize((first.width // 2, first.height // 2), Image.BICUBIC)]
    with torch.no_grad():
        direct = torch.cat([backbone(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None])
                            for im in halves], dim=1)[0].numpy()
    np.testing.assert_allclose(features[feature_set.ids.index("img000.jpg")], direct, rtol=1e-4, atol=1e-5)
    fitted = runner.invoke(cli, ["fit", "--features", "reiqa-quality", "--regressor", "ridge", "--splits", "2",
                                 "--store", str(store), "--format", "json"])
    assert fitted.exit_code == 0, fitted.output


def test_random_init_extraction_starts_where_training_starts() -> None:
    """The benchmark's baseline (``--random-init --seed S``) is the pretraining's own initial backbone."""
    from iqa_store.nets.resnet import build_backbone
    torch.manual_seed(3)
    training_start = ContrastiveModel("resnet-tiny", None, 128, 16, 0.99, 0.2, True).query.backbone.state_dict()
    torch.manual_seed(3)
    baseline = build_backbone("resnet-tiny").state_dict()
    assert all(torch.equal(training_start[key], baseline[key]) for key in baseline)


# sha256 of the registered weights for these commands (CPU, one torch thread). First recorded on
# main before the training layer became stage-generic (commit 1d5acc2; the refactor changed no
# bit there). The bits depend on the numerical libraries, and a fresh install takes the newest
# the registry has, so each record names its versions; where none matches, the pinned check is
# skipped and the same-run checks below (the alias, a second run) still hold.
RECORDED_WEIGHTS_SHA256 = {
    ("2.14.1+cu130", "2.4.6", "13.0.0"): {
        "reiqa-quality": "cfc44fbf21ded7a83021fb1758aef9ac0a0a00394ca5cdc17eb17fd876db58f4",
        "reiqa-content": "eb07cdf44f0823db1b0fdb8b3dabf834257b646bc87022861245d1f5c8850c19",
    },
}
_STAGE_ARGS = {"reiqa-quality": ["--patch", "32", "--n-aug", "3", "--queue-size", "256", "--momentum", "0.99"],
               "reiqa-content": ["--crop", "48", "--queue-size", "64"]}


def _numerical_versions() -> tuple[str, str, str]:
    import PIL
    return torch.__version__, np.__version__, PIL.__version__


def _registered_sha256(photos: Path, store: Path, command: str, stage: str) -> str:
    args = [command, stage, "--images", str(photos), "--store", str(store), "--backbone", "resnet-tiny",
            *_STAGE_ARGS[stage], "--steps", "6", "--batch-size", "4", "--lr", "0.1", "--workers", "0", "--quiet",
            "--device", "cpu"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [record] = list_encoders(FeatureStore(store))
    assert record.config["reader"] == stage and record.scope is None
    return record.weights_sha256


@pytest.mark.parametrize("stage", ["reiqa-quality", "reiqa-content"])
def test_the_same_command_registers_the_recorded_weights(photos: Path, tmp_path: Path, stage: str) -> None:
    recorded = RECORDED_WEIGHTS_SHA256.get(_numerical_versions())
    if recorded is None:
        pytest.skip(f"no weights recorded for torch/numpy/Pillow {_numerical_versions()} "
                    f"(recorded: {sorted(RECORDED_WEIGHTS_SHA256)})")
    assert _registered_sha256(photos, tmp_path / "store", "train", stage) == recorded[stage]


def test_the_pretrain_alias_and_a_second_run_register_the_same_bits(photos: Path, tmp_path: Path) -> None:
    first = _registered_sha256(photos, tmp_path / "a", "train", "reiqa-quality")
    assert _registered_sha256(photos, tmp_path / "b", "pretrain", "reiqa-quality") == first
    assert _registered_sha256(photos, tmp_path / "c", "train", "reiqa-quality") == first


def test_a_stages_warm_up_epochs_become_steps_unless_given(photos: Path, tmp_path: Path) -> None:
    """``TrainingDefaults.warmup_epochs`` (SLIQUE 2, MP-IQE 5) is counted in steps of the run's data."""
    import dataclasses
    from typing import ClassVar

    from iqa_store.train.data import TrainingData
    from iqa_store.train.stage import TrainingDefaults
    from iqa_store.train.trainer import TrainConfig
    from iqa_store.train.trainer import train as run_stage

    @dataclasses.dataclass
    class WarmContent(ContentStage):
        defaults: ClassVar[TrainingDefaults] = dataclasses.replace(ContentStage.defaults, warmup_epochs=1.5)

    data = TrainingData.from_folder(photos)  # 8 images: 4 steps an epoch at batch 2
    for given, expected in ((None, 6), (1, 1)):
        report = run_stage(WarmContent(crop=48, queue_size=64), data,
                           TrainConfig(steps=2, batch_size=2, lr=0.1, warmup_steps=given),
                           FeatureStore(tmp_path / f"store{given}"), progress=False, log=lambda line: None)
        assert report.encoder.provenance["training"]["warmup_steps"] == expected
    assert ContentStage.defaults.warmup_epochs == 0  # stages without a warm-up in their paper keep none

"""Bad-input trial: checkpoints that carry a pickle payload, offered to every loader through the CLI.

The payload (tests/conftest.py's ``PicklePayload``) creates a marker folder when unpickled. Each
loader must refuse the file in one error line (exit code 2) and the marker must never appear:

* ``--weights FILE`` of every registered extractor (the registry is walked, so a new one is
  covered), and of the ``openclip:`` family; tiny architectures keep it fast;
* ``--weights registry:ID`` and ``--encoder ID``: encoders really trained here (Re-IQA content and
  quality, CNNIQA), whose ``model.safetensors`` is then replaced by a pickle;
* training resume of every stage: a run stopped by SIGINT after its first checkpoint (the
  trainer's own path for pre-emption), its checkpoint replaced by a pickle, then the same command again.

``tests/test_extractor_conformance.py`` already refuses a pickled ``--weights`` file per
extractor class through the library; this module goes through the command line for every
registered name, and covers the loaders it does not: registry encoders and training resume.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from iqa_store.cli import cli
from iqa_store.extractors import EXTRACTORS, create_extractor
from iqa_store.store import FeatureStore, list_encoders
from iqa_store.train import STAGES

pytestmark = pytest.mark.reliability

RERUN = ".venv/bin/python -m pytest -m reliability tests/reliability/test_pickle_payloads.py"
TINY = {"vit": "TinyViT-test", "rn": "TinyRN-test"}  # tests/conftest.py's open_clip configs
HF_CONFIGS = {"align": "AlignConfig", "altclip": "AltCLIPConfig"}  # a config.json must sit beside their weights
# the extractors that stop before reading a --weights file here, and why (the payload cannot run either way)
LOADER_NOT_REACHED = {"clipiqa-plus": "needs the published CLIP RN50 weights first, absent offline"}
# the stages whose resume this trial covers, with the smallest training that runs offline on CPU
TRAINING = {
    "reiqa-quality": ["--images", "{photos}", "--backbone", "resnet-tiny", "--patch", "32", "--n-aug", "2",
                      "--queue-size", "64", "--batch-size", "2"],
    "reiqa-content": ["--images", "{photos}", "--backbone", "resnet-tiny", "--crop", "32", "--queue-size", "64",
                      "--batch-size", "2"],
    "cnniqa": ["-d", "csv", "--root", "{photos}", "-o", "labels=labels.csv", "-p", "random-80-20", "--splits", "2",
               "--split", "0", "--fc-width", "16", "--patches-per-image", "4", "--batch-size", "2"],
    "qualiclip": ["--images", "{photos}", "--arch", TINY["rn"], "--weights", "{clip}", "--crop", "32",
                  "--batch-size", "2"],
    "clipiqa-plus": ["-d", "csv", "--root", "{photos}", "-o", "labels=labels.csv", "-p", "random-80-20",
                     "--splits", "2", "--split", "0", "--arch", TINY["rn"], "--weights", "{clip}", "--batch-size", "2"],
    "slique": ["--images", "{photos}", "--backbone", "resnet-tiny", "--width", "8", "--embed-dim", "16", "--head-dim",
               "16", "--text-width", "32", "--text-layers", "1", "--text-heads", "2", "--context-length", "16",
               "--crop", "32", "--no-content-texts", "--batch-size", "2"],
    "mpiqe": ["-d", "csv", "--root", "{photos}", "-o", "labels=labels.csv", "-p", "random-80-20", "--splits", "2",
              "--split", "0", "--arch", TINY["vit"], "--pretrained", "none", "--window", "2", "--heads", "2",
              "--decoder-layers", "1", "--crops", "2", "--batch-size", "2"],
    "metaiqa-prior": ["--roots", "kadid10k={prior}/kadid10k,tid2013={prior}/tid2013", "--backbone", "resnet-tiny",
                      "--init", "random", "--resize", "40", "--crop", "32", "--tasks-per-step", "2",
                      "--support-fraction", "0.5", "--batch-size", "8"],
    "metaiqa": ["-d", "csv", "--root", "{photos}", "-o", "labels=labels.csv", "-p", "random-80-20", "--splits", "2",
                "--split", "0", "--backbone", "resnet-tiny", "--init", "random", "--resize", "40", "--crop", "32",
                "--batch-size", "2"],
}


def _test_module(name: str):
    """A module of tests/ (``import conftest`` here finds tests/reliability/conftest.py)."""
    spec = importlib.util.spec_from_file_location(f"tests_{name}", Path(__file__).parents[1] / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PicklePayload = _test_module("conftest").PicklePayload


def pickled_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"weight": torch.zeros(2, 2)}, "payload": PicklePayload(marker)}, path)
    return path


def refusal(result, marker: Path) -> list[str]:
    """What is wrong with a CLI run given a pickled checkpoint (empty: refused in one line, never unpickled)."""
    problems = []
    if marker.exists():
        problems.append("the payload ran: the checkpoint was unpickled")
    if result.exit_code != 2:
        problems.append(f"exit code {result.exit_code}, not 2")
    if "Traceback" in result.output or (result.exception and not isinstance(result.exception, SystemExit)):
        problems.append(f"a traceback: {result.exception!r}")
    lines = result.stderr.strip().splitlines()  # progress lines may come first (train names its splits)
    if not lines or not lines[-1].startswith("error: ") or sum(line.startswith("error") for line in lines) != 1:
        problems.append(f"not one error line: {result.stderr!r}")
    return problems


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight small photographs with a csv label file."""
    root = tmp_path_factory.mktemp("photos")
    yy, xx = np.mgrid[0:48, 0:64] / 64
    for k in range(8):
        pixels = np.stack([np.sin((5 + c) * xx + 3 * yy * c + k) for c in range(3)], axis=-1)
        noise = np.random.default_rng(k).normal(0, 0.05, pixels.shape)
        Image.fromarray(np.clip(127 + 100 * (pixels + noise), 0, 255).astype(np.uint8)).save(root / f"p{k}.jpg")
    pd.DataFrame({"path": [f"p{k}.jpg" for k in range(8)], "mos": np.linspace(1, 5, 8)}).to_csv(
        root / "labels.csv", index=False)
    _test_module("test_metaiqa").write_prior_datasets(prior_folder(root))  # KADID and TID trees for the prior
    return root


def prior_folder(photos: Path) -> Path:
    return photos.parent / f"{photos.name}-prior"


def extract_args(model: str, photos: Path, store: Path) -> list[str]:
    return ["extract", "-m", model, "-d", "csv", "--root", str(photos), "-o", "labels=labels.csv", "--store",
            str(store), "--device", "cpu", "--workers", "0", "-q"]


def weights_file(model: str, folder: Path, marker: Path) -> tuple[Path, list[str]]:
    """A pickled checkpoint where ``model`` looks for its weights, and the settings that keep it small."""
    if model in HF_CONFIGS:  # a save_pretrained folder: the weights are read before the model is built
        import transformers
        getattr(transformers, HF_CONFIGS[model])().save_pretrained(folder)
        return pickled_checkpoint(folder / "pytorch_model.bin", marker), []
    settings = []
    extractor = create_extractor(model)
    arch = getattr(extractor, "arch", None) if "arch" in {f.name for f in dataclasses.fields(extractor)} else None
    if isinstance(arch, str):  # the open_clip families: a tiny architecture of the same kind
        settings = ["-s", f"arch={TINY['rn'] if arch.upper().startswith('RN') else TINY['vit']}"]
    return pickled_checkpoint(folder / "weights.pt", marker), settings


EXTRACTOR_NAMES = EXTRACTORS.names() + [f"{prefix}:{TINY['vit']}:none" for prefix in EXTRACTORS.prefixes()]


@pytest.mark.parametrize("model", EXTRACTOR_NAMES)
def test_weights_file_with_a_payload_is_refused(model: str, photos: Path, tmp_path: Path, tiny_clip: str,
                                                ledger) -> None:
    marker = tmp_path / "payload-ran"
    path, settings = weights_file(model, tmp_path / "weights", marker)
    result = CliRunner().invoke(cli, [*extract_args(model, photos, tmp_path / "store"), *settings,
                                      "--weights", str(path)])
    problems = refusal(result, marker)
    takes_no_weights = "does not take option(s) ['weights']" in result.stderr
    refused_by_loader = "refusing to load" in result.stderr and "weights_only=True" in result.stderr
    if not (takes_no_weights or refused_by_loader or model in LOADER_NOT_REACHED):
        problems.append(f"not refused by its loader: {result.stderr.strip()}")
    ledger.record("pickled checkpoints: --weights of every extractor", RERUN, survived=not problems)
    assert not problems, problems


# --- registry encoders ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_file(tiny_clip_env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny CLIP ResNet as a local checkpoint: the base model of the CLIP-IQA+ and QualiCLIP stages."""
    from safetensors.torch import save_file

    from iqa_store.nets.openclip import open_clip_module
    torch.manual_seed(0)
    model = open_clip_module().create_model(TINY["rn"], pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "tiny-rn.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def train_command(stage: str, photos: Path, store: Path, clip: Path, *extra: str) -> list[str]:
    args = [a.format(photos=photos, clip=clip, prior=prior_folder(photos)) for a in TRAINING[stage]]
    return ["train", stage, *args, "--store", str(store), "--device", "cpu", "--workers", "0", "-q", *extra]


@pytest.fixture(scope="module")
def registry(photos: Path, tiny_clip_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose registry holds an encoder of every stage this trial trains (two steps each)."""
    store = tmp_path_factory.mktemp("registry-store")
    for stage in TRAINING:
        result = CliRunner().invoke(cli, train_command(stage, photos, store, tiny_clip_file, "--steps", "2"))
        assert result.exit_code == 0, (stage, result.output)
    return store


def reader_of(record) -> str:
    return record.config.get("reader", record.config.get("stage"))


@pytest.mark.parametrize("alias", [False, True], ids=["weights-registry", "encoder"])
def test_tampered_registry_encoder_is_refused(alias: bool, registry: Path, photos: Path, tmp_path: Path,
                                              ledger) -> None:
    records = list_encoders(FeatureStore(registry))
    assert {r.name for r in records} >= set(TRAINING)
    problems = []
    for record in records:
        marker = tmp_path / f"payload-ran-{record.name}"
        original = record.weights_path.read_bytes()
        pickled_checkpoint(record.weights_path, marker)  # the safetensors file replaced by a torch pickle
        try:
            choice = ["--encoder", record.id] if alias else ["--weights", f"registry:{record.id}"]
            result = CliRunner().invoke(cli, [*extract_args(reader_of(record), photos, registry), *choice])
        finally:
            record.weights_path.write_bytes(original)
        found = [f"{record.id}: {p}" for p in refusal(result, marker)]
        ledger.record("pickled checkpoints: registry encoders", RERUN, survived=not found)
        problems += found
    assert not problems, problems


# --- training resume -----------------------------------------------------------------------------------


def test_every_stage_is_covered() -> None:
    assert set(STAGES.names()) == set(TRAINING)


def stopped_after_first_checkpoint(command: list[str], store: Path) -> Path:
    """Run the training ``command`` here; once its first checkpoint exists, SIGINT this process: the
    trainer's pre-emption path (finish the step, checkpoint, exit 130). The checkpoint it leaves.

    In this process, not a new one: torch is imported once for every stage of the trial."""
    done = threading.Event()

    def interrupt_at_first_checkpoint() -> None:
        while not done.is_set():
            if list(store.glob("pretrain/*/checkpoint.pt")):  # steps are 100,000: training goes on after it
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=interrupt_at_first_checkpoint, daemon=True)
    watcher.start()
    try:
        result = CliRunner().invoke(cli, command)
    finally:
        done.set()
        watcher.join()
    assert result.exit_code == 130, result.output
    (checkpoint,) = store.glob("pretrain/*/checkpoint.pt")
    return checkpoint


def resume_command(stage: str, photos: Path, store: Path, clip: Path) -> list[str]:
    return train_command(stage, photos, store, clip, "--steps", "100000", "--checkpoint-every", "1")


@pytest.mark.parametrize("stage", list(TRAINING))
def test_resume_from_a_tampered_checkpoint_is_refused(stage: str, photos: Path, tiny_clip_file: Path,
                                                      tmp_path: Path, ledger) -> None:
    command = resume_command(stage, photos, tmp_path / "store", tiny_clip_file)
    checkpoint = stopped_after_first_checkpoint(command, tmp_path / "store")
    marker = tmp_path / "payload-ran"
    pickled_checkpoint(checkpoint, marker)
    result = CliRunner().invoke(cli, command)
    problems = refusal(result, marker)
    if str(checkpoint) not in result.stderr:
        problems.append(f"the error does not name {checkpoint}")
    ledger.record("pickled checkpoints: training resume", RERUN, survived=not problems)
    assert not problems, problems

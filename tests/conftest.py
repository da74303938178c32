"""Shared fixtures: a tiny real open_clip architecture and small image trees on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from PIL import Image

# A real open_clip ViT, only much smaller than ViT-B/16, so CPU tests take seconds.
TINY_CLIP_ARCH = "TinyViT-test"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}

# A real open_clip ModifiedResNet (CLIP's ResNet with attention pooling), equally small.
TINY_CLIP_RN_ARCH = "TinyRN-test"
TINY_CLIP_RN_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
    "text_cfg": TINY_CLIP_CONFIG["text_cfg"],
}


@pytest.fixture(scope="session")
def tiny_clip_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("openclip_configs")
    (folder / f"{TINY_CLIP_ARCH}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    (folder / f"{TINY_CLIP_RN_ARCH}.json").write_text(json.dumps(TINY_CLIP_RN_CONFIG))
    return folder


@pytest.fixture()
def tiny_clip(tiny_clip_configs: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Makes ``openclip:TinyViT-test:none`` resolvable in this process (and its subprocesses)."""
    monkeypatch.setenv("IQA_OPENCLIP_MODEL_CONFIGS", str(tiny_clip_configs))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return f"openclip:{TINY_CLIP_ARCH}:none"


@pytest.fixture(scope="module")
def tiny_clip_env(tiny_clip_configs: Path):
    """``tiny_clip``'s environment for a whole module (module-scoped datasets and references)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IQA_OPENCLIP_MODEL_CONFIGS", str(tiny_clip_configs))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


def offline_cli(args: list[str], hf_home: Path, **env: str | None) -> subprocess.CompletedProcess:
    """``iqa-store ARGS`` in a real subprocess, offline, with ``hf_home`` as its Hugging Face cache;
    ``env`` adds variables (None removes one)."""
    merged = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), **env}
    return subprocess.run([str(Path(sys.executable).parent / "iqa-store"), *args], capture_output=True, text=True,
                          env={k: v for k, v in merged.items() if v is not None}, timeout=240)


def the_error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line of a subprocess CLI run that failed on bad input (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1, result.stderr
    return message[0]


def start_together(commands: list[list[str]], gate) -> list[subprocess.Popen]:
    """Start CLI processes while ``gate`` (an exclusive store writer lock) is held, wait until each
    one is blocked on it, then release it: the processes get going at the same moment, whatever
    their start-up times. Only the timing depends on this."""
    import time
    assert gate.__enter__()
    try:
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
        deadline = time.monotonic() + 120
        while _flock_waiters() < {proc.pid for proc in procs} and time.monotonic() < deadline:
            assert all(proc.poll() is None for proc in procs)
            time.sleep(0.05)
    finally:
        gate.__exit__(None, None, None)
    return procs


def _flock_waiters() -> set[int]:
    """Pids blocked waiting for a flock (Linux /proc/locks lines with '->')."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return set()
    return {int(line.split("->", 1)[1].split()[3]) for line in lines if "->" in line and "FLOCK" in line}


def assert_pickle_refused(result: Result, marker: Path) -> None:
    """A CLI run given a checkpoint with a pickled payload: refused in one line, payload never run."""
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: refusing to load") and "weights_only=True" in result.stderr
    assert "Traceback" not in result.output
    assert not marker.exists()


def write_images(folder: Path, count: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> list[str]:
    """Smooth random colour images with texture (no flat regions), saved as JPEG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy) + 2 * i)], axis=-1)
        pixels = np.clip(127 + 90 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f"img{i:03d}.jpg"
        Image.fromarray(pixels).save(folder / name, quality=90)
        names.append(name)
    return names


class PicklePayload:
    """Unpickling this would create the folder ``marker``: proof that a checkpoint was never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def one_line_error(result: Result) -> str:
    """The single ``error: ...`` line of a CLI run that failed on bad input (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture()
def image_dataset(tmp_path: Path) -> Path:
    """A csv-adapter dataset: 24 images plus labels.csv (MOS increasing with index)."""
    root = tmp_path / "data"
    names = write_images(root, 24)
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, len(names))}).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture()
def one_torch_thread(monkeypatch: pytest.MonkeyPatch):
    """Two cores shared with other jobs: one intra-op thread is far faster than two contending ones."""
    import torch
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

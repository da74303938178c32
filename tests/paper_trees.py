"""Miniature official-layout trees of every dataset the paper pipelines read, and tiny-model overrides.

Each tree is made by the dataset's own test builder (``tests/test_dataset_*.py``: the official
label files and folders), with more rows, and its images rewritten at 48 x 40 with smooth texture
(BRISQUE needs more than the builders' 16 x 12 noise). ``paper_spec`` turns a shipped pipeline
file into one that runs here: datasets at these trees, tiny random-init models, few splits/steps.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

import test_dataset_bid as bid
import test_dataset_cid2013 as cid2013
import test_dataset_clive as clive
import test_dataset_csiq as csiq
import test_dataset_flive as flive
import test_dataset_kadid as kadid
import test_dataset_koniq as koniq
import test_dataset_live as live
import test_dataset_spaq as spaq
import test_dataset_tid2013 as tid2013
from conftest import TINY_CLIP_ARCH, TINY_CLIP_RN_ARCH
from iqa_store.datasets.testing import write_image

REPO = Path(__file__).resolve().parents[1]
N = 20  # images per dataset; TID2013 has 16 and KADID-10k 28, so weighted averages differ from plain ones
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def textured(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> None:
    """A smooth colour pattern with noise (no flat regions), in the format of its suffix."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + seed), np.cos(5 * yy - seed), np.sin(4 * (xx + yy) + 2 * seed)], axis=-1)
    pixels = np.clip(127 + 90 * base + rng.normal(0, 8 + 4 * (seed % 5), (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _enlarge(root: Path) -> Path:
    for seed, path in enumerate(sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)):
        textured(path, seed)
    return root


def _scores(rng: np.random.Generator, low: float, high: float, n: int = N) -> list[float]:
    return [round(float(v), 3) for v in rng.uniform(low, high, n)]


def build_trees(base: Path) -> dict[str, Path]:
    """dataset name -> root of its miniature release (the folder `--root` is given)."""
    rng = np.random.default_rng(7)
    roots = {}
    names = clive.TRAINING + [f"{100 + i}.bmp" for i in range(N)]
    roots["clive"] = clive.build_release(base / "ChallengeDB_release", names, [50.0] * 7 + _scores(rng, 5, 95),
                                         [10.0] * (7 + N))
    rows = [(f"{1000 + i}.jpg", 1, 2, 3, 4, 5, 15, mos, 0.5, 25 * (mos - 1)) for i, mos in enumerate(_scores(rng, 1, 5))]
    roots["koniq"] = koniq.build_release(base / "koniq10k", rows=rows)
    rows = [(f"{i + 1:05d}.jpg", mos) for i, mos in enumerate(_scores(rng, 5, 95))]
    for seed, (name, _) in enumerate(rows):
        write_image(base / "SPAQ" / "TestImage" / name, seed=seed)
    roots["spaq"] = spaq.build_release(base / "SPAQ", rows=rows)
    with pytest.MonkeyPatch.context() as patch:  # six scene subsets per image set, as released
        patch.setattr(cid2013, "IMAGES", [(s, c, d) for s in (1, 2) for c in range(1, 7) for d in (1, 2)])
        patch.setattr(cid2013, "REALIGNED", _scores(rng, 0, 80, 24))
        patch.setattr(cid2013, "SET_SPECIFIC", _scores(rng, 0, 80, 24))
        roots["cid2013"] = cid2013.build_release(base / "CID2013")
    roots["live"] = _live(base / "live", rng)
    references = ["1600", "bridge", "child_swimming", "lake", "boston", "aerial_city", "butter_flower",
                  "cactus", "fisher", "geckos"]
    kinds = [("noise", "awgn", "AWGN"), ("jpeg", "jpeg", "JPEG"), ("jpeg 2000", "jpeg2000", "jpeg2000"),
             ("blur", "blur", "BLUR")]
    rows = [(ref, 4 * r + k + 1, kind, 1 + (r + k) % 5, 0.05, round(float(rng.uniform(0, 1)), 3),
             f"{folder}/{ref}.{tag}.{1 + (r + k) % 5}.png")
            for r, ref in enumerate(references) for k, (kind, folder, tag) in enumerate(kinds[r % 2::2])]
    roots["csiq"] = csiq.build_release(base / "CSIQ", rows=rows)
    rows = [(f"I{r + 1:02d}_{t + 1:02d}_{1 + (r + t) % 5}.bmp", f"i{r + 1:02d}_{t + 1:02d}_{1 + (r + t) % 5}.bmp",
             round(float(rng.uniform(0, 9)), 3), 0.2, f"I{r + 1:02d}.BMP") for r in range(8) for t in range(2)]
    roots["tid2013"] = tid2013.build_release(base / "tid2013", rows=rows)
    rows = [(f"I{r + 1:02d}_{t + 1:02d}_{1 + (r + t) % 5:02d}.png", f"I{r + 1:02d}.png", round(float(rng.uniform(1, 5)), 3),
             0.5) for r in range(14) for t in range(2)]
    kadid.build_release(base / "kadid" / "kadid10k", rows=rows)
    roots["kadid10k"] = base / "kadid"
    roots["flive"] = _flive(base / "flive" / "database", rng)
    rows = [(i + 1, mean, [round(mean)] * 3) for i, mean in enumerate(_scores(rng, 0, 5))]
    roots["bid"] = bid.build_release(base / "BID", rows=rows)
    return {name: _enlarge(root) for name, root in roots.items()}


def _live(base: Path, rng: np.random.Generator) -> Path:
    """LIVE release 2: entries 0-5 in jp2k/, 227-232 in jpeg/ (the release's position -> folder rule)."""
    references = [f"ref{k}.bmp" for k in range(10)]
    entries = {}
    for start, folder in ((0, "jp2k"), (227, "jpeg")):
        for k in range(N // 2):
            dmos = float(rng.uniform(5, 95))
            entries[start + k] = (f"{folder}/img{k + 1}.bmp", references[k % len(references)], dmos, dmos, 8.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(live, "ENTRIES", entries)
        live.build_release(base / "databaserelease2")
    return base


def _flive(database: Path, rng: np.random.Generator) -> Path:
    rows = [(f"voc_emotic_ava/AVA__{i}.jpg", mos) for i, mos in enumerate(_scores(rng, 10, 90))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flive, "TEST", [name for name, _ in rows[:4]])
        patch.setattr(flive, "VALID", [rows[4][0]])
        flive.build_release(database, rows=rows)
    return database.parent


def tiny_models(base: Path, transformers_models: bool = True) -> dict[str, dict[str, Any]]:
    """Extract-step keys that put a tiny network of each model's own family in its place (ALIGN and
    AltCLIP: saved tiny transformers models, built only when ``transformers_models``)."""
    vit = {"random_init": True, "settings": {"arch": TINY_CLIP_ARCH}}
    resnet = {"random_init": True, "settings": {"arch": TINY_CLIP_RN_ARCH}}
    other_vit = {"random_init": True, "settings": {"arch": TINY_CLIP_ARCH, "seed": 1}}  # HPS is not CLIP
    models: dict[str, dict[str, Any]] = {"clip-vitb16": vit, "hps": other_vit, "qualiclip": resnet, "clipiqa": resnet,
                                         "clipiqa-plus": {"settings": {"arch": TINY_CLIP_RN_ARCH}}}
    if transformers_models:
        from test_hf_extractors import tiny_model
        for kind in ("align", "altclip"):
            tiny_model(kind, seed=1).save_pretrained(base / f"{kind}-tiny")
            models[kind] = {"weights": str(base / f"{kind}-tiny")}
    return models


# training steps that finish in seconds: few steps, small networks and crops
TINY_TRAINING = {
    "cnniqa": {"steps": 2, "batch_size": 2},
    "reiqa-content": {"steps": 2, "batch_size": 2, "hyperparameters": {"backbone": "resnet-tiny", "queue_size": 8}},
    "reiqa-quality": {"steps": 2, "batch_size": 2, "hyperparameters": {"backbone": "resnet-tiny", "patch": 32,
                                                                        "queue_size": 0}},
    "clipiqa-plus": {"steps": 2, "batch_size": 2, "hyperparameters": {"arch": TINY_CLIP_RN_ARCH, "pretrained": "none"}},
}


def paper_spec(name: str, trees: dict[str, Path], models: dict[str, dict[str, Any]], out: Path, *,
               splits: int = 3, datasets: list[str] | None = None) -> Path:
    """``pipelines/<name>.yaml`` made runnable here: trees, tiny models, ``splits`` splits, fast training.

    Training stages without a tiny setting here are left out (their extract steps then say why they
    are skipped); the report section is the shipped one, unchanged."""
    spec = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
    spec = copy.deepcopy(spec)
    # the others stay, with no root: the run must name each as missing (no variable is set in the tests)
    spec["datasets"] = [{**d, "root": str(trees[d["name"]])} if datasets is None or d["name"] in datasets else d
                        for d in spec["datasets"] if d["name"] in trees]
    spec["train"] = [_tiny_training(step) for step in spec.get("train", []) if step["stage"] in TINY_TRAINING]
    spec["extract"] = [{**step, **models.get(step["model"], {}),
                        "settings": {**step.get("settings", {}), **models.get(step["model"], {}).get("settings", {})}}
                       for step in spec["extract"]]
    for step in spec["fit"]:
        if step.get("protocol") != "zero-shot" and "train" not in step:
            step["splits"] = splits
    for step in spec["train"] + spec["extract"]:
        if step.get("protocol"):
            step["splits"] = splits
    _replace_regressor(spec, "mlp", "linear")
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _replace_regressor(data: Any, old: str, new: str) -> None:
    """The FC head (mlp) takes seconds per fit on CPU: the tests fit least squares (linear), and read it in the
    report section, everywhere the spec names the head."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in list(items):
        if key in ("regressor", "regressors") and value in (old, [old]):
            data[key] = new if value == old else [new]
        else:
            _replace_regressor(value, old, new)


def _tiny_training(step: dict[str, Any]) -> dict[str, Any]:
    tiny = copy.deepcopy(TINY_TRAINING[step["stage"]])
    return {**step, **tiny, "hyperparameters": {**step.get("hyperparameters", {}), **tiny.get("hyperparameters", {})}}

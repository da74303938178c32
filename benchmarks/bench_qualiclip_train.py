"""Does a short CPU QualiCLIP fine-tuning raise the zero-shot SRCC of the qualiclip score on the demo set?

1. a small random-init CLIP ResNet (open_clip ModifiedResNet, ``SMALL_RN`` below: no published
   weights can be downloaded here), its 14 prompt features from its own (random) text tower;
2. before: the ``qualiclip`` score of the 240 demo images (8 photographs x 6 distortions x 5
   levels, synthetic labels) from that model (the extractor's ``random_init`` with the seed the
   training starts from: the same weights, tests/test_qualiclip_train.py checks it);
3. ``iqa-store train qualiclip`` on the demo's eight PRISTINE photographs (labels never read);
4. after: the score of the 240 images from the trained encoder (``--weights registry:...``);
5. SRCC of each score against the demo MOS on the whole dataset (zero-shot), with a 95 %
   bootstrap interval over images, per seed; mean and std over seeds; the paired gain.

``--sweep`` instead trains one seed at each learning rate and reports the loss, the relative
weight change and the SRCC after training (the learning-rate choice in the README).

Usage:
  python benchmarks/bench_qualiclip_train.py --seeds 0 1 2 --steps 150 --lr 1e-4
  python benchmarks/bench_qualiclip_train.py --sweep 1e-9 1e-6 1e-5 1e-4 1e-3 --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch

from iqa_store import api
from iqa_store.datasets import load_manifest
from iqa_store.nets.clip_quality import read_clip_state
from iqa_store.store import FeatureStore

DEMO_PHOTOS = Path(__file__).resolve().parents[1] / "iqa_store" / "datasets" / "demo_images"
SMALL_RN = "SmallRN-bench"
SMALL_RN_CONFIG = {"embed_dim": 64,
                   "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
                   "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
QUIET = {"device": "cpu", "workers": 0, "progress": False, "log": lambda line: None}


def _register_small_tower(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{SMALL_RN}.json").write_text(json.dumps(SMALL_RN_CONFIG))
    os.environ["IQA_OPENCLIP_MODEL_CONFIGS"] = str(folder)


def _srcc(store: FeatureStore, feature_set: str, mos: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    score = store.get(feature_set).read()[:, 0].astype(np.float64)
    value = float(scipy.stats.spearmanr(score, mos)[0])
    draws = [rng.integers(0, len(mos), len(mos)) for _ in range(1000)]
    boot = np.array([scipy.stats.spearmanr(score[d], mos[d])[0] for d in draws])
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"srcc": value, "ci95": [float(low), float(high)], "score_std": float(score.std())}


def _score_before(store: FeatureStore, seed: int) -> str:
    report = api.extract("qualiclip", "demo", random_init=True, settings={"arch": SMALL_RN, "seed": seed},
                         store=store, **QUIET)
    return report.feature_set


def _train_and_score(store: FeatureStore, seed: int, lr: float, steps: int, crop: int, batch: int) -> dict[str, Any]:
    started = time.perf_counter()
    [report] = api.train("qualiclip", images=DEMO_PHOTOS, hyperparameters={"arch": SMALL_RN, "pretrained": "none",
                                                                           "crop": crop},
                         store=store, steps=steps, batch_size=batch, lr=lr, seed=seed, name=f"qualiclip-lr{lr:g}",
                         **QUIET)
    seconds = time.perf_counter() - started
    extracted = api.extract("qualiclip", "demo", weights=f"registry:{report.encoder.id}", store=store, **QUIET)
    losses = report.encoder.provenance["loss_curve"]
    return {"feature_set": extracted.feature_set, "encoder": report.encoder.id, "train_seconds": round(seconds, 1),
            "loss_first10": float(np.mean(losses[:10])), "loss_last10": float(np.mean(losses[-10:])),
            "weights_path": str(report.encoder.weights_path)}


def _relative_change(before_seed: int, trained_path: str) -> float:
    """||w_trained - w_init|| / ||w_init|| over the image tower's weights."""
    from iqa_store.train.qualiclip import QualiclipStage
    torch.manual_seed(before_seed)
    initial = QualiclipStage(arch=SMALL_RN, pretrained="none").build_model().tower.visual.state_dict()
    trained = read_clip_state(trained_path).visual_state
    keys = [k for k, v in initial.items() if v.is_floating_point() and "running" not in k]
    delta = sum(float((trained[k] - initial[k]).pow(2).sum()) for k in keys) ** 0.5
    return delta / sum(float(initial[k].pow(2).sum()) for k in keys) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sweep", type=float, nargs="*", help="learning rates to compare (first seed only)")
    parser.add_argument("--store", help="store directory (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.store or tempfile.mkdtemp(prefix="bench-qualiclip-"))
    _register_small_tower(work / "configs")
    store = FeatureStore(work / "store")
    manifest = load_manifest("demo")
    store.save_manifest(manifest)
    mos = manifest.mos
    rng = np.random.default_rng(0)
    header = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1",
              "date": date.today().isoformat(), "arch": SMALL_RN_CONFIG, "steps": args.steps, "crop": args.crop,
              "batch_size": args.batch_size, "images": "demo_images (8 pristine photographs)", "evaluated": len(mos)}
    rows = []
    if args.sweep:
        seed = args.seeds[0]
        before = _srcc(store, _score_before(store, seed), mos, rng)
        for lr in args.sweep:
            trained = _train_and_score(store, seed, lr, args.steps, args.crop, args.batch_size)
            rows.append({"lr": lr, "seed": seed, "before": before, "after": _srcc(store, trained["feature_set"], mos, rng),
                         "relative_weight_change": _relative_change(seed, trained["weights_path"]),
                         **{k: v for k, v in trained.items() if k not in ("weights_path",)}})
            print(json.dumps(rows[-1]), flush=True)
        print(json.dumps({**header, "sweep": rows}, indent=1))
        return
    for seed in args.seeds:
        before = _srcc(store, _score_before(store, seed), mos, rng)
        trained = _train_and_score(store, seed, args.lr, args.steps, args.crop, args.batch_size)
        rows.append({"seed": seed, "before": before, "after": _srcc(store, trained["feature_set"], mos, rng),
                     **{k: v for k, v in trained.items() if k != "weights_path"}})
        print(json.dumps(rows[-1]), flush=True)
    before_values = np.array([r["before"]["srcc"] for r in rows])
    after_values = np.array([r["after"]["srcc"] for r in rows])
    gain = after_values - before_values
    summary = {"lr": args.lr, "before_mean": before_values.mean(), "before_std": before_values.std(ddof=1),
               "after_mean": after_values.mean(), "after_std": after_values.std(ddof=1), "gain_mean": gain.mean(),
               "gain_std": gain.std(ddof=1), "seeds_improved": int((gain > 0).sum()), "seeds": len(rows)}
    print(json.dumps({**header, "runs": rows, "summary": {k: float(v) if isinstance(v, np.floating) else v
                                                          for k, v in summary.items()}}, indent=1))


if __name__ == "__main__":
    main()

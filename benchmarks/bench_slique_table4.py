"""SLIQUE Table IV on the demo dataset: image-image only, image-text only and joint pretraining.

For each objective (``--objective`` of ``iqa-store train slique``):

1. train the stage on the 240 demo images (8 photographs x 6 distortions x 5 levels; their texts
   from the store's annotation table: content label, distortion type and level, appearance
   bins) with a small network (``SMALL`` below) for a few steps on the CPU; labels are never read;
2. extract the ``slique`` features (L2-normalised pooled trunk, full + half scale) of the 240
   images from the registered encoder;
3. ridge regression, 10 random 70/10/20 splits grouped by photograph (alpha chosen on the
   validation part; the paper's protocol), SRCC and PLCC mean and std over the splits; and the
   same by image (contents shared between the parts), which measures distortion sensitivity alone.

A fourth row is the same network untrained (the seed the runs start from), the floor every
objective should beat. The demo labels are synthetic (SSIM and level, iqa_store/datasets/demo.py)
and the encoders see every demo image (and its distortion texts) while pretraining, unlike the
paper, whose TADAC shares no images with its test sets: read the rows against each other and
the floor, not against the paper's numbers.

Usage:
  python benchmarks/bench_slique_table4.py --steps 120 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_store import api
from iqa_store.store import FeatureStore

SMALL = {"backbone": "resnet-tiny", "width": 16, "crop": 96, "text_width": 64, "text_layers": 2, "text_heads": 4,
         "context_length": 32, "embed_dim": 64, "head_dim": 64}
OBJECTIVES = ("image-image", "image-text", "joint")
PROTOCOLS = {"grouped": "random-70-10-20", "by_image": "random-70-10-20-by-image"}
QUIET = {"device": "cpu", "workers": 0, "progress": False, "log": lambda line: None}


def _fit(store: FeatureStore, feature_set: str, splits: int) -> dict[str, Any]:
    """Ridge SRCC/PLCC mean and std over the splits, grouped by photograph (the paper's protocol on
    synthetic sets) and by image (contents shared between parts: distortion sensitivity alone)."""
    name = "slique@" + feature_set.rsplit("/", 1)[1]
    results = {}
    for label, protocol in PROTOCOLS.items():
        table = api.fit([name], datasets=["demo"], protocol=protocol, splits=splits, regressors=["ridge"],
                        store=store, workers=1, progress=False).table
        results[label] = {"srcc_mean": float(table["srcc"].mean()), "srcc_std": float(table["srcc"].std(ddof=1)),
                          "plcc_mean": float(table["plcc"].mean()), "plcc_std": float(table["plcc"].std(ddof=1)),
                          "splits": int(len(table))}
    return results


def _row(store: FeatureStore, objective: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    [report] = api.train("slique", dataset="demo", hyperparameters={**SMALL, "objective": objective}, store=store,
                         steps=args.steps, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                         seed=args.seed, warmup_steps=args.warmup_steps, name=f"slique-{objective}", **QUIET)
    trained = time.perf_counter() - started
    extracted = api.extract("slique", "demo", weights=f"registry:{report.encoder.id}", store=store, **QUIET)
    losses = report.encoder.provenance["loss_curve"]
    return {"objective": objective, "encoder": report.encoder.id, "train_seconds": round(trained, 1),
            "loss_first10": float(np.mean(losses[:10])), "loss_last10": float(np.mean(losses[-10:])),
            **_fit(store, extracted.feature_set, args.splits)}


def _untrained(store: FeatureStore, args: argparse.Namespace) -> dict[str, Any]:
    """The trunk the runs start from: the stage builds it first after torch.manual_seed(seed)."""
    extracted = api.extract("slique", "demo", random_init=True,
                            settings={"backbone": SMALL["backbone"], "width": SMALL["width"], "seed": args.seed},
                            store=store, **QUIET)
    return {"objective": "untrained (step 0)", **_fit(store, extracted.feature_set, args.splits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--optimizer", default="sgd", help="sgd (the paper's, momentum 0.9), adam or adamw")
    parser.add_argument("--warmup-steps", type=int, default=30, help="2 of the run's 8 epochs, as the paper's 2 of 30")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--store", help="store directory (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = FeatureStore(Path(args.store or tempfile.mkdtemp(prefix="bench-slique-")) / "store")
    started = time.perf_counter()
    rows = [_untrained(store, args)]
    print(json.dumps(rows[-1]), flush=True)
    for objective in OBJECTIVES:
        rows.append(_row(store, objective, args))
        print(json.dumps(rows[-1]), flush=True)
    header = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "network": SMALL,
              "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer,
              "warmup_steps": args.warmup_steps,
              "seed": args.seed, "protocols": PROTOCOLS, "regressor": "ridge", "splits": args.splits,
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps({**header, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

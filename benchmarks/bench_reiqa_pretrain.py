"""Does a short CPU pretraining of the Re-IQA quality encoder beat its own random initialisation?

1. ``reiqa-quality`` pretraining on the demo's eight pristine photographs (labels unused);
2. ``reiqa-quality`` features (full + half scale) of the 240 demo images, from the trained
   encoder and from the same architecture at random initialisation (the seed the training
   started from, so the only difference is the training);
3. ridge on each, 10 splits of 70/10/20, alpha chosen on validation: grouped by reference image
   (no content in two parts; eight contents leave one or two to test) and by image (each
   content's distorted versions spread over the parts: distortion sensitivity within a content);
4. a probe of what the features know without the labels: the distortion type (six classes)
   predicted by logistic regression trained on seven photographs and tested on the eighth, each
   in turn (chance 1/6).

Usage: python benchmarks/bench_reiqa_pretrain.py [--steps 200] [--store DIR]
Prints SRCC/PLCC mean, std and median of both arms and the gap in units of their spread.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_store import api
from iqa_store.train import train

DEMO_PHOTOS = Path(__file__).resolve().parents[1] / "iqa_store" / "datasets" / "demo_images"


# grouped by reference image (no content in two parts), then by image (contents shared)
PROTOCOLS = ("random-70-10-20", "random-70-10-20-by-image")


def _ridge_srcc(store: str, feature_set: str, protocol: str) -> dict[str, Any]:
    fingerprint = feature_set.split("/")[-1]
    table = api.fit([f"reiqa-quality@{fingerprint}"], datasets=["demo"], regressors=["ridge"], protocol=protocol,
                    splits=10, store=store, progress=False).table.sort_values("split")
    summary: dict[str, Any] = {metric: {"mean": float(table[metric].mean()), "std": float(table[metric].std(ddof=1)),
                                        "median": float(table[metric].median())} for metric in ("srcc", "plcc")}
    summary["per_split_srcc"] = table["srcc"].tolist()
    return summary


def _type_probe(store: str, feature_set: str) -> float:
    """Leave-one-photograph-out accuracy of a logistic regression from features to distortion type."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from iqa_store.store import FeatureStore

    opened = FeatureStore(store)
    features, manifest = opened.get(feature_set), opened.load_manifest("demo")
    row = {image_id: i for i, image_id in enumerate(features.ids)}
    X = features.read()[[row[image_id] for image_id in manifest.ids]]
    kind = np.array([manifest.info["images"][image_id]["distortion"] for image_id in manifest.ids])
    photo = manifest.table["reference_id"].to_numpy()
    hits = []
    for held_out in np.unique(photo):
        train = photo != held_out
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(X[train], kind[train])
        hits.append(probe.predict(X[~train]) == kind[~train])
    return float(np.concatenate(hits).mean())


def _paired(rows: dict[str, Any]) -> str:
    """Both arms are fitted on the same ten splits: the per-split difference is the sharper comparison."""
    difference = np.subtract(rows["pretrained"]["per_split_srcc"], rows["random init"]["per_split_srcc"])
    return (f"per-split SRCC difference: mean {difference.mean():+.3f}, std {difference.std(ddof=1):.3f}, "
            f"pretrained better in {(difference > 0).sum()} of {difference.size} splits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--backbone", default="resnet-tiny")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--n-aug", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--queue-size", type=int, default=2048,
                        help="0: the batch's own keys are the only negatives (small training sets, see RESULTS.md)")
    parser.add_argument("--momentum", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", default=None, help="store root [default: a temporary folder]")
    args = parser.parse_args()
    store = args.store or tempfile.mkdtemp(prefix="bench-reiqa-")

    hyper = {"backbone": args.backbone, "patch": args.patch, "n_aug": args.n_aug, "queue_size": args.queue_size,
             "momentum": args.momentum}
    started = time.perf_counter()
    [report] = train("reiqa-quality", images=DEMO_PHOTOS, store=store, hyperparameters=hyper, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, seed=args.seed, workers=args.workers, device="cpu")
    train_seconds = time.perf_counter() - started
    print(report.summary())

    common = {"store": store, "device": "cpu", "workers": args.workers, "progress": False, "log": lambda line: None}
    trained = api.extract("reiqa-quality", "demo", encoder=report.encoder.id, **common)
    random = api.extract("reiqa-quality", "demo", random_init=True, backbone=args.backbone, seed=args.seed, **common)
    arms = {"pretrained": trained.feature_set, "random init": random.feature_set}
    results = {protocol: {arm: _ridge_srcc(store, name, protocol) for arm, name in arms.items()} for protocol in PROTOCOLS}
    results["type probe accuracy"] = {arm: _type_probe(store, name) for arm, name in arms.items()}
    for protocol in PROTOCOLS:
        rows = results[protocol]
        print(f"\n{protocol}\n{'arm':12s} {'SRCC mean':>9s} {'std':>6s} {'median':>7s} {'PLCC mean':>9s} {'std':>6s}")
        for arm, row in rows.items():
            print(f"{arm:12s} {row['srcc']['mean']:9.3f} {row['srcc']['std']:6.3f} {row['srcc']['median']:7.3f} "
                  f"{row['plcc']['mean']:9.3f} {row['plcc']['std']:6.3f}")
        gap = rows["pretrained"]["srcc"]["mean"] - rows["random init"]["srcc"]["mean"]
        spread = max(rows["pretrained"]["srcc"]["std"], rows["random init"]["srcc"]["std"])
        print(f"gap in SRCC mean: {gap:+.3f} = {gap / spread:.1f} x the larger std")
        print(_paired(rows))
    print("\ndistortion type from features, leave one photograph out (chance 0.167): " +
          ", ".join(f"{arm} {accuracy:.3f}" for arm, accuracy in results["type probe accuracy"].items()))
    print(json.dumps({"date": str(date.today()), "machine": platform.processor() or platform.machine(),
                      "cores": torch.get_num_threads(), "train_seconds": round(train_seconds, 1),
                      "settings": {**hyper, **vars(args)}, "results": results, "encoder": report.encoder.id}))


if __name__ == "__main__":
    main()

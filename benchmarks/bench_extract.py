"""Extraction pipeline efficiency and memory: how well decoding, batching and storage keep the model fed.

Run from the repository root::

    .venv/bin/python benchmarks/bench_extract.py                 # efficiency + memory, print
    .venv/bin/python benchmarks/bench_extract.py --device cuda --precision bf16 --images 2048   # on a GPU
    .venv/bin/python benchmarks/bench_extract.py --device cuda --precision bf16 --end-to-end-flag device_decode

Images: KonIQ-sized JPEGs (1024x768, quality 90) made from the demo photographs (random 4:3
crops, flips and colour scaling, Lanczos to 1024x768), written once to a cache folder. Weights:
clip-vitb16 at random initialisation (the same network and arithmetic as the published
weights, which cannot be downloaded here).

* Efficiency = end-to-end images/s (``api.extract`` into a fresh store: decoding in DataLoader
  workers, batching, the model, the background writer) / model-only images/s (``compute`` on
  the same images already decoded and preprocessed, same batch size). End to end is timed
  from the first batch on: the model's one-time construction (``prepare_seconds`` of the
  report) is reported separately. The two are interleaved over the repeats, so a change in
  machine load hits both alike; the ratio of the medians is reported.
* Decoding: CPU time per image (one thread) of the three ways to turn a JPEG into the model's
  input: Pillow (the default), ``jpeg_draft``, and the ``device_decode`` path run on the CPU.
* Memory: peak resident memory of the extracting process and of its decoding workers for
  1,000 and 10,000 images (a fresh process each; the 10,000 paths are hard links to 1,000
  files, each decoded in full), with a tiny ViT so that 10,000 images take minutes: memory
  must not grow with the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "benchmarks" / ".cache" / "koniq-sized"
TINY_ARCH = "TinyViT-bench"
TINY_CONFIG = {"embed_dim": 64, "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "head_width": 64,
                                               "patch_size": 32},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


def make_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct 1024x768 JPEGs from the demo photographs (kept between runs)."""
    from PIL import Image, ImageOps
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"img{i:05d}.jpg" for i in range(count)]
    if all((folder / n).exists() for n in names):
        return names
    sources = sorted((ROOT / "iqa_store" / "datasets" / "demo_images").glob("*.png")) + \
        sorted((ROOT / "iqa_store" / "datasets" / "demo_images").glob("*.jpg"))
    photos = [Image.open(p).convert("RGB") for p in sources]
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        photo = photos[i % len(photos)]
        w, h = photo.size
        crop_w = int(min(w, h * 4 / 3) * rng.uniform(0.6, 1.0))
        crop_h = crop_w * 3 // 4
        x, y = int(rng.integers(0, w - crop_w + 1)), int(rng.integers(0, h - crop_h + 1))
        image = photo.crop((x, y, x + crop_w, y + crop_h)).resize((1024, 768), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        pixels = np.asarray(image, np.float32) * rng.uniform(0.85, 1.15, 3)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name, quality=90)
    return names


def dataset(folder: Path, names: list[str], total: int) -> Path:
    """A csv-adapter dataset of ``total`` rows: the first len(names) are the files, the rest hard links."""
    import pandas as pd
    root = folder / f"rows{total}"
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(total):
        target = root / f"r{i:05d}.jpg"
        if not target.exists():
            os.link(CACHE / names[i % len(names)], target)
        rows.append(target.name)
    pd.DataFrame({"path": rows, "mos": np.linspace(1, 5, total)}).to_csv(root / "labels.csv", index=False)
    return root


def model_only(model: str, paths: list[Path], batch_size: int, device: str, precision: str) -> float:
    """images/s of ``compute`` on pre-decoded, preprocessed batches (the default transform's output)."""
    import torch
    from iqa_store.extractors import RunOptions, create_extractor
    extractor = create_extractor(model, random_init=True, precision=precision)
    extractor.prepare(RunOptions(device=device, batch_size=batch_size))
    items = [extractor.load_item(p) for p in paths]
    batches = [extractor.collate(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
    if device.startswith("cuda"):
        batches = [b.pin_memory() for b in batches]
    extractor.compute(batches[0])  # warm-up (kernels, allocator)
    _sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            extractor.compute(batch)
    _sync(device)
    return len(items) / (time.perf_counter() - started)


def end_to_end(model: str, root: Path, batch_size: int, workers: int, device: str, precision: str,
               settings: dict) -> dict:
    from iqa_store import api
    with tempfile.TemporaryDirectory() as store:
        report = api.extract(model, "csv", root=root, store=store, device=device, batch_size=batch_size,
                             workers=workers, random_init=True, precision=precision, progress=False,
                             dataset_options={"labels": "labels.csv", "dataset_name": "bench"}, **settings)
    steady = report.seconds - report.prepare_seconds
    return {"images_per_second": report.computed / steady, "prepare_seconds": report.prepare_seconds,
            "seconds": report.seconds}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def efficiency(args: argparse.Namespace) -> dict:
    names = make_images(CACHE, args.images)
    root = dataset(CACHE.parent / "datasets", names, args.images)
    paths = sorted(root.glob("r*.jpg"))
    model_rates, pipeline = [], []
    for _ in range(args.repeats):
        model_rates.append(model_only(args.model, paths, args.batch_size, args.device, args.precision))
        pipeline.append(end_to_end(args.model, root, args.batch_size, args.workers, args.device, args.precision,
                                   dict.fromkeys(args.end_to_end_flag, True)))
        print(f"  model-only {model_rates[-1]:.2f} img/s, end-to-end {pipeline[-1]['images_per_second']:.2f} img/s",
              file=sys.stderr)
    model_rate = statistics.median(model_rates)
    pipe_rate = statistics.median(p["images_per_second"] for p in pipeline)
    return {"model": args.model, "images": args.images, "end_to_end_settings": args.end_to_end_flag, "batch_size": args.batch_size, "workers": args.workers,
            "device": args.device, "precision": args.precision, "repeats": args.repeats,
            "model_only": model_rates, "end_to_end": [p["images_per_second"] for p in pipeline],
            "prepare_seconds": [p["prepare_seconds"] for p in pipeline],
            "end_to_end_with_prepare": [args.images / p["seconds"] for p in pipeline],
            "efficiency": pipe_rate / model_rate, "model_only_median": model_rate, "end_to_end_median": pipe_rate}


def decoding(args: argparse.Namespace) -> dict:
    """CPU ms per image (one thread) to turn a KonIQ-sized JPEG into the model's input, three ways,
    interleaved image by image: what one decoding worker costs, i.e. how many cores a GPU needs."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from iqa_store.extractors import create_extractor
    torch.set_num_threads(1)
    paths = [CACHE / n for n in make_images(CACHE, 64)]
    pillow = create_extractor(args.model)
    draft = create_extractor(args.model, jpeg_draft=True)
    recipe = create_extractor(args.model, device_decode=True).tensor_recipe()

    def tensor_ops(path: Path) -> object:
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        return recipe(decode_jpeg(data, mode=ImageReadMode.RGB))

    ways = {"Pillow decode + the model's transform (default)": pillow.load_item,
            "jpeg_draft (Pillow DCT-scaled decode) + transform": draft.load_item,
            "device_decode path run on the CPU (torchvision decode_jpeg + TensorRecipe)": tensor_ops}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for path in paths * 2:
        for name, way in ways.items():
            started = time.process_time()
            way(path)
            times[name].append(time.process_time() - started)
    return {name: round(1000 * statistics.median(values[len(paths):]), 1) for name, values in times.items()}


def _rss_mib(pid: int | str, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process ended between listing and reading
        pass
    return 0.0


def _children() -> list[str]:
    found: list[str] = []
    for task in Path("/proc/self/task").iterdir():
        found += (task / "children").read_text().split()
    return found


class PeakMemory:
    """Samples resident memory of this process and of its children (the decoding workers) every
    50 ms. ``ru_maxrss`` would not do: it survives fork and exec, so it reports the parent's peak."""

    def __init__(self) -> None:
        import threading
        self.main = self.workers = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.main = max(self.main, _rss_mib("self"))
            self.workers = max(self.workers, sum(_rss_mib(pid) for pid in _children()))

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.main = max(self.main, _rss_mib("self", "VmHWM"))  # exact peak of this process


def memory_run(root: str, workers: int, batch_size: int, configs: str) -> None:
    """In a fresh process: extract with the tiny ViT, print the peak memory of this process and
    of its workers together."""
    os.environ["IQA_OPENCLIP_MODEL_CONFIGS"] = configs
    from iqa_store import api
    with tempfile.TemporaryDirectory() as store, PeakMemory() as peak:
        report = api.extract(f"openclip:{TINY_ARCH}:none", "csv", root=root, store=store, device="cpu",
                             batch_size=batch_size, workers=workers, random_init=True, progress=False,
                             dataset_options={"labels": "labels.csv", "dataset_name": "bench"})
    print(json.dumps({"rows": report.rows, "computed": report.computed, "seconds": round(report.seconds, 1),
                      "peak_main_mib": round(peak.main), "peak_workers_mib": round(peak.workers)}))


def memory(args: argparse.Namespace) -> list[dict]:
    names = make_images(CACHE, 1000)
    configs = Path(tempfile.mkdtemp())
    (configs / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    rows = []
    for total in args.memory_sizes:
        root = dataset(CACHE.parent / "datasets", names, total)
        out = subprocess.run([sys.executable, __file__, "--memory-run", str(root), "--workers", str(args.workers),
                              "--batch-size", str(args.batch_size), "--configs", str(configs)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {total} images: {rows[-1]}", file=sys.stderr)
    return rows


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    import torch
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()}-core {model}{gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clip-vitb16")
    parser.add_argument("--images", type=int, default=256, help="images for the efficiency measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--end-to-end-flag", action="append", default=[], choices=["device_decode", "jpeg_draft"],
                        help="extractor setting turned on for the end-to-end runs (their decoding path)")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--only", choices=["efficiency", "memory", "decoding"], help="run one measurement")
    parser.add_argument("--memory-run", help=argparse.SUPPRESS)
    parser.add_argument("--configs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run:
        memory_run(args.memory_run, args.workers, args.batch_size, args.configs)
        return
    result: dict = {"machine": machine()}
    if args.only in (None, "decoding"):
        result["decoding_cpu_ms_per_image"] = decoding(args)
    if args.only in (None, "efficiency"):
        result["efficiency"] = efficiency(args)
    if args.only in (None, "memory"):
        result["memory"] = memory(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

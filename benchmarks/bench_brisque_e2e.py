"""BRISQUE end to end: ``iqa_store`` extraction into a store vs a plain OpenCV loop, same files.

Run from the repository root::

    .venv/bin/python benchmarks/bench_brisque_e2e.py             # print the table
    .venv/bin/python benchmarks/bench_brisque_e2e.py --write     # also update benchmarks/RESULTS.md

Files: KonIQ-sized photographs (1024x768; ``bench_extract.make_images``: random crops of the
demo photographs, JPEG quality 90) and lossless PNG copies of the same pictures, written once
under ``benchmarks/.cache``. Both contestants read the same files from disk:

* OpenCV: ``cv2.imread(path, IMREAD_GRAYSCALE)`` + ``cv2.quality.QualityBRISQUE_computeFeatures``
  per image, one process (OpenCV's own thread pool as it comes).
* ours end to end: ``api.extract("brisque", "csv", ...)`` into a fresh store: the real path
  with its defaults (manifest, DataLoader decoding workers, grey conversion, features, the
  transfer of the rows to the main process, the background Zarr writer, the COMPLETE marker);
* ours, ``--workers 0``: the same call decoding in the main process, for the cost per core.

Per image = wall time of the whole loop or ``api.extract`` call / images. Imports, the
process start and one warm-up extraction (torch, zarr, the worker start-up code) come before
the timing, as a user's second extraction would see them. Contestants alternate within each
repeat, so a change in the load of this shared machine hits them alike; the medians over the
repeats are reported, and each ratio is the median of the repeats' ratios. CPU time counts
every process (the main one and the decoding workers, which are reaped before the call returns).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_brisque import RESULTS, machine  # noqa: E402
from bench_extract import CACHE, make_images  # noqa: E402

PNG_CACHE = CACHE.parent / "koniq-sized-png"


def image_folders(count: int) -> dict[str, Path]:
    """{"JPEG": folder, "PNG": folder}, each with ``count`` files and a labels.csv naming them."""
    from PIL import Image
    names = make_images(CACHE, count)
    PNG_CACHE.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = PNG_CACHE / Path(name).with_suffix(".png")
        if not target.exists():
            with Image.open(CACHE / name) as image:
                image.save(target)
    folders = {}
    for label, folder, files in (("JPEG", CACHE, names), ("PNG", PNG_CACHE, [Path(n).with_suffix(".png").name
                                                                            for n in names])):
        labels = folder / f"labels{count}.csv"
        labels.write_text("path,mos\n" + "".join(f"{f},3.0\n" for f in files))
        folders[label] = labels
    return folders


def _paths(labels: Path) -> list[Path]:
    return [labels.parent / line.split(",")[0] for line in labels.read_text().splitlines()[1:]]


def opencv_loop(labels: Path) -> Callable[[], int]:
    import cv2
    paths = [str(p) for p in _paths(labels)]

    def run() -> int:
        for path in paths:
            grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            cv2.quality.QualityBRISQUE_computeFeatures(grey)
        return len(paths)
    return run


def ours_end_to_end(labels: Path, store_parent: Path, workers: int | None) -> Callable[[], int]:
    from iqa_store import api
    from iqa_store.store import FeatureStore

    def run() -> int:
        with tempfile.TemporaryDirectory(dir=store_parent) as folder:
            report = api.extract("brisque", "csv", root=str(labels.parent), store=FeatureStore(Path(folder)),
                                 dataset_options={"labels": labels.name}, workers=workers, device="cpu",
                                 progress=False, log=lambda _: None)
            if report.status != "complete" or report.failures:
                raise RuntimeError(f"extraction did not complete: {report.summary()}")
            return report.computed
    return run


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def time_per_image(run: Callable[[], int]) -> tuple[float, float]:
    """(wall ms per image, CPU ms per image over every process) of one call."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    images = run()
    return 1e3 * (time.perf_counter() - wall) / images, 1e3 * (_cpu_seconds() - cpu) / images


def stored_equals_direct(labels: Path, store_parent: Path, rows: int = 5) -> bool:
    """The stored features are bit for bit the extractor's own on the first ``rows`` files."""
    from iqa_store import api
    from iqa_store.extractors.brisque import Brisque
    from iqa_store.store import FeatureStore
    with tempfile.TemporaryDirectory(dir=store_parent) as folder:
        store = FeatureStore(Path(folder))
        report = api.extract("brisque", "csv", root=str(labels.parent), store=store,
                             dataset_options={"labels": labels.name}, device="cpu", progress=False,
                             log=lambda _: None)
        stored = store.get(report.feature_set).read(slice(0, rows))
    direct = np.stack([Brisque().load_item(p) for p in _paths(labels)[:rows]])
    return bool(np.array_equal(stored, direct))


CONTESTANTS = ("OpenCV loop", "ours end to end", "ours, --workers 0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="files per format")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update the BRISQUE section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    import cv2
    from iqa_store.extraction.jobs import default_workers
    folders = image_folders(args.images)
    store_parent = Path(tempfile.mkdtemp(prefix="bench-brisque-e2e-"))
    contestants: dict[tuple[str, str], Callable[[], int]] = {}
    for fmt, labels in folders.items():
        contestants[(fmt, CONTESTANTS[0])] = opencv_loop(labels)
        contestants[(fmt, CONTESTANTS[1])] = ours_end_to_end(labels, store_parent, None)
        contestants[(fmt, CONTESTANTS[2])] = ours_end_to_end(labels, store_parent, 0)
    warm = image_folders(4)["JPEG"]  # its own 4-row labels file: a warm-up as small as it gets
    first_call = time.perf_counter()
    ours_end_to_end(warm, store_parent, None)()
    first_call = time.perf_counter() - first_call
    opencv_loop(warm)()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in contestants}
    for repeat in range(args.repeats):
        for key, run in contestants.items():
            results[key].append(time_per_image(run))
            print(f"repeat {repeat + 1}/{args.repeats} {key[0]} {key[1]}: {results[key][-1][0]:.1f} ms/image, "
                  f"CPU {results[key][-1][1]:.1f}", file=sys.stderr)
    same = {fmt: stored_equals_direct(labels, store_parent) for fmt, labels in folders.items()}

    def median(fmt: str, contestant: str, which: int) -> float:
        return statistics.median(sample[which] for sample in results[(fmt, contestant)])

    def ratio(fmt: str, contestant: str, which: int) -> float:
        """Median over the repeats of this contestant's time / OpenCV's in the same repeat."""
        pairs = zip(results[(fmt, contestant)], results[(fmt, CONTESTANTS[0])])
        return statistics.median(ours[which] / theirs[which] for ours, theirs in pairs)

    lines = ["### End to end vs OpenCV's loop (decode, grey, transfer between processes, features, store)", "",
             f"Date {_dt.date.today().isoformat()}; machine: {machine()}; OpenCV {cv2.__version__} "
             f"({cv2.getNumThreads()} threads). Command: `.venv/bin/python benchmarks/bench_brisque_e2e.py "
             f"--images {args.images} --repeats {args.repeats}`. {args.images} KonIQ-sized 1024x768 photographs "
             "per format (the JPEGs of `bench_extract.py`, quality 90, and lossless PNG copies), read from disk. "
             "OpenCV loop: `imread(path, IMREAD_GRAYSCALE)` + `QualityBRISQUE_computeFeatures` per file. Ours end "
             "to end: `api.extract(\"brisque\", \"csv\", ...)` into a fresh store with the defaults "
             f"({default_workers()} DataLoader decoding workers here; each sends the main process 36 float32 per "
             "image); `--workers 0`: the same in one process. Wall time of the whole loop or call per image; CPU "
             "time of all processes per image; contestants alternated within each repeat; medians of "
             f"{args.repeats} repeats; each ratio is the median of the repeats' ratios. Before the timing: imports "
             f"and one warm-up extraction of 4 images ({first_call:.1f} s: torch and zarr imports, the first worker "
             "start), as a second extraction in a session sees them.", "",
             "| format | contestant | wall ms/image | CPU ms/image | wall / OpenCV | CPU / OpenCV |",
             "|---|---|---:|---:|---:|---:|"]
    verdicts = []
    for fmt in folders:
        for contestant in CONTESTANTS:
            lines.append(f"| {fmt} | {contestant} | {median(fmt, contestant, 0):.1f} | "
                         f"{median(fmt, contestant, 1):.1f} | {ratio(fmt, contestant, 0):.2f} | "
                         f"{ratio(fmt, contestant, 1):.2f} |")
        verdicts.append(ratio(fmt, CONTESTANTS[1], 0) <= 1.0)
    lines += ["", "Stored features equal the extractor's own (`Brisque().load_item`, bit for bit, first 5 files): "
              + ", ".join(f"{fmt} {'yes' if ok else 'NO'}" for fmt, ok in same.items()) + ".",
              f"Goal (ours end to end at least as fast per image as OpenCV's loop, wall, every format): "
              f"{'met' if all(verdicts) else 'MISSED'}."]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write:
        write_subsection(section)


def write_subsection(section: str) -> None:
    """Replace this subsection of '## BRISQUE', or add it at the end of that section."""
    text = RESULTS.read_text()
    heading = section.splitlines()[0]
    own = re.compile(rf"^{re.escape(heading)}\n.*?(?=^#|\Z)", re.S | re.M)
    if own.search(text):
        text = own.sub(lambda _: section + "\n", text, count=1)
    else:
        brisque_end = re.compile(r"^## BRISQUE\n.*?(?=^## |\Z)", re.S | re.M).search(text)
        if brisque_end is None:
            raise SystemExit(f"{RESULTS} has no '## BRISQUE' section: run benchmarks/bench_brisque.py --write first")
        text = text[:brisque_end.end()].rstrip("\n") + "\n\n" + section + "\n" + text[brisque_end.end():]
    RESULTS.write_text(text)
    print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()

"""Benchmark: start-up of commands that do no model work, against Python's own start, in one run.

Timed as a user meets them, each in a fresh process (wall clock, median of ``--runs``):
``python -c pass`` (the baseline: the interpreter alone), ``python -c "import iqa_store.cli"``,
and on a store with the demo dataset's BRISQUE set: the cached re-run of ``iqa-store extract
-m brisque -d demo``, ``iqa-store ls``, ``iqa-store show SET`` and ``iqa-store fit -f brisque``
(its results removed before each run, so the cells are fitted every time). The commands are
run round-robin, so a change in the machine's load falls on all of them alike. Then one
``-X importtime`` run of the cached extraction says which packages its import time goes to.

    .venv/bin/python benchmarks/bench_startup.py            # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_startup.py --runs 15
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

GOAL_SECONDS = 1.0  # the cached re-run, beyond Python's own start


def timed(command: list[str], environment: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    return time.perf_counter() - started


def import_time_by_package(command: list[str], environment: dict[str, str]) -> Counter:
    """Self import time (seconds) per top-level package, from ``python -X importtime``."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True, check=True,
                          env=environment)
    seconds: Counter = Counter()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            seconds[match[2].split(".")[0]] += int(match[1]) / 1e6
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (the median is reported)")
    args = parser.parse_args()

    cli = str(Path(sys.executable).parent / "iqa-store")
    folder = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    store = folder / "store"
    environment = {**os.environ, "IQA_STORE": str(store), "HF_HUB_OFFLINE": "1"}
    try:
        subprocess.run([cli, "extract", "-m", "brisque", "-d", "demo", "-q"], check=True, env=environment,
                       stdout=subprocess.DEVNULL)
        listing = subprocess.run([cli, "ls", "--format", "json"], check=True, env=environment, capture_output=True,
                                 text=True).stdout
        feature_set = re.search(r'"(demo/brisque/[0-9a-f]+)"', listing)[1]
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            'python -c "import iqa_store.cli"': [sys.executable, "-c", "import iqa_store.cli"],
            "iqa-store extract -m brisque -d demo (cached)": [cli, "extract", "-m", "brisque", "-d", "demo", "-q"],
            "iqa-store ls": [cli, "ls"],
            f"iqa-store show {feature_set}": [cli, "show", feature_set],
            "iqa-store fit -f brisque (10 cells fitted)": [cli, "fit", "-f", "brisque", "-q"],
        }
        print(f"date {datetime.date.today()}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"Python {platform.python_version()}; load average at start {os.getloadavg()}")
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                if "fit" in command:
                    shutil.rmtree(store / "results", ignore_errors=True)
                seconds[name].append(timed(command, environment))
        imports = import_time_by_package(["-c", "import sys; from iqa_store.cli import main; "
                                                "sys.argv = ['iqa-store', 'extract', '-m', 'brisque', '-d', 'demo', "
                                                "'-q']; main()"], environment)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average at end {os.getloadavg()}")

    baseline = statistics.median(seconds["python -c pass (baseline)"])
    print(f"\nmedian of {args.runs} runs each, wall clock\n")
    print("| command | seconds | minus Python's start |\n|---|---:|---:|")
    for name, runs in seconds.items():
        median = statistics.median(runs)
        print(f"| `{name}` | {median:.3f} | {median - baseline:+.3f} |")
    cached = statistics.median(seconds["iqa-store extract -m brisque -d demo (cached)"]) - baseline
    print(f"\ncached re-run beyond Python's start: {cached:.2f} s (goal < {GOAL_SECONDS:.0f} s: "
          f"{'met' if cached < GOAL_SECONDS else 'not met'})")
    print(f"\nimport time of the cached re-run by package (self time, one -X importtime run; "
          f"{sum(imports.values()):.2f} s in all):")
    print(", ".join(f"{name} {value:.2f} s" for name, value in imports.most_common(8)))


if __name__ == "__main__":
    main()

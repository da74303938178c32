"""Check a dataset tree against what its authors published, and describe the known datasets.

``verify_dataset`` reads the tree with its adapter (which refuses a malformed label file or a
score outside the published range, naming the file and row), then checks every listed image
and reference: present and decodable; and the counts against the published ones. It reports
every file and count problem it finds, instead of stopping at the first one.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iqa_store.datasets import DATASETS, DatasetAdapter, Manifest, ManifestError, build_adapter
from iqa_store.images import ImageReadError, read_rgb

__all__ = ["Problem", "VerifyReport", "describe_datasets", "verify_dataset"]


@dataclass(frozen=True)
class Problem:
    kind: str  # "labels", "missing", "corrupt", "count"
    where: str  # a file, or what was counted
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class VerifyReport:
    dataset: str
    root: str
    images: int = 0
    files_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def text(self) -> str:
        head = (f"{self.dataset} at {self.root}: {self.images} images, {self.files_checked} files checked, "
                f"{len(self.problems)} problem(s)")
        return "\n".join([head, *(f"  {p}" for p in self.problems)] if self.problems else [head, "  all good"])


def describe_datasets() -> list[dict[str, Any]]:
    """Every registered dataset: expected layout, published image count, MOS scale, citation."""
    rows = []
    for name in DATASETS.names():
        adapter = DATASETS.get(name)
        published = adapter.published
        rows.append({"name": name, "help": DATASETS.help(name), "env_var": adapter.env_var, "layout": adapter.layout,
                     "images": None if published is None else published.images,
                     "references": None if published is None else published.references,
                     "splits": None if published is None else published.splits or None,
                     "scale": None if published is None else published.scale, "citation": adapter.citation,
                     "options": [option.describe() for option in adapter.options()]})
    return rows


def verify_dataset(name: str, root: str | Path | None = None, *, workers: int | None = None,
                   **options: Any) -> VerifyReport:
    """Check the tree of dataset ``name`` at ``root`` (or its environment variable)."""
    adapter = build_adapter(name, options)
    report = VerifyReport(name, str(root))
    try:
        resolved = adapter.resolve_root(root)
        report.root = str(resolved)
        manifest = adapter.read(resolved)
    except ManifestError as error:
        report.problems.append(Problem("labels", report.root, str(error)))
        return report
    report.images = len(manifest)
    files = _listed_files(manifest)
    report.files_checked = len(files)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:  # Pillow decodes without the GIL
        report.problems += [p for p in pool.map(_check_image, files) if p is not None]
    report.problems += _count_problems(adapter, manifest)
    return report


def _listed_files(manifest: Manifest) -> list[Path]:
    """Every image and (once each) every reference image the manifest names."""
    references = sorted({r for r in manifest.reference_ids or []})
    return manifest.paths + [manifest.root / r for r in references]


def _check_image(path: Path) -> Problem | None:
    if not path.is_file():
        return Problem("missing", str(path), "file not found")
    try:
        read_rgb(path)  # decode every pixel as extraction does: a truncated file opens but fails here
    except ImageReadError as error:
        return Problem("corrupt", str(path), str(error))
    return None


def _count_problems(adapter: DatasetAdapter, manifest: Manifest) -> list[Problem]:
    published = adapter.published
    if published is None:
        return []
    problems = []
    if len(manifest) != published.images:
        problems.append(Problem("count", "images", f"{len(manifest)} listed, {published.images} published"))
    references = manifest.reference_ids
    if published.references is not None and references is not None and len(set(references)) != published.references:
        problems.append(Problem("count", "reference images",
                                f"{len(set(references))} listed, {published.references} published"))
    split = manifest.official_split
    if published.splits and split is not None:
        counts = Counter(split)
        problems += [Problem("count", f"official {part} split", f"{counts.get(part, 0)} listed, {n} published")
                     for part, n in published.splits.items() if counts.get(part, 0) != n]
    return problems


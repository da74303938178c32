"""The embedded demo dataset ``demo``: real photographs, synthetic distortions, SYNTHETIC labels.

Eight public-domain / CC0 colour photographs (long side 384 px) ship with the package
(``iqa_store/datasets/demo_images/``; sources and licences in its ``LICENSES.md``). On first use
``DemoDataset().manifest()`` distorts each with six types of the ``kadid24`` distortion bank
(``DEMO_TYPES``) at levels 1-5: 8 x 6 x 5 = 240 PNG images, deterministic (one fixed seed per
image), written to a cache directory: the ``root`` argument, else ``$IQA_DEMO_ROOT``, else
``$XDG_CACHE_HOME/iqa-store/demo-v<DEMO_VERSION>`` (``~/.cache`` when unset). A JSON index,
written last and atomically, marks the tree complete; later calls only check it (and redo the
photographs whose files are missing or truncated). JPEG-distorted images are stored as PNG of
the decoded JPEG, so their artefacts survive.

The labels are NOT human opinions. They are synthetic, made from a full-reference similarity
to the pristine photograph combined with the distortion level::

    mos = 100 * (0.6 * clip(SSIM, 0, 1) + 0.4 * (5 - level) / 4)        (range 0-100)

where SSIM is Wang et al.'s (11x11 Gaussian window, sigma 1.5, mean over R, G, B) between the
stored 8-bit distorted image and the pristine photograph, both first downsampled 2x2 by
averaging. The level term makes every type's labels fall with the level; the SSIM term makes
them depend on the photograph and the type. No noise is added. ``reference_id`` is the
photograph's name, so grouped splits keep a photograph's images together; there is no official
split. Use this dataset to try the pipeline offline, never to report quality-prediction results.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import pandas as pd

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.fingerprint import file_sha256, fingerprint

DEMO_VERSION = 1
IMAGES_DIR = Path(__file__).with_name("demo_images")
PHOTOS = ("astronaut", "chelsea", "coffee", "hopper", "hubble", "raccoon", "retina", "rocket")
DEMO_BANK = "kadid24"
DEMO_TYPES = ("gaussian_blur", "white_noise", "jpeg", "color_saturation_hsv", "linear_contrast", "pixelate")
LEVELS = (1, 2, 3, 4, 5)
SEED = 20240501
SSIM_WEIGHT = 0.6
LABEL_FORMULA = "mos = 100 * (0.6 * clip(SSIM, 0, 1) + 0.4 * (5 - level) / 4)"
LABELS_NOTE = ("synthetic: not human opinions; " + LABEL_FORMULA + ", with SSIM (Wang et al. 2004, 11x11 Gaussian "
               "window, sigma 1.5, mean over R, G, B) of the stored 8-bit distorted image against the pristine "
               "photograph, both downsampled 2x2 by averaging")
INDEX_NAME = "index.json"
_INDEX_FORMAT = 1
_PNG_OPTIONS = {"format": "PNG", "compress_level": 1, "compress_type": 3}  # zlib Z_RLE: fast, lossless


def default_root() -> Path:
    """``$XDG_CACHE_HOME/iqa-store/demo-v<DEMO_VERSION>``, with ``~/.cache`` when XDG_CACHE_HOME is unset."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "iqa-store" / f"demo-v{DEMO_VERSION}"


def synthetic_mos(ssim_value: float, level: int) -> float:
    """The demo label (see the module docstring)."""
    similarity = min(max(float(ssim_value), 0.0), 1.0)
    level_term = (LEVELS[-1] - level) / (LEVELS[-1] - LEVELS[0])
    return 100.0 * (SSIM_WEIGHT * similarity + (1.0 - SSIM_WEIGHT) * level_term)


def image_name(photo: str, distortion: str, level: int) -> str:
    return f"{photo}_{distortion}_{level}"


def generation_spec() -> dict[str, Any]:
    """Everything that determines the generated tree; its fingerprint marks a valid cache."""
    from iqa_store.distortions import get_bank

    bank = get_bank(DEMO_BANK)
    return {
        "version": DEMO_VERSION,
        "photos": {photo: file_sha256(IMAGES_DIR / f"{photo}.jpg") for photo in PHOTOS},
        "bank": DEMO_BANK,
        "types": {t: {"values": list(bank.entry(t).values), "options": dict(bank.entry(t).options)}
                  for t in DEMO_TYPES},
        "levels": list(LEVELS),
        "seed": SEED,
        "labels": LABELS_NOTE,
    }


@dataclass
class DemoDataset(DatasetAdapter):
    """Offline demo: 8 real photographs x 6 distortions x 5 levels, synthetic labels on 0-100."""

    name: ClassVar[str] = "demo"
    env_var: ClassVar[str | None] = "IQA_DEMO_ROOT"
    layout: ClassVar[str] = (f"generated on first use into any directory: {INDEX_NAME} and "
                             "images/<photo>_<distortion>_<level>.png")
    citation: ClassVar[str] = "synthetic labels; photographs: see iqa_store/datasets/demo_images/LICENSES.md"

    def resolve_root(self, root: str | Path | None) -> Path:
        """``root``, else ``$IQA_DEMO_ROOT``, else the user cache; need not exist yet."""
        if root is None:
            root = os.environ.get(self.env_var) or default_root()
        path = Path(root).expanduser()
        if path.exists() and not path.is_dir():
            raise ManifestError(f"{self.name}: cache root {path} exists and is not a directory")
        return path

    def read(self, root: Path) -> Manifest:
        rows = ensure_generated(root)
        table = pd.DataFrame({key: [row[key] for row in rows] for key in ("image_id", "path", "mos", "reference_id")})
        info = {
            "labels": LABELS_NOTE,
            "label_formula": LABEL_FORMULA,
            "synthetic": True,
            "distortion_bank": DEMO_BANK,
            "distortion_types": list(DEMO_TYPES),
            "levels": list(LEVELS),
            "photos": list(PHOTOS),
            "licenses": str(IMAGES_DIR / "LICENSES.md"),
            "references": {photo: str(IMAGES_DIR / f"{photo}.jpg") for photo in PHOTOS},
            "images": {row["image_id"]: {"distortion": row["distortion"], "level": row["level"], "ssim": row["ssim"]}
                       for row in rows},
        }
        return Manifest(self.name, root, table, mos_range=(0.0, 100.0), info=info)


def ensure_generated(root: Path) -> list[dict[str, Any]]:
    """The index rows of a complete tree under ``root``, generating what is missing first."""
    spec = generation_spec()
    spec_fingerprint = fingerprint(spec)
    index = _read_index(root)
    if index is None or index.get("format") != _INDEX_FORMAT or index.get("spec") != spec_fingerprint:
        return _generate(root, spec, PHOTOS, previous=[])
    try:
        broken = {row["reference_id"] for row in index["rows"] if not _file_matches(root, row)}
        complete = {row["reference_id"] for row in index["rows"]} == set(PHOTOS)
    except (KeyError, TypeError):
        return _generate(root, spec, PHOTOS, previous=[])
    if not complete:
        return _generate(root, spec, PHOTOS, previous=[])
    if broken:
        return _generate(root, spec, [p for p in PHOTOS if p in broken], previous=index["rows"])
    return index["rows"]


def _read_index(root: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((root / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def _file_matches(root: Path, row: dict[str, Any]) -> bool:
    try:
        return (root / row["path"]).stat().st_size == row["size"]
    except OSError:
        return False


def _write_atomic(path: Path, write: Callable[[Any], Any]) -> None:
    """Write through a temporary file in the same directory, then rename: never a partial file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _generate(root: Path, spec: dict[str, Any], photos: Iterable[str],
              previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write the images of ``photos`` (one photograph per worker thread), keep ``previous`` rows of
    the others, then write the index, atomically and last."""
    import torch

    photos = list(photos)
    (root / "images").mkdir(parents=True, exist_ok=True)
    # The images are small: one torch thread per worker is faster than intra-op parallelism, and
    # much faster when the machine's cores are already busy (OpenMP oversubscription).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(len(photos), os.cpu_count() or 1))) as workers:
            fresh = dict(zip(photos, workers.map(lambda photo: _generate_photo(root, photo), photos)))
    finally:
        torch.set_num_threads(threads)
    rows = []
    for photo in PHOTOS:
        rows.extend(fresh[photo] if photo in fresh else [r for r in previous if r["reference_id"] == photo])
    index = {"format": _INDEX_FORMAT, "spec": fingerprint(spec), "spec_data": spec, "labels": LABELS_NOTE,
             "rows": rows}
    payload = json.dumps(index, indent=1, sort_keys=True).encode()
    _write_atomic(root / INDEX_NAME, lambda stream: stream.write(payload))
    return rows


def _generate_photo(root: Path, photo: str) -> list[dict[str, Any]]:
    """Distort one photograph with every type and level, write the PNGs, return its index rows."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from iqa_store.distortions import apply
    from iqa_store.distortions.measures import ssim

    with Image.open(IMAGES_DIR / f"{photo}.jpg") as image:
        pristine = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)[None] / 255.0
    reference = F.avg_pool2d(pristine, 2).expand(len(LEVELS), -1, -1, -1)
    rows = []
    for distortion in DEMO_TYPES:
        distorted = torch.cat([apply(pristine, DEMO_BANK, distortion, level, torch.Generator().manual_seed(
            int(fingerprint({"seed": SEED, "photo": photo, "type": distortion, "level": level}), 16)))
            for level in LEVELS])
        stored = (distorted * 255.0).round().clamp(0, 255).to(torch.uint8)
        similarities = ssim(F.avg_pool2d(stored.float() / 255.0, 2), reference).tolist()
        for level, image, similarity in zip(LEVELS, stored, similarities):
            name = image_name(photo, distortion, level)
            relative = f"images/{name}.png"
            array = image.permute(1, 2, 0).contiguous().numpy()
            _write_atomic(root / relative, lambda stream: Image.fromarray(array).save(stream, **_PNG_OPTIONS))
            similarity = round(similarity, 6)
            rows.append({"image_id": name, "path": relative, "reference_id": photo, "distortion": distortion,
                         "level": level, "ssim": similarity, "mos": round(synthetic_mos(similarity, level), 6),
                         "size": (root / relative).stat().st_size})
    return rows

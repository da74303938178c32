"""SPAQ (smartphone photography attribute and quality), read from the official release.

Layout (``ROOT`` is what the user passes, or ``$IQA_SPAQ_ROOT``)::

    ROOT/Annotations/MOS and Image attribute scores.xlsx   Image name, MOS, Brightness, ...
    ROOT/TestImage/00001.jpg .. 11125.jpg                    full-resolution photographs

The sheet's name differs between copies, so the header row is found by content. Copies also
differ in the extension the sheet gives (``.jpg`` or ``.png``): a name is matched by stem when
the exact file is absent.

The customary preprocessing (Fang et al. 2020, and every paper that follows them) resizes each
photograph so that its shorter side is 512 pixels: ``short_side=512``. The resized copies are
written once into a cache folder (bicubic, lossless PNG, so no second compression) and the
manifest points there; the setting is recorded in ``info["preprocessing"]``, which the manifest
hash covers, so features of resized and original images never mix.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
from PIL import Image

from iqa_store.datasets.base import DatasetAdapter
from iqa_store.datasets.manifest import Manifest, ManifestError
from iqa_store.datasets.official import (FolderIndex, Published, cell_number, in_range, read_sheet, require_dir,
                                         require_file)

__all__ = ["SPAQ", "resize_short_side"]

LABELS = "Annotations/MOS and Image attribute scores.xlsx"
MOS_RANGE = (0.0, 100.0)


@dataclass
class SPAQ(DatasetAdapter):
    """SPAQ: 11,125 smartphone photographs, MOS 0-100 (higher is better); no std published.

    ``short_side``: resize so the shorter side has this many pixels (512 by convention); None
    keeps the originals. ``cache_dir``: where resized copies go (default
    ``$XDG_CACHE_HOME/iqa-store/spaq-short<N>``).
    """

    name: ClassVar[str] = "spaq"
    env_var: ClassVar[str | None] = "IQA_SPAQ_ROOT"
    layout: ClassVar[str] = f"ROOT/{LABELS} and ROOT/TestImage/00001.jpg ..."
    citation: ClassVar[str] = ("Y. Fang, H. Zhu, Y. Zeng, K. Ma, Z. Wang. Perceptual quality assessment of smartphone "
                               "photography. CVPR 2020, 3677-3686.")
    published: ClassVar[Published] = Published(11125, "MOS 0-100, higher is better")

    short_side: int | None = None
    cache_dir: str | None = None

    def read(self, root: Path) -> Manifest:
        if self.short_side is not None and (not isinstance(self.short_side, int) or self.short_side < 1):
            raise ManifestError(f"spaq: short_side must be a positive integer, got {self.short_side!r}")
        labels = require_file(root, [LABELS], dataset=self.name, layout=self.layout)
        images = FolderIndex(root, require_dir(labels.parent.parent, ["TestImage"], dataset=self.name,
                                               layout=self.layout))
        sheet = read_sheet(labels, ["Image name", "MOS"])
        records = []
        for where, name, (score,) in sheet.named_rows():
            mos = in_range(cell_number(score, source=where, what="MOS"), MOS_RANGE, source=where, what="MOS")
            records.append({"image_id": name, "path": images.resolve(name, source=where), "mos": mos, "source": where})
        if not records:
            raise ManifestError(f"{sheet.where(0) if sheet.rows else labels}: no data rows under the header")
        table = pd.DataFrame.from_records(records)
        info = {"label_file": labels.relative_to(root).as_posix(), "sheet": sheet.sheet}
        if self.short_side is None:
            return Manifest(self.name, root, table, MOS_RANGE, "higher_better", info)
        cache = self._cache(self.short_side)
        table["path"] = _resize_all(root, cache, table["path"].tolist(), self.short_side)
        info["preprocessing"] = {"resize_short_side": self.short_side, "filter": "bicubic", "format": "png"}
        info["source_root"] = str(root)
        return Manifest(self.name, cache, table, MOS_RANGE, "higher_better", info)

    def _cache(self, short_side: int) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "iqa-store" / f"spaq-short{short_side}"


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """``image`` scaled (bicubic) so its shorter side is ``short_side``, aspect ratio kept."""
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _resize_all(root: Path, cache: Path, paths: list[str], short_side: int) -> list[str]:
    """Resized copies of ``paths`` under ``cache`` (made when missing or older than the source)."""
    targets = [Path(p).with_suffix(".png").as_posix() for p in paths]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Pillow releases the GIL while decoding
        list(pool.map(lambda pair: _resize_one(root / pair[0], cache / pair[1], short_side), zip(paths, targets)))
    return targets


def _resize_one(source: Path, target: Path, short_side: int) -> None:
    """Missing or unreadable sources get no copy: extraction then reports the row, verify the cause."""
    try:
        if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            return
        with Image.open(source) as image:
            resized = resize_short_side(image.convert("RGB"), short_side)
    except OSError:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    resized.save(partial, format="PNG")
    os.replace(partial, target)  # concurrent readers see the old copy or the new one, never half

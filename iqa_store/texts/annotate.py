"""Annotate images with content, distortion and appearance texts (SLIQUE's TADAC recipe).

Per image, in this order (kinds that are switched off are left out):

- content: one text, "A photo of a(n) {label}." from its label, else the captioner's caption
  (images with neither get none);
- distortion (images whose manifest knows type and level): ``variants`` texts of its merged type
  and level, each a phrase of the type with a degree word of the level; pristine images
  (level 0) get pristine phrases instead; images of unknown type or level get none;
- appearance: for each of brightness, contrast, sharpness and colourfulness, ``variants``
  phrases of the image's level (tertiles over the images annotated together).

The draws are seeded by (``seed``, image id): an image's phrases do not depend on the other
images, only its appearance levels do. The table's columns are ``TABLE_COLUMNS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from iqa_store.fingerprint import fingerprint
from iqa_store.images import IMAGE_SUFFIXES, ImageReadError, read_rgb_array
from iqa_store.texts.appearance import APPEARANCE_ATTRIBUTES, measure_appearance, tertile_levels
from iqa_store.texts.content import Captioner, TransformersCaptioner, caption_text
from iqa_store.texts.phrases import PRISTINE_LEVEL, PhraseBook, phrase_book

if TYPE_CHECKING:
    from iqa_store.datasets.manifest import Manifest

__all__ = ["ANNOTATION_VERSION", "AnnotationSettings", "ImageSet", "TABLE_COLUMNS", "TEXT_KINDS", "annotate",
           "annotation_key", "caption_images", "measure_images", "texts_by_image"]

TEXT_KINDS = ("content", "distortion", "appearance")
TABLE_COLUMNS = ("image_id", "id", "kind", "attribute", "level", "text")
ANNOTATION_VERSION = 1  # bump when the same inputs would give other texts


@dataclass(frozen=True)
class AnnotationSettings:
    """What changes the texts (all of it is part of their key in the store)."""

    kinds: tuple[str, ...] = TEXT_KINDS  # the kinds of text to make
    captioner: str | None = None  # transformers model (hub name or folder) for images without a label
    variants: int = 1  # distortion and appearance phrasings per image and attribute
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        unknown = [k for k in self.kinds if k not in TEXT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"text kinds must be some of {', '.join(TEXT_KINDS)}; got {list(self.kinds)}")
        if int(self.variants) < 1:
            raise ValueError(f"variants must be at least 1, got {self.variants}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ImageSet:
    """The images to annotate with what is known of each: its label and (merged type, level)."""

    name: str  # the dataset, or "images" for a folder
    root: Path
    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[str | None, ...]
    distortions: tuple[tuple[str, int] | None, ...]  # (merged type, level); level 0: pristine
    files: tuple[tuple[int, int], ...]  # (size, mtime_ns) per image, -1 when missing

    def fingerprint(self) -> str:
        return fingerprint({"name": self.name, "ids": self.ids, "files": self.files, "labels": self.labels,
                            "distortions": self.distortions})

    @classmethod
    def from_manifest(cls, manifest: "Manifest", labels: Mapping[str, str] | None = None) -> "ImageSet":
        """A dataset's images; ``labels`` (image id or reference image -> label) before the manifest's
        ``info["content_labels"]`` and the labels the package ships for the dataset."""
        book = phrase_book()
        table = manifest.table
        references = [None if pd.isna(r) else str(r) for r in table["reference_id"]]
        known = {**_reference_labels(book, manifest.dataset, references), **manifest.info.get("content_labels", {}),
                 **dict(labels or {})}
        chosen = tuple(known.get(i, known.get(r) if r else None) for i, r in zip(manifest.ids, references))
        distortions = _manifest_distortions(manifest, book)
        return cls(manifest.dataset, Path(manifest.root), tuple(manifest.ids), tuple(manifest.paths), chosen,
                   distortions, _file_identity(manifest.paths))

    @classmethod
    def from_folder(cls, folder: str | Path, *, pristine: bool = False,
                    labels: Mapping[str, str] | None = None) -> "ImageSet":
        """Every image under ``folder`` (ids: paths relative to it); ``pristine``: undistorted photographs,
        given pristine distortion texts."""
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
        ids = tuple(p.relative_to(root).as_posix() for p in paths)
        found = dict(labels or {})
        distortions = tuple(("pristine", PRISTINE_LEVEL) if pristine else None for _ in ids)
        return cls("images", root, ids, tuple(paths), tuple(found.get(i) for i in ids), distortions,
                   _file_identity(paths))


def annotation_key(images: ImageSet, settings: AnnotationSettings) -> str:
    """The key of the texts of ``images`` made with ``settings`` in a store: it changes with the
    images (ids, sizes, mtimes, labels, types), the settings, the phrase files and ``ANNOTATION_VERSION``."""
    return fingerprint({"version": ANNOTATION_VERSION, "images": images.fingerprint(), "settings": settings.to_dict(),
                        "phrases": phrase_book().fingerprint})


def _file_identity(paths: Sequence[Path]) -> tuple[tuple[int, int], ...]:
    identity = []
    for path in paths:
        try:
            stat = Path(path).stat()
            identity.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            identity.append((-1, 0))
    return tuple(identity)


def _reference_labels(book: PhraseBook, dataset: str, references: list[str | None]) -> dict[str, str]:
    """The shipped labels of a dataset's reference images, keyed as its manifest names them."""
    shipped = book.dataset_labels(dataset)
    return {r: shipped[Path(r).stem] for r in references if r and Path(r).stem in shipped}


def _manifest_distortions(manifest: "Manifest", book: PhraseBook) -> tuple[tuple[str, int] | None, ...]:
    """(merged type, level) of each image: from a distortion bank's per-image record (the demo), from
    the release's file names (``datasets.levels``), level 0 for copies of the reference, else None."""
    from iqa_store.datasets.levels import distortion_levels, has_distortion_labels
    per_image = manifest.info.get("images")
    if manifest.info.get("distortion_bank") and isinstance(per_image, dict):
        named = [(per_image[i]["distortion"], per_image[i]["level"]) if i in per_image else None for i in manifest.ids]
        found = [None if n is None else (book.merged_type(manifest.dataset, n[0], bank=True), int(n[1])) for n in named]
    elif has_distortion_labels(manifest.dataset):
        levels = distortion_levels(manifest)
        found = [None if pd.isna(level) else (book.merged_type(manifest.dataset, name), int(level))
                 for name, level in zip(levels["distortion"], levels["level"])]
    else:
        found = [None] * len(manifest)
    pristine = [not pd.isna(r) and str(r) == str(p) for r, p in zip(manifest.table["reference_id"], manifest.table["path"])]
    return tuple(("pristine", PRISTINE_LEVEL) if is_pristine else d for d, is_pristine in zip(found, pristine))


def _measured(path: Path) -> dict[str, float] | str:
    """The appearance measures of one image file, or why it cannot be read."""
    try:
        return measure_appearance(read_rgb_array(path))
    except (ImageReadError, OSError) as error:
        return f"{path}: {error}"


def measure_images(images: ImageSet, *, workers: int = 1, progress: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Decode every image once and measure its appearance, in ``workers`` processes (1: this one).

    Returns the measures (``image_id`` and one column per attribute, readable images only, in
    order) and the images that could not be read (path and reason)."""
    from tqdm import tqdm
    paths = list(images.paths)

    def collected(results: Iterable[dict[str, float] | str]) -> list[dict[str, float] | str]:
        return list(tqdm(results, total=len(paths), desc=f"annotate {images.name}", unit="img", file=sys.stderr,
                         disable=not progress, leave=False))

    if workers > 1 and not multiprocessing.current_process().daemon:  # a daemon (a pool's, Dask's) cannot fork
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            measured = collected(pool.map(_measured, paths, chunksize=16))
    else:
        measured = collected(map(_measured, paths))
    rows = [{"image_id": i, **m} for i, m in zip(images.ids, measured) if isinstance(m, dict)]
    return (pd.DataFrame(rows, columns=["image_id", *APPEARANCE_ATTRIBUTES]),
            [m for m in measured if isinstance(m, str)])


def caption_images(images: ImageSet, wanted: Sequence[bool], captioner: Captioner, *,
                   progress: bool = True) -> tuple[dict[str, str], list[str]]:
    """Captions of the images ``wanted`` marks, by image id, in batches of the captioner's
    ``batch_size``; and the images that could not be read."""
    from tqdm import tqdm
    chosen = [(i, p) for i, p, w in zip(images.ids, images.paths, wanted) if w]
    size = int(getattr(captioner, "batch_size", 8))
    captions: dict[str, str] = {}
    skipped: list[str] = []
    with tqdm(total=len(chosen), desc=f"caption {images.name}", unit="img", file=sys.stderr, disable=not progress,
              leave=False) as bar:
        for start in range(0, len(chosen), size):
            batch = []
            for image_id, path in chosen[start:start + size]:
                try:
                    batch.append((image_id, read_rgb_array(path)))
                except (ImageReadError, OSError) as error:
                    skipped.append(f"{path}: {error}")
            if batch:
                captions.update(zip([i for i, _ in batch], captioner.caption([p for _, p in batch])))
            bar.update(len(chosen[start:start + size]))
    return captions, skipped


def _generator(seed: int, image_id: str) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), digest]))


def _pick(options: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` different options (all of them when there are fewer)."""
    return [options[i] for i in rng.choice(len(options), size=min(count, len(options)), replace=False)]


def annotate(source: "Manifest | ImageSet | str | Path", settings: AnnotationSettings = AnnotationSettings(), *,
             captioner: Captioner | None = None, workers: int = 1, progress: bool = True,
             log: Callable[[str], None] = lambda line: None) -> pd.DataFrame:
    """The texts of every image of ``source`` (a manifest, an ``ImageSet`` or an image folder) as a
    table with ``TABLE_COLUMNS``; ``table.attrs["skipped"]`` lists unreadable images (images are only
    decoded for appearance texts and captions: without those, nothing is read but the labels).

    ``captioner`` replaces the one ``settings.captioner`` names; ``workers`` processes measure the
    images (captions are made in this one); ``log`` gets one-line notes (images left without
    content texts, unreadable images)."""
    images = source if isinstance(source, ImageSet) else (
        ImageSet.from_folder(source) if isinstance(source, (str, Path)) else ImageSet.from_manifest(source))
    book = phrase_book()
    content = "content" in settings.kinds
    unlabelled = [content and label is None for label in images.labels]
    if any(unlabelled) and captioner is None and settings.captioner:
        captioner = TransformersCaptioner(settings.captioner)
        captioner.load()  # fail before any work when its weights cannot be had
    if "appearance" in settings.kinds:
        measures, skipped = measure_images(images, workers=workers, progress=progress)
    else:  # labels and types alone: no pixel is needed
        measures, skipped = pd.DataFrame({"image_id": list(images.ids)}), []
    readable = dict(zip(measures["image_id"], range(len(measures))))
    captions: dict[str, str] = {}
    if captioner is not None and any(unlabelled):
        wanted = [u and i in readable for i, u in zip(images.ids, unlabelled)]
        captions, unread = caption_images(images, wanted, captioner, progress=progress)
        skipped += unread
    levels = {a: tertile_levels(measures[a].tolist()) for a in APPEARANCE_ATTRIBUTES if a in measures}
    rows: list[tuple[str, str, str, str, str, str]] = []
    for image_id, label, distortion in zip(images.ids, images.labels, images.distortions):
        if image_id not in readable:
            continue
        rng = _generator(settings.seed, image_id)
        made: list[tuple[str, str, str, str]] = []  # kind, attribute, level, text
        if content and label is not None:
            made.append(("content", "label", "", book.content_text(label)))
        elif content and captions.get(image_id):
            made.append(("content", "caption", "", caption_text(captions[image_id])))
        if "distortion" in settings.kinds and distortion is not None:
            merged, level = distortion
            made += [("distortion", merged, str(level), text)
                     for text in _pick(book.distortion_texts(merged, level), settings.variants, rng)]
        if "appearance" in settings.kinds:
            row = readable[image_id]
            for attribute in APPEARANCE_ATTRIBUTES:
                level = levels[attribute][row]
                made += [("appearance", attribute, level, text)
                         for text in _pick(book.appearance[attribute][level], settings.variants, rng)]
        counts: dict[tuple[str, str], int] = {}
        for kind, attribute, level, text in made:
            n = counts[kind, attribute] = counts.get((kind, attribute), -1) + 1
            rows.append((image_id, f"{image_id}/{kind}/{attribute}/{n}", kind, attribute, level, text))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    missing = sum(1 for image_id, u in zip(images.ids, unlabelled) if u and image_id in readable and image_id not in captions)
    if missing:
        log(f"{missing} image(s) of {images.name} have no content label" + (
            "" if captioner is not None else " and no captioner was given: no content texts for them"))
    if skipped:
        log(f"{len(skipped)} image(s) could not be read and have no texts; first: {skipped[0]}")
    table.attrs["skipped"] = skipped
    return table


def texts_by_image(table: pd.DataFrame, kinds: Sequence[str] = TEXT_KINDS) -> dict[str, tuple[str, ...]]:
    """Each image's texts of ``kinds``, in table order: what a contrastive stage samples its captions from."""
    unknown = [k for k in kinds if k not in TEXT_KINDS]
    if unknown:
        raise ValueError(f"text kinds must be some of {', '.join(TEXT_KINDS)}; got {unknown}")
    chosen = table[table["kind"].isin(list(kinds))]
    return {str(image_id): tuple(group["text"]) for image_id, group in chosen.groupby("image_id", sort=False)}

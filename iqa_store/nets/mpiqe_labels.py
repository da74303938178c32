"""MP-IQE's scene and distortion classes, and where an image's labels come from.

The 9 scene and 11 distortion classes are MP-IQE's (Pan et al. 2024, Preliminaries), kept in
``prompts/mpiqe_classes.json`` with how LIQE names them. Labels for an image come from, in order:

* LIQE's released per-image label files (``zwx8981/LIQE``, ``IQA_Database/*/splits2/*/*_clip.txt``):
  tab-separated ``path  mos  distortion  scene1  scene2  scene3``, scenes padded with ``invalid``;
  the 33 raw distortion names map to the 11 classes by LIQE's ``dist_map``. Only the names are
  read, never the file's MOS. An image is matched to a row by its path: the row's path components
  are a suffix of the manifest path's, or the other way round (LIVE's ``img1.bmp`` exists in
  five folders, so a bare file name is not enough), else by its file name when exactly one row
  has that name (KonIQ's rows name ``1024x768/``, its ``-o resolution=512x384`` copy another folder);
* a synthetic dataset's own distortion type, read from its official file layout (LIVE's and
  CSIQ's folders, KADID-10k's and TID2013's file names), mapped to the 11 classes;
* otherwise nothing: the training stage then falls back to CLIP zero-shot pseudo-labels from the
  same class lists (``zero_shot_prompts``), or trains without the alignment terms.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from iqa_store.fingerprint import fingerprint

__all__ = ["CLASSES_FILE", "ClassLists", "ImageLabels", "LabelError", "LiqeLabels", "class_lists",
           "dataset_distortion_source", "dataset_distortions", "read_liqe_labels", "zero_shot_prompts"]

CLASSES_FILE = Path(__file__).parent / "prompts" / "mpiqe_classes.json"
LIQE_SUFFIX = "_clip.txt"
_LIQE_FIELDS = 6
_NAME_FIELD = re.compile(r"^[A-Za-z]+\d+_(\d+)_\d+\.[A-Za-z]+$")  # KADID I01_02_03.png, TID2013 i01_02_3.bmp


class LabelError(ValueError):
    """A label file that cannot be read, naming the file and line."""


@dataclass(frozen=True)
class ClassLists:
    scene: tuple[str, ...]
    distortion: tuple[str, ...]


@dataclass(frozen=True)
class ImageLabels:
    """One image's classes: its scenes (indices into ``ClassLists.scene``, LIQE gives up to three) and
    its dominant distortion (an index into ``ClassLists.distortion``); empty / None where unknown."""

    scenes: tuple[int, ...] = ()
    distortion: int | None = None


@functools.cache
def _data() -> dict[str, Any]:
    return json.loads(CLASSES_FILE.read_text(encoding="utf-8"))


def class_lists() -> ClassLists:
    data = _data()
    return ClassLists(tuple(data["scene"]), tuple(data["distortion"]))


def zero_shot_prompts(family: str) -> list[str]:
    """The prompts of the zero-shot fallback for ``family`` ("scene" or "distortion"), one per class."""
    template = _data()["zero_shot_prompts"][family]
    return [template.format(name) for name in getattr(class_lists(), family)]


def _distortion_index(raw: str) -> int | None:
    mapped = _data()["liqe_distortion"].get(raw.strip().lower())
    return None if mapped is None else class_lists().distortion.index(mapped)


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part.lower() for part in PurePosixPath(str(path).replace("\\", "/")).parts if part not in ("", "."))


@dataclass(frozen=True)
class LiqeLabels:
    """LIQE's labels by path (lower-case components), and the files they came from."""

    by_path: dict[tuple[str, ...], ImageLabels]
    files: tuple[str, ...]

    def lookup(self, path: str) -> ImageLabels | None:
        """The labels of the row whose path matches ``path`` (a manifest path), None if no row does."""
        wanted = _parts(path)
        named = list(self._same_name(wanted[-1]))
        found = {labels for parts, labels in named if wanted[-len(parts):] == parts or parts[-len(wanted):] == wanted}
        if not found and len(named) == 1:  # one row of that name in another folder (KonIQ's 512x384/ copy)
            found = {named[0][1]}
        if len(found) > 1:
            raise LabelError(f"{path}: several LIQE rows with different labels match this path; give a label "
                             "folder of one dataset")
        return next(iter(found), None)

    def identity(self) -> str:
        """A fingerprint of every row's path and labels."""
        return fingerprint(sorted([list(parts), list(labels.scenes), labels.distortion]
                                  for parts, labels in self.by_path.items()))

    def _same_name(self, name: str) -> Iterable[tuple[tuple[str, ...], ImageLabels]]:
        return self._by_name().get(name, ())

    def _by_name(self) -> dict[str, list[tuple[tuple[str, ...], ImageLabels]]]:
        cached = self.__dict__.get("_names")
        if cached is None:
            cached = {}
            for parts, labels in self.by_path.items():
                cached.setdefault(parts[-1], []).append((parts, labels))
            object.__setattr__(self, "_names", cached)
        return cached


def read_liqe_labels(folder: str | Path) -> LiqeLabels:
    """Every ``*_clip.txt`` file under ``folder`` (LIQE's splits hold each image several times, with
    the same labels: a row contradicting another is an error)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise LabelError(f"LIQE label folder not found: {root}")
    files = sorted(p for p in root.rglob(f"*{LIQE_SUFFIX}") if p.is_file())
    if not files:
        raise LabelError(f"{root} holds no LIQE label file (*{LIQE_SUFFIX}, e.g. splits2/1/clive_train_clip.txt)")
    by_path: dict[tuple[str, ...], ImageLabels] = {}
    where: dict[tuple[str, ...], str] = {}
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            source = f"{file}:{number}"
            labels = _liqe_row(line, source)
            key = _parts(line.split("\t", 1)[0])
            if key in by_path and by_path[key] != labels:
                raise LabelError(f"{source}: labels of {line.split(chr(9), 1)[0]!r} differ from {where[key]}")
            by_path.setdefault(key, labels)
            where.setdefault(key, source)
    return LiqeLabels(by_path, tuple(str(f) for f in files))


def _liqe_row(line: str, source: str) -> ImageLabels:
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != _LIQE_FIELDS:
        raise LabelError(f"{source}: expected {_LIQE_FIELDS} tab-separated fields (path, mos, distortion, "
                         f"3 scenes), found {len(fields)}")
    distortion = _distortion_index(fields[2])
    if distortion is None:
        raise LabelError(f"{source}: unknown LIQE distortion {fields[2]!r}")
    scene_names, scenes = _data()["liqe_scene"], []
    for name in fields[3:]:
        name = name.strip().lower()
        if name == "invalid":
            continue
        if name not in scene_names:
            raise LabelError(f"{source}: unknown LIQE scene {name!r}")
        scenes.append(class_lists().scene.index(scene_names[name]))
    if not scenes:
        raise LabelError(f"{source}: no scene (all three are 'invalid')")
    return ImageLabels(tuple(sorted(set(scenes))), distortion)


def dataset_distortions(dataset: str, paths: Sequence[str]) -> list[int | None] | None:
    """Each image's distortion class from the dataset's official layout; None for a dataset without
    distortion types in its layout (authentic sets, the csv adapter), None per image that does not fit."""
    rule = _data()["dataset_distortions"].get(dataset)
    if rule is None:
        return None
    types = rule["types"]
    return [_distortion_index(raw) if (raw := _raw_type(rule["from"], types, path)) else None for path in paths]


def _raw_type(kind: str, types: dict[str, str], path: str) -> str | None:
    parts = _parts(path)
    if kind == "folder":
        return next((types[part] for part in reversed(parts[:-1]) if part in types), None)
    match = _NAME_FIELD.match(PurePosixPath(str(path)).name)
    return types.get(match.group(1).zfill(2)) if match else None


def dataset_distortion_source(dataset: str) -> str | None:
    """How ``dataset_distortions`` reads ``dataset``'s types (for the provenance), None if it does not."""
    rule = _data()["dataset_distortions"].get(dataset)
    return None if rule is None else rule["source"]

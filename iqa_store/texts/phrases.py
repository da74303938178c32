"""The phrase lists (JSON files in ``iqa_store/texts/data/``) and the texts they make.

``distortions.json``: 10 phrases for each of the 19 merged distortion types, each holding one
``{degree}``, the degree words of levels 1-5, and 20 phrases for pristine images.
``appearance.json``: 20 phrases per appearance attribute and level. ``distortion_types.json``:
each dataset's (and each distortion bank's) type names mapped to the merged types.
``content.json``: the content template, the a/an rule and the demo photographs' labels.
All of them are iqa-store's own text: the paper's appendix lists were never published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from iqa_store.fingerprint import fingerprint

__all__ = ["DATA_DIR", "DEGREE_PLACEHOLDER", "DISTORTION_LEVELS", "PRISTINE_LEVEL", "PhraseBook", "phrase_book"]

DATA_DIR = Path(__file__).with_name("data")
DEGREE_PLACEHOLDER = "{degree}"
DISTORTION_LEVELS = (1, 2, 3, 4, 5)
PRISTINE_LEVEL = 0


@dataclass(frozen=True)
class PhraseBook:
    """Everything read from the data files; ``fingerprint`` changes whenever any of them does."""

    degrees: Mapping[int, tuple[str, ...]]
    distortion: Mapping[str, tuple[str, ...]]  # merged type -> phrases with {degree}
    pristine: tuple[str, ...]
    appearance: Mapping[str, Mapping[str, tuple[str, ...]]]  # attribute -> level -> phrases
    dataset_types: Mapping[str, Mapping[str, str]]  # dataset -> its type name -> merged type
    bank_types: Mapping[str, str]  # distortion-bank type -> merged type
    content: Mapping[str, Any]
    fingerprint: str

    def distortion_texts(self, merged_type: str, level: int) -> tuple[str, ...]:
        """Every text a (merged type, level) can get: each phrase with each of the level's degree words;
        the pristine phrases for level 0."""
        if level == PRISTINE_LEVEL:
            return self.pristine
        if merged_type not in self.distortion:
            raise ValueError(f"no phrases for distortion type {merged_type!r}; merged types: {sorted(self.distortion)}")
        if level not in self.degrees:
            raise ValueError(f"distortion level {level} is not one of {sorted(self.degrees)} (0: pristine)")
        return tuple(phrase.replace(DEGREE_PLACEHOLDER, word)
                     for phrase in self.distortion[merged_type] for word in self.degrees[level])

    def merged_type(self, dataset: str, type_name: str, *, bank: bool = False) -> str:
        """The merged type of ``type_name`` as ``dataset`` (or, with ``bank``, a distortion bank) names it."""
        table = self.bank_types if bank else self.dataset_types.get(dataset)
        if table is None:
            raise ValueError(f"no distortion-type mapping for dataset {dataset!r} in {DATA_DIR / 'distortion_types.json'}")
        if type_name not in table:
            raise ValueError(f"{dataset}: distortion type {type_name!r} is not in the mapping of "
                             f"{DATA_DIR / 'distortion_types.json'}")
        return table[type_name]

    def content_text(self, label: str) -> str:
        """``A photo of a(n) {label}.`` with the article the label's first word takes."""
        label = " ".join(str(label).split())
        if not label:
            raise ValueError("an empty content label")
        return self.content["template"].format(article=self._article(label), label=label)

    def _article(self, label: str) -> str:
        word = label.lower()
        if any(word.startswith(p) for p in self.content["an_prefixes"]):
            return "an"
        if any(word.startswith(p) for p in self.content["a_prefixes"]):
            return "a"
        return "an" if word[0] in self.content["an_before"] else "a"

    def dataset_labels(self, dataset: str) -> Mapping[str, str]:
        """The labels the package ships for ``dataset``'s reference images (the demo's photographs)."""
        return self.content["labels"].get(dataset, {})


def _read(name: str) -> dict[str, Any]:
    with open(DATA_DIR / name, encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=1)
def phrase_book() -> PhraseBook:
    distortions, appearance = _read("distortions.json"), _read("appearance.json")
    types, content = _read("distortion_types.json"), _read("content.json")
    return PhraseBook(
        degrees={int(level): tuple(words) for level, words in distortions["degrees"].items()},
        distortion={name: tuple(phrases) for name, phrases in distortions["types"].items()},
        pristine=tuple(distortions["pristine"]),
        appearance={attribute: {level: tuple(phrases) for level, phrases in levels.items()}
                    for attribute, levels in appearance.items() if attribute != "about"},
        dataset_types=types["datasets"], bank_types=types["banks"], content=content,
        fingerprint=fingerprint([distortions, appearance, types, content]))

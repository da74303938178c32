"""Where an extractor's weights come from: one syntax for every extractor, resolved here.

* ``registry:NAME[/FINGERPRINT]``: an encoder of the store's registry (``iqa-store ls``), written
  by a training stage; its record must name the extractor as its reader. The extractor gets
  the encoder's safetensors file and its config; the feature set gets the encoder's scope.
* a local path: a checkpoint file (safetensors, or a tensor-only torch file) or a folder
  (transformers ``save_pretrained``), read by the extractor without unpickling.
* nothing: the extractor's published weights (its hub tag, through the usual cache).

Extractors never open the store: they receive a path (and a config) from ``resolve_weights``.
Encoders trained per split are found by their scope (``scoped_weights``): one per split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from iqa_store.store import EncoderRecord, FeatureStore, Scope, StoreError, get_encoder, list_encoders

__all__ = ["REGISTRY_PREFIX", "ResolvedWeights", "resolve_weights", "scoped_weights"]

REGISTRY_PREFIX = "registry:"


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights as an extractor receives them; ``path`` None means its published weights."""

    source: str  # "registry", "file" or "published"
    path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # a registry encoder's config, for its reader
    scope: Scope | None = None
    label: str = "published weights"

    @classmethod
    def of_encoder(cls, record: EncoderRecord) -> "ResolvedWeights":
        return cls("registry", str(record.weights_path), dict(record.config), record.scope,
                   f"{REGISTRY_PREFIX}{record.id}")


def resolve_weights(weights: str | Path | None, model: str, store: FeatureStore) -> ResolvedWeights:
    """``weights`` as given (``registry:...``, a path, or None) for extractor ``model``."""
    if weights is None:
        return ResolvedWeights("published")
    text = str(weights)
    if text.startswith(REGISTRY_PREFIX):
        record = get_encoder(store, text.removeprefix(REGISTRY_PREFIX))
        _check_reader(record, model)
        return ResolvedWeights.of_encoder(record)
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path} (give a checkpoint file, a save_pretrained folder, "
                                f"or {REGISTRY_PREFIX}NAME[/FINGERPRINT] for an encoder of the store)")
    return ResolvedWeights("file", str(path), label=str(path))


def scoped_weights(store: FeatureStore, model: str, scopes: Sequence[Scope], name: str | None = None,
                   train_command: str = "") -> list[ResolvedWeights]:
    """The registry encoder read by ``model`` trained for each scope (one split each), in order.

    ``name``: only encoders registered under it (when one stage was trained several ways).
    A scope without an encoder, or with several, is an error saying what to do.
    """
    readers = [r for r in list_encoders(store) if _reader(r) == model and r.scope is not None
               and (name is None or r.name == name)]
    resolved = []
    for scope in scopes:
        matches = [r for r in readers if r.scope == scope]
        if not matches:
            trained = sorted({r.scope.describe() for r in readers if r.scope.dataset == scope.dataset})
            hint = f"; the registry has {model} for: {', '.join(trained)}" if trained else ""
            raise StoreError(f"no {model} encoder trained for {scope.describe()} in {store.root}{hint}. "
                             f"Train it first{': ' + train_command if train_command else ''}")
        if len(matches) > 1:
            listing = ", ".join(r.id for r in matches)
            raise StoreError(f"{len(matches)} {model} encoders were trained for {scope.describe()} ({listing}): "
                             f"give their registry name ({REGISTRY_PREFIX}NAME) to pick one")
        resolved.append(ResolvedWeights.of_encoder(matches[0]))
    return resolved


def _reader(record: EncoderRecord) -> str | None:
    # encoders written before readers were recorded name their stage, which was their reader's name
    return record.config.get("reader", record.config.get("stage"))


def _check_reader(record: EncoderRecord, model: str) -> None:
    reader = _reader(record)
    if reader != model:
        raise StoreError(f"encoder {record.id} is read by extractor {reader!r}, not {model!r}: "
                         f"extract it with -m {reader}")

"""Encoders in the registry: safetensors weights + config + provenance + fingerprint.

Layout of ``encoders/<name>/<fingerprint>/``: ``model.safetensors``, ``encoder.json``
(config, provenance, scope, fingerprint, created). A folder appears in one rename, complete.
The config names the extractor that reads it (``reader``); the scope, for an encoder trained on
one split's training rows, which split (``iqa_store.store.scope``).
Weights are only ever read through safetensors: nothing in the registry is unpickled.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iqa_store.fingerprint import file_sha256, fingerprint
from iqa_store.store.featureset import now_iso
from iqa_store.store.files import read_json, storage_errors, write_json_atomic
from iqa_store.store.scope import Scope, scope_from_dict

if TYPE_CHECKING:
    from iqa_store.store.store import FeatureStore

WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "encoder.json"


@dataclass(frozen=True)
class EncoderRecord:
    name: str
    fingerprint: str
    path: Path
    config: dict[str, Any]
    provenance: dict[str, Any]
    weights_sha256: str
    created: str
    scope: Scope | None = None

    @property
    def id(self) -> str:
        return f"{self.name}/{self.fingerprint}"

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    def load_state_dict(self) -> dict[str, Any]:
        from safetensors.torch import load_file
        return load_file(str(self.weights_path))


def save_encoder(store: "FeatureStore", name: str, state_dict: dict[str, Any], config: dict[str, Any],
                 provenance: dict[str, Any], scope: Scope | None = None) -> EncoderRecord:
    """Write an encoder; its fingerprint covers the weights' bytes, the config and the scope."""
    from safetensors.torch import save_file

    staging = store.staging_path()
    try:
        with storage_errors(f"encoder {name} in store {store.root}"):
            staging.mkdir(parents=True)
            tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
            save_file(tensors, str(staging / WEIGHTS_FILE))
            weights_sha = file_sha256(staging / WEIGHTS_FILE)
            identity = {"name": name, "config": config, "weights": weights_sha}
            if scope is not None:  # unscoped encoders keep the fingerprints they had before scopes existed
                identity["scope"] = scope.to_dict()
            fp = fingerprint(identity)
            write_json_atomic(staging / RECORD_FILE, {"name": name, "fingerprint": fp, "config": config,
                                                      "provenance": provenance, "weights_sha256": weights_sha,
                                                      "scope": None if scope is None else scope.to_dict(),
                                                      "created": now_iso()})
            final = store.encoders_dir / name / fp
            final.parent.mkdir(parents=True, exist_ok=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a half-written encoder never reaches the registry
        raise
    try:
        staging.rename(final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # identical encoder already registered
    return _record(final)


def _record(path: Path) -> EncoderRecord:
    data = read_json(path / RECORD_FILE)
    return EncoderRecord(data["name"], data["fingerprint"], path, data["config"], data["provenance"],
                         data["weights_sha256"], data["created"], scope_from_dict(data.get("scope")))


def list_encoders(store: "FeatureStore") -> list[EncoderRecord]:
    return [_record(p.parent) for p in sorted(store.encoders_dir.glob(f"*/*/{RECORD_FILE}"))]


def get_encoder(store: "FeatureStore", encoder_id: str) -> EncoderRecord:
    """By ``name/fingerprint`` (a unique prefix of the fingerprint is enough) or ``name`` alone if unique."""
    from iqa_store.store.store import StoreError
    name, _, prefix = encoder_id.partition("/")
    matches = [r for r in list_encoders(store) if r.name == name and r.fingerprint.startswith(prefix)]
    if len(matches) != 1:
        found = ", ".join(r.id for r in matches) or "none"
        raise StoreError(f"encoder {encoder_id!r} matches {len(matches)} registered encoders ({found}) in {store.root}")
    return matches[0]

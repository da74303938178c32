"""Content fingerprints: sha256 over canonical JSON, and file hashes.

We do not use dask.tokenize or pickle-based hashing: a stored fingerprint must be the same
in every process and every release, so it is computed from plain JSON data only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_HASH_BLOCK = 1 << 20


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal data gives equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_encode)


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot fingerprint a {type(value).__name__}: {value!r}")


def fingerprint(data: Any, length: int = 16) -> str:
    """Short hex sha256 of ``data`` (anything JSON-serialisable)."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:length]


def file_sha256(path: str | Path) -> str:
    """Full hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()

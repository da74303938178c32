"""What the neural-network extractors share: checkpoint files and numeric precision.

Checkpoints are never unpickled: a file is read as safetensors, or with ``torch.load(...,
weights_only=True)``, which refuses arbitrary Python objects. A file's identity in a
fingerprint is its sha256, cached per (path, size, mtime) because large checkpoints take
seconds to hash and the fingerprint is asked for several times per run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from iqa_store.extractors.base import ExtractorError
from iqa_store.fingerprint import file_sha256

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ExtractorError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
    return precision


def autocast(device_type: str, precision: str) -> "torch.autocast":
    """Autocast to bf16 or fp16; a no-op context for fp32."""
    import torch
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device_type=device_type, dtype=dtype, enabled=dtype is not None)


def existing_weights_file(path: str | Path) -> str:
    """The absolute path of a ``--weights`` file; a clear error naming it when it is absent."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ExtractorError(f"--weights file not found: {resolved}")
    return str(resolved)


def load_state_dict(path: str) -> dict[str, Any]:
    """A checkpoint's state dict without unpickling arbitrary objects (``iqa_store.nets.weights``)."""
    from iqa_store.nets.weights import WeightsError, read_state_dict
    try:
        return read_state_dict(path)
    except WeightsError as error:
        raise ExtractorError(str(error)) from None


@dataclass
class TrainedWeights:
    """For extractors whose weights are always a file or a registry encoder (nothing published to
    download here): their identity, availability, workers that never receive the weights, and
    loading, with the loaded state, model and device. The class defines ``weights``,
    ``random_init``, ``seed`` and ``_no_weights_error``; list this class before ``Extractor``."""

    _state: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    _device: str = field(default="cpu", init=False, repr=False, compare=False)

    def weights_identity(self) -> dict[str, Any]:
        identity = local_weights_identity(self.weights, self.random_init, self.seed)
        if identity is None:
            raise self._no_weights_error()
        return identity

    def weights_available(self) -> bool:
        return bool(self.weights or self.random_init)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # workers get the settings, never the weights
        state["_model"] = state["_state"] = None
        return state

    def _place(self, build: Callable[[], Any], load: Callable[[Any, dict[str, Any]], None], device: str) -> None:
        """The network from ``build`` (seeded when random), the weights put in by ``load`` unless random, on ``device``."""
        import torch
        if self.random_init:
            torch.manual_seed(self.seed)
        model = build()
        if not self.random_init:
            if self._state is None:
                raise self._no_weights_error()
            load(model, self._state)
        self._device = device
        self._model = model.eval().to(device)


def local_weights_identity(weights: str | None, random_init: bool, seed: int = 0) -> dict[str, Any] | None:
    """How random or file weights enter a fingerprint; None when there are neither (published weights)."""
    if random_init:
        return {"random_init": True, "seed": seed}
    if weights:
        return {"file": Path(weights).name, "sha256": cached_sha256(weights)}
    return None


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: str) -> str:
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]

"""Weight files read without unpickling: the one reader of networks, stages and extractors.

A file is safetensors, or a torch file that loads with ``weights_only=True`` (tensors and plain
containers only: a pickle payload never runs). A training checkpoint's ``state_dict`` or
``model`` entry is taken, and DataParallel's ``module.`` prefixes are stripped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["WeightsError", "read_state_dict"]


class WeightsError(ValueError):
    """A weights file or a weights source that cannot be used."""


def read_state_dict(path: str | Path) -> dict[str, "torch.Tensor"]:
    """The state dict of ``path``; a ``WeightsError`` naming the file for anything else."""
    text = str(path)
    if not Path(text).is_file():
        raise WeightsError(f"weights file not found: {text}")
    state: Any
    if text.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            state = load_file(text)
        except Exception as error:  # SafetensorError for a damaged or substituted file (a pickle renamed, say)
            raise WeightsError(f"cannot read {text}: not a valid safetensors file ({type(error).__name__}: "
                               f"{error})") from None
    else:
        import torch
        try:
            state = torch.load(text, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises UnpicklingError, RuntimeError, ... for untrusted content
            first_line = (str(error).splitlines() or [""])[0][:200]
            raise WeightsError(f"refusing to load {text}: it is not a plain tensor checkpoint that loads with "
                               f"weights_only=True ({type(error).__name__}: {first_line})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{text} holds a {type(state).__name__}, not a state dict")
    _check_tensors(state, text)
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _check_tensors(state: dict[str, Any], path: str) -> None:
    import torch
    other = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if other:
        raise WeightsError(f"{path} is neither a state dict nor a checkpoint with one under 'model' or "
                           f"'state_dict': its entries {other[:5]} are not tensors")

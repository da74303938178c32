"""CLIP as a quality model (CLIP-IQA, QualiCLIP): the image forward, the prompt pairs, the checkpoints.

Shared by the ``clipiqa``/``qualiclip`` extractors and the QualiCLIP / CLIP-IQA+ training stages.

* ``pooled_image_features``: a CLIP ResNet (open_clip ``ModifiedResNet``) at any input size, its
  attention pool run WITHOUT the positional embedding, as both methods' official code does
  (``pos_embedding=False``): the mean token is prepended, the HW + 1 tokens attend with no
  positional term and token 0 comes out. open_clip's ``AttentionPool2d`` always adds its table
  (fixed to 224 px inputs), so the pool is run here over its own q/k/v/c weights.
* ``pair_probabilities``: softmax over scale x cosine within each (positive, negative) prompt
  pair, the positive's probability (CLIP-IQA's score; QualiCLIP's is their mean over 7 pairs).
* ``PromptPair`` / ``prompt_pairs``: the official prompt sets, kept as data in ``prompts/``.
* ``read_clip_state`` / ``write_qualiclip_state``: checkpoints in the OpenAI, open_clip and
  QualiCLIP layouts, never unpickled (safetensors, or ``torch.load(weights_only=True)``).

Importing this module does not import torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import torch

__all__ = ["CLIP_MEAN", "CLIP_STD", "LOGIT_SCALE", "CheckpointError", "ClipState", "PromptPair",
           "encode_prompts", "load_clip_state", "pair_probabilities", "pooled_image_features",
           "prompt_pairs", "prompt_sets", "qualiclip_tensors", "read_clip_state", "write_qualiclip_state"]

# CLIP's normalisation of [0, 1] RGB values (openai/CLIP, both methods' configs).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# exp(logit_scale) of the OpenAI weights, which both methods' inference code hard-codes.
LOGIT_SCALE = 100.0

QUALICLIP_PREFIX = "clip_model."
PROMPTS_KEY = "prompts_features"
# Entries of OpenAI's checkpoints that are not weights (openai/CLIP drops them too).
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")
_PROMPTS_FILE = Path(__file__).parent / "prompts" / "clip_quality.json"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a CLIP (or QualiCLIP) state dict."""


# --- the image forward ---------------------------------------------------------------------------

def pooled_image_features(visual: Any, pixels: "torch.Tensor") -> "torch.Tensor":
    """[B, 3, H, W] normalised pixels (any H, W >= 32) -> the unnormalised attention-pool output
    [B, output_dim] of a CLIP ResNet, the pool run without its positional embedding."""
    x = visual.stem(pixels)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    return attention_pool_without_positions(visual.attnpool, x)


def attention_pool_without_positions(pool: Any, feature_map: "torch.Tensor") -> "torch.Tensor":
    """open_clip's ``AttentionPool2d`` over [B, C, H, W] without the positional term.

    Only token 0's output is kept, so only its query is computed: the keys and values are all
    HW + 1 tokens, exactly as in the full forward.
    """
    import torch
    import torch.nn.functional as F
    tokens = feature_map.flatten(2).permute(2, 0, 1)  # [HW, B, C]
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)  # [HW + 1, B, C]
    out, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=tokens.shape[-1],
        num_heads=pool.num_heads, in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias, training=False,
        need_weights=False, use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight)
    return out[0]


# --- prompts and scores --------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptPair:
    """An antonym prompt pair, positive first; ``higher_is_better``: whether a higher positive
    probability means better quality (None: an attribute with no quality direction)."""

    name: str
    positive: str
    negative: str
    higher_is_better: bool | None = True

    @property
    def texts(self) -> tuple[str, str]:
        return self.positive, self.negative


@lru_cache(maxsize=1)
def _prompt_data() -> dict[str, tuple[PromptPair, ...]]:
    data = json.loads(_PROMPTS_FILE.read_text())
    return {name: tuple(PromptPair(**pair) for pair in pairs) for name, pairs in data.items()
            if not name.startswith("_")}


def prompt_sets() -> tuple[str, ...]:
    """Names of the official prompt sets (``clipiqa``, ``clipiqa-attributes``, ``qualiclip``...)."""
    return tuple(_prompt_data())


def prompt_pairs(name: str) -> tuple[PromptPair, ...]:
    """The official prompt set ``name``, in its published order."""
    sets = _prompt_data()
    if name not in sets:
        raise KeyError(f"unknown prompt set {name!r}; known: {', '.join(sets)}")
    return sets[name]


def encode_prompts(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> "torch.Tensor":
    """L2-normalised text features [2P, E] of the model's own text tower, in pair order
    (positive, negative, positive, ...). OpenAI weights need the model built with QuickGELU."""
    import torch
    texts = [text for pair in pairs for text in pair]
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.encode_text(tokenizer(texts).to(device), normalize=True).float()


def pair_probabilities(image_features: "torch.Tensor", prompt_features: "torch.Tensor",
                       scale: float = LOGIT_SCALE) -> "torch.Tensor":
    """[B, D] image features (any norm) and [2P, D] L2-normalised prompt features in pair order
    -> [B, P]: per pair, softmax over scale x cosine of (positive, negative), the positive's."""
    import torch
    image = torch.nn.functional.normalize(image_features.float(), dim=-1)
    logits = scale * image @ prompt_features.float().T  # [B, 2P]
    return logits.view(logits.shape[0], -1, 2).softmax(dim=-1)[..., 0]


# --- checkpoints ---------------------------------------------------------------------------------

@dataclass
class ClipState:
    """A CLIP checkpoint read from any supported layout.

    ``state_dict``: OpenAI CLIP keys (``visual.*``, ``transformer.*``, ``token_embedding.weight``...);
    only ``visual.*`` for a QualiCLIP image-encoder export. ``prompts_features``: QualiCLIP's
    [14, D] L2-normalised prompt features in pair order, or None. ``layout``: ``openai``,
    ``open_clip``, ``qualiclip`` (the published ``qualiclip.pth``) or ``qualiclip-visual``.
    """

    state_dict: dict[str, "torch.Tensor"]
    prompts_features: "torch.Tensor | None"
    layout: str

    @property
    def visual_state(self) -> dict[str, "torch.Tensor"]:
        """The image tower's weights, keys relative to ``model.visual``."""
        return {k.removeprefix("visual."): v for k, v in self.state_dict.items() if k.startswith("visual.")}

    @property
    def has_text_tower(self) -> bool:
        return "text_projection" in self.state_dict


def read_clip_state(path: str | Path) -> ClipState:
    """A CLIP checkpoint (OpenAI or open_clip layout, or QualiCLIP's) without unpickling anything."""
    return clip_state_of(_read_tensors(str(path)), str(path))


def clip_state_of(entries: Mapping[str, Any], path: str) -> ClipState:
    """The ClipState of a file's tensors (``path`` names the file in errors)."""
    if PROMPTS_KEY in entries or any(k.startswith(QUALICLIP_PREFIX) for k in entries):
        return _qualiclip_state(entries, path)
    state = {k.removeprefix("module."): v for k, v in entries.items()}
    if not any(k.startswith("visual.") for k in state):
        raise CheckpointError(f"{path} is neither a CLIP state dict (OpenAI/open_clip keys visual.*, transformer.*, "
                              f"...) nor a QualiCLIP checkpoint (clip_model.* + prompts_features); its keys start "
                              f"{sorted(state)[:4]}")
    layout = "openai" if any(k in state for k in _OPENAI_EXTRAS) else "open_clip"
    return ClipState({k: v for k, v in state.items() if k not in _OPENAI_EXTRAS}, None, layout)


def _qualiclip_state(entries: Mapping[str, Any], path: str) -> ClipState:
    prompts = entries.get(PROMPTS_KEY)
    other = sorted(k for k in entries if k != PROMPTS_KEY and not k.startswith(QUALICLIP_PREFIX))
    if prompts is None or prompts.dim() != 2 or prompts.shape[0] % 2 or other:
        raise CheckpointError(f"{path} is not a QualiCLIP checkpoint: it needs clip_model.* weights and a "
                              f"[2P, D] {PROMPTS_KEY} and nothing else (found {PROMPTS_KEY} "
                              f"{None if prompts is None else tuple(prompts.shape)}, other keys {other[:4]})")
    state = {k.removeprefix(QUALICLIP_PREFIX): v for k, v in entries.items() if k.startswith(QUALICLIP_PREFIX)}
    if not any(k.startswith("visual.") for k in state):
        raise CheckpointError(f"{path} is a QualiCLIP checkpoint without image-encoder weights (clip_model.visual.*)")
    layout = "qualiclip" if "text_projection" in state else "qualiclip-visual"
    return ClipState({k: v for k, v in state.items() if k not in _OPENAI_EXTRAS}, prompts, layout)


def write_qualiclip_state(path: str | Path, visual_state: Mapping[str, "torch.Tensor"],
                          prompts_features: "torch.Tensor") -> None:
    """An image-encoder export as safetensors (``qualiclip_tensors``); ``read_clip_state`` reads it back."""
    from safetensors.torch import save_file
    save_file(qualiclip_tensors(visual_state, prompts_features), str(path))


def qualiclip_tensors(visual_state: Mapping[str, "torch.Tensor"],
                      prompts_features: "torch.Tensor") -> dict[str, "torch.Tensor"]:
    """The export layout: ``clip_model.visual.<key>`` (keys of ``model.visual.state_dict()``) +
    ``prompts_features`` (the training stage's registry encoders are written in it too)."""
    tensors = {f"{QUALICLIP_PREFIX}visual.{k}": v.detach().cpu().contiguous() for k, v in visual_state.items()}
    tensors[PROMPTS_KEY] = prompts_features.detach().cpu().float().contiguous()
    return tensors


def load_clip_state(model: Any, state: ClipState, path: str = "the checkpoint") -> None:
    """``state`` into an open_clip CLIP model, strictly: the whole model, or only ``model.visual``
    for an image-encoder export (the text tower then keeps what it has)."""
    target, weights = (model, state.state_dict) if state.has_text_tower else (model.visual, state.visual_state)
    try:
        missing, unexpected = target.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shape mismatches raise even with strict=False
        raise CheckpointError(f"{path} does not fit the model: {str(error)[:400]}") from error
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing keys {missing[:5]}, "
                              f"unexpected keys {unexpected[:5]}")


def _read_tensors(path: str) -> dict[str, Any]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from error
    import torch
    try:
        entries = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (TorchScript archives), ... for untrusted content
        raise CheckpointError(f"refusing to load {path}: it is not a plain tensor checkpoint that loads with "
                              f"weights_only=True ({type(error).__name__}: {str(error)[:200]})") from error
    for key in ("state_dict", "model"):  # training checkpoints
        if isinstance(entries, dict) and isinstance(entries.get(key), dict):
            entries = entries[key]
    if not isinstance(entries, dict) or not all(isinstance(v, torch.Tensor) for v in entries.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    return entries

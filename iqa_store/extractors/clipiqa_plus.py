"""CLIP-IQA+ scores: CLIP-IQA's "Good photo." probability with the prompt context learned on MOS.

The image path is ``clipiqa``'s (RN50 at native resolution, attention pool without positional
embedding, softmax over 100 x cosine of the pair); the two prompts' text features are computed
from the CoOp context that ``iqa-store train clipiqa-plus`` learned (``iqa_store.nets.coop``).
The score is in [0, 1], higher is better.

Weights: the learned context (``--weights``: an encoder of the registry, found per split with
``--protocol P`` like CNNIQA, or ``--weights registry:clipiqa-plus/FP``, or a safetensors/tensor
file with a ``context`` entry); the base CLIP is the one the context was trained with, named in the
encoder's config (an open_clip tag through the usual cache, a file checked against its sha256, or
a random initialisation's seed); a bare context file is read with OpenAI's RN50.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from iqa_store.extractors.base import ExtractorError
from iqa_store.extractors.clipiqa import ClipIqa
from iqa_store.extractors.neural import cached_sha256, existing_weights_file, load_state_dict
from iqa_store.nets.openclip import open_clip_module

if TYPE_CHECKING:
    import torch

CONTEXT_KEY = "context"


@dataclass
class ClipIqaPlus(ClipIqa):
    """CLIP-IQA+: P("Good photo.") against "Bad photo." with a context learned by ``iqa-store train clipiqa-plus``."""

    name: str = "clipiqa-plus"
    family: ClassVar[str] = "clipiqa-plus"
    version = "1"
    description = "CLIP-IQA+ (CoOp context learned on MOS), trained per split with `iqa-store train clipiqa-plus`"
    licence: ClassVar[str] = ("OpenAI CLIP weights: MIT (research use per its model card); CLIP-IQA+ method: NTU "
                              "S-Lab License 1.0 (non-commercial); contexts you train: yours")

    def __post_init__(self) -> None:
        if self.prompts != "clipiqa":
            raise ExtractorError("clipiqa-plus: the context is learned for the pair Good photo./Bad photo.; "
                                 "its prompts cannot change")
        if self.output != "score":
            raise ExtractorError("clipiqa-plus is a score; its image feature is clipiqa-embedding's")
        base = self.base_weights()
        if base.get("random_init"):
            self.random_init, self.seed = True, int(base["seed"])
        elif "open_clip" in base:
            self.pretrained = str(base["open_clip"]).partition(":")[2] or self.pretrained
        super().__post_init__()

    def base_weights(self) -> dict[str, Any]:
        """The base CLIP the context was trained with (the encoder's config), else OpenAI's."""
        return dict((self.encoder_config or {}).get("base_weights") or {"open_clip": f"{self.arch}:openai"})

    # --- weights: the context file and the base CLIP ---------------------------------------------
    def weights_identity(self) -> dict[str, Any]:
        if not self.weights:
            raise self._no_context_error()
        base = self.base_weights()
        if self.random_init:
            base_identity: dict[str, Any] = {"random_init": True, "seed": self.seed}
        elif "sha256" in base:
            base_identity = {"sha256": base["sha256"]}
        else:
            base_identity = self.published_identity()
        return {"context": {"file": Path(self.weights).name, "sha256": cached_sha256(self.weights)},
                "base": base_identity}

    def weights_source(self) -> str:
        return ("--protocol P (the contexts of `iqa-store train clipiqa-plus`), --weights registry:clipiqa-plus/FP "
                "or a context file")

    def weights_available(self) -> bool:
        if not self.weights:
            return False
        base = self.base_weights()
        return self.random_init or ("path" in base and Path(base["path"]).is_file()) or \
            ("path" not in base and self._cached_hub_file() is not None)

    def _no_context_error(self) -> ExtractorError:
        return ExtractorError("clipiqa-plus needs a prompt context learned on MOS: train it with `iqa-store train "
                              "clipiqa-plus --dataset D --protocol P`, then extract with --protocol P, or pass "
                              "--weights registry:clipiqa-plus/FP (or a context file)")

    def _resolve_weights(self) -> str:
        """The base CLIP's checkpoint (``weights`` is the context)."""
        base = self.base_weights()
        if "path" not in base:
            return self.published_weights_file()
        path = existing_weights_file(base["path"])
        if cached_sha256(path) != base.get("sha256"):
            raise ExtractorError(f"{path} is not the CLIP checkpoint this context was trained with: its sha256 "
                                 f"differs from {base.get('sha256')}")
        return path

    def context(self) -> "torch.Tensor":
        if not self.weights:
            raise self._no_context_error()
        state = load_state_dict(self.weights)
        context = state.get(CONTEXT_KEY)
        if context is None or context.dim() != 2 or context.shape[0] % 2:
            raise ExtractorError(f"{self.weights} is not a CLIP-IQA+ context: it needs a [n, width] '{CONTEXT_KEY}' "
                                 f"tensor with n even (keys: {sorted(state)[:5]})")
        return context.float()

    # --- the prompts -----------------------------------------------------------------------------
    def prompt_features_of(self, state: Any) -> "torch.Tensor":
        import torch

        from iqa_store.nets.coop import coop_prompts, coop_text_features
        if state is not None and not state.has_text_tower:
            raise ExtractorError(f"the base CLIP of {self.weights} has no text tower ({state.layout} layout): "
                                 "the learned context runs through it")
        context = self.context()
        width = self._model.token_embedding.weight.shape[1]
        if context.shape[1] != width:
            raise ExtractorError(f"{self.weights}: the context is {tuple(context.shape)}, the text tower of "
                                 f"{self.arch} takes width {width}")
        device = self._model.token_embedding.weight.device
        prompts = coop_prompts(open_clip_module().get_tokenizer(self.arch), self.pairs()[0].texts, context.shape[0])
        with torch.no_grad():
            return coop_text_features(self._model, prompts, context.to(device))


"""CLIP-IQA (Wang, Chan, Loy 2023) and QualiCLIP (Agnolucci, Galteri, Bertini 2024) zero-shot scores.

Both run a CLIP ResNet-50 on the whole image at native resolution (only ToTensor and CLIP's
mean/std: the ``full`` policy), its attention pool without the positional embedding
(``iqa_store.nets.clip_quality``, the code the QualiCLIP training stage shares), and score the
image against antonym prompt pairs: per pair, softmax over ``scale`` x cosine of (positive,
negative), the positive's probability, in [0, 1].

* ``clipiqa``: one column per pair, as the official code returns them. ``prompts`` is a set
  name (``clipiqa``: "Good photo."/"Bad photo.", the default; ``clipiqa-attributes``: the six
  quality attributes of the official demo; ``clipiqa-ava``), some pairs of a set by name
  (``clipiqa-attributes:noisiness``), or pairs written out,
  ``"Sharp photo./Blurry photo.;Noisy photo./Clean photo."``. Prompt features come from the
  model's own text tower (QuickGELU, as OpenAI's weights need).
* ``qualiclip``: the mean over QualiCLIP's 7 pairs (the official inference code's score). The
  prompt features are the checkpoint's ``prompts_features`` (the published ``qualiclip.pth``,
  an encoder of ``iqa-store train qualiclip``); a checkpoint without them (OpenAI's RN50) has
  the 7 pairs encoded by its text tower. ``scale`` 100 as the official code; pyiqa's
  ``qualiclip`` is scale 50.

``output="embedding"`` (the ``clipiqa-embedding`` / ``qualiclip-embedding`` models) stores the
1024-d attention-pool output instead, unnormalised (``normalize=True`` L2-normalises it), so it
combines with other features in ``fit``; the score features (``clipiqa``, ``qualiclip``) declare
in their settings (``score``) their columns, their orientation and their range, which the
zero-shot protocol reads.

Weights: ``clipiqa`` takes OpenAI's RN50 through the Hugging Face cache (as ``clip-rn50``) or a
``--weights`` file (OpenAI or open_clip state dict, or ``qualiclip.pth``). ``qualiclip`` takes
``--weights qualiclip.pth`` (or that file in torch hub's checkpoint cache, where
``torch.hub.load("miccunifi/QualiCLIP", ...)`` puts it), or ``--weights registry:NAME``.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from iqa_store.extractors.base import ExtractorError
from iqa_store.extractors.clip import OpenAIClip
from iqa_store.extractors.neural import cached_sha256
from iqa_store.nets.openclip import open_clip_module

if TYPE_CHECKING:
    import torch

OUTPUTS = ("score", "embedding")
SCORE_RANGE = (0.0, 1.0)
__all__ = ["ClipIqa", "QualiClip", "clipiqa", "clipiqa_embedding", "parse_prompts", "qualiclip", "qualiclip_embedding"]

QUALICLIP_URL = "https://github.com/miccunifi/QualiCLIP/releases/download/weights/qualiclip.pth"


@dataclass
class ClipQualityScore(OpenAIClip):
    """What CLIP-IQA and QualiCLIP share: the image path, the weights, prompt-pair probabilities."""

    arch: str = "RN50"
    policy: str = "full"
    output: str = "score"
    scale: float = 100.0
    encoder_config: dict[str, Any] | None = None  # a registry encoder's config: its ``arch`` wins
    family: ClassVar[str] = ""
    _prompt_features: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ExtractorError(f"{self.family}: output must be one of {OUTPUTS}, not {self.output!r}")
        if self.output == "score" and self.normalize:
            raise ExtractorError(f"{self.family}: normalize L2-normalises the embedding; it goes with "
                                 f"output=embedding, not with the score")
        if not (isinstance(self.scale, (int, float)) and self.scale > 0):
            raise ExtractorError(f"{self.family}: scale must be a positive number, not {self.scale!r}")
        self.scale = float(self.scale)  # -s scale=50 and scale=50.0 are one setting, one fingerprint
        self.name = self.family if self.output == "score" else f"{self.family}-embedding"
        self.arch = (self.encoder_config or {}).get("arch", self.arch)
        super().__post_init__()

    # --- what the subclass supplies ----------------------------------------------------------
    @abstractmethod
    def pairs(self) -> tuple[Any, ...]:
        """The prompt pairs (``PromptPair``) scored, in column (or averaging) order."""

    @abstractmethod
    def score_columns(self) -> list[str]:
        """The names of the score's columns."""

    @abstractmethod
    def score_orientation(self) -> list[bool | None]:
        """Per column: a higher value means better quality (None: an attribute without a direction)."""

    @abstractmethod
    def reduce(self, probabilities: "torch.Tensor") -> "torch.Tensor":
        """[B, P] positive-prompt probabilities -> the stored [B, dim] score."""

    def prompt_features_of(self, state: Any) -> "torch.Tensor":
        """The [2P, D] normalised prompt features for the loaded checkpoint ``state`` (a ClipState)."""
        return self._encode_pairs()

    # --- the contract ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.embedding_dim if self.output == "embedding" else len(self.score_columns())

    def settings(self) -> dict[str, Any]:
        settings = {**super().settings(), "output": self.output}
        if self.output == "score":
            settings.update(scale=self.scale, prompts=[[p.positive, p.negative] for p in self.pairs()],
                            score={"columns": self.score_columns(), "higher_is_better": self.score_orientation(),
                                   "range": list(SCORE_RANGE)})
        return settings

    def prepare(self, options: Any) -> None:
        super().prepare(options)
        if not hasattr(self._model.visual, "attnpool"):
            raise ExtractorError(f"{self.family} needs a CLIP ResNet image tower (attention pooling); "
                                 f"{self.arch} has a {type(self._model.visual).__name__}")

    def load_model(self, device: str) -> Any:
        import torch

        from iqa_store.nets.clip_quality import CheckpointError, load_clip_state, read_clip_state
        path = None if self.random_init else self._resolve_weights()  # a missing file says so before any build
        if self.random_init:
            torch.manual_seed(self.seed)
        model = open_clip_module().create_model(self.arch, pretrained=None, force_quick_gelu=True)
        state = None
        if path is not None:
            try:
                state = read_clip_state(path)
                load_clip_state(model, state, path)
            except CheckpointError as error:
                raise ExtractorError(str(error)) from None
        model = model.eval().to(device)
        self._model = model
        if self.output == "score":
            self._prompt_features = self.prompt_features_of(state).to(device)
        return model

    def _encode_pairs(self) -> "torch.Tensor":
        from iqa_store.nets.clip_quality import encode_prompts
        tokenizer = open_clip_module().get_tokenizer(self.arch)
        return encode_prompts(self._model, tokenizer, [pair.texts for pair in self.pairs()])

    def embed(self, pixels: "torch.Tensor") -> "torch.Tensor":
        from iqa_store.nets.clip_quality import pair_probabilities, pooled_image_features
        features = pooled_image_features(self._model.visual, pixels)
        if self.output == "embedding":
            return features
        return self.reduce(pair_probabilities(features, self._prompt_features, self.scale))

    def native_resolution(self, height: int, width: int) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # pooled_image_features takes any size: no positional table to adapt

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_prompt_features"] = None
        return state


@dataclass
class ClipIqa(ClipQualityScore):
    """CLIP-IQA: one score column per antonym pair (default "Good photo."/"Bad photo.")."""

    name: str = "clipiqa"
    prompts: str = "clipiqa"
    family: ClassVar[str] = "clipiqa"
    version = "1"
    licence: ClassVar[str] = ("OpenAI CLIP weights: MIT (research use per its model card); CLIP-IQA method and "
                              "code: NTU S-Lab License 1.0 (non-commercial)")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._pairs = parse_prompts(self.prompts)

    def pairs(self) -> tuple[Any, ...]:
        return self._pairs

    def score_columns(self) -> list[str]:
        return [pair.name for pair in self._pairs]

    def score_orientation(self) -> list[bool | None]:
        return [pair.higher_is_better for pair in self._pairs]

    def reduce(self, probabilities: "torch.Tensor") -> "torch.Tensor":
        return probabilities

    def prompt_features_of(self, state: Any) -> "torch.Tensor":
        if state is not None and not state.has_text_tower:
            raise ExtractorError(f"{self.weights} holds only an image encoder ({state.layout} layout, no text tower): "
                                 f"clipiqa encodes its prompts with the text tower; read it with -m qualiclip")
        return self._encode_pairs()


@dataclass
class QualiClip(ClipQualityScore):
    """QualiCLIP: the mean over its 7 antonym pairs of the positive prompt's probability."""

    name: str = "qualiclip"
    family: ClassVar[str] = "qualiclip"
    version = "1"
    licence: ClassVar[str] = "QualiCLIP weights and code: CC BY-NC 4.0 (non-commercial)"

    def pairs(self) -> tuple[Any, ...]:
        from iqa_store.nets.clip_quality import prompt_pairs
        return prompt_pairs("qualiclip")

    def score_columns(self) -> list[str]:
        return ["qualiclip"]

    def score_orientation(self) -> list[bool | None]:
        return [True]

    def reduce(self, probabilities: "torch.Tensor") -> "torch.Tensor":
        return probabilities.mean(dim=1, keepdim=True)

    def prompt_features_of(self, state: Any) -> "torch.Tensor":
        if state is None or state.prompts_features is None:
            return self._encode_pairs()
        features = state.prompts_features.float()
        if features.shape != (2 * len(self.pairs()), self._model.visual.output_dim):
            raise ExtractorError(f"{self.weights}: prompts_features is {tuple(features.shape)}, expected "
                                 f"({2 * len(self.pairs())}, {self._model.visual.output_dim}): 7 pairs of this model")
        return features

    # --- published weights: qualiclip.pth, no hub copy -------------------------------------------
    def published_identity(self) -> dict[str, Any]:
        cached = _torch_hub_file()
        return {"url": QUALICLIP_URL, **({"sha256": cached_sha256(str(cached))} if cached else {})}

    def weights_source(self) -> str:
        return QUALICLIP_URL

    def weights_available(self) -> bool:
        return self.random_init or bool(self.weights) or _torch_hub_file() is not None

    def _resolve_weights(self) -> str:
        if self.weights:
            return self.weights
        cached = _torch_hub_file()
        if cached is None:
            raise ExtractorError(f"qualiclip needs its published weights: download {QUALICLIP_URL} (CC BY-NC 4.0) and "
                                 f"pass --weights qualiclip.pth (or put it in torch hub's checkpoint cache), or pass "
                                 f"--weights registry:NAME for an encoder of `iqa-store train qualiclip`")
        return str(cached)


def _torch_hub_file() -> Path | None:
    """qualiclip.pth where ``torch.hub.load("miccunifi/QualiCLIP", ...)`` downloads it, if there."""
    import torch
    path = Path(torch.hub.get_dir()) / "checkpoints" / "qualiclip.pth"
    return path if path.is_file() else None


def parse_prompts(text: str) -> tuple[Any, ...]:
    """A prompt-set name, some of its pairs by name ("clipiqa-attributes:noisiness,sharpness"), or
    pairs written out "POSITIVE/NEGATIVE;POSITIVE/NEGATIVE"."""
    from iqa_store.nets.clip_quality import PromptPair, prompt_pairs, prompt_sets
    if "/" not in text:
        set_name, _, names = text.partition(":")
        try:
            pairs = prompt_pairs(set_name)
        except KeyError:
            raise ExtractorError(f"prompts {text!r}: not a prompt set ({', '.join(prompt_sets())}) nor pairs "
                                 f"written out as \"POSITIVE/NEGATIVE;POSITIVE/NEGATIVE\"") from None
        wanted = [name.strip() for name in names.split(",")] if names else [pair.name for pair in pairs]
        unknown = sorted(set(wanted) - {pair.name for pair in pairs})
        if unknown:
            raise ExtractorError(f"prompts {text!r}: {set_name} has no pair {unknown}; it has "
                                 f"{', '.join(pair.name for pair in pairs)}")
        return tuple(next(pair for pair in pairs if pair.name == name) for name in wanted)
    pairs = []
    for i, written in enumerate(text.split(";")):
        positive, slash, negative = (part.strip() for part in written.partition("/"))
        if not (slash and positive and negative) or "/" in negative:
            raise ExtractorError(f"prompts: pair {i + 1} {written!r} is not POSITIVE/NEGATIVE")
        pairs.append(PromptPair(f"pair{i + 1}", positive, negative, None))
    return tuple(pairs)


def _builder(cls: type, output: str) -> Any:
    def build(**settings: Any) -> ClipQualityScore:
        settings.setdefault("output", output)
        return cls(**settings)
    build.__name__ = f"{cls.family}_{output}"
    return build


clipiqa = _builder(ClipIqa, "score")
clipiqa_embedding = _builder(ClipIqa, "embedding")
qualiclip = _builder(QualiClip, "score")
qualiclip_embedding = _builder(QualiClip, "embedding")

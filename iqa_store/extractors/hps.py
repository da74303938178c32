"""Human Preference Score image towers: CLIP fine-tuned on which generated image people prefer.

Stored vector, as for CLIP: the projected image embedding (``encode_image``), not normalised
unless ``normalize=True`` (HPS scores with normalised embeddings).

* ``hps`` (HPS v1, Wu et al. 2023, github.com/tgxs002/align_sd): OpenAI CLIP ViT-L/14 fine-tuned;
  768-d. The checkpoint ``hpc.pth`` is an OpenAI-CLIP state dict under 'state_dict', distributed
  from the repository's README (no Hugging Face copy), so ``--weights`` is required.
* ``hpsv2`` (HPS v2 / v2.1, github.com/tgxs002/HPSv2): open_clip ViT-H-14 fine-tuned; 1024-d.
  Weights under 'state_dict' in ``HPS_v2.1_compressed.pt`` (``variant='v2.1'``) or
  ``HPS_v2_compressed.pt`` (``'v2.0'``), the names the hpsv2 package uses, of the Hugging Face repo xswu/HPSv2, read from the Hugging
  Face cache (downloaded when absent and online), or ``--weights FILE``. Preprocessing is
  open_clip's ViT-H-14 eval transform with OpenAI's mean/std, as HPSv2's ``score`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from iqa_store.extractors.base import ExtractorError
from iqa_store.extractors.clip import OpenAIClip, OpenClipExtractor

HPSV2_REPO = "xswu/HPSv2"
HPSV2_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}


@dataclass
class Hps(OpenAIClip):
    """HPS v1: the human preference classifier's image tower."""

    name: str = "hps"
    arch: str = "ViT-L-14"
    pretrained: str = "openai"  # the starting point: QuickGELU and OpenAI's preprocessing
    version = "1"
    licence: ClassVar[str] = "not stated here: check tgxs002/align_sd; base weights OpenAI CLIP (MIT, research use)"

    def published_identity(self) -> dict[str, Any]:
        return {"hps": "v1", "file": "hpc.pth"}

    def weights_source(self) -> str:
        return "hpc.pth, linked from the README of github.com/tgxs002/align_sd"

    def hub_files(self) -> tuple[str, tuple[str, ...]] | None:
        return None

    def _resolve_weights(self) -> str:
        if self.weights:
            return self.weights
        raise ExtractorError(f"hps needs --weights FILE: the HPS v1 checkpoint {self.weights_source()} "
                             f"(a state dict under 'state_dict', loaded with weights_only=True)")


@dataclass
class HpsV2(OpenClipExtractor):
    """HPS v2 / v2.1: the preference-tuned open_clip ViT-H-14 image tower."""

    name: str = "hpsv2"
    arch: str = "ViT-H-14"
    pretrained: str = "laion2b_s32b_b79k"  # the starting point HPSv2 builds before loading its weights
    variant: str = "v2.1"
    version = "1"
    licence: ClassVar[str] = "Apache-2.0 (tgxs002/HPSv2)"

    def __post_init__(self) -> None:
        if self.variant not in HPSV2_FILES:
            raise ExtractorError(f"hpsv2 variant must be one of {sorted(HPSV2_FILES)}, not {self.variant!r}")
        super().__post_init__()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "variant": self.variant}

    def published_identity(self) -> dict[str, Any]:
        return {"hf_hub": HPSV2_REPO, "file": HPSV2_FILES[self.variant]}

    def hub_files(self) -> tuple[str, tuple[str, ...]] | None:
        return HPSV2_REPO, (HPSV2_FILES[self.variant],)

    def _download(self) -> str:
        from huggingface_hub import hf_hub_download
        return hf_hub_download(HPSV2_REPO, HPSV2_FILES[self.variant])

"""AltCLIP image embeddings (Chen et al. 2022) through transformers' ``AltCLIPModel``.

Weights: BAAI/AltCLIP, whose image tower is CLIP ViT-L/14 (224 px) kept from OpenAI CLIP while
the text encoder is replaced by XLM-R; stored vector: ``AltCLIPModel.get_image_features(...)
.pooler_output``, the projected class token, 768-d (``projection_dim``).

Preprocessing ``default``: the repository's CLIPImageProcessor (preprocessor_config.json of
https://huggingface.co/BAAI/AltCLIP): shortest side to 224 (resample 3 = bicubic), centre crop
224 x 224, rescale 1/255, OpenAI CLIP mean/std. ``full`` and ``twoscale`` run the ViT at the
image's own patch grid with transformers' ``interpolate_pos_encoding=True`` (bicubic resampling
of the position embedding, class token kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from iqa_store.extractors.hf import HfDualEncoder

ALTCLIP_REPO = "BAAI/AltCLIP"

# BAAI/AltCLIP preprocessor_config.json (the values that decide the pixels).
ALTCLIP_PROCESSOR = {
    "do_resize": True, "size": {"shortest_edge": 224}, "resample": 3,
    "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
    "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


@dataclass
class AltClip(HfDualEncoder):
    """AltCLIP's ViT-L/14 image tower and projection (768-d for BAAI/AltCLIP)."""

    name = "altclip"
    version = "1"
    repo: str = ALTCLIP_REPO
    model_type: ClassVar[str] = "altclip"
    model_class: ClassVar[str] = "AltCLIPModel"
    config_class: ClassVar[str] = "AltCLIPConfig"
    processor_class: ClassVar[str] = "CLIPImageProcessor"
    processor_defaults: ClassVar[dict[str, Any]] = ALTCLIP_PROCESSOR
    image_prefixes: ClassVar[tuple[str, ...]] = ("vision_model.", "visual_projection.")
    published_dim: ClassVar[int] = 768
    licence: ClassVar[str] = "CreativeML OpenRAIL-M (BAAI/AltCLIP model card; gated: accept it on the model page)"
    weights_note: ClassVar[str] = " after accepting the licence on its gated model page and logging in (HF_TOKEN)"

    @classmethod
    def dim_of(cls, config: Any) -> int:
        return int(config.projection_dim)

    def image_kwargs(self) -> dict[str, Any]:
        # Images at their own size: the position embedding is resampled to the patch grid.
        return {"interpolate_pos_encoding": True} if self._policy.kind in ("full", "twoscale") else {}

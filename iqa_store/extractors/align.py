"""ALIGN image embeddings (Jia et al. 2021) through transformers' ``AlignModel``.

Weights: kakaobrain/align-base, Kakao Brain's ALIGN trained on COYO-700M: an EfficientNet-B7
image tower (width 2.0, depth 3.1) whose global-average-pooled last block (640 channels after
EfficientNet's width rounding) is the image embedding; there is no image projection. Stored
vector: ``AlignModel.get_image_features(...).pooler_output``, 640-d for align-base.

Preprocessing ``default``: the repository's EfficientNetImageProcessor, as published in
https://huggingface.co/kakaobrain/align-base/blob/main/preprocessor_config.json: resize to
346 x 346 (both sides, aspect ratio not kept, resample 2 = bilinear), centre crop 289 x 289,
rescale by 1/127.5 with ``rescale_offset`` (x / 127.5 - 1, values in [-1, 1]), no normalisation
(``do_normalize`` and ``include_top`` false: the listed mean/std 0.5 are unused). The other
policies use the equivalent mean = std = 0.5 on [0, 1] values. The network is convolutional with
global pooling, so ``full`` and ``twoscale`` run it on the image as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from iqa_store.extractors.hf import HfDualEncoder

ALIGN_REPO = "kakaobrain/align-base"

# kakaobrain/align-base preprocessor_config.json (the values that decide the pixels).
ALIGN_PROCESSOR = {
    "do_resize": True, "size": {"height": 346, "width": 346}, "resample": 2,
    "do_center_crop": True, "crop_size": {"height": 289, "width": 289},
    "do_rescale": True, "rescale_factor": 1 / 127.5, "rescale_offset": True,
    "do_normalize": False, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "include_top": False,
}


@dataclass
class Align(HfDualEncoder):
    """ALIGN's EfficientNet image tower (640-d for kakaobrain/align-base)."""

    name = "align"
    version = "1"
    repo: str = ALIGN_REPO
    model_type: ClassVar[str] = "align"
    model_class: ClassVar[str] = "AlignModel"
    config_class: ClassVar[str] = "AlignConfig"
    processor_class: ClassVar[str] = "EfficientNetImageProcessor"
    processor_defaults: ClassVar[dict[str, Any]] = ALIGN_PROCESSOR
    image_prefixes: ClassVar[tuple[str, ...]] = ("vision_model.",)
    published_dim: ClassVar[int] = 640
    channels_last: ClassVar[bool] = True
    licence: ClassVar[str] = "unknown: the kakaobrain/align-base model card states no licence"

    @classmethod
    def dim_of(cls, config: Any) -> int:
        """Channels of the last EfficientNet block after width rounding (the pooled output)."""
        from transformers.models.align.modeling_align import round_filters
        vision = config.vision_config
        return int(round_filters(vision, vision.out_channels[-1]))

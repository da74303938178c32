"""Feature extractors, registered by name. One module per family.

To add a model: write its module (a dataclass subclass of ``Extractor``) and add one
``EXTRACTORS.register`` line below. Entries are lazy strings, so listing does not import torch.
"""

from __future__ import annotations

from typing import Any

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions
from iqa_store.images import ImageReadError
from iqa_store.registry import Registry

__all__ = ["EXTRACTORS", "Extractor", "ExtractorError", "ImageReadError", "RunOptions", "create_extractor"]

EXTRACTORS: Registry = Registry("extractor")

EXTRACTORS.register("align", "iqa_store.extractors.align:Align",
                    help="ALIGN EfficientNet-B7 image embedding, kakaobrain/align-base via transformers (640-d)")
EXTRACTORS.register("altclip", "iqa_store.extractors.altclip:AltClip",
                    help="AltCLIP ViT-L/14 image embedding, BAAI/AltCLIP via transformers (768-d)")
EXTRACTORS.register("brisque", "iqa_store.extractors.brisque:Brisque",
                    help="BRISQUE, 36 natural-scene statistics (Mittal et al. 2012), MATLAB-exact")
EXTRACTORS.register("cnniqa", "iqa_store.extractors.cnniqa:Cnniqa",
                    help="CNNIQA patch network (Kang et al. 2014), trained per split: --protocol P (800-d, or 512)")
EXTRACTORS.register("clipiqa", "iqa_store.extractors.clipiqa:clipiqa",
                    help="CLIP-IQA score: OpenAI RN50, softmax(100 cos) per prompt pair (default Good/Bad photo.)")
EXTRACTORS.register("clipiqa-plus", "iqa_store.extractors.clipiqa_plus:ClipIqaPlus",
                    help="CLIP-IQA+ score: Good/Bad photo. with a CoOp context learned per split (iqa-store train clipiqa-plus)")
EXTRACTORS.register("clipiqa-embedding", "iqa_store.extractors.clipiqa:clipiqa_embedding",
                    help="CLIP-IQA's image feature: RN50 attention pool without positions, native size (1024-d)")
EXTRACTORS.register("clip-vitb16", "iqa_store.extractors.clip:clip_vitb16", help="OpenAI CLIP ViT-B/16 image embedding (512-d)")
EXTRACTORS.register("clip-vitb32", "iqa_store.extractors.clip:clip_vitb32", help="OpenAI CLIP ViT-B/32 image embedding (512-d)")
EXTRACTORS.register("clip-vitl14", "iqa_store.extractors.clip:clip_vitl14", help="OpenAI CLIP ViT-L/14 image embedding (768-d)")
EXTRACTORS.register("clip-vitl14-336", "iqa_store.extractors.clip:clip_vitl14_336",
                    help="OpenAI CLIP ViT-L/14 at 336 px image embedding (768-d)")
EXTRACTORS.register("clip-rn50", "iqa_store.extractors.clip:clip_rn50", help="OpenAI CLIP ResNet-50 image embedding (1024-d)")
EXTRACTORS.register("clip-rn101", "iqa_store.extractors.clip:clip_rn101", help="OpenAI CLIP ResNet-101 image embedding (512-d)")
EXTRACTORS.register("clip-rn50x4", "iqa_store.extractors.clip:clip_rn50x4", help="OpenAI CLIP RN50x4 image embedding (640-d)")
EXTRACTORS.register("clip-rn50x16", "iqa_store.extractors.clip:clip_rn50x16",
                    help="OpenAI CLIP RN50x16 image embedding (768-d)")
EXTRACTORS.register("clip-rn50x64", "iqa_store.extractors.clip:clip_rn50x64",
                    help="OpenAI CLIP RN50x64 image embedding (1024-d)")
EXTRACTORS.register("hps", "iqa_store.extractors.hps:Hps",
                    help="HPS v1: CLIP ViT-L/14 fine-tuned on human preferences (768-d); --weights hpc.pth")
EXTRACTORS.register("hpsv2", "iqa_store.extractors.hps:HpsV2",
                    help="HPS v2 / v2.1: open_clip ViT-H/14 fine-tuned on human preferences (1024-d)")
EXTRACTORS.register("mpiqe", "iqa_store.extractors.mpiqe:Mpiqe",
                    help="MP-IQE multimodal-encoder feature (512-d) or -s output=score, trained per split: --protocol P")
EXTRACTORS.register("metaiqa", "iqa_store.extractors.metaiqa:Metaiqa",
                    help="MetaIQA head penultimate (512-d; gap, logits or score as settings), trained per split: --protocol P")
EXTRACTORS.register("qualiclip", "iqa_store.extractors.clipiqa:qualiclip",
                    help="QualiCLIP score: mean over 7 prompt pairs of softmax(100 cos); --weights qualiclip.pth")
EXTRACTORS.register("qualiclip-embedding", "iqa_store.extractors.clipiqa:qualiclip_embedding",
                    help="QualiCLIP's image feature: its RN50 attention pool without positions, native size (1024-d)")
EXTRACTORS.register("reiqa-content", "iqa_store.extractors.reiqa:ReiqaContent",
                    help="Re-IQA content encoder, full + half scale (4096-d for ResNet-50); --encoder or --weights")
EXTRACTORS.register("reiqa-quality", "iqa_store.extractors.reiqa:ReiqaQuality",
                    help="Re-IQA quality encoder, full + half scale (4096-d for ResNet-50); --encoder or --weights")
EXTRACTORS.register("slique", "iqa_store.extractors.slique:Slique",
                    help="SLIQUE image encoder, L2-normalised full + half scale (4096-d for ResNet-50); --weights")


def create_extractor(name: str, **settings: Any) -> Extractor:
    """Build the extractor registered as ``name`` with the given settings."""
    return EXTRACTORS.get(name)(**settings)

EXTRACTORS.register_prefix("openclip", "iqa_store.extractors.clip:from_spec",
                           help="any open_clip architecture and tag: openclip:ARCH:PRETRAINED")

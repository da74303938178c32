"""Contrastive pretraining stages; each finished run writes an encoder to the store's registry.

``STAGES`` holds the stages by name (``reiqa-content``, ``reiqa-quality``); ``BACKBONES`` the
networks they train. A stage is a dataclass of hyper-parameters (configs as data) with the
views it makes of an image and the loss it trains; ``iqa_store.pretrain.trainer`` runs any
stage with exact checkpoints, DDP under torchrun, and the registry write.

The encoder a run registers (``iqa_store.store.encoders``):

* weights (safetensors): ``backbone.<torchvision ResNet key>`` for the feature network and
  ``head.<key>`` for the projection head used only in training;
* config: ``stage``, ``backbone`` (a ``BACKBONES`` name), ``feature_dim``,
  ``input_normalization`` (``"none"``: [0, 1] RGB; ``"imagenet"``: ImageNet mean/std) and
  the stage's hyper-parameters;
* provenance: data, steps, loss curve, seed, code version.

Importing this package does not import torch.
"""

from __future__ import annotations

from iqa_store.pretrain.backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, build_backbone, feature_dim
from iqa_store.registry import Registry

__all__ = ["BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "STAGES", "build_backbone", "feature_dim"]

STAGES: Registry = Registry("pretraining stage")
STAGES.register("reiqa-content", "iqa_store.pretrain.reiqa:ContentStage",
                help="Re-IQA content encoder: MoCo-v2 on two augmented crops of an image")
STAGES.register("reiqa-quality", "iqa_store.pretrain.reiqa:QualityStage",
                help="Re-IQA quality encoder: distortion chunks, OLA crops, half swap, two scales")

"""Network definitions shared by extractors and training stages.

Below both: an extractor that reads an encoder and the stage that trains it build the same
network from here, so neither imports the other. Importing this package does not import torch.
"""

from iqa_store.nets.resnet import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, build_backbone, feature_dim

__all__ = ["BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "build_backbone", "feature_dim"]

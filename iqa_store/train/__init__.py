"""Contrastive pretraining stages; each finished run writes an encoder to the store's registry.

``STAGES`` holds the stages by name (``reiqa-content``, ``reiqa-quality``); ``BACKBONES`` the
networks they train. A stage is a dataclass of hyper-parameters (configs as data) with the
views it makes of an image and the loss it trains; ``iqa_store.train.trainer`` runs any
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

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from iqa_store.nets import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, build_backbone, feature_dim
from iqa_store.registry import Registry

if TYPE_CHECKING:
    from iqa_store.train.trainer import PretrainReport
    from iqa_store.store import FeatureStore

__all__ = ["BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "STAGES", "build_backbone", "feature_dim", "pretrain"]

STAGES: Registry = Registry("pretraining stage")
STAGES.register("reiqa-content", "iqa_store.train.reiqa:ContentStage",
                help="Re-IQA content encoder: MoCo-v2 on two augmented crops of an image")
STAGES.register("reiqa-quality", "iqa_store.train.reiqa:QualityStage",
                help="Re-IQA quality encoder: distortion chunks, OLA crops, half swap, two scales")


def pretrain(stage: str, *, images: str | Path | None = None, dataset: str | None = None, root: str | Path | None = None,
             dataset_options: dict[str, Any] | None = None, store: "FeatureStore | str | Path | None" = None,
             hyperparameters: dict[str, Any] | None = None, checkpoint_dir: str | Path | None = None,
             progress: bool = True, log: Callable[[str], None] = print, **training: Any) -> "PretrainReport":
    """Train ``stage`` on a folder of images or a dataset's images and register the encoder.

    ``hyperparameters`` are the stage's fields (``n_aug``, ``patch``, ``backbone``...);
    ``training`` the ``TrainConfig`` fields (``steps``, ``batch_size``, ``lr``, ``device``...).
    Resumes from the run's checkpoint when one exists; a finished run is returned as cached.
    """
    from iqa_store.train.data import TrainingImages
    from iqa_store.train.trainer import TrainConfig, train
    from iqa_store.store import FeatureStore

    if (images is None) == (dataset is None):
        raise ValueError("give exactly one of images (a folder) or dataset (a registered dataset name)")
    source = (TrainingImages.from_folder(images) if images is not None
              else TrainingImages.from_dataset(dataset, root, **(dataset_options or {})))
    stage_object = STAGES.get(stage)(**(hyperparameters or {}))
    BACKBONES.get(stage_object.backbone)  # an unknown backbone fails here, before any work
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    return train(stage_object, source, TrainConfig(**training), store, checkpoint_dir=checkpoint_dir,
                 progress=progress, log=log)

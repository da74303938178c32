"""Training stages: every learned model is a stage; one trainer runs them all and registers encoders.

``STAGES`` holds the stages by name. A stage (``iqa_store.train.stage``) is a dataclass of
hyper-parameters that declares what data it needs, builds its model, computes its loss and
exports an encoder naming the extractor that reads it; ``iqa_store.train.trainer`` runs any
stage with exact checkpoints, DDP under torchrun, progress and the registry write.

Stages that learn from texts (``Data.IMAGES_TEXTS``) declare the kinds they use (``text_kinds()``,
of ``iqa_store.texts.TEXT_KINDS``); each image's texts come from the store's annotation table
of those images (``iqa-store annotate``'s), made on the fly when the store has none.

Stages that learn from MOS (``Data.IMAGES_MOS``) are trained once per split, on that split's
training rows only: the splits are the store's (``FeatureStore.splits``, the same a fit with
the same protocol, split count and seed uses), and each encoder's record carries its scope.

The encoder a run registers (``iqa_store.store.encoders``):

* weights (safetensors): the stage's export (Re-IQA: ``backbone.<torchvision ResNet key>`` and
  ``head.<key>``; CNNIQA: its network's own keys);
* config: the export's config (``feature_dim`` and what the reader needs), ``stage``, ``reader``
  (an extractor name) and the stage's hyper-parameters;
* provenance: data (with the training ids of a scoped run), steps, loss curve, seed, code version;
* scope: None, or the split it was trained on.

Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from iqa_store.registry import Registry

if TYPE_CHECKING:
    from iqa_store.store import FeatureStore
    from iqa_store.train.trainer import TrainReport

__all__ = ["STAGES", "train"]

STAGES: Registry = Registry("training stage")
STAGES.register("reiqa-content", "iqa_store.train.reiqa:ContentStage",
                help="Re-IQA content encoder: MoCo-v2 on two augmented crops of an image")
STAGES.register("reiqa-quality", "iqa_store.train.reiqa:QualityStage",
                help="Re-IQA quality encoder: distortion chunks, OLA crops, half swap, two scales")
STAGES.register("cnniqa", "iqa_store.train.cnniqa:CnniqaStage",
                help="CNNIQA (Kang et al. 2014): patch CNN regressing MOS, trained per split on its training rows")
STAGES.register("metaiqa-prior", "iqa_store.train.metaiqa:MetaiqaPriorStage",
                help="MetaIQA prior: bi-level meta-learning over distortion-type tasks of KADID-10k and TID2013")
STAGES.register("metaiqa", "iqa_store.train.metaiqa:MetaiqaStage",
                help="MetaIQA fine-tuned per split on its training rows from a metaiqa-prior encoder (or ImageNet)")
STAGES.register("clipiqa-plus", "iqa_store.train.clipiqa_plus:ClipiqaPlusStage",
                help="CLIP-IQA+: a 16-token CoOp context on a frozen CLIP RN50, MSE on MOS, trained per split")
STAGES.register("mpiqe", "iqa_store.train.mpiqe:MpiqeStage",
                help="MP-IQE: deep visual + scene/distortion text prompts on a frozen CLIP ViT-B/16, trained per split")
STAGES.register("qualiclip", "iqa_store.train.qualiclip:QualiclipStage",
                help="QualiCLIP: CLIP's image encoder fine-tuned to rank pairs of crops degraded at 5 levels (no labels)")
STAGES.register("slique", "iqa_store.train.slique:SliqueStage",
                help="SLIQUE: joint image-text (content/distortion/appearance texts) and image-image (OLA) InfoNCE")


def train(stage: str, *, images: str | Path | None = None, dataset: str | None = None, root: str | Path | None = None,
          dataset_options: dict[str, Any] | None = None, protocol: str | None = None, splits: int = 10,
          split_seed: int = 0, only_splits: Sequence[int] | None = None,
          store: "FeatureStore | str | Path | None" = None, hyperparameters: dict[str, Any] | None = None,
          checkpoint_dir: str | Path | None = None, progress: bool = True, log: Callable[[str], None] = print,
          **training: Any) -> list["TrainReport"]:
    """Train ``stage`` and register its encoder(s); one report per trained model.

    Images-only stages train on a folder (``images``) or a dataset's images (``dataset``).
    Stages that learn from MOS need ``dataset`` and ``protocol`` (with ``splits`` and
    ``split_seed``, as a fit names its splits): one model per split (``only_splits`` to train
    some), each on its split's training rows, each resumed or cached on its own.
    ``hyperparameters``: the stage's fields; ``training``: ``TrainConfig`` fields (``steps``,
    ``batch_size``, ``lr``, ``device``...). ``checkpoint_dir`` applies to one-model runs.
    """
    from iqa_store.store import FeatureStore
    from iqa_store.train.stage import Data
    from iqa_store.train.trainer import TrainConfig
    from iqa_store.train.trainer import train as run

    stage_object = STAGES.get(stage)(**(hyperparameters or {}))
    stage_object.check()
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    config = TrainConfig(**training)
    if stage_object.data is Data.IMAGES_MOS:
        if images is not None or dataset is None or protocol is None:
            raise ValueError(f"stage {stage} learns from MOS: give a dataset and a protocol (its splits' training "
                             "rows are what it trains on), not a folder of images")
        return [run(stage_object, data, config, store, progress=progress, log=log)
                for data in _split_training_data(store, dataset, root, dataset_options, protocol, splits, split_seed,
                                                 only_splits, log)]
    if stage_object.data is Data.DATASETS_MOS:
        if images is not None or dataset is not None or protocol is not None or root is not None or dataset_options:
            raise ValueError(f"stage {stage} names its own training datasets (its options): give no images, "
                             "dataset, root or protocol")
        return [run(stage_object, stage_object.own_data(), config, store, checkpoint_dir=checkpoint_dir,
                    progress=progress, log=log)]
    if protocol is not None:
        raise ValueError(f"stage {stage} does not learn from MOS, so it is not trained per split: leave out the protocol")
    if (images is None) == (dataset is None):
        raise ValueError("give exactly one of images (a folder) or dataset (a registered dataset name)")
    data = _unlabelled_data(images, dataset, root, dataset_options)
    if stage_object.data is Data.IMAGES_TEXTS:
        data = _with_texts(data, stage_object.text_kinds(), store, images, dataset, root, dataset_options, progress, log)
    return [run(stage_object, data, config, store, checkpoint_dir=checkpoint_dir, progress=progress, log=log)]


def _unlabelled_data(images: str | Path | None, dataset: str | None, root: str | Path | None,
                     dataset_options: dict[str, Any] | None) -> Any:
    from iqa_store.datasets import load_manifest
    from iqa_store.train.data import TrainingData
    if images is not None:
        return TrainingData.from_folder(images)
    return TrainingData.from_manifest(load_manifest(dataset, root, **(dataset_options or {})))


def _with_texts(data: Any, kinds: Sequence[str], store: "FeatureStore", images: str | Path | None,
                dataset: str | None, root: str | Path | None, dataset_options: dict[str, Any] | None,
                progress: bool, log: Callable[[str], None]) -> Any:
    """``data`` with each image's texts of ``kinds`` (what an images+texts stage's ``text_kinds()``
    names; none: no texts needed). The texts come from the store's annotation table of these
    images: the one ``iqa-store annotate`` saved last for them, else one made now with annotate's
    defaults (and saved: a later run, or annotate, finds it)."""
    if not kinds:
        return data
    from iqa_store.datasets import load_manifest
    from iqa_store.texts import AnnotationSettings, ImageSet, annotate, annotation_key, texts_by_image
    image_set = (ImageSet.from_folder(images) if images is not None else
                 ImageSet.from_manifest(load_manifest(dataset, root, **(dataset_options or {}))))
    table = _stored_texts(store, image_set)
    if table is None:
        settings = AnnotationSettings()  # every kind: one table serves every ablation, filtered by kind below
        key = annotation_key(image_set, settings)
        table = store.load_texts(image_set.name, key)
    if table is None:
        log(f"annotating the {len(image_set.ids)} images of {image_set.name} (no text table in {store.root} yet)")
        table = annotate(image_set, settings, progress=progress, log=log)
        store.save_texts(image_set.name, key, table, {"root": str(image_set.root), "images": len(image_set.ids),
                                                      "settings": settings.to_dict(), "skipped": table.attrs["skipped"]})
    by_image = texts_by_image(table, kinds=tuple(kinds))
    id_of = {Path(path).resolve(): image_id for image_id, path in zip(image_set.ids, image_set.paths)}
    return data.with_texts([by_image.get(id_of.get(Path(path).resolve(), ""), ()) for path in data.paths])


def _stored_texts(store: "FeatureStore", image_set: Any) -> Any:
    """The table ``iqa-store annotate`` saved last for these images (same root, every image in it),
    whatever its options (labels, captioner, pristine); None if there is none."""
    table = store.load_texts(image_set.name)
    if table is None or table.attrs.get("info", {}).get("root") != str(image_set.root):
        return None
    return table if set(image_set.ids) <= set(table["image_id"]) else None


def _split_training_data(store: "FeatureStore", dataset: str, root: str | Path | None,
                         dataset_options: dict[str, Any] | None, protocol: str, n_splits: int, split_seed: int,
                         only_splits: Sequence[int] | None, log: Callable[[str], None]) -> list[Any]:
    """The training part of each wanted split, from the store's splits (made there if new)."""
    from iqa_store.datasets import load_manifest
    from iqa_store.splits import PROTOCOLS, ProtocolSpec
    from iqa_store.store.scope import Scope
    from iqa_store.train.data import TrainingData
    manifest = load_manifest(dataset, root, **(dataset_options or {}))
    store.save_manifest(manifest)  # a later fit on these splits reads its labels from the store
    spec = ProtocolSpec(protocol, n_splits, split_seed)
    if not PROTOCOLS.get(protocol).fitted:
        raise ValueError(f"protocol {protocol!r} has no training rows")
    splits = store.splits(manifest, spec)
    wanted = range(len(splits)) if only_splits is None else list(only_splits)
    unknown = [i for i in wanted if not 0 <= i < len(splits)]
    if unknown:
        raise ValueError(f"split(s) {unknown} do not exist: {protocol} has splits 0..{len(splits) - 1}")
    log(f"{dataset}: {protocol}, {len(splits)} split(s) (key {splits[0].key}); training on split(s) {list(wanted)}")
    return [TrainingData.from_split(manifest, splits[i].train, Scope(manifest.dataset, protocol, splits[i].key, i),
                                    splits[i].val) for i in wanted]

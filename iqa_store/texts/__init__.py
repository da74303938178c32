"""Text annotations of images for vision-language training (SLIQUE's content / distortion / appearance texts).

A base-level layer beside ``datasets`` and ``distortions``: it reads manifests and images and
knows nothing of models or the store. The public surface (stable; training stages use it)::

    TEXT_KINDS = ("content", "distortion", "appearance")
    TABLE_COLUMNS = ("image_id", "id", "kind", "attribute", "level", "text")

    AnnotationSettings(kinds=TEXT_KINDS, captioner=None, variants=1, seed=0)
    ImageSet.from_manifest(manifest, labels=None) -> ImageSet
    ImageSet.from_folder(folder, *, pristine=False, labels=None) -> ImageSet
    annotate(source: Manifest | ImageSet | str | Path, settings=AnnotationSettings(), *,
             captioner: Captioner | None = None, workers=1, progress=True, log=callable) -> pandas.DataFrame
    texts_by_image(table, kinds=TEXT_KINDS) -> dict[str, tuple[str, ...]]   # image_id -> its texts
    annotation_key(image_set, settings) -> str   # the table's key in the store

The table has one row per text: ``image_id`` (the manifest's id; for a folder, the path relative
to it), ``id`` (``image_id/kind/attribute/n``, unique), ``kind`` (one of ``TEXT_KINDS``),
``attribute`` (content: ``label`` or ``caption``; distortion: the merged type, or ``pristine``;
appearance: brightness, contrast, sharpness or colourfulness), ``level`` (text: appearance
``low`` / ``medium`` / ``high``; distortion ``1``-``5``, ``0`` for pristine; content ``""``) and
``text``; ``table.attrs["skipped"]`` lists the images that could not be read. A stage switches a
kind off by filtering the ``kind`` column (``texts_by_image(table, kinds=("content",
"appearance"))``). Made and kept in the store, or read back from it::

    iqa_store.api.annotate(dataset=None, root=None, images=None, dataset_options=None, store=None, *,
                           kinds=TEXT_KINDS, captioner=None, labels=None, pristine=False, variants=1,
                           seed=0, refresh=False, workers=1, progress=True, log=...) -> pandas.DataFrame
    # table.attrs["key"]: its key in the store (FeatureStore.load_texts(dataset, key))
"""

from iqa_store.texts.annotate import (ANNOTATION_VERSION, TABLE_COLUMNS, TEXT_KINDS, AnnotationSettings, ImageSet,
                                      annotate, annotation_key, caption_images, measure_images, texts_by_image)
from iqa_store.texts.appearance import APPEARANCE_ATTRIBUTES, APPEARANCE_LEVELS, measure_appearance, tertile_levels
from iqa_store.texts.content import Captioner, CaptionerError, TransformersCaptioner, read_label_file
from iqa_store.texts.phrases import PhraseBook, phrase_book

__all__ = ["ANNOTATION_VERSION", "APPEARANCE_ATTRIBUTES", "APPEARANCE_LEVELS", "AnnotationSettings", "Captioner",
           "CaptionerError", "ImageSet", "PhraseBook", "TABLE_COLUMNS", "TEXT_KINDS", "TransformersCaptioner",
           "annotate", "annotation_key", "caption_images", "measure_appearance", "measure_images", "phrase_book",
           "read_label_file", "tertile_levels", "texts_by_image"]

"""``iqa-store annotate``: content, distortion and appearance texts of a dataset or image folder (SLIQUE)."""

from __future__ import annotations

import click

from iqa_store.cli.options import dataset_options, emit, store_option, table

_SHOWN = ["image_id", "kind", "attribute", "level", "text"]


@dataset_options
@click.command()
@click.option("--dataset", "-d", help="A registered dataset (`iqa-store datasets list`).")
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="A folder of images instead of a dataset (searched recursively; ids are paths inside it).")
@click.option("--pristine", is_flag=True, help="With --images: the images are undistorted and get pristine texts.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="CSV of image_id (or reference_id) and label: scene/object labels for content texts.")
@click.option("--captioner", metavar="MODEL",
              help="transformers image-text-to-text model (hub name or save_pretrained folder) captioning images "
                   "without a label, e.g. Salesforce/blip-image-captioning-base [default: none, no caption].")
@click.option("--no-content", is_flag=True, help="No content texts.")
@click.option("--no-distortion", is_flag=True, help="No distortion texts.")
@click.option("--no-appearance", is_flag=True, help="No appearance texts.")
@click.option("--variants", type=click.IntRange(1), default=1, show_default=True,
              help="Distortion and appearance phrasings drawn per image and attribute.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the phrase draws.")
@click.option("--refresh", is_flag=True, help="Make the texts again even if the store holds them.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes decoding and measuring the images (the texts do not depend on it).")
@store_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table: aligned columns; json: one object per text.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary line.")
def annotate(dataset: str | None, root: str | None, dataset_options: dict[str, str], images: str | None,
             pristine: bool, labels: str | None, captioner: str | None, no_content: bool, no_distortion: bool,
             no_appearance: bool, variants: int, seed: int, refresh: bool, workers: int, store: str, fmt: str,
             quiet: bool) -> None:
    """Annotate every image with texts and keep them in the store as a table; print the table.

    Content: "A photo of a(n) LABEL." from a label (--labels, the csv dataset's -o labels_column=,
    the demo's own), else a caption (--captioner). Distortion (when the dataset knows type and
    level): a phrase of its merged type with a degree word of its level; pristine phrases for
    undistorted images. Appearance: brightness, contrast, sharpness (FISH), colourfulness, each
    low / medium / high by tertiles over the images annotated. The phrase lists are ours (the
    paper's were never published).

    \b
    Examples:
      iqa-store annotate --dataset demo
      iqa-store annotate --dataset kadid10k --root ~/data/kadid10k --no-content --format json
      iqa-store annotate --dataset csv --root ~/data/mine -o labels=mos.csv -o labels_column=scene
      iqa-store annotate --images ~/data/kadis/ref_imgs --pristine --captioner Salesforce/blip-image-captioning-base
    """
    from iqa_store import api
    if dataset is None and images is None:
        raise click.UsageError("give --dataset NAME or --images DIR")
    if dataset is not None and images is not None:
        raise click.UsageError("give --dataset NAME or --images DIR, not both")
    kinds = [k for k, off in (("content", no_content), ("distortion", no_distortion), ("appearance", no_appearance))
             if not off]
    if not kinds:
        raise click.UsageError("--no-content, --no-distortion and --no-appearance leave no texts to make")
    texts = api.annotate(dataset, root, images, dataset_options, store, kinds=kinds, captioner=captioner, labels=labels,
                         pristine=pristine, variants=variants, seed=seed, refresh=refresh, workers=workers,
                         progress=not quiet,
                         log=(lambda line: None) if quiet else (lambda line: click.echo(line, err=True)))
    rows = texts.to_dict(orient="records")
    emit(fmt, rows, lambda: table(rows, _SHOWN))
    if not quiet:
        click.echo(f"{len(texts)} texts for {texts['image_id'].nunique()} images (key {texts.attrs.get('key')}) "
                   f"in store {store}", err=True)

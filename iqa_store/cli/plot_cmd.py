"""``iqa-store plot levels``: a stored score per distortion type and level (QualiCLIP's Figure 1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from iqa_store.cli.options import emit, format_option, store_option

if TYPE_CHECKING:
    from iqa_store.store import FeatureSet


@click.group()
def plot() -> None:
    """Figures of stored features.

    \b
    Examples:
      iqa-store plot levels --feature qualiclip --dataset kadid10k
    """


@plot.command()
@click.option("--feature", "-f", required=True, help="A stored score feature, e.g. qualiclip or clipiqa@3fa2.")
@click.option("--dataset", "-d", required=True, help="A synthetic dataset: kadid10k, tid2013 or csiq.")
@click.option("--column", default=None, help="Which column of a several-column feature: its declared name "
                                             "(e.g. noisiness) or index [default: the first].")
@click.option("--out", "-o", "out", default="plots", show_default=True, type=click.Path(file_okay=False),
              help="Folder for FEATURE__DATASET__levels.png/.svg/.csv.")
@store_option
@format_option
def levels(feature: str, dataset: str, column: str | None, out: str, store: str, fmt: str) -> None:
    """Mean of a stored score per distortion level, one line per distortion type.

    Types and levels come from the release's image names; level 1 is the mildest. A good
    quality score falls with the level on every type.

    \b
    Examples:
      iqa-store plot levels --feature qualiclip --dataset kadid10k
      iqa-store plot levels -f clipiqa -d tid2013 --column noisiness -o figures
    """
    import pandas as pd

    from iqa_store.datasets.levels import distortion_levels
    from iqa_store.extractors import EXTRACTORS
    from iqa_store.report.plots import level_means_plot
    from iqa_store.store import FeatureStore
    feature_store = FeatureStore(store)
    manifest = feature_store.load_manifest(dataset)
    feature_set = feature_store.resolve(feature, dataset, manifest.manifest_hash(), extractors=EXTRACTORS.names())
    index, name = _column(feature_set, column)
    labels = distortion_levels(manifest)
    if labels["level"].isna().all():
        raise ValueError(f"{dataset} names distortion types but no levels: nothing to plot per level")
    values = pd.DataFrame({"image_id": feature_set.ids, "score": feature_set.read()[:, index]})
    scores = labels.merge(values[feature_set.valid_mask()], on="image_id")
    drawn = level_means_plot(scores, Path(out) / f"{feature}__{dataset}__levels", title=f"{feature_set.name} ({name}): mean per distortion level",
                             ylabel=f"mean {name}")
    emit(fmt, {"feature_set": feature_set.name, "column": name, "images": len(scores),
               "files": [str(f) for f in drawn.files]},
         lambda: "\n".join([f"{feature_set.name} ({name}), {len(scores)} images:", *map(str, drawn.files)]))


def _column(feature_set: "FeatureSet", column: str | None) -> tuple[int, str]:
    """(index, name) of the plotted column: by declared score name or index, default the first."""
    declared = (feature_set.attrs["extractor_settings"].get("score") or {}).get("columns")
    names = list(declared) if declared else [str(i) for i in range(feature_set.dim)]
    if column is None:
        return 0, names[0]
    if column in names:
        return names.index(column), column
    if column.isdigit() and int(column) < len(names):
        return int(column), names[int(column)]
    raise ValueError(f"{feature_set.name} has no column {column!r}; its columns: {', '.join(names)}")

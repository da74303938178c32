"""The figures of a paper report, each written as PNG and SVG.

* ``trend`` (onuoha2024 Fig. 3): per dataset and metric, one line per base feature across its
  combinations (alone, + BRISQUE, + CNNIQA, + MetaIQA), mean over splits.
* ``scatter`` (onuoha2024 Figs. 4-7): per base feature, the test predictions of one split
  against MOS, a colour per combination, each with its fitted 4-parameter logistic.
* ``levels`` (QualiCLIP Fig. 1): a stored score's mean per distortion level (``level_means_plot``).
* ``loss`` (Re-IQA, SLIQUE pretraining): the loss curve in a registered encoder's provenance.

Spec options are plain data from the pipeline file (``Figure.options``); what a figure cannot
draw (no results for it yet) comes back as a note instead of a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from iqa_store.fit.schema import metric_label
from iqa_store.report.paper import Figure, Row
from iqa_store.report.paper_tables import rows_of, same_combination
from iqa_store.report.plots import _figure, _safe_name, level_means_plot, loss_curve

__all__ = ["DrawnFigure", "draw_figure", "logistic_scatter"]

_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class DrawnFigure:
    id: str
    title: str
    files: list[Path] = field(default_factory=list)  # PNG first
    note: str = ""  # why nothing (or only part) was drawn


def draw_figure(figure: Figure, results: pd.DataFrame, predictions: Sequence[Any], folder: Path,
                store: Any = None) -> DrawnFigure:
    """Draw ``figure`` into ``folder`` from the per-split ``results`` and test ``predictions``."""
    draw = {"trend": _trend, "scatter": _scatter, "levels": _levels, "loss": _loss}[figure.kind]
    folder.mkdir(parents=True, exist_ok=True)
    return draw(figure, results, predictions, folder, store)


def _save(fig: Any, folder: Path, name: str) -> list[Path]:
    paths = [folder / f"{_safe_name(name)}.{kind}" for kind in _FORMATS]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, format=path.suffix[1:], dpi=fig.dpi)
    return paths


def _series(figure: Figure) -> tuple[dict[str, str], dict[str, str | None]]:
    """The figure's base features (label -> feature) and steps (label -> added feature, or None)."""
    return dict(figure.options["bases"]), dict(figure.options.get("steps") or {"alone": None})


def _combination(base: str, added: str | None) -> str:
    return base if added is None else f"{base}+{added}"


def _trend(figure: Figure, results: pd.DataFrame, predictions: Sequence[Any], folder: Path, store: Any) -> DrawnFigure:
    bases, steps = _series(figure)
    wanted = list(figure.options.get("datasets") or dict.fromkeys(results["dataset"]))
    datasets = [d for d in wanted if d in set(results["dataset"])]  # a panel per dataset with results
    if not datasets:
        return DrawnFigure(figure.id, figure.title, note=f"no results on {', '.join(wanted)} yet")
    metrics = list(figure.options.get("metrics") or ["plcc", "srcc"])
    regressor = figure.options.get("regressor")
    panels = [(d, m) for d in datasets for m in metrics]
    columns = len(metrics)
    fig = _figure((4.2 * columns, 3.0 * len(datasets)), 100)
    drawn = 0
    for index, (dataset, metric) in enumerate(panels):
        axes = fig.add_subplot(len(datasets), columns, index + 1)
        for label, base in bases.items():
            means = [rows_of(results, Row(label, _combination(base, added), regressor), dataset)[metric].mean()
                     for added in steps.values()]
            if np.any(np.isfinite(means)):
                axes.plot(range(len(steps)), means, marker="o", label=label)
                drawn += 1
        axes.set_xticks(range(len(steps)), list(steps), rotation=20, fontsize=7)
        axes.set_title(f"{metric_label(metric)} on {dataset}", fontsize=9)
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    if not drawn:
        return DrawnFigure(figure.id, figure.title, note="no results for any of its combinations yet")
    fig.suptitle(figure.title, fontsize=10)
    missing = [d for d in wanted if d not in datasets]
    return DrawnFigure(figure.id, figure.title, _save(fig, folder, figure.id),
                       f"no results on {', '.join(missing)} yet" if missing else "")


def logistic_scatter(axes: Any, y_true: np.ndarray, y_pred: np.ndarray, label: str, colour: str) -> None:
    """MOS against prediction with the 4-parameter logistic fitted from prediction to MOS drawn through it."""
    from iqa_store.fit.metrics import fit_logistic, logistic4
    axes.scatter(y_pred, y_true, s=8, alpha=0.5, color=colour, linewidths=0, label=label)
    try:
        params = fit_logistic(y_pred, y_true)
    except (RuntimeError, ValueError):
        return  # too few or constant points: the scatter alone
    x = np.linspace(float(np.min(y_pred)), float(np.max(y_pred)), 100)
    axes.plot(x, logistic4(x, *params), color=colour, linewidth=1.2)


def _scatter(figure: Figure, results: pd.DataFrame, predictions: Sequence[Any], folder: Path,
             store: Any) -> DrawnFigure:
    bases, steps = _series(figure)
    dataset, regressor = figure.options["dataset"], figure.options.get("regressor")
    colours = [f"C{i}" for i in range(len(steps))]
    fig = _figure((4.0 * len(bases), 4.0), 100)
    drawn = 0
    for index, (label, base) in enumerate(bases.items()):
        axes = fig.add_subplot(1, len(bases), index + 1)
        for colour, (step, added) in zip(colours, steps.items()):
            cells = [p for p in predictions if p.dataset == dataset and same_combination(p.combination, _combination(base, added))
                     and (regressor is None or p.regressor == regressor)]
            if not cells:
                continue
            last = max(cells, key=lambda p: p.split)  # the paper shows its last split
            logistic_scatter(axes, np.asarray(last.y_true, float), np.asarray(last.y_pred, float), step, colour)
            drawn += 1
        axes.set_xlabel("predicted")
        axes.set_ylabel("MOS")
        axes.set_title(label, fontsize=9)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    if not drawn:
        return DrawnFigure(figure.id, figure.title, note=f"no predictions on {dataset} yet")
    fig.suptitle(f"{figure.title} (test rows of the last split)", fontsize=10)
    return DrawnFigure(figure.id, figure.title, _save(fig, folder, figure.id))


def _levels(figure: Figure, results: pd.DataFrame, predictions: Sequence[Any], folder: Path, store: Any) -> DrawnFigure:
    from iqa_store.datasets.levels import distortion_levels
    from iqa_store.store import StoreError
    feature, dataset = figure.options["feature"], figure.options["dataset"]
    try:
        manifest = store.load_manifest(dataset)
        feature_set = store.resolve(feature, dataset, manifest.manifest_hash())
    except (StoreError, FileNotFoundError, ValueError) as error:
        return DrawnFigure(figure.id, figure.title, note=f"no {feature} scores on {dataset} in the store ({error})")
    values = pd.DataFrame({"image_id": feature_set.ids, "score": feature_set.read()[:, 0]})
    scores = distortion_levels(manifest).merge(values[feature_set.valid_mask()], on="image_id")
    drawn = level_means_plot(scores.dropna(subset=["level"]), folder / figure.id, title=figure.title,
                             ylabel=f"mean {feature}")
    return DrawnFigure(figure.id, figure.title, drawn.files[:2])


def _loss(figure: Figure, results: pd.DataFrame, predictions: Sequence[Any], folder: Path, store: Any) -> DrawnFigure:
    from iqa_store.store.encoders import list_encoders
    files, missing = [], []
    for name in figure.options["encoders"]:
        records = [r for r in list_encoders(store) if r.name == name and r.provenance.get("loss_curve")]
        if not records:
            missing.append(name)
            continue
        latest = max(records, key=lambda r: r.created)
        title = f"{figure.title}: {latest.id}, {len(latest.provenance['loss_curve'])} steps"
        files += [loss_curve(latest.provenance["loss_curve"], folder / f"{_safe_name(figure.id + '-' + name)}.{kind}",
                             title) for kind in _FORMATS]
    files.sort(key=lambda p: p.suffix != ".png")
    note = f"no trained encoder {', '.join(missing)} in the store" if missing else ""
    return DrawnFigure(figure.id, figure.title, files, note)

"""PNG figures of fitted grids, drawn with matplotlib's Agg canvas.

matplotlib is imported inside each function (it costs ~0.5 s), and we draw on a bare
``Figure`` with ``FigureCanvasAgg`` rather than pyplot, so no global backend or figure
state changes. Images have exactly ``size`` x ``dpi`` pixels (no tight bounding box).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from iqa_store.fit.schema import CELL_KEYS as _CELL_KEYS

__all__ = ["LevelPlot", "level_means_plot", "loss_curve", "scatter_predicted_vs_mos", "trend_plot"]



def _figure(size: tuple[float, float], dpi: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi, format=path.suffix[1:].lower() or "png")  # .png or .svg
    return path


def scatter_predicted_vs_mos(predictions: Sequence[Any], path: str | Path, title: str | None = None, *,
                             size: tuple[float, float] = (6.0, 6.0), dpi: int = 100) -> list[Path]:
    """Predicted score against MOS, one PNG per dataset/combination/regressor/protocol group,
    pooling the test rows of all its splits; returns the files written.

    ``predictions``: objects with ``dataset``, ``combination``, ``regressor``, ``protocol``,
    ``y_true`` and ``y_pred`` (``CellPrediction``). ``path`` ending in ".png" is the file for
    a single group; otherwise it is a directory that receives one
    ``<dataset>__<combination>__<regressor>__<protocol>.png`` per group. SRCC and PLCC of
    the pooled points and the mean SRCC over splits are annotated; ``title`` heads each plot.
    """
    if not predictions:
        raise ValueError("no predictions to plot")
    groups: dict[tuple, list[Any]] = {}
    for p in predictions:
        groups.setdefault(tuple(str(getattr(p, k)) for k in _CELL_KEYS), []).append(p)
    path = Path(path)
    if path.suffix.lower() == ".png":
        if len(groups) > 1:
            raise ValueError(f"predictions mix {len(groups)} dataset/combination/regressor groups; "
                             f"give a directory instead of {path.name}")
        targets = {key: path for key in groups}
    else:
        targets = {key: path / (_safe_name("__".join(key)) + ".png") for key in groups}
    return [_scatter(group, targets[key], key, title, size, dpi) for key, group in groups.items()]


def _scatter(predictions: list[Any], path: Path, key: tuple[str, ...], title: str | None,
             size: tuple[float, float], dpi: int) -> Path:
    from iqa_store.fit.metrics import plcc, srcc

    y_true = np.concatenate([np.asarray(p.y_true, float) for p in predictions])
    y_pred = np.concatenate([np.asarray(p.y_pred, float) for p in predictions])
    per_split = [srcc(p.y_true, p.y_pred) for p in predictions]

    figure = _figure(size, dpi)
    axes = figure.add_subplot()
    axes.scatter(y_true, y_pred, s=6, alpha=0.4, linewidths=0)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    axes.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")  # perfect prediction
    axes.set_xlabel("MOS")
    axes.set_ylabel("predicted")
    heading = " / ".join(key[1:])  # combination / regressor / protocol
    axes.set_title(f"{title}\n{heading}" if title else f"{key[0]}: {heading}", fontsize=10)
    text = (f"pooled SRCC {srcc(y_true, y_pred):.4f}\npooled PLCC {plcc(y_true, y_pred):.4f}\n"
            f"mean SRCC over {len(predictions)} splits {np.nanmean(per_split):.4f}")
    axes.text(0.03, 0.97, text, transform=axes.transAxes, va="top", fontsize=9,
              bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    return _save(figure, path, dpi)


def _safe_name(text: str) -> str:
    # Feature names like "openclip:ViT-B-16:openai" hold characters unsafe in file names.
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def trend_plot(agg: pd.DataFrame, path: str | Path, metric: str = "srcc", *, title: str | None = None,
               size: tuple[float, float] = (10.0, 5.0), dpi: int = 100) -> Path:
    """Mean ``metric`` (error bars: std over splits) per feature combination, one line per
    dataset (and regressor/protocol when there are several), like onuoha2024 Fig. 3."""
    column = f"{metric}_mean"
    if column not in agg:
        raise ValueError(f"aggregate table has no {column!r} column")
    if agg.empty:
        raise ValueError("nothing to plot")
    combinations = list(dict.fromkeys(agg["combination"]))
    position = {c: i for i, c in enumerate(combinations)}
    line_keys = ["dataset"] + [k for k in ("regressor", "protocol") if agg[k].nunique() > 1]

    figure = _figure(size, dpi)
    axes = figure.add_subplot()
    for key, group in agg.groupby(line_keys, sort=False):
        label = " / ".join(map(str, key if isinstance(key, tuple) else (key,)))
        std = group.get(f"{metric}_std")
        axes.errorbar([position[c] for c in group["combination"]], group[column],
                      yerr=None if std is None else std.fillna(0.0), marker="o", capsize=3, label=label)
    axes.set_xticks(range(len(combinations)), combinations, rotation=45, ha="right", fontsize=8)
    axes.set_ylabel(metric.upper().replace("_", " "))
    axes.set_title(title or f"{metric.upper()} per feature combination", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path, dpi)


def loss_curve(losses: Sequence[float], path: str | Path, title: str | None = None, *,
               size: tuple[float, float] = (7.0, 4.0), dpi: int = 100) -> Path:
    """Training loss per step, with a moving average over about 5 % of the run."""
    values = np.asarray(losses, dtype=float)
    figure = _figure(size, dpi)
    axes = figure.add_subplot()
    steps = np.arange(1, values.size + 1)
    axes.plot(steps, values, color="0.7", linewidth=0.8, label="per step")
    window = max(1, values.size // 20)
    if window > 1:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        axes.plot(steps[window - 1:], smooth, color="C0", linewidth=1.6, label=f"mean of {window} steps")
    axes.set_xlabel("step")
    axes.set_ylabel("InfoNCE loss")
    axes.set_title(title or "pretraining loss")
    axes.legend()
    return _save(figure, path, dpi)



@dataclass(frozen=True)
class LevelPlot:
    """What ``level_means_plot`` drew: ``means`` (distortion x level), the files, the figure."""

    means: pd.DataFrame
    files: list[Path]
    figure: Any


def level_means_plot(scores: pd.DataFrame, path: str | Path, *, title: str, ylabel: str = "mean score",
                     size: tuple[float, float] = (10.0, 6.0), dpi: int = 100) -> LevelPlot:
    """Mean score per distortion level, one line per distortion type and a thick one over all
    images (QualiCLIP's Figure 1). ``scores``: ``distortion``, ``level``, ``score`` per image.
    Writes ``path`` (its name made safe for file systems) + .png, .svg and .csv (the means)."""
    if scores.empty:
        raise ValueError("no scored images to plot")
    means = scores.groupby(["distortion", "level"])["score"].mean().unstack("level")
    overall = scores.groupby("level")["score"].mean()
    figure = _figure(size, dpi)
    axes = figure.add_subplot()
    for distortion, row in means.iterrows():
        axes.plot(row.index.to_numpy(int), row.to_numpy(float), marker="o", linewidth=1, label=str(distortion))
    axes.plot(overall.index.to_numpy(int), overall.to_numpy(float), color="black", linewidth=3, label="all images")
    axes.set_xticks(overall.index.to_numpy(int))
    axes.set_xlabel("distortion level (1 = mildest)")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + len(means) // 20)
    folder, name = Path(path).parent, _safe_name(Path(path).name)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{name}.{kind}" for kind in ("png", "svg", "csv")]
    for file in files[:2]:
        figure.savefig(file, dpi=dpi, format=file.suffix[1:], bbox_inches="tight")  # the legend sits outside
    means.to_csv(files[2])
    return LevelPlot(means, files, figure)

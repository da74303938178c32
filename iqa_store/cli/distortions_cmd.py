"""``iqa-store distortions``: list the banks, apply one distortion to an image, draw a contact sheet.

Torch and matplotlib are imported only when a subcommand runs, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from iqa_store.cli.options import emit, format_option, table
from iqa_store.distortions import BANKS, DISTORTIONS, LEVELS, Bank, BankEntry, apply, get_bank

if TYPE_CHECKING:
    import torch

# Lossy formats are written at settings that add no visible compression of their own.
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True}}


@click.group()
def distortions() -> None:
    """The synthetic distortion banks: Re-IQA's (26 types) and KADID-24 (24 types in 7 groups), 5 levels each.

    \b
    Examples:
      iqa-store distortions list --format json
      iqa-store distortions apply --bank kadid24 --type jpeg --level 3 photo.jpg jpeg3.png
      iqa-store distortions sheet photo.jpg --out sheet.png --bank reiqa --tile 160
    """


@distortions.command("list")
@click.option("--bank", "banks", multiple=True, type=click.Choice(BANKS.names()),
              help="Only this bank; repeat for several [default: all].")
@format_option
def list_(banks: tuple[str, ...], fmt: str) -> None:
    """List every type of each bank: group, parameter, the values of levels 1..5 (mildest first).

    \b
    Examples:
      iqa-store distortions list
      iqa-store distortions list --bank kadid24 --format json
    """
    data = {name: _describe(get_bank(name)) for name in banks or BANKS.names()}
    emit(fmt, data, lambda: "\n\n".join(_bank_text(name, info) for name, info in data.items()))


def _describe(bank: Bank) -> dict[str, Any]:
    return {"description": bank.description,
            "types": [{"type": e.type, "group": e.group, "parameter": e.parameter, "values": list(e.values),
                       "options": dict(e.options), "help": DISTORTIONS.help(e.type)} for e in bank.entries]}


def _bank_text(name: str, info: dict[str, Any]) -> str:
    rows = [{**row, "values": ", ".join(f"{v:g}" for v in row["values"])} for row in info["types"]]
    header = f"{name}: {info['description']}, {len(rows)} types x {len(LEVELS)} levels"
    return header + "\n" + table(rows, ["type", "group", "parameter", "values", "help"])


@distortions.command("apply")
@click.option("--bank", default="reiqa", show_default=True, type=click.Choice(BANKS.names()))
@click.option("--type", "type_", required=True, help="A type of the bank (iqa-store distortions list).")
@click.option("--level", required=True, type=int, help="1 (mildest) to 5.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the random types (noise, jitter...).")
@click.argument("source", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
def apply_(bank: str, type_: str, level: int, seed: int, source: Path, target: Path) -> None:
    """Distort image IN with one type at one level and write OUT (format from its extension).

    Write PNG to keep exactly the distorted pixels; JPEG is written at quality 95 without
    chroma subsampling, which adds no visible compression but is not exact.

    \b
    Example:
      iqa-store distortions apply --bank reiqa --type gaussian_blur --level 4 --seed 0 photo.jpg blur4.png
    """
    image_format = _image_format(target)  # before any work: a bad OUT name fails at once
    pixels = _distorted(_read(source), bank, type_, level, seed)
    _write(pixels, target, image_format)


@distortions.command("sheet")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The sheet image (.png, or .pdf, .svg).")
@click.option("--bank", default="reiqa", show_default=True, type=click.Choice(BANKS.names()))
@click.option("--type", "types", multiple=True, help="Only this type; repeat for several [default: every type].")
@click.option("--tile", default=160, show_default=True, type=click.IntRange(0),
              help="Shrink the image so its longer side is at most this many pixels; 0 keeps its size.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the random types, as in `apply`.")
def sheet(image: Path, out: Path, bank: str, types: tuple[str, ...], tile: int, seed: int) -> None:
    """Draw IMAGE under every type (rows) at levels 0 (pristine) to 5 (columns), labelled.

    \b
    Examples:
      iqa-store distortions sheet photo.jpg --out reiqa.png
      iqa-store distortions sheet photo.jpg --out blur.png --bank kadid24 --type gaussian_blur --type lens_blur
    """
    _check_sheet_format(out)  # before any work: a bad --out name fails at once
    chosen = get_bank(bank)
    unknown = [t for t in types if t not in chosen]
    if unknown:
        raise click.BadParameter(f"{unknown} not in bank {bank!r}; it has: {', '.join(chosen.types)}", param_hint="--type")
    rows = [chosen.entry(t) for t in types] or list(chosen.entries)
    pristine = _read(image, tile)
    tiles = [[_to_uint8(pristine)] + [_distorted(pristine, bank, e.type, level, seed) for level in LEVELS] for e in rows]
    _draw_sheet(chosen, rows, tiles, out)


def _read(path: Path, longest: int = 0) -> "torch.Tensor":
    """[3,H,W] float in [0, 1], shrunk (Lanczos) so its longer side is at most ``longest`` when given."""
    import torch
    from PIL import Image

    from iqa_store.distortions._compression import from_uint8
    from iqa_store.images import ImageReadError, read_rgb
    try:
        image = read_rgb(path)
    except ImageReadError as error:
        raise click.BadParameter(str(error), param_hint=repr(str(path))) from None
    if longest and max(image.size) > longest:
        scale = longest / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return from_uint8(np.asarray(image), torch.empty(0))


def _distorted(image: "torch.Tensor", bank: str, type_: str, level: int, seed: int) -> np.ndarray:
    """[H,W,3] uint8; every call draws from a fresh generator seeded with ``seed``, so a sheet's
    tile is the image that ``apply`` writes for the same type, level and seed."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    return _to_uint8(apply(image, bank, type_, level, generator))


def _to_uint8(image: "torch.Tensor") -> np.ndarray:
    from iqa_store.distortions._compression import to_uint8  # here, not at the top: it imports torch
    return to_uint8(image)


def _image_format(target: Path) -> str:
    from PIL import Image
    image_format = Image.registered_extensions().get(target.suffix.lower())
    if image_format is None:
        raise click.BadParameter(f"cannot tell an image format from {target.name!r}; use .png (exact) or .jpg",
                                 param_hint="OUT")
    return image_format


def _check_sheet_format(out: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix.lower().lstrip(".") not in formats:
        raise click.BadParameter(f"cannot write a sheet as {out.name!r}; use .png, .pdf or .svg", param_hint="--out")


def _write(pixels: np.ndarray, target: Path, image_format: str) -> None:
    from PIL import Image
    Image.fromarray(pixels).save(target, format=image_format, **_SAVE_OPTIONS.get(image_format, {}))


def _draw_sheet(bank: Bank, rows: list[BankEntry], tiles: list[list[np.ndarray]], out: Path) -> None:
    """A grid of tiles at their pixel size plus fixed margins for the labels, saved without tight
    cropping: the sheet's size follows from the tile size and the number of rows."""
    from matplotlib.figure import Figure
    dpi, left, top, bottom = 100, 1.6, 0.8, 0.3  # inches: row labels; title and column titles; last values
    height, width = tiles[0][0].shape[:2]
    cell_w, cell_h = (width + 24) / dpi, (height + 36) / dpi  # room for the value under each tile
    size = ((len(LEVELS) + 1) * cell_w + left, len(rows) * cell_h + top + bottom)
    figure = Figure(figsize=size, dpi=dpi)
    axes = figure.subplots(len(rows), len(LEVELS) + 1, squeeze=False)
    figure.subplots_adjust(left=left / size[0], right=0.99, bottom=bottom / size[1], top=1 - top / size[1],
                           wspace=0.05, hspace=0.3)
    figure.suptitle(f"{bank.name}: {bank.description}", fontsize=9, y=1 - 0.1 / size[1], va="top")
    for row, (entry, images) in enumerate(zip(rows, tiles)):
        for column, pixels in enumerate(images):
            axis = axes[row][column]
            axis.imshow(pixels, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column:
                axis.set_xlabel(f"L{column}: {entry.values[column - 1]:g}", fontsize=7)
            if row == 0:
                axis.set_title("pristine" if column == 0 else f"level {column}", fontsize=8)
        axes[row][0].set_ylabel(f"{entry.type}\n{entry.parameter}", fontsize=7, rotation=0, ha="right", va="center")
    figure.savefig(out, dpi=dpi)

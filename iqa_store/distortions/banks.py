"""The distortion banks as data: one row per distortion type with its five values per bank.

Values are the public reference codes' (the project's DISTORTIONS.md facts), level 1 (mildest)
to 5. Where the reference order is not monotone in severity (mean shift, linear contrast change,
in both banks), the values are reordered so that the error against the pristine image (PSNR)
grows with the level, and the reference order is kept in ``reference_values``; mirror-image
values (a +0.08 and a -0.08 shift) are equally strong and marked as ``ties``. Add a type by
adding its row here and its function to ``DISTORTIONS``. No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from iqa_store.registry import Registry, RegistryError

LEVELS = (1, 2, 3, 4, 5)
BANK_NAMES = ("reiqa", "kadid24")


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TypeParameters:
    """One row of the table: a registered distortion type and its five values in each bank.

    ``values[bank]``: the five parameter values, level 1..5 in increasing severity.
    ``options[bank]``: keyword options passed to the type's function in that bank.
    ``reference_values[bank]``: the reference code's order, only where we reordered.
    ``ties``: pairs of adjacent levels whose values are equally strong (mirror images such as
    +0.08 and -0.08); their order is a convention: the brighter / higher-contrast one first.
    ``per_image``: the value is a budget for the whole image (blocks pasted, patches moved, a
    compression ratio that includes the codestream's fixed overhead), so the same value on a
    smaller image is a stronger distortion; apply such a type to the whole image, not a cut-out.
    """

    type: str
    group: str
    parameter: str
    values: Mapping[str, tuple[float, ...]]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=_frozen)
    reference_values: Mapping[str, tuple[float, ...]] = field(default_factory=_frozen)
    ties: tuple[tuple[int, int], ...] = ()
    note: str = ""
    per_image: bool = False

    def __post_init__(self) -> None:
        for low, high in self.ties:
            if high != low + 1 or low not in LEVELS or high not in LEVELS:
                raise ValueError(f"{self.type}: a tie must name two adjacent levels, got {(low, high)}")
        for bank, values in self.values.items():
            if bank not in BANK_NAMES:
                raise ValueError(f"{self.type}: unknown bank {bank!r}")
            if len(values) != len(LEVELS):
                raise ValueError(f"{self.type}: {bank} needs {len(LEVELS)} values, got {len(values)}")


def _row(type: str, group: str, parameter: str, *, reiqa=None, kadid24=None, both=None,
         options: Mapping[str, Mapping[str, Any]] | None = None,
         reference_values: Mapping[str, tuple[float, ...]] | None = None,
         ties: tuple[tuple[int, int], ...] = (), note: str = "", per_image: bool = False) -> TypeParameters:
    values = {}
    if both is not None:
        values = {"reiqa": tuple(both), "kadid24": tuple(both)}
    if reiqa is not None:
        values["reiqa"] = tuple(reiqa)
    if kadid24 is not None:
        values["kadid24"] = tuple(kadid24)
    return TypeParameters(type, group, parameter, _frozen(values),
                          _frozen({bank: _frozen(o) for bank, o in (options or {}).items()}),
                          _frozen(reference_values), tuple(ties), note, per_image)


_SEVERITY_ORDER_NOTE = ("reordered by measured severity (PSNR against the pristine image falls with the level "
                        "on the demo photographs); the reference codes' orders are not monotone")

# fmt: off
PARAMETERS: Mapping[str, TypeParameters] = MappingProxyType({row.type: row for row in (
    # blur
    _row("gaussian_blur", "blur", "sigma (px)", both=(0.1, 0.5, 1, 2, 5),
         options={"reiqa": {"truncate": 3.0}, "kadid24": {"truncate": 2.0}},
         note="kernel side 2*ceil(2*sigma)+1 in KADID-24; Re-IQA used Pillow's GaussianBlur, here a 3-sigma kernel"),
    _row("lens_blur", "blur", "disk radius (px)", both=(1, 2, 4, 6, 8)),
    _row("motion_blur", "blur", "line length (px)", reiqa=(12, 16, 20, 24, 28), kadid24=(1, 2, 4, 6, 10),
         options={"reiqa": {"angles": (0.0, 90.0)}, "kadid24": {"angles": None}},
         note="Re-IQA: horizontal or vertical; KADID-24: the 'radius' of fspecial('motion') is its length, "
              "angle uniform"),
    # color
    _row("color_diffusion", "color", "chroma blur amount", both=(1, 3, 6, 8, 12)),
    _row("color_shift", "color", "green shift (px)", both=(1, 3, 6, 8, 12)),
    _row("color_saturation_hsv", "color", "HSV saturation factor", both=(0.4, 0.2, 0.1, 0, -0.4)),
    _row("color_saturation_lab", "color", "Lab a*b* factor", both=(1, 2, 3, 6, 9)),
    # compression
    _row("jpeg", "compression", "JPEG quality", reiqa=(70, 43, 36, 24, 7), kadid24=(43, 36, 24, 7, 4)),
    _row("jpeg2000", "compression", "compression ratio", kadid24=(16, 32, 45, 120, 170), per_image=True),
    # noise
    _row("white_noise", "noise", "variance", both=(0.001, 0.002, 0.003, 0.005, 0.01)),
    _row("white_noise_ycbcr", "noise", "variance", both=(1e-4, 5e-4, 1e-3, 2e-3, 3e-3)),
    _row("impulse_noise", "noise", "density", both=(0.001, 0.005, 0.01, 0.02, 0.03),
         options={"reiqa": {"per_channel": False}, "kadid24": {"per_channel": True}}),
    _row("multiplicative_noise", "noise", "variance", both=(0.001, 0.005, 0.01, 0.02, 0.05)),
    _row("denoise", "noise", "variance", reiqa=(0.001, 0.002, 0.003, 0.005, 0.01)),
    # brightness
    _row("brighten", "brightness", "curve amount", both=(0.1, 0.2, 0.4, 0.7, 1.1)),
    _row("darken", "brightness", "curve amount", both=(0.05, 0.1, 0.2, 0.4, 0.8)),
    _row("mean_shift", "brightness", "added offset", both=(0, 0.08, -0.08, 0.15, -0.15), ties=((2, 3), (4, 5)),
         reference_values={"reiqa": (0.15, 0.08, 0, -0.08, -0.15), "kadid24": (0, 0.08, -0.08, 0.15, -0.15)},
         note=_SEVERITY_ORDER_NOTE),
    # spatial
    _row("jitter", "spatial", "offset std (px)", both=(0.05, 0.1, 0.2, 0.5, 1)),
    _row("non_eccentricity", "spatial", "16x16 patches moved", both=(20, 40, 60, 80, 100), per_image=True),
    _row("pixelate", "spatial", "strength s (scale 0.95 - s**0.6)", both=(0.01, 0.05, 0.1, 0.2, 0.5)),
    _row("quantization", "spatial", "levels", kadid24=(20, 16, 13, 10, 7),
         note="uniform bins with centre values, not KADID's multi-level Otsu thresholds"),
    _row("color_block", "spatial", "32x32 blocks", both=(2, 4, 6, 8, 10), per_image=True),
    # sharpness and contrast
    _row("high_sharpen", "sharpness_contrast", "unsharp amount on L*", both=(1, 2, 3, 6, 12)),
    _row("linear_contrast", "sharpness_contrast", "curve amount", both=(0, -0.4, 0.15, -0.6, 0.3), ties=((1, 2),),
         reference_values={"reiqa": (0.3, 0.15, 0, -0.4, -0.6), "kadid24": (0, 0.15, -0.4, 0.3, -0.6)},
         note=_SEVERITY_ORDER_NOTE),
    _row("nonlinear_contrast", "sharpness_contrast", "output half-range", kadid24=(0.4, 0.3, 0.2, 0.1, 0.05)),
    # resize down/up (Re-IQA only; no KADID group)
    _row("resize_bicubic", "resize", "factor", reiqa=(2, 3, 4, 8, 16)),
    _row("resize_bilinear", "resize", "factor", reiqa=(2, 3, 4, 8, 16)),
    _row("resize_lanczos", "resize", "factor", reiqa=(2, 3, 4, 8, 16)),
    _row("resize_nearest", "resize", "factor", reiqa=(2, 3, 4, 5, 6)),
)})
# fmt: on


@dataclass(frozen=True)
class BankEntry:
    """One distortion type in one bank."""

    type: str
    group: str
    parameter: str
    values: tuple[float, ...]
    options: Mapping[str, Any] = field(default_factory=_frozen)
    reference_values: tuple[float, ...] | None = None
    ties: tuple[tuple[int, int], ...] = ()
    per_image: bool = False  # see TypeParameters

    def value(self, level: int) -> float:
        return self.values[check_level(level) - 1]

    @property
    def ranks(self) -> tuple[int, ...]:
        """Severity rank per level (1 = mildest); tied levels share a rank, e.g. (1, 2, 2, 3, 3)."""
        ranks, rank = [], 0
        for level in LEVELS:
            if (level - 1, level) not in self.ties:
                rank += 1
            ranks.append(rank)
        return tuple(ranks)


@dataclass(frozen=True)
class Bank:
    """A named set of distortion types, each with five levels of increasing severity."""

    name: str
    description: str
    entries: tuple[BankEntry, ...]

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(entry.type for entry in self.entries)

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        groups: dict[str, list[str]] = {}
        for entry in self.entries:
            groups.setdefault(entry.group, []).append(entry.type)
        return {group: tuple(types) for group, types in groups.items()}

    def entry(self, type: str) -> BankEntry:
        for entry in self.entries:
            if entry.type == type:
                return entry
        raise RegistryError(f"distortion {type!r} is not in bank {self.name!r}; it has: {', '.join(self.types)}")

    def __contains__(self, type: object) -> bool:
        return type in self.types

    def __len__(self) -> int:
        return len(self.entries)


def check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ValueError(f"level must be an integer in {LEVELS[0]}..{LEVELS[-1]}, got {level!r}")
    return level


def build_bank(name: str, description: str) -> Bank:
    entries = tuple(
        BankEntry(row.type, row.group, row.parameter, tuple(row.values[name]), row.options.get(name, _frozen()),
                  row.reference_values.get(name), row.ties, row.per_image)
        for row in PARAMETERS.values() if name in row.values
    )
    return Bank(name, description, entries)


BANKS: Registry = Registry("distortion bank")
BANKS.register("reiqa", build_bank("reiqa", "Re-IQA quality-encoder augmentations "
                                             "(saha2023-reiqa, released code: 26 entries)"),
               help="Re-IQA: 26 types x 5 levels")
BANKS.register("kadid24", build_bank("kadid24", "KADID-style 24 types in 7 groups "
                                                 "(agnolucci2024-qualiclip, ARNIQA code)"),
               help="KADID-24: 24 types in 7 groups x 5 levels")


def get_bank(bank: str | Bank) -> Bank:
    """``bank`` itself, or the registered bank of that name."""
    return bank if isinstance(bank, Bank) else BANKS.get(bank)

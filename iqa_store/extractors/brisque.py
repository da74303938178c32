"""BRISQUE features, numerically the same as the LIVE MATLAB release.

Mittal, Moorthy and Bovik, "No-Reference Image Quality Assessment in the Spatial Domain",
IEEE TIP 2012. The 36 features are those of ``brisque_feature.m`` with
``estimateggdparam.m`` / ``estimateaggdparam.m``, at two scales:

* grey image on the 0-255 scale (an RGB uint8 image goes through MATLAB's ``rgb2gray``);
* MSCN map ``(im - mu) ./ (sigma + 1)`` with a 7x7 Gaussian (sigma 7/6, sum 1) applied as
  ``filter2(..., 'same')``: correlation with zero padding; ``sigma = sqrt(|E[x^2] - mu^2|)``;
* GGD fit of the MSCN map -> (shape, variance);
* for the shifts ``[0 1; 1 0; 1 1; -1 1]`` (MATLAB ``circshift``), the products
  ``mscn .* shifted`` get an AGGD fit -> (shape, mean, left variance, right variance);
* shape parameters come from the look-up table ``gam = 0.2:0.001:10`` (first argmin, as
  MATLAB's ``min``);
* the second scale is MATLAB's ``imresize(im, 0.5)``: Keys bicubic (a = -0.5) widened to
  8 taps for antialiasing, output ``ceil(size/2)``, out-of-range indices mirrored
  (``aux = [1:n, n:-1:1]``, as in the current toolbox; MATLAB releases before about
  R2017 clamped them instead, which changes only the scale-2 borders).

Degenerate inputs follow MATLAB: a side of the AGGD with no sample (a tiny or flat image)
gives NaN variances and shape 0.2 (``min`` of an all-NaN vector returns index 1). Inside a
flat 7x7 window ``im - mu`` is a rounding residue (about 1e-14) whose sign depends on the
summation order, in MATLAB as here, so images with flat windows are reproducible only up to
those signs. The sign of a product is taken from the signs of its factors, which is the
sign MATLAB sees unless a product underflows (factors below 1e-154; not on the 0-255 scale).

Implementation: vectorised numpy/scipy in float64. The MSCN map is produced in strips of
rows and reduced straight into running sums (no image-sized array beyond the grey and
half-size images): the circshift products are never formed, their sums are dot products of
per-pixel planes with their shifted selves (see ``_PairSums``). Large buffers are reused
between calls (``_Workspace``), because fresh multi-megabyte arrays cost page faults that
rival the arithmetic. The heavy work runs in ``Brisque.load_item``, so a DataLoader with
workers computes images in parallel.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
from scipy import ndimage
from scipy.special import gamma as _gamma

from iqa_store.extractors.base import Extractor
from iqa_store.images import read_rgb_array

__all__ = ["FEATURE_NAMES", "Brisque", "brisque_features", "imresize_half", "mscn", "rgb2gray_uint8"]

# MATLAB rgb2gray: first row of inv([1 0.956 0.621; 1 -0.272 -0.647; 1 -1.106 1.703]).
RGB2GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)

# circshift shifts of brisque_feature.m: (rows, columns).
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))

_C = 1.0  # MSCN stabiliser on the 0-255 scale


def _feature_names() -> tuple[str, ...]:
    names = []
    for scale in (1, 2):
        names += [f"s{scale}_ggd_shape", f"s{scale}_ggd_variance"]
        for direction in ("h", "v", "d1", "d2"):  # the order of SHIFTS
            names += [f"s{scale}_{direction}_aggd_{part}"
                      for part in ("shape", "mean", "left_variance", "right_variance")]
    return tuple(names)


FEATURE_NAMES = _feature_names()


# --------------------------------------------------------------------------- constants


@lru_cache(maxsize=None)
def _gaussian_taps() -> np.ndarray:
    """1-D factor of fspecial('gaussian', 7, 7/6) normalised to sum 1.

    The 2-D window is the outer product of this vector with itself (fspecial's zeroing of
    values below eps*max never triggers here: the smallest ratio is exp(-6.6)).
    """
    x = np.arange(-3, 4, dtype=np.float64)
    taps = np.exp(-(x * x) / (2.0 * (7.0 / 6.0) ** 2))
    return taps / taps.sum()


@lru_cache(maxsize=None)
def _shape_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gam = 0.2:0.001:10 and the moment-ratio curves of the GGD and AGGD .m files."""
    gam = np.arange(200, 10001, dtype=np.float64) / 1000.0
    g1, g2, g3 = _gamma(1.0 / gam), _gamma(2.0 / gam), _gamma(3.0 / gam)
    r_ggd = (g1 * g3) / (g2 ** 2)   # estimateggdparam.m
    r_aggd = (g2 ** 2) / (g1 * g3)  # estimateaggdparam.m
    return gam, r_ggd, r_aggd


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


@lru_cache(maxsize=None)
def _half_taps() -> np.ndarray:
    """The 8 non-zero weights of imresize(., 0.5), bicubic with antialiasing.

    With scale 0.5, output k (1-based) maps to u = 2k - 0.5 and ``left = floor(u - 4)``,
    so every output sees the same offsets u - j = 4.5, 3.5, ..., -4.5 under the kernel
    0.5*cubic(0.5*x); the two outer weights are 0.5*cubic(2.25) = 0 and are dropped
    (MATLAB's "kill" step), and the same normalisation applies to every output.
    """
    distance = 3.5 - np.arange(8, dtype=np.float64)
    weights = 0.5 * _cubic(0.5 * distance)
    return weights / weights.sum()


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """MATLAB's aux = [1:n, n:-1:1]; aux(mod(j-1, 2n)+1), in 0-based indices."""
    j = np.mod(index, 2 * n)
    return np.where(j < n, j, 2 * n - 1 - j)


class _Workspace:
    """Named float64 buffers reused from call to call (one workspace per thread).

    Buffers up to ``cap`` elements are kept; a later request returns a view of the kept
    buffer if it is large enough. Contents are undefined on return.
    """

    cap = 1 << 23  # 64 MiB per buffer

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        size = math.prod(shape)
        key = f"{name}:{np.dtype(dtype).str}"
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = np.empty(size, dtype=dtype)
            if size <= self.cap:
                self._buffers[key] = buffer
        return buffer[:size].reshape(shape)


_local = threading.local()


def _workspace() -> _Workspace:
    workspace = getattr(_local, "workspace", None)
    if workspace is None:
        workspace = _local.workspace = _Workspace()
    return workspace


# --------------------------------------------------------------------------- grey and resize


def rgb2gray_uint8(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """MATLAB ``rgb2gray`` on a uint8 HxWx3 array, as float64 integers 0..255 (or into ``out``,
    float64 or uint8: the extractor keeps the grey image as uint8, an eighth of the memory
    traffic of the float64 passes that read it back).

    MATLAB's uint8() rounds half away from zero; over all 256^3 inputs the weighted sum never
    comes closer than 4.5e-6 to a half-integer (checked in the tests), so rounding to the
    nearest integer (``np.rint``) gives MATLAB's value and no summation-order detail can change
    it. Done in strips of rows, so the products stay in cache.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    grey = np.empty((h, w)) if out is None else out
    rows = min(_strip_rows(w), h)
    ws = _workspace()
    total, term = ws.get("rgb2gray.total", (rows, w)), ws.get("rgb2gray.term", (rows, w))
    w_r, w_g, w_b = RGB2GRAY_WEIGHTS
    for r0 in range(0, h, rows):
        src, dst = rgb[r0:r0 + rows], grey[r0:r0 + rows]
        y, tmp = total[:dst.shape[0]], term[:dst.shape[0]]
        np.multiply(src[..., 0], w_r, out=y)
        np.multiply(src[..., 1], w_g, out=tmp)
        np.add(y, tmp, out=y)
        np.multiply(src[..., 2], w_b, out=tmp)
        np.add(y, tmp, out=y)
        np.rint(y, out=dst, casting="unsafe")  # integers 0..255: exact in either type
    return grey


def imresize_half(image: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(image, 0.5)`` of a 2-D double image (bicubic, antialiased)."""
    image = np.ascontiguousarray(image, dtype=np.float64)
    return _imresize_half(image, _workspace()).copy()


def _imresize_half(image: np.ndarray, ws: _Workspace) -> np.ndarray:
    """imresize(image, 0.5) into a workspace buffer.

    Rows first, then columns (MATLAB's order for equal scales); output k reads inputs
    2k-3 .. 2k+4 (0-based), mirrored at the borders. Done in strips of output rows so the
    intermediate rows stay in cache.
    """
    h, w = image.shape
    mh, mw = (h + 1) // 2, (w + 1) // 2
    out = ws.get("half.out", (mh, mw))
    rows = min(32, mh)
    pad_rows = ws.get("half.pad_rows", (2 * rows + 6, w))
    half_rows = ws.get("half.rows", (rows, w))
    pad_cols = ws.get("half.pad_cols", (rows, 2 * mw + 6))
    tmp_cols = ws.get("half.tmp_cols", (rows, mw))
    col_index = _mirror(np.arange(-3, 2 * mw + 3), w)
    for k0 in range(0, mh, rows):
        k1 = min(mh, k0 + rows)
        n = k1 - k0
        src = pad_rows[:2 * n + 6]
        _take_rows(image, _mirror(np.arange(2 * k0 - 3, 2 * k1 + 3), h), src, ws)
        part = half_rows[:n]
        _rows_weighted_sum(src, _half_taps(), 2, part)
        cols = pad_cols[:n]
        np.take(part, col_index, axis=1, out=cols, mode="clip")
        _half_taps_sum(lambda t: cols[:, t:t + 2 * mw - 1:2], out[k0:k1], tmp_cols[:n])
    return out


def _take_rows(image: np.ndarray, index: np.ndarray, out: np.ndarray, ws: _Workspace) -> None:
    """out = image[index] as float64; a uint8 image is gathered in its own type, then widened."""
    if image.dtype == out.dtype:
        np.take(image, index, axis=0, out=out, mode="clip")
        return
    rows = ws.get(f"take_rows.{image.dtype}", out.shape, image.dtype)
    np.take(image, index, axis=0, out=rows, mode="clip")
    out[...] = rows


def _rows_weighted_sum(src: np.ndarray, taps: np.ndarray, step: int, out: np.ndarray) -> None:
    """out[..., i, :] = sum_t taps[t] * src[..., step*i + t, :], in one pass (einsum over a
    strided view of the rows: no temporaries; whole rows are contiguous)."""
    strides = src.strides
    view = np.lib.stride_tricks.as_strided(
        src, shape=src.shape[:-2] + (taps.size,) + out.shape[-2:],
        strides=strides[:-2] + (strides[-2], step * strides[-2], strides[-1]), writeable=False)
    np.einsum("t,...tij->...ij", taps, view, out=out)


def _half_taps_sum(view: Callable[[int], np.ndarray], out: np.ndarray, tmp: np.ndarray) -> None:
    """out = sum_t taps[t] * view(t) for the 8 symmetric taps of imresize(., 0.5)."""
    taps = _half_taps()  # taps[t] == taps[7 - t]
    np.add(view(3), view(4), out=out)
    np.multiply(out, taps[3], out=out)
    for t in range(3):
        np.add(view(t), view(7 - t), out=tmp)
        np.multiply(tmp, taps[t], out=tmp)
        np.add(out, tmp, out=out)


# --------------------------------------------------------------------------- MSCN


def _strip_rows(width: int) -> int:
    """Rows per strip: about 48k pixels, so a strip's buffers stay in cache."""
    return max(8, 49152 // max(width, 1))


def _mscn_strips(image: np.ndarray, ws: _Workspace) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, MSCN rows) strip by strip; the array is a reused buffer. ``image`` is
    float64, or uint8 (an RGB input's grey), widened to float64 strip by strip.

    mu = filter2(w, im, 'same') and E[x^2] = filter2(w, im.^2, 'same') (zero padding) are
    computed on both maps at once: a 7-tap pass down the columns (one einsum over a strided
    view of the rows), then along the rows (scipy.ndimage, zero padding).
    Strips keep the temporaries in cache; the values equal a whole-image pass.
    """
    g = _gaussian_taps()
    h, w = image.shape
    rows = min(_strip_rows(w), h)
    padded = ws.get("mscn.padded", (2, rows + 6, w))  # image and its square, 3 rows of context
    column = ws.get("mscn.column", (2, rows, w))
    moments = ws.get("mscn.moments", (2, rows, w))
    scratch = ws.get("mscn.scratch", (2, rows, w))
    result = ws.get("mscn.result", (rows, w))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        src = padded[:, :n + 6]
        lo, hi = max(r0 - 3, 0), min(r1 + 3, h)
        src[0, :lo - (r0 - 3)] = 0.0
        src[0, lo - (r0 - 3):hi - (r0 - 3)] = image[lo:hi]
        src[0, hi - (r0 - 3):] = 0.0
        np.multiply(src[0], src[0], out=src[1])
        col, tmp = column[:, :n], scratch[:, :n]
        _rows_weighted_sum(src, g, 1, col)
        mom = moments[:, :n]
        ndimage.correlate1d(col, g, axis=-1, output=mom, mode="constant", cval=0.0)
        mu, sigma = mom[0], mom[1]
        # sigma <- sqrt(|E[x^2] - mu^2|) + C ; out <- (im - mu) / sigma
        square = tmp[0]
        np.multiply(mu, mu, out=square)
        np.subtract(sigma, square, out=sigma)
        np.abs(sigma, out=sigma)
        np.sqrt(sigma, out=sigma)
        np.add(sigma, _C, out=sigma)
        out = result[:n]
        np.subtract(image[r0:r1], mu, out=out)
        np.divide(out, sigma, out=out)
        yield r0, out


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised map (im - mu) ./ (sigma + 1), float64."""
    image = np.ascontiguousarray(image, dtype=np.float64)
    out = np.empty_like(image)
    for r0, strip in _mscn_strips(image, _workspace()):
        out[r0:r0 + strip.shape[0]] = strip
    return out


# --------------------------------------------------------------------------- model fits


def _shape_from_table(table: np.ndarray, value: float, squared: bool) -> float:
    """gam(first argmin of |table - value| (GGD) or (table - value)^2 (AGGD)).

    A NaN ``value`` gives gam(1) = 0.2, as MATLAB's ``min`` of an all-NaN vector. (A full
    scan of the 9801 entries costs microseconds, so no bisection is needed.)
    """
    gam = _shape_table()[0]
    difference = table - value
    score = difference * difference if squared else np.abs(difference)
    return float(gam[np.argmin(score)])


def _ggd(sum_sq: float, sum_abs: float, n: int) -> tuple[float, float]:
    """estimateggdparam.m from sum(x^2) and sum(|x|): (shape, overallstd^2)."""
    sigma_sq = sum_sq / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.float64(sigma_sq) / np.float64(sum_abs / n) ** 2
    shape = _shape_from_table(_shape_table()[1], float(rho), squared=False)
    sigma = math.sqrt(sigma_sq)
    return shape, sigma * sigma


# Below this share of the total, a one-sided sum taken as a difference is recomputed exactly.
_CANCELLATION_GUARD = 1e-4


class _PairSums:
    """Running sums over the products p = A .* circshift(A, shift) of one direction.

    Nothing is formed per product; with A' the shifted map, sum|p| = <|A|, |A'|> and the
    signs of p come from the signs of A. For the one-sided sums of p^2 there are two modes:

    * fast: T = <A^2, A'^2> and S = <A|A|, A'|A'|> give sum(p^2 | p > 0) = (T + S) / 2 and
      sum(p^2 | p < 0) = (T - S) / 2. The differences lose relative accuracy only when one
      side is a tiny share of T; ``needs_exact`` flags that (share below 1e-4, where the
      error bound, about 2e-9, would still be far below the 1e-6 asked).
    * exact: with L = 4*A^2 where A < 0 (else 0) and R = 4*A^2 where A > 0,
      sum(p^2 | p < 0) = (<L, R'> + <R, L'>) / 16 and sum(p^2 | p > 0) = (<L, L'> + <R, R'>) / 16,
      all terms non-negative.
    """

    def __init__(self) -> None:
        self.n = 0
        self.sum_abs = 0.0
        self.left_sq = 0.0
        self.right_sq = 0.0
        self.n_left = 0
        self.n_right = 0

    def needs_exact(self) -> bool:
        total = self.left_sq + self.right_sq
        return not min(self.left_sq, self.right_sq) > _CANCELLATION_GUARD * total

    def features(self) -> tuple[float, float, float, float]:
        """estimateaggdparam.m plus brisque_feature.m's mean: (shape, mean, left^2, right^2)."""
        n = self.n
        left_sq, right_sq = self.left_sq, self.right_sq
        nan = float("nan")
        # mean() of an empty selection is NaN in MATLAB.
        leftstd = math.sqrt(left_sq / self.n_left) if self.n_left else nan
        rightstd = math.sqrt(right_sq / self.n_right) if self.n_right else nan
        with np.errstate(divide="ignore", invalid="ignore"):
            gammahat = np.float64(leftstd) / np.float64(rightstd)
            rhat = np.float64((self.sum_abs / n) ** 2) / np.float64((left_sq + right_sq) / n)
            rhatnorm = (rhat * (gammahat ** 3 + 1) * (gammahat + 1)) / ((gammahat ** 2 + 1) ** 2)
        alpha = _shape_from_table(_shape_table()[2], float(rhatnorm), squared=True)
        const = math.sqrt(math.gamma(1 / alpha)) / math.sqrt(math.gamma(3 / alpha))
        mean = (rightstd - leftstd) * (math.gamma(2 / alpha) / math.gamma(1 / alpha)) * const
        return alpha, mean, leftstd * leftstd, rightstd * rightstd


def _row_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum(x * y) over the last two axes: one BLAS dot per row, no temporary array.

    (Row-sized dots stay below BLAS's threading threshold; a single image-sized dot can hit
    a pathological multi-threaded path.)
    """
    return np.matmul(x[..., None, :], y[..., :, None]).sum(axis=(-3, -2, -1))


class _PairPlanes:
    """Per-pixel planes of a block of MSCN rows, laid out for the four circshift pairings.

    Planes |A|, A^2, A|A| (fast mode) or |A|, L, R (exact mode; see ``_PairSums``), plus the
    masks A < 0 and A == 0. Row 0 holds the previous block's last row; column 0 holds a copy
    of the last column, so the column shift by one (with wrap-around) is a plain offset.
    """

    def __init__(self, ws: _Workspace, name: str, rows: int, width: int, exact: bool) -> None:
        self.exact = exact
        self.planes = ws.get(f"{name}.planes", (3, rows + 1, width + 1))
        self.negative = ws.get(f"{name}.negative", (rows + 1, width + 1), bool)
        self.zero = ws.get(f"{name}.zero", (rows + 1, width + 1), bool)
        self.scratch = ws.get(f"{name}.scratch", (rows, width))
        self.has_zero = False  # in rows 1..n
        self.previous_has_zero = False  # in row 0

    def fill(self, strip: np.ndarray) -> tuple[float, float]:
        """Write the strip into rows 1..n; return its sum(|A|) and sum(A^2)."""
        n, w = strip.shape
        planes = self.planes[:, 1:n + 1]
        magnitude = planes[0, :, 1:]
        np.abs(strip, out=magnitude)
        if self.exact:
            tmp = self.scratch[:n]
            np.subtract(strip, magnitude, out=tmp)  # 2A where A < 0, else 0 (exact)
            np.multiply(tmp, tmp, out=planes[1, :, 1:])
            np.add(strip, magnitude, out=tmp)  # 2A where A > 0, else 0
            np.multiply(tmp, tmp, out=planes[2, :, 1:])
        else:
            np.multiply(strip, strip, out=planes[1, :, 1:])
            np.multiply(strip, magnitude, out=planes[2, :, 1:])
        planes[:, :, 0] = planes[:, :, w]
        negative, zero = self.negative[1:n + 1], self.zero[1:n + 1]
        np.less(strip, 0.0, out=negative[:, 1:])
        negative[:, 0] = negative[:, w]
        np.equal(strip, 0.0, out=zero[:, 1:])
        zero[:, 0] = zero[:, w]
        self.has_zero = bool(zero.any())
        return float(magnitude.sum()), float(_row_dots(strip, strip))

    def carry_last_row(self, n: int) -> None:
        """Row n becomes row 0 (the previous row of the next block)."""
        self.planes[:, 0] = self.planes[:, n]
        self.negative[0] = self.negative[n]
        self.zero[0] = self.zero[n]
        self.previous_has_zero = self.has_zero  # conservative: any zero in the strip

    def accumulate(self, sums: _PairSums, rows_a: slice, cols_a: slice, rows_b: slice, cols_b: slice,
                   any_zero: bool) -> None:
        """Add the products A[rows_a, cols_a] .* A[rows_b, cols_b] to ``sums``."""
        p = self.planes
        same = _row_dots(p[:, rows_a, cols_a], p[:, rows_b, cols_b])
        sums.sum_abs += float(same[0])
        if self.exact:  # same = <|A|,|A'|>, <L,L'>, <R,R'>; cross = <L,R'>, <R,L'>
            cross = _row_dots(p[1:3, rows_a, cols_a], p[2:0:-1, rows_b, cols_b])
            sums.right_sq += float(same[1] + same[2]) / 16.0
            sums.left_sq += float(cross[0] + cross[1]) / 16.0
        else:  # same = <|A|,|A'|>, T = <A^2,A'^2>, S = <A|A|,A'|A'|>
            sums.right_sq += float(same[1] + same[2]) / 2.0
            sums.left_sq += float(same[1] - same[2]) / 2.0
        opposite = self.negative[rows_a, cols_a] ^ self.negative[rows_b, cols_b]
        count = opposite.size
        sums.n += count
        if any_zero:
            nonzero = ~(self.zero[rows_a, cols_a] | self.zero[rows_b, cols_b])
            n_left = int(np.count_nonzero(opposite & nonzero))
            sums.n_left += n_left
            sums.n_right += int(np.count_nonzero(nonzero)) - n_left
        else:
            n_left = int(np.count_nonzero(opposite))
            sums.n_left += n_left
            sums.n_right += count - n_left


def _scale_features(image: np.ndarray, ws: _Workspace, exact: bool = False) -> list[float]:
    """The 18 features of one scale, streaming the MSCN map strip by strip.

    circshift pairs (i, j) with (i - dr mod H, j - dc mod W). Row shifts only pair adjacent
    rows, so each strip is paired with the last row of the previous strip; the pairs that
    wrap between row H-1 and row 0 are added at the end. The fast one-sided sums are redone
    exactly when cancellation could matter (see ``_PairSums``).
    """
    h, w = image.shape
    rows = min(_strip_rows(w), h)
    ggd_abs = ggd_sq = 0.0
    sums = [_PairSums() for _ in SHIFTS]
    horizontal, vertical, diagonal, antidiagonal = sums
    planes = _PairPlanes(ws, "pairs", rows, w, exact)
    wrap = _PairPlanes(ws, "wrap", 1, w, exact)  # row 0: image row H-1; row 1: image row 0
    inner, shifted = slice(1, w + 1), slice(0, w)
    for r0, strip in _mscn_strips(image, ws):
        n = strip.shape[0]
        strip_abs, strip_sq = planes.fill(strip)
        ggd_abs += strip_abs
        ggd_sq += strip_sq
        rows_now = slice(1, n + 1)
        planes.accumulate(horizontal, rows_now, inner, rows_now, shifted, planes.has_zero)
        if r0 == 0:
            wrap.planes[:, 1] = planes.planes[:, 1]
            wrap.negative[1] = planes.negative[1]
            wrap.zero[1] = planes.zero[1]
            current, previous = slice(2, n + 1), slice(1, n)
            any_zero = planes.has_zero
        else:
            current, previous = slice(1, n + 1), slice(0, n)
            any_zero = planes.has_zero or planes.previous_has_zero
        planes.accumulate(vertical, current, inner, previous, inner, any_zero)
        planes.accumulate(diagonal, current, inner, previous, shifted, any_zero)
        planes.accumulate(antidiagonal, previous, inner, current, shifted, any_zero)
        planes.carry_last_row(n)
    wrap.planes[:, 0] = planes.planes[:, 0]
    wrap.negative[0] = planes.negative[0]
    wrap.zero[0] = planes.zero[0]
    any_zero = bool(wrap.zero[:2].any())
    current, previous = slice(1, 2), slice(0, 1)
    wrap.accumulate(vertical, current, inner, previous, inner, any_zero)
    wrap.accumulate(diagonal, current, inner, previous, shifted, any_zero)
    wrap.accumulate(antidiagonal, previous, inner, current, shifted, any_zero)
    if not exact and any(direction.needs_exact() for direction in sums):
        return _scale_features(image, ws, exact=True)
    features = list(_ggd(ggd_sq, ggd_abs, h * w))
    for direction in sums:
        features.extend(direction.features())
    return features


# --------------------------------------------------------------------------- entry point


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features (float64) of an HxWx3 uint8 RGB or HxW grey (0-255) image.

    Order: per scale, GGD (shape, variance), then for the shifts (0,1), (1,0), (1,1),
    (-1,1) the AGGD (shape, mean, left variance, right variance); see ``FEATURE_NAMES``.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an HxW grey or HxWx3 RGB image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"empty image, shape {image.shape}")
    ws = _workspace()
    if image.ndim == 3:
        grey = rgb2gray_uint8(image, out=ws.get("grey", image.shape[:2], np.uint8))
    else:
        grey = np.ascontiguousarray(image, dtype=np.float64)
    features = _scale_features(grey, ws)
    features += _scale_features(_imresize_half(grey, ws), ws)
    return np.asarray(features, dtype=np.float64)


# --------------------------------------------------------------------------- extractor


@dataclass
class Brisque(Extractor):
    """BRISQUE natural-scene statistics, 36 features per image, MATLAB-exact."""

    name: ClassVar[str] = "brisque"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ("BRISQUE (Mittal et al. 2012): 36 GGD/AGGD statistics of MSCN "
                                  "coefficients at two scales, as the LIVE MATLAB release")
    licence: ClassVar[str] = "no weights (hand-crafted features)"

    @property
    def dim(self) -> int:
        return len(FEATURE_NAMES)

    def load_item(self, path: Path) -> np.ndarray:
        return brisque_features(read_rgb_array(path)).astype(np.float32)

    def compute(self, batch: Any) -> np.ndarray:
        if isinstance(batch, np.ndarray):
            return batch.astype(np.float32, copy=False).reshape(-1, self.dim)
        items: Sequence[Any] = batch
        return np.stack([np.asarray(item, dtype=np.float32) for item in items]).reshape(-1, self.dim)

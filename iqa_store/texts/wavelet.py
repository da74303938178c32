"""The 2-D discrete wavelet transform with the CDF 9/7 filters, as FISH uses it.

Vu & Chandler (2012) decompose the grey image with the Cohen-Daubechies-Feauveau 9/7
biorthogonal filter bank, three levels. These are the analysis filters of that bank in the
normalisation MATLAB and PyWavelets call ``bior4.4`` (low-pass taps sum to sqrt(2)), applied the
way both apply them by default: half-point symmetric extension of the signal, full convolution,
every second sample kept. One level of ``dwt2`` gives the approximation and the three detail
subbands; numpy only, so no wavelet package is needed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEC_HI", "DEC_LO", "dwt2"]

# analysis (decomposition) filters of bior4.4, first tap zero as the toolboxes store them
DEC_LO = np.array([0.0, 0.03782845550726404, -0.023849465019556843, -0.11062440441843718, 0.37740285561283066,
                   0.8526986790088938, 0.37740285561283066, -0.11062440441843718, -0.023849465019556843,
                   0.03782845550726404])
DEC_HI = np.array([0.0, -0.06453888262869706, 0.04068941760916406, 0.41809227322161724, -0.7884856164055829,
                   0.41809227322161724, 0.04068941760916406, -0.06453888262869706, 0.0, 0.0])


def _analyse(signal: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Filter along ``axis`` and keep every second sample: floor((n + L - 1) / 2) outputs."""
    length = len(taps)
    moved = np.moveaxis(signal, axis, -1)
    n = moved.shape[-1]
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(length - 1, length - 1)], mode="symmetric")
    # full convolution of the extended signal; outputs at odd positions of the valid full range
    windows = np.lib.stride_tricks.sliding_window_view(padded, length, axis=-1)
    filtered = windows @ taps[::-1]  # output k = sum_j taps[j] * padded[k + L - 1 - j]
    kept = filtered[..., 1:n + length - 1:2]
    return np.moveaxis(kept, -1, axis)


def dwt2(image: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One level: ``(LL, (LH, HL, HH))`` with PyWavelets' naming (``cA, (cH, cV, cD)``): LH is low-pass
    across columns and high-pass down the rows (horizontal detail), HL the transpose, HH both high-pass."""
    image = np.asarray(image, dtype=np.float64)
    low, high = _analyse(image, DEC_LO, axis=1), _analyse(image, DEC_HI, axis=1)
    return _analyse(low, DEC_LO, axis=0), (_analyse(low, DEC_HI, axis=0), _analyse(high, DEC_LO, axis=0),
                                           _analyse(high, DEC_HI, axis=0))

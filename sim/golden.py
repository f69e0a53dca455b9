"""Bit-exact golden model of the normalization cores.

Every function here copies one stage of the gateware, integer for integer, with the same
rounding and saturation (see :mod:`normgen.hw.config` for the algorithm and its error budget).
The per-vector scalar stage works on Python integers (one rsqrt per vector); the per-element
stage is vectorized NumPy ``int64`` over all elements of all vectors.
"""
from __future__ import annotations

import math

import numpy as np

from normgen.hw.config import CoreConfig

__all__ = ["rnd", "statistics", "denominator", "rsqrt", "scalars", "elementwise", "normalize",
           "normalize_vectors"]


def rnd(value, shift):
    """Round half up: ``floor(value / 2**shift + 1/2)`` for ``shift > 0``, exact ``value *
    2**-shift`` for ``shift <= 0``.  Works on Python ints and int64 arrays alike."""
    if shift > 0:
        return (value + (1 << (shift - 1))) >> shift
    return value << (-shift)


def statistics(cfg: CoreConfig, x) -> tuple[int, int, int]:
    """``(N, S1, S2)`` of one vector of input integers."""
    x = np.asarray(x, dtype=np.int64)
    return len(x), int(x.sum()), int((x * x).sum())


def denominator(cfg: CoreConfig, n: int, s1: int, s2: int) -> tuple[int, int]:
    """``(D, S1')``: the radicand and the mean term of the numerator, by the kind's formula."""
    return cfg.kind.radicand(n, s1, s2, cfg.eps_int), cfg.kind.mean_term(s1)


def rsqrt(cfg: CoreConfig, d: int) -> tuple[int, int]:
    """``(R, s)`` with ``1/sqrt(d) ~= R * 2**-(T + m - 1 + s)``; ``(0, 0)`` for ``d = 0``."""
    if d == 0:
        return 0, 0
    T, m = cfg.rsqrt_bits, cfg.rsqrt_m
    s = -((2 * m - d.bit_length()) // 2)          # ceil((bitlen - 2m) / 2)
    mant = d >> (2 * s) if s >= 0 else d << (-2 * s)
    return math.isqrt((1 << (2 * T + 2 * m - 2)) // mant), s


def scalars(cfg: CoreConfig, n: int, s1: int, s2: int) -> tuple[int, int]:
    """Per-vector constants ``(A, B)`` of the per-element stage ``x*A - B``."""
    d, s1_eff = denominator(cfg, n, s1, s2)
    r, s = rsqrt(cfg, d)
    if d == 0:
        return 0, 0
    shift = cfg.rsqrt_bits + cfg.rsqrt_m - 1 + s - cfg.a_frac
    return rnd(n * r, shift), rnd(s1_eff * r, shift)


def elementwise(cfg: CoreConfig, x, a, b, gamma, beta) -> np.ndarray:
    """The per-lane stage, broadcast over arrays: returns output integers."""
    x = np.asarray(x, dtype=np.int64)
    u = x * np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)
    v = rnd(u, cfg.a_frac - cfg.z_frac)
    if cfg.affine_stage:
        w = np.asarray(gamma, dtype=np.int64) * v + (np.asarray(beta, dtype=np.int64) << cfg.z_frac)
    else:
        w = v
    y = rnd(w, cfg.w_frac - cfg.out_format.frac_bits)
    return np.clip(y, cfg.out_format.min_int, cfg.out_format.max_int)


def normalize(cfg: CoreConfig, x) -> np.ndarray:
    """Output integers for a 2-D array of input integers, shape ``(vectors, N)``, N <= N_max."""
    x = np.asarray(x, dtype=np.int64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (vectors, N), not shape {x.shape}")
    vectors, n = x.shape
    if not 1 <= n <= cfg.features:
        raise ValueError(f"vector length N = {n} must be in 1..{cfg.features} (features)")
    if np.any(x < cfg.in_format.min_int) or np.any(x > cfg.in_format.max_int):
        raise ValueError(f"input integers outside {cfg.in_format}")
    if cfg.kind.folded:      # per-channel constants, no statistics
        return elementwise(cfg, x, cfg.scale_int[:n], cfg.shift_int[:n], None, None)
    if cfg.kind.statistics == "batch":
        raise ValueError("a batch-statistics BatchNorm core normalizes batches: use normalize_batch")
    ab = np.array([scalars(cfg, *statistics(cfg, row)) for row in x], dtype=np.int64)
    ab = ab.reshape(vectors, 2)
    gamma, beta = cfg.gamma_beta_int()
    return elementwise(cfg, x, ab[:, :1], ab[:, 1:], gamma[:n], beta[:n])


def normalize_vectors(cfg: CoreConfig, vectors) -> list[np.ndarray]:
    """Like :func:`normalize` for a list of 1-D vectors of any lengths."""
    return [normalize(cfg, np.asarray(v, dtype=np.int64)[None, :])[0] for v in vectors]


def normalize_batch(cfg: CoreConfig, batch) -> np.ndarray:
    """BatchNorm with batch statistics: output integers for one batch of shape ``(M, C)``.

    Per channel it is LayerNorm over the M samples: exact ``S1``, ``S2`` of the column, the
    same scalar stage and the same element datapath, with that channel's γ and β."""
    batch = np.asarray(batch, dtype=np.int64)
    if batch.ndim != 2:
        raise ValueError(f"expected a 2-D batch (M, C), not shape {batch.shape}")
    samples, channels = batch.shape
    if not 1 <= samples <= cfg.max_batch:
        raise ValueError(f"batch size M = {samples} must be in 1..{cfg.max_batch} (max_batch)")
    if channels != cfg.features:
        raise ValueError(f"samples must have C = {cfg.features} channels, not {channels}")
    gamma, beta = cfg.gamma_beta_int()
    out = np.empty_like(batch)
    for c in range(channels):
        column = batch[:, c]
        a, b = scalars(cfg, samples, int(column.sum()), int((column * column).sum()))
        out[:, c] = elementwise(cfg, column, a, b, gamma[c], beta[c])
    return out


def running_statistics(cfg: CoreConfig, batch, running_mean, running_var):
    """PyTorch's update of the running statistics after one batch, from the batch's exact sums
    (float64): ``mean <- (1-m)*mean + m*mu``, ``var <- (1-m)*var + m*var_unbiased``.

    Raises ValueError for M = 1, where the unbiased variance is undefined (PyTorch refuses such
    a batch in training mode too)."""
    batch = np.asarray(batch, dtype=np.int64)
    samples = batch.shape[0]
    if samples < 2:
        raise ValueError("a batch of one sample has no unbiased variance: M must be >= 2 to update "
                         "the running statistics")
    scale = 2.0 ** -cfg.in_format.frac_bits
    s1 = batch.sum(axis=0).astype(np.float64)
    s2 = (batch * batch).sum(axis=0).astype(np.float64)
    mean = s1 / samples * scale
    var_unbiased = (samples * s2 - s1 * s1) / (samples * (samples - 1)) * scale * scale
    m = cfg.momentum
    return (1 - m) * np.asarray(running_mean) + m * mean, (1 - m) * np.asarray(running_var) + m * var_unbiased

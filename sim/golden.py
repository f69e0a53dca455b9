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
from normgen.host.exact import rnd_even

__all__ = ["rnd", "rnd_even", "statistics", "denominator", "rsqrt", "scalars", "elementwise",
           "resolve_nearest", "normalize", "normalize_vectors"]


def rnd(value, shift):
    """Round half up: ``floor(value / 2**shift + 1/2)`` for ``shift > 0``, exact ``value *
    2**-shift`` for ``shift <= 0``.  Works on Python ints and int64 arrays alike."""
    if shift > 0:
        return (value + (1 << (shift - 1))) >> shift
    return value << (-shift)


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def resolve_nearest(cfg: CoreConfig, lo: int, x: int, n: int, mean_term: int, d: int, gamma: int,
                    beta: int) -> int:
    """The exact decision of a nearest-even element whose computed value lies near the rounding
    boundary ``lo + 1/2``: ``lo + 1`` above it, ``lo`` below, the even one of the two on it.

    With the numerator ``a = n*x - S1'`` and ``c = F_out + 1 - F_p``, ``Y * 2**F_out >= lo + 1/2``
    is ``L >= M*sqrt(D)`` for the integers ``L = gamma*a*2**c`` and ``M = (2*lo + 1) - beta*2**c``
    (both scaled by ``2**-c`` when ``c < 0``); ``t -> t*|t|`` is increasing, so the sign of
    ``L - M*sqrt(D)`` is the sign of ``L*|L| - M*|M|*D``.  ``D = 0`` means ``z = 0``: the sign of
    ``-M``."""
    a = n * x - mean_term
    c = cfg.out_format.frac_bits + 1 - cfg.param_frac
    if c >= 0:
        big_l, big_m = (gamma * a) << c, 2 * lo + 1 - (beta << c)
    else:
        big_l, big_m = gamma * a, ((2 * lo + 1) << -c) - beta
    if d == 0:
        cmp = -_sign(big_m)
    else:
        cmp = _sign(big_l * abs(big_l) - big_m * abs(big_m) * d)
    if cmp > 0:
        return lo + 1
    if cmp < 0:
        return lo
    return lo + (lo & 1)


def _arith(cfg: CoreConfig, value):
    """An int64 array, or a Python-int object array when the datapath is wider than int64."""
    wide = max(cfg.xa_width, cfg.b_width, cfg.w_width) > 63
    array = np.asarray(value)
    if wide:
        return np.vectorize(int, otypes=[object])(array) if array.size else array.astype(object)
    return array.astype(np.int64)


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


def elementwise(cfg: CoreConfig, x, a, b, gamma, beta, stats=None) -> np.ndarray:
    """The per-lane stage, broadcast over arrays: returns output integers.

    A nearest-even LayerNorm/RMSNorm core also needs the vector's ``stats = (N, S1', D)`` (each
    broadcast like ``a``) for the elements it decides exactly (:func:`resolve_nearest`)."""
    x, a, b = _arith(cfg, x), _arith(cfg, a), _arith(cfg, b)
    u = x * a - b
    k2 = cfg.w_frac - cfg.out_format.frac_bits
    if cfg.kind.folded and cfg.rounding == "nearest-even":
        y = rnd_even(u, cfg.a_frac - cfg.out_format.frac_bits)     # one rounding, half to even
        return _saturate(cfg, y)
    w = _w(cfg, u, gamma, beta)
    y = rnd(w, k2)
    if cfg.exact_resolution:
        if stats is None:
            raise ValueError("a nearest-even core's elements need the vector statistics (N, S1', D)")
        near = _near(cfg, w)
        if np.any(near):
            shape = np.broadcast(x, y).shape
            n, mean_term, d = (np.broadcast_to(np.asarray(v_, dtype=object), shape) for v_ in stats)
            g = np.broadcast_to(np.asarray(gamma if cfg.affine_stage else 1, dtype=object), shape)
            bt = np.broadcast_to(np.asarray(beta if cfg.affine_stage else 0, dtype=object), shape)
            xs = np.broadcast_to(x, shape)
            y = np.array(np.broadcast_to(y, shape), dtype=object)
            lo = np.broadcast_to(w >> k2, shape)
            for idx in zip(*np.nonzero(np.broadcast_to(near, shape))):
                y[idx] = resolve_nearest(cfg, int(lo[idx]), int(xs[idx]), int(n[idx]), int(mean_term[idx]),
                                         int(d[idx]), int(g[idx]), int(bt[idx]))
    return _saturate(cfg, y)


def _saturate(cfg: CoreConfig, y) -> np.ndarray:
    y = np.minimum(np.maximum(y, cfg.out_format.min_int), cfg.out_format.max_int)
    return np.asarray(y).astype(np.int64)


def ambiguous(cfg: CoreConfig, x, a, b, gamma, beta) -> np.ndarray:
    """Which elements a nearest-even core decides exactly (boolean, broadcast like
    :func:`elementwise`): those whose computed ``w`` lies within the ambiguity radius of a
    rounding boundary."""
    x, a, b = _arith(cfg, x), _arith(cfg, a), _arith(cfg, b)
    return np.asarray(_near(cfg, _w(cfg, x * a - b, gamma, beta)), dtype=bool)


def _w(cfg: CoreConfig, u, gamma, beta):
    """``w`` from ``u = x*A - B``: ``v`` rounded, then (affine) ``gamma*v + beta << FZ``."""
    v = rnd(u, cfg.a_frac - cfg.z_frac)
    if not cfg.affine_stage:
        return v
    return _arith(cfg, gamma) * v + (_arith(cfg, beta) << cfg.z_frac)


def _near(cfg: CoreConfig, w):
    """Whether ``w`` lies within the ambiguity radius of a rounding boundary."""
    k2 = cfg.w_frac - cfg.out_format.frac_bits
    return np.abs((w & ((1 << k2) - 1)) - (1 << (k2 - 1))) <= cfg.ambiguity_radius


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
    stats = [statistics(cfg, row) for row in x]
    ab = np.array([scalars(cfg, *st) for st in stats], dtype=object).reshape(vectors, 2)
    gamma, beta = cfg.gamma_beta_int()
    return elementwise(cfg, x, ab[:, :1], ab[:, 1:], gamma[:n], beta[:n], _vector_stats(cfg, stats))


def _vector_stats(cfg: CoreConfig, stats) -> tuple | None:
    """``(N, S1', D)`` columns for :func:`elementwise` of a nearest-even core, else None."""
    if not cfg.exact_resolution:
        return None
    rows = [(n, *reversed(denominator(cfg, n, s1, s2))) for n, s1, s2 in stats]
    return tuple(np.array([[row[k]] for row in rows], dtype=object) for k in range(3))


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
        st = (samples, int(column.sum()), int((column * column).sum()))
        a, b = scalars(cfg, *st)
        stats = _vector_stats(cfg, [st])
        out[:, c] = elementwise(cfg, column, a, b, gamma[c], beta[c],
                                None if stats is None else tuple(s_[0, 0] for s_ in stats))
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

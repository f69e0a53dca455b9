"""BatchNorm folding: ``gamma*(x - mean)/sqrt(var + eps) + beta = s*x + t``, quantized exactly.

For channel c with ``s = gamma/sqrt(var + eps)`` (all four parameters and ε taken as the exact
rationals of their float values)::

    A_c = round(s * 2**(FA - F_in))            the scale, per input integer
    B_c = round((s*mean - beta) * 2**FA)       the shift, so that x*A - B ~ Y * 2**FA

Both roundings are decided in integers (:mod:`normgen.host.exact`), half up.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from .exact import round_signed_sqrt

__all__ = ["fold_batchnorm", "fold_channel", "fold_constants", "FoldError"]


class FoldError(ValueError):
    """Parameters whose folded constants do not fit the core that was generated."""


def _sign(q: Fraction) -> int:
    return -1 if q < 0 else 1


def fold_constants(in_frac: int, fa: int, eps: float, gamma: float, beta: float, mean: float,
                   var: float) -> tuple[int, int]:
    """``(A, B)`` of one channel at ``fa`` fraction bits, for inputs with ``in_frac`` fraction bits."""
    g, b, m, v, e = (Fraction(float(value)) for value in (gamma, beta, mean, var, eps))
    denominator = v + e
    scale = round_signed_sqrt(_sign(g), g * g * Fraction(4) ** (fa - in_frac) / denominator)
    shift = round_signed_sqrt(_sign(g * m), g * g * m * m * Fraction(4) ** fa / denominator,
                              -b * Fraction(2) ** fa)
    return scale, shift


def fold_channel(cfg, gamma: float, beta: float, mean: float, var: float, *,
                 fa: int | None = None) -> tuple[int, int]:
    """``(A, B)`` of one channel of the core ``cfg``, at its ``a_frac`` unless ``fa`` is given."""
    return fold_constants(cfg.in_format.frac_bits, cfg.a_frac if fa is None else fa, cfg.eps,
                          gamma, beta, mean, var)


def fold_batchnorm(cfg, gamma, beta, mean, var, *, check: bool = True,
                   nearest_even: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(A, B)`` integers for a BatchNorm core, at its ``a_frac``.

    With ``check`` (run-time loads), constants that do not fit the core's ``a_width``/``b_width``
    raise :class:`FoldError` naming the channel.  With ``check`` and ``nearest_even`` (default:
    whether ``cfg.rounding`` is ``"nearest-even"``), so do constants that would round some input
    of some channel differently from round-half-even of the exact result
    (:func:`normgen.host.fold_rne.require_nearest_even`)."""
    arrays = [np.asarray(values, dtype=np.float64).ravel() for values in (gamma, beta, mean, var)]
    channels = cfg.features
    for name, values in zip(("gamma", "beta", "mean", "var"), arrays):
        if values.shape != (channels,):
            raise FoldError(f"{name} must hold {channels} values, not {values.size}")
        if not np.all(np.isfinite(values)):
            raise FoldError(f"{name} must be finite")
    if np.any(arrays[3] < 0):
        raise FoldError(f"var must be >= 0 (channel {int(np.flatnonzero(arrays[3] < 0)[0])})")
    if np.any(arrays[3] + cfg.eps <= 0):
        raise FoldError("var + eps must be > 0 for every channel")
    folded = [fold_channel(cfg, *params) for params in zip(*arrays)]
    scale = np.array([a for a, _ in folded], dtype=object)
    shift = np.array([b for _, b in folded], dtype=object)
    if check:
        a_lim, b_lim = 1 << (cfg.a_width - 1), 1 << (cfg.b_width - 1)
        for name, values, limit, width in (("scale", scale, a_lim, cfg.a_width),
                                           ("shift", shift, b_lim, cfg.b_width)):
            over = [c for c, value in enumerate(values) if not -limit <= value < limit]
            if over:
                c = over[0]
                raise FoldError(f"channel {c}: the folded {name} {values[c]} does not fit the "
                                f"{width}-bit {name} of this core; generate the core with these parameters")
    if max(abs(int(v)) for v in list(scale) + list(shift)) >= 1 << 62:
        raise FoldError("folded constants exceed 62 bits: parameters out of any useful range")
    if nearest_even is None:
        nearest_even = getattr(cfg, "rounding", "faithful") == "nearest-even"
    if check and nearest_even:
        from .fold_rne import require_nearest_even    # it imports the configuration module
        require_nearest_even(cfg.in_format, cfg.out_format, cfg.a_frac, scale, shift, *arrays, cfg.eps)
    return scale.astype(np.int64), shift.astype(np.int64)

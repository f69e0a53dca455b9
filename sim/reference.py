"""Exact reference: the real result ``Y = gamma * (x - mu) / sqrt(var + eps) + beta`` decided in
Python integers, independent of the hardware algorithm.

For an element with numerator ``a`` (``N*x - S1`` for LayerNorm, ``N*x`` for RMSNorm) and radicand
``D`` (both exact integers, see README "Numerics"), ``Y * 2**F_out`` lies between two integers ``lo`` and
``hi`` (equal when it is an integer).  An output is *faithful* when it equals ``lo`` or ``hi``
after saturation and *correctly rounded* when it equals ``round_half_even(Y * 2**F_out)``
saturated.  No floating point takes part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from normgen.hw.config import CoreConfig
from normgen.host.exact import floor_signed_sqrt_plus

__all__ = ["ExactBounds", "exact_bounds", "check_vector", "AccuracyReport", "output_errors"]


def _floor_div_sqrt(g: int, d: int) -> tuple[int, bool]:
    """``(floor(g / sqrt(d)), exact)`` for integers g and d > 0."""
    q = math.isqrt(g * g // d)
    exact = q * q * d == g * g
    if g >= 0:
        return q, exact
    return (-q if exact else -q - 1), exact


@dataclass
class ExactBounds:
    lo: int           # floor(Y * 2**F_out), saturated
    hi: int           # ceil(Y * 2**F_out), saturated
    rne: int          # round_half_even(Y * 2**F_out), saturated


def _scaled_floor(a: int, d: int, gamma: int, beta: int, frac_p: int, scale_bits: int):
    """``(floor(Y * 2**scale_bits), exact)`` with ``Y = (gamma * a / sqrt(d) + beta) / 2**frac_p``."""
    if d == 0:
        num, exact_root = 0, True
    else:
        num, exact_root = _floor_div_sqrt(gamma * a << scale_bits, d)
    total = num + (beta << scale_bits)
    q, r = divmod(total, 1 << frac_p)
    return q, exact_root and r == 0


def exact_bounds(cfg: CoreConfig, a: int, d: int, gamma: int, beta: int) -> ExactBounds:
    """Bounds for one element; ``gamma``/``beta`` are integers with :attr:`CoreConfig.param_frac`
    fraction bits."""
    f_out, f_p = cfg.out_format.frac_bits, cfg.param_frac
    lo, exact = _scaled_floor(a, d, gamma, beta, f_p, f_out)
    hi = lo if exact else lo + 1
    twice, exact2 = _scaled_floor(a, d, gamma, beta, f_p, f_out + 1)
    if exact2 and twice % 2 == 1:            # a tie: Y*2**F_out = lo + 1/2 exactly
        rne = lo if lo % 2 == 0 else lo + 1
    else:
        rne = (twice + 1) // 2
    low, high = cfg.out_format.min_int, cfg.out_format.max_int
    sat = lambda v: min(max(v, low), high)  # noqa: E731
    return ExactBounds(sat(lo), sat(hi), sat(rne))


def batchnorm_bounds(cfg: CoreConfig, channel: int, x: int) -> ExactBounds:
    """Bounds of ``Y = gamma*(x - mean)/sqrt(var + eps) + beta`` from the exact float parameters."""
    g, b, m, v, eps = (Fraction(float(p)) for p in (cfg.gamma[channel], cfg.beta[channel],
                                                       cfg.mean[channel], cfg.var[channel], cfg.eps))
    centred = Fraction(x, 1 << cfg.in_format.frac_bits) - m
    sign = -1 if g * centred < 0 else 1

    def scaled_floor(bits):
        return floor_signed_sqrt_plus(sign, g * g * centred * centred * Fraction(4) ** bits / (v + eps),
                                      b * Fraction(2) ** bits)

    f_out = cfg.out_format.frac_bits
    lo, exact = scaled_floor(f_out)
    hi = lo if exact else lo + 1
    twice, exact2 = scaled_floor(f_out + 1)
    if exact2 and twice % 2 == 1:
        rne = lo if lo % 2 == 0 else lo + 1
    else:
        rne = (twice + 1) // 2
    low, high = cfg.out_format.min_int, cfg.out_format.max_int
    sat = lambda value: min(max(value, low), high)  # noqa: E731
    return ExactBounds(sat(lo), sat(hi), sat(rne))


@dataclass
class AccuracyReport:
    elements: int = 0
    unfaithful: int = 0
    not_rounded: int = 0     # faithful but differs from round-half-even
    first_failure: str = ""

    def add(self, other: "AccuracyReport"):
        self.elements += other.elements
        self.unfaithful += other.unfaithful
        self.not_rounded += other.not_rounded
        self.first_failure = self.first_failure or other.first_failure


def check_vector(cfg: CoreConfig, x, y, *, gamma=None, beta=None) -> AccuracyReport:
    """Classify the outputs ``y`` of one input vector ``x`` (integers) against the exact result.

    ``gamma``/``beta`` (integers, per element) replace the configuration's: a batch-statistics
    BatchNorm channel is one such vector, with its channel's γ/β for every element."""
    x = [int(v) for v in np.asarray(x).ravel()]
    y = [int(v) for v in np.asarray(y).ravel()]
    n = len(x)
    if cfg.kind.folded:
        return _check_batchnorm(cfg, x, y)
    s1, s2 = sum(x), sum(v * v for v in x)
    e = cfg.eps_int
    if cfg.subtracts_mean:
        d, mean_term = n * s2 - s1 * s1 + e * n * n, s1
    else:
        d, mean_term = n * s2 + e * n * n, 0
    if gamma is None:
        gamma, beta = cfg.gamma_beta_int()
    report = AccuracyReport(elements=n)
    for i, (xi, yi) in enumerate(zip(x, y)):
        bounds = exact_bounds(cfg, n * xi - mean_term, d, int(gamma[i]), int(beta[i]))
        if yi not in (bounds.lo, bounds.hi):
            report.unfaithful += 1
            if not report.first_failure:
                report.first_failure = (f"element {i}: x={xi} y={yi} exact in [{bounds.lo}, {bounds.hi}] "
                                        f"(N={n}, S1={s1}, S2={s2}, D={d})")
        elif yi != bounds.rne:
            report.not_rounded += 1
    return report


def output_errors(cfg: CoreConfig, x, y, *, extra_bits: int = 24, gamma=None,
                  beta=None) -> tuple[np.ndarray, np.ndarray]:
    """The errors, in output LSB, of the outputs ``y`` of one LayerNorm/RMSNorm input vector ``x``
    (integers) and of the correctly rounded outputs, against the exact real result saturated to
    the output range: ``(y - Y*2**F_out, rne - Y*2**F_out)``.

    ``Y*2**F_out`` is taken exactly to ``2**-extra_bits`` LSB (rounded down) by the same integer
    arithmetic as :func:`exact_bounds`; only the final differences are floats, for histograms.

    ``gamma``/``beta`` (integers, per element) replace the configuration's, as in
    :func:`check_vector`: a batch-statistics BatchNorm channel is one such vector."""
    if not (cfg.kind.statistics == "vector" or (cfg.kind.statistics == "batch" and gamma is not None)):
        raise ValueError("output_errors covers LayerNorm and RMSNorm vectors (and batch-statistics "
                         "BatchNorm channels given their gamma/beta)")
    x = [int(v) for v in np.asarray(x).ravel()]
    y = [int(v) for v in np.asarray(y).ravel()]
    n = len(x)
    s1, s2 = sum(x), sum(v * v for v in x)
    e = cfg.eps_int
    d = n * s2 - s1 * s1 + e * n * n if cfg.subtracts_mean else n * s2 + e * n * n
    mean_term = s1 if cfg.subtracts_mean else 0
    if gamma is None:
        gamma, beta = cfg.gamma_beta_int()
    f_out, f_p = cfg.out_format.frac_bits, cfg.param_frac
    low, high = cfg.out_format.min_int << extra_bits, cfg.out_format.max_int << extra_bits
    core, rounded = np.empty(n), np.empty(n)
    for i, (xi, yi) in enumerate(zip(x, y)):
        a, g, b = n * xi - mean_term, int(gamma[i]), int(beta[i])
        exact, _ = _scaled_floor(a, d, g, b, f_p, f_out + extra_bits)
        exact = min(max(exact, low), high)
        rne = exact_bounds(cfg, a, d, g, b).rne
        core[i] = ((yi << extra_bits) - exact) / 2.0 ** extra_bits
        rounded[i] = ((rne << extra_bits) - exact) / 2.0 ** extra_bits
    return core, rounded


def _check_batchnorm(cfg: CoreConfig, x, y) -> AccuracyReport:
    report = AccuracyReport(elements=len(x))
    for channel, (xi, yi) in enumerate(zip(x, y)):
        bounds = batchnorm_bounds(cfg, channel, xi)
        if yi not in (bounds.lo, bounds.hi):
            report.unfaithful += 1
            if not report.first_failure:
                report.first_failure = (f"channel {channel}: x={xi} y={yi} exact in [{bounds.lo}, {bounds.hi}]")
        elif yi != bounds.rne:
            report.not_rounded += 1
    return report


def check_batch(cfg: CoreConfig, batch, y) -> AccuracyReport:
    """Classify the outputs of one batch (batch-statistics BatchNorm), channel by channel."""
    batch, y = np.asarray(batch), np.asarray(y)
    gamma, beta = cfg.gamma_beta_int()
    report = AccuracyReport()
    for c in range(batch.shape[1]):
        m = batch.shape[0]
        report.add(check_vector(cfg, batch[:, c], y[:, c], gamma=np.full(m, gamma[c]), beta=np.full(m, beta[c])))
    return report

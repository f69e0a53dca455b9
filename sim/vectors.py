"""Test-vector classes of the numeric contract, as input integers of a configuration.

Every class of the numeric contract (README, "Numerics") is here: uniform full range; normal with σ from a few LSB up to full
scale; constant vectors; one outlier among constants; alternating ±max; N = 1, 2, N_max; vectors
whose S1 and S2 hit the accumulator maxima; σ² ≪ ε; σ² ≫ 1; random γ/β (see
:func:`random_params`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from normgen.hw.config import CoreConfig

__all__ = ["CLASSES", "make_vector", "class_vectors", "random_params", "lengths", "BoundaryItem",
           "boundary_items"]


def _clip(cfg, values):
    f = cfg.in_format
    return np.clip(np.asarray(values), f.min_int, f.max_int).astype(np.int64)


def _uniform(cfg, n, rng):
    f = cfg.in_format
    return rng.integers(f.min_int, f.max_int + 1, n)


def _normal_small(cfg, n, rng):
    # σ of a few LSB around a random offset
    f = cfg.in_format
    return _clip(cfg, rng.integers(f.min_int // 2, f.max_int // 2) + np.rint(rng.normal(0, rng.uniform(0.5, 4), n)))


def _normal_wide(cfg, n, rng):
    # σ from a few LSB up to full scale, log-uniform
    f = cfg.in_format
    sigma = np.exp(rng.uniform(np.log(2.0), np.log(max(f.max_int, 2))))    # 2-bit formats: max_int = 1
    return _clip(cfg, np.rint(rng.normal(0, sigma, n)))


def _constant(cfg, n, rng):
    return np.full(n, rng.integers(cfg.in_format.min_int, cfg.in_format.max_int + 1))


def _outlier(cfg, n, rng):
    f = cfg.in_format
    x = np.full(n, rng.integers(f.min_int, f.max_int + 1))
    x[rng.integers(n)] = rng.choice([f.min_int, f.max_int])
    return x


def _alternating(cfg, n, rng):
    f = cfg.in_format
    first, second = (f.max_int, f.min_int) if rng.integers(2) else (f.min_int, f.max_int)
    return np.where(np.arange(n) % 2 == 0, first, second)


def _all_min(cfg, n, rng):
    # S1 and S2 at their extremes: every element at the most negative value
    return np.full(n, cfg.in_format.min_int)


def _all_max_one_min(cfg, n, rng):
    f = cfg.in_format
    x = np.full(n, f.max_int)
    x[rng.integers(n)] = f.min_int
    return x


def _tiny_variance(cfg, n, rng):
    # σ² ≪ ε: values that differ by at most one LSB
    base = rng.integers(cfg.in_format.min_int, cfg.in_format.max_int)
    return base + rng.integers(0, 2, n)


def _huge_variance(cfg, n, rng):
    # σ² ≫ 1: every element at a rail or at zero
    f = cfg.in_format
    return rng.choice([f.min_int, f.max_int, 0], n)


CLASSES = {
    "uniform": _uniform,
    "normal_small": _normal_small,
    "normal_wide": _normal_wide,
    "constant": _constant,
    "outlier": _outlier,
    "alternating": _alternating,
    "all_min": _all_min,
    "max_with_min": _all_max_one_min,
    "tiny_variance": _tiny_variance,
    "huge_variance": _huge_variance,
}


def make_vector(cfg: CoreConfig, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One vector of class ``kind`` and length ``n`` (input integers)."""
    return _clip(cfg, CLASSES[kind](cfg, n, rng))


def lengths(cfg: CoreConfig, rng: np.random.Generator, count: int) -> list[int]:
    """Vector lengths (multiples of the lane count) including P, 2P and N_max."""
    p, beats = cfg.lanes, cfg.beats_max
    fixed = [1, 2, beats] if beats >= 2 else [1]
    rest = list(rng.integers(1, beats + 1, max(0, count - len(fixed))))
    return [p * int(b) for b in fixed + rest][:max(count, 1)]


def class_vectors(cfg: CoreConfig, rng: np.random.Generator, per_class: int = 3) -> list[tuple[str, np.ndarray]]:
    """``per_class`` vectors of every class, with lengths from :func:`lengths`."""
    out = []
    for kind in CLASSES:
        for n in lengths(cfg, rng, per_class):
            out.append((kind, make_vector(cfg, kind, n, rng)))
    return out


def random_params(cfg: CoreConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random γ/β floats on the parameter grid, including negative and zero γ and the rails."""
    f = cfg.param_format
    n = cfg.features
    gamma = rng.integers(f.min_int, f.max_int + 1, n)
    beta = rng.integers(f.min_int, f.max_int + 1, n)
    # about one element in eight each: γ = 0, γ at a rail, β at a rail (at least one of each
    # where there are enough elements)
    for values, specials in ((gamma, [0]), (gamma, [f.min_int, f.max_int]), (beta, [f.min_int, f.max_int])):
        picked = rng.random(n) < 1 / 8
        if n >= 3 and not picked.any():
            picked[rng.integers(n)] = True
        values[picked] = rng.choice(specials, int(picked.sum()))
    return f.to_float(gamma), f.to_float(beta)


# ---- boundary class: exact ties and their neighbours --------------------------------------------
@dataclass
class BoundaryItem:
    """One vector (or batch column) with γ/β integers for its elements, built so that exact
    results sit on rounding boundaries (``ties``: ``Y * 2**F_out = k + 1/2`` exactly) or next to
    them."""
    x: np.ndarray
    gamma: np.ndarray | None      # param-format integers per element; None without the affine stage
    beta: np.ndarray | None
    ties: np.ndarray              # bool per element: the exact result is a tie

    def config(self, cfg: CoreConfig) -> CoreConfig:
        """``cfg`` with this item's γ/β on its first elements (the rest 1 and 0)."""
        if not cfg.affine_stage:
            return cfg
        f = cfg.param_format
        gamma, beta = np.ones(cfg.features), np.zeros(cfg.features)
        gamma[:len(self.x)], beta[:len(self.x)] = f.to_float(self.gamma), f.to_float(self.beta)
        return cfg.with_params(gamma, beta)


def _is_tie(cfg: CoreConfig, z: Fraction, gamma: int, beta: int) -> bool:
    scaled = (gamma * z + beta) * Fraction(2) ** (cfg.out_format.frac_bits + 1 - cfg.param_frac)
    return scaled.denominator == 1 and scaled.numerator % 2 == 1


def _tie_params(cfg: CoreConfig, z: Fraction, rng) -> tuple[int, int] | None:
    """γ, β integers of the parameter format that put ``γ*z + β`` on a tie, or None."""
    f = cfg.param_format
    q = z.denominator
    odd, twos = q, 0
    while odd % 2 == 0:
        odd, twos = odd // 2, twos + 1
    for _ in range(8):
        g = odd << int(rng.integers(0, twos + 1)) if twos else odd
        g *= int(rng.integers(1, 8)) | 1
        g *= 1 if rng.random() < 0.5 else -1
        if not f.min_int <= g <= f.max_int:
            continue
        start = int(rng.integers(f.min_int, f.max_int - 3))
        for b in range(start, start + 4):
            if _is_tie(cfg, z, g, b):
                return g, b
    return None


def boundary_items(cfg: CoreConfig, rng: np.random.Generator, count: int, max_n: int = 16,
                   max_tries: int = 200000, length: int | None = None) -> list[BoundaryItem]:
    """``count`` vectors whose radicand ``D`` is a perfect square, so that every normalised value
    ``z = a/sqrt(D)`` is rational, with γ/β (affine cores) chosen per element to put the exact
    result on a tie wherever the grids allow; without the affine stage, vectors are searched until
    some element is a tie.  Each tie item is followed by its neighbours: the same vector with β
    one parameter step either side (affine), or one input element moved by one step (a radicand
    that is no longer a square: results next to, not on, the boundary).  ``length`` fixes the
    vector length (e.g. a batch-statistics column of M samples)."""
    f_in = cfg.in_format
    step = cfg.lanes
    lengths_ = [n for n in range(step, min(cfg.reduction_max, max_n) + 1, step) if n >= 2] or [step]
    if length is not None:
        lengths_ = [length]
    items: list[BoundaryItem] = []
    tries = screened = 0
    while len(items) < count and tries < max_tries:
        tries += 1
        n = int(rng.choice(lengths_))
        # half the items at most from the screen, unless exact ties are out of reach of the grids
        if not cfg.affine_stage and tries % 4 == 0 and (screened < count // 2 or tries > max_tries // 20):
            # a random vector with an element within 2**-10 LSB of a boundary (screened in float64,
            # which resolves that distance at these magnitudes)
            x = _clip(cfg, rng.integers(f_in.min_int, f_in.max_int + 1, n))
            n_, s1, s2 = len(x), int(x.sum()), int((x * x).sum())
            d = cfg.kind.radicand(n_, s1, s2, cfg.eps_int)
            if d == 0:
                continue
            scaled = (n_ * x - cfg.kind.mean_term(s1)) / math.sqrt(d) * 2.0 ** (cfg.out_format.frac_bits + 1)
            if np.min(np.abs(scaled - 2 * np.floor(scaled / 2) - 1)) < 2.0 ** -10:
                items.append(BoundaryItem(x, None, None, np.zeros(n_, bool)))
                screened += 1
            continue
        shift = int(rng.integers(0, max(1, f_in.width - 4)))
        x = _clip(cfg, rng.integers(-3, 4, n) << shift)
        n_, s1, s2 = len(x), int(x.sum()), int((x * x).sum())
        d = cfg.kind.radicand(n_, s1, s2, cfg.eps_int)
        root = math.isqrt(d)
        if d == 0 or root * root != d:
            continue
        zs = [Fraction(n_ * int(v) - cfg.kind.mean_term(s1), root) for v in x]
        if cfg.affine_stage:
            gamma = np.zeros(n_, np.int64)
            beta = np.zeros(n_, np.int64)
            ties = np.zeros(n_, bool)
            f = cfg.param_format
            for i, z in enumerate(zs):
                found = _tie_params(cfg, z, rng)
                if found:
                    gamma[i], beta[i] = found
                    ties[i] = True
                else:
                    gamma[i], beta[i] = rng.integers(f.min_int, f.max_int + 1, 2)
            if not ties.any():
                continue
            items.append(BoundaryItem(x, gamma, beta, ties))
            for delta in (-1, 1):
                items.append(BoundaryItem(x, gamma, np.clip(beta + delta * ties, f.min_int, f.max_int),
                                          np.array([_is_tie(cfg, z, int(g), int(b)) for z, g, b in
                                                    zip(zs, gamma, np.clip(beta + delta * ties, f.min_int, f.max_int))])))
        else:
            ties = np.array([_is_tie(cfg, z, 1, 0) for z in zs])
            if not ties.any():
                continue
            items.append(BoundaryItem(x, None, None, ties))
            moved = x.copy()
            j = int(rng.integers(n_))
            moved[j] = moved[j] + (1 if moved[j] < f_in.max_int else -1)
            items.append(BoundaryItem(moved, None, None, np.zeros(n_, bool)))
    if len(items) < count:
        raise RuntimeError(f"found only {len(items)} boundary vectors for {cfg.describe()} in {max_tries} tries")
    return items[:count]

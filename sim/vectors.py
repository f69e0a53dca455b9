"""Test-vector classes of the numeric contract, as input integers of a configuration.

Every class of the numeric contract (README, "Numerics") is here: uniform full range; normal with σ from a few LSB up to full
scale; constant vectors; one outlier among constants; alternating ±max; N = 1, 2, N_max; vectors
whose S1 and S2 hit the accumulator maxima; σ² ≪ ε; σ² ≫ 1; random γ/β (see
:func:`random_params`).
"""
from __future__ import annotations

import numpy as np

from normgen.hw.config import CoreConfig

__all__ = ["CLASSES", "make_vector", "class_vectors", "random_params", "lengths"]


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

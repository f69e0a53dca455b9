"""The golden model is faithful: every output is one of the two output-grid neighbours of the
exact real result, decided in integers by :mod:`normgen.sim.reference`, on every vector class of
:mod:`normgen.sim.vectors`.  Its rsqrt meets its integer definition; the checker itself is shown
to catch wrong outputs; float64 (NumPy, and PyTorch when installed) agrees within 1 LSB."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pytest

from normgen.hw.config import CoreConfig
from normgen.sim import golden, reference, vectors

# ---- the configurations under test -------------------------------------------------------------

#: name -> (in, out, param, ε > 0 to use); ε = 1e-5 rounds to 0 on s2.6's squared grid (2**-12).
FORMATS = {
    "s4.12": ("s4.12", "s4.12", "s4.12", 1e-5),
    "s2.6": ("s2.6", "s3.5", "s2.6", 2.0 ** -10),
}


@dataclass(frozen=True)
class Case:
    norm: str
    formats: str
    eps_on: bool
    affine: bool
    features: int = 768
    lanes: int = 1
    per_class: int = 6
    seed: int = 0
    label: str = field(default="", compare=False)

    def config(self) -> CoreConfig:
        fin, fout, fpar, eps = FORMATS[self.formats]
        cfg = CoreConfig(norm=self.norm, features=self.features, lanes=self.lanes, in_format=fin,
                         out_format=fout, param_format=fpar, eps=eps if self.eps_on else 0.0,
                         affine=self.affine)
        if self.affine:
            gamma, beta = vectors.random_params(cfg, self._rng("params"))
            cfg = cfg.with_params(gamma=gamma, beta=beta)
        return cfg

    def _rng(self, purpose: str) -> np.random.Generator:
        key = f"{self!r}|{purpose}".encode()
        return np.random.default_rng(list(key))

    def vectors(self, cfg) -> list[tuple[str, np.ndarray]]:
        return vectors.class_vectors(cfg, self._rng("vectors"), per_class=self.per_class)

    def __str__(self):
        return (f"{self.norm}-{self.formats}-{'eps' if self.eps_on else 'eps0'}-"
                f"{'affine' if self.affine else 'plain'}-N{self.features}-P{self.lanes}")


CASES = [Case(norm, fmt, eps_on, affine)
         for norm in ("layernorm", "rmsnorm") for fmt in FORMATS
         for eps_on in (True, False) for affine in (True, False)]
CASES += [Case(norm, fmt, True, True, features=1, per_class=2)
          for norm in ("layernorm", "rmsnorm") for fmt in FORMATS]
CASES += [Case("layernorm", "s4.12", False, True, features=1, per_class=2),
          Case("layernorm", "s4.12", True, True, features=768, lanes=4),
          Case("rmsnorm", "s2.6", False, True, features=768, lanes=8),
          Case("layernorm", "s2.6", True, True, features=2, per_class=3),
          Case("layernorm", "s4.12", True, False, features=64, per_class=12, seed=1)]


def faithfulness(case: Case) -> reference.AccuracyReport:
    """Golden outputs of all of ``case``'s vectors, classified by the exact reference."""
    cfg = case.config()
    total = reference.AccuracyReport()
    named = case.vectors(cfg)
    outputs = golden.normalize_vectors(cfg, [x for _, x in named])
    for (kind, x), y in zip(named, outputs):
        report = reference.check_vector(cfg, x, y)
        if report.first_failure:
            report.first_failure = f"{kind}: {report.first_failure}"
        total.add(report)
    return total


@pytest.mark.parametrize("case", CASES, ids=str)
def test_golden_is_faithful_on_every_vector_class(case):
    cfg = case.config()
    named = case.vectors(cfg)
    # the set really covers the contract's classes and lengths
    assert {kind for kind, _ in named} == set(vectors.CLASSES)
    lengths = {len(x) for _, x in named}
    assert {case.lanes, case.features} <= lengths
    assert all(len(x) % case.lanes == 0 and 1 <= len(x) <= case.features for _, x in named)
    report = faithfulness(case)
    assert report.elements == sum(len(x) for _, x in named)
    assert report.unfaithful == 0, report.first_failure


TINY = [dict(norm=norm, eps=eps, affine=affine, out_format=out)
        for norm in ("layernorm", "rmsnorm") for eps in (0.0, 2.0 ** -4, 0.5)
        for affine in (True, False) for out in ("s2.2", "s3.5")]


@pytest.mark.parametrize("kwargs", TINY, ids=repr)
def test_golden_is_faithful_exhaustively_on_a_tiny_config(kwargs):
    """Every multiset of 1..4 values of s2.2 (all orderings give the same statistics), with
    random γ/β of s2.2 and a rotation so every position sees every value."""
    cfg = CoreConfig(features=4, in_format="s2.2", param_format="s2.2", **kwargs)
    if cfg.affine:
        cfg = cfg.with_params(*vectors.random_params(cfg, np.random.default_rng(len(repr(kwargs)))))
    values = range(cfg.in_format.min_int, cfg.in_format.max_int + 1)
    total = reference.AccuracyReport()
    for n in range(1, cfg.features + 1):
        batch = np.array(list(itertools.combinations_with_replacement(values, n)))
        batch = np.concatenate([np.roll(batch, k, axis=1) for k in range(n)])
        for x, y in zip(batch, golden.normalize(cfg, batch)):
            total.add(reference.check_vector(cfg, x, y))
    assert total.elements == sum(n * n * math.comb(15 + n, n) for n in range(1, 5))
    assert total.unfaithful == 0, total.first_failure


# ---- rsqrt -------------------------------------------------------------------------------------

RSQRT_CONFIGS = [dict(), dict(features=1), dict(features=4, in_format="s2.2", out_format="s2.2",
                                                   param_format="s2.2", eps=0),
                 dict(features=768, in_format="s2.6", out_format="s3.5", param_format="s2.6",
                      eps=2 ** -10), dict(features=65536, norm="rmsnorm", eps=0, affine=False)]


def _independent_shift(d: int, m: int) -> int:
    """The s with D·4**-s truncated into [4**(m-1), 4**m), found by search."""
    s = 0
    while _mantissa(d, s) >= 4 ** m:
        s += 1
    while _mantissa(d, s) < 4 ** (m - 1):
        s -= 1
    return s


def _mantissa(d: int, s: int) -> int:
    return d // 4 ** s if s >= 0 else d * 4 ** (-s)


@pytest.mark.parametrize("kwargs", RSQRT_CONFIGS, ids=repr)
def test_rsqrt_meets_its_defining_property(kwargs):
    cfg = CoreConfig(**kwargs)
    T, m, need = cfg.rsqrt_bits, cfg.rsqrt_m, cfg.rsqrt_need
    q = 2 ** (2 * T + 2 * m - 2)
    top = 2 ** cfg.d_width - 1
    rng = np.random.default_rng(3)
    edges = {1, 2, 3, 4, 5, top, top - 1, 4 ** (m - 1), 4 ** (m - 1) - 1, 4 ** m - 1, 4 ** m, 4 ** m + 1}
    edges |= {2 ** k + delta for k in range(cfg.d_width) for delta in (-1, 0, 1)}
    randoms = {int.from_bytes(rng.bytes(16), "little") % (2 ** int(bits)) for bits in
               rng.integers(1, cfg.d_width + 1, 3000)}
    delta = Fraction(1, 2 ** (need + 1))
    seen_r = set()
    for d in sorted(v for v in edges | randoms if 1 <= v <= top):
        r, s = golden.rsqrt(cfg, d)
        assert s == _independent_shift(d, m), d
        mant = _mantissa(d, s)
        assert r * r * mant <= q < (r + 1) ** 2 * mant, d
        assert 2 ** (T - 1) <= r <= 2 ** T
        # R·2**-(T+m-1+s) approximates 1/sqrt(D) within the relative error the budget assumes
        ratio = Fraction(r * r * d, 4 ** (T + m - 1 + s))          # (R·2**-k · sqrt(D))**2
        assert (1 - delta) ** 2 < ratio < (1 + delta) ** 2, d
        seen_r.add(r)
    assert golden.rsqrt(cfg, 0) == (0, 0)
    assert golden.rsqrt(cfg, 4 ** (m - 1)) == (2 ** T, 0)
    assert len(seen_r) > 100 or T < 8


# ---- the golden model's own consistency ----------------------------------------------------

def _round_half_up(value: int, shift: int) -> int:
    return math.floor(Fraction(value, 2 ** shift) + Fraction(1, 2))


def _python_element(cfg, x: int, a: int, b: int, gamma: int, beta: int) -> int:
    """The per-element stage of config's docstring in Python integers (no int64)."""
    u = x * a - b
    v = _round_half_up(u, cfg.a_frac - cfg.z_frac)
    w = gamma * v + beta * 2 ** cfg.z_frac if cfg.affine else v
    y = _round_half_up(w, cfg.w_frac - cfg.out_format.frac_bits)
    return min(max(y, cfg.out_format.min_int), cfg.out_format.max_int)


@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[10], CASES[-1]], ids=str)
def test_vectorized_normalize_equals_per_vector_and_python_integers(case):
    cfg = case.config()
    rng = np.random.default_rng(11)
    gamma, beta = cfg.gamma_beta_int()
    for n in sorted({1, 2, 3, cfg.lanes, cfg.features // 2, cfg.features} - {0}):
        if n % cfg.lanes:
            continue
        batch = np.stack([vectors.make_vector(cfg, kind, n, rng) for kind in vectors.CLASSES] * 2)
        together = golden.normalize(cfg, batch)
        one_by_one = golden.normalize_vectors(cfg, list(batch))
        assert together.shape == batch.shape
        assert np.array_equal(together, np.stack(one_by_one))
        for x, y in zip(batch[::3], together[::3]):
            xs = [int(v) for v in x]
            a, b = golden.scalars(cfg, n, sum(xs), sum(v * v for v in xs))
            expected = [_python_element(cfg, xi, a, b, int(gamma[i]), int(beta[i])) for i, xi in enumerate(xs)]
            assert y.tolist() == expected


def test_normalize_rejects_bad_arrays():
    cfg = CoreConfig(features=8)
    with pytest.raises(ValueError, match="2-D"):
        golden.normalize(cfg, np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="N = 9"):
        golden.normalize(cfg, np.zeros((1, 9), np.int64))
    with pytest.raises(ValueError, match="outside"):
        golden.normalize(cfg, np.full((1, 4), 2 ** 15))


def test_zero_denominator_outputs_beta():
    # LayerNorm without ε on a constant vector: D = 0, so z = 0 and y = β exactly.
    cfg = CoreConfig(features=4, eps=0).with_params(gamma=[1, 2, 3, 4], beta=[0.5, -0.25, 7.5, -8])
    y = golden.normalize(cfg, np.full((1, 4), 1234))[0]
    assert y.tolist() == [2048, -1024, 30720, -32768]


def test_exact_values_on_a_hand_computed_vector():
    # x = (1, -1, 3, -3) (in s4.12 integers ×4096): mean 0, variance 5, z = ±1/√5, ±3/√5
    cfg = CoreConfig(features=4, eps=0, affine=False)
    x = np.array([[1, -1, 3, -3]]) * 4096
    y = golden.normalize(cfg, x)[0]
    expected_real = [v / math.sqrt(5) * 4096 for v in (1, -1, 3, -3)]
    assert all(math.floor(e) <= yi <= math.ceil(e) for e, yi in zip(expected_real, y.tolist()))


# ---- the checker can fail ------------------------------------------------------------------------

def _exact_elements(cfg, x):
    n = len(x)
    s1, s2 = int(np.sum(x)), int(np.sum(np.asarray(x, np.int64) ** 2))
    d, mean_term = golden.denominator(cfg, n, s1, s2)
    gamma, beta = cfg.gamma_beta_int()
    return [reference.exact_bounds(cfg, n * int(xi) - mean_term, d, int(gamma[i]), int(beta[i]))
            for i, xi in enumerate(x)]


def test_checker_flags_one_lsb_errors_where_the_result_is_exact():
    cfg = CoreConfig(features=768, eps=0).with_params(
        *vectors.random_params(CoreConfig(features=768), np.random.default_rng(5)))
    rng = np.random.default_rng(6)
    # (a, -a) gives z = ±1 exactly; constant vectors give z = 0; rails saturate: all exact.
    batch = [np.array([1000, -1000]), np.array([-5, 5]), np.full(16, 77), np.full(768, -3)]
    batch += [vectors.make_vector(cfg, "huge_variance", 768, rng), vectors.make_vector(cfg, "uniform", 768, rng)]
    exact_total = other_total = 0
    for x in batch:
        y = golden.normalize(cfg, x[None, :])[0]
        bounds = _exact_elements(cfg, x)
        assert reference.check_vector(cfg, x, y).unfaithful == 0
        exact = np.array([b.lo == b.hi for b in bounds])
        f = cfg.out_format
        for step in (+1, -1):
            wrong = y + step
            wrong = np.where((wrong > f.max_int) | (wrong < f.min_int), y - step, wrong)
            assert reference.check_vector(cfg, x, np.where(exact, wrong, y)).unfaithful == int(exact.sum())
        # Elsewhere the other neighbour is faithful too, and is round-half-even exactly where y
        # was not; two steps off is not faithful.
        other = np.array([b.hi if yi == b.lo else b.lo for b, yi in zip(bounds, y.tolist())])
        before = reference.check_vector(cfg, x, y).not_rounded
        report = reference.check_vector(cfg, x, np.where(exact, y, other))
        assert report.unfaithful == 0
        assert report.not_rounded == int((~exact).sum()) - before
        far = np.array([b.lo - 1 if b.lo > cfg.out_format.min_int else b.hi + 1 for b in bounds])
        assert reference.check_vector(cfg, x, far).unfaithful == len(x)
        exact_total += int(exact.sum())
        other_total += int((~exact).sum())
    assert exact_total > 1000 and other_total > 500


class _Override:
    """``cfg`` with some attributes replaced: a deliberately wrong variant of the hardware."""

    def __init__(self, cfg, **overrides):
        self._cfg, self._overrides = cfg, overrides

    def __getattr__(self, name):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._cfg, name)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_checker_flags_a_low_precision_rsqrt(norm):
    cfg = CoreConfig(norm=norm, features=768, eps=1e-5, affine=False)
    rng = np.random.default_rng(8)
    named = [(kind, vectors.make_vector(cfg, kind, 768, rng)) for kind in ("uniform", "normal_wide", "outlier")]
    for bits_removed, expect_failures in ((0, False), (12, True)):
        cheap = _Override(cfg, rsqrt_bits=cfg.rsqrt_bits - bits_removed,
                          rsqrt_m=cfg.rsqrt_m - bits_removed // 2)
        total = reference.AccuracyReport()
        for _, x in named:
            total.add(reference.check_vector(cfg, x, golden.normalize(cheap, x[None, :])[0]))
        assert (total.unfaithful > 0) == expect_failures, total


def test_checker_flags_a_model_that_ignores_eps():
    cfg = CoreConfig(features=64, eps=1e-3, affine=False)      # e = 16777 on the 2**-24 grid
    rng = np.random.default_rng(9)
    no_eps = _Override(cfg, eps_int=0)
    flagged = 0
    for _ in range(5):
        x = vectors.make_vector(cfg, "tiny_variance", 64, rng)
        assert reference.check_vector(cfg, x, golden.normalize(cfg, x[None, :])[0]).unfaithful == 0
        flagged += reference.check_vector(cfg, x, golden.normalize(no_eps, x[None, :])[0]).unfaithful
    assert flagged > 100


# ---- float64 cross-checks --------------------------------------------------------------------------

def _float_inputs(cfg, x):
    gamma, beta = cfg.gamma_beta_int()
    scale = 2.0 ** -cfg.param_frac
    n = x.shape[-1]
    return cfg.in_format.to_float(x), gamma[:n] * scale, beta[:n] * scale


def _assert_within_one_lsb(cfg, y_int, real):
    f = cfg.out_format
    target = np.clip(np.asarray(real) * 2.0 ** f.frac_bits, f.min_int, f.max_int)
    err = np.abs(y_int - target)
    assert np.all(err < 1 + 1e-6), float(err.max())
    return float(err.max())


FLOAT_CASES = [c for c in CASES if c.features > 1 and c.lanes == 1 and c.per_class == 6]


@pytest.mark.parametrize("case", FLOAT_CASES, ids=str)
def test_golden_within_one_lsb_of_numpy_float64(case):
    cfg = case.config()
    worst = 0.0
    for _, x in case.vectors(cfg):
        xf, g, b = _float_inputs(cfg, x)
        mean = xf.mean() if cfg.norm == "layernorm" else 0.0
        var = np.mean((xf - mean) ** 2)
        denom = np.sqrt(var + cfg.eps_effective)
        z = (xf - mean) / denom if denom > 0 else np.zeros_like(xf)
        real = g * z + b
        worst = max(worst, _assert_within_one_lsb(cfg, golden.normalize(cfg, x[None, :])[0], real))
    assert worst > 0.3                       # the comparison is not vacuous


@pytest.mark.parametrize("case", [c for c in FLOAT_CASES if c.eps_on], ids=str)
def test_golden_within_one_lsb_of_torch_float64(case):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    cfg = case.config()
    for _, x in case.vectors(cfg):
        xf, g, b = (torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for v in _float_inputs(cfg, x))
        n = x.shape[-1]
        if cfg.norm == "layernorm":
            real = functional.layer_norm(xf[None, :], (n,), weight=g, bias=b, eps=cfg.eps_effective)[0]
        else:
            real = functional.rms_norm(xf[None, :], (n,), weight=g, eps=cfg.eps_effective)[0] + b
        _assert_within_one_lsb(cfg, golden.normalize(cfg, x[None, :])[0], real.numpy())

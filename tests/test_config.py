"""CoreConfig: every impossible configuration is refused with a message that names the parameter
and the value; ε lands on the right grid point; every derived width holds the largest value the
golden model can produce there."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from normgen.hw.config import MAX_ARITH_WIDTH, ConfigError, CoreConfig, FixedFormat
from normgen.sim import golden


# ---- impossible configurations ------------------------------------------------------------------

# (keyword arguments, text the message must contain: the parameter's name and the value)
BAD_CONFIGS = [
    (dict(features=0), ["features", "0"]),
    (dict(features=-1), ["features", "-1"]),
    (dict(features=70000), ["features", "70000"]),
    (dict(features=True), ["features", "True"]),
    (dict(features=4.0), ["features", "4.0"]),
    (dict(features=1024, lanes=3), ["lanes", "3"]),
    (dict(features=12, lanes=8), ["lanes", "8"]),
    (dict(features=8, lanes=16), ["lanes", "16"]),
    (dict(lanes=0), ["lanes", "0"]),
    (dict(lanes=-2), ["lanes", "-2"]),
    (dict(in_format="4.12"), ["in_format", "'4.12'"]),
    (dict(in_format="s40.0"), ["in_format", "s40.0"]),
    (dict(out_format="u4.12"), ["out_format", "'u4.12'"]),
    (dict(param_format="s4"), ["param_format", "'s4'"]),
    (dict(param_format="s1.0"), ["param_format", "s1.0"]),
    (dict(out_format="s-1.4"), ["out_format", "'s-1.4'"]),
    (dict(eps=-1e-5), ["eps", "-1e-05"]),
    (dict(eps=float("nan")), ["eps", "nan"]),
    (dict(eps=float("inf")), ["eps", "inf"]),
    (dict(eps=float("-inf")), ["eps", "-inf"]),
    (dict(eps="abc"), ["eps", "'abc'"]),
    (dict(in_format="s2.6", eps=1e-5), ["eps", "1e-05", "s2.6"]),
    (dict(in_format="s4.12", eps=2.0 ** -26), ["eps", repr(2.0 ** -26), "s4.12"]),
    (dict(norm="groupnorm"), ["norm", "'groupnorm'"]),
    (dict(norm="LayerNorm"), ["norm", "'LayerNorm'"]),
    (dict(features=8, gamma=np.ones(7)), ["gamma", "(7,)"]),
    (dict(features=8, beta=np.zeros((2, 4))), ["beta", "(2, 4)"]),
    (dict(features=8, gamma=np.full(8, 8.0)), ["gamma", "param_format", "s4.12"]),
    (dict(features=8, beta=np.r_[np.zeros(7), -8.001]), ["beta", "param_format", "s4.12"]),
    (dict(features=8, gamma=np.r_[np.ones(7), np.nan]), ["gamma", "finite"]),
    (dict(features=8, affine=False, gamma=np.ones(8)), ["gamma", "affine"]),
    (dict(features=8, affine=False, beta=np.zeros(8)), ["beta", "affine"]),
    (dict(affine="yes"), ["affine", "'yes'"]),
    (dict(in_format="s16.16", out_format="s16.16"), ["in_format", "s16.16", str(MAX_ARITH_WIDTH)]),
    (dict(in_format="s8.24", features=65536), ["in_format", "s8.24", str(MAX_ARITH_WIDTH)]),
    (dict(in_format="s4.12", out_format="s4.28", param_format="s16.16"),
     ["out_format", "s4.28", str(MAX_ARITH_WIDTH)]),
    (dict(eps=1e308), ["eps", "1e+308", "256"]),
    (dict(eps=1e300), ["eps", "1e+300"]),
    (dict(features=8, gamma=["a"] * 8), ["gamma", "real numbers"]),
    (dict(features=8, beta=np.ones(8) * 1j), ["beta", "real numbers"]),
    (dict(features=8, gamma=np.r_[np.ones(5), 9.5, np.ones(2)]), ["gamma[5]", "9.5"]),
    (dict(vector_interval=0), ["vector_interval", "1..1024", "0"]),
    (dict(vector_interval=2.5), ["vector_interval", "2.5"]),
    (dict(vector_interval=True), ["vector_interval", "True"]),
    (dict(norm="batchnorm", features=8, max_batch=4, vector_interval=4), ["vector_interval", "layernorm, rmsnorm"]),
    (dict(rsqrt_form="fast"), ["rsqrt_form", "lookahead, compact", "'fast'"]),
    (dict(lane_dsp=2), ["lane_dsp", ">= 3", "x*x 1 + x*A 1 + gamma*v 1", "not 2"]),
    (dict(lane_dsp=1, affine=False), ["lane_dsp", ">= 2", "not 1"]),
    (dict(lane_dsp=3.5), ["lane_dsp", "3.5"]),
    (dict(lane_dsp=True), ["lane_dsp", "True"]),
    (dict(norm="batchnorm", features=8, mean=np.zeros(8), var=np.ones(8), lane_dsp=0), ["lane_dsp", ">= 1", "not 0"]),
]


@pytest.mark.parametrize("kwargs, expected", BAD_CONFIGS, ids=[repr(k)[:60] for k, _ in BAD_CONFIGS])
def test_impossible_config_raises_naming_parameter_and_value(kwargs, expected):
    with pytest.raises(ConfigError) as info:
        CoreConfig(**kwargs)
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} missing from {message!r}"


def test_zero_integer_bits_message_quotes_the_format():
    with pytest.raises(ConfigError) as info:
        CoreConfig(in_format="s0.4")
    assert "in_format" in str(info.value)
    assert "s0.4" in str(info.value)


def test_zero_integer_bits_is_refused():
    with pytest.raises(ConfigError, match=r"^in_format 's0.4': .*integer bits.* 0$"):
        CoreConfig(in_format="s0.4")


@pytest.mark.parametrize("text, int_bits, frac_bits", [
    ("s4.12", 4, 12), ("s1.1", 1, 1), ("s2.0", 2, 0), ("s32.0", 32, 0), ("s1.31", 1, 31), (" s3.5 ", 3, 5),
])
def test_format_parse_accepts_the_legal_range(text, int_bits, frac_bits):
    fmt = FixedFormat.parse(text)
    assert (fmt.int_bits, fmt.frac_bits) == (int_bits, frac_bits)
    width = int_bits + frac_bits
    assert fmt.width == width
    assert (fmt.min_int, fmt.max_int) == (-(2 ** (width - 1)), 2 ** (width - 1) - 1)
    assert fmt.lsb == 2.0 ** -frac_bits
    assert str(fmt) == text.strip()


def test_format_quantize_rounds_half_even_and_saturates():
    fmt = FixedFormat.parse("s2.2")          # integers -8..7, step 1/4
    values = [0.125, 0.375, -0.125, -0.375, 1.0, 1.87, 1.88, 1.75, 1.875, 1.625, -2.125,
              100.0, -2.0, -2.2, -1e9]
    ints, saturated = fmt.quantize(values)
    # by hand: v*4 = 0.5 -> 0, 1.5 -> 2, 7.48 -> 7, 7.52 -> 8 -> 7 (saturated), 7.5 -> 8 (even)
    # -> 7 (saturated), 6.5 -> 6 (even), -8.5 -> -8 (even, in range), -8.8 -> -9 -> -8 (saturated)
    assert ints.tolist() == [0, 2, 0, -2, 4, 7, 7, 7, 7, 6, -8, 7, -8, -8, -8]
    assert saturated == 5
    expected = sum(1 for v in values if not -8 <= round(Fraction(v) * 4) <= 7)
    assert saturated == expected
    assert fmt.to_float(ints).tolist() == [i / 4 for i in ints.tolist()]
    with pytest.raises(ConfigError, match="finite"):
        fmt.quantize([0.0, float("nan")])
    with pytest.raises(ConfigError, match="finite"):
        fmt.quantize([float("-inf")])


# ---- ε on the input-squared grid -----------------------------------------------------------------

def _expected_eps_int(eps: float, frac_bits: int) -> int:
    return round(Fraction(eps) * 2 ** (2 * frac_bits))           # Fraction rounds half to even


@pytest.mark.parametrize("eps, in_format", [
    (1e-5, "s4.12"), (1e-6, "s4.12"), (1e-8, "s2.14"), (0.0, "s4.12"), (2.0 ** -10, "s2.6"),
    (1e-3, "s2.6"), (0.5, "s1.1"), (1.0, "s3.5"), (2.5 * 2.0 ** -24, "s4.12"),
    (3.5 * 2.0 ** -24, "s4.12"), (1.5 * 2.0 ** -24, "s4.12"),
    (123.456, "s8.8"),
])
def test_effective_eps_is_eps_rounded_half_even_on_the_squared_grid(eps, in_format):
    cfg = CoreConfig(in_format=in_format, eps=eps, features=4)
    frac = FixedFormat.parse(in_format).frac_bits
    e = _expected_eps_int(eps, frac)
    assert cfg.eps_int == e
    assert Fraction(cfg.eps_effective) == Fraction(e, 2 ** (2 * frac))
    assert f"e={e}" in cfg.describe()


def test_eps_half_grid_ties_round_to_even():
    # 0.5 step rounds to 0 (even) and is refused as "rounds to 0"; 1.5 and 2.5 steps both give 2.
    step = 2.0 ** -24
    with pytest.raises(ConfigError, match="rounds to 0"):
        CoreConfig(eps=0.5 * step)
    assert CoreConfig(eps=1.5 * step).eps_int == 2
    assert CoreConfig(eps=2.5 * step).eps_int == 2
    assert CoreConfig(eps=0.5000001 * step).eps_int == 1


# ---- derived widths --------------------------------------------------------------------------

def _signed_width_for(low: int, high: int) -> int:
    """Smallest two's-complement width holding every integer of [low, high]."""
    width = 1
    while not (-(2 ** (width - 1)) <= low and high <= 2 ** (width - 1) - 1):
        width += 1
    return width


def _unsigned_width_for(high: int) -> int:
    width = 1
    while high > 2 ** width - 1:
        width += 1
    return width


WIDTH_CONFIGS = [
    dict(),
    dict(features=1),
    dict(features=768, lanes=4, in_format="s2.6", out_format="s3.5", param_format="s2.6", eps=2 ** -10),
    dict(features=65536, in_format="s1.15", eps=0),
    dict(features=1000, in_format="s8.8", norm="rmsnorm", eps=0.25),
    dict(features=3, in_format="s1.1", out_format="s2.2", param_format="s2.1", eps=0),
    dict(features=4096, in_format="s4.12", out_format="s8.16", affine=False),
]


@pytest.mark.parametrize("kwargs", WIDTH_CONFIGS, ids=[repr(k)[:50] for k in WIDTH_CONFIGS])
def test_statistics_widths_hold_their_extremes(kwargs):
    cfg = CoreConfig(**kwargs)
    n, lo, hi = cfg.features, cfg.in_format.min_int, cfg.in_format.max_int
    e = cfg.eps_int
    assert _unsigned_width_for(n) <= cfg.count_width <= _unsigned_width_for(n) + 1
    s1_need = _signed_width_for(n * lo, n * hi)
    assert s1_need <= cfg.s1_width <= s1_need + 1
    s2_need = _unsigned_width_for(n * max(lo * lo, hi * hi))
    assert cfg.s2_width == s2_need
    # D = N*S2 - S1^2 + e*N^2 = sum_{i<j} (x_i - x_j)^2 + e*N^2 is largest with half the
    # elements at each rail (LayerNorm); RMSNorm's N*S2 + e*N^2 is largest at all-min.
    if cfg.norm == "layernorm":
        d_max = (n // 2) * (n - n // 2) * (hi - lo) ** 2 + e * n * n
    else:
        d_max = n * n * lo * lo + e * n * n
    d_need = _unsigned_width_for(d_max)
    assert d_need <= cfg.d_width
    if n >= 2:                           # for N_max = 1 LayerNorm's D is just e; no tight bound
        assert cfg.d_width <= d_need + 1
    # the extreme vectors themselves, through the golden model's own statistics
    half = np.array([lo] * (n // 2) + [hi] * (n - n // 2))
    for x in (np.full(n, lo), np.full(n, hi), half):
        count, s1, s2 = golden.statistics(cfg, x)
        d, _ = golden.denominator(cfg, count, s1, s2)
        assert -(2 ** (cfg.s1_width - 1)) <= s1 < 2 ** (cfg.s1_width - 1)
        assert 0 <= s2 < 2 ** cfg.s2_width
        assert 0 <= d < 2 ** cfg.d_width


@pytest.mark.parametrize("kwargs", WIDTH_CONFIGS, ids=[repr(k)[:50] for k in WIDTH_CONFIGS])
def test_rsqrt_widths_meet_the_error_budget(kwargs):
    cfg = CoreConfig(**kwargs)
    zb = max(0, math.ceil(math.log2(cfg.features) / 2 - 1e-12))      # 4**zb >= N_max
    assert 4 ** cfg.z_bits >= cfg.features and (cfg.z_bits == 0 or 4 ** (cfg.z_bits - 1) < cfg.features)
    assert cfg.z_bits == zb
    g = cfg.param_format.int_bits - 1 if cfg.affine else 0
    # rsqrt error 2**-(need+1) relative, times |gamma*z|, in output LSBs, must stay within 3/16 LSB
    # (faithful: with A/B's 1/8, v's 1/8 and the final 1/2 below 1) wherever the output does not
    # saturate regardless: |gamma*z| <= 2**(g + zb) (|z| <= sqrt(N_max), |gamma| <= 2**g), and
    # <= the output's top + |beta|'s top + 1 LSB (beyond it the exact and the computed results
    # both saturate); truncating D to 2m bits and flooring R to T bits each keep the relative
    # error there.
    need = cfg.rsqrt_need
    out_f = cfg.out_format.frac_bits
    reach = min(Fraction(2) ** (g + zb),
                Fraction(2) ** (cfg.out_format.int_bits - 1) + (Fraction(2) ** g if cfg.affine else 0)
                + Fraction(1, 2 ** out_f))
    assert reach * Fraction(1, 2 ** (need + 1)) * 2 ** out_f <= Fraction(3, 16)
    assert reach * Fraction(1, 2 ** need) * 2 ** out_f > Fraction(3, 16)      # and no bit more
    assert 2 * cfg.rsqrt_m - 1 >= need + 1
    assert cfg.rsqrt_bits - 1 >= need + 1
    assert cfg.r_width >= cfg.rsqrt_bits + 1                 # R can equal 2**T
    assert cfg.mant_width == 2 * cfg.rsqrt_m
    # s = ceil((bitlen(D) - 2m)/2) over D in 1..2**d_width - 1
    s_of = lambda d: -((2 * cfg.rsqrt_m - d.bit_length()) // 2)  # noqa: E731
    assert cfg.shift_min == s_of(1)
    assert cfg.shift_max >= s_of(2 ** cfg.d_width - 1)
    # every format of the per-element arithmetic fits the 63-bit budget
    for name in ("s2_width", "xa_width", "w_width", "u_width", "v_width", "b_width", "a_width"):
        assert getattr(cfg, name) <= MAX_ARITH_WIDTH, name


def _fits_signed(values, width) -> bool:
    values = np.asarray(values, dtype=object)
    return bool(np.all((values >= -(2 ** (width - 1))) & (values < 2 ** (width - 1))))


def _fits_unsigned(values, width) -> bool:
    values = np.asarray(values, dtype=object)
    return bool(np.all((values >= 0) & (values < 2 ** width)))


class _Maxima:
    """Largest magnitude seen of each intermediate, to show the check is not vacuous."""

    def __init__(self):
        self.max = {}

    def see(self, name, values):
        values = np.abs(np.asarray(values, dtype=object))
        self.max[name] = max(self.max.get(name, 0), int(values.max()) if values.size else 0)


def _check_intermediates(cfg, x, maxima: _Maxima):
    """Recompute one vector's intermediates with golden's helpers in Python integers and check
    that each fits its declared width."""
    n, s1, s2 = golden.statistics(cfg, x)
    d, s1_eff = golden.denominator(cfg, n, s1, s2)
    assert _fits_signed([s1], cfg.s1_width)
    assert _fits_unsigned([s2], cfg.s2_width)
    assert _fits_unsigned([d], cfg.d_width)
    r, s = golden.rsqrt(cfg, d)
    if d:
        mant = d >> (2 * s) if s >= 0 else d << (-2 * s)
        assert 2 ** (2 * cfg.rsqrt_m - 2) <= mant < 2 ** cfg.mant_width
        # R = 2**(T-1) does occur (M = 2**(2m) - 1), although config's docstring says R > 2**(T-1)
        assert 2 ** (cfg.rsqrt_bits - 1) <= r <= 2 ** cfg.rsqrt_bits
        assert _fits_unsigned([r], cfg.r_width)
        assert cfg.shift_min <= s <= cfg.shift_max
    a, b = golden.scalars(cfg, n, s1, s2)
    assert 0 <= a <= cfg.a_max and _fits_unsigned([a], cfg.a_width), (a, cfg.a_max)
    assert _fits_signed([b], cfg.b_width)
    xs = [int(v) for v in x]
    xa = [xi * a for xi in xs]
    u = [p - b for p in xa]
    v = [golden.rnd(ui, cfg.a_frac - cfg.z_frac) for ui in u]
    assert _fits_signed(xa, cfg.xa_width)
    assert _fits_signed(u, cfg.u_width), (max(map(abs, u)), cfg.u_width)
    assert _fits_signed(v, cfg.v_width)
    maxima.see("A", [a]); maxima.see("B", [b]); maxima.see("u", u); maxima.see("v", v)  # noqa: E702
    return v


def _param_grid(cfg):
    p = cfg.param_format
    return np.arange(p.min_int, p.max_int + 1, dtype=object)


TINY = [
    dict(norm="layernorm", eps=0),
    dict(norm="layernorm", eps=2 ** -4),          # e = 1: A at its largest
    dict(norm="layernorm", eps=0.75),
    dict(norm="rmsnorm", eps=0),
    dict(norm="rmsnorm", eps=2 ** -4),
    dict(norm="layernorm", eps=0, affine=False),
    dict(norm="rmsnorm", eps=2 ** -3, affine=False),
    dict(norm="layernorm", eps=0, features=5, out_format="s3.1"),
    dict(norm="rmsnorm", eps=0, features=5, param_format="s3.1"),
]


@pytest.mark.parametrize("kwargs", TINY, ids=[repr(k) for k in TINY])
def test_tiny_config_exhaustive_intermediates_fit_their_widths(kwargs):
    """Every vector of N = 1..N_max (4 or 5) elements of s2.2 (16 values each), every γ and β of s2.2.

    The statistics depend only on the multiset of a vector's elements and the per-element
    stage only on (A, B, x_i), so every multiset covers every ordering."""
    cfg = CoreConfig(**{**dict(features=4, in_format="s2.2", out_format="s2.2", param_format="s2.2"), **kwargs})
    values = range(cfg.in_format.min_int, cfg.in_format.max_int + 1)
    maxima = _Maxima()
    all_v = set()
    for n in range(1, cfg.features + 1):
        for x in itertools.combinations_with_replacement(values, n):
            all_v.update(_check_intermediates(cfg, np.array(x), maxima))
    # w = γ·v + (β << FZ) over every v that occurred and every γ, β of the parameter format
    v = np.array(sorted(all_v), dtype=object)
    if cfg.affine:
        grid = _param_grid(cfg)
        w_extremes = [g * vv + (bb << cfg.z_frac) for g in (grid[0], grid[-1], 0)
                      for vv in (v[0], v[-1]) for bb in (grid[0], grid[-1])]
        assert _fits_signed(w_extremes, cfg.w_width)
        maxima.see("w", w_extremes)
    # the widths are not vacuously large: the largest value seen needs at least half of them
    assert maxima.max["u"].bit_length() + 1 >= cfg.u_width - 3, (maxima.max, cfg.widths())
    assert maxima.max["A"].bit_length() >= cfg.a_width - 3, (maxima.max, cfg.widths())


@pytest.mark.parametrize("kwargs", [
    dict(), dict(norm="rmsnorm"), dict(eps=0), dict(norm="rmsnorm", eps=0),
    dict(features=768, in_format="s2.6", out_format="s3.5", param_format="s2.6", eps=2 ** -10),
    dict(features=64, in_format="s8.8", out_format="s8.8", param_format="s8.8", eps=0),
])
def test_large_config_extreme_vectors_fit_their_widths(kwargs):
    from normgen.sim import vectors

    cfg = CoreConfig(**kwargs)
    rng = np.random.default_rng(7)
    maxima = _Maxima()
    f = cfg.in_format
    n = cfg.features
    specials = [np.full(n, f.min_int), np.full(n, f.max_int),
                np.where(np.arange(n) % 2 == 0, f.min_int, f.max_int),
                np.r_[np.full(n - 1, f.max_int), f.min_int],
                np.r_[np.zeros(n - 1, np.int64), f.min_int], np.array([f.min_int]), np.array([f.min_int, 0]),
                np.array([1, 0]), np.array([0, 0, 1]), np.r_[np.zeros(n - 1, np.int64), 1]]
    samples = [x for _, x in vectors.class_vectors(cfg, rng, per_class=2)]
    for x in specials + samples:
        _check_intermediates(cfg, x, maxima)
    grid = _param_grid(cfg)
    w_max = abs(grid[0]) * (2 ** (cfg.v_width - 1)) + (abs(grid[0]) << cfg.z_frac)
    assert w_max < 2 ** (cfg.w_width - 1)


def test_with_params_keeps_the_hardware_and_changes_only_parameters():
    cfg = CoreConfig(features=8)
    gamma = np.linspace(-2, 2, 8)
    other = cfg.with_params(gamma=gamma)
    assert other.widths() == cfg.widths()
    assert other.gamma_int.tolist() == [round(Fraction(g) * 4096) for g in gamma]
    assert other.beta_int.tolist() == [0] * 8
    assert cfg.gamma_int.tolist() == [4096] * 8                       # default γ = 1.0 in s4.12
    gamma_i, beta_i = CoreConfig(features=8, affine=False).gamma_beta_int()
    assert gamma_i.tolist() == [1] * 8 and beta_i.tolist() == [0] * 8
    assert CoreConfig(features=8, affine=False).param_frac == 0


def test_hardware_choices_survive_with_params_and_rsqrt_form_follows_scalar_mul():
    """with_params keeps every hardware choice; the rsqrt form defaults to compact with the serial
    scalar stage only, and an explicit form is kept."""
    cfg = CoreConfig(features=8, lanes=2, scalar_mul="serial", lane_dsp=3, vector_interval=4)
    other = cfg.with_params(gamma=np.linspace(-1, 1, 8))
    for name in ("scalar_mul", "rsqrt_form", "lane_dsp", "vector_interval", "xa_fabric_bits", "g_fabric_bits"):
        assert getattr(other, name) == getattr(cfg, name), name
    assert cfg.rsqrt_form == "compact" and CoreConfig(features=8).rsqrt_form == "lookahead"
    assert CoreConfig(features=8, rsqrt_form="compact").rsqrt_form == "compact"
    assert CoreConfig(features=8, scalar_mul="serial", rsqrt_form="lookahead").rsqrt_form == "lookahead"
    assert "rsqrt_form=compact" in CoreConfig(features=8, rsqrt_form="compact").describe()
    assert "rsqrt_form" not in cfg.describe()


def _lane_blocks(cfg):
    from normgen.hw.multiply import product_blocks
    fabric = {"xa": cfg.xa_fabric_bits, "g": cfg.g_fabric_bits}
    squares = 0 if cfg.kind.folded else 1
    return squares + sum(product_blocks(*shapes, fabric[name]) for name, shapes in cfg.lane_products().items())


BN = dict(norm="batchnorm", features=32, mean=np.zeros(32), var=np.ones(32))


@pytest.mark.parametrize("kwargs, blocks", [
    (dict(features=64, lanes=8), 5),                       # below 16 lanes: every product in blocks
    (dict(features=64, lanes=16), 3),                      # from 16 lanes: three per lane
    (dict(features=64, lanes=32), 3),
    (dict(features=64, lanes=32, lane_dsp=5), 5),          # an explicit cap wins
    (dict(features=64, lanes=16, affine=False), 3),        # x*x 1 + x*A 2 fit under the cap as they are
    (dict(features=64, lanes=16, in_format="s8.16", out_format="s8.16"), 4),   # the floor is 4: no error
    (dict(BN, lanes=16), 2),                               # BatchNorm inference: x*A only
])
def test_wide_cores_cap_their_lane_multipliers(kwargs, blocks):
    """Without ``lane_dsp``, a core of 16 lanes or more keeps each lane at three multiplier blocks
    (or the lane's floor when that is higher); narrower cores keep every product in blocks."""
    cfg = CoreConfig(**kwargs)
    assert _lane_blocks(cfg) == blocks
    assert cfg.lane_dsp == kwargs.get("lane_dsp")

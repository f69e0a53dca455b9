"""Correctly rounded BatchNorm folding (``nearest-even``), against the independent exact reference
:func:`normgen.sim.reference.batchnorm_bounds`.

The datapath ``y = saturate(rnd_even(x*A - B, FA - F_out))`` is simulated on every input integer of
the format; the reference decides ``round_half_even(Y * 2**F_out)`` from the float parameters as
exact rationals.  Channels are random and adversarial: exact ties (``var + eps`` a perfect square,
γ/β/mean on coarse dyadic grids, γ = 0 with β on a half LSB, negative γ) and values a hair either
side of a tie.  The proof checker must report exactly the inputs the datapath gets wrong, at every
precision from far too coarse to the chosen one."""
from __future__ import annotations

import math
import random
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest

from normgen.host.exact import rnd_even
from normgen.host.fold import FoldError, fold_batchnorm, fold_constants
from normgen.host.fold_rne import (_first_in_window, _window_hits, choose_nearest_even_frac,
                                   nearest_even_frac_limit, require_nearest_even, verify_nearest_even)
from normgen.hw.config import MAX_ARITH_WIDTH, CoreConfig, FixedFormat
from normgen.sim.reference import batchnorm_bounds


# ---- helpers ------------------------------------------------------------------------------------
def _config(fmt_in, fmt_out, eps, g, b, m, v) -> CoreConfig:
    return CoreConfig(norm="batchnorm", features=len(g), in_format=fmt_in, out_format=fmt_out, eps=eps,
                      gamma=np.array(g), beta=np.array(b), mean=np.array(m), var=np.array(v))


def _params(cfg):
    return cfg.gamma, cfg.beta, cfg.mean, cfg.var


def _fold(cfg, fa):
    folded = [fold_constants(cfg.in_format.frac_bits, fa, cfg.eps, *p) for p in zip(*_params(cfg))]
    return [a for a, _ in folded], [b for _, b in folded]


def _inputs(cfg):
    return np.arange(cfg.in_format.min_int, cfg.in_format.max_int + 1, dtype=np.int64)


def _datapath(cfg, fa, scale, shift):
    """``saturate(rnd_even(x*A - B, fa - F_out))`` for every input of every channel: (C, 2**W)."""
    x = _inputs(cfg)
    out = cfg.out_format
    rows = [rnd_even(x * np.int64(a) - np.int64(b), fa - out.frac_bits) for a, b in zip(scale, shift)]
    return np.clip(np.array(rows), out.min_int, out.max_int)


def _reference_all(cfg):
    """``batchnorm_bounds(...).rne`` of every input of every channel: (C, 2**W)."""
    x = _inputs(cfg).tolist()
    return np.array([[batchnorm_bounds(cfg, c, xi).rne for xi in x] for c in range(cfg.features)])


def _brute_mismatches(cfg, hardware, exact):
    x0 = cfg.in_format.min_int
    return {(int(c), int(i) + x0, int(hardware[c, i]), int(exact[c, i]))
            for c, i in zip(*np.nonzero(hardware != exact))}


def _as_set(mismatches):
    return {(m.channel, m.x, m.hardware, m.exact) for m in mismatches}


def _verify(cfg, fa, scale, shift, **kw):
    return verify_nearest_even(cfg.in_format, cfg.out_format, fa, scale, shift, *_params(cfg), cfg.eps, **kw)


def _choose(cfg, fa_min=None):
    return choose_nearest_even_frac(cfg.in_format, cfg.out_format, cfg.eps, *_params(cfg),
                                    cfg.a_frac if fa_min is None else fa_min)


# ---- the exact helpers ------------------------------------------------------------------------
def test_rnd_even_on_ints_and_int64_arrays():
    values = np.arange(-300, 300, dtype=np.int64)
    for shift in range(-3, 9):
        want = [round(Fraction(int(v), 2 ** shift)) if shift > 0 else int(v) << -shift for v in values]
        got = rnd_even(values, shift)
        assert got.dtype == np.int64 and got.tolist() == want
        assert [rnd_even(int(v), shift) for v in values] == want
    big = np.array([2 ** 62 - 1, -2 ** 62, -(2 ** 62) - 2 ** 40], dtype=np.int64)
    assert rnd_even(big, 40).tolist() == [round(Fraction(int(v), 2 ** 40)) for v in big]


def test_window_search_matches_brute_force():
    rng = random.Random(7)
    for _ in range(3000):
        m = rng.randint(1, 200)
        a, low = rng.randint(0, 500), rng.randint(0, m - 1)
        high = rng.randint(low, m - 1)
        want = next((t for t in range(2 * m + 2) if low <= a * t % m <= high), None)
        assert _first_in_window(a, m, low, high) == want
    for _ in range(1000):
        m = rng.randint(1, 150)
        a, c, width = rng.randint(-300, 300), rng.randint(-500, 500), rng.randint(0, m)
        lo = rng.randint(-200, 200)
        hi = lo + rng.randint(-2, 300)
        assert list(_window_hits(a % m, c % m, m, width, lo, hi)) == \
            [x for x in range(lo, hi + 1) if (a * x + c) % m <= width]


# ---- small formats: every input, every precision ---------------------------------------------
def _small_channels(fmt_lsb_out: float, rng):
    """Random channels, then channels with exact ties and near ties on the output grid."""
    half = fmt_lsb_out / 2
    g = list(rng.uniform(-2, 2, 6)) + [0.75, -1.0, 0.0, 0.0, 0.75, 0.75, -0.5]
    b = list(rng.uniform(-1, 1, 6)) + [half, 0.0, 3 * half, 3 * half + 2.0 ** -40, half - 2.0 ** -44, half, -half]
    m = list(rng.uniform(-1, 1, 6)) + [0.125, -0.25, 0.5, -0.5, 0.125, 0.125 + 2.0 ** -45, 0.375]
    v = list(rng.uniform(0.05, 4, 6)) + [0.25, 4.0, 1.0, 1.0, 0.25, 0.25, 0.25]
    return g, b, m, v


def _rational_value(cfg, c, x):
    """``Y * 2**F_out`` as an exact fraction when ``var + eps`` is a rational square, else None."""
    d = Fraction(float(cfg.var[c])) + Fraction(float(cfg.eps))
    rn, rd = math.isqrt(d.numerator), math.isqrt(d.denominator)
    if rn * rn != d.numerator or rd * rd != d.denominator:
        return None
    g, b, m = (Fraction(float(p[c])) for p in (cfg.gamma, cfg.beta, cfg.mean))
    y = g * (Fraction(x, 1 << cfg.in_format.frac_bits) - m) / Fraction(rn, rd) + b
    return y * 2 ** cfg.out_format.frac_bits


@pytest.mark.parametrize("fmt_in, fmt_out, eps", [("s3.5", "s3.5", 0.0), ("s2.6", "s2.6", 2.0 ** -8)])
def test_small_formats_exhaustive_against_reference(fmt_in, fmt_out, eps):
    lsb = FixedFormat.parse(fmt_out).lsb
    g, b, m, v = _small_channels(lsb, np.random.default_rng(11))
    v = v[:6] + [value - eps for value in v[6:]]            # var + eps a perfect square, eps included
    cfg = _config(fmt_in, fmt_out, eps, g, b, m, v)
    exact = _reference_all(cfg)
    # the adversarial channels do hold exact ties
    ties = [(c, x) for c in range(6, cfg.features) for x in _inputs(cfg).tolist()
            if (value := _rational_value(cfg, c, x)) is not None and value.denominator == 2]
    assert len({c for c, _ in ties}) >= 4 and len(ties) > 200
    f_out = cfg.out_format.frac_bits
    fa_ne = _choose(cfg)
    assert fa_ne >= cfg.a_frac
    passing = []
    for fa in range(f_out + 1, fa_ne + 3):
        scale, shift = _fold(cfg, fa)
        brute = _brute_mismatches(cfg, _datapath(cfg, fa, scale, shift), exact)
        assert _as_set(_verify(cfg, fa, scale, shift)) == brute, f"FA = {fa}"
        first = _verify(cfg, fa, scale, shift, first=True)
        assert len(first) == (1 if brute else 0) and _as_set(first) <= brute
        if not brute:
            passing.append(fa)
    # the checker did fail (coarse precisions); the chosen FA is the first that passes from fa_min
    assert passing and passing[0] > f_out + 1
    assert fa_ne == min(fa for fa in passing if fa >= cfg.a_frac)
    np.testing.assert_array_equal(_datapath(cfg, fa_ne, *_fold(cfg, fa_ne)), exact)
    x0 = cfg.in_format.min_int
    for c, x in ties:                                          # ties went to the even neighbour
        assert exact[c, x - x0] % 2 == 0 or exact[c, x - x0] in (cfg.out_format.min_int, cfg.out_format.max_int)


@pytest.mark.parametrize("params, fa_min, chosen, failing_above", [
    # passes at FA 8..14, fails at 15 (the faithful FA), passes from 16 on
    ((-0.3817926407138872, -0.6029739109814893, -0.8184939087617562, 2.34231292464806), 6, 8, 15),
    ((-0.3817926407138872, -0.6029739109814893, -0.8184939087617562, 2.34231292464806), 15, 16, None),
    # passes at 19, fails at 20, passes from 21 on
    ((-0.964541627316271, -0.5166485718113101, 0.7762366413183597, 0.9421842422484313), 15, 19, 20),
])
def test_first_precision_that_verifies_scanning_upward(params, fa_min, chosen, failing_above):
    """Correct rounding at one FA does not imply it at FA + 1: the answer is the first that verifies."""
    cfg = _config("s3.5", "s3.5", 0.0, *([p] for p in params))
    exact = _reference_all(cfg)
    outcome = {fa: not _brute_mismatches(cfg, _datapath(cfg, fa, *_fold(cfg, fa)), exact)
               for fa in range(fa_min, max(chosen, failing_above or 0) + 3)}
    assert _choose(cfg, fa_min) == chosen == min(fa for fa, ok in outcome.items() if ok)
    if failing_above is not None:
        assert not outcome[failing_above] and _verify(cfg, failing_above, *_fold(cfg, failing_above))


def test_checker_reports_a_perturbed_scale():
    rng = np.random.default_rng(3)
    cfg = _config("s3.5", "s3.5", 0.0, *_small_channels(2.0 ** -5, rng))
    fa = _choose(cfg)
    scale, shift = _fold(cfg, fa)
    k = fa - cfg.out_format.frac_bits
    scale[2] += 1 << (k - cfg.in_format.width + 2)        # half an output LSB at the largest |x|
    shift[8] += 1                                            # one unit of 2**-FA on an exact tie (γ = 0)
    found = _verify(cfg, fa, scale, shift)
    assert {mm.channel for mm in found} == {2, 8}
    for mm in found:
        bounds = batchnorm_bounds(cfg, mm.channel, mm.x)
        assert mm.exact == bounds.rne != mm.hardware
    assert _as_set(found) == _brute_mismatches(cfg, _datapath(cfg, fa, scale, shift), _reference_all(cfg))


# ---- a 16-bit format ---------------------------------------------------------------------------
def _reference_16bit(cfg, c):
    """``round_half_even(Y*2**F_out)`` saturated for every input: float64 decides the inputs whose
    value lies more than 2**-20 LSB from a rounding boundary (float64's error here is below
    2**-30 LSB), :func:`batchnorm_bounds` the others and a random sample of the rest."""
    x = _inputs(cfg)
    g, b, m, v = (float(p[c]) for p in _params(cfg))
    scaled = (g * (np.ldexp(x.astype(np.float64), -cfg.in_format.frac_bits) - m) / np.sqrt(v + cfg.eps) + b) \
        * 2.0 ** cfg.out_format.frac_bits
    assert np.abs(scaled).max() < 2 ** 20
    near = np.abs(scaled - np.floor(scaled) - 0.5) <= 2.0 ** -20
    rounded = np.clip(np.floor(scaled + 0.5), cfg.out_format.min_int, cfg.out_format.max_int).astype(np.int64)
    sample = np.random.default_rng(c).choice(x.size, 300, replace=False)
    for i in sample:
        if not near[i]:
            assert batchnorm_bounds(cfg, c, int(x[i])).rne == rounded[i]
    for i in np.flatnonzero(near):
        rounded[i] = batchnorm_bounds(cfg, c, int(x[i])).rne
    return rounded, int(near.sum())


@lru_cache(maxsize=None)
def _config_16bit():
    rng = np.random.default_rng(5)
    half = 2.0 ** -13
    # var + eps = 1/4.  0, 1: random; 2: ties where x = 64 (mod 128) (s = 1 + 2**-7); 3: γ < 0 and
    # β on a half LSB: ties where x = 0 (mod 512) (s = -(1/2 + 2**-9)); 4: 2**-38 LSB above the ties of 2
    g = [*rng.uniform(0.5, 2, 2), 0.5 + 2.0 ** -8, -(0.25 + 2.0 ** -10), 0.5 + 2.0 ** -8]
    b = [*rng.uniform(-1, 1, 2), 0.0, half, 2.0 ** -50]
    m = [*rng.uniform(-1, 1, 2), 0.0, 0.0, 0.0]
    eps = 2.0 ** -16
    v = [*rng.uniform(0.1, 4, 2), 0.25 - eps, 0.25 - eps, 0.25 - eps]
    return _config("s4.12", "s4.12", eps, g, b, m, v)


def test_16bit_every_input_against_reference():
    cfg = _config_16bit()
    fa_ne = _choose(cfg)
    scale, shift = _fold(cfg, fa_ne)
    assert _verify(cfg, fa_ne, scale, shift) == []
    hardware = _datapath(cfg, fa_ne, scale, shift)
    fa0 = cfg.a_frac
    coarse = _datapath(cfg, fa0, cfg.scale_int, cfg.shift_int)
    found = _as_set(_verify(cfg, fa0, cfg.scale_int, cfg.shift_int))
    ties = 0
    for c in range(cfg.features):
        exact, near = _reference_16bit(cfg, c)
        ties += near
        np.testing.assert_array_equal(hardware[c], exact)
        assert {mm[1:] for mm in found if mm[0] == c} == {mm[1:] for mm in
                                                           _brute_mismatches(cfg, coarse[c:c + 1], exact[None])}
    assert ties > 1000                      # the tie channels did hit rounding boundaries
    for c, count in ((2, 512), (3, 128)):   # exact ties, all at multiples of 64
        assert sum(_rational_value(cfg, c, x).denominator == 2 for x in _inputs(cfg)[::64].tolist()) == count
    assert found                            # the faithful precision rounds some inputs wrongly
    print(f"16-bit: faithful FA {fa0}, nearest-even FA {fa_ne}, {len(found)} inputs wrong at FA {fa0}")


# ---- a 30-bit input: proved without enumerating it ------------------------------------------
def test_wide_input_is_proved_analytically():
    # 0: s = 1, mean and beta dyadic: exact constants; 1: generic
    cfg = _config("s16.14", "s8.8", 0.0, [0.5, 1.3], [0.25, 0.1], [0.5, -0.3], [0.25, 0.7])
    limit = nearest_even_frac_limit(cfg.in_format, cfg.out_format, cfg.eps, *_params(cfg))
    scale, shift = _fold(cfg, limit)
    g, b, m, v = _params(cfg)
    assert verify_nearest_even(cfg.in_format, cfg.out_format, cfg.a_frac, cfg.scale_int[:1], cfg.shift_int[:1],
                               g[:1], b[:1], m[:1], v[:1], cfg.eps) == []
    found = _verify(cfg, limit, scale, shift)                  # 3 of the 2**30 inputs
    assert found and {mm.channel for mm in found} == {1}
    assert len(_verify(cfg, limit, scale, shift, limit=2)) == 2
    k = limit - cfg.out_format.frac_bits
    for mm in found:                                           # the datapath and the reference agree
        u = mm.x * scale[1] - shift[1]
        assert min(max(rnd_even(u, k), cfg.out_format.min_int), cfg.out_format.max_int) == mm.hardware
        assert batchnorm_bounds(cfg, 1, mm.x).rne == mm.exact != mm.hardware
    with pytest.raises(FoldError, match=r"^channel 1: no precision FA in 40\.\.\d+ .* nearer to a rounding boundary"):
        _choose(cfg)


def test_too_many_candidates_is_an_error(monkeypatch):
    import normgen.host.fold_rne as fold_rne
    monkeypatch.setattr(fold_rne, "_DECISIONS", 20)
    cfg = _config_16bit()
    with pytest.raises(FoldError, match=r"^channel 0: more than 20 inputs of in_format s4\.12 lie within"):
        _verify(cfg, cfg.a_frac, cfg.scale_int, cfg.shift_int)
    # the search goes on past a precision it cannot decide: exact constants need no decision
    dyadic = _config("s4.12", "s4.12", 0.0, [0.75], [2.0 ** -13], [0.125], [0.25])
    fa = _choose(dyadic, 20)
    assert _verify(dyadic, fa, *_fold(dyadic, fa)) == []


# ---- errors -----------------------------------------------------------------------------------
def test_impossible_channel_is_named():
    """var = 9/4: s = 2/3 is no dyadic, so A never equals it; ties of x = 0 (mod 3) all round
    down to even while x*A - B drifts to one side: no precision within 63 bits can round them."""
    g, b, m, v = [1.0, 0.5, 1.0, -1.5], [0.0, 0.25, 2.0 ** -6, 0.0], [0.0, 0.25, 0.0, 0.5], [1.0, 0.25, 2.25, 1.0]
    cfg = _config("s3.5", "s3.5", 0.0, g, b, m, v)
    with pytest.raises(FoldError, match=r"^channel 2: no precision FA .*exact tie"):
        _choose(cfg)
    limit = nearest_even_frac_limit(cfg.in_format, cfg.out_format, cfg.eps, *_params(cfg))
    scale, shift = _fold(cfg, limit)
    assert cfg.in_format.width + max(abs(a) for a in scale).bit_length() + 1 <= MAX_ARITH_WIDTH
    bigger = _fold(cfg, limit + 1)
    assert (cfg.in_format.width + max(abs(a) for a in bigger[0]).bit_length() + 1 > MAX_ARITH_WIDTH
            or max(abs(b) for b in bigger[1]).bit_length() + 1 > MAX_ARITH_WIDTH)
    bad = _verify(cfg, limit, scale, shift)
    assert {mm.channel for mm in bad} == {2} and all(mm.tie for mm in bad)
    for mm in bad:
        assert batchnorm_bounds(cfg, 2, mm.x).rne == mm.exact != mm.hardware


def test_runtime_load_refused_with_the_input():
    cfg = _config_16bit()
    gamma, beta, mean, var = (np.array(p) for p in _params(cfg))
    # the core's own (faithful) precision: some input rounds wrongly
    with pytest.raises(FoldError, match=r"^channel \d+: x = -?\d+ would round to -?\d+ instead of -?\d+.* "
                                        rf"with this core's precision \(FA = {cfg.a_frac}\); generate the core"):
        fold_batchnorm(cfg, gamma, beta, mean, var, nearest_even=True)
    try:
        require_nearest_even(cfg.in_format, cfg.out_format, cfg.a_frac, cfg.scale_int, cfg.shift_int,
                             gamma, beta, mean, var, cfg.eps)
    except FoldError as exc:
        words = str(exc).split()
        c, x, y, want = int(words[1].rstrip(":")), int(words[4]), int(words[8]), int(words[11])
        assert batchnorm_bounds(cfg, c, x).rne == want != y
    # parameters that the core rounds correctly load (dyadic s and s*mean - beta)
    easy = (np.full(5, 0.5), np.full(5, 0.25), np.full(5, 0.125), np.full(5, 0.25 - cfg.eps))
    scale, shift = fold_batchnorm(cfg, *easy, nearest_even=True)
    assert scale.tolist() == [1 << (cfg.a_frac - 12)] * 5
    # without the flag (a faithful core) the same load that failed above passes
    fold_batchnorm(cfg, gamma, beta, mean, var)
    with pytest.raises(ValueError, match="must exceed"):
        verify_nearest_even("s3.5", "s3.5", 5, [1], [0], [1.0], [0.0], [0.0], [1.0], 0.0)


def test_width_report_runs(capsys):
    from normgen.host.fold_rne import main
    main(["--channels", "3", "--in-format", "s3.5", "--out-format", "s3.5"])
    out = capsys.readouterr().out
    assert "faithful FA 15" in out and "nearest-even FA" in out

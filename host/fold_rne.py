"""Correctly rounded BatchNorm (``nearest-even``): the precision of the folded constants, chosen
and proved at fold time.

In the ``nearest-even`` mode a BatchNorm (inference) core computes, per element of channel ``c``,
with ONE rounding::

    y = saturate(rnd_even(x*A_c - B_c, FA - F_out))

where ``A_c``, ``B_c`` are the folded constants of :mod:`normgen.host.fold` at ``FA`` fraction
bits and :func:`normgen.host.exact.rnd_even` rounds half to even.  The promise: for every input
integer ``x`` of the whole ``in_format`` range and every channel, ``y`` equals
``round_half_even(Y * 2**F_out)`` saturated to the output range, ``Y = gamma*(x - mean)/sqrt(var +
eps) + beta`` the exact real result of the float parameters (exact ties included).  Faithful
precision is not enough for that (a real ``Y`` can lie arbitrarily close to a rounding boundary),
so :func:`choose_nearest_even_frac` searches ``FA`` upward and :func:`verify_nearest_even` proves
each candidate.

The proof (:func:`verify_nearest_even`)
---------------------------------------
Let ``alpha = s * 2**(FA - F_in)`` and ``beta' = (s*mean - beta) * 2**FA`` (``s = gamma/sqrt(var +
eps)``) be the exact reals that ``A`` and ``B`` approximate, ``T(x) = alpha*x - beta' = Y * 2**FA``
and ``u(x) = x*A - B``.  Then ``|u - T| <= |x|*eA + eB`` with ``eA >= |A - alpha|`` and ``eB >= |B -
beta'|`` decided exactly (``1/2 + 2**-16`` for the fold's own rounding; any integers ``A``, ``B``
are accepted, the bound follows them; exact constants, ``A = alpha`` and ``B = beta'``, prove the
channel at once).  The boundaries of ``rnd_even(., k)``, ``k = FA - F_out``, are
the odd multiples of ``2**(k-1)``.  If none lies within ``|x|*eA + eB`` of ``u``, then ``u`` and
``T`` lie strictly inside the same cell and round, and saturate, alike.  Otherwise ``x`` is a
*candidate* and is decided exactly: the sign of ``T - b`` for a boundary ``b`` is the sign of
``p*sqrt(dd) - q*sqrt(dn)`` with integers ``p``, ``q``, ``dn``, ``dd`` from the exact rationals of
the floats, decided by squaring with the signs handled.  No float and no tolerance takes part.

The candidates are found without enumerating the input range: ``u`` is linear in ``x``, so "some
boundary within ``W`` of ``u``" reads ``(A*x + c) mod 2**k <= 2*W``, and the next ``x`` that
satisfies it is found in ``O(k)`` integer steps by a Euclid-like recursion
(:func:`_first_in_window`).  The input range is first narrowed to the ``x`` whose ``u`` is not
beyond the outermost boundaries by more than the largest window (elsewhere ``u`` and ``T`` both
round past the output range and saturate alike), then cut by ``|x|`` (its top octaves, and the
rest) so that ``W`` follows ``|x|``.  The cost is thus a few hundred integer operations per channel
plus one exact decision per candidate (about ``sum over x of 2*W/2**k``: a handful at a precision
that verifies), whatever the width of the input format.  A channel has at most ``2**20``
candidates decided one by one (about 5 s; every input of a format up to 20 bits wide): beyond,
:class:`~normgen.host.fold.FoldError` says so.  Wider inputs reach that only when ``s`` is a short
dyadic fraction (``var + eps`` a square, dyadic ``gamma``) that the ``FA`` at hand does not fold
exactly, which puts whole residue classes of ``x`` next to the boundaries, or when every mismatch
of a far too coarse ``FA`` is asked for (``limit`` bounds that).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from .exact import floor_signed_sqrt_plus, rnd_even
from .fold import FoldError, fold_constants

__all__ = ["Mismatch", "verify_nearest_even", "choose_nearest_even_frac", "require_nearest_even",
           "nearest_even_frac_limit"]

if TYPE_CHECKING:
    from normgen.hw.config import FixedFormat

#: The bounds eA, eB of the constants' errors are decided to 2**-_ERR_BITS.
_ERR_BITS = 16

#: At most this many candidates of one channel are decided one by one (module docstring).
_DECISIONS = 1 << 20


class _Undecided(Exception):
    def __init__(self, channel: int, fa: int, in_format: FixedFormat):
        super().__init__(
            f"channel {channel}: more than {_DECISIONS} inputs of in_format {in_format} lie within the "
            f"folded constants' error of a rounding boundary at FA = {fa}, too many to decide one by one "
            f"(an input format of at most 20 bits never has that many)")


@dataclass(frozen=True)
class Mismatch:
    """An input of ``channel`` that the folded constants round wrongly."""

    channel: int
    x: int            # the input integer
    hardware: int     # saturate(rnd_even(x*A - B, FA - F_out))
    exact: int        # round_half_even(Y * 2**F_out), saturated
    tie: bool         # Y * 2**F_out is exactly an integer plus 1/2

    def __str__(self):
        tie = " (an exact tie)" if self.tie else ""
        return f"channel {self.channel}: x = {self.x} rounds to {self.hardware} instead of {self.exact}{tie}"


# ---- exact arithmetic -----------------------------------------------------------------------------
def _first_in_window(a: int, m: int, low: int, high: int):
    """The smallest ``t >= 0`` with ``low <= (a*t) % m <= high``, or ``None``;
    ``0 <= low <= high < m``.  ``O(log m)`` steps: the modulus at least halves every other step."""
    pending = []                   # (m, a, low) of each step that waits for its inner y
    while True:
        if low == 0:
            t = 0
            break
        a %= m
        if a == 0:
            return None
        if 2 * a > m:              # (m - a)*t = -(a*t) mod m, and 0 is outside [low, high]
            a, low, high = m - a, m - high, m - low
        t = -(-low // a)
        if a * t <= high:          # a multiple of a itself (no wrap) lands in the window
            break
        # [low, high] holds no multiple of a: a*t - m*y in [low, high] for the smallest y >= 0
        # with (-m*y) mod a in [low mod a, high mod a]; then t = ceil((low + m*y)/a).
        pending.append((m, a, low))
        a, m, low, high = (-m) % a, a, low % a, high % a
    for m, a, low in reversed(pending):
        t = -(-(low + m * t) // a)
    return t


def _window_hits(a: int, c: int, m: int, width: int, lo: int, hi: int):
    """The ``x`` in ``[lo, hi]`` with ``(a*x + c) % m <= width``, ascending."""
    if width + 1 >= m:
        yield from range(lo, hi + 1)
        return
    x = lo
    while x <= hi:
        offset = (a * x + c) % m
        low, high = (-offset) % m, (width - offset) % m
        t = 0 if low == 0 or low > high else _first_in_window(a, m, low, high)
        if t is None or x + t > hi:
            return
        yield x + t
        x += t + 1


def _sign(value) -> int:
    return (value > 0) - (value < 0)


class _ExactChannel:
    """``sign(T(x) - b)`` exactly, ``T(x) = Y(x) * 2**FA``, for integers ``x`` and ``b``."""

    def __init__(self, in_frac: int, fa: int, gamma, beta, mean, var, eps):
        g, b, m, v, e = (Fraction(float(value)) for value in (gamma, beta, mean, var, eps))
        d = v + e
        if d <= 0:
            raise FoldError("var + eps must be > 0")
        self.g, self.b, self.m, self.d = g, b, m, d
        gn, gd, mn, md, bn, bd = g.numerator, g.denominator, m.numerator, m.denominator, b.numerator, b.denominator
        # T - b' = [gn*(x*md - mn*2**Fi)*2**FA/(gd*md*2**Fi)] * sqrt(dd)/sqrt(dn) - (b'*bd - bn*2**FA)/bd,
        # times gd*md*2**Fi*bd*sqrt(dn) > 0:  p*sqrt(dd) - q*sqrt(dn)  with
        self.c1 = gn * md * bd << fa                    # p = c1*x - c0
        self.c0 = gn * mn * bd << (fa + in_frac)
        self.q1 = bd * gd * md << in_frac               # q = q1*b' - q0
        self.q0 = bn * gd * md << (fa + in_frac)
        self.dn, self.dd = d.numerator, d.denominator

    def sign_minus(self, x: int, boundary: int) -> int:
        p = self.c1 * x - self.c0
        q = self.q1 * boundary - self.q0
        if p >= 0 >= q:
            return 0 if p == q == 0 else 1
        if p <= 0 <= q:
            return -1
        diff = _sign(p * p * self.dd - q * q * self.dn)
        return diff if p > 0 else -diff

    def rne(self, x: int, k: int, guess: int) -> tuple[int, bool]:
        """``(round_half_even(T(x) / 2**k), tie)``, searched from ``guess``."""
        half = 1 << (k - 1)
        n = guess
        while True:
            below = self.sign_minus(x, (2 * n - 1) * half)
            if below < 0:
                n -= 1
                continue
            above = self.sign_minus(x, (2 * n + 1) * half)
            if above > 0:
                n += 1
                continue
            if below == 0 and n % 2:
                return n - 1, True
            if above == 0 and n % 2:
                return n + 1, True
            return n, below == 0 or above == 0


def _error_bounds(in_frac: int, fa: int, exact: _ExactChannel, scale: int, shift: int) -> tuple[int, int]:
    """``(eA, eB)`` in units of ``2**-_ERR_BITS`` with ``|A - alpha| <= eA``, ``|B - beta'| <= eB``."""
    g, b, m, d, t = exact.g, exact.b, exact.m, exact.d, _ERR_BITS
    sg = -1 if g < 0 else 1
    sgm = -1 if g * m < 0 else 1
    # alpha*2**t in [fa_t, fa_t + 1], beta'*2**t in [fb_t, fb_t + 1] (equal to the floor when exact)
    fa_t, a_exact = floor_signed_sqrt_plus(sg, g * g * Fraction(4) ** (fa - in_frac + t) / d, Fraction(0))
    fb_t, b_exact = floor_signed_sqrt_plus(sgm, g * g * m * m * Fraction(4) ** (fa + t) / d,
                                           -b * Fraction(2) ** (fa + t))
    e_a = abs((scale << t) - fa_t) if a_exact else max(abs((scale << t) - fa_t), abs((scale << t) - fa_t - 1))
    e_b = abs((shift << t) - fb_t) if b_exact else max(abs((shift << t) - fb_t), abs((shift << t) - fb_t - 1))
    return e_a, e_b


def _pieces(lo: int, hi: int, octaves: int = 5):
    """``[lo, hi]`` cut by ``|x|``: the ``octaves`` top octaves ``2**(j-1) <= |x| < 2**j`` of each
    sign, and one piece for all smaller ``|x|`` (their windows are at most 1/16 of the top's)."""
    top = max(hi, -lo).bit_length()
    inner = max(0, top - octaves)
    core = (1 << inner) - 1
    if max(lo, -core) <= min(hi, core):
        yield max(lo, -core), min(hi, core)
    for j in range(inner + 1, top + 1):
        a, b = 1 << (j - 1), (1 << j) - 1
        if a <= hi and b >= lo:
            yield max(a, lo), min(b, hi)
        if -a >= lo and -b <= hi:
            yield max(-b, lo), min(-a, hi)


def _verify_channel(channel: int, in_format: FixedFormat, out_format: FixedFormat, fa: int,
                    scale: int, shift: int, params, eps, limit: int | None) -> list[Mismatch]:
    k = fa - out_format.frac_bits
    exact = _ExactChannel(in_format.frac_bits, fa, *params, eps)
    e_a, e_b = _error_bounds(in_format.frac_bits, fa, exact, scale, shift)
    if e_a == e_b == 0:                 # A = alpha and B = beta' exactly: u = T for every x
        return []
    modulus, half = 1 << k, 1 << (k - 1)
    low, high = out_format.min_int, out_format.max_int
    # Where u is beyond the outermost boundaries by more than the largest window, u and T both
    # round past the output range and saturate alike: only x with u in [u_low, u_high] can differ.
    reach_max = ((max(-in_format.min_int, in_format.max_int) * e_a + e_b) >> _ERR_BITS) + 1
    u_low, u_high = (2 * low + 1) * half - reach_max, (2 * high - 1) * half + reach_max
    if scale == 0:
        x_lo, x_hi = (in_format.min_int, in_format.max_int) if u_low <= -shift <= u_high else (1, 0)
    else:
        ends = sorted(((u_low + shift) / Fraction(scale), (u_high + shift) / Fraction(scale)))
        x_lo, x_hi = -((-ends[0].numerator) // ends[0].denominator), ends[1].numerator // ends[1].denominator
    x_lo, x_hi = max(x_lo, in_format.min_int), min(x_hi, in_format.max_int)
    found, decisions = [], 0
    for lo, hi in (_pieces(x_lo, x_hi) if x_lo <= x_hi else ()):
        reach = (max(abs(lo), abs(hi)) * e_a + e_b) >> _ERR_BITS        # W of this piece
        # u = A*x - B within reach of a boundary h + j*2**k  <=>  (A*x - B - h + reach) mod 2**k <= 2*reach
        for x in _window_hits(scale % modulus, (reach - shift - half) % modulus, modulus, 2 * reach, lo, hi):
            u = scale * x - shift
            boundary = ((u - half) >> k << k) + half                      # the boundary at or below u
            if boundary + modulus - u < u - boundary:
                boundary += modulus                                       # the nearest boundary
            window = abs(x) * e_a + e_b                                   # |u - T| <= window * 2**-16
            if abs(u - boundary) << _ERR_BITS > window:                   # this x's own window misses
                continue
            decisions += 1
            if decisions > _DECISIONS:
                raise _Undecided(channel, fa, in_format)
            hardware = rnd_even(u, k)
            if window < half << _ERR_BITS:      # no other boundary within reach: one exact sign decides
                side = exact.sign_minus(x, boundary)
                if side == _sign(u - boundary):                           # same side, or both on it
                    continue
                upper = (boundary + half) >> k                            # the cell above the boundary
                tie = side == 0
                rounded = upper - (side < 0 or (tie and upper % 2 == 1))
            else:
                rounded, tie = exact.rne(x, k, hardware)
            hardware, rounded = min(max(hardware, low), high), min(max(rounded, low), high)
            if hardware != rounded:
                found.append(Mismatch(channel, x, hardware, rounded, tie))
                if limit is not None and len(found) >= limit:
                    return found
    return sorted(found, key=lambda mismatch: mismatch.x)


def _channel_params(gamma, beta, mean, var) -> list[tuple[float, float, float, float]]:
    arrays = [np.asarray(values, dtype=np.float64).ravel() for values in (gamma, beta, mean, var)]
    if len({a.size for a in arrays}) != 1:
        raise FoldError(f"gamma, beta, mean and var must hold one value per channel, not "
                        f"{', '.join(str(a.size) for a in arrays)}")
    for name, values in zip(("gamma", "beta", "mean", "var"), arrays):
        if not np.all(np.isfinite(values)):
            raise FoldError(f"{name} must be finite")
    return list(zip(*(a.tolist() for a in arrays)))


def verify_nearest_even(in_format, out_format, fa: int, scale, shift, gamma, beta, mean, var, eps,
                        *, first: bool = False, limit: int | None = None) -> list[Mismatch]:
    """The inputs that ``y = saturate(rnd_even(x*A - B, fa - F_out))`` rounds differently from
    ``round_half_even(Y * 2**F_out)`` saturated, over every ``x`` of ``in_format`` and every channel
    (``scale``/``shift``: the integers ``A``/``B`` per channel; ``gamma``… : the float parameters).

    An empty list is a proof that the constants round every input correctly.  Exact (module
    docstring); the cost follows the candidates, not the width of ``in_format``: listing every
    mismatch of a far too coarse ``fa`` on a wide input costs one exact decision per mismatch, so
    ``limit`` stops after that many (``first``: after one), in the order found."""
    in_format, out_format = _formats(in_format, out_format)
    if fa <= out_format.frac_bits:
        raise ValueError(f"fa = {fa} must exceed the output fraction bits ({out_format.frac_bits}): "
                         f"the datapath rounds x*A - B by fa - F_out bits")
    params = _channel_params(gamma, beta, mean, var)
    scale, shift = [int(a) for a in np.ravel(scale)], [int(b) for b in np.ravel(shift)]
    if not len(scale) == len(shift) == len(params):
        raise ValueError(f"{len(params)} channels of parameters, {len(scale)} scales, {len(shift)} shifts")
    if first:
        limit = 1
    found = []
    for channel, (a, b, p) in enumerate(zip(scale, shift, params)):
        try:
            found += _verify_channel(channel, in_format, out_format, fa, a, b, p, eps,
                                     None if limit is None else limit - len(found))
        except _Undecided as exc:
            raise FoldError(str(exc)) from None
        if limit is not None and len(found) >= limit:
            break
    return found


# The configuration module is imported where it is used: it may import this one.
def _formats(in_format, out_format):
    from normgen.hw.config import FixedFormat
    return FixedFormat.parse(in_format, param="in_format"), FixedFormat.parse(out_format, param="out_format")


def _max_width() -> int:
    """:data:`normgen.hw.config.MAX_ARITH_WIDTH`: ``x*A`` and ``B`` must fit it, sign included."""
    from normgen.hw.config import MAX_ARITH_WIDTH
    return MAX_ARITH_WIDTH


def _fits(in_format: FixedFormat, scale_max: int, shift_max: int) -> bool:
    """Whether ``x*A`` and ``B`` fit the arithmetic (the widths of :meth:`CoreConfig._check_limits`)."""
    a_width, b_width = scale_max.bit_length() + 1, shift_max.bit_length() + 1
    return in_format.width + a_width <= _max_width() and b_width <= _max_width()


def nearest_even_frac_limit(in_format, out_format, eps, gamma, beta, mean, var) -> int:
    """The largest ``FA`` whose folded constants fit the arithmetic (``x*A`` and ``B`` within
    :data:`normgen.hw.config.MAX_ARITH_WIDTH` bits, signed), at most ``F_out + 62`` (the rounding
    shift stays within ``int64``).  ``|A|`` and ``|B|`` never shrink as ``FA`` grows, so the limit
    is one number; only the channels with the largest ``|s|`` and ``|s*mean - beta|`` decide it."""
    in_format, out_format = _formats(in_format, out_format)
    params = _channel_params(gamma, beta, mean, var)
    g, b, m, v = (np.array(column, dtype=np.float64) for column in zip(*params))
    with np.errstate(all="ignore"):
        s = np.abs(g) / np.sqrt(v + eps)
        t = np.abs(g / np.sqrt(v + eps) * m - b)
    # every channel within a relative 1e-9 of the largest (float64 errs by ~1e-16)
    extremes = sorted(set(np.flatnonzero(s >= s.max() * (1 - 1e-9)).tolist())
                      | set(np.flatnonzero(t >= t.max() * (1 - 1e-9)).tolist()))

    def fits(fa):
        folded = [fold_constants(in_format.frac_bits, fa, eps, *params[c]) for c in extremes]
        return _fits(in_format, max(abs(a) for a, _ in folded), max(abs(b) for _, b in folded))

    lo, hi = out_format.frac_bits, out_format.frac_bits + 62
    if not fits(lo + 1):
        return lo
    if fits(hi):
        return hi
    lo += 1
    while hi - lo > 1:                      # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def choose_nearest_even_frac(in_format, out_format, eps, gamma, beta, mean, var, fa_min: int) -> int:
    """The smallest ``FA >= fa_min`` whose folded constants (:func:`normgen.host.fold.fold_constants`
    at that ``FA``) round every input of every channel to nearest even (:func:`verify_nearest_even`).

    ``FA`` is scanned upward one by one (correct rounding at ``FA`` does not imply it at ``FA + 1``),
    the channels that failed a lower ``FA`` tried first, up to :func:`nearest_even_frac_limit`.
    Raises :class:`FoldError` naming the channel when no ``FA`` works."""
    in_format, out_format = _formats(in_format, out_format)
    params = _channel_params(gamma, beta, mean, var)
    if not params:
        raise FoldError("no channels")
    for c, (_, _, _, v) in enumerate(params):
        if not v + eps > 0 or v < 0:
            raise FoldError(f"channel {c}: var must be >= 0 and var + eps > 0 (var = {v!r}, eps = {eps!r})")
    fa_min = max(fa_min, out_format.frac_bits + 1)
    fa_max = nearest_even_frac_limit(in_format, out_format, eps, gamma, beta, mean, var)
    if fa_max < fa_min:
        raise FoldError(f"the folded constants at FA = {fa_min} already exceed the {_max_width()}-bit "
                        f"arithmetic (x*A and B) with in_format {in_format}")
    order = list(range(len(params)))          # channels that failed before come first
    failure = None
    for fa in range(fa_min, fa_max + 1):
        folded = {}
        for position, c in enumerate(order):
            a, b = folded[c] = fold_constants(in_format.frac_bits, fa, eps, *params[c])
            try:
                found = _verify_channel(c, in_format, out_format, fa, a, b, params[c], eps, 1)
            except _Undecided as exc:
                found = [exc]
            if found:
                failure = found[0]
                order.insert(0, order.pop(position))
                break
        else:
            # fa_max guards this: |A| and |B| grow with FA
            assert _fits(in_format, max(abs(a) for a, _ in folded.values()),
                         max(abs(b) for _, b in folded.values()))
            return fa
    if isinstance(failure, _Undecided):
        raise FoldError(f"no precision FA in {fa_min}..{fa_max} is proved to round every input to nearest "
                        f"even; at FA = {fa_max}: {failure}")
    why = ("an exact tie, Y*2**F_out = n + 1/2, that x*A - B does not reproduce" if failure.tie else
           "Y*2**F_out lies nearer to a rounding boundary than the folded constants resolve")
    raise FoldError(f"channel {failure.channel}: no precision FA in {fa_min}..{fa_max} rounds every input "
                    f"to nearest even ({in_format} -> {out_format}; x*A and B must fit {_max_width()} bits): "
                    f"at FA = {fa_max}, x = {failure.x} rounds to {failure.hardware} instead of "
                    f"{failure.exact}: {why}")


def require_nearest_even(in_format, out_format, fa: int, scale, shift, gamma, beta, mean, var, eps) -> None:
    """Run-time loads into a core of fixed ``FA``: raise :class:`FoldError` naming the channel and
    the input when the constants do not round every input to nearest even."""
    found = verify_nearest_even(in_format, out_format, fa, scale, shift, gamma, beta, mean, var, eps,
                                first=True)
    if found:
        bad = found[0]
        tie = " (an exact tie)" if bad.tie else ""
        raise FoldError(f"channel {bad.channel}: x = {bad.x} would round to {bad.hardware} instead of "
                        f"{bad.exact}{tie} with this core's precision (FA = {fa}); "
                        f"generate the core with these parameters")


def main(argv=None) -> None:
    """``python -m normgen.host.fold_rne``: the precision that nearest-even costs on random BatchNorm
    channels (γ in [0.5, 2], β and mean in [-1, 1], var in [0.1, 4]), against the faithful one."""
    import argparse
    import time

    from normgen.hw.config import CoreConfig

    parser = argparse.ArgumentParser(prog="python -m normgen.host.fold_rne", description=main.__doc__)
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--in-format", default="s4.12")
    parser.add_argument("--out-format", default="s4.12")
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for channels in args.channels:
        rng = np.random.default_rng(args.seed)
        params = (rng.uniform(0.5, 2, channels), rng.uniform(-1, 1, channels),
                  rng.uniform(-1, 1, channels), rng.uniform(0.1, 4, channels))
        cfg = CoreConfig(norm="batchnorm", features=channels, in_format=args.in_format,
                         out_format=args.out_format, eps=args.eps, gamma=params[0], beta=params[1],
                         mean=params[2], var=params[3])
        fi, fo = cfg.in_format, cfg.out_format
        print(f"{channels} channels, {fi} -> {fo}: faithful FA {cfg.a_frac} (A {cfg.a_width} bits, "
              f"B {cfg.b_width}, x*A {cfg.xa_width})")
        start = time.perf_counter()
        try:
            fa = choose_nearest_even_frac(fi, fo, args.eps, *params, cfg.a_frac)
        except FoldError as exc:
            print(f"  nearest-even: {exc} ({time.perf_counter() - start:.2f} s)")
            continue
        chosen = time.perf_counter() - start
        folded = [fold_constants(fi.frac_bits, fa, args.eps, *p) for p in zip(*params)]
        scale, shift = [a for a, _ in folded], [b for _, b in folded]
        start = time.perf_counter()
        assert verify_nearest_even(fi, fo, fa, scale, shift, *params, args.eps) == []
        proved = time.perf_counter() - start
        a_width = max(abs(a) for a in scale).bit_length() + 1
        b_width = max(abs(b) for b in shift).bit_length() + 1
        print(f"  nearest-even FA {fa} (A {a_width} bits, B {b_width}, x*A {fi.width + a_width}; "
              f"limit FA {nearest_even_frac_limit(fi, fo, args.eps, *params)}): "
              f"chosen in {chosen:.2f} s, proof at FA {fa} {proved:.2f} s")


if __name__ == "__main__":
    main()

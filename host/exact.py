"""Exact rational arithmetic with square roots, shared by the BatchNorm folding and the exact
reference.  Every function decides its result with Python integers and fractions: no float takes
part, so a result is exactly what its docstring says."""
from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["floor_signed_sqrt_plus", "round_signed_sqrt", "exact_fraction", "rnd_even"]


def exact_fraction(value) -> Fraction:
    """The exact rational value of a float (or int, or Fraction)."""
    return Fraction(value)


def _floor(q: Fraction) -> int:
    return q.numerator // q.denominator


def floor_signed_sqrt_plus(sign: int, y: Fraction, r: Fraction) -> tuple[int, bool]:
    """``(floor(sign*sqrt(y) + r), exact)`` for rational ``y >= 0``, rational ``r``, sign ±1.

    ``exact`` says whether ``sign*sqrt(y) + r`` is itself an integer."""
    if y < 0:
        raise ValueError("y must be >= 0")
    root = math.isqrt(_floor(y))                       # floor(sqrt(y))
    if Fraction(root * root) == y:                     # sqrt(y) is an integer
        value = sign * root + r
        return _floor(value), value.denominator == 1
    # sqrt(y) is irrational or a non-integer rational: decide each candidate exactly.
    def at_least(k):                                   # sign*sqrt(y) + r >= k ?
        d = k - r
        if sign > 0:
            return d <= 0 or y >= d * d
        return d <= 0 and d * d >= y
    guess = (root if sign > 0 else -root - 1) + _floor(r)
    k = guess - 2
    while at_least(k + 1):
        k += 1
    while not at_least(k):
        k -= 1
    # exact iff sign*sqrt(y) + r == k, i.e. sqrt(y) rational with that value
    d = Fraction(k) - r
    exact = d * d == y and ((sign > 0 and d >= 0) or (sign < 0 and d <= 0))
    return k, exact


def round_signed_sqrt(sign: int, y: Fraction, r: Fraction = Fraction(0)) -> int:
    """``floor(sign*sqrt(y) + r + 1/2)``: round half up."""
    return floor_signed_sqrt_plus(sign, y, r + Fraction(1, 2))[0]


def rnd_even(value, shift):
    """Round half to even: the integer nearest ``value / 2**shift``, the even one on a tie, for
    ``shift > 0``; the exact ``value * 2**-shift`` for ``shift <= 0``.

    Works on Python ints and on NumPy ``int64`` arrays alike (elementwise, no overflow for
    ``shift < 63``: nothing is added to ``value``)."""
    if shift <= 0:
        return value << (-shift)
    quotient = value >> shift                          # floor(value / 2**shift)
    remainder = value - (quotient << shift)            # in [0, 2**shift)
    half = 1 << (shift - 1)
    up = (remainder > half) | ((remainder == half) & ((quotient & 1) == 1))
    return quotient + up

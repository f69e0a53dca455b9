"""The radix-4 SRT form of the reciprocal square root (``rsqrt_form="srt"``): its plan and proof.

The unit computes ``R = max{R : R*R*M <= C}`` with ``C = 2**(2T+2m-2)`` and a normalized mantissa
``M`` of ``2m`` bits (``2**(2m-2) <= M < 2**(2m)``, :mod:`normgen.hw.rsqrt`).  The SRT form
chooses ``n = ceil((T+1)/2)`` digits ``q`` of -2..2 (base 4, most significant first), so it takes
half the steps of the lookahead form, and keeps the residual in carry-save form, so no carry chain
longer than a dozen bits lies between registers.  With ``t_j = sqrt(C/M) / 4**(n-j)`` (so
``t_n = sqrt(C/M)``), ``p_j`` the result after ``j`` digits, ``e_j = t_j - p_j`` its error and
``S = sqrt(C*M)``, every quantity is an integer::

    K_j = 4**(n-j),  r_j = C/K_j - p_j**2 * M * K_j = e_j * (u_j + S),  u_j = p_j * M * K_j,
    mk_j = M * K_(j+1)
    r_(j+1) = 4*r_j - 2*q*u_j - q*q*mk_j,   u_(j+1) = u_j + q*mk_j,   p_(j+1) = 4*p_j + q

Invariant: ``|e_j| <= 2/3`` from digit ``J`` on.  Then ``e_(j+1) = 4*e_j - q`` stays inside if
``q`` is within 2/3 of ``4*e_j = 4*r_j / (u_j + S)``, and ``u_j + S`` is within a few percent of
``2S`` once ``t_j >= 8``, so the digit is chosen by comparing an estimate of ``4*r_j`` with the
thresholds ``(2k - 1) * S`` (k = -1..2), from ``J`` on (:func:`selection_holds`).

* The first ``J`` digits come from a table indexed by ``M``'s leading ``b`` bits: the digits of
  a ``p_J`` within 2/3 of ``t_J`` over the whole index's range of ``M``, and ``S`` to a few bits
  (``s_hat``, in units of the estimate), so the thresholds are fixed for the whole run.  The
  recurrence takes those digits as it takes chosen ones (no multiplier sets up ``r_J``).
* The estimate adds the leading bits of the four words that form ``4*r_(j+1)`` (the residual's
  two, ``-8*q*u_j`` and ``-4*q*q*mk_j``), each rounded down at weight ``2**sh``; the last two,
  less the threshold, are added up a step ahead (``w``, from ``u_j``'s leading bits formed
  without the carry from below), and so are the residual's two (as its words are formed), so
  the digit's own step adds two words: one carry chain of a dozen bits.  The estimate lies in ``(4*r - 5*2**sh, 4*r + 2**sh)``.
  It is formed for every digit the current step may apply, beside the step, and the step's digit
  picks one (speculative selection): the digit register drives only multiplexers.
* After ``n`` digits ``|t_n - p_n| <= 2/3``, so ``p_n`` is ``R`` or ``R + 1``; the sign of
  ``r_n = C - p_n**2 * M`` tells which.

:func:`srt_plan` picks ``J``, ``b`` and ``sh`` for a configuration and proves the choice with
exact rational arithmetic; :func:`srt_model` is the integer model of the hardware, word for word.
"""
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
import math

__all__ = ["SrtPlan", "srt_plan", "srt_model", "selection_holds", "signed_digits"]

RHO = Fraction(2, 3)        # the bound on |e_j|: digits -2..2 in base 4 allow up to 2/3
#: The estimate ``E`` of ``4*r`` (units of ``2**sh``) lies in ``(4r - BELOW, 4r + ABOVE)``
#: (:func:`estimates`: four words each rounded down, ``u`` itself known only to a unit)
BELOW, ABOVE = 5, 1


@dataclass(frozen=True)
class SrtPlan:
    T: int
    m: int
    n: int              # digits
    J: int              # digits taken from the table
    b: int              # table index: M's leading b bits
    sh: int             # the estimate's unit is 2**sh (on the scale of 4*r)
    ebits: int          # the estimate's width (two's complement)
    width: int          # the residual words' width (modulo 2**width)
    u_width: int
    table: tuple        # index -> (digits (J, most significant first), s_hat); None below 2**(b-2)

    @property
    def r0(self) -> int:
        return 1 << (2 * self.T + 2 * self.m - 2 - 2 * self.n)

    # Where the estimate's words are taken (their lowest bit), for |q| = a:
    @property
    def r_lo(self) -> int:
        """the residual's words: ``16*r >> sh``"""
        return self.sh - 4

    def u_lo(self, a: int) -> int:
        """``8*a*u >> sh``"""
        return self.sh - 3 - int(a == 2)

    def mk_lo(self, a: int) -> int:
        """``4*a*a*mk >> sh``"""
        return self.sh - 2 - 2 * int(a == 2)

    def nthr(self, s_hat: int) -> list:
        """The thresholds ``(2k - 1)*s_hat`` (k = -1..2) negated, in ``ebits`` bits."""
        return [(-(2 * k - 3) * s_hat) % (1 << self.ebits) for k in range(4)]


def signed_digits(p: int, count: int) -> tuple:
    """``p`` as ``count`` base-4 digits of -2..2, most significant first."""
    digits = []
    for _ in range(count):
        d = p % 4
        if d == 3:
            d = -1
        digits.append(d)
        p = (p - d) // 4
    if p != 0:
        raise ValueError("does not fit")
    return tuple(reversed(digits))


def _sqrt_bounds(x: Fraction, scale: int = 1 << 40) -> tuple[Fraction, Fraction]:
    """Rational lower and upper bounds of sqrt(x)."""
    lo = Fraction(math.isqrt(x.numerator * scale * scale // x.denominator), scale)
    return lo, lo + Fraction(1, scale)


def _buckets(T, m, b):
    """Per table index (M's leading ``b`` bits): the least and the greatest M."""
    step = 1 << (2 * m - b)
    for idx in range(1 << (b - 2), 1 << b):
        yield idx, idx * step, (idx + 1) * step - 1


def selection_holds(sh: int, s_lo: int, s_hi: int, s_hat: int, t_low: Fraction) -> bool:
    """Whether the digit chosen by comparing the estimate ``E`` (``E * 2**sh`` in
    ``(X - BELOW*2**sh, X + ABOVE*2**sh)``, ``X = 4*r_j``) with ``(2k - 1) * s_hat`` is within 2/3 of ``x = 4*e_j``
    for every ``|e_j| <= 2/3``, ``S`` in ``[s_lo, s_hi]`` and ``t_j >= t_low``.

    ``X = x*S*(2 - x/(4 t_j))`` (``u_j = S*(1 - e_j/t_j)``), increasing in ``x``.  Digit ``>= k``
    must not be chosen for ``x < k - 2/3`` (there ``X < 2(k - 2/3)S``) and must be for
    ``x > k - 1/3`` (there ``X > S*(2x - x*x/(4*t_low))`` at ``x = k - 1/3``)."""
    w = Fraction(1 << sh)
    for k in (-1, 0, 1, 2):
        thr = (2 * k - 1) * s_hat
        x_hi = k - RHO
        x_max = 2 * x_hi * (s_hi if x_hi > 0 else s_lo)
        if not x_max / w + ABOVE <= thr:
            return False
        x_lo = k - 1 + RHO
        bracket = 2 * x_lo - x_lo * x_lo / (4 * t_low)
        x_min = bracket * (s_lo if bracket > 0 else s_hi)
        if not x_min / w - BELOW >= thr:
            return False
    return True


def _table_rows(T, m, J, b):
    """Per table index ``(idx, s_lo, s_hi, t_low, digits)``: a ``p_J`` within 2/3 of ``t_J``
    over the index's range of ``M`` (exact: squares compared), or None if there is none."""
    n = -(-(T + 1) // 2)
    C = 1 << (2 * T + 2 * m - 2)
    scale_j = 16 ** (n - J)
    rows = []
    for idx, m_lo, m_hi in _buckets(T, m, b):
        t2_hi, t2_lo = Fraction(C, m_lo * scale_j), Fraction(C, m_hi * scale_j)   # t_J**2
        t_lo = _sqrt_bounds(t2_lo)[0]
        t_hi = _sqrt_bounds(t2_hi)[1]
        p = round((t_lo + t_hi) / 2)
        if not (t2_hi <= (p + RHO) ** 2 and p >= RHO and t2_lo >= (p - RHO) ** 2):
            return None
        try:
            digits = signed_digits(p, J)
        except ValueError:
            return None
        if digits[0] < 0:           # (a first digit of 0..2: every p_j is non-negative)
            return None
        rows.append((idx, math.isqrt(C * m_lo), math.isqrt(C * m_hi) + 1, t_lo, digits))
    return rows


def _try_plan(T, m, J, b, sh, rows):
    n = -(-(T + 1) // 2)
    table = [None] * (1 << b)
    for idx, s_lo, s_hi, t_lo, digits in rows:
        s_hat = round(Fraction(s_lo + s_hi, 2) / (1 << sh))
        if not selection_holds(sh, s_lo, s_hi, s_hat, t_lo):
            return None
        table[idx] = (digits, s_hat)
    s_max = max(s_hi for _, _, s_hi, _, _ in rows)
    # the estimate's range: |4r| <= S*(16/3 + (8/3)**2/(4 t)) for |e| <= 2/3; thresholds <= 3*s_hat
    t_min = Fraction(4 ** J, 1 << (2 * n - T + 1))       # t_J > 4**J * 2**(T - 1 - 2n)
    x_abs = s_max * (Fraction(16, 3) + Fraction(64, 9) / (4 * t_min))
    e_abs = x_abs / (1 << sh) + BELOW + 3 * max(row[1] for row in filter(None, table))
    ebits = int(e_abs).bit_length() + 2
    width = max(T + 2 * m + 5, sh - 4 + ebits)        # (the residual's window, SrtPlan.r_lo, inside)
    return SrtPlan(T=T, m=m, n=n, J=J, b=b, sh=sh, ebits=ebits, width=width,
                   u_width=T + 2 * m + 3, table=tuple(table))


@lru_cache(maxsize=None)
def srt_plan(T: int, m: int) -> SrtPlan:
    """The plan for ``T`` and ``m``: the fewest table digits ``J`` (then the smallest table, then
    the coarsest estimate) for which every condition above holds, proven here."""
    n = -(-(T + 1) // 2)
    top = T + 2 * m                                    # S < 2**top
    for J in range(2, n):
        for b in range(4, min(2 * m, 12) + 1):
            rows = _table_rows(T, m, J, b)
            # (a table whose first digits are too coarse fails at every estimate: try the finest)
            if rows is None or _try_plan(T, m, J, b, max(4, top - 14), rows) is None:
                continue
            for sh in range(top - 3, 3, -1):
                plan = _try_plan(T, m, J, b, sh, rows)
                if plan is not None:
                    return plan
    raise ValueError(f"no radix-4 SRT plan for T={T}, m={m}")


def _window(x: int, shift: int, bits: int) -> int:
    """Bits ``shift .. shift+bits-1`` of ``x`` (``x >> shift`` modulo ``2**bits``; a negative
    shift shifts left)."""
    v = x >> shift if shift >= 0 else x << -shift
    return v & ((1 << bits) - 1)


def _signed(x: int, bits: int) -> int:
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


def thermometer(q: int) -> int:
    """A digit as the comparisons behind it: bit k is ``q >= k - 1``."""
    return sum(1 << k for k in range(4) if q >= k - 1)


def u_window(plan: SrtPlan, u: int, q: int, mk: int, lo: int) -> int:
    """``u + q*mk`` at bits ``lo..`` as the hardware forms it a step ahead: the two operands'
    windows added (the carry from below them lost), ``q*mk`` negated as ``~window``."""
    eb = plan.ebits
    part = _window(abs(q) * mk, lo, eb)
    return (_window(u, lo, eb) + (part if q > 0 else ~part if q < 0 else 0)) & ((1 << eb) - 1)


def w_terms(plan: SrtPlan, u: int, q: int, mk: int, nthr: list) -> dict:
    """The words ``w_(q',k)`` a step (applying ``q`` to ``u``, ``mk``) registers for the next one:
    ``(+-8*q'*u' >> sh) + (~(4*q'*q'*mk' >> sh)) - (2k - 1)*s_hat`` for ``q' != 0`` (``u'``,
    ``mk'`` the next step's), ``-(2k - 1)*s_hat`` for ``q' = 0``."""
    eb = plan.ebits
    mask = (1 << eb) - 1
    out = {}
    for qn in range(-2, 3):
        for k in range(4):
            if qn == 0:
                out[qn, k] = nthr[k]
                continue
            ut = u_window(plan, u, q, mk, plan.u_lo(abs(qn)))
            a = ut if qn < 0 else ~ut
            z = ~_window(mk >> 2, plan.mk_lo(abs(qn)), eb) + nthr[k]
            out[qn, k] = (a + z) & mask
    return out


def estimates(plan: SrtPlan, rs: int, rc: int, w: dict) -> dict:
    """Per digit ``q`` the step may apply, the comparisons ``E_q >= (2k - 1)*s_hat`` (k = -1..2):
    the sign of ``(16*rs >> sh) + (16*rc >> sh) + w_(q,k)`` in ``ebits`` bits."""
    eb = plan.ebits
    fs, fc = _window(rs, plan.r_lo, eb), _window(rc, plan.r_lo, eb)
    return {q: [_signed(fs + fc + w[q, k], eb) >= 0 for k in range(4)] for q in range(-2, 3)}


def digit_of(ge) -> int:
    return -2 + sum(ge)


def srt_model(plan: SrtPlan, M: int, check: bool = True) -> tuple[int, int]:
    """The hardware's recurrence for the mantissa ``M``, word for word: ``(p_n, R)``.  With
    ``check`` it asserts the proof's premises on the way (the estimate's error, ``|e_j| <= 2/3``)."""
    T, m, n, J, W = plan.T, plan.m, plan.n, plan.J, plan.width
    mask = (1 << W) - 1
    digits, s_hat = plan.table[M >> (2 * m - plan.b)]
    nthr = plan.nthr(s_hat)
    rs, rc, u, p = plan.r0, 0, 0, 0
    mk = M << (2 * (n - 1))
    q = digits[0]
    C = 1 << (2 * T + 2 * m - 2)
    w = None                                  # (the first step's w is of no use)
    for j in range(n):                        # step j applies q = q_(j+1) to state j
        ge = estimates(plan, rs, rc, w) if w is not None else None
        w = w_terms(plan, u, q, mk, nthr)
        x_true = 16 * (rs + rc) - 8 * q * u - 4 * q * q * mk    # 4 r_(j+1) (mod 2**(W+4))
        # the residual: 4rs + 4rc - 2qu - q*q*mk in two carry-save layers (the +1s of the
        # negations in the free low bits of the carry words)
        a = (~(2 * q * u) if q > 0 else (-2 * q * u)) & mask
        bb = (~(q * q * mk)) & mask if q else 0
        x, y = (4 * rs) & mask, (4 * rc) & mask
        s1 = x ^ y ^ a
        c1 = (((x & y) | (x & a) | (y & a)) << 1 | int(q > 0)) & mask
        s2 = s1 ^ c1 ^ bb
        c2 = (((s1 & c1) | (s1 & bb) | (c1 & bb)) << 1 | int(q != 0)) & mask
        rs, rc = s2, c2
        u, p = u + q * mk, 4 * p + q
        mk >>= 2
        r_true = C // 4 ** (n - j - 1) - p * p * M * 4 ** (n - j - 1)
        if check:
            assert (rs + rc - r_true) % (1 << W) == 0
            assert u == p * M * 4 ** (n - j - 1)
        if j + 1 < J:
            q = digits[j + 1]
        elif j + 1 < n:
            nq = digit_of(ge[q])
            if check:
                # the invariant, and the estimate of 4 r_(j+1) behind the chosen digit
                t = Fraction(math.isqrt(C * (1 << 60) // M), 1 << 30) / 4 ** (n - j - 1)
                assert abs(t - p) <= RHO + Fraction(1, 1 << 20), (M, j, float(t - p))
                assert (4 * r_true - x_true) % (1 << (W + 4)) == 0
                unit = 1 << plan.sh
                for k in range(4):
                    # E >= thr_k exactly when it should be, for the estimate's bounds
                    thr = (2 * k - 3) * s_hat
                    if 4 * r_true + ABOVE * unit <= thr * unit:
                        assert not ge[q][k]
                    if 4 * r_true - BELOW * unit >= thr * unit:
                        assert ge[q][k]
            q = nq
    neg = _signed(rs + rc, W) < 0
    return p, p - int(neg)

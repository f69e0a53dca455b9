"""The radix-4 SRT form of the rsqrt unit: its plan (the proof of the digit selection) and the
integer model of its hardware, against the exact specification ``R = isqrt(C // M)``."""
import math
from fractions import Fraction

import numpy as np
import pytest

from normgen.hw.config import CoreConfig
from normgen.hw.srt import RHO, _table_rows, _try_plan, selection_holds, signed_digits, srt_model, srt_plan

# (T, m) of configurations users generate: the default, the proofs' small ones, 8-bit and wide formats
PAIRS = [(25, 13), (9, 5), (10, 5), (8, 4), (14, 7), (15, 8), (20, 11), (33, 17), (40, 21)]


def spec(T, m, M):
    return math.isqrt((1 << (2 * T + 2 * m - 2)) // M)


def test_default_configuration_plan():
    cfg = CoreConfig()
    plan = srt_plan(cfg.rsqrt_bits, cfg.rsqrt_m)
    # three table digits, then eight chosen; the estimate is some dozen bits wide
    assert (plan.n, plan.J) == (11, 3) and plan.ebits <= 13


@pytest.mark.parametrize("T, m", PAIRS)
def test_plan_table_and_selection(T, m):
    """Re-check every table row from its definition (independently of the plan's own search):
    the table's p_J is within 2/3 of t_J at both ends of its range of M (t_J is monotone in M),
    its digits spell p_J, and the selection conditions hold."""
    plan = srt_plan(T, m)
    C = 1 << (2 * T + 2 * m - 2)
    step = 1 << (2 * m - plan.b)
    rows = 0
    for idx, row in enumerate(plan.table):
        if idx < 1 << (plan.b - 2):
            assert row is None
            continue
        digits, s_hat = row
        p = sum(d * 4 ** (plan.J - 1 - i) for i, d in enumerate(digits))
        assert all(-2 <= d <= 2 for d in digits)
        for M in (idx * step, (idx + 1) * step - 1):
            t2 = Fraction(C, M * 16 ** (plan.n - plan.J))
            assert (p - RHO) ** 2 <= t2 <= (p + RHO) ** 2, (idx, M)
        rows += 1
    assert rows == 3 << (plan.b - 2)


def test_plan_search_rejects_what_fails():
    """The checks can fail: too coarse an estimate, too few table digits, too few index bits."""
    T, m = 25, 13
    plan = srt_plan(T, m)
    rows = _table_rows(T, m, plan.J, plan.b)
    assert _try_plan(T, m, plan.J, plan.b, plan.sh, rows) == plan
    assert _try_plan(T, m, plan.J, plan.b, plan.sh + 2, rows) is None
    # one table digit: t_1 is in (1, 2], too small for the estimate's divisor 2S at any precision
    rows_1 = _table_rows(T, m, 1, 12)
    assert all(_try_plan(T, m, 1, 12, sh, rows_1) is None for sh in range(4, T + 2 * m - 2))
    assert _table_rows(T, m, plan.J, 3) is None
    # one row with its threshold off by a tenth fails the selection
    idx, s_lo, s_hi, t_lo, _ = rows[0]
    s_hat = round(Fraction(s_lo + s_hi, 2) / (1 << plan.sh))
    assert selection_holds(plan.sh, s_lo, s_hi, s_hat, t_lo)
    assert not selection_holds(plan.sh, s_lo, s_hi, s_hat * 11 // 10, t_lo)


def test_signed_digits():
    for p in range(0, 43):
        digits = signed_digits(p, 3)
        assert sum(d * 4 ** (2 - i) for i, d in enumerate(digits)) == p
        assert all(-2 <= d <= 2 for d in digits)
    with pytest.raises(ValueError):
        signed_digits(43, 3)


@pytest.mark.parametrize("T, m", [(9, 5), (10, 5), (8, 4), (14, 7), (15, 7)])
def test_model_every_mantissa(T, m):
    """Every mantissa of small widths: the model's result is the specification's, and its
    premises hold on the way (|e_j| <= 2/3 from digit J on, the residual words' sum)."""
    plan = srt_plan(T, m)
    for M in range(1 << (2 * m - 2), 1 << (2 * m)):
        p, r = srt_model(plan, M)
        assert r == spec(T, m, M), M
        assert p - r in (0, 1)


@pytest.mark.parametrize("T, m", [(25, 13), (20, 11), (33, 17)])
def test_model_wide_mantissas(T, m):
    """Wide mantissas: the ends and edges of every table row, powers of two, and random ones."""
    plan = srt_plan(T, m)
    rng = np.random.default_rng(3)
    lo, hi = 1 << (2 * m - 2), 1 << (2 * m)
    step = 1 << (2 * m - plan.b)
    cases = {lo, hi - 1}
    for idx in range(1 << (plan.b - 2), 1 << plan.b):
        cases |= {idx * step, idx * step + 1, (idx + 1) * step - 1, (idx + 1) * step - 2}
    # mantissas next to the boundaries of R (R*R*M = C exactly and just around it)
    C = 1 << (2 * T + 2 * m - 2)
    for R in rng.integers(1 << (T - 1), 1 << T, 200):
        M = C // (int(R) * int(R))
        cases |= {M - 1, M, M + 1}
    cases |= {int(x) for x in rng.integers(lo, hi, 3000, dtype=np.int64)}
    for M in sorted(c for c in cases if lo <= c < hi):
        p, r = srt_model(plan, M)
        assert r == spec(T, m, M), M

"""Reciprocal square root of a wide unsigned integer, exact to its integer specification.

Why a digit recurrence: the specification ``R = max{R : R*R*M <= 2**(2T+2m-2)}`` is exact, so the
golden model is one ``math.isqrt`` and the accuracy proof is two lines (see
:mod:`normgen.hw.config`).  The recurrence needs no multiplier and no table: one subtraction of
``T + 2m + 4`` bits per result bit.  A table + Newton unit would save cycles but cost multipliers
(scarce on iCE40) and a harder error analysis.  Latency ``T + 4`` cycles (lookahead form): the
radicand latched with its leading nonzero pair (one-hot), the shift, a cycle for the first
values, ``T`` steps, the first of which sets up the trial registers (compact form: ``2T + 6``,
a preparation cycle and two cycles a step).

Datapath::

    d (d_width) --leading nonzero pair, one-hot--reg--> M = (d << 2(m-1)) >> 2k, an AND-OR of
                                         the pairs' windows, and k --reg-->
                                         (mant_width = 2m bits; s = k - (m - 1), the even
                                         normalizing shift)
    E = 2**(2m-2), p = 0, trial = M (= 4Q + M with Q = 0), 3M
    repeat T+1 times:                    diff = E - trial          (e_width + 2 bits)
        if diff >= 0:  E = 4*diff ; p = 2p + 1 ; trial = 2*trial + 3M    (Q = 2Q + M)
        else:          E = 4*E    ; p = 2p     ; trial = 2*trial - M     (Q = 2Q)
    R = p  (0 when d = 0)

Invariants: ``E = C/4**k - (2p)**2 * M``, ``trial = 4*p*M + M`` with ``C = 2**(2T+2m-2)``;
``E < 4(2p+1)M``.

In the lookahead form (``rsqrt_form="lookahead"``, the default with the parallel scalar stage)
the registers hold ``diff`` itself
(not ``trial``) and both candidates for the next trial,
``tA = 2*trial + 3M`` and ``tB = 2*trial - M``, so a step's decision is the sign bit of a register:

    take = diff >= 0
    diff' = take ? 4*diff - tA      : 4*E - tB          (both computed, then chosen)
    tA'   = take ? 2*tA + 3M        : 2*tB + 3M
    tB'   = take ? 2*tA - M         : 2*tB - M

Between registers: one carry chain and a two-way multiplexer whose select comes straight from a
flip-flop (the decision's fan-out to some 220 multiplexers runs beside the carry chains, not
after one).  R's two leading bits are known before the steps: ``R >= 2**(T-1)``, and ``R < 2**T``
but for ``M = 2**(2m-2)`` (``R = 2**T``, which the result's fields take from a flag).  So the
steps start from ``p = 1`` before bit ``T - 2``: ``E = 16*2**(2m-2) - 4M``, ``diff = E - 5M``,
``tA = 13M``, ``tB = 9M``, which a first step that does not take leaves from ``E = 4*2**(2m-2)
- M`` and ``tB = 5M`` (set with ``3M`` from the registered M, FINE); that step adds the factors
to their products whatever its decision, and the result's leading 1 is wiring.

In the compact form (``rsqrt_form="compact"``, the default with the serial scalar stage: the
small-FPGA choice) the registers are ``E`` and ``trial`` as written above: three carry
chains instead of six, and two cycles per result bit: ``diff = E - trial`` is registered (SUB),
then its sign bit selects the next ``E`` and ``trial`` (RUN), so no carry chain follows another
between registers (on an iCE40 a carry chain of ~60 bits is most of a clock period).

In the radix-4 form (``rsqrt_form="radix4"``) each step chooses two result bits, a digit
``q`` of 0..3, again from registers' sign bits only.  With ``F = 4E`` and ``P = 8pM`` the digit
is the greatest ``q`` with ``F >= t_q = q*P + q*q*M``, and ``F' = 16(F - t_q)``,
``P' = 4P + 8qM``, ``p' = 4p + q``.  The registers hold ``F - t_q`` for q = 0..3 (``t_0 = 0``),
so ``q`` counts the non-negative ones among the last three, ``P`` and ``3P``, and the multiples
``(8jq + j*j)*M`` of ``M`` (one adder each from ``M``, ``3M``, ``9M``), and a step forms each
of the twelve candidates ``16(F - t_q) - 4jP - (8jq + j*j)M`` (j = 1..3) by a carry-save layer
and one carry chain, then chooses four of them by ``q``::

    diff_j' = [16*diff_q - 4jP - (8jq + j*j)M  for q = 0..3][q]      (diff_0' = 16*diff_q)
    P' = [4P + 8qM][q],   3P' = [4*3P + 24qM][q],   acc' = 4*acc + [0, f, 2f, 3f][q]

Half the steps of the lookahead form for some three times its logic.  With ``T + 1`` odd the
result gets a leading 0 bit (as the lookahead form's first step): ``ceil((T + 1) / 2)`` digits.

In the SRT form (``rsqrt_form="srt"``) each step chooses a digit of -2..2 (two result bits) and
no carry chain longer than the digit's estimate lies between registers: the residual is kept as
two words (carry-save), the digit is chosen from a dozen leading bits of it, for each digit the
step may apply, beside the step (the step's digit picks one), and the result is built by
on-the-fly conversion (``p`` and ``p - 1`` in registers, each digit appended to one of them).
The first digits come from a table of the mantissa's leading bits; after the last digit the
result is ``R`` or ``R + 1`` and the residual's sign says which (two more cycles).  The selection
is proven for each configuration when it is generated (:mod:`normgen.hw.srt`).  Latency
``ceil((T+1)/2) + 6`` cycles: 17 at the default configuration, against 23 for the lookahead form.
The factors' products are kept in carry-save form as well and added up in the last cycle.

Products with ``R``: given ``factors`` (name → shape), the unit takes those values with ``D``
and returns each one's exact product with ``R`` as well, accumulated beside the recurrence
(``acc = 2*acc + (take ? f : 0)`` per result bit, most significant first), so a caller that needs
``f*R`` has it when ``R`` is ready instead of one multiplication later.

With ``scaled_bits`` (name → bits, every factor) each factor is first multiplied by
``2**(s_max - s)`` (``s_max``, the greatest ``s``, :func:`rsqrt_shift_range`): two registered right
shifts of ``f << (s_max + m - 1)`` by ``k``, in the cycles that shift ``M``; the unit then returns
the low ``scaled_bits[name]`` bits of ``f * R * 2**(s_max - s)``.  A caller that scales ``f*R`` by
``2**-s`` (A and B of the scalar stage) takes fixed bits of that instead of shifting the product
by a variable amount after the result.  With ``scaled_round = q`` the scaled products have
``2**q`` added (a caller that rounds at bit ``q + 1`` then takes bits from there on): a 1 in the
accumulator's free low bit at the step after which ``q`` doublings remain.

With ``held_input`` the caller keeps ``i.payload`` still from its transfer until ``o``'s (as
a register of its own does): the unit then reads it there and keeps no copy.

Members
-------
i : In(stream.Signature(d_width))
    The radicand ``D``; with ``factors`` a struct of ``d`` and the factors.
o : Out(stream.Signature(RsqrtResult))
    ``r`` (``T+1`` bits) and ``s`` (signed) with ``1/sqrt(D) ~= r * 2**-(T + m - 1 + s)``; with
    ``factors`` also ``<name>_r``, the factor times ``r`` (0 when ``D = 0``, as ``r``).  ``s`` is
    a register on the output all the time, final from the third cycle after the input transfer.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import SLICE_LANES, CoreConfig
from .sequencer import OneHot
from .srt import srt_plan, thermometer

__all__ = ["Rsqrt", "radix4_digits", "rsqrt_input_layout", "rsqrt_result_layout", "rsqrt_latency", "rsqrt_shift_range"]


def rsqrt_latency(cfg: CoreConfig) -> int:
    """Latch the radicand with its groups' leading pairs (IDLE), shift by the leading group
    (SHIFT) and by the pair within it (FINE), then the steps: one per result bit (T + 1; two in
    the compact form, after a cycle that sets up the trial registers; lookahead: T, the first
    setting up the trial registers and R's leading bit not a step's; radix-4: one per two result
    bits and one more; SRT: a state before the first step, one per digit, the final sign's two),
    then the output."""
    if cfg.rsqrt_form == "srt":
        return 6 + srt_plan(cfg.rsqrt_bits, cfg.rsqrt_m).n
    steps = cfg.rsqrt_bits + 1
    return 4 + {"lookahead": steps - 2, "compact": 2 * steps, "radix4": radix4_digits(cfg)}[cfg.rsqrt_form]


def radix4_digits(cfg: CoreConfig) -> int:
    """Digits (two result bits each) of the radix-4 recurrence."""
    return -(-(cfg.rsqrt_bits + 1) // 2)


def rsqrt_shift_range(cfg: CoreConfig) -> tuple[int, int]:
    """Least and greatest ``s`` the unit returns: ``s = (bitlen(D) - (2m - 1)) >> 1`` for
    ``bitlen(D)`` from 0 (``D = 0``) to ``d_width``."""
    lead = 2 * cfg.rsqrt_m - 1
    return (0 - lead) >> 1, (cfg.d_width - lead) >> 1


def _factor_product_shape(cfg: CoreConfig, shape, scaled_bits: int | None = None) -> Shape:
    shape = Shape.cast(shape)
    return Shape(shape.width + cfg.r_width if scaled_bits is None else scaled_bits, shape.signed)


def rsqrt_input_layout(cfg: CoreConfig, factors=None):
    """``D`` alone, or with ``factors`` (name → shape) a struct of ``d`` and the factors."""
    if not factors:
        return unsigned(cfg.d_width)
    return data.StructLayout({"d": unsigned(cfg.d_width), **factors})


def rsqrt_result_layout(cfg: CoreConfig, factors=None, scaled_bits=None) -> data.StructLayout:
    shift_bits = max(abs(cfg.shift_min), abs(cfg.shift_max)).bit_length() + 1
    fields = {"r": unsigned(cfg.r_width), "s": signed(shift_bits)}
    fields.update({f"{name}_r": _factor_product_shape(cfg, shape, (scaled_bits or {}).get(name))
                   for name, shape in (factors or {}).items()})
    return data.StructLayout(fields)


def _full_adders(x, y, z):
    """A carry-save layer: the sum bits of ``x + y + z`` and their carries (each one position
    lower than it counts)."""
    return x ^ y ^ z, (x & y) | (x & z) | (y & z)


def _difference(m: Module, a, b, c, width: int, name: str):
    """``a - b - c`` modulo ``2**width`` for an ``a`` whose low bit is 0: a carry-save layer (one
    LUT per bit) of ``a + 1``, ``~b`` and ``~c``, then one carry chain (the other 1 that the
    negations need is the carry word's free low bit)."""
    x, b_, c_ = (Signal(width, name=f"{name}_{k}") for k in "abc")
    m.d.comb += [x.eq(a | 1), b_.eq(b), c_.eq(c)]
    y, z = ~b_, ~c_
    save = Signal(width, name=f"{name}_sum")
    carry = Signal(width, name=f"{name}_carry")
    sums, carries = _full_adders(x, y, z)
    m.d.comb += [save.eq(sums), carry.eq(Cat(C(1, 1), carries[:width - 1]))]
    return (save + carry)[:width].as_signed()


def _sum(m: Module, words, width: int, name: str, carry_in: int = 0):
    """The sum of three ``width``-bit words (+ ``carry_in``) modulo ``2**width``: one carry-save
    layer, then one carry chain (``carry_in`` in the carry word's free low bit)."""
    x, y, z = (Signal(width, name=f"{name}_{k}") for k in "xyz")
    m.d.comb += [x.eq(words[0]), y.eq(words[1]), z.eq(words[2])]
    save = Signal(width, name=f"{name}_s")
    carry = Signal(width, name=f"{name}_c")
    sums, carries = _full_adders(x, y, z)
    m.d.comb += [save.eq(sums), carry.eq(Cat(C(carry_in, 1), carries))]
    return (save + carry)[:width]


class Rsqrt(wiring.Component):
    def __init__(self, cfg: CoreConfig, factors: dict | None = None, *, held_input: bool = False,
                 scaled_bits: dict | None = None, scaled_round: int | None = None):
        self._cfg = cfg
        if scaled_round is not None and (scaled_bits is None or scaled_round < 0):
            raise ValueError("scaled_round (>= 0) needs scaled_bits")
        self._round = scaled_round
        self._held = held_input
        self._factors = dict(factors or {})
        self._scaled = None if scaled_bits is None else dict(scaled_bits)
        if "d" in self._factors:
            raise ValueError("a factor may not be named 'd' (the radicand's field)")
        if self._scaled is not None and set(self._scaled) != set(self._factors):
            raise ValueError(f"scaled_bits names {sorted(self._scaled)}, the factors are {sorted(self._factors)}")
        super().__init__({
            "i": In(stream.Signature(rsqrt_input_layout(cfg, self._factors))),
            "o": Out(stream.Signature(rsqrt_result_layout(cfg, self._factors, self._scaled))),
        })

    @property
    def latency(self) -> int:
        """Cycles from the input transfer to ``o.valid``."""
        return rsqrt_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        T, mm = cfg.rsqrt_bits, cfg.rsqrt_m
        d_width, mant_width = cfg.d_width, cfg.mant_width
        e_width = T + mant_width + 4                  # E < 4(2p+1)M <= 2**(T+2m+4)

        # The even normalizing shift s = ceil((bitlen - 2m) / 2) is the same for the two bits of
        # a pair (bits 2k and 2k+1: s = k - (m - 1)), so it is the index of the leading nonzero
        # pair, k.  As the radicand is latched (IDLE), so is k one-hot (a pair is the leading
        # one when it is nonzero and no pair above is).  SHIFT forms M = (d << 2(m-1)) >> 2k as an
        # AND-OR of the pairs' windows by those flags, and k in binary; the scaled factors shift
        # by the leading group of four pairs there, and by the pair within it in FINE, where the
        # multiples of M start from registers.
        pairs = -(-d_width // 2)
        levels = max(1, (pairs - 1).bit_length())
        group = min(4, 1 << levels)                   # pairs per group (the factors' first shift)
        groups = (1 << levels) // group

        radicand = self.i.payload.d if self._factors else self.i.payload
        factor_in = {name: getattr(self.i.payload, name) for name in self._factors}
        # with ``held_input`` the caller's registers are the radicand's and the factors' (they
        # hold still from the input transfer until the result is taken); else the unit latches them
        if self._held:
            factor_reg = factor_in
        else:
            factor_reg = {name: Signal(shape, name=f"factor_{name}") for name, shape in self._factors.items()}
        scaled = self._scaled
        fine_shifts = {}                            # scaled factors: name -> (coarse, scaled) registers
        factor_acc = {name: Signal(_factor_product_shape(cfg, shape, scaled and scaled[name]), name=f"{name}_r")
                      for name, shape in self._factors.items()}
        padded = Cat(radicand, C(0, 2 * group * groups - d_width))
        lead = Signal(1 << levels, name="lead")     # one-hot: the leading nonzero pair
        pair_nz = [padded[2 * k:2 * k + 2].any() for k in range(1 << levels)]
        # (the factors' one-hot by groups of four pairs: a register of its own, not an OR of the
        # pairs' flags in front of their AND-OR)
        lead_group = Signal(groups, name="lead_group")
        group_nz = [Cat(*pair_nz[g * group:(g + 1) * group]).any() for g in range(groups)]

        def leading(flags):
            """One-hot: the highest of ``flags`` that is set."""
            return Cat(f & ~Cat(*flags[k + 1:]).any() if k + 1 < len(flags) else f for k, f in enumerate(flags))

        def one_of(target, flags, value_of, name):
            """``target`` (a signal) takes ``value_of(i)`` of the one set flag ``i``: each value as
            ``target``'s shape, then an AND-OR by the flags."""
            total = C(0, len(target))
            for i, flag in enumerate(flags):
                window = Signal(len(target), name=f"{name}_{i}")
                m.d.comb += window.eq(value_of(i))
                total = total | (flag.replicate(len(target)) & window)
            return target.eq(total)
        d_reg = radicand if self._held else Signal(d_width)
        k_reg = Signal(levels)
        # (a 32:1 multiplexer tree of binary-coded selects spread over ~80 bits was once the
        # P = 8 core's critical path, d_reg → mant, 5 ns of routing; the AND-OR by one-hot flags
        # from registers is two or three LUT levels)
        fine_bits = min(2, levels)
        assert group == 1 << fine_bits, (group, fine_bits)

        # scaled factors: f * 2**(s_max - s) = (f << top) >> k with k = s + m - 1 <= top, as
        # M's shift: by 4(k >> 2) (SHIFT), then by k & 3 (FINE); only the low bits are kept
        # (the accumulator's sum modulo its width has the same low bits)
        added = dict(factor_reg)                    # what RUN adds to each accumulator
        if scaled:
            top = rsqrt_shift_range(cfg)[1] + mm - 1
            for name, shape in self._factors.items():
                bits = scaled[name]
                spill = (1 << fine_bits) - 1
                is_signed = Shape.cast(shape).signed
                f_coarse = Signal(Shape(bits + spill, is_signed), name=f"{name}_coarse")
                f_scaled = Signal(Shape(bits, is_signed), name=f"{name}_scaled")
                fine_shifts[name] = (f_coarse, f_scaled)
                added[name] = f_scaled

        mant = Signal(mant_width)
        # (SHIFT forms M in two halves, by the pairs of the lower and of the upper half: one LUT
        # level less in each AND-OR; FINE's multiples of M take their OR, M, in their carry
        # chains' LUTs)
        mant_halves = [Signal(mant_width, name=f"mant_half{h}") for h in range(2)]
        merged_mant = Signal(mant_width)
        m.d.comb += merged_mant.eq(mant_halves[0] | mant_halves[1])
        zero = Signal()
        s_out = Signal.like(self.o.payload.s)        # the result's shift, set in FINE
        rem = Signal(e_width)
        root = Signal(cfg.r_width)
        step = Signal(range(T + 3))

        # Two forms of the recurrence (cfg.rsqrt_form).  Lookahead (one result bit per cycle):
        # diff = E - trial is a register, so the decision is its sign bit, and the
        # next diff is chosen from two candidates computed from registers beside it (see the
        # module notes); trial itself is not kept, only its two possible successors tA and tB.
        # Compact (for small FPGAs, two cycles per result bit): E and trial are the registers,
        # the subtraction is registered (SUB), then its sign decides (three carry chains, not six).
        lookahead = cfg.rsqrt_form == "lookahead"
        radix4 = cfg.rsqrt_form == "radix4"
        srt = cfg.rsqrt_form == "srt"
        three_m = Signal(mant_width + 2)
        diff = Signal(signed(e_width + 2))
        take = ~diff[-1]
        if radix4:
            # the differences F - t_q (q = 0..3), P = 8pM and 3P, all modulo 2**width (the chosen
            # values fit it: |F - t_q| < 2**(T + 2m + 6)), and the multiples of M
            assert mm >= 3, mm
            width = e_width + 3
            diffs = [Signal(signed(width), name=f"diff{q}") for q in range(4)]
            p8, p24 = Signal(width, name="p8"), Signal(width, name="p24")
            nine_m = Signal(mant_width + 4)
            multiples = {(1, 0): mant, (1, 1): nine_m, (2, 0): mant << 2, (2, 2): nine_m << 2, (3, 0): nine_m}
            for (j, q), value in {(1, 2): (mant << 4) + mant, (1, 3): (three_m << 3) + mant,
                                  (2, 1): (mant << 4) + (mant << 2), (2, 3): (nine_m << 2) + (mant << 4),
                                  (3, 1): (mant << 5) + mant, (3, 2): (three_m << 4) + nine_m,
                                  (3, 3): (nine_m << 3) + nine_m}.items():
                multiples[j, q] = Signal(mant_width + 7, name=f"m{8 * j * q + j * j}")
                m.d.sync += multiples[j, q].eq(value)      # (mant is still from FINE on)
            # the digit from the differences' signs (non-negative ones counted: they decrease in q)
            neg = [None] + [d[-1] for d in diffs[1:]]
            high, low = ~neg[2], (~neg[1] & neg[2]) | ~neg[3]

            def by_digit(values):
                return Mux(high, Mux(low, values[3], values[2]), Mux(low, values[1], values[0]))
        if srt:
            # the radix-4 SRT form (:mod:`normgen.hw.srt`): the residual in two words (rs + rc
            # modulo 2**width), u = p*M*4**(n-j) and mk = M*4**(n-j-1)
            plan = srt_plan(T, mm)
            width, eb = plan.width, plan.ebits
            rs, rc = Signal(width, name="rs"), Signal(width, name="rc")
            r_top = Signal(eb, name="r_top")       # (16*rs >> sh) + (16*rc >> sh), their windows' sum
            u_reg, mk = Signal(plan.u_width, name="u"), Signal(plan.u_width, name="mk")
            # the digit a step applies twice: as the four comparisons behind it (thermometer:
            # bit k is q >= k - 1; it picks the next digit among the candidates) and as
            # (q_pos: q > 0, q_nz: q != 0, q_two: |q| = 2) for the datapath.  Set up by the
            # table's digits (``forced``: the first in PRE, the others shifted along while ``forcing``)
            chosen_ge = Signal(4, name="chosen_ge")
            forced = [Signal(4, name=f"forced{j}") for j in range(plan.J)]
            forcing = Signal(plan.J - 1, name="forcing")
            q_pos, q_nz, q_two = Signal(name="q_pos"), Signal(name="q_nz"), Signal(name="q_two")
            # (a copy of the code for the estimate words' multiplexers, beside them: its initial
            # values differ, so synthesis keeps it; its loads are few of the code's hundreds)
            q_pos_w, q_nz_w, q_two_w = (Signal(name=f"q_{n}_w", init=1) for n in ("pos", "nz", "two"))
            code_regs = (q_pos, q_nz, q_two, q_pos_w, q_nz_w, q_two_w)

            def code_of(t):         # (pos, nz, two) of a thermometer
                return t[2], ~(t[1] & ~t[2]), t[3] | ~t[0]
            # the thresholds -(2k - 1)*s_hat (k = -1..2), the terms ~(4*q*q*mk >> sh) less them
            # (zz, a step ahead of their use) and the estimate's words w_(q,k) but the residual's
            nthr = [Signal(eb, name=f"nthr{k}") for k in range(4)]
            zz = {(a, k): Signal(eb, name=f"zz{a}_{k}") for a in (1, 2) for k in range(4)}
            w_terms = {(q, k): Signal(eb, name=f"w{q + 2}_{k}") for q in (-2, -1, 1, 2) for k in range(4)}
            fix = Signal(name="fix")             # (a register: set in SIGN)

            def residual_top(sums, carries):      # r_top of the residual's two words
                return sums[plan.r_lo:plan.r_lo + eb] + carries[plan.r_lo:plan.r_lo + eb]

            def by_q(values):      # values for q = -2..2
                return Mux(q_two, Mux(q_pos, values[4], values[0]),
                           Mux(q_nz, Mux(q_pos, values[3], values[1]), values[2]))

            def window(value, lo):
                padded = Cat(value, C(0, max(0, lo + eb - len(value))))
                return padded[lo:lo + eb]
        if lookahead:
            t_a = Signal(e_width + 1)
            t_b = Signal(e_width + 1)
            # the first step (``setup``) adds the factors to their products whatever its decision;
            # ``pow4``: M = 2**(2m-2), whose R = 2**T the steps do not reach (the result's fields
            # then take it and ``special``, the factors' products with it, instead)
            setup = Signal(name="setup")
            pow4 = Signal(name="pow4")
            special = {name: Signal.like(acc, name=f"{name}_special") for name, acc in factor_acc.items()}
            rem_take = Signal(e_width)
            rem_keep = Signal(e_width)
            m.d.comb += [rem_take.eq(diff[:e_width] << 2), rem_keep.eq(rem << 2)]
        else:
            # two cycles per result bit: SUB registers diff = E - trial, RUN applies its sign
            trial = Signal(e_width + 1)

        # s is final from FINE on: it is on the output all the time (a caller may decode it early)
        m.d.comb += self.o.payload.s.eq(s_out)
        # SHIFT's values: M in two halves, k, the zero flag and the factors' coarse shift.  Their
        # registers load every cycle (no enable): their inputs hold still from the input transfer
        # to the next IDLE, so they are right from SHIFT on, and the states' flip-flops do not
        # fan out to them (at P = 32 SHIFT's flag, the enable of ~170 registers and an input of
        # their logic, was on the critical path, 5.5 ns of routing)
        is_zero = ~lead.any()
        m.d.sync += [one_of(f_coarse, list(lead_group), lambda g, f=factor_reg[name]: (f << top) >> (g << fine_bits),
                            f"{name}_coarse")
                     for name, (f_coarse, _) in fine_shifts.items()]
        m.d.sync += [
            *[one_of(half, [lead[k] for k in range(h << (levels - 1), (h + 1) << (levels - 1))],
                     lambda k, h=h: (d_reg << 2 * (mm - 1)) >> (2 * (k + (h << (levels - 1)))), f"window{h}")
              for h, half in enumerate(mant_halves)],
            k_reg.eq(Cat(*[Cat(*[lead[k] for k in range(1 << levels) if k >> b & 1]).any()
                           for b in range(levels)])),
            zero.eq(is_zero),
        ]
        # one flip-flop per state: RUN enables every register of the recurrence (and the products')
        fsm = OneHot(m, "IDLE", prefix="rsqrt")
        with fsm.state("IDLE"):
            m.d.comb += self.i.ready.eq(1)
            # the radicand's leading groups (and, without ``held_input``, the radicand and the
            # factors) are latched every idle cycle (their enable is this unit's own state, not
            # the producer's valid, which then drives only the state register)
            m.d.sync += [lead.eq(leading(pair_nz)), lead_group.eq(leading(group_nz))]
            if not self._held:
                m.d.sync += d_reg.eq(radicand)
                m.d.sync += [factor_reg[name].eq(value) for name, value in factor_in.items()]
            with m.If(self.i.valid):
                fsm.goto("SHIFT")
        # RUN cycles (result bits, lookahead: + 1; radix-4: digits + 1)
        steps = plan.n if srt else radix4_digits(cfg) + 1 if radix4 else T if lookahead else T + 1
        with fsm.state("SHIFT"):
            m.d.sync += root.eq(0)
            # (the rounding term, when more doublings remain than the steps: from the start)
            per_step = 2 if radix4 or srt else 1
            first = (1 << (self._round - per_step * steps)
                     if self._round is not None and self._round >= per_step * steps else 0)
            m.d.sync += [acc.eq(Mux(is_zero, 0, first)) for acc in factor_acc.values()]
            if srt:
                pass                # (the step count is set in PRE, the state before RUN)
            elif radix4:
                # As the lookahead form: a step with the digit 0 from F/16 (the differences of
                # the other digits negative), P = 3P = 0, sets diff_j = F - j*j*M with
                # F = 4E = 2**(2m - 2) (2**(2m - 4) with a leading 0 bit)
                lead = 2 * radix4_digits(cfg) - (T + 1)
                m.d.sync += [diffs[0].eq(1 << (2 * mm - 4 - 2 * lead)), p8.eq(0), p24.eq(0), step.eq(steps)]
                m.d.sync += [d[-1].eq(1) for d in diffs[1:]]
            elif lookahead:
                # R's two leading bits are known: R < 2**T but for M = 2**(2m-2) (``pow4``), and
                # R >= 2**(T-1), so the steps start from p = 1 before bit T - 2.  The trial
                # registers' first values come from one more step of the recurrence (no state of
                # their own, so no third input on the step's carry chains' multiplexers): a step
                # that does not take, from E = 4*2**(2m-2) - M (FINE), tB = 5M (FINE) and a negative diff,
                # leaves E = 16*2**(2m-2) - 4M, diff = E - 5M, tA = 13M, tB = 9M: the state of
                # p = 1 before bit T - 2.  Its bit (0) is replaced by R's leading 1 at the output;
                # the factors' products add their factor in it (``setup``).
                m.d.sync += [diff[-1].eq(1), step.eq(T)]
            else:
                m.d.sync += [rem.eq(1 << (2 * mm - 2)), step.eq(T + 1)]
            fsm.goto("FINE")
        with fsm.state("FINE"):
            m.d.sync += s_out.eq(Mux(zero, rsqrt_shift_range(cfg)[0], k_reg - (mm - 1)))
            # (a scaled factor is 0 for D = 0, so its product needs no multiplexer at the output)
            m.d.sync += [f_scaled.eq(Mux(zero, 0, f_coarse >> k_reg[:fine_bits]))
                         for f_coarse, f_scaled in fine_shifts.values()]
            fine = merged_mant
            m.d.sync += [mant.eq(fine), three_m.eq((fine << 1) + fine)]
            if radix4:
                m.d.sync += nine_m.eq((fine << 3) + fine)
            if lookahead:
                m.d.sync += [t_b.eq((fine << 2) + fine), rem.eq((1 << 2 * mm) - fine),
                             pow4.eq(fine == 1 << (2 * mm - 2)), setup.eq(1)]
            if srt:
                # the table, by M's leading bits: the first J digits and the thresholds
                with m.Switch(fine[2 * mm - plan.b:]):
                    for idx, row in enumerate(plan.table):
                        if row is None:
                            continue
                        digits, s_hat = row
                        with m.Case(idx):
                            m.d.sync += [reg.eq(thermometer(d)) for reg, d in zip(forced, digits)]
                            m.d.sync += [reg.eq(value) for reg, value in zip(nthr, plan.nthr(s_hat))]
                fsm.goto("PRE")
            elif lookahead or radix4:
                fsm.goto("RUN")
            else:
                fsm.goto("PREP")
        if not (lookahead or radix4 or srt):
            with fsm.state("PREP"):               # trial = M
                m.d.sync += trial.eq(mant)
                fsm.goto("SUB")
        if not (lookahead or radix4 or srt):
            with fsm.state("SUB"):
                m.d.sync += diff.eq(rem - trial)
                fsm.goto("RUN")
        # the step after which ``scaled_round`` doublings remain adds its rounding term: a
        # register set a step ahead (a decode of the step count in front of the accumulators'
        # carry chains was the critical path); D = 0: none
        # (wide cores: a copy for each of two accumulators, told apart by their initial values
        # so that synthesis keeps both (the value before the first FINE is never used); the
        # accumulators feed constants that fan out to lanes across the die, and at P = 32 one
        # register → the far accumulator's carry chain was the critical path, 3.2 ns of routing)
        copies = 2 if cfg.lanes >= SLICE_LANES and len(factor_acc) > 1 else 1
        inject_regs = [Signal(name="inject" if c == 0 else f"inject{c}", init=c) for c in range(copies)]
        inject = {name: inject_regs[k % copies] for k, name in enumerate(factor_acc)}
        # (radix-4: the step after which round // 2 steps remain, at bit round % 2)
        injects = self._round is not None and self._round < per_step * steps
        if injects:
            remain, inject_bit = divmod(self._round, per_step)
            with m.If(fsm.flag("PRE" if srt else "FINE")):
                m.d.sync += [reg.eq(int(steps == remain + 1) & ~zero) for reg in inject_regs]
            with m.If(fsm.flag("RUN")):
                m.d.sync += [reg.eq((step == remain + 2) & ~zero) for reg in inject_regs]
        if radix4:
            # 3f for each factor (the step's multiple of it is chosen, then added)
            tripled = {}
            for name, value in added.items():
                shape = Shape.cast(value.shape())
                tripled[name] = Signal(Shape(shape.width + 2, shape.signed), name=f"{name}_x3")
                m.d.sync += tripled[name].eq((value << 1) + value)   # (still from FINE on)

        if srt:
            negated, acc_carry = {}, {}
            root_m = Signal.like(root, name="root_m")
            for name, acc in factor_acc.items():
                acc_carry[name] = Signal(len(acc), name=f"{name}_carry")
            for name, value in added.items():
                shape = Shape.cast(value.shape())
                negated[name] = Signal(signed(shape.width + 1), name=f"{name}_neg")
            with fsm.state("PRE"):
                # the state before the first step (p = 0, u = 0, r = r0, mk = M*4**(n-1)), so that
                # every digit, the table's first included, is applied by RUN's datapath: no
                # register of the recurrence takes a second value (a multiplexer in front of it)
                # but constants (the flip-flops' set and reset) and ``mk``, ``zz`` (off the loop)
                mk0 = Signal(plan.u_width, name="mk0")
                m.d.comb += mk0.eq(mant << 2 * (plan.n - 1))
                m.d.sync += [
                    rs.eq(plan.r0), rc.eq(0), u_reg.eq(0), mk.eq(mk0),
                    root.eq(0), root_m.eq(-1),
                    step.eq(steps),
                    chosen_ge.eq(forced[0]),
                    forcing.eq((1 << (plan.J - 1)) - 1),
                ]
                m.d.sync += [reg.eq(bit) for reg, bit in zip(code_regs, 2 * code_of(forced[0]))]
                m.d.sync += [reg.eq(~window(mk0 >> 2, plan.mk_lo(a)) + nthr[k]) for (a, k), reg in zz.items()]
                m.d.sync += [negated[name].eq(-value) for name, value in added.items()]
                m.d.sync += [acc_carry[name].eq(0) for name in factor_acc]
                fsm.goto("RUN")

            # the step's logic, outside the state (comb values inside a state would be gated by its
            # flag): RUN enables the registers
            srt_next = []
            # the estimate of 4*r_(j+1) for each digit q this step may apply, against the four
            # thresholds: (16*rs >> sh) + (16*rc >> sh) + w_(q,k) >= 0, one carry-save layer and
            # a carry chain each (w_(0,k) = -(2k - 1)*s_hat)
            # (the residual's two windows are added up as the words are formed: ``r_top``)
            chosen = [Cat((r_top + (w_terms[q, k] if q else nthr[k]))[eb - 1] ^ 1 for k in range(4))
                      for q in range(-2, 3)]
            # (the candidates' codes: pos is a comparison itself)
            codes = [code_of(ge) for ge in chosen]
            # the applied digit (or the table's next one, while ``forcing``) picks its candidate by
            # a one-hot AND-OR (decoded from registers, off the comparisons' path: two LUT levels
            # behind the comparisons, not a multiplexer tree of three)
            picks = Signal(6, name="picks")
            t = chosen_ge
            m.d.comb += picks.eq(Cat(Cat(~t[0], t[0] & ~t[1], t[1] & ~t[2], t[2] & ~t[3], t[3])
                                     & (~forcing[0]).replicate(5), forcing[0]))

            def pick(values):       # values for q = -2..2, then the forced one
                return Cat(*[picks[i] & v for i, v in enumerate(values)]).any()
            forced_code = code_of(forced[1])
            nxt_ge = Cat(*[pick([ge[k] for ge in chosen] + [forced[1][k]]) for k in range(4)])
            nxt_code = [pick([c[i] for c in codes] + [forced_code[i]]) for i in range(3)]
            srt_next += [reg.eq(nxt) for reg, nxt in zip(forced[1:], forced[2:])]
            srt_next.append(forcing.eq(forcing >> 1))
            srt_next.append(chosen_ge.eq(nxt_ge))
            srt_next += [reg.eq(c) for reg, c in zip(code_regs, 2 * nxt_code)]
            # the next step's w: from u + q*mk at the windows of 8u and 16u, formed from the two
            # operands' windows (the carry from below is lost: u to within a unit), and zz
            for a in (1, 2):
                lo = plan.u_lo(a)
                # (+-|q|*mk's window, then zeroed for q = 0 in the carry-save layer's LUTs: each
                # of the two a LUT of four inputs)
                signed_part = Signal(eb, name=f"qmk_{lo}")
                m.d.comb += signed_part.eq(window(Mux(q_two_w, mk << 1, mk), lo) ^ (~q_pos_w).replicate(eb))
                part = signed_part & q_nz_w.replicate(eb)
                u_part = window(u_reg, lo)
                for q in (-a, a):
                    for k in range(4):
                        words = [u_part, part, zz[abs(q), k]] if q < 0 else [~u_part, ~part, zz[abs(q), k]]
                        srt_next.append(w_terms[q, k].eq(_sum(m, words, eb, f"w{q + 2}{k}", carry_in=int(q > 0))))
            # the zz of the step after the next: from mk >> 4
            for (a, k), reg in zz.items():
                srt_next.append(reg.eq(~window(mk >> 4, plan.mk_lo(a)) + nthr[k]))
            # the residual: 4rs + 4rc - 2qu - q*q*mk in two carry-save layers (the +1s of the
            # negations in the carry words' free low bits)
            # (each term: +-|q| times its operand, a LUT of four inputs, then zeroed for q = 0 in
            # the carry-save layer's LUTs)
            any_q = q_nz
            mult_u, mult_m = Signal(width, name="mult_u"), Signal(width, name="mult_m")
            m.d.comb += [
                mult_u.eq(Mux(q_two, u_reg << 2, u_reg << 1) ^ q_pos.replicate(width)),
                mult_m.eq(~Mux(q_two, mk << 2, mk)),
            ]
            term_u, term_m = mult_u & any_q.replicate(width), mult_m & any_q.replicate(width)
            s1, c1 = Signal(width, name="rs_s1"), Signal(width, name="rs_c1")
            sums, carries = _full_adders(rs << 2, rc << 2, term_u)
            m.d.comb += [s1.eq(sums), c1.eq(Cat(q_pos & any_q, carries))]
            rs_next, rc_next = Signal(width, name="rs_next"), Signal(width, name="rc_next")
            sums, carries = _full_adders(s1, c1, term_m)
            m.d.comb += [rs_next.eq(sums), rc_next.eq(Cat(any_q, carries))]
            srt_next += [rs.eq(rs_next), rc.eq(rc_next), r_top.eq(residual_top(rs_next, rc_next))]
            srt_next += [u_reg.eq(by_q([u_reg - (mk << 1), u_reg - mk, u_reg, u_reg + mk, u_reg + (mk << 1)])),
                         mk.eq(mk >> 2)]
            # the result by on-the-fly conversion: p and p - 1 (root_m) in registers, each digit
            # appended to one of them (no carry chain)
            q_neg = any_q & ~q_pos
            srt_next += [root.eq(Cat(by_q([C(v, 2) for v in (2, 3, 0, 1, 2)]), Mux(q_neg, root_m, root))),
                         root_m.eq(Cat(by_q([C(v, 2) for v in (1, 2, 3, 0, 1)]), Mux(q_pos, root, root_m)))]
            # the factors' products in carry-save form: acc (sum word) + acc_c; 4*acc + q*f
            for name, acc in factor_acc.items():
                value, neg, carry = added[name], negated[name], acc_carry[name]
                bits = len(acc)
                term = Signal(bits, name=f"{name}_term")
                m.d.comb += term.eq(by_q([neg << 1, neg, C(0, 1), value, value << 1]))
                sums, carries = _full_adders(acc << 2, (carry << 2) | (inject[name] << inject_bit if injects else 0), term)
                srt_next += [acc.eq(sums), carry.eq(carries << 1)]
        with fsm.state("RUN"):
            if srt:
                m.d.sync += srt_next
            elif radix4:
                m.d.sync += root.eq(Cat(low, high, root))
                for name, acc in factor_acc.items():
                    value = added[name]
                    m.d.sync += acc.eq(((acc << 2) | (inject[name] << inject_bit if injects else 0))
                                       + by_digit([C(0, 1), value, value << 1, tripled[name]]))
                terms = {1: p8 << 2, 2: p8 << 3, 3: p24 << 2}
                for j in (1, 2, 3):
                    m.d.sync += diffs[j].eq(by_digit([_difference(m, diffs[q] << 4, terms[j], multiples[j, q], width,
                                                                  f"cand{j}{q}") for q in range(4)]))
                m.d.sync += [
                    diffs[0].eq(by_digit([d << 4 for d in diffs])),
                    p8.eq(by_digit([p8 << 2, (p8 << 2) + (mant << 3), (p8 << 2) + (mant << 4),
                                    (p8 << 2) + (three_m << 3)])),
                    p24.eq(by_digit([p24 << 2, (p24 << 2) + (three_m << 3), (p24 << 2) + (three_m << 4),
                                     (p24 << 2) + (nine_m << 3)])),
                ]
            else:
                # (lookahead: the first step adds the factors whatever its decision)
                with m.If(take | setup if lookahead else take):
                    m.d.sync += [acc.eq(((acc << 1) | inject[name]) + added[name]) for name, acc in factor_acc.items()]
                with m.Else():
                    m.d.sync += [acc.eq((acc << 1) | inject[name]) for name, acc in factor_acc.items()]
                if lookahead:
                    m.d.sync += setup.eq(0)
                with m.If(take):
                    m.d.sync += root.eq((root << 1) | 1)
                    if lookahead:
                        m.d.sync += [
                            rem.eq(rem_take),
                            diff.eq(rem_take - t_a),
                            t_a.eq((t_a << 1) + three_m),
                            t_b.eq((t_a << 1) - mant),
                        ]
                    else:
                        m.d.sync += [rem.eq(diff[:e_width] << 2), trial.eq((trial << 1) + three_m)]
                with m.Else():
                    m.d.sync += root.eq(root << 1)
                    if lookahead:
                        m.d.sync += [
                            rem.eq(rem_keep),
                            diff.eq(rem_keep - t_b),
                            t_a.eq((t_b << 1) + three_m),
                            t_b.eq((t_b << 1) - mant),
                        ]
                    else:
                        m.d.sync += [rem.eq(rem << 2), trial.eq((trial << 1) - mant)]
            m.d.sync += step.eq(step - 1)
            with m.If(step == 1):
                fsm.goto("SIGN" if srt else "DONE")
            if not (lookahead or radix4 or srt):
                with m.Else():
                    fsm.goto("SUB")
        if srt:
            # p_n is R or R + 1: R + 1 when r_n = C - p_n**2 * M (rs + rc) is negative.  SIGN
            # registers that sign, the products' sums and their sums less the factor (in the
            # carry words); FIX chooses (the sign's carry chain and its fan-out to some hundred
            # multiplexers in one cycle measured 9-10 ns)
            with fsm.state("SIGN"):
                m.d.sync += fix.eq((rs + rc)[width - 1])
                for name, acc in factor_acc.items():
                    bits, carry = len(acc), acc_carry[name]
                    less = Signal(bits, name=f"{name}_neg_ext")
                    m.d.comb += less.eq(negated[name])
                    s2 = Signal(bits, name=f"{name}_fix_s")
                    c2 = Signal(bits, name=f"{name}_fix_c")
                    sums, carries = _full_adders(acc, carry, less)
                    m.d.comb += [s2.eq(sums), c2.eq(carries << 1)]
                    m.d.sync += [acc.eq(acc + carry), carry.eq(s2 + c2)]
                fsm.goto("FIX")
            with fsm.state("FIX"):
                m.d.sync += root.eq(Mux(fix, root_m, root))
                m.d.sync += [acc.eq(Mux(fix, acc_carry[name], acc)) for name, acc in factor_acc.items()]
                fsm.goto("DONE")
        # the result's fields are driven in every state (meaningful with ``o.valid``); they hold
        # from DONE until IDLE latches another radicand (the zero flag follows it a cycle later)
        if lookahead:
            # R = 2**(T-1) + the steps' bits, or 2**T (``pow4``); the factors' products with
            # 2**T (and the rounding term the accumulators carry) registered while the steps run
            result = Mux(pow4, 1 << T, root | (1 << (T - 1)))
            round_term = 1 << self._round if self._round is not None else 0
            m.d.sync += [special[name].eq((added[name] << T) + round_term) for name in factor_acc]
            products = {name: Mux(pow4, special[name], acc) for name, acc in factor_acc.items()}
        else:
            result, products = root, factor_acc
        m.d.comb += self.o.payload.r.eq(Mux(zero, 0, result))
        m.d.comb += [getattr(self.o.payload, f"{name}_r").eq(acc if name in fine_shifts else Mux(zero, 0, acc))
                     for name, acc in products.items()]
        with fsm.state("DONE"):
            m.d.comb += self.o.valid.eq(1)
            with m.If(self.o.ready):
                fsm.goto("IDLE")
        fsm.close()
        self.states_valid = fsm.at_most_one()     # for proofs by induction (sim/formal.py)
        return m

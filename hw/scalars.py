"""Per-vector scalar stage: statistics in, the constants ``A`` and ``B`` of ``x*A - B`` out.

One shared multiplier (``mul_width_a`` x ``mul_width_b`` signed) serves the products of a vector
in turn, so this stage costs one wide multiplier whatever the lane count.  With the pipelined
multiplier ``N*R`` and ``S1'*R`` come out of the rsqrt unit with ``R`` (one add per result bit
beside the recurrence, :func:`products_in_rsqrt`), so the multiplier serves the two products of
``D`` only; the serial multiplier (the small-FPGA choice) serves all four, which costs cycles
and no logic::

    t = S2 + e*N                (e is a constant; e*N is latched a cycle after N)
    D = N*t - S1**2             LayerNorm   (= N*S2 - S1**2 + e*N**2)
    D = N*t                     RMSNorm
    (R, s) = Rsqrt(D)                          [with N*R and S1'*R: parallel]
    A = rnd(N*R, sh), B = rnd(S1'*R, sh), sh = T + m - 1 + s - FA

Members
-------
i : In(stream.Signature(vector_stats_layout(cfg)))
    ``beats``, ``s1``, ``s2`` and ``overlong`` of one vector.
o : Out(stream.Signature(vector_coefs_layout(cfg)))
    ``a``, ``b``, ``beats`` and ``overlong``; ``a = b = 0`` when ``D = 0`` or the vector was
    rejected.
busy : Out(1)
    A vector is inside this stage.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import SLICE_LANES, CoreConfig
from .multiply import constant_product, product_latency, product_tree
from .rsqrt import Rsqrt, rsqrt_latency, rsqrt_shift_range
from .sequencer import OneHot

__all__ = ["VectorScalars", "products_in_rsqrt", "ScalarBank", "scalar_units", "unit_interval", "SerialMultiplier", "scalars_latency", "vector_stats_layout", "stats_e_n", "vector_coefs_layout", "shift_plan",
           "PipelinedMultiplier", "multiplier_widths", "scalar_product_registers"]


#: Cycles the scalar stage spends outside the rsqrt unit and the multiplier's pipeline, from the
#: input transfer to ``o.valid``: IDLE (statistics latched; parallel: S1*S1 issued from them),
#: [parallel: NT (N*(S2 + e*N) issued: the add is in front of the operand register), LATCH_S1SQ
#: (N*t's last level subtracts S1*S1), D (the product is D: the rsqrt unit starts);] [serial: EN
#: (e*N), T (t = S2 + e*N), NT and S1SQ (the products of D issued), LATCH_NT, D, RSQRT_IN, NR and
#: S1R (the products of A and B issued), LATCH_NR, AB, AB_FINE, ROUND;]
#: ``o.valid`` rises in OUT.  Parallel: A and B are rounded in RSQRT_OUT from fixed bits of the
#: rsqrt unit's scaled products; serial: the shift's coarse step is taken in AB (from the
#: multiplier's products), the fine step in AB_FINE, the rounding in ROUND.  RSQRT_OUT is the
#: rsqrt unit's output cycle, counted in its latency.  The tests measure it.
OWN_CYCLES = {"parallel": 3, "serial": 14}

#: The A/B shift moves by multiples of this first, then by the rest: two short multiplexer trees,
#: each selected by a register decoded from the rsqrt unit's ``s`` (see :func:`shift_plan`).
SHIFT_STEP = 8

#: Operand chunk width of the serial multiplier (an iCE40 SB_MAC16 is 16x16).
CHUNK = 16


def _chunks(bits: int) -> int:
    return -(-bits // CHUNK)


def products_in_rsqrt(cfg: CoreConfig) -> bool:
    """Whether ``N*R`` and ``S1'*R`` accumulate in the rsqrt unit (:class:`~normgen.hw.rsqrt.Rsqrt`'s
    ``factors``) rather than taking two more passes through the multiplier: with the pipelined
    multiplier (7 cycles less latency for two adders beside the recurrence), not with the serial
    one, whose idle multiplier costs no logic (it is the choice for small FPGAs)."""
    return cfg.scalar_mul != "serial"


def _operand_bits(cfg: CoreConfig) -> dict:
    """Magnitude bits of the multiplier's products' operands: N*t, S1*S1[, N*R, S1*R]."""
    t_bits = max(cfg.s2_width, (cfg.eps_int * cfg.reduction_max).bit_length()) + 1
    bits = {"NT": (cfg.count_width, t_bits), "S1SQ": (cfg.s1_width, cfg.s1_width)}
    if not products_in_rsqrt(cfg):
        bits.update({"NR": (cfg.count_width, cfg.r_width), "S1R": (cfg.s1_width, cfg.r_width)})
    return bits


def multiplier_widths(cfg: CoreConfig) -> tuple[int, int]:
    """Signed operand widths of the scalar stage's multiplier: (N or S1, t or S1 [or R])."""
    t_width = max(cfg.s2_width, (cfg.eps_int * cfg.reduction_max).bit_length()) + 1
    r_width = 0 if products_in_rsqrt(cfg) else cfg.r_width
    return max(cfg.count_width, cfg.s1_width) + 1, max(t_width, cfg.s1_width, r_width) + 1


def scalar_product_registers(cfg: CoreConfig) -> int:
    """Registers behind each partial product of the pipelined multiplier: in cores of more than
    one lane, two (the block's output register and one in the fabric).  There the lanes' blocks
    fill the DSP rows around the scalar stage's, and a block's output → the multiplier's first
    adder level was the critical path (``make bench``: P = 32 113.1 MHz with 6.3 ns of routing;
    at P = 8 once the output credit was registered, :func:`~normgen.hw.output.credit_lag`)."""
    return 2 if cfg.lanes > 1 else 1


def scalars_latency(cfg: CoreConfig) -> int:
    own = OWN_CYCLES[cfg.scalar_mul]
    pairs = len(_operand_bits(cfg)) // 2
    if cfg.scalar_mul == "serial":      # per product: chunk pairs, then accumulate and hand over
        # (one cycle a pair overlaps: its second issue state latches the first product)
        own += sum(_chunks(a) * _chunks(b) + SerialMultiplier.OVERHEAD for a, b in _operand_bits(cfg).values()) - pairs
    else:                               # each product pair waits out the multiplier's pipeline
        own += pairs * (PipelinedMultiplier.latency_of(*multiplier_widths(cfg), scalar_product_registers(cfg)) - 2)
    return rsqrt_latency(cfg) + own


class PipelinedMultiplier(wiring.Component):
    """Signed ``a*b``, one product per cycle, ``latency`` cycles after ``a`` and ``b`` are set.

    The operands are registered (twice), then multiplied by :func:`normgen.hw.multiply.product_tree`
    (at most one DSP-sized partial product or one level of three-value adds between registers).
    Its last level also adds ``c`` and ``c_in`` (1 bit), set ``latency - 1`` cycles after the
    operands (``c = ~p``, ``c_in = 1`` there subtract the product that ``p`` holds then).  With
    ``p_width`` only so many low bits of the result are formed (for results that fit them).

    With ``subtract_ahead`` the last level instead subtracts ``p`` in the cycle after ``sub`` is
    set (``latency - 2`` cycles after the operands): ``sub`` passes a register of the unit's own,
    which gates ``~p`` and the carry beside the adder (``c`` and ``c_in`` are unused).  In wide
    cores the scalar stage's state flags lie far from this adder (at P = 32 the state flag that
    gated ``c_in`` → the adder's carry chain was the critical path, 3.3 ns of routing)."""

    def __init__(self, a_width: int, b_width: int, p_width: int | None = None, *, product_registers: int = 1,
                 subtract_ahead: bool = False):
        self._widths = (a_width, b_width)
        self._product_registers = product_registers
        self._p_width = a_width + b_width if p_width is None else p_width
        self._ahead = subtract_ahead
        super().__init__({
            "a": In(signed(a_width)),
            "b": In(signed(b_width)),
            "c": In(signed(self._p_width)),
            "c_in": In(1),
            "sub": In(1),
            "p": Out(signed(self._p_width)),
        })

    @classmethod
    def latency_of(cls, a_width: int, b_width: int, product_registers: int = 1) -> int:
        return 1 + product_latency(signed(a_width), signed(b_width), operand_registers=True, addend=True, arity=3,
                                   product_registers=product_registers)

    @property
    def latency(self) -> int:
        return self.latency_of(*self._widths, self._product_registers)

    def elaborate(self, platform):
        m = Module()
        # The operands are registered twice: the first register takes them from the scalar
        # stage's operand multiplexer (where Yosys may give bits that are constant in some state
        # a synchronous reset), the second, fed by flip-flops only, goes into the multipliers'
        # input registers.
        a_in = Signal.like(self.a, name="a_in", reset_less=True)
        b_in = Signal.like(self.b, name="b_in", reset_less=True)
        m.d.sync += [a_in.eq(self.a), b_in.eq(self.b)]
        addend, carry_in = self.c, self.c_in
        if self._ahead:
            sub_r = Signal(name="sub_r")
            m.d.sync += sub_r.eq(self.sub)
            addend = Signal.like(self.c, name="sub_p")
            m.d.comb += addend.eq(Mux(sub_r, ~self.p, 0))
            carry_in = sub_r
        m.d.comb += self.p.eq(product_tree(m, a_in, b_in, name="p", operand_registers=True, addend=addend,
                                           carry_in=carry_in, arity=3, result_bits=self._p_width,
                                           product_registers=self._product_registers))
        return m


class SerialMultiplier(wiring.Component):
    """Signed product over several cycles with one ``CHUNK x CHUNK`` unsigned multiplier.

    ``start`` latches ``a``, ``b`` and the chunk counts; ``done`` falls with ``start`` and rises
    ``a_chunks*b_chunks + OVERHEAD`` cycles later, when ``product`` holds the result (until the
    cycle after the next ``start``).  One chunk pair per cycle goes through the registers below,
    so between two of them sits one chunk multiplexer, the multiplier, a shift by a multiple of
    ``CHUNK`` or one adder of half the product's width: the accumulator adds ``±partial`` (the
    sign of ``a*b``, as ``~x + 1``) in two halves, the high half a cycle after the low half with
    its carry::

        chunks of |a|, |b| --reg--> * --reg--> << --reg--> acc_lo += --reg--> acc_hi += --> product

    With ``sign_magnitude`` the caller gives the magnitudes (``a`` and ``b`` unsigned, of the same
    widths) and the product's sign (``negative``) instead: no negation lies between the caller's
    operand multiplexer and the multiplier's operand registers.
    """

    #: Cycles beyond one per chunk pair (the pipeline's registers and the start).
    OVERHEAD = 5

    def __init__(self, a_width: int, b_width: int, *, sign_magnitude: bool = False):
        self._chunks_a, self._chunks_b = _chunks(a_width), _chunks(b_width)
        self._sign_magnitude = sign_magnitude
        operand = unsigned if sign_magnitude else signed
        members = {
            "start": In(1),
            "a": In(operand(a_width)),
            "b": In(operand(b_width)),
            "a_chunks": In(range(self._chunks_a + 1)),
            "b_chunks": In(range(self._chunks_b + 1)),
            "product": Out(signed(a_width + b_width)),
            "done": Out(1),
        }
        if sign_magnitude:
            members["negative"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        ca, cb = self._chunks_a, self._chunks_b
        mag_a = Signal(ca * CHUNK)
        mag_b = Signal(cb * CHUNK)
        negative = Signal()
        count_a = Signal.like(self.a_chunks)
        count_b = Signal.like(self.b_chunks)
        i = Signal(range(ca + 1))
        j = Signal(range(cb + 1))
        running = Signal()
        width = self.product.shape().width
        lo_width = width // 2
        acc_lo = Signal(lo_width)
        acc_hi = Signal(width - lo_width)
        carry = Signal()                        # the low half's carry, for the high half
        hi_part = Signal(width - lo_width)      # the high half of the last term, added a cycle later
        last_lo = Signal()
        finished = Signal()

        # the pipeline: each stage's value, valid and last flags, and (before the shift) the
        # chunk pair's shift in chunks
        chunk_a, chunk_b = Signal(CHUNK), Signal(CHUNK)
        sel_valid, sel_last, sel_shift = Signal(), Signal(), Signal(range(ca + cb))
        partial = Signal(2 * CHUNK)
        partial_valid, partial_last, partial_shift = Signal(), Signal(), Signal(range(ca + cb))
        shifted = Signal(width)
        shifted_valid, shifted_last = Signal(), Signal()

        # the accumulator is the product (it holds still once the last term is in)
        m.d.comb += [self.product.eq(Cat(acc_lo, acc_hi)), self.done.eq(finished)]
        m.d.sync += sel_valid.eq(0)
        with m.If(self.start):
            if self._sign_magnitude:
                m.d.sync += [mag_a.eq(self.a), mag_b.eq(self.b), negative.eq(self.negative)]
            else:
                m.d.sync += [mag_a.eq(Mux(self.a < 0, -self.a, self.a)), mag_b.eq(Mux(self.b < 0, -self.b, self.b)),
                             negative.eq((self.a < 0) ^ (self.b < 0))]
            m.d.sync += [count_a.eq(self.a_chunks), count_b.eq(self.b_chunks), i.eq(0), j.eq(0), running.eq(1)]
        with m.Elif(running):
            last_j = j + 1 == count_b
            m.d.sync += [
                chunk_a.eq(mag_a.word_select(i, CHUNK)),
                chunk_b.eq(mag_b.word_select(j, CHUNK)),
                sel_shift.eq(i + j),
                sel_valid.eq(1),
                sel_last.eq(last_j & (i + 1 == count_a)),
                j.eq(Mux(last_j, 0, j + 1)),
                i.eq(Mux(last_j, i + 1, i)),
            ]
            with m.If(last_j & (i + 1 == count_a)):
                m.d.sync += running.eq(0)
        m.d.sync += [
            partial.eq(chunk_a * chunk_b), partial_shift.eq(sel_shift),
            partial_valid.eq(sel_valid), partial_last.eq(sel_last),
            shifted.eq(partial << (partial_shift * CHUNK)),
            shifted_valid.eq(partial_valid), shifted_last.eq(partial_last),
        ]
        # The accumulator clears in the cycle after ``start`` (``fresh``, a register), while the
        # first term is still two stages away: ``start`` (the caller's state decode) then reaches
        # only registers' enables, not the accumulator's carry chain.
        fresh = Signal()
        m.d.sync += fresh.eq(self.start)
        with m.If(fresh):
            m.d.sync += [acc_lo.eq(0), acc_hi.eq(0), carry.eq(0), hi_part.eq(0)]
        with m.Else():
            term = Signal(width)                # the partial with the product's sign: ~x (+ 1 below)
            low = Signal(lo_width + 1)
            m.d.comb += [term.eq(shifted ^ negative.replicate(width)),
                         low.eq(acc_lo + term[:lo_width] + negative)]
            m.d.sync += [acc_hi.eq(acc_hi + hi_part + carry), last_lo.eq(0), finished.eq(finished | last_lo)]
            with m.If(shifted_valid):
                m.d.sync += [acc_lo.eq(low[:lo_width]), carry.eq(low[lo_width]), hi_part.eq(term[lo_width:]),
                             last_lo.eq(shifted_last)]
            with m.Else():
                m.d.sync += [carry.eq(0), hi_part.eq(0)]
        with m.If(self.start):                  # (after the accumulator's updates: these win)
            m.d.sync += [last_lo.eq(0), finished.eq(0)]
        return m


def beats_shape(cfg: CoreConfig):
    """The count field: beats of a vector, or samples of a batch (BatchNorm statistics)."""
    return unsigned((cfg.max_batch if cfg.kind.statistics == "batch" else cfg.beats_max).bit_length())


def count_multiplier(cfg: CoreConfig) -> int:
    """N = count * this: lanes for a vector's beats, 1 for a batch's samples."""
    return 1 if cfg.kind.statistics == "batch" else cfg.lanes


def vector_stats_layout(cfg: CoreConfig) -> data.StructLayout:
    """A vector's statistics: its beats, S1, S2, whether it was overlong [and, for the parallel
    scalar stage, ``e_n = e*N`` (:func:`stats_e_n`), formed beside S1 and S2 where the count is a
    register, so the stage takes it as it takes the others]."""
    fields = {
        "beats": beats_shape(cfg),
        "s1": signed(cfg.s1_width),
        "s2": unsigned(cfg.s2_width),
        "overlong": 1,
    }
    if products_in_rsqrt(cfg):
        fields["e_n"] = unsigned((cfg.eps_int * cfg.reduction_max).bit_length())
    return data.StructLayout(fields)


def stats_e_n(cfg: CoreConfig, beats):
    """``e*N`` for a vector of ``beats`` beats (a constant multiplication: shifts and adds)."""
    return constant_product(beats, cfg.eps_int * count_multiplier(cfg))


def vector_coefs_layout(cfg: CoreConfig) -> data.StructLayout:
    fields = {
        "a": unsigned(cfg.a_width),
        "b": signed(cfg.b_width),
        "beats": beats_shape(cfg),
        "overlong": 1,
    }
    if cfg.exact_resolution:      # what the exact decisions of a nearest-even core need
        fields.update({"n": unsigned(cfg.count_width), "s1": signed(cfg.s1_width), "d": unsigned(cfg.d_width)})
    return data.StructLayout(fields)


def shift_plan(cfg: CoreConfig, step: int = SHIFT_STEP) -> tuple[int, int]:
    """How the A/B shift is split: ``(bias, coarse_steps)``.

    ``A`` and ``B`` are ``rnd(v, sh)`` with ``sh = T + m - 1 + s - FA``, that is ``(half + 1) >> 1``
    with ``half = floor(v * 2**-(sh - 1))``.  For every ``s`` the rsqrt unit returns
    (:func:`~normgen.hw.rsqrt.rsqrt_shift_range`), ``sh - 1 + bias = step*q + f`` with
    ``0 <= q < coarse_steps`` and ``0 <= f < step``, so ``half`` is ``v << bias`` (a constant
    shift: wiring) shifted right by ``step*q`` (the coarse step), then right by ``f`` (the fine
    step).  Both are right shifts of a binary-coded amount: no direction, and the floor of
    consecutive floors is the floor of the whole (for ``sh < 1``, ``half`` is even and the added 1
    falls off in the final shift, so that too is exact)."""
    s_lo, s_hi = rsqrt_shift_range(cfg)
    offset = cfg.rsqrt_bits + cfg.rsqrt_m - 2 - cfg.a_frac        # sh - 1 = offset + s
    bias = -(offset + s_lo)
    return bias, (s_hi - s_lo) // step + 1


def scaled_half_position(cfg: CoreConfig) -> int:
    """With the rsqrt unit's scaled factors (:func:`products_in_rsqrt`), ``half`` of A and B (see
    :func:`shift_plan`) is ``floor(f*R*2**(s_max - s) * 2**-q)`` for every ``s``: this ``q``, the
    same for all (``sh - 1 = offset + s``, so ``q = offset + s_max``)."""
    offset = cfg.rsqrt_bits + cfg.rsqrt_m - 2 - cfg.a_frac
    return offset + rsqrt_shift_range(cfg)[1]


def _scaled(value, bias: int):
    """``floor(value * 2**bias)``."""
    return value << bias if bias >= 0 else value >> -bias


class VectorScalars(wiring.Component):
    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        super().__init__({
            "i": In(stream.Signature(vector_stats_layout(cfg))),
            "o": Out(stream.Signature(vector_coefs_layout(cfg))),
            "busy": Out(1),
        })

    @property
    def latency(self) -> int:
        """Cycles from the input transfer to ``o.valid``."""
        return scalars_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        fused = products_in_rsqrt(cfg)
        factors = {"n": unsigned(cfg.count_width), "s1": signed(cfg.s1_width)} if fused else None
        # D, N and S1' are registers here that hold still while the unit runs; N*R and S1'*R come
        # scaled by 2**(s_max - s), so A and B are fixed bits of them (no shift after the result):
        # the bits of half (A's and B's width and one more) above q
        q = scaled_half_position(cfg)
        scaled_bits = {"n": max(q, 0) + cfg.a_width + 1, "s1": max(q, 0) + cfg.b_width + 1} if fused else None
        # (parallel: the unit latches D from the multiplier's output as it starts, and N, S1')
        # With q >= 0 the unit adds 2**q to them, so A and B are their bits from q + 1 on (the
        # rounding add in the accumulation): the unit's result is the stage's, with no register
        m.submodules.rsqrt = rsqrt = Rsqrt(cfg, factors=factors, held_input=not fused, scaled_bits=scaled_bits,
                                           scaled_round=q if fused and q >= 0 else None)

        n_width = cfg.count_width
        t_width = max(cfg.s2_width, (cfg.eps_int * cfg.reduction_max).bit_length()) + 1
        mul_a_width, mul_b_width = multiplier_widths(cfg)
        serial = cfg.scalar_mul == "serial"
        # serial: the operands' magnitudes and the product's sign (the magnitudes of the signed
        # operands are registers of their own, so no negation follows the operand multiplexer)
        mul_a = Signal((unsigned if serial else signed)(mul_a_width))
        mul_b = Signal((unsigned if serial else signed)(mul_b_width))
        if serial:
            mul_negative = Signal()
            m.submodules.multiplier = multiplier = SerialMultiplier(mul_a_width, mul_b_width, sign_magnitude=True)
            product = multiplier.product
            m.d.comb += [multiplier.a.eq(mul_a), multiplier.b.eq(mul_b), multiplier.negative.eq(mul_negative)]
        else:
            # (only D's bits: N*t - S1*S1 and N*t fit them as signed values)
            ahead = cfg.lanes >= SLICE_LANES
            m.submodules.multiplier = multiplier = PipelinedMultiplier(mul_a_width, mul_b_width, cfg.d_width + 1,
                                                                        product_registers=scalar_product_registers(cfg),
                                                                        subtract_ahead=ahead)
            product = multiplier.p
            m.d.comb += [multiplier.a.eq(mul_a), multiplier.b.eq(mul_b)]
            pipe_waits = multiplier.latency - 2      # extra states before the first product lands
        operand_bits = _operand_bits(cfg)
        wait_states = []
        # the states are flip-flops of their own: every control path starts one LUT from them
        fsm = OneHot(m, "IDLE", prefix="scalars")

        def multiply(state, a_value, b_value, next_state):
            """In ``state``: start ``a*b``.  Serial: ``product`` holds it in ``next_state``.
            Parallel: ``product`` holds it ``multiplier.latency`` states later."""
            if serial:
                (a_value, a_sign), (b_value, b_sign) = sign_magnitude(a_value), sign_magnitude(b_value)
                m.d.comb += mul_negative.eq(a_sign ^ b_sign)
            m.d.comb += [mul_a.eq(a_value), mul_b.eq(b_value)]
            if serial:
                a_bits, b_bits = operand_bits[state]
                m.d.comb += [multiplier.start.eq(1), multiplier.a_chunks.eq(_chunks(a_bits)),
                             multiplier.b_chunks.eq(_chunks(b_bits))]
                fsm.goto(f"{state}_WAIT")
                wait_states.append((f"{state}_WAIT", next_state))
            else:
                fsm.goto(next_state)

        def product_pair(first, first_operands, second, second_operands, latch, after, also_first=None,
                         before_latch=None):
            """States ``first`` and ``second`` issue two products back to back; ``latch`` takes
            the first product (a register, or a function that assigns from it), and in state
            ``after`` ``product`` holds the second.  ``also_first`` adds to state ``first``,
            ``before_latch`` (parallel) to the state before the latch;
            without ``first_operands`` another state issues the first product and goes to
            ``second`` (``first`` then only names the states that follow)."""
            def take_first(value):
                if callable(latch):
                    latch(value)
                else:
                    m.d.sync += latch.eq(value)

            if first_operands is not None:      # (None: issued in another state, which goes to ``second``)
                with fsm.state(first):
                    multiply(first, *first_operands, second)
                    if also_first is not None:
                        also_first()
            with fsm.state(second):
                if serial:
                    multiply(second, *second_operands, after)
                    take_first(product)
                else:
                    multiply(second, *second_operands, f"PIPE_{first}_0" if pipe_waits else f"LATCH_{first}")
            if serial:
                return
            assert pipe_waits >= 1 or before_latch is None
            for k in range(pipe_waits):
                with fsm.state(f"PIPE_{first}_{k}"):
                    fsm.goto(f"PIPE_{first}_{k + 1}" if k + 1 < pipe_waits else f"LATCH_{first}")
                    if k + 1 == pipe_waits and before_latch is not None:
                        before_latch()
            with fsm.state(f"LATCH_{first}"):
                take_first(product)
                fsm.goto(after)

        n = Signal(n_width)
        s1 = Signal(signed(cfg.s1_width))
        mean_term = Signal(signed(cfg.s1_width))
        n_times_t = Signal(cfg.d_width + 1)
        d = Signal(cfg.d_width)
        zero = Signal()
        if not fused:
            r = Signal(cfg.r_width)
            s1_times_r = product            # the second product of the pair, held until the next start
        overlong = Signal()
        beats = Signal.like(self.i.payload.beats, reset_less=True)
        if not fused:               # (parallel: A and B are bits of the rsqrt unit's products)
            a = Signal(cfg.a_width)
            b = Signal(signed(cfg.b_width))

        s2 = Signal(cfg.s2_width)
        if serial:
            abs_s1 = Signal(cfg.s1_width, reset_less=True)       # |S1|, set in EN

        def sign_magnitude(value):
            """(magnitude, sign) of a serial multiplier operand: registers only (S1' is S1 or 0)."""
            if value is mean_term and not cfg.subtracts_mean:
                return C(0), C(0)
            if value is s1 or value is mean_term:
                return abs_s1, s1[-1]
            return value, C(0)
        e_n = Signal((cfg.eps_int * cfg.reduction_max).bit_length(), reset_less=True)      # e*N
        t = Signal(t_width)
        # Serial: A and B's variable shift in two steps (AB, AB_FINE), the rounding add in ROUND.  The
        # shift amounts are registers set with R (RSQRT_OUT), so each step is one multiplexer tree
        # of binary-coded select bits.  Only the low bits matter: A and B are the low bits of
        # (half + 1) >> 1, and a right shift by less than SHIFT_STEP needs SHIFT_STEP - 1 more.
        bias, coarse_steps = shift_plan(cfg)
        step_bits = SHIFT_STEP.bit_length() - 1
        coarse_sel = Signal(range(coarse_steps))
        fine_sel = Signal(step_bits)
        biased = Signal(range(coarse_steps * SHIFT_STEP))           # sh - 1 + bias
        coarse_a = Signal(cfg.a_width + SHIFT_STEP)
        coarse_b = Signal(signed(cfg.b_width + SHIFT_STEP))
        half_a = Signal(cfg.a_width + 1)
        half_b = Signal(signed(cfg.b_width + 1))

        if fused:
            # A = (half + 1) >> 1 with half = floor(N*R*2**(s_max - s) / 2**q): bits q + 1 on of
            # the unit's product with 2**q added (q < 0: half is exact and even, A = its half)
            def fixed_bits(value, width):
                return (value[q + 1:] if q >= 0 else value << (-q - 1))[:width]
            a = Mux(zero, 0, fixed_bits(rsqrt.o.payload.n_r, cfg.a_width))
            b = Mux(zero, 0, fixed_bits(rsqrt.o.payload.s1_r, cfg.b_width))
        m.d.comb += [
            self.o.payload.a.eq(a),
            self.o.payload.b.eq(b),
            self.o.payload.beats.eq(beats),
            self.o.payload.overlong.eq(overlong),
            (rsqrt.i.payload.d if fused else rsqrt.i.payload).eq(product if fused else d),
            *([rsqrt.i.payload.n.eq(n), rsqrt.i.payload.s1.eq(mean_term)] if fused else []),
        ]
        if not fused:
            m.d.comb += biased.eq(rsqrt.o.payload.s - rsqrt_shift_range(cfg)[0])
        if cfg.exact_resolution:
            m.d.comb += [self.o.payload.n.eq(n), self.o.payload.s1.eq(mean_term), self.o.payload.d.eq(d)]

        # The state flags are the handshakes: IDLE is ``i.ready`` (which reaches the statistics
        # FIFO's read logic) and the enable of the registers that take the statistics, which load
        # every idle cycle; OUT is ``o.valid`` (it reaches the output stage's issue logic);
        # RSQRT_IN and RSQRT_OUT are the handshakes with the rsqrt unit.
        idle = fsm.flag("IDLE")
        m.d.comb += [
            self.i.ready.eq(idle), self.busy.eq(~idle),
            # (parallel: the unit's result is the stage's output, its valid a state flag of its own)
            self.o.valid.eq(rsqrt.o.valid if fused else fsm.flag("OUT")),
            rsqrt.i.valid.eq(fsm.flag("D" if fused else "RSQRT_IN")),
            rsqrt.o.ready.eq(self.o.ready if fused else fsm.flag("RSQRT_OUT")),
        ]
        with fsm.state("IDLE"):
            stats = self.i.payload
            m.d.sync += [
                n.eq(stats.beats * count_multiplier(cfg)),
                s1.eq(stats.s1),
                s2.eq(stats.s2),
                mean_term.eq(cfg.kind.mean_term(stats.s1)),
                beats.eq(stats.beats),
                overlong.eq(stats.overlong),
            ]
            if not serial:
                # S1*S1 issues as the statistics are taken (the multiplier's operand register
                # takes them from the input), e*N beside it
                m.d.comb += [mul_a.eq(stats.s1), mul_b.eq(stats.s1)]
                m.d.sync += e_n.eq(stats.e_n)
            with m.If(self.i.valid):
                fsm.goto("EN" if serial else "NT")
        def latch_e_n():              # e*N from the latched count (a constant multiplication)
            m.d.sync += e_n.eq(stats_e_n(cfg, beats))

        if serial:
            with fsm.state("EN"):
                latch_e_n()
                m.d.sync += abs_s1.eq(Mux(s1 < 0, -s1, s1))
                fsm.goto("T")
            with fsm.state("T"):
                m.d.sync += t.eq(s2 + e_n)
                fsm.goto("NT")
            product_pair("NT", (n, t), "S1SQ", (s1, s1), n_times_t, "D")
        else:
            # S1*S1 issued in IDLE, e*N beside it; then N*t with t = S2 + e*N added in front of
            # the multiplier's operand register, and S1*S1 subtracted in N*t's last level (the
            # cycle S1*S1 is the multiplier's output)
            # (wide cores: the multiplier's own register gates the subtraction, set a state ahead)
            def subtract_first(s1_s1):
                if cfg.subtracts_mean and not ahead:
                    m.d.comb += [multiplier.c.eq(~s1_s1), multiplier.c_in.eq(1)]

            def subtract_ahead():
                if cfg.subtracts_mean and ahead:
                    m.d.comb += multiplier.sub.eq(1)
            product_pair("S1SQ", None, "NT", (n, s2 + e_n), subtract_first, "D", before_latch=subtract_ahead)
        with fsm.state("D"):
            if serial:
                if cfg.subtracts_mean:
                    m.d.sync += d.eq(n_times_t - product)
                else:
                    m.d.sync += d.eq(n_times_t)
                fsm.goto("RSQRT_IN")
            else:                   # the product is D: the rsqrt unit starts from it
                m.d.sync += [d.eq(product), zero.eq((product == 0) | overlong)]
                with m.If(rsqrt.i.ready):
                    fsm.goto("RSQRT_OUT")
        if serial:
            with fsm.state("RSQRT_IN"):
                m.d.sync += zero.eq((d == 0) | overlong)
                with m.If(rsqrt.i.ready):
                    fsm.goto("RSQRT_OUT")
        def round_ab(half_a_value, half_b_value):
            m.d.sync += [
                a.eq(Mux(zero, 0, (half_a_value + 1) >> 1)),
                b.eq(Mux(zero, 0, (half_b_value + 1) >> 1)),
            ]
            fsm.goto("OUT")

        def coarse_step_a(n_times_r):
            m.d.sync += coarse_a.eq(_scaled(n_times_r, bias) >> (coarse_sel << step_bits))

        def coarse_step_b(s1_times_r):
            m.d.sync += coarse_b.eq(_scaled(s1_times_r, bias) >> (coarse_sel << step_bits))
            fsm.goto("AB_FINE")

        with fsm.state("RSQRT_OUT"):
            if not fused:
                # the shift amounts are set while the unit runs: its s is a register from its
                # third cycle on, long before its result
                m.d.sync += [coarse_sel.eq(biased >> step_bits), fine_sel.eq(biased[:step_bits])]
            if fused:                     # the unit's result is taken as the stage's
                with m.If(rsqrt.o.valid & self.o.ready):
                    fsm.goto("IDLE")
            else:
                with m.If(rsqrt.o.valid):
                    m.d.sync += r.eq(rsqrt.o.payload.r)
                    fsm.goto("NR")
        if not fused:
            # N*R goes through A's coarse step as it leaves the multiplier (no register of its own)
            product_pair("NR", (n, r), "S1R", (mean_term, r), coarse_step_a, "AB")
            with fsm.state("AB"):
                coarse_step_b(s1_times_r)
        if not fused:
            with fsm.state("AB_FINE"):
                m.d.sync += [half_a.eq(coarse_a >> fine_sel), half_b.eq(coarse_b >> fine_sel)]
                fsm.goto("ROUND")
            with fsm.state("ROUND"):
                round_ab(half_a, half_b)
        if not fused:
            with fsm.state("OUT"):
                with m.If(self.o.ready):
                    fsm.goto("IDLE")
        for wait_state, next_state in wait_states:
            with fsm.state(wait_state):
                with m.If(multiplier.done):
                    fsm.goto(next_state)
        fsm.close()
        return m


def unit_interval(cfg: CoreConfig) -> int:
    """Cycles one :class:`VectorScalars` unit spends per vector: its latency, then the cycle in
    which its result is taken (it accepts the next vector in the cycle after)."""
    return scalars_latency(cfg) + 1


def scalar_units(cfg: CoreConfig) -> int:
    """Units the per-vector stage needs so that it takes a vector every ``cfg.vector_interval``
    cycles (one unit without a ``vector_interval``)."""
    if cfg.vector_interval is None:
        return 1
    return -(-unit_interval(cfg) // cfg.vector_interval)


class ScalarBank(wiring.Component):
    """``units`` :class:`VectorScalars` side by side, vectors dealt round-robin and collected in the
    same order, so the stage takes a new vector every ``ceil(unit_interval / units)`` cycles.

    Members as :class:`VectorScalars` (``i``, ``o``, ``busy``); the latency is a unit's.  Between
    the registers of the units there are only the dealing and collecting multiplexers (one
    ``units``-way select of the coefficient word)."""

    def __init__(self, cfg: CoreConfig, units: int):
        if units < 2:
            raise ValueError(f"a bank needs at least 2 units, not {units}")
        self._cfg = cfg
        self._units = units
        super().__init__({
            "i": In(stream.Signature(vector_stats_layout(cfg))),
            "o": Out(stream.Signature(vector_coefs_layout(cfg))),
            "busy": Out(1),
        })

    @property
    def units(self) -> int:
        return self._units

    @property
    def latency(self) -> int:
        return scalars_latency(self._cfg)

    def elaborate(self, platform):
        m = Module()
        units = [VectorScalars(self._cfg) for _ in range(self._units)]
        for k, unit in enumerate(units):
            m.submodules[f"unit{k}"] = unit
        deal = Signal(range(self._units))
        collect = Signal(range(self._units))
        for k, unit in enumerate(units):
            m.d.comb += [
                unit.i.payload.eq(self.i.payload),
                unit.i.valid.eq(self.i.valid & (deal == k)),
                unit.o.ready.eq(self.o.ready & (collect == k)),
            ]
        m.d.comb += [
            self.i.ready.eq(Array(u.i.ready for u in units)[deal]),
            self.o.valid.eq(Array(u.o.valid for u in units)[collect]),
            self.o.payload.eq(Array(u.o.payload for u in units)[collect]),
            self.busy.eq(Cat(u.busy for u in units).any()),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += deal.eq(Mux(deal == self._units - 1, 0, deal + 1))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += collect.eq(Mux(collect == self._units - 1, 0, collect + 1))
        return m

"""Per-vector scalar stage: statistics in, the constants ``A`` and ``B`` of ``x*A - B`` out.

The serial stage (the small-FPGA choice) has one ``CHUNK x CHUNK`` multiplier for the four
products of a vector in turn, which costs cycles and no logic.  The parallel stage forms
``D = N*S2 - S1*S1 + e*N*N`` in one pipelined product tree (:class:`DifferenceMultiplier`, both
products' partial products and ``e*N*N`` summed together) as the statistics arrive, and ``N*R`` and ``S1'*R`` come out of
the rsqrt unit with ``R`` (one add per result bit beside the recurrence,
:func:`products_in_rsqrt`)::

    D = N*S2 - S1**2 + e*N**2   LayerNorm   (e is a constant; serial: N*t - S1**2, t = S2 + e*N;
                                             parallel: e*N**2 comes with the statistics)
    D = N*S2 + e*N**2           RMSNorm
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

__all__ = ["VectorScalars", "products_in_rsqrt", "ScalarBank", "scalar_units", "unit_interval", "SerialMultiplier", "scalars_latency", "vector_stats_layout", "stats_e_n", "stats_e_n2", "vector_coefs_layout", "shift_plan",
           "DifferenceMultiplier", "d_multiplier_shapes", "scalar_product_registers"]


#: Cycles the serial scalar stage spends outside the rsqrt unit and the multiplier, from the
#: input transfer to ``o.valid``: IDLE (statistics latched), EN (e*N), T (t = S2 + e*N), NT and
#: S1SQ (the products of D issued), LATCH_NT, D, RSQRT_IN, NR and S1R (the products of A and B
#: issued), LATCH_NR, AB (the shift's coarse step, from the multiplier's products), AB_FINE (its
#: fine step), ROUND; ``o.valid`` rises in OUT.  (The parallel stage issues ``N*S2 - S1*S1 +
#: e*N*N`` in IDLE [more than one lane: from the registers IDLE loads, a cycle later], waits out
#: the multiplier's pipeline (PIPE_k) and starts the rsqrt unit in D, the state in which the
#: product is D; A and B are rounded in the unit's output cycle, RSQRT_OUT, counted in its
#: latency, from fixed bits of its scaled products.)  The tests measure both.
SERIAL_OWN_CYCLES = 14

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
    """Magnitude bits of the serial multiplier's products' operands: N*t, S1*S1, N*R, S1*R."""
    return {"NT": (cfg.count_width, _t_width(cfg)), "S1SQ": (cfg.s1_width, cfg.s1_width),
            "NR": (cfg.count_width, cfg.r_width), "S1R": (cfg.s1_width, cfg.r_width)}


def _t_width(cfg: CoreConfig) -> int:
    """Bits of ``t = S2 + e*N``."""
    return max(cfg.s2_width, (cfg.eps_int * cfg.reduction_max).bit_length()) + 1


def d_multiplier_shapes(cfg: CoreConfig) -> tuple:
    """Shapes of the pipelined scalar stage's ``a*b - c*d + e``: N, S2, S1, S1 (RMSNorm: None,
    None), e*N*N."""
    s1 = signed(cfg.s1_width) if cfg.subtracts_mean else None
    return unsigned(cfg.count_width), unsigned(cfg.s2_width), s1, s1, _e_n2_shape(cfg)


def _e_n2_shape(cfg: CoreConfig) -> Shape:
    return unsigned((cfg.eps_int * cfg.reduction_max ** 2).bit_length())


def scalar_product_registers(cfg: CoreConfig) -> int:
    """Registers behind each partial product of the pipelined multiplier: in cores of more than
    one lane, two (the block's output register and one in the fabric).  There the lanes' blocks
    fill the DSP rows around the scalar stage's, and a block's output → the multiplier's first
    adder level was the critical path (``make bench``: P = 32 113.1 MHz with 6.3 ns of routing;
    at P = 8 once the output credit was registered, :func:`~normgen.hw.output.credit_lag`)."""
    return 2 if cfg.lanes > 1 else 1


def scalars_latency(cfg: CoreConfig) -> int:
    if cfg.scalar_mul == "serial":      # per product: chunk pairs, then accumulate and hand over
        pairs = len(_operand_bits(cfg)) // 2
        # (one cycle a pair overlaps: its second issue state latches the first product)
        own = SERIAL_OWN_CYCLES + sum(_chunks(a) * _chunks(b) + SerialMultiplier.OVERHEAD
                                         for a, b in _operand_bits(cfg).values()) - pairs
    else:                               # D issued as the statistics arrive (IDLE) [or a cycle later]
        own = DifferenceMultiplier.latency_of(*d_multiplier_shapes(cfg),
                                              product_registers=scalar_product_registers(cfg))
        own += int(issue_after_latch(cfg))
    return rsqrt_latency(cfg) + own


def issue_after_latch(cfg: CoreConfig) -> bool:
    """Whether the pipelined multiplier takes D's operands from the registers that latch the
    statistics (a cycle after they arrive) rather than from the statistics stream: in cores of
    more than one lane.  There the stream's FIFO → the multiplier's operand registers pulled the
    FIFO away from the input stage, and its level logic became the P = 8 core's critical path
    (``make bench``: 139.8 MHz, 5.7 ns of routing)."""
    return cfg.lanes > 1


class DifferenceMultiplier(wiring.Component):
    """``a*b - c*d + e`` (without ``c`` and ``d``: ``a*b + e``), one result per cycle,
    ``latency`` cycles after the operands are set.

    The operands are registered twice: the first register takes ``a``, ``b``, ``~c``, ``d`` and
    ``e`` from the caller (the inversion in front of it is no logic of its own), the second, fed
    by flip-flops only, goes into the multipliers' input registers.  ``-c*d = ~c*d + d``: the
    partial products of ``a*b`` and ``~c*d``, ``d`` itself and ``e`` sum in one
    :func:`normgen.hw.multiply.product_tree` (one DSP-sized partial product or one level of
    three-value adds between registers), so the difference and the addend cost no cycle of their
    own.  Only the result's low ``p_width`` bits are formed (for results that fit them as signed
    values)."""

    def __init__(self, a_shape, b_shape, c_shape=None, d_shape=None, e_shape=None, *, p_width: int,
                 product_registers: int = 1):
        self._shapes = {name: Shape.cast(shape) for name, shape in zip("abcde", (a_shape, b_shape, c_shape, d_shape,
                                                                                 e_shape))
                        if shape is not None and Shape.cast(shape).width > 0}
        assert ("c" in self._shapes) == ("d" in self._shapes)
        self._product_registers = product_registers
        self._p_width = p_width
        members = {name: In(shape) for name, shape in self._shapes.items()}
        members["p"] = Out(signed(p_width))
        super().__init__(members)

    @classmethod
    def latency_of(cls, a_shape, b_shape, c_shape=None, d_shape=None, e_shape=None, *,
                   product_registers: int = 1) -> int:
        also = None if c_shape is None else (Shape.cast(c_shape), Shape.cast(d_shape))
        extra = int(also is not None) + int(e_shape is not None and Shape.cast(e_shape).width > 0)
        return 1 + product_latency(a_shape, b_shape, operand_registers=True, arity=3,
                                   product_registers=product_registers, also=also, extra_terms=extra)

    @property
    def latency(self) -> int:
        return self.latency_of(*(self._shapes.get(name) for name in "abcde"),
                               product_registers=self._product_registers)

    def elaborate(self, platform):
        m = Module()
        held = {}
        for name, shape in self._shapes.items():
            held[name] = Signal(shape, name=f"{name}_in", reset_less=True)
            m.d.sync += held[name].eq(~getattr(self, name) if name == "c" else getattr(self, name))
        also, terms = None, []
        if "c" in held:
            also = (held["c"], held["d"])
            terms.append((held["d"], 0))
        if "e" in held:
            terms.append((held["e"], 0))
        m.d.comb += self.p.eq(product_tree(m, held["a"], held["b"], name="p", operand_registers=True, arity=3,
                                           result_bits=self._p_width, product_registers=self._product_registers,
                                           also=also, extra_terms=terms))
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
    scalar stage, ``e_n2 = e*N*N`` (:func:`stats_e_n2`), formed beside S1 and S2 by the input
    stage, so the stage takes every term of D as it arrives]."""
    fields = {
        "beats": beats_shape(cfg),
        "s1": signed(cfg.s1_width),
        "s2": unsigned(cfg.s2_width),
        "overlong": 1,
    }
    if products_in_rsqrt(cfg):
        fields["e_n2"] = _e_n2_shape(cfg)
    return data.StructLayout(fields)


def stats_e_n2(cfg: CoreConfig, count):
    """``e*N*N`` for ``N = count`` (a product, then a constant multiplication; for statistics
    of few samples)."""
    return constant_product(count * count, cfg.eps_int)


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
        t_width = _t_width(cfg)
        serial = cfg.scalar_mul == "serial"
        if serial:
            # the operands' magnitudes and the product's sign (the magnitudes of the signed
            # operands are registers of their own, so no negation follows the operand multiplexer)
            mul_a_width = max(cfg.count_width, cfg.s1_width) + 1
            mul_b_width = max(t_width, cfg.s1_width, cfg.r_width) + 1
            mul_a, mul_b = Signal(mul_a_width), Signal(mul_b_width)
            mul_negative = Signal()
            m.submodules.multiplier = multiplier = SerialMultiplier(mul_a_width, mul_b_width, sign_magnitude=True)
            product = multiplier.product
            m.d.comb += [multiplier.a.eq(mul_a), multiplier.b.eq(mul_b), multiplier.negative.eq(mul_negative)]
        else:
            # D = N*S2 - S1*S1 + e*N*N in one product tree (only D's bits: it fits them as a
            # signed value)
            m.submodules.multiplier = multiplier = DifferenceMultiplier(
                *d_multiplier_shapes(cfg), p_width=cfg.d_width + 1, product_registers=scalar_product_registers(cfg))
            product = multiplier.p
            pipe_states = multiplier.latency + int(issue_after_latch(cfg))   # IDLE to D
            e_n2 = Signal(_e_n2_shape(cfg), name="e_n2")
        operand_bits = _operand_bits(cfg)
        wait_states = []
        # the states are flip-flops of their own: every control path starts one LUT from them
        fsm = OneHot(m, "IDLE", prefix="scalars")

        def multiply(state, a_value, b_value, next_state):
            """(Serial) In ``state``: start ``a*b``; ``product`` holds it in ``next_state``."""
            (a_value, a_sign), (b_value, b_sign) = sign_magnitude(a_value), sign_magnitude(b_value)
            a_bits, b_bits = operand_bits[state]
            m.d.comb += [mul_negative.eq(a_sign ^ b_sign), mul_a.eq(a_value), mul_b.eq(b_value),
                         multiplier.start.eq(1), multiplier.a_chunks.eq(_chunks(a_bits)),
                         multiplier.b_chunks.eq(_chunks(b_bits))]
            fsm.goto(f"{state}_WAIT")
            wait_states.append((f"{state}_WAIT", next_state))

        def product_pair(first, first_operands, second, second_operands, latch, after):
            """(Serial) States ``first`` and ``second`` issue two products back to back; ``latch``
            takes the first product (a register, or a function that assigns from it), and in
            state ``after`` ``product`` holds the second."""
            with fsm.state(first):
                multiply(first, *first_operands, second)
            with fsm.state(second):
                multiply(second, *second_operands, after)
                if callable(latch):
                    latch(product)
                else:
                    m.d.sync += latch.eq(product)

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
        if not serial:
            # N*S2 - S1*S1 + e*N*N issues as the statistics are taken (the multiplier's first
            # operand register takes them from the input, in every state: no state flag gates
            # them; e*N*N comes from the input stage), or, in cores of more than one lane, from
            # the registers that take them
            late, stats = issue_after_latch(cfg), self.i.payload
            m.d.comb += [multiplier.a.eq(n if late else stats.beats * count_multiplier(cfg)),
                         multiplier.b.eq(s2 if late else stats.s2)]
            if cfg.subtracts_mean:
                m.d.comb += [multiplier.c.eq(s1 if late else stats.s1), multiplier.d.eq(s1 if late else stats.s1)]
            if cfg.eps_int:
                m.d.comb += multiplier.e.eq(e_n2 if late else stats.e_n2)
        with fsm.state("IDLE"):
            stats = self.i.payload
            m.d.sync += [
                n.eq(stats.beats * count_multiplier(cfg)),
                s1.eq(stats.s1),
                mean_term.eq(cfg.kind.mean_term(stats.s1)),
                beats.eq(stats.beats),
                overlong.eq(stats.overlong),
            ]
            m.d.sync += s2.eq(stats.s2)
            if not serial and issue_after_latch(cfg):
                m.d.sync += e_n2.eq(stats.e_n2)
            with m.If(self.i.valid):
                fsm.goto("EN" if serial else "PIPE_1" if pipe_states > 1 else "D")
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
        else:                       # the product's pipeline: D is the product in state D
            for k in range(1, pipe_states):
                with fsm.state(f"PIPE_{k}"):
                    fsm.goto(f"PIPE_{k + 1}" if k + 1 < pipe_states else "D")
        with fsm.state("D"):
            if serial:
                if cfg.subtracts_mean:
                    m.d.sync += d.eq(n_times_t - product)
                else:
                    m.d.sync += d.eq(n_times_t)
                fsm.goto("RSQRT_IN")
            else:                   # the product is D: the rsqrt unit starts from it
                # (D = 0 needs no flag here: the rsqrt unit's products are 0 then)
                m.d.sync += [d.eq(product), zero.eq(overlong)]
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

"""Per-vector scalar stage: statistics in, the constants ``A`` and ``B`` of ``x*A - B`` out.

One shared multiplier (``mul_width_a`` x ``mul_width_b`` signed) serves the four products of a
vector in turn, so this stage costs one wide multiplier whatever the lane count::

    t = S2 + e*N                (e is a constant: shift-and-add)
    D = N*t - S1**2             LayerNorm   (= N*S2 - S1**2 + e*N**2)
    D = N*t                     RMSNorm
    (R, s) = Rsqrt(D)
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

from .config import CoreConfig
from .rsqrt import Rsqrt, rsqrt_latency

__all__ = ["VectorScalars", "SerialMultiplier", "scalars_latency", "vector_stats_layout", "vector_coefs_layout", "round_shift"]


#: Cycles the scalar stage spends outside the rsqrt unit, from the input transfer to ``o.valid``,
#: with the parallel multiplier (registered operands, registered product: two products in flight).
OWN_CYCLES = 9

#: Operand chunk width of the serial multiplier (an iCE40 SB_MAC16 is 16x16).
CHUNK = 16


def _chunks(bits: int) -> int:
    return -(-bits // CHUNK)


def _operand_bits(cfg: CoreConfig) -> dict:
    """Magnitude bits of the four products' operands: N*t, S1*S1, N*R, S1*R."""
    t_bits = max(cfg.s2_width, (cfg.eps_int * cfg.reduction_max).bit_length()) + 1
    return {"NT": (cfg.count_width, t_bits), "S1SQ": (cfg.s1_width, cfg.s1_width),
            "NR": (cfg.count_width, cfg.r_width), "S1R": (cfg.s1_width, cfg.r_width)}


def scalars_latency(cfg: CoreConfig) -> int:
    own = OWN_CYCLES
    if cfg.scalar_mul == "serial":      # per product: chunk pairs, then accumulate and hand over
        own += sum(_chunks(a) * _chunks(b) + 2 for a, b in _operand_bits(cfg).values()) - 2
    return rsqrt_latency(cfg) + own


class SerialMultiplier(wiring.Component):
    """Signed product over several cycles with one ``CHUNK x CHUNK`` unsigned multiplier.

    ``start`` latches ``a``, ``b`` and the chunk counts; ``done`` falls with ``start`` and rises
    ``a_chunks*b_chunks + 2`` cycles later, when ``product`` holds the result (until the next
    ``start``)."""

    def __init__(self, a_width: int, b_width: int):
        self._chunks_a, self._chunks_b = _chunks(a_width), _chunks(b_width)
        super().__init__({
            "start": In(1),
            "a": In(signed(a_width)),
            "b": In(signed(b_width)),
            "a_chunks": In(range(self._chunks_a + 1)),
            "b_chunks": In(range(self._chunks_b + 1)),
            "product": Out(signed(a_width + b_width)),
            "done": Out(1),
        })

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
        partial = Signal(2 * CHUNK)
        partial_shift = Signal(range(ca + cb))
        partial_valid = Signal()
        partial_last = Signal()
        acc = Signal(self.product.shape().width)

        m.d.comb += self.product.eq(Mux(negative, -acc, acc))
        m.d.sync += [partial_valid.eq(0)]
        with m.If(self.start):
            m.d.sync += [
                mag_a.eq(Mux(self.a < 0, -self.a, self.a)),
                mag_b.eq(Mux(self.b < 0, -self.b, self.b)),
                negative.eq((self.a < 0) ^ (self.b < 0)),
                count_a.eq(self.a_chunks), count_b.eq(self.b_chunks),
                i.eq(0), j.eq(0), running.eq(1), acc.eq(0), self.done.eq(0),
            ]
        with m.Elif(running):
            last_j = j + 1 == count_b
            m.d.sync += [
                partial.eq(mag_a.word_select(i, CHUNK) * mag_b.word_select(j, CHUNK)),
                partial_shift.eq(i + j),
                partial_valid.eq(1),
                partial_last.eq(last_j & (i + 1 == count_a)),
                j.eq(Mux(last_j, 0, j + 1)),
                i.eq(Mux(last_j, i + 1, i)),
            ]
            with m.If(last_j & (i + 1 == count_a)):
                m.d.sync += running.eq(0)
        with m.If(partial_valid):
            m.d.sync += acc.eq(acc + (partial << (partial_shift * CHUNK)))
            with m.If(partial_last):
                m.d.sync += self.done.eq(1)
        return m


def beats_shape(cfg: CoreConfig):
    """The count field: beats of a vector, or samples of a batch (BatchNorm statistics)."""
    return unsigned((cfg.max_batch if cfg.kind.statistics == "batch" else cfg.beats_max).bit_length())


def count_multiplier(cfg: CoreConfig) -> int:
    """N = count * this: lanes for a vector's beats, 1 for a batch's samples."""
    return 1 if cfg.kind.statistics == "batch" else cfg.lanes


def vector_stats_layout(cfg: CoreConfig) -> data.StructLayout:
    return data.StructLayout({
        "beats": beats_shape(cfg),
        "s1": signed(cfg.s1_width),
        "s2": unsigned(cfg.s2_width),
        "overlong": 1,
    })


def vector_coefs_layout(cfg: CoreConfig) -> data.StructLayout:
    return data.StructLayout({
        "a": unsigned(cfg.a_width),
        "b": signed(cfg.b_width),
        "beats": beats_shape(cfg),
        "overlong": 1,
    })


def round_shift(m, value, shift, result):
    """``result = rnd(value, shift)`` (round half up, ``shift`` a signed Value), combinationally."""
    with m.If(shift >= 1):
        m.d.comb += result.eq(((value >> (shift - 1).as_unsigned()) + 1) >> 1)
    with m.Else():
        m.d.comb += result.eq(value << (-shift).as_unsigned())


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
        m.submodules.rsqrt = rsqrt = Rsqrt(cfg)

        n_width = cfg.count_width
        t_width = max(cfg.s2_width, (cfg.eps_int * cfg.reduction_max).bit_length()) + 1
        mul_a_width = max(n_width, cfg.s1_width) + 1                   # N or S1
        mul_b_width = max(t_width, cfg.s1_width, cfg.r_width) + 1      # t, S1 or R
        mul_a = Signal(signed(mul_a_width))
        mul_b = Signal(signed(mul_b_width))
        serial = cfg.scalar_mul == "serial"
        if serial:
            m.submodules.multiplier = multiplier = SerialMultiplier(mul_a_width, mul_b_width)
            product = multiplier.product
            m.d.comb += [multiplier.a.eq(mul_a), multiplier.b.eq(mul_b)]
        else:
            # operands and product registered: the multiplier has a register on both sides
            operand_a = Signal.like(mul_a)
            operand_b = Signal.like(mul_b)
            product = Signal(signed(mul_a_width + mul_b_width))
            m.d.sync += [operand_a.eq(mul_a), operand_b.eq(mul_b), product.eq(operand_a * operand_b)]
        operand_bits = _operand_bits(cfg)
        wait_states = []

        def multiply(state, a_value, b_value, next_state):
            """In ``state``: start ``a*b``.  Serial: ``product`` holds it in ``next_state``.
            Parallel: ``product`` holds it two states later."""
            m.d.comb += [mul_a.eq(a_value), mul_b.eq(b_value)]
            if serial:
                a_bits, b_bits = operand_bits[state]
                m.d.comb += [multiplier.start.eq(1), multiplier.a_chunks.eq(_chunks(a_bits)),
                             multiplier.b_chunks.eq(_chunks(b_bits))]
                m.next = f"{state}_WAIT"
                wait_states.append((f"{state}_WAIT", next_state))
            else:
                m.next = next_state

        n = Signal(n_width)
        s1 = Signal(signed(cfg.s1_width))
        mean_term = Signal(signed(cfg.s1_width))
        n_times_t = Signal(cfg.d_width + 1)
        d = Signal(cfg.d_width)
        r = Signal(cfg.r_width)
        sh = Signal(signed(max(abs(cfg.shift_min), abs(cfg.shift_max), cfg.a_frac).bit_length() + 3))
        zero = Signal()
        n_times_r = Signal(signed(mul_a_width + mul_b_width))
        overlong = Signal()
        beats = Signal.like(self.i.payload.beats)
        a = Signal(cfg.a_width)
        b = Signal(signed(cfg.b_width))

        a_next = Signal(cfg.a_width)
        b_next = Signal(signed(cfg.b_width))
        round_shift(m, n_times_r, sh, a_next)
        round_shift(m, product, sh, b_next)

        m.d.comb += [
            self.o.payload.a.eq(a),
            self.o.payload.b.eq(b),
            self.o.payload.beats.eq(beats),
            self.o.payload.overlong.eq(overlong),
            rsqrt.i.payload.eq(d),
        ]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    stats = self.i.payload
                    n_in = Signal.like(n)
                    t_in = Signal(t_width)
                    per_count = count_multiplier(cfg)
                    m.d.comb += [n_in.eq(stats.beats * per_count),
                                 t_in.eq(stats.s2 + cfg.eps_int * stats.beats * per_count)]
                    m.d.sync += [
                        n.eq(n_in),
                        s1.eq(stats.s1),
                        mean_term.eq(stats.s1 if cfg.subtracts_mean else 0),
                        beats.eq(stats.beats),
                        overlong.eq(stats.overlong),
                    ]
                    multiply("NT", n_in, t_in, "S1SQ")      # N*t starts as the stats arrive
            with m.State("S1SQ"):
                multiply("S1SQ", s1, s1, "D" if serial else "LATCH_NT")
                if serial:
                    m.d.sync += n_times_t.eq(product)
            with m.State("LATCH_NT"):
                m.d.sync += n_times_t.eq(product)
                m.next = "D"
            with m.State("D"):
                if cfg.subtracts_mean:
                    m.d.sync += d.eq(n_times_t - product)
                else:
                    m.d.sync += d.eq(n_times_t)
                m.next = "RSQRT_IN"
            with m.State("RSQRT_IN"):
                m.d.comb += rsqrt.i.valid.eq(1)
                m.d.sync += zero.eq((d == 0) | overlong)
                with m.If(rsqrt.i.ready):
                    m.next = "RSQRT_OUT"
            with m.State("RSQRT_OUT"):
                m.d.comb += rsqrt.o.ready.eq(1)
                with m.If(rsqrt.o.valid):
                    m.d.sync += [
                        r.eq(rsqrt.o.payload.r),
                        sh.eq(cfg.rsqrt_bits + cfg.rsqrt_m - 1 - cfg.a_frac + rsqrt.o.payload.s),
                    ]
                    m.next = "NR"
            with m.State("NR"):
                multiply("NR", n, r, "S1R")
            with m.State("S1R"):
                multiply("S1R", mean_term, r, "AB" if serial else "LATCH_NR")
                if serial:
                    m.d.sync += n_times_r.eq(product)
            with m.State("LATCH_NR"):
                m.d.sync += n_times_r.eq(product)
                m.next = "AB"
            with m.State("AB"):
                m.d.sync += [
                    a.eq(Mux(zero, 0, a_next)),
                    b.eq(Mux(zero, 0, b_next)),
                ]
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"
            for wait_state, next_state in wait_states:
                with m.State(wait_state):
                    with m.If(multiplier.done):
                        m.next = next_state
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

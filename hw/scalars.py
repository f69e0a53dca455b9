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

__all__ = ["VectorScalars", "scalars_latency", "vector_stats_layout", "vector_coefs_layout", "round_shift"]


#: Cycles the scalar stage spends outside the rsqrt unit, from the input transfer to ``o.valid``.
OWN_CYCLES = 8


def scalars_latency(cfg: CoreConfig) -> int:
    return rsqrt_latency(cfg) + OWN_CYCLES


def beats_shape(cfg: CoreConfig):
    return unsigned(cfg.beats_max.bit_length())


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
        t_width = max(cfg.s2_width, (cfg.eps_int * cfg.features).bit_length()) + 1
        mul_a_width = max(n_width, cfg.s1_width) + 1                   # N or S1
        mul_b_width = max(t_width, cfg.s1_width, cfg.r_width) + 1      # t, S1 or R
        mul_a = Signal(signed(mul_a_width))
        mul_b = Signal(signed(mul_b_width))
        product = Signal(signed(mul_a_width + mul_b_width))
        m.d.sync += product.eq(mul_a * mul_b)

        n = Signal(n_width)
        s1 = Signal(signed(cfg.s1_width))
        mean_term = Signal(signed(cfg.s1_width))
        t = Signal(t_width)
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
                    m.d.sync += [
                        n.eq(stats.beats * cfg.lanes),
                        s1.eq(stats.s1),
                        mean_term.eq(stats.s1 if cfg.norm == "layernorm" else 0),
                        t.eq(stats.s2 + cfg.eps_int * stats.beats * cfg.lanes),
                        beats.eq(stats.beats),
                        overlong.eq(stats.overlong),
                    ]
                    m.next = "NT"
            with m.State("NT"):                       # product <= N * t
                m.d.comb += [mul_a.eq(n), mul_b.eq(t)]
                m.next = "S1SQ"
            with m.State("S1SQ"):                     # product <= S1 * S1
                m.d.comb += [mul_a.eq(s1), mul_b.eq(s1)]
                m.d.sync += n_times_t.eq(product)
                m.next = "D"
            with m.State("D"):
                if cfg.norm == "layernorm":
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
            with m.State("NR"):                       # product <= N * R
                m.d.comb += [mul_a.eq(n), mul_b.eq(r)]
                m.next = "S1R"
            with m.State("S1R"):                      # product <= S1' * R
                m.d.comb += [mul_a.eq(mean_term), mul_b.eq(r)]
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
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

"""Input stage: accepts vectors beat by beat, stores them in the vector buffer and accumulates the
exact statistics ``S1 = sum(x)`` and ``S2 = sum(x*x)``.

The vector buffer is one circular memory of :func:`buffer_depth` beats (at least two vectors), so
the next vectors stream in while earlier ones stream out.  A vector is committed at its ``last``
beat; a vector longer than ``N_max`` is rolled back (write pointer back to its start), its beats
are dropped up to its ``last``, and a descriptor with ``overlong = 1`` takes its place.

Datapath (P lanes of ``W_in`` bits)::

    i.payload.data (P*W_in) --reg--> x_k --+--> sum x_k   (W_in + log2 P) --+--> S1 (s1_width)
                                           +--> sum x_k**2 (P multipliers) -+--> S2 (s2_width)
                                           +--> buffer write (P*W_in) at wr_addr

Members
-------
i : In(stream.Signature(input_layout(cfg)))
    The core's input stream (:mod:`normgen.hw.interface`).
hold : In(1)
    Take no beat that would start a new vector (a parameter write is waiting).
stats : Out(stream.Signature(vector_stats_layout(cfg)))
buffer : In(memory.WritePort.Signature(...))
    Drives the vector buffer's write port.
rd_ptr : In(ptr_bits + 1)
    The output stage's read pointer (one wrap bit above the address), to know the free space.
in_packet : Out(1)
    A vector has started on ``i`` and its ``last`` beat has not been taken yet.
busy : Out(1)
    A beat is inside this stage or a vector is partly received.
overlong : Out(1)
    Sticky: a vector longer than N_max was seen.
"""
from amaranth import *
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import CoreConfig
from .interface import input_layout
from .scalars import vector_stats_layout

__all__ = ["Ingest", "buffer_depth", "lane_values"]


def buffer_depth(cfg: CoreConfig) -> int:
    """Vector buffer depth in beats: a power of two holding two vectors of N_max, and at least 64
    beats so that short vectors overlap the per-vector latency."""
    need = max(2 * cfg.beats_max, 64)
    return 1 << (need - 1).bit_length()


def lane_values(value, lanes: int, width: int):
    """The ``lanes`` signed lanes of a packed word, lane k at bits [k*width, (k+1)*width)."""
    return [value[k * width:(k + 1) * width].as_signed() for k in range(lanes)]


class Ingest(wiring.Component):
    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        self._depth = buffer_depth(cfg)
        ptr_bits = (self._depth - 1).bit_length()
        super().__init__({
            "i": In(stream.Signature(input_layout(cfg))),
            "hold": In(1),
            "stats": Out(stream.Signature(vector_stats_layout(cfg))),
            "buffer": In(memory.WritePort.Signature(addr_width=ptr_bits,
                                                    shape=unsigned(cfg.lanes * cfg.in_format.width))),
            "rd_ptr": In(ptr_bits + 1),
            "in_packet": Out(1),
            "busy": Out(1),
            "overlong": Out(1),
        })

    @property
    def depth(self) -> int:
        return self._depth

    #: Cycles from the transfer of a vector's last beat to ``stats.valid``.
    LATENCY = 1

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        ptr_bits = self.buffer.addr.shape().width
        lanes, width = cfg.lanes, cfg.in_format.width

        # B stage: the registered beat
        b_valid = Signal()
        b_data = Signal(lanes * width)
        b_last = Signal()

        count = Signal(range(cfg.beats_max + 1))
        acc_s1 = Signal(signed(cfg.s1_width))
        acc_s2 = Signal(cfg.s2_width)
        wr_ptr = Signal(ptr_bits + 1)
        vec_start = Signal(ptr_bits + 1)
        dropping = Signal()

        xs = lane_values(b_data, lanes, width)
        beat_sum = Signal(signed(width + lanes.bit_length()))
        beat_sq = Signal(2 * width + lanes.bit_length())
        m.d.comb += [beat_sum.eq(sum(xs)), beat_sq.eq(sum(x * x for x in xs))]

        overlong_now = Signal()
        m.d.comb += overlong_now.eq(~dropping & (count == cfg.beats_max))
        push = Signal()
        advance = Signal()
        m.d.comb += [
            push.eq(b_valid & b_last),
            advance.eq(~push | self.stats.ready),
            self.stats.valid.eq(push),
            self.stats.payload.overlong.eq(dropping | overlong_now),
            self.stats.payload.beats.eq(count + 1),
            self.stats.payload.s1.eq(acc_s1 + beat_sum),
            self.stats.payload.s2.eq(acc_s2 + beat_sq),
            self.buffer.addr.eq(wr_ptr[:ptr_bits]),
            self.buffer.data.eq(b_data),
            self.buffer.en.eq(b_valid & advance & ~dropping & ~overlong_now),
        ]

        with m.If(b_valid & advance):
            with m.If(dropping):
                with m.If(b_last):
                    m.d.sync += dropping.eq(0)
            with m.Elif(overlong_now):
                m.d.sync += [wr_ptr.eq(vec_start), count.eq(0), acc_s1.eq(0), acc_s2.eq(0),
                             self.overlong.eq(1)]
                with m.If(~b_last):
                    m.d.sync += dropping.eq(1)
            with m.Else():
                m.d.sync += wr_ptr.eq(wr_ptr + 1)
                with m.If(b_last):
                    m.d.sync += [count.eq(0), acc_s1.eq(0), acc_s2.eq(0), vec_start.eq(wr_ptr + 1)]
                with m.Else():
                    m.d.sync += [count.eq(count + 1), acc_s1.eq(acc_s1 + beat_sum),
                                 acc_s2.eq(acc_s2 + beat_sq)]

        # A side: take a beat when the B stage moves on and the buffer has room for both beats.
        occupancy = Signal(ptr_bits + 1)
        space = Signal()
        m.d.comb += [
            occupancy.eq(wr_ptr - self.rd_ptr),
            space.eq(occupancy + b_valid < self._depth),
            self.i.ready.eq(advance & space & ~(self.hold & ~self.in_packet)),
            self.busy.eq(b_valid | self.in_packet),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                b_valid.eq(1),
                b_data.eq(self.i.payload.data),
                b_last.eq(self.i.payload.last),
                self.in_packet.eq(~self.i.payload.last),
            ]
        with m.Elif(advance):
            m.d.sync += b_valid.eq(0)
        return m

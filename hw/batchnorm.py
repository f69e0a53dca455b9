"""BatchNorm inference core: per-channel constants into the shared element datapath.

::

    i --> S1 (beat register, channel counter) --> S1b (coefficients registered) --> ElementDatapath
                 |                                                  (x*A_c - B_c, round, saturate) --> o
    params --> A/B memory (P lanes per word, one word per beat of channels) --^

A sample is one packet of C channels (``C = features``), P lanes per beat; a shorter packet uses
the first channels.  A packet longer than C gives its C outputs and then one beat with
``tuser = 1``, ``tdata = 0``, ``tlast = 1`` in place of the rest, which is dropped up to its
``tlast``; ``status_overlong`` rises (sticky until reset).

Members are those of every core (:mod:`normgen.hw.interface`); the ``params`` stream carries the
folded constants ``scale`` (P·a_width bits) and ``shift`` (P·b_width bits).
"""
from amaranth import *
from amaranth.lib import memory, wiring

from .config import CoreConfig
from .edge import constant_memory_attrs
from .interface import Core
from .kinds import register_core
from .output import ElementDatapath, coef_shapes, datapath_latency

__all__ = ["BatchNormCore", "batchnorm_latency"]


def batchnorm_latency(cfg: CoreConfig) -> int:
    """Cycles from an input beat's transfer to its output beat's ``o.valid`` (no stall): the beat
    register (with the coefficient memory's read), the read data register, the datapath."""
    return 2 + datapath_latency(cfg)


def _pack_coefs(cfg: CoreConfig) -> list[int]:
    a_width, b_width, lanes = cfg.a_width, cfg.b_width, cfg.lanes
    words = []
    for beat in range(cfg.beats_max):
        word = 0
        for k in range(lanes):
            c = beat * lanes + k
            word |= (int(cfg.scale_int[c]) & ((1 << a_width) - 1)) << (k * a_width)
            word |= (int(cfg.shift_int[c]) & ((1 << b_width) - 1)) << (lanes * a_width + k * b_width)
        words.append(word)
    return words


class BatchNormCore(Core):
    """BatchNorm inference: ``x*A_c - B_c`` per channel with host-folded constants.

    Members are those of :func:`normgen.hw.interface.core_members`: ``i`` (one sample = one
    packet of up to C channels), ``o`` (one output beat per input beat; a packet longer than C
    gives its C outputs, then one ``error`` beat), ``params`` (``addr``, ``scale``, ``shift``: the
    folded constants of one beat of channels, from :func:`normgen.host.fold.fold_batchnorm`) and
    ``overlong``.  ``latency``: cycles from an input beat's transfer to its output beat's
    ``o.valid`` (the core streams; no vector buffer)."""

    LATENCY_MEANING = "from an input beat to its output beat"

    latency_of = staticmethod(batchnorm_latency)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes = cfg.lanes
        m.submodules.datapath = datapath = ElementDatapath(cfg, shared_coefs=False)
        a_width = coef_shapes(cfg)[0].width
        m.submodules.coefs = coefs = memory.Memory(
            shape=unsigned(lanes * (a_width + cfg.b_width)), depth=cfg.beats_max, init=_pack_coefs(cfg),
            attrs=constant_memory_attrs(lanes * (a_width + cfg.b_width)))
        coef_wr = coefs.write_port()
        coef_rd = coefs.read_port(domain="sync")

        advance = datapath.i.ready
        beat = Signal(range(cfg.beats_max + 1))
        in_packet = Signal()
        dropping = Signal()
        s1_valid, s1_last, s1_err = Signal(), Signal(), Signal()
        s1_x = Signal.like(self.i.payload.data.as_value())

        take = Signal()
        m.d.comb += [
            self.i.ready.eq(advance & ~(self.params.valid & ~in_packet)),
            take.eq(self.i.valid & self.i.ready),
            coef_rd.addr.eq(beat),
            coef_rd.en.eq(advance),
        ]
        overlong_now = ~dropping & (beat == cfg.beats_max)
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(take & ~dropping),
                s1_x.eq(Mux(overlong_now, 0, self.i.payload.data.as_value())),
                s1_last.eq(self.i.payload.last | overlong_now),
                s1_err.eq(overlong_now),
            ]
        with m.If(take):
            m.d.sync += in_packet.eq(~self.i.payload.last)
            with m.If(dropping):
                m.d.sync += dropping.eq(~self.i.payload.last)
            with m.Elif(overlong_now):
                m.d.sync += [beat.eq(0), dropping.eq(~self.i.payload.last), self.overlong.eq(1)]
            with m.Elif(self.i.payload.last):
                m.d.sync += beat.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # S1b: the memory's read data registered (a block RAM output register), the beat with it.
        s1b_valid, s1b_last, s1b_err = Signal(), Signal(), Signal()
        s1b_x = Signal.like(s1_x, reset_less=True)
        s1b_coef = Signal.like(coef_rd.data, reset_less=True)
        with m.If(advance):
            m.d.sync += [s1b_valid.eq(s1_valid), s1b_last.eq(s1_last), s1b_err.eq(s1_err), s1b_x.eq(s1_x),
                         s1b_coef.eq(coef_rd.data)]
        m.d.comb += [
            datapath.i.valid.eq(s1b_valid),
            datapath.i.payload.x.eq(s1b_x),
            datapath.i.payload.a.eq(s1b_coef[:lanes * a_width]),
            datapath.i.payload.b.eq(s1b_coef[lanes * a_width:]),
            datapath.i.payload.last.eq(s1b_last),
            datapath.i.payload.error.eq(s1b_err),
        ]

        wiring.connect(m, datapath.o, wiring.flipped(self.o))

        idle = ~in_packet & ~s1_valid & ~s1b_valid & ~datapath.busy
        m.d.comb += [
            self.params.ready.eq(idle),
            coef_wr.addr.eq(self.params.payload.addr),
            coef_wr.data.eq(Cat(self.params.payload.scale, self.params.payload.shift)),
            coef_wr.en.eq(self.params.valid & idle & (self.params.payload.addr < cfg.beats_max)),
        ]
        return m


register_core(BatchNormCore, "batchnorm")

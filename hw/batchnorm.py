"""BatchNorm inference core: per-channel constants into the shared element datapath.

::

    s_axis --> S1 (beat register, channel counter) --> ElementDatapath (x*A_c - B_c, round,
                  |                                         saturate) --> m_axis
    param  --> A/B memory (P lanes per word, one word per beat of channels) --^

A sample is one packet of C channels (``C = features``), P lanes per beat; a shorter packet uses
the first channels.  A packet longer than C gives its C outputs and then one beat with
``tuser = 1``, ``tdata = 0``, ``tlast = 1`` in place of the rest, which is dropped up to its
``tlast``; ``status_overlong`` rises (sticky until reset).

Members are those of :class:`~normgen.hw.top.NormCore`, with ``param_scale`` (P·a_width bits) and
``param_shift`` (P·b_width bits) in place of ``param_gamma``/``param_beta``.
"""
from amaranth import *
from amaranth.lib import memory, wiring

from .config import CoreConfig
from .output import ElementDatapath, coef_shapes, core_ports, datapath_latency

__all__ = ["BatchNormCore", "batchnorm_latency"]


def batchnorm_latency(cfg: CoreConfig) -> int:
    """Cycles from an input beat's transfer to its output beat's ``tvalid`` (no stall)."""
    return 1 + datapath_latency(cfg)


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


class BatchNormCore(wiring.Component):
    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig) or not cfg.is_bn_inference:
            raise TypeError(f"cfg must be a batchnorm CoreConfig, not {cfg!r}")
        self._cfg = cfg
        super().__init__(core_ports(cfg, params={"scale": cfg.a_width, "shift": cfg.b_width}))

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    @property
    def latency(self) -> int:
        return batchnorm_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes = cfg.lanes
        m.submodules.datapath = datapath = ElementDatapath(cfg, shared_coefs=False)
        a_width = coef_shapes(cfg)[0].width
        m.submodules.coefs = coefs = memory.Memory(
            shape=unsigned(lanes * (a_width + cfg.b_width)), depth=cfg.beats_max, init=_pack_coefs(cfg))
        coef_wr = coefs.write_port()
        coef_rd = coefs.read_port(domain="sync")

        advance = datapath.i.ready
        beat = Signal(range(cfg.beats_max + 1))
        in_packet = Signal()
        dropping = Signal()
        s1_valid, s1_last, s1_err = Signal(), Signal(), Signal()
        s1_x = Signal.like(self.s_axis_tdata)

        take = Signal()
        m.d.comb += [
            self.s_axis_tready.eq(advance & ~(self.param_valid & ~in_packet)),
            take.eq(self.s_axis_tvalid & self.s_axis_tready),
            coef_rd.addr.eq(beat),
            coef_rd.en.eq(advance),
        ]
        overlong_now = ~dropping & (beat == cfg.beats_max)
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(take & ~dropping),
                s1_x.eq(Mux(overlong_now, 0, self.s_axis_tdata)),
                s1_last.eq(self.s_axis_tlast | overlong_now),
                s1_err.eq(overlong_now),
            ]
        with m.If(take):
            m.d.sync += in_packet.eq(~self.s_axis_tlast)
            with m.If(dropping):
                m.d.sync += dropping.eq(~self.s_axis_tlast)
            with m.Elif(overlong_now):
                m.d.sync += [beat.eq(0), dropping.eq(~self.s_axis_tlast), self.status_overlong.eq(1)]
            with m.Elif(self.s_axis_tlast):
                m.d.sync += beat.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        m.d.comb += [
            datapath.i.valid.eq(s1_valid),
            datapath.i.payload.x.eq(s1_x),
            datapath.i.payload.a.eq(coef_rd.data[:lanes * a_width]),
            datapath.i.payload.b.eq(coef_rd.data[lanes * a_width:]),
            datapath.i.payload.last.eq(s1_last),
            datapath.i.payload.error.eq(s1_err),
            self.m_axis_tvalid.eq(datapath.o.valid),
            self.m_axis_tdata.eq(datapath.o.payload.data),
            self.m_axis_tlast.eq(datapath.o.payload.last),
            self.m_axis_tuser.eq(datapath.o.payload.error),
            datapath.o.ready.eq(self.m_axis_tready),
        ]

        idle = ~in_packet & ~s1_valid & ~datapath.busy
        m.d.comb += [
            self.param_ready.eq(idle),
            coef_wr.addr.eq(self.param_addr),
            coef_wr.data.eq(Cat(self.param_scale, self.param_shift)),
            coef_wr.en.eq(self.param_valid & idle & (self.param_addr < cfg.beats_max)),
        ]
        return m

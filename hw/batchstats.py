"""BatchNorm with batch statistics (training forward): LayerNorm's engine on the other axis.

A batch is M samples of C channels (P lanes per beat); each sample is one packet (``tlast`` on its
last beat) and the batch ends with ``tuser = 1`` on the last beat of its last sample.  Three
passes per batch, one batch at a time::

    IN      samples -> batch buffer (M_max x C);  per channel S1 += x, S2 += x*x
            (accumulator memory, read-modify-write)
    STATS   per channel: (M, S1_c, S2_c) -> VectorScalars (D, rsqrt, A_c, B_c) -> coefficient memory
    OUT     batch buffer -> ElementDatapath (x*A_c - B_c, gamma_c*v + beta_c, round, saturate)

The output repeats the input framing: one packet per sample, ``m_axis_tuser[1]`` on the last beat
of the batch.  A malformed batch — a sample that is not exactly C channels, more than M_max
samples, ``tuser`` without ``tlast`` — is rejected whole: its beats are taken and dropped up to the
batch end, and one beat with ``tdata = 0``, ``tuser = 0b11``, ``tlast = 1`` replaces its output;
``status_overlong`` rises (sticky until reset).  A batch of one sample is legal: its variance is 0,
so every output is β (what BatchNorm does at batch size 1).

The running statistics (PyTorch's momentum update with the unbiased variance) are kept by the
host: it sent the batch, so it has the same exact sums S1, S2 the core accumulated
(:func:`normgen.sim.golden.running_statistics`).
"""
from amaranth import *
from amaranth.lib import memory, wiring

from .config import CoreConfig
from .edge import scratch_memory
from .ingest import lane_values
from .interface import Core
from .kinds import register_core
from .nearest import NearestEvenFixup
from .output import ElementDatapath, datapath_latency, fixup_latency, pack_params
from .scalars import VectorScalars, scalars_latency, stats_e_n2, vector_stats_layout

__all__ = ["BatchStatsCore", "batch_stats_latency"]


def batch_stats_latency(cfg: CoreConfig) -> int:
    """Cycles from the transfer of a batch's last beat to the first output beat's ``tvalid``:
    a drain cycle, per beat of channels a read, a wait, P scalar-stage runs and a write, then the
    output pipeline."""
    per_beat = 3 + cfg.lanes * (scalars_latency(cfg) + 1)
    return 1 + cfg.beats_max * per_beat + 3 + datapath_latency(cfg) + fixup_latency(cfg)


class BatchStatsCore(Core):
    """Members as :class:`~normgen.hw.vectornorm.NormCore`; ``i`` and ``o`` carry the batch-end
    flag ``end`` (on the last beat of the last sample of a batch), ``o.error`` marks the single
    beat that replaces a malformed batch.  ``latency``: cycles from the transfer of a batch's last
    beat to ``o.valid`` of its first output beat."""

    LATENCY_MEANING = "from the batch's last input beat to its first output beat"

    latency_of = staticmethod(batch_stats_latency)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes, beats_max, m_max = cfg.lanes, cfg.beats_max, cfg.max_batch
        w_in = cfg.in_format.width
        s1_w, s2_w = cfg.s1_width, cfg.s2_width
        a_w, b_w = cfg.a_width, cfg.b_width

        m.submodules.scalars = scalars = VectorScalars(cfg)
        m.submodules.datapath = datapath = ElementDatapath(cfg, shared_coefs=False)
        # Scratch memories (no initializer in the Verilog): the batch buffer and the coefficients
        # are written before they are read, the accumulators are cleared in CLEAR after reset.
        exact = cfg.exact_resolution          # nearest-even: each channel's S1 and D kept too
        stat_w = cfg.s1_width + cfg.d_width if exact else 0
        m.submodules.buffer = buffer = scratch_memory(shape=unsigned(lanes * w_in), depth=m_max * beats_max)
        m.submodules.acc = acc = scratch_memory(shape=unsigned(lanes * (s1_w + s2_w)), depth=beats_max)
        m.submodules.coefs = coefs = scratch_memory(shape=unsigned(lanes * (a_w + b_w + stat_w)), depth=beats_max)
        buf_wr, buf_rd = buffer.write_port(), buffer.read_port(domain="sync")
        acc_wr, acc_rd = acc.write_port(), acc.read_port(domain="sync")
        coef_wr, coef_rd = coefs.write_port(), coefs.read_port(domain="sync")

        advance = datapath.i.ready
        beat = Signal(range(beats_max + 1))          # channel beat within a sample
        sample = Signal(range(m_max + 1))            # samples completed in this batch
        batch_size = Signal(range(m_max + 1))
        wr_ptr = Signal(range(m_max * beats_max + 1))
        rd_ptr = Signal(range(m_max * beats_max + 1))
        bad = Signal()
        in_batch = Signal()
        lane = Signal(range(max(lanes, 2)))   # one bit even for P = 1: no zero-width wire
        stats_word = Signal(lanes * (s1_w + s2_w))
        a_word = Signal(lanes * a_w)
        b_word = Signal(lanes * b_w)
        stat_words = []                              # nearest-even: each lane's S1 and D
        if exact:
            s1_word, d_word = Signal(lanes * cfg.s1_width), Signal(lanes * cfg.d_width)
            stat_words = [s1_word, d_word]

        # Accumulate: the beat taken in cycle t is added to acc[beat] in cycle t+1.
        add_valid = Signal()
        add_beat = Signal.like(beat)
        add_x = Signal(lanes * w_in)
        forward = Signal()
        forward_word = Signal.like(stats_word)
        old_word = Signal.like(stats_word)
        new_word = Signal.like(stats_word)
        m.d.comb += old_word.eq(Mux(forward, forward_word, acc_rd.data))
        old_s1 = lane_values(old_word, lanes, s1_w)
        old_s2 = [old_word[lanes * s1_w + k * s2_w:lanes * s1_w + (k + 1) * s2_w] for k in range(lanes)]
        xs = lane_values(add_x, lanes, w_in)
        m.d.comb += new_word.eq(Cat(*[(s + x)[:s1_w] for s, x in zip(old_s1, xs)],
                                    *[(q + x * x)[:s2_w] for q, x in zip(old_s2, xs)]))

        # Output issue: S1 (memory data), S1b (registered), then the datapath.
        issue = Signal()
        issue_last = Signal()
        issue_end = Signal()
        issue_error = Signal()
        s1_valid, s1_last, s1_end, s1_err = Signal(), Signal(), Signal(), Signal()
        s1b_valid, s1b_last, s1b_end, s1b_err = Signal(), Signal(), Signal(), Signal()
        s1b_x = Signal(lanes * w_in)
        s1b_coef = Signal.like(coef_rd.data)
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(issue), s1_last.eq(issue_last), s1_end.eq(issue_end), s1_err.eq(issue_error),
                s1b_valid.eq(s1_valid), s1b_last.eq(s1_last), s1b_end.eq(s1_end), s1b_err.eq(s1_err),
                s1b_x.eq(buf_rd.data), s1b_coef.eq(coef_rd.data),
            ]
        m.d.comb += [
            buf_rd.addr.eq(rd_ptr), buf_rd.en.eq(advance),
            coef_rd.addr.eq(beat), coef_rd.en.eq(advance),
            acc_rd.addr.eq(beat), acc_rd.en.eq(1),
            datapath.i.valid.eq(s1b_valid),
            datapath.i.payload.x.eq(Mux(s1b_err, 0, s1b_x)),
            datapath.i.payload.a.eq(s1b_coef[:lanes * a_w]),
            datapath.i.payload.b.eq(s1b_coef[lanes * a_w:lanes * (a_w + b_w)]),
            datapath.i.payload.last.eq(s1b_last),
            datapath.i.payload.error.eq(s1b_err),
            datapath.i.payload.end.eq(s1b_end),
        ]
        if exact:
            m.d.comb += [
                datapath.i.payload.n.eq(batch_size),
                Cat(datapath.i.payload.s1, datapath.i.payload.d).eq(s1b_coef[lanes * (a_w + b_w):]),
            ]
            m.submodules.fixup = fixup = NearestEvenFixup(cfg, shared_stats=False)
            wiring.connect(m, datapath.o, fixup.i)
            wiring.connect(m, fixup.o, wiring.flipped(self.o))
        else:
            wiring.connect(m, datapath.o, wiring.flipped(self.o))

        if cfg.affine:
            m.submodules.params = params = memory.Memory(
                shape=unsigned(lanes * 2 * cfg.param_format.width), depth=beats_max, init=pack_params(cfg))
            par_wr, par_rd = params.write_port(), params.read_port(domain="sync")
            s1b_par = Signal.like(par_rd.data)
            with m.If(advance):
                m.d.sync += s1b_par.eq(par_rd.data)
            m.d.comb += [par_rd.addr.eq(beat), par_rd.en.eq(advance), datapath.i.payload.par.eq(s1b_par)]

        take = Signal()
        hold = Signal()
        with m.FSM() as fsm:
            with m.State("CLEAR"):                    # after reset or a rejected batch
                m.d.comb += [acc_wr.addr.eq(beat), acc_wr.data.eq(0), acc_wr.en.eq(1)]
                m.d.sync += beat.eq(beat + 1)
                with m.If(beat == beats_max - 1):
                    m.d.sync += [beat.eq(0), sample.eq(0), wr_ptr.eq(0), bad.eq(0), forward.eq(0)]
                    m.next = "IN"
            with m.State("IN"):
                m.d.comb += [
                    self.i.ready.eq(~hold),
                    take.eq(self.i.valid & self.i.ready),
                ]
                overflow = (beat == beats_max) | (sample == m_max)
                write_ok = take & ~bad & ~overflow
                m.d.comb += [buf_wr.addr.eq(wr_ptr), buf_wr.data.eq(self.i.payload.data.as_value()), buf_wr.en.eq(write_ok)]
                with m.If(take):
                    m.d.sync += [
                        add_valid.eq(write_ok), add_beat.eq(beat), add_x.eq(self.i.payload.data.as_value()),
                        forward.eq(add_valid & (add_beat == beat)), forward_word.eq(new_word),
                        in_batch.eq(~self.i.payload.end),
                    ]
                    with m.If(write_ok):
                        m.d.sync += wr_ptr.eq(wr_ptr + 1)
                    now_bad = (bad | overflow | (self.i.payload.last & (beat + 1 != beats_max))
                               | (self.i.payload.end & ~self.i.payload.last))
                    m.d.sync += bad.eq(now_bad)
                    with m.If(self.i.payload.last):
                        m.d.sync += [beat.eq(0), sample.eq(Mux(sample == m_max, m_max, sample + 1))]
                    with m.Elif(beat != beats_max):
                        m.d.sync += beat.eq(beat + 1)
                    with m.If(self.i.payload.end):
                        m.d.sync += [batch_size.eq(sample + 1), beat.eq(0), sample.eq(0), wr_ptr.eq(0)]
                        with m.If(now_bad):
                            m.d.sync += self.overlong.eq(1)
                            m.next = "ERROR_OUT"
                        with m.Else():
                            m.next = "DRAIN"
                with m.Else():
                    m.d.sync += [add_valid.eq(0), forward.eq(0)]
            with m.State("DRAIN"):                    # the last accumulation lands
                m.d.sync += [add_valid.eq(0), forward.eq(0)]
                m.next = "ST_READ"
            with m.State("ST_READ"):                  # acc[beat] appears next cycle
                m.d.sync += lane.eq(0)
                m.next = "ST_LATCH"
            with m.State("ST_LATCH"):
                m.d.sync += stats_word.eq(acc_rd.data)
                m.next = "ST_PUSH"
            with m.State("ST_PUSH"):
                s1s = lane_values(stats_word, lanes, s1_w)
                s2s = [stats_word[lanes * s1_w + k * s2_w:lanes * s1_w + (k + 1) * s2_w] for k in range(lanes)]
                m.d.comb += [
                    scalars.i.valid.eq(1),
                    scalars.i.payload.beats.eq(batch_size),
                    scalars.i.payload.s1.eq(Array(s1s)[lane]),
                    scalars.i.payload.overlong.eq(0),
                ]
                m.d.comb += scalars.i.payload.s2.eq(Array(s2s)[lane])
                if "e_n2" in vector_stats_layout(cfg).members:    # e*M*M
                    m.d.comb += scalars.i.payload.e_n2.eq(stats_e_n2(cfg, batch_size))
                with m.If(scalars.i.ready):
                    m.next = "ST_WAIT"
            with m.State("ST_WAIT"):
                m.d.comb += scalars.o.ready.eq(1)
                with m.If(scalars.o.valid):
                    m.d.sync += [
                        a_word.eq(Cat(a_word[a_w:], scalars.o.payload.a)),
                        b_word.eq(Cat(b_word[b_w:], scalars.o.payload.b)),
                        lane.eq(lane + 1),
                    ]
                    if exact:
                        m.d.sync += [s1_word.eq(Cat(s1_word[cfg.s1_width:], scalars.o.payload.s1)),
                                     d_word.eq(Cat(d_word[cfg.d_width:], scalars.o.payload.d))]
                    with m.If(lane == lanes - 1):
                        m.next = "ST_WRITE"
                    with m.Else():
                        m.next = "ST_PUSH"
            with m.State("ST_WRITE"):                 # constants in, accumulators cleared
                m.d.comb += [
                    coef_wr.addr.eq(beat), coef_wr.data.eq(Cat(a_word, b_word, *stat_words)), coef_wr.en.eq(1),
                    acc_wr.addr.eq(beat), acc_wr.data.eq(0), acc_wr.en.eq(1),
                ]
                with m.If(beat == beats_max - 1):
                    m.d.sync += [beat.eq(0), sample.eq(0), rd_ptr.eq(0)]
                    m.next = "OUT"
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
                    m.next = "ST_READ"
            with m.State("OUT"):
                last = beat == beats_max - 1
                m.d.comb += [issue.eq(advance), issue_last.eq(last),
                             issue_end.eq(last & (sample + 1 == batch_size))]
                with m.If(advance):
                    m.d.sync += rd_ptr.eq(rd_ptr + 1)
                    with m.If(last):
                        m.d.sync += [beat.eq(0), sample.eq(sample + 1)]
                        with m.If(sample + 1 == batch_size):
                            m.d.sync += [sample.eq(0), rd_ptr.eq(0), in_batch.eq(0)]
                            m.next = "IN"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("ERROR_OUT"):
                m.d.comb += [issue.eq(advance), issue_last.eq(1), issue_end.eq(1), issue_error.eq(1)]
                with m.If(advance):
                    m.d.sync += [beat.eq(0), in_batch.eq(0)]
                    m.next = "CLEAR"
        # accumulation writes, one cycle behind the beats (IN and DRAIN only)
        with m.If(add_valid & (fsm.ongoing("IN") | fsm.ongoing("DRAIN"))):
            m.d.comb += [acc_wr.addr.eq(add_beat), acc_wr.data.eq(new_word), acc_wr.en.eq(1)]

        busy = s1_valid | s1b_valid | datapath.busy | (fixup.busy if exact else 0)
        m.d.comb += hold.eq(0)
        if cfg.affine:
            idle = fsm.ongoing("IN") & ~in_batch & ~busy & ~add_valid
            m.d.comb += [
                hold.eq(self.params.valid & ~in_batch),
                self.params.ready.eq(idle),
                par_wr.addr.eq(self.params.payload.addr),
                par_wr.data.eq(Cat(self.params.payload.gamma, self.params.payload.beta)),
                par_wr.en.eq(self.params.valid & idle & (self.params.payload.addr < beats_max)),
            ]
        return m


register_core(BatchStatsCore, "batchnorm-batch")

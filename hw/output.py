"""Output stage: reads each vector back from the buffer and applies the per-element datapath.

Per lane (widths from :class:`~normgen.hw.config.CoreConfig`)::

    x (W_in) --*A (a_width)--> -B --> u (u_width) --rnd FA-FZ--> v (v_width)
      --*gamma (W_p)--> +beta<<FZ --> w (w_width) --rnd, saturate--> y (W_out)

Pipeline, all stages stall together while the output register is full and not taken::

    issue (buffer and gamma/beta read) -> S1 memory data -> S2 u -> S3 v [-> S4 w] -> o

Members
-------
coefs : In(stream.Signature(vector_coefs_layout(cfg)))
rd_addr, rd_en : Out;  rd_data : In(P*W_in)
    Vector buffer read port (synchronous, ``rd_en`` gates it).
rd_ptr : Out(ptr_bits + 1)
    Beats read so far (with a wrap bit), for the input stage's free-space count.
par_addr : Out;  par_data : In(P*2*W_p)
    γ/β memory read port (same enable), affine cores only.
o : Out(stream.Signature(StructLayout({"data": P*W_out, "last": 1, "error": 1})))
busy : Out(1)
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import CoreConfig
from .ingest import buffer_depth, lane_values
from .scalars import vector_coefs_layout

__all__ = ["OutputStage", "output_latency", "output_layout", "param_addr_bits"]


def output_layout(cfg: CoreConfig) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(cfg.lanes * cfg.out_format.width), "last": 1, "error": 1})


def output_latency(cfg: CoreConfig) -> int:
    """Issue, memory data, u, v, [w,] output register."""
    return 6 if cfg.affine else 5


def param_addr_bits(cfg: CoreConfig) -> int:
    return max(1, (cfg.beats_max - 1).bit_length())


class OutputStage(wiring.Component):
    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        ptr_bits = (buffer_depth(cfg) - 1).bit_length()
        members = {
            "coefs": In(stream.Signature(vector_coefs_layout(cfg))),
            "rd_addr": Out(ptr_bits),
            "rd_en": Out(1),
            "rd_data": In(cfg.lanes * cfg.in_format.width),
            "rd_ptr": Out(ptr_bits + 1),
            "o": Out(stream.Signature(output_layout(cfg))),
            "busy": Out(1),
        }
        if cfg.affine:
            members["par_addr"] = Out(param_addr_bits(cfg))
            members["par_data"] = In(cfg.lanes * 2 * cfg.param_format.width)
        super().__init__(members)

    @property
    def latency(self) -> int:
        """Cycles from the ``coefs`` transfer to ``o.valid`` of the vector's first beat."""
        return output_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes = cfg.lanes
        w_in, w_out, w_p = cfg.in_format.width, cfg.out_format.width, cfg.param_format.width
        ptr_bits = self.rd_addr.shape().width

        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Issue: one beat per cycle of the current vector.
        active = Signal()
        beat = Signal.like(self.coefs.payload.beats)
        cur = Signal.like(self.coefs.payload)
        issue = Signal()
        issue_last = Signal()
        m.d.comb += [
            issue.eq(active & advance),
            issue_last.eq(cur.overlong | (beat + 1 == cur.beats)),
            self.coefs.ready.eq(advance & (~active | issue_last)),
            self.rd_addr.eq(self.rd_ptr[:ptr_bits]),
            self.rd_en.eq(advance),
        ]
        if cfg.affine:
            m.d.comb += self.par_addr.eq(beat)
        with m.If(issue):
            m.d.sync += beat.eq(beat + 1)
            with m.If(~cur.overlong):
                m.d.sync += self.rd_ptr.eq(self.rd_ptr + 1)
            with m.If(issue_last):
                m.d.sync += active.eq(0)
        with m.If(self.coefs.valid & self.coefs.ready):
            m.d.sync += [active.eq(1), beat.eq(0), cur.eq(self.coefs.payload)]

        # S1: memory data out; carry the vector constants and flags along.
        s1_valid, s1_last, s1_err = Signal(), Signal(), Signal()
        s1_a = Signal(cfg.a_width)
        s1_b = Signal(signed(cfg.b_width))
        # S2: u = x*A - B
        s2_valid, s2_last, s2_err = Signal(), Signal(), Signal()
        s2_u = [Signal(signed(cfg.u_width), name=f"u{k}") for k in range(lanes)]
        # S3: v = rnd(u, FA - FZ)
        s3_valid, s3_last, s3_err = Signal(), Signal(), Signal()
        s3_v = [Signal(signed(cfg.v_width), name=f"v{k}") for k in range(lanes)]

        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(issue), s1_last.eq(issue_last), s1_err.eq(cur.overlong),
                s1_a.eq(cur.a), s1_b.eq(cur.b),
                s2_valid.eq(s1_valid), s2_last.eq(s1_last), s2_err.eq(s1_err),
                s3_valid.eq(s2_valid), s3_last.eq(s2_last), s3_err.eq(s2_err),
            ]
            for x, u in zip(lane_values(self.rd_data, lanes, w_in), s2_u):
                m.d.sync += u.eq(x * s1_a - s1_b)
            half = 1 << (cfg.a_frac - cfg.z_frac - 1)
            for u, v in zip(s2_u, s3_v):
                m.d.sync += v.eq((u + half) >> (cfg.a_frac - cfg.z_frac))

        if cfg.affine:
            # The γ/β word read with the beat, delayed to S3 alongside v.
            par1 = self.par_data
            par2 = Signal.like(self.par_data)
            par3 = Signal.like(self.par_data)
            s4_valid, s4_last, s4_err = Signal(), Signal(), Signal()
            s4_w = [Signal(signed(cfg.w_width), name=f"w{k}") for k in range(lanes)]
            gammas = lane_values(par3, lanes, w_p)
            betas = lane_values(par3[lanes * w_p:], lanes, w_p)
            with m.If(advance):
                m.d.sync += [par2.eq(par1), par3.eq(par2),
                             s4_valid.eq(s3_valid), s4_last.eq(s3_last), s4_err.eq(s3_err)]
                for v, g, b, w in zip(s3_v, gammas, betas, s4_w):
                    m.d.sync += w.eq(g * v + (b << cfg.z_frac))
            last_valid, last_flag, last_err, last_w = s4_valid, s4_last, s4_err, s4_w
        else:
            last_valid, last_flag, last_err, last_w = s3_valid, s3_last, s3_err, s3_v

        # Output register: round to the output grid and saturate.
        shift = cfg.w_frac - cfg.out_format.frac_bits
        lo, hi = cfg.out_format.min_int, cfg.out_format.max_int
        ys = []
        for k, w in enumerate(last_w):
            rounded = Signal(signed(cfg.w_width + 1), name=f"rounded{k}")
            y = Signal(signed(w_out), name=f"y{k}")
            m.d.comb += rounded.eq((w + (1 << (shift - 1))) >> shift)
            with m.If(last_err | (rounded < lo) | (rounded > hi)):
                m.d.comb += y.eq(Mux(last_err, 0, Mux(rounded < lo, lo, hi)))
            with m.Else():
                m.d.comb += y.eq(rounded)
            ys.append(y)
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(last_valid),
                self.o.payload.data.eq(Cat(*ys)),
                self.o.payload.last.eq(last_flag),
                self.o.payload.error.eq(last_err),
            ]
        m.d.comb += self.busy.eq(active | s1_valid | s2_valid | s3_valid | last_valid | self.o.valid)
        return m

"""Top level: the normalization core with AXI4-Stream ports, and Verilog generation.

Block diagram::

    s_axis --> Ingest --stats--> FIFO --> VectorScalars --coefs--> OutputStage --> m_axis
                 |  (S1, S2, N)            (D, rsqrt, A, B)            ^   ^
                 +--> vector buffer (circular, 2+ vectors) ------------+   |
    param  --------> γ/β memory (initialised from the configuration) ------+

Ports are listed in ``docs/interface.md``.
"""
from __future__ import annotations

from amaranth import *
from amaranth.back import rtlil
from amaranth.lib import fifo, memory, wiring

from .config import CoreConfig
from .ingest import Ingest, buffer_depth
from .output import OutputStage, affine_params, core_ports, output_latency
from .scalars import VectorScalars, scalars_latency
from .streams import through_fifo

__all__ = ["NormCore", "build_core", "pack_params", "generate_verilog", "core_latency", "STATS_FIFO_DEPTH"]

#: Vectors whose statistics can wait for the scalar stage.
STATS_FIFO_DEPTH = 4


def core_latency(cfg: CoreConfig) -> int:
    """Cycles from the transfer of a vector's last input beat to ``m_axis_tvalid`` of its first
    output beat, when the core was idle and the output is not stalled.  (BatchNorm inference:
    from each input beat to its output beat.)"""
    if cfg.is_bn_inference:
        from .batchnorm import batchnorm_latency
        return batchnorm_latency(cfg)
    if cfg.is_bn_batch:
        from .batchstats import batch_stats_latency
        return batch_stats_latency(cfg)
    fifo_latency = 1                     # SyncFIFO: first word readable the cycle after the write
    return Ingest.LATENCY + fifo_latency + scalars_latency(cfg) + output_latency(cfg)


def pack_params(cfg: CoreConfig) -> list[int]:
    """γ/β memory words: lane k's γ at bits [k*W_p...], β at [(P+k)*W_p...]."""
    if not cfg.affine:
        return []
    w_p, lanes = cfg.param_format.width, cfg.lanes
    mask = (1 << w_p) - 1
    words = []
    for beat in range(cfg.beats_max):
        word = 0
        for k in range(lanes):
            word |= (int(cfg.gamma_int[beat * lanes + k]) & mask) << (k * w_p)
            word |= (int(cfg.beta_int[beat * lanes + k]) & mask) << ((lanes + k) * w_p)
        words.append(word)
    return words


class NormCore(wiring.Component):
    """LayerNorm / RMSNorm core for one :class:`~normgen.hw.config.CoreConfig`."""

    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig) or cfg.norm == "batchnorm":
            raise TypeError(f"cfg must be a layernorm or rmsnorm CoreConfig, not {cfg!r}")
        self._cfg = cfg
        super().__init__(core_ports(cfg, params=affine_params(cfg)))

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    @property
    def latency(self) -> int:
        return core_latency(self._cfg)

    @property
    def buffer_depth(self) -> int:
        """Vector buffer depth in beats."""
        return buffer_depth(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.ingest = ingest = Ingest(cfg)
        m.submodules.scalars = scalars = VectorScalars(cfg)
        m.submodules.output = output = OutputStage(cfg)
        stats_width = ingest.stats.payload.shape().size
        m.submodules.stats_fifo = stats_fifo = fifo.SyncFIFO(width=stats_width, depth=STATS_FIFO_DEPTH)

        m.submodules.buffer = buffer = memory.Memory(
            shape=unsigned(cfg.lanes * cfg.in_format.width), depth=ingest.depth, init=[])
        buf_wr = buffer.write_port()
        buf_rd = buffer.read_port(domain="sync")

        m.d.comb += [
            ingest.i.valid.eq(self.s_axis_tvalid),
            ingest.i.payload.data.eq(self.s_axis_tdata),
            ingest.i.payload.last.eq(self.s_axis_tlast),
            self.s_axis_tready.eq(ingest.i.ready),
            self.status_overlong.eq(ingest.overlong),

            buf_wr.addr.eq(ingest.wr_addr),
            buf_wr.data.eq(ingest.wr_data),
            buf_wr.en.eq(ingest.wr_en),
            buf_rd.addr.eq(output.rd_addr),
            buf_rd.en.eq(output.rd_en),
            output.rd_data.eq(buf_rd.data),
            ingest.rd_ptr.eq(output.rd_ptr),


            self.m_axis_tvalid.eq(output.o.valid),
            self.m_axis_tdata.eq(output.o.payload.data),
            self.m_axis_tlast.eq(output.o.payload.last),
            self.m_axis_tuser.eq(output.o.payload.error),
            output.o.ready.eq(self.m_axis_tready),
        ]
        through_fifo(m, ingest.stats, stats_fifo, scalars.i)
        wiring.connect(m, producer=scalars.o, consumer=output.coefs)

        if cfg.affine:
            m.submodules.params = params = memory.Memory(
                shape=unsigned(cfg.lanes * 2 * cfg.param_format.width), depth=cfg.beats_max,
                init=pack_params(cfg))
            par_wr = params.write_port()
            par_rd = params.read_port(domain="sync")
            idle = ~ingest.busy & ~stats_fifo.r_rdy & ~scalars.busy & ~output.busy
            m.d.comb += [
                ingest.hold.eq(self.param_valid),
                self.param_ready.eq(idle),
                par_wr.addr.eq(self.param_addr),
                par_wr.data.eq(Cat(self.param_gamma, self.param_beta)),
                # An address past the last beat is taken and ignored.
                par_wr.en.eq(self.param_valid & idle & (self.param_addr < cfg.beats_max)),
                par_rd.addr.eq(output.par_addr),
                par_rd.en.eq(output.rd_en),
                output.par_data.eq(par_rd.data),
            ]
        return m


def build_core(cfg: CoreConfig) -> wiring.Component:
    """The core component for a configuration: :class:`NormCore` or
    :class:`~normgen.hw.batchnorm.BatchNormCore`."""
    if isinstance(cfg, CoreConfig) and cfg.is_bn_inference:
        from .batchnorm import BatchNormCore
        return BatchNormCore(cfg)
    if isinstance(cfg, CoreConfig) and cfg.is_bn_batch:
        from .batchstats import BatchStatsCore
        return BatchStatsCore(cfg)
    return NormCore(cfg)


def verilog_header(cfg: CoreConfig, module_name: str) -> str:
    lines = [
        f"normgen core `{module_name}`",
        f"configuration: {cfg.describe()}",
        f"formats: in {cfg.in_format} ({cfg.in_format.width} bits), out {cfg.out_format} "
        f"({cfg.out_format.width} bits)" + (f", param {cfg.param_format} ({cfg.param_format.width} bits)"
                                            if cfg.affine_stage else ", no affine stage"),
    ]
    if cfg.is_bn_inference:
        lines += [
            f"eps: {cfg.eps!r} (exact, folded on the host with the running statistics)",
            f"lanes: {cfg.lanes}; one sample = one packet of up to {cfg.features} channels",
            f"per-channel scale A: signed {cfg.a_width} bits (2**-{cfg.a_frac - cfg.in_format.frac_bits} units), "
            f"shift B: signed {cfg.b_width} bits (2**-{cfg.a_frac} units)",
            f"latency: {core_latency(cfg)} cycles from an input beat to its output beat",
        ]
    elif cfg.is_bn_batch:
        lines += [
            f"effective eps: {cfg.eps_effective!r} (e = {cfg.eps_int} on the 2**-{2 * cfg.in_format.frac_bits} grid)",
            f"lanes: {cfg.lanes}; one sample = one packet of {cfg.features} channels; a batch of 1..{cfg.max_batch} "
            f"samples ends with s_axis_tuser = 1",
            f"latency: {core_latency(cfg)} cycles from the batch's last input beat to its first output beat",
        ]
    else:
        lines += [
            f"effective eps: {cfg.eps_effective!r} (e = {cfg.eps_int} on the 2**-{2 * cfg.in_format.frac_bits} grid)",
            f"lanes: {cfg.lanes}; vector length N = beats * lanes, 1..{cfg.features} (known at tlast)",
            f"latency: {core_latency(cfg)} cycles from the last input beat to the first output beat",
            f"vector buffer: {buffer_depth(cfg)} beats",
        ]
    lines += [
        "derived widths: " + ", ".join(f"{k}={v}" for k, v in cfg.widths().items()),
        "accuracy: faithful (every output within 1 LSB: one of the two output-grid neighbours of the exact result)",
    ]
    return "".join(f"// {line}\n" for line in lines) + "\n"


def component_verilog(component, module_name: str) -> str:
    """Verilog of an Amaranth component, every combinational process lowered to ``assign``s.

    ``amaranth.back.verilog`` keeps processes as ``always @*`` blocks started by a dummy register
    initializer; under SystemVerilog rules (``iverilog -g2012``, cocotb's default) that
    initializer makes no event, the blocks never run at time 0 and their outputs stay X, so the
    core would never answer.  Lowering the processes to multiplexers (Yosys ``proc`` without
    ``-nomux``) leaves only continuous assignments, which every simulator evaluates at time 0."""
    from amaranth._toolchain.yosys import find_yosys
    text = rtlil.convert(component, name=module_name, emit_src=False)
    yosys = find_yosys(lambda version: version >= (0, 40))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", "proc -norom", "memory_collect", "write_verilog"]
    return yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)


def generate_verilog(cfg: CoreConfig, module_name: str = "normgen_core") -> str:
    """Verilog text of the core, with a header comment recording the configuration."""
    return verilog_header(cfg, module_name) + component_verilog(build_core(cfg), module_name)

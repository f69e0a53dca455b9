"""The benchmark's rounding section: what ``--rounding nearest-even`` costs next to ``faithful``.

Per core and mode: DSP blocks, LUTs and flip-flops (Yosys ``synth_ecp5``), fmax on ECP5 (the
place-and-route harness of :mod:`normgen.sim.pnr`, for the cores marked so), the latency, the
sustained rate on random data (back-to-back N_max vectors in Amaranth's simulator, outputs
bit-exact with the golden model) with the share of elements decided exactly, and the worst-case
cycles of one exact decision.  The boundary table counts, with the exact reference, how often each
mode gives the correctly rounded value on the boundary class (exact ties and their neighbours).
"""
from __future__ import annotations

import numpy as np

from normgen.hw import core_latency, generate_verilog
from normgen.hw.config import ROUNDINGS, CoreConfig
from normgen.hw.nearest import decision_cycles
from normgen.sim import golden, pnr, reference, vectors

__all__ = ["COST_CASES", "BOUNDARY_FORMATS", "cost_jobs", "collect_costs", "measure_boundary", "render_markdown",
           "render_summary"]

#: (name, CoreConfig kwargs or "batchnorm inference", place and route it)
COST_CASES = [
    ("LayerNorm default P=1", {}, True),
    ("LayerNorm default P=8", {"lanes": 8}, False),
    ("BatchNorm inference C=1024 P=1", "batchnorm inference", True),
    ("BatchNorm batch statistics C=64 M_max=32 P=1", {"norm": "batchnorm", "features": 64, "max_batch": 32}, False),
]
RATE_VECTORS = 4
BOUNDARY_FORMATS = [("s4.12", 1e-5), ("s6.10", 1e-5), ("s3.5", 0.0), ("s8.8", 2.0 ** -16)]
BOUNDARY_ITEMS = 60


def case_config(kwargs, rounding: str, seed: int) -> CoreConfig:
    if kwargs == "batchnorm inference":
        from normgen.sim.bench import _bn_inference_config
        return _bn_inference_config({"lanes": 1, "rounding": rounding}, np.random.default_rng(seed))
    return CoreConfig(rounding=rounding, **kwargs)


def cost_jobs(executor, seed: int, root, synthesize, *, synth: bool, pnr_on: bool, timeout: float = 3600):
    """Submit the synthesis and place-and-route runs; returns {(name, mode): {"synth": f, "pnr": f}}."""
    jobs = {}
    for name, kwargs, routed in COST_CASES:
        for mode in ROUNDINGS:
            cfg = case_config(kwargs, mode, seed)
            slug = f"rounding-{name}-{mode}".lower().replace(" ", "-").replace("=", "")
            workdir = root / slug
            workdir.mkdir(parents=True, exist_ok=True)
            entry = {}
            if synth:
                verilog = workdir / "normgen_core.v"
                verilog.write_text(generate_verilog(cfg, module_name="normgen_core"))
                entry["synth"] = executor.submit(synthesize, verilog, "normgen_core", "ecp5", workdir)
            if pnr_on and routed:
                entry["pnr"] = executor.submit(pnr.place_and_route, cfg, "ecp5", seed=seed,
                                               workdir=workdir / "pnr", timeout=timeout)
            jobs[(name, mode)] = entry
    return jobs


def _rate(cfg: CoreConfig, seed: int) -> dict:
    """Sustained rate of back-to-back N_max vectors of random data, and the elements decided
    exactly (vector cores; the BatchNorm cores stream without a per-vector stage)."""
    from normgen.sim.amaranth_bench import Packet, expected_outputs, run_core
    if cfg.kind.statistics == "batch":
        return {}
    rng = np.random.default_rng(seed)
    xs = [vectors.make_vector(cfg, "uniform", cfg.features, rng) for _ in range(RATE_VECTORS)]
    items = [Packet(x) for x in xs]
    run = run_core(cfg, items)
    expected = expected_outputs(cfg, items)
    exact = len(run.outputs) == len(expected) and all(np.array_equal(g, w) for (g, _), (w, _) in zip(run.outputs, expected))
    decided = 0
    if cfg.exact_resolution:
        gamma, beta = cfg.gamma_beta_int()
        for x in xs:
            a, b = golden.scalars(cfg, *golden.statistics(cfg, x))
            decided += int(golden.ambiguous(cfg, x, a, b, gamma, beta).sum())
    return {"elements_per_cycle": run.sustained_rate, "bit_exact": exact, "elements": RATE_VECTORS * cfg.features,
            "decided_exactly": decided}


def collect_costs(jobs, seed: int) -> list[dict]:
    rows = []
    for name, kwargs, _ in COST_CASES:
        for mode in ROUNDINGS:
            cfg = case_config(kwargs, mode, seed)
            row = {"name": name, "rounding": mode, "config": cfg.describe(), "latency": core_latency(cfg),
                   "decision_cycles": decision_cycles(cfg) if cfg.exact_resolution else None,
                   "a_frac": cfg.a_frac, "guard_bits": cfg.guard_bits}
            row.update(_rate(cfg, seed))
            entry = jobs.get((name, mode), {})
            if "synth" in entry:
                result = entry["synth"].result()
                row["synth"] = result.get("counts") or {"error": result.get("error", "?")[-300:]}
            if "pnr" in entry:
                result = entry["pnr"].result()
                row["pnr"] = {k: result.get(k) for k in ("status", "fmax_mhz", "constraint_mhz", "critical_path",
                                                          "utilization")}
            rows.append(row)
    return rows


def measure_boundary(seed: int) -> list[dict]:
    """Correctly rounded outputs on the boundary class, per mode and format (golden model, which
    the gateware matches bit for bit; exact reference)."""
    rows = []
    for formats, eps in BOUNDARY_FORMATS:
        for mode in ROUNDINGS:
            base = CoreConfig(features=16, in_format=formats, out_format=formats, param_format=formats, eps=eps,
                              rounding=mode)
            rng = np.random.default_rng([seed, len(formats)])
            total = reference.AccuracyReport()
            ties = 0
            for item in vectors.boundary_items(base, rng, BOUNDARY_ITEMS):
                cfg = item.config(base)
                total.add(reference.check_vector(cfg, item.x, golden.normalize(cfg, item.x[None, :])[0]))
                ties += int(item.ties.sum())
            rows.append({"format": formats, "rounding": mode, "elements": total.elements, "ties": ties,
                         "unfaithful": total.unfaithful, "not_rounded": total.not_rounded})
    return rows


def _dsp_lut(row) -> tuple[str, str, str]:
    counts = row.get("synth")
    if not counts or "error" in counts:
        return ("—",) * 3
    return (str(counts["DSP (MULT18X18D)"]), str(counts["LUT4"]), str(counts["FF"]))


def _fmax(row) -> str:
    p = row.get("pnr")
    if not p:
        return "—"
    if p.get("status") != "routed" or not p.get("fmax_mhz"):
        return str(p.get("status"))
    return f"{p['fmax_mhz']:.1f}"


def _rate_text(row) -> str:
    if "elements_per_cycle" not in row:
        return "—"
    text = f"{row['elements_per_cycle']:.3f}"
    if row["rounding"] == "nearest-even":
        text += f" ({row['decided_exactly']} of {row['elements']} decided exactly)"
    return text + ("" if row["bit_exact"] else " NOT BIT-EXACT")


def cost_table(rows) -> list[str]:
    out = ["| core | rounding | DSP | LUT | FF | fmax MHz (ECP5) | latency (cycles) | sustained elements/cycle, "
           "random data | worst case per exactly decided element (cycles) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        dsp, lut, ff = _dsp_lut(row)
        out.append(f"| {row['name']} | {row['rounding']} | {dsp} | {lut} | {ff} | {_fmax(row)} | {row['latency']} | "
                   f"{_rate_text(row)} | {row['decision_cycles'] or '—'} |")
    return out


def boundary_table(rows) -> list[str]:
    out = ["| format | rounding | elements | exact ties | correctly rounded |", "|---|---|---|---|---|"]
    for row in rows:
        good = row["elements"] - row["unfaithful"] - row["not_rounded"]
        out.append(f"| {row['format']} | {row['rounding']} | {row['elements']} | {row['ties']} | "
                   f"{good} ({good / max(1, row['elements']):.1%}) |")
    return out


def render_markdown(data: dict) -> list[str]:
    costs, boundary = data.get("rounding_costs"), data.get("rounding_boundary")
    if not costs:
        return []
    return ["## Rounding modes: cost and effect", "",
            "`faithful` (error < 1 LSB) against `nearest-even` (every output the exact result rounded half to "
            "even): resources from `synth_ecp5`, fmax from the place-and-route harness where run (seed 1), "
            "latency as declared by the core (the tests measure it), the rate on random data in Amaranth's "
            "simulator. A nearest-even core decides the elements whose computed value lies within "
            "2**-17 LSB of a rounding boundary exactly; each such element holds its beat for at most the "
            "cycles in the last column.  BatchNorm inference needs no such stage: its fold proves correct rounding "
            "for every input value of every channel at generation time.", "",
            *cost_table(costs), "",
            "Boundary class (vectors with a perfect-square radicand and γ/β chosen to put results on exact "
            "ties, and their neighbours), golden model against the exact reference:", "",
            *boundary_table(boundary), ""]


def render_summary(data: dict) -> list[str]:
    costs = data.get("rounding_costs")
    if not costs:
        return []
    return ["Rounding modes (`--rounding`), cost side by side:", "", *cost_table(costs), ""]

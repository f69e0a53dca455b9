"""The benchmark's plots and the error measurement behind the histogram, on small data (the full
``make bench`` is not run here)."""
from __future__ import annotations

import numpy as np
import pytest

from normgen.hw.config import CoreConfig
from normgen.sim import bench, golden, reference, vectors

SMALL = dict(features=16, lanes=2, in_format="s3.5", out_format="s3.5", param_format="s2.6", eps=0.01)


def _float_result(cfg: CoreConfig, x_int: np.ndarray) -> np.ndarray:
    """Y·2^F_out in float64 from the textbook formula, saturated (a float reference, for checking)."""
    x = cfg.in_format.to_float(x_int)
    gamma, beta = (cfg.param_format.to_float(v) for v in cfg.gamma_beta_int())
    n = len(x)
    mean = x.mean() if cfg.subtracts_mean else 0.0
    var = np.mean((x - mean) ** 2)
    y = (x - mean) / np.sqrt(var + cfg.eps_effective) * gamma[:n] + beta[:n]
    fmt = cfg.out_format
    return np.clip(y * 2.0 ** fmt.frac_bits, fmt.min_int, fmt.max_int)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_output_errors_agree_with_a_float_reference(norm):
    rng = np.random.default_rng(7)
    cfg = CoreConfig(norm=norm, **SMALL)
    cfg = cfg.with_params(*vectors.random_params(cfg, rng))
    checked = 0
    for kind, x in vectors.class_vectors(cfg, rng, 3):
        y = golden.normalize(cfg, x[None, :])[0]
        core, rounded = reference.output_errors(cfg, x, y)
        exact = _float_result(cfg, x)
        np.testing.assert_allclose(core, y - exact, atol=1e-6)
        bounds = [reference.exact_bounds(cfg, *_element(cfg, x, i)) for i in range(len(x))]
        np.testing.assert_allclose(rounded, [b.rne for b in bounds] - exact, atol=1e-6)
        assert np.all(np.abs(core) < 1) and np.all(np.abs(rounded) <= 0.5 + 1e-12)
        checked += len(x)
    assert checked > 100


def _element(cfg, x, i):
    x = [int(v) for v in x]
    n, s1, s2 = len(x), sum(x), sum(v * v for v in x)
    e = cfg.eps_int
    if cfg.subtracts_mean:
        a, d = n * x[i] - s1, n * s2 - s1 * s1 + e * n * n
    else:
        a, d = n * x[i], n * s2 + e * n * n
    gamma, beta = cfg.gamma_beta_int()
    return a, d, int(gamma[i]), int(beta[i])


def test_accuracy_entry_carries_the_histogram():
    entry = bench.measure_accuracy("small", SMALL, seed=3, per_class=2, random_params=True)
    hist = entry["error_histogram"]
    assert len(hist["bins"]) == len(hist["core"]) + 1 == len(hist["rounded"]) + 1
    assert sum(hist["core"]) == sum(hist["rounded"]) == entry["elements"] > 0
    centres = (np.asarray(hist["bins"][:-1]) + np.asarray(hist["bins"][1:])) / 2
    assert not np.any(np.asarray(hist["rounded"])[np.abs(centres) > 0.5 + 1 / 64])   # rounding: ≤ ½ LSB
    assert 0 < entry["max_abs_error_lsb"] < 1


def test_plots_draw_the_measurements(tmp_path):
    pytest.importorskip("matplotlib")
    throughput = [
        {"name": "P=1", "lanes": 1, "sweep": {"8": {"elements_per_cycle_output": 0.2},
                                              "64": {"elements_per_cycle_output": 0.9},
                                              "16": {"elements_per_cycle_output": 0.4}}},
        {"name": "P=4", "lanes": 4, "sweep": {"8": {"elements_per_cycle_output": 0.8},
                                              "32": {"elements_per_cycle_output": 3.5}}},
    ]
    fig = bench.plot_throughput(throughput, tmp_path / "t.png")
    (ax,) = fig.axes
    lines = [line for line in ax.get_lines() if line.get_label() in ("P=1", "P=4")]
    assert [list(line.get_xdata()) for line in lines] == [[8, 16, 64], [32, 128]]     # N = N/P · P, sorted
    assert [list(line.get_ydata()) for line in lines] == [[0.2, 0.4, 0.9], [0.8, 3.5]]
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bins = [-1.0, -0.5, 0.0, 0.5, 1.0]
    accuracy = [{"name": "a", "error_histogram": {"bins": bins, "core": [1, 2, 3, 4], "rounded": [0, 5, 5, 0]}},
                {"name": "b", "error_histogram": {"bins": bins, "core": [0, 1, 1, 0], "rounded": [0, 1, 1, 0]}},
                {"name": "BatchNorm, no histogram"}]
    fig = bench.plot_errors(accuracy, tmp_path / "e.png")
    (ax,) = fig.axes
    heights = sorted(tuple(patch.get_data().values) for patch in ax.patches)
    assert heights == [(0, 6, 6, 0), (1, 3, 4, 4)]
    assert "12 outputs" in ax.get_title() and "2 LayerNorm/RMSNorm configurations" in ax.get_title()
    assert (tmp_path / "e.png").stat().st_size > 1000


def test_reports_link_the_plots():
    data = {"date": "d", "commit": "c", "machine": "m", "icarus": "i", "seed": 1, "seconds": 1.0,
            "throughput": [], "resources_note": "none", "resources": [], "accuracy": [
                {"name": "a", "elements": 4, "unfaithful": 0, "not_rounded": 1, "max_abs_error_lsb": 0.5}]}
    assert "bench_errors.png" not in bench.render_markdown(data)        # no plots drawn: no links
    data["plots_note"] = ""
    markdown = bench.render_markdown(data)
    assert f"]({bench.PLOTS['throughput']})" in markdown and f"]({bench.PLOTS['errors']})" in markdown
    summary = bench.render_summary(data)
    assert f"](reports/{bench.PLOTS['throughput']})" in summary and f"](reports/{bench.PLOTS['errors']})" in summary

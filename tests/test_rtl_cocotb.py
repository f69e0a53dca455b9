"""The emitted Verilog of each parameter case, run through the cocotb testbench
(:mod:`normgen.sim.cocotb_core`) by :func:`normgen.sim.runner.build_and_run`.

Each case is split into two pytest tests (the vector classes; the control tests: overlong,
reset, latency, γ/β reload) so that pytest-xdist can spread them.  The seed is fixed per case;
``NORMGEN_SEED`` overrides it, ``NORMGEN_SIM=verilator`` and ``NORMGEN_WAVES=1`` are honoured.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from normgen.hw.config import CoreConfig
from normgen.sim import vectors
from normgen.sim.runner import build_and_run


def _random_params(kwargs: dict, seed: int) -> dict:
    """kwargs with random γ/β (negative and zero γ included) baked into the core."""
    cfg = CoreConfig(**kwargs)
    gamma, beta = vectors.random_params(cfg, np.random.default_rng(seed))
    return {**kwargs, "gamma": gamma.tolist(), "beta": beta.tolist()}


SMALL = dict(features=64, lanes=4, in_format="s2.6", out_format="s3.5", param_format="s2.6",
             eps=2.0 ** -10)

# (id, CoreConfig kwargs, vectors per class in test_vectors)
CASES = [
    ("layernorm-p1", {}, 6),
    ("layernorm-p4", {"lanes": 4}, 8),
    ("rmsnorm-p1", {"norm": "rmsnorm"}, 6),
    ("rmsnorm-p4-randparams", _random_params({"norm": "rmsnorm", "lanes": 4}, 11), 8),
    ("layernorm-noaffine-p2", {"affine": False, "lanes": 2}, 6),
    ("small-s2.6-s3.5-p4-randparams", _random_params(SMALL, 12), 24),
    ("layernorm-eps0-n16-randparams", _random_params({"features": 16, "eps": 0.0}, 13), 24),
    ("layernorm-p4-serial-scalars", {"lanes": 4, "scalar_mul": "serial"}, 6),
    ("layernorm-p8-interval-4", {"features": 64, "lanes": 8, "vector_interval": 4}, 8),
    ("layernorm-p4-lane-dsp-3", {"lanes": 4, "lane_dsp": 3}, 6),
    ("layernorm-p4-nearest-even-randparams",
     _random_params({"features": 64, "lanes": 4, "rounding": "nearest-even"}, 14), 8),
]

GROUPS = {
    "vectors": ["test_vectors"],
    "control": ["test_overlong", "test_reset_mid_vector", "test_latency", "test_param_reload"],
}


def _seed(index: int) -> int:
    return int(os.environ.get("NORMGEN_SEED", 1000 + index))


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("index", range(len(CASES)), ids=[case[0] for case in CASES])
def test_rtl(index, group):
    name, kwargs, per_class = CASES[index]
    tests = GROUPS[group]
    if not CoreConfig(**kwargs).affine:
        tests = [t for t in tests if t != "test_param_reload"]
    result = build_and_run(kwargs, seed=_seed(index), testcase=tests, per_class=per_class)
    assert result.passed and result.tests >= len(tests)
    report = result.report
    if group == "vectors":
        for section in ("vectors_plain", "vectors_stress"):
            data = report[section]
            assert data["vectors"] > 0
            assert data["bit_exact"] == data["elements"] == data["faithful"], data
    else:
        latency = report["latency"]
        assert latency["declared"] is not None, "NormCore.latency was not available to compare"
        expected_sections = ["overlong", "reset"] + (["params_ordered", "params_concurrent"]
                                                     if "test_param_reload" in tests else [])
        for section in expected_sections:
            assert report[section]["bit_exact"] == report[section]["elements"] > 0, (section, report[section])


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 3], ids=[CASES[i][0] for i in (0, 1, 3)])
def test_rtl_long(index):
    """Many more vectors of every class, with another seed."""
    name, kwargs, _ = CASES[index]
    result = build_and_run(kwargs, seed=_seed(index) + 7, testcase="test_vectors", per_class=24)
    assert result.passed
    for section in ("vectors_plain", "vectors_stress"):
        data = result.report[section]
        assert data["bit_exact"] == data["elements"] == data["faithful"] > 0, data


# ---- BatchNorm cores (normgen.sim.cocotb_batchnorm) ------------------------------------------------
def _batchnorm_inference_kwargs(channels, lanes, seed):
    rng = np.random.default_rng(seed)
    return dict(norm="batchnorm", features=channels, lanes=lanes, mean=rng.normal(0, 1, channels),
                var=rng.uniform(0.01, 3, channels), gamma=rng.normal(0, 1.5, channels), beta=rng.normal(0, 1, channels))


BATCHNORM_CASES = {
    "bn-inference-c64-p1": (_batchnorm_inference_kwargs(64, 1, 1), ["test_inference", "test_inference_idle_and_backpressure"]),
    "bn-inference-c64-p4": (_batchnorm_inference_kwargs(64, 4, 2), ["test_inference", "test_inference_idle_and_backpressure"]),
    "bn-batch-c16-m8-p1": (dict(norm="batchnorm", features=16, max_batch=8, lanes=1),
                           ["test_batches", "test_batches_idle_and_backpressure"]),
    "bn-batch-c16-m8-p4": (dict(norm="batchnorm", features=16, max_batch=8, lanes=4, eps=0),
                           ["test_batches", "test_batches_idle_and_backpressure"]),
}


@pytest.mark.parametrize("name", list(BATCHNORM_CASES))
def test_batchnorm_cores_on_emitted_verilog(name):
    kwargs, tests = BATCHNORM_CASES[name]
    result = build_and_run(kwargs, seed=3, testcase=tests)
    assert result.passed and result.tests == len(tests)

"""The layer-normalized RNN (examples.rnn.lnrnn) with the LayerNorm core in the loop.

* RTL in the loop (Icarus + cocotb, a handful of test sequences, a few hundred LayerNorm calls):
  the core's outputs equal the golden model's bit for bit at every step of every sequence, γ/β
  having been loaded through the parameter port; the deviation from float64 stays within bounds
  derived from the LSBs of the formats.
* golden model vs float64 on 2000 test sequences: accuracy within 1 percentage point, every step
  within its LSB bound.
* batch-statistics BatchNorm at batch size 1 for contrast: the output collapses to β.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from normgen.hw.config import CoreConfig
from normgen.sim import golden
from examples.rnn import lnrnn as rnn

MODEL = rnn.LNRNN.load()
CFG = rnn.core_config(MODEL)


@functools.cache
def evaluation_set(count: int = 2000):
    data = rnn.adding_task(rnn.TEST_SEED, count)
    return (data, rnn.run(MODEL, rnn.FloatLayerNorm(MODEL), data),
            rnn.run(MODEL, rnn.GoldenLayerNorm(MODEL), data))


FAST_LENGTHS = (rnn.T_MIN, rnn.T_MIN + 1, rnn.T_MIN + 3, 24, 31, 40, rnn.T_MAX - 1, rnn.T_MAX)


def fast_sequences() -> rnn.Dataset:
    """Eight test sequences of different lengths, the shortest and the longest included."""
    data = rnn.adding_task(rnn.TEST_SEED, 400)
    pick = [int(np.flatnonzero(data.lengths == length)[0]) for length in FAST_LENGTHS]
    return data.subset(pick)


def assert_steps_within_bound(a: np.ndarray, y_int: np.ndarray):
    """Each normalized value of the fixed-point LayerNorm within :func:`rnn.step_error_bound` of
    the float64 LayerNorm of the same summed inputs ``a`` (steps, H)."""
    fmt = CFG.out_format
    y_float = np.clip(rnn.FloatLayerNorm(MODEL)(a).y, fmt.min_int * fmt.lsb, fmt.max_int * fmt.lsb)
    bound = rnn.step_error_bound(MODEL, CFG, a)
    assert np.all(np.isfinite(bound)), "an input saturated"
    error = np.abs(fmt.to_float(y_int) - y_float)
    worst = np.unravel_index(np.argmax(error / bound), error.shape)
    assert np.all(error <= bound), (f"step {worst[0]} unit {worst[1]}: |y_fixed − y_float| = "
                                    f"{error[worst]:.3g} > bound {bound[worst]:.3g}")


# ---- premises ------------------------------------------------------------------------------------
def test_summed_inputs_do_not_depend_on_the_batch():
    """The RTL runs batch size 1, the golden model whole test sets: a_t must have the same bits."""
    rng = np.random.default_rng(5)
    h = np.tanh(rng.normal(size=(257, MODEL.hidden)))
    x = rng.random((257, 2))
    batch = MODEL.summed_inputs(h, x)
    single = np.concatenate([MODEL.summed_inputs(h[i:i + 1], x[i:i + 1]) for i in range(len(h))])
    assert np.array_equal(batch, single)
    assert np.array_equal(MODEL.readout(h), np.concatenate([MODEL.readout(h[i:i + 1]) for i in range(len(h))]))


def test_trained_network_fits_the_core():
    fmt = CFG.in_format
    # |a_t| <= the bound for every input sequence, and the bound is inside the input range
    assert rnn.summed_input_bound(MODEL) < fmt.max_int * fmt.lsb
    assert CFG.eps_effective == MODEL.eps, "the core's ε differs from the trained one"
    assert CFG.features == MODEL.hidden
    # γ/β quantize without saturation (CoreConfig raises otherwise) and differ from the γ = 1,
    # β = 0 of the generated Verilog, so the RTL results show whether the port load took effect
    default = rnn.core_config()
    assert np.count_nonzero(CFG.gamma_int != default.gamma_int) == MODEL.hidden


def test_batchnorm_batch_of_one_collapses_to_beta():
    data = rnn.adding_task(rnn.TEST_SEED, 300)
    run = rnn.run(MODEL, rnn.BatchNormBatch1(MODEL), data)
    valid = run.valid()
    # every unit's statistics over a batch of one sample: mean = the sample, variance 0
    assert np.array_equal(run.hidden[valid], np.broadcast_to(np.tanh(MODEL.beta), (valid.sum(), MODEL.hidden)))
    constant = np.unique(run.predictions)
    assert len(constant) == 1
    # the accuracy is the share of the class it always predicts: chance, not memory
    assert run.accuracy(data.labels) == np.mean(data.labels == constant[0])


# ---- RTL in the loop -----------------------------------------------------------------------------
def test_rtl_in_the_loop_bit_exact():
    data = fast_sequences()
    assert data.steps <= 300
    rtl, report = rnn.run_rtl(rnn.WEIGHTS_PATH, data, name="pytest-fast")
    gold = rnn.run(MODEL, rnn.GoldenLayerNorm(MODEL), data)
    flt = rnn.run(MODEL, rnn.FloatLayerNorm(MODEL), data)
    valid = gold.valid()

    assert report["layernorm_calls"] == data.steps
    assert report["param_beats"] == CFG.beats_max
    # the core's outputs are the golden model's for its own inputs, at every step
    x_rtl, y_rtl = rtl.x_int[valid], rtl.y_int[valid]
    mismatch = np.flatnonzero(np.any(golden.normalize(CFG, x_rtl) != y_rtl, axis=1))
    assert len(mismatch) == 0, f"{len(mismatch)} of {len(x_rtl)} steps differ from the golden model"
    # ... and the whole closed loop follows the golden-model run bit for bit
    assert np.array_equal(rtl.x_int, gold.x_int) and np.array_equal(rtl.y_int, gold.y_int)
    assert np.array_equal(rtl.hidden, gold.hidden, equal_nan=True)
    assert np.array_equal(rtl.logits, gold.logits)
    # γ/β came through the port: the generated Verilog's own γ = 1, β = 0 give other outputs
    untrained = golden.normalize(rnn.core_config(), x_rtl)
    assert np.count_nonzero(np.all(untrained == y_rtl, axis=1)) == 0

    # against float64: each step within its LSB bound, and the free-running hidden state within
    # the first-order propagation of those bounds through the float trajectory
    assert_steps_within_bound(rnn.summed_inputs_of(MODEL, data, rtl)[valid], y_rtl)
    for i in range(len(data)):
        length = data.lengths[i]
        deviation = np.max(np.abs(rtl.hidden[i, :length] - flt.hidden[i, :length]), axis=1)
        bound = rnn.linearized_deviation_bound(MODEL, CFG, data, flt, i)
        assert np.all(deviation <= bound), f"sequence {i}: deviation {deviation.max():.3g}"


# ---- golden model vs float64 (no RTL) ------------------------------------------------------------
def test_golden_accuracy_within_one_point_of_float():
    data, flt, gold = evaluation_set()
    assert gold.saturated == 0
    acc_float, acc_golden = flt.accuracy(data.labels), gold.accuracy(data.labels)
    assert acc_float > 0.9, f"the shipped network has not learned the task (chance is 0.5): {acc_float}"
    assert abs(acc_golden - acc_float) <= 0.01, (acc_float, acc_golden)


def test_golden_every_step_within_lsb_bound():
    data, _, gold = evaluation_set()
    valid = gold.valid()
    assert_steps_within_bound(rnn.summed_inputs_of(MODEL, data, gold)[valid], gold.y_int[valid])


@pytest.mark.parametrize("bad", ["eps", "gamma"])
def test_bound_check_can_fail(bad):
    """The LSB bound is tight enough to notice a wrong ε or a γ off by a few LSBs."""
    data, _, _ = evaluation_set()
    small = data.subset(np.arange(40))
    if bad == "eps":
        cfg = CoreConfig(**{**rnn.CORE_KWARGS, "eps": MODEL.eps * 4096}, gamma=MODEL.gamma, beta=MODEL.beta)
    else:
        cfg = CFG.with_params(MODEL.gamma + 8 * CFG.param_format.lsb, MODEL.beta)
    run = rnn.run(MODEL, rnn.GoldenLayerNorm(MODEL, cfg), small)
    valid = run.valid()
    with pytest.raises(AssertionError):
        assert_steps_within_bound(rnn.summed_inputs_of(MODEL, small, run)[valid], run.y_int[valid])

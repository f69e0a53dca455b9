"""cocotb test: the layer-normalized RNN of :mod:`examples.rnn.lnrnn` with the LayerNorm of every
time step computed by the emitted Verilog core.

Started by :func:`examples.rnn.lnrnn.run_rtl`, which passes the settings as JSON in the environment
variable ``NORMGEN_RNN_SETTINGS``::

    {"core": CoreConfig keyword arguments of the core (without γ/β: the Verilog holds γ = 1, β = 0),
     "weights": the trained network (.npz), "inputs": the sequences (.npz of a Dataset),
     "output": where to write the RnnRun (.npz), "progress": a file holding the number of finished
     sequences, "report": a JSON file for cycle counts}

The test resets the core, writes the trained γ/β through the parameter port (``param_valid`` /
``param_ready`` / ``param_addr`` / ``param_gamma`` / ``param_beta``), then runs the sequences one
after another with batch size 1: at each step the host computes ``a_t`` from the fed-back hidden
state, the core normalizes it (one AXI4-Stream packet of H/P beats in, one out, driven by
cocotbext-axi with one lane per "byte": ``byte_lanes = P``, ``byte_size = W``), and the host
applies ``tanh``.  Nothing here compares with the golden model: the pytest side does that on the
written file, so the expectation stays independent of this bench.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

from normgen.hw.config import CoreConfig
from examples.rnn.lnrnn import (LNRNN, RTL_ENV_VAR, Dataset, NormOut, RnnRun, core_config, quantize_summed,
                             run_async)

CLOCK_NS = 10
_TEXT = os.environ.get(RTL_ENV_VAR)
SETTINGS = json.loads(_TEXT) if _TEXT else None


def to_signed(values, width: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    return np.where(values >= 1 << (width - 1), values - (1 << width), values)


def cycles_now() -> int:
    return round(get_sim_time(unit="ns") / CLOCK_NS)


class RtlLayerNorm:
    """``await norm(a)``: the core normalizes each row of ``a`` (quantized as the golden model
    does); rows are queued back to back, outputs come back in order."""

    def __init__(self, dut, cfg: CoreConfig):
        self.cfg = cfg
        self.in_mask = (1 << cfg.in_format.width) - 1
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst,
                                      byte_lanes=cfg.lanes)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst,
                                  byte_lanes=cfg.lanes)
        for driver in (self.source, self.sink):
            driver.log.setLevel(logging.WARNING)
        assert self.source.byte_size == cfg.in_format.width and self.sink.byte_size == cfg.out_format.width
        self.calls = 0
        self.round_trip_cycles = []      # first input beat queued -> last output beat received

    async def __call__(self, a: np.ndarray) -> NormOut:
        cfg = self.cfg
        x_int, saturated = quantize_summed(cfg, a)
        start = cycles_now()
        for row in x_int:
            self.source.send_nowait([int(v) & self.in_mask for v in row])
        rows = []
        for row in x_int:
            frame = await with_timeout(self.sink.recv(compact=False), 2000 * CLOCK_NS, "ns")
            tuser = frame.tuser if isinstance(frame.tuser, list) else [frame.tuser or 0]
            assert not any(tuser), f"call {self.calls}: tuser set (the core rejected the vector)"
            assert len(frame.tdata) == len(row), \
                f"call {self.calls}: {len(frame.tdata)} outputs for a vector of {len(row)}"
            rows.append(to_signed(frame.tdata, cfg.out_format.width))
        self.round_trip_cycles.append(cycles_now() - start)
        self.calls += len(x_int)
        y_int = np.array(rows, dtype=np.int64)
        return NormOut(cfg.out_format.to_float(y_int), x_int, y_int, saturated)


def param_words(cfg: CoreConfig) -> list[tuple[int, int, int]]:
    """``(addr, γ word, β word)`` per beat, lane k at bits [k·W_p + W_p − 1 : k·W_p]."""
    p, w = cfg.lanes, cfg.param_format.width
    mask = (1 << w) - 1
    gamma, beta = cfg.gamma_beta_int()

    def pack(values):
        return sum((int(v) & mask) << (k * w) for k, v in enumerate(values))
    return [(beat, pack(gamma[beat * p:(beat + 1) * p]), pack(beta[beat * p:(beat + 1) * p]))
            for beat in range(cfg.beats_max)]


async def write_params(dut, cfg: CoreConfig) -> int:
    """Write γ/β of ``cfg`` through the parameter port; returns the beats taken."""
    taken = 0
    for addr, gamma_word, beta_word in param_words(cfg):
        dut.param_addr.value = addr
        dut.param_gamma.value = gamma_word
        dut.param_beta.value = beta_word
        dut.param_valid.value = 1
        for _ in range(1000):
            await RisingEdge(dut.clk)
            if int(dut.param_ready.value):
                taken += 1
                break
        else:
            raise AssertionError(f"param_ready stayed low for 1000 cycles at addr {addr}")
    dut.param_valid.value = 0
    return taken


@cocotb.test(skip=SETTINGS is None)
async def test_rnn_in_the_loop(dut):
    """Every sequence through the RNN, batch size 1, each LayerNorm on the core."""
    settings = SETTINGS
    core = CoreConfig(**settings["core"])
    assert core.affine, "the RNN needs the γ/β stage"
    model = LNRNN.load(settings["weights"])
    trained = core_config(model, **settings["core"])
    with np.load(settings["inputs"], allow_pickle=False) as npz:
        data = Dataset(npz["inputs"], npz["lengths"], npz["labels"])

    dut.rst.value = 1
    dut.s_axis_tvalid.value = 0
    dut.m_axis_tready.value = 0
    dut.param_valid.value = 0
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    norm = RtlLayerNorm(dut, trained)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    start = cycles_now()
    param_beats = await write_params(dut, trained)
    param_cycles = cycles_now() - start
    progress = Path(settings["progress"])
    runs = []
    start = cycles_now()
    for i in range(len(data)):
        runs.append(await run_async(model, norm, data.subset([i])))
        progress.write_text(str(i + 1))
    run_cycles = cycles_now() - start
    assert int(dut.status_overlong.value) == 0, "status_overlong rose"

    result = RnnRun.concatenate(runs)
    result.save(settings["output"], predictions=result.predictions)
    trips = np.array(norm.round_trip_cycles)
    Path(settings["report"]).write_text(json.dumps({
        "sequences": len(data), "layernorm_calls": norm.calls, "param_beats": param_beats,
        "param_cycles": param_cycles, "run_cycles": run_cycles,
        "round_trip_cycles_min": int(trips.min()), "round_trip_cycles_max": int(trips.max()),
        "round_trip_cycles_mean": float(trips.mean()),
    }, indent=1))

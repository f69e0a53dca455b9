"""cocotb tests of the emitted BatchNorm cores (inference and batch statistics).

Run through :func:`normgen.sim.runner.build_and_run`, which passes the configuration in the same
``NORMGEN_COCOTB_CONFIG`` settings as for LayerNorm.  The AXI4-Stream ports are driven by
cocotbext-axi with one beat per "byte" (``byte_lanes=1``); every output is compared with the
golden model and classified by the exact reference.
"""
from __future__ import annotations

import itertools
import logging

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from normgen.sim import golden, reference, vectors
from normgen.sim.cocotb_core import CLOCK_NS, SETTINGS, make_config, pause_pattern, rng_for
from normgen.sim.lanes import pack_lanes, unpack_lanes


class BatchNormTB:
    def __init__(self, dut):
        if SETTINGS is None:
            raise RuntimeError("NORMGEN_COCOTB_CONFIG is not set: run this module through normgen.sim.runner")
        self.dut = dut
        self.cfg = make_config(SETTINGS["core"])
        self.seed = int(SETTINGS.get("seed", 1))
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst, byte_lanes=1)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst, byte_lanes=1)
        for driver in (self.source, self.sink):
            driver.log.setLevel(logging.WARNING)
        if hasattr(dut, "param_valid"):
            dut.param_valid.value = 0
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def traffic(self, rng, busy: bool):
        if busy:
            self.source.set_pause_generator(itertools.cycle(pause_pattern(rng, 23, 0.3)))
            self.sink.set_pause_generator(itertools.cycle(pause_pattern(rng, 19, 0.4)))
        else:
            self.source.clear_pause_generator()
            self.sink.clear_pause_generator()

    def frame(self, values, *, batch_end=False) -> AxiStreamFrame:
        lanes, width = self.cfg.lanes, self.cfg.in_format.width
        beats = [pack_lanes(values[k * lanes:(k + 1) * lanes], width) for k in range(len(values) // lanes)]
        tuser = [0] * (len(beats) - 1) + [int(batch_end)] if hasattr(self.dut, "s_axis_tuser") else None
        return AxiStreamFrame(beats, tuser=tuser)

    async def receive(self):
        """One output packet: (values, tuser of its last beat)."""
        frame = await self.sink.recv()
        values = []
        for word in frame.tdata:
            values += unpack_lanes(word, self.cfg.out_format.width, self.cfg.lanes)
        user = frame.tuser if isinstance(frame.tuser, int) else (frame.tuser[-1] if frame.tuser else 0)
        return np.array(values, dtype=np.int64), int(user)


def _inference_vectors(cfg, rng):
    samples = [vectors.make_vector(cfg, kind, cfg.features, rng) for kind in vectors.CLASSES for _ in range(2)]
    samples.append(vectors.make_vector(cfg, "uniform", cfg.lanes, rng))            # a short sample
    return samples


async def _run_inference(dut, busy: bool):
    tb = BatchNormTB(dut)
    cfg = tb.cfg
    assert cfg.kind.folded, cfg.describe()
    rng = rng_for(tb.seed, 1, int(busy))
    tb.traffic(rng, busy)
    await tb.reset()
    samples = _inference_vectors(cfg, rng)
    overlong = vectors.make_vector(cfg, "uniform", cfg.features + 2 * cfg.lanes, rng)
    after = vectors.make_vector(cfg, "normal_wide", cfg.features, rng)
    for x in samples + [overlong, after]:
        await tb.source.send(tb.frame(x))
    for x in samples:
        y, user = await tb.receive()
        assert user == 0
        np.testing.assert_array_equal(y, golden.normalize(cfg, x[None, :])[0])
        report = reference.check_vector(cfg, x, y)
        assert report.unfaithful == 0, report.first_failure
    # an overlong sample: its first C outputs, then one error beat; the next sample is normal
    y, user = await tb.receive()
    assert user == 1
    np.testing.assert_array_equal(y[:cfg.features], golden.normalize(cfg, overlong[None, :cfg.features])[0])
    np.testing.assert_array_equal(y[cfg.features:], np.zeros(cfg.lanes))
    y, user = await tb.receive()
    np.testing.assert_array_equal(y, golden.normalize(cfg, after[None, :])[0])
    assert int(dut.status_overlong.value) == 1


@cocotb.test()
async def test_inference(dut):
    await _run_inference(dut, busy=False)


@cocotb.test()
async def test_inference_idle_and_backpressure(dut):
    await _run_inference(dut, busy=True)


async def _run_batches(dut, busy: bool):
    tb = BatchNormTB(dut)
    cfg = tb.cfg
    assert (cfg.kind.statistics == "batch"), cfg.describe()
    rng = rng_for(tb.seed, 2, int(busy))
    tb.traffic(rng, busy)
    await tb.reset()
    batches = []
    for index, kind in enumerate(vectors.CLASSES):
        size = (1, 2, cfg.max_batch)[index % 3]
        batches.append(np.stack([vectors.make_vector(cfg, kind, cfg.features, rng) for _ in range(size)]))
    malformed = [vectors.make_vector(cfg, "uniform", cfg.features, rng),
                 vectors.make_vector(cfg, "uniform", cfg.features + cfg.lanes, rng)]
    plan = batches[:3] + [malformed] + batches[3:]
    for batch in plan:
        for index, sample in enumerate(batch):
            await tb.source.send(tb.frame(sample, batch_end=index == len(batch) - 1))
    for batch in plan:
        if batch is malformed:
            y, user = await tb.receive()
            assert user == 0b11
            np.testing.assert_array_equal(y, np.zeros(cfg.lanes))
            continue
        expected = golden.normalize_batch(cfg, batch)
        got = []
        for index in range(len(batch)):
            y, user = await tb.receive()
            assert user == (0b10 if index == len(batch) - 1 else 0)
            got.append(y)
        got = np.array(got)
        np.testing.assert_array_equal(got, expected)
        report = reference.check_batch(cfg, batch, got)
        assert report.unfaithful == 0, report.first_failure
    assert int(dut.status_overlong.value) == 1


@cocotb.test()
async def test_batches(dut):
    await _run_batches(dut, busy=False)


@cocotb.test()
async def test_batches_idle_and_backpressure(dut):
    await _run_batches(dut, busy=True)

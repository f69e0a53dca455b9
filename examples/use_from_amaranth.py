"""A normgen core inside a user's own Amaranth design: connect, simulate, compare with the golden model.

    python examples/use_from_amaranth.py [--norm rmsnorm] [--lanes 4]

``Accelerator`` stands for the user's design: it has stream ports of its own, declared with the
same layouts as the core's (:func:`normgen.hw.input_layout`, :func:`normgen.hw.output_layout`), and
puts the core between them with two ``wiring.connect`` calls.  The testbench sends vectors of
several lengths with random idle cycles on the input and random backpressure on the output, and
checks every output element against :func:`normgen.sim.golden.normalize`, bit for bit.
"""
from __future__ import annotations

import argparse

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from normgen.hw import CoreConfig, build_core, input_layout, output_layout
from normgen.sim import golden


class Accelerator(wiring.Component):
    """The user's design: a stream in, a normalized stream out."""

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        super().__init__({
            "i": In(stream.Signature(input_layout(cfg))),
            "o": Out(stream.Signature(output_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.norm = norm = build_core(self._cfg)
        wiring.connect(m, wiring.flipped(self.i), norm.i)
        wiring.connect(m, norm.o, wiring.flipped(self.o))
        return m


def simulate(cfg: CoreConfig, vectors, *, idle=0.3, stall=0.3, seed=0) -> list[np.ndarray]:
    """Send ``vectors`` (integer arrays, lengths multiples of the lane count) through an
    ``Accelerator`` in Amaranth's simulator; returns the output vectors."""
    dut = Accelerator(cfg)
    rng = np.random.default_rng(seed)
    lanes = cfg.lanes
    outputs = []

    async def source(ctx):
        for x in vectors:
            beats = len(x) // lanes
            for beat in range(beats):
                while rng.random() < idle:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": [int(v) for v in x[beat * lanes:(beat + 1) * lanes]],
                                        "last": beat == beats - 1})
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        current = []
        while len(outputs) < len(vectors):
            ctx.set(dut.o.ready, rng.random() >= stall)
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                assert not payload.error
                current += list(payload.data)
                if payload.last:
                    outputs.append(np.array(current, np.int64))
                    current = []

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return outputs


def random_vectors(cfg: CoreConfig, lengths, seed=1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    fmt = cfg.in_format
    return [fmt.quantize(rng.normal(0, 1.5, n))[0] for n in lengths]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norm", default="layernorm", choices=("layernorm", "rmsnorm"))
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = CoreConfig(norm=args.norm, features=64, lanes=args.lanes, in_format="s4.12", out_format="s4.12")
    lengths = [cfg.lanes, 8 * cfg.lanes, cfg.features, 3 * cfg.lanes]
    vectors = random_vectors(cfg, lengths)
    outputs = simulate(cfg, vectors)
    expected = [golden.normalize(cfg, x[None, :])[0] for x in vectors]
    mismatches = sum(int(np.count_nonzero(y != e)) for y, e in zip(outputs, expected))
    print(f"{cfg.describe()}: {len(vectors)} vectors, {sum(lengths)} elements, {mismatches} differ from the golden model")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())

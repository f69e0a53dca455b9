"""The one-hot state machine helper against a Python model of the same transition table."""
import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from normgen.hw.sequencer import OneHot

# state: (next state when go = 0, next state when go = 1)
TABLE = {"IDLE": ("IDLE", "A"), "A": ("B", "B"), "B": ("B", "C"), "C": ("IDLE", "A")}


def build():
    m = Module()
    go = Signal()
    fsm = OneHot(m, "IDLE")
    for state, (stay, leave) in TABLE.items():
        with fsm.state(state):
            if stay != state:
                with m.If(~go):
                    fsm.goto(stay)
            with m.If(go):
                fsm.goto(leave)
    fsm.close()
    return m, go, {name: fsm.flag(name) for name in TABLE}


def test_one_flag_per_cycle_following_the_table():
    m, go, flags = build()
    rng = np.random.default_rng(3)
    stimulus = rng.integers(0, 2, 400)
    seen = []

    async def bench(ctx):
        for value in stimulus:
            ctx.set(go, int(value))
            seen.append([name for name, flag in flags.items() if ctx.get(flag)])
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    state = "IDLE"
    for cycle, (value, active) in enumerate(zip(stimulus, seen)):
        assert active == [state], f"cycle {cycle}"
        state = TABLE[state][int(value)]
    assert {s for s, in seen} == set(TABLE)       # every state was visited


def test_misuse_is_refused():
    m = Module()
    fsm = OneHot(m, "IDLE")
    with fsm.state("IDLE"):
        fsm.goto("RUN")
        with pytest.raises(SyntaxError, match="inside state"):
            with fsm.state("RUN"):
                pass
    with pytest.raises(NameError, match="RUN"):
        fsm.close()
    with pytest.raises(SyntaxError, match="outside a state"):
        fsm.goto("IDLE")
    with pytest.raises(NameError, match="twice"):
        with fsm.state("IDLE"):
            pass

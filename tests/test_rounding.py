"""``rounding = "nearest-even"``: every output is round-half-even of the exact result, saturated.

The exact reference (:mod:`normgen.sim.reference`, Python integers) decides every output; the
golden model and the gateware (Amaranth simulation, bit for bit against the golden model) must
give the correctly rounded value on every vector class, on the boundary class built to sit on
exact ties and next to them, for every core kind, several formats and lane counts.  The same
boundary class shows the check has teeth: the faithful cores miss the correctly rounded value on
many of its elements.
"""
from __future__ import annotations

import zlib
from fractions import Fraction

import numpy as np
import pytest

from normgen.hw import core_latency
from normgen.hw.config import GUARD_BITS, ConfigError, CoreConfig
from normgen.hw.nearest import NearestEvenFixup, decision_cycles
from normgen.sim import golden, reference, vectors
from normgen.sim.amaranth_bench import (Packet, ParamWrite, expected_batches, expected_outputs, run_batches,
                                        run_core)

FORMATS = {  # name -> (in, out, param, eps)
    "s4.12": ("s4.12", "s4.12", "s4.12", 1e-5),
    "s6.10": ("s6.10", "s6.10", "s6.10", 1e-5),
    "s3.5": ("s3.5", "s3.5", "s3.5", 0.0),
    "s8.8": ("s8.8", "s8.8", "s8.8", 2.0 ** -16),
    "s4.12-to-s6.10": ("s4.12", "s6.10", "s4.12", 0.0),      # β finer than the output: ties from β
}


def _config(norm, formats, *, rounding="nearest-even", **kwargs) -> CoreConfig:
    fin, fout, fpar, eps = FORMATS[formats]
    return CoreConfig(norm=norm, in_format=fin, out_format=fout, param_format=fpar, eps=eps,
                      rounding=rounding, **kwargs)


def _random_params(cfg: CoreConfig, rng) -> CoreConfig:
    return cfg.with_params(*vectors.random_params(cfg, rng)) if cfg.affine_stage else cfg


# ---- the golden model --------------------------------------------------------------------------
GOLDEN_CASES = [(norm, formats, affine) for norm in ("layernorm", "rmsnorm") for formats in FORMATS
                for affine in (True, False)]


@pytest.mark.parametrize("norm,formats,affine", GOLDEN_CASES,
                         ids=[f"{n}-{f}-{'affine' if a else 'noaffine'}" for n, f, a in GOLDEN_CASES])
def test_golden_nearest_even_is_correctly_rounded(norm, formats, affine):
    rng = np.random.default_rng(zlib.crc32(f"{norm}{formats}{affine}".encode()))
    cfg = _random_params(_config(norm, formats, features=64, affine=affine), rng)
    total = reference.AccuracyReport()
    for _, x in vectors.class_vectors(cfg, rng, per_class=8):
        total.add(reference.check_vector(cfg, x, golden.normalize(cfg, x[None, :])[0]))
    base = _config(norm, formats, features=16, affine=affine)
    ties = 0
    for item in vectors.boundary_items(base, rng, 24):
        item_cfg = item.config(base)
        total.add(reference.check_vector(item_cfg, item.x, golden.normalize(item_cfg, item.x[None, :])[0]))
        ties += int(item.ties.sum())
    assert total.elements > 2000
    assert total.unfaithful == 0 and total.not_rounded == 0, total.first_failure
    if affine:      # (without γ/β a tie needs z = odd/2**(F_out+1): out of reach of short vectors)
        assert ties > 0, "the boundary class holds exact ties"


@pytest.mark.parametrize("formats", list(FORMATS))
def test_boundary_class_catches_faithful_rounding(formats):
    """On the boundary class, the faithful core misses the correctly rounded value on many
    elements (ties resolved the other way): the class and the check have teeth."""
    rng = np.random.default_rng(zlib.crc32(formats.encode()))
    base = _config("layernorm", formats, features=16, rounding="faithful")
    missed = ties = 0
    for item in vectors.boundary_items(base, rng, 24):
        cfg = item.config(base)
        report = reference.check_vector(cfg, item.x, golden.normalize(cfg, item.x[None, :])[0])
        assert report.unfaithful == 0, report.first_failure
        missed += report.not_rounded
        ties += int(item.ties.sum())
    assert ties > 0 and missed > ties // 10


def test_nearest_even_error_bound_and_window():
    """The datapath's ``w`` is within ``5/16 * 2**-GUARD_BITS`` LSB of the exact result (the bound
    that makes every element outside the window correctly rounded), measured against the exact
    value to 2**-40 LSB on every class."""
    rng = np.random.default_rng(5)
    for formats in ("s4.12", "s3.5", "s8.8"):
        cfg = _random_params(_config("layernorm", formats, features=64), rng)
        k2 = cfg.w_frac - cfg.out_format.frac_bits
        gamma, beta = cfg.gamma_beta_int()
        worst = Fraction(0)
        for _, x in vectors.class_vectors(cfg, rng, per_class=4):
            n, s1, s2 = golden.statistics(cfg, x)
            d, mean_term = golden.denominator(cfg, n, s1, s2)
            a, b = golden.scalars(cfg, n, s1, s2)
            for i, xi in enumerate(x):
                v = golden.rnd(int(xi) * a - b, cfg.a_frac - cfg.z_frac)
                w = int(gamma[i]) * v + (int(beta[i]) << cfg.z_frac)
                exact, _ = reference._scaled_floor(n * int(xi) - mean_term, d, int(gamma[i]), int(beta[i]),
                                                   cfg.param_frac, cfg.out_format.frac_bits + 40)
                worst = max(worst, abs(Fraction(w, 1 << k2) - Fraction(exact, 1 << 40)))
        assert worst <= Fraction(5, 16) / 2 ** GUARD_BITS + Fraction(1, 1 << 40)
        assert Fraction(cfg.ambiguity_radius, 1 << k2) > Fraction(5, 16) / 2 ** GUARD_BITS


def test_rounding_is_validated():
    with pytest.raises(ConfigError, match="rounding must be one of faithful, nearest-even"):
        CoreConfig(rounding="nearest")
    cfg = CoreConfig(rounding="nearest-even")
    assert "rounding=nearest-even" in cfg.describe()
    assert cfg.with_params().rounding == "nearest-even"


# ---- the gateware ------------------------------------------------------------------------------
RTL_CASES = {
    "layernorm-s4.12-p1": ("layernorm", "s4.12", dict(features=16)),
    "layernorm-s4.12-to-s6.10-p4": ("layernorm", "s4.12-to-s6.10", dict(features=16, lanes=4)),
    "rmsnorm-s8.8-p2": ("rmsnorm", "s8.8", dict(features=16, lanes=2)),
    "layernorm-s3.5-noaffine-p2": ("layernorm", "s3.5", dict(features=16, lanes=2, affine=False)),
    "layernorm-s6.10-p2-interval": ("layernorm", "s6.10", dict(features=16, lanes=2, vector_interval=4)),
}


@pytest.mark.parametrize("name", list(RTL_CASES))
def test_gateware_nearest_even_bit_exact_and_correctly_rounded(name):
    norm, formats, kwargs = RTL_CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    base = _config(norm, formats, **kwargs)
    items, configs = [], []
    current = base
    for item in vectors.boundary_items(base, rng, 10):
        current = item.config(base)
        if base.affine_stage:
            items.append(ParamWrite(base.param_format.to_float(current.gamma_int),
                                    base.param_format.to_float(current.beta_int)))
        items.append(Packet(item.x))
        configs.append(current)
    for _, x in vectors.class_vectors(base, rng, per_class=2):
        items.append(Packet(x))
        configs.append(current)
    run = run_core(base, items, idle=0.2, stall=0.3, seed=3)
    expected = expected_outputs(base, items)
    assert len(run.outputs) == len(expected)
    packets = [item for item in items if isinstance(item, Packet)]
    for index, (packet, cfg, (got, _), (want, _)) in enumerate(zip(packets, configs, run.outputs, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"packet {index}")
        report = reference.check_vector(cfg, packet.x, got)
        assert report.unfaithful == 0 and report.not_rounded == 0, report.first_failure


def test_gateware_nearest_even_latency_and_worst_case_rate():
    """At full rate the declared latency holds; a vector whose every element is decided exactly
    (each on a tie) still comes out whole, within ``decision_cycles`` per element."""
    base = _config("layernorm", "s4.12", features=16)
    rng = np.random.default_rng(9)
    run = run_core(base, [Packet(vectors.make_vector(base, "uniform", 16, rng))])
    assert run.latencies[0] == core_latency(base)
    item = next(it for it in vectors.boundary_items(base, rng, 40) if it.ties.sum() >= 4)
    cfg = item.config(base)
    near = golden.ambiguous(cfg, item.x, *golden.scalars(cfg, *golden.statistics(cfg, item.x)),
                            cfg.gamma_int[:len(item.x)], cfg.beta_int[:len(item.x)])
    assert near.sum() >= item.ties.sum()          # every tie lies in the window
    run = run_core(cfg, [Packet(item.x)])
    np.testing.assert_array_equal(run.outputs[0][0], golden.normalize(cfg, item.x[None, :])[0])
    assert run.latencies[0] <= core_latency(cfg) + int(near.sum()) * decision_cycles(cfg)


BATCH_CASES = {
    "s4.12-c4-m8-p2": ("s4.12", dict(features=4, max_batch=8, lanes=2)),
    "s3.5-c2-m16-noaffine": ("s3.5", dict(features=2, max_batch=16, affine=False)),
}


@pytest.mark.parametrize("name", list(BATCH_CASES))
def test_batch_statistics_nearest_even(name):
    formats, kwargs = BATCH_CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    base = _config("batchnorm", formats, **kwargs)
    m = base.max_batch
    column_cfg = _config("layernorm", formats, features=m, affine=base.affine)
    columns = vectors.boundary_items(column_cfg, rng, base.features, length=m)
    cfg = base
    if base.affine_stage:     # each channel's γ/β put its column's first tie on the boundary
        f = base.param_format
        picks = [int(np.argmax(c.ties)) for c in columns]
        cfg = base.with_params(f.to_float(np.array([c.gamma[k] for c, k in zip(columns, picks)])),
                               f.to_float(np.array([c.beta[k] for c, k in zip(columns, picks)])))
    tie_batch = np.stack([c.x for c in columns], axis=1)
    batches = [tie_batch, vectors.make_vector(cfg, "uniform", m * cfg.features, rng).reshape(m, cfg.features),
               tie_batch[:2]]
    run = run_batches(cfg, batches, idle=0.2, stall=0.3, seed=4)
    expected = expected_batches(cfg, batches)
    assert len(run.outputs) == len(expected)
    for batch, (got, _), (want, _) in zip(batches, run.outputs, expected):
        np.testing.assert_array_equal(got, want)
        report = reference.check_batch(cfg, batch, got)
        assert report.unfaithful == 0 and report.not_rounded == 0, report.first_failure


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
def test_decision_stage_alone_matches_its_integer_specification(affine):
    """The decision stage on its own, every lane marked near, on random operands (ties and D = 0
    included): each output is :func:`golden.resolve_nearest` of its operands, saturated, in order,
    under backpressure."""
    from amaranth.sim import Simulator

    cfg = _config("layernorm", "s3.5", features=8, lanes=2, affine=affine)
    rng = np.random.default_rng(17)
    dut = NearestEvenFixup(cfg, shared_stats=True)
    w_in, w_p = cfg.in_format.width, cfg.param_format.width
    beats = []
    for index in range(24):
        n = int(rng.integers(1, cfg.features + 1))
        x = rng.integers(cfg.in_format.min_int, cfg.in_format.max_int + 1, cfg.lanes)
        s1 = int(rng.integers(-n * 128, n * 128))
        root = int(rng.integers(0, 1 << (cfg.d_width // 2 - 1)))
        d = 0 if index % 6 == 0 else root * root * int(rng.choice([1, 1, 3]))   # squares: ties
        gamma = rng.integers(-128, 128, cfg.lanes)
        beta = rng.integers(-128, 128, cfg.lanes)
        r = rng.integers(-150, 150, cfg.lanes)
        above = rng.integers(0, 2, cfg.lanes)
        beats.append((n, x, s1, d, gamma, beta, r, above))

    def expected(beat):
        n, x, s1, d, gamma, beta, r, above = beat
        out = []
        for k in range(cfg.lanes):
            g, b = (int(gamma[k]), int(beta[k])) if affine else (1, 0)
            y = golden.resolve_nearest(cfg, int(r[k] - above[k]), int(x[k]), n, s1, d, g, b)
            out.append(min(max(y, cfg.out_format.min_int), cfg.out_format.max_int))
        return out

    got = []

    async def source(ctx):
        for n, x, s1, d, gamma, beta, r, above in beats:
            ride = {"x": sum((int(v) & ((1 << w_in) - 1)) << (k * w_in) for k, v in enumerate(x)),
                    "n": n, "s1": s1 & ((1 << cfg.s1_width) - 1), "d": d}
            if affine:
                ride["par"] = sum((int(v) & ((1 << w_p) - 1)) << (k * w_p)
                                  for k, v in enumerate(list(gamma) + list(beta)))
            ctx.set(dut.i.payload, {"r": [int(v) for v in r], "near": (1 << cfg.lanes) - 1,
                                    "above": sum(int(v) << k for k, v in enumerate(above)),
                                    "ride": ride, "last": 1, "error": 0})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        while len(got) < len(beats):
            ready = rng.random() < 0.6
            ctx.set(dut.o.ready, ready)
            _, _, valid, data = await ctx.tick().sample(dut.o.valid, dut.o.payload.data)
            if valid and ready:
                got.append([int(v) for v in data])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-8 * 200 * len(beats) * decision_cycles(cfg))
    assert got == [expected(beat) for beat in beats]


# ---- BatchNorm inference: precision proved at generation time ----------------------------------
def _tie_channels(**kwargs) -> CoreConfig:
    """Four channels whose exact results land on ties for some inputs: var + eps a perfect square,
    γ, β and mean on coarse dyadic grids, γ = 0 with β on a half LSB, negative γ."""
    return CoreConfig(norm="batchnorm", features=4, in_format="s3.5", out_format="s3.5", eps=0.0,
                      mean=[0.25, -0.5, 0.0, 0.125], var=[0.25, 4.0, 1.0, 0.0625],
                      gamma=[0.5, -1.5, 0.0, 0.75], beta=[1 / 64, -0.25, 3 / 64, 0.5], **kwargs)


def test_batchnorm_inference_nearest_even_every_input_in_the_gateware():
    """Every input value of every channel (s3.5: all 256) through the gateware: bit-exact with the
    golden model and correctly rounded by the exact reference, exact ties included; the faithful
    core on the same channels misses some."""
    cfg = _tie_channels(rounding="nearest-even", lanes=2)
    values = np.arange(cfg.in_format.min_int, cfg.in_format.max_int + 1)
    packets = [Packet(np.full(cfg.features, v)) for v in values]
    run = run_core(cfg, packets, idle=0.1, stall=0.2, seed=2)
    expected = expected_outputs(cfg, packets)
    assert len(run.outputs) == len(expected)
    total = reference.AccuracyReport()
    for packet, (got, _), (want, _) in zip(packets, run.outputs, expected):
        np.testing.assert_array_equal(got, want)
        total.add(reference.check_vector(cfg, packet.x, got))
    assert total.unfaithful == 0 and total.not_rounded == 0, total.first_failure
    faithful = _tie_channels()
    missed = reference.AccuracyReport()
    for packet in packets:
        n = len(packet.x)
        y = golden.elementwise(faithful, packet.x, faithful.scale_int[:n], faithful.shift_int[:n], None, None)
        missed.add(reference.check_vector(faithful, packet.x, y))
    assert missed.not_rounded > 0


def test_batchnorm_inference_nearest_even_costs_precision_and_refuses_what_it_cannot_prove():
    faithful, nearest = _tie_channels(), _tie_channels(rounding="nearest-even")
    assert nearest.a_frac >= faithful.a_frac
    # var = 9/4: s = 2/3 is no dyadic; the ties at x = 0 (mod 3) cannot all be reproduced
    with pytest.raises(ConfigError, match="rounding nearest-even: channel 1: no precision FA .*exact tie"):
        CoreConfig(norm="batchnorm", features=2, in_format="s3.5", out_format="s3.5", eps=0.0,
                   mean=[0.0, 0.0], var=[1.0, 2.25], gamma=[1.0, 1.0], beta=[0.0, 2.0 ** -6],
                   rounding="nearest-even")


@pytest.mark.parametrize("formats", ["s4.12", "s8.8", "s6.10"])
def test_batchnorm_inference_nearest_even_random_channels(formats):
    """Random running statistics and γ/β (negative γ included) on 16-bit formats: every class
    through the gateware, bit-exact and correctly rounded; a run-time load is proved too."""
    fin, fout, _, eps = FORMATS[formats]
    rng = np.random.default_rng(zlib.crc32(formats.encode()))
    c = 8

    def params():
        return dict(mean=rng.normal(0, 1, c), var=rng.uniform(0.05, 4, c), gamma=rng.normal(0, 1.5, c),
                    beta=rng.normal(0, 1, c))

    cfg = CoreConfig(norm="batchnorm", features=c, lanes=2, in_format=fin, out_format=fout, eps=eps,
                     rounding="nearest-even", **params())
    packets = [Packet(x) for _, x in vectors.class_vectors(cfg, rng, per_class=3)]
    load = ParamWrite(**params())
    try:
        load.words(cfg)
        items = packets[:10] + [load] + packets[10:]
    except Exception as exc:          # this core's precision cannot prove the new channels: refused
        assert "generate the core with these parameters" in str(exc)
        items = packets
    run = run_core(cfg, items, idle=0.2, stall=0.2, seed=6)
    expected = expected_outputs(cfg, items)
    assert len(run.outputs) == len(expected)
    current = cfg
    outputs = iter(zip(run.outputs, expected))
    for item in items:
        if isinstance(item, ParamWrite):
            current = CoreConfig(norm="batchnorm", features=c, lanes=2, in_format=fin, out_format=fout, eps=eps,
                                 rounding="nearest-even", mean=item.mean, var=item.var, gamma=item.gamma,
                                 beta=item.beta)
            continue
        (got, _), (want, _) = next(outputs)
        np.testing.assert_array_equal(got, want)
        report = reference.check_vector(current, item.x, got)
        assert report.unfaithful == 0 and report.not_rounded == 0, report.first_failure

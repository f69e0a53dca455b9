"""Properties over random configurations (Hypothesis, derandomized so every run draws the same
cases):

- a configuration either constructs, and then the golden model on full-scale and random vectors
  is faithful to the exact reference (so no derived width is too narrow and nothing overflows
  int64), or it raises :class:`ConfigError` naming a parameter an independent check finds wrong
  (or, when every parameter is in range, the arithmetic-width limit); never another exception;
- over small random formats, lengths, γ/β and inputs, the golden model has no unfaithful output.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

from normgen.hw.config import MAX_ARITH_WIDTH, ConfigError, CoreConfig  # noqa: E402
from normgen.sim import golden, reference, vectors  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

#: Elements of one vector checked against the exact reference when the vector is long; the
#: extremes of every full-scale class sit at the first, last and random positions.
SAMPLED_ELEMENTS = 48


# ---- an independent account of what a legal configuration is -------------------------------------

def _format_problem(text):
    """Why ``text`` is not a legal ``sI.F`` format (None if it is)."""
    match = re.fullmatch(r"s(\d+)\.(\d+)", text) if isinstance(text, str) else None
    if match is None:
        return "syntax"
    i, f = int(match[1]), int(match[2])
    if i < 1 or not 2 <= i + f <= 32:
        return "range"
    return None


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def wrong_parameters(kw) -> set:
    """The parameters that break a documented range by themselves (README, CoreConfig), decided
    here without CoreConfig's code.  Only meaningful checks that do not depend on a parameter
    that is itself wrong are made."""
    wrong = set()
    if kw["norm"] not in ("layernorm", "rmsnorm", "batchnorm"):
        wrong.add("norm")
    if kw["scalar_mul"] not in ("parallel", "serial"):
        wrong.add("scalar_mul")
    features, lanes = kw["features"], kw["lanes"]
    if not _integer(features) or not 1 <= features <= 65536:
        wrong.add("features")
    if not _integer(lanes) or (_integer(features) and not (1 <= lanes and features % lanes == 0)):
        wrong.add("lanes")
    for name in ("in_format", "out_format", "param_format"):
        if _format_problem(kw[name]):
            wrong.add(name)
    max_batch = kw.get("max_batch")
    inference = kw["norm"] == "batchnorm" and max_batch is None
    if ("param_format" not in wrong and kw["affine"] and not inference and kw.get("gamma") is None
            and int(kw["param_format"][1:].split(".")[0]) < 2):
        wrong.add("param_format")             # the default γ = 1 needs two integer bits
    if max_batch is not None and (kw["norm"] != "batchnorm" or not _integer(max_batch)
                                  or not 2 <= max_batch <= 4096):
        wrong.add("max_batch")
    if inference and ("mean" not in kw or "var" not in kw):
        wrong.add("mean")                     # inference folds the running statistics: required
    eps = kw["eps"]
    if "in_format" not in wrong:
        i_in, f_in = map(int, kw["in_format"][1:].split("."))
        if not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 <= eps <= 4 ** i_in:
            wrong.add("eps")
        elif eps > 0 and round(eps * 2 ** (2 * f_in)) == 0 and not inference:
            wrong.add("eps")
    return wrong


# ---- strategies -----------------------------------------------------------------------------------

#: The parameters a drawn configuration may break on purpose (the rest are drawn in range).
BREAKABLE = ("norm", "features", "lanes", "in_format", "out_format", "param_format", "scalar_mul",
             "eps", "max_batch")


def formats(odd: bool):
    if not odd:
        return st.builds(lambda i, f: f"s{i}.{f}", st.integers(1, 12), st.integers(0, 14))
    return st.one_of(st.builds(lambda i, f: f"s{i}.{f}", st.integers(0, 40), st.integers(0, 40)),
                     st.sampled_from(["4.12", "u4.12", "s4", "s-1.4", "", "s1.0", "S4.12"]))


@st.composite
def configurations(draw):
    # none, one or two parameters drawn from outside their ranges (or anywhere): the independent
    # check decides which are wrong, whatever the intent
    broken = draw(st.one_of(st.just(set()), st.sets(st.sampled_from(BREAKABLE), min_size=1, max_size=2)))
    norm = draw(st.just("groupnorm") if "norm" in broken else st.sampled_from(["layernorm", "rmsnorm", "batchnorm"]))
    batchnorm_mode = draw(st.sampled_from(["batch", "inference"])) if norm == "batchnorm" else None
    if "features" in broken:
        features = draw(st.sampled_from([0, -1, 65537, True, 8.0, "8"]))
    elif batchnorm_mode == "inference":                   # the exact folding is slow on many channels
        features = draw(st.integers(1, 48))
    elif batchnorm_mode == "batch":                       # so is the golden model, channel by channel
        features = draw(st.integers(1, 64))
    else:
        features = draw(st.one_of(st.integers(1, 48), st.integers(1, 300), st.sampled_from([1024, 4096, 65536])))
    if "lanes" in broken or not (_integer(features) and features >= 1):
        lanes = draw(st.one_of(st.integers(-1, 12), st.sampled_from([2.0, None])))
    else:
        lanes = draw(st.sampled_from([d for d in range(1, min(features, 64) + 1) if features % d == 0]))
    kw = dict(norm=norm, features=features, lanes=lanes,
              **{name: draw(formats(name in broken)) for name in ("in_format", "out_format", "param_format")},
              scalar_mul=draw(st.just("fast") if "scalar_mul" in broken else st.sampled_from(["parallel", "serial"])),
              affine=draw(st.booleans()))
    if "eps" in broken:
        kw["eps"] = draw(st.one_of(st.floats(2.0 ** -40, 2.0 ** -20),          # may round to 0 on the grid
                                   st.floats(allow_nan=True, allow_infinity=True),
                                   st.sampled_from([-1e-5, 1e300, float("nan")])))
    else:
        kw["eps"] = draw(st.one_of(st.just(0.0), st.integers(1, 2 ** 12).map(lambda e: e * 2.0 ** -12),
                                   st.floats(1e-3, 1.0)))
    if "max_batch" in broken:
        kw["max_batch"] = draw(st.sampled_from([0, 1, 4096 + 1, 2.0]) if norm == "batchnorm" else st.integers(2, 8))
    elif batchnorm_mode == "batch":
        kw["max_batch"] = draw(st.integers(2, 32))
    elif batchnorm_mode == "inference" and _integer(features) and 1 <= features <= 64:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        kw["mean"] = rng.normal(0, 2, features)
        kw["var"] = rng.uniform(2.0 ** -draw(st.integers(0, 12)), 4, features)
        if kw["affine"]:
            kw["gamma"] = rng.normal(0, 1, features)
            kw["beta"] = rng.normal(0, 1, features)
    return kw


# ---- the exact check of one vector, on every element or a sample ---------------------------------

def _indices(n, rng):
    if n <= SAMPLED_ELEMENTS:
        return range(n)
    return sorted({0, n - 1, *rng.choice(n, SAMPLED_ELEMENTS - 2, replace=False).tolist()})


def unfaithful_elements(cfg, x, y, rng, gamma=None, beta=None) -> list:
    """Positions where ``y`` is neither neighbour of the exact result on the output grid."""
    x = [int(v) for v in x]
    n = len(x)
    bad = []
    if cfg.kind.folded:
        for i in _indices(n, rng):
            bounds = reference.batchnorm_bounds(cfg, i, x[i])
            if int(y[i]) not in (bounds.lo, bounds.hi):
                bad.append(i)
        return bad
    s1, s2 = sum(x), sum(v * v for v in x)
    e = cfg.eps_int
    d = n * s2 - s1 * s1 + e * n * n if cfg.subtracts_mean else n * s2 + e * n * n
    mean_term = s1 if cfg.subtracts_mean else 0
    if gamma is None:
        gamma, beta = cfg.gamma_beta_int()
    for i in _indices(n, rng):
        bounds = reference.exact_bounds(cfg, n * x[i] - mean_term, d, int(gamma[i]), int(beta[i]))
        if int(y[i]) not in (bounds.lo, bounds.hi):
            bad.append(i)
    return bad


def vectors_of_every_class(cfg, n, rng) -> np.ndarray:
    """One vector of every class of the numeric contract (full scale, alternating, tiny and huge
    variance, ...), plus all-maximum, shape ``(classes, n)``."""
    return np.stack([vectors.make_vector(cfg, kind, n, rng) for kind in vectors.CLASSES]
                    + [np.full(n, cfg.in_format.max_int)])


def check_golden(cfg, seed) -> list:
    """Unfaithful elements of the golden model on every vector class, at N_max and one other
    length (batch statistics: M_max and one other batch size), with random γ/β on the rails."""
    rng = np.random.default_rng(seed)
    if cfg.affine_stage:
        cfg = cfg.with_params(*vectors.random_params(cfg, rng))
    bad = []
    if cfg.kind.statistics == "batch":
        gamma, beta = cfg.gamma_beta_int()
        for m in sorted({cfg.max_batch, int(rng.integers(1, cfg.max_batch + 1))}):
            columns = rng.integers(cfg.in_format.min_int, cfg.in_format.max_int + 1, (m, cfg.features))
            for c, column in enumerate(vectors_of_every_class(cfg, m, rng)[:cfg.features]):
                columns[:, c] = column
            y = golden.normalize_batch(cfg, columns)
            for c in _indices(cfg.features, rng):
                bad += unfaithful_elements(cfg, columns[:, c], y[:, c], rng,
                                           np.full(m, gamma[c]), np.full(m, beta[c]))
        return bad
    lengths = {cfg.features, cfg.lanes * int(rng.integers(1, cfg.beats_max + 1))}
    for n in sorted(lengths):
        x = vectors_of_every_class(cfg, n, rng)
        y = golden.normalize(cfg, x)
        for row in range(len(x)):
            bad += unfaithful_elements(cfg, x[row], y[row], rng)
    return bad


@settings(max_examples=300, **SETTINGS)
@given(configurations(), st.integers(0, 2 ** 32 - 1))
def test_config_constructs_consistently_or_names_the_wrong_parameter(kw, seed):
    wrong = wrong_parameters(kw)
    try:
        cfg = CoreConfig(**kw)
    except ConfigError as exc:
        message = str(exc)
        event("refused: a parameter out of range" if wrong else "refused: arithmetic width")
        if wrong:
            assert any(re.search(rf"\b{name}\b", message) for name in wrong), (wrong, message)
        else:
            # every parameter in range: only the arithmetic-width limit may refuse
            assert str(MAX_ARITH_WIDTH) in message, message
            assert re.search(r"\b(in_format|out_format|param_format)\b", message), message
        return
    assert not wrong, f"accepted although {sorted(wrong)} break their ranges"
    event(f"constructed: {cfg.norm}" + (" (batch statistics)" if cfg.kind.statistics == "batch" else ""))
    assert all(0 < w <= MAX_ARITH_WIDTH for w in (cfg.s2_width, cfg.xa_width, cfg.w_width, cfg.b_width))
    assert check_golden(cfg, seed) == []


# ---- golden model against the exact reference, small formats ------------------------------------

@st.composite
def small_cores(draw):
    def fmt(min_int_bits=1):
        width = draw(st.integers(4, 16))
        return draw(st.integers(min_int_bits, width)), width

    i_in, w_in = fmt()
    i_out, w_out = fmt()
    i_p, w_p = fmt(2)
    features = draw(st.integers(1, 24))
    norm = draw(st.sampled_from(["layernorm", "rmsnorm"]))
    affine = draw(st.booleans())
    f_in = w_in - i_in
    eps = draw(st.integers(0, 64)) * 2.0 ** (-2 * f_in)             # on the grid: never rounds to 0
    try:
        cfg = CoreConfig(norm=norm, features=features, in_format=f"s{i_in}.{f_in}",
                         out_format=f"s{i_out}.{w_out - i_out}", param_format=f"s{i_p}.{w_p - i_p}",
                         eps=eps, affine=affine)
    except ConfigError as exc:                         # only the documented width limit may refuse
        assert str(MAX_ARITH_WIDTH) in str(exc), str(exc)
        hypothesis.reject()
    if affine:
        p = cfg.param_format
        ints = st.integers(p.min_int, p.max_int)
        gamma = draw(st.lists(st.one_of(ints, st.sampled_from([0, p.min_int, p.max_int])),
                              min_size=features, max_size=features))
        beta = draw(st.lists(ints, min_size=features, max_size=features))
        cfg = cfg.with_params(p.to_float(gamma), p.to_float(beta))
    f = cfg.in_format
    element = st.one_of(st.integers(f.min_int, f.max_int), st.sampled_from([f.min_int, f.max_int, 0]))
    vectors = draw(st.lists(st.lists(element, min_size=1, max_size=features), min_size=1, max_size=4))
    return cfg, vectors


@settings(max_examples=400, **SETTINGS)
@given(small_cores())
def test_golden_model_is_faithful_on_small_formats(core):
    cfg, vectors = core
    for x in vectors:
        y = golden.normalize(cfg, np.array([x], dtype=np.int64))[0]
        report = reference.check_vector(cfg, x, y)
        assert report.unfaithful == 0, report.first_failure

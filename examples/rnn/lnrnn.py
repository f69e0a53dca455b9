"""A layer-normalized recurrent network with the LayerNorm of every time step computed three ways.

The network (Ba, Kiros & Hinton 2016, "Layer Normalization", eq. 4), ``H`` hidden units::

    a_t = W_hh·h_{t-1} + W_xh·x_t + b                   summed inputs          (H floats)
    h_t = tanh(γ ⊙ (a_t − μ_t) / √(σ_t² + ε) + β)      μ_t, σ_t² over the H units, biased
    logit = w_out·h_T + b_out                          one decision per sequence, at its last step

with one γ/β shared by all time steps and ``h_0 = 0``.  The pre-normalization bias ``b`` is not
redundant here: LayerNorm removes only its mean over the units, and at ``t = 1`` (``h_0 = 0``) it
keeps ``a_1`` on the scale of the later steps instead of the scale of one scalar input, which the
fixed-point input grid could not resolve.

The task (:func:`adding_task`) is the adding problem of Hochreiter & Schmidhuber as a
classification: every step carries a value ``u_t ~ U(0, 1)`` and a marker bit; two steps are
marked, one in each half of a sequence of 10 to 50 steps; the class is ``u_a + u_b > 1``.  The
network has to hold the first marked value for up to 49 steps.  Chance level is 50 %.

The LayerNorm variants (all return :class:`NormOut`):

* :class:`FloatLayerNorm` — float64, the trained float γ/β: the reference.
* :class:`Float32LayerNorm` — the same in float32: a yardstick for the growth of a deviation.
* :class:`GoldenLayerNorm` — ``a_t`` quantized to the core's input format (round half to even,
  saturating), the bit-exact golden model of the configured normgen core
  (:func:`normgen.sim.golden.normalize`) with the trained γ/β on the parameter grid, the output
  integers back to floats; ``tanh`` stays float64.
* the RTL — the same, but the emitted Verilog computes every step (:mod:`examples.rnn.cocotb_rnn`,
  started by :func:`run_rtl`).  The Verilog is generated with the default γ = 1, β = 0 and the
  trained values are written through the core's parameter port at the start of the run.
* :class:`BatchNormBatch1` — for contrast: batch-statistics BatchNorm over a batch of one sample.
  Every unit's mean is the sample itself and its variance 0, so the output is β whatever the
  input: the network forgets everything at every step.

One RNN loop (:func:`rnn_steps`, a generator that yields the summed inputs and receives the
normalized values) serves all of them: :func:`run` drives it with a plain function,
:func:`run_async` with a coroutine (the cocotb test).  The summed inputs are computed row by row
(:func:`_rowwise`) so that their float64 bits do not depend on how many sequences share a step:
the RTL runs one sequence at a time (batch size 1), the golden model a whole test set at once, and
both must see the same ``a_t``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from normgen.hw import generate_verilog
from normgen.hw.config import CoreConfig
from normgen.sim import golden
from normgen.sim.runner import build_lock, build_root, choose_simulator, simulator_build_options, with_env

__all__ = ["HIDDEN", "EPS", "CORE_KWARGS", "T_MIN", "T_MAX", "TEST_SEED", "WEIGHTS_PATH",
           "Dataset", "adding_task", "LNRNN", "NormOut", "FloatLayerNorm", "Float32LayerNorm", "GoldenLayerNorm",
           "BatchNormBatch1", "summed_input_bound", "core_config", "quantize_summed", "RnnRun", "rnn_steps", "run",
           "run_async", "summed_inputs_of", "step_error_bound", "step_jacobian", "linearized_deviation_bound",
           "run_rtl", "RtlRunFailed"]

#: Hidden units H; also the core's N_max (every LayerNorm vector has exactly H elements).
HIDDEN = 32
#: ε of training and of the core.  2**-16 lies on the input-squared grid of s5.11 (2**-22), so the
#: core's effective ε equals the trained one exactly (e = 64 on the input-squared grid).
EPS = 2.0 ** -16
#: The core.  Input s5.11: with |h| <= 1 and inputs in [0, 1], |a_t| can never exceed
#: :func:`summed_input_bound` (about 9 for the shipped weights), so ±16 cannot saturate, and every
#: bit not spent on range goes to resolution (the input rounding dominates the error budget, see
#: :func:`step_error_bound`).  Output s4.12: the normalized values reach √(H−1)·|γ| + |β|, and
#: tanh of anything beyond ±8 is 1 to within 2.3e-7.  Four lanes: 8 beats per vector.
CORE_KWARGS = {"norm": "layernorm", "features": HIDDEN, "lanes": 4, "in_format": "s5.11",
               "out_format": "s4.12", "param_format": "s4.12", "eps": EPS}

#: Sequence lengths of the task (inclusive).
T_MIN, T_MAX = 10, 50
#: Seed of the test sets (training draws from other seeds, see examples/rnn/train.py).
TEST_SEED = 2016
INPUTS = 2                      # (value, marker) per step

#: The trained weights ship next to this module.
WEIGHTS_PATH = Path(__file__).resolve().with_name("ln_rnn.npz")


# ---- the task ------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Sequences of different lengths, zero-padded to the longest."""
    inputs: np.ndarray          # (count, t_max, 2) float64: (value, marker); zero past each length
    lengths: np.ndarray         # (count,) int64
    labels: np.ndarray          # (count,) int64: 1 when the two marked values sum to more than 1

    def __len__(self):
        return len(self.lengths)

    def subset(self, index) -> "Dataset":
        index = np.asarray(index)
        lengths = self.lengths[index]
        t_max = int(lengths.max())
        return Dataset(self.inputs[index, :t_max], lengths, self.labels[index])

    @property
    def steps(self) -> int:
        """LayerNorm calls needed to run every sequence."""
        return int(self.lengths.sum())


def adding_task(rng, count: int, t_min: int = T_MIN, t_max: int = T_MAX) -> Dataset:
    """``count`` sequences of the adding problem (classification variant), lengths uniform in
    ``t_min..t_max``; ``rng`` is a seed or a :class:`numpy.random.Generator`."""
    rng = np.random.default_rng(rng)
    if not 2 <= t_min <= t_max:
        raise ValueError(f"need 2 <= t_min <= t_max, not t_min = {t_min}, t_max = {t_max}")
    lengths = rng.integers(t_min, t_max + 1, count)
    inputs = np.zeros((count, t_max, INPUTS))
    values = rng.random((count, t_max))
    first = (rng.random(count) * (lengths // 2)).astype(np.int64)                  # first half
    second = lengths // 2 + (rng.random(count) * (lengths - lengths // 2)).astype(np.int64)
    rows = np.arange(count)
    mask = np.arange(t_max)[None, :] < lengths[:, None]
    inputs[:, :, 0] = np.where(mask, values, 0.0)
    inputs[rows, first, 1] = 1.0
    inputs[rows, second, 1] = 1.0
    labels = (values[rows, first] + values[rows, second] > 1.0).astype(np.int64)
    return Dataset(inputs, lengths.astype(np.int64), labels)


# ---- the trained network -------------------------------------------------------------------------
def _rowwise(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``v @ w.T`` for a batch of rows, each row reduced on its own (NumPy's pairwise sum over a
    contiguous axis), so a row's result has the same bits whatever the batch size."""
    return np.ascontiguousarray(v[:, None, :] * w[None, :, :]).sum(axis=-1)


@dataclass(frozen=True, eq=False)
class LNRNN:
    """Weights of the layer-normalized RNN (float64)."""
    w_xh: np.ndarray            # (H, 2)
    w_hh: np.ndarray            # (H, H)
    b: np.ndarray               # (H,)
    gamma: np.ndarray           # (H,)
    beta: np.ndarray            # (H,)
    w_out: np.ndarray           # (H,)
    b_out: float
    eps: float = EPS
    meta: dict = field(default_factory=dict)

    ARRAYS = ("w_xh", "w_hh", "b", "gamma", "beta", "w_out")

    @property
    def hidden(self) -> int:
        return len(self.b)

    @classmethod
    def load(cls, path=WEIGHTS_PATH) -> "LNRNN":
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name], dtype=np.float64) for name in cls.ARRAYS}
            meta = json.loads(str(data["meta"])) if "meta" in data else {}
            return cls(**arrays, b_out=float(data["b_out"]), eps=float(data["eps"]), meta=meta)

    def save(self, path):
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float64) for name in self.ARRAYS}
        np.savez(path, **arrays, b_out=np.float64(self.b_out), eps=np.float64(self.eps),
                 meta=np.array(json.dumps(self.meta, sort_keys=True)))

    def summed_inputs(self, h: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``a_t`` for a batch: ``h`` (b, H), ``x`` (b, 2) -> (b, H)."""
        return _rowwise(h, self.w_hh) + _rowwise(x, self.w_xh) + self.b

    def readout(self, h: np.ndarray) -> np.ndarray:
        """Logits (b,) from the last hidden states (b, H)."""
        return _rowwise(h, self.w_out[None, :])[:, 0] + self.b_out


def summed_input_bound(model: LNRNN) -> float:
    """The largest ``|a_t|`` any input sequence can produce: ``|h| <= 1`` (tanh) and both inputs
    lie in [0, 1], so ``|a_i| <= Σ_j |W_hh[i, j]| + Σ_k |W_xh[i, k]| + |b_i|``."""
    return float(np.max(np.abs(model.w_hh).sum(axis=1) + np.abs(model.w_xh).sum(axis=1) + np.abs(model.b)))


# ---- the core ------------------------------------------------------------------------------------
def core_config(model: LNRNN | None = None, **overrides) -> CoreConfig:
    """The LayerNorm core; with ``model``, holding its trained γ/β (quantized to the parameter
    grid), without, the default γ = 1, β = 0 the Verilog is generated with."""
    kwargs = {**CORE_KWARGS, **overrides}
    if model is not None:
        if model.eps != kwargs["eps"]:
            raise ValueError(f"the network was trained with eps = {model.eps!r}, the core has {kwargs['eps']!r}")
        kwargs.update(gamma=model.gamma, beta=model.beta)
    return CoreConfig(**kwargs)


def quantize_summed(cfg: CoreConfig, a: np.ndarray) -> tuple[np.ndarray, int]:
    """``a_t`` to input integers of the core (round half to even, saturating): ``(ints, saturated)``."""
    return cfg.in_format.quantize(a)


# ---- LayerNorm variants --------------------------------------------------------------------------
@dataclass
class NormOut:
    """Normalized values of one step for the active sequences; integers for the fixed-point ones."""
    y: np.ndarray                       # (b, H) floats
    x_int: np.ndarray | None = None     # (b, H) core input integers
    y_int: np.ndarray | None = None     # (b, H) core output integers
    saturated: int = 0                  # input elements that hit the rails of the input format


class FloatLayerNorm:
    """float64 LayerNorm with the trained float γ/β (PyTorch ``layer_norm`` semantics)."""
    label = "float64 LayerNorm"

    def __init__(self, model: LNRNN):
        self.gamma, self.beta, self.eps = model.gamma, model.beta, model.eps

    def normalized(self, a: np.ndarray) -> np.ndarray:
        """``(a − μ)/√(σ² + ε)`` per row, before the affine stage."""
        mu = a.mean(axis=1, keepdims=True)
        var = ((a - mu) ** 2).mean(axis=1, keepdims=True)
        return (a - mu) / np.sqrt(var + self.eps)

    def __call__(self, a: np.ndarray) -> NormOut:
        return NormOut(self.gamma * self.normalized(a) + self.beta)


class Float32LayerNorm(FloatLayerNorm):
    """The same LayerNorm evaluated in float32 (the rest of the network stays float64): a yardstick
    for how the network amplifies a LayerNorm rounding error of known, tiny size."""
    label = "float32 LayerNorm"

    def __call__(self, a: np.ndarray) -> NormOut:
        f32 = np.float32
        a = a.astype(f32)
        mu = a.mean(axis=1, keepdims=True, dtype=f32)
        c = a - mu
        var = (c * c).mean(axis=1, keepdims=True, dtype=f32)
        y = c / np.sqrt(var + f32(self.eps)) * self.gamma.astype(f32) + self.beta.astype(f32)
        return NormOut(y.astype(np.float64))


class GoldenLayerNorm:
    """The bit-exact golden model of the core holding the trained γ/β."""
    label = "golden-model LayerNorm"

    def __init__(self, model: LNRNN, cfg: CoreConfig | None = None):
        self.cfg = core_config(model) if cfg is None else cfg

    def __call__(self, a: np.ndarray) -> NormOut:
        x_int, saturated = quantize_summed(self.cfg, a)
        y_int = golden.normalize(self.cfg, x_int)
        return NormOut(self.cfg.out_format.to_float(y_int), x_int, y_int, saturated)


class BatchNormBatch1:
    """Batch-statistics BatchNorm (training-mode ``BatchNorm1d`` over the H units as channels),
    each sequence in a batch of its own: statistics over the batch axis of a (1, H) array."""
    label = "BatchNorm, batch statistics, batch size 1"

    def __init__(self, model: LNRNN):
        self.gamma, self.beta, self.eps = model.gamma, model.beta, model.eps

    def __call__(self, a: np.ndarray) -> NormOut:
        batches = a[:, None, :]                                    # (b, batch of 1, H)
        mu = batches.mean(axis=1, keepdims=True)
        var = batches.var(axis=1, keepdims=True)                   # biased: 0 for one sample
        y = self.gamma * (batches - mu) / np.sqrt(var + self.eps) + self.beta
        return NormOut(y[:, 0, :])


# ---- the loop ------------------------------------------------------------------------------------
@dataclass
class RnnRun:
    """Per-step record of a run over a :class:`Dataset` (padded past each length)."""
    lengths: np.ndarray                 # (count,)
    hidden: np.ndarray                  # (count, t_max, H) h_t, NaN past the length
    logits: np.ndarray                  # (count,)
    x_int: np.ndarray | None = None     # (count, t_max, H) core input integers, 0 past the length
    y_int: np.ndarray | None = None     # (count, t_max, H) core output integers, 0 past the length
    saturated: int = 0

    @property
    def predictions(self) -> np.ndarray:
        return (self.logits > 0).astype(np.int64)

    def accuracy(self, labels) -> float:
        return float(np.mean(self.predictions == np.asarray(labels)))

    def loss(self, labels) -> float:
        """Mean binary cross-entropy (nats)."""
        signs = 2.0 * np.asarray(labels) - 1.0
        return float(np.mean(np.logaddexp(0.0, -signs * self.logits)))

    def valid(self) -> np.ndarray:
        """(count, t_max) mask of the steps that exist."""
        return np.arange(self.hidden.shape[1])[None, :] < self.lengths[:, None]

    ARRAYS = ("lengths", "hidden", "logits", "x_int", "y_int")

    def subset_of(self, index) -> "RnnRun":
        """The sequences ``index`` only (trimmed to their longest)."""
        index = np.asarray(index)
        t_max = int(self.lengths[index].max())
        pick = lambda array: None if array is None else array[index, :t_max]  # noqa: E731
        return RnnRun(self.lengths[index], pick(self.hidden), self.logits[index], pick(self.x_int),
                      pick(self.y_int), self.saturated)

    @classmethod
    def concatenate(cls, runs: list["RnnRun"]) -> "RnnRun":
        """One run over the sequences of ``runs``, in order (re-padded to the longest)."""
        t_max = max(r.hidden.shape[1] for r in runs)

        def pad(array, value):
            if array is None:
                return None
            width = [(0, 0)] * array.ndim
            width[1] = (0, t_max - array.shape[1])
            return np.pad(array, width, constant_values=value)
        ints = all(r.x_int is not None for r in runs)
        return cls(np.concatenate([r.lengths for r in runs]),
                   np.concatenate([pad(r.hidden, np.nan) for r in runs]),
                   np.concatenate([r.logits for r in runs]),
                   np.concatenate([pad(r.x_int, 0) for r in runs]) if ints else None,
                   np.concatenate([pad(r.y_int, 0) for r in runs]) if ints else None,
                   sum(r.saturated for r in runs))

    def save(self, path, **extra):
        arrays = {k: getattr(self, k) for k in self.ARRAYS if getattr(self, k) is not None}
        np.savez(path, **arrays, saturated=np.int64(self.saturated), **extra)

    @classmethod
    def load(cls, path) -> "RnnRun":
        with np.load(path, allow_pickle=False) as data:
            fields = {k: (data[k] if k in data else None) for k in cls.ARRAYS}
            return cls(**fields, saturated=int(data["saturated"]))


def rnn_steps(model: LNRNN, data: Dataset):
    """The RNN over every sequence of ``data`` at once, the LayerNorm left to the caller.

    A generator: at each step it yields the summed inputs ``a_t`` (b, H) of the b sequences still
    running (in dataset order) and must be sent their :class:`NormOut`; it returns the
    :class:`RnnRun`."""
    count, t_max, hidden = len(data), int(data.lengths.max()), model.hidden
    h = np.zeros((count, hidden))
    hs = np.full((count, t_max, hidden), np.nan)
    x_ints = y_ints = None
    saturated = 0
    for t in range(t_max):
        active = np.flatnonzero(data.lengths > t)
        a = model.summed_inputs(h[active], data.inputs[active, t])
        out = yield a
        if out.y.shape != a.shape:
            raise ValueError(f"step {t}: normalized values of shape {out.y.shape}, expected {a.shape}")
        h[active] = np.tanh(out.y)
        hs[active, t] = h[active]
        if out.y_int is not None:
            if x_ints is None:
                x_ints = np.zeros((count, t_max, hidden), np.int64)
                y_ints = np.zeros((count, t_max, hidden), np.int64)
            x_ints[active, t] = out.x_int
            y_ints[active, t] = out.y_int
        saturated += out.saturated
    return RnnRun(data.lengths.copy(), hs, model.readout(h), x_ints, y_ints, saturated)


def run(model: LNRNN, norm, data: Dataset, progress=None) -> RnnRun:
    """Drive :func:`rnn_steps` with ``norm(a) -> NormOut``; ``progress(calls)`` after each step."""
    steps = rnn_steps(model, data)
    a = next(steps)
    while True:
        out = norm(a)
        if progress is not None:
            progress(len(a))
        try:
            a = steps.send(out)
        except StopIteration as stop:
            return stop.value


async def run_async(model: LNRNN, norm, data: Dataset) -> RnnRun:
    """:func:`run` with a coroutine ``await norm(a) -> NormOut`` (the RTL in cocotb)."""
    steps = rnn_steps(model, data)
    a = next(steps)
    while True:
        out = await norm(a)
        try:
            a = steps.send(out)
        except StopIteration as stop:
            return stop.value


def summed_inputs_of(model: LNRNN, data: Dataset, result: RnnRun) -> np.ndarray:
    """The ``a_t`` every step of ``result`` normalized, recomputed from its own hidden states
    (count, t_max, H); NaN past each length."""
    count, t_max, hidden = result.hidden.shape
    previous = np.concatenate([np.zeros((count, 1, hidden)), result.hidden[:, :-1]], axis=1)
    a = model.summed_inputs(previous.reshape(-1, hidden),
                            data.inputs[:, :t_max].reshape(-1, data.inputs.shape[2])).reshape(count, t_max, hidden)
    return np.where(result.valid()[:, :, None], a, np.nan)


# ---- what the fixed-point LayerNorm may differ from float, derived from the LSBs ------------------
def step_error_bound(model: LNRNN, cfg: CoreConfig, a: np.ndarray) -> np.ndarray:
    """Per element of one step, a bound on ``|y_golden − clip(y_float)|`` for summed inputs ``a``
    (b, H) (``clip`` to the output range: saturation can only shrink the difference).

    Three sources, each bounded by an LSB (``d = LSB_in/2``, ``s' = √(σ'² + ε)`` of the quantized
    input, ``z`` the exact normalized value of ``a``):

    * the core is faithful: < 1 output LSB from the exact result on its own inputs;
    * rounding ``a`` moves every element by ≤ d, so ``a − μ`` by ≤ 2d and ``√(σ² + ε)`` by ≤ d
      (it is a Euclidean norm of ``((a − μ)/√H, √ε)``): ``|Δz| ≤ d·(2 + |z|)/s'``, times ``|γ|``;
    * rounding γ and β to the parameter grid: ``≤ LSB_p/2 · (|z| + 1)``.

    Rows with a saturated input element get ``inf`` (the input error is then unbounded)."""
    x_int, _ = quantize_summed(cfg, a)
    fmt_in, fmt_p = cfg.in_format, cfg.param_format
    d = fmt_in.lsb / 2
    z = np.abs(FloatLayerNorm(model).normalized(a))
    xq = fmt_in.to_float(x_int)
    s_q = np.sqrt(xq.var(axis=1, keepdims=True) + cfg.eps_effective)
    gamma_q = np.abs(fmt_p.to_float(cfg.gamma_int))
    bound = cfg.out_format.lsb + gamma_q * d * (2 + z) / s_q + fmt_p.lsb / 2 * (z + 1)
    bound = bound * (1 + 1e-9)                    # float64 evaluation of both sides
    rails = (x_int == fmt_in.min_int) | (x_int == fmt_in.max_int)
    return np.where(rails.any(axis=1, keepdims=True), np.inf, bound)


def step_jacobian(model: LNRNN, a: np.ndarray, h: np.ndarray) -> np.ndarray:
    """∂h_t/∂h_{t−1} (H, H) of the float network at summed inputs ``a`` and output ``h`` (H,)."""
    hidden = model.hidden
    c = a - a.mean()
    s = np.sqrt((c ** 2).mean() + model.eps)
    z = c / s
    d_layernorm = (np.eye(hidden) - 1.0 / hidden - np.outer(z, z) / hidden) / s
    return ((1 - h ** 2) * model.gamma)[:, None] * (d_layernorm @ model.w_hh)


def linearized_deviation_bound(model: LNRNN, cfg: CoreConfig, data: Dataset, reference: RnnRun,
                               index: int) -> np.ndarray:
    """First-order bound on ``max_i |h_fixed,t − h_float,t|`` for every step ``t`` of sequence
    ``index``, free-running: each step injects at most :func:`step_error_bound` (tanh' <= 1), and
    an error injected at step s reaches step t through ``Φ(t, s) = J_t ⋯ J_{s+1}`` of the float
    trajectory ``reference``: ``E_t = Σ_{s <= t} ||Φ(t, s)||_∞ · max_i b_s,i``.  Linearized, so
    valid while the deviation is small against the curvature of tanh and LayerNorm."""
    length = int(data.lengths[index])
    a = summed_inputs_of(model, data.subset([index]), reference.subset_of([index]))[0, :length]
    h = reference.hidden[index, :length]
    local = step_error_bound(model, cfg, a).max(axis=1)
    jacobians = [step_jacobian(model, a[t], h[t]) for t in range(length)]
    bound = np.zeros(length)
    for t in range(length):
        product, total = np.eye(model.hidden), 0.0
        for s in range(t, -1, -1):
            total += np.abs(product).sum(axis=1).max() * local[s]
            product = product @ jacobians[s]
        bound[t] = total
    return bound


# ---- the RTL in the loop -------------------------------------------------------------------------
RTL_ENV_VAR = "NORMGEN_RNN_SETTINGS"
RTL_TEST_MODULE = "examples.rnn.cocotb_rnn"
RTL_MODULE_NAME = "normgen_ln"


class RtlRunFailed(AssertionError):
    """The cocotb run did not pass; the message holds the failures and the log tail."""


def rtl_build_dir(cfg: CoreConfig, root: Path | None = None) -> Path:
    """``build/rnn/<config>-<hash>``: one directory per core configuration."""
    key = json.dumps({"core": cfg.describe(), "module": RTL_MODULE_NAME}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = f"{cfg.norm}-n{cfg.features}-p{cfg.lanes}-{cfg.in_format}-{cfg.out_format}-{digest}"
    return (root or build_root() / "rnn") / name


def _shard_bounds(count: int, jobs: int) -> list[tuple[int, int]]:
    jobs = max(1, min(int(jobs), count))
    edges = [round(k * count / jobs) for k in range(jobs + 1)]
    return [(edges[k], edges[k + 1]) for k in range(jobs)]


def run_rtl(model_path, data: Dataset, *, name: str = "run", jobs: int = 1, build_root: Path | None = None,
            progress=None, waves: bool | None = None, timeout_s: float = 3600) -> tuple[RnnRun, dict]:
    """Run every sequence of ``data`` through the network with the emitted Verilog core computing
    each LayerNorm (cocotb on Icarus Verilog or Verilator), one sequence at a time (batch size 1).

    The core is generated with the default γ = 1, β = 0 into ``build/rnn/<config>-<hash>/``; the
    cocotb test writes the trained γ/β of ``model_path`` through the parameter port first.  With
    ``jobs`` > 1 the sequences are split into that many simulator processes (each one core, each
    loading γ/β through its port, each still one sequence at a time).  ``progress(sequences)`` is
    called as sequences finish.  ``waves`` (default: environment ``NORMGEN_WAVES=1``) records an
    FST waveform into each run directory.  Returns the :class:`RnnRun` and the reports of the
    simulations (cycle counts, parameter-port beats), summed.  Raises :class:`RtlRunFailed`."""

    cfg = core_config()                       # default γ/β: the trained values go through the port
    case = rtl_build_dir(cfg, build_root)
    case.mkdir(parents=True, exist_ok=True)
    source = case / f"{RTL_MODULE_NAME}.v"
    with build_lock(case / ".generate.lock"):
        text = generate_verilog(cfg, module_name=RTL_MODULE_NAME)
        if not source.exists() or source.read_text() != text:
            source.write_text(text)
    if waves is None:
        waves = os.environ.get("NORMGEN_WAVES", "0") not in ("", "0", "false", "no")

    shards = _shard_bounds(len(data), jobs)
    names = [name if len(shards) == 1 else f"{name}-{k}of{len(shards)}" for k in range(len(shards))]
    sim = choose_simulator()
    sim_build = case / (f"{sim}_waves" if waves else sim)
    run_dirs = [sim_build / f"run-{n}" for n in names]
    for run_dir in run_dirs:            # results of an earlier run must not be mistaken for these
        for stale in ("output.npz", "progress.txt", "report.json"):
            (run_dir / stale).unlink(missing_ok=True)
    outcomes = [{} for _ in shards]
    threads = [threading.Thread(target=_simulate_shard, daemon=True,
                                args=(sim, case, sim_build, source, Path(model_path).resolve(),
                                      data.subset(np.arange(lo, hi)), run_dir, waves, outcome))
               for (lo, hi), run_dir, outcome in zip(shards, run_dirs, outcomes)]
    for thread in threads:
        thread.start()
    reported, deadline = 0, time.monotonic() + timeout_s
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.25 / len(threads))
        if progress is not None:
            done = 0
            for run_dir in run_dirs:
                with contextlib.suppress(ValueError, OSError):
                    done += int((run_dir / "progress.txt").read_text() or 0)
            if done > reported:
                progress(done - reported)
                reported = done
        if time.monotonic() > deadline:
            raise RtlRunFailed(f"RTL run still going after {timeout_s} s ({run_dirs[0].parent})")
    for outcome in outcomes:
        if "error" in outcome:
            raise outcome["error"]
    if progress is not None and reported < len(data):
        progress(len(data) - reported)

    runs, report = [], {}
    for run_dir, outcome in zip(run_dirs, outcomes):
        output, log_file = run_dir / "output.npz", run_dir / "sim.log"
        if not outcome.get("passed") or not output.exists():
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:]) if log_file.exists() else ""
            raise RtlRunFailed(f"RTL-in-the-loop run failed ({outcome}, {run_dir}):\n{tail}")
        runs.append(RnnRun.load(output))
        shard_report = json.loads((run_dir / "report.json").read_text())
        for key, value in shard_report.items():
            if key.endswith("_max"):
                report[key] = max(report.get(key, value), value)
            elif key.endswith("_min"):
                report[key] = min(report.get(key, value), value)
            elif not key.endswith("_mean"):
                report[key] = report.get(key, 0) + value
        report.setdefault("_trips", []).append((shard_report["round_trip_cycles_mean"],
                                                shard_report["layernorm_calls"]))
    trips = report.pop("_trips")
    report["round_trip_cycles_mean"] = sum(m * n for m, n in trips) / sum(n for _, n in trips)
    report["simulations"] = len(shards)
    report["run_dirs"] = [str(d) for d in run_dirs]
    return RnnRun.concatenate(runs), report


def _simulate_shard(sim: str, case: Path, sim_build: Path, source: Path, model_path: Path, data: Dataset,
                    run_dir: Path, waves: bool, outcome: dict):
    """Build (once per configuration, under a lock) and run one simulator process; the result
    goes into ``outcome``."""
    try:
        from cocotb_tools.check_results import get_results
        from cocotb_tools.runner import get_runner

        run_dir.mkdir(parents=True, exist_ok=True)
        paths = {key: run_dir / f for key, f in (("inputs", "inputs.npz"), ("output", "output.npz"),
                                                 ("progress", "progress.txt"), ("report", "report.json"))}
        np.savez(paths["inputs"], inputs=data.inputs, lengths=data.lengths, labels=data.labels)
        settings = {"core": dict(CORE_KWARGS), "weights": str(model_path),
                    **{key: str(path) for key, path in paths.items()}}

        runner = get_runner(sim)
        sources = [source]
        build_args, build_env = simulator_build_options(sim)   # Icarus: cocotb's default flags (-g2012)
        plusargs = []
        if waves and sim == "icarus":
            dump = sim_build / "rnn_waves_dump.v"
            sim_build.mkdir(parents=True, exist_ok=True)
            dump.write_text("module rnn_waves_dump();\nreg [8*1024-1:0] path;\ninitial begin\n"
                            "  if ($value$plusargs(\"rnn_dumpfile=%s\", path)) $dumpfile(path);\n"
                            f"  $dumpvars(0, {RTL_MODULE_NAME});\nend\nendmodule\n")
            sources.append(dump)
            build_args += ["-s", "rnn_waves_dump"]
            plusargs = [f"+rnn_dumpfile={run_dir / (RTL_MODULE_NAME + '.fst')}"]    # vvp -fst
        runner.log.setLevel(logging.ERROR)          # "Skipping compilation" on every shard
        with build_lock(case / ".build.lock"), with_env(build_env):
            stamp = sim_build / "build_flags.json"
            flags = json.dumps({"sources": [str(p) for p in sources], "args": build_args})
            rebuild = not stamp.exists() or stamp.read_text() != flags
            runner.build(sources=sources, hdl_toplevel=RTL_MODULE_NAME, build_dir=sim_build, always=rebuild,
                         timescale=("1ns", "1ps"), build_args=build_args, waves=waves and sim == "verilator",
                         log_file=sim_build / "build.log")
            stamp.write_text(flags)
        results_xml = run_dir / "results.xml"
        try:
            runner.test(test_module=RTL_TEST_MODULE, hdl_toplevel=RTL_MODULE_NAME, build_dir=sim_build,
                        test_dir=run_dir, results_xml=str(results_xml), timescale=("1ns", "1ps"),
                        extra_env={RTL_ENV_VAR: json.dumps(settings)}, plusargs=plusargs, waves=waves,
                        log_file=run_dir / "sim.log", seed=1)
        except SystemExit as exc:             # cocotb_tools exits on failures under pytest
            outcome["exit"] = exc.code
        tests, failed = get_results(results_xml) if results_xml.exists() else (0, 1)
        outcome.update(tests=tests, failed=failed, passed=bool(tests) and not failed and not outcome.get("exit"))
    except BaseException as exc:              # noqa: BLE001 (re-raised in the caller's thread)
        outcome["error"] = exc

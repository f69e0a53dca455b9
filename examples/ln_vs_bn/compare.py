"""The same sample through a LayerNorm core and a batch-statistics BatchNorm core, in different
batches: BatchNorm's output depends on the batch-mates and collapses to β at batch size 1;
LayerNorm's does not.  Both cores run as gateware in Amaranth's simulator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normgen.hw.config import CoreConfig
from normgen.sim import golden
from normgen.sim.amaranth_bench import Packet, run_batches, run_core

__all__ = ["Comparison", "compare", "make_configs"]


@dataclass
class Comparison:
    batch_sizes: list          # M of each batch
    sample: np.ndarray         # the sample (input integers) that is in every batch
    layernorm: list            # LayerNorm core output for the sample, per batch (integers)
    batchnorm: list            # BatchNorm core output for the sample, per batch (integers)
    beta_out: np.ndarray       # β on the output grid: BatchNorm's output at M = 1
    golden_match: bool         # every core output equals the golden model


def make_configs(channels: int = 16, max_batch: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = CoreConfig(features=channels).param_format
    gamma = grid.to_float(grid.quantize(rng.uniform(0.5, 1.5, channels))[0])
    beta = grid.to_float(grid.quantize(rng.normal(0, 0.5, channels))[0])
    ln = CoreConfig(norm="layernorm", features=channels, gamma=gamma, beta=beta)
    bn = CoreConfig(norm="batchnorm", features=channels, max_batch=max_batch, gamma=gamma, beta=beta)
    return ln, bn


def compare(ln: CoreConfig, bn: CoreConfig, batch_sizes=(1, 2, 4, 16), seed: int = 1) -> Comparison:
    rng = np.random.default_rng(seed)
    fmt = ln.in_format
    channels = ln.features
    sample = fmt.quantize(np.sin(np.linspace(0, 3, channels)) + 0.3)[0]
    batches = []
    for index, size in enumerate(batch_sizes):
        # batch-mates from another distribution each time: other means and spreads
        mates = fmt.quantize(rng.normal(rng.uniform(-1, 1), rng.uniform(0.2, 1.5), (size - 1, channels)))[0]
        batches.append(np.vstack([sample[None, :], mates]))
    bn_run = run_batches(bn, batches)
    ln_packets = [Packet(row) for batch in batches for row in batch]
    ln_run = run_core(ln, ln_packets)
    ln_rows = [y for y, _ in ln_run.outputs]
    starts = np.cumsum([0] + [len(b) for b in batches])[:-1]
    ln_outputs = [ln_rows[s] for s in starts]
    bn_outputs = [y[0] for y, _ in bn_run.outputs]
    match = (all(np.array_equal(y, golden.normalize_batch(bn, b)) for (y, _), b in zip(bn_run.outputs, batches))
             and all(np.array_equal(y, golden.normalize(ln, p.x[None, :])[0]) for y, p in zip(ln_rows, ln_packets)))
    _, beta_int = bn.gamma_beta_int()
    beta_out = np.clip(golden.rnd(beta_int << bn.z_frac, bn.w_frac - bn.out_format.frac_bits),
                       bn.out_format.min_int, bn.out_format.max_int)
    return Comparison(list(batch_sizes), sample, ln_outputs, bn_outputs, beta_out, match)

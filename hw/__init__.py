"""normgen gateware: the configuration and the Amaranth components of every core.

>>> from normgen.hw import CoreConfig, build_core
>>> core = build_core(CoreConfig(norm="layernorm", features=64, lanes=2))

``core`` is a ``wiring.Component`` with the stream members ``i``, ``o``, ``params`` and the status
``overlong`` (:mod:`normgen.hw.interface`); :func:`generate_verilog` emits it with the AXI4-Stream
port names of ``docs/interface.md``.
"""
from .config import ConfigError, CoreConfig, FixedFormat
from .kinds import KINDS, NORMS, NormKind
# The modules that implement a kind register their core with it on import.
from .vectornorm import NormCore
from .batchnorm import BatchNormCore
from .batchstats import BatchStatsCore
from .edge import AxiStreamEdge, generate_verilog
from .interface import core_members, input_layout, output_layout, params_layout

__all__ = ["CoreConfig", "FixedFormat", "ConfigError", "KINDS", "NORMS", "NormKind", "NormCore", "BatchNormCore",
           "BatchStatsCore", "AxiStreamEdge", "build_core", "core_latency", "generate_verilog", "core_members",
           "input_layout", "output_layout", "params_layout"]


def build_core(cfg: CoreConfig):
    """The core component of ``cfg``'s normalization kind."""
    if not isinstance(cfg, CoreConfig):
        raise TypeError(f"cfg must be a CoreConfig, not {cfg!r}")
    return cfg.kind.core(cfg)


def core_latency(cfg: CoreConfig) -> int:
    """The core's declared latency (its ``latency`` property; meaning in ``LATENCY_MEANING``)."""
    return cfg.kind.core.latency_of(cfg)

"""The members every core has: Amaranth streams in and out, a parameter stream, a status flag.

A user design connects to a core with :func:`amaranth.lib.wiring.connect` and a stream of the same
layout; the AXI4-Stream names of the emitted Verilog exist only in :mod:`normgen.hw.edge`.

Members (``P`` lanes, widths from :class:`~normgen.hw.config.CoreConfig`)
------------------------------------------------------------------------
i : ``In(stream.Signature(input_layout(cfg)))``
    ``data``: ``ArrayLayout(signed(W_in), P)``; ``last``: the last beat of a vector (of a sample,
    for BatchNorm); ``end`` (batch-statistics BatchNorm only): the last beat of a batch.
o : ``Out(stream.Signature(output_layout(cfg)))``
    ``data``: ``ArrayLayout(signed(W_out), P)``; ``last``; ``error``: this single beat replaces a
    rejected input (overlong vector, malformed batch), its data is 0; ``end`` (batch statistics).
params : ``In(stream.Signature(params_layout(cfg)))`` — cores with run-time parameters only
    ``addr``: the beat index (elements ``addr*P … addr*P+P-1``); two ``ArrayLayout(signed(w), P)``
    fields named by the kind (``gamma``/``beta``, or ``scale``/``shift`` for folded BatchNorm).
    Taken only between vectors, after every earlier vector has left the core.
overlong : ``Out(1)``
    Sticky: an input was rejected; cleared by reset.
"""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import CoreConfig

__all__ = ["Core", "input_layout", "output_layout", "params_layout", "param_widths", "param_addr_bits",
           "core_members"]


def input_layout(cfg: CoreConfig) -> data.StructLayout:
    fields = {"data": data.ArrayLayout(signed(cfg.in_format.width), cfg.lanes), "last": unsigned(1)}
    if cfg.kind.has_batch_end:
        fields["end"] = unsigned(1)
    return data.StructLayout(fields)


def output_layout(cfg: CoreConfig) -> data.StructLayout:
    fields = {"data": data.ArrayLayout(signed(cfg.out_format.width), cfg.lanes), "last": unsigned(1),
              "error": unsigned(1)}
    if cfg.kind.has_batch_end:
        fields["end"] = unsigned(1)
    return data.StructLayout(fields)


def param_widths(cfg: CoreConfig) -> dict | None:
    """Field name -> width per lane of the parameter stream; None for a core without one."""
    if cfg.kind.folded:
        return dict(zip(cfg.kind.param_names, (cfg.a_width, cfg.b_width)))
    if cfg.affine:
        return dict.fromkeys(cfg.kind.param_names, cfg.param_format.width)
    return None


def param_addr_bits(cfg: CoreConfig) -> int:
    return max(1, (cfg.beats_max - 1).bit_length())


def params_layout(cfg: CoreConfig) -> data.StructLayout:
    fields = {"addr": unsigned(param_addr_bits(cfg))}
    fields.update({name: data.ArrayLayout(signed(width), cfg.lanes)
                   for name, width in param_widths(cfg).items()})
    return data.StructLayout(fields)


def core_members(cfg: CoreConfig) -> dict:
    members = {
        "i": In(stream.Signature(input_layout(cfg))),
        "o": Out(stream.Signature(output_layout(cfg))),
    }
    if param_widths(cfg) is not None:
        members["params"] = In(stream.Signature(params_layout(cfg)))
    members["overlong"] = Out(1)
    return members


class Core(wiring.Component):
    """What every core shares: built from a :class:`CoreConfig` of a kind it implements, with the
    members of :func:`core_members`, a ``cfg`` and a ``latency``.

    A subclass defines ``latency_of(cfg)`` (a static method, so the latency is known without
    building the core) and ``LATENCY_MEANING`` (from which transfer to which it counts)."""

    LATENCY_MEANING = ""

    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"cfg must be a CoreConfig, not {cfg!r}")
        if cfg.kind.core is not type(self):
            raise TypeError(f"{type(self).__name__} does not implement {cfg.kind.name} "
                            f"(build_core(cfg) gives its {cfg.kind.core.__name__}): CoreConfig {cfg.describe()}")
        self._cfg = cfg
        super().__init__(core_members(cfg))

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    @property
    def latency(self) -> int:
        return self.latency_of(self._cfg)

    @staticmethod
    def latency_of(cfg: CoreConfig) -> int:
        raise NotImplementedError

"""The normalization kinds: what each one computes, described once, looked up by name.

A kind is a :class:`NormKind`: its statistics (over what the sums run), its scalar formula (the
radicand ``D`` and the numerator ``a`` of ``z = a/sqrt(D)``), the names of its run-time parameter
fields, its configuration options, and — registered by the gateware module that implements it —
its core component.  :class:`~normgen.hw.config.CoreConfig` resolves ``norm`` (and ``max_batch``)
to a kind once (``cfg.kind``); the golden model, the exact reference, the gateware and the CLI ask
the kind instead of testing names.

Adding a normalization
----------------------
1. Describe it here: a :class:`NormKind` instance added to :data:`KINDS` (name, ``norm`` value,
   statistics, ``radicand``/``numerator`` if it reuses the exact-integer method, parameter names,
   the options it takes).
2. Implement its core (a ``wiring.Component`` with the members of
   :func:`normgen.hw.interface.core_members`) and register it with :func:`register_core` at the
   bottom of its module; import that module in ``hw/__init__.py``.
Nothing else dispatches on the kind: a kind whose statistics are ``"vector"`` reuses the vector
core, the golden model and the reference as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["NormKind", "KINDS", "kind_for", "register_core", "NORMS", "STATISTICS"]

#: How a kind gets its per-vector constants: ``"vector"`` — exact sums over the N elements of each
#: vector; ``"batch"`` — exact sums per channel over the M samples of a batch; ``"folded"`` — no
#: statistics, per-channel constants folded on the host from running statistics.
STATISTICS = ("vector", "batch", "folded")


@dataclass(frozen=True, eq=False)
class NormKind:
    """One normalization kind.

    Attributes
    ----------
    name : registry key (``"layernorm"``, ``"rmsnorm"``, ``"batchnorm"``, ``"batchnorm-batch"``)
    norm : the ``CoreConfig.norm`` / ``--norm`` value that selects it
    statistics : one of :data:`STATISTICS`
    subtracts_mean : the numerator is ``N*x - S1`` (else ``N*x``) and ``D`` has the ``- S1**2`` term
    param_names : the two per-element fields of the core's ``params`` stream
    options : ``CoreConfig`` fields only this kind takes (each with a one-line meaning)
    needs_options : of ``options``, the ones without which it is not this kind
    summary : one line for help texts
    """

    name: str
    norm: str
    statistics: str
    subtracts_mean: bool
    param_names: tuple = ("gamma", "beta")
    options: dict = field(default_factory=dict)
    needs_options: tuple = ()
    summary: str = ""

    def __post_init__(self):
        assert self.statistics in STATISTICS, self.statistics

    # ---- the exact-integer formula (NUMERICS: z = a / sqrt(D)) -------------------------------
    def radicand(self, n: int, s1: int, s2: int, e: int) -> int:
        """``D`` from the count, the sums and ε on the input-squared grid."""
        d = n * s2 + e * n * n
        return d - s1 * s1 if self.subtracts_mean else d

    def mean_term(self, s1: int) -> int:
        """The ``S1'`` of ``a = N*x - S1'``: the sum for mean-subtracting kinds, else 0."""
        return s1 if self.subtracts_mean else 0

    @property
    def has_batch_end(self) -> bool:
        """Input and output beats carry a batch-end flag (``end``)."""
        return self.statistics == "batch"

    @property
    def folded(self) -> bool:
        """The per-element constants are folded on the host (no statistics in the core)."""
        return self.statistics == "folded"

    def selected_by(self, norm: str, given: set) -> bool:
        """Whether ``norm`` with the options ``given`` (names of non-default fields) means this
        kind."""
        return norm == self.norm and all(option in given for option in self.needs_options)

    # ---- the gateware ------------------------------------------------------------------------
    @property
    def core(self) -> type:
        """The component class that implements this kind (registered by its gateware module)."""
        try:
            return _CORES[self.name]
        except KeyError:
            raise LookupError(f"no core is registered for {self.name}; import normgen.hw") from None


_VECTOR = {
    "vector_interval": "cycles between vectors the per-vector stage accepts (replicated scalar units)",
}
_BN_PARAMS = {
    "mean": "running means, one per channel (inference)",
    "var": "running variances, one per channel (inference)",
}
_BN_BATCH = {
    "max_batch": "largest batch M_max (batch statistics)",
    "momentum": "running-statistics momentum (batch statistics)",
}

#: The registry, in the order help texts list them.  A ``norm`` value with several kinds picks the
#: most specific one whose ``needs_options`` were given.
KINDS: dict[str, NormKind] = {kind.name: kind for kind in (
    NormKind("layernorm", "layernorm", "vector", subtracts_mean=True, options=_VECTOR,
             summary="LayerNorm over the features of each vector"),
    NormKind("rmsnorm", "rmsnorm", "vector", subtracts_mean=False, options=_VECTOR,
             summary="RMSNorm (LayerNorm without the mean)"),
    NormKind("batchnorm-batch", "batchnorm", "batch", subtracts_mean=True,
             options=_BN_BATCH, needs_options=("max_batch",),
             summary="BatchNorm with the statistics of each batch (training forward)"),
    NormKind("batchnorm", "batchnorm", "folded", subtracts_mean=True, param_names=("scale", "shift"),
             options=_BN_PARAMS,
             summary="BatchNorm inference, running statistics folded into scale and shift"),
)}

#: The ``norm`` values users write.
NORMS = tuple(dict.fromkeys(kind.norm for kind in KINDS.values()))

_CORES: dict[str, type] = {}


def kind_for(norm: str, given: set) -> NormKind:
    """The kind that ``norm`` names, given the options set; ``ValueError`` naming the choices."""
    for kind in KINDS.values():
        if kind.selected_by(norm, given):
            return kind
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")


def register_core(core: type, *names: str):
    """Record ``core`` as the component of the kinds ``names``."""
    for name in names:
        assert name in KINDS, name
        _CORES[name] = core

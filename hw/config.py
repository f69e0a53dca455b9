"""Core configuration: formats, validation, and every derived width.

This module is the one place where a format, a width or a fraction-bit count is decided.  The
gateware (:mod:`normgen.hw`), the bit-exact golden model (:mod:`normgen.sim.golden`) and the
exact reference (:mod:`normgen.sim.reference`) all read their numbers from a :class:`CoreConfig`.

The integer algorithm (one vector of ``N`` input integers ``x``)
-----------------------------------------------------------------
Statistics (exact)::

    S1 = sum(x)                     signed,   s1_width bits
    S2 = sum(x*x)                   unsigned, s2_width bits
    LayerNorm: D = N*S2 - S1**2 + e*N**2,   S1' = S1
    RMSNorm:   D = N*S2         + e*N**2,   S1' = 0
                                    unsigned, d_width bits

Reciprocal square root (per vector, exact integer specification)::

    D = 0          ->  A = B = 0   (z = 0, so y = beta)
    otherwise      s = ceil((bitlen(D) - 2*m) / 2)             (may be negative)
                   M = D >> 2s   (or D << -2s)                 M in [2**(2m-2), 2**(2m))
                   R = max{R : R*R*M <= 2**(2T + 2m - 2)}      R in [2**(T-1), 2**T]
                     = isqrt(2**(2T + 2m - 2) // M)
    so that 1/sqrt(D) ~= R * 2**-(T + m - 1 + s) with relative error below 2**-(need+1):
    truncating D to M costs < 2**-(2m-1), flooring R costs < 2**-(T-1), and the two errors
    have opposite signs.

Per-vector scalars (``sh = T + m - 1 + s - FA``, ``rnd`` = round half up)::

    A = rnd(N * R, sh)      ~ N / sqrt(D) * 2**FA       unsigned, a_width bits
    B = rnd(S1' * R, sh)    ~ S1' / sqrt(D) * 2**FA     signed,   b_width bits

Per element (the only per-lane arithmetic: two multipliers)::

    u = x*A - B             ~ z * 2**FA                 signed, u_width bits
    v = rnd(u, FA - FZ)     ~ z * 2**FZ                 signed, v_width bits
    w = gamma*v + (beta << FZ)    (affine)              signed, w_width bits, FZ+Fp fraction bits
    w = v                         (no affine)           FZ fraction bits
    y = saturate(rnd(w, frac(w) - F_out))               signed, W_out bits

Error budget, in output LSBs, against the exact ``Y = gamma*z + beta``: rounding A and B costs
<= |gamma| * (|x| + 1)/2 * 2**-FA <= 1/8; rounding v costs <= 1/8; the rsqrt's relative error
(below 2**-(need+1)) costs ``|gamma*z| * 2**-(need+1)``, which ``need`` keeps <= 3/16 for every
``|gamma*z|`` up to ``H`` = the output's largest magnitude + the largest ``|beta|`` + 1 LSB
(:func:`rsqrt_reach_lsb`; ``|z| <= sqrt(N_max) <= 2**zb`` and ``|gamma| <= 2**g_log2`` bound it
more tightly for small cores).  There the computed ``w`` is within 7/16 LSB of ``Y``; rounding it
to the nearest output step lands within 15/16 < 1 LSB of ``Y``, i.e. on one of its two neighbours
on the output grid: the result is *faithful*.  Saturation is monotone and cannot break that.
Beyond ``H`` the exact ``Y`` lies more than an LSB outside the output range and the computed ``w``
more than half an LSB (the rsqrt's error grows with ``|gamma*z|`` but stays a small fraction of
it): both saturate to the same end.  So ``need`` follows the output and γ/β formats, not ``N_max``.

Nearest-even (``rounding="nearest-even"``): the rsqrt's share is 1/16 for every ``|gamma*z|`` up to
``2**(g_log2 + zb)`` (saturated elements included), and ``need``, FA and FZ carry ``GUARD_BITS``
more bits, so each of the three errors shrinks by ``2**-GUARD_BITS`` and ``w`` lies within
``5/16 * 2**-GUARD_BITS`` LSB of ``Y``.  If ``w`` is farther than ``2**-(GUARD_BITS+1)`` LSB from a boundary ``k + 1/2``, ``Y``
is on the same side and is no tie, so ``rnd(w)`` is the correctly rounded result; otherwise the
element is decided exactly (:mod:`normgen.hw.nearest`).  The folded BatchNorm instead rounds
``x*A - B`` once, half to even, with FA chosen and proved by :mod:`normgen.host.fold`.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from dataclasses import dataclass, field

import numpy as np

from normgen.host.fold import FoldError, fold_batchnorm
from normgen.host.fold_rne import choose_nearest_even_frac

from .kinds import KINDS, NORMS, NormKind, kind_for

__all__ = ["FixedFormat", "CoreConfig", "ConfigError", "NORMS", "SCALAR_MULS", "RSQRT_FORMS", "ROUNDINGS",
           "MAX_ARITH_WIDTH", "GUARD_BITS"]

#: The per-element arithmetic (hardware products and the NumPy golden model's int64 lanes)
#: must fit this many bits, sign included.
MAX_ARITH_WIDTH = 63

#: How the per-vector scalar stage multiplies: one wide multiplier per product cycle
#: ("parallel"), or one 16x16 multiplier over several cycles ("serial": fewer DSP blocks, for
#: small FPGAs, at the cost of latency).
SCALAR_MULS = ("parallel", "serial")

#: The reciprocal square root's recurrence (:mod:`normgen.hw.rsqrt`): ``"lookahead"`` (one result
#: bit per cycle, each step's decision a register's sign bit, six carry chains), ``"compact"``
#: (three carry chains, two cycles per result bit: the subtraction, then the decision; ~500 fewer
#: iCE40 logic cells) or ``"radix4"`` (two result bits per cycle, twelve candidate differences
#: with a carry-save layer each: 8 cycles less latency at the default configuration, at a lower
#: fmax, ``make bench``) or ``"srt"`` (two result bits per cycle by radix-4 SRT: a carry-save
#: residual and a digit chosen from its leading bits, 6 cycles less latency at the default
#: configuration).  The default follows ``scalar_mul``: compact with the serial stage.
RSQRT_FORMS = ("lookahead", "compact", "radix4", "srt")

#: Output rounding (``rounding``): ``"faithful"`` (one of the two neighbours of the exact result,
#: error < 1 LSB) or ``"nearest-even"`` (the exact result rounded half to even: correctly rounded).
ROUNDINGS = ("faithful", "nearest-even")

#: Lane count from which a core's stages lie far apart on the die (the lanes' multipliers and
#: block RAMs spread across it): the hand-offs to and from the scalar stage (the statistics, the
#: vector constants) go through registers on both sides of the distance.
SLICE_LANES = 16

#: Without a ``lane_dsp``, cores of at least ``AUTO_LANE_DSP_LANES`` lanes take at most
#: ``AUTO_LANE_DSP`` multiplier blocks per lane (the fewest an affine lane of operands up to 18 bits
#: can have; more where the lane's floor is higher).
AUTO_LANE_DSP_LANES = 16
AUTO_LANE_DSP = 3

#: Extra fraction bits of the per-element datapath of a nearest-even LayerNorm/RMSNorm core
#: (``rsqrt_need``, ``FA`` and ``FZ`` grow by this much): the computed ``w`` is then within
#: ``5/16 * 2**-GUARD_BITS`` LSB of the exact result, and only an element whose ``w`` lies within
#: ``2**-(GUARD_BITS+1)`` LSB of a rounding boundary is decided exactly (about one element in
#: 2**GUARD_BITS on smooth data).
GUARD_BITS = 16

#: Widest per-element arithmetic of a nearest-even core (the golden model switches from int64 to
#: Python integers past :data:`MAX_ARITH_WIDTH`).
MAX_ARITH_WIDTH_EXACT = 127


class ConfigError(ValueError):
    """An impossible or meaningless configuration.  The message names the parameter, the value
    and the allowed range."""


_FORMAT_RE = re.compile(r"^s(\d+)\.(\d+)$")


@dataclass(frozen=True)
class FixedFormat:
    """Signed two's-complement fixed point ``sI.F``: ``I`` integer bits (sign included), ``F``
    fraction bits; width ``I + F``, value ``integer * 2**-F``."""

    int_bits: int
    frac_bits: int

    MAX_WIDTH = 32

    def __post_init__(self):
        for name, value, low in (("integer bits", self.int_bits, 1), ("fraction bits", self.frac_bits, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"Format {name} must be an integer >= {low}, not {value!r}")
        if self.width < 2 or self.width > self.MAX_WIDTH:
            raise ConfigError(f"Format width I+F must be in 2..{self.MAX_WIDTH}, not {self.width} "
                              f"(format {self})")

    @classmethod
    def parse(cls, text, *, param="format") -> "FixedFormat":
        if isinstance(text, FixedFormat):
            return text
        match = _FORMAT_RE.match(str(text).strip())
        if not match:
            raise ConfigError(f"{param} must be written sI.F (e.g. s4.12), not {text!r}")
        try:
            return cls(int(match[1]), int(match[2]))
        except ConfigError as exc:
            raise ConfigError(f"{param} {text!r}: {exc}") from None

    def __str__(self):
        return f"s{self.int_bits}.{self.frac_bits}"

    @property
    def width(self) -> int:
        return self.int_bits + self.frac_bits

    @property
    def min_int(self) -> int:
        return -(1 << (self.width - 1))

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac_bits

    def quantize(self, values) -> tuple[np.ndarray, int]:
        """Round floats to this format (round half to even) and saturate.

        Returns ``(integers, saturated_count)``.  Raises :class:`ConfigError` on NaN or inf."""
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ConfigError("values must be finite (found NaN or inf)")
        with np.errstate(over="ignore"):               # beyond float64: ±inf, saturated below
            scaled = np.rint(np.ldexp(values, self.frac_bits))
        saturated = int(np.count_nonzero((scaled < self.min_int) | (scaled > self.max_int)))
        return np.clip(scaled, self.min_int, self.max_int).astype(np.int64), saturated

    def to_float(self, integers) -> np.ndarray:
        return np.ldexp(np.asarray(integers, dtype=np.float64), -self.frac_bits)


def _real_array(name: str, values) -> np.ndarray:
    """``values`` as a float64 array, or a :class:`ConfigError` naming ``name``."""
    try:
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"dtype {array.dtype}")
        return array.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an array of real numbers ({exc})") from None


def _bits_unsigned(max_value: int) -> int:
    return max(1, int(max_value).bit_length())


def _bits_signed(max_magnitude: int) -> int:
    return int(max_magnitude).bit_length() + 1


#: The reciprocal square root's share of the error budget, in output LSBs: faithful cores
#: (rounding A and B costs 1/8, rounding v 1/8, the final rounding 1/2, so the total stays below
#: 1), and nearest-even cores before their guard bits (the datapath's ``5/16 * 2**-GUARD_BITS``).
RSQRT_BUDGET = {"faithful": Fraction(3, 16), "nearest-even": Fraction(1, 16)}


def rsqrt_reach_lsb(out_format: "FixedFormat", param_format: "FixedFormat | None", zb: int, g_log2: int,
                    exact: bool) -> int:
    """The largest ``|gamma*z|``, in output LSBs, at which the rsqrt's relative error must stay
    within its budget.

    ``|z| <= 2**zb`` and ``|gamma| <= 2**g_log2`` bound it by ``2**(g_log2 + zb)``.  A faithful
    core needs less: where ``|gamma*z|`` exceeds ``H`` = the output's largest magnitude + the
    largest ``|beta|`` (``param_format``; None without the affine stage) + one LSB, the exact
    ``Y`` lies beyond the output range by more than one LSB, and the computed ``w`` (within
    ``|gamma*z|*delta + 1/4`` LSB of it, ``|gamma*z|*(1 - delta)`` growing with ``|gamma*z|``)
    beyond it by more than half an LSB: both saturate to the same end.  A nearest-even core
    keeps its error bound on every element (``exact``), saturated ones included."""
    full = 1 << (g_log2 + zb + out_format.frac_bits)
    if exact:
        return full
    reach = (1 << (out_format.int_bits - 1 + out_format.frac_bits)) + 1
    if param_format is not None:
        reach += 1 << (param_format.int_bits - 1 + out_format.frac_bits)
    return min(full, reach)


def rsqrt_need_bits(reach_lsb: int, guard: int) -> int:
    """``need``: the fewest bits with ``reach_lsb * 2**-(need+1) <= budget * 2**-guard`` (the rsqrt's
    relative error is below ``2**-(need+1)``, :class:`CoreConfig`)."""
    budget = RSQRT_BUDGET["nearest-even" if guard else "faithful"] / 2 ** guard
    need = 0
    while Fraction(reach_lsb, 2 ** (need + 1)) > budget:
        need += 1
    return need


@dataclass(frozen=True, eq=False)
class CoreConfig:
    """One normalization core.

    Parameters
    ----------
    norm : ``"layernorm"``, ``"rmsnorm"`` or ``"batchnorm"`` (inference: running statistics)
    features : N_max, the longest vector (1..65536)
    lanes : P, elements per stream beat; must divide ``features``
    in_format, out_format, param_format : ``sI.F`` strings or :class:`FixedFormat`
    eps : ε >= 0, placed on the input-squared grid as ``e = round(ε·2**(2·F_in))``
    affine : whether the γ/β stage exists
    gamma, beta : ``features`` floats (default 1 and 0), quantized to ``param_format``
    scalar_mul : ``"parallel"`` (default) or ``"serial"``, see :data:`SCALAR_MULS`
    rsqrt_form : ``"lookahead"``, ``"compact"``, ``"radix4"`` or ``"srt"``, see :data:`RSQRT_FORMS`; ``None`` (default):
        compact with ``scalar_mul="serial"``, else lookahead
    rounding : ``"faithful"`` (default) or ``"nearest-even"``, see :data:`ROUNDINGS`
    vector_interval : LayerNorm/RMSNorm: the per-vector stage takes a new vector every this many
        cycles (1..1024), by replicating the scalar unit; vectors of at least this many beats then
        stream at full rate.  ``None`` (default): one unit, a new vector every unit latency.
    lane_dsp : the most multiplier blocks (18x18, :mod:`normgen.hw.multiply`) per lane: the
        statistics' square x*x (cores with statistics), x*A and γ·v (affine cores) take one block
        each at least; beyond that the low bits of γ·v's v, then of x*A's A, are multiplied in
        logic until the lane fits (:attr:`xa_fabric_bits`, :attr:`g_fabric_bits`; more adder
        levels, so more latency).  ``None`` (default): ``AUTO_LANE_DSP`` (3) blocks per lane from
        ``AUTO_LANE_DSP_LANES`` (16) lanes on, so that wide cores fit a device's multipliers (P = 32
        needs 167 blocks of the ECP5-85F's 156 with every product in blocks), and every product
        in blocks below; a cap at or above a lane's block count (5 at the default formats) keeps
        every product in blocks at any lane count.
    mean, var : BatchNorm inference only: the ``features`` running means and variances (floats)
    max_batch : BatchNorm with batch statistics (training forward): the largest batch M_max
        (2..4096); ``features`` is then the channel count C.  Without it, BatchNorm is inference.
    momentum : BatchNorm with batch statistics: the running-statistics momentum (PyTorch's 0.1)

    BatchNorm (inference) has no statistics stage: ``y = gamma*(x - mean)/sqrt(var + eps) + beta``
    is folded, exactly in rationals from the float parameters, into one scale ``A`` and shift ``B``
    per channel (:mod:`normgen.host.fold`) for the same per-element datapath ``x*A - B``; γ and β are
    the float values themselves (``param_format`` does not apply) and ε is exact (no grid).

    Raises
    ------
    ConfigError
        naming the parameter, its value and the allowed range.
    """

    norm: str = "layernorm"
    features: int = 1024
    lanes: int = 1
    in_format: FixedFormat | str = "s4.12"
    out_format: FixedFormat | str = "s4.12"
    param_format: FixedFormat | str = "s4.12"
    eps: float = 1e-5
    affine: bool = True
    gamma: np.ndarray | None = field(default=None, repr=False)
    beta: np.ndarray | None = field(default=None, repr=False)
    scalar_mul: str = "parallel"
    rsqrt_form: str | None = None
    rounding: str = "faithful"
    vector_interval: int | None = None
    lane_dsp: int | None = None
    mean: np.ndarray | None = field(default=None, repr=False)
    var: np.ndarray | None = field(default=None, repr=False)
    max_batch: int | None = None
    momentum: float = 0.1

    MAX_FEATURES = 65536
    MAX_VECTOR_INTERVAL = 1024

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        given = {name for name in ("max_batch", "mean", "var") if getattr(self, name) is not None}
        try:
            set_("kind", kind_for(self.norm, given))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.scalar_mul not in SCALAR_MULS:
            raise ConfigError(f"scalar_mul must be one of {', '.join(SCALAR_MULS)}, not {self.scalar_mul!r}")
        if self.rsqrt_form is None:
            set_("rsqrt_form", self._default_rsqrt_form())
        elif self.rsqrt_form not in RSQRT_FORMS:
            raise ConfigError(f"rsqrt_form must be one of {', '.join(RSQRT_FORMS)}, not {self.rsqrt_form!r}")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"rounding must be one of {', '.join(ROUNDINGS)}, not {self.rounding!r}")
        if self.vector_interval is not None:
            if "vector_interval" not in self.kind.options:
                takers = ", ".join(k.norm for k in KINDS.values() if "vector_interval" in k.options)
                raise ConfigError(f"vector_interval applies to norm {takers}, not to {self.kind.summary}")
            if (not isinstance(self.vector_interval, (int, np.integer)) or isinstance(self.vector_interval, bool)
                    or not 1 <= self.vector_interval <= self.MAX_VECTOR_INTERVAL):
                raise ConfigError(f"vector_interval must be an integer in 1..{self.MAX_VECTOR_INTERVAL} "
                                  f"(cycles per vector), not {self.vector_interval!r}")
            set_("vector_interval", int(self.vector_interval))
        for name in ("features", "lanes"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, not {value!r}")
            set_(name, int(value))
        if not 1 <= self.features <= self.MAX_FEATURES:
            raise ConfigError(f"features (N_max) must be in 1..{self.MAX_FEATURES}, not {self.features}")
        if not 1 <= self.lanes <= self.features or self.features % self.lanes:
            raise ConfigError(f"lanes (P) must divide features (N_max = {self.features}) and be >= 1, "
                              f"not {self.lanes}")
        for name in ("in_format", "out_format", "param_format"):
            set_(name, FixedFormat.parse(getattr(self, name), param=name))
        if self.max_batch is not None:
            if "max_batch" not in self.kind.options:
                raise ConfigError(f"max_batch is a BatchNorm (batch statistics) parameter; norm is {self.norm}")
            if (not isinstance(self.max_batch, (int, np.integer)) or isinstance(self.max_batch, bool)
                    or not 2 <= self.max_batch <= 4096):
                raise ConfigError(f"max_batch (M_max) must be an integer in 2..4096, not {self.max_batch!r}")
            object.__setattr__(self, "max_batch", int(self.max_batch))
            momentum = self.momentum
            if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
                raise ConfigError(f"momentum must be a number in [0, 1], not {momentum!r}")
        if not isinstance(self.affine, (bool, np.bool_)):
            raise ConfigError(f"affine must be True or False, not {self.affine!r}")
        set_("affine", bool(self.affine))

        try:
            eps = float(self.eps)
        except (TypeError, ValueError):
            raise ConfigError(f"eps must be a number >= 0, not {self.eps!r}") from None
        # ε beyond the largest possible variance only flattens the output; the bound keeps D's
        # width finite.
        eps_max = float(4 ** self.in_format.int_bits)
        if not math.isfinite(eps) or not 0 <= eps <= eps_max:
            raise ConfigError(f"eps must be a number in [0, {eps_max:g}] for in_format {self.in_format}, "
                              f"not {self.eps!r}")
        set_("eps", eps)
        e = round(eps * 2 ** (2 * self.in_format.frac_bits))  # Python round: half to even
        if self.kind.folded:
            e = 0                                  # ε enters the exact folding, not the statistics
        elif eps > 0 and e == 0:
            raise ConfigError(
                f"eps = {eps!r} rounds to 0 on the input-squared grid of {self.in_format} "
                f"(step 2**-{2 * self.in_format.frac_bits} = {2.0 ** (-2 * self.in_format.frac_bits):.3g}); "
                f"use eps >= {2.0 ** (-2 * self.in_format.frac_bits - 1):.3g}, eps = 0, or more input fraction bits")
        set_("eps_int", int(e))

        if self.kind.folded:
            self._load_batchnorm()
        else:
            for name in ("mean", "var"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} is a BatchNorm inference parameter (running statistics); "
                                      + ("with max_batch the core uses batch statistics"
                                         if "max_batch" in self.kind.options else f"norm is {self.norm}"))
            set_("gamma_int", self._load_param("gamma", self.gamma, 1.0))
            set_("beta_int", self._load_param("beta", self.beta, 0.0))
        self._derive_widths()
        self._plan_lane_blocks()
        if self.rsqrt_form == "srt":
            from .srt import srt_plan
            try:
                srt_plan(self.rsqrt_bits, self.rsqrt_m)
            except ValueError:
                raise ConfigError(f"rsqrt_form 'srt' has no proven digit selection at these formats "
                                  f"(T={self.rsqrt_bits}, m={self.rsqrt_m}); choose lookahead, compact "
                                  f"or radix4") from None

    def _default_rsqrt_form(self) -> str:
        """The rsqrt form when none is given: compact with the serial scalar stage."""
        return "compact" if self.scalar_mul == "serial" else "lookahead"

    @property
    def fifos_in_block_ram(self) -> bool:
        """Whether the statistics and output FIFOs read synchronously
        (:class:`~amaranth.lib.fifo.SyncFIFOBuffered`), so they can be block RAMs, for one cycle of
        latency each: with the serial scalar stage (the small-FPGA choice).  An iCE40 has no
        distributed RAM, so a FIFO read asynchronously is flip-flops and multiplexers: at the
        default formats the two FIFOs took ~1900 of the UP5K's 5280 logic cells."""
        return self.scalar_mul == "serial"

    def lane_products(self) -> dict:
        """The element datapath's products per lane, as (a, b) operand shapes: ``"xa"`` (x*A) and,
        on affine cores, ``"g"`` (γ·v)."""
        from amaranth.hdl import signed, unsigned
        products = {"xa": (signed(self.in_format.width),
                           signed(self.a_width) if self.a_signed else unsigned(self.a_width))}
        if self.affine_stage:
            products["g"] = (signed(self.param_format.width), signed(self.v_width))
        return products

    def _plan_lane_blocks(self):
        """``xa_fabric_bits`` and ``g_fabric_bits``: the fewest low bits of A and v multiplied in
        logic so that a lane takes at most ``lane_dsp`` multiplier blocks, or without one from
        ``AUTO_LANE_DSP_LANES`` lanes on ``AUTO_LANE_DSP`` (γ·v gives up blocks first: its v is
        narrower than A)."""
        from .multiply import fabric_bits_for, least_blocks, product_blocks
        products = self.lane_products()
        fabric = dict.fromkeys(("xa", "g"), 0)
        squares = 0 if self.kind.folded else 1
        blocks = lambda name: product_blocks(*products[name], fabric[name])  # noqa: E731
        least = {name: least_blocks(a) for name, (a, _) in products.items()}
        cap = self.lane_dsp
        floor = squares + sum(least.values())
        if cap is None and self.lanes >= AUTO_LANE_DSP_LANES:
            cap = max(AUTO_LANE_DSP, floor)
        if cap is not None:
            if not isinstance(cap, (int, np.integer)) or isinstance(cap, bool) or cap < floor:
                parts = " + ".join([f"x*x {squares}"] * bool(squares) + [f"x*A {least['xa']}"]
                                   + ([f"gamma*v {least['g']}"] if "g" in least else []))
                raise ConfigError(f"lane_dsp (multiplier blocks per lane) must be an integer >= {floor} for "
                                  f"this core ({parts}), not {cap!r}")
            cap = int(cap)
            if self.lane_dsp is not None:
                object.__setattr__(self, "lane_dsp", cap)
            for name in ("g", "xa"):
                if name in products:
                    spare = cap - squares - sum(blocks(k) for k in products if k != name)
                    if blocks(name) > spare:
                        fabric[name] = fabric_bits_for(*products[name], max(spare, least[name]))
        object.__setattr__(self, "xa_fabric_bits", fabric["xa"])
        object.__setattr__(self, "g_fabric_bits", fabric["g"])

    def _load_batchnorm(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        arrays = {}
        for name, default in (("mean", None), ("var", None), ("gamma", 1.0), ("beta", 0.0)):
            values = getattr(self, name)
            if name in ("gamma", "beta") and not self.affine:
                if values is not None:
                    raise ConfigError(f"{name} was given but affine is off")
                values = None
            if values is None:
                if default is None:
                    raise ConfigError(f"batchnorm needs {name}: {self.features} values, one per channel")
                values = np.full(self.features, default)
            values = _real_array(name, values)
            if values.shape != (self.features,):
                raise ConfigError(f"{name} must hold features = {self.features} values (one per channel), "
                                  f"not shape {values.shape}")
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise ConfigError(f"{name} must be finite: {name}[{bad[0]}] = {values[bad[0]]!r}")
            values.setflags(write=False)
            arrays[name] = values
        negative = np.flatnonzero(arrays["var"] < 0)
        if negative.size:
            raise ConfigError(f"var must be >= 0: var[{negative[0]}] = {arrays['var'][negative[0]]!r}")
        zero = np.flatnonzero(arrays["var"] + self.eps <= 0)
        if zero.size:
            raise ConfigError(f"var + eps must be > 0 for every channel: var[{zero[0]}] = 0 with eps = 0")
        for name, values in arrays.items():
            set_(name, values)
        set_("gamma_int", None)
        set_("beta_int", None)

    # ---- parameters -------------------------------------------------------------------------
    def _load_param(self, name, values, default):
        if not self.affine:
            if values is not None:
                raise ConfigError(f"{name} was given but affine is off")
            return None
        fmt = self.param_format
        if values is None:
            values = np.full(self.features, default)
        values = _real_array(name, values)
        if values.shape != (self.features,):
            raise ConfigError(f"{name} must hold features = {self.features} values, not shape {values.shape}")
        try:
            ints, saturated = fmt.quantize(values)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if saturated:
            low, high = fmt.min_int * fmt.lsb, fmt.max_int * fmt.lsb
            first = int(np.flatnonzero((values < low - fmt.lsb / 2) | (values >= high + fmt.lsb / 2))[0])
            raise ConfigError(f"{name}: {saturated} value(s) outside the range of param_format {fmt} "
                              f"[{low}, {high}], the first {name}[{first}] = {values[first]!r}")
        ints.setflags(write=False)
        return ints

    # ---- derived widths ---------------------------------------------------------------------
    def _derive_widths(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        # the reduction length: the vector (LayerNorm/RMSNorm) or the batch (BatchNorm statistics)
        n_max = self.max_batch if self.kind.statistics == "batch" else self.features
        w_in = self.in_format.width
        x_mag = 1 << (w_in - 1)
        e = self.eps_int

        set_("count_width", _bits_unsigned(n_max))
        set_("s1_width", _bits_signed(n_max * x_mag))
        set_("s2_width", _bits_unsigned(n_max * x_mag * x_mag))
        set_("d_width", _bits_unsigned(n_max * n_max * x_mag * x_mag + e * n_max * n_max))

        zb = (n_max - 1).bit_length() // 2 + ((n_max - 1).bit_length() % 2)  # 4**zb >= N_max
        assert 4 ** zb >= n_max and (zb == 0 or 4 ** (zb - 1) < n_max)
        g_log2 = self.param_format.int_bits - 1 if self.affine_stage else 0
        guard = GUARD_BITS if self.exact_resolution else 0
        set_("guard_bits", guard)
        set_("rsqrt_reach_lsb", rsqrt_reach_lsb(self.out_format, self.param_format if self.affine_stage else None,
                                                zb, g_log2, exact=bool(guard)))
        need = rsqrt_need_bits(self.rsqrt_reach_lsb, guard)
        set_("z_bits", zb)
        set_("gamma_log2", g_log2)
        set_("rsqrt_need", need)
        set_("rsqrt_bits", need + 2)                   # T: R in [2**(T-1), 2**T]
        set_("rsqrt_m", (need + 3) // 2)               # m: 2m - 1 >= need + 1
        T, m = self.rsqrt_bits, self.rsqrt_m
        set_("r_width", T + 1)
        set_("mant_width", 2 * m)
        set_("a_frac", self.out_format.frac_bits + g_log2 + w_in + 2 + guard)  # FA
        set_("z_frac", self.out_format.frac_bits + g_log2 + 2 + guard)         # FZ
        FA, FZ = self.a_frac, self.z_frac
        # s = ceil((bitlen(D) - 2m)/2) ranges over [-(m-1), s_max]
        set_("shift_min", -(m - 1))
        set_("shift_max", max(0, -(-(self.d_width - 2 * m) // 2)))

        if self.kind.folded:
            self._derive_batchnorm_widths()
            return self._check_limits()
        # A <= N/sqrt(D) * 2**FA * (1 + 2**-need) + 1/2, with N/sqrt(D) <= 1/sqrt(e) (e >= 1)
        # or <= 2**(zb+1) (e = 0: D >= N - 1 for LayerNorm, D >= N for RMSNorm, D > 0).
        if e >= 1:
            a_real_max_scaled = math.isqrt((1 << (2 * FA)) // e) + 1
        else:
            a_real_max_scaled = 1 << (FA + zb + 1)
        a_max = a_real_max_scaled + (a_real_max_scaled >> need) + 2
        set_("a_max", a_max)
        set_("a_width", _bits_unsigned(a_max))
        set_("b_width", _bits_signed(x_mag * a_max))
        set_("xa_width", w_in + self.a_width + 1)     # signed x times unsigned A, before - B
        u_mag = ((1 << (FA + zb)) + (1 << (FA + zb - need))) + x_mag + 2
        set_("u_width", _bits_signed(u_mag))
        set_("v_width", _bits_signed((u_mag >> (FA - FZ)) + 1))
        set_("numerator_width", _bits_signed(n_max * x_mag * 2))      # a = N*x - S1', exact
        if self.affine_stage:
            p = self.param_format
            w_mag = (1 << (p.width - 1)) * (1 << (self.v_width - 1)) + (1 << (p.width - 1 + FZ))
            set_("w_width", _bits_signed(w_mag))
            set_("w_frac", FZ + p.frac_bits)
        else:
            set_("w_width", self.v_width)
            set_("w_frac", FZ)
        self._check_limits()

    def _derive_batchnorm_widths(self):
        """Widths of ``x*A - B`` for the folded per-channel constants.

        ``A = round(s * 2**(FA - F_in))``, ``B = round((s*mean - beta) * 2**FA)`` with
        ``s = gamma/sqrt(var + eps)``: rounding them costs at most ``(|x| + 1)/2 * 2**-FA`` =
        1/8 output LSB, rounding v another 1/8: the output is faithful to the exact real result of
        the float parameters.  A and B are sized for the parameters given here; a run-time load
        whose constants do not fit is refused (:func:`normgen.host.fold.fold_batchnorm`)."""
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        x_mag = 1 << (self.in_format.width - 1)
        if self.rounding == "nearest-even":
            # the smallest FA (>= the faithful one) proved to round every input of every channel
            # to nearest even, x*A - B rounded once, half to even
            try:
                fa = choose_nearest_even_frac(self.in_format, self.out_format, self.eps, self.gamma, self.beta,
                                              self.mean, self.var, fa_min=self.a_frac)
            except FoldError as exc:
                raise ConfigError(f"rounding nearest-even: {exc}") from None
            set_("a_frac", fa)
        scale, shift = fold_batchnorm(self, self.gamma, self.beta, self.mean, self.var, check=False)
        scale.setflags(write=False)
        shift.setflags(write=False)
        set_("scale_int", scale)
        set_("shift_int", shift)
        a_max = int(np.abs(scale).max())
        b_max = int(np.abs(shift).max())
        set_("a_max", a_max)
        set_("a_width", _bits_signed(a_max))
        set_("b_width", _bits_signed(b_max))
        set_("xa_width", self.in_format.width + self.a_width)
        u_mag = x_mag * a_max + b_max + 1
        set_("u_width", _bits_signed(u_mag))
        set_("v_width", _bits_signed((u_mag >> (self.a_frac - self.z_frac)) + 1))
        set_("w_width", self.v_width)
        set_("w_frac", self.z_frac)

    @property
    def exact_resolution(self) -> bool:
        """Whether elements near a rounding boundary are decided exactly (nearest-even
        LayerNorm/RMSNorm/batch statistics); folded BatchNorm proves its constants instead."""
        return self.rounding == "nearest-even" and not self.kind.folded

    @property
    def ambiguity_radius(self) -> int:
        """Half-width, in units of ``w``'s last bit, of the window around a rounding boundary in
        which a nearest-even element is decided exactly: ``2**-(GUARD_BITS+1)`` output LSB, above
        the datapath's error bound ``5/16 * 2**-GUARD_BITS`` LSB."""
        return 1 << (self.w_frac - self.out_format.frac_bits - 1 - self.guard_bits)

    @property
    def arith_limit(self) -> int:
        return MAX_ARITH_WIDTH_EXACT if self.exact_resolution else MAX_ARITH_WIDTH

    def _check_limits(self):
        n_max = self.features
        limits = (
            ("in_format", "S2 = sum(x*x)", self.s2_width),
            ("in_format", "x*A", self.xa_width),
            ("out_format", "gamma*v", self.w_width),
            ("in_format", "B", self.b_width),
        )
        for param, what, width in limits:
            if width > self.arith_limit:
                raise ConfigError(
                    f"{param}: {what} needs {width} bits with in_format {self.in_format}, "
                    f"out_format {self.out_format}, param_format {self.param_format}, features {n_max}; "
                    f"the arithmetic allows at most {self.arith_limit}: use fewer bits")

    # ---- conveniences -----------------------------------------------------------------------
    @property
    def subtracts_mean(self) -> bool:
        """Whether the numerator is ``N*x - S1`` rather than ``N*x`` (the kind's formula)."""
        return self.kind.subtracts_mean

    @property
    def reduction_max(self) -> int:
        """N_max for LayerNorm/RMSNorm, M_max for BatchNorm with batch statistics."""
        return self.max_batch if self.kind.statistics == "batch" else self.features

    @property
    def affine_stage(self) -> bool:
        """Whether the per-element datapath has the γ/β multiply-add stage (BatchNorm folds γ/β
        into its per-channel constants instead)."""
        return self.affine and not self.kind.folded

    @property
    def a_signed(self) -> bool:
        """Whether the per-element scale A can be negative (BatchNorm: γ < 0)."""
        return self.kind.folded

    @property
    def eps_effective(self) -> float:
        """ε as the hardware uses it: ``e · 2**(-2·F_in)``."""
        return self.eps_int * 2.0 ** (-2 * self.in_format.frac_bits)

    @property
    def beats_max(self) -> int:
        return self.features // self.lanes

    def gamma_beta_int(self):
        """(γ, β) integer arrays of length ``features``; γ = 1 (scale 2**0), β = 0 without the
        affine stage."""
        if self.affine_stage:
            return self.gamma_int, self.beta_int
        return np.ones(self.features, np.int64), np.zeros(self.features, np.int64)

    @property
    def param_frac(self) -> int:
        """Fraction bits of the γ/β integers returned by :meth:`gamma_beta_int`."""
        return self.param_format.frac_bits if self.affine_stage else 0

    def with_params(self, gamma=None, beta=None) -> "CoreConfig":
        """A copy with other γ/β values (the same hardware: only memory contents differ).  For
        BatchNorm use :func:`normgen.host.fold.fold_batchnorm` to load new parameters."""
        if self.kind.folded:
            raise ConfigError("BatchNorm cores take new parameters through fold_batchnorm")
        return CoreConfig(norm=self.norm, features=self.features, lanes=self.lanes,
                          in_format=self.in_format, out_format=self.out_format,
                          param_format=self.param_format, eps=self.eps, affine=self.affine,
                          gamma=gamma, beta=beta, scalar_mul=self.scalar_mul, rsqrt_form=self.rsqrt_form,
                          rounding=self.rounding, vector_interval=self.vector_interval, lane_dsp=self.lane_dsp,
                          max_batch=self.max_batch, momentum=self.momentum)

    def widths(self) -> dict:
        """Every derived width, for reports and Verilog headers."""
        names = ("count_width", "s1_width", "s2_width", "d_width", "rsqrt_bits", "rsqrt_m",
                 "r_width", "a_frac", "a_width", "b_width", "xa_width", "u_width", "z_frac",
                 "v_width", "w_width", "w_frac", "shift_min", "shift_max", "guard_bits")
        return {name: getattr(self, name) for name in names}

    def header_lines(self) -> list[str]:
        """What a Verilog header says of ε and the framing, beyond :meth:`describe`."""
        if self.kind.folded:
            return [
                f"eps: {self.eps!r} (exact, folded on the host with the running statistics)",
                f"lanes: {self.lanes}; one sample = one packet of up to {self.features} channels",
                f"per-channel scale A: signed {self.a_width} bits (2**-{self.a_frac - self.in_format.frac_bits} units), "
                f"shift B: signed {self.b_width} bits (2**-{self.a_frac} units)",
            ]
        lines = [f"effective eps: {self.eps_effective!r} (e = {self.eps_int} on the "
                 f"2**-{2 * self.in_format.frac_bits} grid)"]
        if self.kind.statistics == "batch":
            lines.append(f"lanes: {self.lanes}; one sample = one packet of {self.features} channels; a batch of "
                         f"1..{self.max_batch} samples ends with s_axis_tuser = 1")
        else:
            lines.append(f"lanes: {self.lanes}; vector length N = beats * lanes, 1..{self.features} (known at tlast)")
        return lines

    def describe(self) -> str:
        text = self._describe_kind()
        return text + (f" rounding={self.rounding}" if self.rounding != "faithful" else "")

    def _describe_kind(self) -> str:
        if self.kind.statistics == "batch":
            return (f"batchnorm (batch statistics) C={self.features} M_max={self.max_batch} P={self.lanes} "
                    f"in={self.in_format} out={self.out_format} "
                    + (f"param={self.param_format} " if self.affine else "no-affine ")
                    + f"eps={self.eps:g} (effective {self.eps_effective:.6g}, e={self.eps_int}) "
                    f"momentum={self.momentum:g}")
        if self.kind.folded:
            return (f"batchnorm (inference) C={self.features} P={self.lanes} in={self.in_format} "
                    f"out={self.out_format} {'affine' if self.affine else 'no-affine'} eps={self.eps:g} "
                    f"scale A: {self.a_width} bits, shift B: {self.b_width} bits")
        return (f"{self.norm} N_max={self.features} P={self.lanes} in={self.in_format} "
                f"out={self.out_format} " + (f"param={self.param_format} " if self.affine else "no-affine ")
                + f"eps={self.eps:g} (effective {self.eps_effective:.6g}, e={self.eps_int})"
                + (f" scalar_mul={self.scalar_mul}" if self.scalar_mul != "parallel" else "")
                + (f" rsqrt_form={self.rsqrt_form}" if self.rsqrt_form != self._default_rsqrt_form() else "")
                + (f" vector_interval={self.vector_interval}" if self.vector_interval is not None else "")
                + (f" lane_dsp={self.lane_dsp}" if self.lane_dsp is not None else ""))

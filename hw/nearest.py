"""Exact decision of the elements near a rounding boundary (``rounding = "nearest-even"``).

The element datapath computes ``w`` within ``5/16 * 2**-GUARD_BITS`` output LSB of the exact
``Y * 2**F_out`` and marks an element ``near`` when ``w`` lies within the ambiguity radius
(``2**-(GUARD_BITS+1)`` LSB) of a boundary ``lo + 1/2``; every other element is already the
correctly rounded result.  :class:`NearestEvenFixup` holds each beat, decides its near lanes one at
a time in integers, and passes the beat on, saturated::

    a = N*x - S1'                          (the exact numerator)
    L = gamma*a*2**c,  M = (2*lo + 1) - beta*2**c        c = F_out + 1 - F_p  (c < 0: scaled)
    sign(Y*2**F_out - (lo + 1/2)) = sign(L - M*sqrt(D)) = sign(L*|L| - M*|M|*D)   (D > 0)
                                  = sign(-M)                                       (D = 0)
    y = lo + 1 (above), lo (below), the even one of the two (on the boundary: a tie)

The products go one after another through one :class:`~normgen.hw.scalars.SerialMultiplier`
(16 x 16 bits per cycle), so a decision takes :func:`decision_cycles` cycles and the stage costs
one small multiplier whatever the lane count.  A beat without near lanes passes in one cycle; the
rate falls only on beats with near lanes (about ``P * 2**-GUARD_BITS`` of the beats on smooth
data; in the worst case, every element near a boundary, one element per ``decision_cycles``).

Members
-------
i : In(stream.Signature(resolve_layout(cfg, shared_stats)))
o : Out(stream.Signature(output_layout(cfg)))
busy : Out(1)
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import CoreConfig
from .interface import output_layout
from .multiply import saturate
from .scalars import SerialMultiplier, _chunks

__all__ = ["NearestEvenFixup", "decision_cycles", "decision_widths", "resolve_layout", "stats_fields",
           "rounded_width"]


def stats_fields(cfg: CoreConfig, coef_lanes: int) -> dict:
    """``n``, ``s1`` (the mean term S1') and ``d`` of the vector (one set, or one per lane):
    what a nearest-even core's exact decision needs besides the element."""
    return {"n": unsigned(cfg.count_width), "s1": unsigned(coef_lanes * cfg.s1_width),
            "d": unsigned(coef_lanes * cfg.d_width)}


def rounded_width(cfg: CoreConfig) -> int:
    """Width of the unsaturated rounded result of :class:`ElementDatapath`."""
    k2 = cfg.w_frac - cfg.out_format.frac_bits
    return (cfg.w_width if cfg.affine_stage else cfg.v_width) + 1 - k2


def resolve_layout(cfg: CoreConfig, shared_coefs: bool) -> data.StructLayout:
    """:class:`ElementDatapath`'s output on a nearest-even core: per lane the unsaturated result
    ``r`` (rounded half up), ``near`` (within the ambiguity radius of a boundary: decide exactly)
    and ``above`` (the computed value lies above the boundary, so ``r`` is its upper neighbour);
    ``ride`` carries ``x``, [``par``,] ``n``, ``s1``, ``d`` for the decision."""
    coef_lanes = 1 if shared_coefs else cfg.lanes
    ride = {"x": unsigned(cfg.lanes * cfg.in_format.width)}
    if cfg.affine_stage:
        ride["par"] = unsigned(cfg.lanes * 2 * cfg.param_format.width)
    ride.update(stats_fields(cfg, coef_lanes))
    fields = {
        "r": data.ArrayLayout(signed(rounded_width(cfg)), cfg.lanes),
        "near": unsigned(cfg.lanes),
        "above": unsigned(cfg.lanes),
        "ride": data.StructLayout(ride),
        "last": 1,
        "error": 1,
    }
    if cfg.kind.has_batch_end:
        fields["end"] = 1
    return data.StructLayout(fields)


def decision_widths(cfg: CoreConfig) -> dict:
    """Signed widths of the decision's operands and products."""
    w_p = cfg.param_format.width if cfg.affine_stage else 2
    c = cfg.out_format.frac_bits + 1 - cfg.param_frac
    lo_w = rounded_width(cfg) + 1
    a_w = cfg.numerator_width + 1
    l_w = a_w + w_p + max(c, 0)
    m_w = max(lo_w + 1 + max(-c, 0), w_p + max(c, 0)) + 1
    return {"n": cfg.count_width + 1, "x": cfg.in_format.width, "a": a_w, "gamma": w_p, "L": l_w,
            "M": m_w, "MM": 2 * m_w, "d": cfg.d_width + 1, "lo": lo_w}


def _products(cfg: CoreConfig) -> list[tuple[str, str, str]]:
    steps = [("NX", "n", "x")]
    if cfg.affine_stage:
        steps.append(("GA", "gamma", "a"))
    return steps + [("LL", "L", "L"), ("MM", "M", "M"), ("MD", "MM", "d")]


def decision_cycles(cfg: CoreConfig) -> int:
    """Cycles one exact decision takes: per product the multiplier's chunk pairs and three more,
    plus the choice of a lane, the comparison and the decision."""
    widths = decision_widths(cfg)
    return sum(_chunks(widths[a]) * _chunks(widths[b]) + 3 for _, a, b in _products(cfg)) + 3


class NearestEvenFixup(wiring.Component):
    def __init__(self, cfg: CoreConfig, *, shared_stats: bool):
        if not cfg.exact_resolution:
            raise ValueError("NearestEvenFixup serves nearest-even LayerNorm/RMSNorm/batch-statistics cores")
        self._cfg = cfg
        self._shared = shared_stats
        super().__init__({
            "i": In(stream.Signature(resolve_layout(cfg, shared_stats))),
            "o": Out(stream.Signature(output_layout(cfg))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes = cfg.lanes
        w_in, w_p = cfg.in_format.width, cfg.param_format.width
        widths = decision_widths(cfg)
        c = cfg.out_format.frac_bits + 1 - cfg.param_frac

        held = Signal.like(self.i.payload)
        full = Signal()
        pending = Signal(lanes)
        ys = [Signal(signed(widths["lo"]), name=f"y{k}") for k in range(lanes)]

        take = Signal()
        m.d.comb += [
            self.o.valid.eq(full & ~pending.any()),
            self.i.ready.eq(~full | (self.o.valid & self.o.ready)),
            take.eq(self.i.valid & self.i.ready),
        ]
        w_out = cfg.out_format.width
        m.d.comb += [
            self.o.payload.data.eq(Cat(*[saturate(y, w_out) for y in ys])),
            self.o.payload.last.eq(held.last),
            self.o.payload.error.eq(held.error),
        ]
        if cfg.kind.has_batch_end:
            m.d.comb += self.o.payload.end.eq(held.end)

        # ---- the decision of one lane ---------------------------------------------------------
        ride = held.ride
        lane_x = Array(ride.x[k * w_in:(k + 1) * w_in].as_signed() for k in range(lanes))
        if cfg.affine_stage:
            lane_g = Array(ride.par[k * w_p:(k + 1) * w_p].as_signed() for k in range(lanes))
            lane_b = Array(ride.par[(lanes + k) * w_p:(lanes + k + 1) * w_p].as_signed() for k in range(lanes))
        stat_lanes = 1 if self._shared else lanes
        lane_s1 = Array(ride.s1[k * cfg.s1_width:(k + 1) * cfg.s1_width].as_signed() for k in range(stat_lanes))
        lane_d = Array(ride.d[k * cfg.d_width:(k + 1) * cfg.d_width] for k in range(stat_lanes))
        lane_y = Array(ys)
        lane_above = Array(held.above[k] for k in range(lanes))

        lane = Signal(range(max(lanes, 2)))
        for k in reversed(range(lanes)):            # the lowest pending lane
            with m.If(pending[k]):
                m.d.comb += lane.eq(k)
        stat = lane if not self._shared else 0

        mul_a_w = max(widths[a] for _, a, _ in _products(cfg))
        mul_b_w = max(widths[b] for _, _, b in _products(cfg))
        m.submodules.multiplier = mul = SerialMultiplier(mul_a_w, mul_b_w)
        x = Signal(signed(w_in))
        lo = Signal(signed(widths["lo"]))
        s1 = Signal(signed(cfg.s1_width))
        d = Signal(cfg.d_width)
        gamma = Signal(signed(widths["gamma"]))
        beta = Signal(signed(widths["gamma"]))
        a = Signal(signed(widths["a"]))
        big_l = Signal(signed(widths["L"]))
        big_m = Signal(signed(widths["M"]))
        mm = Signal(signed(widths["MM"]))
        ll = Signal(signed(2 * widths["L"]))
        md = Signal(signed(widths["MM"] + widths["d"]))
        sign = Signal(signed(2))
        operands = {"n": held.ride.n, "x": x, "gamma": gamma, "a": a, "L": big_l, "M": big_m, "MM": mm,
                    "d": d}
        magnitude = {"L": Mux(big_l < 0, -big_l, big_l), "M": Mux(big_m < 0, -big_m, big_m)}

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(full & pending.any()):
                    m.d.sync += [
                        x.eq(lane_x[lane]),
                        lo.eq(lane_y[lane] - lane_above[lane]),
                        s1.eq(lane_s1[stat]),
                        d.eq(lane_d[stat]),
                    ]
                    if cfg.affine_stage:
                        m.d.sync += [gamma.eq(lane_g[lane]), beta.eq(lane_b[lane])]
                    else:
                        m.d.sync += [gamma.eq(1), beta.eq(0)]
                    m.next = "NX"
            steps = _products(cfg)
            for index, (name, a_op, b_op) in enumerate(steps):
                after = steps[index + 1][0] if index + 1 < len(steps) else "COMPARE"
                with m.State(name):
                    b_value = magnitude.get(b_op, operands[b_op]) if a_op == b_op else operands[b_op]
                    m.d.comb += [
                        mul.a.eq(operands[a_op]), mul.b.eq(b_value), mul.start.eq(1),
                        mul.a_chunks.eq(_chunks(widths[a_op])), mul.b_chunks.eq(_chunks(widths[b_op])),
                    ]
                    m.next = f"{name}_WAIT"
                with m.State(f"{name}_WAIT"):
                    with m.If(mul.done):
                        product = mul.product
                        if name == "NX":
                            m.d.sync += a.eq(product - s1)
                        elif name == "GA":
                            m.d.sync += big_l.eq(product << max(c, 0))
                        elif name == "LL":
                            m.d.sync += ll.eq(product)
                        elif name == "MM":
                            m.d.sync += mm.eq(product)
                        if name == "NX":
                            # M from lo and beta; without the affine stage L is the numerator itself
                            if c >= 0:
                                m.d.sync += big_m.eq(2 * lo + 1 - (beta << c))
                            else:
                                m.d.sync += big_m.eq(((2 * lo + 1) << -c) - beta)
                            if not cfg.affine_stage:
                                m.d.sync += big_l.eq((product - s1) << max(c, 0))
                        if name == "MD":
                            m.d.sync += md.eq(product)
                        m.next = after
            with m.State("COMPARE"):            # the product registered first: two short paths
                difference = ll - md
                m.d.sync += sign.eq(Mux(d == 0, Mux(big_m > 0, -1, Mux(big_m < 0, 1, 0)),
                                        Mux(difference > 0, 1, Mux(difference < 0, -1, 0))))
                m.next = "DECIDE"
            with m.State("DECIDE"):
                result = Mux(sign > 0, lo + 1, Mux(sign < 0, lo, lo + lo[0]))
                m.d.sync += [lane_y[lane].eq(result), pending.bit_select(lane, 1).eq(0)]
                m.next = "IDLE"

        with m.If(take):
            m.d.sync += [held.eq(self.i.payload), full.eq(1),
                         pending.eq(Mux(self.i.payload.error, 0, self.i.payload.near))]
            m.d.sync += [y.eq(self.i.payload.r[k]) for k, y in enumerate(ys)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        m.d.comb += self.busy.eq(full | ~fsm.ongoing("IDLE"))
        return m

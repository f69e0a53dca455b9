"""Output stage: reads each vector back from the buffer and applies the per-element datapath.

Per lane (widths from :class:`~normgen.hw.config.CoreConfig`)::

    x (W_in) --*A (a_width)--> -B --> u (u_width) --rnd FA-FZ--> v (v_width)
      --*gamma (W_p)--> +beta<<FZ --> w (w_width) --rnd, saturate--> y (W_out)

Pipeline, all stages stall together while the output register is full and not taken::

    issue (buffer and gamma/beta read) -> S1 memory data -> S1b register -> ElementDatapath

Members
-------
coefs : In(stream.Signature(vector_coefs_layout(cfg)))
buffer : In(memory.ReadPort.Signature(...))
    Drives the vector buffer's synchronous read port.
rd_ptr : Out(ptr_bits + 1)
    The read pointer (address and wrap bit, :func:`~normgen.hw.ingest.next_ptr`), for the input
    stage's free-space count.
params : In(memory.ReadPort.Signature(...))
    Drives the γ/β memory's read port (same address timing), affine cores only.
o : Out(stream.Signature(output_layout(cfg)))
    The core's output stream (:mod:`normgen.hw.interface`).
busy : Out(1)
"""
from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import SLICE_LANES, CoreConfig
from .edge import banked
from .ingest import buffer_depth, lane_values, next_ptr
from .interface import output_layout
from .multiply import product_latency, product_tree, saturate
from .nearest import NearestEvenFixup, resolve_layout, stats_fields
from .scalars import vector_coefs_layout
from .streams import BlockFIFO, CreditFIFO, ReadyRegFIFO, SlicedFIFO, through_fifo

__all__ = ["pack_params", "OutputStage", "ElementDatapath", "output_latency", "datapath_latency", "product_cycles",
           "output_bypass",
           "coef_shapes", "element_layout", "coef_copies", "register_copies", "read_address_register"]

#: Lanes that one copy of a vector constant (A, B) drives at most, where the copies are free:
#: the two register stages that wait for the vector buffer's read data make up to four copies.
LANES_PER_COPY = 2

#: Words of the FIFO the vector constants enter a wide output stage through (:func:`coef_slice`).
COEF_FIFO_DEPTH = 2


def coef_copies(cfg: CoreConfig) -> int:
    """Copies of the vector constants A and B that reach the element datapath: one per
    ``LANES_PER_COPY`` lanes, at most four (two doubling register stages)."""
    return max(1, min(4, cfg.lanes // LANES_PER_COPY))


def register_copies(m: Module, values: list, copies: int, name: str) -> list:
    """One register stage under ``values``: ``copies`` registers (a multiple of ``len(values)``),
    each value feeding ``copies // len(values)`` of them.

    Registers with the same input are one register to a synthesis tool (Yosys ``opt_merge``)
    unless they differ otherwise: a value's copies at most two, one with initial value 0 and one
    with all ones (reset-less; the value before the first beat is never used).  A tree of such
    stages makes any number of copies, each driving a few loads where one register would drive
    them all."""
    per = copies // len(values)
    assert per * len(values) == copies and per in (1, 2), (copies, len(values))
    regs = []
    for k, value in enumerate(values):
        for c in range(per):
            shape = Value.cast(value).shape()
            reg = Signal(shape, name=f"{name}_{k * per + c}", reset_less=True,
                         init=(-1 if shape.signed else (1 << shape.width) - 1) if c else 0)
            m.d.sync += reg.eq(value)
            regs.append(reg)
    return regs


def pack_params(cfg: CoreConfig) -> list[int]:
    """γ/β memory words: lane k's γ at bits [k*W_p...], β at [(P+k)*W_p...]."""
    if not cfg.affine:
        return []
    w_p, lanes = cfg.param_format.width, cfg.lanes
    mask = (1 << w_p) - 1
    words = []
    for beat in range(cfg.beats_max):
        word = 0
        for k in range(lanes):
            word |= (int(cfg.gamma_int[beat * lanes + k]) & mask) << (k * w_p)
            word |= (int(cfg.beta_int[beat * lanes + k]) & mask) << ((lanes + k) * w_p)
        words.append(word)
    return words


def product_registers(cfg: CoreConfig) -> int:
    """Registers behind each partial product of the element datapath's products
    (:func:`~normgen.hw.multiply.product_tree`): from ``SLICE_LANES`` lanes on, two.

    The first is the multiplier block's own output register.  At P = 32 the lanes' ~100 blocks
    spread over the die's DSP rows, and a block's output → the adder summing the partial
    products was the critical path (2.4 ns logic, 6.1 ns routing, 63 columns apart); a second
    register in the fabric lets the placer split that distance, for one cycle of latency."""
    return 2 if cfg.lanes >= SLICE_LANES else 1


def product_cycles(cfg: CoreConfig) -> tuple[int, int]:
    """Cycles of the element datapath's two products, x*A and gamma*v (0 without the affine
    stage) (:func:`~normgen.hw.multiply.product_latency`)."""
    products = cfg.lane_products()
    fabric_bits = {"xa": cfg.xa_fabric_bits, "g": cfg.g_fabric_bits}
    addend = {"xa": adds_in_product(cfg), "g": adds_in_product(cfg)}
    cycles = {name: product_latency(a, b, operand_registers=True, fabric_bits=fabric_bits[name],
                                    product_registers=product_registers(cfg), addend=addend[name])
              for name, (a, b) in products.items()}
    return cycles["xa"], cycles.get("g", 0)


def adds_in_product(cfg: CoreConfig) -> bool:
    """Whether x*A's last adder level also subtracts B (and gamma*v's adds beta), so that v (and
    the rounded w) need no register of their own (:func:`~normgen.hw.multiply.product_tree`'s
    ``addend``): single-lane vector cores with the pipelined scalar multiplier.  Not the folded
    BatchNorm: its datapath stalls, and the stall's enable → the carry-save layer → the carry
    chain was its critical path (``make bench``: 222.6 -> 157.7 MHz); nor the small-FPGA choice
    (``scalar_mul="serial"``): on an iCE40 the carry-save layer in front of a carry chain cost the
    iCEBreaker image 32.8 -> 29.1 MHz (``normgen board build``), for two cycles of a latency of
    120; nor cores of more than one lane, whose multiplier blocks sit farther from their adders:
    at P = 8 a block's output → the carry-save layer → the carry chain was the critical path
    (``make bench``: 126.1 MHz, 3.3 ns of routing from the block)."""
    return not cfg.kind.folded and cfg.scalar_mul != "serial" and cfg.lanes == 1


def datapath_latency(cfg: CoreConfig) -> int:
    """:class:`ElementDatapath`: x*A - B (its last level subtracts B; folded nearest-even: x*A,
    then the difference), [gamma*v + beta (its last level adds beta),] the rounded w [without the
    affine stage, and folded nearest-even], the saturated output register."""
    xa_cycles, g_cycles = product_cycles(cfg)
    if not adds_in_product(cfg):
        return xa_cycles + 3 + g_cycles
    return xa_cycles + g_cycles + (1 if cfg.affine_stage else 2)


def credit_lag(cfg: CoreConfig) -> bool:
    """Whether a beat read from the output FIFO returns its credit to the issue a cycle later
    (through a register beside the FIFO): in cores of more than one lane.  The FIFO's level →
    ``o.valid`` → the credit count at the issue logic was the critical path at P = 32 (6.5 ns of
    routing between them) and at P = 8 (``make bench``: 141.3 MHz, through the bypassed FIFO's
    ``o.valid``); the FIFO is one beat deeper instead."""
    return cfg.lanes > 1


def output_fifo_depth(cfg: CoreConfig) -> int:
    """The output FIFO holds every beat in flight behind the issue: issue, memory data, its
    register, the datapath, the FIFO's own write; one more keeps the issue going at full rate
    (and one more for the nearest-even decision stage behind the FIFO, one more for the FIFO's
    read register when it has one, one more for the credit's lag)."""
    return (2 + int(read_address_register(cfg)) + datapath_latency(cfg) + 2 + fixup_latency(cfg)
            + int(cfg.fifos_in_block_ram) + int(credit_lag(cfg)))


#: Widest part of the output FIFO (bits) from ``SLICE_LANES`` lanes on, see :func:`output_fifo_slices`.
OUTPUT_FIFO_SLICE_BITS = 160


def output_fifo_slices(cfg: CoreConfig, width: int) -> int:
    """Parts the output FIFO is built of (:class:`~normgen.hw.streams.SlicedFIFO`): from
    ``SLICE_LANES`` lanes on, enough that none is wider than ``OUTPUT_FIFO_SLICE_BITS``.  At
    P = 32 one FIFO of 514 bits was the critical path: its level → write enable → level loop,
    with the write enable reaching every memory cell (6.3 ns of routing)."""
    if cfg.lanes < SLICE_LANES:
        return 1
    return -(-width // OUTPUT_FIFO_SLICE_BITS)


def fixup_latency(cfg: CoreConfig) -> int:
    """The nearest-even decision stage's register (a beat without near lanes)."""
    return 1 if cfg.exact_resolution else 0


def coef_slice(cfg: CoreConfig) -> bool:
    """Whether the vector constants enter :class:`OutputStage` through a two-word FIFO.

    From ``SLICE_LANES`` lanes on, the scalar stage and the output stage's issue logic (whose
    read pointer addresses a buffer ``P`` elements wide) sit far apart on the die, and the
    handshake between them is the longest path (at P = 32: the scalar stage's valid flag to the
    read pointer's enable, 7 ns of routing).  The FIFO puts a register on either side of that
    distance, for one cycle of latency; it takes a word every cycle, so the rate is unchanged.
    Its ``w_rdy`` is a register (:class:`~normgen.hw.streams.ReadyRegFIFO`): with a ``w_rdy``
    decoded from the level, level → the scalar stage's handshake → write enable → level crossed
    that distance twice in one cycle (the P = 32 critical path, 7.3 ns of routing).

    It holds only what the issue logic needs (the beat count, with the comparisons the issue
    makes decoded before the write); A and B (and the statistics of exact decisions) go through
    FIFOs of their own, one beside each group of lanes, whose head is the constants of the beat
    at S1 (taken when the vector's last beat passes), so each FIFO sits by its consumer (with one
    FIFO for both, its read pointer → the issue logic's ``cur_last`` crossed the die: 6.1 ns of
    routing)."""
    return cfg.lanes >= SLICE_LANES


def read_address_register(cfg: CoreConfig) -> bool:
    """Whether the vector buffer's (and γ/β's) read address passes a register after the read
    pointer: from ``SLICE_LANES`` lanes on.  The issue logic moves the read pointer; the block RAMs
    it addresses, and the input stage that compares its write pointer with it, lie across the die.
    At P = 32 the pointer's enable (issue logic → read pointer) was the critical path with 6 ns of
    routing (``python -m normgen.sim.pnr 2``: the pointer sat between the issue logic and its
    loads).  With the register (``rd_ptr``, the address and the input stage's view) the pointer
    sits by the issue logic, for one cycle of latency and one more word of vector buffer
    (:func:`~normgen.hw.ingest.buffer_depth`: the input stage sees the pointer a cycle later)."""
    return cfg.lanes >= SLICE_LANES


def output_latency(cfg: CoreConfig) -> int:
    """[The constants' FIFO,] issue (with the constants' transfer), memory data, memory data
    register, the element datapath, then the output FIFO (readable the cycle after its write;
    passed by when empty, :func:`output_bypass`) [and the nearest-even decision stage]."""
    return int(coef_slice(cfg)) + read_to_output(cfg)


def output_bypass(cfg: CoreConfig) -> bool:
    """Whether a beat passes the output FIFO when the FIFO is empty and the consumer takes it at
    once (:func:`~normgen.hw.streams.through_fifo`, one cycle less latency): below
    ``SLICE_LANES`` lanes, with the FIFO read asynchronously (not in block RAM)."""
    return cfg.lanes < SLICE_LANES and not cfg.fifos_in_block_ram


def read_to_output(cfg: CoreConfig) -> int:
    """Cycles from the issue of a vector's first beat (its vector-buffer read) to ``o.valid``
    [+ 1: the output FIFO's write, unless it is passed by (:func:`output_bypass`)] [+ 1: the
    output FIFO's read register, :attr:`~CoreConfig.fifos_in_block_ram`]."""
    return (2 + int(read_address_register(cfg)) + datapath_latency(cfg) + int(not output_bypass(cfg))
            + int(cfg.fifos_in_block_ram) + fixup_latency(cfg))


class ElementDatapath(wiring.Component):
    """The per-element arithmetic of every core, ``P`` lanes, fully pipelined.

    Between registers sits one DSP-sized partial product, one adder (the last level of a product
    with its addend: a carry-save layer and one carry chain) or the output's saturation: each
    product is :func:`~normgen.hw.multiply.product_tree` (partial products, then their sum,
    :func:`product_cycles`), each sum after a product is that product's last level, and each
    rounding is folded into the adder before it (``rnd(xa - b, k) = (xa + (half - b)) >> k``)::

        S2  v  = (x*A + b') >> (FA - FZ)   (v_width)    b' = half - B          [xa cycles]
        S3  r  = (gamma*v + beta') >> (w_frac - F_out)  beta' = beta<<FZ + half [affine, g cycles]
        S3  r  = (v + half) >> (FZ - F_out)                                     [no affine]
        o   y  = saturate(r) or 0 on an error beat

    (The folded nearest-even BatchNorm keeps x*A, then ``x*A - B``, then its rounding,
    :func:`adds_in_product`.)

    With ``stalls`` (the default) all stages stall together: ``i.ready`` is high when the output
    register is free or taken.  Without, the stages move on every cycle (no enable fans out to
    the lanes) and ``o.ready`` is not looked at: the consumer must have room for every beat, as
    :class:`OutputStage`'s output FIFO has by its credit count.

    Members
    -------
    i : In(stream.Signature(element_layout(cfg, shared_coefs, copies)))
        ``x`` (P lanes), ``a``/``b`` (``copies`` copies of one value for all lanes when
        ``shared_coefs``, lane ``k`` taking copy ``k*copies//P``; else one per lane), ``par``
        (γ lanes then β lanes, affine cores), ``last``, ``error``.
    o : Out(stream.Signature(output_layout(cfg)))
    busy : Out(1)
    par : In(P·2·W_p), with ``late_params`` only (then ``i`` has no ``par``)
        γ/β of the beat that entered ``i`` :meth:`params_delay` cycles before: a caller that reads
        them from a memory addresses it that much later instead of holding the P lanes' γ/β in
        a delay line (the stages move every cycle, so the delay is exact).
    """

    def __init__(self, cfg: CoreConfig, *, shared_coefs: bool, stalls: bool = True, copies: int = 1,
                 late_params: bool = False):
        if late_params and (stalls or not cfg.affine_stage or cfg.exact_resolution):
            raise ValueError("late_params needs an affine stage, no stalls and no exact resolution")
        self._cfg = cfg
        self._shared = shared_coefs
        self._stalls = stalls
        self._late = late_params
        self._copies = copies if shared_coefs else cfg.lanes
        out_layout = resolve_layout(cfg, shared_coefs) if cfg.exact_resolution else output_layout(cfg)
        members = {
            "i": In(stream.Signature(element_layout(cfg, shared_coefs, copies, params=not late_params))),
            "o": Out(stream.Signature(out_layout)),
            "busy": Out(1),
        }
        if late_params:
            members["par"] = In(unsigned(cfg.lanes * 2 * cfg.param_format.width))
        super().__init__(members)

    @staticmethod
    def params_delay(cfg: CoreConfig) -> int:
        """With ``late_params``: cycles ``par`` comes after its beat's input transfer (it is
        first used there, by γ·v's operand registers, as x*A - B leaves its product tree [or
        its register of its own, :func:`adds_in_product`])."""
        return product_cycles(cfg)[0] + int(not adds_in_product(cfg))

    @property
    def latency(self) -> int:
        return datapath_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes = cfg.lanes
        w_in, w_out, w_p = cfg.in_format.width, cfg.out_format.width, cfg.param_format.width
        a_shape, b_shape = coef_shapes(cfg)
        coef_lanes = self._copies
        advance = Signal()
        if self._stalls:
            m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        else:
            m.d.comb += advance.eq(1)
        m.d.comb += self.i.ready.eq(advance)

        def coef_parts(value, shape):
            """The ``coef_lanes`` values (copies, or one per lane) packed in ``value``."""
            width = Shape.cast(shape).width
            parts = [value[k * width:(k + 1) * width] for k in range(coef_lanes)]
            return [p.as_signed() if Shape.cast(shape).signed else p for p in parts]

        def per_lane(parts):
            """Lane k's value among the ``coef_lanes`` ones."""
            return [parts[k * coef_lanes // lanes] for k in range(lanes)]

        def stage(name, shape, count=lanes):
            return [Signal(shape, name=f"{name}{k}", reset_less=True) for k in range(count)]

        batch_end = cfg.kind.has_batch_end
        flags = [self.i.valid, self.i.payload.last, self.i.payload.error,
                 self.i.payload.end if batch_end else C(0)]
        stage_valids = []

        exact = cfg.exact_resolution
        # what an exact decision needs rides along with the flags (nearest-even cores)
        ride_fields = ["x"] + (["par"] if cfg.affine_stage else []) + ["n", "s1", "d"]
        ride = [Cat(*[getattr(self.i.payload, f) for f in ride_fields])] if exact else []

        def next_flags(name):
            regs = [Signal(name=f"{name}_{what}") for what in ("valid", "last", "error", "end")]
            m.d.sync += [r.eq(f) for r, f in zip(regs, flags)]
            stage_valids.append(regs[0])
            if exact:
                carried = Signal(len(ride[0]), name=f"{name}_ride")
                m.d.sync += carried.eq(ride[0])
                ride[0] = carried
            return regs

        xs = lane_values(self.i.payload.x, lanes, w_in)
        a_in = per_lane(coef_parts(self.i.payload.a, a_shape))
        b_in = coef_parts(self.i.payload.b, b_shape)
        k1 = cfg.a_frac - cfg.z_frac
        k2 = cfg.w_frac - cfg.out_format.frac_bits
        def delayed(values, cycles, name):
            """``values`` (a list) through ``cycles`` registers."""
            for step in range(cycles):
                regs = [Signal.like(v, name=f"{name}_d{step}_{k}", reset_less=True) for k, v in enumerate(values)]
                m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
                values = regs
            return values

        xa_cycles, g_cycles = product_cycles(cfg)
        merged = adds_in_product(cfg)
        with m.If(advance):
            # S2: x*A as registered partial products and their sum (with half - B in its last
            # level, merged); B registered as it comes first (only registers behind a block
            # RAM's read data), then B - half (half - B), ready for the level that takes it
            b_reg = stage("b_reg", b_shape, coef_lanes)
            m.d.sync += [r.eq(b) for r, b in zip(b_reg, b_in)]
            b_half = stage("b_half", signed(Shape.cast(b_shape).width + 1), coef_lanes)
            m.d.sync += [r.eq((1 << (k1 - 1)) - b if merged else b - (1 << (k1 - 1))) for r, b in zip(b_half, b_reg)]
            b_half = per_lane(delayed(b_half, xa_cycles - (3 if merged else 2), "b_half"))
            xa = [product_tree(m, x, a, name=f"xa{k}", operand_registers=True, fabric_bits=cfg.xa_fabric_bits,
                               product_registers=product_registers(cfg), addend=bh if merged else None)
                  for k, (x, a, bh) in enumerate(zip(xs, a_in, b_half))]
            for step in range(xa_cycles):
                flags = next_flags(f"s2_{step}")
            if cfg.affine_stage and not self._late:
                par2, = delayed([self.i.payload.par], xa_cycles, "par")
            if cfg.kind.folded and cfg.rounding == "nearest-even":
                # one rounding, half to even: S3 the difference, S4 floor(d/2**k + 1/2), minus 1
                # on a tie whose floor is even (bit k of d clear and the bits below exactly half)
                k = cfg.a_frac - cfg.out_format.frac_bits
                diff = stage("diff", signed(cfg.u_width + 1))
                m.d.sync += [r.eq(p - b - (1 << (k1 - 1))) for r, p, b in zip(diff, xa, b_half)]
                flags = next_flags("s3")
                rounded = stage("rounded", signed(cfg.u_width + 2 - k))
                m.d.sync += [r.eq((dd + (1 << (k - 1)) - 1 + dd[k]) >> k) for r, dd in zip(rounded, diff)]
                flags = next_flags("s4")
                self._output(m, cfg, rounded, flags, None)
                return self._finish(m, stage_valids)
            if merged:                          # v: the product tree's sum, shifted (wiring)
                v = [(p >> k1)[:cfg.v_width].as_signed() for p in xa]
            else:                               # S3: v = (x*A - (B - half)) >> (FA - FZ)
                v = stage("v", signed(cfg.v_width))
                m.d.sync += [r.eq((p - b) >> k1) for r, p, b in zip(v, xa, b_half)]
                flags = next_flags("s3")
            below = None
            if cfg.affine_stage:
                if self._late:
                    par3 = self.par
                elif merged:
                    par3 = par2
                else:
                    par3 = Signal.like(par2)
                    m.d.sync += par3.eq(par2)
                gammas = lane_values(par3, lanes, w_p)
                betas = lane_values(par3[lanes * w_p:], lanes, w_p)
                # gamma*v as registered partial products and their sum (v registered again in
                # front of the partial products: the sum's register stays beside its carry chain,
                # its copy goes into the multipliers), with beta<<FZ + half in its last level
                # (merged) or added after it; β waits as it is, W_p bits, and is widened in the
                # register the addition takes
                betas = delayed(betas, g_cycles - (2 if merged else 1), "beta")
                beta_half = stage("beta_half", signed(cfg.w_width))
                m.d.sync += [r.eq((bt << cfg.z_frac) + (1 << (k2 - 1))) for r, bt in zip(beta_half, betas)]
                g = [product_tree(m, gm, vv, name=f"g{k}", operand_registers=True, fabric_bits=cfg.g_fabric_bits,
                                  product_registers=product_registers(cfg), addend=bh if merged else None)
                     for k, (gm, vv, bh) in enumerate(zip(gammas, v, beta_half))]
                for step in range(g_cycles):
                    flags = next_flags(f"s4_{step}")
                if merged:
                    summed = g
                    rounded = [(sm >> k2)[:cfg.w_width + 1 - k2].as_signed() for sm in summed]
                else:                           # S5: the rounded sum
                    summed = [gg[:cfg.w_width].as_signed() + bh for gg, bh in zip(g, beta_half)]
                    rounded = stage("rounded", signed(cfg.w_width + 1 - k2))
                    m.d.sync += [r.eq(sm >> k2) for r, sm in zip(rounded, summed)]
            else:
                summed = [vv + (1 << (k2 - 1)) for vv in v]
                rounded = stage("rounded", signed(cfg.v_width + 1 - k2))
                m.d.sync += [r.eq(sm >> k2) for r, sm in zip(rounded, summed)]
            # the bits below the output LSB of w + 1/2 LSB (nearest-even cores: where w lies
            # relative to the rounding boundary): wiring from the product tree's sum, or a register
            # beside the rounded sum's
            if exact:
                if cfg.affine_stage and merged:
                    below = [sm[:k2] for sm in summed]
                else:
                    below = stage("below", unsigned(k2))
                    m.d.sync += [r.eq(sm[:k2]) for r, sm in zip(below, summed)]
            if not (cfg.affine_stage and merged):
                flags = next_flags("s5" if cfg.affine_stage else "s4")
            self._output(m, cfg, rounded, flags, below, ride[0] if exact else None)
        return self._finish(m, stage_valids)

    def _finish(self, m, stage_valids):
        """The payload fields from their registers, outside the stages' enable, and ``busy``."""
        m.d.comb += [field.eq(reg) for field, reg in self._payload_regs]
        m.d.comb += self.busy.eq(Cat(*stage_valids, self.o.valid).any())
        return m

    def _output(self, m, cfg, rounded, flags, below, ride=None):
        """The output register: saturated outputs, or (nearest-even cores) the unsaturated
        result with each lane's position relative to the rounding boundary and what an exact
        decision needs."""
        w_out = cfg.out_format.width
        valid, last, error, end = flags
        m.d.sync += [
            self.o.valid.eq(valid),
            self.o.payload.last.eq(last),
            self.o.payload.error.eq(error),
        ]
        if cfg.kind.has_batch_end:
            m.d.sync += self.o.payload.end.eq(end)
        # The data registers have no reset (only ``valid`` needs one): a reset reaching every
        # output bit was the widest cores' critical path.  They drive the payload through
        # ``_payload_regs``, assigned outside the stages' enable (``elaborate``).
        if below is None:
            ys = [Mux(error, 0, saturate(r, w_out)) for r in rounded]
            data = Signal.like(self.o.payload.data, name="o_data", reset_less=True)
            m.d.sync += data.eq(Cat(*ys))
            self._payload_regs = [(self.o.payload.data, data)]
            return
        # w lies within the radius of the boundary: (w + half) mod 2**k2 in [-radius, radius]
        k2 = cfg.w_frac - cfg.out_format.frac_bits
        radius = cfg.ambiguity_radius
        near = [~error & ((b >= (1 << k2) - radius) | (b <= radius)) for b in below]
        above = [b <= radius for b in below]
        fields = {
            "r": Cat(*[Mux(error, 0, r) for r in rounded]),
            "near": Cat(*near),
            "above": Cat(*above),
            "ride": ride,
        }
        self._payload_regs = []
        for name, value in fields.items():
            field = getattr(self.o.payload, name)
            reg = Signal.like(field, name=f"o_{name}", reset_less=True)
            m.d.sync += reg.eq(value)
            self._payload_regs.append((field, reg))


def coef_shapes(cfg: CoreConfig):
    """Shapes of the per-element-stage constants A and B."""
    return cfg.lane_products()["xa"][1], signed(cfg.b_width)


def element_layout(cfg: CoreConfig, shared_coefs: bool, copies: int = 1, *, params: bool = True) -> data.StructLayout:
    coef_lanes = 1 if shared_coefs else cfg.lanes
    a_lanes = copies if shared_coefs else cfg.lanes
    a_shape, b_shape = coef_shapes(cfg)
    fields = {
        "x": unsigned(cfg.lanes * cfg.in_format.width),
        "a": unsigned(a_lanes * a_shape.width),
        "b": unsigned(a_lanes * b_shape.width),
        "last": 1,
        "error": 1,
    }
    if cfg.kind.has_batch_end:
        fields["end"] = 1
    if cfg.affine_stage and params:
        fields["par"] = unsigned(cfg.lanes * 2 * cfg.param_format.width)
    if cfg.exact_resolution:
        fields.update(stats_fields(cfg, coef_lanes))
    return data.StructLayout(fields)


class OutputStage(wiring.Component):
    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        ptr_bits = (buffer_depth(cfg) - 1).bit_length()
        members = {
            "coefs": In(stream.Signature(vector_coefs_layout(cfg))),
            "buffer": In(memory.ReadPort.Signature(addr_width=ptr_bits,
                                                   shape=unsigned(cfg.lanes * cfg.in_format.width))),
            "rd_ptr": Out(ptr_bits + 1),
            "o": Out(stream.Signature(output_layout(cfg))),
            "busy": Out(1),
        }
        if cfg.affine:
            members["params"] = In(memory.ReadPort.Signature(
                addr_width=(cfg.beats_max - 1).bit_length(), shape=unsigned(cfg.lanes * 2 * cfg.param_format.width)))
        super().__init__(members)

    @property
    def latency(self) -> int:
        """Cycles from the ``coefs`` transfer to ``o.valid`` of the vector's first beat."""
        return output_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes = cfg.lanes
        w_in, w_out, w_p = cfg.in_format.width, cfg.out_format.width, cfg.param_format.width
        ptr_bits = self.buffer.addr.shape().width

        # Credits: a beat issues only when the output FIFO will have room for it, so the stages
        # behind the issue never stall and ``o.ready`` reaches nothing but the FIFO and the count.
        # from SLICE_LANES lanes on the FIFO takes writes ungated (CreditFIFO): ``in_flight``
        # keeps room for every beat issued
        fifo_class = (BlockFIFO if cfg.fifos_in_block_ram
                      else CreditFIFO if lanes >= SLICE_LANES else fifo.SyncFIFO)
        width = (resolve_layout(cfg, True) if cfg.exact_resolution else output_layout(cfg)).size
        slices = output_fifo_slices(cfg, width)
        if slices == 1:
            m.submodules.out_fifo = out_fifo = fifo_class(width=width, depth=output_fifo_depth(cfg))
        else:
            m.submodules.out_fifo = out_fifo = SlicedFIFO(width=width, depth=output_fifo_depth(cfg),
                                                          slices=slices, fifo_class=fifo_class)
        in_flight = Signal(range(out_fifo.depth + 1))
        # a beat may issue: in_flight < depth, a register set from in_flight's next value (the same
        # flag cycle for cycle; at P = 8 the comparison's carry chain in front of the issue logic
        # was the critical path, in_flight → read pointer, 5.1 ns routing)
        advance = Signal(init=1)

        # Issue: one beat per cycle; the first beat of a vector issues in the cycle its
        # constants arrive when nothing else is in progress.  Whether the next beat of the current
        # vector is its last is kept in a register (``cur_last``), so the handshake with the
        # scalar stage and the enables of the constant registers need no comparison.
        active = Signal()
        sliced = coef_slice(cfg)
        if sliced:
            # Wide cores: the issue logic's constants FIFO holds what the issue needs (the beat
            # count, decoded ahead), a FIFO of its own the vector's constants, read when the
            # vector's last beat leaves S1 (``s1_pop``), so that each sits by its consumer.
            beats_shape = self.coefs.payload.beats.shape()
            ctrl_layout = data.StructLayout({"beats": beats_shape, "beats_m1": beats_shape, "overlong": 1,
                                             "single": 1, "two": 1, "three": 1})
            const_fields = {name: field.shape for name, field in self.coefs.payload.shape()
                            if name not in ("beats", "overlong")}
            const_layout = data.StructLayout(const_fields)
            m.submodules.coef_fifo = coef_fifo = ReadyRegFIFO(width=ctrl_layout.size, depth=COEF_FIFO_DEPTH)
            # A vector's constants stay in their FIFO until its last beat reaches S1 (they are
            # that FIFO's head while its beats pass S1: no register holds them there).  Besides
            # the counts in theirs (at most COEF_FIFO_DEPTH) a FIFO then holds the vector that is
            # issuing and the one whose last beat issued in the cycle before: two words more.
            # One FIFO per copy of the constants, each beside the lanes it feeds (with one, its
            # read pointer → its storage → the lanes crossed the die twice: 6.2 ns of routing at
            # P = 32); they move in lockstep.
            const_fifos = []
            for k in range(coef_copies(cfg)):
                const_fifo = CreditFIFO(width=const_layout.size, depth=COEF_FIFO_DEPTH + 2, in_registers=True)
                m.submodules[f"const_fifo{k}"] = const_fifo
                const_fifos.append(const_fifo)
            written = self.coefs.payload
            ctrl_word = Signal(ctrl_layout)
            m.d.comb += [
                ctrl_word.beats.eq(written.beats), ctrl_word.beats_m1.eq(written.beats - 1),
                ctrl_word.overlong.eq(written.overlong),
                ctrl_word.single.eq(written.overlong | (written.beats == 1)),
                ctrl_word.two.eq(written.beats == 2), ctrl_word.three.eq(written.beats == 3),
            ]
            # written a cycle after the count (from registers: the FIFOs lie across the die from
            # the handshake, whose logic in front of their write enables was the P = 32 critical
            # path, 7.2 ns of routing); still a cycle before the vector's first beat reaches S1
            const_w_en = Signal()
            const_w_data = Signal(const_layout.size, reset_less=True)
            m.d.sync += [const_w_en.eq(self.coefs.valid & coef_fifo.w_rdy),
                         const_w_data.eq(Cat(*(getattr(written, name) for name in const_fields)))]
            for const_fifo in const_fifos:
                m.d.comb += [const_fifo.w_data.eq(const_w_data), const_fifo.w_en.eq(const_w_en)]
            ctrl_in = stream.Signature(ctrl_layout).create()
            coefs = stream.Signature(ctrl_layout).create()
            m.d.comb += [ctrl_in.payload.eq(ctrl_word), ctrl_in.valid.eq(self.coefs.valid),
                         self.coefs.ready.eq(ctrl_in.ready)]
            through_fifo(m, ctrl_in, coef_fifo, coefs)
        else:
            coefs = self.coefs
        # The γ/β memory's read address (the beat of the vector at the head, 0 before its first
        # issue) is a register of its own: no logic between it and the block RAMs, which a wide
        # core spreads across the die.
        beat = Signal.like(coefs.payload.beats)
        left = Signal.like(coefs.payload.beats)      # beats of ``cur`` not yet issued
        cur_last = Signal()
        left_two = Signal()                     # left == 2, a cycle ahead (cur_last's next value)
        cur = Signal.like(coefs.payload)
        head = Signal.like(coefs.payload)
        issue = Signal()
        issue_last = Signal()
        incoming = coefs.payload
        if sliced:
            incoming_last, incoming_two, incoming_three = incoming.single, incoming.two, incoming.three
            incoming_left = incoming.beats_m1
        else:
            incoming_last = incoming.overlong | (incoming.beats == 1)
            incoming_two, incoming_three = incoming.beats == 2, incoming.beats == 3
            incoming_left = incoming.beats - 1
        with m.If(active):
            m.d.comb += [head.eq(cur), issue_last.eq(cur_last)]
        with m.Else():
            m.d.comb += [head.eq(incoming), issue_last.eq(incoming_last)]
        m.d.comb += [
            issue.eq(advance & (active | coefs.valid)),
            coefs.ready.eq(advance & (~active | cur_last)),
            self.buffer.en.eq(1),
        ]
        # (wide cores: the read address a cycle after the pointer, and what the issue sends to S1
        # with it, :func:`read_address_register`)
        addr_reg = read_address_register(cfg)

        def at_read(value, name):
            """``value`` as it is when the memories read the issued beat's address."""
            if not addr_reg:
                return value
            reg = Signal.like(value, name=f"{name}_r0")
            m.d.sync += reg.eq(value)
            return reg

        # the issue's read pointer; wide cores: ``rd_ptr`` (the buffer's read address, and the
        # pointer the input stage compares its write pointer with) is its register copy, so the
        # issue's pointer has no loads across the die
        ptr = Signal.like(self.rd_ptr, name="issue_ptr") if addr_reg else self.rd_ptr
        if addr_reg:
            m.d.sync += self.rd_ptr.eq(ptr)
        m.d.comb += self.buffer.addr.eq(self.rd_ptr[:ptr_bits])
        # γ/β are read when the datapath first needs them (``late_params``): the read address
        # follows ``beat`` through a delay line (a few address bits, not P lanes of γ/β data)
        late_params = cfg.affine_stage and not cfg.exact_resolution
        # (wide cores: read a cycle earlier, and the data registered once more in the fabric: the
        # γ/β block RAMs lie across the die from some of the lanes they feed; at P = 32 a block's
        # output register → a lane's γ partial-product adder was the critical path, 5.6 ns of
        # routing)
        params_reg = late_params and cfg.lanes >= SLICE_LANES
        if cfg.affine:
            params_addr = at_read(beat, "params_addr")
            if late_params:
                for step in range(ElementDatapath.params_delay(cfg) - int(params_reg)):
                    delayed_addr = Signal.like(beat, name=f"params_addr_d{step}", reset_less=True)
                    m.d.sync += delayed_addr.eq(params_addr)
                    params_addr = delayed_addr
            m.d.comb += [self.params.addr.eq(params_addr), self.params.en.eq(1)]
        with m.If(coefs.valid & coefs.ready):
            m.d.sync += cur.eq(incoming)
        with m.If(issue):
            with m.If(~head.overlong):
                m.d.sync += ptr.eq(next_ptr(ptr, buffer_depth(cfg)))
            with m.If(~active):                  # the first beat of ``incoming`` issues now
                m.d.sync += [active.eq(~incoming_last), beat.eq(~incoming_last), left.eq(incoming_left),
                             cur_last.eq(incoming_two), left_two.eq(incoming_three)]
            with m.Elif(~cur_last):
                m.d.sync += [beat.eq(beat + 1), left.eq(left - 1), cur_last.eq(left_two),
                             left_two.eq(left == 3)]
            with m.Elif(coefs.valid):        # taken with the last beat: issues from next cycle
                m.d.sync += [active.eq(1), beat.eq(0), left.eq(incoming.beats),
                             cur_last.eq(incoming_last), left_two.eq(incoming_two)]
            with m.Else():
                m.d.sync += [active.eq(0), beat.eq(0)]

        # S1: memory data out; S1b: memory data registered (block RAM outputs are slow).
        # The vector constants and flags ride along.
        # The constants A and B reach the lanes as ``coef_copies`` copies made in these two
        # stages (:func:`register_copies`), so no register drives every lane's multipliers.
        s1_valid, s1_last, s1_err = Signal(), Signal(), Signal()
        s1b_valid, s1b_last, s1b_err = Signal(), Signal(), Signal()
        s1b_x = Signal.like(self.buffer.data, reset_less=True)
        read = at_read(issue, "issue")
        read_last = at_read(issue_last, "issue_last")
        m.d.sync += [s1_valid.eq(read), s1_last.eq(read_last), s1_err.eq(at_read(head.overlong, "issue_err")),
                     s1b_valid.eq(s1_valid), s1b_last.eq(s1_last), s1b_err.eq(s1_err)]
        # (a deep buffer, :class:`~normgen.hw.edge.BankedMemory`, has that register in front of
        # its banks' multiplexer: its data are S1b's)
        if banked(buffer_depth(cfg)):
            m.d.comb += s1b_x.eq(self.buffer.data)
        else:
            m.d.sync += s1b_x.eq(self.buffer.data)
        copies = coef_copies(cfg)
        s1_copies = (copies + 1) // 2
        if sliced:
            # the constants of the beat at S1: the head of each constants' FIFO, taken from it
            # when the vector's last beat is at S1
            s1_pop = Signal()
            m.d.sync += s1_pop.eq(read & read_last)
            s1_consts = []
            for k, const_fifo in enumerate(const_fifos):
                m.d.comb += const_fifo.r_en.eq(s1_pop)
                head_k = Signal(const_layout, name=f"s1_consts_{k}")
                m.d.comb += head_k.eq(const_fifo.r_data)
                s1_consts.append(head_k)
            s1_a = [c.a for c in s1_consts]
            s1_b = [c.b for c in s1_consts]
        else:
            s1_a = register_copies(m, [head.a], s1_copies, "s1_a")
            s1_b = register_copies(m, [head.b], s1_copies, "s1_b")
        s1b_a = register_copies(m, s1_a, copies, "s1b_a")
        s1b_b = register_copies(m, s1_b, copies, "s1b_b")
        if cfg.exact_resolution:            # the vector's N, S1', D ride along for exact decisions
            if sliced:
                s1_stats = Cat(s1_consts[0].n, s1_consts[0].s1, s1_consts[0].d)
            else:
                s1_stats = Signal(len(head.n) + len(head.s1) + len(head.d))
                m.d.sync += s1_stats.eq(Cat(head.n, head.s1, head.d))
            s1b_stats = Signal(len(s1_stats))
            m.d.sync += s1b_stats.eq(s1_stats)
        if cfg.affine:
            s1b_par = Signal.like(self.params.data, reset_less=True)
            if banked(cfg.beats_max):        # (as the buffer's: the register is the banks')
                m.d.comb += s1b_par.eq(self.params.data)
            else:
                m.d.sync += s1b_par.eq(self.params.data)

        m.submodules.datapath = datapath = ElementDatapath(cfg, shared_coefs=True, stalls=False, copies=copies,
                                                           late_params=late_params)
        m.d.comb += [
            datapath.i.valid.eq(s1b_valid),
            datapath.i.payload.x.eq(s1b_x),
            datapath.i.payload.a.eq(Cat(*s1b_a)),
            datapath.i.payload.b.eq(Cat(*s1b_b)),
            datapath.i.payload.last.eq(s1b_last),
            datapath.i.payload.error.eq(s1b_err),
        ]
        if params_reg:
            par_r = Signal.like(s1b_par, name="par_r", reset_less=True)
            m.d.sync += par_r.eq(s1b_par)
            m.d.comb += datapath.par.eq(par_r)
        elif late_params:
            m.d.comb += datapath.par.eq(s1b_par)
        elif cfg.affine:
            m.d.comb += datapath.i.payload.par.eq(s1b_par)
        if cfg.exact_resolution:
            m.d.comb += Cat(datapath.i.payload.n, datapath.i.payload.s1, datapath.i.payload.d).eq(s1b_stats)
            m.submodules.fixup = fixup = NearestEvenFixup(cfg, shared_stats=True)
            through_fifo(m, datapath.o, out_fifo, fixup.i, bypass=output_bypass(cfg))
            wiring.connect(m, fixup.o, wiring.flipped(self.o))
            fixup_busy = fixup.busy
        else:
            through_fifo(m, datapath.o, out_fifo, wiring.flipped(self.o), bypass=output_bypass(cfg))
            fixup_busy = C(0)
        returned = Signal()                     # a credit back: a beat left the output FIFO
        if credit_lag(cfg):
            m.d.sync += returned.eq(self.o.valid & self.o.ready)
        else:
            m.d.comb += returned.eq(self.o.valid & self.o.ready)
        in_flight_next = Signal.like(in_flight)
        if credit_lag(cfg):
            # the count takes each issue a cycle late (``issue_d``), and ``advance`` counts this
            # cycle's issue as if it happened: no loop issue → count → advance (at P = 32 it was
            # the critical path once the constants' FIFO was split, 5.8 ns of routing); the
            # FIFO's depth still keeps the issue at full rate (the tests measure it)
            issue_d = Signal()
            m.d.sync += issue_d.eq(issue)
            m.d.comb += in_flight_next.eq(in_flight + issue_d - returned)
            # advance = in_flight_next < depth - 1, as the count's three comparisons with
            # constants chosen by the count's change: no carry chain after the count's adder (at
            # P = 32 adder → comparison was the critical path, 2.8 ns of logic)
            limit = out_fifo.depth - 1
            m.d.sync += [
                in_flight.eq(in_flight_next),
                advance.eq(Mux(issue_d & ~returned, in_flight < limit - 1,
                               Mux(returned & ~issue_d, in_flight < limit + 1, in_flight < limit))),
            ]
        else:
            m.d.comb += in_flight_next.eq(in_flight + issue - returned)
            m.d.sync += [in_flight.eq(in_flight_next), advance.eq(in_flight_next < out_fifo.depth)]
        held = coefs.valid if coef_slice(cfg) else C(0)       # constants waiting in their FIFO
        reading = read if addr_reg else C(0)                   # an issued beat before S1
        m.d.comb += self.busy.eq(active | held | reading | s1_valid | s1b_valid | datapath.busy
                                 | (out_fifo.r_level != 0) | fixup_busy)
        return m

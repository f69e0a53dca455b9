"""Input stage: accepts vectors beat by beat, stores them in the vector buffer and accumulates the
exact statistics ``S1 = sum(x)`` and ``S2 = sum(x*x)``.

The vector buffer is one circular memory of :func:`buffer_depth` beats (a vector of N_max plus
the beats that arrive while a vector's statistics and scalars are computed), so the next vectors
stream in while earlier ones stream out.  A vector is committed at its ``last``
beat; a vector longer than ``N_max`` is rolled back (write pointer back to its start), its beats
are dropped up to its ``last``, and a descriptor with ``overlong = 1`` takes its place.

Datapath (P lanes of ``W_in`` bits), every stage registered; the stages never stall::

    i.payload.data --B--> x_k --+--W--> buffer write (P*W_in) at wr_addr; framing decisions at B
                                +--R--> x_k, x_k**2 (one multiplier per lane, product registered)
                                     --T_1..T_k--> sum over lanes: a pipelined adder tree, one
                                                   adder level between registers
                                     --ACC--> S1 += sum x, S2 += sum x**2 [and e*N*N beside
                                              them, parallel scalar stage]; at a vector's last
                                              beat the stats register takes S1, S2, N[, e*N*N]
                                     --> statistics FIFO --> stats

The statistics FIFO is what absorbs a busy scalar stage: a beat is taken only when the vectors
whose last beat was taken and whose statistics have not left the FIFO are fewer than its depth
(a registered flag), so every vector's statistics find a place and no stage has to
wait.  Only the input's ``ready`` looks at the FIFO; no enable fans out to the lanes.

Between two registers there is at most one multiplier or one adder of at most
``2*W_in + log2(P)`` bits (the products come from the multipliers' own registers, which sit apart
from the logic: one adder is what the route from them leaves room for), and the accumulators'
one carry chain.

Members
-------
i : In(stream.Signature(input_layout(cfg)))
    The core's input stream (:mod:`normgen.hw.interface`).
hold : In(1)
    Take no beat that would start a new vector (a parameter write is waiting).
stats : Out(stream.Signature(vector_stats_layout(cfg)))
buffer : In(memory.WritePort.Signature(...))
    Drives the vector buffer's write port.
rd_ptr : In(ptr_bits + 1)
    The output stage's read pointer (the address, and a wrap bit above it: :func:`next_ptr`),
    to know the free space.
in_packet : Out(1)
    A vector has started on ``i`` and its ``last`` beat has not been taken yet.
busy : Out(1)
    A beat is inside this stage or a vector is partly received.
overlong : Out(1)
    Sticky: a vector longer than N_max was seen.
"""
from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import SLICE_LANES, CoreConfig
from .interface import input_layout
from .scalars import count_multiplier, vector_stats_layout
from .streams import BlockFIFO, CreditFIFO, through_fifo

__all__ = ["Ingest", "buffer_depth", "read_delay", "stats_slice", "stats_bypass", "lane_values", "next_ptr", "STATS_FIFO_DEPTH"]

#: Vectors whose statistics can wait for the scalar stage, beyond those still in the pipeline.
STATS_FIFO_DEPTH = 4


def stats_slice(cfg: CoreConfig) -> bool:
    """Whether the statistics pass one more register on their way into the statistics FIFO.

    From ``SLICE_LANES`` lanes on, the accumulators (at the root of the lane-sum tree) and the
    FIFO (beside the scalar stage that reads it) sit far apart on the die, and the FIFO's level
    logic, which takes the write enable, was the longest path (at P = 32: level → write enable's
    LUT beside the accumulators → level, 6.3 ns of routing).  The register puts the write enable
    next to the FIFO, for one cycle of latency.  The lanes' products pass a second register too
    (one more cycle), between the multiplier blocks and the lane-sum tree."""
    return cfg.lanes >= SLICE_LANES


def stats_bypass(cfg: CoreConfig) -> bool:
    """Whether the statistics pass the statistics FIFO when it is empty and the scalar stage takes
    them at once (one cycle less latency): with the FIFO read asynchronously and beside the
    accumulators, that is below ``SLICE_LANES`` lanes and without block-RAM FIFOs."""
    return not stats_slice(cfg) and not cfg.fifos_in_block_ram


def stats_credit_lag(cfg: CoreConfig) -> bool:
    """Whether a vector read from the statistics FIFO returns its credit to the input stage's
    count a cycle late, through a register (the FIFO is a word deeper): with the FIFO read
    asynchronously (not in block RAM).  The FIFO's level → the scalar stage's handshake (→ the
    passing statistics' valid) then ends at a register, not at the count's adder beside the input
    stage (the critical path at P = 32 and, with the FIFO passed by, at P = 1: 4.8–5 ns of
    routing)."""
    return not cfg.fifos_in_block_ram


def read_delay(cfg: CoreConfig) -> int:
    """Cycles from the transfer of a vector's last beat to the read of its first beat from the
    vector buffer (when the output stage is free): the core's latency without the output stage's
    (the read issues in the cycle the vector's constants reach the output stage's issue logic)."""
    from .output import read_to_output
    from .vectornorm import NormCore
    return NormCore.latency_of(cfg) - read_to_output(cfg)


def buffer_depth(cfg: CoreConfig) -> int:
    """Vector buffer depth in beats: ``beats_max + read_delay(cfg) + 2`` (+ 1 from ``SLICE_LANES``
    lanes on, where the input stage sees the read pointer through the read address register,
    :func:`~normgen.hw.output.read_address_register`: a cycle later).

    A beat stays in the buffer from its write until the output stage reads it.  With vectors of
    N_max back to back at one beat per cycle, a vector's first beat is read ``read_delay`` cycles
    after its last beat came in, and by then the input has moved on by as many beats: the buffer
    holds ``beats_max + read_delay`` beats, and two more because the input stage decides from a
    free-space flag computed from the pointers two cycles earlier (as if a beat had been taken in
    each of those cycles).  With less room the input stalls (N = 768, P = 32,
    ``vector_interval = 4``: 78 % of P with 64 beats).  When the scalar stage takes vectors more
    slowly than the input brings them (``beats_max`` below its interval, which is at most
    ``read_delay``), it sets the rate, and the depth still holds the two vectors it overlaps.  The depth need not be a power of two:
    the pointers wrap explicitly (:func:`next_ptr`), so N_max = 65536 costs 65536 + a few dozen
    words, not 131072."""
    from .output import read_address_register
    return cfg.beats_max + read_delay(cfg) + 2 + int(read_address_register(cfg))


def next_ptr(ptr, depth: int):
    """A buffer pointer moved on by one: the address (low bits) wraps from ``depth - 1`` to 0 and
    then the wrap bit (the top bit) flips."""
    bits = len(ptr) - 1
    addr, wrap = ptr[:bits], ptr[bits]
    return Mux(addr == depth - 1, Cat(C(0, bits), ~wrap), Cat((addr + 1)[:bits], wrap))


def lane_values(value, lanes: int, width: int):
    """The ``lanes`` signed lanes of a packed word, lane k at bits [k*width, (k+1)*width)."""
    return [value[k * width:(k + 1) * width].as_signed() for k in range(lanes)]


class Ingest(wiring.Component):
    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        self._depth = buffer_depth(cfg)
        ptr_bits = (self._depth - 1).bit_length()
        super().__init__({
            "i": In(stream.Signature(input_layout(cfg))),
            "hold": In(1),
            "stats": Out(stream.Signature(vector_stats_layout(cfg))),
            "buffer": In(memory.WritePort.Signature(addr_width=ptr_bits,
                                                    shape=unsigned(cfg.lanes * cfg.in_format.width))),
            "rd_ptr": In(ptr_bits + 1),
            "in_packet": Out(1),
            "busy": Out(1),
            "overlong": Out(1),
        })

    @property
    def depth(self) -> int:
        return self._depth

    #: Adder-tree levels between two registers.
    TREE_LEVELS_PER_STAGE = 1

    @classmethod
    def tree_stages(cls, lanes: int) -> int:
        """Registers the lane-sum tree needs for ``lanes`` lanes."""
        levels = (lanes - 1).bit_length()
        return -(-levels // cls.TREE_LEVELS_PER_STAGE)

    @classmethod
    def latency_of(cls, cfg: CoreConfig) -> int:
        """Cycles from the transfer of a vector's last beat to ``stats.valid``: the beat register
        B, the product register R[, its copy (:func:`stats_slice`)], the tree's registers, the
        stats register[, its copy beside the FIFO (:func:`stats_slice`)], the FIFO[, its read
        register (:attr:`~CoreConfig.fifos_in_block_ram`)] (none when the FIFO is empty and the
        scalar stage takes them at once, :func:`stats_bypass`)."""
        return cls._stages(cfg) - int(stats_bypass(cfg))

    @classmethod
    def _stages(cls, cfg: CoreConfig) -> int:
        """The statistics' registers from the beat register to the FIFO's output, FIFO included."""
        return (1 + 1 + int(stats_slice(cfg)) + cls.tree_stages(cfg.lanes) + 1 + int(stats_slice(cfg)) + 1
                + int(cfg.fifos_in_block_ram))

    @classmethod
    def stats_depth(cls, cfg: CoreConfig) -> int:
        """Depth of the statistics FIFO: ``STATS_FIFO_DEPTH`` vectors, plus one per register
        stage a vector's statistics pass before the FIFO (they hold a credit meanwhile), plus the
        ones the credit check's two cycles of delay keep free[, plus the one whose credit is on
        its way back (:func:`stats_credit_lag`)]."""
        return STATS_FIFO_DEPTH + cls._stages(cfg) + 1 + int(stats_credit_lag(cfg))

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        ptr_bits = self.buffer.addr.shape().width
        lanes, width = cfg.lanes, cfg.in_format.width

        # B stage: the registered beat
        b_valid = Signal()
        b_data = Signal(lanes * width, reset_less=True)
        b_last = Signal()

        count = Signal(range(cfg.beats_max + 1))
        wr_ptr = Signal(ptr_bits + 1)
        vec_start = Signal(ptr_bits + 1)
        dropping = Signal()

        stats_valid = Signal()
        stats = Signal.like(self.stats.payload)
        # from SLICE_LANES lanes on the FIFO takes writes ungated (CreditFIFO): ``pending`` below
        # keeps room for every vector whose statistics are on their way
        fifo_class = (BlockFIFO if cfg.fifos_in_block_ram
                      else CreditFIFO if stats_slice(cfg) else fifo.SyncFIFO)
        m.submodules.stats_fifo = stats_fifo = fifo_class(width=len(stats.as_value()),
                                                          depth=self.stats_depth(cfg))
        if stats_slice(cfg):
            fifo_valid = Signal()
            fifo_stats = Signal.like(stats, reset_less=True)
            m.d.sync += [fifo_valid.eq(stats_valid), fifo_stats.eq(stats)]
        else:
            fifo_valid, fifo_stats = stats_valid, stats
        # (the producer is never held: ``pending`` below keeps room for its statistics)
        produced = stream.Signature(vector_stats_layout(cfg)).create()
        m.d.comb += [produced.valid.eq(fifo_valid), produced.payload.eq(fifo_stats)]
        through_fifo(m, produced, stats_fifo, wiring.flipped(self.stats), bypass=stats_bypass(cfg))

        overlong_now = Signal()
        at_max = Signal()                   # count == beats_max, kept with the count
        m.d.comb += overlong_now.eq(~dropping & at_max)
        # W stage: the buffer's write port takes registered address, data and enable, so the
        # control flags and pointers above do not drive every block RAM of a P-wide buffer.  Every
        # taken beat is written, a dropped or rejected one too: it goes to the slot at the write
        # pointer, which the free-space check kept free for it and which the pointer then does
        # not claim.  A beat is read tens of cycles after its write (the scalar stage lies between).
        w_en = Signal()
        w_addr = Signal(ptr_bits, reset_less=True)
        w_data = Signal.like(b_data, reset_less=True)
        m.d.sync += [w_en.eq(b_valid), w_addr.eq(wr_ptr[:ptr_bits]), w_data.eq(b_data)]
        m.d.comb += [
            self.buffer.addr.eq(w_addr),
            self.buffer.data.eq(w_data),
            self.buffer.en.eq(w_en),
        ]

        # The token each beat sends down the reduction pipeline: add its sums to the
        # accumulators, or (on a vector's last beat) push the statistics of the vector.
        token_layout = data.StructLayout({"add": 1, "push": 1, "overlong": 1, "beats": count.shape()})
        token = Signal(token_layout)
        m.d.comb += [
            token.add.eq(b_valid & ~dropping & ~overlong_now),
            token.push.eq(b_valid & b_last),
            token.overlong.eq(dropping | overlong_now),
            token.beats.eq(count + 1),
        ]
        with m.If(b_valid):
            with m.If(dropping):
                with m.If(b_last):
                    m.d.sync += dropping.eq(0)
            with m.Elif(overlong_now):
                m.d.sync += [wr_ptr.eq(vec_start), count.eq(0), at_max.eq(0), self.overlong.eq(1)]
                with m.If(~b_last):
                    m.d.sync += dropping.eq(1)
            with m.Else():
                wr_next = next_ptr(wr_ptr, self._depth)
                m.d.sync += wr_ptr.eq(wr_next)
                with m.If(b_last):
                    m.d.sync += [count.eq(0), at_max.eq(0), vec_start.eq(wr_next)]
                with m.Else():
                    m.d.sync += [count.eq(count + 1), at_max.eq(count == cfg.beats_max - 1)]

        # R stage: each lane's value and square, registered (a multiplier's output register).
        xs = lane_values(b_data, lanes, width)
        r_x = [Signal(signed(width), name=f"r_x{k}", reset_less=True) for k in range(lanes)]
        r_sq = [Signal(2 * width - 1, name=f"r_sq{k}", reset_less=True) for k in range(lanes)]
        r_token = Signal(token_layout)
        m.d.sync += [r.eq(x) for r, x in zip(r_x, xs)]
        m.d.sync += [r.eq(x * x) for r, x in zip(r_sq, xs)]
        m.d.sync += r_token.eq(token)
        tokens = [r_token]                  # every token register counts for ``busy``
        if stats_slice(cfg):
            # from SLICE_LANES lanes on, a second register behind each lane's square (the first
            # is the multiplier block's own): the blocks sit in rows apart from the adder tree
            # (at P = 32 the square's block → the tree's first register was the critical path,
            # 5.0 ns of routing)
            r_x2 = [Signal.like(v, name=f"r2_x{k}") for k, v in enumerate(r_x)]
            r_sq2 = [Signal.like(v, name=f"r2_sq{k}") for k, v in enumerate(r_sq)]
            r_token2 = Signal(token_layout)
            m.d.sync += [a.eq(b) for a, b in zip(r_x2 + r_sq2, r_x + r_sq)]
            m.d.sync += r_token2.eq(r_token)
            r_x, r_sq, r_token = r_x2, r_sq2, r_token2
            tokens.append(r_token2)

        # T stages: the lane sums, one adder level per register.
        sums, squares, tree_token = r_x, r_sq, r_token
        for stage in range(self.tree_stages(lanes)):
            for _ in range(self.TREE_LEVELS_PER_STAGE):
                sums = [a + b for a, b in zip(sums[0::2], sums[1::2])] + sums[len(sums) & ~1:]
                squares = [a + b for a, b in zip(squares[0::2], squares[1::2])] + squares[len(squares) & ~1:]
            next_sums = [Signal.like(v, name=f"t{stage}_sum{k}") for k, v in enumerate(sums)]
            next_squares = [Signal.like(v, name=f"t{stage}_sq{k}") for k, v in enumerate(squares)]
            next_token = Signal(token_layout, name=f"t{stage}_token")
            m.d.sync += [r.eq(v) for r, v in zip(next_sums, sums)]
            m.d.sync += [r.eq(v) for r, v in zip(next_squares, squares)]
            m.d.sync += next_token.eq(tree_token)
            sums, squares, tree_token = next_sums, next_squares, next_token
            tokens.append(next_token)
        assert len(sums) == 1 and len(squares) == 1
        beat_sum, beat_sq = sums[0], squares[0]

        # ACC stage: accumulate, or hand the vector's statistics to the stats register.  For the
        # parallel scalar stage e*N*N too, beside them: with b the beats so far, q = e*P*P*b*b and
        # w = e*P*P*(2b + 1) (q's step to the next beat), each a register and one adder.
        acc_s1 = Signal(signed(cfg.s1_width))
        acc_s2 = Signal(cfg.s2_width)
        m.d.sync += stats_valid.eq(tree_token.push)
        with_e = "e_n2" in vector_stats_layout(cfg).members and len(stats.e_n2) > 0
        if with_e:
            unit = cfg.eps_int * count_multiplier(cfg) ** 2
            e_q = Signal.like(stats.e_n2, name="e_q")
            e_w = Signal.like(stats.e_n2, name="e_w", init=unit)
        with m.If(tree_token.push):
            m.d.sync += [
                stats.s1.eq(acc_s1 + beat_sum),
                stats.s2.eq(acc_s2 + beat_sq),
                stats.beats.eq(tree_token.beats),
                stats.overlong.eq(tree_token.overlong),
                acc_s1.eq(0), acc_s2.eq(0),
            ]
            if with_e:
                m.d.sync += [stats.e_n2.eq(e_q + e_w), e_q.eq(0), e_w.eq(unit)]
        with m.Elif(tree_token.add):
            m.d.sync += [acc_s1.eq(acc_s1 + beat_sum), acc_s2.eq(acc_s2 + beat_sq)]
            if with_e:
                m.d.sync += [e_q.eq(e_q + e_w), e_w.eq(e_w + 2 * unit)]

        # Credits: vectors whose last beat reached the B stage and whose statistics have not left
        # the FIFO.  The count takes a last beat from the B register (not from the input
        # handshake, whose ``ready`` fans out to the beat register), and ``stats_room`` comes from
        # the count one cycle earlier, so it asks for room for three: the vector being taken and the
        # two taken in the two cycles before, which that count does not hold yet.
        # A vector read returns its credit through a register (:func:`stats_credit_lag`; one
        # cycle late, so the count only ever overstates).
        pending = Signal(range(stats_fifo.depth + 1))
        stats_room = Signal(init=1)
        stats_read = self.stats.valid & self.stats.ready
        if stats_credit_lag(cfg):
            credit = Signal()
            m.d.sync += credit.eq(stats_read)
        else:
            credit = stats_read
        m.d.sync += [
            pending.eq(pending + (b_valid & b_last) - credit),
            stats_room.eq(pending <= stats_fifo.depth - 3),
        ]

        # A side: take a beat when the B stage moves on and the buffer has room for both beats.
        # ``space`` comes from the pointers two cycles earlier, through two registers: the
        # pointers' difference (one carry chain), then comparisons with constants.  In two cycles
        # at most two beats can have been taken; a read only frees room and a rollback only removes
        # beats, so asking for room for two more than the beats held then never promises too much.
        diff = Signal(signed(ptr_bits + 2))         # write address - read address
        differ = Signal()                           # the pointers' wrap bits differ
        held_b = Signal()                           # a beat was in B
        space = Signal(init=1)
        depth = self._depth
        m.d.sync += [
            diff.eq(wr_ptr[:ptr_bits] - self.rd_ptr[:ptr_bits]),
            differ.eq(wr_ptr[ptr_bits] ^ self.rd_ptr[ptr_bits]),
            held_b.eq(b_valid),
        ]

        def room(limit):                            # occupancy (diff, + depth if differ) < limit
            return Mux(differ, diff < limit - depth, diff < limit)

        m.d.sync += space.eq(Mux(held_b, room(depth - 3), room(depth - 2)))
        m.d.comb += [
            self.i.ready.eq(stats_room & space & ~(self.hold & ~self.in_packet)),
            self.busy.eq(Cat(b_valid, self.in_packet, stats_valid, *([fifo_valid] if stats_slice(cfg) else []), stats_fifo.r_level != 0,
                             *[token.add | token.push for token in tokens]).any()),
        ]
        # the beat register loads every cycle (read only with b_valid): ``ready`` then drives a
        # few flags, not an enable for every lane's bits
        m.d.sync += b_data.eq(self.i.payload.data)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                b_valid.eq(1),
                b_last.eq(self.i.payload.last),
                self.in_packet.eq(~self.i.payload.last),
            ]
        with m.Else():
            m.d.sync += b_valid.eq(0)
        return m

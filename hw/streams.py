"""Small stream plumbing shared by the gateware."""
from amaranth.hdl import Array, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import fifo, memory

from .edge import NO_COLLISION

__all__ = ["through_fifo", "SlicedFIFO", "CreditFIFO", "ReadyRegFIFO", "BlockFIFO"]


def through_fifo(m, producer, fifo, consumer, *, bypass: bool = False):
    """Connect ``producer`` (a stream interface) to ``consumer`` through an Amaranth FIFO whose
    width is the payload's: structured payloads travel as their bits.

    With ``bypass`` a payload passes the FIFO when the FIFO is empty and the consumer takes it at
    once (the FIFO's latency is then none); otherwise, or behind older payloads, it is written, so
    the order holds.  For FIFOs whose ``r_rdy`` is their level (not a read register's)."""
    m.d.comb += [fifo.w_data.eq(Value.cast(producer.payload)), fifo.r_en.eq(consumer.ready)]
    if not bypass:
        m.d.comb += [
            fifo.w_en.eq(producer.valid),
            producer.ready.eq(fifo.w_rdy),
            consumer.payload.eq(fifo.r_data),
            consumer.valid.eq(fifo.r_rdy),
        ]
        return
    passing = ~fifo.r_rdy & consumer.ready          # an empty FIFO, and the consumer takes
    m.d.comb += [
        fifo.w_en.eq(producer.valid & ~passing),
        producer.ready.eq(fifo.w_rdy | passing),
        consumer.payload.eq(Mux(fifo.r_rdy, fifo.r_data, Value.cast(producer.payload))),
        consumer.valid.eq(fifo.r_rdy | producer.valid),
    ]


class BlockFIFO(fifo.SyncFIFOBuffered):
    """:class:`~amaranth.lib.fifo.SyncFIFOBuffered` (storage in block RAM, read data registered)
    with its storage marked :data:`~normgen.hw.edge.NO_COLLISION`.

    Its read port never reads the word being written: it reads only while the storage holds a
    word, at ``consume``, and writes go to ``produce``, which equals ``consume`` only when the
    storage is empty or full (and a full one takes no write).  Without the mark, synthesis adds
    logic that would return the old word on such a collision (on an iCE40: a register for every
    bit written and a multiplexer for every bit read: some 170 logic cells for an 80-bit FIFO)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.depth > 1:              # (depth 1 is a register, depth 0 nothing)
            storage = m.submodules.storage
            assert isinstance(storage, memory.Memory), storage
            storage.attrs.update(NO_COLLISION)
        return m


class SlicedFIFO(fifo.FIFOInterface, Elaboratable):
    """A wide synchronous FIFO built of ``slices`` narrower ones side by side, each holding a
    contiguous part of the word and keeping its own pointers and level.

    All slices see the same ``w_en`` and ``r_en``, so they move in lockstep; ``w_rdy``, ``r_rdy``
    and ``r_level`` are the first slice's.  What this buys is locality: one FIFO hundreds of bits
    wide has its storage spread over a large area, and its level logic (level → ``w_rdy`` → write
    enable → level) then reaches across it; each slice's level logic sits beside its own storage.
    The interface is :class:`~amaranth.lib.fifo.FIFOInterface`, as :class:`~amaranth.lib.fifo.SyncFIFO`'s (``fifo_class`` may be
    :class:`~amaranth.lib.fifo.SyncFIFOBuffered`)."""

    def __init__(self, *, width: int, depth: int, slices: int = 1, fifo_class=fifo.SyncFIFO):
        if not 1 <= slices <= width:
            raise ValueError(f"slices must be 1..{width} (the width), not {slices}")
        super().__init__(width=width, depth=depth)
        self.slices, self._fifo_class = slices, fifo_class

    def bounds(self) -> list[tuple[int, int]]:
        """Each slice's (start, stop) bit positions in the word: near-equal parts."""
        cuts = [self.width * k // self.slices for k in range(self.slices + 1)]
        return list(zip(cuts, cuts[1:]))

    def elaborate(self, platform):
        m = Module()
        parts = []
        for k, (lo, hi) in enumerate(self.bounds()):
            part = self._fifo_class(width=hi - lo, depth=self.depth)
            m.submodules[f"slice{k}"] = part
            m.d.comb += [part.w_data.eq(self.w_data[lo:hi]), part.w_en.eq(self.w_en),
                         self.r_data[lo:hi].eq(part.r_data), part.r_en.eq(self.r_en)]
            parts.append(part)
        m.d.comb += [self.w_rdy.eq(parts[0].w_rdy), self.r_rdy.eq(parts[0].r_rdy),
                     self.w_level.eq(parts[0].w_level), self.r_level.eq(parts[0].r_level)]
        return m


class _QueueFIFO(fifo.FIFOInterface, Elaboratable):
    """A synchronous FIFO of at least one word (the FIFOs below)."""

    def __init__(self, *, width: int, depth: int):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        super().__init__(width=width, depth=depth)


class CreditFIFO(_QueueFIFO):
    """:class:`~amaranth.lib.fifo.SyncFIFO`'s interface and timing (read asynchronously, readable
    the cycle after the write) for a producer that counts the room itself (credits): ``w_en`` is
    not gated by the level, it is the memory's write enable as it comes.

    A FIFO that gates its writes closes a loop level → ``w_rdy`` → write enable → level through
    the write enable, which reaches every memory cell; in a wide FIFO that enable's logic sits
    among the memory, far from the level register.  Here the level only counts.  ``w_rdy`` (level
    below the depth) is for the producer's own checks: a write while full overwrites the oldest
    entry, so the producer's credits must never allow one.

    With ``in_registers`` the words are flip-flops (written at ``produce``, read through a
    multiplexer at ``consume``) rather than a memory that synthesis maps to distributed RAM: for
    a few words the read is the same multiplexer, and flip-flops may sit in any slice, beside
    whatever the FIFO feeds.

    ``r_rdy`` is a register of its own (set by a write, cleared by the read of the last word), so
    the consumer's handshake → the read → ``r_rdy`` loop holds no comparison of the level: at
    P = 32 the statistics FIFO's level → ``level != 0`` → the scalar stage's ``ready`` → the level's
    adder was the critical path."""

    def __init__(self, *, width: int, depth: int, in_registers: bool = False):
        super().__init__(width=width, depth=depth)
        self._in_registers = in_registers

    def elaborate(self, platform):
        m = Module()
        produce = Signal(range(self.depth))
        consume = Signal(range(self.depth))
        level = Signal(range(self.depth + 1))
        do_read = Signal()

        def successor(ptr):
            return Mux(ptr == self.depth - 1, 0, ptr + 1)

        if self._in_registers:
            words = Array(Signal(self.width, name=f"word{k}", reset_less=True) for k in range(self.depth))
            with m.If(self.w_en):
                m.d.sync += words[produce].eq(self.w_data)
            m.d.comb += self.r_data.eq(words[consume])
        else:
            m.submodules.storage = storage = memory.Memory(shape=self.width, depth=self.depth, init=[])
            w_port = storage.write_port()
            r_port = storage.read_port(domain="comb")
            m.d.comb += [
                w_port.addr.eq(produce), w_port.data.eq(self.w_data), w_port.en.eq(self.w_en),
                r_port.addr.eq(consume), self.r_data.eq(r_port.data),
            ]
        nonempty = Signal()                     # level != 0, a register of its own
        m.d.comb += [
            self.r_rdy.eq(nonempty), self.w_rdy.eq(level != self.depth), self.w_level.eq(level), self.r_level.eq(level),
            do_read.eq(self.r_en & nonempty),
        ]
        with m.If(self.w_en):
            m.d.sync += produce.eq(successor(produce))
        with m.If(do_read):
            m.d.sync += consume.eq(successor(consume))
        m.d.sync += [level.eq(level + self.w_en - do_read),
                     nonempty.eq(self.w_en | Mux(do_read, level >= 2, nonempty))]
        return m


class ReadyRegFIFO(_QueueFIFO):
    """:class:`~amaranth.lib.fifo.SyncFIFO`'s interface and behaviour, cycle for cycle, with
    ``w_rdy`` a register of its own (computed from the level the cycle ahead), ``r_rdy`` one too
    (set by a write, cleared by the read of the last word) and ``r_data`` a register too: the
    words are flip-flops that shift towards the head on every read, so the head is always
    ``word0`` (a write lands at the first free place after the read's shift).

    When producer and FIFO sit far apart on the die, a ``w_rdy`` decoded from the level makes a
    round trip in one cycle: level → the producer's handshake logic → back as the write enable →
    level.  Here the producer sees a flip-flop, and the FIFO its ``valid``: one crossing each way,
    in separate cycles.  The consumer sees flip-flops as well, not a read pointer → storage →
    multiplexer (at P = 32 the constants FIFO's read pointer → its storage → the issue logic's
    read-pointer enable was the critical path, 5.7 ns of routing).  For a few words: each word
    has a multiplexer in front of it."""

    def elaborate(self, platform):
        m = Module()
        words = [Signal(self.width, name=f"word{k}", reset_less=True) for k in range(self.depth)]
        level = Signal(range(self.depth + 1))
        ready = Signal(init=1)                  # the level is below the depth
        nonempty = Signal()                     # the level is not 0
        do_write, do_read = Signal(), Signal()
        kept = Signal.like(level)               # words left after this cycle's read
        m.d.comb += [
            do_write.eq(self.w_en & ready),
            do_read.eq(self.r_en & nonempty),
            kept.eq(level - do_read),
            self.r_data.eq(words[0]), self.r_rdy.eq(nonempty), self.w_rdy.eq(ready),
            self.w_level.eq(level), self.r_level.eq(level),
        ]
        for k, word in enumerate(words):
            shifted = words[k + 1] if k + 1 < self.depth else word
            with m.If(do_write & (kept == k)):
                m.d.sync += word.eq(self.w_data)
            with m.Elif(do_read):
                m.d.sync += word.eq(shifted)
        m.d.sync += [level.eq(level + do_write - do_read),
                     ready.eq(level + do_write - do_read < self.depth),
                     nonempty.eq(do_write | Mux(do_read, level >= 2, nonempty))]
        return m

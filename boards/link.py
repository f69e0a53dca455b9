r"""The host link in gateware: UART, frame parser, γ/β staging, core, replier.

Everything of a board image except its PLL and I/O buffers; the full-system simulation runs this
very component (its emitted Verilog) against the host driver.  The protocol is described in
:mod:`normgen.boards.protocol`.

Block diagram::

    rx --> UARTRx --> FIFO --> FrameParser --beats (vectors)---------> NormCore.i --o: results----+
                                 |   |  \--staging memory--params--> ParamStore --^  (params)  |
                                 |   |                    (copy of γ/β, PCRC)--+                |
                                 |   +--job FIFO (cmd, seq, error, vector, beats, PCRC)--> Replier --> UARTTx --> tx
    (:class:`LinkEngine` is everything between the two UARTs: bytes in, bytes out)

A frame has no effect unless it checks whole (CRC, length, command, addresses, no timeout, no
line error); the verdict is known only at its last byte, so:

- LOAD_PARAMS: the beats go into a staging memory (N_max/P beats, so any legal frame fits) as
  they arrive.  Only after the last CRC byte, and only if the frame checked, are they written to
  the core's γ/β port (:class:`ParamStore` keeps a copy and recomputes the γ/β checksum, PCRC,
  over it); then the job goes to the replier.  A frame that fails anything writes nothing: a
  frame is written whole or not at all, and its OK reply means it has been written.
- NORMALIZE: the vector streams into the core as it arrives (no buffer).  The core keeps no
  state from one vector to the next but γ/β, so a vector changes nothing; the replier holds the
  core's output until the frame's job arrives: OK sends the results, an error drops them and
  sends an error reply.  A NORMALIZE frame cut short by the inter-byte timeout is completed with
  zero elements so the core always sees whole vectors (its output is then dropped).

Every OK reply ends with PCRC, the job's copy of :attr:`ParamStore.crc`: for NORMALIZE, the
checksum of the γ/β its vector was computed with (γ/β change only between frames, after the core
has emptied).  γ/β written at run time survive a reset (the memories keep their contents); after
a reset :class:`ParamStore` recomputes PCRC over its copy, so the checksum stays true.

Members
-------
rx : In(1)
tx : Out(1)
busy : Out(1)
    A frame is being received.
error : Out(1)
    One-cycle pulse for each error reply.
"""

from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from normgen.hw.config import CoreConfig
from normgen.hw.edge import NO_COLLISION, SCRATCH
from normgen.hw.streams import BlockFIFO, through_fifo
from normgen.hw import NormCore
from normgen.hw.output import pack_params
from normgen.hw.sequencer import OneHot

from . import protocol as proto
from .uart import UARTRx, UARTTx, rx_byte_layout

__all__ = ["crc16_update", "params_layout", "ParamStore", "FrameParser", "Replier", "LinkEngine", "NormLink", "job_layout", "RX_FIFO_DEPTH"]

#: bytes the receiver can get ahead of the parser (the parser waits only for the core)
RX_FIFO_DEPTH = 16
JOB_FIFO_DEPTH = 1          # the replier holds the job it works on: two frames in flight
BEAT_FIFO_DEPTH = 2         # vector beats between the frame parser and the core
ERROR_BITS = max(proto.ERROR_NAMES).bit_length()
#: Values of the γ/β staging memory's ``ram_style`` (Yosys): "" lets synthesis choose; "huge" is
#: an iCE40UP's SPRAM (with ``synth_ice40 -spram``).
STAGING_RAM_STYLES = ("", "block", "huge", "distributed")


def _crc16_byte_matrix():
    """For each bit of the next CRC register, the register bits and byte bits it is the XOR of
    (the eight shift steps of one byte, solved over GF(2) once, in Python)."""
    state = [frozenset({("c", i)}) for i in range(16)]
    for k in range(8):
        feedback = state[15] ^ frozenset({("d", 7 - k)})
        shifted = [frozenset()] + state[:15]
        state = [shifted[i] ^ feedback if (0x1021 >> i) & 1 else shifted[i] for i in range(16)]
    return [sorted(bit) for bit in state]


_CRC16_MATRIX = _crc16_byte_matrix()


def crc16_update(crc: Value, byte: Value) -> Value:
    """CRC-16/CCITT-FALSE register after one more byte (most significant bit first): one XOR
    of a few register and byte bits per output bit."""
    crc, byte = Value.cast(crc), Value.cast(byte)
    source = {"c": crc, "d": byte}
    bits = []
    for terms in _CRC16_MATRIX:
        bit = Const(0, 1)
        for kind, index in terms:
            bit = bit ^ source[kind][index]
        bits.append(bit)
    return Cat(*bits)


def job_layout(cfg: CoreConfig) -> data.StructLayout:
    return data.StructLayout({
        "cmd": 8,                                   # the request's command byte
        "seq": 8,
        "error": ERROR_BITS,                        # 0 = OK, else protocol.ERR_*
        "vector": 1,                                # a vector went into the core: drain or send it
        "beats": range(cfg.beats_max + 1),          # its beats
        "params_crc": 16,                           # PCRC for the OK reply
    })


def params_layout(cfg: CoreConfig) -> data.StructLayout:
    """One γ/β write: a beat address and P γ and P β values."""
    w_p = cfg.param_format.width
    return data.StructLayout({"addr": 16, "gamma": cfg.lanes * w_p, "beta": cfg.lanes * w_p})


def _crc16_beat(m: Module, crc: Value, word: Value, cfg: CoreConfig) -> Value:
    """The CRC register after the bytes of one γ/β memory word as LOAD_PARAMS carries them:
    P γ then P β values, each sign-extended to Bp bytes, little-endian.  (Each byte's register
    is a signal of its own: nested XOR expressions would grow exponentially with the bytes.)"""
    w_p = cfg.param_format.width
    b_p = proto.element_bytes(w_p)
    for k in range(2 * cfg.lanes):
        value = _sext(word[k * w_p:(k + 1) * w_p], 8 * b_p)
        for byte in range(b_p):
            step = Signal(16, name=f"crc_after_value{k}_byte{byte}")
            m.d.comb += step.eq(crc16_update(crc, value[8 * byte:8 * byte + 8]))
            crc = step
    return crc


class ParamStore(wiring.Component):
    """The γ/β writes on their way to the core, a copy of what they wrote, and its checksum.

    Writes pass from ``i`` to ``o`` unchanged (``i.ready`` is ``o.ready``) and are copied into a
    memory initialised like the core's γ/β memory.  After a ``rescan`` pulse, and after reset
    (the core's γ/β memory keeps its contents through a reset, so the checksum is recomputed
    rather than reset), ``crc`` is recomputed over the copy, one memory word a cycle, while
    ``busy`` is high: ``crc`` is then :func:`~normgen.boards.protocol.params_crc` of the γ/β the
    core holds.

    Members
    -------
    i : In(stream.Signature(params_layout(cfg)))
    o : Out(stream.Signature(params_layout(cfg)))
    rescan : In(1)
    busy : Out(1)
    crc : Out(16)
    """

    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig) or not cfg.affine:
            raise TypeError(f"cfg must be a CoreConfig of an affine core, not {cfg!r}")
        self._cfg = cfg
        super().__init__({
            "i": In(stream.Signature(params_layout(cfg))),
            "o": Out(stream.Signature(params_layout(cfg))),
            "rescan": In(1),
            "busy": Out(1),
            "crc": Out(16),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        # A read may meet a write to its word only in a scan that a later one replaces: every
        # batch of writes is followed by ``rescan`` (the parser's RESCAN state), so no collision
        # ever reaches ``crc`` and the copy needs no logic for them (NO_COLLISION).
        m.submodules.copy = copy = memory.Memory(
            shape=2 * cfg.lanes * cfg.param_format.width, depth=cfg.beats_max, init=pack_params(cfg),
            attrs=NO_COLLISION)
        wr = copy.write_port()
        rd = copy.read_port(domain="sync")
        m.d.comb += [
            self.o.valid.eq(self.i.valid),
            self.o.payload.eq(self.i.payload),
            self.i.ready.eq(self.o.ready),
            wr.addr.eq(self.i.payload.addr),
            wr.data.eq(Cat(self.i.payload.gamma, self.i.payload.beta)),
            wr.en.eq(self.i.valid & self.o.ready & (self.i.payload.addr < cfg.beats_max)),
        ]

        reading = Signal(init=1)            # (from reset on: a scan first)
        index = Signal(range(cfg.beats_max))
        pending = Signal()                  # rd.data is the word read last cycle
        crc = Signal(16, init=0xFFFF)
        m.d.comb += [rd.addr.eq(index), self.crc.eq(crc),
                     self.busy.eq(self.rescan | reading | pending)]
        m.d.sync += pending.eq(reading & ~self.rescan)
        with m.If(pending):
            m.d.sync += crc.eq(_crc16_beat(m, crc, rd.data, cfg))
        with m.If(self.rescan):
            m.d.sync += [reading.eq(1), index.eq(0), crc.eq(0xFFFF)]
        with m.Elif(reading):
            m.d.sync += index.eq(index + 1)
            with m.If(index == cfg.beats_max - 1):
                m.d.sync += [reading.eq(0), index.eq(0)]
        return m


class FrameParser(wiring.Component):
    """Bytes in; vector beats, parameter beats and one job per frame out.

    Members
    -------
    i : In(stream.Signature(rx_byte_layout))
    beats : Out(stream.Signature(StructLayout({"data": P*W_in, "last": 1})))
    params : Out(stream.Signature(StructLayout({"addr": 16, "gamma": P*W_p, "beta": P*W_p})))
        (affine cores only)
    jobs : Out(stream.Signature(job_layout(cfg)))
    params_crc : In(16)
        The γ/β checksum, copied into each job.
    rescan : Out(1)
        (affine cores only) One-cycle pulse after a LOAD_PARAMS commit: recompute ``params_crc``.
    params_crc_busy : In(1)
        (affine cores only) ``params_crc`` is being recomputed; no job leaves meanwhile.
    busy : Out(1)

    A LOAD_PARAMS payload goes into a staging memory (N_max/P beats) as it arrives; only when
    the frame has checked whole (CRC, length, addresses, no timeout or line error) are the
    staged beats sent on ``params``, then ``rescan`` pulses and the job leaves once
    ``params_crc`` is up to date.  The staging memory has one address for writes and reads (a
    single-port RAM); ``staging_ram_style`` becomes its ``ram_style`` attribute for synthesis
    (``"huge"``: an iCE40UP's SPRAM, with ``synth_ice40 -spram``).
    """

    def __init__(self, cfg: CoreConfig, *, timeout_cycles: int, staging_ram_style: str = ""):
        self._cfg = cfg
        self._timeout = int(timeout_cycles)
        if self._timeout < 2:
            raise ValueError(f"timeout_cycles must be at least 2, not {timeout_cycles!r}")
        if staging_ram_style not in STAGING_RAM_STYLES:
            raise ValueError(f"staging_ram_style must be one of {', '.join(map(repr, STAGING_RAM_STYLES))}, "
                             f"not {staging_ram_style!r}")
        # scratch (each beat committed was written by the same frame): no initial contents, which
        # an SPRAM could not hold
        self._staging_attrs = {SCRATCH: 1, **({"ram_style": staging_ram_style} if staging_ram_style else {})}
        lanes = cfg.lanes
        members = {
            "i": In(stream.Signature(rx_byte_layout)),
            "beats": Out(stream.Signature(data.StructLayout({"data": lanes * cfg.in_format.width, "last": 1}))),
            "jobs": Out(stream.Signature(job_layout(cfg))),
            "params_crc": In(16),
            "busy": Out(1),
        }
        if cfg.affine:
            members["params"] = Out(stream.Signature(params_layout(cfg)))
            members["rescan"] = Out(1)
            members["params_crc_busy"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes = cfg.lanes
        b_in = proto.element_bytes(cfg.in_format.width)
        beat_bytes = lanes * b_in
        max_len = proto.normalize_payload_limit(cfg)
        if cfg.affine:
            b_p = proto.element_bytes(cfg.param_format.width)
            pbeat_bytes = proto.params_beat_bytes(cfg)
            max_plen = min(proto.MAX_PAYLOAD, 2 + cfg.beats_max * pbeat_bytes)
            max_plen -= (max_plen - 2) % pbeat_bytes
        assemble_bytes = max(beat_bytes, pbeat_bytes if cfg.affine else 0)

        # ---- the byte source: the receiver, or zeros while padding a cut vector ----------------
        padding = Signal()
        b_valid = Signal()
        b_data = Signal(8)
        b_err = Signal()
        take = Signal()
        m.d.comb += [
            b_valid.eq(Mux(padding, 1, self.i.valid)),
            b_data.eq(Mux(padding, 0, self.i.payload.data)),
            b_err.eq(~padding & self.i.payload.error),
            self.i.ready.eq(take & ~padding),
        ]

        # ---- frame registers --------------------------------------------------------------------
        cmd = Signal(8)
        seq = Signal(8)
        # LEN, then (from DISPATCH on) the bytes still to come: payload and the two CRC bytes
        remaining = Signal(17)
        crc = Signal(16, init=0xFFFF)
        line_err = Signal()
        error = Signal(ERROR_BITS)        # decided at dispatch (bad length, unknown command)
        timed_out = Signal()
        bad_addr = Signal()
        vector = Signal()
        beats = Signal(range(cfg.beats_max + 1))
        addr = Signal(17)

        # inter-byte timeout: counts clocks without a byte while a frame is open
        in_frame = Signal()
        idle = Signal(range(self._timeout + 1))
        expired = Signal()                # idle == timeout, a register beside the count
        # A timeout is ``expired`` in a cycle without a byte (a byte that comes just in time is a
        # byte, not a timeout): every state below tests for a byte first, then for ``expired``.
        with m.If(~in_frame | b_valid):
            m.d.sync += [idle.eq(0), expired.eq(0)]
        with m.Elif(~expired):
            m.d.sync += [idle.eq(idle + 1), expired.eq(idle == self._timeout - 1)]
        m.d.comb += self.busy.eq(in_frame)

        crc_next = crc16_update(crc, b_data)
        with m.If(take & b_valid & ~padding):
            m.d.sync += line_err.eq(line_err | b_err)

        # beat assembly: the bytes before the last one of a beat, little-endian
        assembly = Signal(8 * max(1, assemble_bytes - 1))
        pos = Signal(range(assemble_bytes))

        def beat_word(nbytes):
            """The beat whose last byte is arriving: bytes 0..nbytes-2 from the assembly."""
            return Cat(assembly[len(assembly) - 8 * (nbytes - 1):], b_data) if nbytes > 1 else b_data

        def elements(word, count, width, nbytes):
            return Cat(*(word[8 * nbytes * k:8 * nbytes * k + width] for k in range(count)))

        def shift_in():
            if assemble_bytes > 1:
                m.d.sync += assembly.eq(Cat(assembly, b_data)[8:])

        job = self.jobs.payload
        m.d.comb += [job.cmd.eq(cmd), job.seq.eq(seq), job.vector.eq(vector), job.beats.eq(beats),
                     job.params_crc.eq(self.params_crc)]
        # one error per frame: the first that explains the others.  The verdict is a register
        # (decided from the flags of the cycle before), so FINISH waits one cycle (``settled``)
        # for the flags its entry set; the job's write then starts at registers.
        verdict = Signal(ERROR_BITS)
        settled = Signal()
        m.d.comb += job.error.eq(verdict)
        with m.If(timed_out):
            m.d.sync += verdict.eq(proto.ERR_TIMEOUT)
        with m.Elif(line_err):
            m.d.sync += verdict.eq(proto.ERR_LINE)
        with m.Elif(error != 0):
            m.d.sync += verdict.eq(error)
        with m.Elif(crc != 0):
            m.d.sync += verdict.eq(proto.ERR_BAD_CRC)
        with m.Elif(bad_addr):
            m.d.sync += verdict.eq(proto.ERR_BAD_ADDRESS)
        with m.Else():
            m.d.sync += verdict.eq(0)

        if cfg.affine:
            # LOAD_PARAMS beats wait here until their frame has checked
            w_p = cfg.param_format.width
            m.submodules.staging = staging = memory.Memory(
                shape=2 * lanes * w_p, depth=cfg.beats_max, init=[], attrs=self._staging_attrs)
            stage_wr = staging.write_port()
            stage_rd = staging.read_port(domain="sync")
            # one address for both ports (written in PARAMS, read in COMMIT, never both at once):
            # a single-port RAM, which an iCE40UP5K's SPRAM can hold (``synth_ice40 -spram``)
            stage_addr = Signal(range(cfg.beats_max))
            m.d.comb += [stage_wr.addr.eq(stage_addr), stage_rd.addr.eq(stage_addr),
                         stage_rd.en.eq(~stage_wr.en)]
            committed = Signal()            # this frame's beats have been written
            commit_index = Signal(range(cfg.beats_max))
            commit_ready = Signal()         # stage_rd.data is the beat at commit_index
            commit_last = Signal()          # commit_index == beats - 1, kept with the index

        # one flip-flop per state: the state register's enables were the image's critical path
        # (nine LUT levels decoding a binary state through the handshakes)
        fsm = OneHot(m, "HUNT", prefix="parser")

        def on_timeout():
            m.d.sync += timed_out.eq(1)
            fsm.goto("FINISH")

        with fsm.state("HUNT"):
            m.d.comb += take.eq(1)
            m.d.sync += [cmd.eq(0), seq.eq(0), remaining.eq(0), crc.eq(0xFFFF), line_err.eq(0),
                         error.eq(0), timed_out.eq(0), bad_addr.eq(0), vector.eq(0),
                         beats.eq(0), pos.eq(0), settled.eq(0)]
            if cfg.affine:
                m.d.sync += [committed.eq(0), commit_index.eq(0), commit_ready.eq(0), commit_last.eq(0)]
            with m.If(b_valid & ~b_err & (b_data == proto.SYNC[0])):
                m.d.sync += in_frame.eq(1)
                fsm.goto("SYNC1")

        with fsm.state("SYNC1"):
            m.d.comb += take.eq(1)
            with m.If(b_valid):
                with m.If(~b_err & (b_data == proto.SYNC[1])):
                    fsm.goto("CMD")
                with m.Elif(b_err | (b_data != proto.SYNC[0])):
                    m.d.sync += in_frame.eq(0)
                    fsm.goto("HUNT")
            with m.Elif(expired):
                m.d.sync += in_frame.eq(0)
                fsm.goto("HUNT")

        for state, target, nxt in (("CMD", cmd, "SEQ"), ("SEQ", seq, "LEN0"),
                                   ("LEN0", remaining[:8], "LEN1"), ("LEN1", remaining[8:16], "DISPATCH")):
            with fsm.state(state):
                m.d.comb += take.eq(1)
                with m.If(b_valid):
                    m.d.sync += [target.eq(b_data), crc.eq(crc_next)]
                    fsm.goto(nxt)
                with m.Elif(expired):
                    on_timeout()

        with fsm.state("DISPATCH"):
            length = remaining[:16]
            m.d.sync += remaining.eq(length + 2)
            to_vector, to_params = Signal(), Signal()     # else TAIL: no payload
            with m.Switch(cmd):
                with m.Case(proto.CMD_IDENTIFY):
                    with m.If(length != 0):
                        m.d.sync += error.eq(proto.ERR_BAD_LENGTH)
                with m.Case(proto.CMD_NORMALIZE):
                    ok = (length != 0) & (length <= max_len)
                    if beat_bytes & (beat_bytes - 1) == 0:
                        ok &= (length & (beat_bytes - 1)) == 0
                    else:
                        ok &= (length % beat_bytes) == 0
                    with m.If(ok):
                        m.d.sync += vector.eq(1)
                        m.d.comb += to_vector.eq(1)
                    with m.Else():
                        m.d.sync += error.eq(proto.ERR_BAD_LENGTH)
                if cfg.affine:
                    with m.Case(proto.CMD_LOAD_PARAMS):
                        plen = (length - 2)[:16]
                        ok = (length > 2) & (length <= max_plen)
                        if pbeat_bytes & (pbeat_bytes - 1) == 0:
                            ok &= (plen & (pbeat_bytes - 1)) == 0
                        else:
                            ok &= (plen % pbeat_bytes) == 0
                        with m.If(ok):
                            m.d.comb += to_params.eq(1)
                        with m.Else():
                            m.d.sync += error.eq(proto.ERR_BAD_LENGTH)
                with m.Default():
                    m.d.sync += error.eq(proto.ERR_UNKNOWN_COMMAND)
            with m.If(to_vector):
                fsm.goto("VECTOR")
            with m.Elif(to_params):
                fsm.goto("ADDR0")
            with m.Else():
                fsm.goto("TAIL")

        # NORMALIZE payload: every beat_bytes bytes make a beat for the core
        with fsm.state("VECTOR"):
            last_byte_of_beat = pos == beat_bytes - 1
            last_byte = remaining == 3
            # (no byte while timing out: the beat's valid and the byte's ready need no exception)
            m.d.comb += [
                self.beats.valid.eq(b_valid & last_byte_of_beat),
                self.beats.payload.data.eq(elements(beat_word(beat_bytes), lanes,
                                                    cfg.in_format.width, b_in)),
                self.beats.payload.last.eq(last_byte),
                take.eq(~last_byte_of_beat | self.beats.ready),
            ]
            with m.If(b_valid):
                with m.If(take):
                    shift_in()
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(~padding):
                        m.d.sync += crc.eq(crc_next)
                    with m.If(last_byte_of_beat):
                        m.d.sync += [pos.eq(0), beats.eq(beats + 1)]
                    with m.Else():
                        m.d.sync += pos.eq(pos + 1)
                    with m.If(last_byte):
                        with m.If(padding):
                            m.d.sync += padding.eq(0)
                            fsm.goto("FINISH")
                        with m.Else():
                            fsm.goto("TAIL")
            with m.Elif(~padding & expired):
                m.d.sync += [timed_out.eq(1), padding.eq(1)]

        if cfg.affine:
            for state, nxt, field in (("ADDR0", "ADDR1", addr[:8]), ("ADDR1", "PARAMS", addr[8:])):
                with fsm.state(state):
                    m.d.comb += take.eq(1)
                    with m.If(b_valid):
                        m.d.sync += [crc.eq(crc_next), remaining.eq(remaining - 1), field.eq(b_data)]
                        fsm.goto(nxt)
                    with m.Elif(expired):
                        on_timeout()

            with fsm.state("PARAMS"):
                last_byte_of_beat = pos == pbeat_bytes - 1
                word = beat_word(pbeat_bytes)
                # the beat goes to the staging memory; an address past the last beat marks
                # the frame ERR_BAD_ADDRESS (and then nothing of it is written)
                m.d.comb += [
                    take.eq(1),
                    stage_addr.eq(beats),
                    stage_wr.data.eq(Cat(elements(word, lanes, w_p, b_p),
                                         elements(word[8 * b_p * lanes:], lanes, w_p, b_p))),
                ]
                with m.If(b_valid):
                    shift_in()
                    m.d.sync += [crc.eq(crc_next), remaining.eq(remaining - 1)]
                    with m.If(last_byte_of_beat):
                        m.d.comb += stage_wr.en.eq(1)
                        m.d.sync += [pos.eq(0), beats.eq(beats + 1)]
                        with m.If(addr + beats >= cfg.beats_max):
                            m.d.sync += bad_addr.eq(1)
                    with m.Else():
                        m.d.sync += pos.eq(pos + 1)
                    with m.If(remaining == 3):
                        fsm.goto("TAIL")
                with m.Elif(expired):
                    on_timeout()

            # the frame has checked: its staged beats go to the core, then PCRC is redone
            with fsm.state("COMMIT"):
                m.d.comb += [
                    stage_addr.eq(commit_index),
                    self.params.valid.eq(commit_ready),
                    self.params.payload.addr.eq(addr + commit_index),
                    self.params.payload.gamma.eq(stage_rd.data[:lanes * w_p]),
                    self.params.payload.beta.eq(stage_rd.data[lanes * w_p:]),
                ]
                with m.If(self.params.valid & self.params.ready):
                    m.d.sync += [commit_index.eq(commit_index + 1), commit_ready.eq(0),
                                 commit_last.eq(commit_index + 2 == beats)]
                    with m.If(commit_last):
                        fsm.goto("RESCAN")
                with m.Else():
                    m.d.sync += commit_ready.eq(1)

            with fsm.state("RESCAN"):
                m.d.comb += self.rescan.eq(1)
                m.d.sync += committed.eq(1)
                fsm.goto("FINISH")

        # the CRC bytes; or, after a bad length or command, the rest of the frame as LEN said
        with fsm.state("TAIL"):
            m.d.comb += take.eq(1)
            with m.If(b_valid):
                m.d.sync += [crc.eq(crc_next), remaining.eq(remaining - 1)]
                with m.If(remaining == 1):
                    fsm.goto("FINISH")
            with m.Elif(expired):
                with m.If(error == 0):
                    m.d.sync += timed_out.eq(1)
                fsm.goto("FINISH")

        with fsm.state("FINISH"):
            m.d.sync += settled.eq(1)
            if cfg.affine:
                commit = (cmd == proto.CMD_LOAD_PARAMS) & (job.error == 0) & ~committed
                with m.If(settled & commit):
                    m.d.sync += commit_last.eq(beats == 1)
                    fsm.goto("COMMIT")
                with m.Elif(settled & ~self.params_crc_busy):
                    m.d.comb += self.jobs.valid.eq(1)
            else:
                m.d.comb += self.jobs.valid.eq(settled)
            with m.If(self.jobs.valid & self.jobs.ready):
                m.d.sync += in_frame.eq(0)
                fsm.goto("HUNT")
        fsm.close()
        return m


class Replier(wiring.Component):
    """Jobs and core results in, reply bytes out.

    Members
    -------
    jobs : In(stream.Signature(job_layout(cfg)))
    results : In(stream.Signature(StructLayout({"data": P*W_out, "last": 1})))
    o : Out(stream.Signature(8))
    error : Out(1)
    """

    def __init__(self, cfg: CoreConfig, *, identity: bytes):
        self._cfg = cfg
        self._identity = bytes(identity)
        super().__init__({
            "jobs": In(stream.Signature(job_layout(cfg))),
            "results": In(stream.Signature(data.StructLayout(
                {"data": cfg.lanes * cfg.out_format.width, "last": 1}))),
            "o": Out(stream.Signature(8)),
            "error": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        lanes, w_out = cfg.lanes, cfg.out_format.width
        b_out = proto.element_bytes(w_out)
        beat_bytes = lanes * b_out
        ident = self._identity

        m.submodules.rom = rom = memory.Memory(shape=8, depth=len(ident), init=list(ident))
        rom_rd = rom.read_port(domain="sync")
        rom_index = Signal(range(len(ident)))
        rom_valid = Signal()                 # rom_rd.data is the byte at rom_index
        m.d.comb += rom_rd.addr.eq(rom_index)
        m.d.sync += rom_valid.eq(1)

        job = Signal(job_layout(cfg))
        # flags decoded from the job and from ``left`` as they are set, so that ``results.ready``
        # (which reaches the core's credit count) comes from registers through one gate
        is_error = Signal()                  # job.error != 0
        is_identify = Signal()               # job.cmd == IDENTIFY
        reply_cmd = Signal(8)
        left = Signal(16)                    # payload bytes still to send (LEN in the header)
        left_pcrc = Signal()                 # left <= PCRC_BYTES: the PCRC bytes are next

        def set_left(value):
            m.d.sync += [left.eq(value), left_pcrc.eq(value <= proto.PCRC_BYTES)]

        hidx = Signal(3)                     # byte within the header, then within the CRC
        crc = Signal(16, init=0xFFFF)
        byte = Signal(8)
        avail = Signal()
        in_crc = Signal()                    # the byte counts towards the CRC
        sent = Signal()
        m.d.comb += [self.o.payload.eq(byte), self.o.valid.eq(avail), sent.eq(self.o.valid & self.o.ready)]
        with m.If(sent & in_crc):
            m.d.sync += crc.eq(crc16_update(crc, byte))

        # one result beat at a time, serialised little-endian, each lane sign-extended
        beat = Signal(8 * beat_bytes)
        beat_loaded = Signal()
        beat_pos = Signal(range(beat_bytes))
        results = self.results.payload.data
        beat_word = Cat(*(_sext(results[k * w_out:(k + 1) * w_out], 8 * b_out) for k in range(lanes)))

        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += [hidx.eq(0), crc.eq(0xFFFF), beat_loaded.eq(0), beat_pos.eq(0), rom_index.eq(0)]
                with m.If(self.jobs.valid):
                    m.d.comb += self.jobs.ready.eq(1)
                    m.d.sync += [job.eq(self.jobs.payload), is_error.eq(self.jobs.payload.error != 0),
                                 is_identify.eq(self.jobs.payload.cmd == proto.CMD_IDENTIFY)]
                    with m.If(self.jobs.payload.vector & (self.jobs.payload.error != 0)):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "PREPARE"
            with m.State("DRAIN"):
                m.d.comb += self.results.ready.eq(1)
                with m.If(self.results.valid & self.results.payload.last):
                    m.next = "PREPARE"
            with m.State("PREPARE"):
                with m.If(is_error):
                    m.d.sync += reply_cmd.eq(proto.CMD_ERROR)
                    set_left(2)
                    m.d.comb += self.error.eq(1)
                with m.Else():
                    m.d.sync += reply_cmd.eq(job.cmd | proto.REPLY_FLAG)
                    with m.Switch(job.cmd):
                        with m.Case(proto.CMD_IDENTIFY):
                            set_left(len(ident) + proto.PCRC_BYTES)
                        with m.Case(proto.CMD_NORMALIZE):
                            set_left(job.beats * beat_bytes + proto.PCRC_BYTES)
                        with m.Default():
                            set_left(proto.PCRC_BYTES)
                m.next = "HEADER"
            with m.State("HEADER"):
                header = Array([Const(proto.SYNC[0], 8), Const(proto.SYNC[1], 8), reply_cmd,
                                job.seq, left[:8], left[8:16]])
                m.d.comb += [avail.eq(1), byte.eq(header[hidx]), in_crc.eq(hidx >= 2)]
                with m.If(sent):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 5):
                        m.d.sync += hidx.eq(0)
                        with m.If(left == 0):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += in_crc.eq(1)
                with m.If(is_error):                                  # error code, command
                    m.d.comb += [avail.eq(1), byte.eq(Mux(left[0], job.cmd, job.error))]
                with m.Elif(left_pcrc):                                # PCRC, low byte first
                    m.d.comb += [avail.eq(1), byte.eq(Mux(left[0], job.params_crc[8:], job.params_crc[:8]))]
                with m.Elif(is_identify):
                    m.d.comb += [avail.eq(rom_valid), byte.eq(rom_rd.data)]
                    with m.If(sent):
                        m.d.sync += [rom_index.eq(rom_index + 1), rom_valid.eq(0)]
                with m.Else():
                    m.d.comb += [avail.eq(beat_loaded), byte.eq(beat[:8]),
                                 self.results.ready.eq(~beat_loaded)]
                    with m.If(self.results.valid & ~beat_loaded):
                        m.d.sync += [beat.eq(beat_word), beat_loaded.eq(1)]
                    with m.If(sent):
                        m.d.sync += [beat.eq(beat >> 8), beat_pos.eq(beat_pos + 1)]
                        with m.If(beat_pos == beat_bytes - 1):
                            m.d.sync += [beat_loaded.eq(0), beat_pos.eq(0)]
                with m.If(sent):
                    set_left(left - 1)
                    with m.If(left == 1):
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [avail.eq(1), byte.eq(Mux(hidx[0], crc[:8], crc[8:]))]
                with m.If(sent):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 1):
                        m.next = "IDLE"
        return m


def _sext(value, width):
    """``value`` (signed) sign-extended to ``width`` bits."""
    value = Value.cast(value)
    return Cat(value, value[-1].replicate(width - len(value))) if len(value) < width else value[:width]


class LinkEngine(wiring.Component):
    """Frame parser, the core and the replier: bytes in, bytes out (:class:`NormLink` without
    its UARTs).

    Parameters
    ----------
    cfg : the core's configuration
    timeout_cycles : inter-byte timeout of a frame, in clock cycles
    identity : the IDENTIFY record (bytes)
    staging_ram_style : synthesis attribute of the γ/β staging memory (:class:`FrameParser`)

    Members
    -------
    i : In(stream.Signature(rx_byte_layout))
        Received bytes, each with its line error flag.
    o : Out(stream.Signature(8))
        Reply bytes.
    busy : Out(1)
    error : Out(1)
    """

    def __init__(self, cfg: CoreConfig, *, timeout_cycles: int, identity: bytes, staging_ram_style: str = ""):
        self._cfg = cfg
        self._timeout = timeout_cycles
        self._identity = bytes(identity)
        self._staging_ram_style = staging_ram_style
        super().__init__({
            "i": In(stream.Signature(rx_byte_layout)),
            "o": Out(stream.Signature(8)),
            "busy": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.parser = parser = FrameParser(cfg, timeout_cycles=self._timeout,
                                                      staging_ram_style=self._staging_ram_style)
        m.submodules.jobs = jobs = fifo.SyncFIFO(width=job_layout(cfg).size, depth=JOB_FIFO_DEPTH)
        m.submodules.core = core = NormCore(cfg)
        m.submodules.replier = replier = Replier(cfg, identity=self._identity)

        wiring.connect(m, wiring.flipped(self.i), parser.i)
        wiring.connect(m, replier.o, wiring.flipped(self.o))
        m.d.comb += [self.busy.eq(parser.busy), self.error.eq(replier.error)]
        through_fifo(m, parser.jobs, jobs, replier.jobs)
        if cfg.affine:
            m.submodules.param_store = store = ParamStore(cfg)
            wiring.connect(m, producer=parser.params, consumer=store.i)
            m.d.comb += [store.rescan.eq(parser.rescan), parser.params_crc.eq(store.crc),
                         parser.params_crc_busy.eq(store.busy)]
            params = store.o
        else:
            m.d.comb += parser.params_crc.eq(proto.config_params_crc(cfg))
            params = None
        # the beats reach the core through two registers' worth of FIFO: the parser's byte
        # handshake then ends at the FIFO's level, not at the core's ready (receive FIFO → parser
        # → core ready → parser state was the image's critical path)
        m.submodules.beat_fifo = beat_fifo = fifo.SyncFIFO(width=parser.beats.payload.shape().size,
                                                            depth=BEAT_FIFO_DEPTH)
        beats = stream.Signature(parser.beats.payload.shape()).create()
        through_fifo(m, parser.beats, beat_fifo, beats)
        _connect_core(m, core, cfg, beats=beats, results=replier.results, params=params)
        return m


def _connect_core(m, core, cfg, *, beats, results, params):
    """The one place that names the core's ports: vector beats in, results out, γ/β writes."""
    m.d.comb += [
        core.i.valid.eq(beats.valid),
        core.i.payload.data.eq(beats.payload.data),
        core.i.payload.last.eq(beats.payload.last),
        beats.ready.eq(core.i.ready),

        results.valid.eq(core.o.valid),
        results.payload.data.eq(core.o.payload.data),
        results.payload.last.eq(core.o.payload.last),
        core.o.ready.eq(results.ready),
    ]
    if params is not None:
        m.d.comb += [
            core.params.valid.eq(params.valid),
            core.params.payload.addr.eq(params.payload.addr),
            core.params.payload.gamma.eq(params.payload.gamma),
            core.params.payload.beta.eq(params.payload.beta),
            params.ready.eq(core.params.ready),
        ]


class NormLink(wiring.Component):
    """UART, frame parser, the core and the replier: a board image without its clocking and I/O.

    Parameters
    ----------
    cfg : the core's configuration
    link : :class:`~normgen.boards.protocol.LinkParams` (divisor, timeout, clock, board name)
    staging_ram_style : synthesis attribute of the γ/β staging memory (:class:`FrameParser`)
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    error: Out(1)

    def __init__(self, cfg: CoreConfig, link: proto.LinkParams, *, staging_ram_style: str = ""):
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"cfg must be a CoreConfig, not {cfg!r}")
        if not isinstance(link, proto.LinkParams):
            raise TypeError(f"link must be a LinkParams, not {link!r}")
        if cfg.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"the host link serves LayerNorm and RMSNorm cores, not norm {cfg.norm!r}")
        self._cfg = cfg
        self._link = link
        self._staging_ram_style = staging_ram_style
        self._identity = proto.identity_from_config(cfg, link)
        super().__init__()

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    @property
    def link(self) -> proto.LinkParams:
        return self._link

    @property
    def identity(self) -> proto.Identity:
        return self._identity

    def elaborate(self, platform):
        cfg, link = self._cfg, self._link
        m = Module()
        m.submodules.uart_rx = uart_rx = UARTRx(clocks_per_bit=link.clocks_per_bit)
        m.submodules.uart_tx = uart_tx = UARTTx(clocks_per_bit=link.clocks_per_bit)
        m.submodules.rx_fifo = rx_fifo = BlockFIFO(width=9, depth=RX_FIFO_DEPTH)
        m.submodules.engine = engine = LinkEngine(cfg, timeout_cycles=link.timeout_cycles,
                                                  identity=self._identity.pack(),
                                                  staging_ram_style=self._staging_ram_style)
        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            self.tx.eq(uart_tx.tx),
            self.busy.eq(engine.busy),
            self.error.eq(engine.error),
        ]
        through_fifo(m, uart_rx.o, rx_fifo, engine.i)
        wiring.connect(m, producer=engine.o, consumer=uart_tx.i)
        return m

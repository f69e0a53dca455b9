"""Corrupted frames at the byte level: :class:`~normgen.boards.link.LinkEngine` (frame parser,
γ/β staging and commit, the core, the replier) in Amaranth's simulator, bytes in and bytes out,
without the UARTs.

Every single-bit flip of frames of every type, and random multi-byte corruption (bytes replaced,
dropped, inserted), each followed by an idle gap longer than the inter-byte timeout and then a
good NORMALIZE.  A corrupted frame must get no OK reply, must leave the γ/β in the core as the
golden expectation says (the good LOAD_PARAMS frames sent between the corrupted ones decide
it), and the good NORMALIZE after it must answer bit-exact with :mod:`normgen.sim.golden`,
carrying the checksum of the expected γ/β.

The stimulus plays from a memory and the replies are recorded in another, so the simulator runs
free between the testbench's checks (a testbench that ticks every cycle is ten times slower).
"""

import bisect
import random
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth import *
from amaranth.hdl import Fragment
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from normgen.boards import protocol as proto
from normgen.boards.link import FrameParser, LinkEngine, ParamStore, job_layout
from normgen.boards.uart import rx_byte_layout
from normgen.hw.config import CoreConfig
from normgen.hw import core_latency
from normgen.hw.output import pack_params
from normgen.sim import golden, vectors

#: a small core: N_max 4, one byte per element and per γ/β value (short frames, fast simulation)
CFG = CoreConfig(norm="layernorm", features=4, lanes=1, in_format="s3.5", out_format="s3.5",
                 param_format="s2.6", eps=2.0 ** -10)
#: two lanes of 16-bit elements: two-byte values, four-value γ/β beats
CFG_WIDE = CoreConfig(norm="rmsnorm", features=4, lanes=2, in_format="s4.12", out_format="s4.12",
                      param_format="s4.12", eps=1e-5)
TIMEOUT = 4                 # inter-byte timeout, clock cycles
GAP = TIMEOUT + 2           # idle cycles after a corrupted frame: it has timed out by then
STIMULUS_DEPTH = 1 << 14
GAP_FLAG = 1 << 16
CLOCK = 1e-8


class ByteSource(wiring.Component):
    """Plays ``program`` entries: a byte (sent when the engine takes it) or, with GAP_FLAG, that
    many idle cycles.  ``restart`` starts from entry 0; ``done`` when ``length`` entries are played."""

    o: Out(stream.Signature(rx_byte_layout))
    length: In(16)
    restart: In(1)
    done: Out(1)
    pointer: Out(16)

    def __init__(self):
        super().__init__()
        self.program = memory.Memory(shape=17, depth=STIMULUS_DEPTH, init=[])

    def elaborate(self, platform):
        m = Module()
        m.submodules.program = self.program
        rd = self.program.read_port(domain="comb")
        pointer = self.pointer
        idle = Signal(16)
        entry = rd.data
        is_gap = entry[16]
        m.d.comb += [rd.addr.eq(pointer), self.done.eq(pointer >= self.length),
                     self.o.payload.data.eq(entry[:8]),
                     self.o.valid.eq(~self.done & ~is_gap)]
        with m.If(self.restart):
            m.d.sync += [pointer.eq(0), idle.eq(0)]
        with m.Elif(~self.done & is_gap):
            with m.If(idle + 1 >= entry[:16]):
                m.d.sync += [pointer.eq(pointer + 1), idle.eq(0)]
            with m.Else():
                m.d.sync += idle.eq(idle + 1)
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += pointer.eq(pointer + 1)
        return m


class ByteSink(wiring.Component):
    """Records every byte, always ready."""

    i: In(stream.Signature(8))
    count: Out(16)
    restart: In(1)

    def __init__(self):
        super().__init__()
        self.record = memory.Memory(shape=8, depth=STIMULUS_DEPTH, init=[])

    def elaborate(self, platform):
        m = Module()
        m.submodules.record = self.record
        wr = self.record.write_port()
        m.d.comb += [self.i.ready.eq(1), wr.addr.eq(self.count), wr.data.eq(self.i.payload),
                     wr.en.eq(self.i.valid)]
        with m.If(self.restart):
            m.d.sync += self.count.eq(0)
        with m.Elif(self.i.valid):
            m.d.sync += self.count.eq(self.count + 1)
        return m


def _memory_data(fragment, path):
    """The MemoryData of the memory at ``path`` (submodule names) in an elaborated design."""
    for name in path:
        fragment = next(sub for sub, sub_name, *_ in fragment.subfragments if sub_name == name)
    return fragment._data


class Bench:
    """LinkEngine between a ByteSource and a ByteSink; :meth:`play` runs a stimulus and returns
    the reply bytes; :meth:`core_params` reads the core's γ/β memory."""

    def __init__(self, cfg):
        self.cfg = cfg
        identity = proto.identity_from_config(cfg, proto.LinkParams(
            clock_hz=round(1 / CLOCK), clocks_per_bit=4, timeout_cycles=80, board="bench"))
        self.identity = identity
        m = Module()
        m.domains.sync = self.domain = ClockDomain("sync")
        m.submodules.source = self.source = ByteSource()
        m.submodules.engine = self.engine = LinkEngine(cfg, timeout_cycles=TIMEOUT, identity=identity.pack())
        m.submodules.sink = self.sink = ByteSink()
        wiring.connect(m, producer=self.source.o, consumer=self.engine.i)
        wiring.connect(m, producer=self.engine.o, consumer=self.sink.i)
        self.fragment = Fragment.get(m, None)
        self.core_memory = _memory_data(self.fragment, ("engine", "core", "params")) if cfg.affine else None
        # longer than any pause between two reply bytes: a vector through the core behind another
        self.settle_cycles = 2 * core_latency(cfg) + 64

    def run(self, testbench):
        sim = Simulator(self.fragment)
        sim.add_clock(CLOCK)
        async def bench(ctx):
            await testbench(ctx, self)
        sim.add_testbench(bench)
        sim.run()

    async def play(self, ctx, program) -> bytes:
        assert len(program) <= STIMULUS_DEPTH
        for index, entry in enumerate(program):
            ctx.set(self.source.program.data[index], entry)
        ctx.set(self.source.length, len(program))
        ctx.set(self.source.restart, 1)
        ctx.set(self.sink.restart, 1)
        await ctx.tick()
        ctx.set(self.source.restart, 0)
        ctx.set(self.sink.restart, 0)
        if not ctx.get(self.source.done):
            await ctx.posedge(self.source.done)
        # the last replies: wait until no reply byte has come for a while
        count = -1
        while count != ctx.get(self.sink.count):
            count = ctx.get(self.sink.count)
            await ctx.delay(self.settle_cycles * CLOCK)
        assert count < STIMULUS_DEPTH
        return bytes(ctx.get(self.sink.record.data[k]) for k in range(count))

    async def reset(self, ctx):
        ctx.set(self.domain.rst, 1)
        await ctx.tick()
        ctx.set(self.domain.rst, 0)

    def core_params(self, ctx) -> list[int]:
        return [ctx.get(self.core_memory[k]) for k in range(self.cfg.beats_max)]


def program_of(data: bytes, gap: int = 0) -> list[int]:
    return list(data) + ([GAP_FLAG | gap] if gap else [])


# ---- the expectation ----------------------------------------------------------------------------
class Expected:
    """The γ/β the core must hold (integers), and what a good frame must get back."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.gamma, self.beta = (np.array(v, dtype=np.int64) for v in cfg.gamma_beta_int())
        self._current = cfg

    def load(self, start, gamma, beta):
        self.gamma[start:start + len(gamma)] = gamma
        self.beta[start:start + len(beta)] = beta
        fmt = self.cfg.param_format
        self._current = self.cfg.with_params(fmt.to_float(self.gamma), fmt.to_float(self.beta))

    @property
    def pcrc(self) -> int:
        if not self.cfg.affine:
            return proto.crc16(b"")
        return proto.params_crc(self.gamma, self.beta, self.cfg.lanes, self.cfg.param_format.width)

    def memory_words(self) -> list[int]:
        return pack_params(self._current)

    def normalize(self, x) -> np.ndarray:
        return golden.normalize(self._current, np.asarray(x, dtype=np.int64)[None, :])[0]


class FrameMaker:
    def __init__(self, cfg, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self.seq = 0

    def next_seq(self) -> int:
        self.seq = self.seq % 255 + 1
        return self.seq

    def vector(self, n=None):
        cfg = self.cfg
        if n is None:
            n = cfg.lanes * int(self.rng.integers(1, cfg.beats_max + 1))
        kind = list(vectors.CLASSES)[int(self.rng.integers(len(vectors.CLASSES)))]
        return vectors.make_vector(cfg, kind, n, self.rng)

    def normalize(self, n=None):
        x = self.vector(n)
        seq = self.next_seq()
        return proto.encode_frame(proto.CMD_NORMALIZE, seq, proto.encode_elements(x, self.cfg.in_format.width)), seq, x

    def identify(self):
        seq = self.next_seq()
        return proto.encode_frame(proto.CMD_IDENTIFY, seq), seq

    def load_params(self, start=None, count=None):
        cfg = self.cfg
        beats = cfg.beats_max
        if start is None:
            start = int(self.rng.integers(0, beats))
        if count is None:
            count = int(self.rng.integers(1, beats - start + 1))
        fmt = cfg.param_format
        n = count * cfg.lanes
        gamma = self.rng.integers(fmt.min_int, fmt.max_int + 1, n)
        beta = self.rng.integers(fmt.min_int, fmt.max_int + 1, n)
        payload = start.to_bytes(2, "little") + proto.params_bytes(gamma, beta, cfg.lanes, fmt.width)
        seq = self.next_seq()
        return proto.encode_frame(proto.CMD_LOAD_PARAMS, seq, payload), seq, start * cfg.lanes, gamma, beta


def is_some_frame(data: bytes) -> bool:
    """Whether ``data`` holds a complete frame with a good CRC anywhere (a corruption that
    happens to make a valid frame is no corruption)."""
    decoder = proto.FrameDecoder()
    decoder.feed(data)
    return decoder.next_frame() is not None


def single_bit_flips(frame: bytes):
    for pos in range(len(frame)):
        for bit in range(8):
            corrupted = bytearray(frame)
            corrupted[pos] ^= 1 << bit
            yield bytes(corrupted), f"bit {bit} of byte {pos}"


def random_corruption(frame: bytes, rng: random.Random):
    corrupted = bytearray(frame)
    kind = rng.choice(["replace", "replace", "burst", "drop", "insert"])
    if kind == "replace":
        for _ in range(rng.randrange(2, 6)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
    elif kind == "burst":
        start = rng.randrange(len(corrupted))
        for pos in range(start, min(len(corrupted), start + rng.randrange(2, 5))):
            corrupted[pos] ^= rng.randrange(1, 256)
    elif kind == "drop":
        for _ in range(rng.randrange(1, 3)):
            del corrupted[rng.randrange(len(corrupted))]
    else:
        for _ in range(rng.randrange(1, 3)):
            corrupted.insert(rng.randrange(len(corrupted) + 1), rng.randrange(256))
    return bytes(corrupted), kind


# ---- the run ------------------------------------------------------------------------------------
class Case:
    """A corrupted frame and the good NORMALIZE after it."""

    def __init__(self, corrupted, what, good_seq, good_x, base_cmd):
        self.corrupted, self.what = corrupted, what
        self.good_seq, self.good_x = good_seq, good_x
        self.base_cmd = base_cmd


def check_replies(cfg, expected: Expected, items, replies: list[proto.Frame], pcrc=True) -> list[str]:
    """``items``: the played sequence of ``("load", seq, start, gamma, beta)`` and Case.  Returns
    a description of every failure."""
    failures = []
    b_out = proto.element_bytes(cfg.out_format.width)
    pending = list(replies)

    def take_until(seq, cmd):
        """Error replies up to the OK reply (cmd | 0x80, seq): (errors, the reply or None)."""
        others = []
        while pending:
            frame = pending.pop(0)
            if frame.cmd == cmd | proto.REPLY_FLAG and frame.seq == seq:
                return others, frame
            others.append(frame)
        return others, None

    for item in items:
        if isinstance(item, tuple):
            _, seq, start, gamma, beta = item
            others, reply = take_until(seq, proto.CMD_LOAD_PARAMS)
            expected.load(start, gamma, beta)
            if others or reply is None:
                failures.append(f"good LOAD_PARAMS seq {seq}: {[f.describe() for f in others]}, reply {reply}")
            elif pcrc and proto.split_pcrc(reply.payload) != (b"", expected.pcrc):
                failures.append(f"good LOAD_PARAMS seq {seq}: reply payload {reply.payload.hex()}, "
                                f"expected PCRC {expected.pcrc:04x}")
            continue
        case = item
        others, reply = take_until(case.good_seq, proto.CMD_NORMALIZE)
        problems = [f"replied {f.describe()}" for f in others if not f.is_error]
        if reply is None:
            problems.append("no reply to the good NORMALIZE after it")
        else:
            n = len(case.good_x)
            y = proto.decode_elements(reply.payload[:n * b_out], cfg.out_format.width)
            if not np.array_equal(y, expected.normalize(case.good_x)):
                problems.append(f"the next NORMALIZE answered {y.tolist()}, golden "
                                f"{expected.normalize(case.good_x).tolist()}")
            if pcrc and proto.split_pcrc(reply.payload)[1:] != (expected.pcrc,) or \
                    pcrc and len(reply.payload) != n * b_out + proto.PCRC_BYTES:
                problems.append(f"the next NORMALIZE reply carries {reply.payload[n * b_out:].hex()}, "
                                f"expected PCRC {expected.pcrc:04x}")
        if problems:
            failures.append(f"{proto.COMMAND_NAMES[case.base_cmd]} frame, {case.what} "
                            f"({case.corrupted.hex()}): " + "; ".join(problems))
    if pending:
        failures.append(f"replies left over: {[f.describe() for f in pending]}")
    return failures


def decode_all(data: bytes) -> tuple[list[proto.Frame], proto.FrameDecoder]:
    decoder = proto.FrameDecoder()
    decoder.feed(data)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames, decoder


def corrupted_cases(cfg, maker: FrameMaker, rng: random.Random, *, base_frames: dict, random_count: int,
                    good_n=None):
    """Yields ("load", frame, seq, start, gamma, beta) now and then and Cases: every single-bit
    flip of ``base_frames[kind]`` frames of each kind, then ``random_count`` random corruptions."""
    counts = {"single": 0, "random": 0, "valid_after_corruption": 0}
    kinds = ["identify", "normalize", "load_params"] if cfg.affine else ["identify", "normalize"]

    def base(kind):
        if kind == "identify":
            return maker.identify()[0], proto.CMD_IDENTIFY
        if kind == "normalize":
            return maker.normalize()[0], proto.CMD_NORMALIZE
        return maker.load_params()[0], proto.CMD_LOAD_PARAMS

    def case(corrupted, what, cmd):
        frame, seq, x = maker.normalize(good_n)
        return Case(corrupted, what, seq, x, cmd), frame

    def good_load():
        frame, seq, start, gamma, beta = maker.load_params()
        return ("load", seq, start, gamma, beta), frame

    for kind in kinds:
        for _ in range(base_frames[kind]):
            if cfg.affine:
                yield good_load()                # new γ/β: a wrong write would show
            frame, cmd = base(kind)
            for corrupted, what in single_bit_flips(frame):
                if is_some_frame(corrupted):
                    counts["valid_after_corruption"] += 1
                    continue
                counts["single"] += 1
                yield case(corrupted, what, cmd)
    for index in range(random_count):
        if cfg.affine and index % 50 == 0:
            yield good_load()
        kind = kinds[index % len(kinds)]
        frame, cmd = base(kind)
        while True:
            corrupted, what = random_corruption(frame, rng)
            if not is_some_frame(corrupted):
                break
            counts["valid_after_corruption"] += 1
        counts["random"] += 1
        yield case(corrupted, what, cmd)
    corrupted_cases.counts = counts


def run_corruption(cfg, *, base_frames, random_count, seed=1, segment=200, pcrc=True):
    """Plays every case; returns (failures, counts)."""
    bench = Bench(cfg)
    maker = FrameMaker(cfg, np.random.default_rng(seed))
    rng = random.Random(seed)
    expected = Expected(cfg)
    failures = []
    stats = {"corrupted": 0, "segments": 0, "memory_checks": 0}

    async def testbench(ctx, bench):
        items, program = [], []

        async def flush():
            if not items:
                return
            data = await bench.play(ctx, program)
            replies, decoder = decode_all(data)
            if decoder.dropped or decoder.pending:
                failures.append(f"bytes from the engine that are no frame ({decoder.dropped} dropped, "
                                f"{decoder.pending} pending)")
            failures.extend(check_replies(cfg, expected, items, replies, pcrc=pcrc))
            if cfg.affine:
                stats["memory_checks"] += 1
                got = bench.core_params(ctx)
                if got != expected.memory_words():
                    failures.append(f"segment {stats['segments']}: the core's γ/β memory holds {got}, "
                                    f"expected {expected.memory_words()}")
            stats["segments"] += 1
            items.clear()
            program.clear()

        # the good NORMALIZE after each corrupted frame is N_max long: every γ/β value counts
        for item, good_frame in corrupted_cases(cfg, maker, rng, base_frames=base_frames,
                                                random_count=random_count, good_n=cfg.features):
            if isinstance(item, tuple):
                # a good LOAD_PARAMS ends a segment, so the memory is checked before each change
                await flush()
                items.append(item)
                program.extend(program_of(good_frame))
                continue
            stats["corrupted"] += 1
            items.append(item)
            program.extend(program_of(item.corrupted, GAP) + program_of(good_frame))
            if len(items) >= segment:
                await flush()
        await flush()

    bench.run(testbench)
    stats.update(corrupted_cases.counts)
    return failures, stats


# ---- the parser and the γ/β commit alone: many more frames --------------------------------------
class Recorder(wiring.Component):
    """Records every transfer of a stream (always ready) into a memory."""

    def __init__(self, width):
        super().__init__({"i": In(stream.Signature(width)), "count": Out(16), "restart": In(1)})
        self.record = memory.Memory(shape=width, depth=STIMULUS_DEPTH, init=[])

    def elaborate(self, platform):
        m = Module()
        m.submodules.record = self.record
        wr = self.record.write_port()
        m.d.comb += [self.i.ready.eq(1), wr.addr.eq(self.count), wr.data.eq(self.i.payload),
                     wr.en.eq(self.i.valid)]
        with m.If(self.restart):
            m.d.sync += self.count.eq(0)
        with m.Elif(self.i.valid):
            m.d.sync += self.count.eq(self.count + 1)
        return m


class ParserBench:
    """FrameParser and ParamStore, the γ/β writes going into a memory written as the core
    writes its own; the parser's jobs and vector beats recorded."""

    def __init__(self, cfg):
        self.cfg = cfg
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.source = self.source = ByteSource()
        m.submodules.parser = parser = FrameParser(cfg, timeout_cycles=TIMEOUT)
        m.submodules.store = store = ParamStore(cfg)
        self.job_layout = job_layout(cfg)
        m.submodules.jobs = self.jobs = Recorder(self.job_layout.size)
        beat_width = cfg.lanes * cfg.in_format.width + 1
        m.submodules.beats = self.beats = Recorder(beat_width)
        m.submodules.gamma_beta = gamma_beta = memory.Memory(
            shape=2 * cfg.lanes * cfg.param_format.width, depth=cfg.beats_max, init=pack_params(cfg))
        wr = gamma_beta.write_port()
        # every γ/β write, with the stimulus entry being played when it happened
        word_width = 2 * cfg.lanes * cfg.param_format.width
        self.word_width = word_width
        m.submodules.writes = self.writes = Recorder(16 + word_width + 16)
        m.d.comb += [
            self.writes.i.valid.eq(store.o.valid),
            self.writes.i.payload.eq(Cat(store.o.payload.addr, store.o.payload.gamma,
                                         store.o.payload.beta, self.source.pointer)),
        ]
        wiring.connect(m, producer=self.source.o, consumer=parser.i)
        wiring.connect(m, producer=parser.params, consumer=store.i)
        m.d.comb += [
            store.rescan.eq(parser.rescan), parser.params_crc.eq(store.crc),
            parser.params_crc_busy.eq(store.busy),
            store.o.ready.eq(1),
            wr.addr.eq(store.o.payload.addr), wr.data.eq(Cat(store.o.payload.gamma, store.o.payload.beta)),
            wr.en.eq(store.o.valid),
            self.jobs.i.valid.eq(parser.jobs.valid), self.jobs.i.payload.eq(parser.jobs.payload),
            parser.jobs.ready.eq(self.jobs.i.ready),
            self.beats.i.valid.eq(parser.beats.valid),
            self.beats.i.payload.eq(Cat(parser.beats.payload.data, parser.beats.payload.last)),
            parser.beats.ready.eq(self.beats.i.ready),
        ]
        self.gamma_beta = gamma_beta.data
        self.fragment = Fragment.get(m, None)

    def run(self, testbench):
        sim = Simulator(self.fragment)
        sim.add_clock(CLOCK)

        async def bench(ctx):
            await testbench(ctx, self)
        sim.add_testbench(bench)
        sim.run()

    async def play(self, ctx, program):
        for index, entry in enumerate(program):
            ctx.set(self.source.program.data[index], entry)
        ctx.set(self.source.length, len(program))
        restarts = (self.source.restart, self.jobs.restart, self.beats.restart, self.writes.restart)
        for signal in restarts:
            ctx.set(signal, 1)
        await ctx.tick()
        for signal in restarts:
            ctx.set(signal, 0)
        if not ctx.get(self.source.done):
            await ctx.posedge(self.source.done)
        await ctx.delay((2 * self.cfg.beats_max + 16) * CLOCK)
        jobs = [ctx.get(self.jobs.record.data[k]) for k in range(ctx.get(self.jobs.count))]
        beats = [ctx.get(self.beats.record.data[k]) for k in range(ctx.get(self.beats.count))]
        fields = {name: (field.offset, field.width) for name, field in self.job_layout}
        jobs = [SimpleNamespace(**{name: (word >> offset) & ((1 << width) - 1)
                                   for name, (offset, width) in fields.items()}) for word in jobs]
        writes = []
        for k in range(ctx.get(self.writes.count)):
            word = ctx.get(self.writes.record.data[k])
            writes.append((word & 0xFFFF, (word >> 16) & ((1 << self.word_width) - 1),
                           word >> (16 + self.word_width)))
        return jobs, beats, writes


def check_jobs(cfg, expected: Expected, items, jobs, beats) -> list[str]:
    """What the parser must hand on: for a corrupted frame only jobs with an error; for the good
    NORMALIZE after it an OK job, its elements as beats to the core and the expected PCRC."""
    failures = []
    w_in = cfg.in_format.width
    beat_width = cfg.lanes * w_in
    jobs, beats = list(jobs), list(beats)

    def take_vector(count):
        got = []
        for _ in range(count):
            if not beats:
                return None, False
            word = beats.pop(0)
            got.append(word)
        values = []
        for word in got:
            for k in range(cfg.lanes):
                raw = (word >> (k * w_in)) & ((1 << w_in) - 1)
                values.append(raw - (1 << w_in) if raw >> (w_in - 1) else raw)
        lasts = [word >> beat_width for word in got]
        return values, lasts == [0] * (count - 1) + [1]

    def take_until(seq, cmd):
        problems = []
        while jobs:
            job = jobs.pop(0)
            vector = take_vector(job.beats) if job.vector else (None, True)
            if job.error == 0 and job.cmd == cmd and job.seq == seq:
                return problems, job, vector
            if job.error == 0:
                problems.append(f"an OK job for command 0x{job.cmd:02x} seq {job.seq}")
            if not vector[1]:
                problems.append(f"a vector of {job.beats} beats not ended by its last beat")
        return problems + ["no job"], None, None

    for item in items:
        if isinstance(item, tuple):
            _, seq, start, gamma, beta = item
            problems, job, _ = take_until(seq, proto.CMD_LOAD_PARAMS)
            expected.load(start, gamma, beta)
            if problems or job.params_crc != expected.pcrc:
                failures.append(f"good LOAD_PARAMS seq {seq}: {problems}")
            continue
        case = item
        problems, job, vector = take_until(case.good_seq, proto.CMD_NORMALIZE)
        if job is not None:
            values, ended = vector
            if values != [int(v) for v in case.good_x] or not ended:
                problems.append(f"the next NORMALIZE gave the core {values}, not {case.good_x.tolist()}")
            if job.params_crc != expected.pcrc:
                problems.append(f"the next NORMALIZE job carries PCRC {job.params_crc:04x}, "
                                f"expected {expected.pcrc:04x}")
        if problems:
            failures.append(f"{proto.COMMAND_NAMES[case.base_cmd]} frame, {case.what} "
                            f"({case.corrupted.hex()}): " + "; ".join(problems))
    if jobs or beats:
        failures.append(f"{len(jobs)} jobs and {len(beats)} beats left over")
    return failures


def check_writes(cfg, items, spans, writes) -> list[str]:
    """Every γ/β write must be one of a good LOAD_PARAMS, in order; any other is blamed on the
    frame whose stimulus was playing (``spans``: the first stimulus entry of each item)."""
    failures = []
    wanted = []
    for index, item in enumerate(items):
        if isinstance(item, tuple):
            _, seq, start, gamma, beta = item
            lanes, width = cfg.lanes, cfg.param_format.width
            mask = (1 << width) - 1
            for beat in range(len(gamma) // lanes):
                word = 0
                for k in range(lanes):       # the core's γ/β word: P γ lanes, then P β lanes
                    word |= (int(gamma[beat * lanes + k]) & mask) << (k * width)
                    word |= (int(beta[beat * lanes + k]) & mask) << ((lanes + k) * width)
                wanted.append((start // lanes + beat, word, index))
    for addr, word, pointer in writes:
        if wanted and (addr, word) == wanted[0][:2] and pointer >= spans[wanted[0][2]]:
            wanted.pop(0)
            continue
        culprit = items[bisect.bisect_right(spans, pointer) - 1]
        what = (f"{proto.COMMAND_NAMES[culprit.base_cmd]} frame, {culprit.what} ({culprit.corrupted.hex()})"
                if isinstance(culprit, Case) else f"good LOAD_PARAMS seq {culprit[1]}")
        failures.append(f"{what}: wrote γ/β beat {addr} = {word:#x}")
    if wanted:
        failures.append(f"{len(wanted)} beats of good LOAD_PARAMS frames not written")
    return failures


def run_parser_corruption(cfg, *, base_frames, random_count, seed=2, segment=400):
    bench = ParserBench(cfg)
    maker = FrameMaker(cfg, np.random.default_rng(seed))
    rng = random.Random(seed)
    expected = Expected(cfg)
    failures = []
    stats = {"corrupted": 0, "segments": 0}

    async def testbench(ctx, bench):
        items, program, spans = [], [], []

        async def flush():
            if not items:
                return
            jobs, beats, writes = await bench.play(ctx, program)
            failures.extend(check_writes(cfg, items, spans, writes))
            failures.extend(check_jobs(cfg, expected, items, jobs, beats))
            got = [ctx.get(bench.gamma_beta[k]) for k in range(cfg.beats_max)]
            if got != expected.memory_words():
                failures.append(f"segment {stats['segments']}: γ/β written {got}, expected "
                                f"{expected.memory_words()}")
            stats["segments"] += 1
            items.clear()
            program.clear()
            spans.clear()

        for item, good_frame in corrupted_cases(cfg, maker, rng, base_frames=base_frames,
                                                random_count=random_count):
            if isinstance(item, tuple):
                await flush()
                items.append(item)
                spans.append(len(program))
                program.extend(program_of(good_frame))
                continue
            stats["corrupted"] += 1
            items.append(item)
            spans.append(len(program))
            program.extend(program_of(item.corrupted, GAP) + program_of(good_frame))
            if len(items) >= segment:
                await flush()
        await flush()

    bench.run(testbench)
    stats.update(corrupted_cases.counts)
    return failures, stats


# ---- the tests ------------------------------------------------------------------------------------
def _report(failures, stats):
    return f"{len(failures)} failures in {stats['corrupted']} corrupted frames:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("cfg,base_frames,random_count,at_least", [
    (CFG, {"identify": 1, "normalize": 3, "load_params": 3}, 200, 700),
    (CFG_WIDE, {"identify": 1, "normalize": 1, "load_params": 1}, 60, 300),
], ids=["s3.5-P1", "s4.12-P2"])
def test_corrupted_frames_through_the_engine(cfg, base_frames, random_count, at_least):
    """The whole engine with the core: after each corrupted frame the next NORMALIZE is bit-exact
    with the golden model under the expected γ/β, and the core's γ/β memory holds them."""
    failures, stats = run_corruption(cfg, base_frames=base_frames, random_count=random_count)
    assert not failures, _report(failures, stats)
    assert stats["corrupted"] == stats["single"] + stats["random"] >= at_least, stats
    assert stats["segments"] > 1


def test_ten_thousand_corrupted_frames_through_the_parser():
    """The parser and the γ/β commit: >= 10 000 corrupted frames, none of which writes γ/β or
    gets an OK job; the good NORMALIZE after each hands the core exactly its vector."""
    failures, stats = run_parser_corruption(
        CFG, base_frames={"identify": 4, "normalize": 24, "load_params": 24}, random_count=5600)
    assert not failures, _report(failures, stats)
    assert stats["corrupted"] == stats["single"] + stats["random"] >= 10_000, stats


def test_params_written_at_run_time_survive_a_reset():
    """γ/β loaded through the link are still in force after a reset of the engine (the core
    included): the next NORMALIZE is bit-exact under them, the core's γ/β memory holds them and
    every reply's PCRC is theirs (the checksum is recomputed after the reset, not reset)."""
    cfg = CFG
    bench = Bench(cfg)
    maker = FrameMaker(cfg, np.random.default_rng(9))
    expected = Expected(cfg)
    results = {}

    async def testbench(ctx, bench):
        frame, seq, start, gamma, beta = maker.load_params(0, cfg.beats_max)
        replies, _ = decode_all(await bench.play(ctx, program_of(frame)))
        expected.load(start, gamma, beta)
        results["load"] = [(f.cmd, f.seq, f.payload) for f in replies]
        await bench.reset(ctx)
        ident, ident_seq = maker.identify()
        norm, norm_seq, x = maker.normalize(cfg.features)
        replies, _ = decode_all(await bench.play(ctx, program_of(ident) + program_of(norm)))
        results["after"] = replies
        results["memory"] = bench.core_params(ctx)
        results["x"], results["seqs"] = x, (seq, ident_seq, norm_seq)

    bench.run(testbench)
    seq, ident_seq, norm_seq = results["seqs"]
    pcrc = expected.pcrc.to_bytes(2, "little")
    assert expected.pcrc != proto.config_params_crc(cfg)             # the load changed them
    assert results["load"] == [(proto.CMD_LOAD_PARAMS | proto.REPLY_FLAG, seq, pcrc)]
    identify, normalize = results["after"]
    assert (identify.cmd, identify.seq) == (proto.CMD_IDENTIFY | proto.REPLY_FLAG, ident_seq)
    record, board_pcrc = proto.split_pcrc(identify.payload)
    assert proto.Identity.unpack(record) == bench.identity and board_pcrc == expected.pcrc
    assert (normalize.cmd, normalize.seq) == (proto.CMD_NORMALIZE | proto.REPLY_FLAG, norm_seq)
    y, board_pcrc = proto.split_pcrc(normalize.payload)
    assert np.array_equal(proto.decode_elements(y, cfg.out_format.width), expected.normalize(results["x"]))
    assert board_pcrc == expected.pcrc
    assert results["memory"] == expected.memory_words()

"""cocotb tests of a board image without its PLL and I/O buffers (:class:`~normgen.boards.link.NormLink`,
emitted as Verilog), driven by the host driver through :class:`~normgen.boards.simserial.SimSerial`.

Settings arrive as JSON in the environment variable ``NORMGEN_BOARD_SIM`` (written by
:mod:`normgen.boards.sim`)::

    {"core": CoreConfig kwargs, "link": LinkParams kwargs, "clock_ps": clock period,
     "seed": int, "vectors": how many, "max_n": longest vector (plus one N_max vector),
     "malformed": how many malformed frames, "report": path of the JSON report}

``test_vectors`` runs the host driver (IDENTIFY check, NORMALIZE with two requests in flight,
LOAD_PARAMS) and compares every output with the golden model.  ``test_corrupted`` runs the host
driver over a noisy line (bits flipped, NORMALIZE turned into LOAD_PARAMS, γ/β addresses
changed, bytes replaced, lost or added) and compares every output it returns with the golden
model under the γ/β it loaded.  ``test_malformed`` throws
malformed frames at the board — bad CRC, truncated frames, garbage, oversize and zero-length
vectors, unknown commands, a stalled host, UART breaks, bad parameter addresses — expects the
exact error reply (or silence) for each, and after each sends a good frame whose result must be
bit-exact.
"""
from __future__ import annotations

import json
import os
import random
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles

from normgen.hw.config import CoreConfig
from normgen.sim import golden, vectors

from . import protocol as proto
from .host import BoardLink
from .simserial import SimSerial

ENV_VAR = "NORMGEN_BOARD_SIM"

#: shared between the tests of one simulation
_STATE = {}


def load_settings() -> dict:
    text = os.environ[ENV_VAR].strip()
    if not text.startswith("{"):
        with open(text) as file:
            text = file.read()
    return json.loads(text)


def _update_report(settings, section, data):
    path = settings.get("report")
    if not path:
        return
    report = {}
    if os.path.exists(path):
        with open(path) as file:
            report = json.load(file)
    report[section] = data
    with open(path, "w") as file:
        json.dump(report, file, indent=1)


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.settings = load_settings()
        self.cfg = CoreConfig(**self.settings["core"])
        self.link = proto.LinkParams(**self.settings["link"])
        self.identity = proto.identity_from_config(self.cfg, self.link)
        self.clock_ps = int(self.settings["clock_ps"])
        self.baud = 1e12 / (self.clock_ps * self.link.clocks_per_bit)
        self.byte_time = 10 / self.baud
        self.rng = np.random.default_rng(self.settings["seed"])
        self.port = SimSerial(dut.rx, dut.tx, baudrate=self.baud)

    async def start(self):
        self.dut.rx.value = 1
        self.dut.rst.value = 1
        Clock(self.dut.clk, self.clock_ps, "ps").start()
        await ClockCycles(self.dut.clk, 5)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)
        self.port.start()

    def host_link(self, **kwargs) -> BoardLink:
        # margin: the device's processing (core latency, a few hundred cycles at most) and slack
        return BoardLink(self.port, expected=self.identity, margin_s=64 * self.byte_time,
                         **kwargs)

    def random_vector(self, n=None):
        max_n = self.settings["max_n"]
        lanes = self.cfg.lanes
        if n is None:
            n = lanes * int(self.rng.integers(1, max(1, max_n // lanes) + 1))
        kind = list(vectors.CLASSES)[int(self.rng.integers(len(vectors.CLASSES)))]
        return vectors.make_vector(self.cfg, kind, n, self.rng)


@cocotb.test()
async def test_vectors(dut):
    """Host driver against the simulated board: every result bit-exact with the golden model."""
    tb = TB(dut)
    await tb.start()
    cfg, settings = tb.cfg, tb.settings
    count = settings["vectors"]
    xs = [tb.random_vector() for _ in range(count)]
    xs[len(xs) // 2] = tb.random_vector(cfg.features)          # one vector of N_max
    xs[0] = tb.random_vector(cfg.lanes)                        # and the shortest
    report = {}

    @bridge
    def host():
        started = time.monotonic()
        link = tb.host_link(window=2)
        identity = link.identity
        ys = link.normalize_int(xs)
        expected = golden.normalize_vectors(cfg, xs)
        exact = sum(int(np.array_equal(y, e)) for y, e in zip(ys, expected))
        report["identity"] = identity.describe()
        report["plain"] = {"vectors": len(xs), "bit_exact": exact,
                           "elements": int(sum(len(x) for x in xs))}

        # the host UART 2 % fast, then 2 % slow: within what the oversampled receiver takes
        # (±(1/2 - 1/C)/9.5: ±2.6 % at C = 4 clocks per bit)
        skewed = [tb.random_vector() for _ in range(max(4, count // 8))]
        exact = 0
        for skew in (-0.02, 0.02):
            tb.port.skew = skew
            ys = link.normalize_int(skewed)
            exact += sum(int(np.array_equal(y, e)) for y, e in zip(ys, golden.normalize_vectors(cfg, skewed)))
        tb.port.skew = 0.0
        report["skewed"] = {"vectors": 2 * len(skewed), "bit_exact": exact}

        if cfg.affine:
            gamma, beta = vectors.random_params(cfg, tb.rng)
            loaded = cfg.with_params(gamma, beta)
            link.load_params(loaded.gamma_int, loaded.beta_int, chunk_bytes=256)
            more = [tb.random_vector() for _ in range(max(4, count // 4))]
            more.append(tb.random_vector(cfg.features))
            ys = link.normalize_int(more)
            exact = sum(int(np.array_equal(y, e)) for y, e in zip(ys, golden.normalize_vectors(loaded, more)))
            report["params"] = {"vectors": len(more), "bit_exact": exact}
            _STATE["params_changed"] = True      # test_malformed loads the image's own back
        report["stats"] = link.stats.summary()
        report["retries"] = link.stats.retries
        report["wall_s"] = time.monotonic() - started

    await host()
    _update_report(settings, "vectors", report)
    for section in ("plain", "skewed", "params"):
        if section in report:
            assert report[section]["bit_exact"] == report[section]["vectors"], (section, report[section])
    assert report["retries"] == 0, report["stats"]


# ---- malformed frames ----------------------------------------------------------------------------
class Raw:
    """Raw frames on the simulated port, with exact expectations on the replies."""

    def __init__(self, tb: TB):
        self.tb = tb
        self.port = tb.port
        self.seq = 0
        # silence for this long after the last frame: nothing more is coming
        self.quiet = 2 * tb.link.timeout_cycles * tb.clock_ps * 1e-12 + 16 * tb.byte_time

    def next_seq(self):
        self.seq = self.seq % 255 + 1
        return self.seq

    def frames_until_quiet(self, first_within: float) -> list:
        """Every frame that arrives until the line has been quiet for a while."""
        decoder = proto.FrameDecoder()
        frames = []
        deadline = self.port.clock() + first_within
        while True:
            self.port.timeout = max(0.0, deadline - self.port.clock())
            data = self.port.read(decoder.needed())
            if not data:
                break
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
                deadline = self.port.clock() + self.quiet
        assert decoder.pending == 0 and decoder.dropped == 0, \
            f"bytes that are no frame from the board ({decoder.pending} pending, {decoder.dropped} dropped)"
        return frames

    def expect(self, frames, error=None, seq=None, cmd=None, what=""):
        if error is None:
            assert frames == [], f"{what}: expected no reply, got {[f.describe() for f in frames]}"
            return
        assert len(frames) == 1, f"{what}: expected one error reply, got {[f.describe() for f in frames]}"
        frame = frames[0]
        assert frame.is_error and frame.error_code == error, f"{what}: got {frame.describe()}"
        if seq is not None:
            assert frame.seq == seq, f"{what}: reply seq {frame.seq}, expected {seq}"
        if cmd is not None:
            assert frame.error_command == cmd, f"{what}: reply names command {frame.error_command}, expected {cmd}"

    def good_normalize(self, cfg):
        """A good frame after the malformed one: its result must be bit-exact."""
        x = self.tb.random_vector(self.tb.cfg.lanes * int(self.tb.rng.integers(1, 5)))
        seq = self.next_seq()
        self.port.write(proto.encode_frame(proto.CMD_NORMALIZE, seq, proto.encode_elements(x, cfg.in_format.width)))
        frames = self.frames_until_quiet(self.reply_time(len(x)))
        assert len(frames) == 1 and frames[0].cmd == proto.CMD_NORMALIZE | proto.REPLY_FLAG \
            and frames[0].seq == seq, f"good frame after a malformed one: {[f.describe() for f in frames]}"
        payload, pcrc = proto.split_pcrc(frames[0].payload)
        y = proto.decode_elements(payload, cfg.out_format.width)
        return int(np.array_equal(y, golden.normalize(cfg, x[None, :])[0])
                   and pcrc == proto.config_params_crc(cfg))

    def reply_time(self, n):
        return (4 * n + 2 * proto.OVERHEAD_BYTES + 64) * self.tb.byte_time


def _no_sync(data: bytes) -> bytes:
    """``data`` with every A5 byte changed, so that it cannot hold a SYNC."""
    return bytes(b if b != proto.SYNC[0] else 0xA4 for b in data)


@cocotb.test()
async def test_malformed(dut):
    """Malformed frames get their error reply (or none), and the next good frame is served."""
    tb = TB(dut)
    await tb.start()
    cfg, settings = tb.cfg, tb.settings
    rng = random.Random(settings["seed"])
    total = settings["malformed"]
    counts = {}
    report = {}
    w_in = cfg.in_format.width
    b_in = proto.element_bytes(w_in)
    max_len = proto.normalize_payload_limit(cfg)
    timeout_s = tb.link.timeout_cycles * tb.clock_ps * 1e-12

    @bridge
    def host():
        raw = Raw(tb)
        good = 0
        started = time.monotonic()
        if _STATE.pop("params_changed", False):     # (a reset does not clear memories)
            tb.host_link(window=1).load_params(*cfg.gamma_beta_int())

        def vector_frame(seq, n=None, avoid_sync=False):
            x = tb.random_vector(n)
            payload = proto.encode_elements(x, w_in)
            if avoid_sync:
                payload = _no_sync(payload)
            return proto.encode_frame(proto.CMD_NORMALIZE, seq, payload)

        def bad_crc():
            seq = raw.next_seq()
            frame = bytearray(vector_frame(seq))
            # flip one bit of the payload or the CRC (the header stays intact)
            pos = rng.randrange(proto.HEADER_BYTES, len(frame))
            frame[pos] ^= 1 << rng.randrange(8)
            raw.port.write(bytes(frame))
            raw.expect(raw.frames_until_quiet(raw.reply_time(len(frame))), proto.ERR_BAD_CRC, seq,
                       proto.CMD_NORMALIZE, "bad CRC")

        def truncated():
            seq = raw.next_seq()
            frame = vector_frame(seq)
            cut = rng.randrange(1, len(frame))
            raw.port.write(frame[:cut])
            frames = raw.frames_until_quiet(raw.reply_time(cut) + timeout_s)
            if cut < 2:
                raw.expect(frames, None, what=f"frame cut after {cut} byte")
            else:
                raw.expect(frames, proto.ERR_TIMEOUT, seq if cut >= 4 else 0,
                           proto.CMD_NORMALIZE if cut >= 3 else 0, f"frame cut after {cut} bytes")

        def garbage():
            junk = _no_sync(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
            raw.port.write(junk)
            raw.expect(raw.frames_until_quiet(raw.reply_time(len(junk))), None, what="garbage")

        def garbage_then_frame():
            # garbage glued to the front of a good frame (no pause): the frame must be served
            junk = _no_sync(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))))
            raw.port.write(junk + (proto.SYNC[:1] if rng.random() < 0.5 else b""))

        def oversize():
            seq = raw.next_seq()
            length = max_len + b_in * cfg.lanes * rng.randrange(1, 4)
            header = proto.SYNC + bytes([proto.CMD_NORMALIZE, seq]) + length.to_bytes(2, "little")
            if counts.get("oversize", 0) < 2:     # twice the whole frame, then just its start
                body = header[2:] + _no_sync(bytes(rng.randrange(256) for _ in range(length)))
                data = proto.SYNC + body + proto.crc16(body).to_bytes(2, "big")
            else:
                data = header + _no_sync(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 16))))
            raw.port.write(data)
            raw.expect(raw.frames_until_quiet(raw.reply_time(len(data)) + timeout_s), proto.ERR_BAD_LENGTH,
                       seq, proto.CMD_NORMALIZE, "oversize vector")

        def bad_length():
            seq = raw.next_seq()
            choice = rng.randrange(3)
            if choice == 0:
                frame = proto.encode_frame(proto.CMD_NORMALIZE, seq, b"")          # N = 0
                cmd = proto.CMD_NORMALIZE
            elif choice == 1 and b_in * cfg.lanes > 1:
                payload = _no_sync(bytes(rng.randrange(256) for _ in range(b_in * cfg.lanes * 3 + 1)))
                frame = proto.encode_frame(proto.CMD_NORMALIZE, seq, payload)     # not whole elements
                cmd = proto.CMD_NORMALIZE
            else:
                frame = proto.encode_frame(proto.CMD_IDENTIFY, seq, b"\x00")       # IDENTIFY takes none
                cmd = proto.CMD_IDENTIFY
            raw.port.write(frame)
            raw.expect(raw.frames_until_quiet(raw.reply_time(len(frame))), proto.ERR_BAD_LENGTH, seq,
                       cmd, "bad length")

        def unknown_command():
            seq = raw.next_seq()
            known = {proto.CMD_IDENTIFY, proto.CMD_NORMALIZE} | ({proto.CMD_LOAD_PARAMS} if cfg.affine else set())
            cmd = rng.choice([c for c in range(256) if c not in known])
            frame = proto.encode_frame(cmd, seq, _no_sync(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8)))))
            raw.port.write(frame)
            raw.expect(raw.frames_until_quiet(raw.reply_time(len(frame))), proto.ERR_UNKNOWN_COMMAND, seq,
                       cmd, "unknown command")

        def stalled():
            seq = raw.next_seq()
            frame = vector_frame(seq, avoid_sync=True)
            # the CRC may hold A5: send the frame without its CRC
            cut = rng.randrange(2, len(frame) - 2)
            raw.port.write(frame[:cut])
            raw.port.flush()
            raw.port.sleep(timeout_s * rng.uniform(1.5, 3))
            rest = _no_sync(frame[cut:len(frame) - 2])
            raw.port.write(rest)
            frames = raw.frames_until_quiet(raw.reply_time(len(frame)) + timeout_s)
            raw.expect(frames, proto.ERR_TIMEOUT, seq if cut >= 4 else 0, None, f"host stalled after {cut} bytes")

        def line_break():
            # a break takes the place of one byte: CMD, SEQ or a payload/CRC byte (a break in
            # place of a LEN byte changes the length: the frame then ends early or late)
            seq = raw.next_seq()
            frame = vector_frame(seq)
            pos = rng.choice([2, 3] + list(range(proto.HEADER_BYTES, len(frame))))
            raw.port.write(frame[:pos])
            raw.port.send_break_bits(rng.randrange(10, 30))
            raw.port.write(frame[pos + 1:])
            frames = raw.frames_until_quiet(raw.reply_time(len(frame)) + timeout_s)
            raw.expect(frames, proto.ERR_LINE, 0 if pos == 3 else seq, None, f"UART break at byte {pos}")

        def bad_address():
            if not cfg.affine:
                return unknown_command()
            seq = raw.next_seq()
            beats = cfg.beats_max
            start = beats - 1
            gamma, beta = cfg.gamma_beta_int()
            width = cfg.param_format.width
            payload = start.to_bytes(2, "little")
            for beat in (start, start):   # the last beat (rewritten with its own values) and one beyond
                sl = slice(beat * cfg.lanes, (beat + 1) * cfg.lanes)
                payload += proto.encode_elements(gamma[sl], width) + proto.encode_elements(beta[sl], width)
            frame = proto.encode_frame(proto.CMD_LOAD_PARAMS, seq, payload)
            raw.port.write(frame)
            raw.expect(raw.frames_until_quiet(raw.reply_time(len(frame))), proto.ERR_BAD_ADDRESS, seq,
                       proto.CMD_LOAD_PARAMS, "parameter address out of range")

        kinds = [bad_crc, truncated, garbage, garbage_then_frame, oversize, bad_length, unknown_command,
                 stalled, line_break, bad_address]
        for index in range(total):
            kind = kinds[index % len(kinds)] if index < 2 * len(kinds) else rng.choice(kinds)
            kind()
            counts[kind.__name__] = counts.get(kind.__name__, 0) + 1
            good += raw.good_normalize(cfg)
        # and the host driver still works end to end
        link = tb.host_link(window=2)
        xs = [tb.random_vector() for _ in range(4)]
        ys = link.normalize_int(xs)
        final = sum(int(np.array_equal(y, e)) for y, e in zip(ys, golden.normalize_vectors(cfg, xs)))
        report.update(malformed=sum(counts.values()), by_kind=counts, good_after=good,
                      good_frames=total, final_bit_exact=final, final_vectors=len(xs),
                      wall_s=time.monotonic() - started)

    await host()
    _update_report(settings, "malformed", report)
    assert report["good_after"] == report["good_frames"], report
    assert report["final_bit_exact"] == report["final_vectors"], report


# ---- the host driver over a noisy line -----------------------------------------------------------
class Corruptor:
    """Corrupts some of the frames the host writes (``rate``), each in one of these ways, and
    counts them; a corruption that happens to leave a valid frame is not used."""

    KINDS = ("bit", "normalize_to_load", "load_address", "bytes", "lost_byte", "extra_byte")

    def __init__(self, rng: random.Random, rate: float):
        self.rng = rng
        self.rate = rate
        self.counts = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __call__(self, frame: bytes) -> bytes:
        rng = self.rng
        if rng.random() >= self.rate:
            return frame
        cmd = frame[2]
        kinds = [k for k in self.KINDS
                 if (k != "normalize_to_load" or cmd == proto.CMD_NORMALIZE)
                 and (k != "load_address" or cmd == proto.CMD_LOAD_PARAMS)]
        for _ in range(20):
            # half the corrupted LOAD_PARAMS frames get another address: the case that matters
            kind = "load_address" if "load_address" in kinds and rng.random() < 0.5 else rng.choice(kinds)
            data = bytearray(frame)
            if kind == "bit":
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
            elif kind == "normalize_to_load":
                data[2] ^= proto.CMD_NORMALIZE ^ proto.CMD_LOAD_PARAMS
            elif kind == "load_address":
                pos = proto.HEADER_BYTES + rng.randrange(2)
                data[pos] ^= 1 << rng.randrange(8)
            elif kind == "bytes":
                for _ in range(rng.randrange(2, 5)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            elif kind == "lost_byte":
                del data[rng.randrange(len(data))]
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
            decoder = proto.FrameDecoder()
            decoder.feed(bytes(data))
            if bytes(data) != frame and decoder.next_frame() is None:
                self.counts[kind] = self.counts.get(kind, 0) + 1
                return bytes(data)
        return frame


@cocotb.test()
async def test_corrupted(dut):
    """The host driver over a line that corrupts frames: every result it returns is bit-exact
    with the golden model under the γ/β it loaded last, and the board ends holding them."""
    tb = TB(dut)
    await tb.start()
    cfg, settings = tb.cfg, tb.settings
    target = settings.get("corrupted", 100)
    rng = random.Random(settings["seed"] + 1)
    report = {}

    @bridge
    def host():
        started = time.monotonic()
        link = tb.host_link(window=2, retries=12)
        corruptor = Corruptor(rng, rate=0.4)
        current = cfg
        vectors_sent = exact = loads = 0
        tb.port.corrupt = corruptor
        while corruptor.total < target:
            if cfg.affine and (loads == 0 or rng.random() < 0.15):
                gamma, beta = vectors.random_params(cfg, tb.rng)
                current = cfg.with_params(gamma, beta)
                link.load_params(current.gamma_int, current.beta_int, chunk_bytes=256)
                loads += 1
            xs = [tb.random_vector() for _ in range(4)]
            ys = link.normalize_int(xs)
            vectors_sent += len(xs)
            exact += sum(int(np.array_equal(y, e)) for y, e in zip(ys, golden.normalize_vectors(current, xs)))
            dut._log.info(f"{corruptor.total} corrupted frames, {vectors_sent} vectors ({exact} bit-exact), "
                          f"{loads} γ/β loads; {link.stats.summary()}")
        tb.port.corrupt = None
        # the γ/β the board holds, by its own checksum, and a vector of N_max through them
        link.identify()
        gamma, beta = current.gamma_beta_int()
        wanted = (proto.params_crc(gamma, beta, cfg.lanes, cfg.param_format.width) if cfg.affine
                  else proto.config_params_crc(cfg))
        last = [tb.random_vector(cfg.features)]
        final = int(np.array_equal(link.normalize_int(last)[0], golden.normalize_vectors(current, last)[0]))
        report.update(corrupted=corruptor.total, by_kind=dict(corruptor.counts), vectors=vectors_sent,
                      bit_exact=exact, loads=loads, final_bit_exact=final,
                      board_pcrc_ok=int(link.board_params_crc == wanted),
                      param_restores=link.stats.param_restores, stats=link.stats.summary(),
                      wall_s=time.monotonic() - started)
        _STATE["params_changed"] = True

    await host()
    _update_report(settings, "corrupted", report)
    assert report["bit_exact"] == report["vectors"], report
    assert report["final_bit_exact"] == 1 and report["board_pcrc_ok"] == 1, report

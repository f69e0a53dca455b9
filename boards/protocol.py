"""The host link protocol: framing, commands, error codes and the IDENTIFY record.

This module is plain Python (no Amaranth): the gateware (:mod:`normgen.boards.link`) takes its
constants from here, and the host driver (:mod:`normgen.boards.host`) encodes and decodes frames
with it.  One place for each fact.

Frame (both directions)::

    offset  bytes  field
    0       2      SYNC = A5 5A
    2       1      CMD      request: a command code; reply: code | 0x80, or 0xFF (error)
    3       1      SEQ      chosen by the host (1..255), echoed in the reply; 0 = unknown
    4       2      LEN      payload bytes, little-endian (0..65535)
    6       LEN    PAYLOAD
    6+LEN   2      CRC      CRC-16/CCITT-FALSE of CMD..PAYLOAD, high byte first

CRC-16/CCITT-FALSE is polynomial 0x1021, initial value 0xFFFF, not reflected, no final XOR:
``binascii.crc_hqx(data, 0xFFFF)``.  Sent high byte first, the CRC of CMD..CRC is 0, which is how
the gateware checks it.

Commands
--------
Every OK reply ends with PCRC (u16, little-endian): the γ/β checksum, :func:`params_crc` of the
γ/β the core holds when the reply is made (for NORMALIZE: the γ/β its vector was computed with).

``IDENTIFY`` (LEN 0)
    Reply: the :class:`Identity` record (configuration, formats, ε, config hash, the checksum of
    the γ/β the image starts with, link timing), then PCRC.
``LOAD_PARAMS`` (LEN = 2 + K · 2·P·Bp)
    Payload: the first beat address (u16), then K beats, each P γ values then P β values, every
    value ``Bp = ceil(W_p/8)`` bytes little-endian two's complement.  The beats are written only
    when the whole frame has checked (CRC, length, every beat address below N_max/P): a frame
    is written whole or not at all.  Reply: PCRC after the write.
``NORMALIZE`` (LEN = N · Bin, N a multiple of P, 1 <= N <= N_max)
    Payload: N input integers, ``Bin = ceil(W_in/8)`` bytes each.  Reply: N output integers,
    ``Bout`` bytes each (sign-extended), then PCRC.

Error reply (CMD 0xFF, LEN 2): the error code, then the command of the frame that failed.  A
frame answered with an error has changed nothing.
"""
from __future__ import annotations

import binascii
import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SYNC", "CMD_IDENTIFY", "CMD_LOAD_PARAMS", "CMD_NORMALIZE", "CMD_ERROR", "REPLY_FLAG",
    "ERR_BAD_CRC", "ERR_BAD_LENGTH", "ERR_UNKNOWN_COMMAND", "ERR_TIMEOUT", "ERR_LINE",
    "ERR_BAD_ADDRESS", "ERROR_NAMES", "COMMAND_NAMES", "HEADER_BYTES", "OVERHEAD_BYTES",
    "MAX_PAYLOAD", "PROTOCOL_VERSION", "crc16", "encode_frame", "Frame", "FrameDecoder",
    "element_bytes", "encode_elements", "decode_elements", "LinkParams", "Identity",
    "config_hash", "identity_from_config", "normalize_payload_limit", "params_beat_bytes",
    "PCRC_BYTES", "params_bytes", "params_crc", "config_params_crc", "split_pcrc",
]

SYNC = b"\xa5\x5a"
PROTOCOL_VERSION = 2

CMD_IDENTIFY = 0x01
CMD_LOAD_PARAMS = 0x02
CMD_NORMALIZE = 0x03
REPLY_FLAG = 0x80
CMD_ERROR = 0xFF

COMMAND_NAMES = {CMD_IDENTIFY: "IDENTIFY", CMD_LOAD_PARAMS: "LOAD_PARAMS", CMD_NORMALIZE: "NORMALIZE"}

ERR_BAD_CRC = 0x01          # the CRC of a complete frame did not check
ERR_BAD_LENGTH = 0x02       # LEN not allowed for the command (e.g. a vector longer than N_max)
ERR_UNKNOWN_COMMAND = 0x03
ERR_TIMEOUT = 0x04          # the frame stopped (inter-byte timeout) before its last byte
ERR_LINE = 0x05             # a UART framing error or receive overrun inside the frame
ERR_BAD_ADDRESS = 0x06      # LOAD_PARAMS beyond the last beat (the frame wrote nothing)

ERROR_NAMES = {
    ERR_BAD_CRC: "bad CRC",
    ERR_BAD_LENGTH: "bad length",
    ERR_UNKNOWN_COMMAND: "unknown command",
    ERR_TIMEOUT: "timeout (truncated frame)",
    ERR_LINE: "UART framing error or overrun",
    ERR_BAD_ADDRESS: "parameter address out of range",
}

HEADER_BYTES = 6            # SYNC, CMD, SEQ, LEN
OVERHEAD_BYTES = HEADER_BYTES + 2
PCRC_BYTES = 2              # the γ/β checksum at the end of every OK reply
MAX_PAYLOAD = 0xFFFF


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (``crc16(b"123456789") == 0x29B1``)."""
    return binascii.crc_hqx(bytes(data), crc)


def encode_frame(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    payload = bytes(payload)
    if not 0 <= cmd <= 0xFF or not 0 <= seq <= 0xFF:
        raise ValueError(f"cmd and seq must be bytes, not {cmd!r}, {seq!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the frame limit {MAX_PAYLOAD}")
    body = bytes([cmd, seq]) + struct.pack("<H", len(payload)) + payload
    return SYNC + body + struct.pack(">H", crc16(body))


@dataclass(frozen=True)
class Frame:
    cmd: int
    seq: int
    payload: bytes

    @property
    def is_error(self) -> bool:
        return self.cmd == CMD_ERROR

    @property
    def error_code(self) -> int | None:
        return self.payload[0] if self.is_error and self.payload else None

    @property
    def error_command(self) -> int | None:
        return self.payload[1] if self.is_error and len(self.payload) > 1 else None

    def describe(self) -> str:
        if self.is_error:
            code, cmd = self.error_code, self.error_command
            return (f"error reply: {ERROR_NAMES.get(code, f'code 0x{code:02x}')} "
                    f"(to {COMMAND_NAMES.get(cmd, f'command 0x{(cmd or 0):02x}')}, seq {self.seq})")
        return (f"{COMMAND_NAMES.get(self.cmd & ~REPLY_FLAG, f'0x{self.cmd:02x}')} reply, "
                f"seq {self.seq}, {len(self.payload)} payload bytes")


class FrameDecoder:
    """Incremental decoder of the byte stream from the board: feed bytes, take frames.

    Bytes before a SYNC are skipped; a frame whose CRC does not check is dropped (counted in
    :attr:`dropped`) and the search restarts one byte after its SYNC; while a frame is
    incomplete, a complete frame with a good CRC further on is taken instead, so a false SYNC
    inside garbage cannot hide a real frame behind it."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self._buf = bytearray()
        self.max_payload = max_payload
        self.dropped = 0
        self.skipped = 0

    def feed(self, data: bytes):
        self._buf += data

    @property
    def pending(self) -> int:
        return len(self._buf)

    def needed(self) -> int:
        """A lower bound on the bytes still missing for the next frame (at least 1)."""
        buf = self._buf
        if len(buf) < HEADER_BYTES or buf[:2] != SYNC:
            return max(1, HEADER_BYTES - len(buf))
        length = struct.unpack_from("<H", buf, 4)[0]
        return max(1, HEADER_BYTES + length + 2 - len(buf))

    def _complete_frame_after(self, start: int) -> int | None:
        buf = self._buf
        pos = buf.find(SYNC, start)
        while pos >= 0 and len(buf) - pos >= OVERHEAD_BYTES:
            length = struct.unpack_from("<H", buf, pos + 4)[0]
            end = pos + HEADER_BYTES + length + 2
            if length <= self.max_payload and end <= len(buf) and crc16(bytes(buf[pos + 2:end])) == 0:
                return pos
            pos = buf.find(SYNC, pos + 1)
        return None

    def next_frame(self) -> Frame | None:
        buf = self._buf
        while True:
            start = buf.find(SYNC)
            if start < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.skipped += len(buf) - keep
                del buf[:len(buf) - keep]
                return None
            if start:
                self.skipped += start
                del buf[:start]
            if len(buf) < HEADER_BYTES:
                return None
            cmd, seq, length = buf[2], buf[3], struct.unpack_from("<H", buf, 4)[0]
            if length > self.max_payload:
                self.dropped += 1
                del buf[:1]
                continue
            end = HEADER_BYTES + length + 2
            if len(buf) < end:
                # A false SYNC (in garbage) may announce a long frame and hide a real one behind
                # it: a complete frame with a good CRC further on wins.
                later = self._complete_frame_after(1)
                if later is None:
                    return None
                self.dropped += 1
                del buf[:later]
                continue
            if crc16(bytes(buf[2:end])) != 0:
                self.dropped += 1
                del buf[:1]
                continue
            frame = Frame(cmd, seq, bytes(buf[HEADER_BYTES:end - 2]))
            del buf[:end]
            return frame


# ---- elements -------------------------------------------------------------------------------
def element_bytes(width: int) -> int:
    """Bytes per element on the wire for a ``width``-bit two's complement value."""
    return (width + 7) // 8


def encode_elements(values, width: int) -> bytes:
    """Little-endian two's complement, :func:`element_bytes` bytes each."""
    nbytes = element_bytes(width)
    values = np.asarray(values, dtype=np.int64).ravel()
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if values.size and (values.min() < low or values.max() > high):
        raise ValueError(f"values outside the {width}-bit signed range [{low}, {high}]")
    raw = values.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :nbytes]
    return raw.tobytes()


def decode_elements(data: bytes, width: int) -> np.ndarray:
    """Inverse of :func:`encode_elements`; the value is the low ``width`` bits, sign-extended."""
    nbytes = element_bytes(width)
    if len(data) % nbytes:
        raise ValueError(f"{len(data)} bytes is not a whole number of {nbytes}-byte elements")
    raw = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, nbytes).astype(np.int64)
    values = np.zeros(raw.shape[0], dtype=np.int64)
    for k in range(nbytes):
        values |= raw[:, k] << (8 * k)
    values &= (1 << width) - 1
    return np.where(values >> (width - 1), values - (1 << width), values)


def params_beat_bytes(cfg) -> int:
    """Bytes of one LOAD_PARAMS beat: P γ values and P β values."""
    return 2 * cfg.lanes * element_bytes(cfg.param_format.width)


def normalize_payload_limit(cfg) -> int:
    """Largest NORMALIZE payload: N_max elements (capped by the 16-bit length field of the
    request and of the reply, which carries PCRC too)."""
    beat_in = cfg.lanes * element_bytes(cfg.in_format.width)
    beat_out = cfg.lanes * element_bytes(cfg.out_format.width)
    beats = min(cfg.beats_max, MAX_PAYLOAD // beat_in, (MAX_PAYLOAD - PCRC_BYTES) // beat_out)
    return beats * beat_in


def params_bytes(gamma_int, beta_int, lanes: int, width: int) -> bytes:
    """γ/β as the beats of a LOAD_PARAMS payload (without the address): for each beat, P γ
    values then P β values."""
    gamma = np.asarray(gamma_int, dtype=np.int64).reshape(-1, lanes)
    beta = np.asarray(beta_int, dtype=np.int64).reshape(-1, lanes)
    return encode_elements(np.concatenate([gamma, beta], axis=1), width)


def params_crc(gamma_int, beta_int, lanes: int, width: int) -> int:
    """The γ/β checksum (PCRC): CRC-16/CCITT-FALSE of :func:`params_bytes` of all N_max values.
    A core without an affine stage reports the CRC of nothing, 0xFFFF."""
    return crc16(params_bytes(gamma_int, beta_int, lanes, width))


def split_pcrc(payload: bytes) -> tuple[bytes, int]:
    """An OK reply's payload without its PCRC trailer, and the PCRC."""
    if len(payload) < PCRC_BYTES:
        raise ValueError(f"an OK reply holds at least {PCRC_BYTES} bytes (PCRC), not {len(payload)}")
    return payload[:-PCRC_BYTES], int.from_bytes(payload[-PCRC_BYTES:], "little")


def config_params_crc(cfg) -> int:
    """PCRC of the γ/β a core of ``cfg`` starts with."""
    if not cfg.affine:
        return crc16(b"")
    gamma, beta = cfg.gamma_beta_int()
    return params_crc(gamma, beta, cfg.lanes, cfg.param_format.width)


# ---- IDENTIFY -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkParams:
    """Link settings a board image is built with; they travel in the IDENTIFY record.

    clock_hz : the core clock
    clocks_per_bit : UART divisor (baud = clock_hz / clocks_per_bit), at least 4
    timeout_cycles : inter-byte timeout of a frame, in core clock cycles
    board : short board name (at most 16 ASCII characters)
    """
    clock_hz: int
    clocks_per_bit: int
    timeout_cycles: int
    board: str = "sim"

    def __post_init__(self):
        if not isinstance(self.clocks_per_bit, int) or self.clocks_per_bit < 4:
            raise ValueError(f"clocks_per_bit must be an integer >= 4, not {self.clocks_per_bit!r}")
        if not isinstance(self.timeout_cycles, int) or self.timeout_cycles < 20 * self.clocks_per_bit:
            raise ValueError(f"timeout_cycles must be an integer of at least two byte times "
                             f"({20 * self.clocks_per_bit}), not {self.timeout_cycles!r}")
        if not 0 < self.clock_hz < 2 ** 32:
            raise ValueError(f"clock_hz must be in 1..2**32-1, not {self.clock_hz!r}")
        if len(self.board.encode("ascii")) > 16:
            raise ValueError(f"board name must be at most 16 ASCII characters, not {self.board!r}")

    @property
    def baud(self) -> float:
        return self.clock_hz / self.clocks_per_bit

    @property
    def timeout_s(self) -> float:
        return self.timeout_cycles / self.clock_hz


_IDENTITY = struct.Struct("<4sBBBBIIBBBBBBQIIHIH16sH")
_MAGIC = b"NRMG"
_NORM_CODES = {"layernorm": 0, "rmsnorm": 1}
_SCALAR_MUL_CODES = {"parallel": 0, "serial": 1}


def config_hash(cfg) -> int:
    """32-bit hash of everything that decides the numbers a core computes: norm, sizes, formats,
    ε on its grid, the affine switch and the γ/β the image starts with."""
    gamma, beta = cfg.gamma_beta_int()
    record = {
        "norm": cfg.norm, "features": cfg.features, "lanes": cfg.lanes,
        "in": str(cfg.in_format), "out": str(cfg.out_format), "param": str(cfg.param_format),
        "eps_int": cfg.eps_int, "affine": cfg.affine,
        "gamma": [int(v) for v in gamma], "beta": [int(v) for v in beta],
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class Identity:
    """The IDENTIFY record."""
    protocol: int
    norm: str
    affine: bool
    scalar_mul: str
    features: int
    lanes: int
    in_format: str
    out_format: str
    param_format: str
    eps_int: int
    config_hash: int
    clock_hz: int
    clocks_per_bit: int
    timeout_cycles: int
    max_payload: int
    board: str
    init_params_crc: int = 0xFFFF     # PCRC of the γ/β the image starts with

    SIZE = _IDENTITY.size

    def pack(self) -> bytes:
        def fmt(text):
            i, f = text[1:].split(".")
            return int(i), int(f)
        return _IDENTITY.pack(
            _MAGIC, self.protocol, _NORM_CODES[self.norm], int(self.affine),
            _SCALAR_MUL_CODES[self.scalar_mul], self.features, self.lanes,
            *fmt(self.in_format), *fmt(self.out_format), *fmt(self.param_format),
            self.eps_int, self.config_hash, self.clock_hz, self.clocks_per_bit,
            self.timeout_cycles, self.max_payload, self.board.encode("ascii").ljust(16, b"\0"),
            self.init_params_crc)

    @classmethod
    def unpack(cls, data: bytes) -> "Identity":
        if len(data) != _IDENTITY.size and data[:4] == _MAGIC and len(data) > 4 and data[4] != PROTOCOL_VERSION:
            raise ValueError(f"the board speaks protocol version {data[4]}, this driver version "
                             f"{PROTOCOL_VERSION}: build and program the image of this normgen version")
        if len(data) != _IDENTITY.size:
            raise ValueError(f"IDENTIFY record must be {_IDENTITY.size} bytes, not {len(data)}")
        (magic, protocol, norm, affine, scalar_mul, features, lanes, in_i, in_f, out_i, out_f,
         p_i, p_f, eps_int, chash, clock_hz, cpb, timeout, max_payload, board,
         init_pcrc) = _IDENTITY.unpack(data)
        if magic != _MAGIC:
            raise ValueError(f"IDENTIFY record has magic {magic!r}, not {_MAGIC!r}: not a normgen image")
        norms = {v: k for k, v in _NORM_CODES.items()}
        muls = {v: k for k, v in _SCALAR_MUL_CODES.items()}
        if norm not in norms or scalar_mul not in muls:
            raise ValueError(f"IDENTIFY record has unknown norm code {norm} or scalar_mul code {scalar_mul}")
        return cls(protocol, norms[norm], bool(affine), muls[scalar_mul], features, lanes,
                   f"s{in_i}.{in_f}", f"s{out_i}.{out_f}", f"s{p_i}.{p_f}", eps_int, chash,
                   clock_hz, cpb, timeout, max_payload, board.rstrip(b"\0").decode("ascii", "replace"),
                   init_pcrc)

    @property
    def baud(self) -> float:
        return self.clock_hz / self.clocks_per_bit

    def describe(self) -> str:
        return (f"{self.norm} N_max={self.features} P={self.lanes} in={self.in_format} "
                f"out={self.out_format} " + (f"param={self.param_format} " if self.affine else "no-affine ")
                + f"e={self.eps_int} scalar_mul={self.scalar_mul} hash={self.config_hash:08x} "
                f"board={self.board} clock={self.clock_hz / 1e6:g} MHz baud={self.baud:.0f}")

    #: fields that decide the numbers; a mismatch in any of them means the wrong image
    NUMERIC_FIELDS = ("protocol", "norm", "affine", "features", "lanes", "in_format", "out_format",
                      "param_format", "eps_int", "config_hash", "init_params_crc")

    def mismatches(self, other: "Identity") -> list[str]:
        """``"field: board X, expected Y"`` for each numeric field that differs."""
        return [f"{name}: board {getattr(self, name)!r}, expected {getattr(other, name)!r}"
                for name in self.NUMERIC_FIELDS if getattr(self, name) != getattr(other, name)]


def identity_from_config(cfg, link: LinkParams) -> Identity:
    return Identity(
        protocol=PROTOCOL_VERSION, norm=cfg.norm, affine=cfg.affine,
        scalar_mul=getattr(cfg, "scalar_mul", "parallel"), features=cfg.features, lanes=cfg.lanes,
        in_format=str(cfg.in_format), out_format=str(cfg.out_format),
        param_format=str(cfg.param_format), eps_int=cfg.eps_int, config_hash=config_hash(cfg),
        clock_hz=int(link.clock_hz), clocks_per_bit=link.clocks_per_bit,
        timeout_cycles=link.timeout_cycles, max_payload=MAX_PAYLOAD, board=link.board,
        init_params_crc=config_params_crc(cfg))

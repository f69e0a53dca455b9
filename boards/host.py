"""Host driver of a normgen board image: IDENTIFY, LOAD_PARAMS and NORMALIZE over a serial port.

The driver needs only a port object with pyserial's interface — ``write(bytes)``,
``read(size)`` honouring ``timeout`` (seconds), ``reset_input_buffer()`` and ``baudrate`` — so
the same code talks to a board through :class:`serial.Serial` and to the simulated board through
:class:`normgen.boards.simserial.SimSerial`.  A port may also offer ``clock()`` (seconds, its own
time base: the simulated port counts simulated time); otherwise :func:`time.monotonic` is used.

Usage::

    import serial
    from normgen.boards.host import BoardLink
    from normgen.boards.images import BOARDS

    image = BOARDS["icebreaker"]
    with serial.Serial("/dev/ttyUSB1", image.baud) as port:
        link = BoardLink(port, expected=image.identity)   # refuses a board running another image
        y_int = link.normalize_int(x_int)                  # list of 1-D integer arrays in, out

Every request is retried (a new sequence number each time) after an error reply, a reply that
does not decode, or a missing reply; after ``retries`` further attempts the driver raises
:class:`LinkError` naming the last problem.

γ/β: every OK reply carries the checksum (PCRC) of the γ/β the board holds; a NORMALIZE reply,
the checksum of the γ/β its vector was computed with.  The driver knows which γ/β the board
must hold — those of its last :meth:`BoardLink.load_params`, else ``params`` given to it, else
the image's own (the IDENTIFY record has their checksum) — and never returns a result computed
with other ones: it writes its γ/β again (when it knows their values) and repeats the vectors,
or raises :class:`BoardError`.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from . import protocol as proto

__all__ = ["BoardError", "LinkError", "IdentityMismatch", "BoardLink", "LinkStats"]

READ_CHUNK = 256


class BoardError(Exception):
    """A problem with the board or the link; the message says what and what to do."""


class LinkError(BoardError):
    """No valid reply after every attempt."""


class IdentityMismatch(BoardError):
    """The board runs another image than the one expected."""


class _ParamsDiffer(Exception):
    """A NORMALIZE reply was computed with other γ/β than the board must hold."""
    done: dict = {}


@dataclass
class LinkStats:
    requests: int = 0
    attempts: int = 0
    retries: int = 0
    timeouts: int = 0
    error_replies: Counter = field(default_factory=Counter)   # error name -> count
    stale_replies: int = 0                                    # replies to an abandoned attempt
    undecodable: int = 0                                      # frames the host could not decode
    param_restores: int = 0                                   # γ/β written again: the board's differed

    def summary(self) -> str:
        errors = ", ".join(f"{name}: {count}" for name, count in sorted(self.error_replies.items()))
        return (f"{self.requests} requests, {self.attempts} frames sent, {self.retries} retries, "
                f"{self.timeouts} reply timeouts" + (f", error replies ({errors})" if errors else "")
                + (f", {self.stale_replies} stale replies" if self.stale_replies else "")
                + (f", γ/β written again {self.param_restores} times" if self.param_restores else ""))


@dataclass
class _Request:
    cmd: int
    payload: bytes
    reply_len: int | None           # expected payload length of the OK reply, PCRC included (None: any)
    key: object = None              # the caller's tag (vector index)
    attempts: int = 0
    last_problem: str = ""


class BoardLink:
    """One board behind ``port``.

    Parameters
    ----------
    port : pyserial-like port, already open at the image's baud rate
    expected : :class:`~normgen.boards.protocol.Identity` the board must report (compared on the
        fields that decide the numbers), or None to accept any normgen image
    retries : further attempts per request after the first
    margin_s : time allowed on top of the wire time of a request and its reply (USB and OS
        latency on hardware; a few byte times in simulation)
    window : NORMALIZE requests in flight at once (2 overlaps a reply with the next request)
    identify : ask the board for its identity now (and check it against ``expected``)
    params : (γ, β) integers of the param format, N_max each: the γ/β the board must hold until
        :meth:`load_params` says otherwise (written when the board holds others).  None: the
        image's own, which the driver can check but not write back.
    """

    def __init__(self, port, *, expected: proto.Identity | None = None, retries: int = 5,
                 margin_s: float = 0.25, window: int = 2, identify: bool = True, params=None):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries!r}")
        if window not in (1, 2):
            raise ValueError(f"window must be 1 or 2, not {window!r}")
        self.port = port
        self.retries = int(retries)
        self.margin_s = float(margin_s)
        self.window = window
        self.stats = LinkStats()
        self.expected = expected
        self.identity: proto.Identity | None = None
        #: PCRC of the board's γ/β in its last OK reply (None before the first)
        self.board_params_crc: int | None = None
        self._params = None if params is None else tuple(np.asarray(v, dtype=np.int64).ravel() for v in params)
        self._seq = 0
        self._decoder = proto.FrameDecoder()
        self._clock = getattr(port, "clock", time.monotonic)
        if identify:
            self.identify()

    # ---- timing -------------------------------------------------------------------------------
    @property
    def baud(self) -> float:
        return float(self.port.baudrate)

    def wire_time(self, nbytes: int) -> float:
        return nbytes * 10 / self.baud

    def _device_timeout(self) -> float:
        ident = self.identity or self.expected
        return ident.timeout_cycles / ident.clock_hz if ident else 0.05

    def _reply_budget(self, request: _Request) -> float:
        """Seconds from the end of writing a request to the end of its reply."""
        reply = proto.OVERHEAD_BYTES + (request.reply_len if request.reply_len is not None
                                        else proto.Identity.SIZE + proto.PCRC_BYTES)
        device = self._device_timeout()
        ident = self.identity or self.expected
        if request.cmd == proto.CMD_LOAD_PARAMS and ident is not None:
            # the board writes the frame's beats (two cycles each), then redoes the checksum
            # over all N_max/P beats (one cycle each)
            beats = ident.features // ident.lanes
            device += (2 * beats + beats + 64) / ident.clock_hz
        return (self.wire_time(len(request.payload) + proto.OVERHEAD_BYTES) + self.wire_time(reply)
                + device + self.margin_s)

    # ---- frames -------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % 255 + 1            # 1..255; 0 is the board's "unknown"
        return self._seq

    def _flush_input(self):
        self.port.reset_input_buffer()
        self._decoder = proto.FrameDecoder()

    def _send(self, request: _Request) -> int:
        seq = self._next_seq()
        request.attempts += 1
        self.stats.attempts += 1
        self.port.write(proto.encode_frame(request.cmd, seq, request.payload))
        return seq

    def _read_frame(self, deadline: float) -> proto.Frame | None:
        """The next frame from the board, or None at the deadline."""
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            self.port.timeout = remaining
            # at most a chunk at a time: a false header in garbage may announce more bytes than
            # will ever come, and the decoder then finds the real frame behind it
            data = self.port.read(min(self._decoder.needed(), READ_CHUNK))
            if data:
                self._decoder.feed(data)

    def _check_reply(self, request: _Request, frame: proto.Frame) -> str | None:
        """None if ``frame`` is the OK reply to ``request``; otherwise what is wrong with it."""
        if frame.is_error:
            name = proto.ERROR_NAMES.get(frame.error_code, f"error 0x{frame.error_code or 0:02x}")
            self.stats.error_replies[name] += 1
            return f"the board answered {frame.describe()}"
        if frame.cmd != request.cmd | proto.REPLY_FLAG:
            self.stats.undecodable += 1
            return f"unexpected reply command 0x{frame.cmd:02x} to {proto.COMMAND_NAMES[request.cmd]}"
        if request.reply_len is not None and len(frame.payload) != request.reply_len:
            self.stats.undecodable += 1
            return (f"{proto.COMMAND_NAMES[request.cmd]} reply of {len(frame.payload)} bytes, "
                    f"expected {request.reply_len}")
        if len(frame.payload) < proto.PCRC_BYTES:
            self.stats.undecodable += 1
            return f"{proto.COMMAND_NAMES[request.cmd]} reply without its γ/β checksum"
        self.board_params_crc = proto.split_pcrc(frame.payload)[1]
        if request.cmd == proto.CMD_NORMALIZE and self.board_params_crc != self._wanted_params_crc():
            raise _ParamsDiffer()
        return None

    def _give_up(self, request: _Request):
        raise LinkError(
            f"{proto.COMMAND_NAMES[request.cmd]}: no valid reply after {request.attempts} attempts "
            f"(last problem: {request.last_problem}); check the port, the baud rate "
            f"({self.baud:.0f}) and that the board runs a normgen image")

    def run(self, requests, *, window: int = 1, on_done=None) -> dict:
        """Send ``requests`` (with at most ``window`` in flight), retrying each until its OK reply.

        Returns ``{request.key: reply Frame}``; ``on_done(request, frame)`` is called as each
        completes."""
        queue = deque(requests)
        in_flight: dict[int, tuple[_Request, float, float]] = {}   # seq -> (request, deadline, budget)
        order: deque[int] = deque()
        done = {}
        self._flush_input()
        try:
            self._run(queue, in_flight, order, done, window, on_done)
        except _ParamsDiffer as exc:
            exc.done = done
            raise
        return done

    def _run(self, queue, in_flight, order, done, window, on_done):
        while queue or in_flight:
            while queue and len(in_flight) < window:
                request = queue.popleft()
                if request.attempts == 0:
                    self.stats.requests += 1
                seq = self._send(request)
                # replies come in order: this one is due after the ones already in flight
                start = max([self._clock()] + [entry[1] for entry in in_flight.values()])
                budget = self._reply_budget(request)
                in_flight[seq] = (request, start + budget, budget)
                order.append(seq)
            oldest = order[0]
            request, deadline, budget = in_flight[oldest]
            frame = self._read_frame(deadline)
            if frame is None:
                self.stats.timeouts += 1
                request.last_problem = f"no reply within {budget:.3g} s"
                problem_seq = oldest
            elif frame.seq not in in_flight:
                self.stats.stale_replies += 1
                continue
            else:
                problem_seq = frame.seq
                request = in_flight[frame.seq][0]
                problem = self._check_reply(request, frame)
                if problem is None:
                    del in_flight[frame.seq]
                    order.remove(frame.seq)
                    done[request.key] = frame
                    if on_done is not None:
                        on_done(request, frame)
                    continue
                request.last_problem = problem
            # retry the failed request (first, to keep results flowing in order)
            del in_flight[problem_seq]
            order.remove(problem_seq)
            if request.attempts > self.retries:
                self._give_up(request)
            self.stats.retries += 1
            queue.appendleft(request)

    # ---- commands ------------------------------------------------------------------------------
    def identify(self) -> proto.Identity:
        """Ask the board who it is; raise :class:`IdentityMismatch` if it is not ``expected``."""
        # (any length: a board of another protocol version is told apart by its record)
        request = _Request(proto.CMD_IDENTIFY, b"", None, key="identify")
        frame = self.run([request])["identify"]
        try:
            identity = proto.Identity.unpack(proto.split_pcrc(frame.payload)[0])
        except ValueError as exc:
            raise IdentityMismatch(f"the board's IDENTIFY answer is not understood: {exc}") from None
        self.identity = identity
        if self.expected is not None:
            problems = identity.mismatches(self.expected)
            if problems:
                raise IdentityMismatch(
                    "the board runs another image than expected (" + "; ".join(problems) + "). "
                    f"Board: {identity.describe()}. Expected: {self.expected.describe()}. "
                    "Program the right bitstream (normgen board build/prog) or pick the matching --board.")
        return identity

    def _require_identity(self) -> proto.Identity:
        if self.identity is None:
            self.identify()
        return self.identity

    def load_params(self, gamma_int, beta_int, *, chunk_bytes: int = 4096):
        """Write γ/β (integers of the param format, N_max each) through LOAD_PARAMS frames; from
        now on the board must hold these."""
        gamma, beta = self._checked_params(gamma_int, beta_int)
        self._params = (gamma, beta)
        self._chunk_bytes = chunk_bytes
        self._write_params()

    def _checked_params(self, gamma_int, beta_int):
        ident = self._require_identity()
        if not ident.affine:
            raise BoardError("the board's core has no affine stage: γ/β cannot be loaded")
        gamma = np.asarray(gamma_int, dtype=np.int64).ravel()
        beta = np.asarray(beta_int, dtype=np.int64).ravel()
        if gamma.shape != (ident.features,) or beta.shape != (ident.features,):
            raise BoardError(f"γ and β must hold N_max = {ident.features} values each, not "
                             f"{gamma.shape[0]} and {beta.shape[0]}")
        return gamma, beta

    def _wanted_params_crc(self) -> int:
        """PCRC of the γ/β the board must hold."""
        ident = self._require_identity()
        if self._params is None:
            return ident.init_params_crc
        return proto.params_crc(*self._params, ident.lanes, _format_width(ident.param_format))

    def _write_params(self):
        """Write ``self._params`` whole, until the board's checksum says they are there."""
        gamma, beta = self._checked_params(*self._params)
        ident = self.identity
        chunk_bytes = getattr(self, "_chunk_bytes", 4096)
        width = _format_width(ident.param_format)
        lanes = ident.lanes
        nbytes = proto.element_bytes(width)
        beat_bytes = 2 * lanes * nbytes
        per_frame = max(1, min(chunk_bytes, proto.MAX_PAYLOAD - 2) // beat_bytes)
        beats = ident.features // lanes
        requests = []
        for start in range(0, beats, per_frame):
            stop = min(beats, start + per_frame)
            payload = bytearray(int(start).to_bytes(2, "little"))
            for beat in range(start, stop):
                sl = slice(beat * lanes, (beat + 1) * lanes)
                payload += proto.encode_elements(gamma[sl], width) + proto.encode_elements(beta[sl], width)
            requests.append(_Request(proto.CMD_LOAD_PARAMS, bytes(payload), proto.PCRC_BYTES, key=start))
        for _ in range(self.retries + 1):
            for request in requests:
                request.attempts = 0
            self.run(requests, window=1)
            if self.board_params_crc == self._wanted_params_crc():
                return
        raise LinkError(f"LOAD_PARAMS: the board's γ/β checksum is {self.board_params_crc:04x} after "
                        f"{self.retries + 1} complete writes, expected {self._wanted_params_crc():04x}")

    def _ensure_params(self):
        """Make the board hold the γ/β it must hold, if its last reply says it does not."""
        want = self._wanted_params_crc()
        if self.board_params_crc is None or self.board_params_crc == want:
            return
        if self._params is None:
            raise BoardError(
                f"the board holds other γ/β (checksum {self.board_params_crc:04x}) than its image's "
                f"own ({want:04x}), and the driver does not know their values: load them with "
                "load_params() or give them as params= (normgen board run does)")
        self.stats.param_restores += 1
        self._write_params()

    def normalize_int(self, vectors, *, progress: bool = False) -> list[np.ndarray]:
        """Normalize integer vectors (each 1-D, N a multiple of P, 1 <= N <= N_max) on the board;
        returns the output integers of each."""
        ident = self._require_identity()
        w_in, w_out = _format_width(ident.in_format), _format_width(ident.out_format)
        b_out = proto.element_bytes(w_out)
        requests = []
        for index, vector in enumerate(vectors):
            x = np.asarray(vector, dtype=np.int64).ravel()
            n = x.shape[0]
            if not 1 <= n <= ident.features or n % ident.lanes:
                raise BoardError(f"vector {index} has N = {n} elements; the board takes "
                                 f"1..{ident.features} (N_max), a multiple of P = {ident.lanes}")
            if n * proto.element_bytes(w_in) > proto.MAX_PAYLOAD:
                raise BoardError(f"vector {index} of {n} elements exceeds the frame limit")
            try:
                payload = proto.encode_elements(x, w_in)
            except ValueError as exc:
                raise BoardError(f"vector {index}: {exc} ({ident.in_format})") from None
            requests.append(_Request(proto.CMD_NORMALIZE, payload, n * b_out + proto.PCRC_BYTES, key=index))
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(requests), unit="vec", desc="normalize", leave=False)
        done = {}
        try:
            for _ in range(self.retries + 2):
                self._ensure_params()
                try:
                    done.update(self.run([r for r in requests if r.key not in done], window=self.window,
                                         on_done=(lambda r, f: bar.update(1)) if bar is not None else None))
                    break
                except _ParamsDiffer as exc:
                    # the result was computed with other γ/β: dropped; the γ/β are written again
                    done.update(exc.done)
            else:
                raise LinkError(f"NORMALIZE: the board's γ/β changed again after each of "
                                f"{self.retries + 1} writes (checksum {self.board_params_crc:04x})")
        finally:
            if bar is not None:
                bar.close()
        return [proto.decode_elements(proto.split_pcrc(done[index].payload)[0], w_out)
                for index in range(len(requests))]


def _format_width(text: str) -> int:
    i, f = text[1:].split(".")
    return int(i) + int(f)

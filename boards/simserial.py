"""A serial port whose other end is the UART pins of a simulated board (cocotb).

:class:`SimSerial` has the part of pyserial's interface the host driver uses — ``write``,
``read(size)`` with ``timeout`` in seconds, ``reset_input_buffer``, ``in_waiting``,
``baudrate``, ``flush`` — plus ``clock()`` (the simulated time, which the driver uses for its
deadlines) and ``sleep(seconds)`` (let simulated time pass: a stalled host).

Its methods block, so the host code runs in a thread started with :func:`cocotb.task.bridge`;
each call hands control to the simulator through :func:`cocotb.task.resume` until it is done.
Two coroutines play the USB bridge's UART: one sends the written bytes on the board's ``rx`` pin
(8N1 at ``baudrate``, optionally off by ``skew`` to test the receiver's tolerance), the other
samples the board's ``tx`` pin in the middle of each bit and queues the received bytes.  They are
written from the 8N1 definition, independently of the gateware UART.
"""
from __future__ import annotations

import math
from collections import deque

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.task import resume
from cocotb.triggers import Event, FallingEdge, First, Timer

__all__ = ["SimSerial"]


class SimSerial:
    """pyserial-like port on the board pins ``rx`` (driven) and ``tx`` (sampled).

    Parameters
    ----------
    rx, tx : cocotb handles of the board's UART pins
    baudrate : bits per second (simulated time)
    skew : relative error of this side's bit time (0.02 = 2 % slow)

    Attributes
    ----------
    corrupt : None, or a function applied to the bytes of each :meth:`write` before they go on
        the line (a noisy line: flipped bits, lost or extra bytes)
    """

    def __init__(self, rx, tx, *, baudrate: float, skew: float = 0.0):
        self._rx_pin = rx
        self._tx_pin = tx
        self.baudrate = baudrate
        self.skew = skew
        self.timeout = None
        self.corrupt = None
        self._to_board: deque[int] = deque()
        self._from_board = bytearray()
        self._to_board_event = Event()
        self._from_board_event = Event()
        self._idle_event = Event()
        self._sending = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.framing_errors = 0
        self._tasks = []

    # ---- simulator side ---------------------------------------------------------------------
    @property
    def bit_ps(self) -> int:
        return round(1e12 / self.baudrate)

    def start(self):
        """Start the two line coroutines (call from a cocotb test)."""
        self._rx_pin.value = 1
        self._tasks = [cocotb.start_soon(self._drive()), cocotb.start_soon(self._sample())]

    def stop(self):
        for task in self._tasks:
            task.cancel()

    async def _drive(self):
        while True:
            while not self._to_board:
                self._sending = False
                self._idle_event.set()
                self._to_board_event.clear()
                await self._to_board_event.wait()
            self._sending = True
            item = self._to_board.popleft()
            bit = round(self.bit_ps * (1 + self.skew))
            if isinstance(item, tuple):          # ("break", bit times): the line held low
                self._rx_pin.value = 0
                await Timer(bit * item[1], "ps")
                self._rx_pin.value = 1
                await Timer(bit, "ps")
                continue
            for level in [0] + [(item >> k) & 1 for k in range(8)] + [1]:
                self._rx_pin.value = level
                await Timer(bit, "ps")
            self.bytes_sent += 1

    async def _sample(self):
        bit = self.bit_ps
        while True:
            await FallingEdge(self._tx_pin)
            await Timer(bit // 2, "ps")
            if int(self._tx_pin.value) != 0:
                continue                        # a glitch, not a start bit
            byte = 0
            for k in range(8):
                await Timer(bit, "ps")
                byte |= int(self._tx_pin.value) << k
            await Timer(bit, "ps")
            if int(self._tx_pin.value) != 1:
                self.framing_errors += 1
                continue
            self._from_board.append(byte)
            self.bytes_received += 1
            self._from_board_event.set()

    # ---- host side (blocking; call from a bridge thread) -------------------------------------
    def clock(self) -> float:
        """Simulated time in seconds."""
        return self._now()

    @resume
    async def _now(self) -> float:
        return get_sim_time("ps") * 1e-12

    @resume
    async def write(self, data) -> int:
        data = bytes(data)
        count = len(data)
        if self.corrupt is not None:
            data = bytes(self.corrupt(data))
        self._to_board.extend(data)
        self._to_board_event.set()
        return count

    @resume
    async def read(self, size: int = 1) -> bytes:
        # rounded up: a timeout of a fraction of a picosecond still lets time pass (rounded down
        # to 0, a caller that waits for a deadline would call again and again at the same time)
        deadline = None if self.timeout is None else get_sim_time("ps") + math.ceil(self.timeout * 1e12)
        while len(self._from_board) < size:
            self._from_board_event.clear()
            if deadline is None:
                await self._from_board_event.wait()
                continue
            remaining = deadline - get_sim_time("ps")
            if remaining <= 0:
                break
            await First(self._from_board_event.wait(), Timer(remaining, "ps"))
        count = min(size, len(self._from_board))
        data = bytes(self._from_board[:count])
        del self._from_board[:count]
        return data

    @resume
    async def send_break_bits(self, bits: int = 12):
        """Queue a break: the line low for ``bits`` bit times (then one idle bit).  Inside a
        frame it takes the place of one byte, received with a framing error."""
        self._to_board.append(("break", int(bits)))
        self._to_board_event.set()

    @property
    def in_waiting(self) -> int:
        return len(self._from_board)

    def reset_input_buffer(self):
        self._from_board.clear()

    def reset_output_buffer(self):
        self._to_board.clear()

    @resume
    async def flush(self):
        """Wait until every written byte is on the wire (pyserial's ``flush``)."""
        while self._to_board or self._sending:
            self._idle_event.clear()
            await self._idle_event.wait()

    @resume
    async def sleep(self, seconds: float):
        """Let ``seconds`` of simulated time pass (the host sends nothing)."""
        await Timer(max(1, round(seconds * 1e12)), "ps")

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

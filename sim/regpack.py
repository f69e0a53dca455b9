"""Flip-flops moved into the registers of ECP5 block RAMs and multipliers, on Yosys's netlist.

Yosys ``synth_ecp5`` maps a block RAM's read data and a multiplier's operands and product to
DP16KD and MULT18X18D cells used without their own registers, and keeps the flip-flops around
them in the fabric: a DP16KD's read data then takes 5.8 ns from the clock (nextpnr's model of the
unregistered output), a multiplier's operands and product travel to and from fabric flip-flops.
Vendor tools move such flip-flops into the blocks; this pass does it on the JSON netlist, before
nextpnr:

- DP16KD, read port ``B`` (or ``A``) without its output register (``REGMODE_B = "NOREG"``): when
  every used read-data bit drives exactly one flip-flop and nothing else, those flip-flops become
  the block's output register (``REGMODE_B = "OUTREG"``, ``OCEB`` their clock enable).  A block 36
  bits wide (pseudo dual port: one read on ``DOA`` and ``DOB`` together) moves both halves or
  neither, and gets ``REGMODE_A = REGMODE_B = "OUTREG"`` with one enable on ``OCEA`` and ``OCEB``.
- MULT18X18D without registers: when every used product bit drives exactly one flip-flop, those
  become the output register (``REG_OUTPUT_CLK = "CLK0"``, clock enable ``CE1``); when every ``A``
  and ``B`` operand bit comes from a flip-flop or is a constant, the block registers its
  operands itself (``REG_INPUTA_CLK = REG_INPUTB_CLK = "CLK0"``, clock enable ``CE0``) and reads
  the flip-flops' inputs; a flip-flop that drives nothing else is removed.

A flip-flop moves only if it is clocked by the block's clock (not inverted), has no set/reset
(``LSR`` the constant 0), starts at 0 (``REGSET = "RESET"``, like the blocks' registers), and
shares one clock enable with the others of its group.  Each move keeps the cycle behaviour: a
register in front of the multiplier or behind the read data is the same register inside the
block.  The block registers start at 0 after configuration, as those flip-flops do.  Constant
operand bits are registered too, which changes nothing as long as one operand has no constant 1:
until the first load that operand is 0 inside the block as outside, and so is the product.
"""
from collections import defaultdict

__all__ = ["pack_registers"]

_MULT_A = [f"A{k}" for k in range(18)]
_MULT_B = [f"B{k}" for k in range(18)]
_MULT_P = [f"P{k}" for k in range(36)]


def _param(cell, name, default=""):
    value = cell["parameters"].get(name, default)
    return value.strip() if isinstance(value, str) else value


def _data_width(cell, side):
    """A DP16KD port's ``DATA_WIDTH`` (Yosys writes integers as 32-bit binary strings)."""
    text = str(_param(cell, f"DATA_WIDTH_{side}", "18"))
    return int(text, 2) if len(text) == 32 and set(text) <= {"0", "1"} else int(text)


class _Netlist:
    def __init__(self, module):
        self.module = module
        self.cells = module["cells"]
        self.sinks = defaultdict(list)          # net bit -> [(cell, port)]
        self.driver = {}                        # net bit -> (cell, port)
        for name, cell in self.cells.items():
            for port, bits in cell["connections"].items():
                direction = cell.get("port_directions", {}).get(port, "input")
                for bit in bits:
                    if isinstance(bit, str):
                        continue
                    if direction == "output":
                        self.driver[bit] = (name, port)
                    else:
                        self.sinks[bit].append((name, port))
        for port in module.get("ports", {}).values():
            if port["direction"] != "input":
                for bit in port["bits"]:
                    if not isinstance(bit, str):
                        self.sinks[bit].append((None, "port"))

    def net(self, cell, port):
        bits = self.cells[cell]["connections"].get(port)
        return bits[0] if bits else None

    def movable_ff(self, name, clock):
        """The clock enable (a net bit, or "1") of a flip-flop that may move into a block
        clocked by ``clock``, or None."""
        cell = self.cells.get(name)
        if cell is None or cell["type"] != "TRELLIS_FF":
            return None
        if _param(cell, "CLKMUX", "CLK") != "CLK" or self.net(name, "CLK") != clock:
            return None
        if _param(cell, "REGSET", "RESET") != "RESET" or self.net(name, "LSR") not in (None, "0"):
            return None
        if _param(cell, "LSRMODE", "LSR") != "LSR":
            return None
        cemux = _param(cell, "CEMUX", "1")
        if cemux == "1":
            return "1"
        if cemux == "CE":
            ce = self.net(name, "CE")
            return "1" if ce == "1" else ce if ce not in (None, "0") else None
        return None

    def only_ff_sink(self, bit, clock):
        """(flip-flop, its clock enable) when ``bit`` drives exactly one thing, a movable
        flip-flop's data input."""
        sinks = self.sinks.get(bit, [])
        if len(sinks) != 1:
            return None
        name, port = sinks[0]
        if name is None or port != "DI":
            return None
        ce = self.movable_ff(name, clock)
        return (name, ce) if ce is not None else None


def _same_enable(found):
    enables = {ce for _, ce in found}
    return enables.pop() if len(enables) == 1 else None


def _absorb_outputs(net, cell_name, pins, clock):
    """The flip-flops behind ``pins`` of a block, if all of them can move: [(pin, ff)], enable."""
    cell = net.cells[cell_name]
    used = [(pin, cell["connections"][pin][0]) for pin in pins
            if pin in cell["connections"] and not isinstance(cell["connections"][pin][0], str)
            and net.sinks.get(cell["connections"][pin][0])]
    if not used:
        return None
    found = []
    for pin, bit in used:
        hit = net.only_ff_sink(bit, clock)
        if hit is None:
            return None
        found.append((pin, hit))
    enable = _same_enable([hit for _, hit in found])
    if enable is None:
        return None
    return [(pin, ff) for pin, (ff, _) in found], enable


def _move_outputs(net, cell_name, moves, removed):
    cell = net.cells[cell_name]
    for pin, ff in moves:
        cell["connections"][pin] = list(net.cells[ff]["connections"]["Q"])
        removed.add(ff)


def pack_registers(netlist: dict, top: str) -> dict:
    """Move flip-flops into the DP16KD and MULT18X18D cells of ``netlist['modules'][top]`` (a
    flattened Yosys JSON netlist, changed in place).  Returns how many registers moved:
    ``{"bram_output_bits", "dsp_output_bits", "dsp_operand_bits", "flipflops_removed"}``."""
    module = netlist["modules"][top]
    net = _Netlist(module)
    removed = set()
    counts = {"bram_output_bits": 0, "dsp_output_bits": 0, "dsp_operand_bits": 0}

    for name, cell in list(net.cells.items()):
        if cell["type"] != "DP16KD":
            continue
        # 36 bits wide (pseudo dual port), one read leaves on DOA and DOB together: both halves
        # move or neither, and both ports' output registers are set up alike
        wide = 36 in (_data_width(cell, "A"), _data_width(cell, "B"))
        for sides in (["A", "B"],) if wide else (["A"], ["B"]):
            if any(_param(cell, f"REGMODE_{side}", "NOREG") != "NOREG"
                   or _param(cell, f"CLK{side}MUX", f"CLK{side}") not in (f"CLK{side}", "CLK")
                   or net.net(name, f"RST{side}") not in (None, "0") for side in sides):
                continue
            # an unregistered port ignores OCE: it may be tied off, not driven by logic
            if wide and any(net.net(name, f"OCE{side}") not in (None, "0", "1") for side in sides):
                continue
            if not wide and net.net(name, f"OCE{sides[0]}") not in (None, "1"):
                continue
            clocks = {net.net(name, f"CLK{side}") for side in sides}
            if len(clocks) != 1:
                continue
            clock = clocks.pop()
            hit = _absorb_outputs(net, name, [f"DO{side}{k}" for side in sides for k in range(18)], clock)
            if hit is None:
                continue
            moves, enable = hit
            _move_outputs(net, name, moves, removed)
            for side in sides:
                cell["parameters"][f"REGMODE_{side}"] = "OUTREG"
                cell["connections"][f"OCE{side}"] = [enable]
            counts["bram_output_bits"] += len(moves)

    for name, cell in list(net.cells.items()):
        if cell["type"] != "MULT18X18D" or any(_param(cell, f"REG_{r}_CLK", "NONE") != "NONE"
                                               for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")):
            continue
        if any(net.net(name, p) not in ("0", "1") for p in ("SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB")):
            continue
        # the clock: that of the flip-flops behind the product
        product_bits = [cell["connections"][p][0] for p in _MULT_P if p in cell["connections"]
                        and not isinstance(cell["connections"][p][0], str)
                        and net.sinks.get(cell["connections"][p][0])]
        first = net.sinks.get(product_bits[0], [(None, None)])[0][0] if product_bits else None
        clock = net.net(first, "CLK") if first in net.cells else None
        if clock is None:
            continue
        out = _absorb_outputs(net, name, _MULT_P, clock)
        if out is None:
            continue
        operands = []
        # an operand whose bits are flip-flops and constant 0s is 0 until the first load, with
        # its flip-flops outside or inside: then so is the product, whatever the other operand
        zero_first = [all(cell["connections"].get(p, ["0"])[0] != "1" for p in pins) for pins in (_MULT_A, _MULT_B)]
        for pin in _MULT_A + _MULT_B:
            bit = cell["connections"].get(pin, ["0"])[0]
            if bit in ("0", "1"):
                continue
            source = net.driver.get(bit) if not isinstance(bit, str) else None
            ce = net.movable_ff(source[0], clock) if source and source[1] == "Q" else None
            if ce is None:
                operands = None
                break
            operands.append((pin, source[0], ce))
        cell["connections"]["CLK0"] = [clock]
        cell["connections"]["RST0"] = ["0"]
        for port in ("CLK0", "RST0", "CE0", "CE1"):
            cell.setdefault("port_directions", {})[port] = "input"
        cell["connections"]["CE0"] = ["1"]
        moves, enable = out
        _move_outputs(net, name, moves, removed)
        cell["parameters"].update({"REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE1", "REG_OUTPUT_RST": "RST0"})
        cell["connections"]["CE1"] = [enable]
        counts["dsp_output_bits"] += len(moves)
        if operands and any(zero_first):
            enable_in = _same_enable([(ff, ce) for _, ff, ce in operands])
            if enable_in is not None:
                for pin, ff, _ in operands:
                    bit = cell["connections"][pin][0]
                    net.sinks[bit].remove((name, pin))
                    cell["connections"][pin] = list(net.cells[ff]["connections"]["DI"])
                    counts["dsp_operand_bits"] += 1
                for r in ("INPUTA", "INPUTB"):
                    cell["parameters"].update({f"REG_{r}_CLK": "CLK0", f"REG_{r}_CE": "CE0", f"REG_{r}_RST": "RST0"})
                cell["connections"]["CE0"] = [enable_in]
                for _, ff, _ in operands:
                    if not net.sinks.get(net.cells[ff]["connections"]["Q"][0]) and ff not in removed:
                        removed.add(ff)

    for ff in removed:
        del net.cells[ff]
    counts["flipflops_removed"] = len(removed)
    return counts

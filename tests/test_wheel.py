"""The wheel works outside the checkout.

The tracked files of the checkout are copied to a temporary directory, built into a wheel with
``pip wheel``, and the wheel is installed (without its dependencies) into a new virtual
environment with no system site packages.  The dependencies are this test environment's own
packages, made visible to the new environment by a ``.pth`` file, so the test needs no network
and no package index; normgen itself comes only from the wheel.  The CLI then runs in another
temporary directory, and its results are compared with what the golden model computes here.
"""
from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from normgen.hw.config import CoreConfig
from normgen.sim import golden

# building the wheel alone takes half a minute, the whole module over a minute
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--features", "16", "--lanes", "2", "--in-format", "s3.5", "--out-format", "s3.5",
         "--param-format", "s2.6", "--eps", "0.01"]


def _source_tree(target: Path) -> Path:
    """The checkout's tracked files (or, outside git, its files but builds and venvs) in ``target``."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (REPO / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, target / name)
    else:
        shutil.copytree(REPO, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".venv", "build", ".git", "*.egg-info", "__pycache__"))
    return target


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of the new venv, normgen executable, environment, working directory, wheel)."""
    base = tmp_path_factory.mktemp("wheel")
    source = _source_tree(base / "src")
    wheel_dir = base / "dist"
    isolation = ["--no-build-isolation"] if _has_setuptools() else []      # offline when it can be
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(wheel_dir), str(source)], cwd=base)
    (wheel,) = wheel_dir.glob("normgen-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    # the dependencies: this environment's site directories, after the new venv's own
    deps = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
            if Path(p).is_dir()]
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NORMGEN_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = base / "work"
    work.mkdir()
    return python, venv / "bin" / "normgen", env, work, wheel


def _has_setuptools() -> bool:
    """Whether this environment can build the wheel itself (pyproject.toml asks setuptools >= 68);
    otherwise pip builds it in an isolated environment fetched from the package index."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        major = int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return False
    return major >= 68


def test_wheel_holds_the_packages_and_no_repository_files(installed):
    *_, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("hw/vectornorm.py", "hw/edge.py", "hw/kinds.py", "hw/config.py", "host/cli.py", "host/fusesoc.py", "sim/golden.py",
                   "sim/cocotb_core.py", "sim/runner.py", "boards/images.py", "boards/cli.py"):
        assert f"normgen/{module}" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "docs/", "normgen/tests"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "normgen = normgen.host.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_modules_come_from_the_wheel(installed):
    python, _, env, work, _ = installed
    out = _run([str(python), "-c", "import normgen.hw.vectornorm, normgen.host.cli, normgen.sim.golden, normgen.boards.cli;"
                "import sys; print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('normgen.')))"],
               env=env, cwd=work).stdout.split()
    assert out
    venv = python.parent.parent.resolve()
    for path in out:
        assert Path(path).resolve().is_relative_to(venv), path
        assert not Path(path).resolve().is_relative_to(REPO), path


def test_model_matches_the_golden_model(installed):
    _, normgen, env, work, _ = installed
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1.5, (6, 16)), np.full((1, 16), 0.75), rng.uniform(-4, 4, (3, 16))])
    np.save(work / "x.npy", x)
    np.save(work / "g.npy", rng.uniform(-2, 2, 16))
    _run([str(normgen), "model", *SMALL, "--gamma", "g.npy", "--input", "x.npy", "--output", "y.npy"],
         env=env, cwd=work)
    y = np.load(work / "y.npy")
    cfg = CoreConfig(features=16, lanes=2, in_format="s3.5", out_format="s3.5", param_format="s2.6",
                     eps=0.01).with_params(gamma=np.load(work / "g.npy"))
    x_int, _ = cfg.in_format.quantize(x)
    expected = cfg.out_format.to_float(golden.normalize(cfg, x_int))
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, expected)


def test_verilog_and_core_file(installed):
    _, normgen, env, work, _ = installed
    _run([str(normgen), "verilog", *SMALL, "--norm", "rmsnorm", "-o", "ip/rms.v", "--module-name", "rms",
          "--core-file", "ip/rms.core"], env=env, cwd=work)
    from normgen.hw import generate_verilog
    cfg = CoreConfig(norm="rmsnorm", features=16, lanes=2, in_format="s3.5", out_format="s3.5",
                     param_format="s2.6", eps=0.01)
    assert (work / "ip" / "rms.v").read_text() == generate_verilog(cfg, module_name="rms")
    core = (work / "ip" / "rms.core").read_text()
    assert core.startswith("CAPI=2:\n") and '      - "rms.v"\n' in core


def test_board_commands(installed):
    _, normgen, env, work, _ = installed
    assert "prog" in _run([str(normgen), "board", "--help"], env=env, cwd=work).stdout
    dry = _run([str(normgen), "board", "prog", "--board", "icebreaker", "--dry-run"], env=env, cwd=work)
    text = dry.stdout + dry.stderr
    assert "iceprog" in text
    # an installed package builds and programs below the working directory, never the checkout
    assert str(work / "build" / "icebreaker") in text and str(REPO) not in text


def test_simulation_runs_from_the_wheel(installed):
    """The cocotb testbench of the installed package on a small core, from outside the checkout."""
    python, _, env, work, _ = installed
    result = _run([str(python), "-m", "normgen.sim.runner", *SMALL, "--per-class", "1"], env=env, cwd=work)
    bit_exact = re.search(r"bit-exact (\d+)/(\d+)", result.stdout)
    assert bit_exact and bit_exact[1] == bit_exact[2] != "0", result.stdout
    assert (work / "build" / "cocotb").is_dir()

"""The ``normgen`` command line: ``model`` writes the golden model's outputs, every user error
exits with status 2 and a one-line message and writes nothing, ``verilog`` emits a core."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from normgen.host import cli
from normgen.hw.config import CoreConfig
from normgen.sim import golden


def run(argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return (0 if status is None else status), out, err


def quantize_by_hand(values, frac_bits: int, width: int) -> tuple[np.ndarray, int]:
    """Round half to even with exact fractions, then saturate; also count the saturated ones."""
    low, high = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    rounded = [round(Fraction(float(v)) * 2 ** frac_bits) for v in np.ravel(values)]
    saturated = sum(1 for r in rounded if not low <= r <= high)
    clipped = np.array([min(max(r, low), high) for r in rounded], dtype=np.int64)
    return clipped.reshape(np.shape(values)), saturated


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(2024)
    x = np.clip(rng.normal(0.0, 3.0, (5, 48)), -7.9, 7.9)
    x[0, :3] = [9.0, -8.5, 100.0]                    # three values beyond s4.12's [-8, 8)
    x[1, :] = 0.25                                   # a constant vector
    gamma = rng.uniform(-3, 3, 64)
    gamma[5] = 0.0
    beta = rng.uniform(-1, 1, 64)
    paths = {name: tmp_path / f"{name}.npy" for name in ("x", "gamma", "beta")}
    np.save(paths["x"], x)
    np.save(paths["gamma"], gamma)
    np.save(paths["beta"], beta)
    paths["out"] = tmp_path / "out" / "y.npy"
    paths["tmp"] = tmp_path
    return paths


def test_model_output_equals_golden_on_the_quantized_input(files, capsys):
    status, out, err = run(["model", "--norm", "layernorm", "--features", 64, "--lanes", 4,
                            "--eps", "1e-5", "--gamma", files["gamma"], "--beta", files["beta"],
                            "--input", files["x"], "--output", files["out"]], capsys)
    assert status == 0, err
    y = np.load(files["out"])
    x = np.load(files["x"])
    assert y.dtype == np.float64 and y.shape == x.shape
    # y lies exactly on the s4.12 grid
    assert np.array_equal(y * 4096, np.round(y * 4096))

    x_int, saturated = quantize_by_hand(x, 12, 16)
    gamma_int, _ = quantize_by_hand(np.load(files["gamma"]), 12, 16)
    beta_int, _ = quantize_by_hand(np.load(files["beta"]), 12, 16)
    cfg = CoreConfig(features=64, lanes=4, eps=1e-5, gamma=gamma_int / 4096, beta=beta_int / 4096)
    assert np.array_equal(cfg.gamma_int, gamma_int)
    assert np.array_equal(y * 4096, golden.normalize(cfg, x_int).astype(np.float64))

    assert saturated == 3
    assert re.search(rf"\b{saturated} value\(s\) saturated", err), err
    e = round(Fraction(1e-5) * 2 ** 24)
    assert f"effective eps = {float(Fraction(e, 2 ** 24))!r}" in err
    assert str(files["out"]) in err
    assert out == ""
    plain = files["tmp"] / "plain"
    plain.write_bytes(b"")
    assert files["out"].stat().st_mode == plain.stat().st_mode     # not mkstemp's 0600
    assert os.listdir(files["out"].parent) == ["y.npy"]


@pytest.mark.parametrize("options, norm", [
    (["--norm", "rmsnorm", "--no-affine", "--eps", "0"], "rmsnorm"),
    (["--norm", "layernorm", "--in-format", "s2.6", "--out-format", "s3.5", "--param-format", "s2.6",
      "--eps", str(2 ** -10)], "layernorm"),
])
def test_model_other_configurations(files, capsys, options, norm):
    x = np.load(files["x"])[:, :32]
    np.save(files["x"], x)
    status, _, err = run(["model", "--features", 32, *options, "--input", files["x"],
                          "--output", files["out"]], capsys)
    assert status == 0, err
    fin = options[options.index("--in-format") + 1] if "--in-format" in options else "s4.12"
    fout = options[options.index("--out-format") + 1] if "--out-format" in options else "s4.12"
    i_bits, f_bits = map(int, fin[1:].split("."))
    o_frac = int(fout.split(".")[1])
    x_int, saturated = quantize_by_hand(x, f_bits, i_bits + f_bits)
    cfg = CoreConfig(features=32, norm=norm, in_format=fin, out_format=fout,
                     param_format=options[options.index("--param-format") + 1] if "--param-format" in options else "s4.12",
                     eps=float(options[options.index("--eps") + 1]), affine="--no-affine" not in options)
    expected = golden.normalize(cfg, x_int) * 2.0 ** -o_frac
    assert np.array_equal(np.load(files["out"]), expected)
    assert f"{saturated} value(s) saturated" in err


def test_model_vectors_shorter_than_n_max_use_the_first_gammas(files, capsys):
    x = np.load(files["x"])[:, :8]
    np.save(files["x"], x)
    status, _, err = run(["model", "--features", 64, "--gamma", files["gamma"], "--input", files["x"],
                          "--output", files["out"]], capsys)
    assert status == 0, err
    gamma_int, _ = quantize_by_hand(np.load(files["gamma"]), 12, 16)
    x_int, _ = quantize_by_hand(x, 12, 16)
    cfg = CoreConfig(features=64, gamma=gamma_int / 4096)
    assert np.array_equal(np.load(files["out"]) * 4096, golden.normalize(cfg, x_int))


def _write(path, content):
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    else:
        path.write_text(content)
    return path


ERRORS = [
    # (name, extra files to write {name: content}, argv after "model", words the message must hold)
    ("missing input", {}, ["--input", "{tmp}/nope.npy"], ["--input", "nope.npy", "does not exist"]),
    ("input is a directory", {}, ["--input", "{tmp}"], ["--input", "directory"]),
    ("input is text", {"t.npy": "1,2,3\n"}, ["--input", "{tmp}/t.npy"], ["--input", "not a .npy"]),
    ("input is npz", {"z.npz": {"a": np.ones((2, 4))}}, ["--input", "{tmp}/z.npz"], ["--input", ".npz"]),
    ("input truncated", {"cut.npy": None}, ["--input", "{tmp}/cut.npy"], ["--input", "cut.npy"]),
    ("input 1-D", {"v.npy": np.ones(8)}, ["--input", "{tmp}/v.npy"], ["2-D", "(8,)"]),
    ("input 3-D", {"v.npy": np.ones((2, 2, 8))}, ["--input", "{tmp}/v.npy"], ["2-D", "(2, 2, 8)"]),
    ("input N = 0", {"v.npy": np.ones((3, 0))}, ["--input", "{tmp}/v.npy"], ["N = 0"]),
    ("N > N_max", {"v.npy": np.ones((2, 65))}, ["--input", "{tmp}/v.npy"], ["N = 65", "64"]),
    ("N not a multiple of lanes", {"v.npy": np.ones((2, 30))}, ["--lanes", "4", "--input", "{tmp}/v.npy"],
     ["N = 30", "lanes = 4"]),
    ("NaN input", {"v.npy": np.r_[np.ones(7), np.nan].reshape(1, 8)}, ["--input", "{tmp}/v.npy"], ["NaN"]),
    ("inf input", {"v.npy": np.r_[np.ones(7), -np.inf].reshape(1, 8)}, ["--input", "{tmp}/v.npy"], ["infinite"]),
    ("string input", {"v.npy": np.array([["a", "b"]])}, ["--input", "{tmp}/v.npy"], ["real numbers", "dtype"]),
    ("complex input", {"v.npy": np.ones((1, 4), complex)}, ["--input", "{tmp}/v.npy"], ["real numbers"]),
    ("gamma too short", {"g.npy": np.ones(63)}, ["--gamma", "{tmp}/g.npy", "--input", "{x}"],
     ["--gamma", "64", "(63,)"]),
    ("gamma 2-D", {"g.npy": np.ones((1, 64))}, ["--gamma", "{tmp}/g.npy", "--input", "{x}"], ["--gamma", "(1, 64)"]),
    ("beta missing", {}, ["--beta", "{tmp}/b.npy", "--input", "{x}"], ["--beta", "does not exist"]),
    ("gamma NaN", {"g.npy": np.r_[np.ones(63), np.nan]}, ["--gamma", "{tmp}/g.npy", "--input", "{x}"],
     ["--gamma", "NaN"]),
    ("gamma out of range", {"g.npy": np.r_[np.ones(63), 8.0]}, ["--gamma", "{tmp}/g.npy", "--input", "{x}"],
     ["gamma", "param_format", "s4.12"]),
    ("gamma without affine", {"g.npy": np.ones(64)}, ["--no-affine", "--gamma", "{tmp}/g.npy", "--input", "{x}"],
     ["--gamma", "--no-affine"]),
    ("bad in format", {}, ["--in-format", "4.12", "--input", "{x}"], ["in_format", "'4.12'"]),
    ("bad out format", {}, ["--out-format", "u4.12", "--input", "{x}"], ["out_format", "'u4.12'"]),
    ("too wide", {}, ["--in-format", "s16.16", "--out-format", "s16.16", "--input", "{x}"], ["in_format", "63"]),
    ("eps rounds to 0", {}, ["--in-format", "s2.6", "--input", "{x}"], ["eps", "1e-05", "s2.6"]),
    ("eps negative", {}, ["--eps", "-1", "--input", "{x}"], ["eps", "-1"]),
    ("eps nan", {}, ["--eps", "nan", "--input", "{x}"], ["eps", "nan"]),
    ("lanes do not divide", {}, ["--lanes", "5", "--input", "{x}"], ["lanes", "5"]),
    ("eps overflows the grid", {}, ["--eps", "1e308", "--input", "{x}"], ["eps", "1e+308"]),
    ("features 0 before gamma", {"g.npy": np.ones(64)}, ["--features", "0", "--gamma", "{tmp}/g.npy",
                                                         "--input", "{x}"], ["features", "0"]),
    ("output is a directory", {}, ["--input", "{x}", "--output", "{tmp}"], ["--output", "directory"]),
]


@pytest.mark.parametrize("name, extra, argv, words", ERRORS, ids=[e[0] for e in ERRORS])
def test_model_errors_exit_2_with_one_line_and_write_nothing(files, capsys, name, extra, argv, words):
    tmp = files["tmp"]
    for filename, content in extra.items():
        if content is None:                                  # a .npy header without its data
            np.save(tmp / filename, np.ones((4, 64)))
            data = (tmp / filename).read_bytes()
            (tmp / filename).write_bytes(data[: len(data) // 2])
        else:
            _write(tmp / filename, content)
    argv = [a.format(tmp=tmp, x=files["x"]) for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(files["out"])]
    before = set(os.listdir(tmp))
    status, out, err = run(["model", "--features", 64, *argv], capsys)
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("normgen: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not files["out"].exists()
    assert set(os.listdir(tmp)) == before                       # no temporary file left either
    assert out == ""


def test_failed_run_leaves_an_existing_output_untouched(files, capsys):
    files["out"].parent.mkdir()
    files["out"].write_bytes(b"previous result")
    np.save(files["tmp"] / "bad.npy", np.full((2, 8), np.nan))
    status, _, err = run(["model", "--features", 64, "--input", files["tmp"] / "bad.npy",
                          "--output", files["out"]], capsys)
    assert status == 2 and "NaN" in err
    assert files["out"].read_bytes() == b"previous result"
    assert os.listdir(files["out"].parent) == ["y.npy"]


def test_argument_errors_exit_2(capsys):
    for argv in (["model", "--features", "12x", "--input", "a", "--output", "b"],
                 ["model", "--norm", "batchnorm", "--input", "a", "--output", "b"],
                 ["model", "--input", "a"], ["frobnicate"], []):
        status, _, err = run(argv, capsys)
        assert status == 2, argv
        assert "normgen" in err and "error:" in err, argv


def test_version(capsys):
    from importlib.metadata import version

    status, out, _ = run(["--version"], capsys)
    assert status == 0
    assert out.strip() == f"normgen {version('normgen')}"


def test_model_as_a_subprocess_matches_in_process(files, capsys):
    argv = ["model", "--features", "64", "--norm", "rmsnorm", "--gamma", str(files["gamma"]),
            "--input", str(files["x"])]
    status, _, _ = run([*argv, "--output", files["out"]], capsys)
    assert status == 0
    other = files["tmp"] / "sub.npy"
    result = subprocess.run([sys.executable, "-m", "normgen.host.cli", *argv, "--output", str(other)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.load(other), np.load(files["out"]))
    assert "3 value(s) saturated" in result.stderr
    failed = subprocess.run([sys.executable, "-m", "normgen.host.cli", "model", "--input", "missing.npy",
                             "--output", str(files["tmp"] / "never.npy")],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.startswith("normgen: error: ") and len(failed.stderr.splitlines()) == 1
    assert not (files["tmp"] / "never.npy").exists()


# ---- verilog -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["1core", "my-core", "core name", "", "a.b", "$core"])
def test_verilog_rejects_bad_module_names(tmp_path, capsys, name):
    target = tmp_path / "core.v"
    status, _, err = run(["verilog", "--module-name", name, "-o", target], capsys)
    assert status == 2
    assert err.startswith("normgen: error: --module-name") and repr(name) in err
    assert not target.exists()


def test_verilog_rejects_bad_configs_before_generating(tmp_path, capsys):
    target = tmp_path / "core.v"
    status, _, err = run(["verilog", "--features", "0", "-o", target], capsys)
    assert status == 2 and "features" in err and not target.exists()


def test_verilog_writes_the_core(tmp_path, capsys):
    target = tmp_path / "build" / "core.v"
    status, out, err = run(["verilog", "--features", 16, "--lanes", 2, "--module-name", "my_norm$1",
                            "-o", target], capsys)
    assert status == 0, err
    text = target.read_text()
    assert re.search(r"^\s*module\s+my_norm\$1\b", text, re.M) or re.search(r"module\s+\\?my_norm\$1", text)
    assert "endmodule" in text
    cfg = CoreConfig(features=16, lanes=2)
    assert str(target) in err and cfg.describe() in err
    assert out == ""
    assert os.listdir(target.parent) == ["core.v"]


# ---- hostile inputs: one error line, nothing written, nothing replaced ----------------------------

def assert_one_error_line(status, out, err):
    assert status == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("normgen: error: "), err
    assert out == ""
    return lines[0]


def _forged_npy(path, shape, payload=b"\0" * 64):
    """An .npy file whose header declares ``shape`` of float64, followed by ``payload`` only."""
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    path.write_bytes(buffer.getvalue() + payload)
    return path


@pytest.mark.parametrize("option", ["--input", "--gamma"])
@pytest.mark.parametrize("shape", [(10 ** 12, 64), (2 ** 62,), (3, 64)])
def test_npy_header_declaring_more_data_than_the_file_holds_is_refused(files, capsys, option, shape):
    forged = _forged_npy(files["tmp"] / "forged.npy", shape)
    argv = (["model", "--features", 64, "--input", forged, "--output", files["out"]] if option == "--input" else
            ["model", "--features", 64, "--gamma", forged, "--input", files["x"], "--output", files["out"]])
    line = assert_one_error_line(*run(argv, capsys))
    assert option in line and "declares" in line and str(shape) in line
    assert not files["out"].exists()


class _Marker:
    """Unpickling this creates the file ``path``: proof that a loader ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_npy_of_pickled_objects_is_refused_without_running_them(files, capsys):
    marker = files["tmp"] / "marker"
    evil = np.empty((1, 1), dtype=object)
    evil[0, 0] = _Marker(marker)
    np.save(files["tmp"] / "evil.npy", evil, allow_pickle=True)
    line = assert_one_error_line(*run(["model", "--features", 64, "--input", files["tmp"] / "evil.npy",
                                       "--output", files["out"]], capsys))
    assert "pickle" in line
    assert not marker.exists() and not files["out"].exists()


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_output_that_is_not_a_regular_file_is_refused_and_kept(files, capsys, kind):
    import socket
    import stat
    import tempfile

    short = tempfile.mkdtemp(dir="/tmp")               # a socket path must be short
    target = os.path.join(short, kind)
    listener = None
    try:
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "socket":
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(target)
        else:                      # a private node with /dev/null's numbers: harmless if replaced
            try:
                os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            except PermissionError:
                pytest.skip("creating a device node needs CAP_MKNOD")
        before = os.lstat(target)
        for argv in (["model", "--features", 64, "--input", files["x"], "--output", target],
                     ["verilog", "--features", 8, "-o", target]):
            line = assert_one_error_line(*run(argv, capsys))
            assert "--output" in line and target in line and "regular file" in line
            after = os.lstat(target)
            assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)
            assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
        assert sorted(os.listdir(short)) == [kind]     # no temporary file left beside it
    finally:
        if listener is not None:
            listener.close()
        os.unlink(target)
        os.rmdir(short)


def test_board_run_output_that_is_a_fifo_is_refused_before_the_board_is_opened(tmp_path, capsys):
    from normgen.boards import cli as board_cli
    os.mkfifo(tmp_path / "fifo")
    np.save(tmp_path / "x.npy", np.zeros((1, 8)))
    with pytest.raises(SystemExit) as exc:
        board_cli.main(["board", "run", "--board", "icebreaker", "--port", str(tmp_path / "no-such-port"),
                        "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "fifo")])
    out, err = capsys.readouterr()
    line = assert_one_error_line(exc.value.code, out, err)
    assert "FIFO" in line
    assert os.path.exists(tmp_path / "fifo") and not os.path.isfile(tmp_path / "fifo")


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_output_replaces_its_target_and_stays_a_link(files, capsys, dangling):
    real = files["tmp"] / "results" / "real.npy"
    real.parent.mkdir()
    if not dangling:
        real.write_bytes(b"previous result")
    link = files["tmp"] / "link.npy"
    link.symlink_to(real)
    status, _, err = run(["model", "--features", 64, "--input", files["x"], "--output", link], capsys)
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    x_int, _ = quantize_by_hand(np.load(files["x"]), 12, 16)
    expected = golden.normalize(CoreConfig(features=64), x_int) / 4096
    assert np.array_equal(np.load(real), expected)
    assert os.listdir(real.parent) == ["real.npy"]


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
@pytest.mark.parametrize("option", ["--input", "--gamma", "--beta"])
def test_output_that_is_an_input_is_refused(files, capsys, option, spelling):
    source = files["x"] if option == "--input" else files[option[2:]]
    output = {"same": str(source),
              "dotted": os.path.join(os.path.dirname(source), ".", os.path.basename(source)),
              "symlink": str(files["tmp"] / "alias.npy"),
              "hardlink": str(files["tmp"] / "hard.npy")}[spelling]
    if spelling == "symlink":
        os.symlink(source, output)
    elif spelling == "hardlink":
        os.link(source, output)
    content = source.read_bytes()
    line = assert_one_error_line(*run(["model", "--features", 64, "--gamma", files["gamma"], "--beta", files["beta"],
                                       "--input", files["x"], "--output", output], capsys))
    assert "--output" in line and option in line and "input" in line
    assert source.read_bytes() == content


def test_verilog_output_that_is_the_gamma_file_is_refused(files, capsys):
    content = files["gamma"].read_bytes()
    line = assert_one_error_line(*run(["verilog", "--features", 64, "--gamma", files["gamma"],
                                       "-o", files["gamma"]], capsys))
    assert "--gamma" in line
    assert files["gamma"].read_bytes() == content


@pytest.mark.parametrize("argv, words", [
    (["model", "--features", "12x", "--input", "a", "--output", "b"], ["--features", "'12x'"]),
    (["model", "--input", "a"], ["--output"]),
    (["model", "--norm", "groupnorm", "--input", "a", "--output", "b"], ["--norm", "groupnorm"]),
    (["model", "--input", "a", "--output", "b", "--frobnicate"], ["--frobnicate"]),
    (["verilog", "--lanes"], ["--lanes"]),
    (["frobnicate"], ["frobnicate"]),
    ([], ["COMMAND"]),
    (["board"], ["BOARD_COMMAND"]),
    (["board", "run", "--board", "nope", "--port", "p", "--input", "x"], ["--board", "nope"]),
    (["board", "build", "--board", "icebreaker", "--seed", "one"], ["--seed", "'one'"]),
])
def test_argument_errors_are_one_line(tmp_path, capsys, argv, words):
    line = assert_one_error_line(*run(argv, capsys))
    for word in words:
        assert word in line, (word, line)
    assert "--help" in line                            # the usage hint rides on the same line
    assert os.listdir(tmp_path) == []


def test_board_cli_argument_errors_are_one_line(capsys):
    from normgen.boards import cli as board_cli
    with pytest.raises(SystemExit) as exc:
        board_cli.main(["board", "prog", "--board", "nope"])
    out, err = capsys.readouterr()
    line = assert_one_error_line(exc.value.code, out, err)
    assert "--board" in line and "'nope'" in line


@pytest.fixture
def bn_batch(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(9).normal(0, 2, (10, 8)))
    return ["model", "--norm", "batchnorm", "--features", 8, "--max-batch", 4, "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npy"]


@pytest.mark.parametrize("size", [0, -1, 5])
def test_batch_size_outside_its_range_is_refused(tmp_path, capsys, bn_batch, size):
    line = assert_one_error_line(*run([*bn_batch, "--batch-size", size], capsys))
    assert "--batch-size" in line and "1..4" in line and f"not {size}" in line
    assert not (tmp_path / "y.npy").exists()


def test_batch_size_without_batch_statistics_is_refused(files, capsys):
    line = assert_one_error_line(*run(["model", "--features", 64, "--batch-size", 2, "--input", files["x"],
                                       "--output", files["out"]], capsys))
    assert "--batch-size" in line and "--max-batch" in line
    assert not files["out"].exists()


def test_batch_statistics_on_no_samples_write_an_empty_output(tmp_path, capsys, bn_batch):
    np.save(tmp_path / "x.npy", np.zeros((0, 8)))
    status, _, err = run(bn_batch, capsys)
    assert status == 0, err
    assert np.load(tmp_path / "y.npy").shape == (0, 8)


def test_an_error_after_the_computation_is_the_only_line(files, capsys):
    # the output's directory cannot be made (a file is in the way): the failure comes last
    blocker = files["tmp"] / "blocker"
    blocker.write_bytes(b"")
    line = assert_one_error_line(*run(["model", "--features", 64, "--input", files["x"],
                                       "--output", blocker / "y.npy"], capsys))
    assert "cannot write" in line and "blocker" in line


def test_values_beyond_float_range_of_the_format_bring_no_warning_lines(tmp_path):
    # a separate process: Python's warnings reach its real stderr, as a user sees them
    np.save(tmp_path / "big.npy", np.full((2, 4), 1e308))
    base = [sys.executable, "-m", "normgen.host.cli", "model", "--input", str(tmp_path / "big.npy"),
            "--output", str(tmp_path / "y.npy")]
    failed = subprocess.run([*base, "--norm", "batchnorm", "--features", "8", "--max-batch", "4"],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert len(failed.stderr.splitlines()) == 1 and "C = 8" in failed.stderr, failed.stderr
    ok = subprocess.run([*base, "--features", "4"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "Warning" not in ok.stderr and "8 value(s) saturated" in ok.stderr, ok.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), np.zeros((2, 4)))     # constant vectors: β = 0


def test_board_run_port_that_cannot_be_opened_is_the_only_line(tmp_path, capsys):
    pytest.importorskip("serial")
    from normgen.boards import cli as board_cli
    np.save(tmp_path / "x.npy", np.zeros((1, 8)))
    with pytest.raises(SystemExit) as exc:
        board_cli.main(["board", "run", "--board", "icebreaker", "--port", str(tmp_path / "no-such-port"),
                        "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")])
    out, err = capsys.readouterr()
    line = assert_one_error_line(exc.value.code, out, err)
    assert "cannot open" in line and "no-such-port" in line
    assert not (tmp_path / "y.npy").exists()

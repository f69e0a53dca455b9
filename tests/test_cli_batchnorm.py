"""The CLI's BatchNorm modes: inference (running statistics) and batch statistics."""
import numpy as np
import pytest

from normgen.host.cli import main
from normgen.hw.config import CoreConfig
from normgen.sim import golden


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(5)
    channels = 8
    arrays = dict(x=rng.normal(0, 2, (10, channels)), mean=rng.normal(0, 1, channels),
                  var=rng.uniform(0.1, 2, channels), gamma=rng.normal(0, 1, channels), beta=rng.normal(0, 1, channels))
    paths = {}
    for name, values in arrays.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], values)
    paths["out"] = str(tmp_path / "y.npy")
    return arrays, paths


def test_inference_model_equals_golden(files):
    arrays, paths = files
    assert run_cli(["model", "--norm", "batchnorm", "--features", "8", "--mean", paths["mean"], "--var", paths["var"],
                    "--gamma", paths["gamma"], "--beta", paths["beta"], "--input", paths["x"], "--output", paths["out"]]) == 0
    cfg = CoreConfig(norm="batchnorm", features=8, mean=arrays["mean"], var=arrays["var"],
                     gamma=arrays["gamma"], beta=arrays["beta"])
    expected = cfg.out_format.to_float(golden.normalize(cfg, cfg.in_format.quantize(arrays["x"])[0]))
    np.testing.assert_array_equal(np.load(paths["out"]), expected)


def test_batch_statistics_model_splits_rows_into_batches(files):
    arrays, paths = files
    assert run_cli(["model", "--norm", "batchnorm", "--features", "8", "--max-batch", "4", "--batch-size", "4",
                    "--input", paths["x"], "--output", paths["out"]]) == 0
    cfg = CoreConfig(norm="batchnorm", features=8, max_batch=4)
    x = cfg.in_format.quantize(arrays["x"])[0]
    expected = np.concatenate([golden.normalize_batch(cfg, x[i:i + 4]) for i in (0, 4, 8)])
    np.testing.assert_array_equal(np.load(paths["out"]), cfg.out_format.to_float(expected))


@pytest.mark.parametrize("argv, message", [
    (["--norm", "layernorm", "--features", "8", "--mean", "{mean}"], "BatchNorm inference"),
    (["--norm", "layernorm", "--features", "8", "--max-batch", "4"], "--max-batch"),
    (["--norm", "batchnorm", "--features", "8"], "needs mean"),
    (["--norm", "batchnorm", "--features", "8", "--mean", "{mean}", "--var", "{neg}"], "var must be >= 0"),
    (["--norm", "batchnorm", "--features", "8", "--max-batch", "4", "--batch-size", "5"], "--batch-size"),
    (["--norm", "batchnorm", "--features", "4", "--max-batch", "4"], "N = 8"),
    (["--norm", "batchnorm", "--features", "8", "--max-batch", "1"], "max_batch"),
    (["--norm", "batchnorm", "--features", "8", "--max-batch", "4", "--momentum", "1.5"], "momentum"),
])
def test_batchnorm_errors_exit_2(files, tmp_path, capsys, argv, message):
    _, paths = files
    np.save(tmp_path / "neg.npy", -np.ones(8))
    paths["neg"] = str(tmp_path / "neg.npy")
    argv = [a.format(**paths) for a in argv]
    assert run_cli(["model", *argv, "--input", paths["x"], "--output", paths["out"]]) == 2
    assert message in capsys.readouterr().err
    import os
    assert not os.path.exists(paths["out"])


@pytest.mark.parametrize("extra, header", [
    (["--mean", "{mean}", "--var", "{var}"], "batchnorm (inference)"),
    (["--max-batch", "16"], "batchnorm (batch statistics)"),
])
def test_verilog_for_both_batchnorm_modes(files, tmp_path, extra, header):
    _, paths = files
    out = tmp_path / "bn.v"
    argv = ["verilog", "--norm", "batchnorm", "--features", "8", *[a.format(**paths) for a in extra], "-o", str(out)]
    assert run_cli(argv) == 0
    text = out.read_text()
    assert header in text.splitlines()[1]
    assert "module normgen_core" in text

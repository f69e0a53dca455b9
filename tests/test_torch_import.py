"""From a trained layer to the core in one command: ``--from-torch`` with PyTorch files and .npz.

The decisive comparisons are against the golden model (bit-exact) and against the PyTorch module's
float64 output (every output within one output LSB, which is what a faithful core guarantees)."""
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


def quantized_input(cfg, rng, rows=40):
    x = rng.normal(0, 1.5, (rows, cfg.features))
    x[0] = 0.25                      # a constant vector
    return cfg.in_format.to_float(cfg.in_format.quantize(x)[0])


def test_npz_batchnorm_state_dict_matches_direct_config(tmp_path):
    rng = np.random.default_rng(1)
    channels = 12
    state = dict(weight=rng.normal(0, 1, channels), bias=rng.normal(0, 1, channels),
                 running_mean=rng.normal(0, 1, channels), running_var=rng.uniform(0.01, 2, channels))
    np.savez(tmp_path / "bn.npz", **state, eps=1e-3)
    cfg = CoreConfig(norm="batchnorm", features=channels, eps=1e-3, gamma=state["weight"], beta=state["bias"],
                     mean=state["running_mean"], var=state["running_var"])
    x = quantized_input(cfg, rng)
    np.save(tmp_path / "x.npy", x)
    assert run_cli(["model", "--from-torch", str(tmp_path / "bn.npz"), "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    expected = cfg.out_format.to_float(golden.normalize(cfg, cfg.in_format.quantize(x)[0]))
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("problem, files, argv, message", [
    ("no parameters", {"p.npz": dict(foo=np.ones(3))}, [], "no weight"),
    ("lengths differ", {"p.npz": dict(weight=np.ones(3), bias=np.ones(4))}, [], "lengths differ"),
    ("half a BatchNorm", {"p.npz": dict(weight=np.ones(3), running_mean=np.ones(3))}, [], "running_var"),
    ("features contradict", {"p.npz": dict(weight=np.ones(8))}, ["--features", "16"], "contradicts"),
    ("norm contradicts", {"p.npz": dict(running_mean=np.zeros(4), running_var=np.ones(4))},
     ["--norm", "layernorm"], "contradicts"),
    ("not a file", {}, [], "does not exist"),
])
def test_bad_imports_exit_2_with_a_message(tmp_path, capsys, problem, files, argv, message):
    for name, arrays in files.items():
        np.savez(tmp_path / name, **arrays)
    np.save(tmp_path / "x.npy", np.zeros((1, 4)))
    code = run_cli(["model", "--from-torch", str(tmp_path / "p.npz"), *argv, "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "y.npy").exists()


# ---- with PyTorch ---------------------------------------------------------------------------------

def _torch_modules(torch, features, rng, param_format):
    """LayerNorm, RMSNorm and BatchNorm1d with random parameters.  LayerNorm/RMSNorm γ/β sit on the
    parameter grid (the core quantizes them), so the module and the core compute the same function;
    BatchNorm's float parameters are folded exactly, so they stay as they are."""
    def on_grid(values):
        return torch.tensor(param_format.to_float(param_format.quantize(values)[0]))

    layer = torch.nn.LayerNorm(features).double()
    rms = torch.nn.RMSNorm(features, eps=2.0 ** -20).double()
    bn = torch.nn.BatchNorm1d(features).double().eval()
    with torch.no_grad():
        layer.weight.copy_(on_grid(rng.normal(0, 1, features)))
        layer.bias.copy_(on_grid(rng.normal(0, 1, features)))
        rms.weight.copy_(on_grid(rng.normal(0, 1, features)))
        bn.weight.copy_(torch.tensor(rng.normal(0, 1, features)))
        bn.bias.copy_(torch.tensor(rng.normal(0, 1, features)))
        bn.running_mean.copy_(torch.tensor(rng.normal(0, 1, features)))
        bn.running_var.copy_(torch.tensor(rng.uniform(0.05, 3, features)))
    return {"layernorm": layer, "rmsnorm": rms, "batchnorm": bn}


@pytest.mark.parametrize("saved", ["module", "state_dict"])
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm", "batchnorm"])
def test_core_output_within_one_lsb_of_the_pytorch_module(tmp_path, kind, saved):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    features = 32
    probe = CoreConfig(features=features)
    module = _torch_modules(torch, features, rng, probe.param_format)[kind]
    path = tmp_path / "layer.pt"
    torch.save(module if saved == "module" else module.state_dict(), path)
    extra = [] if saved == "module" else ["--norm", kind, "--eps", repr(float(module.eps))]
    x = quantized_input(probe, rng)
    np.save(tmp_path / "x.npy", x)
    assert run_cli(["model", "--from-torch", str(path), *extra, "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    if kind != "batchnorm":
        # the core rounds eps to the input-squared grid and reports it; the module uses that value
        cfg = CoreConfig(norm=kind, features=features, eps=float(module.eps))
        module.eps = cfg.eps_effective
    with torch.no_grad():
        reference = module(torch.tensor(x)).numpy()
    out = probe.out_format
    reference = np.clip(reference, out.min_int * out.lsb, out.max_int * out.lsb)
    deviation_lsb = np.abs(y - reference) / out.lsb
    print(f"{kind} ({saved}): max deviation from PyTorch float64 = {deviation_lsb.max():.3f} LSB")
    assert deviation_lsb.max() < 1 + 1e-6


def test_unsupported_module_is_refused(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.GroupNorm(2, 8), tmp_path / "g.pt")
    np.save(tmp_path / "x.npy", np.zeros((1, 8)))
    code = run_cli(["model", "--from-torch", str(tmp_path / "g.pt"), "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")])
    assert code == 2
    assert "GroupNorm" in capsys.readouterr().err


def test_batch_statistics_match_pytorch_training_forward():
    """BatchNorm1d in training mode: the batch-statistics golden model (bit-exact with the core)
    is within one LSB of PyTorch, and the host's running-statistics update equals PyTorch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    channels, samples = 16, 24
    cfg = CoreConfig(norm="batchnorm", features=channels, max_batch=32, eps=2.0 ** -16)
    grid = cfg.param_format
    gamma = grid.to_float(grid.quantize(rng.normal(0, 1, channels))[0])
    beta = grid.to_float(grid.quantize(rng.normal(0, 1, channels))[0])
    cfg = cfg.with_params(gamma, beta)
    module = torch.nn.BatchNorm1d(channels, eps=cfg.eps_effective, momentum=cfg.momentum).double().train()
    with torch.no_grad():
        module.weight.copy_(torch.tensor(gamma))
        module.bias.copy_(torch.tensor(beta))
    x_int = cfg.in_format.quantize(rng.normal(0.5, 1.5, (samples, channels)))[0]
    y = cfg.out_format.to_float(golden.normalize_batch(cfg, x_int))
    with torch.no_grad():
        reference = module(torch.tensor(cfg.in_format.to_float(x_int))).numpy()
    out = cfg.out_format
    reference = np.clip(reference, out.min_int * out.lsb, out.max_int * out.lsb)
    assert np.abs(y - reference).max() / out.lsb < 1 + 1e-6
    mean, var = golden.running_statistics(cfg, x_int, np.zeros(channels), np.ones(channels))
    np.testing.assert_allclose(mean, module.running_mean.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(var, module.running_var.numpy(), rtol=1e-12)

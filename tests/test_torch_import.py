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


# ---- hostile files: nothing in them runs, every value is checked, one error line ------------------

class _Marker:
    """Unpickling this creates the file ``path``: proof that a loader ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _run_import(tmp_path, capsys, model_file, *extra):
    np.save(tmp_path / "x.npy", np.zeros((1, 8)))
    code = run_cli(["model", "--from-torch", str(model_file), *extra, "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")])
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("normgen: error: --from-torch"), err
    assert out == "" and not (tmp_path / "y.npy").exists()
    return lines[0]


@pytest.mark.parametrize("container", ["state_dict", "bare_object", "plain_pickle"])
def test_pickled_code_in_a_pytorch_file_is_refused_without_running(tmp_path, capsys, container):
    torch = pytest.importorskip("torch")
    import pickle
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    if container == "state_dict":
        torch.save({"weight": torch.ones(8), "bias": _Marker(marker)}, path)
    elif container == "bare_object":
        torch.save(_Marker(marker), path)
    else:
        path.write_bytes(pickle.dumps({"weight": _Marker(marker)}))
    line = _run_import(tmp_path, capsys, path, "--norm", "layernorm")
    assert "refused" in line and "could run code" in line
    assert not marker.exists()


def test_a_subclass_of_a_supported_layer_is_refused(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")

    class Sneaky(torch.nn.LayerNorm):
        pass

    Sneaky.__qualname__ = "Sneaky"                   # picklable by reference, as a user's class is
    monkeypatch.setitem(globals(), "Sneaky", Sneaky)
    path = tmp_path / "sneaky.pt"
    torch.save(Sneaky(8), path)
    line = _run_import(tmp_path, capsys, path)
    assert "refused" in line and "Sneaky" in line


@pytest.mark.parametrize("state, words", [
    ({"weight": "abc"}, ["weight", "tensor", "str"]),
    ({"weight": [1.0, 2.0]}, ["weight", "tensor", "list"]),
    ({"weight": "complex"}, ["weight", "real numbers"]),
    ({"weight": "matrix"}, ["weight", "1-D", "(2, 4)"]),
    ({"weight": "nan"}, ["weight", "finite", "nan"]),
    ({"weight": "empty"}, ["weight", "1..65536", "not 0"]),
])
def test_state_dict_values_are_checked(tmp_path, capsys, state, words):
    torch = pytest.importorskip("torch")
    special = {"complex": torch.ones(8, dtype=torch.complex64), "matrix": torch.ones(2, 4),
               "nan": torch.tensor([1.0] * 7 + [float("nan")]), "empty": torch.ones(0)}
    state = {k: special.get(v, v) if isinstance(v, str) else v for k, v in state.items()}
    torch.save(state, tmp_path / "sd.pt")
    line = _run_import(tmp_path, capsys, tmp_path / "sd.pt", "--norm", "layernorm")
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize("attribute, value, words", [
    ("eps", "tensor", ["eps", "single real number", "Tensor"]),
    ("eps", "nan", ["eps", "finite", "nan"]),
    ("normalized_shape", (4, 2), ["normalized_shape", "1-D"]),
    ("normalized_shape", (16,), ["8 values", "size is 16"]),
])
def test_module_attributes_are_checked(tmp_path, capsys, attribute, value, words):
    torch = pytest.importorskip("torch")
    module = torch.nn.LayerNorm(8)
    setattr(module, attribute, {"tensor": torch.tensor([1e-5, 1e-5]), "nan": float("nan")}.get(value, value)
            if isinstance(value, str) else value)
    torch.save(module, tmp_path / "m.pt")
    line = _run_import(tmp_path, capsys, tmp_path / "m.pt")
    for word in words:
        assert word in line, (word, line)


def _forged_npz(path, members):
    """An .npz whose members are given as raw bytes (so their headers can lie)."""
    import zipfile
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def _npy_bytes(array=None, header=None, payload=b""):
    import io
    buffer = io.BytesIO()
    if header is None:
        np.save(buffer, array, allow_pickle=True)
        return buffer.getvalue()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + payload


@pytest.mark.parametrize("members, words", [
    ({"weight": np.ones(8), "eps": np.array([1e-5, 1e-3])}, ["eps", "single number", "(2,)"]),
    ({"weight": np.ones(8), "eps": np.array("abc")}, ["eps", "real numbers"]),
    ({"weight": np.ones(8), "eps": np.array(-1.0)}, ["eps", ">= 0", "-1.0"]),
    ({"weight": np.ones(8), "eps": np.array(np.inf)}, ["eps", "finite", "inf"]),
    ({"weight": np.array(["a"] * 8)}, ["weight", "real numbers"]),
    ({"weight": np.ones((2, 4))}, ["weight", "1-D", "(2, 4)"]),
    ({"weight": np.r_[np.ones(7), np.nan]}, ["weight", "finite", "weight[7]"]),
    ({"weight": np.ones(8), "norm": np.array(["layernorm", "rmsnorm"])}, ["norm", "one short string"]),
    ({"weight": np.ones(8, complex)}, ["weight", "real numbers"]),
    ({"weight": "pickle"}, ["weight", "pickle"]),
    ({"weight": "forged"}, ["weight", "declares", str((2 ** 40,))]),
    ({"weight": np.zeros(70000)}, ["weight", "at most 65536", "(70000,)"]),
])
def test_npz_contents_are_checked_before_use(tmp_path, capsys, members, words):
    marker = tmp_path / "marker"
    evil = np.empty(8, dtype=object)
    evil[:] = [_Marker(marker)] * 8
    special = {
        "pickle": _npy_bytes(evil),
        "forged": _npy_bytes(header={"descr": "<f8", "fortran_order": False, "shape": (2 ** 40,)}, payload=b"\0" * 64),
    }
    raw = {k: special[v] if isinstance(v, str) and v in special else _npy_bytes(np.asarray(v))
           for k, v in members.items()}
    path = _forged_npz(tmp_path / "p.npz", raw)
    line = _run_import(tmp_path, capsys, path, "--norm", "layernorm")
    for word in words:
        assert word in line, (word, line)
    assert not marker.exists()

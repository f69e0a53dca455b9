"""``--from-onnx``: a core from a normalization node of an ONNX model.

The decisive comparison: the core imported from a model is the core built from the same
parameters given by hand (``--gamma/--beta/--mean/--var/--eps`` as .npy files and numbers) — the
same configuration and bit-identical golden-model outputs.  The hand-given ε is the float32 value
of the model's attribute, computed here with NumPy."""
import sys

import numpy as np
import pytest

from normgen.host.cli import build_parser, core_config_from_args, main
from normgen.hw.config import CoreConfig

DEFAULT_EPS = float(np.float32(1e-5))              # ONNX's default epsilon, a float32 attribute


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def onnx():
    return pytest.importorskip("onnx")


def make_model(onnx, nodes, *, inputs, outputs, initializers=(), opset=17):
    helper = onnx.helper
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def value(onnx, name, shape, dtype=None):
    return onnx.helper.make_tensor_value_info(name, dtype or onnx.TensorProto.FLOAT, shape)


def unknown_rank_input(onnx, n):
    """``X`` of unknown rank (the checker wants shapes on graph inputs): a Reshape of a graph input
    to a shape that is itself an input of unknown length."""
    reshape = onnx.helper.make_node("Reshape", ["X0", "S"], ["X"], name="reshape")
    return [reshape], [value(onnx, "X0", [None, n]), value(onnx, "S", ["k"], onnx.TensorProto.INT64)]


def initializer(onnx, name, values):
    return onnx.numpy_helper.from_array(np.asarray(values, np.float32), name)


def constant_node(onnx, name, values):
    return onnx.helper.make_node("Constant", [], [name], value=initializer(onnx, name + "_value", values))


def layernorm_model(onnx, gamma, beta=None, *, eps=None, axis=None, shape=None, name="ln",
                    as_constant_nodes=False, opset=17, **attributes):
    n = len(gamma)
    shape = [None, n] if shape is None else shape
    names = ["gamma"] + ([] if beta is None else ["beta"])
    tensors = [gamma] + ([] if beta is None else [beta])
    if eps is not None:
        attributes["epsilon"] = eps
    if axis is not None:
        attributes["axis"] = axis
    node = onnx.helper.make_node("LayerNormalization", ["X", *names], ["Y"], name=name, **attributes)
    if as_constant_nodes:
        nodes = [constant_node(onnx, k, v) for k, v in zip(names, tensors)] + [node]
        inits = []
    else:
        nodes = [node]
        inits = [initializer(onnx, k, v) for k, v in zip(names, tensors)]
    if shape == "unknown":
        reshape, inputs = unknown_rank_input(onnx, n)
        nodes, shape = reshape + nodes, [None, n]
    else:
        inputs = [value(onnx, "X", shape)]
    return make_model(onnx, nodes, inputs=inputs, outputs=[value(onnx, "Y", shape)],
                      initializers=inits, opset=opset)


def batchnorm_model(onnx, gamma, beta, mean, var, *, eps=None, shape=None, name="bn", **attributes):
    c = len(gamma)
    if eps is not None:
        attributes["epsilon"] = eps
    names = ["scale", "bias", "mean", "var"]
    node = onnx.helper.make_node("BatchNormalization", ["X", *names], ["Y"], name=name, **attributes)
    return make_model(onnx, [node], inputs=[value(onnx, "X", shape or [None, c])],
                      outputs=[value(onnx, "Y", shape or [None, c])],
                      initializers=[initializer(onnx, k, v) for k, v in zip(names, (gamma, beta, mean, var))])


def f32(values):
    """The model's parameters as the float64 numbers a user would write to .npy files."""
    return np.asarray(values, np.float32).astype(np.float64)


def hand_argv(tmp_path, norm, features, eps, **arrays):
    argv = ["--norm", norm, "--features", str(features), "--eps", repr(eps)]
    for name, values in arrays.items():
        np.save(tmp_path / f"hand_{name}.npy", f32(values))
        argv += [f"--{name}", str(tmp_path / f"hand_{name}.npy")]
    return argv


def config(argv):
    args = build_parser().parse_args(["model", *argv, "--input", "unused.npy", "--output", "unused.npy"])
    return core_config_from_args(args)


def assert_same_core(imported: CoreConfig, by_hand: CoreConfig, *, same_eps=True):
    names = ("norm", "features", "lanes", "in_format", "out_format", "param_format", "eps_int", "affine")
    for name in names + (("eps",) if same_eps else ()):
        assert getattr(imported, name) == getattr(by_hand, name), name
    for name in ("gamma_int", "beta_int", "scale_int", "shift_int", "mean", "var"):
        a, b = getattr(imported, name, None), getattr(by_hand, name, None)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert imported.widths() == by_hand.widths()


def model_outputs(tmp_path, argv, tag, features, rows=30):
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1.5, (rows, features))
    x[0] = 0.5                                        # a constant vector
    x[1, :] = 0
    x[1, 0] = 3.0                                     # one outlier among constants
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"y_{tag}.npy"
    assert run_cli(["model", *argv, "--input", str(tmp_path / "x.npy"), "--output", str(out)]) == 0
    return np.load(out)


def assert_import_matches_hand(tmp_path, onnx, model, onnx_argv, hand, features):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    imported_argv = ["--from-onnx", str(path), *onnx_argv]
    assert_same_core(config(imported_argv), config(hand))
    np.testing.assert_array_equal(model_outputs(tmp_path, imported_argv, "onnx", features),
                                  model_outputs(tmp_path, hand, "hand", features))


# ---- nodes built with onnx.helper ------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["bias, epsilon, 2-D input", "no bias, default epsilon, axis = rank - 1",
                                     "Constant nodes, unknown rank"])
def test_layernorm_node_gives_the_hand_made_core(tmp_path, onnx, variant):
    rng = np.random.default_rng(5)
    n = 24
    gamma, beta = rng.normal(0, 1, n), rng.normal(0, 1, n)
    if variant.startswith("bias"):
        model = layernorm_model(onnx, gamma, beta, eps=1e-3)
        hand = hand_argv(tmp_path, "layernorm", n, float(np.float32(1e-3)), gamma=gamma, beta=beta)
    elif variant.startswith("no bias"):
        model = layernorm_model(onnx, gamma, axis=2, shape=[3, None, n])
        hand = hand_argv(tmp_path, "layernorm", n, DEFAULT_EPS, gamma=gamma, beta=np.zeros(n))
    else:
        model = layernorm_model(onnx, gamma, beta, eps=2.5e-4, axis=-1, shape="unknown",
                                as_constant_nodes=True)
        hand = hand_argv(tmp_path, "layernorm", n, float(np.float32(2.5e-4)), gamma=gamma, beta=beta)
    assert_import_matches_hand(tmp_path, onnx, model, [], hand, n)


@pytest.mark.parametrize("eps", [1e-3, None])
def test_batchnorm_node_gives_the_hand_made_core(tmp_path, onnx, eps):
    rng = np.random.default_rng(6)
    c = 12
    arrays = dict(gamma=rng.normal(0, 1, c), beta=rng.normal(0, 1, c), mean=rng.normal(0, 1, c),
                  var=rng.uniform(0.01, 2, c))
    model = batchnorm_model(onnx, *arrays.values(), eps=eps, training_mode=0, shape=[None, c, 7])
    hand = hand_argv(tmp_path, "batchnorm", c, DEFAULT_EPS if eps is None else float(np.float32(eps)), **arrays)
    assert_import_matches_hand(tmp_path, onnx, model, [], hand, c)


def test_rmsnormalization_node_gives_the_hand_made_core(tmp_path, onnx):
    if not onnx.defs.has("RMSNormalization"):
        pytest.skip(f"onnx {onnx.__version__} does not know RMSNormalization (opset 23)")
    rng = np.random.default_rng(8)
    n = 16
    gamma = rng.normal(0, 1, n)
    node = onnx.helper.make_node("RMSNormalization", ["X", "gamma"], ["Y"], name="rms", epsilon=2.0 ** -20)
    model = make_model(onnx, [node], inputs=[value(onnx, "X", [None, n])], outputs=[value(onnx, "Y", [None, n])],
                       initializers=[initializer(onnx, "gamma", gamma)], opset=23)
    hand = hand_argv(tmp_path, "rmsnorm", n, 2.0 ** -20, gamma=gamma)
    assert_import_matches_hand(tmp_path, onnx, model, [], hand, n)


def test_onnx_node_selects_one_of_several(tmp_path, onnx):
    """Two LayerNorms in a row, the second unnamed: each is found by its name (or, unnamed, by
    its output's name) and gives its own parameters, the second's γ through an Identity node."""
    rng = np.random.default_rng(9)
    n = 8
    first, second = rng.normal(0, 1, (2, n))
    nodes = [onnx.helper.make_node("LayerNormalization", ["X", "g1"], ["H"], name="first"),
             onnx.helper.make_node("Identity", ["g2"], ["g2_copy"], name="copy"),
             onnx.helper.make_node("LayerNormalization", ["H", "g2_copy"], ["Y"], epsilon=1e-4)]
    model = make_model(onnx, nodes, inputs=[value(onnx, "X", [None, n])], outputs=[value(onnx, "Y", [None, n])],
                       initializers=[initializer(onnx, "g1", first), initializer(onnx, "g2", second)])
    assert_import_matches_hand(tmp_path, onnx, model, ["--onnx-node", "first"],
                               hand_argv(tmp_path, "layernorm", n, DEFAULT_EPS, gamma=first), n)
    assert_import_matches_hand(tmp_path, onnx, model, ["--onnx-node", "Y"],
                               hand_argv(tmp_path, "layernorm", n, float(np.float32(1e-4)), gamma=second), n)


def test_verilog_from_onnx_equals_verilog_by_hand(tmp_path, onnx):
    rng = np.random.default_rng(10)
    n = 8
    gamma, beta = rng.normal(0, 1, (2, n))
    onnx.save(layernorm_model(onnx, gamma, beta, eps=1e-3), tmp_path / "m.onnx")
    hand = hand_argv(tmp_path, "layernorm", n, float(np.float32(1e-3)), gamma=gamma, beta=beta)
    assert run_cli(["verilog", "--from-onnx", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a.v")]) == 0
    assert run_cli(["verilog", *hand, "-o", str(tmp_path / "b.v")]) == 0
    assert (tmp_path / "a.v").read_text() == (tmp_path / "b.v").read_text()


def test_external_data_next_to_the_model_is_read(tmp_path, onnx):
    rng = np.random.default_rng(12)
    n = 16
    gamma, beta = rng.normal(0, 1, (2, n))
    model = layernorm_model(onnx, gamma, beta, eps=1e-3)
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size == 2 * 4 * n
    hand = hand_argv(tmp_path, "layernorm", n, float(np.float32(1e-3)), gamma=gamma, beta=beta)
    assert_same_core(config(["--from-onnx", str(tmp_path / "m.onnx")]), config(hand))


# ---- errors: exit status 2, one line -----------------------------------------------------------------

def _two_layernorms(onnx):
    nodes = [onnx.helper.make_node("LayerNormalization", ["X", "g"], ["H"], name="ln_a"),
             onnx.helper.make_node("LayerNormalization", ["H", "g"], ["Y"], name="ln_b")]
    return make_model(onnx, nodes, inputs=[value(onnx, "X", [None, 4])], outputs=[value(onnx, "Y", [None, 4])],
                      initializers=[initializer(onnx, "g", np.ones(4))])


def _scale_is_an_input(onnx):
    node = onnx.helper.make_node("LayerNormalization", ["X", "g"], ["Y"], name="ln")
    return make_model(onnx, [node], inputs=[value(onnx, "X", [None, 4]), value(onnx, "g", [4])],
                      outputs=[value(onnx, "Y", [None, 4])])


def _no_normalization(onnx):
    node = onnx.helper.make_node("Relu", ["X"], ["Y"], name="relu")
    return make_model(onnx, [node], inputs=[value(onnx, "X", [None, 4])], outputs=[value(onnx, "Y", [None, 4])])


def _two_d_scale(onnx):
    reshape, inputs = unknown_rank_input(onnx, 4)
    node = onnx.helper.make_node("LayerNormalization", ["X", "g"], ["Y"], name="ln")
    return make_model(onnx, reshape + [node], inputs=inputs, outputs=[value(onnx, "Y", [None, 4])],
                      initializers=[initializer(onnx, "g", np.ones((1, 4)))])


BN = dict(gamma=np.ones(4), beta=np.zeros(4), mean=np.zeros(4), var=np.ones(4))

MODEL_ERRORS = {
    "several nodes, no name": (_two_layernorms, [], ["--onnx-node", "'ln_a' (LayerNormalization)",
                                                     "'ln_b' (LayerNormalization)"]),
    "wrong name": (_two_layernorms, ["--onnx-node", "ln_c"], ["no normalization node named 'ln_c'",
                                                              "'ln_a' (LayerNormalization)"]),
    "scale not constant": (_scale_is_an_input, [], ["'g' is not a constant", "'ln' (LayerNormalization)"]),
    "axis not last, rank known": (lambda onnx: layernorm_model(onnx, np.ones(4), axis=0), [],
                                  ["axis = 0 (input rank 2)", "'ln' (LayerNormalization)"]),
    "axis 1, rank unknown": (lambda onnx: layernorm_model(onnx, np.ones(4), axis=1, shape="unknown"), [],
                             ["axis = 1 (unknown input rank)"]),
    "2-D scale": (_two_d_scale, [], ["Scale 'g' has shape (1, 4); only 1-D parameters"]),
    "training-mode BatchNorm": (lambda onnx: batchnorm_model(onnx, *BN.values(), training_mode=1), [],
                                ["training_mode = 1", "'bn' (BatchNormalization)"]),
    "bfloat16 stash_type": (lambda onnx: layernorm_model(onnx, np.ones(4), stash_type=16), [],
                            ["stash_type = 16 (statistics in BFLOAT16)"]),
    "no normalization node": (_no_normalization, [], ["no LayerNormalization, BatchNormalization or "
                                                      "RMSNormalization node", "Relu"]),
    "length contradicts the input": (lambda onnx: layernorm_model(onnx, np.ones(4), shape=[None, 6]), [],
                                     ["4 values but the input's last axis has 6"]),
    "features contradict": (lambda onnx: layernorm_model(onnx, np.ones(4)), ["--features", "8"],
                            ["--features 8 contradicts the imported layer's 4"]),
}


def run_failing(tmp_path, capsys, argv):
    np.save(tmp_path / "x.npy", np.zeros((1, 4)))
    code = run_cli(["model", *argv, "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("normgen: error: "), err
    assert not (tmp_path / "y.npy").exists()
    return lines[0]


@pytest.mark.parametrize("problem", MODEL_ERRORS)
def test_bad_models_exit_2_with_one_line(tmp_path, capsys, onnx, problem):
    build, argv, fragments = MODEL_ERRORS[problem]
    onnx.save(build(onnx), tmp_path / "m.onnx")
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(tmp_path / "m.onnx"), *argv])
    for fragment in fragments:
        assert fragment in line


def test_a_node_name_of_another_operator_is_named(tmp_path, capsys, onnx):
    model = _no_normalization(onnx)
    model.graph.node.append(onnx.helper.make_node("LayerNormalization", ["Y", "g"], ["Z"], name="ln"))
    model.graph.initializer.append(initializer(onnx, "g", np.ones(4)))
    model.graph.output[0].name = "Z"
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "m.onnx")
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(tmp_path / "m.onnx"), "--onnx-node", "relu"])
    assert "node 'relu' is a Relu, not a normalization node" in line
    assert "'ln' (LayerNormalization)" in line


def test_layernorm_before_opset_17_is_refused(tmp_path, capsys, onnx):
    model = layernorm_model(onnx, np.ones(4))
    model.opset_import[0].version = 16
    onnx.save(model, tmp_path / "m.onnx")
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(tmp_path / "m.onnx")])
    assert "needs opset >= 17, the model imports opset 16" in line


def test_checker_failure_is_one_line(tmp_path, capsys, onnx):
    model = layernorm_model(onnx, np.ones(4))
    model.graph.node[0].input[0] = "undefined"        # an input nothing produces
    onnx.save(model, tmp_path / "m.onnx")
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(tmp_path / "m.onnx")])
    assert "is not a valid ONNX model" in line


def test_not_an_onnx_file_is_one_line(tmp_path, capsys, onnx):
    (tmp_path / "m.onnx").write_bytes(b"\xff\xfe not protobuf \x00\x01" * 10)
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(tmp_path / "m.onnx")])
    assert "ONNX model" in line


def test_missing_file(tmp_path, capsys, onnx):
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(tmp_path / "absent.onnx")])
    assert "does not exist" in line


def test_external_data_outside_the_model_directory_is_refused(tmp_path, capsys, onnx):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = layernorm_model(onnx, np.full(4, 2.0))
    onnx.save_model(model, model_dir / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (model_dir / "weights.bin").rename(tmp_path / "weights.bin")      # a readable file, one level up
    model = onnx.load(model_dir / "m.onnx", load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../weights.bin"
    onnx.save(model, model_dir / "m.onnx")
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(model_dir / "m.onnx")])
    assert "'../weights.bin' outside the model's directory" in line


def test_from_onnx_and_from_torch_together(tmp_path, capsys):
    np.savez(tmp_path / "p.npz", weight=np.ones(4))
    line = run_failing(tmp_path, capsys, ["--from-torch", str(tmp_path / "p.npz"),
                                          "--from-onnx", str(tmp_path / "m.onnx")])
    assert "--from-torch and --from-onnx cannot be used together" in line


def test_onnx_node_without_from_onnx(tmp_path, capsys):
    line = run_failing(tmp_path, capsys, ["--onnx-node", "ln"])
    assert "--onnx-node" in line and "--from-onnx" in line


def test_without_onnx_installed_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)          # `import onnx` raises ImportError
    (tmp_path / "m.onnx").write_bytes(b"")
    line = run_failing(tmp_path, capsys, ["--from-onnx", str(tmp_path / "m.onnx")])
    assert "pip install 'normgen[onnx]'" in line


# ---- a model exported by PyTorch ---------------------------------------------------------------------

def _export(torch, module, x, path):
    try:
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17)
    except Exception as exc:                      # no exporter usable here (e.g. offline, missing deps)
        pytest.skip(f"torch.onnx.export failed: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("kind", ["layernorm", "batchnorm"])
def test_exported_module_gives_the_core_of_from_torch(tmp_path, onnx, kind):
    """The same trained module through --from-torch and through torch.onnx.export + --from-onnx.
    LayerNorm keeps PyTorch's default ε = 1e-5, which the ONNX attribute stores as float32: both
    land on the same point of the input-squared grid.  BatchNorm folds ε exactly, so its module
    takes a float32-exact ε (2**-14): then the two paths are the same numbers."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    n = 32
    if kind == "layernorm":
        module = torch.nn.LayerNorm(n)
    else:
        module = torch.nn.BatchNorm1d(n, eps=2.0 ** -14).eval()
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.normal(0, 1, n)))
        module.bias.copy_(torch.tensor(rng.normal(0, 1, n)))
        if kind == "batchnorm":
            module.running_mean.copy_(torch.tensor(rng.normal(0, 1, n)))
            module.running_var.copy_(torch.tensor(rng.uniform(0.05, 3, n)))
    torch.save(module, tmp_path / "m.pt")
    _export(torch, module, torch.zeros(2, n), tmp_path / "m.onnx")

    from_torch = ["--from-torch", str(tmp_path / "m.pt")]
    from_onnx = ["--from-onnx", str(tmp_path / "m.onnx")]
    imported, reference = config(from_onnx), config(from_torch)
    assert imported.eps == float(np.float32(module.eps))
    assert_same_core(imported, reference, same_eps=kind == "batchnorm")   # LayerNorm: same eps_int
    np.testing.assert_array_equal(model_outputs(tmp_path, from_onnx, "onnx", n),
                                  model_outputs(tmp_path, from_torch, "torch", n))

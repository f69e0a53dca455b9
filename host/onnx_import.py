"""Parameters of one normalization node of an ONNX model.

Accepted nodes (default ONNX domain, top-level graph):

- ``LayerNormalization`` (opset >= 17) over the last axis only: ``axis`` is -1, or ``rank - 1``
  when the rank of its input is known; a 1-D ``Scale`` and an optional 1-D ``B`` (absent: 0);
- ``BatchNormalization`` in inference mode (``training_mode`` = 0): ``scale``, ``B``,
  ``input_mean`` and ``input_var``, one value per channel;
- ``RMSNormalization`` (opset 23, when the installed ``onnx`` knows it): as LayerNormalization,
  without ``B``.

The parameters must be constants: initializers or outputs of ``Constant`` nodes (directly or
through ``Identity`` nodes).  ``epsilon`` is a float32 attribute; its exact float32 value is
used (absent: the float32 value of 1e-5, the ONNX default), so a core built from the model
computes what the model specifies.

Refused, each with one message that lists the model's normalization nodes: several such nodes
and no ``node_name`` (or a name that matches none), parameters that are not constants or not
1-D, another axis, a ``stash_type`` other than FLOAT (1), a BatchNormalization in training
mode or with ``spatial`` = 0.  An unnamed node is selected by the name of its output.

A model is data: it is read with ``onnx.load`` and checked with ``onnx.checker.check_model``.
Tensors stored in external data files are read only from files inside the model's directory.
Needs the ``onnx`` package (the ``onnx`` extra).
"""
from __future__ import annotations

import os

import numpy as np

from normgen.host.torch_import import ImportError_, LayerParams

__all__ = ["load_onnx_layer", "NORM_OPS"]

#: ONNX operator -> the normalization it is
NORM_OPS = {"LayerNormalization": "layernorm", "BatchNormalization": "batchnorm",
            "RMSNormalization": "rmsnorm"}

#: the first opset of the default domain that has each operator
_MIN_OPSET = {"LayerNormalization": 17, "BatchNormalization": 1, "RMSNormalization": 23}

_DEFAULT_DOMAINS = ("", "ai.onnx")
_DEFAULT_EPS = float(np.float32(1e-5))
_STASH_FLOAT = 1                                  # TensorProto.FLOAT, the default stash_type


def _import_onnx():
    try:
        import onnx
        import onnx.checker
        import onnx.numpy_helper
        import onnx.shape_inference
    except ImportError:
        raise ImportError_("reading ONNX models needs the onnx package: pip install 'normgen[onnx]'") from None
    return onnx


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _describe(node) -> str:
    if node.name:
        return f"{node.name!r} ({node.op_type})"
    output = node.output[0] if node.output else ""
    return f"unnamed {node.op_type} with output {output!r}"


def _listing(nodes) -> str:
    return ", ".join(_describe(node) for node in nodes) if nodes else "none"


def _check_external_locations(onnx, model, base_dir: str, path: str):
    """Refuse external data files outside the model's directory, before anything reads them."""
    from onnx.external_data_helper import uses_external_data
    root = os.path.realpath(base_dir)
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [attr.t for attr in node.attribute if attr.type == onnx.AttributeProto.TENSOR]
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = os.path.realpath(os.path.join(root, location))
        if (not location or os.path.isabs(location)
                or os.path.commonpath([root, target]) != root or target == root):
            raise ImportError_(f"{path!r}: tensor {tensor.name!r} refers to external data {location!r} "
                               f"outside the model's directory; refusing to read it")


def _opset(model) -> int | None:
    versions = [entry.version for entry in model.opset_import if entry.domain in _DEFAULT_DOMAINS]
    return max(versions) if versions else None


def _constants(onnx, graph) -> dict:
    """Every constant tensor of the graph by name: initializers, ``Constant`` outputs, and
    ``Identity`` copies of those (exporters deduplicate equal parameters that way)."""
    from onnx import helper
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:                          # topologically sorted (checked)
        if node.domain not in _DEFAULT_DOMAINS or not node.output:
            continue
        if node.op_type == "Identity" and node.input and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                constants[node.output[0]] = attr.t
            elif attr.name == "value_float":
                constants[node.output[0]] = helper.make_tensor(node.output[0], onnx.TensorProto.FLOAT,
                                                               [], [attr.f])
            elif attr.name == "value_floats":
                constants[node.output[0]] = helper.make_tensor(node.output[0], onnx.TensorProto.FLOAT,
                                                               [len(attr.floats)], list(attr.floats))
    return constants


def _input_shape(onnx, model, name: str):
    """The shape of tensor ``name`` as a list (None for an unknown dimension), or None."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:                     # shapes are a help here, not a requirement
        inferred = model.graph
    for info in (*inferred.input, *inferred.value_info, *inferred.output):
        if info.name != name or not info.type.HasField("tensor_type"):
            continue
        if not info.type.tensor_type.HasField("shape"):
            return None
        return [dim.dim_value if dim.HasField("dim_value") else None
                for dim in info.type.tensor_type.shape.dim]
    return None


def load_onnx_layer(path: str, node_name: str | None = None) -> LayerParams:
    """Read the parameters of the normalization node ``node_name`` (optional when the model has
    exactly one) of the ONNX model at ``path``; :class:`ImportError_` names every problem."""
    onnx = _import_onnx()
    if not os.path.isfile(path):
        raise ImportError_(f"{path!r} does not exist or is not a file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:                         # protobuf raises several kinds here
        raise ImportError_(f"{path!r} is not a loadable ONNX model ({_first_line(exc)})") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    _check_external_locations(onnx, model, base_dir, path)

    graph = model.graph
    nodes = [node for node in graph.node if node.domain in _DEFAULT_DOMAINS and node.op_type in NORM_OPS]
    found = f"normalization nodes in {path!r}: {_listing(nodes)}"
    opset = _opset(model)
    for node in nodes:
        if node.op_type == "RMSNormalization" and not onnx.defs.has("RMSNormalization"):
            raise ImportError_(f"node {_describe(node)}: this onnx {onnx.__version__} does not know "
                               f"RMSNormalization (opset 23); upgrade onnx ({found})")
        if opset is not None and opset < _MIN_OPSET[node.op_type]:
            raise ImportError_(f"node {_describe(node)} needs opset >= {_MIN_OPSET[node.op_type]}, "
                               f"the model imports opset {opset} ({found})")
    try:
        onnx.checker.check_model(path)       # by path: external data resolve next to the model
    except Exception as exc:                         # ValidationError, and C++ errors as others
        raise ImportError_(f"{path!r} is not a valid ONNX model ({_first_line(exc)})") from None

    if not nodes:
        ops = sorted({node.op_type for node in graph.node})
        raise ImportError_(f"{path!r} has no LayerNormalization, BatchNormalization or RMSNormalization node "
                           f"in its main graph (operators: {', '.join(ops) or 'none'})")
    if node_name is None:
        if len(nodes) > 1:
            raise ImportError_(f"{path!r} has {len(nodes)} normalization nodes; choose one with "
                               f"--onnx-node NAME ({found})")
        node = nodes[0]
    else:
        matches = ([node for node in nodes if node.name == node_name]
                   or [node for node in nodes if not node.name and node.output and node.output[0] == node_name])
        if not matches:
            other = next((node for node in graph.node if node.name == node_name), None)
            what = (f"node {node_name!r} is a {other.op_type}, not a normalization node" if other is not None
                    else f"no normalization node named {node_name!r}")
            raise ImportError_(f"{what} ({found})")
        if len(matches) > 1:
            raise ImportError_(f"{len(matches)} normalization nodes are named {node_name!r} ({found})")
        node = matches[0]
    return _node_params(onnx, model, node, base_dir, found)


def _node_params(onnx, model, node, base_dir: str, found: str) -> LayerParams:
    from onnx import helper, numpy_helper

    def refuse(problem):
        return ImportError_(f"node {_describe(node)}: {problem} ({found})")

    attributes = {attr.name: attr for attr in node.attribute}
    constants = _constants(onnx, model.graph)
    floating = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}

    def constant(index: int, what: str, required: bool = True):
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if required:
                raise refuse(f"has no {what} input")
            return None
        if name not in constants:
            raise refuse(f"{what} {name!r} is not a constant (an initializer or a Constant node's output)")
        tensor = constants[name]
        if tensor.data_type not in floating:
            type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
            raise refuse(f"{what} {name!r} holds {type_name}, not floating-point values")
        try:
            values = numpy_helper.to_array(tensor, base_dir=base_dir).astype(np.float64)
        except Exception as exc:
            raise refuse(f"cannot read {what} {name!r} ({_first_line(exc)})") from None
        if values.ndim != 1:
            raise refuse(f"{what} {name!r} has shape {values.shape}; only 1-D parameters "
                         f"(one value per feature) are supported")
        return values

    def attribute(name: str, default, kind: str):
        if name not in attributes:
            return default
        attr = attributes[name]
        expected = onnx.AttributeProto.FLOAT if kind == "float" else onnx.AttributeProto.INT
        if attr.type != expected:
            raise refuse(f"attribute {name} must be a {kind}")
        return helper.get_attribute_value(attr)

    eps = float(attribute("epsilon", _DEFAULT_EPS, "float"))   # float32, exactly as stored
    params = LayerParams(norm=NORM_OPS[node.op_type], eps=eps)
    shape = _input_shape(onnx, model, node.input[0]) if node.input and node.input[0] else None

    if node.op_type == "BatchNormalization":
        if attribute("training_mode", 0, "int") != 0:
            raise refuse("training_mode = 1 (batch statistics and running-statistics outputs); only "
                         "inference BatchNormalization (training_mode = 0) can be imported")
        if attribute("spatial", 1, "int") != 1:
            raise refuse("spatial = 0 (statistics per element, not per channel) is not supported")
        for index, (what, name) in enumerate((("scale", "gamma"), ("B", "beta"),
                                              ("input_mean", "mean"), ("input_var", "var")), start=1):
            params.arrays[name] = constant(index, what)
        channel_dim = shape[1] if shape is not None and len(shape) > 1 else None
    else:
        stash = attribute("stash_type", _STASH_FLOAT, "int")
        if stash != _STASH_FLOAT:
            type_name = onnx.TensorProto.DataType.Name(stash) if stash in onnx.TensorProto.DataType.values() else stash
            raise refuse(f"stash_type = {stash} (statistics in {type_name}); the core computes the "
                         f"statistics exactly, as the default stash_type = 1 (FLOAT) approximates")
        axis = attribute("axis", -1, "int")
        rank = len(shape) if shape is not None else None
        if axis != -1 and (rank is None or axis != rank - 1):
            known = f"input rank {rank}" if rank is not None else "unknown input rank"
            raise refuse(f"axis = {axis} ({known}); only normalization over the last axis (axis = -1) "
                         f"is supported")
        params.arrays["gamma"] = constant(1, "Scale" if node.op_type == "LayerNormalization" else "scale")
        if node.op_type == "LayerNormalization":
            beta = constant(2, "B", required=False)
            if beta is not None:
                params.arrays["beta"] = beta
        channel_dim = shape[-1] if shape else None

    sizes = {name: values.shape[0] for name, values in params.arrays.items()}
    if len(set(sizes.values())) != 1:
        raise refuse(f"parameter lengths differ: {sizes}")
    features = params.features
    if channel_dim is not None and channel_dim != features:
        raise refuse(f"the parameters have {features} values but the input's "
                     f"{'channel' if params.norm == 'batchnorm' else 'last'} axis has {channel_dim}")
    return params

"""Parameters of a trained normalization layer, from PyTorch or from an ``.npz`` file.

Accepted files:

- ``.npz`` with the state-dict names ``weight`` (γ), ``bias`` (β), ``running_mean``,
  ``running_var`` (BatchNorm) and, optionally, ``eps`` and ``norm``
  (``layernorm``/``rmsnorm``/``batchnorm``); no PyTorch needed;
- ``.pt``/``.pth`` holding a saved module (``torch.save(module)``) of type ``nn.LayerNorm``,
  ``nn.RMSNorm`` or ``nn.BatchNorm1d`` (the kind and ε come from the module), or a state dict
  (``torch.save(module.state_dict())``; give the kind with ``--norm`` and ε with ``--eps``).
  Needs PyTorch (the ``torch`` extra).

A model file is data from elsewhere: PyTorch files are read with ``torch.load(weights_only=True)``
(tensors, plain containers and the three layer classes above; anything else, which a full unpickler
would import and possibly run, is refused), ``.npz`` archives without pickles and with every header
checked before its data is read (:mod:`normgen.host.npyfile`), and every value is checked for
type, shape and finiteness before use.
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field

import numpy as np

from normgen.host.npyfile import NpyError, load_npz_member
from normgen.hw.config import CoreConfig

__all__ = ["LayerParams", "load_layer", "ImportError_"]


class ImportError_(ValueError):
    """The file does not hold the parameters of a supported layer."""


@dataclass
class LayerParams:
    norm: str | None = None                      # None: a state dict does not say
    eps: float | None = None
    arrays: dict = field(default_factory=dict)   # gamma, beta, mean, var
    affine: bool = True
    size: int | None = None                      # features, when there are no arrays

    @property
    def features(self) -> int | None:
        for values in self.arrays.values():
            return int(values.shape[0])
        return self.size


_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "mean", "running_var": "var"}

#: The most values a parameter may hold: as many as the largest core has features.
MAX_VALUES = CoreConfig.MAX_FEATURES
#: The longest ``norm`` string an ``.npz`` may hold ("layernorm" and its kin are shorter).
_MAX_NORM_CHARS = 64


def _check_values(source: str, key: str, values) -> np.ndarray:
    """``values`` (a NumPy array) as float64 after the checks every parameter passes: real
    numbers, one dimension, 1..MAX_VALUES entries, all finite."""
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "iuf":
        kind = f"dtype {values.dtype}" if isinstance(values, np.ndarray) else type(values).__name__
        raise ImportError_(f"{source}: {key} must hold real numbers, not {kind}")
    if values.ndim != 1:
        raise ImportError_(f"{source}: {key} must be 1-D (one value per feature), not shape {values.shape}")
    if not 1 <= values.shape[0] <= MAX_VALUES:
        raise ImportError_(f"{source}: {key} must hold 1..{MAX_VALUES} values, not {values.shape[0]}")
    values = values.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ImportError_(f"{source}: {key} must be finite: {key}[{bad[0]}] = {values[bad[0]]!r}")
    return values


def _check_eps(source: str, eps) -> float:
    """A module's or an archive's ε as a float: a single finite number >= 0."""
    if isinstance(eps, np.ndarray):
        if eps.ndim != 0 or eps.dtype.kind not in "iuf":
            raise ImportError_(f"{source}: eps must be a single real number, not an array of shape "
                               f"{eps.shape} and dtype {eps.dtype}")
        eps = eps.item()
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ImportError_(f"{source}: eps must be a single real number, not {type(eps).__name__}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ImportError_(f"{source}: eps must be a finite number >= 0, not {eps!r}")
    return eps


def _tensor_values(source: str, key: str, tensor) -> np.ndarray:
    """A tensor of a state dict as a NumPy array, refusing anything but a dense real tensor."""
    import torch
    if not isinstance(tensor, torch.Tensor):
        raise ImportError_(f"{source}: {key} must be a tensor, not {type(tensor).__name__}")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ImportError_(f"{source}: {key} must hold real numbers, not {tensor.dtype}")
    if tensor.dim() != 1:
        raise ImportError_(f"{source}: {key} must be 1-D (one value per feature), not shape {tuple(tensor.shape)}")
    try:
        return tensor.detach().cpu().to(torch.float64).numpy()
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportError_(f"{source}: {key} is not a dense real tensor ({reason})") from None


def _from_mapping(mapping, source: str) -> LayerParams:
    params = LayerParams()
    for key, name in _NAMES.items():
        if key in mapping:
            params.arrays[name] = _check_values(source, key, mapping[key])
    if not params.arrays:
        raise ImportError_(f"{source}: no weight, bias, running_mean or running_var found "
                           f"(keys: {', '.join(sorted(map(str, mapping))) or 'none'})")
    sizes = {name: v.shape[0] for name, v in params.arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ImportError_(f"{source}: parameter lengths differ: {sizes}")
    if "mean" in params.arrays or "var" in params.arrays:
        if not {"mean", "var"} <= params.arrays.keys():
            raise ImportError_(f"{source}: BatchNorm needs both running_mean and running_var")
        params.norm = "batchnorm"
    return params


def _module_kind(module) -> str:
    import torch.nn as nn
    kinds = [(nn.LayerNorm, "layernorm"), (nn.BatchNorm1d, "batchnorm")]
    if hasattr(nn, "RMSNorm"):
        kinds.append((nn.RMSNorm, "rmsnorm"))
    for cls, kind in kinds:
        if isinstance(module, cls):
            return kind
    raise ImportError_(f"unsupported module {type(module).__name__}: expected nn.LayerNorm, nn.RMSNorm "
                       f"or nn.BatchNorm1d")


def from_module(module) -> LayerParams:
    """Parameters of a PyTorch module (LayerNorm, RMSNorm, BatchNorm1d)."""
    kind = _module_kind(module)
    source = type(module).__name__
    # Only the module's attribute dictionary is read: a module from a file is data, and its
    # methods (state_dict() runs hooks stored in the object) are not called.
    attributes = vars(module)
    shape = attributes.get("normalized_shape")
    if shape is not None:
        if (not isinstance(shape, (tuple, list)) or len(shape) != 1 or isinstance(shape[0], bool)
                or not isinstance(shape[0], int)):
            raise ImportError_(f"{source}: normalized_shape {shape!r}: only 1-D normalization is supported")
        if not 1 <= shape[0] <= MAX_VALUES:
            raise ImportError_(f"{source}: normalized_shape must be 1..{MAX_VALUES}, not {shape[0]}")
    state = {}
    for table in ("_parameters", "_buffers"):
        entries = attributes.get(table, {})
        if not isinstance(entries, dict):
            raise ImportError_(f"{source}: {table} is a {type(entries).__name__}, not a dict of tensors")
        state.update({k: _tensor_values(source, k, v) for k, v in entries.items() if k in _NAMES and v is not None})
    params = _from_mapping(state, source) if state else LayerParams()
    params.norm = kind
    eps = attributes.get("eps")
    params.eps = None if eps is None else _check_eps(source, eps)
    track = attributes.get("track_running_stats", True)
    if not isinstance(track, bool):
        raise ImportError_(f"{source}: track_running_stats must be True or False, not {type(track).__name__}")
    if kind == "batchnorm" and not track:
        raise ImportError_("BatchNorm1d without running statistics: nothing to fold for inference")
    num_features = attributes.get("num_features")
    if shape is not None:
        params.size = int(shape[0])
    elif num_features is not None:
        if isinstance(num_features, bool) or not isinstance(num_features, int) or not 1 <= num_features <= MAX_VALUES:
            raise ImportError_(f"{source}: num_features must be an integer in 1..{MAX_VALUES}, not {num_features!r}")
        params.size = num_features
    if params.arrays and params.size is not None and params.features != params.size:
        raise ImportError_(f"{source}: its parameters hold {params.features} values but its size is {params.size}")
    if "gamma" not in params.arrays:          # elementwise_affine=False / affine=False
        params.affine = False
    return params


def _check_npz_header(key: str):
    def check(header):
        if key == "eps" and header.ndim != 0:
            raise NpyError(f"must be a single number, not an array of shape {header.shape}")
        if key == "norm" and (header.ndim != 0 or header.dtype.itemsize > 4 * _MAX_NORM_CHARS):
            raise NpyError(f"must be one short string such as 'layernorm', not shape {header.shape} "
                           f"of {header.dtype}")
        if key in _NAMES and (header.ndim != 1 or header.shape[0] > MAX_VALUES):
            raise NpyError(f"must be 1-D with at most {MAX_VALUES} values (one per feature), not shape {header.shape}")
    return check


def _load_npz(path: str) -> LayerParams:
    wanted = (*_NAMES, "eps", "norm")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name[:-4] for name in archive.namelist() if name.endswith(".npy")}
            mapping = {key: load_npz_member(archive, key, _check_npz_header(key),
                                            kinds="US" if key == "norm" else "biufc")
                       for key in wanted if key in members}
    except NpyError as exc:
        raise ImportError_(f"{path!r}: {exc}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportError_(f"{path!r} is not a readable .npz archive ({reason})") from None
    if not mapping.keys() & _NAMES.keys():
        raise ImportError_(f"{path}: no weight, bias, running_mean or running_var found "
                           f"(keys: {', '.join(sorted(members)) or 'none'})")
    params = _from_mapping({k: v for k, v in mapping.items() if k in _NAMES}, path)
    if "eps" in mapping:
        params.eps = _check_eps(path, mapping["eps"])
    if "norm" in mapping:
        params.norm = str(mapping["norm"].item() if mapping["norm"].dtype.kind == "U"
                          else mapping["norm"].item().decode("ascii", "replace"))
    return params


def _layer_classes():
    """The classes a PyTorch file may name besides tensors and plain containers."""
    import torch.nn as nn
    return [cls for cls in (nn.LayerNorm, getattr(nn, "RMSNorm", None), nn.BatchNorm1d) if cls is not None]


def _torch_load(path: str):
    """``torch.load`` restricted to tensors, plain containers and the supported layer classes."""
    import torch
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    allow = safe_globals(_layer_classes()) if safe_globals is not None else contextlib.nullcontext()
    try:
        with allow, warnings.catch_warnings():
            warnings.simplefilter("ignore")                # an error is reported as one line
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:                               # torch raises many kinds here
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError):        # the weights-only unpickler refused
            refused = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({refused.group(1)})" if refused else ""
            raise ImportError_(f"{path!r} holds objects other than tensors and nn.LayerNorm/nn.RMSNorm/"
                               f"nn.BatchNorm1d{what}; refused, since loading them could run code: save "
                               f"the layer or its state_dict() only, or an .npz of the state dict") from None
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        raise ImportError_(f"{path!r} is not a loadable PyTorch file ({type(exc).__name__}: {reason})") from None


def load_layer(path: str) -> LayerParams:
    """Read a layer's parameters from ``path`` (see the module docstring)."""
    if not os.path.isfile(path):
        raise ImportError_(f"{path!r} does not exist or is not a file")
    if path.endswith(".npz"):
        return _load_npz(path)
    try:
        import torch
    except ImportError:
        raise ImportError_(f"{path!r}: reading PyTorch files needs torch (pip install 'normgen[torch]'), "
                           f"or save the parameters as .npz") from None
    obj = _torch_load(path)
    if isinstance(obj, torch.nn.Module):
        return from_module(obj)
    if isinstance(obj, dict):
        state = {k: _tensor_values(path, k, v) for k, v in obj.items() if k in _NAMES}
        if not state:
            raise ImportError_(f"{path}: no weight, bias, running_mean or running_var found "
                               f"(keys: {', '.join(sorted(map(str, obj))) or 'none'})")
        return _from_mapping(state, path)
    raise ImportError_(f"{path!r} holds a {type(obj).__name__}, not a module or a state dict")

"""Parameters of a trained normalization layer, from PyTorch or from an ``.npz`` file.

Accepted files:

- ``.npz`` with the state-dict names ``weight`` (γ), ``bias`` (β), ``running_mean``,
  ``running_var`` (BatchNorm) and, optionally, ``eps`` and ``norm``
  (``layernorm``/``rmsnorm``/``batchnorm``); no PyTorch needed;
- ``.pt``/``.pth`` holding a saved module (``torch.save(module)``) of type ``nn.LayerNorm``,
  ``nn.RMSNorm`` or ``nn.BatchNorm1d`` (the kind and ε come from the module), or a state dict
  (``torch.save(module.state_dict())``; give the kind with ``--norm`` and ε with ``--eps``).
  Needs PyTorch (the ``torch`` extra).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

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


def _from_mapping(mapping, source: str) -> LayerParams:
    params = LayerParams()
    for key, name in _NAMES.items():
        if key in mapping:
            values = np.asarray(mapping[key], dtype=np.float64)
            if values.ndim != 1:
                raise ImportError_(f"{source}: {key} must be 1-D (one value per feature), not shape {values.shape}")
            params.arrays[name] = values
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
    shape = getattr(module, "normalized_shape", None)
    if shape is not None and len(tuple(shape)) != 1:
        raise ImportError_(f"normalized_shape {tuple(shape)}: only 1-D normalization is supported")
    state = {k: v.detach().cpu().double().numpy() for k, v in module.state_dict().items()
             if k in _NAMES}
    params = _from_mapping(state, type(module).__name__) if state else LayerParams()
    params.norm = kind
    eps = getattr(module, "eps", None)
    params.eps = None if eps is None else float(eps)
    if kind == "batchnorm" and not getattr(module, "track_running_stats", True):
        raise ImportError_("BatchNorm1d without running statistics: nothing to fold for inference")
    if shape is not None:
        params.size = int(tuple(shape)[0])
    elif hasattr(module, "num_features"):
        params.size = int(module.num_features)
    if "gamma" not in params.arrays:          # elementwise_affine=False / affine=False
        params.affine = False
    return params


def load_layer(path: str) -> LayerParams:
    """Read a layer's parameters from ``path`` (see the module docstring)."""
    if not os.path.isfile(path):
        raise ImportError_(f"{path!r} does not exist or is not a file")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                mapping = {key: archive[key] for key in archive.files}
        except (ValueError, OSError) as exc:
            raise ImportError_(f"{path!r} is not a readable .npz archive ({exc})") from None
        params = _from_mapping({k: v for k, v in mapping.items() if k in _NAMES}, path)
        if "eps" in mapping:
            params.eps = float(mapping["eps"])
        if "norm" in mapping:
            params.norm = str(mapping["norm"])
        return params
    try:
        import torch
    except ImportError:
        raise ImportError_(f"{path!r}: reading PyTorch files needs torch (pip install 'normgen[torch]'), "
                           f"or save the parameters as .npz") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:                               # torch raises many kinds here
        raise ImportError_(f"{path!r} is not a loadable PyTorch file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, torch.nn.Module):
        return from_module(obj)
    if isinstance(obj, dict):
        return _from_mapping({k: v.detach().cpu().double().numpy() for k, v in obj.items()
                              if k in _NAMES and hasattr(v, "detach")}, path)
    raise ImportError_(f"{path!r} holds a {type(obj).__name__}, not a module or a state dict")

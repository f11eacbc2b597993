"""microgrid: a C-accelerated, scalar-first reverse-mode autograd engine.

    import microgrid as mg
    a, b = mg.Value(2.0), mg.Value(-3.0)
    c = (a * b + b ** 2).relu()
    c.backward()
    a.grad, b.grad   # (-3.0, -4.0)
"""
from numbers import Real as _Real
from typing import TYPE_CHECKING as _TYPE_CHECKING

from .core import _engine
from .core._engine import Graph, Value, detect_anomaly, dot, is_anomaly_enabled, topological_order
from .tools.gradcheck import GradcheckError, gradcheck, gradgradcheck
from .autograd import enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled
from .autograd import graph as _graph   # installs grad_fn on Value and Tensor
from .tensors._tensor import Tensor, cat, concatenate, matmul, ones, randn, stack, tensor, zeros
from .tensors._alloc import cache_info, empty_cache, set_cache_limit   # the tensor memory pool
from .core import optable   # installs the elementwise methods of Value and Tensor
from . import functional
from .functional import *  # noqa: F403 (functional.__all__ is the list)
from .nn import manual_seed

# The tools over graphs load on first use (see __getattr__): most scripts
# train and never print a worked solution.
_TOOLS = {
    "explain": "explain", "check": "check", "CheckReport": "check", "draw": "draw",
    "to_dot": "draw", "shapley_values": "attribution", "shapley_orders": "attribution",
    "shap_values": "attribution", "shap_sample": "attribution",
    "integrated_gradients": "attribution", "gradient_x_input": "attribution",
}
if _TYPE_CHECKING:
    from .tools.attribution import (gradient_x_input, integrated_gradients, shap_sample,
                                    shap_values, shapley_orders, shapley_values)
    from .tools.check import CheckReport, check
    from .tools.draw import draw, to_dot
    from .tools.explain import explain

# The one version string: pyproject.toml reads it from here (statically).
__version__ = "0.1.0"


# sum/mean/max/min: a Tensor argument gets the tensor reduction (PyTorch's
# dim/keepdim); anything else keeps the fused scalar ops of _engine.
def sum(values, *args, **kwargs):
    """``mg.sum(tensor, dim=None, keepdim=False)`` or ``mg.sum(values, start=0)``."""
    if isinstance(values, Tensor):
        return values.sum(*args, **kwargs)
    if isinstance(values, (list, tuple)) and any(isinstance(v, Tensor) for v in values):
        total = kwargs.get("start", args[0] if args else 0)
        if not isinstance(total, (Tensor, Value, _Real)) or isinstance(total, bool):
            raise TypeError(f"sum(start=...) takes a Tensor, a Value or a number, got {type(total).__name__}")
        for v in values:        # Tensors of any broadcastable shapes: add them up
            total = total + v
        return total
    return _engine.sum(values, *args, **kwargs)


def mean(values, *args, **kwargs):
    """``mg.mean(tensor, dim=None, keepdim=False)`` or ``mg.mean(values)``."""
    if isinstance(values, Tensor):
        return values.mean(*args, **kwargs)
    return _engine.mean(values, *args, **kwargs)


def max(input, dim=None, keepdim=False):
    """The largest element of a Tensor, or (values, indices) along ``dim``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"max(input) takes a Tensor, got {type(input).__name__}")
    return input.max(dim, keepdim)


def min(input, dim=None, keepdim=False):
    """The smallest element of a Tensor, or (values, indices) along ``dim``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"min(input) takes a Tensor, got {type(input).__name__}")
    return input.min(dim, keepdim)


__all__ = [
    "Value", "sum", "mean", "dot", "topological_order", "Graph",
    "detect_anomaly", "is_anomaly_enabled",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "grad",
    "gradcheck", "gradgradcheck", "GradcheckError", "manual_seed",
    "Tensor", "tensor", "zeros", "ones", "randn", "stack", "concatenate", "cat",
    "matmul", "max", "min", "functional", *functional.__all__,
    "empty_cache", "set_cache_limit", "cache_info",
    "explain", "check", "CheckReport", "draw", "to_dot",
    "shapley_values", "shapley_orders", "shap_values", "shap_sample",
    "integrated_gradients", "gradient_x_input",
]


# Public submodules, importable as microgrid.<name> and listed by dir().
_SUBMODULES = ["functional", "nn", "optim", "datasets", "autograd"]


def __dir__():
    # dir(mg) is the public API: no helpers, no stdlib modules, no compiled
    # internals (_engine, _tensor) that imports leave behind as attributes
    return sorted({*__all__, *_SUBMODULES, "__version__"})


def __getattr__(name):
    # optim, datasets and the tools load on first use: most scripts need none
    import importlib
    if name in ("optim", "datasets"):
        return importlib.import_module(f".{name}", __name__)
    if name in _TOOLS:
        value = getattr(importlib.import_module(f".tools.{_TOOLS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

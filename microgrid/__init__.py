"""microgrid: a C-accelerated, scalar-first reverse-mode autograd engine.

    import microgrid as mg
    a, b = mg.Value(2.0), mg.Value(-3.0)
    c = (a * b + b ** 2).relu()
    c.backward()
    a.grad, b.grad   # (-3.0, -4.0)
"""
from numbers import Real as _Real
from typing import TYPE_CHECKING as _TYPE_CHECKING

import builtins as _builtins

import numpy as _np

from .core import _engine
from .core._engine import Graph, Value, detect_anomaly, dot, is_anomaly_enabled, topological_order
from .tools.gradcheck import GradcheckError, gradcheck, gradgradcheck
from .autograd import enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled
from .autograd import graph as _graph   # installs grad_fn on Value and Tensor
from .tensors._tensor import Size, Tensor, cat, concatenate, matmul, ones, randn, stack, tensor, where, zeros
from .tensors.factories import (arange, empty, eye, from_numpy, full, full_like, linspace, ones_like, rand,
                                randint, zeros_like)
from .tensors._alloc import cache_info, set_cache_limit   # the tensor memory pool
from .core import optable   # installs the elementwise methods of Value and Tensor


def empty_cache():
    """Return the memory microgrid keeps for reuse to the system: freed tensor
    buffers (the pool) and empty slabs of Value nodes; the bytes released.
    Live tensors and nodes are not touched."""
    from .tensors import _alloc
    from .core import _engine
    return _alloc.empty_cache() + _engine._release_node_memory()

from . import functional
from .functional import *  # noqa: F403 (functional.__all__ is the list)
from . import nn
from .nn import manual_seed

# The dtypes (numpy's dtype objects, so ``t.dtype == mg.int64`` and
# ``t.dtype == np.int64`` agree).  Graph nodes are float64; int64 and bool
# tensors hold labels, indices and masks.  float32 is a name only, refused by
# every ``dtype=`` with a clear error: microgrid computes in float64.
float64 = double = _np.dtype(_np.float64)
int64 = long = _np.dtype(_np.int64)
# (``float`` and ``bool`` are PyTorch's names, kept out of __all__ so that a
# star import does not hide Python's; this module says _builtins.bool)
float32 = float = _np.dtype(_np.float32)   # noqa: A001
bool = _np.dtype(_np.bool_)                # noqa: A001
_DTYPES = ["float64", "double", "int64", "long", "float32", "float", "bool"]

# One top-level function per op-table row (mg.sin, mg.exp, mg.pow, ...),
# generated from the table; they take numpy arrays as constants.  A row with
# a functional name (relu, sigmoid, ...) is functional's function here.
_FUNCTIONS = {n: f for n, f in optable.module_functions().items() if n not in functional.__all__}
globals().update(_FUNCTIONS)

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
        if not isinstance(total, (Tensor, Value, _Real)) or isinstance(total, _builtins.bool):
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


def _tensor_input(input, where):
    """A Tensor argument; a numpy array is a constant tensor (PyTorch takes
    tensors there: ``mg.max(outputs.data, 1)``)."""
    if isinstance(input, Tensor):
        return input
    if isinstance(input, _np.ndarray):
        return tensor(input)
    raise TypeError(f"{where}(input) takes a Tensor or a numpy array, got {type(input).__name__}")


def max(input, dim=None, keepdim=False):
    """The largest element of a Tensor, or (values, indices) along ``dim``."""
    return _tensor_input(input, "max").max(dim, keepdim)


def min(input, dim=None, keepdim=False):
    """The smallest element of a Tensor, or (values, indices) along ``dim``."""
    return _tensor_input(input, "min").min(dim, keepdim)


def argmax(input, dim=None, keepdim=False):
    """The int64 index of the largest element (along ``dim``)."""
    return _tensor_input(input, "argmax").argmax(dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    """The int64 index of the smallest element (along ``dim``)."""
    return _tensor_input(input, "argmin").argmin(dim, keepdim)


def flatten(input, start_dim=0, end_dim=-1):
    """``input.flatten(start_dim, end_dim)``."""
    return _tensor_input(input, "flatten").flatten(start_dim, end_dim)


__all__ = [
    "Value", "sum", "mean", "dot", "topological_order", "Graph",
    "detect_anomaly", "is_anomaly_enabled",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "grad",
    "gradcheck", "gradgradcheck", "GradcheckError", "manual_seed",
    "Tensor", "Size", "tensor", "zeros", "ones", "randn", "stack", "concatenate", "cat",
    "arange", "linspace", "full", "full_like", "eye", "empty", "rand", "randint",
    "zeros_like", "ones_like", "from_numpy",
    "float64", "double", "int64", "long", "float32",
    "matmul", "max", "min", "argmax", "argmin", "flatten", "where",
    "functional", *functional.__all__, *_FUNCTIONS,
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
    return sorted({*__all__, *_SUBMODULES, *_DTYPES, "__version__"})


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

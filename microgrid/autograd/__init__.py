"""microgrid.autograd: grad mode, custom ops, gradients as values and
gradients of gradients, the functional transforms, and forward mode.

- grad mode: ``no_grad``, ``enable_grad``, ``set_grad_enabled``,
  ``is_grad_enabled`` (grad_mode.py);
- custom ops: ``Function``, ``FunctionCtx`` (function.py);
- ``grad(outputs, inputs, ...)``: torch.autograd.grad, with
  ``create_graph=True`` for gradients that can be differentiated again
  (_grad.py; the op table's derivative formulas over graph nodes: _rows.py);
- ``microgrid.autograd.functional``: vjp, jvp, jacobian, hessian, hvp, vhp;
- ``microgrid.autograd.forward_ad``: forward-mode differentiation (dual
  levels, ``make_dual``, ``unpack_dual``, ``jvp``) and the Hessian-vector
  product of a scalar graph by forward-over-reverse (``graph_hvp``), swept in
  compiled code (_forward.pyx); loaded on first use.
"""
from .function import Function, FunctionCtx
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from ._grad import _graph_backward_into_grad, grad
from . import functional

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "Function",
           "FunctionCtx", "grad", "functional"]


def __getattr__(name):
    # forward_ad loads on first use, as microgrid.autograd.forward_ad
    if name == "forward_ad":
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

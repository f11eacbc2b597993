"""microgrid.autograd: grad mode, custom ops, and the autograd API beyond ``backward()``."""
from .function import Function, FunctionCtx
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "Function",
           "FunctionCtx"]

"""microgrid: a C-accelerated, scalar-first reverse-mode autograd engine.

    import microgrid as mg
    a, b = mg.Value(2.0), mg.Value(-3.0)
    c = (a * b + b ** 2).relu()
    c.backward()
    a.grad, b.grad   # (-3.0, -4.0)
"""
from ._engine import Value, dot, mean, sum, topological_order
from .gradcheck import GradcheckError, gradcheck
from .explain import explain
from .draw import draw, to_dot

__version__ = "0.1.0"

__all__ = [
    "Value", "sum", "mean", "dot", "topological_order",
    "gradcheck", "GradcheckError",
    "explain", "draw", "to_dot",
]

"""The op table's derivative formulas as differentiable rules.

A row of csrc/mg_ops.def states each local derivative as an expression over
``a``, ``b``, ``out`` and ``c`` (microgrid.core.optable keeps the text).
Here each formula is parsed once with ``ast`` and compiled into a Python
function that evaluates it with ``a``, ``b`` and ``out`` bound to graph nodes
(Values, or Tensors), so the derivative is itself a graph and can be
differentiated again.  Two parts of a formula are read on the numbers
instead of the nodes:

- the condition of ``where(cond, x, y)`` (it only picks a branch; Value has
  no comparison operators), while ``x`` and ``y`` stay nodes.  For a Value
  only the picked branch is built; for a Tensor the picked elements of each
  branch are gathered (``_tensor._graph_select``);
- piecewise-constant functions (``sign``): their derivative is zero wherever
  it exists, so their value is a constant of the graph.

The rest of the vocabulary (exp, log, sigmoid, pow, ...) maps to the node
methods of the same rows, and to numpy on plain numbers.
"""
from __future__ import annotations

import ast
import math

import numpy as np

from ..core import optable
from ..core._engine import Node, Value
from ..tensors import _tensor
from ..tensors._tensor import Tensor

__all__ = ["row_vjp", "value_row_vjp"]

# the operands a formula may read as graph nodes, and their numbers' names
_DATA_NAMES = {"a": "a_", "b": "b_", "out": "out_"}
# functions whose derivative is zero almost everywhere: evaluated on the numbers
_PIECEWISE_CONSTANT = ("sign",)
# node methods of the vocabulary (each a row of the table itself), with
# numpy's function for plain numbers
_METHODS = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin,
    "cos": np.cos, "log1p": np.log1p, "expm1": np.expm1, "atan": np.arctan,
    "sigmoid": None, "softplus": None, "erf": None,
}
_CONSTANTS = {"M_SQRT1_2": math.sqrt(0.5), "M_2_SQRTPI": 2.0 / math.sqrt(math.pi),
              "M_SQRT2": math.sqrt(2.0)}


def _plain(r):
    """numpy's 0-d results as Python floats (a float64 scalar on the left
    of a node's operator would make numpy try to take the node apart)."""
    return float(r) if np.ndim(r) == 0 else r


def _numeric_sigmoid(x):
    x = np.asarray(x, dtype=float)
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def _numeric_softplus(x):
    x = np.asarray(x, dtype=float)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


_NUMERIC = {"sigmoid": _numeric_sigmoid, "softplus": _numeric_softplus,
            "erf": np.vectorize(math.erf, otypes=[float])}


def _vocabulary_function(name):
    numeric = _METHODS[name] or _NUMERIC[name]

    def function(x):
        if isinstance(x, Node):
            return getattr(x, name)()
        with np.errstate(all="ignore"):
            return _plain(numeric(x))
    function.__name__ = name
    return function


def _pow(x, y):
    if isinstance(x, Node) or isinstance(y, Node):
        return x ** y
    with np.errstate(all="ignore"):
        return _plain(np.power(np.asarray(x, dtype=float), y))


def _fabs(x):
    if isinstance(x, Node):
        return abs(x)
    return _plain(np.abs(x))


def _sign(x):
    # on the numbers; mg_sign: sign(0) = 0, NaN stays NaN
    return _plain(np.sign(x))


def _tensor_where(cond, x, y):
    if isinstance(x, Tensor) or isinstance(y, Tensor):
        return _tensor._graph_select(cond, x, y)
    return np.where(cond, x, y)


_NAMESPACE = {**{name: _vocabulary_function(name) for name in _METHODS},
              "pow": _pow, "fabs": _fabs, "_sign": _sign, "_where": _tensor_where,
              **_CONSTANTS}


class _OnNumbers(ast.NodeTransformer):
    """Rename the operands to their numbers (a -> a_, ...)."""

    def visit_Name(self, node):
        if node.id in _DATA_NAMES:
            return ast.copy_location(ast.Name(_DATA_NAMES[node.id], ast.Load()), node)
        return node


class _OnGraph(ast.NodeTransformer):
    """The formula over graph nodes: where's condition and piecewise-constant
    functions read the numbers; ``scalar``: where becomes ``x if cond else y``
    (only the picked branch is built), else an elementwise select."""

    def __init__(self, scalar):
        self.scalar = scalar

    def visit_Call(self, node):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name == "where":
            if len(node.args) != 3:
                raise ValueError("where() in a derivative formula takes three arguments")
            cond = _OnNumbers().visit(node.args[0])
            x, y = self.visit(node.args[1]), self.visit(node.args[2])
            if self.scalar:
                return ast.copy_location(ast.IfExp(cond, x, y), node)
            return ast.copy_location(
                ast.Call(ast.Name("_where", ast.Load()), [cond, x, y], []), node)
        if name in _PIECEWISE_CONSTANT:
            return ast.copy_location(
                ast.Call(ast.Name("_" + name, ast.Load()),
                         [_OnNumbers().visit(arg) for arg in node.args], []), node)
        self.generic_visit(node)
        return node


_ARGUMENTS = ("a", "b", "out", "c", "a_", "b_", "out_")


def compile_formula(text, scalar, label="<formula>"):
    """A row's derivative formula as a function of
    (a, b, out, c, a_, b_, out_): the graph operands, the constant, and the
    operands' numbers."""
    tree = ast.parse(text.strip(), mode="eval")
    known = set(_NAMESPACE) | set(_ARGUMENTS) | {"where"} | set(_PIECEWISE_CONSTANT)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in known:
            raise ValueError(f"{label}: the formula {text!r} uses {node.id!r}, which the "
                             "differentiable rules do not know (microgrid/autograd/_rows.py)")
    body = _OnGraph(scalar).visit(tree).body
    function = ast.Expression(ast.Lambda(
        ast.arguments(posonlyargs=[], args=[ast.arg(n) for n in _ARGUMENTS], vararg=None,
                      kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]), body))
    ast.fix_missing_locations(function)
    return eval(compile(function, label, "eval"), dict(_NAMESPACE))


def _compile_rows(scalar):
    rules = {}
    for row in optable.ROWS:
        if row.has_rule:
            rules[row.code] = tuple(
                compile_formula(text, scalar, f"<{row.code_name} d/d{'ab'[i]}>")
                for i, text in enumerate(row.grads))
    return rules


# by op code: the compiled d/da (, d/db) of the row (a op c and c op a
# entries share their row's text)
_SCALAR_RULES = _compile_rows(scalar=True)
_TENSOR_RULES = _compile_rows(scalar=False)
_KIND = {row.code: row.kind for row in optable.ROWS}


def _times(g, d):
    """g times a local derivative d (a node, a number or an array)."""
    if isinstance(d, Node):
        return g * d
    if np.ndim(d) == 0:
        d = float(d)
        if d == 1.0:
            return g
        if d == -1.0:
            return -g
    return g * d


def value_row_vjp(v, code, g, parents):
    """The gradients ``g * d v/d operand`` of a Value node ``v`` of row entry
    ``code`` (a row with a scalar rule), one per entry of ``parents``
    (``v._parents()``; None for a constant or an operand that needs none),
    as graph nodes."""
    kind = _KIND[code]
    rules = _SCALAR_RULES[code]
    with np.errstate(all="ignore"):
        if kind == "BINARY":
            a, b = parents
            out = []
            for rule, p in zip(rules, parents):
                out.append(_times(g, rule(a, b, v, 0.0, a.data, b.data, v.data))
                           if p.requires_grad else None)
            return tuple(out)
        if kind == "BINARY_AC":       # a op c: (a, constant)
            a, c = parents[0], v._const
            return (_times(g, rules[0](a, c, v, 0.0, a.data, c, v.data)), None)
        if kind == "BINARY_CA":       # c op a: (constant, a), the row's d/db
            c, a = v._const, parents[1]
            return (None, _times(g, rules[1](c, a, v, 0.0, c, a.data, v.data)))
        a = parents[0]
        c = v._const if kind == "UNARY_C" else 0.0
        return (_times(g, rules[0](a, None, v, c, a.data, None, v.data)),)


def row_vjp(t, g, c):
    """The same for a Tensor node of a row (``_tensor``'s elementwise graph
    rule sums each back over broadcast axes)."""
    code = _tensor_op_code(t)
    rules = _TENSOR_RULES[code]
    parents = t._parents()
    numbers = [p.data for p in parents]
    with np.errstate(all="ignore"):
        if len(parents) == 2:
            a, b = parents
            return tuple(_times(g, rule(a, b, t, c, numbers[0], numbers[1], t.data))
                         if p.requires_grad else None
                         for rule, p in zip(rules, parents))
        a = parents[0]
        return (_times(g, rules[0](a, None, t, c, numbers[0], None, t.data)),)


def _tensor_op_code(node):
    return optable.row_of(node).code


_tensor._set_row_vjp(row_vjp)

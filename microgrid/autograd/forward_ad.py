"""Forward-mode automatic differentiation, in the style of
``torch.autograd.forward_ad``, and the Hessian-vector product of a scalar
graph by forward-over-reverse.

    from microgrid.autograd import forward_ad as fwAD
    with fwAD.dual_level():
        x = fwAD.make_dual(mg.Value(0.5), 1.0)     # x carries the tangent 1
        y = (x * x).tanh()
        fwAD.unpack_dual(y)                         # (primal=y, tangent=dy/dx)

    fwAD.jvp(f, (x, w), (1.0, np.ones(3)))          # (f(x, w), its JVP)
    fwAD.graph_hvp(loss, params, v)                 # (loss, gradient, H v)

A tangent is stored in the active dual level, beside the graph, keyed by the
node ``make_dual`` seeds; nodes themselves hold no tangent, so ops cost
exactly what they cost without forward mode.  ``unpack_dual`` computes the
tangents it needs by one sweep in compiled code over the graph the ops built
(microgrid.autograd._forward), pushing the seeds through the op table's
derivative rows: no reverse graph is built.

Values are covered throughout; Tensors through the elementwise rows, sum,
mean, the shape ops, matmul, linear, conv2d, conv_transpose2d and
avg_pool2d (other tensor ops raise NotImplementedError naming the op).
"""
from __future__ import annotations

import contextlib
import numbers
import threading
from typing import NamedTuple

import numpy as np

from ..core._engine import Node, Value, _opcode, _set_grad_enabled
from ..tensors._tensor import Tensor
from . import _forward

__all__ = ["dual_level", "make_dual", "unpack_dual", "UnpackedDual", "jvp",
           "graph_hvp", "HvpResult"]


class UnpackedDual(NamedTuple):
    """What ``unpack_dual`` returns: the node and its tangent (a float for a
    Value, an ndarray for a Tensor, None without one)."""
    primal: object
    tangent: object


class HvpResult(NamedTuple):
    """What ``graph_hvp`` returns: the output's value, its gradient and its
    Hessian times ``v``, with respect to each input in order."""
    value: float
    grad: tuple
    hvp: tuple


class _Level:
    """The tangents seeded in one dual level: {node: tangent}, each seeded
    Tensor's in-place version when it was seeded, and the grad mode to
    restore when the level exits."""
    __slots__ = ("seeds", "versions", "grad_mode")

    def __init__(self):
        self.seeds = {}
        self.versions = {}
        self.grad_mode = True

    def tangents(self, roots, where):
        """The roots' tangents along the seeds (one sweep)."""
        for node, version in self.versions.items():
            if node._version != version:
                raise RuntimeError(
                    f"{where}: a Tensor given a tangent by make_dual was changed in place "
                    f"afterwards (now by '{node._op}'); forward mode does not follow in-place "
                    "ops on the Tensors it seeds: use the out-of-place op")
        return _forward.tangents(roots, self.seeds)


_state = threading.local()
_LEAF = 0     # the op code of a leaf (csrc/mg_ops.h)


def _active():
    return getattr(_state, "level", None)


class dual_level(contextlib.ContextDecorator):
    """Context manager (or decorator) inside which ``make_dual`` gives nodes
    tangents.  The tangents belong to the level and are gone when it exits.
    Levels are per thread and do not nest (as in PyTorch).

    Tangents are swept over the graph the ops record, so a level turns
    recording on for its block (as ``enable_grad``), even within
    ``no_grad``; a ``no_grad`` block inside the level cuts tangents where it
    cuts gradients."""

    def __enter__(self):
        if _active() is not None:
            raise RuntimeError("dual_level: a dual level is already active in this thread; "
                               "forward-mode levels do not nest")
        level = _Level()
        level.grad_mode = _set_grad_enabled(True)
        _state.level = level
        return self

    def __exit__(self, *exc):
        level = _active()
        _state.level = None
        if level is not None:
            _set_grad_enabled(level.grad_mode)
        return False


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _value_tangent(tangent, where):
    if isinstance(tangent, Value):
        return tangent.data
    if _is_real(tangent) or (isinstance(tangent, np.ndarray) and tangent.shape == ()
                             and tangent.dtype.kind in "iuf"):
        return float(tangent)
    raise TypeError(f"{where} for a Value takes a real number, got {type(tangent).__name__}")


def _tensor_tangent(tangent, shape, where):
    if isinstance(tangent, Tensor):
        tangent = tangent.data
    try:
        arr = np.asarray(tangent)
    except Exception:
        arr = None
    if arr is None or arr.dtype.kind not in "iuf":
        raise TypeError(f"{where} for a Tensor takes an array of real numbers, "
                        f"got {type(tangent).__name__}")
    if arr.shape != shape:
        raise ValueError(f"{where} has shape {arr.shape}, its Tensor has shape {shape}")
    return np.array(arr, dtype=np.float64, order="C")


def _seed(level, primal, tangent, primal_name, tangent_name):
    """The node carrying ``tangent`` in ``level`` (a number becomes a new leaf)."""
    if _is_real(primal):
        primal = Value(float(primal))
    if isinstance(primal, Value):
        t = _value_tangent(tangent, tangent_name)
    elif isinstance(primal, Tensor):
        t = _tensor_tangent(tangent, primal.shape, tangent_name)
    else:
        raise TypeError(f"{primal_name} takes a Value, a Tensor or a real number, "
                        f"got {type(primal).__name__}")
    if primal in level.seeds:
        raise ValueError(f"{primal_name}: this {type(primal).__name__} already carries a "
                         "tangent in the current dual level")
    level.seeds[primal] = t
    if isinstance(primal, Tensor):
        level.versions[primal] = primal._version
    return primal


def make_dual(primal, tangent):
    """Give ``primal`` the tangent ``tangent`` in the active dual level and
    return it: the node itself for a Value or Tensor (its graph and gradients
    are untouched), a new leaf Value for a number.  ``tangent``: a real
    number for a Value, an array of the same shape for a Tensor.  A node
    computed from others may be given a tangent too: it then counts as an
    input, whatever its operands' tangents."""
    level = _active()
    if level is None:
        raise RuntimeError("make_dual: no dual level is active; call it inside "
                           "`with forward_ad.dual_level():`")
    return _seed(level, primal, tangent, "make_dual(primal)", "make_dual(tangent)")


def unpack_dual(tensor):
    """(primal, tangent) of a Value or Tensor in the active dual level: the
    tangent along the seeds of ``make_dual`` (a float for a Value, an ndarray
    for a Tensor), or None if the node depends on none of them or no level
    is active."""
    if not isinstance(tensor, Node):
        raise TypeError(f"unpack_dual(tensor) takes a Value or a Tensor, "
                        f"got {type(tensor).__name__}")
    level = _active()
    if level is None or not level.seeds:
        return UnpackedDual(tensor, None)
    return UnpackedDual(tensor, level.tangents([tensor], "unpack_dual")[0])


def jvp(func, primals, tangents):
    """``func(*primals)`` and its Jacobian-vector product along ``tangents``,
    as ``torch.func.jvp``: returns (output, tangent of the output), each a
    node and a float (Value) or ndarray (Tensor), or tuples of them when
    ``func`` returns a tuple.  ``primals``: Values, Tensors or real numbers
    (numbers become leaf Values), a tuple of them or one; ``tangents``: one
    per primal, a number for a Value, an array of its shape for a Tensor.
    An output that depends on no primal has a zero tangent.  ``func`` runs
    with graph recording on (the tangents are swept over its graph)."""
    if not callable(func):
        raise TypeError(f"jvp(func) takes a callable, got {type(func).__name__}")
    single = not isinstance(primals, (tuple, list))
    primals = (primals,) if single else tuple(primals)
    if single:
        tangents = (tangents,)
    elif not isinstance(tangents, (tuple, list)):
        raise TypeError(f"jvp(tangents) takes a tuple like primals, got {type(tangents).__name__}")
    if len(tangents) != len(primals):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    level = _Level()
    nodes = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        index = "" if single else f"[{i}]"
        nodes.append(_seed(level, p, t, f"jvp(primals{index})", f"jvp(tangents{index})"))
    previous = _set_grad_enabled(True)      # the tangents are swept over the recorded graph
    try:
        out = func(*nodes)
    finally:
        _set_grad_enabled(previous)
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    for i, o in enumerate(outputs):
        if not isinstance(o, Node):
            raise TypeError(f"jvp: func must return Values or Tensors (or a tuple of them), "
                            f"output {i} is a {type(o).__name__}")
    found = level.tangents(outputs, "jvp")
    result = tuple(t if t is not None else (0.0 if isinstance(o, Value) else np.zeros(o.shape))
                   for o, t in zip(outputs, found))
    if isinstance(out, (tuple, list)):
        return out, result
    return out, result[0]


def graph_hvp(output, inputs, v):
    """The Hessian of the scalar ``output`` (a Value) with respect to the leaf
    Values ``inputs``, times ``v``, by forward-over-reverse in compiled code:
    one tangent sweep along ``v`` and one reverse sweep carrying gradients
    with their tangents, over the graph already built (nothing is added to
    it, no ``.grad`` is touched).  Returns HvpResult(value, grad, hvp): the
    output's value and, per input, d output/d input and (H v)[input].

    Covers every Value op of the op table and the fused sum, mean and dot
    nodes; a Tensor, an element of a Tensor or a node built by
    ``Value(data, _children, _op)`` on the way from the inputs to the output
    raises NotImplementedError."""
    if not isinstance(output, Value):
        raise TypeError(f"graph_hvp(output) takes a Value (a scalar graph), "
                        f"got {type(output).__name__}")
    inputs = [inputs] if isinstance(inputs, Value) else _sequence(inputs, "inputs")
    seen = {}
    for i, x in enumerate(inputs):
        if not isinstance(x, Value):
            raise TypeError(f"graph_hvp(inputs): inputs[{i}] is a {type(x).__name__}, not a Value")
        if _opcode(x) != _LEAF:
            raise ValueError(f"graph_hvp(inputs): inputs[{i}] was computed by '{x._op}'; "
                             "the Hessian is taken with respect to leaves")
        if x in seen:
            raise ValueError(f"graph_hvp(inputs): inputs[{seen[x]}] and inputs[{i}] are the same Value")
        seen[x] = i
    v = [v] if _is_real(v) else _sequence(v, "v")
    if len(v) != len(inputs):
        raise ValueError(f"graph_hvp: {len(inputs)} inputs but v has {len(v)} entries")
    for i, t in enumerate(v):
        if not _is_real(t):
            raise TypeError(f"graph_hvp(v): v[{i}] is a {type(t).__name__}, not a real number")
    value, grad, hv = _forward.hvp(output, inputs, v)
    return HvpResult(value, grad, hv)


def _sequence(x, name):
    if isinstance(x, (str, bytes)) or isinstance(x, Node):
        raise TypeError(f"graph_hvp({name}) takes a sequence, got {type(x).__name__}")
    try:
        return list(x)
    except TypeError:
        raise TypeError(f"graph_hvp({name}) takes a sequence, got {type(x).__name__}") from None

"""Gradients as values (``grad``), and gradients of gradients.

``grad(outputs, inputs, ...)`` returns the gradients of ``outputs`` with
respect to ``inputs`` without touching any ``.grad`` (torch.autograd.grad's
names and semantics).  Without ``create_graph`` it runs the compiled backward
of ``backward()`` (``_engine._grad_pass``) and returns constants; with
``create_graph=True`` a sweep over the engine's topological order builds each
parent's gradient as graph nodes, from the same rules as the compiled pass:

- the op table's rows (Value and Tensor elementwise ops): the row's
  derivative formula evaluated over graph nodes (``_rows``);
- the fused n-ary Value nodes (sum, mean, dot, element): below;
- the other Tensor ops: the graph rule each family file registers beside the
  op's forward and backward (``Tensor._graph_vjp``).

The returned gradients are Values and Tensors of the same graph, so they can
be differentiated again, to any order.  ``.grad`` stays a float (Value) or a
numpy array (Tensor) whatever the pass: ``backward(create_graph=True)`` puts
the numbers of the differentiable sweep there.

The sweep runs in grad mode (as PyTorch's engine runs its backward with
grad mode set to ``create_graph``), so a gradient graph is built inside
``no_grad`` too when ``create_graph=True`` asks for one.
"""
from __future__ import annotations

import numpy as np

from ..core import _engine, optable
from ..core._engine import Node, Value
from ..tensors import _alloc
from ..tensors._tensor import Tensor, _graph_scatter_values
from . import _rows
from .grad_mode import enable_grad

__all__ = ["grad"]

_CODES = {row.code_name: row.code for row in optable.ROWS}
_LEAF, _CUSTOM = _CODES["LEAF"], _CODES["CUSTOM"]
_SUM, _MEAN, _DOT, _ELEMENT = _CODES["SUM"], _CODES["MEAN"], _CODES["DOT"], _CODES["ELEMENT"]
_HAS_RULE = frozenset(row.code for row in optable.ROWS if row.has_rule)
_opcode = _engine._opcode


# ---------------------------------------------------------------------------
# Arguments

def _as_nodes(x, where):
    """A Value/Tensor or a sequence of them, as a tuple."""
    if isinstance(x, Node):
        return (x,)
    if isinstance(x, (list, tuple)):
        for i, item in enumerate(x):
            if not isinstance(item, (Value, Tensor)):
                raise TypeError(f"grad({where}=...): element {i} is a {type(item).__name__}, "
                                "not a Value or a Tensor")
        if not x:
            raise ValueError(f"grad({where}=...) is empty")
        return tuple(x)
    raise TypeError(f"grad({where}=...) takes a Value, a Tensor or a sequence of them, "
                    f"got {type(x).__name__}")


def _seed(output, go, i, as_node):
    """The gradient an output is seeded with: a float or an array (compiled
    pass), or a graph node (``as_node``)."""
    where = f"grad(grad_outputs[{i}])"
    if isinstance(output, Value):
        if go is None:
            return Value(1.0, requires_grad=False) if as_node else 1.0
        if isinstance(go, Value):
            return go if as_node else go.data
        if isinstance(go, (int, float, np.floating, np.integer)) and not isinstance(go, bool):
            return Value(float(go), requires_grad=False) if as_node else float(go)
        raise TypeError(f"{where}: the output is a Value, so its gradient is a Value or a real "
                        f"number, got {type(go).__name__}")
    shape = output.shape
    if go is None:
        if output.numel() != 1:
            raise RuntimeError(
                f"grad(): outputs[{i}] has shape {shape}; the gradient can be implicitly created "
                "only for one-element outputs: pass grad_outputs")
        array = np.ones(shape)
        return Tensor(array) if as_node else array
    if isinstance(go, Tensor):
        if go.shape != shape:
            raise ValueError(f"{where}: shape {go.shape} does not match the output's shape {shape}")
        return go if as_node else np.array(go.data)
    if isinstance(go, Value):
        raise TypeError(f"{where}: the output is a Tensor, so its gradient is a Tensor or an "
                        "array, got a Value")
    try:
        array = np.array(go, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be array-like of real numbers, got "
                        f"{type(go).__name__}") from None
    if array.shape != shape:
        raise ValueError(f"{where}: shape {array.shape} does not match the output's shape {shape}")
    return Tensor(array) if as_node else array


def _zeros_like(x):
    return Value(0.0, requires_grad=False) if isinstance(x, Value) else Tensor(np.zeros(x.shape))


# ---------------------------------------------------------------------------
# grad

def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, as a tuple
    with one entry per input (torch.autograd.grad's arguments).

    ``outputs``: a Value or Tensor, or a sequence of them, each seeded with
    its entry of ``grad_outputs`` (1 when omitted, which a Tensor output with
    more than one element does not allow).  ``inputs``: a Value or Tensor, or
    a sequence, each requiring grad.  ``.grad`` of no node changes.
    Without ``create_graph`` the gradients are constants (the compiled
    backward computes them); with ``create_graph=True`` they are graph nodes
    that can be differentiated again.  An input the outputs do not depend on
    is an error unless ``allow_unused`` (then its entry is None).
    ``retain_graph`` is accepted for PyTorch's sake: microgrid never frees
    a graph after a backward pass, so it can always run again.
    """
    outs = _as_nodes(outputs, "outputs")
    ins = _as_nodes(inputs, "inputs")
    if grad_outputs is None:
        gos = (None,) * len(outs)
    elif isinstance(outputs, Node):
        # one output: its gradient, or a sequence holding only that
        single = (isinstance(grad_outputs, (list, tuple)) and len(grad_outputs) == 1
                  and (grad_outputs[0] is None or isinstance(grad_outputs[0], Node)))
        gos = tuple(grad_outputs) if single else (grad_outputs,)
    else:
        if not isinstance(grad_outputs, (list, tuple)):
            raise TypeError("grad(grad_outputs=...) takes a sequence with one gradient per "
                            f"output, got {type(grad_outputs).__name__}")
        gos = tuple(grad_outputs)
        if len(gos) != len(outs):
            raise ValueError(f"grad(grad_outputs=...): {len(gos)} gradients for {len(outs)} outputs")
    for i, y in enumerate(outs):
        if not y.requires_grad:
            raise RuntimeError(f"grad(): outputs[{i}] does not require grad: it depends on no "
                               "Value or Tensor that requires grad")
    for i, x in enumerate(ins):
        if not x.requires_grad:
            raise RuntimeError(f"grad(): inputs[{i}] does not require grad; differentiate with "
                               "respect to nodes that do (requires_grad=True)")
    seeds = tuple(_seed(y, go, i, create_graph) for i, (y, go) in enumerate(zip(outs, gos)))
    if create_graph:
        found = _graph_pass(outs, seeds, {id(x) for x in ins})
        results = []
        for x in ins:
            g = found.get(id(x), False)
            results.append(_zeros_like(x) if g is None else g)
    else:
        with _alloc.pooled():
            raw = _engine._grad_pass(outs, seeds, ins)
        results = []
        for x, g in zip(ins, raw):
            if g is False:
                results.append(False)
            elif isinstance(x, Value):
                results.append(Value(g, requires_grad=False))
            else:
                results.append(Tensor(np.zeros(x.shape) if g is None else g))
    for i, g in enumerate(results):
        if g is False:
            if not allow_unused:
                raise RuntimeError(
                    f"grad(): inputs[{i}] is not used to compute the outputs (no path from it "
                    "through nodes that require grad); pass allow_unused=True to get None for it")
            results[i] = None
    return tuple(results)


# ---------------------------------------------------------------------------
# The differentiable sweep

def _order(outs):
    """The nodes that need a gradient, each after every node it depends on."""
    if len(outs) == 1:
        return _engine.topological_order(outs[0], every_node=False)
    seen, order = set(), []
    for y in outs:
        for node in _engine.topological_order(y, every_node=False):
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)
    return order


def _graph_pass(outs, seeds, wanted, order=None):
    """Backpropagate the seeds (graph nodes) from ``outs`` building every
    gradient as graph nodes.  Returns {id(node): gradient} for the nodes of
    ``wanted`` (a set of ids, or None for all) that the pass reaches: a
    graph node, or None for a reached node no gradient arrived at."""
    with enable_grad():
        return _graph_sweep(outs, seeds, wanted, _order(outs) if order is None else order)


def _graph_sweep(outs, seeds, wanted, order):
    pending = {}       # id(node): the gradients its consumers sent it
    elements = {}      # id(tensor): ([Value gradients], [flat indices]) from t[i, ...]
    found = {}
    for y, s in zip(outs, seeds):
        pending.setdefault(id(y), []).append(s)
    for node in reversed(order):
        key = id(node)
        parts = pending.pop(key, None)
        picked = elements.pop(key, None)
        if parts is None and picked is None:
            if wanted is None or key in wanted:
                found[key] = None
            continue
        g = _total(node, parts, picked)
        if wanted is None or key in wanted:
            found[key] = g
        code = _opcode(node)
        if code == _LEAF:
            continue
        parents = node._parents()
        if code == _CUSTOM:
            # a Function's node: its backward run on graph nodes; a node built
            # by hand without a rule passes nothing on, as in backward()
            try:
                contributions = node._graph_vjp(g)
            except NotImplementedError as e:
                if "has no Python rule" in str(e):
                    continue
                raise
            for p, c in zip(parents, contributions):
                if c is not None and p.requires_grad:
                    pending.setdefault(id(p), []).append(c)
            continue
        if code == _ELEMENT:
            source = parents[0]
            if source.requires_grad:
                values, flat = elements.setdefault(id(source), ([], []))
                values.append(g)
                flat.append(node._const)
            continue
        if isinstance(node, Value):
            contributions = _value_vjp(node, code, g, parents)
        else:
            contributions = node._graph_vjp(g)
        for p, c in zip(parents, contributions):
            if c is not None and p.requires_grad:
                pending.setdefault(id(p), []).append(c)
    return found


def _total(node, parts, picked):
    """The sum of the gradients sent to ``node``, as one graph node."""
    if isinstance(node, Value):
        return parts[0] if len(parts) == 1 else _engine.sum(parts)
    total = None
    if parts:
        total = parts[0]
        for p in parts[1:]:
            total = total + p
    if picked is not None:
        scattered = _graph_scatter_values(picked[0], picked[1], node.shape)
        total = scattered if total is None else total + scattered
    return total


def _value_vjp(v, code, g, parents):
    """The gradients of a Value node's parents for its gradient ``g``."""
    if code in _HAS_RULE:
        return _rows.value_row_vjp(v, code, g, parents)
    if code == _SUM:
        return tuple(g if p.requires_grad else None for p in parents)
    if code == _MEAN:
        share = g * (1.0 / len(parents))
        return tuple(share if p.requires_grad else None for p in parents)
    if code == _DOT:
        n = (len(parents) - (len(parents) % 2)) // 2
        w, x = parents[:n], parents[n:2 * n]
        out = [g * x[i] if w[i].requires_grad else None for i in range(n)]
        out += [g * w[i] if x[i].requires_grad else None for i in range(n)]
        if len(parents) % 2:
            out.append(g if parents[-1].requires_grad else None)
        return tuple(out)
    raise NotImplementedError(f"no differentiable backward rule for Value op {v._op!r}")


def _graph_backward_into_grad(root, seed):
    """``backward(create_graph=True)``: the differentiable sweep from
    ``root``, its numbers put into ``.grad`` as backward() does (leaves
    accumulate, every other node's gradient is set)."""
    if not root.requires_grad:
        raise RuntimeError(
            "backward(): this node does not require grad; nothing it depends on takes a gradient")
    seed = Value(float(seed), requires_grad=False) if isinstance(root, Value) else Tensor(seed)
    order = _order((root,))
    found = _graph_pass((root,), (seed,), None, order)
    for node in order:
        g = found.get(id(node))
        if isinstance(node, Value):
            number = 0.0 if g is None else g.data
            node.grad = node.grad + number if _opcode(node) == _LEAF else number
        else:
            number = np.zeros(node.shape) if g is None else g.data
            node.grad = node.grad + number if _opcode(node) == _LEAF else number


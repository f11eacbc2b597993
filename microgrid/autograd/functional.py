"""microgrid.autograd.functional: vjp, jvp, jacobian, hessian, hvp, vhp.

The signatures and results of torch.autograd.functional, for Values and
Tensors: ``inputs`` is a Value or Tensor or a tuple of them, ``func`` takes
them as positional arguments and returns a Value or Tensor or a tuple of
them.  Results keep the nesting of ``inputs`` and of ``func``'s outputs (a
tuple where the argument was a tuple).  A Jacobian block of output ``o``
and input ``x`` has shape ``o.shape + x.shape`` (a Value's shape is ``()``);
the block of two Values is a Value.

Everything is built on ``microgrid.autograd.grad``: jvp and hvp by the
double-vjp trick (the vjp is linear in its seed, so differentiating it with
respect to the seed gives the forward product).  ``create_graph=True`` makes
the results graph nodes that can be differentiated again; otherwise they are
constants.  They run in grad mode, inside ``no_grad`` too (as PyTorch's).
``vectorize`` and the Jacobian strategies are accepted for
PyTorch's sake: the products are always computed one reverse pass per row.
"""
from __future__ import annotations

import numpy as np

from ..core._engine import Node, Value
from ..tensors._tensor import Tensor, stack
from ._grad import grad as _grad
from .grad_mode import enable_grad

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


# ---------------------------------------------------------------------------
# Arguments and results

def _tuple(x, where):
    """(is a tuple, the items as a tuple), checking every item is a node."""
    is_tuple = isinstance(x, (tuple, list))
    items = tuple(x) if is_tuple else (x,)
    for i, item in enumerate(items):
        if not isinstance(item, (Value, Tensor)):
            raise TypeError(f"{where} takes a Value, a Tensor or a tuple of them, "
                            f"got {type(item).__name__}" + (f" at position {i}" if is_tuple else ""))
    return is_tuple, items


def _prepare(inputs, create_graph, where):
    """Fresh nodes requiring grad to call ``func`` with: with ``create_graph``
    an input that requires grad stays connected to its graph (through an
    identity node); otherwise every input is a new leaf with its numbers."""
    is_tuple, items = _tuple(inputs, f"{where}(inputs)")
    out = []
    for x in items:
        if create_graph and x.requires_grad:
            out.append(x + 0.0 if isinstance(x, Value) else x.reshape(x.shape))
        elif isinstance(x, Value):
            out.append(Value(x.data))
        else:
            out.append(Tensor(x.data, requires_grad=True))
    return is_tuple, tuple(out)


def _outputs(func, inputs, where):
    result = func(*inputs)
    return _tuple(result, f"{where}: func's output")


def _detach(x, create_graph):
    if create_graph:
        return x
    if isinstance(x, Value):
        return Value(x.data, requires_grad=False)
    return x.detach()


def _vectors(v, like, where, name="v"):
    """``v`` matched to the nodes ``like`` (a tuple), as constant nodes (or
    the nodes themselves)."""
    is_tuple = isinstance(v, (tuple, list))
    items = tuple(v) if is_tuple else (v,)
    if len(items) != len(like):
        raise ValueError(f"{where}({name}=...): {len(items)} entries for {len(like)} "
                         f"{'inputs' if name == 'v' else 'outputs'}")
    out = []
    for i, (vi, x) in enumerate(zip(items, like)):
        if isinstance(x, Value):
            if isinstance(vi, Value):
                out.append(vi)
            elif isinstance(vi, (int, float, np.floating, np.integer)) and not isinstance(vi, bool):
                out.append(Value(float(vi), requires_grad=False))
            else:
                raise TypeError(f"{where}({name}[{i}]): a Value's vector is a Value or a number, "
                                f"got {type(vi).__name__}")
            continue
        array = vi if isinstance(vi, Tensor) else Tensor(np.asarray(vi, dtype=np.float64))
        if array.shape != x.shape:
            raise ValueError(f"{where}({name}[{i}]): shape {array.shape} does not match "
                             f"shape {x.shape}")
        out.append(array)
    return tuple(out)


def _fill_unused(grads, like, strict, where, what):
    out = []
    for i, (g, x) in enumerate(zip(grads, like)):
        if g is None:
            if strict:
                raise RuntimeError(f"{where}: {what} {i} does not depend on the inputs "
                                   "(strict=True)")
            g = Value(0.0, requires_grad=False) if isinstance(x, Value) else Tensor(np.zeros(x.shape))
        out.append(g)
    return tuple(out)


def _grads(outputs, inputs, seeds, create_graph, strict, where):
    """grad() of the outputs that require grad (those that do not give zeros)."""
    pairs = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
    if not pairs:
        if strict:
            raise RuntimeError(f"{where}: the output does not depend on the inputs (strict=True)")
        return (None,) * len(inputs)
    return _grad([o for o, _ in pairs], inputs, [s for _, s in pairs],
                 create_graph=create_graph, allow_unused=True)


def _shape(x):
    return () if isinstance(x, Value) else tuple(x.shape)


def _result(items, is_tuple):
    return tuple(items) if is_tuple else items[0]


# ---------------------------------------------------------------------------
# Products

@enable_grad()
def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T J)``: the vector-Jacobian product."""
    in_tuple, xs = _prepare(inputs, create_graph, "vjp")
    out_tuple, ys = _outputs(func, xs, "vjp")
    if v is None:
        for y in ys:
            if _shape(y) not in ((), (1,)) and np.prod(_shape(y)) != 1:
                raise RuntimeError("vjp(v=None) is only for a function with a single "
                                   "one-element output; give v")
        v = tuple(1.0 if isinstance(y, Value) else np.ones(_shape(y)) for y in ys)
        v = v if out_tuple else v[0]
    seeds = _vectors(v, ys, "vjp")
    g = _fill_unused(_grads(ys, xs, seeds, create_graph, strict, "vjp"), xs, strict, "vjp", "input")
    return (_result([_detach(y, create_graph) for y in ys], out_tuple),
            _result([_detach(gi, create_graph) for gi in g], in_tuple))


@enable_grad()
def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), J v)``: the Jacobian-vector product (double vjp: the
    vjp is built with a seed u requiring grad, then differentiated with
    respect to u along v)."""
    in_tuple, xs = _prepare(inputs, create_graph, "jvp")
    if v is None:
        for x in xs:
            if np.prod(_shape(x)) != 1:
                raise RuntimeError("jvp(v=None) is only for a single one-element input; give v")
        v = tuple(1.0 if isinstance(x, Value) else np.ones(_shape(x)) for x in xs)
        v = v if in_tuple else v[0]
    vs = _vectors(v, xs, "jvp")
    out_tuple, ys = _outputs(func, xs, "jvp")
    us = tuple(Value(0.0) if isinstance(y, Value) else Tensor(np.zeros(_shape(y)), requires_grad=True)
               for y in ys)
    g = _grads(ys, xs, us, True, strict, "jvp")
    pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi is not None and gi.requires_grad]
    if pairs:
        jv = _grad([p for p, _ in pairs], us, [q for _, q in pairs],
                   create_graph=create_graph, allow_unused=True)
    else:
        jv = (None,) * len(us)
    jv = _fill_unused(jv, ys, strict, "jvp", "output")
    return (_result([_detach(y, create_graph) for y in ys], out_tuple),
            _result([_detach(j, create_graph) for j in jv], out_tuple))


def _one_hot(shape, k):
    e = np.zeros(int(np.prod(shape)))
    e[k] = 1.0
    return e.reshape(shape)


def _block(rows, out_shape, x, create_graph):
    """The rows (gradients w.r.t. ``x`` of each element of an output, in C
    order) as one Jacobian block of shape ``out_shape + x.shape``."""
    if isinstance(x, Value) and out_shape == ():
        return rows[0] if create_graph else Value(rows[0].data, requires_grad=False)
    if not create_graph:
        data = np.array([r.data for r in rows], dtype=np.float64)
        return Tensor(data.reshape(out_shape + _shape(x)))
    return stack(list(rows)).reshape(out_shape + _shape(x))


def _jacobian(ys, xs, create_graph, strict, where):
    """Blocks [i][j]: d ys[i] / d xs[j]."""
    blocks = []
    for i, y in enumerate(ys):
        shape = _shape(y)
        rows = [[] for _ in xs]
        n = int(np.prod(shape))
        for k in range(n):
            seed = 1.0 if isinstance(y, Value) else _one_hot(shape, k)
            g = _grads((y,), xs, (seed,), create_graph, False, where)
            for j, gj in enumerate(g):
                if gj is None:
                    if strict:
                        raise RuntimeError(f"{where}: output {i} does not depend on input {j} "
                                           "(strict=True)")
                    gj = Value(0.0, requires_grad=False) if isinstance(xs[j], Value) \
                        else Tensor(np.zeros(_shape(xs[j])))
                rows[j].append(gj)
        if n == 0:
            blocks.append([Tensor(np.zeros(shape + _shape(x))) for x in xs])
        else:
            blocks.append([_block(rows[j], shape, x, create_graph) for j, x in enumerate(xs)])
    return blocks


@enable_grad()
def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode"):
    """The Jacobian of ``func`` at ``inputs``: a block per (output, input)."""
    if strategy not in ("reverse-mode", "forward-mode"):
        raise ValueError(f"jacobian(strategy=...) is 'reverse-mode' or 'forward-mode', got {strategy!r}")
    in_tuple, xs = _prepare(inputs, create_graph, "jacobian")
    out_tuple, ys = _outputs(func, xs, "jacobian")
    blocks = _jacobian(ys, xs, create_graph, strict, "jacobian")
    rows = [_result(row, in_tuple) for row in blocks]
    return _result(rows, out_tuple)


@enable_grad()
def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """The Hessian of a function with a single one-element output: a block
    per pair of inputs, of shape ``x_i.shape + x_j.shape``."""
    if outer_jacobian_strategy not in ("reverse-mode", "forward-mode"):
        raise ValueError("hessian(outer_jacobian_strategy=...) is 'reverse-mode' or "
                         f"'forward-mode', got {outer_jacobian_strategy!r}")
    in_tuple, xs = _prepare(inputs, create_graph, "hessian")
    y = _scalar_output(func, xs, "hessian")
    first = _fill_unused(_grads((y,), xs, (None,), True, strict, "hessian"), xs, strict,
                         "hessian", "input")
    blocks = _jacobian(first, xs, create_graph, strict, "hessian")
    return _result([_result(row, in_tuple) for row in blocks], in_tuple)


def _scalar_output(func, xs, where):
    out_tuple, ys = _outputs(func, xs, where)
    if out_tuple and len(ys) != 1 or np.prod(_shape(ys[0])) != 1:
        raise RuntimeError(f"{where}: func must return a single one-element Value or Tensor")
    return ys[0]


@enable_grad()
def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T H)`` for a function with one one-element output."""
    in_tuple, xs = _prepare(inputs, create_graph, "vhp")
    vs = _vhp_vectors(v, xs, in_tuple, "vhp")
    y = _scalar_output(func, xs, "vhp")
    first = _grads((y,), xs, (None,), True, strict, "vhp")
    pairs = [(g, vi) for g, vi in zip(first, vs) if g is not None and g.requires_grad]
    if pairs:
        r = _grad([g for g, _ in pairs], xs, [vi for _, vi in pairs],
                  create_graph=create_graph, allow_unused=True)
    else:
        r = (None,) * len(xs)
    r = _fill_unused(r, xs, strict, "vhp", "input")
    return _detach(y, create_graph), _result([_detach(g, create_graph) for g in r], in_tuple)


@enable_grad()
def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), H v)`` for a function with one one-element output
    (double vjp: the vjp of the gradient with a seed u, differentiated with
    respect to u along v)."""
    in_tuple, xs = _prepare(inputs, create_graph, "hvp")
    vs = _vhp_vectors(v, xs, in_tuple, "hvp")
    y = _scalar_output(func, xs, "hvp")
    first = _grads((y,), xs, (None,), True, strict, "hvp")
    used = [(g, x) for g, x in zip(first, xs) if g is not None and g.requires_grad]
    r = (None,) * len(xs)
    if used:
        us = tuple(Value(0.0) if isinstance(g, Value) else Tensor(np.zeros(g.shape), requires_grad=True)
                   for g, _ in used)
        uh = _grad([g for g, _ in used], xs, list(us), create_graph=True, allow_unused=True)
        pairs = [(w, vi) for w, vi in zip(uh, vs) if w is not None and w.requires_grad]
        if pairs:
            hv = _grad([w for w, _ in pairs], us, [vi for _, vi in pairs],
                       create_graph=create_graph, allow_unused=True)
            back = {id(g): h for (g, _), h in zip(used, hv)}
            r = tuple(back.get(id(g)) if g is not None else None for g in first)
    r = _fill_unused(r, xs, strict, "hvp", "input")
    return _detach(y, create_graph), _result([_detach(g, create_graph) for g in r], in_tuple)


def _vhp_vectors(v, xs, in_tuple, where):
    if v is None:
        if len(xs) != 1 or np.prod(_shape(xs[0])) != 1:
            raise RuntimeError(f"{where}(v=None) is only for a single one-element input; give v")
        v = 1.0 if isinstance(xs[0], Value) else np.ones(_shape(xs[0]))
    return _vectors(v, xs, where)

"""Custom ops: ``Function``, an op whose forward and backward are Python code.

    class Cube(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            return grad * 3 * x ** 2

    y = Cube.apply(x)          # x a Value or a Tensor

The names and semantics are torch.autograd.Function's.  ``apply`` runs
``forward`` under ``no_grad`` and gives each Value or Tensor it returns a
graph node of its own (op CUSTOM, ``_op`` the class name) whose parents are
the Value and Tensor arguments.  The context ``ctx`` is that node's rule: the
reverse sweep calls it, and it calls ``backward`` once per pass with one
gradient per output (zeros for outputs no gradient reached), then adds what
``backward`` returns into the arguments' ``.grad``.  Other arguments (numbers,
strings, arrays) take the gradient None.

Called with gradients that are graph nodes (``_graph_vjp``, the
differentiable sweep of ``create_graph``), the context runs ``backward``
with grad mode on, so a backward written with microgrid ops can be
differentiated again.
"""
from __future__ import annotations

import numpy as np

from ..core import _engine
from ..core._engine import Node, PyRule, Value
from ..tensors._tensor import Tensor, _array_unbroadcast, _custom_tensor, _graph_unbroadcast
from .grad_mode import enable_grad, is_grad_enabled, no_grad

__all__ = ["Function", "FunctionCtx"]


def _shape_text(shape):
    return "[" + ", ".join(str(n) for n in shape) + "]"


class FunctionCtx(PyRule):
    """The context of one ``Function.apply`` call: what ``forward`` saves for
    ``backward``, and the rule of the call's output nodes.  Attributes the
    user sets on it (``ctx.k = k``) are kept for ``backward``."""

    def __init__(self, function, args):
        self._mg_function = function
        self._mg_name = function.__name__
        self._mg_args = args
        self._mg_saved = ()
        self._mg_non_differentiable = set()
        self._mg_materialize = True
        self._mg_outputs = ()        # one entry per forward output: a Value, Tensor or None
        self._mg_live = ()           # whether each output is a node of this call
        self._mg_waiting = None      # outputs of this pass whose gradient is still to come
        enabled = is_grad_enabled()
        self.needs_input_grad = tuple(
            enabled and isinstance(a, Node) and a.requires_grad for a in args)

    def __repr__(self):
        return f"<{self._mg_name} context>"

    # -- what forward calls --------------------------------------------------

    def save_for_backward(self, *tensors):
        """Keep Values and Tensors (or None) for ``backward``, which reads
        them back from ``saved_tensors``."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, (Value, Tensor)):
                raise TypeError(f"save_for_backward can only save Values and Tensors (or None), "
                                f"but argument {i} is of type {type(t).__name__}")
        self._mg_saved = tensors

    @property
    def saved_tensors(self):
        """What ``save_for_backward`` kept, in its order (an output of the
        call is the output node itself)."""
        return self._mg_saved

    def mark_non_differentiable(self, *outputs):
        """Outputs of ``forward`` that take no gradient (indices, masks):
        they are returned as leaves with ``requires_grad`` False."""
        for i, o in enumerate(outputs):
            if not isinstance(o, (Value, Tensor)):
                raise TypeError(f"mark_non_differentiable only accepts Values and Tensors, "
                                f"but argument {i} is of type {type(o).__name__}")
            self._mg_non_differentiable.add(id(o))

    def set_materialize_grads(self, value):
        """With False, ``backward`` gets None instead of zeros for an output
        that no gradient reached (True by default, as in PyTorch)."""
        self._mg_materialize = bool(value)

    # -- the node's rule -----------------------------------------------------

    def _apply(self, node):
        """The reverse sweep reached output ``node``: once every output of
        this call that the pass reaches has its gradient, run backward."""
        outputs = [o for o, live in zip(self._mg_outputs, self._mg_live) if live]
        if len(outputs) == 1:
            self._run(node, None)
            return
        stamp = _engine._pass_stamp()
        if self._mg_waiting is None or self._mg_waiting[0] != stamp:
            reached = {id(o) for o in outputs if o.requires_grad and _engine._in_pass(o)}
            self._mg_waiting = (stamp, reached, set(reached))
        _, reached, waiting = self._mg_waiting
        waiting.discard(id(node))
        if waiting:
            return
        self._mg_waiting = None
        self._run(None, reached)

    def _apply_once(self, node):
        """``node._backward()``: this output's rule alone (the other outputs'
        gradients taken as zero)."""
        self._run(node, None)

    def _run(self, only, reached):
        """Call backward with the gradients of output ``only`` (the others
        zero), or of the outputs whose ids are in ``reached``, and add the
        results into the arguments' ``.grad``."""
        grads = []
        for o, live in zip(self._mg_outputs, self._mg_live):
            if live and (o is only if only is not None else id(o) in reached):
                grads.append(Value(o.grad, requires_grad=False) if isinstance(o, Value)
                             else Tensor(o.grad))
            else:
                grads.append(self._zero_like(o))
        with no_grad():
            result = self._mg_function.backward(self, *grads)
        result = self._checked(result)
        for i, (arg, g) in enumerate(zip(self._mg_args, result)):
            if g is None or not isinstance(arg, Node) or not arg.requires_grad:
                continue
            number = self._number(i, arg, g)
            if isinstance(arg, Value):
                arg.grad += number
            else:
                grad = arg.grad
                grad += number

    def _graph_vjp(self, node, g):
        """The gradients of ``node``'s parents (its Value and Tensor
        arguments, in order) for incoming gradient ``g``, a graph node: backward
        run with grad mode on, so its result can be differentiated again."""
        if not isinstance(g, (Value, Tensor)):
            g = Value(float(g), requires_grad=False) if isinstance(node, Value) else Tensor(g)
        grads = [g if o is node else self._zero_like(o) for o in self._mg_outputs]
        with enable_grad():
            result = self._checked(self._mg_function.backward(self, *grads))
            out = []
            for i, (arg, r) in enumerate(zip(self._mg_args, result)):
                if isinstance(arg, Node):
                    out.append(None if r is None or not arg.requires_grad
                               else self._as_node(i, arg, r))
        return tuple(out)

    # -- checks and conversions ------------------------------------------------

    def _zero_like(self, o):
        if o is None or not self._mg_materialize:
            return None
        return Value(0.0, requires_grad=False) if isinstance(o, Value) else Tensor(np.zeros(o.shape))

    def _checked(self, result):
        """backward's result as a tuple with one entry per forward argument."""
        name = self._mg_name
        if not isinstance(result, tuple):
            result = (result,)
        n = len(self._mg_args)
        if len(result) < n or any(g is not None for g in result[n:]):
            raise RuntimeError(f"function {name}.backward returned an incorrect number of "
                               f"gradients (expected {n}, got {len(result)})")
        for i, (arg, g) in enumerate(zip(self._mg_args, result)):
            if g is not None and not isinstance(arg, Node):
                raise RuntimeError(
                    f"function {name}.backward returned a gradient different than None at "
                    f"position {i + 1}, but the corresponding forward input was not a Value "
                    "or a Tensor")
        return result[:n]

    def _number(self, i, arg, g):
        """Gradient ``g`` for argument ``arg`` as a float (Value) or an array
        of ``arg``'s shape (Tensor), summed over broadcast dimensions."""
        if isinstance(g, Value):
            array = np.array(g.data)
        elif isinstance(g, Tensor):
            array = np.asarray(g.data)
        else:
            try:
                array = np.asarray(g, dtype=np.float64)
            except (TypeError, ValueError):
                array = None
            if array is None or isinstance(g, (str, bytes)):
                raise TypeError(f"function {self._mg_name}.backward returned a "
                                f"{type(g).__name__} as the gradient at index {i}; return a "
                                "Value, a Tensor, an array or a real number (or None)")
        shape = () if isinstance(arg, Value) else arg.shape
        if array.shape != shape:
            if isinstance(arg, Value) and array.size == 1:
                return float(array.reshape(-1)[0])
            if not _expandable(shape, array.shape):
                raise RuntimeError(
                    f"Function {self._mg_name}.backward returned an invalid gradient at index "
                    f"{i} - got {_shape_text(array.shape)} but expected shape compatible with "
                    f"{_shape_text(shape)}")
            array = _array_unbroadcast(array, tuple(shape))
        return float(array) if isinstance(arg, Value) else array

    def _as_node(self, i, arg, r):
        """Gradient ``r`` for argument ``arg`` as a graph node of its kind."""
        if isinstance(arg, Value):
            if isinstance(r, Value):
                return r
            if isinstance(r, Tensor):
                if r.numel() != 1:
                    raise RuntimeError(
                        f"Function {self._mg_name}.backward returned an invalid gradient at "
                        f"index {i} - got {_shape_text(r.shape)} but expected shape compatible "
                        "with []")
                return r.reshape(-1)[0]
            return Value(self._number(i, arg, r), requires_grad=False)
        if isinstance(r, Value):
            r = _engine_stack(r)
        if not isinstance(r, Tensor):
            return Tensor(self._number(i, arg, r))
        if r.shape == arg.shape:
            return r
        if not _expandable(arg.shape, r.shape):
            raise RuntimeError(
                f"Function {self._mg_name}.backward returned an invalid gradient at index {i} "
                f"- got {_shape_text(r.shape)} but expected shape compatible with "
                f"{_shape_text(arg.shape)}")
        return _graph_unbroadcast(r, tuple(arg.shape))


def _engine_stack(v):
    from ..tensors._tensor import _value_tensor
    return _value_tensor(v)


def _expandable(shape, target):
    """Whether ``shape`` broadcasts to ``target`` (numpy's rules)."""
    if len(shape) > len(target):
        return False
    tail = target[len(target) - len(shape):]
    return all(s == t or s == 1 for s, t in zip(shape, tail))


class _FunctionMeta(type):
    def __repr__(cls):
        return f"<microgrid.autograd.Function {cls.__name__}>"


class Function(metaclass=_FunctionMeta):
    """An op whose forward and backward are Python code, as
    torch.autograd.Function: subclass it with static methods
    ``forward(ctx, *args)`` and ``backward(ctx, *grads)`` (or ``forward(*args)``
    and ``setup_context(ctx, inputs, output)``) and call ``apply(*args)``.

    ``forward`` runs under ``no_grad`` and returns a Value, a Tensor, or a
    tuple of them (other items pass through).  ``backward`` gets one gradient
    per output (a Value for a Value output, a Tensor for a Tensor output) and
    returns one per argument of ``forward``: None for arguments that are not
    Values or Tensors or need none.  A Tensor gradient may have the shape of a
    broadcast of its argument (it is summed back).  In ``ctx``:
    ``save_for_backward(*tensors)``, ``saved_tensors``, ``needs_input_grad``,
    ``mark_non_differentiable(*outputs)``, ``set_materialize_grads(bool)``.

    Graph replay does not run Python forwards: ``Graph`` refuses a graph with
    a Function node.  ``explain`` and ``draw`` show the call as one node named
    after the class.
    """

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: a Function is not instantiated; call "
                           f"{type(self).__name__}.apply(*args)")

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError(
            "You must implement the forward function for custom microgrid.autograd.Function.")

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError(
            "You must implement the backward method for your custom "
            "microgrid.autograd.Function to use it with backward().")

    vjp = backward

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` on ``args`` and return its outputs as graph nodes
        that backpropagate through ``backward``."""
        if cls is Function:
            raise NotImplementedError(
                "You must implement the forward function for custom microgrid.autograd.Function.")
        separate = cls.setup_context is not Function.setup_context
        if separate:
            import inspect
            bound = inspect.signature(cls.forward).bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = tuple(bound.args), {}
        ctx = FunctionCtx(cls, args)
        with no_grad():
            if separate:
                output = cls.forward(*args)
                cls.setup_context(ctx, args, output)
            else:
                output = cls.forward(ctx, *args, **kwargs)
        return _outputs(ctx, output)


def _outputs(ctx, output):
    """The nodes ``apply`` returns for forward's ``output``."""
    is_tuple = isinstance(output, tuple)
    items = output if is_tuple else (output,)
    parents = tuple(a for a in ctx._mg_args if isinstance(a, Node))
    differentiable = any(ctx.needs_input_grad)
    inputs = {id(p) for p in parents}
    results, nodes, made = [], [], {}
    for item in items:
        if not isinstance(item, (Value, Tensor)):
            results.append(item)
            nodes.append(None)
            continue
        if not differentiable or id(item) in ctx._mg_non_differentiable:
            leaf = item
            if id(item) in inputs or item.requires_grad:
                leaf = (Value(item.data, requires_grad=False) if isinstance(item, Value)
                        else Tensor(item.data))
            results.append(leaf)
            nodes.append(None)
            made[id(item)] = leaf
            continue
        if isinstance(item, Value):
            node = _engine._custom_value(item.data, parents, ctx, ctx._mg_name, True)
        else:
            node = _custom_tensor(item.data, parents, ctx, ctx._mg_name, True)
        results.append(node)
        nodes.append(node)
        made[id(item)] = node
    if differentiable:
        ctx._mg_outputs = tuple(r if isinstance(r, Node) else None for r in results)
        ctx._mg_live = tuple(n is not None for n in nodes)
        # a saved output is the output node itself, as in PyTorch
        ctx._mg_saved = tuple(s if s is None or id(s) in inputs else made.get(id(s), s)
                              for s in ctx._mg_saved)
    return tuple(results) if is_tuple else results[0]


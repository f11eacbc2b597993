"""Central finite-difference checks, for Values and Tensors: ``gradcheck``
(backward() against the forward pass) and ``gradgradcheck`` (the gradient
built with create_graph=True against finite differences of itself)."""
import numpy as np

from ..core._engine import Value
from ..tensors._tensor import Tensor

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """The analytic and numerical gradients disagree."""


def _as_list(inputs):
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    return [inputs]


def _output(out):
    if isinstance(out, (Value, Tensor)):
        return out
    raise TypeError(f"gradcheck(f): f must return a Value or a Tensor, got {type(out).__name__}")


class _Projection:
    """Reduces f's output to one number: a Value as it is, a Tensor through
    a fixed random cotangent v (the check is then on sum(out * v), which
    tests every row of the Jacobian in a random combination)."""

    def __init__(self):
        self.cotangent = None

    def value(self, out):
        if isinstance(out, Value):
            return out.data
        if self.cotangent is None:
            self.cotangent = np.random.default_rng(0).uniform(0.5, 1.5, out.shape)
            self.cotangent *= np.where(np.random.default_rng(1).random(out.shape) < 0.5, -1.0, 1.0)
        return float(np.sum(out.data * self.cotangent))

    def backward(self, out):
        if not out.requires_grad:
            return               # f does not depend on the inputs: gradients stay 0
        if isinstance(out, Value):
            out.backward()
        else:
            self.value(out)
            out.backward(self.cotangent)


def gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check ``backward()`` of ``f(*inputs)`` against central differences.

    For each input x (every element of a Tensor with requires_grad):
    numerical = (f(x + eps) - f(x - eps)) / (2 eps), and it must satisfy
    |analytic - numerical| <= atol + rtol * |numerical|.  A Tensor output is
    checked through sum(output * v) for a fixed random v.  Returns True, or
    raises GradcheckError naming the input, the element and both numbers.
    The defaults are PyTorch's.
    """
    inputs = _as_list(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, (Value, Tensor)):
            raise TypeError(f"gradcheck(inputs): input {i} is a {type(x).__name__}, not a Value or a Tensor")
    for name, number in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if not isinstance(number, (int, float)) or number < 0 or (name == "eps" and number == 0):
            raise ValueError(f"gradcheck({name}=...) must be a positive number, got {number!r}")
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Value) or x.requires_grad]
    if not checked:
        raise ValueError("gradcheck(inputs): no input requires grad")

    projection = _Projection()
    saved = [x.grad if isinstance(x, Value) else x.grad.copy() for x in inputs]
    for x in inputs:
        if isinstance(x, Value):
            x.grad = 0.0
        else:
            x.grad[...] = 0.0
    try:
        projection.backward(_output(f(*inputs)))
        analytic = [x.grad if isinstance(x, Value) else x.grad.copy() for x in inputs]
    finally:
        for x, g in zip(inputs, saved):
            if isinstance(x, Value):
                x.grad = g
            else:
                x.grad[...] = g

    def numerical_at(read, write):
        original = read()
        try:
            write(original + eps)
            plus = projection.value(_output(f(*inputs)))
            write(original - eps)
            minus = projection.value(_output(f(*inputs)))
        finally:
            write(original)
        return (plus - minus) / (2 * eps)

    for i in checked:
        x = inputs[i]
        name = f" ({x.label})" if x.label else ""
        if isinstance(x, Value):
            numerical = numerical_at(lambda: x.data, lambda v: setattr(x, "data", v))
            elements = [((), analytic[i], numerical)]
        else:
            flat = x.data.reshape(-1)    # a view: writes perturb the tensor
            elements = []
            for k in range(flat.size):
                numerical = numerical_at(lambda: float(flat[k]), lambda v: flat.__setitem__(k, v))
                index = np.unravel_index(k, x.shape) if x.ndim else ()
                elements.append((tuple(int(j) for j in index), float(analytic[i].reshape(-1)[k]), numerical))
        for index, a, n in elements:
            if not abs(a - n) <= atol + rtol * abs(n):
                where = f", element {index}" if isinstance(x, Tensor) else ""
                raise GradcheckError(
                    f"gradcheck: gradient of input {i}{name}{where} disagrees: "
                    f"analytic {a!r}, numerical {n!r} (eps={eps}, atol={atol}, rtol={rtol})")
    return True


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, **unused_options):
    """Check second derivatives: the gradient of ``func(*inputs)`` built
    with ``mg.grad(..., create_graph=True)``, as a function of the inputs and
    of the output's gradient ``grad_outputs``, goes through ``gradcheck``
    (its backward against central differences of the gradient itself).

    ``grad_outputs`` defaults to fixed random numbers (requiring grad, so
    they are checked too), as PyTorch's gradgradcheck draws them.  PyTorch's
    other keyword options are accepted and change nothing.  Returns True, or
    raises GradcheckError (returns False when ``raise_exception`` is false).
    """
    from ..autograd import grad
    from ..tensors._tensor import cat, stack

    inputs = _as_list(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, (Value, Tensor)):
            raise TypeError(f"gradgradcheck(inputs): input {i} is a {type(x).__name__}, "
                            "not a Value or a Tensor")
    checked = [x for x in inputs if x.requires_grad]
    if not checked:
        raise ValueError("gradgradcheck(inputs): no input requires grad")
    out = func(*inputs)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    for y in outs:
        _output(y)
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = [Value(float(rng.uniform(0.5, 1.5))) if isinstance(y, Value)
                        else Tensor(rng.uniform(-1.5, 1.5, y.shape), requires_grad=True) for y in outs]
    else:
        grad_outputs = _as_list(grad_outputs)
        if len(grad_outputs) != len(outs):
            raise ValueError(f"gradgradcheck(grad_outputs=...): {len(grad_outputs)} gradients "
                             f"for {len(outs)} outputs")
    n = len(inputs)

    def gradient(*args):
        xs, gos = args[:n], args[n:]
        ys = func(*xs)
        ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
        pairs = [(y, go) for y, go in zip(ys, gos) if y.requires_grad]
        wanted = [x for x in xs if x.requires_grad]
        if pairs:
            gs = grad([y for y, _ in pairs], wanted, [go for _, go in pairs],
                      create_graph=True, allow_unused=True)
        else:
            gs = [None] * len(wanted)
        flat = []
        for x, g in zip(wanted, gs):
            if g is None:
                g = Tensor(np.zeros(x.shape)) if isinstance(x, Tensor) else Value(0.0, requires_grad=False)
            flat.append(stack([g]) if isinstance(g, Value) else g.reshape(-1))
        return cat(flat)

    try:
        return gradcheck(gradient, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol)
    except GradcheckError as e:
        if raise_exception:
            raise GradcheckError(f"gradgradcheck (second derivatives): {e}") from None
        return False

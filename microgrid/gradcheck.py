"""Central finite-difference check of backward() against the forward pass."""
from ._engine import Value

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """The analytic and numerical gradients disagree."""


def _as_list(inputs):
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    return [inputs]


def _scalar_output(out):
    if isinstance(out, Value):
        return out
    raise TypeError(f"gradcheck(f): f must return a Value, got {type(out).__name__}")


def gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check ``backward()`` of ``f(*inputs)`` against central differences.

    For each input x: numerical = (f(x + eps) - f(x - eps)) / (2 eps), and it
    must satisfy |analytic - numerical| <= atol + rtol * |numerical|.
    Returns True, or raises GradcheckError naming the input and both numbers.
    The defaults are PyTorch's.
    """
    inputs = _as_list(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, Value):
            raise TypeError(f"gradcheck(inputs): input {i} is a {type(x).__name__}, not a Value")
    for name, number in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if not isinstance(number, (int, float)) or number < 0 or (name == "eps" and number == 0):
            raise ValueError(f"gradcheck({name}=...) must be a positive number, got {number!r}")

    saved = [x.grad for x in inputs]
    for x in inputs:
        x.grad = 0.0
    _scalar_output(f(*inputs)).backward()
    analytic = [x.grad for x in inputs]
    for x, g in zip(inputs, saved):
        x.grad = g

    for i, x in enumerate(inputs):
        original = x.data
        try:
            x.data = original + eps
            plus = _scalar_output(f(*inputs)).data
            x.data = original - eps
            minus = _scalar_output(f(*inputs)).data
        finally:
            x.data = original
        numerical = (plus - minus) / (2 * eps)
        if not abs(analytic[i] - numerical) <= atol + rtol * abs(numerical):
            name = f" ({x.label})" if x.label else ""
            raise GradcheckError(
                f"gradcheck: gradient of input {i}{name} disagrees: "
                f"analytic {analytic[i]!r}, numerical {numerical!r} "
                f"(eps={eps}, atol={atol}, rtol={rtol})")
    return True

"""The tensor factories with PyTorch's names and arguments beyond tensor(),
zeros(), ones() and randn() (which live with the Tensor type): ranges,
random integers and uniforms, filled tensors, the identity, tensors shaped
like another, and numpy arrays as tensors.

Each makes a leaf through ``_tensor._make``, so ``dtype`` and
``requires_grad`` mean the same everywhere: the dtype is float64, int64 or
bool (integers give int64 as PyTorch's do, floats float64), and only a
float64 tensor can require grad.  Random draws come from the Generator that
``microgrid.manual_seed`` seeds.
"""
import numbers

import numpy as np

from ._tensor import Tensor, _make

__all__ = ["arange", "linspace", "full", "eye", "empty", "rand", "randint",
           "zeros_like", "ones_like", "full_like", "from_numpy"]


def _number(x, where):
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(f"{where} takes a number, got a tensor of shape {x.shape}")
        x = x.item()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.number)):
        raise TypeError(f"{where} takes a number, got {type(x).__name__}")
    return x


def _integral(*xs):
    return all(isinstance(x, (numbers.Integral, np.integer)) for x in xs)


def _size(size, where):
    """``f(2, 3)`` or ``f((2, 3))`` as a tuple of non-negative ints."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (numbers.Integral, np.integer)):
            raise TypeError(f"{where}(size) takes ints, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"{where}(size): negative dimension in {tuple(size)}")
    return tuple(int(n) for n in size)


def _generator():
    from ..nn import default_generator       # nn imports the tensor modules
    return default_generator()


def arange(start, end=None, step=1, *, dtype=None, requires_grad=False):
    """``start, start + step, ...`` below ``end`` (``arange(n)``: 0 .. n-1);
    int64 when every argument is an integer, float64 otherwise."""
    if end is None:
        start, end = 0, start
    start, end, step = (_number(x, f"arange({n})") for x, n in ((start, "start"), (end, "end"), (step, "step")))
    if step == 0:
        raise ValueError("arange(step) must not be zero")
    if (end - start) * step < 0:
        raise ValueError(f"arange: upper bound {end} and lower bound {start} are inconsistent with step sign {step}")
    values = np.arange(start, end, step, dtype=np.int64 if _integral(start, end, step) else np.float64)
    return _make(values, dtype, requires_grad, "arange")


def linspace(start, end, steps, *, dtype=None, requires_grad=False):
    """``steps`` evenly spaced numbers from ``start`` to ``end`` inclusive (float64)."""
    start, end = _number(start, "linspace(start)"), _number(end, "linspace(end)")
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (numbers.Integral, np.integer)):
        raise TypeError(f"linspace(steps) takes an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"linspace(steps) must be non-negative, got {steps}")
    return _make(np.linspace(float(start), float(end), int(steps)), dtype, requires_grad, "linspace")


def full(size, fill_value, *, dtype=None, requires_grad=False):
    """A tensor of ``size`` filled with ``fill_value``: int64 for an integer,
    bool for a bool, float64 for a float (as PyTorch infers it)."""
    size = _size((size,), "full")
    if not isinstance(fill_value, (bool, np.bool_)):
        fill_value = _number(fill_value, "full(fill_value)")
    return _make(np.full(size, fill_value), dtype, requires_grad, "full")


def eye(n, m=None, *, dtype=None, requires_grad=False):
    """The n x m (n x n) identity matrix, float64."""
    rows, cols = _size((n, n if m is None else m), "eye")
    return _make(np.eye(rows, cols), dtype, requires_grad, "eye")


def empty(*size, dtype=None, requires_grad=False):
    """A tensor of ``size`` to be overwritten; microgrid fills it with zeros."""
    return _make(np.zeros(_size(size, "empty")), dtype, requires_grad, "empty")


def rand(*size, dtype=None, requires_grad=False):
    """Uniform samples in [0, 1), float64."""
    return _make(_generator().random(_size(size, "rand")), dtype, requires_grad, "rand")


def randint(low, high=None, size=None, *, dtype=None, requires_grad=False):
    """Uniform integers in [low, high) (``randint(high, size)``: from 0), int64."""
    if size is None:
        if not isinstance(high, (tuple, list)):
            raise TypeError("randint(size) is required: randint(low, high, size) or randint(high, size)")
        low, high, size = 0, low, high
    for x, n in ((low, "low"), (high, "high")):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
            raise TypeError(f"randint({n}) takes an int, got {type(x).__name__}")
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"randint(size) takes a tuple of ints, got {type(size).__name__}")
    if low >= high:
        raise ValueError(f"randint: low ({low}) must be smaller than high ({high})")
    values = _generator().integers(int(low), int(high), size=_size((size,), "randint"), dtype=np.int64)
    return _make(values, dtype, requires_grad, "randint")


def _like(input, where):
    if isinstance(input, Tensor):
        return input.shape, input.dtype
    if isinstance(input, np.ndarray):
        return input.shape, input.dtype
    raise TypeError(f"{where}(input) must be a Tensor or a numpy array, got {type(input).__name__}")


def zeros_like(input, *, dtype=None, requires_grad=False):
    """Zeros of ``input``'s shape and (without ``dtype``) its dtype."""
    shape, kind = _like(input, "zeros_like")
    return _make(np.zeros(shape, dtype=kind), dtype, requires_grad, "zeros_like")


def ones_like(input, *, dtype=None, requires_grad=False):
    """Ones of ``input``'s shape and (without ``dtype``) its dtype."""
    shape, kind = _like(input, "ones_like")
    return _make(np.ones(shape, dtype=kind), dtype, requires_grad, "ones_like")


def full_like(input, fill_value, *, dtype=None, requires_grad=False):
    """``fill_value`` in ``input``'s shape and (without ``dtype``) its dtype."""
    shape, kind = _like(input, "full_like")
    if not isinstance(fill_value, (bool, np.bool_)):
        fill_value = _number(fill_value, "full_like(fill_value)")
    return _make(np.full(shape, fill_value, dtype=kind), dtype, requires_grad, "full_like")


def from_numpy(ndarray):
    """A tensor of a numpy array's numbers: int64 for integers, bool for
    bools, float64 for floats.  PyTorch shares the array's memory; microgrid
    copies it (``.numpy()`` of the result is the tensor's own buffer)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy(ndarray) takes a numpy array, got {type(ndarray).__name__}")
    return _make(ndarray, None, False, "from_numpy")

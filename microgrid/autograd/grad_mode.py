"""Grad mode: ``no_grad``, ``enable_grad``, ``set_grad_enabled``.

Inside ``no_grad`` ops compute their values but record no graph: every result
is a leaf that requires no gradient, and holds no reference to its operands.
The mode belongs to the thread that sets it, as in PyTorch.  Each is a context
manager and a decorator:

    with mg.no_grad():
        for p in model.parameters():
            p.data -= lr * p.grad

    @mg.no_grad()
    def evaluate(model, x): ...
"""
import functools

from ..core._engine import _set_grad_enabled, is_grad_enabled

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled"]


class _GradMode:
    """A context manager and decorator that sets grad mode to ``_mode`` and
    restores the previous mode on exit."""

    _mode = True

    def __enter__(self):
        self._previous = _set_grad_enabled(self._mode)
        return None

    def __exit__(self, *exc):
        _set_grad_enabled(self._previous)
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(f"{type(self).__name__}() decorates a callable, got {type(func).__name__}")
        mode = self._mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            previous = _set_grad_enabled(mode)
            try:
                return func(*args, **kwargs)
            finally:
                _set_grad_enabled(previous)
        return wrapper

    def __repr__(self):
        return f"{type(self).__name__}()"


class no_grad(_GradMode):
    """Ops inside record no graph: results are leaves without gradients.
    A context manager (``with mg.no_grad():``) and a decorator (``@mg.no_grad()``)."""

    _mode = False

    def __new__(cls, func=None):
        # ``@mg.no_grad`` without parentheses decorates func directly
        self = super().__new__(cls)
        return self(func) if func is not None else self


class enable_grad(_GradMode):
    """Ops inside record the graph again, even within ``no_grad``."""

    def __new__(cls, func=None):
        self = super().__new__(cls)
        return self(func) if func is not None else self


class set_grad_enabled(_GradMode):
    """``set_grad_enabled(mode)``: turn recording on or off.  Called alone it
    sets the mode at once; as a context manager or decorator it restores the
    previous mode on exit, as PyTorch's does."""

    def __init__(self, mode):
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled(mode) takes a bool, got {type(mode).__name__}")
        self._mode = mode
        self._previous = _set_grad_enabled(mode)

    def __enter__(self):
        return None       # the mode is already set by the constructor

    def __call__(self, func):
        _set_grad_enabled(self._previous)     # as a decorator it applies per call only
        return super().__call__(func)

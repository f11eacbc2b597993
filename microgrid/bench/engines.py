"""The engines a benchmark runs on, and the thin adapters that let one
workload function drive all of them.

Engines: ``microgrid``, ``micrograd`` (0.1.0), ``torch64`` and ``torch32``
(PyTorch on CPU in float64 / float32).  Each is used only when installed;
``MICROGRID_BENCH_DISABLE=torch,micrograd`` (comma-separated engine names,
``torch`` meaning both torch engines) switches engines off, so the skipping
path can be exercised on a machine that has everything.

A workload is written once against the small surface the engines share
(operators, ``.relu()``, ``.sigmoid()``, ``.log()`` on scalars; PyTorch's
names for tensors); the adapters below only cover what differs: how a leaf is
made, how a number or a gradient is read back, fused reductions, and how a
tensor parameter is overwritten.
"""
import importlib
import os

import numpy as np

ENGINE_NAMES = ("microgrid", "micrograd", "torch64", "torch32")
DISABLE_ENV = "MICROGRID_BENCH_DISABLE"

# The module whose import decides whether an engine is installed.
_ENGINE_MODULES = {
    "microgrid": "microgrid",
    "micrograd": "micrograd.engine",
    "torch64": "torch",
    "torch32": "torch",
}


class Skip(Exception):
    """Raised by a workload or an adapter: this engine cannot run it (the
    message says why).  The harness records it as a skipped result."""


def disabled_engines(environ=None):
    """Engine names switched off through ``MICROGRID_BENCH_DISABLE``."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    names = set()
    for item in raw.replace(" ", ",").split(","):
        item = item.strip().lower()
        if item == "torch":
            names.update(("torch64", "torch32"))
        elif item:
            names.add(item)
    return names


def unavailable_reason(name):
    """``None`` when engine ``name`` can run here, else why it cannot."""
    if name not in _ENGINE_MODULES:
        raise ValueError(f"engine: unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}")
    if name in disabled_engines():
        return f"disabled by {DISABLE_ENV}"
    module = _ENGINE_MODULES[name]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module.split('.')[0]} is not installed ({exc})"
    return None


def is_torch(name):
    return name.startswith("torch")


# --------------------------------------------------------------------------
# Scalar engines: one number per node.


class ScalarEngine:
    """Make scalar leaves and read numbers back, for one engine."""

    def __init__(self, name):
        reason = unavailable_reason(name)
        if reason:
            raise Skip(reason)
        self.name = name
        if name == "microgrid":
            import microgrid
            self.mg = microgrid
            self.Value = microgrid.Value
        elif name == "micrograd":
            from micrograd.engine import Value
            self.Value = Value
        else:
            import torch
            self.torch = torch
            self.dtype = torch.float64 if name == "torch64" else torch.float32

    def leaf(self, x):
        """A scalar that requires a gradient."""
        if is_torch(self.name):
            return self.torch.tensor(float(x), dtype=self.dtype, requires_grad=True)
        return self.Value(float(x))

    def value(self, v):
        if is_torch(self.name):
            return float(v.item())
        return float(v.data)

    def grad(self, v):
        if is_torch(self.name):
            return 0.0 if v.grad is None else float(v.grad.item())
        return float(v.grad)

    def backward(self, root, again=False):
        """``root.backward()``; ``again=True`` keeps torch's graph so the same
        graph can be swept repeatedly (micrograd and microgrid always can)."""
        if is_torch(self.name):
            root.backward(retain_graph=again)
        else:
            root.backward()

    def fused_sum(self, values):
        """One node summing ``values``: ``microgrid.sum``; torch's
        ``stack(...).sum()``; micrograd has none."""
        if self.name == "microgrid":
            return self.mg.sum(values)
        if is_torch(self.name):
            return self.torch.stack(values).sum()
        raise Skip("micrograd has no fused n-ary sum")

    def fused_dot(self, weights, inputs):
        """One node for ``sum(w * x)``: ``microgrid.dot``; torch's
        ``dot(stack(w), stack(x))``; micrograd has none."""
        if self.name == "microgrid":
            return self.mg.dot(weights, inputs)
        if is_torch(self.name):
            return self.torch.dot(self.torch.stack(weights), self.torch.stack(inputs))
        raise Skip("micrograd has no fused dot product")


# --------------------------------------------------------------------------
# Tensor engines: PyTorch's names and signatures (microgrid follows them).

class TensorEngine:
    """Tensors, ``functional``, ``nn`` and ``optim`` of one engine.

    microgrid's tensor side is reached only through PyTorch's names
    (``microgrid.tensor(array, requires_grad=True)``, ``t.data`` / ``t.grad``
    as numpy arrays, ``microgrid.functional``), so one workload serves both.
    """

    def __init__(self, name):
        if name == "micrograd":
            raise Skip("micrograd has no tensors")
        reason = unavailable_reason(name)
        if reason:
            raise Skip(reason)
        self.name = name
        if name == "microgrid":
            import microgrid
            import microgrid.functional
            self.F = microgrid.functional
            self.mg = microgrid
        else:
            import torch
            import torch.nn.functional
            self.torch = torch
            self.F = torch.nn.functional
            self.dtype = torch.float64 if name == "torch64" else torch.float32

    def tensor(self, array, requires_grad=False):
        array = np.ascontiguousarray(array, dtype=np.float64)
        if self.name == "microgrid":
            return self.mg.tensor(array, requires_grad=requires_grad)
        return self.torch.tensor(array, dtype=self.dtype, requires_grad=requires_grad)

    def numpy(self, t):
        """The values of ``t`` as a float64 numpy array."""
        if self.name == "microgrid":
            return np.array(t.data, dtype=np.float64)
        return t.detach().numpy().astype(np.float64)

    def grad(self, t):
        if self.name == "microgrid":
            return np.zeros(np.shape(t.data)) if t.grad is None else np.array(t.grad, dtype=np.float64)
        return np.zeros(tuple(t.shape)) if t.grad is None else t.grad.numpy().astype(np.float64)

    @property
    def nn(self):
        if self.name == "microgrid":
            import microgrid.nn
            return microgrid.nn
        return self.torch.nn

    @property
    def optim(self):
        if self.name == "microgrid":
            import microgrid.optim
            return microgrid.optim
        return self.torch.optim

    def assign(self, param, array):
        """Overwrite a parameter's values in place (same init everywhere)."""
        if self.name == "microgrid":
            param.data[...] = array
        else:
            with self.torch.no_grad():
                param.copy_(self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)))

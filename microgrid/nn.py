"""Neural-network modules.

``Module``, ``Neuron``, ``Layer`` and ``MLP`` are micrograd's scalar API: the
same constructors, defaults, reprs and draws from Python's ``random``, so
``random.seed(s)`` gives micrograd's initial weights.  A neuron's
pre-activation is one fused ``dot`` node instead of 2n additions and
multiplications.
"""
import numbers
import random

from ._engine import Value, dot

__all__ = ["Module", "Neuron", "Layer", "MLP"]


def _count(n, where, minimum=1):
    """A layer size: an int >= minimum (checked before any weight is drawn);
    nin may be 0 as in micrograd (a neuron of bias alone)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{where} must be an int, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{where} must be >= {minimum}, got {n}")
    return int(n)


class Module:
    """Base of every model: owns parameters and can zero their gradients."""

    def zero_grad(self):
        for p in self.parameters():
            p.grad = 0

    def parameters(self):
        return []


class Neuron(Module):
    """``relu(w . x + b)``, or ``w . x + b`` with ``nonlin=False``."""

    def __init__(self, nin, nonlin=True):
        nin = _count(nin, "Neuron(nin)", 0)
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
        self.nonlin = nonlin

    def __call__(self, x):
        act = dot(self.w, x, self.b)
        return act.relu() if self.nonlin else act

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons reading the same inputs; one output is returned bare."""

    def __init__(self, nin, nout, **kwargs):
        _count(nin, "Layer(nin)", 0)
        nout = _count(nout, "Layer(nout)")
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x):
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers of sizes ``nin -> nouts[0] -> ... -> nouts[-1]``, ReLU between,
    the last layer linear."""

    def __init__(self, nin, nouts):
        _count(nin, "MLP(nin)", 0)
        if not isinstance(nouts, (list, tuple)):
            raise TypeError(f"MLP(nouts) must be a list of layer sizes, got {type(nouts).__name__}")
        for n in nouts:
            _count(n, "MLP(nouts)")
        sizes = [nin] + list(nouts)
        self.layers = [Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1)
                       for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"

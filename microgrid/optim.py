"""Optimisers: SGD (momentum, Nesterov, dampening, weight decay) and Adam.

They take Values and Tensors alike.  The update formulas, and the order of
their floating-point operations, are those of ``torch.optim``'s single-tensor
code path, so a float64 run matches PyTorch to the last few ulps.  Tensors
are updated in place (``p.data`` is the node's own buffer); Values of one
parameter group are gathered into one array, updated with the same numpy
code, and written back to their ``.data``.
"""
import math
import numbers

import numpy as np

from .autograd.grad_mode import no_grad
from .core._engine import Value, _values_add_scaled, _values_read, _values_write, _values_zero_grad
from .tensors._alloc import pooled
from .tensors._tensor import Tensor, _add_scaled

__all__ = ["Optimizer", "SGD", "Adam"]




def _real(value, name, low=None, high=None, low_open=False, high_open=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (low is not None and (value <= low if low_open else value < low)) \
            or (high is not None and (value >= high if high_open else value > high)):
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"invalid {name}={value}: must be in {lo or '(-inf, '}{hi}")
    return value


class _Slot:
    """One unit of update: a Tensor (its buffers, in place) or all the
    Values of a group (gathered, then written back)."""

    __slots__ = ("params", "is_values", "state")

    def __init__(self, params, is_values):
        self.params = params
        self.is_values = is_values
        self.state = {}

    def read(self):
        if self.is_values:       # gathered in compiled code, not a Python loop
            data, grad = np.empty(len(self.params)), np.empty(len(self.params))
            _values_read(self.params, data, grad)
            return data, grad
        p = self.params
        return p.data, p.grad

    def write(self, data):
        if self.is_values:
            _values_write(self.params, np.ascontiguousarray(data, dtype=np.float64))
        elif data is not self.params.data:
            self.params.data[...] = data


class Optimizer:
    """Holds parameter groups (dicts with ``params`` and hyper-parameters) and
    per-parameter state."""

    def __init__(self, params, defaults):
        if isinstance(params, (Value, Tensor)) or isinstance(params, dict):
            raise TypeError("params must be an iterable of Values/Tensors or of dicts, "
                            f"got a single {type(params).__name__}")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"params must be an iterable, got {type(params).__name__}") from None
        if not params:
            raise ValueError("params is empty: the optimiser got no parameters")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        self._slots = []   # one list of _Slot per group
        seen = set()
        for i, group in enumerate(params):
            self._add_group(i, group, seen)

    def _add_group(self, index, group, seen):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"params[{index}] must be a dict with a 'params' entry")
        members = group["params"]
        members = [members] if isinstance(members, (Value, Tensor)) else list(members)
        if not members:
            raise ValueError(f"params[{index}]['params'] is empty")
        values, slots = [], []
        for j, p in enumerate(members):
            if not isinstance(p, (Value, Tensor)):
                raise TypeError(f"params[{index}] entry {j} must be a Value or a Tensor, "
                                f"got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"params[{index}] entry {j} does not require grad")
            if id(p) in seen:
                raise ValueError(f"params[{index}] entry {j} appears twice among the parameters")
            seen.add(id(p))
            if isinstance(p, Value):
                values.append(p)
            else:
                slots.append(_Slot(p, is_values=False))
        if values:
            slots.insert(0, _Slot(values, is_values=True))
        full = dict(self.defaults)
        for key, value in group.items():
            if key != "params" and key not in self.defaults:
                raise ValueError(f"params[{index}] has an unknown option {key!r}")
            full[key] = value
        full = self._validate(full)
        full["params"] = members
        self.param_groups.append(full)
        self._slots.append(slots)
        self._values_only = all(slot.is_values for slots in self._slots for slot in slots)

    def _validate(self, group):
        return group

    def zero_grad(self, set_to_none=True):
        """Sets every parameter's gradient to zero.  As in PyTorch, a
        Tensor's gradient buffer is dropped (``set_to_none=True``): ``.grad``
        reads as zeros until the next backward, which then stores its
        gradient without first filling a buffer with zeros and adding to it.
        ``set_to_none=False`` zeroes the existing buffers in place."""
        for slots in self._slots:
            for slot in slots:
                if slot.is_values:
                    _values_zero_grad(slot.params)
                elif set_to_none:
                    slot.params.grad = None
                else:
                    slot.params.grad[...] = 0

    def step(self):
        # the update records no graph (as PyTorch's), and its temporaries
        # (lr * g, ...) come from microgrid's pool, as the step's other
        # buffers: no fresh mapping per step.  Values are updated as numpy
        # arrays, which neither records: without Tensors, neither is needed.
        if self._values_only:
            self._step()
            return
        with no_grad(), pooled():
            self._step()

    def _step(self):
        for group, slots in zip(self.param_groups, self._slots):
            for slot in slots:
                if not self._update_in_place(group, slot):
                    data, grad = slot.read()
                    slot.write(self._update(group, slot.state, data, grad))

    def _update_in_place(self, group, slot):
        """Update ``slot`` where its parameters are, without gathering them;
        False when this optimiser cannot (then _update runs)."""
        return False

    def _update(self, group, state, param, grad):
        raise NotImplementedError

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD:

        g = grad + weight_decay * p
        b = g (first step), else momentum * b + (1 - dampening) * g
        g = g + momentum * b (Nesterov) or b (momentum > 0)
        p = p - lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, weight_decay=0, nesterov=False, dampening=0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov, dampening=dampening))

    def _validate(self, group):
        group["lr"] = _real(group["lr"], "lr", low=0.0)
        group["momentum"] = _real(group["momentum"], "momentum", low=0.0)
        group["weight_decay"] = _real(group["weight_decay"], "weight_decay", low=0.0)
        group["dampening"] = _real(group["dampening"], "dampening")
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"nesterov must be a bool, got {type(group['nesterov']).__name__}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")
        return group

    def _update_in_place(self, group, slot):
        # p = p + (-lr) * g on each Value in compiled code: what _update does
        # on the gathered arrays, without gathering (a subclass's _update
        # runs as written)
        if (slot.is_values and type(self)._update is SGD._update
                and group["momentum"] == 0 and group["weight_decay"] == 0):
            _values_add_scaled(slot.params, -group["lr"])
            return True
        return False

    def _update(self, group, state, param, grad):
        lr, momentum = group["lr"], group["momentum"]
        weight_decay, dampening = group["weight_decay"], group["dampening"]
        g = grad
        if weight_decay != 0:
            g = g + weight_decay * param
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=np.float64, copy=True)
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if group["nesterov"] else buf
        if not _add_scaled(param, -lr, g):      # one pass, no lr * g temporary
            param -= lr * g
        return param


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (L2 weight decay added to the gradient):

        m = m + (1 - beta1) * (g - m)          (torch's lerp)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _validate(self, group):
        group["lr"] = _real(group["lr"], "lr", low=0.0)
        group["eps"] = _real(group["eps"], "eps", low=0.0)
        group["weight_decay"] = _real(group["weight_decay"], "weight_decay", low=0.0)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        group["betas"] = (_real(betas[0], "betas[0]", low=0.0, high=1.0),
                          _real(betas[1], "betas[1]", low=0.0, high=1.0))
        return group

    def _update(self, group, state, param, grad):
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        step = state["step"]
        g = grad + weight_decay * param if weight_decay != 0 else grad
        m, v = state["exp_avg"], state["exp_avg_sq"]
        # torch's lerp(m, g, w) computes m + w * (g - m) for w < 0.5, else
        # g - (g - m) * (1 - w); the same order keeps results bit-close
        w = 1 - beta1
        if w < 0.5:
            m += w * (g - m)
        else:
            m[...] = g - (g - m) * (1 - w)
        v *= beta2
        v += (1 - beta2) * (g * g)
        step_size = lr / (1 - beta1 ** step)
        denom = np.sqrt(v) / (1 - beta2 ** step) ** 0.5 + eps
        param -= step_size * (m / denom)
        return param

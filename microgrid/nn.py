"""Neural-network modules, in two worlds that share one ``Module`` base.

``Module``, ``Neuron``, ``Layer`` and ``MLP`` are micrograd's scalar API: the
same constructors, defaults, reprs and draws from Python's ``random``, so
``random.seed(s)`` gives micrograd's initial weights.  A neuron's
pre-activation is one fused ``dot`` node instead of 2n additions and
multiplications.

``Linear``, ``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``, ``AvgPool2d``,
``Flatten``, ``Sequential`` and the activations (``ReLU``, ``Sigmoid``,
``Tanh``, ..., made from the op table's rows, see the end of this module)
are PyTorch's tensor layers: its constructor signatures, default initialisation, reprs,
parameter names and shapes, so a ``state_dict`` moves between the two
libraries.  Their weights are drawn from a numpy Generator that
``manual_seed`` seeds (it seeds Python's ``random`` too, for the scalar
classes).

The loss modules (``MSELoss``, ``CrossEntropyLoss``, ...) are made from the
signatures of their functional losses, and ``Parameter`` marks a tensor as a
module's parameter, as in PyTorch.

``Module`` finds parameters and submodules in its attributes, in definition
order, including lists of them (micrograd's layout): ``named_parameters``,
``parameters``, ``zero_grad``, ``state_dict``, ``load_state_dict``, and
``save``/``load`` as ``.npz`` archives that never hold or run pickled code.
"""
import builtins
import collections
import collections.abc
import inspect
import math
import numbers
import os
import random
import zipfile
import zlib

import numpy as np

from . import functional as F
from .kernels._conv import check_output_padding, check_pool_padding, pair
from .core._engine import Value, dot, _layer, _neuron
from .tensors._tensor import Tensor, tensor

__all__ = [
    "Module", "Parameter", "Neuron", "Layer", "MLP",
    "Linear", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Flatten",
    "Dropout", "BatchNorm1d", "BatchNorm2d",
    "Sequential",
    "manual_seed", "default_generator",
]

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seeds microgrid's numpy Generator (tensor layers' initial weights,
    shuffling) and Python's ``random`` (micrograd's scalar classes).
    Returns the new Generator."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    random.seed(int(seed))
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator():
    """The numpy Generator that ``manual_seed`` last seeded."""
    return _generator


class Parameter(Tensor):
    """A Tensor that a Module lists among its parameters when it is assigned
    as an attribute (PyTorch's nn.Parameter): a leaf holding a float64 copy
    of ``data`` that requires grad unless ``requires_grad=False`` (then it is
    still a parameter: saved, loaded, listed, as a frozen one in PyTorch)."""
    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        Tensor.__init__(self, np.zeros(0) if data is None else data, requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + Tensor.__repr__(self)


def _is_parameter(obj):
    """Parameters, and leaves that take gradients: a cached intermediate
    result kept in an attribute is not a parameter."""
    if isinstance(obj, Value):
        return obj.requires_grad and not obj._parents()
    return isinstance(obj, Parameter) or (isinstance(obj, Tensor) and obj.requires_grad and obj.is_leaf)


LoadResult = collections.namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


class Module:
    """Base of every model: owns parameters and can zero their gradients.

    Parameters (leaf Values or Tensors that require grad) and submodules are found
    in the instance's attributes, in definition order, and inside lists and
    tuples of them; their dotted names are PyTorch's (``0.weight`` in a
    ``Sequential``, ``layers.0.neurons.1.w.0`` in micrograd's ``MLP``).
    """

    training = True

    def zero_grad(self):
        for p in self.parameters():
            if isinstance(p, Value):
                p.grad = 0
            else:
                p.grad[...] = 0     # in place: optimisers and users may hold the array

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    # -- discovery -----------------------------------------------------
    def _members(self):
        """(name, object) pairs this module holds; Sequential overrides."""
        return vars(self).items()

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, parameter) pairs; a parameter shared by two places
        is listed once, under its first name."""
        seen = set()
        out = []
        self._collect(prefix, recurse, seen, out, set())
        return out

    def _collect(self, prefix, recurse, seen, out, visiting):
        if id(self) in visiting:
            return
        visiting.add(id(self))
        for name, obj in self._members():
            self._collect_object(prefix + str(name), obj, recurse, seen, out, visiting)

    def _collect_object(self, name, obj, recurse, seen, out, visiting):
        if isinstance(obj, Module):
            if recurse:
                obj._collect(name + ".", recurse, seen, out, visiting)
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                self._collect_object(f"{name}.{i}", item, recurse, seen, out, visiting)
        elif _is_parameter(obj) and id(obj) not in seen:
            seen.add(id(obj))
            out.append((name, obj))

    def named_children(self):
        """Direct submodules with their names, lists flattened as ``name.i``."""
        out = []

        def visit(name, obj):
            if isinstance(obj, Module):
                out.append((name, obj))
            elif isinstance(obj, (list, tuple)):
                for i, item in enumerate(obj):
                    visit(f"{name}.{i}", item)
        for name, obj in self._members():
            visit(str(name), obj)
        return out

    def children(self):
        return [m for _, m in self.named_children()]

    def modules(self):
        """This module and every submodule, depth first."""
        out = [self]
        for child in self.children():
            out += child.modules()
        return out

    # -- modes and calling -----------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise TypeError(f"mode must be a bool, got {type(mode).__name__}")
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- state ----------------------------------------------------------
    def named_buffers(self, prefix=""):
        """(dotted name, array) pairs of the numpy buffers that modules list in
        ``_buffer_names`` (BatchNorm's running statistics), depth first."""
        out = [(prefix + name, getattr(self, name)) for name in getattr(self, "_buffer_names", ())
               if getattr(self, name) is not None]
        for name, child in self.named_children():
            out += child.named_buffers(f"{prefix}{name}.")
        return out

    def state_dict(self):
        """OrderedDict of dotted name -> numpy copy: parameters (float64, 0-d
        for a Value), then buffers (``running_mean``, ``num_batches_tracked``
        as int64, ...), under PyTorch's names."""
        state = collections.OrderedDict()
        for name, p in self.named_parameters():
            if isinstance(p, Value):
                state[name] = np.array(p.data, dtype=np.float64)
            else:
                state[name] = np.array(p.data, dtype=np.float64, copy=True)
        for name, b in self.named_buffers():
            state[name] = np.array(b, copy=True)
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copies arrays into the parameters and buffers, in place.

        Every entry is checked (name, numeric type, shape) before anything
        changes, so a failed load leaves the model as it was.  With
        ``strict``, missing or unexpected names are errors; otherwise they
        are returned as ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        own = collections.OrderedDict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"state_dict does not match {type(self).__name__}: " + "; ".join(parts))
        updates = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            try:
                array = np.asarray(value)
            except Exception as exc:  # e.g. a tensor that cannot become an array
                raise TypeError(f"state_dict[{name!r}] cannot be read as an array: {exc}") from None
            if array.dtype.kind not in "biuf":
                raise TypeError(f"state_dict[{name!r}] must hold real numbers, got dtype {array.dtype}")
            expected = () if isinstance(p, Value) else tuple(p.shape)
            if array.shape != expected:
                raise ValueError(f"state_dict[{name!r}] has shape {tuple(array.shape)}, "
                                 f"the parameter has shape {expected}")
            updates.append((p, array))
        for p, array in updates:
            if isinstance(p, Value):
                p.data = float(array)
            elif isinstance(p, Tensor):
                p.data[...] = array.astype(np.float64)
            else:                       # a buffer keeps its dtype
                p[...] = array.astype(p.dtype)
        return LoadResult(missing, unexpected)

    def save(self, path):
        """Writes ``state_dict()`` to ``path``: as safetensors when the name
        ends in ``.safetensors`` (needs the ``safetensors`` package, the
        ``microgrid[safetensors]`` extra), else as an ``.npz`` archive.
        Neither holds pickled code.  The file is written next to its
        destination and renamed, so a crash never leaves a half-written model
        under ``path``."""
        path = os.fspath(path)
        state = self.state_dict()
        safetensors = _safetensors() if _is_safetensors(path) else None
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            if safetensors is not None:
                # safetensors has no scalars of its own: a 0-d array is shape []
                safetensors.save_file({k: np.array(v, order="C") for k, v in state.items()}, tmp)
            else:
                with open(tmp, "wb") as f:
                    _write_npz(f, state)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def load(self, path):
        """Reads a file written by ``save`` (or by ``safetensors.torch.save_file``
        from the equivalent torch model), strictly: same names and shapes.
        Anything but plain numeric arrays, such as pickled objects, is
        refused with ValueError without being run.  Returns ``self``."""
        if _is_safetensors(os.fspath(path)):
            state = _read_safetensors(path)
        else:
            state = _read_npz(path)
        self.load_state_dict(state, strict=True)
        return self

    # -- repr -------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        children = self.named_children()
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = [extra] if extra else []
        for name, child in children:
            lines.append(f"({name}): " + repr(child).replace("\n", "\n  "))
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _write_npz(f, state):
    # numpy's own .npz layout, written member by member so that no key can
    # collide with a keyword argument of numpy.savez
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in state.items():
            with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                # (ascontiguousarray would turn a 0-d array into a 1-d one)
                np.lib.format.write_array(member, np.array(array, order="C"), allow_pickle=False)


def _is_safetensors(path):
    return os.fspath(path).lower().endswith(".safetensors")


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("saving or loading .safetensors needs the safetensors package: "
                          "pip install safetensors (or microgrid[safetensors])") from None
    return safetensors.numpy


def _read_safetensors(path):
    reader = _safetensors()
    try:
        return collections.OrderedDict(reader.load_file(os.fspath(path)))
    except OSError:
        raise
    except Exception as exc:    # safetensors' own error types differ by version
        if not os.path.isfile(path):
            raise
        raise ValueError(f"path {os.fspath(path)!r} is not a readable .safetensors file: {exc}") from None


def _read_npz(path):
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and not os.path.isfile(path):
            raise
        raise ValueError(f"path {os.fspath(path)!r} is not a readable .npz model archive: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"path {os.fspath(path)!r} holds a single array, not an .npz model archive")
    state = collections.OrderedDict()
    with loaded:
        try:
            for name in loaded.files:
                state[name] = loaded[name]
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise ValueError(f"path {os.fspath(path)!r}: entry {name!r} cannot be read: {exc}") from None
    return state


class Neuron(Module):
    """``relu(w . x + b)``, or ``w . x + b`` with ``nonlin=False``.

    The pre-activation is one fused ``dot`` node.  With ``fused=False`` it is
    built as micrograd builds it, ``sum((wi*xi for ...), b)``: one ``*`` and
    one ``+`` node per input, the graph a lecture draws (same values and
    gradients, more nodes and slower).
    """

    def __init__(self, nin, nonlin=True, fused=True):
        nin = _int_arg(nin, "Neuron(nin)", 0)      # 0: a neuron of bias alone, as in micrograd
        if not isinstance(fused, bool):
            raise TypeError(f"Neuron(fused=...) must be a bool, got {type(fused).__name__}")
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
        self.nonlin = nonlin
        self.fused = fused

    def __call__(self, x):
        if self.fused:
            return _neuron(self.w, x, self.b, self.nonlin)
        x = list(x)
        if len(x) != len(self.w):
            raise ValueError(f"Neuron: {len(x)} inputs for {len(self.w)} weights")
        act = builtins.sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons reading the same inputs; one output is returned bare."""

    def __init__(self, nin, nout, **kwargs):
        _int_arg(nin, "Layer(nin)", 0)
        nout = _int_arg(nout, "Layer(nout)", 1)
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x):
        out = _layer(self.neurons, x, Neuron)    # each n(x), plain neurons without a Python call
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers of sizes ``nin -> nouts[0] -> ... -> nouts[-1]``, ReLU between,
    the last layer linear; ``fused=False``: neurons built as micrograd's
    (see ``Neuron``)."""

    def __init__(self, nin, nouts, fused=True):
        _int_arg(nin, "MLP(nin)", 0)
        if not isinstance(nouts, (list, tuple)):
            raise TypeError(f"MLP(nouts) must be a list of layer sizes, got {type(nouts).__name__}")
        for n in nouts:
            _int_arg(n, "MLP(nouts)", 1)
        sizes = [nin] + list(nouts)
        self.layers = [Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, fused=fused)
                       for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


# ---------------------------------------------------------------------------
# PyTorch-style tensor layers
# ---------------------------------------------------------------------------



def _int_arg(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _parameter(shape, bound):
    """A leaf tensor drawn from U(-bound, bound), the shape of PyTorch's
    parameter, that requires grad."""
    values = _generator.uniform(-bound, bound, size=shape) if bound > 0 else np.zeros(shape)
    return Parameter(values)


def _uniform_bound(fan_in):
    # kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound
    # gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in); PyTorch draws the bias from
    # the same range (and uses 0 when fan_in is 0)
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


class Linear(Module):
    """``y = x @ weight.T + bias``; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = _int_arg(in_features, "in_features", 0)
        self.out_features = _int_arg(out_features, "out_features", 0)
        bound = _uniform_bound(self.in_features)
        self.weight = _parameter((self.out_features, self.in_features), bound)
        self.bias = _parameter((self.out_features,), bound) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class _ConvNd(Module):
    def _setup(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
               groups, bias, padding_mode, transposed, output_padding=0):
        self.in_channels = _int_arg(in_channels, "in_channels", 1)
        self.out_channels = _int_arg(out_channels, "out_channels", 1)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        if isinstance(padding, str) and not transposed:
            # kept as the string, as PyTorch does; F.conv2d resolves it
            F._conv_padding(padding, self.kernel_size, self.stride, self.dilation, "padding")
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", 0)
        self.output_padding = pair(output_padding, "output_padding", 0)
        self.groups = _int_arg(groups, "groups", 1)
        if self.in_channels % self.groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by groups={groups}")
        if self.out_channels % self.groups:
            raise ValueError(f"out_channels={out_channels} must be divisible by groups={groups}")
        modes = ("zeros",) if transposed else ("zeros", "reflect", "replicate", "circular")
        if padding_mode not in modes:
            raise ValueError(f"padding_mode must be one of {', '.join(map(repr, modes))}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        kh, kw = self.kernel_size
        if transposed:
            check_output_padding(self.output_padding, self.stride, self.dilation, "output_padding")
            shape = (self.in_channels, self.out_channels // self.groups, kh, kw)
        else:
            shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        # torch's fan_in is weight.size(1) * kh * kw for both layouts
        bound = _uniform_bound(shape[1] * kh * kw)
        self.weight = _parameter(shape, bound)
        self.bias = _parameter((self.out_channels,), bound) if bias else None

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvNd):
    """2-d cross-correlation over NCHW input; weight
    (out_channels, in_channels // groups, kh, kw).  ``padding`` is an int, a
    pair, 'valid' or 'same'; ``padding_mode`` 'zeros', 'reflect', 'replicate'
    or 'circular' says what the padding holds."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation,
                    groups, bias, padding_mode, transposed=False)

    def forward(self, x):
        padding = self.padding
        if self.padding_mode != "zeros":
            # PyTorch pads explicitly in the mode, then convolves unpadded
            (top, left), (bottom, right) = F._conv_padding(
                padding, self.kernel_size, self.stride, self.dilation, "padding")
            x = F.pad(x, (left, left + right, top, top + bottom), mode=self.padding_mode)
            padding = 0
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=padding,
                        dilation=self.dilation, groups=self.groups)


class ConvTranspose2d(_ConvNd):
    """The gradient of Conv2d with respect to its input, as a layer; weight
    (in_channels, out_channels // groups, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros"):
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation,
                    groups, bias, padding_mode, transposed=True, output_padding=output_padding)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride,
                                  padding=self.padding, output_padding=self.output_padding,
                                  groups=self.groups, dilation=self.dilation)


def _size_arg(value, name, minimum):
    # checked as a pair; pooling layers keep ints as ints (PyTorch's reprs
    # show kernel_size=2)
    checked = pair(value, name, minimum)
    return checked if isinstance(value, (tuple, list)) else checked[0]


def _flag_arg(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


class MaxPool2d(Module):
    """Maximum over kh x kw windows; the gradient goes to the first maximum.
    With ``return_indices`` the forward returns (output, indices), the flat
    index of each maximum in its input plane, for ``F.max_unpool2d``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        self.kernel_size = _size_arg(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _size_arg(stride, "stride", 1)
        self.padding = _size_arg(padding, "padding", 0)
        self.dilation = _size_arg(dilation, "dilation", 1)
        self.return_indices = _flag_arg(return_indices, "return_indices")
        self.ceil_mode = _flag_arg(ceil_mode, "ceil_mode")
        check_pool_padding(self.padding, self.kernel_size, "padding")

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over kh x kw windows (padding counted unless count_include_pad=False;
    the divisor is divisor_override when given)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        self.kernel_size = _size_arg(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _size_arg(stride, "stride", 1)
        self.padding = _size_arg(padding, "padding", 0)
        self.ceil_mode = _flag_arg(ceil_mode, "ceil_mode")
        self.count_include_pad = _flag_arg(count_include_pad, "count_include_pad")
        check_pool_padding(self.padding, self.kernel_size, "padding")
        if divisor_override is not None:
            if isinstance(divisor_override, bool) or not isinstance(divisor_override, numbers.Integral):
                raise TypeError(f"divisor_override must be an int or None, got {type(divisor_override).__name__}")
            if divisor_override == 0:
                raise ValueError("divisor_override must not be zero")
            divisor_override = int(divisor_override)
        self.divisor_override = divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Dropout(Module):
    """Zeroes each element with probability ``p`` while training, scaling the
    rest by 1 / (1 - p); the identity in eval mode.  Seeded by manual_seed."""

    def __init__(self, p=0.5, inplace=False):
        self.p = F._probability(p, "p")
        # in-place ops do not exist on the graph; accepted for PyTorch's
        # signature, and the result is the same
        self.inplace = _flag_arg(inplace, "inplace")

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class _BatchNorm(Module):
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _input_dims: tuple[int, ...] = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 *, bias=True):
        self.num_features = _int_arg(num_features, "num_features", 1)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
            raise ValueError(f"eps must be a non-negative number, got {eps!r}")
        self.eps = float(eps)
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)):
            raise TypeError(f"momentum must be a number or None, got {type(momentum).__name__}")
        self.momentum = None if momentum is None else float(momentum)
        self.affine = _flag_arg(affine, "affine")
        self.track_running_stats = _flag_arg(track_running_stats, "track_running_stats")
        c = self.num_features
        self.weight = tensor(np.ones(c), requires_grad=True) if self.affine else None
        has_bias = self.affine and _flag_arg(bias, "bias")
        self.bias = tensor(np.zeros(c), requires_grad=True) if has_bias else None
        if self.track_running_stats:
            self.running_mean = np.zeros(c)
            self.running_var = np.ones(c)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x):
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}(input) must be a Tensor, got {type(x).__name__}")
        if x.ndim not in self._input_dims:
            raise ValueError(f"{name}(input) must be {' or '.join(map(str, self._input_dims))}-d, "
                             f"got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}(input) has {x.shape[1]} channels, num_features is {self.num_features}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:       # a cumulative average, as PyTorch
                momentum = 1.0 / float(self.num_batches_tracked)
        # batch statistics while training, and always without running ones
        # (then running_mean/running_var are None and nothing is updated)
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch, momentum, self.eps)

    def extra_repr(self):
        bias = ", bias=False" if self.affine and self.bias is None else ""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
                f"{bias}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input over all but dim 1,
    with running statistics for eval mode (PyTorch's state_dict keys)."""
    _input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input per channel, with running
    statistics for eval mode (PyTorch's state_dict keys)."""
    _input_dims = (4,)


class Flatten(Module):
    """Merges dimensions start_dim..end_dim into one."""

    def __init__(self, start_dim=1, end_dim=-1):
        if isinstance(start_dim, bool) or not isinstance(start_dim, numbers.Integral):
            raise TypeError(f"start_dim must be an int, got {type(start_dim).__name__}")
        if isinstance(end_dim, bool) or not isinstance(end_dim, numbers.Integral):
            raise TypeError(f"end_dim must be an int, got {type(end_dim).__name__}")
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x):
        if not isinstance(x, Tensor):
            raise TypeError(f"Flatten(input) must be a Tensor, got {type(x).__name__}")
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Sequential(Module):
    """Modules applied in order; indexable (``model[0]``, slices give a
    Sequential), ``len`` and iteration; parameters named ``0.weight``, ..."""

    def __init__(self, *modules):
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"modules[{i}] must be a Module, got {type(m).__name__}")
        self._layers = list(modules)

    def _members(self):
        return [(str(i), m) for i, m in enumerate(self._layers)]

    def forward(self, x):
        for m in self._layers:
            x = m(x)
        return x

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self._layers[index])
        return self._layers[index]

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"module must be a Module, got {type(module).__name__}")
        self._layers.append(module)
        return self


# The loss layers: each calls its functional loss with the options given to
# its constructor, which takes that function's keywords (everything after
# input and target) under the same names and defaults.
_LOSSES = {
    "MSELoss": F.mse_loss, "L1Loss": F.l1_loss, "HuberLoss": F.huber_loss,
    "BCELoss": F.binary_cross_entropy, "BCEWithLogitsLoss": F.binary_cross_entropy_with_logits,
    "CrossEntropyLoss": F.cross_entropy, "NLLLoss": F.nll_loss,
}


def _loss_class(class_name, function):
    options = list(inspect.signature(function).parameters.values())[2:]
    signature = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
                                  + options)

    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{class_name}(): {e}") from None
        bound.apply_defaults()
        for p in options:
            setattr(self, p.name, bound.arguments[p.name])
        F._reduction(self.reduction, class_name)

    __init__.__signature__ = signature

    def forward(self, input, target):
        return function(input, target, **{p.name: getattr(self, p.name) for p in options})

    return type(class_name, (Module,), {
        "__init__": __init__, "forward": forward, "__module__": __name__,
        "__doc__": f"{class_name}({', '.join(str(p) for p in options)}): "
                   f"functional.{function.__name__}(input, target, ...) as a layer."})


def _add_loss_modules():
    classes = {name: _loss_class(name, function) for name, function in _LOSSES.items()}
    globals().update(classes)
    __all__.extend(classes)


_add_loss_modules()


# The activation layers: one per op-table row with a PyTorch module name.
def _add_activation_modules():
    from .core import optable
    classes = optable.module_classes(Module, F)
    globals().update(classes)
    __all__.extend(classes)


_add_activation_modules()

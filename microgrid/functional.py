"""Functional ops on Tensors with PyTorch's names, signatures and semantics:
activations, softmax, losses, linear, convolution and pooling.

The elementwise functions (``relu``, ``sigmoid``, ``gelu``, ...) are made
from the op table's rows that PyTorch has (microgrid/optable.py) and added
at the end of this module.

This module owns argument validation: every check (types, ranks, shapes,
channel/group divisibility, strides, paddings) happens here and raises a
TypeError or ValueError naming the argument before any kernel runs.  The
nodes themselves (forward and backward rules) live in _tensor.pyx; the
convolution and pooling kernels in microgrid._conv.
"""
import numbers

import numpy as np

from ._engine import Value
from ._tensor import OPS, Tensor, _node, _value_tensor, broadcast_shape, tensor

__all__ = [
    "linear",
    "softmax", "log_softmax", "cross_entropy", "nll_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "mse_loss", "l1_loss", "huber_loss", "hinge_loss",
    "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "pad",
]


def _tensor_arg(x, where):
    if isinstance(x, Tensor):
        return x
    raise TypeError(f"{where} must be a Tensor, got {type(x).__name__}")


def _operand(x, where):
    """A Tensor for a target-like argument: Tensors as they are, Values
    bridged, array-likes as constants."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Value):
        return _value_tensor(x)
    if isinstance(x, (numbers.Real, np.ndarray, list, tuple)) and not isinstance(x, bool):
        return tensor(x)
    raise TypeError(f"{where} must be a Tensor or array-like, got {type(x).__name__}")


def _reduction(reduction, where):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{where}(reduction=...) must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


def _same_shape(input, target, where):
    if input.shape != target.shape:
        raise ValueError(
            f"{where}: target shape {target.shape} must match input shape {input.shape}")


# ---------------------------------------------------------------------------
# Activations

def softmax(input, dim):
    """exp(x) / sum(exp(x)) along ``dim``, shifted by the max (never overflows)."""
    return _tensor_arg(input, "softmax(input)").softmax(dim)


def log_softmax(input, dim):
    """x - logsumexp(x) along ``dim``, computed stably in one node."""
    return _tensor_arg(input, "log_softmax(input)").log_softmax(dim)


# ---------------------------------------------------------------------------
# Linear

def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` in one node; weight is (out, in)."""
    input = _tensor_arg(input, "linear(input)")
    weight = _tensor_arg(weight, "linear(weight)")
    if weight.ndim != 2:
        raise ValueError(f"linear(weight) must be 2-d (out_features, in_features), got shape {weight.shape}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear(input): last dimension of shape {input.shape} must equal "
            f"in_features = {weight.shape[1]} of weight")
    args = None
    if bias is not None:
        bias = _tensor_arg(bias, "linear(bias)")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"linear(bias) must have shape ({weight.shape[0]},), got {bias.shape}")
        args = (bias,)
    return _node(OPS["linear"], input, weight, args)


# ---------------------------------------------------------------------------
# Losses

def _class_targets(target, input, where):
    """Integer class indices as an int64 array of input's shape without the
    class dimension (dim 1, or dim 0 for an unbatched 1-d input)."""
    if isinstance(target, Tensor):
        data = target.data
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise TypeError(f"{where}(target) must hold integer class indices")
        t = data.astype(np.int64)
    else:
        t = np.asarray(target)
        if t.dtype.kind not in "iu":
            raise TypeError(f"{where}(target) must hold integer class indices, got dtype {t.dtype}")
        # an int64 array is kept by reference, so a recorded Graph replays with
        # whatever targets it holds now (update it in place between steps)
        t = np.asarray(t, dtype=np.int64)
    expected = input.shape[1:] if input.ndim == 1 else input.shape[:1] + input.shape[2:]
    if input.ndim == 1:
        expected = ()
    if t.shape != expected:
        raise ValueError(f"{where}(target): shape {t.shape} does not fit input of shape {input.shape} "
                         f"(expected {expected})")
    return t


def _check_classes(t, n_classes, ignore_index, where):
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if np.any(bad):
        raise ValueError(
            f"{where}(target): class index {int(t[bad][0])} is out of range for {n_classes} classes")


def _class_loss(name, input, target, weight, ignore_index, reduction, ctx_tail=()):
    """The checks and the fused node shared by cross_entropy and nll_loss:
    integer class targets over the class dim (1, or 0 for a 1-d input)."""
    input = _tensor_arg(input, f"{name}(input)")
    if weight is not None:
        raise ValueError(f"{name}(weight=...): class weights are not supported")
    if input.ndim == 0:
        raise ValueError(f"{name}(input) needs at least one dimension (the classes)")
    _reduction(reduction, name)
    t = _class_targets(target, input, name)
    axis = 0 if input.ndim == 1 else 1
    _check_classes(t, input.shape[axis], ignore_index, name)
    return _node(OPS[name], input, None, None, [t, reduction, ignore_index, axis, *ctx_tail])


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-log_softmax(input)[target] over the class dim (1, or 0 for 1-d input),
    with integer class targets; one fused node."""
    # the last context slot keeps the forward's log-probabilities for backward
    return _class_loss("cross_entropy", input, target, weight, ignore_index, reduction, (None,))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-input[target] over the class dim, for log-probabilities ``input``."""
    return _class_loss("nll_loss", input, target, weight, ignore_index, reduction)


def _weight_array(weight, shape, where):
    if weight is None:
        return None
    w = weight.data if isinstance(weight, Tensor) else np.asarray(weight, dtype=np.float64)
    try:
        return np.ascontiguousarray(np.broadcast_to(w, shape), dtype=np.float64)
    except ValueError:
        raise ValueError(f"{where}: shape {np.shape(w)} does not broadcast to input shape {shape}") from None


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-(y log p + (1 - y) log(1 - p)), logs clamped at -100 as PyTorch does."""
    input = _tensor_arg(input, "binary_cross_entropy(input)")
    target = _operand(target, "binary_cross_entropy(target)")
    _same_shape(input, target, "binary_cross_entropy")
    _reduction(reduction, "binary_cross_entropy")
    p = input.data
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("binary_cross_entropy(input): all elements must be between 0 and 1")
    w = _weight_array(weight, input.shape, "binary_cross_entropy(weight)")
    return _node(OPS["binary_cross_entropy"], input, target, None, (reduction, w))


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """BCE of sigmoid(input) computed from the logits without overflow:
    (1 - y) x + (1 + (pos_weight - 1) y) softplus(-x)."""
    input = _tensor_arg(input, "binary_cross_entropy_with_logits(input)")
    target = _operand(target, "binary_cross_entropy_with_logits(target)")
    _same_shape(input, target, "binary_cross_entropy_with_logits")
    _reduction(reduction, "binary_cross_entropy_with_logits")
    w = _weight_array(weight, input.shape, "binary_cross_entropy_with_logits(weight)")
    pw = _weight_array(pos_weight, input.shape, "binary_cross_entropy_with_logits(pos_weight)")
    return _node(OPS["binary_cross_entropy_with_logits"], input, target, None, (reduction, w, pw))


def _pointwise_loss(name, input, target, reduction, *extra):
    input = _tensor_arg(input, f"{name}(input)")
    target = _operand(target, f"{name}(target)")
    _reduction(reduction, name)
    try:
        broadcast_shape(input.shape, target.shape)
    except ValueError:
        raise ValueError(
            f"{name}: target shape {target.shape} does not broadcast with input shape {input.shape}") from None
    return _node(OPS[name], input, target, None, (reduction, *extra))


def mse_loss(input, target, reduction="mean"):
    """(input - target)^2, reduced."""
    return _pointwise_loss("mse_loss", input, target, reduction)


def l1_loss(input, target, reduction="mean"):
    """|input - target|, reduced."""
    return _pointwise_loss("l1_loss", input, target, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| <= delta, else delta (|d| - delta / 2); d = input - target."""
    if not isinstance(delta, numbers.Real) or isinstance(delta, bool) or not delta > 0:
        raise ValueError(f"huber_loss(delta=...) must be a positive number, got {delta!r}")
    return _pointwise_loss("huber_loss", input, target, reduction, float(delta))


def hinge_loss(input, target, reduction="mean"):
    """micrograd's max-margin loss: relu(1 - target * input), target in {-1, +1}."""
    return _pointwise_loss("hinge_loss", input, target, reduction)


# ---------------------------------------------------------------------------
# Convolution and pooling

def _pair(x, where, minimum):
    """An int or a pair of ints as an (h, w) tuple, each >= minimum."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"{where} must be an int or a pair of ints, got {x!r}")
        pair = tuple(x)
    else:
        pair = (x, x)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
            raise TypeError(f"{where} must be an int or a pair of ints, got {x!r}")
        if v < minimum:
            raise ValueError(f"{where} must be >= {minimum}, got {x!r}")
    return (int(pair[0]), int(pair[1]))


def _image_input(input, where):
    """A 4-d (N, C, H, W) Tensor, and whether a 3-d (C, H, W) input was given."""
    input = _tensor_arg(input, f"{where}(input)")
    if input.ndim not in (3, 4):
        raise ValueError(f"{where}(input) must be 3-d (C, H, W) or 4-d (N, C, H, W), got shape {input.shape}")
    if input.size == 0:
        raise ValueError(f"{where}(input) is empty (shape {input.shape})")
    if input.ndim == 3:
        return input.reshape((1,) + input.shape), True
    return input, False


def _finish(out, unbatched):
    return out.reshape(out.shape[1:]) if unbatched else out


def pad(input, pad, value=0.0):
    """Zero padding with PyTorch's ``pad`` order: (left, right, top, bottom, ...)
    from the last dimension backwards."""
    input = _tensor_arg(input, "pad(input)")
    if value != 0.0:
        raise ValueError("pad(value=...): only zero padding is supported")
    if not isinstance(pad, (tuple, list)):
        raise TypeError(f"pad(pad) must be a tuple of ints, got {type(pad).__name__}")
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad(pad) must hold pairs for at most {input.ndim} dimensions, got {pad}")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        lo, hi = pad[2 * i], pad[2 * i + 1]
        for v in (lo, hi):
            if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)) or v < 0:
                raise ValueError(f"pad(pad) takes non-negative ints, got {pad}")
        widths[input.ndim - 1 - i] = (int(lo), int(hi))
    return _node(OPS["pad"], input, None, None, tuple(widths))


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d cross-correlation, NCHW; weight is (out_channels, in_channels/groups, kH, kW).
    ``padding`` is an int, a pair, 'valid' or 'same' (stride 1 only)."""
    x, unbatched = _image_input(input, "conv2d")
    weight = _tensor_arg(weight, "conv2d(weight)")
    if weight.ndim != 4:
        raise ValueError(f"conv2d(weight) must be 4-d (out, in/groups, kH, kW), got shape {weight.shape}")
    if weight.size == 0:
        raise ValueError(f"conv2d(weight) is empty (shape {weight.shape})")
    stride = _pair(stride, "conv2d(stride)", 1)
    dilation = _pair(dilation, "conv2d(dilation)", 1)
    if isinstance(groups, bool) or not isinstance(groups, (numbers.Integral, np.integer)):
        raise TypeError(f"conv2d(groups) must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"conv2d(groups) must be >= 1, got {groups}")
    groups = int(groups)
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_in % groups:
        raise ValueError(f"conv2d(groups): in_channels {c_in} is not divisible by groups {groups}")
    if c_out % groups:
        raise ValueError(f"conv2d(groups): out_channels {c_out} is not divisible by groups {groups}")
    if c_per_group * groups != c_in:
        raise ValueError(
            f"conv2d(weight): shape {weight.shape} expects {c_per_group * groups} input channels "
            f"(groups={groups}), input has {c_in}")
    args = None
    if bias is not None:
        bias = _tensor_arg(bias, "conv2d(bias)")
        if bias.shape != (c_out,):
            raise ValueError(f"conv2d(bias) must have shape ({c_out},), got {bias.shape}")
        args = (bias,)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("conv2d(padding='same') is not supported for strided convolutions")
            # total padding d (k - 1); an odd total puts the extra row/column
            # at the bottom/right, padded explicitly as PyTorch does
            total = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
            low = (total[0] // 2, total[1] // 2)
            extra = (total[0] - 2 * low[0], total[1] - 2 * low[1])
            if extra != (0, 0):
                x = pad(x, (0, extra[1], 0, extra[0]))
            padding = low
        else:
            raise ValueError(f"conv2d(padding) must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        padding = _pair(padding, "conv2d(padding)", 0)
    hp, wp = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    ekh, ekw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if ekh > hp or ekw > wp:
        raise ValueError(
            f"conv2d(weight): kernel size {(ekh, ekw)} (dilated) is larger than the padded input {(hp, wp)}")
    out = _node(OPS["conv2d"], x, weight, args, (stride, padding, dilation, groups))
    return _finish(out, unbatched)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The gradient of conv2d w.r.t. its input, as a layer (PyTorch's argument
    order); weight is (in_channels, out_channels/groups, kH, kW)."""
    x, unbatched = _image_input(input, "conv_transpose2d")
    weight = _tensor_arg(weight, "conv_transpose2d(weight)")
    if weight.ndim != 4:
        raise ValueError(
            f"conv_transpose2d(weight) must be 4-d (in, out/groups, kH, kW), got shape {weight.shape}")
    if weight.size == 0:
        raise ValueError(f"conv_transpose2d(weight) is empty (shape {weight.shape})")
    stride = _pair(stride, "conv_transpose2d(stride)", 1)
    padding = _pair(padding, "conv_transpose2d(padding)", 0)
    output_padding = _pair(output_padding, "conv_transpose2d(output_padding)", 0)
    dilation = _pair(dilation, "conv_transpose2d(dilation)", 1)
    if isinstance(groups, bool) or not isinstance(groups, (numbers.Integral, np.integer)):
        raise TypeError(f"conv_transpose2d(groups) must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"conv_transpose2d(groups) must be >= 1, got {groups}")
    groups = int(groups)
    n, c_in, h, w = x.shape
    if weight.shape[0] != c_in:
        raise ValueError(
            f"conv_transpose2d(weight): shape {weight.shape} expects {weight.shape[0]} input channels, "
            f"input has {c_in}")
    if c_in % groups:
        raise ValueError(f"conv_transpose2d(groups): in_channels {c_in} is not divisible by groups {groups}")
    c_out = weight.shape[1] * groups
    for i in range(2):
        if output_padding[i] >= max(stride[i], dilation[i]):
            raise ValueError(
                f"conv_transpose2d(output_padding): {output_padding} must be smaller than stride "
                f"or dilation in each dimension")
    kh, kw = weight.shape[2], weight.shape[3]
    oh = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    ow = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv_transpose2d(padding): output size {(oh, ow)} would be empty")
    args = None
    if bias is not None:
        bias = _tensor_arg(bias, "conv_transpose2d(bias)")
        if bias.shape != (c_out,):
            raise ValueError(f"conv_transpose2d(bias) must have shape ({c_out},), got {bias.shape}")
        args = (bias,)
    out = _node(OPS["conv_transpose2d"], x, weight, args, (stride, padding, output_padding, dilation, groups))
    return _finish(out, unbatched)


def _pool_size(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1    # the last window must start inside the input or left padding
    return out


def _pool_args(where, x, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = _pair(kernel_size, f"{where}(kernel_size)", 1)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, f"{where}(stride)", 1)
    padding = _pair(padding, f"{where}(padding)", 0)
    dilation = _pair(dilation, f"{where}(dilation)", 1)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"{where}(ceil_mode) must be a bool, got {type(ceil_mode).__name__}")
    for i in range(2):
        if padding[i] * 2 > kernel[i]:
            raise ValueError(
                f"{where}(padding): {padding} must be at most half the kernel size {kernel}")
    h, w = x.shape[2], x.shape[3]
    oh = _pool_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = _pool_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"{where}(kernel_size): kernel {kernel} is larger than the padded input {(h, w)}")
    return kernel, stride, padding, dilation, bool(ceil_mode)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max over kH x kW windows (stride defaults to the kernel size); the
    gradient goes to the first maximum of each window."""
    x, unbatched = _image_input(input, "max_pool2d")
    kernel, stride, padding, dilation, ceil_mode = _pool_args(
        "max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    out = _node(OPS["max_pool2d"], x, None, None, [kernel, stride, padding, dilation, ceil_mode, None])
    return _finish(out, unbatched)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over kH x kW windows (stride defaults to the kernel size)."""
    x, unbatched = _image_input(input, "avg_pool2d")
    kernel, stride, padding, _, ceil_mode = _pool_args(
        "avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"avg_pool2d(count_include_pad) must be a bool, got {type(count_include_pad).__name__}")
    out = _node(OPS["avg_pool2d"], x, None, None,
                (kernel, stride, padding, ceil_mode, bool(count_include_pad)))
    return _finish(out, unbatched)


# The elementwise functions: one per op-table row with a PyTorch name.
def _add_elementwise_functions():
    from . import optable
    functions = optable.functional_api()
    globals().update(functions)
    __all__[:0] = list(functions)


_add_elementwise_functions()

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

from .kernels._conv import (
    avg_pool2d_divisors, check_output_padding, check_pool_padding, conv2d_output_size, conv_transpose2d_output_size,
    pair, pool2d_output_size)
from .core._engine import Value
from .tensors._tensor import (
    OPS, ClassLossState, ConvState, LossState, PoolState, Tensor, _node, _value_tensor,
    broadcast_shape, cat, tensor)

__all__ = [
    "linear", "dropout", "batch_norm",
    "softmax", "log_softmax", "cross_entropy", "nll_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "mse_loss", "l1_loss", "huber_loss", "hinge_loss",
    "conv2d", "conv_transpose2d", "max_pool2d", "max_unpool2d", "avg_pool2d", "pad",
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
# Dropout and batch normalisation: compositions of existing Tensor ops (a
# constant mask or statistics times the input), so their gradients are those
# of the ops they are made of.

def _flag(value, where):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be a bool, got {type(value).__name__}")
    return bool(value)


def _probability(p, where):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{where} must be a probability in [0, 1], got {p!r}")
    return float(p)


def dropout(input, p=0.5, training=True):
    """Zeroes each element with probability ``p`` and scales the rest by
    1 / (1 - p), as PyTorch; the identity when not training.  The mask is
    drawn from the Generator that ``mg.manual_seed`` seeds."""
    input = _tensor_arg(input, "dropout(input)")
    p = _probability(p, "dropout(p)")
    if not _flag(training, "dropout(training)") or p == 0.0:
        return input
    if p == 1.0:
        return input * tensor(np.zeros(input.shape))
    from .nn import default_generator        # nn imports this module
    keep = default_generator().random(input.shape) >= p
    return input * tensor(keep * (1.0 / (1.0 - p)))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias per channel (dim 1) of an
    (N, C, ...) input.  Training normalises with the batch's statistics and,
    given running_mean/running_var (float64 numpy arrays), updates them in
    place: new = (1 - momentum) old + momentum batch, the variance unbiased.
    Otherwise the running statistics normalise."""
    input = _tensor_arg(input, "batch_norm(input)")
    if input.ndim < 2:
        raise ValueError(f"batch_norm(input) must be (N, C, ...), got shape {input.shape}")
    c = input.shape[1]
    training = _flag(training, "batch_norm(training)")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"batch_norm(momentum) must be a number, got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"batch_norm(eps) must be a non-negative number, got {eps!r}")
    stats = []
    for where, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is None:
            if not training:
                raise ValueError(f"batch_norm({where}) is needed when not training")
        elif not isinstance(r, np.ndarray) or r.dtype != np.float64 or r.shape != (c,):
            raise TypeError(f"batch_norm({where}) must be a float64 numpy array of shape ({c},), got "
                            f"{type(r).__name__} {getattr(r, 'shape', '')}")
        stats.append(r)
    shape = (1, c) + (1,) * (input.ndim - 2)
    for where, t in (("weight", weight), ("bias", bias)):
        if t is not None and (not isinstance(t, Tensor) or t.shape != (c,)):
            raise TypeError(f"batch_norm({where}) must be a Tensor of shape ({c},), got {t!r}")
    if training:
        axes = (0,) + tuple(range(2, input.ndim))
        n = input.numel() // c
        if n <= 1:
            raise ValueError(f"batch_norm(input): expected more than 1 value per channel when "
                             f"training, got input shape {input.shape}")
        mean = input.mean(dim=axes, keepdim=True)
        centred = input - mean
        var = (centred * centred).mean(dim=axes, keepdim=True)
        out = centred / (var + float(eps)).sqrt()
        if stats[0] is not None:
            m = float(momentum)
            stats[0] *= 1.0 - m
            stats[0] += m * mean.data.reshape(c)
        if stats[1] is not None:
            m = float(momentum)
            stats[1] *= 1.0 - m
            stats[1] += m * var.data.reshape(c) * (n / (n - 1))
    else:
        inv_std = 1.0 / np.sqrt(running_var + float(eps))
        out = (input - tensor(running_mean.reshape(shape))) * tensor(inv_std.reshape(shape))
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


# ---------------------------------------------------------------------------
# Losses

def _class_targets(target, input, where):
    """Integer class indices as an int64 array of input's shape without the
    class dimension (dim 1, or dim 0 for an unbatched 1-d input)."""
    if isinstance(target, Tensor) and target.dtype == np.int64:
        t = target.data        # by reference, as an int64 array (a Graph replays with its new labels)
    elif isinstance(target, Tensor):
        data = target.data
        if data.dtype == np.bool_ or not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise TypeError(f"{where}(target) must hold integer class indices, got a {data.dtype} tensor")
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


def _class_loss(name, input, target, weight, ignore_index, reduction, label_smoothing=0.0):
    """The checks and the node(s) shared by cross_entropy and nll_loss over the
    class dim (1, or 0 for a 1-d input).  Integer class targets without
    weights or smoothing are one fused node; class weights, label smoothing
    and probability targets are a weighted sum over the log-probabilities."""
    input = _tensor_arg(input, f"{name}(input)")
    if input.ndim == 0:
        raise ValueError(f"{name}(input) needs at least one dimension (the classes)")
    _reduction(reduction, name)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}(label_smoothing) must be a number in [0, 1], got {label_smoothing!r}")
    axis = 0 if input.ndim == 1 else 1
    n_classes = input.shape[axis]
    w = None
    if weight is not None:
        w = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
        if w.dtype.kind not in "biuf" or w.shape != (n_classes,):
            raise ValueError(f"{name}(weight) must be a 1-d array of {n_classes} class weights, "
                             f"got shape {np.shape(w)}")
        w = w.astype(np.float64)
    if _probability_targets(target, input):
        return _probability_loss(name, input, _operand(target, f"{name}(target)"), w,
                                 reduction, float(label_smoothing), axis)
    t = _class_targets(target, input, name)
    _check_classes(t, n_classes, ignore_index, name)
    if w is None and label_smoothing == 0.0:
        return _node(OPS[name], input, None, None, ClassLossState(t, reduction, ignore_index, axis))
    # coef[i, c] weighs -logp[i, c]: (1 - ls) w[t_i] at the target class plus
    # ls / C w[c] on every class (PyTorch's smoothing); rows of ignored targets are 0
    shape = [1] * input.ndim
    shape[axis] = n_classes
    class_w = np.ones(n_classes) if w is None else w
    kept = t != ignore_index
    safe_t = np.where(kept, t, 0)
    onehot = np.moveaxis(np.eye(n_classes)[safe_t], -1, axis) if input.ndim > 1 else np.eye(n_classes)[safe_t]
    target_w = np.where(kept, class_w[safe_t], 0.0)
    keep_b = np.expand_dims(kept, axis)
    coef = (1.0 - label_smoothing) * onehot * np.expand_dims(target_w, axis) \
        + np.where(keep_b, (label_smoothing / n_classes) * class_w.reshape(shape), 0.0)
    logp = input.log_softmax(axis) if name == "cross_entropy" else input
    losses = -(logp * tensor(coef)).sum(dim=axis)
    if reduction == "none":
        return losses
    total = losses.sum()
    return total / float(target_w.sum()) if reduction == "mean" else total


def _probability_targets(target, input):
    """Class probabilities (PyTorch: a floating target of the input's shape)
    rather than class indices."""
    if isinstance(target, Tensor):     # index targets lack the class dim and are integers
        return target.shape == input.shape and target.dtype == np.float64
    a = np.asarray(target) if isinstance(target, (np.ndarray, list, tuple)) else None
    return a is not None and a.dtype.kind == "f" and a.shape == input.shape


def _probability_loss(name, input, target, w, reduction, label_smoothing, axis):
    if name != "cross_entropy":
        raise ValueError(f"{name}(target): probability targets are taken by cross_entropy only; "
                         f"nll_loss needs integer class indices")
    n_classes = input.shape[axis]
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
    prod = input.log_softmax(axis) * target
    if w is not None:
        shape = [1] * input.ndim
        shape[axis] = n_classes
        prod = prod * tensor(w.reshape(shape))
    losses = -prod.sum(dim=axis)
    if reduction == "none":
        return losses
    total = losses.sum()
    # PyTorch's mean over probability targets divides by the number of samples
    return total / float(input.numel() // n_classes) if reduction == "mean" else total


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """-log_softmax(input) at the target class over the class dim (1, or 0 for
    1-d input), with PyTorch's arguments: integer class targets (one fused
    node) or class probabilities of the input's shape, class ``weight``
    (the mean divides by the summed weights of the targets), and
    ``label_smoothing``."""
    return _class_loss("cross_entropy", input, target, weight, ignore_index, reduction, label_smoothing)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-input[target] over the class dim, for log-probabilities ``input``;
    class ``weight`` as in cross_entropy."""
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
    return _node(OPS["binary_cross_entropy"], input, target, None, LossState(reduction, weight=w))


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """BCE of sigmoid(input) computed from the logits without overflow:
    (1 - y) x + (1 + (pos_weight - 1) y) softplus(-x)."""
    input = _tensor_arg(input, "binary_cross_entropy_with_logits(input)")
    target = _operand(target, "binary_cross_entropy_with_logits(target)")
    _same_shape(input, target, "binary_cross_entropy_with_logits")
    _reduction(reduction, "binary_cross_entropy_with_logits")
    w = _weight_array(weight, input.shape, "binary_cross_entropy_with_logits(weight)")
    pw = _weight_array(pos_weight, input.shape, "binary_cross_entropy_with_logits(pos_weight)")
    return _node(OPS["binary_cross_entropy_with_logits"], input, target, None,
                 LossState(reduction, weight=w, pos_weight=pw))


def _pointwise_loss(name, input, target, reduction, **state):
    input = _tensor_arg(input, f"{name}(input)")
    target = _operand(target, f"{name}(target)")
    _reduction(reduction, name)
    try:
        broadcast_shape(input.shape, target.shape)
    except ValueError:
        raise ValueError(
            f"{name}: target shape {target.shape} does not broadcast with input shape {input.shape}") from None
    return _node(OPS[name], input, target, None, LossState(reduction, **state))


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
    return _pointwise_loss("huber_loss", input, target, reduction, delta=float(delta))


def hinge_loss(input, target, reduction="mean"):
    """micrograd's max-margin loss: relu(1 - target * input), target in {-1, +1}."""
    return _pointwise_loss("hinge_loss", input, target, reduction)


# ---------------------------------------------------------------------------
# Convolution and pooling

def _groups(groups, where):
    if isinstance(groups, bool) or not isinstance(groups, (numbers.Integral, np.integer)):
        raise TypeError(f"{where} must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{where} must be >= 1, got {groups}")
    return int(groups)


def _image_input(input, where):
    """A 4-d (N, C, H, W) Tensor, and whether a 3-d (C, H, W) input was given."""
    input = _tensor_arg(input, f"{where}(input)")
    if input.ndim not in (3, 4):
        raise ValueError(f"{where}(input) must be 3-d (C, H, W) or 4-d (N, C, H, W), got shape {input.shape}")
    if input.numel() == 0:
        raise ValueError(f"{where}(input) is empty (shape {input.shape})")
    if input.ndim == 3:
        return input.reshape((1,) + input.shape), True
    return input, False


def _finish(out, unbatched):
    return out.reshape(out.shape[1:]) if unbatched else out


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input, pad, mode="constant", value=None):
    """Pads with PyTorch's ``pad`` order: (left, right, top, bottom, ...) from
    the last dimension backwards.  ``mode`` 'constant' pads with zeros;
    'reflect' mirrors the input without repeating its edge, 'replicate'
    repeats the edge and 'circular' wraps around."""
    input = _tensor_arg(input, "pad(input)")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad(mode) must be one of {', '.join(map(repr, _PAD_MODES))}, got {mode!r}")
    if value is not None and (mode != "constant" or value != 0.0):
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
    if mode == "constant":
        return _node(OPS["pad"], input, None, None, tuple(widths))
    if len(pad) // 2 >= input.ndim:
        raise ValueError(f"pad(pad): mode {mode!r} pads at most {input.ndim - 1} dimensions of a "
                         f"{input.ndim}-d input (the first is the batch or channels), got {pad}")
    # Each padded dimension is one gather with integer indices (the Tensor's
    # indexing node), so backward adds every copy's gradient to its source.
    out = input
    for d, (lo, hi) in enumerate(widths):
        if lo == hi == 0:
            continue
        n = input.shape[d]
        limit = n if mode == "circular" else n - 1 if mode == "reflect" else None
        if limit is not None and max(lo, hi) > limit:
            raise ValueError(f"pad(pad): {mode} padding of {max(lo, hi)} must be at most "
                             f"{limit} for dimension {d} of size {n}")
        i = np.arange(-lo, n + hi)
        if mode == "reflect":
            i = np.abs(i)
            i = np.where(i >= n, 2 * (n - 1) - i, i)
        elif mode == "replicate":
            i = np.clip(i, 0, n - 1)
        else:
            i = i % n
        out = out[(slice(None),) * d + (i,)]
    return out


def _conv_padding(padding, kernel, stride, dilation, where):
    """conv2d's padding as ((top, left), (bottom extra, right extra)): an int,
    a pair, 'valid', or 'same' (stride 1), whose odd total d (k - 1) puts the
    extra row/column at the bottom/right, as PyTorch does."""
    if not isinstance(padding, str):
        return pair(padding, where, 0), (0, 0)
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding != "same":
        raise ValueError(f"{where} must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if tuple(stride) != (1, 1):
        same = f"{where[:-1]}='same')" if where.endswith(")") else f"{where}='same'"
        raise ValueError(f"{same} is not supported for strided convolutions")
    total = [d * (k - 1) for d, k in zip(dilation, kernel)]
    low = (total[0] // 2, total[1] // 2)
    return low, (total[0] - 2 * low[0], total[1] - 2 * low[1])


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d cross-correlation, NCHW; weight is (out_channels, in_channels/groups, kH, kW).
    ``padding`` is an int, a pair, 'valid' or 'same' (stride 1 only)."""
    x, unbatched = _image_input(input, "conv2d")
    weight = _tensor_arg(weight, "conv2d(weight)")
    if weight.ndim != 4:
        raise ValueError(f"conv2d(weight) must be 4-d (out, in/groups, kH, kW), got shape {weight.shape}")
    if weight.numel() == 0:
        raise ValueError(f"conv2d(weight) is empty (shape {weight.shape})")
    stride = pair(stride, "conv2d(stride)", 1)
    dilation = pair(dilation, "conv2d(dilation)", 1)
    groups = _groups(groups, "conv2d(groups)")
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
    padding, extra = _conv_padding(padding, (kh, kw), stride, dilation, "conv2d(padding)")
    if extra != (0, 0):
        x = pad(x, (0, extra[1], 0, extra[0]))
    if min(conv2d_output_size(x.shape[2:], (kh, kw), stride, padding, dilation)) < 1:
        raise ValueError(
            f"conv2d(weight): kernel size {(kh, kw)} with dilation {dilation} is larger than "
            f"the input {x.shape[2:]} padded by {padding}")
    out = _node(OPS["conv2d"], x, weight, args, ConvState(stride, padding, dilation, groups))
    return _finish(out, unbatched)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The gradient of conv2d w.r.t. its input, as a layer (PyTorch's argument
    order); weight is (in_channels, out_channels/groups, kH, kW)."""
    x, unbatched = _image_input(input, "conv_transpose2d")
    weight = _tensor_arg(weight, "conv_transpose2d(weight)")
    if weight.ndim != 4:
        raise ValueError(
            f"conv_transpose2d(weight) must be 4-d (in, out/groups, kH, kW), got shape {weight.shape}")
    if weight.numel() == 0:
        raise ValueError(f"conv_transpose2d(weight) is empty (shape {weight.shape})")
    stride = pair(stride, "conv_transpose2d(stride)", 1)
    padding = pair(padding, "conv_transpose2d(padding)", 0)
    output_padding = pair(output_padding, "conv_transpose2d(output_padding)", 0)
    dilation = pair(dilation, "conv_transpose2d(dilation)", 1)
    groups = _groups(groups, "conv_transpose2d(groups)")
    n, c_in, h, w = x.shape
    if weight.shape[0] != c_in:
        raise ValueError(
            f"conv_transpose2d(weight): shape {weight.shape} expects {weight.shape[0]} input channels, "
            f"input has {c_in}")
    if c_in % groups:
        raise ValueError(f"conv_transpose2d(groups): in_channels {c_in} is not divisible by groups {groups}")
    c_out = weight.shape[1] * groups
    check_output_padding(output_padding, stride, dilation, "conv_transpose2d(output_padding)")
    oh, ow = conv_transpose2d_output_size(
        (h, w), weight.shape[2:], stride, padding, output_padding, dilation)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv_transpose2d(padding): output size {(oh, ow)} would be empty")
    args = None
    if bias is not None:
        bias = _tensor_arg(bias, "conv_transpose2d(bias)")
        if bias.shape != (c_out,):
            raise ValueError(f"conv_transpose2d(bias) must have shape ({c_out},), got {bias.shape}")
        args = (bias,)
    out = _node(OPS["conv_transpose2d"], x, weight, args,
                ConvState(stride, padding, dilation, groups, output_padding))
    return _finish(out, unbatched)


def _pool_args(where, x, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = pair(kernel_size, f"{where}(kernel_size)", 1)
    stride = kernel if stride is None or stride == [] or stride == () else pair(stride, f"{where}(stride)", 1)
    padding = pair(padding, f"{where}(padding)", 0)
    dilation = pair(dilation, f"{where}(dilation)", 1)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"{where}(ceil_mode) must be a bool, got {type(ceil_mode).__name__}")
    check_pool_padding(padding, kernel, f"{where}(padding)")
    h, w = x.shape[2], x.shape[3]
    oh, ow = pool2d_output_size((h, w), kernel, stride, padding, dilation, ceil_mode)
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"{where}(kernel_size): kernel {kernel} is larger than the padded input {(h, w)}")
    return kernel, stride, padding, dilation, bool(ceil_mode)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over kH x kW windows (stride defaults to the kernel size); the
    gradient goes to the first maximum of each window.  With
    ``return_indices``, also the flat index h * W + w of each maximum in its
    input plane (an int64 numpy array of the output's shape), as PyTorch's."""
    x, unbatched = _image_input(input, "max_pool2d")
    kernel, stride, padding, dilation, ceil_mode = _pool_args(
        "max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    if not isinstance(return_indices, (bool, np.bool_)):
        raise TypeError(f"max_pool2d(return_indices) must be a bool, got {type(return_indices).__name__}")
    state = PoolState(kernel, stride, padding, dilation, ceil_mode)   # the forward fills .argmax
    out = _finish(_node(OPS["max_pool2d"], x, None, None, state), unbatched)
    if not return_indices:
        return out
    indices = state.argmax.copy()
    return out, (indices.reshape(indices.shape[1:]) if unbatched else indices)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of max_pool2d: each input value is put at its index
    (from ``max_pool2d(..., return_indices=True)``) in a zero output plane of
    (H - 1) * stride - 2 * padding + kernel_size (or ``output_size``).

    Where two inputs name the same output cell (overlapping pooling windows
    picking the same maximum), the last one in row-major order is written and
    takes that cell's gradient; PyTorch's backward gives it to each of them."""
    x, unbatched = _image_input(input, "max_unpool2d")
    kernel = pair(kernel_size, "max_unpool2d(kernel_size)", 1)
    stride = kernel if stride is None else pair(stride, "max_unpool2d(stride)", 1)
    padding = pair(padding, "max_unpool2d(padding)", 0)
    if isinstance(indices, Tensor):
        indices = indices.data
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        if idx.dtype.kind != "f" or not np.all(np.isfinite(idx)) or np.any(idx != np.round(idx)):
            raise TypeError(f"max_unpool2d(indices) must hold integer indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64).reshape(x.shape) if idx.shape == input.shape else None
    if idx is None:
        raise ValueError(f"max_unpool2d(indices): shape {np.shape(indices)} must match input shape {input.shape}")
    n, c, h, w = x.shape
    if output_size is None:
        oh, ow = conv_transpose2d_output_size((h, w), kernel, stride, padding, 0, 1)
    else:
        size = tuple(output_size)[-2:] if isinstance(output_size, (tuple, list)) else None
        if size is None or len(size) != 2:
            raise TypeError(f"max_unpool2d(output_size) must be a sequence ending in (H, W), got {output_size!r}")
        oh, ow = pair(size, "max_unpool2d(output_size)", 1)
    if oh < 1 or ow < 1:
        raise ValueError(f"max_unpool2d(padding): output size {(oh, ow)} would be empty")
    plane = oh * ow
    if idx.size and (idx.min() < 0 or idx.max() >= plane):
        raise ValueError(f"max_unpool2d(indices): index {int(idx.min() if idx.min() < 0 else idx.max())} "
                         f"is out of range for an output plane of {(oh, ow)}")
    # A gather, not a scatter: each output cell reads the input element that
    # points at it, or an appended zero.  Fancy assignment keeps the last
    # writer, as PyTorch's CPU loop does.
    planes = n * c
    source = np.full((planes, plane), planes * h * w, dtype=np.int64)
    rows = np.repeat(np.arange(planes), h * w)
    source[rows, idx.reshape(-1)] = np.arange(planes * h * w)
    flat = cat([x.reshape(-1), tensor(np.zeros(1))])
    out = flat[source.reshape(-1)].reshape((n, c, oh, ow))
    return _finish(out, unbatched)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over kH x kW windows (stride defaults to the kernel size).  The
    divisor is the window's size, padding included unless count_include_pad
    is False (never the part of a ceil_mode window beyond the padding); with
    ``divisor_override`` it is that number instead, as in PyTorch."""
    x, unbatched = _image_input(input, "avg_pool2d")
    kernel, stride, padding, _, ceil_mode = _pool_args(
        "avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"avg_pool2d(count_include_pad) must be a bool, got {type(count_include_pad).__name__}")
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (numbers.Integral, np.integer)):
            raise TypeError(f"avg_pool2d(divisor_override) must be an int or None, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError("avg_pool2d(divisor_override) must not be zero")
        count_include_pad = False
    out = _node(OPS["avg_pool2d"], x, None, None,
                PoolState(kernel, stride, padding, ceil_mode=ceil_mode,
                          count_include_pad=bool(count_include_pad)))
    if divisor_override is not None:
        # window sum / divisor_override = (window mean over the cells inside
        # the input) * (that count / divisor_override): the kernel's own
        # counts, so the window rule stays in one place
        counts = avg_pool2d_divisors(x.shape[2:], kernel, stride, padding, ceil_mode, False)
        out = out * tensor(counts / float(divisor_override))
    return _finish(out, unbatched)


# The elementwise functions: one per op-table row with a PyTorch name.
def _add_elementwise_functions():
    from .core import optable
    functions = optable.functional_api()
    globals().update(functions)
    __all__[:0] = list(functions)


_add_elementwise_functions()

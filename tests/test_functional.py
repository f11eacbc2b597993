"""Tests of microgrid.functional: activations, softmax, losses, linear,
convolution and pooling nodes against finite differences, hand values and
PyTorch (float64); argument validation; no warnings at extreme inputs.

The convolution nodes are tested with the compiled kernels (microgrid.kernels._conv)
when they are built, and always with a small numpy reference of the same
API below, which checks the graph wiring on its own."""
import warnings

import numpy as np
import pytest

import microgrid as mg
import microgrid.tensors._tensor as _tensor_module
import microgrid.functional as F

RNG = np.random.default_rng(99)


def rand(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, shape)


def leaves(*arrays):
    return [mg.tensor(a, requires_grad=True) for a in arrays]


def parity(mg_fn, torch_fn, arrays, rtol=1e-9, atol=1e-12, grads=None):
    """Values and gradients (for a random cotangent) equal PyTorch's."""
    torch = pytest.importorskip("torch")
    grads = [True] * len(arrays) if grads is None else grads
    m_in = [mg.tensor(a, requires_grad=g) for a, g in zip(arrays, grads)]
    t_in = [torch.tensor(a, dtype=torch.float64, requires_grad=g) for a, g in zip(arrays, grads)]
    m_out = mg_fn(*m_in)
    t_out = torch_fn(*t_in)
    np.testing.assert_allclose(m_out.data, t_out.detach().numpy(), rtol=rtol, atol=atol)
    cot = RNG.standard_normal(m_out.shape)
    m_out.backward(cot)
    t_out.backward(torch.tensor(cot))
    for m, t, g in zip(m_in, t_in, grads):
        if g:
            np.testing.assert_allclose(m.grad, t.grad.numpy(), rtol=rtol, atol=atol)


def tf():
    torch = pytest.importorskip("torch")
    return torch.nn.functional


# ---------------------------------------------------------------------------
# Activations and softmax

@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softplus", "leaky_relu"])
def test_activations_match_torch(name):
    x = rand(4, 5)
    x[0, 0] = 0.0
    parity(getattr(F, name), lambda t: getattr(tf(), name)(t), [x])
    assert getattr(mg, name) is getattr(F, name)
    v = mg.Value(0.7)
    assert getattr(F, name)(v).data == getattr(v, name)().data     # scalar Values too


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_matches_torch_and_gradchecks(name, dim):
    x = rand(3, 4, 5)
    parity(lambda t: getattr(F, name)(t, dim), lambda t: getattr(tf(), name)(t, dim=dim), [x])
    assert mg.gradcheck(lambda t: getattr(F, name)(t, dim), leaves(rand(2, 3)) if dim != 1 else leaves(rand(2, 3)))


def test_softmax_hand_value_and_extremes():
    p = F.softmax(mg.tensor([1.0, 0.0, 0.0, -1.0]), 0)
    assert p.data[0] == pytest.approx(np.e / (np.e + 2 + 1 / np.e))
    assert p.data[0] == pytest.approx(0.5344466, abs=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = mg.tensor([[1000.0, -1000.0, 0.0], [-1e300, 1e300, 5.0]], requires_grad=True)
        s = F.softmax(x, 1)
        ls = F.log_softmax(x, 1)
        assert np.all(np.isfinite(s.data)) and np.all(np.isfinite(ls.data))
        np.testing.assert_allclose(s.data.sum(axis=1), [1.0, 1.0])
        (s.sum() + ls.sum()).backward()
        assert np.all(np.isfinite(x.grad))


# ---------------------------------------------------------------------------
# linear

@pytest.mark.parametrize("xshape", [(5, 3), (3,), (2, 5, 3)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_torch(xshape, with_bias):
    arrays = [rand(*xshape), rand(4, 3)] + ([rand(4)] if with_bias else [])
    parity(lambda *a: F.linear(*a), lambda *a: tf().linear(*a), arrays)
    assert mg.gradcheck(lambda *a: F.linear(*a), leaves(*arrays))


def test_linear_equals_matmul_with_transpose():
    x, w, b = leaves(rand(6, 3), rand(2, 3), rand(2))
    np.testing.assert_allclose(F.linear(x, w, b).data, (x @ w.T + b).data, rtol=1e-14)


# ---------------------------------------------------------------------------
# Losses

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_kind", ["array", "list", "tensor"])
def test_cross_entropy_matches_torch(reduction, target_kind):
    torch = pytest.importorskip("torch")
    target = RNG.integers(0, 4, 6)
    given = {"array": target, "list": target.tolist(), "tensor": mg.tensor(target)}[target_kind]
    parity(lambda x: F.cross_entropy(x, given, reduction=reduction),
           lambda x: tf().cross_entropy(x, torch.tensor(target), reduction=reduction), [rand(6, 4, low=-5, high=5)])


def test_cross_entropy_ignore_index_unbatched_and_spatial():
    torch = pytest.importorskip("torch")
    target = np.array([0, 2, -100, 1])
    parity(lambda x: F.cross_entropy(x, target), lambda x: tf().cross_entropy(x, torch.tensor(target)), [rand(4, 3)])
    parity(lambda x: F.cross_entropy(x, 2), lambda x: tf().cross_entropy(x, torch.tensor(2)), [rand(5)])
    t3 = RNG.integers(0, 3, (2, 4))
    for reduction in ("mean", "none"):
        parity(lambda x: F.cross_entropy(x, t3, reduction=reduction),
               lambda x: tf().cross_entropy(x, torch.tensor(t3), reduction=reduction), [rand(2, 3, 4)])
    target_np = RNG.integers(0, 3, 5)
    assert mg.gradcheck(lambda x: F.cross_entropy(x, target_np), leaves(rand(5, 3)))


def test_cross_entropy_is_stable_at_extreme_logits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = mg.tensor([[1000.0, -1000.0], [-1000.0, 1000.0]], requires_grad=True)
        loss = F.cross_entropy(x, [1, 1])
        assert loss.item() == pytest.approx(1000.0)
        loss.backward()
        np.testing.assert_allclose(x.grad, [[0.5, -0.5], [0.0, 0.0]])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    target = RNG.integers(0, 3, 5)
    parity(lambda x: F.nll_loss(F.log_softmax(x, 1), target, reduction=reduction),
           lambda x: tf().nll_loss(tf().log_softmax(x, 1), torch.tensor(target), reduction=reduction),
           [rand(5, 3)])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    p = RNG.uniform(0.05, 0.95, (4, 3))
    y = RNG.uniform(0, 1, (4, 3))
    parity(lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction),
           lambda p, y: tf().binary_cross_entropy(p, y, reduction=reduction), [p, y])
    w = RNG.uniform(0.5, 2, (4, 3))
    parity(lambda p: F.binary_cross_entropy(p, y, weight=w, reduction=reduction),
           lambda p: tf().binary_cross_entropy(p, torch.tensor(y), weight=torch.tensor(w), reduction=reduction), [p])
    assert mg.gradcheck(lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction), leaves(p, y))


def test_binary_cross_entropy_clamps_logs_like_torch():
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-300, 0.5])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parity(lambda p, y: F.binary_cross_entropy(p, y, reduction="none"),
               lambda p, y: tf().binary_cross_entropy(p, y, reduction="none"), [p, y], grads=[True, False])
    assert F.binary_cross_entropy(mg.tensor(p[:1]), y[:1]).item() == 100.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_with_logits_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    x = rand(4, 3, low=-6, high=6)
    x[0, :3] = [1000.0, -1000.0, 0.0]
    y = RNG.uniform(0, 1, (4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parity(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction),
               lambda x, y: tf().binary_cross_entropy_with_logits(x, y, reduction=reduction), [x, y])
    w = RNG.uniform(0.5, 2, (4, 3))
    pw = RNG.uniform(0.5, 3, (3,))
    parity(lambda x, y: F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=reduction),
           lambda x, y: tf().binary_cross_entropy_with_logits(
               x, y, weight=torch.tensor(w), pos_weight=torch.tensor(pw), reduction=reduction), [x, y])
    assert mg.gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw), leaves(rand(3, 3), y[:3]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
def test_regression_losses_match_torch(name, reduction):
    a, b = rand(5, 2), rand(5, 2)
    parity(lambda a, b: getattr(F, name)(a, b, reduction=reduction),
           lambda a, b: getattr(tf(), name)(a, b, reduction=reduction), [a, b])
    if name == "huber_loss":
        parity(lambda a, b: F.huber_loss(a, b, reduction=reduction, delta=0.3),
               lambda a, b: tf().huber_loss(a, b, reduction=reduction, delta=0.3), [a, b])
    assert mg.gradcheck(lambda a, b: getattr(F, name)(a, b, reduction=reduction), leaves(a, b))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_hinge_loss_is_micrograds_max_margin_loss(reduction):
    torch = pytest.importorskip("torch")
    s = rand(8)
    y = np.where(RNG.random(8) < 0.5, -1.0, 1.0)
    s[0] = y[0]          # margin exactly 0: relu'(0) = 0
    reduce = {"mean": torch.mean, "sum": torch.sum, "none": lambda t: t}[reduction]
    parity(lambda s: F.hinge_loss(s, y, reduction=reduction),
           lambda s: reduce(torch.relu(1 - torch.tensor(y) * s)), [s])
    # hand value: mean(relu(1 - y s)) for s = (2, -0.5), y = (1, 1) is (0 + 1.5) / 2
    assert F.hinge_loss(mg.tensor([2.0, -0.5]), [1, 1]).item() == 0.75


# ---------------------------------------------------------------------------
# Loss and linear argument validation

def test_functional_errors_name_the_argument():
    x = mg.tensor(rand(3, 4), requires_grad=True)
    with pytest.raises(TypeError, match="linear\\(input\\)"):
        F.linear(np.ones((3, 4)), x)
    with pytest.raises(ValueError, match="linear\\(input\\)"):
        F.linear(x, mg.tensor(rand(2, 5)))
    with pytest.raises(ValueError, match="linear\\(bias\\)"):
        F.linear(x, mg.tensor(rand(2, 4)), mg.tensor(rand(3)))
    with pytest.raises(TypeError, match="cross_entropy\\(target\\)"):
        F.cross_entropy(x, np.array([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="cross_entropy\\(target\\)"):
        F.cross_entropy(x, [0, 1])
    with pytest.raises(ValueError, match="cross_entropy\\(target\\).*out of range"):
        F.cross_entropy(x, [0, 1, 4])
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match="binary_cross_entropy\\(input\\)"):
        F.binary_cross_entropy(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="binary_cross_entropy.*target shape"):
        F.binary_cross_entropy(x.sigmoid(), np.zeros(4))
    with pytest.raises(ValueError, match="mse_loss"):
        F.mse_loss(x, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="mse_loss\\(target\\)"):
        F.mse_loss(x, "zeros")
    with pytest.raises(ValueError, match="delta"):
        F.huber_loss(x, x, delta=0)
    with pytest.raises(ValueError, match="softmax\\(dim"):
        F.softmax(x, 2)
    with pytest.raises(TypeError, match="softmax\\(input\\)"):
        F.softmax([1.0, 2.0], 0)


# ---------------------------------------------------------------------------
# Convolution and pooling

def _out_size(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


class ReferenceKernels:
    """A numpy stand-in with microgrid.kernels._conv's API (NCHW, float64): loops
    over the kernel offsets, einsum over channels."""

    @staticmethod
    def conv2d_forward(x, w, b, stride, padding, dilation, groups):
        n, cin, h, wd = x.shape
        cout, cpg, kh, kw = w.shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        oh, ow = _out_size(h, kh, sh, ph, dh, False), _out_size(wd, kw, sw, pw, dw, False)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        y = np.zeros((n, cout, oh, ow))
        opg = cout // groups
        for g in range(groups):
            ci, co = slice(g * cpg, (g + 1) * cpg), slice(g * opg, (g + 1) * opg)
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, ci, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                    y[:, co] += np.einsum("nchw,oc->nohw", patch, w[co, :, i, j])
        if b is not None:
            y += b[None, :, None, None]
        return y

    @staticmethod
    def conv2d_backward(gy, x, w, stride, padding, dilation, groups, need_x, need_w, need_b):
        n, cin, h, wd = x.shape
        cout, cpg, kh, kw = w.shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        oh, ow = gy.shape[2:]
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        gxp, gw = np.zeros_like(xp), np.zeros_like(w)
        opg = cout // groups
        for g in range(groups):
            ci, co = slice(g * cpg, (g + 1) * cpg), slice(g * opg, (g + 1) * opg)
            for i in range(kh):
                for j in range(kw):
                    win = (slice(None), ci, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                           slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
                    gxp[win] += np.einsum("nohw,oc->nchw", gy[:, co], w[co, :, i, j])
                    gw[co, :, i, j] += np.einsum("nohw,nchw->oc", gy[:, co], xp[win])
        gx = gxp[:, :, ph:ph + h, pw:pw + wd]
        return (gx.copy() if need_x else None, gw if need_w else None,
                gy.sum(axis=(0, 2, 3)) if need_b else None)

    @staticmethod
    def _transpose_geometry(x, w, stride, padding, output_padding, dilation):
        (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
        h, wd = x.shape[2:]
        kh, kw = w.shape[2:]
        oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
        ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
        return oh, ow

    @staticmethod
    def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
        n, cin, h, wd = x.shape
        _, opg, kh, kw = w.shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        oh, ow = ReferenceKernels._transpose_geometry(x, w, stride, padding, output_padding, dilation)
        full = np.zeros((n, opg * groups, oh + 2 * ph, ow + 2 * pw))
        cpg = cin // groups
        for g in range(groups):
            ci, co = slice(g * cpg, (g + 1) * cpg), slice(g * opg, (g + 1) * opg)
            for i in range(kh):
                for j in range(kw):
                    full[:, co, i * dh:i * dh + sh * (h - 1) + 1:sh, j * dw:j * dw + sw * (wd - 1) + 1:sw] += \
                        np.einsum("nchw,co->nohw", x[:, ci], w[ci, :, i, j])
        y = full[:, :, ph:ph + oh, pw:pw + ow].copy()
        if b is not None:
            y += b[None, :, None, None]
        return y

    @staticmethod
    def conv_transpose2d_backward(gy, x, w, stride, padding, output_padding, dilation, groups,
                                  need_x, need_w, need_b):
        n, cin, h, wd = x.shape
        _, opg, kh, kw = w.shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        oh, ow = gy.shape[2:]
        full = np.zeros((n, opg * groups, oh + 2 * ph, ow + 2 * pw))
        full[:, :, ph:ph + oh, pw:pw + ow] = gy
        gx, gw = np.zeros_like(x), np.zeros_like(w)
        cpg = cin // groups
        for g in range(groups):
            ci, co = slice(g * cpg, (g + 1) * cpg), slice(g * opg, (g + 1) * opg)
            for i in range(kh):
                for j in range(kw):
                    win = full[:, co, i * dh:i * dh + sh * (h - 1) + 1:sh, j * dw:j * dw + sw * (wd - 1) + 1:sw]
                    gx[:, ci] += np.einsum("nohw,co->nchw", win, w[ci, :, i, j])
                    gw[ci, :, i, j] += np.einsum("nchw,nohw->co", x[:, ci], win)
        return (gx if need_x else None, gw if need_w else None,
                gy.sum(axis=(0, 2, 3)) if need_b else None)

    @staticmethod
    def _windows(x, kernel, stride, padding, dilation, ceil_mode, fill):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        oh, ow = _out_size(h, kh, sh, ph, dh, ceil_mode), _out_size(w, kw, sw, pw, dw, ceil_mode)
        extra_h = max(0, (oh - 1) * sh + dh * (kh - 1) + 1 - (h + 2 * ph))
        extra_w = max(0, (ow - 1) * sw + dw * (kw - 1) + 1 - (w + 2 * pw))
        widths = ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w))
        xp = np.pad(x, widths, constant_values=fill)
        index = np.pad(np.arange(h * w).reshape(h, w), widths[2:], constant_values=-1)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
                yield xp[:, :, rows, cols], index[rows, cols], (i, j, rows, cols)

    @staticmethod
    def max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode):
        best = arg = None
        for v, idx, _ in ReferenceKernels._windows(x, kernel, stride, padding, dilation, ceil_mode, -np.inf):
            if best is None:
                best, arg = v.copy(), np.broadcast_to(idx, v.shape).copy()
            else:
                better = v > best         # strictly: the first maximum keeps it
                best = np.where(better, v, best)
                arg = np.where(better, idx, arg)
        return best, arg.astype(np.int64)

    @staticmethod
    def max_pool2d_backward(gy, argmax, input_shape):
        n, c, h, w = input_shape
        gx = np.zeros((n * c, h * w))
        rows = np.repeat(np.arange(n * c), argmax[0, 0].size)
        np.add.at(gx, (rows, argmax.reshape(-1)), gy.reshape(-1))
        return gx.reshape(input_shape)

    @staticmethod
    def _divisor(input_shape, kernel, stride, padding, ceil_mode, count_include_pad):
        h, w = input_shape[2:]
        out = []
        for size, k, s, p in zip((h, w), kernel, stride, padding):
            o = _out_size(size, k, s, p, 1, ceil_mode)
            start = np.arange(o) * s - p
            end = np.minimum(start + k, size + p)
            full = end - start
            clipped = np.minimum(end, size) - np.maximum(start, 0)
            out.append(full if count_include_pad else clipped)
        return np.multiply.outer(out[0], out[1]).astype(float)

    @staticmethod
    def avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad):
        total = 0.0
        for v, _, _ in ReferenceKernels._windows(x, kernel, stride, padding, (1, 1), ceil_mode, 0.0):
            total = total + v
        return total / ReferenceKernels._divisor(x.shape, kernel, stride, padding, ceil_mode, count_include_pad)

    @staticmethod
    def avg_pool2d_backward(gy, input_shape, kernel, stride, padding, ceil_mode, count_include_pad):
        h, w = input_shape[2:]
        g = gy / ReferenceKernels._divisor(input_shape, kernel, stride, padding, ceil_mode, count_include_pad)
        flat = np.zeros(input_shape[:2] + (h * w + 1,))     # the last slot collects the padding
        for _, idx, _ in ReferenceKernels._windows(np.zeros(input_shape), kernel, stride, padding, (1, 1),
                                                   ceil_mode, 0.0):
            np.add.at(flat, (slice(None), slice(None), np.where(idx < 0, h * w, idx)), g)
        return flat[:, :, :h * w].reshape(input_shape)


def _compiled_kernels():
    try:
        from microgrid.kernels import _conv
    except ImportError:
        return None
    return _conv


@pytest.fixture(params=["reference", "compiled"])
def kernels(request, monkeypatch):
    if request.param == "reference":
        monkeypatch.setattr(_tensor_module, "_conv_module", ReferenceKernels)
    elif _compiled_kernels() is None:
        pytest.skip("microgrid.kernels._conv is not built on this branch yet")
    else:
        monkeypatch.setattr(_tensor_module, "_conv_module", _compiled_kernels())
    return request.param


CONV_CASES = [
    dict(),
    dict(stride=2),
    dict(padding=1),
    dict(padding=(2, 0), stride=(1, 2)),
    dict(dilation=2, padding=1),
    dict(groups=2),
    dict(padding="same"),
    dict(padding="same", dilation=(1, 2)),
    dict(padding="valid"),
]


@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_matches_torch(kernels, case, with_bias):
    groups = case.get("groups", 1)
    kh, kw = (2, 3) if case.get("padding") == "same" else (3, 3)
    arrays = [rand(2, 4, 7, 6), rand(6, 4 // groups, kh, kw)] + ([rand(6)] if with_bias else [])
    parity(lambda *a: F.conv2d(*a, **case) if with_bias else F.conv2d(*a, None, **case),
           lambda *a: tf().conv2d(*a, **case) if with_bias else tf().conv2d(*a, None, **case), arrays)


@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
def test_conv2d_gradcheck_and_unbatched_input(kernels):
    x, w, b = leaves(rand(1, 2, 5, 4), rand(3, 2, 2, 2), rand(3))
    assert mg.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1), [x, w, b])
    parity(lambda x, w: F.conv2d(x, w, padding="same"), lambda x, w: tf().conv2d(x, w, padding="same"),
           [rand(2, 5, 5), rand(3, 2, 2, 2)])


def test_conv2d_hand_example(kernels):
    image = np.array([[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0],
                      [1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0]], dtype=float)
    f1 = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    y = F.conv2d(mg.tensor(image[None, None]), mg.tensor(f1[None, None]))
    np.testing.assert_array_equal(y.data[0, 0], [[3, -1, -3, -1], [-3, 1, 0, -3], [-3, -3, 0, 1], [3, -2, -2, -1]])
    pooled = F.max_pool2d(y, 2)
    np.testing.assert_array_equal(pooled.data[0, 0], [[3, 0], [3, 1]])


CONV_T_CASES = [dict(), dict(stride=2), dict(stride=2, padding=1, output_padding=1),
                dict(dilation=2), dict(groups=2, stride=(2, 1))]


@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose2d_matches_torch(kernels, case):
    groups = case.get("groups", 1)
    arrays = [rand(2, 4, 4, 5), rand(4, 6 // groups, 3, 2), rand(6)]
    parity(lambda *a: F.conv_transpose2d(*a, **case), lambda *a: tf().conv_transpose2d(*a, **case), arrays)


def test_conv_transpose2d_hand_example(kernels):
    x = mg.tensor([[[[3.0, -1.0], [2.0, 0.0]]]])
    k = np.array([[2, -2, 1], [0, 5, 2], [1, 0, -3]], dtype=float)
    y = F.conv_transpose2d(x, mg.tensor(k[::-1, ::-1].copy()[None, None]))
    np.testing.assert_array_equal(y.data[0, 0], [[-9, 3, 3, -1], [0, 13, -3, 0], [7, 3, 8, -2], [2, -4, 4, 0]])


POOL_CASES = [dict(kernel_size=2), dict(kernel_size=3, stride=2), dict(kernel_size=3, stride=2, padding=1),
              dict(kernel_size=(2, 3), stride=(1, 2)), dict(kernel_size=3, stride=2, ceil_mode=True),
              dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)]


@pytest.mark.parametrize("case", POOL_CASES + [dict(kernel_size=2, dilation=2), dict(kernel_size=3, dilation=(1, 2))])
def test_max_pool2d_matches_torch(kernels, case):
    x = RNG.integers(-3, 4, (2, 3, 7, 8)).astype(float)     # ties: first maximum wins
    parity(lambda x: F.max_pool2d(x, **case), lambda x: tf().max_pool2d(x, **case), [x])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d_matches_torch(kernels, case, count_include_pad):
    parity(lambda x: F.avg_pool2d(x, count_include_pad=count_include_pad, **case),
           lambda x: tf().avg_pool2d(x, count_include_pad=count_include_pad, **case), [rand(2, 3, 7, 8)])


def test_pool_gradcheck(kernels):
    x, = leaves(rand(1, 2, 5, 5))
    assert mg.gradcheck(lambda x: F.avg_pool2d(x, 3, 2, 1), [x])
    assert mg.gradcheck(lambda x: F.max_pool2d(x, 2, 1), [x])


def test_conv_and_pool_errors_name_the_argument():
    x = mg.tensor(rand(2, 4, 6, 6))
    w = mg.tensor(rand(6, 4, 3, 3))
    cases = [
        (TypeError, "conv2d\\(input\\)", lambda: F.conv2d(np.ones((2, 4, 6, 6)), w)),
        (ValueError, "conv2d\\(input\\)", lambda: F.conv2d(mg.tensor(rand(4, 6)), w)),
        (ValueError, "conv2d\\(input\\)", lambda: F.conv2d(mg.tensor(np.ones((0, 4, 6, 6))), w)),
        (ValueError, "conv2d\\(weight\\)", lambda: F.conv2d(x, mg.tensor(rand(6, 4, 3)))),
        (ValueError, "conv2d\\(weight\\)", lambda: F.conv2d(x, mg.tensor(rand(6, 3, 3, 3)))),
        (ValueError, "conv2d\\(groups\\)", lambda: F.conv2d(x, mg.tensor(rand(6, 4, 3, 3)), groups=3)),
        (ValueError, "conv2d\\(groups\\)", lambda: F.conv2d(x, mg.tensor(rand(5, 2, 3, 3)), groups=2)),
        (TypeError, "conv2d\\(groups\\)", lambda: F.conv2d(x, w, groups=1.0)),
        (ValueError, "conv2d\\(stride\\)", lambda: F.conv2d(x, w, stride=0)),
        (TypeError, "conv2d\\(stride\\)", lambda: F.conv2d(x, w, stride=1.5)),
        (ValueError, "conv2d\\(padding\\)", lambda: F.conv2d(x, w, padding=-1)),
        (ValueError, "conv2d\\(padding\\)", lambda: F.conv2d(x, w, padding="full")),
        (ValueError, "conv2d\\(padding='same'\\)", lambda: F.conv2d(x, w, padding="same", stride=2)),
        (ValueError, "conv2d\\(dilation\\)", lambda: F.conv2d(x, w, dilation=(1, 0))),
        (ValueError, "conv2d\\(weight\\).*larger", lambda: F.conv2d(x, mg.tensor(rand(6, 4, 7, 3)))),
        (ValueError, "conv2d\\(bias\\)", lambda: F.conv2d(x, w, mg.tensor(rand(5)))),
        (TypeError, "conv2d\\(bias\\)", lambda: F.conv2d(x, w, np.ones(6))),
        (ValueError, "conv_transpose2d\\(weight\\)", lambda: F.conv_transpose2d(x, mg.tensor(rand(3, 2, 3, 3)))),
        (ValueError, "conv_transpose2d\\(output_padding\\)",
         lambda: F.conv_transpose2d(x, mg.tensor(rand(4, 2, 3, 3)), output_padding=1)),
        (ValueError, "conv_transpose2d\\(groups\\)",
         lambda: F.conv_transpose2d(x, mg.tensor(rand(4, 2, 3, 3)), groups=3)),
        (ValueError, "max_pool2d\\(kernel_size\\)", lambda: F.max_pool2d(x, 0)),
        (ValueError, "max_pool2d\\(kernel_size\\).*larger", lambda: F.max_pool2d(x, 7)),
        (ValueError, "max_pool2d\\(padding\\)", lambda: F.max_pool2d(x, 2, padding=2)),
        (ValueError, "max_pool2d\\(stride\\)", lambda: F.max_pool2d(x, 2, stride=-1)),
        (TypeError, "max_pool2d\\(ceil_mode\\)", lambda: F.max_pool2d(x, 2, ceil_mode="yes")),
        (ValueError, "avg_pool2d\\(padding\\)", lambda: F.avg_pool2d(x, 3, padding=2)),
        (TypeError, "avg_pool2d\\(count_include_pad\\)", lambda: F.avg_pool2d(x, 2, count_include_pad=None)),
    ]
    for error, pattern, call in cases:
        with pytest.raises(error, match=pattern):
            call()


def test_training_step_decreases_loss():
    # a 2-8-1 MLP on a separable toy problem: SGD on BCE-with-logits
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(float)[:, None]
    params = [mg.tensor(rng.standard_normal((8, 2)) * 0.5, requires_grad=True), mg.zeros(8, requires_grad=True),
              mg.tensor(rng.standard_normal((1, 8)) * 0.5, requires_grad=True), mg.zeros(1, requires_grad=True)]
    x = mg.tensor(X)
    losses = []
    for _ in range(50):
        h = F.relu(F.linear(x, params[0], params[1]))
        loss = F.binary_cross_entropy_with_logits(F.linear(h, params[2], params[3]), y)
        for p in params:
            p.zero_grad()
        loss.backward()
        for p in params:
            p.data -= 0.5 * p.grad
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


REPLAY_GRAPHS = {
    "elementwise": lambda a, b: (((a * b - a / (b.abs() + 1)) ** 2).sqrt() + a.sigmoid() * b.tanh()
                                 + a.softplus() - b.relu() + a.leaky_relu(0.2) + a.clamp(-0.5, 0.5)
                                 + a.sin() * b.cos() + (b.abs() + 1).log() + 2.0 ** a - a.exp()),
    "reductions": lambda a, b: mg.stack([a.sum(), b.mean(), a.max(), b.min(), a.sum(1).max(dim=0).values,
                                         b.mean(0).min(dim=0).values]),
    "shapes": lambda a, b: mg.cat([a.T.reshape(-1), b.flatten(), a[1:, ::2].flatten(), a[[0, 0, 1]].sum(0),
                                   mg.stack([a, b], dim=1).permute(2, 0, 1).flatten()]),
    "matmul_linear": lambda a, b: (a @ b.T).sum(0) + F.linear(a, b, b[:, 0]).sum(1) + a[0] @ b[1],
    "softmax_losses": lambda a, b: mg.stack([
        F.cross_entropy(a, [0, 1, 2, 0]), F.nll_loss(F.log_softmax(a, 1), [1, 1, 0, 2]),
        F.softmax(a, 0).max(), F.binary_cross_entropy(a.sigmoid(), b.sigmoid()),
        F.binary_cross_entropy_with_logits(a, b.sigmoid(), pos_weight=np.full(6, 2.0)),
        F.mse_loss(a, b), F.l1_loss(a, b), F.huber_loss(a, b, delta=0.5), F.hinge_loss(a, b.tanh())]),
    "conv_pool": lambda a, b: (F.max_pool2d(F.conv2d(a.reshape(1, 1, 4, 6), b.reshape(1, 1, 4, 6)[:, :, :2, :3],
                                                     padding="same"), 2)
                               + F.avg_pool2d(F.conv_transpose2d(a.reshape(1, 1, 4, 6),
                                                                 b.reshape(1, 1, 4, 6)[:, :, :2, :2]), 2)[..., :2, :3]),
}


@pytest.mark.parametrize("name", sorted(REPLAY_GRAPHS))
def test_forward_replay_recomputes_every_op_in_place(kernels, name):
    """What a graph replay does: new leaf data, then _forward over the
    recorded order; every buffer is reused and the values equal a rebuild."""
    f = REPLAY_GRAPHS[name]
    a, b = leaves(rand(4, 6), rand(4, 6))
    out = f(a, b)
    order = [node for node in mg.topological_order(out) if isinstance(node, mg.Tensor)]
    buffers = [node.data for node in order]
    a.data[...] = rand(4, 6)
    b.data[...] = rand(4, 6)
    for node in order:
        node._recompute()
    assert all(node.data is buf for node, buf in zip(order, buffers))
    np.testing.assert_allclose(out.data, f(a, b).data, rtol=1e-12, atol=1e-12)

"""The PyTorch surface a CNN user reaches for: pooling and padding arguments,
max_unpool2d, Dropout, BatchNorm, train/eval, cross_entropy's weights,
smoothing and probability targets; and every layer built with every
constructor argument it accepts, run forward and backward."""
import inspect

import numpy as np
import pytest

import microgrid as mg
from microgrid.core import optable
import microgrid.functional as F
from microgrid import nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _pair_of(shape, seed=0, grad=True):
    a = np.random.default_rng(seed).standard_normal(shape)
    return mg.tensor(a, requires_grad=grad), torch.tensor(a, requires_grad=grad)


def _close(ours, theirs, tol=1e-12):
    np.testing.assert_allclose(np.asarray(ours.data if hasattr(ours, "data") else ours),
                               theirs.detach().numpy(), rtol=tol, atol=tol)


def _backward_both(y, ty, seed=1):
    g = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))


# -- avg_pool2d: divisor_override and count_include_pad ----------------------------

@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, divisor_override=4),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, divisor_override=3),
    dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, divisor_override=-2),
])
def test_avg_pool2d_arguments_match_torch(kwargs):
    x, tx = _pair_of((2, 3, 7, 6))
    y, ty = F.avg_pool2d(x, **kwargs), TF.avg_pool2d(tx, **kwargs)
    _close(y, ty)
    _backward_both(y, ty)
    _close(x.grad, tx.grad)
    layer, tlayer = nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs)
    _close(layer(x), tlayer(tx))


def test_avg_pool2d_divisor_override_errors():
    x = mg.tensor(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"avg_pool2d\(divisor_override\)"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(TypeError, match=r"avg_pool2d\(divisor_override\)"):
        F.avg_pool2d(x, 2, divisor_override=2.5)
    with pytest.raises(ValueError, match="divisor_override"):
        nn.AvgPool2d(2, divisor_override=0)


def test_avg_pool2d_divisor_override_gradcheck():
    x = mg.tensor(np.random.default_rng(3).standard_normal((1, 2, 5, 5)), requires_grad=True)
    assert mg.gradcheck(lambda t: F.avg_pool2d(t, 3, 2, 1, divisor_override=5).sum(), [x])


# -- padding modes ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "constant"])
def test_pad_modes_match_torch(mode):
    x, tx = _pair_of((2, 3, 5, 4))
    pad = (1, 3, 2, 0)
    y, ty = F.pad(x, pad, mode=mode), TF.pad(tx, pad, mode=mode)
    _close(y, ty)
    _backward_both(y, ty)
    _close(x.grad, tx.grad)


def test_pad_mode_errors():
    x = mg.tensor(np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"pad\(mode\)"):
        F.pad(x, (1, 1), mode="mirror")
    with pytest.raises(ValueError, match=r"pad\(pad\): reflect padding of 3"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ValueError, match=r"pad\(value"):
        F.pad(x, (1, 1), mode="reflect", value=0.0)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same", "valid"])
def test_conv2d_padding_and_padding_mode_match_torch(padding, padding_mode):
    mg.manual_seed(0)
    layer = nn.Conv2d(2, 3, (3, 2), padding=padding, padding_mode=padding_mode, dilation=(1, 2))
    tlayer = torch.nn.Conv2d(2, 3, (3, 2), padding=padding, padding_mode=padding_mode,
                             dilation=(1, 2)).double()
    tlayer.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x, tx = _pair_of((2, 2, 6, 7))
    y, ty = layer(x), tlayer(tx)
    _close(y, ty)
    _backward_both(y, ty)
    _close(x.grad, tx.grad)
    _close(layer.weight.grad, tlayer.weight.grad)
    assert repr(layer).replace("(3, 2)", "") == repr(tlayer).replace("(3, 2)", "")


# -- max_pool2d indices and max_unpool2d ---------------------------------------------

@pytest.mark.parametrize("kwargs, size", [(dict(kernel_size=2), None),
                                          (dict(kernel_size=3, stride=3, padding=1), (6, 6))])
def test_max_unpool2d_matches_torch(kwargs, size):
    x, tx = _pair_of((2, 3, 6, 6))
    y, idx = F.max_pool2d(x, return_indices=True, **kwargs)
    ty, tidx = TF.max_pool2d(tx, return_indices=True, **kwargs)
    np.testing.assert_array_equal(idx, tidx.numpy())
    u = F.max_unpool2d(y, idx, output_size=size, **kwargs)
    tu = TF.max_unpool2d(ty, tidx, output_size=size, **kwargs)
    _close(u, tu)
    _backward_both(u, tu)
    _close(x.grad, tx.grad)
    pool = nn.MaxPool2d(return_indices=True, **kwargs)
    out, layer_idx = pool(x)
    np.testing.assert_array_equal(layer_idx, tidx.numpy())


def test_max_unpool2d_output_size_and_errors():
    x, tx = _pair_of((1, 1, 5, 5))
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    ty, tidx = TF.max_pool2d(tx, 2, return_indices=True)
    _close(F.max_unpool2d(y, idx, 2, output_size=(5, 5)), TF.max_unpool2d(ty, tidx, 2, output_size=(5, 5)))
    assert mg.gradcheck(lambda t: (F.max_unpool2d(t, idx, 2, output_size=(5, 5)) ** 2).sum(),
                        [mg.tensor(y.data, requires_grad=True)])
    with pytest.raises(ValueError, match=r"max_unpool2d\(indices\): index 99"):
        F.max_unpool2d(y, np.full(idx.shape, 99), 2)
    with pytest.raises(ValueError, match=r"max_unpool2d\(indices\): shape"):
        F.max_unpool2d(y, idx[..., :1], 2)
    with pytest.raises(TypeError, match=r"max_unpool2d\(indices\)"):
        F.max_unpool2d(y, idx + 0.5, 2)
    with pytest.raises(TypeError, match=r"max_pool2d\(return_indices\)"):
        F.max_pool2d(x, 2, return_indices="yes")


# -- Dropout ----------------------------------------------------------------------

def test_dropout_scales_kept_elements_and_follows_manual_seed():
    x = mg.tensor(np.random.default_rng(0).standard_normal((50, 40)), requires_grad=True)
    mg.manual_seed(5)
    y = F.dropout(x, 0.3)
    mg.manual_seed(5)
    again = F.dropout(x, 0.3)
    np.testing.assert_array_equal(y.data, again.data)
    kept = y.data != 0
    assert 0.6 < kept.mean() < 0.8
    # the same mask semantics as torch: kept elements are x / (1 - p), bit for bit
    mask = torch.tensor(kept.astype(np.float64))
    want = torch.tensor(x.data) * mask * (1.0 / (1 - 0.3))
    np.testing.assert_array_equal(y.data, want.numpy())
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, kept / 0.7)
    assert F.dropout(x, 0.3, training=False) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).data, np.zeros((50, 40)))


def test_dropout_module_follows_train_and_eval():
    layer = nn.Dropout(0.5)
    x = mg.tensor(np.ones((20, 20)))
    assert layer.training and (layer(x).data == 0).any()
    layer.eval()
    assert not layer.training and layer(x) is x
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout())
    assert model.eval() is model and not model[1].training
    assert model.train() is model and model[1].training
    with pytest.raises(ValueError, match="p"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match=r"dropout\(p\)"):
        F.dropout(x, -0.1)
    with pytest.raises(TypeError, match=r"dropout\(training\)"):
        F.dropout(x, 0.1, training="no")


# -- BatchNorm ---------------------------------------------------------------------

def _torch_bn(layer, cls):
    t = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
            track_running_stats=layer.track_running_stats).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    return t


@pytest.mark.parametrize("cls, shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)),
                                        ("BatchNorm2d", (4, 3, 5, 2))])
@pytest.mark.parametrize("kwargs", [{}, dict(momentum=0.3, eps=1e-3), dict(affine=False),
                                    dict(momentum=None), dict(track_running_stats=False)])
def test_batchnorm_matches_torch_in_train_and_eval(cls, shape, kwargs):
    layer = getattr(nn, cls)(3, **kwargs)
    if layer.affine:
        layer.weight.data[...] = [0.5, 2.0, -1.0]
        layer.bias.data[...] = [0.1, 0.0, 3.0]
    tlayer = _torch_bn(layer, getattr(torch.nn, cls))
    for step in range(3):
        x, tx = _pair_of(shape, seed=step)
        y, ty = layer(x), tlayer(tx)
        _close(y, ty)
        _backward_both(y, ty, seed=10 + step)
        _close(x.grad, tx.grad)
        if layer.affine:
            _close(layer.weight.grad, tlayer.weight.grad)
            _close(layer.bias.grad, tlayer.bias.grad)
            layer.zero_grad()
            tlayer.zero_grad()
    state, tstate = layer.state_dict(), tlayer.state_dict()
    assert list(state) == list(tstate)
    for k in state:
        np.testing.assert_allclose(state[k], tstate[k].numpy(), rtol=1e-12, atol=1e-14)
    layer.eval(), tlayer.eval()
    x, tx = _pair_of(shape, seed=9)
    _close(layer(x), tlayer(tx))


def test_batchnorm_gradcheck_and_errors():
    layer = nn.BatchNorm2d(2)
    x = mg.tensor(np.random.default_rng(0).standard_normal((3, 2, 2, 2)), requires_grad=True)
    assert mg.gradcheck(lambda t: (layer(t) * mg.tensor(np.arange(24.0).reshape(3, 2, 2, 2))).sum(), [x])
    with pytest.raises(ValueError, match="num_features"):
        layer(mg.tensor(np.ones((2, 3, 2, 2))))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(input\) must be 4-d"):
        layer(mg.tensor(np.ones((2, 2))))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(2)(mg.tensor(np.ones((1, 2))))
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm1d(0)
    with pytest.raises(ValueError, match="eps"):
        nn.BatchNorm1d(2, eps=-1)
    with pytest.raises(TypeError, match=r"batch_norm\(running_mean\)"):
        F.batch_norm(mg.tensor(np.ones((2, 2))), [0, 0], np.ones(2))
    with pytest.raises(ValueError, match=r"batch_norm\(running_mean\) is needed"):
        F.batch_norm(mg.tensor(np.ones((2, 2))), None, None)


# -- cross_entropy and nll_loss: weights, smoothing, probability targets -------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kwargs", [dict(weight=True), dict(label_smoothing=0.2),
                                    dict(weight=True, label_smoothing=0.1, ignore_index=1)])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2, 2), (4,)])
def test_cross_entropy_weights_and_smoothing_match_torch(shape, kwargs, reduction):
    x, tx = _pair_of(shape)
    rng = np.random.default_rng(2)
    target = rng.integers(0, 4, size=shape[:1] + shape[2:] if len(shape) > 1 else ())
    kw = dict(kwargs, reduction=reduction)
    tkw = dict(kw)
    if kw.get("weight"):
        w = np.array([0.5, 2.0, 1.0, 0.25])
        kw["weight"], tkw["weight"] = w, torch.tensor(w)
    y = F.cross_entropy(x, target, **kw)
    ty = TF.cross_entropy(tx, torch.tensor(target), **tkw)
    _close(y, ty)
    _backward_both(y, ty)
    _close(x.grad, tx.grad)


@pytest.mark.parametrize("kwargs", [{}, dict(label_smoothing=0.3), dict(weight=True), dict(reduction="none"),
                                    dict(reduction="sum", label_smoothing=0.1)])
def test_cross_entropy_probability_targets_match_torch(kwargs):
    x, tx = _pair_of((3, 4, 2))
    p = np.random.default_rng(1).random((3, 4, 2))
    p /= p.sum(axis=1, keepdims=True)
    target, ttarget = mg.tensor(p, requires_grad=True), torch.tensor(p, requires_grad=True)
    kw, tkw = dict(kwargs), dict(kwargs)
    if kw.get("weight"):
        w = np.array([0.5, 2.0, 1.0, 0.25])
        kw["weight"], tkw["weight"] = w, torch.tensor(w)
    y, ty = F.cross_entropy(x, target, **kw), TF.cross_entropy(tx, ttarget, **tkw)
    _close(y, ty)
    _backward_both(y, ty)
    _close(x.grad, tx.grad)
    _close(target.grad, ttarget.grad)
    _close(F.cross_entropy(x, p, **kw), ty)          # a float array works as well


def test_nll_loss_weight_matches_torch_and_errors():
    x, tx = _pair_of((5, 3))
    t = np.array([0, 2, 1, 2, 0])
    w = np.array([1.0, 3.0, 0.5])
    y = F.nll_loss(x, t, weight=w)
    ty = TF.nll_loss(tx, torch.tensor(t), weight=torch.tensor(w))
    _close(y, ty)
    _backward_both(y, ty)
    _close(x.grad, tx.grad)
    assert mg.gradcheck(lambda a: F.cross_entropy(a, t, weight=w, label_smoothing=0.2), [x])
    with pytest.raises(ValueError, match=r"cross_entropy\(weight\)"):
        F.cross_entropy(x, t, weight=np.ones(4))
    with pytest.raises(ValueError, match=r"cross_entropy\(label_smoothing\)"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"nll_loss\(target\): probability targets"):
        F.nll_loss(x, np.full((5, 3), 1 / 3))


# -- every layer, every constructor argument -----------------------------------------

# One constructor call per layer naming every argument it accepts, with a
# non-default value where one exists, and an input that fits.
EVERY_ARGUMENT = {
    "Linear": (dict(in_features=3, out_features=2, bias=False), (4, 3)),
    "Conv2d": (dict(in_channels=2, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2),
                    dilation=(1, 2), groups=2, bias=False, padding_mode="reflect"), (2, 2, 7, 7)),
    "ConvTranspose2d": (dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1,
                             output_padding=1, groups=2, bias=False, dilation=1, padding_mode="zeros"),
                        (2, 2, 4, 4)),
    "MaxPool2d": (dict(kernel_size=3, stride=2, padding=1, dilation=1, return_indices=True, ceil_mode=True),
                  (2, 2, 6, 6)),
    "AvgPool2d": (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
                       divisor_override=2), (2, 2, 6, 6)),
    "Dropout": (dict(p=0.25, inplace=True), (4, 5)),
    "BatchNorm1d": (dict(num_features=3, eps=1e-3, momentum=0.2, affine=False, track_running_stats=True,
                         bias=True), (4, 3)),
    "BatchNorm2d": (dict(num_features=2, eps=1e-3, momentum=None, affine=True, track_running_stats=False,
                         bias=False), (3, 2, 2, 2)),
    "Flatten": (dict(start_dim=1, end_dim=2), (2, 3, 4, 5)),
}
TORCH_ONLY_NAMES = {"device", "dtype"}


def _table_layers():
    """The activation layers made from the op table's rows: every keyword set
    to a non-default value (the constant, the variant, inplace)."""
    layers = {}
    for rows in optable.method_groups().values():
        row = rows[0]
        if not row.torch_module:
            continue
        kwargs = {}
        for keyword, default, kind in optable.method_parameters(rows, mg.Tensor):
            kwargs[keyword] = rows[-1].variant[1] if kind == "variant" else default + 0.5
        if row.module_inplace:
            kwargs["inplace"] = True
        layers[row.torch_module] = (kwargs, (3, 4))
    return layers


EVERY_ARGUMENT.update(_table_layers())


def _tensor_layers():
    return [n for n in nn.__all__ if isinstance(getattr(nn, n), type)
            and issubclass(getattr(nn, n), nn.Module)
            and n not in ("Module", "Neuron", "Layer", "MLP", "Sequential")
            and n not in nn._LOSSES]     # two inputs: tests/test_torch_surface.py


def test_every_layer_is_listed():
    assert sorted(EVERY_ARGUMENT) == sorted(_tensor_layers())


@pytest.mark.parametrize("name", sorted(EVERY_ARGUMENT))
def test_every_layer_runs_with_every_constructor_argument(name):
    kwargs, shape = EVERY_ARGUMENT[name]
    cls = getattr(nn, name)
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self",)]
    assert sorted(kwargs) == sorted(accepted), f"{name}: test every argument {accepted}"
    # PyTorch's layer takes the same arguments (less its device/dtype)
    tcls = getattr(torch.nn, name)
    tnames = {n for n, p in inspect.signature(tcls).parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - TORCH_ONLY_NAMES
    assert set(accepted) == tnames, name
    mg.manual_seed(0)
    layer = cls(**kwargs)
    x = mg.tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    out = layer(x)
    y = out[0] if isinstance(out, tuple) else out
    y.backward(np.random.default_rng(1).standard_normal(y.shape))    # not ones: BatchNorm's sum is constant
    assert np.isfinite(x.grad).all() and x.grad.any()
    # and the torch layer with the same arguments gives the same output
    if name == "Dropout":
        return
    tlayer = tcls(**kwargs).double()
    tlayer.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()}, strict=True)
    if name == "BatchNorm1d":           # trained one step already: compare from the same state
        layer.eval(), tlayer.eval()
        y = layer(x)
    tout = tlayer(torch.tensor(x.data))
    _close(y, tout[0] if isinstance(tout, tuple) else tout)

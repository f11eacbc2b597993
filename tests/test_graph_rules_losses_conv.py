"""Graph rules (differentiable backward) of the loss and convolution families.

Each case builds one node from leaves and calls its graph rule directly,
``node._graph_vjp(g)``, with a gradient ``g`` that is itself a leaf.  Three
checks per case:

1. the rule's numbers equal the fast first-order backward's gradients;
2. the second derivatives of s = <vjp, v> with respect to the node's inputs
   and g, taken by the ordinary first-order ``backward()`` of the rule's
   output graph, equal central differences of s computed with the
   first-order backward alone;
3. with torch installed, the same second derivatives (and the vjp) equal
   torch.autograd.grad(create_graph=True)'s, float64, to 1e-10.

The internal nodes of the conv family (a convolution's weight gradient, a
pool's input gradient) are cases too: their rules give third derivatives.
"""

import warnings

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F


class Case:
    """One node: ``build(*leaves)`` makes it from leaves given in the order of
    its ``_parents()``; ``torch_build(*tensors)`` is torch's same function."""

    def __init__(self, name, op, build, torch_build, arrays, needs=None, torch_skip=None):
        self.name = name
        self.op = op
        self.build = build
        self.torch_build = torch_build
        self.arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
        self.needs = list(needs) if needs is not None else [True] * len(arrays)
        self.torch_skip = torch_skip     # why torch cannot give this case's derivatives

    def __repr__(self):
        return self.name


def _leaves(case, arrays):
    return [mg.tensor(a, requires_grad=n) for a, n in zip(arrays, case.needs)]


def _node(case, leaves):
    node = case.build(*leaves)
    assert node._op == case.op
    assert [id(p) for p in node._parents()] == [id(x) for x in leaves]
    return node


def _first_order(case, arrays, g):
    """The parents' gradients from the first-order backward."""
    leaves = _leaves(case, arrays)
    node = _node(case, leaves)
    node.backward(g)
    return [x.grad.copy() if n else None for x, n in zip(leaves, case.needs)]


def _s_value(case, arrays, g, vs):
    return sum(float(np.sum(r * v)) for r, v in zip(_first_order(case, arrays, g), vs)
               if r is not None)


def _second_order(case, arrays, g, vs):
    """The vjp's values and the gradients of s = <vjp, v> with respect to the
    needed inputs and g, through the graph rule's output graph."""
    leaves = _leaves(case, arrays)
    gl = mg.tensor(g, requires_grad=True)
    node = _node(case, leaves)
    vjp = node._graph_vjp(gl)
    assert len(vjp) == len(leaves)
    for r, n in zip(vjp, case.needs):
        assert (r is None) == (not n)
    s = None
    for r, v in zip(vjp, vs):
        if r is not None:
            term = (r * mg.tensor(v)).sum()
            s = term if s is None else s + term
    s.backward()
    values = [None if r is None else r.data.copy() for r in vjp]
    seconds = [x.grad.copy() for x, n in zip(leaves, case.needs) if n] + [gl.grad.copy()]
    return values, seconds, s.item()


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    out_shape = _node(case, _leaves(case, case.arrays)).shape
    g = rng.standard_normal(out_shape)
    vs = [rng.standard_normal(a.shape) if n else None for a, n in zip(case.arrays, case.needs)]
    return g, vs


def _close(actual, expected, tol):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


# ---------------------------------------------------------------------------
# The cases

def _rng(seed):
    return np.random.default_rng(seed)


def _torch():
    import torch
    import torch.nn.functional as tF
    return torch, tF


def _tt(a):
    torch, _ = _torch()
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _targets(shape, n_classes, ignore, seed):
    t = _rng(seed).integers(0, n_classes, size=shape)
    if t.ndim:
        t.flat[0] = ignore
    return t


def _class_cases():
    cases = []
    for name in ("cross_entropy", "nll_loss"):
        for label, shape, t_shape, ignore, reduction in (
                ("mean", (4, 5), (4,), -100, "mean"),
                ("sum-ignore2", (4, 5), (4,), 2, "sum"),
                ("none", (4, 5), (4,), -100, "none"),
                ("unbatched", (5,), (), -100, "mean"),
                ("kdim-none", (3, 4, 2), (3, 2), 1, "none"),
                ("kdim-mean", (3, 4, 2), (3, 2), 0, "mean")):
            n_classes = shape[0] if len(shape) == 1 else shape[1]
            t = _targets(t_shape, n_classes, ignore, 7)
            if name == "cross_entropy":
                build = (lambda t, i, r: lambda x: F.cross_entropy(x, t, ignore_index=i, reduction=r))(
                    t, ignore, reduction)
                tbuild = (lambda t, i, r: lambda x: _torch()[1].cross_entropy(
                    x, _torch()[0].tensor(t), ignore_index=i, reduction=r))(t, ignore, reduction)
            else:
                build = (lambda t, i, r: lambda x: F.nll_loss(x, t, ignore_index=i, reduction=r))(
                    t, ignore, reduction)
                tbuild = (lambda t, i, r: lambda x: _torch()[1].nll_loss(
                    x, _torch()[0].tensor(t), ignore_index=i, reduction=r))(t, ignore, reduction)
            cases.append(Case(f"{name}-{label}", name, build, tbuild,
                              [_rng(3).standard_normal(shape)]))
    return cases


def _bce_cases():
    cases = []
    rng = _rng(11)
    p = rng.uniform(0.05, 0.95, (3, 4))
    y = rng.uniform(0.0, 1.0, (3, 4))
    w = rng.uniform(0.5, 2.0, (3, 4))
    pw = rng.uniform(0.5, 3.0, (3, 4))
    logits = 2.0 * rng.standard_normal((3, 4))
    for reduction in ("mean", "sum", "none"):
        for weight in (None, w):
            tag = f"{reduction}{'-weight' if weight is not None else ''}"
            cases.append(Case(
                f"bce-{tag}", "binary_cross_entropy",
                (lambda r, wt: lambda x, t: F.binary_cross_entropy(x, t, weight=wt, reduction=r))(
                    reduction, weight),
                (lambda r, wt: lambda x, t: _torch()[1].binary_cross_entropy(
                    x, t, weight=None if wt is None else _tt(wt), reduction=r))(reduction, weight),
                [p, y]))
            for pos in (None, pw):
                tag2 = tag + ("-pos_weight" if pos is not None else "")
                cases.append(Case(
                    f"bce_logits-{tag2}", "binary_cross_entropy_with_logits",
                    (lambda r, wt, pos: lambda x, t: F.binary_cross_entropy_with_logits(
                        x, t, weight=wt, reduction=r, pos_weight=pos))(reduction, weight, pos),
                    (lambda r, wt, pos: lambda x, t: _torch()[1].binary_cross_entropy_with_logits(
                        x, t, weight=None if wt is None else _tt(wt), reduction=r,
                        pos_weight=None if pos is None else _tt(pos)))(reduction, weight, pos),
                    [logits, y]))
    cases.append(Case("bce-target-constant", "binary_cross_entropy",
                      lambda x, t: F.binary_cross_entropy(x, t),
                      lambda x, t: _torch()[1].binary_cross_entropy(x, t), [p, y], needs=[True, False]))
    cases.append(Case("bce_logits-input-constant", "binary_cross_entropy_with_logits",
                      lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=pw),
                      lambda x, t: _torch()[1].binary_cross_entropy_with_logits(x, t, pos_weight=_tt(pw)),
                      [logits, y], needs=[False, True]))
    return cases


def _torch_hinge(x, y, reduction):
    torch, _ = _torch()
    losses = torch.relu(1.0 - x * y)
    return losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()


def _pointwise_cases():
    cases = []
    rng = _rng(5)
    shapes = (("same", (3, 4), (3, 4)), ("broadcast-target", (3, 4), (4,)),
              ("broadcast-both", (3, 1), (1, 4)))
    for name in ("mse_loss", "l1_loss", "huber_loss", "hinge_loss"):
        for reduction in ("mean", "sum", "none"):
            for label, sx, sy in shapes:
                x = 1.5 * rng.standard_normal(sx)
                y = 1.5 * rng.standard_normal(sy)
                kw = {}
                if name == "huber_loss":
                    kw = {"delta": 0.7}
                fn = getattr(F, name)
                build = (lambda fn, r, kw: lambda a, b: fn(a, b, reduction=r, **kw))(fn, reduction, kw)
                if name == "hinge_loss":
                    tbuild = (lambda r: lambda a, b: _torch_hinge(a, b, r))(reduction)
                else:
                    tbuild = (lambda n, r, kw: lambda a, b: getattr(_torch()[1], n)(
                        a, b, reduction=r, **kw))(name, reduction, kw)
                cases.append(Case(f"{name}-{reduction}-{label}", name, build, tbuild, [x, y]))
    x = rng.standard_normal((3, 4))
    cases.append(Case("huber_loss-delta1-target-constant", "huber_loss",
                      lambda a, b: F.huber_loss(a, b, delta=1.0),
                      lambda a, b: _torch()[1].huber_loss(a, b, delta=1.0),
                      [x, rng.standard_normal((3, 4))], needs=[True, False]))
    cases.append(Case("mse_loss-input-constant", "mse_loss", F.mse_loss,
                      lambda a, b: _torch()[1].mse_loss(a, b),
                      [x, rng.standard_normal((3, 4))], needs=[False, True]))
    return cases


# (x shape, w shape, keyword arguments)
CONV2D_GEOMETRIES = [
    ("plain", (2, 3, 5, 5), (4, 3, 3, 3), {}),
    ("stride2-pad1", (2, 3, 6, 6), (4, 3, 3, 3), {"stride": 2, "padding": 1}),
    ("dilation-groups", (2, 6, 7, 6), (9, 2, 3, 2),
     {"stride": (2, 1), "padding": (2, 1), "dilation": 2, "groups": 3}),
    ("pointwise", (2, 4, 3, 3), (2, 4, 1, 1), {}),
    ("stride3-rect", (1, 2, 8, 7), (4, 1, 2, 3), {"stride": 3, "padding": (1, 0), "groups": 2}),
]

CONVT_GEOMETRIES = [
    ("plain", (2, 3, 4, 4), (3, 2, 3, 3), {}),
    ("stride2-outpad", (2, 3, 3, 4), (3, 2, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ("groups-dilation", (2, 4, 3, 3), (4, 3, 2, 3),
     {"stride": (2, 1), "padding": (1, 2), "dilation": 2, "groups": 2}),
    # output_padding at least the stride (below the dilation): the input
    # gradient is conv2d cut to the input's size
    ("outpad-over-stride", (1, 2, 3, 3), (2, 2, 2, 2), {"dilation": 2, "output_padding": 1}),
]


def _conv_cases():
    cases = []
    rng = _rng(21)
    for label, xs, ws, kw in CONV2D_GEOMETRIES:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        b = rng.standard_normal(ws[0])
        cases.append(Case(f"conv2d-{label}-bias", "conv2d",
                          (lambda kw: lambda x, w, b: F.conv2d(x, w, b, **kw))(kw),
                          (lambda kw: lambda x, w, b: _torch()[1].conv2d(x, w, b, **kw))(kw),
                          [x, w, b]))
        cases.append(Case(f"conv2d-{label}", "conv2d",
                          (lambda kw: lambda x, w: F.conv2d(x, w, **kw))(kw),
                          (lambda kw: lambda x, w: _torch()[1].conv2d(x, w, **kw))(kw), [x, w]))
    for label, xs, ws, kw in CONVT_GEOMETRIES:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        b = rng.standard_normal(ws[1] * kw.get("groups", 1))
        cases.append(Case(f"conv_transpose2d-{label}-bias", "conv_transpose2d",
                          (lambda kw: lambda x, w, b: F.conv_transpose2d(x, w, b, **kw))(kw),
                          (lambda kw: lambda x, w, b: _torch()[1].conv_transpose2d(x, w, b, **kw))(kw),
                          [x, w, b]))
        cases.append(Case(f"conv_transpose2d-{label}", "conv_transpose2d",
                          (lambda kw: lambda x, w: F.conv_transpose2d(x, w, **kw))(kw),
                          (lambda kw: lambda x, w: _torch()[1].conv_transpose2d(x, w, **kw))(kw),
                          [x, w]))
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    cases.append(Case("conv2d-weight-only", "conv2d", lambda x, w: F.conv2d(x, w, padding=1),
                      lambda x, w: _torch()[1].conv2d(x, w, padding=1), [x, w], needs=[False, True]))
    cases.append(Case("conv2d-input-only", "conv2d", lambda x, w: F.conv2d(x, w, stride=2),
                      lambda x, w: _torch()[1].conv2d(x, w, stride=2), [x, w], needs=[True, False]))
    return cases


def _weight_grad_cases():
    """The weight-gradient nodes as functions of (x, g): built by the
    convolution's graph rule with a weight leaf the rule does not read."""
    cases = []
    rng = _rng(31)
    for conv, mg_fn, geometries in (("conv2d", F.conv2d, CONV2D_GEOMETRIES),
                                    ("conv_transpose2d", F.conv_transpose2d, CONVT_GEOMETRIES)):
        for label, xs, ws, kw in geometries:
            x, w = rng.standard_normal(xs), rng.standard_normal(ws)
            g0 = rng.standard_normal(mg_fn(mg.tensor(x), mg.tensor(w), **kw).shape)
            wl = mg.tensor(w, requires_grad=True)

            def build(x, g, mg_fn=mg_fn, wl=wl, kw=kw):
                return mg_fn(x, wl, **kw)._graph_vjp(g)[1]

            def tbuild(x, g, conv=conv, w=w, kw=kw):
                torch, tF = _torch()
                wt = _tt(w).requires_grad_(True)
                return torch.autograd.grad(getattr(tF, conv)(x, wt, **kw), wt, g, create_graph=True)[0]

            skip = None
            if conv == "conv_transpose2d" and "output_padding" in kw:
                # torch 2.x's own third-order pass raises here ("output_padding is
                # not supported for non-transposed convolutions"); finite
                # differences check these cases
                skip = "torch cannot differentiate this weight gradient"
            cases.append(Case(f"{conv}_weight_grad-{label}", f"{conv}_weight_grad", build, tbuild,
                              [x, g0], torch_skip=skip))
    return cases


POOL_GEOMETRIES = {
    "max_pool2d": [
        ("k2", (2, 3, 6, 6), {"kernel_size": 2}),
        ("k3-s2-p1", (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
        ("overlap", (1, 2, 5, 5), {"kernel_size": 3, "stride": 1}),
        ("dilation-ceil", (2, 2, 8, 7), {"kernel_size": (2, 3), "stride": 2, "padding": 1,
                                         "dilation": 2, "ceil_mode": True}),
    ],
    "avg_pool2d": [
        ("k2", (2, 3, 6, 6), {"kernel_size": 2}),
        ("k3-s2-p1", (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
        ("no-pad-count", (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1,
                                        "count_include_pad": False}),
        ("ceil", (1, 2, 7, 8), {"kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 1),
                                "ceil_mode": True}),
        ("ceil-no-pad-count", (1, 2, 7, 8), {"kernel_size": 3, "stride": 2, "padding": 1,
                                             "ceil_mode": True, "count_include_pad": False}),
        ("overlap", (1, 2, 5, 5), {"kernel_size": 3, "stride": 1}),
    ],
}


def _pool_cases():
    cases = []
    rng = _rng(41)
    for pool, geometries in POOL_GEOMETRIES.items():
        for label, xs, kw in geometries:
            x = rng.standard_normal(xs)
            fn = getattr(F, pool)
            cases.append(Case(f"{pool}-{label}", pool,
                              (lambda fn, kw: lambda x: fn(x, **kw))(fn, kw),
                              (lambda p, kw: lambda x: getattr(_torch()[1], p)(x, **kw))(pool, kw), [x]))
            # the input-gradient node as a function of g
            g0 = rng.standard_normal(fn(mg.tensor(x), **kw).shape)
            xl = mg.tensor(x, requires_grad=True)

            def build(g, fn=fn, xl=xl, kw=kw):
                return fn(xl, **kw)._graph_vjp(g)[0]

            def tbuild(g, pool=pool, x=x, kw=kw):
                torch, tF = _torch()
                xt = _tt(x).requires_grad_(True)
                return torch.autograd.grad(getattr(tF, pool)(xt, **kw), xt, g, create_graph=True)[0]

            cases.append(Case(f"{pool}_backward-{label}", f"{pool}_backward", build, tbuild, [g0]))
    return cases


CASES = _class_cases() + _bce_cases() + _pointwise_cases() + _conv_cases() \
    + _weight_grad_cases() + _pool_cases()
IDS = [c.name for c in CASES]


# ---------------------------------------------------------------------------
# The checks

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_graph_rule_equals_first_order_backward(case):
    g, vs = _inputs(case, 1)
    values, _, _ = _second_order(case, case.arrays, g, vs)
    for value, expected in zip(values, _first_order(case, case.arrays, g)):
        if expected is not None:
            _close(value, expected, 1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_second_derivatives_match_finite_differences(case):
    g, vs = _inputs(case, 2)
    _, seconds, s = _second_order(case, case.arrays, g, vs)
    assert s == pytest.approx(_s_value(case, case.arrays, g, vs), rel=1e-12, abs=1e-12)
    eps = 1e-6
    points = [a for a, n in zip(case.arrays, case.needs) if n] + [g]
    for k, (point, second) in enumerate(zip(points, seconds)):
        fd = np.zeros(point.shape)
        for i in range(point.size):
            moved = []
            for sign in (1.0, -1.0):
                p = point.copy()
                p.flat[i] += sign * eps
                arrays = list(case.arrays)
                if k < len(points) - 1:
                    arrays[[j for j, n in enumerate(case.needs) if n][k]] = p
                    moved.append(_s_value(case, arrays, g, vs))
                else:
                    moved.append(_s_value(case, arrays, p, vs))
            fd.flat[i] = (moved[0] - moved[1]) / (2 * eps)
        np.testing.assert_allclose(second, fd, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(fd).max()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_second_derivatives_match_torch(case):
    torch = pytest.importorskip("torch")
    if case.torch_skip:
        pytest.skip(case.torch_skip)
    g, vs = _inputs(case, 3)
    values, seconds, _ = _second_order(case, case.arrays, g, vs)
    tensors = [_tt(a).requires_grad_(n) for a, n in zip(case.arrays, case.needs)]
    needed = [t for t, n in zip(tensors, case.needs) if n]
    gt = _tt(g).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # torch's note on mse/l1 broadcasting
        out = case.torch_build(*tensors)
    assert tuple(out.shape) == g.shape
    vjp = torch.autograd.grad(out, needed, gt, create_graph=True)
    for value, expected in zip([v for v in values if v is not None], vjp):
        _close(value, expected.detach().numpy(), 1e-10)
    s = sum((r * _tt(v)).sum() for r, v in zip(vjp, [v for v in vs if v is not None]))
    expected = torch.autograd.grad(s, needed + [gt], allow_unused=True)
    for second, e, point in zip(seconds, expected, needed + [gt]):
        # torch answers a derivative it knows is zero with None or a ZeroTensor
        zero = e is None or e._is_zerotensor()
        _close(second, np.zeros(tuple(point.shape)) if zero else e.detach().numpy(), 1e-10)


# ---------------------------------------------------------------------------
# Hand-computed values and details

def test_mse_hand_values():
    # mean of (x - y)^2 over 2 elements: d/dx = (x - y) g, d2/dx2 = g, d2/dxdg = (x - y)
    x = mg.tensor([1.0, 3.0], requires_grad=True)
    y = mg.tensor([0.5, 1.0], requires_grad=True)
    g = mg.tensor(2.0, requires_grad=True)
    gx, gy = F.mse_loss(x, y)._graph_vjp(g)
    np.testing.assert_array_equal(gx.data, [1.0, 4.0])
    np.testing.assert_array_equal(gy.data, [-1.0, -4.0])
    (gx * mg.tensor([1.0, 10.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 20.0])
    np.testing.assert_array_equal(y.grad, [-2.0, -20.0])
    assert g.grad == pytest.approx(0.5 + 20.0)


def test_cross_entropy_hand_values():
    # two classes, target 0: d/dx0 = (p0 - 1) g, d/dx1 = p1 g; d2/dx0^2 = p0 p1 g
    x = mg.tensor([[0.0, np.log(3.0)]], requires_grad=True)
    g = mg.tensor(1.0)
    (gx,) = F.cross_entropy(x, [0])._graph_vjp(g)
    np.testing.assert_allclose(gx.data, [[-0.75, 0.75]], rtol=1e-15)
    gx[0, 0].backward()
    np.testing.assert_allclose(x.grad, [[0.1875, -0.1875]], rtol=1e-14)


def test_conv2d_hand_values():
    # 1x1 image, 1x1 kernel: y = w x + b; d2/dxdw of <gx, v> = g v
    x = mg.tensor([[[[2.0]]]], requires_grad=True)
    w = mg.tensor([[[[3.0]]]], requires_grad=True)
    b = mg.tensor([0.5], requires_grad=True)
    g = mg.tensor([[[[4.0]]]], requires_grad=True)
    gx, gw, gb = F.conv2d(x, w, b)._graph_vjp(g)
    assert (gx.item(), gw.item(), gb.item()) == (12.0, 8.0, 4.0)
    (gx * 5.0).sum().backward()
    assert (x.grad.item(), w.grad.item(), g.grad.item()) == (0.0, 20.0, 15.0)


def test_max_pool_gradient_of_a_window_over_padding_alone():
    # one row, padding 1, dilation 2: the window rows -1 and 1 are both padding,
    # its output is -inf and its gradient goes nowhere, also the gather's
    x = mg.tensor(np.arange(6.0).reshape(1, 1, 1, 6), requires_grad=True)
    y = F.max_pool2d(x, 2, stride=2, padding=1, dilation=2)
    assert np.all(np.isneginf(y.data))
    g = mg.tensor(np.ones(y.shape), requires_grad=True)
    (gx,) = y._graph_vjp(g)
    np.testing.assert_array_equal(gx.data, np.zeros(x.shape))
    (gx * mg.tensor(np.ones(x.shape))).sum().backward()
    np.testing.assert_array_equal(g.grad, np.zeros(y.shape))


def test_value_and_array_gradients_are_accepted():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = mg.tensor([0.0, 0.0])
    node = F.mse_loss(x, y, reduction="sum")
    v = mg.Value(3.0)
    gx, gy = node._graph_vjp(v)
    assert gy is None
    np.testing.assert_array_equal(gx.data, [6.0, 12.0])
    gx.sum().backward()
    assert v.grad == pytest.approx(6.0)
    (gx2, _) = node._graph_vjp(np.array(3.0))
    np.testing.assert_array_equal(gx2.data, [6.0, 12.0])


def test_internal_nodes_replay_with_new_data():
    # a recomputed max pool picks new maxima; its gradient node reads them
    x = mg.tensor([[[[1.0, 2.0], [3.0, 0.0]]]], requires_grad=True)
    y = F.max_pool2d(x, 2)
    (gx,) = y._graph_vjp(mg.tensor([[[[1.0]]]]))
    np.testing.assert_array_equal(gx.data, [[[[0.0, 0.0], [1.0, 0.0]]]])
    x.data[...] = [[[[5.0, 2.0], [3.0, 0.0]]]]
    y._recompute()
    gx._recompute()
    np.testing.assert_array_equal(gx.data, [[[[1.0, 0.0], [0.0, 0.0]]]])

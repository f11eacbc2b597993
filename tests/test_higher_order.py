"""Gradients of gradients (microgrid.autograd): mg.grad's semantics and
errors, second and third derivatives of every op-table row, of the fused
n-ary Value nodes and of the Tensor families (elementwise, clamp, reduce,
shape, products, softmax) against PyTorch float64 and central differences,
random graphs mixing Values and Tensors, backward(create_graph=True),
microgrid.autograd.functional against torch.autograd.functional, and
mg.gradgradcheck."""
import math

import numpy as np
import pytest

import microgrid as mg
from microgrid import Tensor, Value
from microgrid.autograd import functional as AF
from microgrid.core import optable


def _torch():
    return pytest.importorskip("torch")


def _data(x):
    return np.asarray(x.data, dtype=np.float64)


def _close(got, want, tol=1e-10):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# mg.grad: first order, semantics and errors

def test_grad_first_order_matches_backward_and_leaves_grad_alone():
    a, b = Value(1.5), Value(-0.7)
    h = a * b + a.tanh()
    y = h * h + b.exp()
    a.grad, b.grad = 10.0, 20.0
    h_before = h.grad
    ga, gb = mg.grad(y, [a, b])
    assert isinstance(ga, Value) and not ga.requires_grad
    assert (a.grad, b.grad, h.grad) == (10.0, 20.0, h_before)
    a2, b2 = Value(1.5), Value(-0.7)
    h2 = a2 * b2 + a2.tanh()
    (h2 * h2 + b2.exp()).backward()
    assert ga.data == a2.grad and gb.data == b2.grad     # the same compiled pass
    # a non-leaf input
    (gh,) = mg.grad(y, [h])
    assert gh.data == pytest.approx(2 * h.data)


def test_grad_tensor_first_order_and_grad_untouched():
    x = mg.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    w = mg.tensor([0.3, -0.4], requires_grad=True)
    x.grad = np.full((2, 2), 7.0)
    held = x.grad
    y = ((x * w).sigmoid() @ w).sum()
    gx, gw = mg.grad(y, (x, w))
    assert x.grad is held and np.all(held == 7.0) and np.all(w.grad == 0)
    x2 = mg.tensor(x.data, requires_grad=True)
    w2 = mg.tensor(w.data, requires_grad=True)
    ((x2 * w2).sigmoid() @ w2).sum().backward()
    _close(gx.data, x2.grad, 0)
    _close(gw.data, w2.grad, 0)


def test_grad_several_outputs_and_grad_outputs():
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = Value(0.5)
    y1 = x * x
    y2 = (x * v).sum()
    for create in (False, True):
        gx, gv = mg.grad([y1, y2], [x, v], grad_outputs=[np.array([1.0, -1.0, 2.0]), None],
                         create_graph=create)
        _close(gx.data, 2 * x.data * np.array([1.0, -1.0, 2.0]) + 0.5)
        _close(gv.data, x.data.sum())


def test_grad_errors():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    c = mg.tensor([1.0, 2.0])
    u = Value(3.0)
    y = x * x
    with pytest.raises(RuntimeError, match="implicitly created only for one-element outputs"):
        mg.grad(y, x)
    with pytest.raises(RuntimeError, match=r"inputs\[1\] does not require grad"):
        mg.grad(y.sum(), [x, c])
    with pytest.raises(RuntimeError, match=r"inputs\[1\] is not used.*allow_unused=True"):
        mg.grad(y.sum(), [x, u])
    assert mg.grad(y.sum(), [x, u], allow_unused=True)[1] is None
    assert mg.grad(y.sum(), [x, u], allow_unused=True, create_graph=True)[1] is None
    with pytest.raises(RuntimeError, match=r"outputs\[0\] does not require grad"):
        mg.grad(c * 2, [x])
    with pytest.raises(ValueError, match=r"grad_outputs\[0\].*shape"):
        mg.grad(y, x, grad_outputs=np.ones(3))
    with pytest.raises(TypeError, match=r"grad\(inputs=...\)"):
        mg.grad(y.sum(), 3.0)
    with pytest.raises(TypeError, match=r"grad\(outputs=...\)"):
        mg.grad("y", x)
    with pytest.raises(ValueError, match=r"2 gradients for 1 outputs"):
        mg.grad([y.sum()], x, grad_outputs=[1.0, 2.0])
    with pytest.raises(TypeError, match=r"grad_outputs\[0\]"):
        mg.grad(u * u, u, grad_outputs="a")


def test_backward_create_graph_fills_grad_with_numbers():
    a = Value(0.8)
    y = (a * a).sin() * a
    y.backward(create_graph=True)
    assert isinstance(a.grad, float)
    expected = math.cos(0.64) * 2 * 0.64 + math.sin(0.64)
    assert a.grad == pytest.approx(expected, rel=1e-14)
    y.backward(create_graph=True)                # leaves accumulate as backward() does
    assert a.grad == pytest.approx(2 * expected, rel=1e-14)
    t = mg.tensor([0.5, -1.0], requires_grad=True)
    z = (t.exp() * t).sum()
    z.backward(create_graph=True)
    assert isinstance(t.grad, np.ndarray)
    _close(t.grad, np.exp(t.data) * (1 + t.data))


def test_second_derivative_by_hand():
    x = Value(2.0)
    y = x ** 3 + x.log()
    (g,) = mg.grad(y, x, create_graph=True)
    (h,) = mg.grad(g, x, create_graph=True)
    (k,) = mg.grad(h, x)
    assert g.data == pytest.approx(12 + 0.5)
    assert h.data == pytest.approx(12 - 0.25)
    assert k.data == pytest.approx(6 + 2 / 8)


# ---------------------------------------------------------------------------
# Every op-table row, to third order, Values and Tensors, against torch

def _torch_fn(torch, row):
    F = torch.nn.functional
    if row.kind == "BINARY":
        return getattr(torch, row.name)
    kwargs = {row.variant[0]: row.variant[1]} if row.variant else {}
    fn = getattr(F, row.torch_function, None) if row.torch_function else None
    fn = fn or getattr(torch, row.name, None)
    if row.tensor_param:
        return lambda a: fn(a, 0.3, **kwargs)
    return lambda a: fn(a, **kwargs)


def _mg_fn(row):
    if row.kind == "BINARY":
        op = {"add": "__add__", "sub": "__sub__", "mul": "__mul__", "div": "__truediv__",
              "pow": "__pow__"}[row.name]
        return lambda a, b: getattr(a, op)(b)
    kwargs = {row.variant[0]: row.variant[1]} if row.variant else {}

    def unary(a):
        if row.value_param:
            key = row.value_param if isinstance(a, Value) else row.tensor_param
            kwargs[key] = 0.3
        return getattr(a, row.name)(**kwargs)
    return unary


def _points(row, rng, n):
    if row.kind == "BINARY":
        a = rng.uniform(0.3, 2.0, n) if row.name == "pow" else rng.uniform(0.3, 2.0, n) * rng.choice([-1, 1], n)
        return [a, rng.uniform(0.3, 2.0, n) * rng.choice([-1, 1], n)]
    x = rng.uniform(0.3, 2.0, n) * rng.choice([-1, 1], n)
    if np.isnan(_data(_mg_fn(row)(mg.tensor([-1.0, -0.5])))).any():
        x = np.abs(x)
    return [x]


def _torch_derivatives(torch, fn, xs, order):
    """Derivatives of sum(fn(xs) * w) with respect to each input, up to order,
    each the gradient of the sum of the previous one times a weight."""
    leaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = fn(*leaves)
    rng = np.random.default_rng(5)
    results = []
    current = [out]
    for k in range(order):
        w = [torch.tensor(rng.uniform(0.5, 1.5, np.shape(c.detach().numpy(force=True))),
                          dtype=torch.float64) for c in current]
        s = sum((c * wi).sum() for c, wi in zip(current, w) if c.requires_grad)
        grads = torch.autograd.grad(s, leaves, create_graph=True, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(l) for g, l in zip(grads, leaves)]
        results.append([g.detach().numpy(force=True) for g in grads])
        current = grads
        if not any(g.requires_grad for g in grads):   # constant: the higher orders are zero
            results += [[np.zeros(np.shape(x)) for x in xs]] * (order - k - 1)
            break
    return results


def _mg_derivatives(fn, leaves, order):
    out = fn(*leaves)
    rng = np.random.default_rng(5)
    results = []
    current = [out]
    for k in range(order):
        ws = []
        for c in current:
            w = rng.uniform(0.5, 1.5, np.shape(c.data))
            ws.append(float(w) if isinstance(c, Value) else w)
        outs = [(c, w) for c, w in zip(current, ws) if c.requires_grad]
        grads = mg.grad([c for c, _ in outs], leaves, grad_outputs=[w for _, w in outs],
                        create_graph=True, allow_unused=True)
        grads = [g if g is not None else Tensor(np.zeros(np.shape(l.data))) for g, l in zip(grads, leaves)]
        results.append([_data(g) for g in grads])
        current = grads
        if not any(g.requires_grad for g in grads):   # constant: the higher orders are zero
            results += [[np.zeros(np.shape(l.data)) for l in leaves]] * (order - k - 1)
            break
    return results


@pytest.mark.parametrize("row", optable.ELEMENTWISE, ids=[r.code_name for r in optable.ELEMENTWISE])
def test_row_third_order_torch_parity_tensor(row):
    torch = _torch()
    xs = _points(row, np.random.default_rng(1), 6)
    want = _torch_derivatives(torch, _torch_fn(torch, row), xs, 3)
    got = _mg_derivatives(_mg_fn(row), [mg.tensor(x, requires_grad=True) for x in xs], 3)
    assert len(got) == len(want)
    for g_order, w_order in zip(got, want):
        for g, w in zip(g_order, w_order):
            _close(g, w, 1e-9)


@pytest.mark.parametrize("row", optable.ELEMENTWISE, ids=[r.code_name for r in optable.ELEMENTWISE])
def test_row_third_order_torch_parity_value(row):
    torch = _torch()
    xs = _points(row, np.random.default_rng(3), 1)
    xs = [x.reshape(()) for x in xs]
    want = _torch_derivatives(torch, _torch_fn(torch, row), xs, 3)
    got = _mg_derivatives(_mg_fn(row), [Value(float(x)) for x in xs], 3)
    for g_order, w_order in zip(got, want):
        for g, w in zip(g_order, w_order):
            _close(g, w, 1e-9)


@pytest.mark.parametrize("c", [2.0, 3.0, 0.5, -1.5])
def test_constant_operand_forms_second_order(c):
    # a op c and c op a nodes (Value * 2.0, 2.0 ** Value, ...) read their row's formulas
    torch = _torch()
    x0 = 0.7
    fns = [lambda a: a + c, lambda a: a - c, lambda a: c - a, lambda a: a * c, lambda a: a / c,
           lambda a: c / a, lambda a: a ** c, lambda a: abs(c) ** a]
    for fn in fns:
        want = _torch_derivatives(torch, fn, [np.array(x0)], 3)
        got = _mg_derivatives(fn, [Value(x0)], 3)
        for g_order, w_order in zip(got, want):
            _close(g_order[0], w_order[0], 1e-10)


def test_pow_where_branches_at_zero():
    # where(b == 0, 0, ...) and log(a) at a = 0: only the picked branch counts,
    # so the Hessian of a ** b is finite there (the limits, by hand).  At b = 0
    # the row's d/da is 0 exactly (PyTorch's rule too), so its d/db is 0 there,
    # while d/da of d/db = a^b log(a) is 1/a: the Hessian is not symmetric.
    cases = [((0.0, 2.0), [[2.0, 0.0], [0.0, 0.0]]), ((0.0, 3.0), [[0.0, 0.0], [0.0, 0.0]]),
             ((1.5, 0.0), [[0.0, 0.0], [1 / 1.5, math.log(1.5) ** 2]])]
    for (a0, b0), want in cases:
        for wrap in (lambda x: Value(x), lambda x: mg.tensor(x, requires_grad=True)):
            h = AF.hessian(lambda a, b: mg.sum([a ** b]) if isinstance(a, Value) else (a ** b).sum(),
                           (wrap(a0), wrap(b0)))
            _close([[h[i][j].data for j in range(2)] for i in range(2)], want, 1e-12)
    torch = _torch()
    want = torch.autograd.functional.hessian(torch.pow, (torch.tensor(1.5, dtype=torch.float64),
                                                         torch.tensor(0.0, dtype=torch.float64)))
    got = AF.hessian(lambda a, b: a ** b, (Value(1.5), Value(0.0)))
    _close([[got[i][j].data for j in range(2)] for i in range(2)],
           [[want[i][j].item() for j in range(2)] for i in range(2)], 1e-12)


def test_row_formulas_compile_with_known_vocabulary():
    from microgrid.autograd import _rows
    with pytest.raises(ValueError, match="uses 'gamma'"):
        _rows.compile_formula("gamma(a)", scalar=True)
    f = _rows.compile_formula("where(a > 0, a * a, 0)", scalar=True)
    x = Value(2.0)
    assert f(x, None, None, 0.0, 2.0, None, None).data == 4.0
    assert f(x, None, None, 0.0, -2.0, None, None) == 0


# ---------------------------------------------------------------------------
# Fused n-ary Value nodes and the tensor families

def _check_torch(mg_fn, torch_fn, arrays, order=3, tol=1e-9, values=False):
    torch = _torch()
    want = _torch_derivatives(torch, torch_fn, arrays, order)
    leaves = ([Value(float(a)) for a in arrays] if values
              else [mg.tensor(a, requires_grad=True) for a in arrays])
    got = _mg_derivatives(mg_fn, leaves, order)
    assert len(got) == len(want), (len(got), len(want))
    for g_order, w_order in zip(got, want):
        for g, w in zip(g_order, w_order):
            _close(g, w, tol)


def test_nary_value_nodes():
    torch = _torch()
    rng = np.random.default_rng(7)
    v = [np.array(x) for x in rng.uniform(-1.5, 1.5, 7)]

    def mg_fn(*xs):
        w, x, b = xs[:3], xs[3:6], xs[6]
        d = mg.dot(w, x, b)
        s = mg.sum([d * d, xs[0] * xs[4]], start=0.5)
        m = mg.mean([s, d.tanh(), xs[2]])
        return (m * s).sigmoid()

    def torch_fn(*xs):
        w, x, b = xs[:3], xs[3:6], xs[6]
        d = sum(wi * xi for wi, xi in zip(w, x)) + b
        s = d * d + xs[0] * xs[4] + 0.5
        m = (s + d.tanh() + xs[2]) / 3
        return torch.sigmoid(m * s)
    _check_torch(mg_fn, torch_fn, v, values=True)


def test_element_and_stack_values_bridges():
    torch = _torch()
    rng = np.random.default_rng(8)
    t0 = rng.uniform(-1, 1, (2, 3))

    def mg_fn(t):
        a, b, c = t[0, 1], t[1, 2], t[0, 1]          # the same element twice
        v = a * b + c.exp()
        u = mg.stack([v, a * a, b])                  # Values back into a tensor
        w = mg.tensor(np.array(2.0)) * v             # Value as a 0-d tensor
        return (u * u).sum() + w.sum()

    def torch_fn(t):
        a, b, c = t[0, 1], t[1, 2], t[0, 1]
        v = a * b + c.exp()
        u = torch.stack([v, a * a, b])
        return (u * u).sum() + 2.0 * v
    _check_torch(mg_fn, torch_fn, [t0])


def test_tensor_elementwise_broadcast_and_clamp():
    torch = _torch()
    rng = np.random.default_rng(9)
    x, y = rng.uniform(0.3, 1.5, (2, 3)), rng.uniform(-1, 1, (3,))
    _check_torch(lambda a, b: ((a ** 2.5) * b.tanh() / (1 + a)).clamp(-0.4, 0.3) + a * b * b,
                 lambda a, b: torch.clamp((a ** 2.5) * b.tanh() / (1 + a), -0.4, 0.3) + a * b * b,
                 [x, y])
    _check_torch(lambda a, b: a ** b + (b * a.log()).exp(),
                 lambda a, b: a ** b + (b * a.log()).exp(), [x, y.reshape(1, 3)])


@pytest.mark.parametrize("case", ["sum", "sum_dim", "mean_dim_keep", "max", "min", "max_dim", "min_dim_keep"])
def test_reductions(case):
    torch = _torch()
    rng = np.random.default_rng(10)
    x = rng.uniform(-1.5, 1.5, (3, 4))
    mg_r = {"sum": lambda t: t.sum(), "sum_dim": lambda t: t.sum(1),
            "mean_dim_keep": lambda t: t.mean((0, 1), keepdim=True), "max": lambda t: t.max(),
            "min": lambda t: t.min(), "max_dim": lambda t: t.max(0)[0],
            "min_dim_keep": lambda t: t.min(1, keepdim=True)[0]}[case]
    t_r = {"sum": lambda t: t.sum(), "sum_dim": lambda t: t.sum(1),
           "mean_dim_keep": lambda t: t.mean((0, 1), keepdim=True), "max": lambda t: t.max(),
           "min": lambda t: t.min(), "max_dim": lambda t: t.max(0)[0],
           "min_dim_keep": lambda t: t.min(1, keepdim=True)[0]}[case]
    _check_torch(lambda t: (mg_r(t * t.sin()) ** 2).sum(), lambda t: (t_r(t * t.sin()) ** 2).sum(), [x])


def test_shape_family():
    torch = _torch()
    rng = np.random.default_rng(11)
    x, y = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (2, 3))

    def mg_fn(a, b):
        c = mg.cat([a, b * a], 1).reshape(3, 4).permute(1, 0)          # (4, 3)
        s = mg.stack([a, b.exp()], 0)[:, 1, ::2]                      # (2, 2)
        p = mg.functional.pad(a * b, (1, 2))                          # (2, 6)
        picked = c[[0, 2, 2], [1, 0, 0]]                              # advanced, repeats
        return (c ** 3).sum() + (s * s.sin()).sum() + (p * p).sum() + (picked ** 2).sum()

    def torch_fn(a, b):
        c = torch.cat([a, b * a], 1).reshape(3, 4).permute(1, 0)
        s = torch.stack([a, b.exp()], 0)[:, 1, ::2]
        p = torch.nn.functional.pad(a * b, (1, 2))
        picked = c[[0, 2, 2], [1, 0, 0]]
        return (c ** 3).sum() + (s * s.sin()).sum() + (p * p).sum() + (picked ** 2).sum()
    _check_torch(mg_fn, torch_fn, [x, y])


@pytest.mark.parametrize("shapes", [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 2)), ((2, 3), (3, 4)),
                                    ((2, 2, 3), (3, 2)), ((4, 2, 3), (1, 3, 2))])
def test_matmul(shapes):
    torch = _torch()
    rng = np.random.default_rng(12)
    x, y = rng.uniform(-1, 1, shapes[0]), rng.uniform(-1, 1, shapes[1])
    _check_torch(lambda a, b: ((a @ b).tanh() * (a @ b)).sum(),
                 lambda a, b: ((a @ b).tanh() * (a @ b)).sum(), [x, y])


@pytest.mark.parametrize("xshape", [(3,), (2, 3), (2, 2, 3)])
def test_linear(xshape):
    torch = _torch()
    rng = np.random.default_rng(13)
    x, w, b = rng.uniform(-1, 1, xshape), rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4,))
    _check_torch(lambda a, W, c: mg.functional.linear(a, W, c).sigmoid().sum(),
                 lambda a, W, c: torch.nn.functional.linear(a, W, c).sigmoid().sum(), [x, w, b])
    _check_torch(lambda a, W: (mg.functional.linear(a, W) ** 2).sum(),
                 lambda a, W: (torch.nn.functional.linear(a, W) ** 2).sum(), [x, w])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax(dim):
    torch = _torch()
    rng = np.random.default_rng(14)
    x, w = rng.uniform(-2, 2, (3, 4)), rng.uniform(-1, 1, (3, 4))
    _check_torch(lambda a: (mg.functional.softmax(a, dim) * w).sum() + (a.log_softmax(dim) * w * w).sum(),
                 lambda a: (torch.softmax(a, dim) * torch.tensor(w)).sum()
                 + (torch.log_softmax(a, dim) * torch.tensor(w * w)).sum(), [x])


# ---------------------------------------------------------------------------
# Random graphs mixing Values and Tensors, to third order

_UNARY = ["tanh", "sigmoid", "sin", "exp", "atan", "cos"]


def _random_program(seed):
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(6):
        steps.append((rng.integers(0, 6), rng.choice(_UNARY), rng.uniform(0.3, 1.2)))
    return steps


def _run_program(steps, t, v, lib):
    """A random graph over a tensor t (3,) and a Value v (lib: mg or torch)."""
    x = t
    s = v
    for kind, unary, c in steps:
        if kind == 0:
            x = getattr(x, unary)() * c + x
        elif kind == 1:
            x = x * s + c
        elif kind == 2:
            s = s * getattr(x.sum(), unary)() if lib == "torch" else s * getattr(_as_value(x.sum()), unary)()
        elif kind == 3:
            x = x / (1.5 + x * x) + (x @ x) * c
        elif kind == 4:
            s = (s * s + c).log() + s
        else:
            x = x + x[1] * s
    return (x * x).sum() * s if lib == "torch" else _as_value((x * x).sum()) * s


def _as_value(t):
    return t.reshape(1)[0]


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_value_and_tensor_third_order(seed):
    torch = _torch()
    steps = _random_program(seed)
    rng = np.random.default_rng(100 + seed)
    t0, v0 = rng.uniform(-1, 1, 3), np.array(rng.uniform(0.5, 1.0))
    want = _torch_derivatives(torch, lambda t, v: _run_program(steps, t, v, "torch"), [t0, v0], 3)
    got = _mg_derivatives(lambda t, v: _run_program(steps, t, v, "mg"),
                          [mg.tensor(t0, requires_grad=True), Value(float(v0))], 3)
    assert len(got) == len(want)
    for g_order, w_order in zip(got, want):
        for g, w in zip(g_order, w_order):
            _close(g, w, 1e-9)


# ---------------------------------------------------------------------------
# Finite differences, without torch

def _numeric_gradient(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        out[i] = (f(xp) - f(xm)) / (2 * eps)
    return out


def test_second_derivative_matches_finite_differences_of_the_gradient():
    rng = np.random.default_rng(15)
    x0 = rng.uniform(-1, 1, (2, 3))
    w = rng.uniform(-1, 1, (3, 2))

    def loss(t):
        h = (t @ mg.tensor(w)).tanh()
        return (h.softmax(1) * h).sum() + (t.max(1)[0] ** 2).sum()

    def gradient(x):
        t = mg.tensor(x, requires_grad=True)
        return mg.grad(loss(t), t)[0].data

    t = mg.tensor(x0, requires_grad=True)
    (g,) = mg.grad(loss(t), t, create_graph=True)
    v = rng.uniform(-1, 1, x0.shape)
    (hv,) = mg.grad(g, t, grad_outputs=v)                  # H v (H symmetric)
    numeric = _numeric_gradient(lambda x: float(np.sum(gradient(x) * v)), x0)
    np.testing.assert_allclose(hv.data, numeric, rtol=1e-6, atol=1e-7)


def test_gradgradcheck_passes_and_catches_a_wrong_second_derivative():
    x = mg.tensor([0.3, -0.8, 1.1], requires_grad=True)
    v = Value(0.4)
    assert mg.gradgradcheck(lambda a, b: (a.sigmoid() * b).tanh() * a, [x, v])
    assert mg.gradgradcheck(lambda a: a.log_softmax(0), [x])


def test_gradgradcheck_catches_a_rule_that_treats_out_as_a_constant(monkeypatch):
    # sigmoid's derivative out * (1 - out) with ``out`` cut from the graph:
    # the first derivative keeps its numbers, the second loses a term
    from microgrid.autograd import _rows
    code = optable.row_of(Value(0.0).sigmoid()).code
    right = _rows._SCALAR_RULES[code][0]

    def cut(a, b, out, c, a_, b_, out_):
        return right(a, b, Value(out.data, requires_grad=False), c, a_, b_, out_)
    assert mg.gradgradcheck(lambda a: a.sigmoid() * a, [Value(0.5)])
    monkeypatch.setitem(_rows._SCALAR_RULES, code, (cut,))
    with pytest.raises(mg.GradcheckError, match="gradgradcheck"):
        mg.gradgradcheck(lambda a: a.sigmoid() * a, [Value(0.5)])
    assert mg.gradgradcheck(lambda a: a.sigmoid() * a, [Value(0.5)], raise_exception=False) is False


# ---------------------------------------------------------------------------
# microgrid.autograd.functional against torch.autograd.functional

def _model(lib):
    rng = np.random.default_rng(16)
    W1, b1, W2 = rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, 4), rng.uniform(-1, 1, (2, 4))
    if lib == "torch":
        import torch
        W1, b1, W2 = (torch.tensor(a) for a in (W1, b1, W2))
        return lambda x, y: (torch.tanh(W1 @ x + b1 * y.sum()) @ W2.T).sigmoid()
    W1, b1, W2 = (mg.tensor(a) for a in (W1, b1, W2))
    return lambda x, y: ((W1 @ x + b1 * y.sum()).tanh() @ W2.T).sigmoid()


def _scalar_model(lib):
    f = _model(lib)
    return lambda x, y: (f(x, y) ** 2).sum() + (x * y[0]).sum()


def _inputs(lib):
    rng = np.random.default_rng(17)
    x, y = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 2)
    if lib == "torch":
        import torch
        return torch.tensor(x), torch.tensor(y)
    return mg.tensor(x), mg.tensor(y)


def _same(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)
        return
    assert tuple(got.shape) == tuple(want.shape)
    _close(got.data, want.detach().numpy(), 1e-10)


def test_jacobian_and_hessian_match_torch():
    torch = _torch()
    TF = torch.autograd.functional
    _same(AF.jacobian(_model("mg"), _inputs("mg")), TF.jacobian(_model("torch"), _inputs("torch")))
    _same(AF.jacobian(lambda x: _model("mg")(x, _inputs("mg")[1]), _inputs("mg")[0]),
          TF.jacobian(lambda x: _model("torch")(x, _inputs("torch")[1]), _inputs("torch")[0]))
    _same(AF.hessian(_scalar_model("mg"), _inputs("mg")),
          TF.hessian(_scalar_model("torch"), _inputs("torch")))
    _same(AF.hessian(lambda x: _scalar_model("mg")(x, _inputs("mg")[1]), _inputs("mg")[0]),
          TF.hessian(lambda x: _scalar_model("torch")(x, _inputs("torch")[1]), _inputs("torch")[0]))


def test_vjp_jvp_hvp_vhp_match_torch():
    torch = _torch()
    TF = torch.autograd.functional
    rng = np.random.default_rng(18)
    u = rng.uniform(-1, 1, 2)
    vx, vy = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 2)
    v_mg, v_t = (mg.tensor(vx), mg.tensor(vy)), (torch.tensor(vx), torch.tensor(vy))
    _same(AF.vjp(_model("mg"), _inputs("mg"), mg.tensor(u)),
          TF.vjp(_model("torch"), _inputs("torch"), torch.tensor(u)))
    _same(AF.jvp(_model("mg"), _inputs("mg"), v_mg), TF.jvp(_model("torch"), _inputs("torch"), v_t))
    _same(AF.hvp(_scalar_model("mg"), _inputs("mg"), v_mg),
          TF.hvp(_scalar_model("torch"), _inputs("torch"), v_t))
    _same(AF.vhp(_scalar_model("mg"), _inputs("mg"), v_mg),
          TF.vhp(_scalar_model("torch"), _inputs("torch"), v_t))


def test_functional_on_values_and_create_graph():
    x, y = Value(0.7), Value(-0.2)
    h = AF.hessian(lambda a, b: (a * b).sin() + a ** 3, (x, y))
    assert isinstance(h[0][0], Value)
    _close(h[0][0].data, -math.sin(-0.14) * 0.04 + 6 * 0.7)
    _close(h[0][1].data, -math.sin(-0.14) * 0.7 * -0.2 + math.cos(-0.14))
    _close(h[1][0].data, h[0][1].data)
    # create_graph=True: the Hessian is itself differentiable (a third derivative)
    a = Value(0.7)
    hh = AF.hessian(lambda t: t ** 4, a, create_graph=True)
    (third,) = mg.grad(hh, a)
    _close(third.data, 24 * 0.7)
    out, jv = AF.jvp(lambda t: t.exp(), Value(0.5), 2.0)
    _close(jv.data, 2 * math.exp(0.5))
    assert not out.requires_grad


def test_functional_errors():
    t = mg.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=r"hessian\(inputs\)"):
        AF.hessian(lambda x: x, [1.0])
    with pytest.raises(RuntimeError, match="single one-element"):
        AF.hessian(lambda x: x * x, t)
    with pytest.raises(RuntimeError, match=r"v=None"):
        AF.vjp(lambda x: x * x, t)
    with pytest.raises(ValueError, match=r"shape"):
        AF.hvp(lambda x: (x * x).sum(), t, np.ones(3))
    with pytest.raises(RuntimeError, match="strict=True"):
        AF.jacobian(lambda x, y: x * 2, (t, mg.tensor([1.0])), strict=True)
    with pytest.raises(ValueError, match="strategy"):
        AF.jacobian(lambda x: x, t, strategy="sideways")


def test_create_graph_and_functional_work_inside_no_grad():
    # the differentiable sweep runs in grad mode, as PyTorch's engine does
    x = Value(1.5)
    y = x ** 3
    with mg.no_grad():
        (g,) = mg.grad(y, x, create_graph=True)
        assert g.requires_grad
        h = AF.hessian(lambda t: t ** 3, Value(1.5))
    (h2,) = mg.grad(g, x)
    assert h2.data == pytest.approx(9.0) and h.data == pytest.approx(9.0)
    assert mg.is_grad_enabled()

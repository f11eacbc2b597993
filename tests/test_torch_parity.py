"""Scalar values and gradients against PyTorch float64 (skipped without torch)."""
import math
import random

import pytest

import microgrid as mg
from microgrid import Value
from microgrid.nn import MLP

torch = pytest.importorskip("torch")


def T(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def both(fn, *xs):
    """Run fn on Values and on torch tensors; return (ours, theirs) as
    (output, [input grads])."""
    vs = [Value(x) for x in xs]
    out = fn(vs, mg)
    out.backward()
    ts = [T(x) for x in xs]
    tout = fn(ts, torch)
    tout.backward()
    return (out.data, [v.grad for v in vs]), (tout.item(), [t.grad.item() for t in ts])


def close(ours, theirs, tol=1e-12):
    (o, og), (t, tg) = ours, theirs
    assert o == pytest.approx(t, rel=tol, abs=tol)
    assert og == pytest.approx(tg, rel=tol, abs=tol)


def test_expression_with_every_binary_op():
    def fn(v, lib):
        x, y = v
        z = 2 * x + 2 + x
        q = z.relu() + z * x
        h = (z * z).relu()
        w = h + q + q * x
        a = w / (y + 3) - 1 / x + x ** 3 + (y ** 2) / 4
        return a + (x ** y) + 2 ** y
    close(*both(fn, -4.0 + 5.5, 2.0))


def test_micrograd_style_sanity_expression():
    def fn(v, lib):
        x, = v
        z = 2 * x + 2 + x
        q = z.relu() + z * x
        h = (z * z).relu()
        return h + q + q * x
    close(*both(fn, -4.0))


def test_micrograd_style_longer_expression():
    def fn(v, lib):
        a, b = v
        c = a + b
        d = a * b + b ** 3
        c = c + c + 1
        c = c + 1 + c + (-a)
        d = d + d * 2 + (b + a).relu()
        d = d + 3 * d + (b - a).relu()
        e = c - d
        f = e ** 2
        g = f / 2.0
        g = g + 10.0 / f
        return g
    close(*both(fn, -4.0, 2.0), tol=1e-12)


UNARY = [
    ("sigmoid", lambda x: x.sigmoid(), torch.sigmoid),
    ("tanh", lambda x: x.tanh(), torch.tanh),
    ("exp", lambda x: x.exp(), torch.exp),
    ("log", lambda x: x.log(), torch.log),
    ("sqrt", lambda x: x.sqrt(), torch.sqrt),
    ("softplus", lambda x: x.softplus(), torch.nn.functional.softplus),
    ("relu", lambda x: x.relu(), torch.relu),
    ("leaky_relu", lambda x: x.leaky_relu(0.05), lambda t: torch.nn.functional.leaky_relu(t, 0.05)),
    ("abs", lambda x: abs(x), torch.abs),
    ("sin", lambda x: x.sin(), torch.sin),
    ("cos", lambda x: x.cos(), torch.cos),
]


@pytest.mark.parametrize("name,ours,theirs", UNARY, ids=[u[0] for u in UNARY])
@pytest.mark.parametrize("x", [-3.5, -0.4, 0.0, 0.3, 2.2, 15.0])
def test_unary_ops_match_torch(name, ours, theirs, x):
    if name in ("log", "sqrt") and x <= 0:
        x = abs(x) + 0.5
    v, t = Value(x), T(x)
    out, tout = ours(v), theirs(t)
    (out * 1.7).backward()
    (tout * 1.7).backward()
    # softplus: torch returns x itself above its threshold of 20, within an ulp here.
    assert out.data == pytest.approx(tout.item(), rel=1e-13, abs=1e-15)
    assert v.grad == pytest.approx(t.grad.item(), rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("x", [-1000.0, -40.0, 40.0, 1000.0])
def test_saturating_ops_match_torch_at_extremes(x):
    for ours, theirs in [(lambda v: v.sigmoid(), torch.sigmoid), (lambda v: v.tanh(), torch.tanh),
                         (lambda v: v.softplus(), torch.nn.functional.softplus)]:
        v, t = Value(x), T(x)
        out, tout = ours(v), theirs(t)
        out.backward()
        tout.backward()
        assert out.data == pytest.approx(tout.item(), rel=1e-13, abs=1e-300)
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-13, abs=1e-300)


def test_pow_with_value_exponent_and_zero_base_match_torch():
    for base, exponent in [(2.0, 3.5), (0.0, 2.0), (0.0, 0.0), (1.5, -2.0)]:
        a, b = Value(base), Value(exponent)
        (a ** b).backward()
        ta, tb = T(base), T(exponent)
        (ta ** tb).backward()
        assert (a.grad, b.grad) == pytest.approx((ta.grad.item(), tb.grad.item()), rel=1e-13)


def test_fused_nodes_match_torch():
    rng = random.Random(0)
    xs = [rng.uniform(-2, 2) for _ in range(9)]

    def fn(v, lib):
        if lib is mg:
            d = mg.dot(v[:4], v[4:8], v[8])
            return (d.tanh() + mg.mean(v) * mg.sum(v[2:], start=v[0])).sigmoid()
        d = sum((w * x for w, x in zip(v[:4], v[4:8])), v[8])
        return (d.tanh() + sum(v) / len(v) * (v[0] + sum(v[2:]))).sigmoid()
    close(*both(fn, *xs))


def test_two_neuron_exam_network_matches_torch():
    def fn(v, lib):
        x1, x2, w11, w12, w21, w22, w31, w32 = v
        h1 = (w11 * x1 + w12 * x2).relu()
        h2 = (w21 * x1 + w22 * x2).sigmoid()
        yhat = w31 * h1 + w32 * h2
        return -yhat.log()
    close(*both(fn, 2.0, -3.0, 0.9, 0.4, -1.5, -0.7, -0.2, 1.6))


def test_random_mlp_gradients_match_torch():
    random.seed(3)
    model = MLP(3, [4, 4, 1])
    xs = [[random.uniform(-1, 1) for _ in range(3)] for _ in range(5)]
    loss = mg.sum((1 + -model(x)).relu() for x in xs)
    loss.backward()
    # the same network in torch, parameter by parameter
    params = [T(p.data) for p in model.parameters()]
    it = iter(params)
    layers = []
    for layer in model.layers:
        neurons = []
        for n in layer.neurons:
            w = [next(it) for _ in n.w]
            b = next(it)
            neurons.append((w, b, n.nonlin))
        layers.append(neurons)

    def forward(x):
        for neurons in layers:
            out = []
            for w, b, nonlin in neurons:
                act = sum((wi * xi for wi, xi in zip(w, x)), b)
                out.append(act.relu() if nonlin else act)
            x = out
        return x[0]
    tloss = sum((1 - forward(x)).relu() for x in xs)
    tloss.backward()
    assert loss.data == pytest.approx(tloss.item(), rel=1e-12)
    for p, t in zip(model.parameters(), params):
        assert p.grad == pytest.approx(t.grad.item(), rel=1e-10, abs=1e-14)
    assert not math.isnan(loss.data)

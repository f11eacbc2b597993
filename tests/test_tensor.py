"""Tests of microgrid.tensors._tensor: Tensor ops against finite differences, hand
values and PyTorch (float64), the Value <-> Tensor bridges, requires_grad
semantics and the error cases."""
import warnings

import numpy as np
import pytest

import microgrid as mg
from microgrid import Tensor, Value

RNG = np.random.default_rng(1234)


def rand(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, shape)


def leaves(*arrays):
    return [mg.tensor(a, requires_grad=True) for a in arrays]


# ---------------------------------------------------------------------------
# Op tables shared by the finite-difference and the PyTorch tests

UNARY = {
    # name: (microgrid, torch, input range)
    "neg": (lambda x: -x, lambda x: -x, (-2, 2)),
    "abs": (lambda x: abs(x), lambda x: x.abs(), (-2, 2)),
    "relu": (lambda x: x.relu(), lambda x: x.relu(), (-2, 2)),
    "leaky_relu": (lambda x: x.leaky_relu(0.1),
                   lambda x: __import__("torch").nn.functional.leaky_relu(x, 0.1), (-2, 2)),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid(), (-4, 4)),
    "tanh": (lambda x: x.tanh(), lambda x: x.tanh(), (-3, 3)),
    "exp": (lambda x: x.exp(), lambda x: x.exp(), (-2, 2)),
    "log": (lambda x: x.log(), lambda x: x.log(), (0.2, 3)),
    "sqrt": (lambda x: x.sqrt(), lambda x: x.sqrt(), (0.2, 3)),
    "softplus": (lambda x: x.softplus(), lambda x: __import__("torch").nn.functional.softplus(x), (-4, 4)),
    "sin": (lambda x: x.sin(), lambda x: x.sin(), (-3, 3)),
    "cos": (lambda x: x.cos(), lambda x: x.cos(), (-3, 3)),
    "clamp": (lambda x: x.clamp(-0.5, 1.0), lambda x: x.clamp(-0.5, 1.0), (-2, 2)),
    "clamp_min": (lambda x: x.clamp(min=0.3), lambda x: x.clamp(min=0.3), (-2, 2)),
    "pow_const": (lambda x: x ** 3, lambda x: x ** 3, (-2, 2)),
    "pow_frac": (lambda x: x ** 0.5, lambda x: x ** 0.5, (0.2, 3)),
    "rpow": (lambda x: 2.0 ** x, lambda x: 2.0 ** x, (-2, 2)),
    "rsub": (lambda x: 1 - x, lambda x: 1 - x, (-2, 2)),
    "rdiv": (lambda x: 2 / x, lambda x: 2 / x, (0.5, 2)),
    "scale": (lambda x: x * 3 + 1, lambda x: x * 3 + 1, (-2, 2)),
}

BINARY = {
    "add": (lambda a, b: a + b, (-2, 2)),
    "sub": (lambda a, b: a - b, (-2, 2)),
    "mul": (lambda a, b: a * b, (-2, 2)),
    "div": (lambda a, b: a / b, (0.5, 2)),
    "pow": (lambda a, b: a ** b, (0.5, 2)),
}

BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)),
                    ((3,), (2, 3)), ((), (2, 3)), ((2, 3), ())]

REDUCTIONS = [(None, False), (0, False), (-1, True), ((0, 2), False), ((-1, 0), True), ((), False)]

MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                 ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,))]


# ---------------------------------------------------------------------------
# Finite differences

@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_unary_gradcheck(name, shape):
    f, _, (lo, hi) = UNARY[name]
    x = RNG.uniform(lo, hi, shape)
    if name in ("relu", "abs", "leaky_relu", "clamp", "clamp_min"):
        x = np.where(np.abs(x) < 0.05, 0.3, x)      # stay off the kinks
        x = np.where(np.abs(x + 0.5) < 0.05, 0.3, x)
        x = np.where(np.abs(x - 1.0) < 0.05, 0.3, x)
    assert mg.gradcheck(f, leaves(x))


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
def test_binary_gradcheck_with_broadcasting(name, shapes):
    f, (lo, hi) = BINARY[name]
    a, b = (RNG.uniform(lo, hi, s) for s in shapes)
    assert mg.gradcheck(f, leaves(a, b))


@pytest.mark.parametrize("dim,keepdim", REDUCTIONS)
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reduction_gradcheck(op, dim, keepdim):
    x, = leaves(rand(2, 3, 4))
    assert mg.gradcheck(lambda t: getattr(t, op)(dim=dim, keepdim=keepdim), [x])


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (-1, True), (1, False)])
def test_max_min_gradcheck(op, dim, keepdim):
    x, = leaves(rand(2, 3, 4))

    def f(t):
        r = getattr(t, op)(dim=dim, keepdim=keepdim)
        return r if dim is None else r.values
    assert mg.gradcheck(f, [x])


@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
def test_matmul_gradcheck(shapes):
    assert mg.gradcheck(lambda a, b: a @ b, leaves(*(rand(*s) for s in shapes)))


SHAPE_OPS = {
    "reshape": lambda t: t.reshape(4, -1),
    "view": lambda t: t.view((3, 8)),
    "flatten": lambda t: t.flatten(),
    "flatten_1": lambda t: t.flatten(1),
    "flatten_0_1": lambda t: t.flatten(0, 1),
    "transpose": lambda t: t.transpose(0, -1),
    "permute": lambda t: t.permute(2, 0, 1),
    "T": lambda t: t.T,
    "slice": lambda t: t[:, 1:, ::2],
    "int_slice": lambda t: t[1, :, -1],
    "ellipsis": lambda t: t[..., 2],
    "newaxis": lambda t: t[None, 0],
    "fancy_repeats": lambda t: t[[0, 1, 0], [2, 2, 2]],
    "bool_mask": lambda t: t[np.array([True, False])],
    "unsqueeze": lambda t: t.unsqueeze(-1),
    "squeeze": lambda t: t[:1].squeeze(0),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_op_gradcheck(name):
    x, = leaves(rand(2, 3, 4))
    assert mg.gradcheck(SHAPE_OPS[name], [x])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_and_stack_gradcheck(dim):
    a, b = leaves(rand(2, 3), rand(2, 3))
    c, = leaves(rand(2, 3) if dim == 0 else rand(2, 3))
    assert mg.gradcheck(lambda a, b, c: mg.cat([a, b, c], dim=dim), [a, b, c])
    assert mg.gradcheck(lambda a, b, c: mg.stack([a, b, c], dim=dim), [a, b, c])


def test_composite_gradcheck():
    x, w, b = leaves(rand(5, 3), rand(3, 4), rand(4))

    def f(x, w, b):
        h = (x @ w + b).tanh()
        return (h * h.sigmoid()).sum(dim=1).exp().mean()
    assert mg.gradcheck(f, [x, w, b])


# ---------------------------------------------------------------------------
# Hand-computed values

def test_hand_computed_values_and_gradients():
    a = mg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = mg.tensor([10.0, -1.0], requires_grad=True)
    out = (a * b).sum()             # 10 - 2 + 30 - 4
    assert out.item() == 34.0
    out.backward()
    np.testing.assert_array_equal(a.grad, [[10.0, -1.0], [10.0, -1.0]])
    np.testing.assert_array_equal(b.grad, [4.0, 6.0])
    m = a @ a                       # [[7, 10], [15, 22]]
    np.testing.assert_array_equal(m.data, [[7.0, 10.0], [15.0, 22.0]])
    assert (a.relu() - 2).relu().sum().item() == 0 + 0 + 1 + 2


def test_relu_gradient_at_zero_is_zero_and_nan_propagates():
    x = mg.tensor([0.0, -1.0, 2.0, np.nan], requires_grad=True)
    y = x.relu()
    assert np.isnan(y.data[3])
    y.backward(np.ones(4))
    np.testing.assert_array_equal(x.grad[:3], [0.0, 0.0, 1.0])


def test_extreme_inputs_give_ieee_results_without_warnings():
    x = mg.tensor([-1000.0, 0.0, 1000.0, np.inf, -np.inf], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = x.sigmoid()
        np.testing.assert_array_equal(s.data, [0.0, 0.5, 1.0, 1.0, 0.0])
        sp = x.softplus()
        np.testing.assert_array_equal(sp.data[:3], [0.0, np.log(2.0), 1000.0])
        (s.sum() + sp.sum()).backward()
        assert np.all(np.isfinite(x.grad[:3]))
        z = mg.tensor([0.0, -1.0], requires_grad=True)
        assert z.log().data[0] == -np.inf and np.isnan(z.log().data[1])
        assert (1 / z).data[0] == np.inf
        assert np.isinf(mg.tensor([1000.0]).exp().data[0])
        (z.sqrt() + z.log() + 1 / z).sum().backward()


# ---------------------------------------------------------------------------
# max / min ties

def test_full_max_splits_gradient_evenly_among_ties():
    x = mg.tensor([[1.0, 3.0], [3.0, 0.0], [3.0, 2.0]], requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad, [[0, 1 / 3], [1 / 3, 0], [1 / 3, 0]])
    y = mg.tensor([-1.0, -1.0, 2.0], requires_grad=True)
    y.min().backward()
    np.testing.assert_array_equal(y.grad, [0.5, 0.5, 0.0])


def test_max_along_dim_sends_gradient_to_first_maximum():
    x = mg.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], requires_grad=True)
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.data, [3.0, 2.0])
    np.testing.assert_array_equal(indices, [1, 0])
    values.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])
    r = mg.max(x, dim=0, keepdim=True)
    assert r.values.shape == (1, 3) and r.indices.shape == (1, 3)


# ---------------------------------------------------------------------------
# Bridges between Values and Tensors

def test_element_is_a_value_whose_gradient_lands_in_the_tensor():
    t = mg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    e = t[1, 0]
    assert isinstance(e, Value) and e.data == 3.0
    f = t[-1, -1]
    (e * f + t[0, 1]).backward()      # d/dt10 = 4, d/dt11 = 3, d/dt01 = 1
    np.testing.assert_array_equal(t.grad, [[0.0, 1.0], [4.0, 3.0]])
    with pytest.raises(IndexError):
        t[2, 0]


def test_stack_of_values_routes_gradients_to_each_value():
    a, b, c = Value(1.0), Value(-2.0), Value(3.0)
    s = mg.stack([a, b, c])
    assert isinstance(s, Tensor) and s.shape == (3,)
    w = mg.tensor([2.0, 5.0, -1.0])
    (s * w).sum().backward()
    assert (a.grad, b.grad, c.grad) == (2.0, 5.0, -1.0)
    s2 = mg.stack([a, a])
    s2.sum().backward()
    assert a.grad == 2.0 + 2.0


def test_value_and_tensor_mix_in_arithmetic():
    v = Value(3.0)
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    out = (v * t + t / v - v ** 2 + (2 ** t) * 0).sum()
    assert isinstance(v * t, Tensor) and isinstance(t - v, Tensor)
    out.backward()
    # d/dv sum(v t + t / v - v^2) = sum(t) - sum(t) / v^2 - 2 * 2 v
    assert v.grad == pytest.approx(3.0 - 3.0 / 9.0 - 12.0)
    np.testing.assert_allclose(t.grad, [3.0 + 1 / 3.0] * 2)


def test_scalar_graph_on_top_of_a_tensor():
    x = mg.tensor([0.5, -1.5, 2.0], requires_grad=True)
    h = (x * 2).tanh()
    loss = mg.sum([h[i] * h[i] for i in range(3)])
    loss.backward()
    y = np.tanh(2 * x.data)
    np.testing.assert_allclose(x.grad, 2 * y * (1 - y ** 2) * 2)


def test_numpy_operands_are_constants():
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    out = np.array([[1.0, 2.0], [3.0, 4.0]]) * t + [1, 1]
    assert isinstance(out, Tensor) and out.shape == (2, 2)
    out.sum().backward()
    np.testing.assert_array_equal(t.grad, [4.0, 6.0])


# ---------------------------------------------------------------------------
# requires_grad semantics

def test_leaf_without_requires_grad_gets_no_gradient_and_branch_is_skipped():
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    x = mg.tensor([3.0, 4.0])
    hidden = x.exp().sin()          # needs no gradient: not visited by backward
    assert not hidden.requires_grad
    out = (w * hidden).sum() + (w * x).sum()
    out.backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])
    np.testing.assert_array_equal(hidden.grad, [0.0, 0.0])
    np.testing.assert_allclose(w.grad, np.sin(np.exp([3.0, 4.0])) + [3.0, 4.0])
    order = mg.topological_order(out, every_node=False)
    assert all(node.requires_grad for node in order)
    # (by identity: == on tensors compares elementwise)
    assert all(node is not hidden and node is not x for node in order)


def test_leaves_accumulate_and_intermediate_grads_are_recomputed():
    w = mg.tensor([1.0, -2.0], requires_grad=True)
    h = w * 3
    out = h.sum()
    out.backward()
    out.backward()
    np.testing.assert_array_equal(w.grad, [6.0, 6.0])
    np.testing.assert_array_equal(h.grad, [1.0, 1.0])
    w.zero_grad()
    np.testing.assert_array_equal(w.grad, [0.0, 0.0])


def test_requires_grad_is_settable_on_leaves_only():
    t = mg.tensor([1.0])
    assert t.requires_grad is False and t.is_leaf
    t.requires_grad = True
    u = t * 2
    assert u.requires_grad and not u.is_leaf
    with pytest.raises(ValueError, match="requires_grad"):
        u.requires_grad = False
    with pytest.raises(RuntimeError):
        mg.tensor([1.0]).sum().backward()


def test_grad_and_data_are_the_nodes_own_writable_buffers():
    p = mg.tensor([[1.0, 2.0]], requires_grad=True)
    g = p.grad
    assert np.all(g == 0) and g.shape == (1, 2)
    (p * p).sum().backward()
    data = p.data
    p.data -= 0.5 * p.grad
    assert p.data is data
    np.testing.assert_array_equal(p.data, [[0.0, 0.0]])
    p.grad[...] = 0
    np.testing.assert_array_equal(p.grad, [[0.0, 0.0]])
    assert p.data.flags.c_contiguous and p.data.dtype == np.float64
    assert p.T.data.flags.c_contiguous


def test_backward_with_explicit_gradient_and_scalar_rule():
    t = mg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = t * t
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        y.backward()
    y.backward(np.array([[1.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_array_equal(t.grad, [[2.0, 0.0], [0.0, 16.0]])
    with pytest.raises(ValueError, match="backward\\(grad\\)"):
        y.backward(np.ones(3))
    one = mg.tensor([[5.0]], requires_grad=True)
    (one * 2).backward()
    assert one.grad[0, 0] == 2.0


def test_leaf_root_accumulates():
    t = mg.tensor([2.0], requires_grad=True)
    t.backward()
    t.backward()
    assert t.grad[0] == 2.0


def test_properties_and_repr():
    t = mg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size() == (2, 3) and t.numel() == 6 and len(t) == 2
    assert repr(t) == "Tensor([[0., 1., 2.],\n        [3., 4., 5.]], requires_grad=True)"
    assert repr(mg.tensor(1.5)) == "Tensor(1.5)"
    assert mg.tensor([[2.5]]).item() == 2.5
    assert (t + 1)._op == "+" and (t @ t.T)._op == "@" and t._op == ""
    u = t * t
    assert u._parents() == (t, t)
    u.label = "u"
    assert u.label == "u"
    assert mg.zeros(2, 3).shape == (2, 3) and mg.ones((4,)).data.sum() == 4
    assert mg.randn(3, 2, seed=0).shape == (3, 2)
    np.testing.assert_array_equal(mg.randn(3, seed=5).data, mg.randn(3, seed=5).data)
    assert [v.data for v in mg.tensor([1.0, 2.0])] == [1.0, 2.0]
    assert np.asarray(t).shape == (2, 3)


def test_forward_recomputes_in_place_from_parents():
    # graph replay will call _forward over a recorded order; the buffers stay
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    v = Value(0.5)
    b = mg.cat([(a * 3 + v).sigmoid(), a.sum(0, keepdim=True), a[[1]]]).max(dim=0).values
    buffers = [node.data for node in mg.topological_order(b) if isinstance(node, Tensor)]
    a.data[...] = [10.0, 20.0]
    v.data = -1.0
    for node in mg.topological_order(b):
        if isinstance(node, Tensor):
            node._recompute()
    assert [node.data for node in mg.topological_order(b) if isinstance(node, Tensor)] == buffers
    assert b.data.item() == 30.0


# ---------------------------------------------------------------------------
# Errors name the argument

def test_error_cases():
    t = mg.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match="shapes \\(2, 3\\) and \\(4,\\)"):
        t + mg.tensor(np.ones(4))
    with pytest.raises(ValueError, match="matmul"):
        t @ t
    with pytest.raises(ValueError, match="matmul"):
        t @ mg.tensor(1.0)
    with pytest.raises(ValueError, match="dim"):
        t.sum(dim=2)
    with pytest.raises(ValueError, match="dim"):
        t.sum(dim=(0, -2))
    with pytest.raises(TypeError, match="dim"):
        t.mean(dim=1.5)
    with pytest.raises(TypeError, match="keepdim"):
        t.sum(keepdim="yes")
    with pytest.raises(ValueError, match="reshape"):
        t.reshape(4, 2)
    with pytest.raises(TypeError, match="reshape"):
        t.reshape(2.0, 3)
    with pytest.raises(ValueError, match="permute"):
        t.permute(0, 0)
    with pytest.raises(ValueError, match="permute"):
        t.permute(0)
    with pytest.raises(ValueError, match="flatten"):
        t.flatten(1, 0)
    with pytest.raises(ValueError, match="max"):
        mg.tensor(np.zeros(0)).max()
    with pytest.raises(ValueError, match="max"):
        mg.tensor(np.zeros((2, 0))).max(dim=1)
    with pytest.raises(TypeError, match="tensor\\(data\\)"):
        mg.tensor(["a", "b"])
    with pytest.raises(TypeError, match="stack"):
        mg.tensor([Value(1.0), Value(2.0)])
    with pytest.raises(TypeError, match="requires_grad"):
        mg.tensor([1.0], requires_grad="yes")
    with pytest.raises(TypeError, match="stack"):
        mg.stack([Value(1.0), mg.tensor(1.0)])
    with pytest.raises(ValueError, match="stack"):
        mg.stack([])
    with pytest.raises(ValueError, match="stack"):
        mg.stack([mg.tensor([1.0]), mg.tensor([1.0, 2.0])])
    with pytest.raises(ValueError, match="concatenate"):
        mg.cat([mg.tensor(np.ones((2, 2))), mg.tensor(np.ones((3, 3)))])
    with pytest.raises(TypeError, match="concatenate"):
        mg.cat([mg.tensor([1.0]), [2.0]])
    with pytest.raises(ValueError, match="item"):
        t.item()
    with pytest.raises(TypeError, match="negative_slope"):
        t.leaky_relu("x")
    with pytest.raises(TypeError, match="clamp"):
        t.clamp(min="0")
    with pytest.raises(TypeError, match="index"):
        t[mg.tensor([0.0])]
    with pytest.raises(TypeError):
        t + "a"
    with pytest.raises(TypeError, match="0-d"):
        len(mg.tensor(1.0))
    with pytest.raises(TypeError, match="max"):
        mg.max([1.0, 2.0])
    with pytest.raises(ValueError, match="data"):
        (t * 1).data = np.ones(3)


def test_scalar_sum_and_mean_keep_working():
    a, b = Value(1.0), Value(2.0)
    s = mg.sum([a, b], 3)
    assert s.data == 6.0 and s._op == "sum"
    m = mg.mean([a, b])
    m.backward()
    assert m.data == 1.5 and a.grad == 0.5
    t = mg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert mg.sum(t).item() == 10.0 and mg.mean(t, 0).data.tolist() == [2.0, 3.0]
    assert mg.max(t).item() == 4.0 and mg.min(t, dim=1).values.data.tolist() == [1.0, 3.0]


def test_gradcheck_reports_input_and_element():
    x = mg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = mg.tensor([1.0, 1.0], requires_grad=True)

    def wrong(x, y):
        # the detached factor hides a dependence on x from backward
        return (x * x.detach()).sum() + (y * 2).sum()
    with pytest.raises(mg.GradcheckError, match=r"input 0, element \(0, 0\).*analytic .*numerical ") as info:
        mg.gradcheck(wrong, [x, y])
    import re
    analytic, numerical = map(float, re.search(r"analytic (\S+), numerical (\S+) ", str(info.value)).groups())
    assert numerical == pytest.approx(2 * analytic)    # d(x^2)/dx is twice what backward saw
    with pytest.raises(ValueError, match="no input requires grad"):
        mg.gradcheck(lambda x: x.sum(), [mg.tensor([1.0])])
    assert mg.gradcheck(lambda x, v: (x * v).sum() * v, [x, Value(0.5)])


# ---------------------------------------------------------------------------
# PyTorch float64 parity

torch_ops = {
    "sum": lambda t, dim, keep: t.sum() if dim is None else t.sum(dim=dim, keepdim=keep),
    "mean": lambda t, dim, keep: t.mean() if dim is None else t.mean(dim=dim, keepdim=keep),
}


def _parity(mg_fn, torch_fn, arrays, rtol=1e-9, atol=1e-12):
    torch = pytest.importorskip("torch")
    m_in = leaves(*arrays)
    t_in = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    m_out = mg_fn(*m_in)
    t_out = torch_fn(*t_in)
    np.testing.assert_allclose(m_out.data, t_out.detach().numpy(), rtol=rtol, atol=atol)
    cot = RNG.standard_normal(m_out.shape)
    m_out.backward(cot)
    t_out.backward(torch.tensor(cot))
    for m, t in zip(m_in, t_in):
        expected = np.zeros(m.shape) if t.grad is None else t.grad.numpy()
        np.testing.assert_allclose(m.grad, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_matches_torch(name):
    f, tf, (lo, hi) = UNARY[name]
    x = RNG.uniform(lo, hi, (4, 5))
    if name in ("relu", "abs", "leaky_relu"):
        x[0, :3] = [0.0, -0.0, 0.0]          # the kinks: relu'(0) = 0 as torch
    if name == "clamp":
        x[1, :2] = [-0.5, 1.0]               # the bounds pass the gradient (torch)
    _parity(f, tf, [x])


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
def test_binary_matches_torch(name, shapes):
    f, (lo, hi) = BINARY[name]
    _parity(f, f, [RNG.uniform(lo, hi, s) for s in shapes])


def test_pow_edge_cases_match_torch():
    base = np.array([0.0, 0.0, 2.0, -2.0, 0.0])
    expo = np.array([0.0, 2.0, 0.0, 2.0, 0.5])
    _parity(lambda a, b: a ** b, lambda a, b: a ** b, [base, expo])


@pytest.mark.parametrize("dim,keepdim", REDUCTIONS)
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reductions_match_torch(op, dim, keepdim):
    _parity(lambda t: getattr(t, op)(dim=dim, keepdim=keepdim),
            lambda t: torch_ops[op](t, dim, keepdim), [rand(2, 3, 4)])


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (-1, True), (1, False)])
def test_max_min_with_ties_match_torch(op, dim, keepdim):
    x = RNG.integers(-2, 3, (3, 4, 5)).astype(float)     # many ties

    def mf(t):
        r = getattr(t, op)(dim=dim, keepdim=keepdim)
        return r if dim is None else r.values

    def tf(t):
        r = getattr(t, op)() if dim is None else getattr(t, op)(dim=dim, keepdim=keepdim)
        return r if dim is None else r.values
    _parity(mf, tf, [x])


def test_max_indices_match_torch():
    torch = pytest.importorskip("torch")
    x = RNG.integers(-2, 3, (4, 6)).astype(float)
    x[1, 3] = np.nan
    for dim in (0, 1):
        for op in ("max", "min"):
            m = getattr(mg.tensor(x), op)(dim=dim)
            t = getattr(torch.tensor(x), op)(dim=dim)
            np.testing.assert_array_equal(m.indices, t.indices.numpy())
            np.testing.assert_array_equal(m.values.data, t.values.numpy())


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_ops_match_torch(name):
    torch_versions = {
        "bool_mask": lambda t: t[torch_tensor_bool([True, False])],
        "fancy_repeats": lambda t: t[[0, 1, 0], [2, 2, 2]],
        "T": lambda t: t.permute(2, 1, 0),
        "slice": lambda t: t[:, 1:, ::2],
    }
    _parity(SHAPE_OPS[name], torch_versions.get(name, SHAPE_OPS[name]), [rand(2, 3, 4)])


def torch_tensor_bool(values):
    torch = pytest.importorskip("torch")
    return torch.tensor(values)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_and_stack_match_torch(dim):
    torch = pytest.importorskip("torch")
    arrays = [rand(2, 3), rand(2, 3)]
    _parity(lambda a, b: mg.cat([a, b, a], dim=dim), lambda a, b: torch.cat([a, b, a], dim=dim), arrays)
    _parity(lambda a, b: mg.stack([a, b], dim=dim), lambda a, b: torch.stack([a, b], dim=dim), arrays)


@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
def test_matmul_matches_torch(shapes):
    _parity(lambda a, b: a @ b, lambda a, b: a @ b, [rand(*s) for s in shapes])


def test_tensors_are_not_tracked_by_the_cyclic_garbage_collector():
    import gc
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    assert not gc.is_tracked(t)
    assert not gc.is_tracked((t * 2).sum())
    assert not gc.is_tracked(t[0])


def _random_broadcast_pair(rng):
    """Two shapes numpy can broadcast: a random shape, the other operand
    dropping leading dims and setting some dims to 1."""
    ndim = int(rng.integers(0, 4))
    shape = tuple(int(n) for n in rng.integers(1, 4, ndim))
    other = tuple(1 if rng.random() < 0.4 else n for n in shape[int(rng.integers(0, ndim + 1)):])
    return (shape, other) if rng.random() < 0.5 else (other, shape)


@pytest.mark.parametrize("seed", range(6))
def test_random_broadcast_shapes_gradcheck_and_torch(seed):
    rng = np.random.default_rng(seed)
    sa, sb = _random_broadcast_pair(rng)
    a, b = rng.uniform(0.5, 2.0, sa), rng.uniform(0.5, 2.0, sb)
    for name, (f, _) in BINARY.items():
        assert mg.gradcheck(f, leaves(a, b)), name
        _parity(f, f, [a, b])
    # a reduction over a random (negative) dim of the broadcast result
    out_ndim = max(len(sa), len(sb))
    if out_ndim:
        dim = -int(rng.integers(1, out_ndim + 1))
        _parity(lambda x, y: (x * y).sum(dim=dim, keepdim=bool(seed % 2)),
                lambda x, y: (x * y).sum(dim=dim, keepdim=bool(seed % 2)), [a, b])


def test_numpy_error_state_is_restored_after_ops():
    t = mg.tensor([0.0, 1.0], requires_grad=True)
    (1 / t).log().sum().backward()
    with pytest.warns(RuntimeWarning):
        np.array([1.0]) / 0.0          # the user's own numpy code still warns
    with np.errstate(divide="raise"):
        assert (1 / t).data[0] == np.inf
        with pytest.raises(FloatingPointError):
            np.array([1.0]) / 0.0


def test_buffer_changed_in_place_raises_instead_of_crashing():
    t = mg.tensor(np.ones(4), requires_grad=True)
    t.data.dtype = np.float32          # same bytes, twice the elements
    for op in (lambda: t.sigmoid(), lambda: t[1], lambda: t.softplus()):
        with pytest.raises(TypeError, match="C-contiguous float64"):
            op()
    t.data = np.ones(4)                # assigning a new array is the way
    assert t.sigmoid().shape == (4,)


def test_sum_of_a_list_of_tensors_adds_them_up():
    a, b = leaves(rand(2, 3), rand(3))
    total = mg.sum([a, b, (a * 2).sum()])
    np.testing.assert_allclose(total.data, a.data + b.data + 2 * a.data.sum())
    with pytest.raises(TypeError, match="sum"):
        mg.sum(["a", Value(1.0)])


def test_an_index_beyond_any_int64_is_an_index_error():
    """numpy raises OverflowError for an int index past int64; a Tensor says
    IndexError, as for any index out of bounds (found by the fuzz test)."""
    t = mg.tensor(np.zeros((0, 3)))
    for key in (2**63, (slice(None), 2**63), -2**70):
        with pytest.raises(IndexError):
            t[key]

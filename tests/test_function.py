"""microgrid.autograd.Function: custom ops with torch.autograd.Function's API.

Checked three ways: hand-computed values, central differences (gradcheck),
and torch float64 running the same Function.
"""
import math

import numpy as np
import pytest

import microgrid as mg
from microgrid import Value, Tensor
from microgrid.autograd import Function


class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * 3 * x ** 2


class ScaledExp(Function):
    """exp(k x) with a constant k; saves its output."""
    @staticmethod
    def forward(ctx, x, k):
        out = (x * k).exp()
        ctx.k = k
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, = ctx.saved_tensors
        return grad * ctx.k * out, None


class SplitMul(Function):
    """Two outputs: (x * y, x + y)."""
    calls = 0

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y, x + y

    @staticmethod
    def backward(ctx, g_prod, g_sum):
        SplitMul.calls += 1
        x, y = ctx.saved_tensors
        return g_prod * y + g_sum, g_prod * x + g_sum


def test_value_function_hand_computed():
    x = Value(1.5)
    y = Cube.apply(x)
    assert isinstance(y, Value) and y._op == "Cube" and y._prev == {x}
    (y * 2).backward()
    assert y.data == 1.5 ** 3 and x.grad == pytest.approx(2 * 3 * 1.5 ** 2, rel=1e-15)


def test_tensor_function_hand_computed():
    x = mg.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    y = Cube.apply(x)
    assert isinstance(y, Tensor) and y._op == "Cube" and y.requires_grad
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.data ** 2, rtol=1e-15)


def test_non_node_argument_and_saved_output():
    x = mg.tensor([0.1, -0.4], requires_grad=True)
    y = ScaledExp.apply(x, 2.5)
    assert y.requires_grad
    (y * mg.tensor([1.0, 3.0])).sum().backward()
    np.testing.assert_allclose(x.grad, 2.5 * np.exp(2.5 * x.data) * [1.0, 3.0], rtol=1e-14)


def test_gradcheck_on_functions():
    assert mg.gradcheck(lambda x: Cube.apply(x.sin()) * x, [Value(0.7)])
    assert mg.gradcheck(lambda x: ScaledExp.apply(x, -0.7).sum(), [mg.randn(3, requires_grad=True, seed=1)])
    a, b = mg.randn(2, 2, requires_grad=True, seed=2), mg.randn(2, 2, requires_grad=True, seed=3)
    assert mg.gradcheck(lambda a, b: (SplitMul.apply(a, b)[0] * SplitMul.apply(a, b)[1]).sum(), [a, b])


def test_two_outputs_backward_once_per_pass():
    SplitMul.calls = 0
    x, y = Value(2.0), Value(5.0)
    p, s = SplitMul.apply(x, y)
    (p * s).backward()       # d/dx (xy (x+y)) = 2xy + y^2
    assert SplitMul.calls == 1
    assert x.grad == pytest.approx(2 * 2 * 5 + 25) and y.grad == pytest.approx(2 * 2 * 5 + 4)
    SplitMul.calls = 0
    x.grad = y.grad = 0.0
    p.backward()             # only one output reached: the other's gradient is zero
    assert SplitMul.calls == 1 and (x.grad, y.grad) == (5.0, 2.0)


def test_mark_non_differentiable_and_needs_input_grad():
    seen = {}

    class ArgmaxAndMax(Function):
        @staticmethod
        def forward(ctx, x, flag):
            seen["needs"] = ctx.needs_input_grad
            i = int(np.argmax(x.data))
            index = mg.tensor(float(i))
            ctx.mark_non_differentiable(index)
            ctx.i, ctx.shape = i, x.shape
            return x[i] * 1.0, index

        @staticmethod
        def backward(ctx, g, g_index):
            assert isinstance(g_index, Tensor) and float(g_index.data) == 0.0
            out = np.zeros(ctx.shape)
            out[ctx.i] = g.data
            return out, None

    x = mg.tensor([1.0, 4.0, 2.0], requires_grad=True)
    m, i = ArgmaxAndMax.apply(x, "flag")
    assert seen["needs"] == (True, False)
    assert not i.requires_grad and m.requires_grad and isinstance(m, Value)
    m.backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 0.0])


def test_no_input_requires_grad_gives_plain_outputs():
    y = Cube.apply(mg.tensor([2.0]))
    assert not y.requires_grad and y.is_leaf
    with mg.no_grad():
        z = Cube.apply(Value(2.0))
    assert not z.requires_grad and z._op == ""


def test_forward_runs_under_no_grad():
    modes = []

    class Probe(Function):
        @staticmethod
        def forward(ctx, x):
            modes.append(mg.is_grad_enabled())
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    y = Probe.apply(Value(1.0))
    assert modes == [False] and y._prev and len(y._prev) == 1


def test_wrong_gradient_count_and_shape_name_the_function():
    class TooFew(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g

    x, y = Value(1.0), Value(2.0)
    with pytest.raises(RuntimeError, match=r"TooFew.*incorrect number of gradients \(expected 2, got 1\)"):
        TooFew.apply(x, y).backward()

    class BadShape(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return np.ones(3)

    t = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BadShape.*got \[3\] but expected shape compatible with \[2\]"):
        BadShape.apply(t).sum().backward()

    class GradForConstant(Function):
        @staticmethod
        def forward(ctx, x, k):
            return x * k

        @staticmethod
        def backward(ctx, g):
            return g * 2, 1.0

    with pytest.raises(RuntimeError, match="GradForConstant.*position 2"):
        GradForConstant.apply(Value(1.0), 2.0).backward()

    class WrongType(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return "one"

    with pytest.raises(TypeError, match="WrongType"):
        WrongType.apply(Value(1.0)).backward()


def test_broadcast_gradient_is_summed_back():
    class Spread(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return np.ones((4, 1, 2))

    t = mg.tensor([[1.0, 2.0]], requires_grad=True)
    Spread.apply(t).sum().backward()
    np.testing.assert_array_equal(t.grad, [[4.0, 4.0]])


def test_save_for_backward_and_apply_errors():
    class SavesNumber(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(3)
            return x

    with pytest.raises(TypeError, match="argument 0 is of type int"):
        SavesNumber.apply(Value(1.0))

    class NoBackward(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

    with pytest.raises(NotImplementedError, match="backward"):
        NoBackward.apply(Value(1.0)).backward()
    with pytest.raises(NotImplementedError, match="forward"):
        Function.apply(Value(1.0))


def test_setup_context_style_and_keywords():
    class Scale(Function):
        @staticmethod
        def forward(x, k=3.0):
            return x * k

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.k = inputs[1]

        @staticmethod
        def backward(ctx, g):
            return g * ctx.k, None

    x = Value(2.0)
    y = Scale.apply(x)
    y.backward()
    assert (y.data, x.grad) == (6.0, 3.0)
    x.grad = 0.0
    ScaledExp.apply(x, k=0.5).backward()
    assert x.grad == pytest.approx(0.5 * math.exp(1.0))


def test_explain_shows_one_node_named_after_the_function():
    x = Value(1.5, label="x")
    y = Cube.apply(x)
    y.label = "y"
    text = str(mg.explain(y))
    assert "Cube(x)" in text


def test_graph_replay_refuses_a_function_by_name():
    x = Value(1.5)
    with pytest.raises(ValueError, match="custom Function 'Cube'"):
        mg.Graph(Cube.apply(x) + 1)
    t = mg.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="'Cube'"):
        mg.Graph(Cube.apply(t).sum())


def test_backward_of_a_node_applies_the_function_rule_once():
    x = Value(2.0)
    y = Cube.apply(x)
    y.grad = 1.0
    y._backward()
    y._backward()
    assert x.grad == 24.0


def test_graph_vjp_is_differentiable():
    # the hook the differentiable sweep (create_graph) calls
    x = Value(0.8)
    y = Cube.apply(x)
    gx, = y._graph_vjp(Value(1.0, requires_grad=False))
    assert gx.data == pytest.approx(3 * 0.64)
    gx.backward()                       # d/dx 3x^2 = 6x
    assert x.grad == pytest.approx(6 * 0.8)
    t = mg.tensor([0.5, -1.0], requires_grad=True)
    gt, = Cube.apply(t)._graph_vjp(Tensor(np.ones(2)))
    gt.sum().backward()
    np.testing.assert_allclose(t.grad, 6 * t.data)


def test_a_saved_output_cycle_is_collected():
    import gc
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(500):
        y = ScaledExp.apply(mg.tensor([0.3], requires_grad=True), 2.0)
        y.sum().backward()
    del y
    gc.collect()
    assert len(gc.get_objects()) - before < 50


def test_matches_torch():
    torch = pytest.importorskip("torch")

    def define(base):
        class Fn(base):
            @staticmethod
            def forward(ctx, x, w):
                ctx.save_for_backward(x, w)
                return (x * w).tanh(), x + w

            @staticmethod
            def backward(ctx, g1, g2):
                x, w = ctx.saved_tensors
                t = (x * w).tanh()
                d = g1 * (1 - t * t)
                return d * w + g2, d * x + g2
        return Fn

    rng = np.random.default_rng(0)
    xd, wd = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    Ours, Theirs = define(Function), define(torch.autograd.Function)
    x, w = mg.tensor(xd, requires_grad=True), mg.tensor(wd, requires_grad=True)
    a, b = Ours.apply(x, w)
    ((a * b).sum() + a.sum()).backward()
    tx = torch.tensor(xd, requires_grad=True)
    tw = torch.tensor(wd, requires_grad=True)
    ta, tb = Theirs.apply(tx, tw)
    ((ta * tb).sum() + ta.sum()).backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), rtol=1e-12)

"""Numerical edge cases and backward semantics.

Policy (IEEE 754, as numpy and PyTorch): every op computes in float64 and
returns what the IEEE formula gives, never raising and never warning: inf
and NaN come out where the math says so (exp(1000) = inf, log(0) = -inf,
sqrt(-1) = NaN, 1/0 = inf, 0/0 = NaN, 1e300 * 1e300 = inf, 1e-300 * 1e-300
= 0), a NaN input gives a NaN output, and the scalar (Value) and tensor
ops give the same numbers.  ``microgrid.detect_anomaly()`` turns the first
non-finite result into a FloatingPointError naming the op.

Backward semantics: leaves accumulate across backward() calls, so a second
backward() on the same graph doubles the leaf gradients (bit-exactly when a
leaf gets one contribution per pass, to rounding when several paths reach
it, as each contribution is added as it arrives), while intermediate
gradients are recomputed from zero; a Tensor with more than one element
needs an explicit gradient; backward() reads the parents' data as it is
when backward runs (no version counter: changing ``.data`` of a node the
graph needs changes the gradient, see the tests below).
"""
import math
import warnings

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F

SPECIALS = np.array([np.inf, -np.inf, 1e300, -1e300, 1e-300, -1e-300, 5e-324, 0.0, -0.0,
                     710.0, -710.0, 40.0, -40.0, 1.0, -1.0, np.nan])


def _ieee(f, x):
    with np.errstate(all="ignore"):
        return f(x)


UNARY = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "tanh": np.tanh,
    "sin": np.sin,
    "cos": np.cos,
    "abs": np.abs,
    "relu": lambda x: np.where(np.isnan(x), np.nan, np.maximum(x, 0.0)),
    # the stable two-branch form: exp(x) / (1 + exp(x)) below 0 keeps the
    # subnormal results (sigmoid(-710) = 4.5e-309, not 0)
    "sigmoid": lambda x: np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x))),
    "softplus": lambda x: np.logaddexp(0.0, x),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_tensor_unary_specials_follow_ieee(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = getattr(mg.tensor(SPECIALS), name)().data
    want = _ieee(UNARY[name], SPECIALS)
    np.testing.assert_allclose(out, want, rtol=1e-15, atol=0)      # NaN == NaN here
    assert np.array_equal(np.signbit(out[~np.isnan(out) & (out == 0)]),
                          np.signbit(want[~np.isnan(want) & (want == 0)])) or name in ("relu", "abs")


@pytest.mark.parametrize("name", sorted(UNARY))
def test_value_and_tensor_agree_on_specials(name):
    """The scalar engine and the tensor engine give the same value and the
    same gradient at every special input."""
    for x in SPECIALS:
        v = mg.Value(float(x))
        vo = getattr(v, name)()
        t = mg.tensor([float(x)], requires_grad=True)
        to = getattr(t, name)()
        # libm (scalar) and numpy's vector loops may differ in the last bit
        assert (math.isnan(vo.data) and math.isnan(to.data[0])) or vo.data == pytest.approx(to.data[0], rel=1e-15), (name, x)
        vo.backward()
        to.backward(np.ones(1))
        gv, gt = v.grad, t.grad[0]
        assert (math.isnan(gv) and math.isnan(gt)) or gv == pytest.approx(gt, rel=1e-12), (name, x, gv, gt)


BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power}
PAIRS = [(1e300, 1e300), (1e-300, 1e-300), (1.0, 0.0), (-1.0, 0.0), (0.0, 0.0), (np.inf, np.inf),
         (np.inf, -np.inf), (-8.0, 1 / 3), (0.0, -1.0), (2.0, 1e300), (np.nan, 0.0), (1.0, np.nan),
         (-0.0, 1.0), (5e-324, 0.5)]


@pytest.mark.parametrize("sym", sorted(BINARY))
def test_binary_specials_follow_ieee(sym):
    x = np.array([p[0] for p in PAIRS])
    y = np.array([p[1] for p in PAIRS])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = eval(f"a {sym} b", {"a": mg.tensor(x), "b": mg.tensor(y)}).data
        scalar = [eval(f"a {sym} b", {"a": mg.Value(float(p)), "b": mg.Value(float(q))}).data for p, q in PAIRS]
    want = _ieee(BINARY[sym], (x, y)) if False else _ieee(lambda xy: BINARY[sym](*xy), (x, y))
    np.testing.assert_allclose(out, want, rtol=1e-15, atol=0)
    np.testing.assert_allclose(scalar, want, rtol=1e-15, atol=0)


def test_overflow_and_underflow_of_products():
    assert (mg.Value(1e300) * 1e300).data == math.inf
    assert (mg.Value(1e-300) * 1e-300).data == 0.0
    t = mg.tensor([1e300, 1e-300])
    np.testing.assert_array_equal((t * t).data, [np.inf, 0.0])
    np.testing.assert_array_equal((mg.tensor([[1e200, 1e200]]) @ mg.tensor([[1e200], [1e200]])).data, [[np.inf]])


def test_stable_ops_do_not_overflow():
    """softmax, log_softmax, cross_entropy, BCE with logits and softplus are
    computed stably: huge finite logits give finite results."""
    x = mg.tensor([[1e300, 0.0, -1e300], [710.0, 709.0, -710.0]], requires_grad=True)
    np.testing.assert_allclose(F.softmax(x, 1).data.sum(axis=1), [1.0, 1.0])
    assert np.all(np.isfinite(F.log_softmax(mg.tensor([[800.0, 0.0]]), 1).data))
    loss = F.cross_entropy(mg.tensor([[800.0, 0.0], [0.0, 800.0]], requires_grad=True), np.array([0, 0]))
    assert loss.data == pytest.approx(400.0)
    assert np.isfinite(F.binary_cross_entropy_with_logits(mg.tensor([1000.0, -1000.0]), np.array([0.0, 1.0])).data)
    assert mg.tensor([1000.0]).softplus().data[0] == 1000.0
    assert mg.Value(-1000.0).sigmoid().data == 0.0 and mg.Value(1000.0).sigmoid().data == 1.0


def test_softmax_of_inf_is_nan_as_in_ieee():
    # inf - inf in the shift: NaN, as PyTorch gives
    out = F.softmax(mg.tensor([[np.inf, 0.0]]), 1).data
    assert np.isnan(out[0, 0])


def test_no_op_raises_on_specials_outside_anomaly_mode():
    x = mg.tensor(SPECIALS.reshape(4, 4), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = (x.exp() * x.log() + x.sqrt() / x - x ** 0.5).sum() + (x @ x).mean() + F.softmax(x, 1).sum()
        y.backward()
    assert np.isnan(y.data)


def test_nan_in_a_max_pool_window_comes_out():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    out = F.max_pool2d(mg.tensor(x), 2).data
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1, 1])
    assert np.isnan(mg.tensor(x).max().data)
    assert np.isnan(mg.tensor(x).max(dim=3).values.data[0, 0, 1])


# ---------------------------------------------------------------------------
# Anomaly mode on tensor ops

def test_anomaly_names_the_first_tensor_op_forward():
    x = mg.tensor([1.0, 0.0], requires_grad=True)
    with mg.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"forward pass of 'log'"):
            x.log().exp()


def test_anomaly_names_matmul_overflow():
    a = mg.tensor([[1e200, 1e200]], requires_grad=True)
    with mg.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"forward pass of '@'"):
            a @ a.T


def test_anomaly_names_conv2d():
    x = mg.tensor(np.full((1, 1, 3, 3), 1e200), requires_grad=True)
    w = mg.tensor(np.full((1, 1, 2, 2), 1e200), requires_grad=True)
    with mg.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"forward pass of 'conv2d'"):
            F.conv2d(x, w)


def test_anomaly_names_the_backward_op():
    x = mg.tensor([0.0, 4.0], requires_grad=True)
    y = x.sqrt().sum()               # forward is finite; d sqrt/dx at 0 is inf
    with mg.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"backward pass of 'sqrt'"):
            y.backward()


def test_anomaly_names_a_loss():
    x = mg.tensor([[np.inf, 0.0]], requires_grad=True)   # a leaf may hold inf
    with mg.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"forward pass of 'cross_entropy'"):
            F.cross_entropy(x, np.array([1]))


def test_anomaly_off_again_after_the_block():
    with mg.detect_anomaly():
        pass
    assert not mg.is_anomaly_enabled()
    assert np.isneginf(mg.tensor([0.0]).log().data[0])


# ---------------------------------------------------------------------------
# Backward semantics

def test_second_backward_doubles_scalar_leaf_gradients():
    a, b = mg.Value(0.7), mg.Value(-1.3)
    c = (a * b).tanh() * b.exp()          # each leaf gets one contribution per pass
    c.backward()
    first = (a.grad, b.grad)
    c.backward()
    assert (a.grad, b.grad) == (2 * first[0], 2 * first[1])     # exactly: leaves accumulate
    assert c.grad == 1.0                                         # the root is reseeded, not accumulated


def test_second_backward_with_shared_leaves_doubles_bit_exactly():
    """A leaf reached by several paths: each pass adds up its contributions
    first, then adds the total to .grad, so the second pass doubles exactly."""
    a, b = mg.Value(0.7), mg.Value(-1.3)
    c = (a * b).tanh() + a.exp() * b + mg.dot([a, b, a], [b, a, a])
    c.backward()
    first = (a.grad, b.grad)
    c.backward()
    assert (a.grad, b.grad) == (2 * first[0], 2 * first[1])
    g = mg.Graph(c)
    a.grad, b.grad = first
    g.backward()
    assert (a.grad, b.grad) == (2 * first[0], 2 * first[1])


def test_second_backward_doubles_tensor_leaf_gradients():
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    w = mg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    v = mg.Value(0.4)
    h = (x @ w).tanh()
    y = (h * v).sum()
    y.backward()
    first = (x.grad.copy(), w.grad.copy(), v.grad)
    mid = h.grad.copy()
    y.backward()
    np.testing.assert_array_equal(x.grad, 2 * first[0])
    np.testing.assert_array_equal(w.grad, 2 * first[1])
    assert v.grad == 2 * first[2]
    np.testing.assert_array_equal(h.grad, mid)                   # intermediate: recomputed, not doubled


def test_backward_of_a_tensor_needs_a_gradient():
    x = mg.tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"^grad can be implicitly created only for scalar outputs$"):
        (x * 2).backward()
    (x * 2).sum().backward()                        # one element: fine
    (x * 2)[0:1, 0:1].backward()                    # shape (1, 1), one element: fine too
    np.testing.assert_array_equal(x.grad, [[4.0, 2.0], [2.0, 2.0]])


def test_changing_data_after_forward_changes_the_gradient():
    """No version counter: backward reads the parents' data when it runs.
    The forward result keeps the old value; the gradient uses the new one."""
    a, b = mg.Value(2.0), mg.Value(3.0)
    c = a * b
    b.data = 10.0
    c.backward()
    assert c.data == 6.0          # computed with b = 3
    assert a.grad == 10.0         # dc/da read b's current data
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    w = mg.tensor([3.0, 4.0], requires_grad=True)
    y = (x * w).sum()
    w.data[:] = [30.0, 40.0]       # in place, as an optimizer step would
    y.backward()
    assert y.item() == 11.0
    np.testing.assert_array_equal(x.grad, [30.0, 40.0])


def test_recompute_after_changing_data_restores_consistency():
    """A Graph replay (forward()) recomputes every node from the current
    leaves, after which values and gradients agree again."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    w = mg.tensor([3.0, 4.0], requires_grad=True)
    g = mg.Graph((x * w).sum())
    w.data[:] = [30.0, 40.0]
    g.forward()
    assert g.root.item() == 110.0

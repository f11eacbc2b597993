"""In-place tensor ops: PyTorch's results, PyTorch's errors, never a wrong gradient."""
import numpy as np
import pytest

import microgrid as mg


def t(values, requires_grad=False):
    return mg.tensor(np.asarray(values, dtype=float), requires_grad=requires_grad)


def test_update_under_no_grad_changes_the_parameter():
    """The tutorial's ``with no_grad(): param -= lr * param.grad``."""
    w = t([1.0, -2.0], requires_grad=True)
    buffer = w.data
    (w * w).sum().backward()
    with mg.no_grad():
        w -= 0.25 * w.grad
    assert w.tolist() == [0.5, -1.0] and w.data is buffer
    assert w.is_leaf and w.requires_grad and w._version == 1


@pytest.mark.parametrize("name, other, expected", [
    ("add_", 2.0, [3.0, 4.0]), ("sub_", [1.0, 0.5], [0.0, 1.5]),
    ("mul_", 3.0, [3.0, 6.0]), ("div_", [2.0, 4.0], [0.5, 0.5]),
])
def test_methods_and_operators(name, other, expected):
    a = t([1.0, 2.0])
    assert getattr(a, name)(other) is a and a.tolist() == expected and a._version == 1
    b = t([1.0, 2.0])
    op = {"add_": "__iadd__", "sub_": "__isub__", "mul_": "__imul__", "div_": "__itruediv__"}[name]
    assert getattr(b, op)(other) is b and b.tolist() == expected


def test_alpha_fill_zero_copy_clamp():
    a = t([1.0, 2.0])
    a.add_(t([1.0, 1.0]), alpha=-2)
    assert a.tolist() == [-1.0, 0.0]
    a.sub_(1, alpha=0.5)
    assert a.tolist() == [-1.5, -0.5]
    a.clamp_(min=-1.0)
    assert a.tolist() == [-1.0, -0.5]
    a.fill_(7)
    assert a.tolist() == [7.0, 7.0]
    a.copy_(t([[-0.0, 3.0]])[0])
    assert a.tolist() == [-0.0, 3.0] and np.signbit(a.data[0])
    a.zero_()
    assert a.tolist() == [0.0, 0.0] and a._version == 6


def test_bad_input():
    a = t([1.0, 2.0])
    with pytest.raises(TypeError, match=r"add_\(other\)"):
        a.add_("x")
    with pytest.raises(TypeError, match=r"add_\(alpha=...\)"):
        a.add_(1.0, alpha="2")
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        a.add_(t([[1.0], [2.0]]))
    with pytest.raises(TypeError, match=r"clamp_\(min=...\)"):
        a.clamp_(min="0")
    with pytest.raises(RuntimeError, match="0-dimension"):
        a.fill_(t([1.0]))
    assert a.tolist() == [1.0, 2.0] and a._version == 0


def test_leaf_requiring_grad_refuses_outside_no_grad():
    w = t([1.0], requires_grad=True)
    for op in (lambda: w.add_(1.0), lambda: w.mul_(2.0), lambda: w.zero_()):
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
            op()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w += 1
    assert w.tolist() == [1.0]


def test_value_the_graph_needs_changed_raises():
    w = t([1.0, 2.0], requires_grad=True)
    x = t([3.0, 4.0])
    y = (w * x).sum()          # mul's backward reads x
    x.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*operand 1 of '\\*'"):
        y.backward()
    s = w.sigmoid()            # sigmoid's backward reads its own output
    with mg.no_grad():
        s.mul_(2)
    with pytest.raises(RuntimeError, match="output of 'sigmoid'"):
        s.sum().backward()
    w2 = t([1.0, 2.0], requires_grad=True)
    y2 = (w2 @ t([1.0, 1.0]))
    with mg.no_grad():
        w2 -= 1.0              # a parameter changed between forward and backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y2.backward()


def test_values_the_graph_does_not_read_may_change():
    """add's backward reads no operand, sigmoid's none of its input: as PyTorch."""
    w = t([1.0, 2.0], requires_grad=True)
    x = t([3.0, 4.0])
    y = (w + x).sum() + w.sigmoid().sum()
    x.add_(1.0)
    y.backward()
    s = 1 / (1 + np.exp(-np.array([1.0, 2.0])))
    assert np.allclose(w.grad, 1 + s * (1 - s), rtol=0, atol=1e-15)


def test_non_leaf_rebases_onto_the_op():
    w = t([1.0, 2.0], requires_grad=True)
    a = w * 2
    a.mul_(3)                  # a is now (w * 2) * 3
    a.add_(w)                  # and then + w
    assert a.tolist() == [7.0, 14.0] and not a.is_leaf and a._version == 2
    a.sum().backward()
    assert w.grad.tolist() == [7.0, 7.0]


def test_consumer_of_the_old_value_refuses_instead_of_misrouting():
    w = t([1.0, 2.0], requires_grad=True)
    a = w * 2
    b = a * 5                  # built from a's old value (its mul reads no a: still refused)
    a.mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (b.sum() + a.sum()).backward()


def test_constant_takes_history_when_a_gradient_flows_in():
    w = t([1.0, 2.0], requires_grad=True)
    x = t([0.5, 0.5])
    x += w * w                 # x now depends on w, as in PyTorch
    assert x.requires_grad and not x.is_leaf
    x.sum().backward()
    assert w.grad.tolist() == [2.0, 4.0]
    y = t([0.0, 0.0])
    y.copy_(w)                 # the gradient flows to the source
    w.grad = None
    (y * y).sum().backward()
    assert w.grad.tolist() == [2.0, 4.0]


def test_torch_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, x0 = rng.normal(size=(3,)), rng.normal(size=(3,))

    def run(lib, tensor):
        w = tensor(w0, requires_grad=True)
        x = tensor(x0)
        a = w * x
        a.add_(w, alpha=0.5)
        a.mul_(w)
        a.clamp_(min=-0.5, max=1.0)
        a.div_(2.0)
        a.sub_(x)
        (a * a).sum().backward()
        with lib.no_grad():
            w -= 0.1 * w.grad
        return np.asarray(a.detach().numpy() if hasattr(a, "numpy") and not isinstance(a, mg.Tensor) else a.data), \
            np.asarray(w.detach().numpy() if not isinstance(w, mg.Tensor) else w.data)

    ours = run(mg, lambda v, requires_grad=False: mg.tensor(v, requires_grad=requires_grad))
    theirs = run(torch, lambda v, requires_grad=False: torch.tensor(v, dtype=torch.float64, requires_grad=requires_grad))
    for o, e in zip(ours, theirs):
        assert np.allclose(o, e, rtol=0, atol=1e-15)

"""Grad mode: no_grad, enable_grad, set_grad_enabled, is_grad_enabled."""
import threading
import tracemalloc

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F
from microgrid import Tensor, Value


def test_no_grad_value_results_are_leaves():
    a, b = Value(2.0), Value(-3.0)
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        c = (a * b + b ** 2).relu()
        d = mg.dot([a, b], [b, a], bias=a)
        e = mg.sum([a, b, c])
    assert mg.is_grad_enabled()
    assert c.data == 3.0 and d.data == -10.0 and e.data == 2.0
    for node in (c, d, e):
        assert node._prev == set() and not node.requires_grad and node._op == ''
    with pytest.raises(RuntimeError, match="does not require grad"):
        e.backward()                      # as PyTorch: nothing to differentiate
    assert a.grad == 0.0 and b.grad == 0.0


def test_no_grad_tensor_results_are_leaves():
    w = mg.tensor(np.ones((2, 3)), requires_grad=True)
    x = mg.tensor(np.arange(6.0).reshape(3, 2))
    with mg.no_grad():
        y = F.relu(w @ x).sum(dim=0)
        values, indices = (w * 2).max(dim=1)       # op state (indices) stays readable
        element = w[0, 1]
    assert y.tolist() == [12.0, 18.0]
    assert np.array_equal(np.asarray(indices), [0, 0])
    for node in (y, values, element):
        assert not node.requires_grad and node._prev == set()
    # the same expression outside no_grad records the graph again
    z = F.relu(w @ x).sum()
    z.backward()
    assert np.array_equal(w.grad, np.tile(x.data.sum(axis=1), (2, 1)))


def test_enable_grad_inside_no_grad_and_nesting():
    a = Value(1.5)
    with mg.no_grad():
        with mg.enable_grad():
            assert mg.is_grad_enabled()
            b = a * a
        assert not mg.is_grad_enabled()
        with mg.no_grad():
            assert not mg.is_grad_enabled()
        assert not mg.is_grad_enabled()
    b.backward()
    assert a.grad == 3.0


def test_mode_restored_after_exception():
    with pytest.raises(ZeroDivisionError):
        with mg.no_grad():
            1 / 0
    assert mg.is_grad_enabled()


def test_decorators():
    a = Value(2.0)

    @mg.no_grad()
    def f(x):
        assert not mg.is_grad_enabled()
        return x * x

    @mg.no_grad
    def g(x):
        return x * x

    @mg.set_grad_enabled(False)
    def h(x):
        return x * x

    assert mg.is_grad_enabled()          # set_grad_enabled as a decorator applies per call
    for fn in (f, g, h):
        assert fn(a)._prev == set() and fn.__name__ in "fgh"
        assert mg.is_grad_enabled()

    @mg.enable_grad()
    def k(x):
        return x * x

    with mg.no_grad():
        assert k(a)._prev == {a}


def test_set_grad_enabled_call_and_context():
    try:
        mg.set_grad_enabled(False)
        assert not mg.is_grad_enabled()
        with mg.set_grad_enabled(True):
            assert mg.is_grad_enabled()
        assert not mg.is_grad_enabled()
    finally:
        mg.set_grad_enabled(True)
    with pytest.raises(TypeError, match="set_grad_enabled\\(mode\\)"):
        mg.set_grad_enabled(1)
    with pytest.raises(TypeError, match="decorates a callable"):
        mg.no_grad()(3)


def test_grad_mode_is_per_thread():
    seen = []

    def worker():
        seen.append(mg.is_grad_enabled())
        with mg.no_grad():
            seen.append(mg.is_grad_enabled())
            seen.append((Value(1.0) * 2)._prev == set())

    with mg.no_grad():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert not mg.is_grad_enabled()
    assert seen == [True, False, True]
    a = Value(1.0)
    assert a in (a * 2)._prev             # the other thread's exit left this one recording


def test_optimizer_step_records_no_graph():
    p = mg.tensor([1.0, -2.0], requires_grad=True)
    v = Value(0.5)
    (p * p).sum().backward()
    (v * v).backward()
    opt = mg.optim.SGD([p, v], lr=0.1, momentum=0.9)
    opt.step()
    assert p.tolist() == [0.8, -1.6] and v.data == 0.4
    assert p.requires_grad and p._parents() == () and v._prev == set()


def test_no_grad_loop_allocates_no_graph():
    """10^5 ops under no_grad keep nothing alive; with grad the chain holds
    every node (the same loop, measured by tracemalloc)."""
    x, y = Value(0.999), Value(1e-3)

    def run(n):
        acc = Value(1.0)
        for _ in range(n):
            acc = acc * x + y
        return acc

    def retained(context):
        tracemalloc.start()
        try:
            with context:
                acc = run(100_000)
            current, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        del acc
        return current

    with_grad = retained(mg.enable_grad())
    without = retained(mg.no_grad())
    assert with_grad > 100_000 * 2 * 64          # two nodes per step are kept
    assert without < 10_000                      # one Value and loop temporaries

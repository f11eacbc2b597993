"""Nodes whose rule is Python code: micrograd's extension patterns.

``out = Value(t, (self,), 'tanh'); out._backward = _backward`` makes an op;
``node._backward()`` applies one node's rule by hand; ``Value.tanh = tanh``
extends the class.  Checked against hand-computed values, central
differences, and micrograd 0.1.0 running the same code.
"""
import gc
import math
import sys

import pytest

import microgrid as mg
from microgrid import Value


def lecture_tanh(self):
    # micrograd lecture's tanh, as written there
    x = self.data
    t = (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1)
    out = Value(t, (self,), 'tanh')

    def _backward():
        self.grad += (1 - t ** 2) * out.grad
    out._backward = _backward
    return out


def cube(v):
    out = Value(v.data ** 3, (v,), 'cube')

    def _backward():
        v.grad += 3 * v.data ** 2 * out.grad
    out._backward = _backward
    return out


def test_hand_built_node_backpropagates_in_order():
    x = Value(0.7)
    y = cube(x * 2.0)            # a table op under, table ops over the custom node
    z = y * y + y
    z.backward()
    u = 1.4
    assert z.data == pytest.approx(u ** 6 + u ** 3)
    assert x.grad == pytest.approx((6 * u ** 5 + 3 * u ** 2) * 2, rel=1e-12)
    assert y.grad == pytest.approx(2 * u ** 3 + 1, rel=1e-12)


def test_hand_built_node_matches_central_differences():
    def f(x):
        return cube(x.sigmoid()) * x
    x = Value(0.3)
    assert mg.gradcheck(f, [x])


def test_reading_backward_applies_a_table_rule_once():
    a, b = Value(2.0), Value(-3.0)
    c = a * b
    c.grad = 1.5
    c._backward()
    assert (a.grad, b.grad) == (-4.5, 3.0)
    c._backward()                      # twice: adds again, as micrograd's does
    assert (a.grad, b.grad) == (-9.0, 6.0)
    Value(1.0)._backward()             # a leaf's rule does nothing
    s = mg.dot([a, b], [b, a], 1.0)    # a fused node too
    s.grad = 1.0
    a.grad = b.grad = 0.0
    s._backward()
    assert (a.grad, b.grad) == (2 * b.data, 2 * a.data)


def test_reading_backward_of_a_hand_built_node_returns_the_callable():
    x = Value(0.5)
    y = cube(x)
    rule = y._backward
    assert callable(rule) and rule.__name__ == "_backward"
    y.grad = 2.0
    rule()
    assert x.grad == pytest.approx(3 * 0.25 * 2.0)
    z = Value(1.0, (x,), 'noop')       # no rule assigned: does nothing
    z.grad = 1.0
    z._backward()
    z.backward()
    assert x.grad == pytest.approx(1.5)


def test_assigning_backward_to_a_table_node_or_a_non_callable_is_refused():
    x = Value(1.0)
    with pytest.raises(TypeError, match="_backward"):
        (x * 2)._backward = lambda: None
    with pytest.raises(TypeError, match="leaf"):
        x._backward = lambda: None
    with pytest.raises(TypeError, match="callable"):
        cube(x)._backward = 3


def test_lecture_walk_by_hand(monkeypatch):
    monkeypatch.setattr(Value, "tanh", lecture_tanh)
    x1, x2 = Value(2.0, label='x1'), Value(0.0, label='x2')
    w1, w2 = Value(-3.0, label='w1'), Value(1.0, label='w2')
    b = Value(6.8813735870195432, label='b')
    x1w1, x2w2 = x1 * w1, x2 * w2
    x1w1x2w2 = x1w1 + x2w2
    n = x1w1x2w2 + b
    o = n.tanh()
    assert o._op == "tanh" and o._prev == {n}
    o.grad = 1.0
    for node in (o, n, b, x1w1x2w2, x2w2, x1w1):
        node._backward()
    assert n.grad == pytest.approx(0.5, abs=1e-12)
    assert (x1.grad, w1.grad, x2.grad, w2.grad) == pytest.approx((-1.5, 1.0, 0.5, 0.0), abs=1e-12)


def test_methods_assigned_to_the_class_work_on_every_value(monkeypatch):
    monkeypatch.setattr(Value, "tanh", lecture_tanh)
    monkeypatch.setattr(Value, "double", lambda self: self * 2, raising=False)
    monkeypatch.setattr(Value, "half", property(lambda self: self.data / 2), raising=False)
    v = (Value(0.3) + 1).double()      # an op result, then a method of the user
    assert v._op == "*" and v.data == pytest.approx(2.6)
    assert Value(4.0).half == 2.0 and (Value(1.0) * 3).half == 1.5
    t = v.tanh()
    assert t._op == "tanh" and t.data == pytest.approx(math.tanh(2.6))


def test_reflected_operator_assigned_to_the_class(monkeypatch):
    calls = []

    def radd(self, other):
        calls.append(other)
        return self + other
    monkeypatch.setattr(Value, "__radd__", radd)
    out = 2 + Value(1.0)
    assert out.data == 3.0 and calls == [2]
    assert (Value(1.0) + 2).data == 3.0 and calls == [2]   # __add__ is still the compiled one


def test_optable_methods_restored_after_patching(monkeypatch):
    monkeypatch.setattr(Value, "tanh", lecture_tanh)
    assert Value(0.1).tanh()._op == "tanh"
    monkeypatch.undo()
    y = Value(0.1).tanh()
    assert mg.core.optable.row_of(y).name == "tanh" and type(y) is Value


def test_values_stay_untracked_and_small():
    v = Value(1.0)
    w = v * 2 + 1
    assert not gc.is_tracked(v) and not gc.is_tracked(w)
    assert sys.getsizeof(v) == sys.getsizeof(w) == 64     # one cache line
    h = Value(1.0, (v,), 'f')          # only a node built by hand is tracked
    assert gc.is_tracked(h) and isinstance(h, Value)


def test_a_rule_closing_over_its_node_is_collected():
    # out -> _backward -> its closure -> out: a cycle the collector must free
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(2000):
        y = cube(cube(Value(0.5)))
        y.backward()
    del y
    gc.collect()
    assert len(gc.get_objects()) - before < 50


def test_matches_micrograd():
    engine = pytest.importorskip("micrograd.engine")

    def run(V):
        def tanh(self):
            t = math.tanh(self.data)
            out = V(t, (self,), 'tanh')

            def _backward():
                self.grad += (1 - t ** 2) * out.grad
            out._backward = _backward
            return out
        a, b = V(0.4), V(-1.3)
        h = tanh(a * b + a)
        loss = tanh(h * h + b) * a
        loss.backward()
        return loss.data, a.grad, b.grad
    ours, theirs = run(Value), run(engine.Value)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)


def test_graph_refuses_a_hand_built_node():
    x = Value(1.0)
    with pytest.raises(ValueError, match="'cube'"):
        mg.Graph(cube(x) * 2)


def test_bad_data_is_a_type_error_for_hand_built_nodes_too():
    x = Value(1.0)
    for make in (lambda: Value("a"), lambda: Value("a", (x,), 'f'),
                 lambda: Value(None, _children=(x,)), lambda: Value.__new__(Value, "a", (x,), 'f').__init__("a")):
        with pytest.raises(TypeError, match=r"Value\(data=\.\.\.\)"):
            make()
    with pytest.raises(TypeError, match="_children"):
        Value(1.0, (1.0,), 'f')

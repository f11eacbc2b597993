"""micrograd's nn API (Module, Neuron, Layer, MLP) and micrograd programs
running unchanged on microgrid."""
import math
import random

import pytest

import microgrid as mg
from microgrid.engine import Value
from microgrid.nn import MLP, Layer, Module, Neuron


def test_reprs_and_parameter_counts():
    random.seed(0)
    n = Neuron(3)
    assert repr(n) == "ReLUNeuron(3)" and repr(Neuron(2, nonlin=False)) == "LinearNeuron(2)"
    assert len(n.parameters()) == 4
    layer = Layer(2, 3, nonlin=False)
    assert repr(layer) == "Layer of [LinearNeuron(2), LinearNeuron(2), LinearNeuron(2)]"
    model = MLP(2, [16, 16, 1])
    assert len(model.parameters()) == 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1 == 337
    assert repr(model).startswith("MLP of [Layer of [ReLUNeuron(2), ")
    assert repr(model).endswith("Layer of [LinearNeuron(16)]]")
    assert Module().parameters() == []


def test_seeded_initialisation_draws_like_micrograd():
    # micrograd draws random.uniform(-1, 1) per weight, neuron by neuron, bias 0
    random.seed(42)
    model = MLP(3, [4, 2])
    random.seed(42)
    expected = []
    for nin, nout in [(3, 4), (4, 2)]:
        for _ in range(nout):
            expected += [random.uniform(-1, 1) for _ in range(nin)] + [0.0]
    assert [p.data for p in model.parameters()] == expected


def test_neuron_is_one_fused_node_and_layer_returns_bare_single_output():
    random.seed(1)
    n = Neuron(5, nonlin=False)
    out = n([1.0, 2.0, 3.0, 4.0, 5.0])
    assert out._op == "dot" and len(out._prev) == 5 + 5 + 1
    assert out.data == pytest.approx(sum(w.data * x for w, x in zip(n.w, [1, 2, 3, 4, 5])))
    assert isinstance(Layer(2, 1)([1.0, 2.0]), Value)
    assert len(Layer(2, 3)([1.0, 2.0])) == 3


def test_zero_grad():
    random.seed(2)
    model = MLP(2, [3, 1])
    model([Value(1.0), Value(-1.0)]).backward()
    assert any(p.grad != 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())


def make_moons(n, seed):
    """Two interleaving half circles with noise, in micrograd's demo's role."""
    rng = random.Random(seed)
    X, y = [], []
    for i in range(n):
        t = math.pi * rng.random()
        if i % 2:
            X.append([math.cos(t) + rng.gauss(0, 0.1), math.sin(t) + rng.gauss(0, 0.1)])
            y.append(-1)
        else:
            X.append([1 - math.cos(t) + rng.gauss(0, 0.1), 0.5 - math.sin(t) + rng.gauss(0, 0.1)])
            y.append(1)
    return X, y


def demo_training(Value, MLP, steps):
    """micrograd's demo notebook loop: SVM max-margin loss, L2, SGD with decay."""
    random.seed(1337)
    X, y = make_moons(100, seed=0)
    model = MLP(2, [16, 16, 1])
    history = []
    for k in range(steps):
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        alpha = 1e-4
        reg_loss = alpha * sum((p * p for p in model.parameters()))
        total_loss = data_loss + reg_loss
        accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        history.append((total_loss.data, sum(accuracy) / len(accuracy)))
    return history


def test_micrograd_demo_trains():
    history = demo_training(Value, MLP, 40)
    assert history[-1][0] < history[0][0] * 0.5
    assert history[-1][1] >= 0.85


def test_micrograd_demo_matches_micrograd_step_for_step():
    micrograd = pytest.importorskip("micrograd")
    import micrograd.engine
    import micrograd.nn
    ours = demo_training(Value, MLP, 3)
    theirs = demo_training(micrograd.engine.Value, micrograd.nn.MLP, 3)
    for (loss, acc), (mloss, macc) in zip(ours, theirs):
        assert loss == pytest.approx(mloss, rel=1e-9) and acc == macc


def trace(root):
    """The notebook-style graph walk over _prev, as micrograd users write it."""
    nodes, edges = set(), set()

    def visit(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                visit(child)
    visit(root)
    return nodes, edges


def test_notebook_graph_drawing_helper_runs_unchanged():
    graphviz = pytest.importorskip("graphviz")
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(6.8813735870195432, label="b")  # makes tanh(n) = 1/sqrt(2)
    n = x1 * w1 + x2 * w2 + b
    o = n.tanh()
    o.backward()
    nodes, edges = trace(o)
    dot = graphviz.Digraph(format="svg", graph_attr={"rankdir": "LR"})
    for node in nodes:
        uid = str(id(node))
        dot.node(name=uid, label="{ %s | data %.4f | grad %.4f }" % (node.label, node.data, node.grad),
                 shape="record")
        if node._op:
            dot.node(name=uid + node._op, label=node._op)
            dot.edge(uid + node._op, uid)
    for n1, n2 in edges:
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)
    source = dot.source
    assert len(nodes) == 10 and len(edges) == 9
    assert "tanh" in source and "x1" in source and "grad 0.5000" in source  # 1 - tanh(n)^2


def test_microgrid_sum_builds_one_node_for_the_demo_loss():
    random.seed(0)
    model = MLP(2, [4, 1])
    loss = mg.sum(p * p for p in model.parameters())
    assert loss._op == "sum" and len(loss._prev) == len(model.parameters())


def test_unfused_neuron_builds_micrograds_graph():
    random.seed(3)
    fused = Neuron(3, nonlin=False)
    random.seed(3)
    plain = Neuron(3, nonlin=False, fused=False)
    x = [1.0, -2.0, 0.5]
    a, b = fused(x), plain(x)
    assert a._op == "dot" and b._op == "+"
    nodes, edges = trace(b)
    # micrograd: b + w0*x0 + w1*x1 + w2*x2 -> 3 '*', 3 '+', 3 weights, 3 inputs, the bias
    assert len(nodes) == 13 and len(edges) == 12
    assert b.data == pytest.approx(a.data, rel=1e-15)
    a.backward()
    grads = [p.grad for p in fused.parameters()]
    b.backward()
    assert [p.grad for p in plain.parameters()] == pytest.approx(grads, rel=1e-15)
    assert repr(MLP(2, [3, 1], fused=False)) == repr(MLP(2, [3, 1]))
    with pytest.raises(TypeError, match="fused"):
        Neuron(2, fused="no")


def test_layer_builds_plain_neurons_in_one_call_and_calls_any_other_neuron():
    # a Layer builds its plain neurons without a Python call each: the same
    # nodes as calling them; a subclass, an unfused neuron and one whose
    # fields were replaced are still honoured
    random.seed(4)
    layer = Layer(3, 4)
    x = [Value(1.0), Value(-2.0), Value(0.5)]
    out = layer(iter(x))                 # any iterable: every neuron reads it
    for n, o in zip(layer.neurons, out):
        ref = n(x)
        (pre,), (ref_pre,) = o._parents(), ref._parents()
        assert (o._op, o.data) == (ref._op, ref.data) == ("ReLU", max(pre.data, 0.0))
        assert pre._op == "dot" and pre._parents() == ref_pre._parents()
    linear = Layer(3, 2, nonlin=False)([1.0, 2.0, 3.0])
    assert all(o._op == "dot" for o in linear)

    calls = []

    class Traced(Neuron):
        def __call__(self, x):
            calls.append(len(x))
            return super().__call__(x)

    layer.neurons[1] = Traced(3)
    layer.neurons[2] = Neuron(3, fused=False)
    layer.neurons[3].w = layer.neurons[3].w[:2] + [Value(7.0)]
    out = layer(x)
    assert calls == [3] and out[2]._op == "ReLU" and out[2]._parents()[0]._op == "+"
    assert out[3]._parents()[0].data == pytest.approx(
        sum(w.data * v.data for w, v in zip(layer.neurons[3].w, x)) + layer.neurons[3].b.data)
    with pytest.raises(ValueError, match="3 inputs"):
        Neuron(2, fused=False)(x)

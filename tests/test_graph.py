"""Graph replay: recorded forward and backward passes equal fresh builds."""
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

import microgrid as mg
from microgrid import Graph, Value
from microgrid.nn import MLP

from conftest import run_example
from test_engine import build_layered_graph, build_random_graph, layers, step


def grads(values):
    return [v.grad for v in values]


@settings(max_examples=100, deadline=None)
@given(spec=st.lists(step, min_size=1, max_size=25),
       xs=st.lists(st.floats(-1.5, 1.5), min_size=1, max_size=4),
       ys=st.lists(st.floats(-1.5, 1.5), min_size=4, max_size=4))
def test_replay_equals_rebuild_bit_for_bit_on_random_graphs(spec, xs, ys):
    check_replay_equals_rebuild(build_random_graph, spec, xs, ys)


@settings(max_examples=60, deadline=None)
@given(spec=layers, xs=st.lists(st.floats(-1.5, 1.5), min_size=1, max_size=4),
       ys=st.lists(st.floats(-1.5, 1.5), min_size=4, max_size=4))
def test_replay_equals_rebuild_bit_for_bit_on_layered_graphs(spec, xs, ys):
    # (backward() enters these breadth first: replay adds up in its order)
    check_replay_equals_rebuild(build_layered_graph, spec, xs, ys)


def check_replay_equals_rebuild(build, spec, xs, ys):
    leaves = [Value(x) for x in xs]
    g = Graph(build(spec, leaves))
    for leaf, y in zip(leaves, ys):
        leaf.data = y
        leaf.grad = 0.0
    replayed = g.forward()
    g.backward()
    fresh_leaves = [Value(y) for y in ys[:len(xs)]]
    fresh = build(spec, fresh_leaves)
    fresh.backward()
    assert replayed == fresh.data or (math.isnan(replayed) and math.isnan(fresh.data))
    for a, b in zip(grads(leaves), grads(fresh_leaves)):
        assert a == b or (math.isnan(a) and math.isnan(b))
    assert g.matches(fresh)


def check_every_node_replays(build, n_leaves, rng):
    """A graph built from n_leaves leaves, replayed on two rounds of new leaf
    values: every node's value and gradient equals a fresh build's, bit for
    bit."""
    leaves = [Value(rng.uniform(-2, 2)) for _ in range(n_leaves)]
    g = Graph(build(leaves))
    for _ in range(2):
        for leaf in leaves:
            leaf.data, leaf.grad = rng.uniform(-2, 2), 0.0
        g.forward()
        g.backward()
        fresh = build([Value(leaf.data) for leaf in leaves])
        fresh.backward()
        fresh_nodes = Graph(fresh).nodes       # (float.hex: -0.0 is not 0.0)
        assert [v.data.hex() for v in g.nodes] == [v.data.hex() for v in fresh_nodes]
        assert [v.grad.hex() for v in g.nodes] == [v.grad.hex() for v in fresh_nodes]


def build_dots(layout, leaves):
    """Dots whose weights and inputs sit on the replay tape as ``layout``
    says (the tape places each dot's weights first, dot by dot in forward
    order, and the other nodes in the order backward() meets them), built
    from the leaves; returns the root."""
    n = len(leaves) // 4
    w1, w2, xs = leaves[:n], leaves[n:2 * n], leaves[2 * n:]
    bias = xs[-1]
    if layout == "leaves":
        return mg.dot(w1, xs[:n], bias)
    below = [x.relu() for x in xs]
    if layout == "layer below":
        return mg.dot(w1, below[:n], bias)
    if layout == "every other":
        return mg.dot(w1 + w2, below[:2 * n], bias) + mg.dot(w1, below[:2 * n:2])
    if layout == "weights reversed":
        return mg.dot(w1, below[:n]) + mg.dot(w1[::-1], below[:n], bias)
    if layout == "another order":
        return mg.dot(w1, below[:n]) + mg.dot(w2, below[:n][1::2] + below[:n][::2], bias)
    assert layout == "inputs are the weights"
    return mg.dot(w1, w1, bias)


# (weight step, input step) of each dot on the tape, for 5 pairs: runs of
# positions the sweeps step through, or (0, 0) where they look each one up
DOT_LAYOUTS = {
    "leaves": [(1, 1)],
    "layer below": [(1, -1)],
    "every other": [(1, -2), (1, -1)],
    "weights reversed": [(1, -1), (-1, -1)],
    "another order": [(0, 0), (1, -1)],
    "inputs are the weights": [(0, 0)],
}


@pytest.mark.parametrize("layout", DOT_LAYOUTS)
def test_replayed_dots_equal_fresh_builds_bit_for_bit_whatever_their_layout(layout):
    rng = random.Random(3)
    assert Graph(build_dots(layout, [Value(1.0) for _ in range(20)]))._dot_steps == \
        DOT_LAYOUTS[layout]
    for n in (1, 2, 3, 4, 5, 8, 11, 23):     # blocks of sixteen and four pairs, and the rest
        check_every_node_replays(lambda leaves: build_dots(layout, leaves), 4 * n, rng)


def test_replayed_dot_in_runs_gives_the_hand_values():
    w, x, b = [Value(v) for v in (0.5, -1.0, 2.0)], [Value(v) for v in (3.0, 0.25, -4.0)], Value(1.0)
    g = Graph(mg.dot(w, x, b))
    assert g._dot_steps == [(1, 1)]
    w[2].data = 0.75
    assert g.forward() == 1.0 + 0.5 * 3.0 - 1.0 * 0.25 + 0.75 * -4.0
    g.backward()
    assert grads(w) == [3.0, 0.25, -4.0]
    assert grads(x) == [0.5, -1.0, 0.75]
    assert b.grad == 1.0


def build_rows(layout, leaves):
    """Five neurons on the same inputs (a row of four and one more), built
    from the leaves, arranged as ``layout`` says; returns the root."""
    n = len(leaves) // 8
    x, params = leaves[:n], leaves[n:]
    W = [params[j * (n + 1):(j + 1) * (n + 1)] for j in range(5)]
    if layout == "two layers":
        h = [mg.dot(w[:n], x, w[n]).relu() for w in W[:3]]
        return mg.sum(mg.dot(w[:3], h, w[n]).tanh() for w in W[:3])
    if layout == "bias is an input":
        return mg.sum(mg.dot(w[:n], x, x[-1]).relu() for w in W)
    if layout == "slopes differ":
        return mg.sum(mg.dot(w[:n], x, w[n]).leaky_relu(0.1 * (j % 2 + 1))
                      for j, w in enumerate(W))
    if layout == "signed zeros":
        return mg.sum(xi * (0.0 if i % 2 else -0.0) for i, xi in enumerate(x))
    if layout == "a bias is a weight":
        # dot 1's bias is a weight of dot 2, which comes first on the tape,
        # and a third node reads it: its three shares add up in one order
        dots = [mg.dot(w[:n], x, b).relu() for w, b in zip(W, [None, W[2][1], None])]
        return mg.sum(dots + [W[2][1] * 1.7])
    assert layout == "bias from the row"
    d = mg.dot(W[0][:n], x, W[0][n])
    return mg.dot(W[1][:n], x, d) + mg.dot(W[2][:n], x, d)


# the tape's rows (op of the nodes, count) for 3 inputs: nodes at
# consecutive positions that one call evaluates, or passes gradients on for
ROW_LAYOUTS = {
    "two layers": [("dot", 3), ("ReLU", 3), ("dot", 3), ("tanh", 3)],
    "bias is an input": [("ReLU", 5)],
    "slopes differ": [("dot", 5)],
    "bias from the row": [("dot", 2)],
    "signed zeros": [],               # x * 0.0 and x * -0.0 are two constants
    "a bias is a weight": [("dot", 2), ("ReLU", 3)],
}


@pytest.mark.parametrize("layout", ROW_LAYOUTS)
def test_replayed_rows_equal_fresh_builds_bit_for_bit(layout):
    rng = random.Random(4)
    assert Graph(build_rows(layout, [Value(1.0) for _ in range(24)]))._rows == \
        ROW_LAYOUTS[layout]
    for n in (3, 4, 5, 9, 23):
        check_every_node_replays(lambda leaves: build_rows(layout, leaves), 8 * n, rng)


def test_replayed_row_of_short_dots_ends_as_the_dot_does():
    # dots of fewer than four pairs, four at a time in one vector: each
    # still ends (s + 0) + (0 + 0), so -0.0 + -0.0 comes out 0.0, as built
    x = [Value(-1.0), Value(-2.0)]
    W = [[Value(0.0), Value(0.0), Value(-0.0)] for _ in range(5)]
    dots = [mg.dot(w[:2], x, w[2]) for w in W]
    g = Graph(mg.sum(dots))
    assert g._rows == [("dot", 5)]
    built = [d.data.hex() for d in dots]
    g.forward()
    assert [d.data.hex() for d in dots] == built == [(0.0).hex()] * 5


def test_graph_records_the_order_backward_enters_the_nodes():
    # an unbatched Graph records the nodes in the order backward() enters
    # them, reversed, after the leaves (as backward() meets them), so that a
    # replay adds each gradient up in backward()'s order: breadth first, or
    # Kahn's order where a node has users at different depths; with lanes,
    # the depth-first order
    a, b, c, d = (Value(float(i)) for i in range(4))
    ab, cd = a * b, c * d
    root = ab + cd
    assert list(Graph(root).nodes) == [a, b, c, d, cd, ab, root]
    assert mg.topological_order(root) == [a, b, ab, c, d, cd, root]
    x = Value(1.5)
    y = x * 3.0                        # users at depths 1 and 3
    y2, y5 = y * 2.0, y * 5.0
    r = y5.relu()
    s = r * 4.0
    uneven = y2 + s
    assert list(Graph(uneven).nodes) == [x, y, y5, r, s, y2, uneven]
    assert mg.topological_order(uneven) == [x, y, y2, y5, r, s, uneven]
    assert list(Graph(uneven, inputs=[x]).nodes) == mg.topological_order(uneven)
    # the leaves first: each dot's weights and bias, dot by dot in forward
    # order (a layer's neurons then read their weights from evenly spaced
    # runs), then the other leaves as backward() meets them
    w, v, x = ([Value(float(k)) for _ in range(3)] for k in range(3))
    b, c = Value(0.5), Value(0.25)
    h = [mg.dot(w, x, b), mg.dot(v, x, c)]
    root = h[0] * h[1]
    assert Graph(root).nodes[:11] == v + [c] + w + [b] + x     # (h[1] comes first: see cd above)


def demo_loss(model, inputs, y):
    scores = [model(x) for x in inputs]
    data_loss = mg.sum((1 + -yi * s).relu() for yi, s in zip(y, scores)) * (1.0 / len(y))
    return data_loss + 1e-4 * mg.sum(p * p for p in model.parameters())


def test_replay_equals_rebuild_across_optimiser_steps():
    rng = random.Random(0)
    X = [[rng.uniform(-1, 2), rng.uniform(-1, 1)] for _ in range(30)]
    y = [1 if a * a + b > 0.5 else -1 for a, b in X]
    random.seed(5)
    replayed_model = MLP(2, [8, 8, 1])
    random.seed(5)
    rebuilt_model = MLP(2, [8, 8, 1])
    inputs = [[Value(a), Value(b)] for a, b in X]
    g = Graph(demo_loss(replayed_model, inputs, y))
    assert len(g.parameters) == len(replayed_model.parameters()) + 60
    for k in range(25):
        loss_replayed = g.forward()
        replayed_model.zero_grad()
        g.backward()
        rebuilt = demo_loss(rebuilt_model, [[Value(a), Value(b)] for a, b in X], y)
        rebuilt_model.zero_grad()
        rebuilt.backward()
        assert loss_replayed == rebuilt.data
        assert grads(replayed_model.parameters()) == grads(rebuilt_model.parameters())
        for model in (replayed_model, rebuilt_model):
            for p in model.parameters():
                p.data -= 0.05 * p.grad
    assert loss_replayed < g.forward() * 10  # it trained, and still replays


def test_replay_follows_relu_kinks_and_input_changes():
    x = Value(-1.0)
    w = Value(2.0)
    out = (w * x).relu()
    g = Graph(out)
    assert g.forward() == 0.0
    g.backward()
    assert w.grad == 0.0
    x.data = 0.0  # exactly at the kink: relu'(0) = 0
    assert g.forward() == 0.0
    g.backward()
    assert (w.grad, x.grad) == (0.0, 0.0)
    x.data = 3.0
    assert g.forward() == 6.0
    g.backward()
    assert (w.grad, x.grad) == (3.0, 2.0)


def test_matches_detects_data_dependent_structure():
    def build(a):
        return a.exp() if a.data > 0 else a.tanh()
    a = Value(1.0)
    g = Graph(build(a))
    a.data = -1.0
    assert not g.matches(build(a))
    a.data = 2.0
    assert g.matches(build(a))
    assert not g.matches(build(a) * 2)


def test_leaves_parameters_and_repr():
    a, b = Value(1.0), Value(2.0, requires_grad=False)
    g = Graph(a * b + 1)
    assert set(g.leaves) == {a, b} and g.parameters == [a]
    assert len(g) == 4 and g.nodes[-1] is g.root
    assert repr(g).startswith("Graph(4 nodes, 2 leaves, 1 parameters")
    assert g.step() == 3.0 and a.grad == 2.0


def test_frozen_operands_keep_their_gradients_and_take_no_part():
    # The sweep hands every operand its share, frozen ones too; what a frozen
    # node is given must never reach its .grad nor anything below it.
    w = [Value(0.5), Value(-1.5), Value(2.0)]
    frozen = Value(3.0, requires_grad=False)
    frozen.grad = 7.0
    scaled = frozen * 2                              # frozen, not a leaf
    inputs = [frozen, scaled, Value(-0.25)]

    def build():
        h = mg.dot(w, inputs, bias=scaled)
        return (h.relu() * frozen + (frozen - w[0]).tanh()) * w[1]

    g = Graph(build())
    for v in w + [inputs[2]]:
        v.grad = 1.0
    g.backward()
    replayed = grads(w) + [inputs[2].grad, frozen.grad, scaled.grad]
    for v in w + [inputs[2]]:
        v.grad = 1.0
    build().backward()
    assert replayed == grads(w) + [inputs[2].grad, 7.0, 0.0]
    assert frozen.grad == 7.0 and scaled.grad == 0.0


def test_errors():
    with pytest.raises(TypeError, match="Graph\\(root\\)"):
        Graph(1.0)
    custom = Value(1.0, (Value(2.0),), "f")
    with pytest.raises(ValueError, match="no forward rule"):
        Graph(custom * 2)
    constant = Value(1.0, requires_grad=False) * 2
    with pytest.raises(RuntimeError, match="does not require grad"):
        Graph(constant).backward()
    with pytest.raises(TypeError, match="grad"):
        Graph(Value(1.0) * 2).backward(grad="x")


# -- graphs with tensors -------------------------------------------------------

np = pytest.importorskip("numpy")


def mixed_loss(x, w, b, scale):
    h = (x @ w + b).relu()
    picked = h[1, 2] * scale + mg.stack([h[0, 0], scale.tanh()]).sum()
    return h.sigmoid().mean() + picked


def test_tensor_and_scalar_replay_equals_rebuild():
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.normal(size=(4, 3)))
    w = mg.tensor(rng.normal(size=(3, 5)), requires_grad=True)
    b = mg.tensor(rng.normal(size=5), requires_grad=True)
    scale = Value(0.7)
    g = Graph(mixed_loss(x, w, b, scale))
    for _ in range(5):
        x.data[...] = rng.normal(size=(4, 3))
        scale.data = float(rng.normal())
        w.grad[...] = 0
        b.grad[...] = 0
        scale.grad = 0
        replayed = g.forward()
        g.backward()
        grads = (w.grad.copy(), b.grad.copy(), scale.grad)
        w.grad[...] = 0
        b.grad[...] = 0
        scale.grad = 0
        fresh = mixed_loss(x, w, b, scale)
        fresh.backward()
        assert np.array_equal(replayed, fresh.data)
        assert np.array_equal(grads[0], w.grad) and np.array_equal(grads[1], b.grad)
        assert grads[2] == scale.grad
        assert g.matches(fresh)
        w.data -= 0.1 * w.grad


def test_shape_change_of_a_leaf_tensor_is_refused():
    x = mg.tensor(np.ones((2, 3)), requires_grad=True)
    g = Graph((x * 2).sum())
    x.data = np.ones((3, 3))
    with pytest.raises(ValueError, match="changed shape from \\(2, 3\\) to \\(3, 3\\)"):
        g.forward()


# -- the replay examples run ------------------------------------------------------

@pytest.mark.parametrize("name", ["replay_moons.py", "replay_cnn.py"])
def test_replay_examples(name):
    result = run_example(name, "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebuild equals replay bit for bit: True" in result.stdout

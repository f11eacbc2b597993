"""Batched replay (Graph(root, inputs=[...])): a per-sample graph recorded once
and run on B samples at once equals building it afresh for every sample."""
import math
import threading

import numpy as np
import pytest

import microgrid as mg
from microgrid import Graph, Value
from microgrid.core import optable
from microgrid.nn import MLP

from test_optable import CONSTANTS, _value_op


def bits(x):
    """IEEE bit patterns: equal bits means the same value (NaN and -0.0 too)."""
    return np.asarray(x, dtype=np.float64).view(np.int64)


def check_batched(build, params, n_inputs, X, reduction="sum", threads=1, rtol=1e-12,
                  input_grad=True):
    """Record build(inputs, params) for sample 0 with its inputs, run it
    batched on the rows of X, and compare with a fresh build per sample:
    every node's value bit for bit, and each parameter's gradient against
    the sum (or mean) over samples of the fresh builds' gradients, to
    ``rtol`` of the sum of their magnitudes (the two sums add the same terms
    in different orders, so where they cancel the rounding is relative to
    the terms, not to the result).  ``input_grad``: whether the inputs take
    gradients."""
    X = np.asarray(X, dtype=np.float64)
    B = len(X)
    inputs = [Value(v, requires_grad=input_grad) for v in X[0]]
    g = Graph(build(inputs, params), inputs=inputs, threads=threads)
    trainable = g.parameters
    for p in trainable:
        p.grad = 0.0
    out = g.forward(*X.T)
    g.backward(reduction=reduction)
    batched_grads = np.array([p.grad for p in trainable])
    lanes = {id(node): g.value(node) for node in g.nodes}
    expected = np.zeros(len(trainable))
    magnitude = np.zeros(len(trainable))
    for b in range(B):
        for p in trainable:
            p.grad = 0.0
        fresh = build([Value(v, requires_grad=input_grad) for v in X[b]], params)
        assert g.matches(fresh)
        # (a batched graph records the depth-first order)
        for node, fresh_node in zip(g.nodes, mg.topological_order(fresh)):
            lane = lanes[id(node)]
            got = lane[b] if isinstance(lane, np.ndarray) else lane
            assert bits(got) == bits(fresh_node.data), (node, b)
        assert bits(out[b]) == bits(fresh.data)
        if fresh.requires_grad:
            fresh.backward()
        expected += [p.grad for p in trainable]
        magnitude += np.abs([p.grad for p in trainable])
    if reduction == "mean":
        expected /= B
        magnitude /= B
    assert np.all(np.abs(batched_grads - expected) <= rtol * magnitude), \
        np.max(np.abs(batched_grads - expected) / magnitude)
    for p, v in zip(trainable, batched_grads):
        p.grad = v
    return g, out, batched_grads


def mlp_loss(inputs, model):
    """micrograd's demo loss for one sample (inputs: x1, x2, label) plus L2."""
    x1, x2, y = inputs
    score = model([x1, x2])
    return (1 + -y * score).relu() + 1e-4 * sum(p * p for p in model.parameters())


def moons_like(B, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, 2))
    y = np.where(X[:, 0] * X[:, 1] > 0, 1.0, -1.0)
    return np.c_[X, y]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_micrograd_mlp_equals_fresh_builds(reduction):
    model = MLP(2, [6, 5, 1], fused=False)
    check_batched(mlp_loss, model, 3, moons_like(23), reduction)


def test_fused_mlp_equals_fresh_builds():
    model = MLP(2, [7, 9, 1])          # dot nodes, with lane and shared operands
    check_batched(mlp_loss, model, 3, moons_like(19))


def test_results_do_not_depend_on_the_thread_count():
    model = MLP(2, [8, 8, 1], fused=False)
    for B in (1, 5, 37, 130, 300):     # 300: three chunks of lanes
        X = moons_like(B, seed=B)
        results = [check_batched(mlp_loss, model, 3, X, threads=threads)
                   for threads in (1, 2, 3, 8)]
        for g, out, grads in results[1:]:
            assert np.array_equal(bits(out), bits(results[0][1]))
            assert np.array_equal(bits(grads), bits(results[0][2]))
            first = results[0][0]
            for node, same in zip(g.nodes, first.nodes):
                assert np.array_equal(bits(g.value(node)), bits(first.value(same)))


# -- every op of the table, lane and shared operands -----------------------------

# one entry per row of the table with a scalar rule (a binary row's a op c
# and c op a forms are built from it, as the operators build them)
RULE_ROWS = [r for r in optable.ROWS if r.has_rule and r.code == r.base]


def row_graph(row):
    """A per-sample graph that applies ``row`` to lane operands, shared
    operands and mixes of both (x: the input, p, q: parameters), and for a
    binary row also with a number for either operand."""
    if row.kind == "BINARY":
        f = optable._OPERATORS[row.name]
        def build(inputs, params):
            (x,), (p, q) = inputs, params
            terms = [f(x, p), f(p, x), f(x, x), f(x, q * x), f(p, q)]
            for operand in (x, x * p, p):
                terms += [f(operand, 1.25), f(1.25, operand)]
            return mg.sum(terms)
    else:
        consts = CONSTANTS if row.value_param else [None]
        def build(inputs, params):
            (x,), (p, q) = inputs, params
            return mg.sum([_value_op(row, c)(operand) for c in consts for operand in (x, x * p, p * q)])
    return build


@pytest.mark.parametrize("row", RULE_ROWS, ids=[r.code_name for r in RULE_ROWS])
def test_every_op_of_the_table(row):
    """Positive operands keep log, sqrt and pow real; the comparison is bit
    for bit for values and to rounding for gradients."""
    params = [Value(0.8), Value(1.3)]
    X = np.random.default_rng(row.code).uniform(0.2, 1.8, (9, 1))
    g, _, _ = check_batched(row_graph(row), params, 1, X, rtol=1e-11)
    assert any(n._op.startswith(row.symbol) for n in g.nodes), row.code_name


def nary_graph(inputs, params):
    x, y = inputs
    p, q, r = params
    s = mg.sum([x, p, x * y, q], start=0.5) + mg.sum([p, q])           # lane and shared
    m = mg.mean([p, y, x * q]) * mg.mean([p, r])
    d = mg.dot([p, x, q, y, r, x], [x, p, y, q, x, r], bias=y)          # 6 terms: a tail
    d2 = mg.dot([p, q, r, p, q], [x, y, x, y, x], bias=p)               # shared bias
    d3 = mg.dot([x, y], [x, y])                                          # no bias, lanes only
    return (s * m + d).tanh() + d2 * d3 + mg.dot([p, q], [r, r], bias=q)


def test_fused_sum_mean_and_dot_with_lane_and_shared_operands():
    params = [Value(0.3), Value(-0.7), Value(1.1)]
    X = np.random.default_rng(3).normal(size=(29, 2))
    for reduction in ("sum", "mean"):
        check_batched(nary_graph, params, 2, X, reduction)


def test_gradients_match_finite_differences():
    params = [Value(0.3), Value(-0.7), Value(1.1)]
    X = np.random.default_rng(4).normal(size=(11, 2))
    inputs = [Value(0.0), Value(0.0)]
    g = Graph(nary_graph(inputs, params), inputs=inputs)
    for p in params:
        p.grad = 0.0
    g.forward(X)
    g.backward(reduction="mean")
    h = 1e-6
    for p in params:
        p.data += h
        up = g.forward(X).mean()
        p.data -= 2 * h
        down = g.forward(X).mean()
        p.data += h
        assert p.grad == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-8)


def test_torch_float64_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    W1, b1 = rng.normal(size=(4, 2)), rng.normal(size=4)
    W2, b2 = rng.normal(size=(1, 4)), rng.normal(size=1)
    X = rng.normal(size=(31, 2))
    y = np.sign(rng.normal(size=31))
    W1v = [[Value(v) for v in row] for row in W1]
    b1v = [Value(v) for v in b1]
    W2v = [Value(v) for v in W2[0]]
    b2v = Value(b2[0])
    x1, x2, yv = Value(0.0), Value(0.0), Value(0.0)
    h = [(w[0] * x1 + w[1] * x2 + b).tanh() for w, b in zip(W1v, b1v)]
    score = mg.sum([w * hi for w, hi in zip(W2v, h)]) + b2v
    loss = (1 + (-yv * score).exp()).log() + 0.01 * mg.sum([w * w for w in W2v])
    g = Graph(loss, inputs=[x1, x2, yv])
    losses = g.forward(X[:, 0], X[:, 1], y)
    g.backward(reduction="mean")

    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in dict(W1=W1, b1=b1, W2=W2, b2=b2).items()}
    hidden = torch.tanh(torch.tensor(X) @ t["W1"].T + t["b1"])
    tscore = (hidden @ t["W2"].T + t["b2"]).squeeze(1)
    tloss = torch.log(1 + torch.exp(-torch.tensor(y) * tscore)) + 0.01 * (t["W2"] ** 2).sum()
    tloss.mean().backward()
    np.testing.assert_allclose(losses, tloss.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose([[v.grad for v in row] for row in W1v], t["W1"].grad, rtol=1e-12)
    np.testing.assert_allclose([v.grad for v in b1v], t["b1"].grad, rtol=1e-12)
    np.testing.assert_allclose([v.grad for v in W2v], t["W2"].grad[0], rtol=1e-12)
    assert b2v.grad == pytest.approx(t["b2"].grad.item(), rel=1e-12)


# -- semantics -------------------------------------------------------------------

def test_shared_nodes_inputs_and_write_back():
    p, q = Value(2.0), Value(3.0)
    x = Value(1.0)
    shared = p * q                          # depends on no input: computed once
    lane = x * shared
    root = lane + shared.tanh()
    g = Graph(root, inputs=[x])
    assert g.inputs == [x] and g.parameters == [p, q]
    p.data = 4.0
    out = g.forward([1.0, 2.0, -1.0])
    np.testing.assert_array_equal(out, [12 + math.tanh(12), 24 + math.tanh(12), -12 + math.tanh(12)])
    assert g.value(shared) == 12.0 and isinstance(g.value(shared), float)
    assert shared.data == 12.0               # shared nodes are written back
    assert lane.data == 6.0 and x.data == 1.0  # lane nodes and inputs keep their build values
    np.testing.assert_array_equal(g.value(lane), [12.0, 24.0, -12.0])
    np.testing.assert_array_equal(g.value(x), [1.0, 2.0, -1.0])
    x.grad = 5.0
    g.backward()
    dshared = 2.0 + 3 * (1 - math.tanh(12) ** 2)   # sum over samples of x + tanh'(12)
    assert p.grad == pytest.approx(3 * dshared, rel=1e-15)
    assert q.grad == pytest.approx(4 * dshared, rel=1e-15)
    assert x.grad == 5.0                     # inputs get no gradient
    g.backward(reduction="mean")             # parameters accumulate, as backward() does
    assert p.grad == pytest.approx(3 * dshared + dshared, rel=1e-15)


def test_a_2d_array_equals_columns_and_batch_size_may_change():
    model = MLP(2, [4, 1], fused=False)
    inputs = [Value(0.0), Value(0.0), Value(1.0)]
    g = Graph(mlp_loss(inputs, model), inputs=inputs)
    X = moons_like(10)
    assert np.array_equal(bits(g.forward(X)), bits(g.forward(X[:, 0], X[:, 1], list(X[:, 2]))))
    assert g.forward(X[:3]).shape == (3,)
    assert g.value(g.root).shape == (3,)


def sixteen_sums(x):
    """The lanes' fixed summation order (mg_lanes_total): lane i of the first
    len - len % 16 into partial sum i % 16, the rest into the first, then
    t_e = (s_e + s_(e+4)) + (s_(e+8) + s_(e+12)) and (t_0 + t_1) + (t_2 + t_3)."""
    s = [0.0] * 16
    full = len(x) - len(x) % 16
    for i, v in enumerate(x):
        s[i % 16 if i < full else 0] += float(v)
    t = [(s[e] + s[e + 4]) + (s[e + 8] + s[e + 12]) for e in range(4)]
    return (t[0] + t[1]) + (t[2] + t[3])


@pytest.mark.parametrize("B", [1, 5, 16, 17, 300])
def test_forward_reduces_the_samples_to_their_sum_or_mean(B):
    model = MLP(2, [4, 1], fused=False)
    inputs = [Value(0.0), Value(0.0), Value(1.0)]
    g = Graph(mlp_loss(inputs, model), inputs=inputs)
    X = moons_like(B, seed=B)
    losses = g.forward(X)
    total = g.forward(X, reduction="sum")
    assert type(total) is float and bits(total) == bits(sixteen_sums(losses))
    assert abs(total - math.fsum(losses)) <= 1e-15 * math.fsum(np.abs(losses))
    mean = g.forward(X, reduction="mean")
    assert bits(mean) == bits(total / B)
    assert np.array_equal(bits(g.value(g.root)), bits(losses))   # the lanes are there too
    g.backward(reduction="mean")
    grads = [p.grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = 0.0
    g.forward(X)
    g.backward(reduction="mean")
    assert grads == [p.grad for p in model.parameters()]
    with pytest.raises(ValueError, match="reduction"):
        g.forward(X, reduction="max")
    unbatched = Graph(mlp_loss([Value(0.5), Value(-0.5), Value(1.0)], model))
    assert unbatched.forward(reduction="mean") == unbatched.forward() == unbatched.root.data


def test_a_column_is_any_float64_buffer_or_anything_numpy_converts():
    """float64 columns are read through the buffer protocol; a strided view,
    a list, integers or float32 are converted first: the same samples give
    the same results, bit for bit."""
    import array
    x, p = Value(0.0), Value(1.5)
    g = Graph((x * p).tanh() + x * x, inputs=[x])
    data = np.linspace(-2.0, 2.0, 9)
    want = g.forward(data)
    wide = np.zeros((9, 3))
    wide[:, 1] = data
    for column in (array.array("d", data), memoryview(data), wide[:, 1], list(data)):
        assert np.array_equal(bits(g.forward(column)), bits(want))
    assert np.array_equal(bits(g.forward(np.arange(-4, 5))), bits(g.forward(np.arange(-4.0, 5.0))))
    halves = data.astype(np.float32)
    assert np.array_equal(bits(g.forward(halves)), bits(g.forward(halves.astype(np.float64))))
    out = g.forward(data)
    data[0] = 99.0                  # the column was copied in: the input's lanes keep -2
    assert g.value(x)[0] == -2.0
    g.forward(data)                 # the result is a copy: the next forward leaves it alone
    assert np.array_equal(bits(out), bits(want))


def test_non_finite_inputs_propagate():
    x = Value(1.0)
    p = Value(2.0)
    g = Graph((x * p).exp() + x.log(), inputs=[x])
    out = g.forward([np.inf, -1.0, np.nan, 0.0])
    assert out[0] == np.inf and np.isnan(out[1]) and np.isnan(out[2]) and out[3] == -np.inf


def test_parameters_without_grad_and_an_input_only_root():
    x, p, frozen = Value(1.0), Value(2.0), Value(3.0, requires_grad=False)
    g = Graph(x * p + x * frozen, inputs=[x])
    g.forward([1.0, 2.0])
    g.backward()
    assert p.grad == 3.0 and frozen.grad == 0.0
    # a root whose only leaf requiring grad is an input: nothing to add
    y = Value(1.0)
    g = Graph(y * y, inputs=[y])
    np.testing.assert_array_equal(g.forward([3.0]), [9.0])
    g.backward()
    assert y.grad == 0.0


def test_frozen_operands_of_shared_nodes_keep_their_gradients():
    # The nodes without lanes (no input below them) pass every operand its
    # share, frozen ones too (binary and unary ones in C, n-ary ones in the
    # tape's sweep): none of it may reach a frozen node's .grad.
    w = [Value(0.5), Value(-1.5)]
    frozen = Value(3.0, requires_grad=False)
    frozen.grad = 7.0
    scaled = frozen * 2                              # frozen, not a leaf

    def build(x):
        shared = mg.dot(w, [frozen, scaled], bias=scaled) + (frozen - w[0]).tanh() * w[1]
        summed = mg.sum([w[0] * frozen, scaled, w[1]])
        return (x * shared).relu() + x * summed

    x = Value(0.0)
    g = Graph(build(x), inputs=[x])
    xs = [0.5, -1.0, 2.0]
    g.forward(xs)
    g.backward(reduction="sum")
    batched = [v.grad for v in w]
    for v in w:
        v.grad = 0.0
    for value in xs:
        build(Value(value)).backward()
    assert batched == pytest.approx([v.grad for v in w], rel=1e-12)
    assert frozen.grad == 7.0 and scaled.grad == 0.0


def test_unbatched_graph_is_unchanged():
    a = Value(2.0)
    g = Graph(a * a + 1)
    assert g.inputs is None
    assert g.forward() == 5.0 and isinstance(g.forward(), float)
    g.backward(reduction="mean")
    assert a.grad == 4.0
    assert g.value(g.root) == 5.0
    with pytest.raises(TypeError, match="no inputs"):
        g.forward([1.0])


def test_errors_name_the_argument():
    x, p = Value(1.0), Value(2.0)
    root = x * p
    with pytest.raises(TypeError, match=r"inputs=\.\.\.\) takes a list"):
        Graph(root, inputs=x)
    with pytest.raises(TypeError, match=r"inputs=\.\.\.\) takes a list"):
        Graph(root, inputs=3)
    with pytest.raises(ValueError, match=r"inputs=\[\]"):
        Graph(root, inputs=[])
    with pytest.raises(TypeError, match=r"inputs\[1\]"):
        Graph(root, inputs=[x, 1.0])
    with pytest.raises(ValueError, match=r"inputs\[0\].*not a node of the graph"):
        Graph(root, inputs=[Value(1.0)])
    with pytest.raises(ValueError, match=r"inputs\[0\].*not a leaf"):
        Graph(root + 1, inputs=[root])
    with pytest.raises(ValueError, match=r"inputs\[1\].*inputs\[0\]"):
        Graph(root, inputs=[x, x])
    with pytest.raises(ValueError, match="Values only"):
        Graph((mg.tensor(np.ones(2)) * x).sum(), inputs=[x])
    with pytest.raises(TypeError, match="threads"):
        Graph(root, inputs=[x], threads=2.0)
    with pytest.raises(ValueError, match="threads"):
        Graph(root, inputs=[x], threads=0)
    with pytest.raises(ValueError, match="threads"):
        Graph(root, threads=2)
    g = Graph(root, inputs=[x])
    with pytest.raises(RuntimeError, match="forward"):
        g.backward()
    with pytest.raises(RuntimeError, match="forward"):
        g.value(root)
    with pytest.raises(TypeError, match=r"columns\): the graph has 1 input"):
        g.forward([1.0], [2.0])
    with pytest.raises(TypeError, match=r"columns\): the graph has 1 input"):
        g.forward()
    with pytest.raises(TypeError, match=r"columns\[0\]"):
        g.forward(["a", "b"])
    with pytest.raises(ValueError, match=r"columns\[0\]\): a column is 1-d"):
        g.forward(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(B, 1\)"):
        g.forward(np.ones((3, 2)))
    with pytest.raises(ValueError, match="at least 1"):
        g.forward([])
    with pytest.raises(ValueError, match=r"columns\[1\]\): every column"):
        Graph(x * p + x.tanh() * Value(1.0), inputs=[x, p]).forward([1.0, 2.0], [1.0])
    g.forward([1.0, 2.0])
    with pytest.raises(ValueError, match="reduction"):
        g.backward(reduction="max")
    with pytest.raises(ValueError, match="reduction"):
        g.step([1.0], reduction=None)
    with pytest.raises(TypeError, match="grad"):
        g.backward(grad=2.0)
    with pytest.raises(TypeError, match=r"value\(node\)"):
        g.value(1.0)
    with pytest.raises(ValueError, match="not in the recorded graph"):
        g.value(Value(1.0))
    frozen = Value(1.0, requires_grad=False)
    g = Graph(frozen * 2, inputs=[frozen])
    g.forward([1.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        g.backward()


# -- lifetimes and threads -------------------------------------------------------

def test_graph_owns_its_nodes_and_nodes_outlive_the_graph():
    model = MLP(2, [5, 1], fused=False)
    inputs = [Value(0.0), Value(0.0), Value(1.0)]
    g = Graph(mlp_loss(inputs, model), inputs=inputs)
    params = g.parameters
    X = moons_like(12)
    expected = g.forward(X).copy()
    del model, inputs                       # the graph keeps every node alive
    import gc
    gc.collect()
    assert np.array_equal(g.forward(X), expected)
    g.backward()
    leftover = g.nodes[-2]
    del g                                   # nodes outlive the graph
    gc.collect()
    assert all(math.isfinite(p.grad) for p in params)
    assert math.isfinite((leftover * 2).data)


def test_concurrent_passes_on_one_graph_refuse_or_succeed():
    """The lanes run without the GIL: a second pass on the same graph from
    another thread is refused with RuntimeError, never a crash or a mix."""
    model = MLP(2, [16, 16, 1], fused=False)
    inputs = [Value(0.0), Value(0.0), Value(1.0)]
    g = Graph(mlp_loss(inputs, model), inputs=inputs, threads=2)
    X = moons_like(2000)
    expected = g.forward(X).copy()
    outcomes = []

    def hammer():
        for _ in range(20):
            try:
                outcomes.append(np.array_equal(g.forward(X), expected))
            except RuntimeError as e:
                assert "another thread" in str(e)
                outcomes.append("refused")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 60 and False not in outcomes
    assert np.array_equal(g.forward(X), expected)


def test_detect_anomaly_names_the_first_op_and_sample():
    x, p = Value(1.0), Value(0.5, label="p")
    g = Graph((x * p).log() * 2 + p.sqrt(), inputs=[x])
    np.testing.assert_array_equal(np.isfinite(g.forward([1.0, -1.0])), [True, False])
    with mg.detect_anomaly():
        g.forward([1.0, 2.0])
        with pytest.raises(FloatingPointError, match=r"batched forward pass of 'log' .* nan for sample 1"):
            g.forward([1.0, -1.0])
        p.data = 0.0
        with pytest.raises(FloatingPointError, match=r"forward pass of 'log' .* -inf for sample 0"):
            g.forward([1.0, 2.0])
        p.data = 0.0
        g2 = Graph(x * p + p.sqrt(), inputs=[x])
        g2.forward([1.0])
        with pytest.raises(FloatingPointError, match=r"backward pass produced inf in the gradient "
                                                     r"of '' node.*\(p\)"):
            g2.backward()


# -- multiply-add chains (w * x, then +) -------------------------------------------

def chain_graph(inputs, params):
    """Chains of w * x then + in every operand order, a head with lanes and
    one without, a chain longer than a sweep takes in one step (40 pairs),
    an inner node read twice (no chain through it) and x read by the head."""
    x, y = inputs
    t = (x * y).tanh()
    long = params[0]
    for k, p in enumerate(params * 4):
        long = long + p * t if k % 2 else (t * p) + long
    head_lane = t
    for p in params[:3]:
        head_lane = head_lane + p * y
    shared_head = params[1] * params[2]
    mixed = shared_head + y * params[3]
    mixed = (params[4] * x) + mixed
    twice = mixed + params[5] * t
    return long * head_lane + twice * twice + (x + params[6] * x)


def test_multiply_add_chains_equal_fresh_builds():
    params = [Value(v) for v in np.random.default_rng(7).normal(size=10)]
    X = np.random.default_rng(8).normal(size=(71, 2))
    for reduction in ("sum", "mean"):
        check_batched(chain_graph, params, 2, X, reduction)
    for threads in (1, 3):
        check_batched(chain_graph, params, 2, X[:5], threads=threads)


# -- dense layers (chains reading the same operands) -------------------------------

def neuron(weights, xs, bias, w_first=True):
    """b + w0*x0 + w1*x1 + ... (micrograd's Neuron), or with x * w."""
    out = bias
    for w, x in zip(weights, xs):
        out = out + (w * x if w_first else x * w)
    return out


def dense_stack(inputs, params, widths=(5, 6, 35, 1)):
    """Dense layers written as micrograd writes them: 5 neurons over 3 inputs,
    6 over the 5 and the first input (with x * w), 35 over 6, one over 35."""
    p = iter(params)
    h = inputs
    for k, width in enumerate(widths):
        h = h + inputs[:1] if k == 1 else h
        h = [neuron([next(p) for _ in h], h, next(p), w_first=k != 1) for _ in range(width)]
        h = [v.relu() for v in h] if k < len(widths) - 1 else h
    return h[0]


def test_dense_layers_run_as_one_step_and_equal_fresh_builds():
    params = [Value(v) for v in np.random.default_rng(11).normal(scale=0.6, size=343)]
    X = np.random.default_rng(12).normal(size=(71, 3))
    g, _, _ = check_batched(dense_stack, params, 3, X, "mean")
    # one step per layer, at most 32 neurons each, but for each layer's
    # first neuron: the depth-first order computes its operands (the
    # inputs, the last layer's neurons) between its pairs
    assert g._layers == [(4, 3), (5, 6), (32, 6), (2, 6)]
    for threads in (1, 2):
        check_batched(dense_stack, params, 3, X[:9], threads=threads)
    g, _, _ = check_batched(dense_stack, params, 3, X[:6], input_grad=False)
    assert g._layers == [(4, 3), (5, 6), (32, 6), (2, 6)]


def three_neurons(inputs, params, case):
    """Three neurons over two lane nodes, and what could keep the plan from
    running them as one step: a weight shared between two of them, a node
    among them that reads one of their operands, or one of their weights."""
    x, y = inputs
    p = iter(params)
    a, b = (x * y).tanh(), (x + y).tanh()
    ws = [[next(p), next(p)] for _ in range(3)]
    if case == "shared weight":
        ws[2][1] = ws[1][0]
    out = 0
    for k in range(3):
        s = neuron(ws[k], [a, b], next(p)).relu()
        if case == "reads an operand":
            s = s * b
        if case == "reads a weight":
            s = s * ws[(k + 1) % 3][0]
        out = out + s
    return out


@pytest.mark.parametrize("case", ["shared weight", "reads an operand", "reads a weight"])
def test_a_layer_is_planned_only_where_its_order_can_change(case):
    params = [Value(v) for v in np.random.default_rng(13).normal(size=9)]
    X = np.random.default_rng(14).normal(size=(23, 2))
    g, _, _ = check_batched(lambda i, p: three_neurons(i, p, None), params, 2, X)
    assert g._layers == [(2, 2)]        # the first neuron computes a and b
    g, _, _ = check_batched(lambda i, p: three_neurons(i, p, case), params, 2, X)
    assert g._layers == []


def test_micrograd_mlp_layers_are_planned():
    model = MLP(2, [16, 16, 1], fused=False)
    inputs = [Value(0.5), Value(-1.0), Value(1.0)]
    g = Graph(mlp_loss(inputs, model), inputs=inputs)
    assert g._layers == [(15, 2), (15, 16)]

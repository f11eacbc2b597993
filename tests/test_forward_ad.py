"""Forward-mode AD (microgrid.autograd.forward_ad, microgrid.autograd._forward):
tangents through every row of the op table, the rows over dual numbers
(csrc/mg_dual.hpp), tensor ops, random scalar graphs, and the Hessian-vector
product by forward-over-reverse.

Each result is checked three ways where it applies: central differences of
microgrid's own values or gradients, numbers worked by hand, and PyTorch
float64 (torch.func.jvp, torch.autograd.functional.hvp / hessian; skipped
without torch).
"""
import math
import re
import threading

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F
from microgrid.autograd import _forward
from microgrid.autograd import forward_ad as fwAD
from microgrid.core import optable
from test_optable import CONSTANTS, _tensor_op, _torch_function, _value_op

ROWS = optable.ELEMENTWISE
IDS = [r.code_name for r in ROWS]
BINARY = [r for r in ROWS if r.kind == "BINARY"]
BY_CODE = {r.code_name: r for r in optable.ROWS}
CONST_FORMS = [r for r in optable.ROWS if r.kind in ("BINARY_AC", "BINARY_CA")]


def _torch():
    return pytest.importorskip("torch")


def _undefined_below_zero(row):
    """log, sqrt, ...: NaN for negative operands."""
    if row.kind == "BINARY":
        return row.code_name == "POW"
    probe = _tensor_op(row, CONSTANTS[1])(mg.tensor(np.array([-1.5, -0.5])))
    return bool(np.isnan(probe.data).any())


def _points(row, rng, n):
    """n random operand tuples, away from kinks at 0, positive where needed."""
    arity = 2 if row.kind == "BINARY" else 1
    x = rng.uniform(0.2, 2.0, (n, arity)) * rng.choice([-1.0, 1.0], (n, arity))
    if _undefined_below_zero(row):
        x[:, 0] = np.abs(x[:, 0])
    return x


def _row_fn(row):
    return _value_op(row, CONSTANTS[1])


# ---------------------------------------------------------------------------
# Every row: the tangent of a Value op

@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row_tangent_matches_central_differences(row):
    rng = np.random.default_rng(10)
    op = _row_fn(row)
    for xs in _points(row, rng, 20):
        ts = rng.standard_normal(len(xs))
        out, tangent = fwAD.jvp(op, tuple(mg.Value(x) for x in xs), tuple(ts))
        h = 1e-6
        plus = op(*[mg.Value(x + h * t) for x, t in zip(xs, ts)]).data
        minus = op(*[mg.Value(x - h * t) for x, t in zip(xs, ts)]).data
        assert out.data == op(*[mg.Value(x) for x in xs]).data
        assert tangent == pytest.approx((plus - minus) / (2 * h), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row_tangent_matches_torch_jvp(row):
    torch = _torch()
    fn = _torch_function(torch, row)
    rng = np.random.default_rng(11)
    op = _row_fn(row)
    for xs in _points(row, rng, 30):
        ts = rng.standard_normal(len(xs))
        _, tangent = fwAD.jvp(op, tuple(float(x) for x in xs), tuple(ts))
        _, expected = torch.func.jvp(fn, tuple(torch.tensor(x, dtype=torch.float64) for x in xs),
                                     tuple(torch.tensor(t, dtype=torch.float64) for t in ts))
        assert tangent == pytest.approx(expected.item(), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("row", CONST_FORMS, ids=[r.code_name for r in CONST_FORMS])
def test_constant_operand_forms_are_the_binary_row_with_a_constant(row):
    """a op c and c op a over duals: the binary row with a tangent-free c."""
    rng = np.random.default_rng(12)
    base = optable.ROWS[row.base]
    for _ in range(10):
        x, c, t, tout = rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.0), rng.standard_normal(), 0.3
        out = 0.7       # any value: the rows read it as given
        da, dda, _, _ = _forward.dual_local_grads(row.code, x, t, 0.0, 0.0, out, tout, c)
        if row.kind == "BINARY_AC":
            expected = _forward.dual_local_grads(base.code, x, t, c, 0.0, out, tout)[:2]
        else:
            expected = _forward.dual_local_grads(base.code, c, 0.0, x, t, out, tout)[2:]
        assert (da, dda) == expected


@pytest.mark.parametrize("fn, binary", [
    (lambda a: a + 1.5, lambda a, b: a + b), (lambda a: a - 1.5, lambda a, b: a - b),
    (lambda a: 1.5 - a, lambda a, b: b - a), (lambda a: a * 1.5, lambda a, b: a * b),
    (lambda a: a / 1.5, lambda a, b: a / b), (lambda a: 1.5 / a, lambda a, b: b / a),
    (lambda a: a ** 1.5, lambda a, b: a ** b), (lambda a: 1.5 ** a, lambda a, b: b ** a),
], ids=["add", "sub", "rsub", "mul", "div", "rdiv", "pow", "rpow"])
def test_operators_with_a_constant_take_the_binary_rows_tangent(fn, binary):
    rng = np.random.default_rng(12)
    for _ in range(10):
        x, t = rng.uniform(0.3, 2.0), rng.standard_normal()
        out, tangent = fwAD.jvp(fn, x, t)
        assert tangent == pytest.approx(fwAD.jvp(binary, (x, 1.5), (t, 0.0))[1], rel=1e-15)


def test_hand_worked_tangents():
    # d(x y)/dt along (1, 2) at (3, -4): y * 1 + x * 2 = 2
    assert fwAD.jvp(lambda x, y: x * y, (3.0, -4.0), (1.0, 2.0))[1] == 2.0
    # d tanh(x^2) = 2x (1 - tanh(x^2)^2) dx at x = 0.5, dx = 1
    t = math.tanh(0.25)
    assert fwAD.jvp(lambda x: (x ** 2).tanh(), 0.5, 1.0)[1] == pytest.approx(1 - t * t, rel=1e-15)
    # relu'(0) = 0 as backward has it; |x|'(0) = 0
    assert fwAD.jvp(lambda x: x.relu(), 0.0, 1.0)[1] == 0.0
    assert fwAD.jvp(lambda x: abs(x), 0.0, 1.0)[1] == 0.0
    # x ** 2 at a negative base: d/db is NaN there, but the exponent does not vary
    assert fwAD.jvp(lambda x: x ** 2, -3.0, 1.0)[1] == -6.0
    # the fused nodes: sum, mean, dot with a bias
    assert fwAD.jvp(lambda a, b: mg.sum([a, b, a], start=5.0), (1.0, 2.0), (1.0, 10.0))[1] == 12.0
    assert fwAD.jvp(lambda a, b: mg.mean([a, b]), (1.0, 2.0), (1.0, 2.0))[1] == 1.5
    assert fwAD.jvp(lambda w, x, b: mg.dot([w, 2.0], [x, w], b), (3.0, 5.0, 1.0),
                    (1.0, 1.0, 1.0))[1] == 5.0 + 3.0 + 2.0 + 1.0


# ---------------------------------------------------------------------------
# The rows over dual numbers (csrc/mg_dual.hpp)

def _dual_args(row, a, b, c):
    """(a, b) as the row reads them and the node that computes its value."""
    if row.kind == "BINARY":
        node = _value_op(row, c)(mg.Value(a), mg.Value(b))
    else:
        node = _value_op(row, c)(mg.Value(a))
    return node


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_dual_rows_value_parts_are_the_engines_local_derivatives_bit_for_bit(row):
    rng = np.random.default_rng(13)
    c = CONSTANTS[1]
    for xs in _points(row, rng, 20):
        a, b = xs[0], (xs[1] if len(xs) > 1 else 0.0)
        node = _dual_args(row, a, b, c)
        da, _, db, _ = _forward.dual_local_grads(row.code, a, 0.7, b, -0.3, node.data, 0.1, c)
        local = node._local_grads()
        assert da == local[0] or (math.isnan(da) and math.isnan(local[0]))
        if row.kind == "BINARY":
            assert db == local[1] or (math.isnan(db) and math.isnan(local[1]))


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_dual_rows_give_the_derivatives_tangent(row):
    """The tangent of d out/da along (ta, tb) against central differences of
    the engine's own local derivative (with out recomputed by the engine)."""
    rng = np.random.default_rng(14)
    c = CONSTANTS[1]

    def local(a, b):
        node = _dual_args(row, a, b, c)
        return np.array(node._local_grads(), dtype=float), node.data

    for xs in _points(row, rng, 10):
        a, b = xs[0], (xs[1] if len(xs) > 1 else 0.0)
        ta, tb = rng.standard_normal(2)
        if row.kind != "BINARY":
            tb = 0.0
        _, out = local(a, b)
        _, tout = fwAD.jvp(_row_fn(row), tuple(float(x) for x in xs), (ta, tb)[:len(xs)])
        da, dda, db, ddb = _forward.dual_local_grads(row.code, a, ta, b, tb, out, tout, c)
        h = 1e-6
        diff = (local(a + h * ta, b + h * tb)[0] - local(a - h * ta, b - h * tb)[0]) / (2 * h)
        assert dda == pytest.approx(diff[0], rel=1e-6, abs=1e-7)
        if row.kind == "BINARY":
            assert ddb == pytest.approx(diff[1], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_derivative_rows_agree_with_the_forward_rows_chain_rule(row):
    """A row's derivative formulas against its forward formula evaluated on
    duals (the vocabulary's chain rule): two writings of the same rule."""
    rng = np.random.default_rng(15)
    c = CONSTANTS[1]
    for xs in _points(row, rng, 20):
        a, b = xs[0], (xs[1] if len(xs) > 1 else 0.0)
        ta, tb = rng.standard_normal(2) if row.kind == "BINARY" else (rng.standard_normal(), 0.0)
        value, tangent = _forward.dual_forward(row.code, a, ta, b, tb, c)
        out, jvp = fwAD.jvp(_row_fn(row), tuple(float(x) for x in xs), (ta, tb)[:len(xs)])
        assert value == pytest.approx(out.data, rel=1e-15)
        assert tangent == pytest.approx(jvp, rel=1e-12, abs=1e-14)


def test_dual_vocabulary_comes_from_the_rows():
    """Each vocabulary function with a dual form is the op of the row it is
    paired with, and every function the rows' formulas call has a dual form
    (where and sign: the two defined in mg_dual.hpp itself)."""
    vocabulary = _forward.dual_vocabulary()
    for name, code in vocabulary.items():
        row = optable.ROWS[code]
        assert row.forward.replace(" ", "") == (f"{name}(a,b)" if name == "pow" else f"{name}(a)")
    called = set()
    for row in ROWS:
        for text in (row.forward, *row.grads):
            called.update(re.findall(r"([A-Za-z_][A-Za-z_0-9]*)\s*\(", text))
    assert called <= set(vocabulary) | {"where", "sign"}, called - set(vocabulary)


def test_bad_row_code_is_refused():
    with pytest.raises(ValueError, match="not the code of a row"):
        _forward.dual_local_grads(BY_CODE["SUM"].code, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="not the code of a row"):
        _forward.dual_forward(-1, 1.0, 1.0)


# ---------------------------------------------------------------------------
# Tensors

def _tensor_jvp_vs_torch(mg_fn, torch_fn, primals, tangents):
    torch = _torch()
    out, tangent = fwAD.jvp(mg_fn, tuple(mg.tensor(p) for p in primals), tuple(tangents))
    t_out, t_tangent = torch.func.jvp(torch_fn, tuple(torch.tensor(p) for p in primals),
                                      tuple(torch.tensor(t) for t in tangents))
    np.testing.assert_allclose(out.data, t_out.numpy(), rtol=1e-12, atol=1e-14)
    assert isinstance(tangent, np.ndarray) and tangent.shape == tuple(t_out.shape)
    np.testing.assert_allclose(tangent, t_tangent.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_tensor_rows_match_torch_jvp_with_broadcasting(row):
    torch = _torch()
    fn = _torch_function(torch, row)
    rng = np.random.default_rng(16)
    shapes = [(3, 4), (4,)] if row.kind == "BINARY" else [(2, 3)]
    primals = [rng.uniform(0.2, 2.0, s) * rng.choice([-1.0, 1.0], s) for s in shapes]
    if _undefined_below_zero(row):
        primals[0] = np.abs(primals[0])
    tangents = [rng.standard_normal(s) for s in shapes]
    op = _value_op(row, None) if row.kind == "BINARY" else _tensor_op(row, CONSTANTS[1])
    _tensor_jvp_vs_torch(op, fn, primals, tangents)


TENSOR_CASES = {
    "sum": (lambda x: x.sum(), [(2, 3)]),
    "sum_dim": (lambda x: x.sum(dim=1, keepdim=True), [(2, 3)]),
    "mean_dims": (lambda x: x.mean(dim=(0, 2)), [(2, 3, 4)]),
    "reshape_permute": (lambda x: x.reshape(3, 2).permute(1, 0) * 2.0, [(2, 3)]),
    "index": (lambda x: x[1:, ::2] + x[[0, 0, 1]].sum(), [(3, 4)]),
    "cat_stack": (lambda x, y: mg.stack([mg.cat([x, y], dim=0), mg.cat([y, x], dim=0)], dim=1),
                  [(2, 3), (2, 3)]),
    "pad": (lambda x: F.pad(x, (1, 2)), [(2, 3)]),
    "matmul": (lambda a, b: a @ b, [(2, 3), (3, 4)]),
    "matmul_batched": (lambda a, b: (a @ b).tanh(), [(2, 2, 3), (3, 4)]),
    "matmul_vector": (lambda a, b: a @ b, [(3,), (3, 2)]),
    "dot_vectors": (lambda a, b: a @ b, [(3,), (3,)]),
    "linear": (lambda x, w, b: F.linear(x, w, b).sigmoid(), [(5, 3), (4, 3), (4,)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1), [(1, 2, 5, 5), (3, 2, 3, 3), (3,)]),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2), [(1, 2, 3, 3), (2, 3, 2, 2)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), [(1, 2, 4, 4)]),
    "mlp": (lambda x, w1, w2: ((x @ w1).tanh() @ w2).exp().mean(), [(4, 3), (3, 5), (5, 2)]),
}


def _torch_case(name):
    torch = _torch()
    TF = torch.nn.functional
    return {
        "sum": lambda x: x.sum(),
        "sum_dim": lambda x: x.sum(dim=1, keepdim=True),
        "mean_dims": lambda x: x.mean(dim=(0, 2)),
        "reshape_permute": lambda x: x.reshape(3, 2).permute(1, 0) * 2.0,
        "index": lambda x: x[1:, ::2] + x[[0, 0, 1]].sum(),
        "cat_stack": lambda x, y: torch.stack([torch.cat([x, y], dim=0), torch.cat([y, x], dim=0)], dim=1),
        "pad": lambda x: TF.pad(x, (1, 2)),
        "matmul": lambda a, b: a @ b,
        "matmul_batched": lambda a, b: (a @ b).tanh(),
        "matmul_vector": lambda a, b: a @ b,
        "dot_vectors": lambda a, b: a @ b,
        "linear": lambda x, w, b: TF.linear(x, w, b).sigmoid(),
        "conv2d": lambda x, w, b: TF.conv2d(x, w, b, stride=1, padding=1),
        "conv_transpose2d": lambda x, w: TF.conv_transpose2d(x, w, stride=2),
        "avg_pool2d": lambda x: TF.avg_pool2d(x, 2),
        "mlp": lambda x, w1, w2: ((x @ w1).tanh() @ w2).exp().mean(),
    }[name]


@pytest.mark.parametrize("name", sorted(TENSOR_CASES))
def test_tensor_ops_match_torch_jvp(name):
    fn, shapes = TENSOR_CASES[name]
    rng = np.random.default_rng(17)
    primals = [rng.standard_normal(s) for s in shapes]
    tangents = [rng.standard_normal(s) for s in shapes]
    _tensor_jvp_vs_torch(fn, _torch_case(name), primals, tangents)


def test_tensor_jvp_is_the_gradient_along_the_tangent():
    """Without torch: a scalar tensor function's JVP equals grad . v (backward)."""
    rng = np.random.default_rng(18)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    tx, tw = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))

    def f(x, w):
        return ((x @ w).sigmoid() * 3.0).log().sum(dim=0).mean()

    _, tangent = fwAD.jvp(f, (mg.tensor(x), mg.tensor(w)), (tx, tw))
    X, W = mg.tensor(x, requires_grad=True), mg.tensor(w, requires_grad=True)
    f(X, W).backward()
    assert float(tangent) == pytest.approx(np.sum(X.grad * tx) + np.sum(W.grad * tw), rel=1e-12)


def test_scatter_of_a_create_graph_gradient_carries_tangents():
    """The gradient of an indexing op, built by mg.grad(create_graph=True),
    is a scatter node: forward mode runs through it (forward-over-reverse on
    a graph of tensors)."""
    rng = np.random.default_rng(20)
    x0, v = rng.standard_normal(4), rng.standard_normal(4)

    def f(x):
        return (x[[0, 2, 2]] ** 3).sum()

    def gradient(x):
        return mg.autograd.grad(f(x), x, create_graph=True)[0]

    with fwAD.dual_level():
        x = fwAD.make_dual(mg.tensor(x0, requires_grad=True), v)
        g = gradient(x)
        assert "scatter" in {n._op for n in mg.topological_order(g)}
        hv = fwAD.unpack_dual(g).tangent
    # f = x0^3 + 2 x2^3: H = diag(6 x0, 0, 12 x2, 0)
    np.testing.assert_allclose(hv, [6 * x0[0] * v[0], 0.0, 12 * x0[2] * v[2], 0.0], rtol=1e-13)


def test_values_and_tensors_mix():
    """A Tensor stacked from Values, a Value read from a Tensor element."""
    def f(a, b, t):
        s = mg.stack([a, b * a]) * t        # STACK_VALUES, then a row
        return (s[1] + s.sum()).tanh() * b  # ELEMENT, REDUCE_SUM, FROM_VALUE bridging

    rng = np.random.default_rng(19)
    t0 = rng.standard_normal(2)
    args = (mg.Value(0.3), mg.Value(-0.8), mg.tensor(t0))
    ta, tb, tt = 0.5, -1.0, rng.standard_normal(2)
    out, tangent = fwAD.jvp(f, args, (ta, tb, tt))
    h = 1e-6
    plus = f(mg.Value(0.3 + h * ta), mg.Value(-0.8 + h * tb), mg.tensor(t0 + h * tt)).data
    minus = f(mg.Value(0.3 - h * ta), mg.Value(-0.8 - h * tb), mg.tensor(t0 - h * tt)).data
    assert isinstance(tangent, np.ndarray) and tangent.shape == ()   # Value + Tensor is a Tensor
    assert float(tangent) == pytest.approx(float((plus - minus) / (2 * h)), rel=1e-7)


@pytest.mark.parametrize("name, fn", [
    ("softmax", lambda x: x.softmax(0)),
    ("max", lambda x: x.max()),
    ("clamp", lambda x: x.clamp(0.0, 1.0)),
    ("max_pool2d", lambda x: F.max_pool2d(x.reshape(1, 1, 2, 2), 2)),
    ("cross_entropy", lambda x: F.cross_entropy(x.reshape(1, 4), np.array([1]))),
])
def test_tensor_ops_without_a_tangent_rule_are_refused_by_name(name, fn):
    with pytest.raises(NotImplementedError, match=f"tensor op '{name}'"):
        fwAD.jvp(fn, mg.tensor([0.1, 0.5, -0.2, 0.3]), np.ones(4))


def test_refused_op_independent_of_the_duals_is_no_obstacle():
    with fwAD.dual_level():
        x = fwAD.make_dual(mg.tensor([1.0, 2.0]), np.array([1.0, 0.5]))
        constant = mg.tensor([0.3, 0.1]).softmax(0)
        t = fwAD.unpack_dual((x * constant).sum()).tangent
    c = np.exp([0.3, 0.1]) / np.exp([0.3, 0.1]).sum()
    assert float(t) == pytest.approx(c[0] + 0.5 * c[1], rel=1e-14)


# ---------------------------------------------------------------------------
# The dual-level API

def test_dual_level_make_and_unpack():
    x = mg.Value(0.5)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, 2.0)
        assert d is x                                # the node itself carries the tangent
        y = (d * d).exp()
        primal, tangent = fwAD.unpack_dual(y)
        assert primal is y and tangent == pytest.approx(2 * 0.5 * 2.0 * math.exp(0.25), rel=1e-15)
        assert fwAD.unpack_dual(x).tangent == 2.0
        assert fwAD.unpack_dual(mg.Value(3.0)).tangent is None   # depends on no dual
        assert fwAD.unpack_dual(y).primal.data == math.exp(0.25)
        y.backward()                                 # reverse mode is untouched
        assert x.grad == pytest.approx(math.exp(0.25), rel=1e-15)
    assert fwAD.unpack_dual(y) == (y, None)         # the level's tangents are gone
    assert fwAD.unpack_dual(y).tangent is None


def test_make_dual_of_a_number_and_of_a_tensor():
    with fwAD.dual_level():
        x = fwAD.make_dual(1.5, 1.0)
        assert isinstance(x, mg.Value) and x.data == 1.5
        t = fwAD.make_dual(mg.tensor([[1.0, 2.0]]), [[0.5, -1.0]])
        out = fwAD.unpack_dual((t * x).sum())
        assert float(out.tangent) == pytest.approx(0.5 * 1.5 - 1.5 + 3.0, rel=1e-15)
        tangent = fwAD.unpack_dual(t * 2.0).tangent
        assert isinstance(tangent, np.ndarray) and tangent.shape == (1, 2)
        np.testing.assert_array_equal(tangent, [[1.0, -2.0]])


def test_make_dual_of_a_computed_node_makes_it_an_input():
    with fwAD.dual_level():
        x = fwAD.make_dual(mg.Value(2.0), 1.0)
        y = x * 3.0
        fwAD.make_dual(y, 10.0)       # y's tangent is now 10, whatever x's is
        z = y * x
        # dz = x dy + y dx = 2 * 10 + 6 * 1
        assert fwAD.unpack_dual(z).tangent == 26.0


def test_dual_levels_are_per_thread_and_do_not_nest():
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match="do not nest"):
            with fwAD.dual_level():
                pass
        seen = []

        def other():
            with fwAD.dual_level():            # this thread has no level yet
                seen.append(fwAD.unpack_dual(fwAD.make_dual(mg.Value(1.0), 3.0) * 2).tangent)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == [6.0]

    @fwAD.dual_level()
    def decorated():
        return fwAD.unpack_dual(fwAD.make_dual(mg.Value(1.0), 1.0).sin()).tangent
    assert decorated() == pytest.approx(math.cos(1.0), rel=1e-15)


def test_jvp_output_forms():
    out, tangent = fwAD.jvp(lambda a, b: (a * b, a + 1.0, mg.Value(7.0)), (2.0, 3.0), (1.0, 0.0))
    assert [o.data for o in out] == [6.0, 3.0, 7.0]
    assert tangent == (3.0, 1.0, 0.0)                 # independent output: zero
    _, t = fwAD.jvp(lambda x: mg.tensor([1.0, 2.0]) * 1.0, mg.Value(1.0), 1.0)
    np.testing.assert_array_equal(t, [0.0, 0.0])


def test_forward_mode_records_the_graph_even_within_no_grad():
    with mg.no_grad():
        _, t = fwAD.jvp(lambda x: x * x, 3.0, 1.0)
        assert t == 6.0 and not mg.is_grad_enabled()
        with fwAD.dual_level():
            assert mg.is_grad_enabled()
            x = fwAD.make_dual(mg.Value(3.0), 1.0)
            assert fwAD.unpack_dual(x.sin()).tangent == pytest.approx(math.cos(3.0), rel=1e-15)
            with mg.no_grad():                   # cut here, as gradients are
                assert fwAD.unpack_dual(x.sin()).tangent is None
        assert not mg.is_grad_enabled()


def test_in_place_ops_on_tangent_carrying_tensors():
    # an in-place op that records a node (operands that require grad): the
    # tensor is rebased onto the op's node and the tangent follows it
    w = mg.tensor([1.0, 2.0], requires_grad=True)
    with fwAD.dual_level():
        x = fwAD.make_dual(mg.tensor([3.0, 4.0]), np.array([1.0, 1.0]))
        y = x * 1.0
        y.mul_(w)
        np.testing.assert_array_equal(fwAD.unpack_dual(y).tangent, [1.0, 2.0])
    # one that records none (nothing requires grad): its tangent could not
    # follow, so it is refused, as is an in-place change of a seeded tensor
    with fwAD.dual_level():
        x = fwAD.make_dual(mg.tensor([3.0, 4.0]), np.array([1.0, 1.0]))
        y = x * 2.0
        y.mul_(3.0)
        with pytest.raises(RuntimeError, match=r"was changed in place by an op that recorded no node"):
            fwAD.unpack_dual(y)
        x.add_(1.0)
        with pytest.raises(RuntimeError, match=r"unpack_dual: a Tensor given a tangent by make_dual "
                                               r"was changed in place"):
            fwAD.unpack_dual(x * 2.0)
    with pytest.raises(RuntimeError, match=r"jvp: a Tensor given a tangent"):
        fwAD.jvp(lambda t: t.add_(1.0), mg.tensor([1.0]), np.ones(1))


def test_jvp_leaves_no_dual_level_behind():
    x = mg.Value(1.0)
    fwAD.jvp(lambda a: a * 2, x, 1.0)
    with fwAD.dual_level():
        assert fwAD.unpack_dual(x * 2).tangent is None


@pytest.mark.parametrize("call, exc, message", [
    (lambda: fwAD.make_dual(mg.Value(1.0), 1.0), RuntimeError, r"no dual level is active"),
    (lambda: fwAD.unpack_dual(1.0), TypeError, r"unpack_dual\(tensor\) takes a Value or a Tensor"),
    (lambda: fwAD.jvp(3, 1.0, 1.0), TypeError, r"jvp\(func\) takes a callable"),
    (lambda: fwAD.jvp(lambda a: a, (1.0, 2.0), (1.0,)), ValueError, r"2 primals but 1 tangents"),
    (lambda: fwAD.jvp(lambda a: a, (1.0,), 1.0), TypeError, r"jvp\(tangents\) takes a tuple"),
    (lambda: fwAD.jvp(lambda a: a, ("x",), (1.0,)), TypeError, r"jvp\(primals\[0\]\) takes a Value"),
    (lambda: fwAD.jvp(lambda a: a, (1.0,), ("x",)), TypeError, r"jvp\(tangents\[0\]\) for a Value"),
    (lambda: fwAD.jvp(lambda a: a, mg.tensor([1.0, 2.0]), [1.0]), ValueError,
     r"jvp\(tangents\) has shape \(1,\), its Tensor has shape \(2,\)"),
    (lambda: fwAD.jvp(lambda a: a, mg.tensor([1.0]), ["a"]), TypeError, r"jvp\(tangents\) for a Tensor"),
    (lambda: fwAD.jvp(lambda a: 3.0, 1.0, 1.0), TypeError, r"output 0 is a float"),
    (lambda: fwAD.jvp(lambda a, b: a, (mg.Value(1.0),) * 2, (1.0, 1.0)), ValueError,
     r"jvp\(primals\[1\]\): this Value already carries a tangent"),
    (lambda: fwAD.jvp(lambda a: Custom(a), 1.0, 1.0), NotImplementedError,
     r"'mine'\) is a custom op .* has no forward-mode rule"),
    (lambda: fwAD.jvp(lambda a: Cube.apply(a), 1.0, 1.0), NotImplementedError,
     r"'Cube'\) is a custom op \(a Function"),
    (lambda: fwAD.jvp(lambda a: Cube.apply(a), mg.tensor([1.0], requires_grad=True), np.ones(1)),
     NotImplementedError,
     r"'Cube'\) is a custom op \(a Function"),
])
def test_bad_input_is_refused_with_a_clear_error(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def Custom(a):
    return mg.Value(a.data * 2, (a,), "mine")


class Cube(mg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * 3 * x ** 2


def test_make_dual_errors_name_the_argument():
    with fwAD.dual_level():
        with pytest.raises(TypeError, match=r"make_dual\(primal\) takes a Value, a Tensor"):
            fwAD.make_dual("x", 1.0)
        with pytest.raises(TypeError, match=r"make_dual\(tangent\) for a Value takes a real number"):
            fwAD.make_dual(mg.Value(1.0), [1.0])
        x = fwAD.make_dual(mg.Value(1.0), 1.0)
        with pytest.raises(ValueError, match=r"make_dual\(primal\): this Value already carries"):
            fwAD.make_dual(x, 2.0)


# ---------------------------------------------------------------------------
# Random scalar graphs: JVP and HVP

# name: (arity, microgrid, torch) over Values / 0-d tensors
def _graph_ops(torch=None):
    TF = torch.nn.functional if torch else None
    T = torch
    ops = {
        "tanh": (1, lambda a: a.tanh(), lambda a: T.tanh(a)),
        "sigmoid": (1, lambda a: a.sigmoid(), lambda a: T.sigmoid(a)),
        "sin": (1, lambda a: a.sin(), lambda a: T.sin(a)),
        "cos": (1, lambda a: a.cos(), lambda a: T.cos(a)),
        "atan": (1, lambda a: a.atan(), lambda a: T.atan(a)),
        "erf": (1, lambda a: a.erf(), lambda a: T.erf(a)),
        "softplus": (1, lambda a: a.softplus(), lambda a: TF.softplus(a)),
        "silu": (1, lambda a: a.silu(), lambda a: TF.silu(a)),
        "gelu": (1, lambda a: a.gelu(), lambda a: TF.gelu(a)),
        "gelu_tanh": (1, lambda a: a.gelu(approximate="tanh"), lambda a: TF.gelu(a, approximate="tanh")),
        "elu": (1, lambda a: a.elu(0.7), lambda a: TF.elu(a, 0.7)),
        "log_sigmoid": (1, lambda a: a.log_sigmoid(), lambda a: TF.logsigmoid(a)),
        "exp": (1, lambda a: (a * 0.3).exp(), lambda a: T.exp(a * 0.3)),
        "log": (1, lambda a: (a * a + 0.5).log(), lambda a: T.log(a * a + 0.5)),
        "log1p": (1, lambda a: (a * a).log1p(), lambda a: T.log1p(a * a)),
        "expm1": (1, lambda a: (a * 0.5).expm1(), lambda a: T.expm1(a * 0.5)),
        "sqrt": (1, lambda a: (a * a + 0.5).sqrt(), lambda a: T.sqrt(a * a + 0.5)),
        "abs": (1, lambda a: abs(a) * 0.5, lambda a: T.abs(a) * 0.5),
        "neg_square": (1, lambda a: -(a ** 2), lambda a: -(a ** 2)),
        "cube": (1, lambda a: a ** 3.0 * 0.2, lambda a: a ** 3.0 * 0.2),
        "rpow": (1, lambda a: 1.5 ** a, lambda a: 1.5 ** a),
        "rsub_rdiv": (1, lambda a: 3.0 - 2.0 / (a * a + 1.0), lambda a: 3.0 - 2.0 / (a * a + 1.0)),
        "relu": (1, lambda a: a.relu(), lambda a: T.relu(a)),
        "leaky_relu": (1, lambda a: a.leaky_relu(0.1), lambda a: TF.leaky_relu(a, 0.1)),
        "add": (2, lambda a, b: a + b, lambda a, b: a + b),
        "sub": (2, lambda a, b: a - b, lambda a, b: a - b),
        "mul": (2, lambda a, b: a * b, lambda a, b: a * b),
        "div": (2, lambda a, b: a / (b.softplus() + 0.5), lambda a, b: a / (TF.softplus(b) + 0.5)),
        "pow": (2, lambda a, b: (a.sigmoid() + 0.5) ** b, lambda a, b: (T.sigmoid(a) + 0.5) ** b),
        "sum": (3, lambda a, b, c: mg.sum([a, b, c], start=0.5), lambda a, b, c: a + b + c + 0.5),
        "mean": (3, lambda a, b, c: mg.mean([a, b, c]), lambda a, b, c: (a + b + c) / 3),
        "dot": (3, lambda a, b, c: mg.dot([a, b], [c, a], b), lambda a, b, c: a * c + b * a + b),
    }
    return ops


def _random_program(rng, n_inputs, n_ops):
    names = sorted(_graph_ops())
    arity = {n: v[0] for n, v in _graph_ops().items()}
    program = []
    for k in range(n_ops):
        name = names[rng.integers(len(names))]
        available = n_inputs + k
        program.append((name, [int(rng.integers(available)) for _ in range(arity[name])]))
    return program


def _run(program, inputs, ops, total):
    nodes = list(inputs)
    for name, operands in program:
        nodes.append(ops[name][1 if total is mg.sum else 2](*[nodes[i] for i in operands]))
    return total(nodes[-3:])


def _mg_fn(program):
    ops = _graph_ops()
    return lambda *xs: _run(program, xs, ops, mg.sum)


def _torch_fn(program, torch):
    ops = _graph_ops(torch)
    return lambda *xs: _run(program, xs, ops, lambda nodes: nodes[0] + nodes[1] + nodes[2])


def _engine_gradient(fn, x):
    leaves = [mg.Value(v) for v in x]
    fn(*leaves).backward()
    return np.array([v.grad for v in leaves])


SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_graph_jvp_and_hvp_against_reverse_mode(seed):
    """Without torch: the JVP is grad . v; H v is the central difference of
    the engine's gradient along v."""
    rng = np.random.default_rng(100 + seed)
    program = _random_program(rng, 4, 14)
    fn = _mg_fn(program)
    x, v = rng.uniform(-1.5, 1.5, 4), rng.standard_normal(4)
    _, tangent = fwAD.jvp(fn, tuple(float(t) for t in x), tuple(v))
    grad = _engine_gradient(fn, x)
    assert tangent == pytest.approx(float(grad @ v), rel=1e-11, abs=1e-12)
    leaves = [mg.Value(t) for t in x]
    out = fn(*leaves)
    result = fwAD.graph_hvp(out, leaves, v)
    assert result.value == out.data
    np.testing.assert_allclose(result.grad, grad, rtol=1e-13, atol=1e-15)
    h = 1e-5
    diff = (_engine_gradient(fn, x + h * v) - _engine_gradient(fn, x - h * v)) / (2 * h)
    np.testing.assert_allclose(result.hvp, diff, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_graph_jvp_and_hvp_match_torch(seed):
    torch = _torch()
    rng = np.random.default_rng(100 + seed)
    program = _random_program(rng, 4, 14)
    x, v = rng.uniform(-1.5, 1.5, 4), rng.standard_normal(4)
    _, tangent = fwAD.jvp(_mg_fn(program), tuple(float(t) for t in x), tuple(v))
    tx = tuple(torch.tensor(t, dtype=torch.float64) for t in x)
    tv = tuple(torch.tensor(t, dtype=torch.float64) for t in v)
    _, expected = torch.func.jvp(_torch_fn(program, torch), tx, tv)
    assert tangent == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    leaves = [mg.Value(t) for t in x]
    result = fwAD.graph_hvp(_mg_fn(program)(*leaves), leaves, v)
    _, hv = torch.autograd.functional.hvp(_torch_fn(program, torch), tx, tv)
    np.testing.assert_allclose(result.hvp, [h.item() for h in hv], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# The Hessian-vector product on the models of the issue

def _exam_loss(weights, x1=2.0, x2=-3.0, y=1.0):
    """Exam problem 1's loss (shared/exam-problems.md): two hidden neurons
    (ReLU, sigmoid), an identity output used as a probability, BCE."""
    w11, w12, w10, w21, w22, w20, w31, w32, w30 = weights
    h1 = mg.dot([w11, w12], [x1, x2], w10).relu()
    h2 = mg.dot([w21, w22], [x1, x2], w20).sigmoid()
    yhat = mg.dot([w31, w32], [h1, h2], w30)
    return -(y * yhat.log() + (1 - y) * (1 - yhat).log())


EXAM_WEIGHTS = [0.9, 0.4, 0.0, -1.5, -0.7, 0.0, -0.2, 1.6, 0.0]


def _hessian(loss_fn, values):
    leaves = [mg.Value(v) for v in values]
    out = loss_fn(leaves)
    n = len(values)
    return np.array([fwAD.graph_hvp(out, leaves, np.eye(n)[i]).hvp for i in range(n)]), out, leaves


def test_exam_loss_hessian_by_hand_and_by_differences():
    H, out, leaves = _hessian(_exam_loss, EXAM_WEIGHTS)
    assert out.data == pytest.approx(1.071539693, abs=1e-9)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-15)
    # by hand: L = -log(yhat), yhat linear in (w31, w32, w30) with
    # coefficients (h1, h2, 1), so d2L/dw3i dw3j = c_i c_j / yhat^2
    h1 = 0.6
    h2 = 1 / (1 + math.exp(0.9))
    yhat = -0.2 * h1 + 1.6 * h2
    c = np.array([h1, h2, 1.0])
    np.testing.assert_allclose(H[6:, 6:], np.outer(c, c) / yhat ** 2, rtol=1e-13)
    # the ReLU neuron's weights enter linearly through h1 = z1: d2L/dw11^2 = (x1 w31 / yhat)^2
    assert H[0, 0] == pytest.approx((2.0 * -0.2 / yhat) ** 2, rel=1e-13)
    # central differences of the engine's gradient
    grad = lambda w: _engine_gradient(lambda *p: _exam_loss(p), w)   # noqa: E731
    for i in range(9):
        e = np.eye(9)[i] * 1e-5
        np.testing.assert_allclose(H[i], (grad(np.add(EXAM_WEIGHTS, e)) - grad(np.subtract(EXAM_WEIGHTS, e)))
                                   / 2e-5, rtol=1e-5, atol=1e-6)


def test_exam_loss_hessian_matches_torch():
    torch = _torch()
    H, _, _ = _hessian(_exam_loss, EXAM_WEIGHTS)

    def loss(w):
        h1 = torch.relu(w[0] * 2.0 + w[1] * -3.0 + w[2])
        h2 = torch.sigmoid(w[3] * 2.0 + w[4] * -3.0 + w[5])
        return -torch.log(w[6] * h1 + w[7] * h2 + w[8])

    expected = torch.autograd.functional.hessian(loss, torch.tensor(EXAM_WEIGHTS, dtype=torch.float64))
    np.testing.assert_allclose(H, expected.numpy(), rtol=1e-10, atol=1e-12)


def _mlp_and_data(seed):
    mg.manual_seed(seed)
    model = mg.nn.MLP(2, [4, 4, 1])
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, 2))
    y = np.where(rng.random(6) < 0.5, -1.0, 1.0)
    return model, X, y


def _mlp_loss(model, X, y):
    """micrograd's demo loss: SVM max-margin plus L2 regularisation."""
    scores = [model([mg.Value(a, requires_grad=False), mg.Value(b, requires_grad=False)]) for a, b in X]
    losses = [(1 + -yi * s).relu() for yi, s in zip(y, scores)]
    return mg.mean(losses) + 1e-3 * mg.sum([p * p for p in model.parameters()])


def _torch_mlp_loss(model, X, y, torch):
    sizes = [(len(layer.neurons), len(layer.neurons[0].w)) for layer in model.layers]

    def loss(flat):
        k, h = 0, torch.tensor(X, dtype=torch.float64)
        for i, (nout, nin) in enumerate(sizes):
            block = flat[k:k + nout * (nin + 1)].reshape(nout, nin + 1)   # w then b, per neuron
            k += nout * (nin + 1)
            h = h @ block[:, :nin].T + block[:, nin]
            if i < len(sizes) - 1:
                h = torch.relu(h)
        margins = torch.relu(1 - torch.tensor(y, dtype=torch.float64) * h[:, 0])
        return margins.mean() + 1e-3 * (flat * flat).sum()
    return loss


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_hvp_matches_torch(seed):
    torch = _torch()
    model, X, y = _mlp_and_data(seed)
    params = model.parameters()
    out = _mlp_loss(model, X, y)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(len(params))
    result = fwAD.graph_hvp(out, params, v)
    flat = torch.tensor([p.data for p in params], dtype=torch.float64)
    value, hv = torch.autograd.functional.hvp(_torch_mlp_loss(model, X, y, torch), flat,
                                              torch.tensor(v))
    assert result.value == pytest.approx(value.item(), rel=1e-13)
    np.testing.assert_allclose(result.hvp, hv.numpy(), rtol=1e-10, atol=1e-12)
    out.backward()
    np.testing.assert_allclose(result.grad, [p.grad for p in params], rtol=1e-13, atol=1e-16)


def test_hvp_builds_nothing_and_touches_no_gradient():
    leaves = [mg.Value(v) for v in EXAM_WEIGHTS]
    out = _exam_loss(leaves)
    before = mg.topological_order(out)
    fwAD.graph_hvp(out, leaves, np.ones(9))
    assert mg.topological_order(out) == before
    assert all(p.grad == 0.0 for p in leaves) and out.grad == 0.0


def test_hvp_of_an_input_the_output_does_not_use_is_zero():
    a, b, unused = mg.Value(1.0), mg.Value(2.0), mg.Value(3.0)
    r = fwAD.graph_hvp(a * a * b, [a, unused, b], [1.0, 1.0, 0.0])
    assert r == (2.0, (4.0, 0.0, 1.0), (4.0, 0.0, 2.0))     # H = [[2b, 2a], [2a, 0]]
    r = fwAD.graph_hvp(a * 2.0, a, 1.0)
    assert r.grad == (2.0,) and r.hvp == (0.0,)
    r = fwAD.graph_hvp(mg.Value(5.0) * 2.0, [a], [1.0])
    assert r == (10.0, (0.0,), (0.0,))


def test_hvp_inputs_that_take_no_gradient_still_count():
    a = mg.Value(1.5, requires_grad=False)
    r = fwAD.graph_hvp(a ** 3.0, [a], [1.0])
    assert r.grad == (3 * 1.5 ** 2,) and r.hvp == (6 * 1.5,)


@pytest.mark.parametrize("call, exc, message", [
    (lambda a: fwAD.graph_hvp(mg.tensor([1.0]), [a], [1.0]), TypeError, r"graph_hvp\(output\) takes a Value"),
    (lambda a: fwAD.graph_hvp(a * 2, [a, 1.0], [1.0, 1.0]), TypeError, r"inputs\[1\] is a float"),
    (lambda a: fwAD.graph_hvp(a * 2, 3, [1.0]), TypeError, r"graph_hvp\(inputs\) takes a sequence"),
    (lambda a: fwAD.graph_hvp(a * 2, [a * 1], [1.0]), ValueError, r"inputs\[0\] was computed by '\*'"),
    (lambda a: fwAD.graph_hvp(a * 2, [a, a], [1.0, 1.0]), ValueError, r"inputs\[0\] and inputs\[1\] are the same"),
    (lambda a: fwAD.graph_hvp(a * 2, [a], [1.0, 2.0]), ValueError, r"1 inputs but v has 2 entries"),
    (lambda a: fwAD.graph_hvp(a * 2, [a], ["x"]), TypeError, r"v\[0\] is a str"),
    (lambda a: fwAD.graph_hvp((mg.stack([a]) * 2.0)[0], [a], [1.0]), NotImplementedError,
     r"covers graphs of Values: node #\d+ is a Tensor \('stack'\)"),
    (lambda a: fwAD.graph_hvp(Custom(a) * 2.0, [a], [1.0]), NotImplementedError,
     r"'mine'\) is a custom op .* has no forward-mode rule"),
    (lambda a: fwAD.graph_hvp(Cube.apply(a) * 2.0, [a], [1.0]), NotImplementedError,
     r"'Cube'\) is a custom op \(a Function"),
])
def test_hvp_bad_input(call, exc, message):
    with pytest.raises(exc, match=message):
        call(mg.Value(0.5))


def test_hvp_may_read_an_element_of_a_constant_tensor():
    t = mg.tensor([2.0, 3.0])
    a = mg.Value(0.5)
    r = fwAD.graph_hvp(a * a * t[1], [a], [1.0])
    assert r.grad == (3.0,) and r.hvp == (6.0,)

"""The op table (csrc/mg_ops.def, microgrid.core.optable): every row is checked
here by enumeration, so a new row is tested without a new test.

- Value and Tensor compute the same bits, value and gradient (the sign of
  zero and NaN included), at random points and at the IEEE corner cases;
- explain's local derivatives are the engine's gradients;
- the row's formula, evaluated in Python, is what the compiled op computes
  (the text a worked solution shows is the rule that runs);
- each row against PyTorch float64 (values and gradients);
- the README's op table is the table.
"""
import math
import pathlib

import numpy as np
import pytest

import microgrid as mg
from microgrid.core import optable
from opinfo import formula

SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-300, -1e-300, 1e300, -1e300,
           1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, 1e-8, -1e-8, 20.0, -20.0, 800.0, -800.0]
UNARY = [r for r in optable.ELEMENTWISE if r.kind != "BINARY"]
BINARY = [r for r in optable.ELEMENTWISE if r.kind == "BINARY"]
CONSTANTS = [0.01, -0.5, 0.0, 1.5]


def _points(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([SPECIAL, rng.standard_normal(30) * 3])


def _bits(x):
    """The IEEE bit pattern: equal bits means equal value, sign of zero and NaN alike."""
    return np.asarray(x, dtype=np.float64).view(np.int64)


def _value_op(row, c):
    """How a Value builds a node of ``row`` (with constant ``c`` if it has one)."""
    if row.kind == "BINARY":
        return {"ADD": lambda a, b: a + b, "SUB": lambda a, b: a - b, "MUL": lambda a, b: a * b,
                "DIV": lambda a, b: a / b, "POW": lambda a, b: a ** b}[row.code_name]
    method = row.name
    kwargs = {row.variant[0]: row.variant[1]} if row.variant else {}
    if row.value_param:
        return lambda a: getattr(a, method)(c, **kwargs)
    return lambda a: getattr(a, method)(**kwargs)


def _tensor_op(row, c):
    if row.kind == "BINARY":
        return _value_op(row, c)
    kwargs = {row.variant[0]: row.variant[1]} if row.variant else {}
    if row.tensor_param:
        kwargs[row.tensor_param] = c
    return lambda a: getattr(a, row.name)(**kwargs)


def _value_results(op, *xs):
    leaves = [mg.Value(float(x)) for x in xs]
    out = op(*leaves)
    out.backward()
    return out.data, [v.grad for v in leaves], out


@pytest.mark.parametrize("row", UNARY, ids=[r.code_name for r in UNARY])
def test_value_and_tensor_agree_bit_for_bit_unary(row):
    for c in (CONSTANTS if row.value_param else [None]):
        x = _points()
        t = mg.tensor(x, requires_grad=True)
        out = _tensor_op(row, c)(t)
        out.backward(np.ones_like(x))
        for i, xi in enumerate(x):
            value, (grad,), _ = _value_results(_value_op(row, c), xi)
            assert _bits(value) == _bits(out.data[i]), f"{row.name}({xi!r}) value, c={c}"
            assert _bits(grad) == _bits(t.grad[i]), f"{row.name}'({xi!r}) gradient, c={c}"


@pytest.mark.parametrize("row", BINARY, ids=[r.code_name for r in BINARY])
def test_value_and_tensor_agree_bit_for_bit_binary(row):
    p = _points()[::2]
    a, b = np.meshgrid(p, p, indexing="ij")
    a, b = a.ravel(), b.ravel()
    ta, tb = mg.tensor(a, requires_grad=True), mg.tensor(b, requires_grad=True)
    out = _value_op(row, None)(ta, tb)
    out.backward(np.ones_like(a))
    for i in range(a.size):
        value, (ga, gb), _ = _value_results(_value_op(row, None), a[i], b[i])
        assert _bits(value) == _bits(out.data[i]), f"{row.symbol} value at {a[i]!r}, {b[i]!r}"
        assert _bits(ga) == _bits(ta.grad[i]), f"{row.symbol} d/da at {a[i]!r}, {b[i]!r}"
        assert _bits(gb) == _bits(tb.grad[i]), f"{row.symbol} d/db at {a[i]!r}, {b[i]!r}"


@pytest.mark.parametrize("row", BINARY, ids=[r.code_name for r in BINARY])
def test_constant_operand_forms_agree_with_the_binary_op(row):
    """a op c and c op a (a constant kept in the node) compute what a op b does."""
    op = _value_op(row, None)
    for x in _points()[::3]:
        for c in (2.0, -0.5, 0.0, 3.0):
            both = _value_results(op, x, c)
            left = mg.Value(float(x))
            out = op(left, c)
            out.backward()
            assert _bits(out.data) == _bits(both[0]) and _bits(left.grad) == _bits(both[1][0])
            right = mg.Value(float(x))
            out = op(c, right)
            out.backward()
            reference = _value_results(op, c, x)
            assert _bits(out.data) == _bits(reference[0]) and _bits(right.grad) == _bits(reference[1][1])


@pytest.mark.parametrize("row", optable.ELEMENTWISE, ids=[r.code_name for r in optable.ELEMENTWISE])
def test_explain_local_derivatives_are_the_engines_gradients(row):
    c = CONSTANTS[0] if row.value_param else None
    op = _value_op(row, c)
    for x in _points()[::2]:
        xs = (x, 0.75) if row.kind == "BINARY" else (x,)
        value, grads, out = _value_results(op, *xs)
        # (equal numbers, NaN alike; a leaf's gradient is a sum started at +0,
        # so a -0 local derivative arrives as +0)
        locals_ = out._local_grads()
        assert np.array_equal(locals_, grads, equal_nan=True)
        out.label = "out"
        for name, parent in zip("xy", out._parents()):
            parent.label = name
        e = mg.explain(out, backward=False)
        for name, grad in zip("xy", grads):
            assert _bits(e.local("out", name)) == _bits(locals_["xy".index(name)])


@pytest.mark.parametrize("row", optable.ELEMENTWISE, ids=[r.code_name for r in optable.ELEMENTWISE])
def test_the_formula_shown_is_the_formula_computed(row):
    """Evaluated with numpy, the row's forward and derivative text give the
    compiled op's numbers (to rounding: numpy's exp, erf, ... may differ from
    the C library's in the last bit)."""
    rng = np.random.default_rng(1)
    c = CONSTANTS[1] if row.value_param else None
    op = _value_op(row, c)
    # both signs, unless the op is undefined for negative numbers (log, sqrt)
    signed = row.kind != "BINARY" and not np.isnan(_value_results(op, -1.0)[0])
    for _ in range(20):
        xs = rng.uniform(0.2, 2.0, 2 if row.kind == "BINARY" else 1)
        if signed:
            xs = xs * rng.choice([-1.0, 1.0], xs.shape)
        value, grads, _ = _value_results(op, *xs)
        operands = dict(a=xs[0], b=xs[1] if row.kind == "BINARY" else None, c=c)
        np.testing.assert_allclose(formula(row)(**operands), value, rtol=1e-13, atol=0)
        for expression, grad in zip(row.grads, grads):
            np.testing.assert_allclose(formula(row, expression)(**operands, out=value), grad,
                                       rtol=1e-13, atol=1e-300)


def _torch_function(torch, row):
    """PyTorch's function for a row, as a function of (a[, b]) tensors."""
    F = torch.nn.functional
    if row.kind == "BINARY":
        return getattr(torch, row.name)
    kwargs = {row.variant[0]: row.variant[1]} if row.variant else {}
    fn = getattr(F, row.torch_function, None) if row.torch_function else None
    fn = fn or getattr(torch, row.name, None)
    if fn is None:
        return None
    if row.tensor_param:
        return lambda a: fn(a, CONSTANTS[1], **kwargs)
    return lambda a: fn(a, **kwargs)


@pytest.mark.parametrize("row", optable.ELEMENTWISE, ids=[r.code_name for r in optable.ELEMENTWISE])
def test_torch_float64_parity(row):
    torch = pytest.importorskip("torch")
    fn = _torch_function(torch, row)
    assert fn is not None, f"no PyTorch function found for row {row.code_name}"
    rng = np.random.default_rng(2)
    n = 200
    if row.kind == "BINARY":
        xs = [rng.uniform(0.2, 3.0, n) if row.code_name == "POW" else rng.standard_normal(n) * 2,
              rng.standard_normal(n) * 2]
    else:
        x = rng.standard_normal(n) * 3
        probe = mg.tensor(np.array([-1.5, -0.5]))
        if np.isnan(_tensor_op(row, CONSTANTS[1])(probe).data).any():
            x = np.abs(x) + 0.05
        xs = [x]
    leaves = [mg.tensor(x, requires_grad=True) for x in xs]
    out = (_value_op(row, CONSTANTS[1]) if row.kind == "BINARY" else _tensor_op(row, CONSTANTS[1]))(*leaves)
    g = rng.standard_normal(n)
    out.backward(g)
    tleaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    tout = fn(*tleaves)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-14)
    for leaf, tleaf in zip(leaves, tleaves):
        np.testing.assert_allclose(leaf.grad, tleaf.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_every_row_has_a_method_or_an_operator_and_the_codes_are_one_space():
    names = set()
    for row in optable.ELEMENTWISE:
        assert row.name, row.code_name
        if row.kind != "BINARY":
            assert callable(getattr(mg.Value, row.name)) and callable(getattr(mg.Tensor, row.name))
        names.add(row.code_name)
    assert len(names) == len(optable.ELEMENTWISE)
    assert [r.code for r in optable.ROWS] == list(range(len(optable.ROWS)))
    # a sigmoid node has the same op code whether it is a Value or a Tensor
    v, t = mg.Value(0.3).sigmoid(), mg.tensor([0.3]).sigmoid()
    assert optable.row_of(v) is optable.row_of(t) and optable.row_of(v).name == "sigmoid"


def test_readme_op_table_is_the_table():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md")
    if not readme.exists():
        pytest.skip("README.md is not beside the tests (installed test run)")
    assert optable.markdown_table() in readme.read_text(encoding="utf-8"), \
        "README's op table differs from the op table: paste microgrid.core.optable.markdown_table()"

"""Tests of explain's LaTeX output and of explain on one element of a
conv2d / max_pool2d output.

The element's numbers are checked against a sliding-window reference
written here with numpy, against central differences of the element in the
weight, and against the engine's gradient; the LaTeX against the text form.
"""
import re
import sys

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_explain import problem1  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/examples")


# -- to_latex ------------------------------------------------------------------

def _body(tex):
    lines = tex.strip().splitlines()
    assert lines[0] == r"\begin{align*}" and lines[-1] == r"\end{align*}"
    return lines[1:-1]


def _balanced(tex):
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += ch == "{"
        depth -= ch == "}"
        if depth < 0:
            return False
    return depth == 0


def _numbers_text(s):
    # numbers that stand alone (not the digits of a name such as w12 or n17)
    return re.findall(r"(?<![\w#.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", s)


def _numbers_latex(s):
    s = re.sub(r"_\{[^}]*\}|\^\{\(\d+\)\}", "", s)     # subscripts of names
    return re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", s)


def _rows(tex):
    return [l for l in _body(tex) if not l.startswith(r"\intertext")]


def test_latex_structure_problem1():
    L, _ = problem1()
    e = mg.explain(L, wrt="w12")
    tex = e.to_latex()
    assert _balanced(tex)
    assert tex.count(r"\begin{") == tex.count(r"\end{") == 1
    rows = _rows(tex)
    # one line per forward row, backward row and chain line, no more
    assert len(rows) == len(e.forward) + len(e.backward) + len(e.chain.lines)
    assert all(r.endswith(r" \\") for r in rows[:-1]) and not rows[-1].endswith(r"\\")
    # each row is aligned at one &= (a remark row has no = to align)
    for r in rows:
        assert r.count("&=") == 1 or (r.startswith("&") and "&=" not in r), r
    heads = [l for l in _body(tex) if l.startswith(r"\intertext")]
    assert len(heads) == 3
    assert "w_{12}" in tex and r"\hat{y}" in tex and "w12" not in tex.replace("dw12}", "")


def test_latex_carries_the_text_numbers():
    L, _ = problem1()
    e = mg.explain(L, wrt="w12")
    rows = _rows(e.to_latex())
    forward, rest = rows[:len(e.forward)], rows[len(e.forward):]
    backward, chain = rest[:len(e.backward)], rest[len(e.backward):]
    for row, line in zip(e.forward, forward):
        texts = [row.expression, row.value] + [t for t, _ in row.derivatives]
        if row.expression == "(leaf)":
            texts = texts[1:]
        want = [n for t in texts for n in _numbers_text(t)]
        assert _numbers_latex(line) == want, (row, line)
    for row, line in zip(e.backward, backward):
        assert _numbers_latex(line) == _numbers_text(row.text) + _numbers_text(row.how), line
    for text, line in zip(e.chain.lines, chain):
        assert _numbers_latex(line) == _numbers_text(text), line
    assert chain[0].endswith("= (-2.9199)(-0.2)(1)(-3) = -1.7519 \\\\")


def test_latex_names():
    from microgrid.tools.explain import _latex_name
    assert _latex_name("w12") == "w_{12}"
    assert _latex_name("x_1") == "x_{1}"
    assert _latex_name("yhat") == r"\hat{y}"
    assert _latex_name("sigma") == r"\sigma"
    assert _latex_name("loss") == r"\mathrm{loss}"
    assert _latex_name("h1#2") == "h_{1}^{(2)}"
    assert _latex_name("a$b") == r"\text{a\$b}"


def test_latex_element_window_and_tie():
    x, w, b, out = _graph(np.array([[[[1., 1, 0], [1, 0, 0], [0, 0, 0]]]]),
                          np.ones((1, 1, 1, 1)), None, pool=dict(kernel_size=2, stride=1))
    e = mg.explain(out[0, 0, 0, 0], wrt=w)
    tex = e.to_latex()
    assert _balanced(tex)
    rows = _rows(tex)
    assert len(rows) == len(e.forward) + len(e.backward) + len(e.window) + len(e.chain.lines)
    for text, line in zip(e.window + e.chain.lines, rows[-len(e.window) - len(e.chain.lines):]):
        assert _numbers_latex(line) == _numbers_text(text), (text, line)


# -- one element of a conv2d / max_pool2d output --------------------------------

def _graph(image, weight, bias, conv=None, pool=None, relu=False):
    x = mg.tensor(image)
    x.label = "x"
    w = mg.tensor(weight, requires_grad=True)
    w.label = "w"
    b = None
    if bias is not None:
        b = mg.tensor(bias, requires_grad=True)
        b.label = "b"
    out = F.conv2d(x, w, b, **(conv or {}))
    out.label = "c"
    if relu:
        out = out.relu()
    if pool is not None:
        out = F.max_pool2d(out, **pool)
        out.label = "p"
    return x, w, b, out


def _element_of(build, w_data, index):
    """The element's value as a function of the weight, rebuilt from scratch."""
    return float(build(w_data)[index].data)


def _finite_difference(build, w_data, index, h=1e-6):
    g = np.zeros_like(w_data)
    for k in np.ndindex(w_data.shape):
        up, down = w_data.copy(), w_data.copy()
        up[k] += h
        down[k] -= h
        g[k] = (_element_of(build, up, index) - _element_of(build, down, index)) / (2 * h)
    return g


def _reference_conv(x, w, b, stride, padding, dilation, groups):
    """Sliding windows, written out: a plain loop over every output cell."""
    n, c_in, H, W = x.shape
    c_out, cpg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, c_out, oh, ow))
    for i in np.ndindex(out.shape):
        b_, co, r, s = i
        g = co // (c_out // groups)
        for ci, p, q in np.ndindex(cpg, kh, kw):
            out[i] += w[co, ci, p, q] * xp[b_, g * cpg + ci, r * stride + p * dilation,
                                           s * stride + q * dilation]
        out[i] += 0 if b is None else b[co]
    return out


CASES = [  # (conv arguments, pool arguments, element index, batch, channels in, out, groups)
    (dict(), dict(kernel_size=2), (0, 0, 1, 1), 1, 1, 1, 1),
    (dict(stride=2, padding=1), None, (1, 1, 1, 2), 2, 2, 2, 1),
    (dict(dilation=2, padding=2), dict(kernel_size=2, stride=1), (1, 0, 2, 1), 2, 1, 2, 1),
    (dict(padding=1, groups=2), dict(kernel_size=3, stride=2, padding=1), (0, 3, 1, 0), 1, 2, 4, 2),
    (dict(stride=1), dict(kernel_size=2, ceil_mode=True), (0, 1, 2, 2), 1, 3, 2, 1),
]


@pytest.mark.parametrize("conv, pool, index, batch, cin, cout, groups", CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_element_against_reference_differences_and_engine(conv, pool, index, batch, cin, cout,
                                                          groups, with_bias):
    rng = np.random.default_rng(sum(index) + 7 * cin + with_bias)
    image = rng.normal(size=(batch, cin, 7, 7))
    weight = rng.normal(size=(cout, cin // groups, 3, 3))
    bias = rng.normal(size=cout) if with_bias else None
    conv = dict(conv, groups=groups) if groups > 1 else conv
    x, w, b, out = _graph(image, weight, bias, conv, pool)
    e = mg.explain(out[index], wrt=w)

    def build(wd):
        return _graph(image, wd, bias, conv, pool)[3]

    # the engine ran backward once: its gradient, explain's and central differences agree
    np.testing.assert_allclose(e.chain.grad, w.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(e.chain.grad, _finite_difference(build, weight, index), atol=1e-6)
    assert e.chain.lines[-1] == "(backward() gives w.grad: agrees at every entry)"
    # the convolution cell against the loop reference, term by term
    ref = _reference_conv(image, weight, bias, conv.get("stride", 1), conv.get("padding", 0),
                          conv.get("dilation", 1), groups)
    conv_step = e.window_steps[-1]
    cell = tuple(int(k) for k in re.findall(r"\d+", conv_step.out))
    assert conv_step.total == pytest.approx(ref[cell], abs=1e-12)
    assert conv_step.value == pytest.approx(ref[cell], abs=1e-12)
    assert len(conv_step.terms) == weight[0].size
    assert (conv_step.bias is None) == (bias is None)
    if pool is not None:
        pool_step = e.window_steps[0]
        values = [v for _, v in pool_step.cells]
        assert pool_step.value == max(values) == pytest.approx(out.data[index])
        assert cell == pool_step.winner
        # the winner is the first maximum in row-major order
        assert pool_step.cells[values.index(max(values))][0] == pool_step.winner


def test_problem7_hand_numbers():
    from problem07_conv_pool import FILTER1, FILTER2, HAND, IMAGE

    x, w, b, out = _graph(IMAGE.reshape(1, 1, 6, 6), np.stack([FILTER1, FILTER2])[:, None],
                          None, pool=dict(kernel_size=2))
    for c in range(2):
        for i, j in np.ndindex(2, 2):
            e = mg.explain(out[0, c, i, j], wrt=w, backward=False)
            pool_step, conv_step = e.window_steps
            hand_pooled = HAND[f"filter {c + 1}, pooled"][i][j]
            assert pool_step.value == hand_pooled
            hand_map = np.array(HAND[f"filter {c + 1}, stride 1"])
            assert [v for _, v in pool_step.cells] == list(hand_map[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel())
            assert conv_step.total == hand_pooled
    # the top-left window of filter 1, as the lecture writes it out
    e = mg.explain(out[0, 0, 0, 0], wrt=w)
    assert "c[0, 0, 0, 0] = w[0, 0, 0, 0]*x[0, 0, 0, 0] + " in str(e)
    assert "  = (1)(1) + (-1)(0) + (-1)(0) + (-1)(0) + (1)(1) + (-1)(0) + (-1)(0) + (-1)(0) + (1)(1)" in e.window
    assert "dn5/dw[0, 0, 2, 2] = dn5/dc[0, 0, 0, 0] · x[0, 0, 2, 2] = (1)(1) = 1" in e.chain.lines
    assert "every other entry of w: 0 (n5 does not depend on it)" in e.chain.lines


def test_pool_tie_first_maximum_wins():
    image = np.array([[[[0., 2, 2], [2, 1, 0], [0, 0, 0]]]])
    x, w, b, out = _graph(image, np.ones((1, 1, 1, 1)), None, pool=dict(kernel_size=2, stride=1))
    e = mg.explain(out[0, 0, 0, 0], wrt=w)
    pool_step = e.window_steps[0]
    assert pool_step.winner == (0, 0, 0, 1)
    assert pool_step.ties == [(0, 0, 1, 0)]
    assert any(l.startswith("  tie: c[0, 0, 1, 0] also hold 2") for l in e.window)
    np.testing.assert_array_equal(w.grad, [[[[2.0]]]])


def test_relu_between_conv_and_pool_and_wrt_input_and_bias():
    rng = np.random.default_rng(3)
    image, weight, bias = rng.normal(size=(1, 2, 6, 6)), rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    for target in ("x", "b"):
        x, w, b, out = _graph(image, weight, bias, dict(padding=1), dict(kernel_size=2), relu=True)
        x.requires_grad = True
        index = (0, 2, 1, 2)
        e = mg.explain(out[index], wrt=target)
        expected = (x if target == "x" else b).grad
        np.testing.assert_allclose(e.chain.grad, expected, atol=1e-12)
        assert e.chain.lines[-1].endswith("agrees at every entry)")
    relu_steps = [s for s in e.window_steps if type(s).__name__ == "ElementwiseStep"]
    assert len(relu_steps) == 1 and relu_steps[0].local in (0.0, 1.0)


def test_unbatched_input_through_reshape():
    rng = np.random.default_rng(5)
    x = mg.tensor(rng.normal(size=(1, 4, 4)))
    w = mg.tensor(rng.normal(size=(2, 1, 3, 3)), requires_grad=True)
    out = F.max_pool2d(F.conv2d(x, w, padding=1), 2)     # (2, 2, 2): reshapes around the ops
    e = mg.explain(out[1, 1, 0], wrt=w)
    np.testing.assert_allclose(e.chain.grad, w.grad, atol=1e-12)


def test_not_compared_when_leaves_hold_other_passes():
    x, w, b, out = _graph(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), None)
    out.sum().backward()
    e = mg.explain(out[0, 0, 1, 1], wrt=w)
    assert e.chain.engine_grad is None
    assert e.chain.lines[-1] == "(w.grad does not hold this graph's gradient alone: not compared)"
    np.testing.assert_array_equal(e.chain.grad, np.ones((1, 1, 3, 3)))


# -- bad input: clear messages -----------------------------------------------------

def test_element_of_an_op_explain_does_not_write():
    a = mg.tensor(np.ones((2, 3)))
    m = mg.tensor(np.ones((3, 2)), requires_grad=True)
    m.label = "m"
    out = a @ m
    with pytest.raises(ValueError, match=r"explain\(wrt=m\): .*comes from @, which explain does not write"):
        mg.explain(out[0, 1], wrt=m)
    assert mg.explain(out[0, 1]).window is None      # without wrt: the usual rows, no error


def test_wrt_not_an_operand_of_the_conv():
    x, w, b, out = _graph(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), None, pool=dict(kernel_size=2))
    other = mg.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="not part of the graph"):
        mg.explain(out[0, 0, 0, 0], wrt=other)
    with pytest.raises(ValueError, match=r"explain\(wrt=c\): c is not an operand \(input, weight, bias\)"):
        mg.explain(out[0, 0, 0, 0], wrt="c")


def test_tensor_wrt_needs_an_element_root():
    x, w, b, out = _graph(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), None)
    with pytest.raises(ValueError, match=r"one element of a conv2d / max_pool2d output"):
        mg.explain(out.sum(), wrt=w)

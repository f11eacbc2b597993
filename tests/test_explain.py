"""Tests of microgrid.explain (worked solutions) and microgrid.draw (DOT export).

Numbers are checked against values computed by hand for exam problem 1 and
against central differences for every scalar op's local derivative.
"""
import math
import re
import shutil
import sys

import pytest

import microgrid as mg
from microgrid.tools.draw import GraphvizNotFound
from microgrid.tools.explain import fmt

V = mg.Value

CHAIN_LINE = ("dL/dw12 = dL/dyhat · dyhat/dh1 · dh1/dz1 · dz1/dw12 "
              "= (-2.9199)(-0.2)(1)(-3) = -1.7519")


def problem1():
    """Exam problem 1 built from labeled Values; returns (L, named nodes)."""
    x1 = V(2.0, label="x1", requires_grad=False)
    x2 = V(-3.0, label="x2", requires_grad=False)
    w = {name: V(val, label=name) for name, val in
         [("w11", 0.9), ("w12", 0.4), ("w10", 0.0), ("w21", -1.5), ("w22", -0.7),
          ("w20", 0.0), ("w31", -0.2), ("w32", 1.6), ("w30", 0.0)]}
    z1 = mg.dot([w["w11"], w["w12"]], [x1, x2], w["w10"])
    z1.label = "z1"
    h1 = z1.relu()
    h1.label = "h1"
    z2 = mg.dot([w["w21"], w["w22"]], [x1, x2], w["w20"])
    z2.label = "z2"
    h2 = z2.sigmoid()
    h2.label = "h2"
    yhat = mg.dot([w["w31"], w["w32"]], [h1, h2], w["w30"])
    yhat.label = "yhat"
    y = 1.0
    L = -(y * yhat.log() + (1 - y) * (1 - yhat).log())
    L.label = "L"
    return L, dict(w, z1=z1, h1=h1, z2=z2, h2=h2, yhat=yhat, x1=x1, x2=x2)


# -- numbers -------------------------------------------------------------------

def test_problem1_forward_values_by_hand():
    L, n = problem1()
    e = mg.explain(L)
    assert e.value("z1") == pytest.approx(0.6, abs=1e-15)
    assert e.value("h1") == pytest.approx(0.6, abs=1e-15)
    assert e.value("h2") == pytest.approx(0.289050497, abs=1e-9)
    assert e.value("h2") == pytest.approx(1 / (1 + math.exp(0.9)), rel=1e-15)
    assert e.value("yhat") == pytest.approx(0.342480795, abs=1e-9)
    assert e.value("L") == pytest.approx(1.071539693, abs=1e-9)


def test_problem1_gradients_and_local_derivatives():
    L, n = problem1()
    e = mg.explain(L, wrt=n["w12"])
    yhat = -0.2 * 0.6 + 1.6 / (1 + math.exp(0.9))
    assert e.grad("yhat") == pytest.approx(-1 / yhat, rel=1e-12)
    assert e.grad("w12") == pytest.approx(-1.751923, abs=1e-6)
    assert n["w12"].grad == pytest.approx(-1.751923, abs=1e-6)
    assert e.local("z1", "w12") == -3.0
    assert e.local("h1", "z1") == 1.0
    h2 = e.value("h2")
    assert e.local("h2", "z2") == pytest.approx(h2 * (1 - h2), rel=1e-15)
    assert e.local("yhat", "h1") == -0.2
    assert e.chain.total == pytest.approx(-1.751923, abs=1e-6)
    assert e.chain.n_paths == 1


def test_chain_string_is_written_as_by_hand():
    L, n = problem1()
    e = mg.explain(L, wrt=n["w12"])
    assert e.chain.lines[0] == CHAIN_LINE
    assert CHAIN_LINE in str(e)
    # the leaf may also be named
    assert mg.explain(L, wrt="w12").chain.lines[0] == CHAIN_LINE


def test_forward_rows_in_topological_order_with_expressions():
    L, n = problem1()
    e = mg.explain(L)
    names = e.names()
    order = [v for v in mg.topological_order(L)]
    assert len(names) == len(order) == 23
    assert names[-1] == "L"
    for earlier, later in [("z1", "h1"), ("h1", "yhat"), ("h2", "yhat"), ("yhat", "L")]:
        assert names.index(earlier) < names.index(later)
    rows = {r.name: r for r in e.forward}
    assert rows["z1"].expression == "w11*x1 + w12*x2 + w10"
    assert rows["h1"].expression == "relu(z1)"
    assert rows["h2"].expression == "sigmoid(z2)"
    assert rows["w12"].expression == "(leaf)"
    # unlabeled nodes are named by their step, constants appear as numbers
    assert rows["n17"].expression == "log(yhat)"
    assert rows["n19"].expression == "1 - yhat"
    text = str(e)
    assert "dh1/dz1 = [z1 > 0] = 1" in text
    assert "dh2/dz2 = h2(1 - h2) = 0.2055" in text


def test_backward_rows_in_reverse_topological_order():
    L, n = problem1()
    e = mg.explain(L)
    grad_nodes = mg.topological_order(L, every_node=False)
    names = [r.name for r in e.backward]
    assert len(names) == len(grad_nodes) == 21
    labeled = [v.label for v in reversed(grad_nodes) if v.label]
    assert [name for name in names if not name.startswith("n")] == labeled
    assert names[0] == "L"
    assert names.index("yhat") < names.index("h1") < names.index("z1") < names.index("w12")
    assert "x1" not in names          # inputs take no gradient
    row = next(r for r in e.backward if r.name == "h1")
    assert row.how == "= dL/dyhat · dyhat/dh1 = (-2.9199)(-0.2)"


def test_labels_set_afterwards_and_automatic_names():
    a, b = V(2.0), V(-3.0)
    c = a * b
    c.label = "c"
    e = mg.explain(c + 1)
    assert e.names() == ["n1", "n2", "c", "n4"]
    assert [r.expression for r in e.forward] == ["(leaf)", "(leaf)", "n1*n2", "c + 1"]
    assert e.local("c", "n1") == -3.0


def test_constants_appear_as_numbers():
    x = V(2.0, label="x")
    y = 3 * x - 1
    y.label = "y"
    z = 2 / y + x ** 2 + mg.dot([x], [4.0], 1.0)
    e = mg.explain(z)
    exprs = [(r.name, r.expression) for r in e.forward]
    assert exprs == [("x", "(leaf)"), ("n2", "x*3"), ("y", "n2 - 1"), ("n4", "2 / y"),
                     ("n5", "x^2"), ("n6", "n4 + n5"), ("n7", "x*4 + 1"), ("n8", "n6 + n7")]
    # the dot's 4.0 and 1.0 are constant nodes of the graph, shown as numbers
    assert len(mg.topological_order(z)) == 10
    assert e.local("n7", "x") == 4.0 and e.local("y", "n2") == 1.0


# -- local derivatives of every op against central differences ------------------

OPS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b,
    "add_const": lambda a, b: a + 2.5, "sub_const": lambda a, b: a - 2.5,
    "rsub_const": lambda a, b: 2.5 - a, "mul_const": lambda a, b: a * 2.5,
    "div_const": lambda a, b: a / 2.5, "rdiv_const": lambda a, b: 2.5 / a,
    "pow_const": lambda a, b: a ** 2.5, "rpow_const": lambda a, b: 2.5 ** a,
    "neg": lambda a, b: -a, "abs": lambda a, b: abs(a), "relu": lambda a, b: a.relu(),
    "leaky_relu": lambda a, b: (a - 3.0).leaky_relu(0.1), "sigmoid": lambda a, b: a.sigmoid(),
    "tanh": lambda a, b: a.tanh(), "exp": lambda a, b: a.exp(), "log": lambda a, b: a.log(),
    "sqrt": lambda a, b: a.sqrt(), "softplus": lambda a, b: a.softplus(),
    "sin": lambda a, b: a.sin(), "cos": lambda a, b: a.cos(),
    "sum": lambda a, b: mg.sum([a, b, a], start=1.5), "mean": lambda a, b: mg.mean([a, b, b]),
    "dot": lambda a, b: mg.dot([a, b], [b, 3.0], a),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_local_derivatives_match_central_differences(op):
    f = OPS[op]
    a0, b0 = 1.3, 0.7
    a, b = V(a0, label="a"), V(b0, label="b")
    out = f(a, b)
    out.label = "out"
    e = mg.explain(out, backward=False)
    eps = 1e-6
    for name, (da, db) in (("a", (eps, 0.0)), ("b", (0.0, eps))):
        numeric = (f(V(a0 + da), V(b0 + db)).data - f(V(a0 - da), V(b0 - db)).data) / (2 * eps)
        try:
            chain = mg.explain(out, wrt=name, backward=False).chain.total
        except ValueError:      # out does not depend on this operand by name
            chain = 0.0
        assert chain == pytest.approx(numeric, rel=1e-6, abs=1e-8), (op, name)
    # the chain rule of explain agrees with backward()
    out.backward()
    for name, leaf in (("a", a), ("b", b)):
        if name in e.names():
            assert mg.explain(out, backward=False).grad(name) == pytest.approx(leaf.grad, rel=1e-12)


def test_relu_derivative_at_zero_is_zero():
    x = V(0.0, label="x")
    e = mg.explain(x.relu(), wrt=x)
    assert e.local("n2", "x") == 0.0
    assert e.chain.total == 0.0


# -- backward() policy ----------------------------------------------------------

def test_auto_runs_backward_once_and_never_doubles_leaves():
    L, n = problem1()
    mg.explain(L)
    first = n["w12"].grad
    assert first == pytest.approx(-1.751923, abs=1e-6)
    e = mg.explain(L)                     # root grad already set: not run again
    assert n["w12"].grad == first
    assert e.grad("w12") == first
    assert any("already run" in note for note in e.notes)


def test_auto_does_not_run_when_leaves_hold_old_gradients():
    L, n = problem1()
    n["w12"].grad = 5.0                   # left over from an earlier pass
    e = mg.explain(L)
    assert n["w12"].grad == 5.0
    assert L.grad == 0.0
    assert e.grad("w12") == pytest.approx(-1.751923, abs=1e-6)
    assert any("not run" in note for note in e.notes)


def test_backward_true_accumulates_and_says_so():
    L, n = problem1()
    L.backward()
    e = mg.explain(L, wrt="w12", backward=True)
    assert n["w12"].grad == pytest.approx(2 * -1.751923, abs=1e-6)
    assert e.grad("w12") == pytest.approx(-1.751923, abs=1e-6)   # this graph's share
    assert any("accumulate" in note for note in e.notes)
    row = next(r for r in e.backward if r.name == "w12")
    assert "accumulated" in row.note
    assert "includes gradients from other passes" in "\n".join(e.chain.lines)


def test_backward_false_never_touches_grads():
    L, n = problem1()
    e = mg.explain(L, backward=False)
    assert n["w12"].grad == 0.0 and L.grad == 0.0
    assert e.grad("w12") == pytest.approx(-1.751923, abs=1e-6)


# -- chain over several paths -----------------------------------------------------

def test_chain_sums_paths_and_caps_the_number_shown():
    x = V(1.5, label="x")
    y = x
    for k in range(8):                   # 2**8 paths from y to x
        y = y + y
        y.label = f"y{k}"
    e = mg.explain(y, wrt=x, max_paths=3, through="all")
    assert e.chain.n_paths == 2 ** 8
    assert len(e.chain.paths) == 3
    assert e.chain.hidden == 2 ** 8 - 3
    assert e.chain.total == 2 ** 8
    text = "\n".join(e.chain.lines)
    assert "253 more paths not shown, contributing 253 in all" in text
    assert text.count("  path ") == 3


def test_chain_through_labels_collapses_unlabeled_steps():
    x = V(2.0, label="x")
    u = x * x                            # unlabeled: two edges to x
    v = u.exp()
    v.label = "v"
    e = mg.explain(v, wrt=x, through="labels")
    assert e.chain.n_paths == 1          # v -> x through the unlabeled x*x
    assert e.chain.total == pytest.approx(math.exp(4) * 4, rel=1e-12)
    e_all = mg.explain(v, wrt=x)         # no labeled step between: every node
    assert e_all.chain.n_paths == 2      # x*x has two operand positions
    assert e_all.chain.total == pytest.approx(e.chain.total, rel=1e-15)


def test_chain_when_root_does_not_depend_on_wrt():
    x, w = V(1.0, label="x"), V(2.0, label="w")
    y = x * 3
    e = mg.explain(y, wrt=x)
    assert e.chain.total == 3
    with pytest.raises(ValueError, match="not part of the graph"):
        mg.explain(y, wrt=w)


def test_custom_node_has_no_rule_and_is_flagged():
    a = V(2.0, label="a")
    c = V(a.data * 2, (a,), "double")
    c.label = "c"
    e = mg.explain(c)
    assert e.forward[-1].expression == "double(a)"
    with pytest.raises(ValueError, match="no local derivative rule"):
        mg.explain(c, wrt=a)


# -- rendering ----------------------------------------------------------------------

def test_markdown_and_html():
    L, n = problem1()
    e = mg.explain(L, wrt="w12")
    md = e.to_markdown()
    assert md == e._repr_markdown_()
    assert "| step | node | expression | value | local derivatives |" in md
    assert "| 15 | `h2` | `sigmoid(z2)` | `0.2891` | `dh2/dz2 = h2(1 - h2) = 0.2055` |" in md
    assert "| `dL/dw12` | `-1.7519` |" in md
    assert CHAIN_LINE in md
    page = e._repr_html_()
    assert page.count("<table>") == 2 and "<code>sigmoid(z2)</code>" in page


def test_fmt():
    assert fmt(-2.919871748) == "-2.9199"
    assert fmt(-0.2) == "-0.2"
    assert fmt(1.0) == "1"
    assert fmt(-0.0) == "0"
    assert fmt(1e-9) == "1e-09"
    assert fmt(float("nan")) == "nan"


def test_bad_arguments():
    x = V(1.0)
    with pytest.raises(TypeError, match="root"):
        mg.explain(1.0)
    with pytest.raises(ValueError, match="backward"):
        mg.explain(x, backward="yes")
    with pytest.raises(ValueError, match="through"):
        mg.explain(x, through="some")
    with pytest.raises(ValueError, match="wrt='nope'"):
        mg.explain(x * 2, wrt="nope")


def test_tensor_node_takes_one_row():
    if not hasattr(mg, "tensor"):
        pytest.skip("microgrid.tensor is not in this build")
    import numpy as np
    t = mg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    t.label = "T"
    s = (t * 2.0).sum()
    e = mg.explain(s)
    row = next(r for r in e.forward if r.name == "T")
    assert row.value == "[2x3] min 0, mean 2.5, max 5"


# -- DOT export and drawing -----------------------------------------------------------

def parse_dot(src):
    nodes = dict(re.findall(r"^\s+(\w+) \[label=(\"(?:[^\"\\]|\\.)*\")", src, re.M))
    edges = re.findall(r"^\s+(\w+) -> (\w+)", src, re.M)
    return nodes, edges


def test_to_dot_structure_problem1():
    L, n = problem1()
    L.backward()
    src = mg.to_dot(L)
    assert src.startswith("digraph microgrid {") and src.rstrip().endswith("}")
    nodes, edges = parse_dot(src)
    order = mg.topological_order(L)
    values = [k for k in nodes if re.fullmatch(r"v\d+", k)]
    ops = [k for k in nodes if k.endswith("_op")]
    consts = [k for k in nodes if re.fullmatch(r"c\d+", k)]
    assert len(values) == len(order) == 23
    assert len(ops) == sum(1 for v in order if v._parents()) == 12
    assert len(consts) == 3                        # the 1 in y*log, 1 - yhat, (1-y)*log
    n_operands = sum(len(v._parents()) for v in order)
    assert len(edges) == n_operands + len(ops)
    assert all(a in nodes and b in nodes for a, b in edges)
    # every op node feeds exactly its result
    for op in ops:
        assert [b for a, b in edges if a == op] == [op[:-3]]
    labels = list(nodes.values())
    assert '"{ w12 | data 0.4000 | grad -1.7519 }"' in labels
    assert '"{ L | data 1.0715 | grad 1.0000 }"' in labels
    assert '"sigmoid"' in labels


def test_to_dot_escapes_record_characters():
    a = V(1.0, label='a{|}<"b>')
    nodes, _ = parse_dot(mg.to_dot(a * 2))
    assert '"{ a\\{\\|\\}\\<\\"b\\> | data 1.0000 | grad 0.0000 }"' in nodes.values()


def test_to_dot_summarises_large_graphs():
    xs = [V(float(i)) for i in range(400)]
    root = mg.sum([x.relu() * 2 for x in xs])
    src = mg.to_dot(root, max_nodes=300, keep=40)
    nodes, edges = parse_dot(src)
    values = [k for k in nodes if re.fullmatch(r"v\d+", k)]
    assert len(values) <= 40
    assert "rest" in nodes
    assert "leaf: 400" in nodes["rest"] and "ReLU: 400" in nodes["rest"]
    assert "1201 nodes" in nodes["rest"] or "graph has 1201" in nodes["rest"]
    small = mg.to_dot(root, max_nodes=5000)
    assert "rest" not in parse_dot(small)[0]


def test_draw_errors_when_graphviz_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)     # import fails
    with pytest.raises(GraphvizNotFound, match="pip install graphviz"):
        mg.draw(V(1.0) * 2, "graph.svg")


def test_draw_errors_when_dot_program_missing(monkeypatch):
    pytest.importorskip("graphviz")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GraphvizNotFound, match="'dot' program"):
        mg.draw(V(1.0) * 2, "graph.png")


def test_draw_rejects_unknown_extension():
    with pytest.raises(ValueError, match="path"):
        mg.draw(V(1.0), "graph.jpg")


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


@needs_dot
def test_draw_renders_svg_and_png(tmp_path):
    pytest.importorskip("graphviz")
    L, n = problem1()
    L.backward()
    svg = mg.draw(L, tmp_path / "g.svg")
    text = (tmp_path / "g.svg").read_text()
    assert svg == tmp_path / "g.svg" and "<svg" in text and "w12" in text
    mg.draw(L, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = mg.draw(L)
    assert "<svg" in shown._repr_svg_()


def test_drawing_repr_svg_is_none_without_graphviz(monkeypatch):
    from microgrid.tools.draw import Drawing
    monkeypatch.setitem(sys.modules, "graphviz", None)
    assert Drawing(mg.to_dot(V(1.0) * 2))._repr_svg_() is None


def test_max_rows_elides_the_middle_but_keeps_every_number():
    x = V(0.5, label="x")
    y = x
    for k in range(30):
        y = y * 1.01
    e = mg.explain(y, max_rows=10)
    assert len(e.forward) == 10
    assert "21 more rows not shown" in str(e)
    assert e.value("n16") == pytest.approx(0.5 * 1.01 ** 15, rel=1e-12)
    assert e.grad("x") == pytest.approx(1.01 ** 30, rel=1e-12)

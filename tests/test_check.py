"""Tests of microgrid.check (marking hand-worked backprop).

Each slip is built by hand on a small graph (exam problem 1 and graphs of
other ops), and the verdict and cause check gives must be the one stated.
The expected numbers are written out here from the math, not read back
from check.
"""
import math
import random

import pytest

import microgrid as mg
from microgrid.tools.check import parse_answer
from test_explain import problem1

V = mg.Value


def fraction_graph():
    """q = a / b, s = tanh(q), L = s * c: one path to each leaf."""
    a, b, c = V(1.5, label="a"), V(-2.0, label="b"), V(3.0, label="c")
    q = a / b
    q.label = "q"
    s = q.tanh()
    s.label = "s"
    L = s * c
    L.label = "L"
    return L, dict(a=a, b=b, c=c, q=q, s=s)


def diamond():
    """x feeds two branches that meet again: two paths from L to x."""
    x = V(0.5, label="x")
    k = V(2.0, label="k")
    u = x.exp()
    u.label = "u"
    w = x * k
    w.label = "w"
    L = u + w
    L.label = "L"
    return L, x


# -- correct and precision -------------------------------------------------------

def test_fully_correct_sheet_is_ok():
    L, n = problem1()
    r = mg.check(L, {"z1": "0.6", "h1": 0.6, "z2": "-0.9", "h2": "0.289", "yhat": "≈ 0.34",
                     "L": "1.07", "dL/dyhat": "-2.92", "dL/dw12": "-1.75", "dh2/dz2": "0.2055"})
    assert r.ok and r.first_error is None
    assert all(i.verdict == "correct" for i in r.items)
    assert "WRONG" not in str(r)


def test_precision_rounded_or_truncated_is_never_wrong():
    rng = random.Random(1)
    for _ in range(40):
        L, n = fraction_graph()
        for node in (n["a"], n["b"], n["c"]):
            node.data = rng.uniform(-3, 3) or 0.5
        L, n = fraction_graph_with(n["a"].data, n["b"].data, n["c"].data)
        truth = {"q": n["q"].data, "s": n["s"].data, "L": L.data}
        for d in (1, 2, 3, 5):
            for how in ("round", "trunc"):
                answers = {}
                for k, t in truth.items():
                    x = round(t, d) if how == "round" else math.trunc(t * 10 ** d) / 10 ** d
                    answers[k] = f"{x:.{d}f}"
                r = mg.check(L, answers)
                assert r.ok, str(r)


def fraction_graph_with(a, b, c):
    L, n = fraction_graph()
    # rebuilt with other leaf values
    A, B, C = V(a, label="a"), V(b if b != 0 else 1.0, label="b"), V(c, label="c")
    q = A / B
    q.label = "q"
    s = q.tanh()
    s.label = "s"
    L = s * C
    L.label = "L"
    return L, dict(a=A, b=B, c=C, q=q, s=s)


def test_one_decimal_too_few_digits_off_is_wrong():
    L, n = problem1()
    # h2 = 0.28905...: 0.28 is neither rounded (0.29) nor truncated (0.28 is!)
    assert mg.check(L, {"h2": "0.28"}).ok            # truncation
    assert not mg.check(L, {"h2": "0.27"}).ok
    assert not mg.check(L, {"h2": "0.2905"}).ok      # 4 decimals: 0.2891 or 0.2890


def test_answer_forms():
    assert parse_answer("k", "1/2").value == 0.5 and parse_answer("k", "1/2").decimals is None
    assert parse_answer("k", "≈ 0.34").decimals == 2
    assert parse_answer("k", "−1.75").value == -1.75           # a typographic minus
    assert parse_answer("k", "~ 3").decimals == 0              # approximate integer
    assert parse_answer("k", "5").decimals is None             # an integer is exact
    assert parse_answer("k", 0.289).decimals == 3
    assert parse_answer("k", "2.5e-3").decimals == 4


def test_integer_answers_are_exact():
    # perceptron score s = 1*1 + 3*1 + 2*0 = 4: "5" is wrong even though
    # nothing rounds here
    w = [V(1.0, label="w0"), V(3.0, label="w1"), V(2.0, label="w2")]
    s = mg.dot(w, [1.0, 1.0, 0.0])
    s.label = "s"
    r = mg.check(s, {"s": "5", "ds/dw1": "1"})
    assert r["s"].verdict == "wrong" and r["s"].cause == "arithmetic"
    assert r["ds/dw1"].verdict == "correct"
    assert r.first_error.key == "s"


# -- causes ----------------------------------------------------------------------

def test_sign_slip_problem1_names_the_negative_factors():
    L, n = problem1()
    item = mg.check(L, {"dL/dw12": "1.75"})["dL/dw12"]
    assert item.verdict == "wrong" and item.cause == "sign"
    assert "dL/dyhat = -2.9199" in item.explanation
    assert "dyhat/dh1 = -0.2" in item.explanation and "dz1/dw12 = -3" in item.explanation
    assert item.expected == pytest.approx(-1.751923, abs=1e-6)


def test_sign_narrowed_by_an_intermediate_gradient_with_the_right_sign():
    L, n = problem1()
    item = mg.check(L, {"dL/dh1": "0.584", "dL/dw12": "1.75"})["dL/dw12"]
    assert item.cause == "sign"
    assert "sign was lost after it, at dz1/dw12 = -3" in item.explanation


def test_sign_of_minus_log_flipped():
    # L = -log(p): dL/dp = -1/p; writing 1/p is a sign slip
    p = V(0.25, label="p")
    L = -p.log()
    L.label = "L"
    item = mg.check(L, {"dL/dp": "4"})["dL/dp"]
    assert item.verdict == "wrong" and item.cause == "sign"


def test_sigmoid_derivative_taken_as_sigmoid():
    L, n = problem1()
    h2 = n["h2"].data
    # dL/dz2 = dL/dh2 * h2(1 - h2); the slip writes dL/dh2 * h2
    dL_dh2 = -1 / n["yhat"].data * 1.6
    item = mg.check(L, {"dL/dz2": f"{dL_dh2 * h2:.4f}"})["dL/dz2"]
    assert item.cause == "local derivative"
    assert "the node's own value" in item.explanation and "dh2/dz2" in item.explanation


def test_relu_derivative_taken_as_its_input():
    L, n = problem1()
    dL_dh1 = -1 / n["yhat"].data * -0.2
    item = mg.check(L, {"dL/dz1": f"{dL_dh1 * 0.6:.3f}"})["dL/dz1"]
    assert item.cause == "local derivative"
    assert "dh1/dz1 taken as 0.6 instead of 1" in item.explanation


def test_dropped_factor_and_wrong_operand_on_a_division():
    L, n = fraction_graph()
    a, b, c = 1.5, -2.0, 3.0
    s = math.tanh(a / b)
    dL_dq = c * (1 - s * s)
    # dL/da = dL/dq * 1/b: dropping 1/b gives dL/dq
    dropped = mg.check(L, {"dL/da": f"{dL_dq:.4f}"})["dL/da"]
    assert dropped.cause == "local derivative" and "taken as 1" in dropped.explanation
    # using d(a/b)/db = -a/b^2 for d/da: the other operand's derivative
    other = mg.check(L, {"dL/da": f"{dL_dq * (-a / b ** 2):.4f}"})["dL/da"]
    assert other.cause == "local derivative" and "other operand" in other.explanation


def test_tanh_derivative_taken_as_tanh():
    L, n = fraction_graph()
    s = n["s"].data
    item = mg.check(L, {"dL/dq": f"{3.0 * s:.4f}"})["dL/dq"]
    assert item.cause == "local derivative" and "ds/dq" in item.explanation


def test_local_derivative_key():
    L, n = fraction_graph()
    s = n["s"].data
    r = mg.check(L, {"ds/dq": f"{1 - s * s:.3f}", "dq/db": "0.375", "dq/da": "0.5"})
    assert r["ds/dq"].verdict == "correct" and r["dq/db"].verdict == "wrong"
    assert r["dq/db"].cause == "sign"        # -a/b^2 = -0.375
    assert r["dq/da"].cause == "sign"        # 1/b = -0.5


def test_arithmetic():
    L, n = fraction_graph()
    r = mg.check(L, {"q": "-0.6", "dL/dc": "0.1234"})
    assert r["q"].cause == "arithmetic" and r["dL/dc"].cause == "arithmetic"


def test_two_paths_sign_of_one_factor():
    L, x = diamond()
    # dL/dx = e^x + k; flipping dw/dx = k on one path: e^x - k
    item = mg.check(L, {"dL/dx": f"{math.exp(0.5) - 2.0:.4f}"})["dL/dx"]
    assert item.cause == "sign" and "dw/dx = 2" in item.explanation
    assert mg.check(L, {"dL/dx": f"{math.exp(0.5) + 2.0:.4f}"}).ok
    # dropping the exp branch's factor e^x (taken as 1): 1 + k
    item = mg.check(L, {"dL/dx": "3"})["dL/dx"]
    assert item.cause == "local derivative" and "du/dx taken as 1" in item.explanation


# -- carried ---------------------------------------------------------------------

def test_carried_forward_and_backward():
    L, n = problem1()
    r = mg.check(L, {"h2": "0.3", "yhat": "0.36", "dL/dyhat": "-2.78", "dL/dh2": "-4.448"})
    assert r["h2"].verdict == "correct"            # 0.289 to 1 decimal
    assert r["yhat"].verdict == "carried" and r["yhat"].follows_from == ("h2",)
    assert r["dL/dyhat"].verdict == "carried" and "yhat" in r["dL/dyhat"].follows_from
    assert r["dL/dh2"].verdict == "carried" and r["dL/dh2"].follows_from == ("dL/dyhat",)
    assert r.ok


def test_carried_from_a_wrong_answer_is_not_an_error_but_the_source_is():
    L, n = fraction_graph()
    # q is wrong (-0.9 instead of -0.75); s = tanh(-0.9) carried
    r = mg.check(L, {"q": "-0.9", "s": f"{math.tanh(-0.9):.4f}", "L": f"{3 * math.tanh(-0.9):.3f}"})
    assert [i.verdict for i in r.items] == ["wrong", "carried", "carried"]
    assert r.first_error.key == "q" and r["L"].follows_from == ("s",) and r["s"].follows_from == ("q",)


# -- first error with several slips --------------------------------------------

def test_first_error_in_computation_order():
    L, n = problem1()
    answers = {"dL/dw12": "1.75", "z2": "-0.8", "h1": "0.6", "dL/dz1": "0.35"}
    r = mg.check(L, answers)
    assert [i.key for i in r.items] == ["h1", "z2", "dL/dz1", "dL/dw12"]
    assert r.first_error.key == "z2"
    del answers["z2"]
    assert mg.check(L, answers).first_error.key == "dL/dz1"


def test_report_renderings():
    L, n = problem1()
    r = mg.check(L, {"h2": "0.289", "dL/dw12": "1.75"})
    text = str(r)
    assert "h2" in text and "correct" in text and "WRONG (sign)" in text
    md = r.to_markdown()
    assert md.startswith("**Marked sheet for L**") and "| `dL/dw12` |" in md
    assert r._repr_markdown_() == md
    assert "<table>" in r._repr_html_() and "WRONG (sign)" in r._repr_html_()


def test_check_does_not_touch_gradients():
    L, n = problem1()
    mg.check(L, {"dL/dw12": "-1.75"})
    assert n["w12"].grad == 0.0 and L.grad == 0.0


# -- bad input -------------------------------------------------------------------

def test_unknown_label():
    L, n = problem1()
    with pytest.raises(ValueError, match="'zz'"):
        mg.check(L, {"zz": "1"})
    with pytest.raises(ValueError, match="'dL/dq'"):
        mg.check(L, {"dL/dq": "1"})


def test_duplicate_labels():
    a, b = V(1.0, label="x"), V(2.0, label="x")
    L = a * b
    L.label = "L"
    with pytest.raises(ValueError, match="'x' names more than one node"):
        mg.check(L, {"L": "2"})


def test_key_naming_a_node_the_numerator_does_not_depend_on():
    L, n = problem1()
    with pytest.raises(ValueError, match="z1 does not depend on w21"):
        mg.check(L, {"dz1/dw21": "0"})


def test_unparsable_numbers():
    L, n = problem1()
    for bad in ("abc", "1/0", "1.2.3", "", "nan"):
        with pytest.raises(ValueError, match="'z1'"):
            mg.check(L, {"z1": bad})
    with pytest.raises(TypeError, match="'z1'"):
        mg.check(L, {"z1": [0.6]})


def test_bad_arguments():
    with pytest.raises(TypeError, match="root"):
        mg.check(0.5, {})
    L, n = problem1()
    with pytest.raises(TypeError, match="answers"):
        mg.check(L, [("z1", 0.6)])
    unlabelled = n["z1"] * 2
    with pytest.raises(ValueError, match="root has no label"):
        mg.check(unlabelled, {})

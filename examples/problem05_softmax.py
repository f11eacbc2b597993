"""Homework problem 5: a four-class softmax probability.

Logits (1, 0, 0, -1): P(class 1) = e / (e + 2 + 1/e) ~ 0.534 by hand;
microgrid: 0.5344466...  The softmax is built from Value.exp and
microgrid.sum, and also through microgrid.functional.softmax where the
tensor part of microgrid is present.

Run:  python examples/problem05_softmax.py
"""
import math

import numpy as np

import microgrid as mg
from _checks import Report


def main():
    report = Report("Problem 5: softmax probability of class 1")
    logits = [mg.Value(v, label=f"a{i + 1}") for i, v in enumerate([1.0, 0.0, 0.0, -1.0])]
    exps = []
    for i, a in enumerate(logits):
        e = a.exp()
        e.label = f"e{i + 1}"
        exps.append(e)
    Z = mg.sum(exps)
    Z.label = "Z"
    p1 = exps[0] / Z
    p1.label = "p1"
    solution = mg.explain(p1, wrt=logits[0])
    print(solution)

    e = math.e
    ref_p = np.exp([1.0, 0.0, 0.0, -1.0]) / np.exp([1.0, 0.0, 0.0, -1.0]).sum()
    report.section("microgrid against the closed form")
    report.check("p1 = e / (e + 2 + 1/e)", p1.data, e / (e + 2 + 1 / e))
    # dp1/da_j = p1 (delta_1j - p_j)
    report.check("dp1/da = p1 (delta - p)", [a.grad for a in logits],
                 ref_p[0] * (np.eye(4)[0] - ref_p))

    try:
        import microgrid.functional as F
        has_tensor = hasattr(mg, "tensor")
    except ImportError:
        has_tensor = False
    if has_tensor:
        t = mg.tensor([1.0, 0.0, 0.0, -1.0], requires_grad=True)
        probs = F.softmax(t, dim=0)
        report.check("functional.softmax", np.asarray(probs.data), ref_p)
        probs[0].backward()
        report.check("functional.softmax gradient of p1", np.asarray(t.grad),
                     ref_p[0] * (np.eye(4)[0] - ref_p))
    else:
        print("  (microgrid.functional.softmax is not in this build: tensor check not run)")

    report.section("microgrid against the hand-work")
    report.hand("P(class 1)", "0.534", p1.data)
    report.finish()


if __name__ == "__main__":
    main()

"""Exam problem 2: perceptron updates, and the prediction on x1 by hand.

Each input x becomes (1, x1, x2); predict sign(w.x); w starts at 0 and takes
w += y x on every mistake.  Mistakes happened on x1 = (1, 0) (y = +1),
x3 = (1, -3) (y = -1) and x4 = (3, -1) (y = +1).  The hand-work gets
w = [1, 3, 2] and the prediction w.[1,1,0]; mg.check marks those numbers.

The perceptron update is one step of gradient descent, learning rate 1, on
the perceptron loss -y w.x of a misclassified point, so microgrid's autograd
must produce the same w.  (Written as max(0, -y w.x) the loss has gradient 0
at w.x = 0 under relu'(0) = 0, and the very first point, where w = 0, would
never move w; the perceptron counts y w.x <= 0 as a mistake, so the mistake
test chooses which points enter the loss.)

Run:  python examples/problem02_perceptron.py
"""
import numpy as np

import microgrid as mg
from _checks import Report

POINTS = [  # (name, x, y): the points on which the updates happened, in order
    ("x1", (1.0, 0.0), +1.0),
    ("x3", (1.0, -3.0), -1.0),
    ("x4", (3.0, -1.0), +1.0),
]


def main():
    report = Report("Problem 2: perceptron updates as gradient descent")
    w = [mg.Value(0.0, label=f"w{i}") for i in range(3)]

    report.section("The updates, each one backward() of the perceptron loss")
    history = []
    for name, x, y in POINTS:
        features = [1.0, *x]        # bias feature first
        score = mg.dot(w, features)
        score.label = f"w.{name}"
        mistake = y * score.data <= 0
        if mistake:
            loss = -y * score
            loss.label = "loss"
            loss.backward()
            for wi in w:           # gradient step, learning rate 1
                wi.data -= 1.0 * wi.grad
                wi.grad = 0.0
        history.append([wi.data for wi in w])
        print(f"  {name} = {x}, y = {y:+.0f}: w.x = {score.data:g} -> "
              f"{'mistake, w -= grad = ' if mistake else 'correct, w stays '}"
              f"[{', '.join(f'{wi.data:g}' for wi in w)}]")
        report.require(f"update on {name} was a mistake, as the problem says", mistake)

    # relu'(0) = 0: the hinge form would not have moved w at the first point
    w0 = [mg.Value(0.0) for _ in range(3)]
    hinge = (-1.0 * mg.dot(w0, [1.0, 1.0, 0.0])).relu()
    hinge.backward()
    print(f"  (with max(0, -y w.x) instead: gradient at w = 0 is "
          f"[{', '.join(f'{v.grad:g}' for v in w0)}], so no update: relu'(0) = 0)")

    report.section("The perceptron rule in numpy, for reference")
    ref = np.zeros(3)
    for _, x, y in POINTS:
        xx = np.array([1.0, *x])
        if y * ref @ xx <= 0:
            ref = ref + y * xx
    report.check("w after the three updates", [wi.data for wi in w], ref)
    closed = sum(y * np.array([1.0, *x]) for _, x, y in POINTS)
    report.check("w = y1 x1 + y3 x3 + y4 x4", [wi.data for wi in w], closed)

    report.section("Prediction on x1 = (1, 0), worked")
    s = mg.dot(w, [1.0, 1.0, 0.0])
    s.label = "s"
    solution = mg.explain(s)
    print(solution)
    report.check("w.[1,1,0]", s.data, ref @ np.array([1.0, 1.0, 0.0]))
    print(f"  terms: " + " + ".join(f"{wi.data:g}*{xi:g}" for wi, xi in zip(w, [1, 1, 0]))
          + f" = {s.data:g}")

    report.section("The hand-work, marked by mg.check")
    report.hand_sheet(s, {"w0": "1", "w1": "3", "w2": "2", "s": "5"})
    report.hand("sign(w.[1,1,0])", "1", np.sign(s.data))
    report.finish()


if __name__ == "__main__":
    main()

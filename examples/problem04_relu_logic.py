"""Homework problem 4: ReLU networks that compute XOR, OR and |x|.

- XOR: h1 = relu(x1 - x2), h2 = relu(x2 - x1), y = h1 + h2.
- OR:  h1 = relu(x1 + x2), h2 = relu(x1 + x2 - 1), y = h1 - h2.
- |x| = relu(x) + relu(-x).

Each is evaluated on its truth table (|x| on a range of x) with its
gradients, including at the kinks, where relu'(0) = 0 as in PyTorch.

Run:  python examples/problem04_relu_logic.py
"""
import numpy as np

import microgrid as mg
from _checks import Report

TABLE = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]


def xor(x1, x2):
    h1 = (x1 - x2).relu()
    h1.label = "h1"
    h2 = (x2 - x1).relu()
    h2.label = "h2"
    y = h1 + h2
    y.label = "y"
    return y


def or_(x1, x2):
    h1 = (x1 + x2).relu()
    h1.label = "h1"
    h2 = (x1 + x2 - 1).relu()
    h2.label = "h2"
    y = h1 - h2
    y.label = "y"
    return y


def relu_grad(z):
    return 1.0 if z > 0 else 0.0


def main():
    report = Report("Problem 4: ReLU networks for XOR, OR and |x|")
    # Reference gradients from the same rule written out by hand
    ref_grads = {
        "XOR": lambda a, b: (relu_grad(a - b) - relu_grad(b - a), relu_grad(b - a) - relu_grad(a - b)),
        "OR": lambda a, b: (relu_grad(a + b) - relu_grad(a + b - 1),) * 2,
    }
    expected = {"XOR": [0, 1, 1, 0], "OR": [0, 1, 1, 1]}
    for name, net in (("XOR", xor), ("OR", or_)):
        report.section(f"{name} truth table (value, dy/dx1, dy/dx2)")
        print("   x1  x2 |  y  dy/dx1  dy/dx2")
        for (a, b), want in zip(TABLE, expected[name]):
            x1, x2 = mg.Value(a, label="x1"), mg.Value(b, label="x2")
            y = net(x1, x2)
            y.backward()
            print(f"   {a:g}   {b:g}  | {y.data:2g}  {x1.grad:6g}  {x2.grad:6g}")
            report.check(f"{name}({a:g},{b:g})", y.data, want)
            report.check(f"{name}({a:g},{b:g}) gradient", [x1.grad, x2.grad], ref_grads[name](a, b))
        x1, x2 = mg.Value(1.0, label="x1"), mg.Value(0.0, label="x2")
        print()
        print(f"Worked solution of {name} at (1, 0):")
        print(mg.explain(net(x1, x2), wrt=x1))

    report.section("|x| = relu(x) + relu(-x) on x in [-2, 2]")
    xs = np.linspace(-2.0, 2.0, 9)
    values, grads = [], []
    for x in xs:
        v = mg.Value(float(x), label="x")
        y = v.relu() + (-v).relu()
        y.backward()
        values.append(y.data)
        grads.append(v.grad)
        print(f"  x = {x:5.2f}: y = {y.data:4.2f}, dy/dx = {v.grad:g}")
    report.check("relu(x) + relu(-x) = |x|", values, np.abs(xs))
    report.check("d|x|/dx = sign(x), 0 at the kink", grads, np.sign(xs))
    v = mg.Value(0.0, label="x")
    y = v.relu() + (-v).relu()
    y.label = "y"
    print()
    print("Worked solution at the kink x = 0 (relu'(0) = 0 on both branches):")
    print(mg.explain(y, wrt=v))
    report.require("gradient at x = 0 is 0 (relu'(0) = 0, as in PyTorch)", v.grad == 0.0,
                   f"dy/dx = {v.grad:g}")
    report.finish()


if __name__ == "__main__":
    main()

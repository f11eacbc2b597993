"""Second derivatives: Newton's method, and the Hessian of the exam loss.

1. Newton's method on Rosenbrock's function f(x, y) = (1 - x)^2 + 100 (y - x^2)^2
   from (-1.2, 1): the gradient comes from ``mg.grad(..., create_graph=True)``
   and the Hessian from differentiating that gradient again; each step solves
   H d = -g.
2. The Hessian of the two-neuron exam loss (shared/exam-problems.md, problem
   1) with respect to its 9 weights, from ``microgrid.autograd.functional.hessian``,
   printed as a matrix and checked against central finite differences of
   the gradient.

Output goes to stdout only.

Run:  python examples/newton_hessian.py
"""
import numpy as np

import microgrid as mg
from microgrid.autograd.functional import hessian
from _checks import Report
from problem01_two_neuron_bce import TwoNeuronNet

V = mg.Value


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def newton(report):
    report.section("Newton's method on Rosenbrock's function, from (-1.2, 1)")
    point = np.array([-1.2, 1.0])
    print(f"  {'step':>4}  {'x':>18}  {'y':>18}  {'f':>12}  {'|grad|':>10}")
    for step in range(20):
        x, y = V(point[0]), V(point[1])
        f = rosenbrock(x, y)
        gx, gy = mg.grad(f, [x, y], create_graph=True)     # the gradient as graph nodes
        hxx, hxy = mg.grad(gx, [x, y])                      # ... differentiated again
        hyx, hyy = mg.grad(gy, [x, y])
        g = np.array([gx.data, gy.data])
        H = np.array([[hxx.data, hxy.data], [hyx.data, hyy.data]])
        print(f"  {step:>4}  {point[0]:>18.12f}  {point[1]:>18.12f}  {f.data:>12.4e}  "
              f"{np.linalg.norm(g):>10.2e}")
        if step == 0:
            # by hand at (-1.2, 1): f_x = -2(1 - x) - 400 x (y - x^2), f_xx = 2 - 400 (y - 3 x^2), ...
            x0, y0 = -1.2, 1.0
            report.check("f_x at the start", g[0], -2 * (1 - x0) - 400 * x0 * (y0 - x0 * x0))
            report.check("f_y at the start", g[1], 200 * (y0 - x0 * x0))
            report.check("Hessian at the start", H,
                         [[2 - 400 * (y0 - 3 * x0 * x0), -400 * x0], [-400 * x0, 200]])
        if np.linalg.norm(g) < 1e-12:
            break
        point = point - np.linalg.solve(H, g)
    report.check("Newton's method reaches the minimum (1, 1)", point, [1.0, 1.0], tol=1e-10)
    report.require("Newton's method converges within 20 steps", step < 19, f"{step} steps")


def exam_loss(*weights):
    """The exam's BCE loss as a function of its 9 weights (inputs x = (2, -3), y = 1)."""
    # the weights in the order of TwoNeuronNet.parameters()
    (w11, w12, w10, w21, w22, w20, w31, w32, w30) = weights
    x1, x2 = V(2.0, requires_grad=False), V(-3.0, requires_grad=False)
    h1 = mg.dot([w11, w12], [x1, x2], w10).relu()
    h2 = mg.dot([w21, w22], [x1, x2], w20).sigmoid()
    yhat = mg.dot([w31, w32], [h1, h2], w30)
    return -yhat.log()                      # y = 1


def exam_gradient(values):
    weights = [V(v) for v in values]
    return np.array([g.data for g in mg.grad(exam_loss(*weights), weights)])


def exam_hessian(report):
    report.section("Hessian of the exam loss with respect to its 9 weights")
    net = TwoNeuronNet()
    names = [p.label for p in net.parameters()]
    start = [p.data for p in net.parameters()]
    blocks = hessian(exam_loss, tuple(V(v) for v in start))
    H = np.array([[blocks[i][j].data for j in range(9)] for i in range(9)])
    print("        " + "".join(f"{n:>10}" for n in names))
    for n, row in zip(names, H):
        print(f"  {n:>5} " + "".join(f"{v:>10.4f}" for v in row))
    # central differences of the gradient, one weight at a time
    eps = 1e-6
    numeric = np.zeros((9, 9))
    for j in range(9):
        plus, minus = list(start), list(start)
        plus[j] += eps
        minus[j] -= eps
        numeric[:, j] = (exam_gradient(plus) - exam_gradient(minus)) / (2 * eps)
    print()
    print(f"  largest difference from central differences of the gradient: "
          f"{np.max(np.abs(H - numeric)):.2e}")
    report.check("Hessian = central differences of the gradient", H, numeric, tol=1e-6)
    report.check("Hessian is symmetric", H, H.T, tol=1e-12)
    # by hand: L = -log(yhat) and d yhat/d w31 = h1, d yhat/d w30 = 1, so
    # d2L/dw31^2 = h1^2 / yhat^2 and d2L/dw30^2 = 1 / yhat^2
    yhat = -0.2 * 0.6 + 1.6 / (1 + np.exp(0.9))
    report.check("d2L/dw31^2 = h1^2 / yhat^2 (by hand)", H[6, 6], 0.6 ** 2 / yhat ** 2)
    report.check("d2L/dw30^2 = 1 / yhat^2 (by hand)", H[8, 8], 1 / yhat ** 2)


def main():
    report = Report("Second derivatives: Newton's method and the exam loss's Hessian")
    newton(report)
    exam_hessian(report)
    report.finish()


if __name__ == "__main__":
    main()

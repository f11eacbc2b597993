"""Exam problem 1: a two-neuron network, its BCE loss and one backprop gradient.

Inputs x = (2, -3), label y = 1.  Hidden neuron 1 is ReLU, hidden neuron 2 is
sigmoid, the output yhat = w31*h1 + w32*h2 + w30 is used directly as a
probability, L = -(y log yhat + (1-y) log(1-yhat)).  The hand-work's
numbers are marked by mg.check, which finds any slip and says why.

Run:  python examples/problem01_two_neuron_bce.py
"""
import math

import microgrid as mg
from _checks import Report

V = mg.Value


class TwoNeuronNet:
    """The exam's network with its given weights; ``parameters()`` lists
    the Values that training would update."""

    def __init__(self):
        self.w11, self.w12, self.w10 = V(0.9, label="w11"), V(0.4, label="w12"), V(0.0, label="w10")
        self.w21, self.w22, self.w20 = V(-1.5, label="w21"), V(-0.7, label="w22"), V(0.0, label="w20")
        self.w31, self.w32, self.w30 = V(-0.2, label="w31"), V(1.6, label="w32"), V(0.0, label="w30")

    def parameters(self):
        return [self.w11, self.w12, self.w10, self.w21, self.w22, self.w20,
                self.w31, self.w32, self.w30]

    def __call__(self, x1, x2):
        z1 = mg.dot([self.w11, self.w12], [x1, x2], self.w10)
        z1.label = "z1"
        h1 = z1.relu()
        h1.label = "h1"
        z2 = mg.dot([self.w21, self.w22], [x1, x2], self.w20)
        z2.label = "z2"
        h2 = z2.sigmoid()
        h2.label = "h2"
        yhat = mg.dot([self.w31, self.w32], [h1, h2], self.w30)
        yhat.label = "yhat"
        return z1, h1, z2, h2, yhat


def main():
    report = Report("Problem 1: two-neuron network, BCE loss, dL/dw12")
    net = TwoNeuronNet()
    # inputs take no gradient: they are data, not parameters
    x1 = V(2.0, label="x1", requires_grad=False)
    x2 = V(-3.0, label="x2", requires_grad=False)
    y = 1.0
    z1, h1, z2, h2, yhat = net(x1, x2)
    L = -(y * yhat.log() + (1 - y) * (1 - yhat).log())
    L.label = "L"

    solution = mg.explain(L, wrt=net.w12)
    print(solution)

    # Independent reference: the same formulas in plain floating point.
    r_z1 = 0.9 * 2 + 0.4 * -3 + 0
    r_h1 = max(r_z1, 0.0)
    r_z2 = -1.5 * 2 + -0.7 * -3 + 0
    r_h2 = 1 / (1 + math.exp(-r_z2))
    r_yhat = -0.2 * r_h1 + 1.6 * r_h2
    r_L = -(y * math.log(r_yhat) + (1 - y) * math.log(1 - r_yhat))
    r_dL_dyhat = -y / r_yhat + (1 - y) / (1 - r_yhat)
    r_dL_dw12 = -3 * -0.2 * (1.0 if r_z1 > 0 else 0.0) * r_dL_dyhat   # x2 * w31 * relu'(z1) * dL/dyhat

    report.section("microgrid against the same formulas in plain Python")
    report.check("z1", z1.data, r_z1)
    report.check("h1", h1.data, r_h1)
    report.check("z2", z2.data, r_z2)
    report.check("h2", h2.data, r_h2)
    report.check("yhat", yhat.data, r_yhat)
    report.check("L", L.data, r_L)
    report.check("dL/dyhat (explain)", solution.grad("yhat"), r_dL_dyhat)
    report.check("dL/dw12 (w12.grad)", net.w12.grad, r_dL_dw12)
    report.check("dL/dw12 (chain-rule product)", solution.chain.total, r_dL_dw12)
    report.require("chain rule has exactly one path", solution.chain.n_paths == 1,
                   f"{solution.chain.n_paths} path(s)")
    n_params = len(net.parameters())
    report.check("number of parameters", n_params, 6 + 3)

    report.section("The hand-work, marked by mg.check")
    report.hand_sheet(L, {"z1": "0.6", "h1": "0.6", "z2": "-0.9", "h2": "0.289",
                          "yhat": "0.3424", "L": "1.07", "dL/dw12": "1.75"})
    report.hand("number of parameters", "9", n_params)
    report.finish()


if __name__ == "__main__":
    main()

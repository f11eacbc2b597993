"""Exam problem 3: counting parameters.

- One-vs-rest with k = 5 binary logistic-regression classifiers on 20
  features: each has 20 weights + 1 bias = 21, in all 105.
- A Keras-style Conv2D with 25 filters of 3x3 on a 28x28x1 input:
  25 * (3*3*1) + 25 = 250 parameters, followed by 2x2 max pooling (none).

The models are built with microgrid (scalar Values for the classifiers,
microgrid.nn tensor layers for both) and their parameters counted from their
own parameter lists; the convolution is also run on a 28x28 input to check
the output shapes.

Run:  python examples/problem03_parameter_count.py
"""
import numpy as np

import microgrid as mg
from _checks import Report


def count(module):
    return int(sum(np.prod(p.shape) for p in module.parameters()))


def main():
    import microgrid.nn as nn

    report = Report("Problem 3: counting parameters")

    report.section("One-vs-rest: 5 logistic regressions on 20 features")
    # as scalars: one weight Value per feature and a bias, per classifier
    classifiers = [([mg.Value(0.0) for _ in range(20)], mg.Value(0.0)) for _ in range(5)]
    scalar_params = sum(len(w) + 1 for w, _ in classifiers)
    print(f"  scalar Values: 5 classifiers x (20 weights + 1 bias) = {scalar_params}")
    per_class = [nn.Linear(20, 1) for _ in range(5)]
    counts = [count(m) for m in per_class]
    print(f"  nn.Linear(20, 1) each: {counts} -> {sum(counts)}")
    joint = nn.Linear(20, 5)
    print(f"  nn.Linear(20, 5), the five stacked: {count(joint)} "
          f"(weight {tuple(joint.weight.shape)}, bias {tuple(joint.bias.shape)})")
    report.check("scalar parameter count", scalar_params, 5 * (20 + 1))
    report.check("nn.Linear(20, 1) x 5", sum(counts), 5 * (20 + 1))
    report.check("nn.Linear(20, 5)", count(joint), 5 * (20 + 1))

    report.section("Conv2D(25 filters, 3x3) on 28x28x1, then 2x2 max pooling")
    conv, pool = nn.Conv2d(1, 25, kernel_size=3), nn.MaxPool2d(2)
    model = nn.Sequential(conv, pool)
    n_conv = count(model)
    print(f"  parameters: {n_conv} (conv weight {tuple(conv.weight.shape)}, "
          f"bias {tuple(conv.bias.shape)}; max pooling has none: {count(pool)})")
    x = mg.tensor(np.random.default_rng(0).normal(size=(1, 1, 28, 28)))
    mid = conv(x)
    out = pool(mid)
    print(f"  input {tuple(x.shape)} -> conv {tuple(mid.shape)} -> pool {tuple(out.shape)}")
    report.check("Conv2d(1, 25, 3) parameters", n_conv, 25 * (3 * 3 * 1) + 25)
    report.check("pooling has no parameters", count(pool), 0)
    report.check("shape after conv", list(mid.shape), [1, 25, 26, 26])
    report.check("shape after pooling", list(out.shape), [1, 25, 13, 13])
    report.check("Sequential gives the same output", np.asarray(model(x).data), np.asarray(out.data))

    report.section("microgrid against the hand-work")
    report.hand("one-vs-rest parameters", "105", sum(counts))
    report.hand("each classifier", "21", counts[0])
    report.hand("Conv2D parameters", "250", n_conv)
    report.finish()


if __name__ == "__main__":
    main()

"""Homework problem 9: a 2-H-H-1 network on noisy 2-D data, full-batch GD.

Data (numpy, seed 0): X = rand(800, 2); with x1, x2 its columns,
y = ((exp(-((x1-0.5)*6)**2) * 2 * ((x1-0.5)*6) + 1) / 2 - x2) > 0; the labels
of np.random.choice(800, size=24) are flipped right after (3% noise); the
inputs are scaled by 10.  Model 2 -> H -> H -> 1 (ReLU, ReLU, sigmoid), BCE,
full-batch gradient descent with step 0.25/sqrt(t), stopping when the loss
improves by less than 1e-4 over 1000 iterations.  Hand-reported: the best of
many trials with H = 8 made 32 training errors out of 800.

Everything runs on microgrid's scalar engine (one fused dot node per neuron).
The BCE of a sigmoid output is computed as softplus(z) - y z from the logit
z: the same function, but it cannot overflow or take log(0) when the sigmoid
saturates.

Run:  python examples/problem09_two_layer_noisy.py [--trials N] [--max-iter N] [--quick]
"""
import argparse
import math
import time

import numpy as np

import microgrid as mg
from _checks import Report


def make_data():
    np.random.seed(0)
    X = np.random.rand(800, 2)
    x1, x2 = X[:, 0], X[:, 1]
    y = ((np.exp(-((x1 - 0.5) * 6) ** 2) * 2 * ((x1 - 0.5) * 6) + 1) / 2 - x2) > 0
    flip = np.random.choice(800, size=24)
    y[flip] = ~y[flip]
    return X * 10, y.astype(float)


class Net:
    """2 -> H -> H -> 1 with ReLU, ReLU; outputs the logit of the sigmoid."""

    def __init__(self, hidden, rng):
        def layer(n_in, n_out):
            # He initialisation: ReLU layers keep their activations' scale
            w = rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_out, n_in))
            return ([[mg.Value(float(v)) for v in row] for row in w],
                    [mg.Value(0.0) for _ in range(n_out)])
        self.layers = [layer(2, hidden), layer(hidden, hidden), layer(hidden, 1)]

    def parameters(self):
        return [p for W, b in self.layers for row in W for p in row] + \
               [p for _, b in self.layers for p in b]

    def logits(self, X):
        out = []
        for x in X.tolist():
            h = x
            for k, (W, b) in enumerate(self.layers):
                h = [mg.dot(w, h, bi) for w, bi in zip(W, b)]
                if k < 2:
                    h = [v.relu() for v in h]
            out.append(h[0])
        return out

    def numpy_logits(self, X):
        """The same network in numpy, for an independent check."""
        h = X
        for k, (W, b) in enumerate(self.layers):
            Wn = np.array([[v.data for v in row] for row in W])
            bn = np.array([v.data for v in b])
            h = h @ Wn.T + bn
            if k < 2:
                h = np.maximum(h, 0.0)
        return h[:, 0]


def bce_loss(logits, y):
    # mean of softplus(z) - y z  ==  mean BCE(sigmoid(z), y)
    return mg.mean([z.softplus() - yi * z for z, yi in zip(logits, y.tolist())])


def numpy_bce(z, y):
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def train(X, y, hidden, seed, max_iter, window=1000, tol=1e-4, log_every=0):
    net = Net(hidden, np.random.default_rng(seed))
    params = net.parameters()
    losses = []
    for t in range(1, max_iter + 1):
        loss = bce_loss(net.logits(X), y)
        for p in params:
            p.grad = 0.0
        loss.backward()
        step = 0.25 / math.sqrt(t)
        for p in params:
            p.data -= step * p.grad
        losses.append(loss.data)
        if log_every and t % log_every == 0:
            print(f"    iteration {t:6d}: loss {loss.data:.5f}")
        if t > window and losses[-window - 1] - losses[-1] < tol:
            break
    return net, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=6000)
    parser.add_argument("--quick", action="store_true",
                        help="one trial of 150 iterations (for tests; does not converge)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.max_iter = 1, 150

    report = Report(f"Problem 9: 2-{args.hidden}-{args.hidden}-1 network on noisy 2-D data")
    X, y = make_data()
    print(f"  800 points, {int(y.sum())} positive, labels of 24 draws flipped, inputs scaled by 10")

    report.section("Gradient check at the initial weights (central differences, 20 points)")
    net = Net(args.hidden, np.random.default_rng(0))
    params = net.parameters()
    Xs, ys = X[:20], y[:20]
    loss = bce_loss(net.logits(Xs), ys)
    loss.backward()
    eps = 1e-6
    worst = 0.0
    for p in params[::5]:
        saved = p.data
        p.data = saved + eps
        up = numpy_bce(net.numpy_logits(Xs), ys)
        p.data = saved - eps
        down = numpy_bce(net.numpy_logits(Xs), ys)
        p.data = saved
        numeric = (up - down) / (2 * eps)
        worst = max(worst, abs(numeric - p.grad) / max(1.0, abs(numeric)))
    report.require("backward() against finite differences", worst < 1e-6,
                   f"worst relative error {worst:.2g} over {len(params[::5])} parameters")

    report.section(f"Training: {args.trials} trial(s), at most {args.max_iter} iterations each")
    results = []
    for trial in range(args.trials):
        start = time.perf_counter()
        net, losses = train(X, y, args.hidden, seed=trial, max_iter=args.max_iter,
                            log_every=0 if args.quick else 1000)
        seconds = time.perf_counter() - start
        z = np.array([v.data for v in net.logits(X)])
        errors = int(np.sum((z > 0) != (y > 0.5)))
        converged = len(losses) < args.max_iter
        print(f"  trial {trial}: {len(losses)} iterations ({'converged' if converged else 'stopped at the cap'}), "
              f"loss {losses[-1]:.4f} (first {losses[0]:.4f}), training errors {errors}/800, {seconds:.1f} s")
        report.check(f"trial {trial}: logits against numpy forward", z, net.numpy_logits(X), tol=1e-9)
        report.check(f"trial {trial}: final loss against numpy", bce_loss(net.logits(X), y).data,
                     numpy_bce(net.numpy_logits(X), y), tol=1e-9)
        report.require(f"trial {trial}: loss decreased", losses[-1] < losses[0],
                       f"{losses[0]:.4f} -> {losses[-1]:.4f}")
        results.append(errors)

    report.section("Against the hand-reported result")
    best = min(results)
    print(f"  best of {len(results)} trial(s): {best} training errors out of 800 "
          f"(hand-reported: 32, best of many trials)")
    if args.quick:
        print("  (--quick: far too few iterations to converge; the count is not comparable)")
    else:
        print(f"  24 labels were flipped, so a classifier that fits the clean boundary makes about "
              f"24 errors; {best} vs 32 is within the spread of random restarts.")
    report.finish()


if __name__ == "__main__":
    main()

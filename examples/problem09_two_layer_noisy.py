"""Homework problem 9: a 2-H-H-1 network on noisy 2-D data, full-batch GD.

Data (numpy, seed 0): X = rand(800, 2); with x1, x2 its columns,
y = ((exp(-((x1-0.5)*6)**2) * 2 * ((x1-0.5)*6) + 1) / 2 - x2) > 0; the labels
of np.random.choice(800, size=24) are flipped right after (3% noise); the
inputs are scaled by 10.  Model 2 -> H -> H -> 1 (ReLU, ReLU, sigmoid), BCE,
full-batch gradient descent with step 0.25/sqrt(t), stopping when the loss
improves by less than 1e-4 over 1000 iterations.  Hand-reported: the best of
many trials with H = 8 made 32 training errors out of 800.

The stopping rule takes 10^4 to 10^5 iterations: a numpy replica of this
exact procedure (same data, same initial weights) stopped after 36,000 to
171,000 iterations with 123 to 166 training errors for seeds 0-3; the
hand-reported 32 is the best of many trials, so expect to need many seeds.
The scalar engine (one fused dot node per neuron, about 20 ms per iteration
on 800 points) runs --quick and checks; full runs use microgrid's tensor
layers where present (--engine tensor), from the same initial weights.
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
    return X * 10, y.astype(float), flip


def init_weights(hidden, seed):
    """He initialisation (ReLU layers keep their activations' scale), biases 0;
    the same numbers for both engines."""
    rng = np.random.default_rng(seed)
    shapes = [(hidden, 2), (hidden, hidden), (1, hidden)]
    return [(rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_out, n_in)), np.zeros(n_out))
            for n_out, n_in in shapes]


def numpy_logits(weights, X):
    """The network in numpy, for an independent check."""
    h = X
    for k, (W, b) in enumerate(weights):
        h = h @ W.T + b
        if k < 2:
            h = np.maximum(h, 0.0)
    return h[:, 0]


def numpy_bce(z, y):
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


class ScalarNet:
    """2 -> H -> H -> 1 on microgrid's scalar engine: one fused dot node per
    neuron; returns the logit of the sigmoid output."""

    def __init__(self, weights):
        self.layers = [([[mg.Value(float(v)) for v in row] for row in W],
                        [mg.Value(float(v)) for v in b]) for W, b in weights]

    def parameters(self):
        return [p for W, b in self.layers for p in [v for row in W for v in row] + b]

    def weights(self):
        return [(np.array([[v.data for v in row] for row in W]), np.array([v.data for v in b]))
                for W, b in self.layers]

    def loss(self, X, y):
        losses = []
        for x, yi in zip(X.tolist(), y.tolist()):
            h = x
            for k, (W, b) in enumerate(self.layers):
                h = [mg.dot(w, h, bi) for w, bi in zip(W, b)]
                if k < 2:
                    h = [v.relu() for v in h]
            # softplus(z) - y z  ==  BCE(sigmoid(z), y)
            losses.append(h[0].softplus() - yi * h[0])
        return mg.mean(losses)

    def step(self, loss, lr):
        params = self.parameters()
        for p in params:
            p.grad = 0.0
        loss.backward()
        for p in params:
            p.data -= lr * p.grad
        return loss.data


class TensorNet:
    """The same network on microgrid's tensor layers."""

    def __init__(self, weights):
        import microgrid.nn as nn
        self.linears = [nn.Linear(2, weights[0][0].shape[0]),
                        nn.Linear(weights[1][0].shape[1], weights[1][0].shape[0]),
                        nn.Linear(weights[2][0].shape[1], 1)]
        for lin, (W, b) in zip(self.linears, weights):
            lin.weight.data[...] = mg.tensor(W).data
            lin.bias.data[...] = mg.tensor(b).data
        self.model = nn.Sequential(self.linears[0], nn.ReLU(), self.linears[1], nn.ReLU(),
                                   self.linears[2])

    def parameters(self):
        return list(self.model.parameters())

    def weights(self):
        return [(np.array(np.asarray(lin.weight.data), dtype=float),
                 np.array(np.asarray(lin.bias.data), dtype=float))
                for lin in self.linears]

    def loss(self, X, y):
        import microgrid.functional as F
        z = self.model(mg.tensor(X)).reshape(-1)
        return F.binary_cross_entropy_with_logits(z, mg.tensor(y))

    def step(self, loss, lr):
        self.model.zero_grad()
        loss.backward()
        for p in self.parameters():
            p.data -= lr * p.grad
        return float(np.asarray(loss.data))


def train(engine, X, y, hidden, seed, max_iter, window=1000, tol=1e-4, log_every=0):
    net = (ScalarNet if engine == "scalar" else TensorNet)(init_weights(hidden, seed))
    losses = []
    for t in range(1, max_iter + 1):
        losses.append(net.step(net.loss(X, y), 0.25 / math.sqrt(t)))
        if log_every and t % log_every == 0:
            print(f"    iteration {t:6d}: loss {losses[-1]:.5f}")
        if t > window and losses[-window - 1] - losses[-1] < tol:
            break
    return net, losses


def flat_grads(net):
    grads = []
    for p in net.parameters():
        g = p.grad
        grads.append(np.ravel(np.asarray(g, dtype=float)) if not isinstance(g, float) else [g])
    return np.concatenate([np.ravel(g) for g in grads])


def gradient_check(report, engine, hidden, X, y):
    """backward() against central differences of the numpy loss."""
    net = (ScalarNet if engine == "scalar" else TensorNet)(init_weights(hidden, 0))
    loss = net.loss(X, y)
    if engine == "scalar":
        for p in net.parameters():
            p.grad = 0.0
    else:
        net.model.zero_grad()
    loss.backward()
    analytic = flat_grads(net)
    weights = net.weights()
    flat = np.concatenate([np.concatenate([W.ravel(), b]) for W, b in weights])

    def unflatten(v):
        out, k = [], 0
        for W, b in weights:
            Wn = v[k:k + W.size].reshape(W.shape)
            k += W.size
            out.append((Wn, v[k:k + b.size]))
            k += b.size
        return out

    eps = 1e-6
    numeric = np.empty_like(flat)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (numpy_bce(numpy_logits(unflatten(up), X), y)
                      - numpy_bce(numpy_logits(unflatten(down), X), y)) / (2 * eps)
    report.check(f"{engine} engine: backward() against finite differences ({flat.size} parameters)",
                 analytic, numeric, tol=1e-6)
    report.check(f"{engine} engine: loss against numpy", float(np.asarray(loss.data)),
                 numpy_bce(numpy_logits(weights, X), y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=None,
                        help="cap on iterations (default 300000 on tensors, 20000 on scalars)")
    parser.add_argument("--engine", choices=["auto", "scalar", "tensor"], default="auto",
                        help="auto: tensors where microgrid has them (full runs need 10^5 "
                             "iterations), the scalar engine with --quick")
    parser.add_argument("--quick", action="store_true",
                        help="one trial of 150 iterations (for tests; does not converge)")
    args = parser.parse_args()
    if args.engine == "auto":
        args.engine = "scalar" if args.quick else "tensor"
    if args.quick:
        args.trials, args.max_iter = 1, 150
    if args.max_iter is None:
        args.max_iter = 300000 if args.engine == "tensor" else 20000

    report = Report(f"Problem 9: 2-{args.hidden}-{args.hidden}-1 network on noisy 2-D data")
    X, y, flip = make_data()
    flipped = len(np.unique(flip))
    print(f"  800 points, {int(y.sum())} positive; {flipped} distinct labels flipped "
          f"(24 draws), inputs scaled by 10")

    report.section("Gradient check at the initial weights (central differences, 40 points)")
    for engine in ["scalar", "tensor"]:
        gradient_check(report, engine, args.hidden, X[:40], y[:40])

    report.section(f"Training on the {args.engine} engine: {args.trials} trial(s), "
                   f"at most {args.max_iter} iterations each")
    results = []
    for trial in range(args.trials):
        start = time.perf_counter()
        net, losses = train(args.engine, X, y, args.hidden, seed=trial, max_iter=args.max_iter,
                            log_every=0 if args.quick else (10000 if args.engine == "tensor" else 1000))
        seconds = time.perf_counter() - start
        weights = net.weights()
        z = numpy_logits(weights, X)
        errors = int(np.sum((z > 0) != (y > 0.5)))
        converged = len(losses) < args.max_iter
        print(f"  trial {trial}: {len(losses)} iterations "
              f"({'stopped: < 1e-4 better over 1000' if converged else 'stopped at the cap'}), "
              f"loss {losses[-1]:.4f} (first {losses[0]:.4f}), training errors {errors}/800, {seconds:.1f} s")
        report.check(f"trial {trial}: final loss against numpy", float(np.asarray(net.loss(X, y).data)),
                     numpy_bce(z, y), tol=1e-9)
        report.require(f"trial {trial}: loss decreased", losses[-1] < losses[0],
                       f"{losses[0]:.4f} -> {losses[-1]:.4f}")
        results.append(errors)

    report.section("Against the hand-reported result")
    best = min(results)
    print(f"  best of {len(results)} trial(s): {best} training errors out of 800 "
          f"(hand-reported: 32, best of many trials)")
    print(f"  for scale: the noise-free rule itself makes {flipped} errors on these labels")
    if args.quick:
        print("  (--quick: far too few iterations to converge; the count is not comparable)")
    report.finish()


if __name__ == "__main__":
    main()

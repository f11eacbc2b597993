"""Homework problem 6 (shared/exam-problems.md): a 784-200-1 network on MNIST
3s vs 9s reached 98.3% test accuracy with step size 0.1 and collapsed to ~50%
with step size 10.  MNIST cannot be downloaded here, so the 8x8 digits
embedded in microgrid stand in: the same network with 64 inputs,

    Linear(64, 200) -> ReLU -> Linear(200, 1) -> Sigmoid,  binary cross-entropy,
    plain SGD, mini-batches of 100, 5 epochs, pixels scaled to [0, 1],

trained twice from the same initial weights, with step size 0.1 and 10.
There are 363 images of 3s and 9s here (MNIST has about 12 000), so 5 epochs
are 15 updates rather than 600; the two behaviours still show.  The claims
this script checks (exit code 1 if either fails): step size 0.1 reaches at
least 90% test accuracy; step size 10 collapses: every output saturates to
the same class, and the accuracy is at most 60%.

    python examples/digits_3v9.py [--quick] [--seed N]
"""
import argparse
import sys

import numpy as np

import microgrid as mg
from microgrid import functional as F
from microgrid import nn
from microgrid.datasets import batches, load_digits, train_test_split
from microgrid.optim import SGD


def threes_and_nines(seed):
    images, labels = load_digits()
    keep = (labels == 3) | (labels == 9)
    X = images[keep].reshape(-1, 64) / 16.0
    y = (labels[keep] == 9).astype(np.float64)          # 1 for a nine
    return train_test_split(X, y, test_size=0.25, seed=seed, stratify=y)


def train(initial_state, X, y, lr, epochs, seed):
    model = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 1), nn.Sigmoid())
    model.load_state_dict(initial_state)
    opt = SGD(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        losses = []
        for xb, yb in batches(X, y, batch_size=100, seed=seed * 1000 + epoch):
            p = model(mg.tensor(xb))
            loss = F.binary_cross_entropy(p.reshape((len(yb),)), mg.tensor(yb))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.data))
        print(f"  step size {lr:g}, epoch {epoch}: mean batch loss {np.mean(losses):.4f}")
    return model


def evaluate(model, X, y):
    p = np.asarray(model(mg.tensor(X)).data)[:, 0]
    accuracy = float(((p > 0.5) == (y > 0.5)).mean())
    saturated = bool(np.all(p > 1 - 1e-6) or np.all(p < 1e-6))
    return accuracy, saturated, p


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="same run (it takes about a second); kept for the test runner")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X_train, X_test, y_train, y_test = threes_and_nines(args.seed)
    print(f"3s vs 9s: {len(X_train)} training, {len(X_test)} test images")
    mg.manual_seed(args.seed)
    initial = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 1), nn.Sigmoid()).state_dict()

    results = {}
    for lr in (0.1, 10.0):
        model = train(initial, X_train, y_train, lr, epochs=5, seed=args.seed)
        acc, saturated, p = evaluate(model, X_test, y_test)
        results[lr] = (acc, saturated)
        print(f"step size {lr:g}: test accuracy {acc:.1%}; outputs range "
              f"[{p.min():.3g}, {p.max():.3g}]{' (all saturated)' if saturated else ''}")

    good = results[0.1][0] >= 0.90
    collapsed = results[10.0][1] and results[10.0][0] <= 0.60
    print(f"claim 1, step size 0.1 learns (>= 90%): {'yes' if good else 'NO'}")
    print(f"claim 2, step size 10 collapses (saturated, <= 60%): {'yes' if collapsed else 'NO'}")
    return 0 if good and collapsed else 1


if __name__ == "__main__":
    sys.exit(main())

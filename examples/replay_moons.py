"""Train micrograd's moons model with graph replay.

The loss graph of micrograd's demo (two moons, MLP(2, [16, 16, 1]), SVM
max-margin loss plus L2 regularisation, full batch) is built once and
recorded; every training step then replays its forward and backward passes in
compiled code and updates the parameters in place. The script also times one
rebuilt step against one replayed step, and checks that replay computes what
a rebuild computes.

    python examples/replay_moons.py [--steps 100] [--quick]
"""
import argparse
import random
import sys
import time

import microgrid as mg
from microgrid import Graph, Value
from microgrid.datasets import make_moons
from microgrid.nn import MLP


def build_loss(model, inputs, labels):
    """micrograd's demo loss: mean hinge loss on the scores, plus 1e-4 * |w|^2."""
    scores = [model(x) for x in inputs]
    data_loss = mg.sum((1 + -y * s).relu() for y, s in zip(labels, scores)) * (1.0 / len(labels))
    reg_loss = 1e-4 * mg.sum(p * p for p in model.parameters())
    return data_loss + reg_loss, scores


def accuracy(scores, labels):
    return sum((s.data > 0) == (y > 0) for s, y in zip(scores, labels)) / len(labels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--quick", action="store_true", help="30 steps")
    args = parser.parse_args(argv)
    steps = 30 if args.quick else args.steps

    X, y01 = make_moons(n_samples=100, noise=0.1, seed=0)
    labels = [2 * int(v) - 1 for v in y01]
    random.seed(args.seed)
    model = MLP(2, [16, 16, 1])
    inputs = [[Value(float(a)), Value(float(b))] for a, b in X]

    loss, scores = build_loss(model, inputs, labels)
    graph = Graph(loss)
    print(f"recorded {graph}")

    start = time.perf_counter()
    for k in range(steps):
        value = graph.forward()
        model.zero_grad()
        graph.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        if k % 10 == 0 or k == steps - 1:
            print(f"step {k:3d}  loss {value:.4f}  accuracy {accuracy(scores, labels):.0%}")
    elapsed = time.perf_counter() - start
    print(f"{steps} replayed steps in {elapsed * 1e3:.1f} ms "
          f"({elapsed / steps * 1e6:.0f} us per step, including the Python update loop)")

    # The same step, rebuilt from scratch, must agree with the replay.
    replayed = graph.forward()
    model.zero_grad()
    graph.backward()
    replayed_grads = [p.grad for p in model.parameters()]
    t0 = time.perf_counter()
    rebuilt, _ = build_loss(model, [[Value(float(a)), Value(float(b))] for a, b in X], labels)
    model.zero_grad()
    rebuilt.backward()
    t_rebuild = time.perf_counter() - t0
    same = rebuilt.data == replayed and [p.grad for p in model.parameters()] == replayed_grads
    t0 = time.perf_counter()
    graph.forward()
    model.zero_grad()
    graph.backward()
    t_replay = time.perf_counter() - t0
    print(f"rebuild equals replay bit for bit: {same}; one step: rebuild "
          f"{t_rebuild * 1e3:.2f} ms, replay {t_replay * 1e3:.3f} ms")

    final = accuracy(scores, labels)
    target = 0.85 if args.quick else 0.95
    if not same or final < target:
        print(f"FAILED: accuracy {final:.0%} (wanted {target:.0%}) or replay mismatch")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

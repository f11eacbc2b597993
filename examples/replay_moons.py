"""Train micrograd's moons model with graph replay.

The loss graph of micrograd's demo (two moons, MLP(2, [16, 16, 1]), SVM
max-margin loss plus L2 regularisation, full batch) is built once and
recorded; every training step then replays its forward and backward passes in
compiled code and updates the parameters in place. The script also times one
rebuilt step against one replayed step, and checks that replay computes what
a rebuild computes.

With --batched, the model is micrograd's demo written per sample, with
micrograd's MLP code (microgrid.nn.MLP(fused=False) builds its graph node for
node): one sample's loss, its hinge loss plus the L2 term, is recorded with
the sample's two coordinates and label as inputs, and every step replays it
on the 100 points at once; backward(reduction="mean") gives the gradient of
micrograd's loss (the mean of the per-sample losses is its data loss plus the
L2 term).  Every 10 steps the script rebuilds micrograd's loss eagerly, with
micrograd's own code, and checks the loss and gradients to 1e-9; if
micrograd is installed, it also trains micrograd itself alongside for a few
steps and compares the losses.

    python examples/replay_moons.py [--steps 100] [--quick] [--batched]
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


def sample_loss(model, alpha=1e-4):
    """One sample's share of micrograd's loss: the hinge loss of its score
    plus the L2 term (the mean over samples is micrograd's loss).  Returns
    (root, score, the inputs [x1, x2, label])."""
    x1, x2, label = Value(0.0), Value(0.0), Value(0.0)
    score = model([x1, x2])
    reg_loss = alpha * sum((p * p for p in model.parameters()))
    return (1 + -label * score).relu() + reg_loss, score, [x1, x2, label]


def micrograd_loss(Value, model, X, labels, alpha=1e-4):
    """micrograd's demo notebook loss(), its code unchanged."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(labels, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = alpha * sum((p * p for p in model.parameters()))
    return data_loss + reg_loss


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-300)


def micrograd_twin(model):
    """micrograd's own MLP with the same weights, or None without micrograd."""
    try:
        from micrograd.engine import Value as MicrogradValue
        from micrograd.nn import MLP as MicrogradMLP
    except ImportError:
        return None, None
    twin = MicrogradMLP(2, [16, 16, 1])
    for p, q in zip(twin.parameters(), model.parameters()):
        p.data = q.data
    return twin, MicrogradValue


def main_batched(args, steps):
    X, y01 = make_moons(n_samples=100, noise=0.1, seed=0)
    labels = [2 * int(v) - 1 for v in y01]
    columns = (X[:, 0], X[:, 1], [float(v) for v in labels])
    random.seed(args.seed)
    model = MLP(2, [16, 16, 1], fused=False)
    params = model.parameters()
    root, score, inputs = sample_loss(model)
    graph = Graph(root, inputs=inputs)
    print(f"recorded one sample's loss: {graph}")
    twin, MicrogradValue = micrograd_twin(model)
    twin_steps = 2 if args.quick else 5
    ok = True
    start = time.perf_counter()
    for k in range(steps):
        loss = graph.forward(*columns, reduction="mean")
        model.zero_grad()
        graph.backward(reduction="mean")
        if k % 10 == 0 or k == steps - 1:
            grads = [p.grad for p in params]
            model.zero_grad()
            eager = micrograd_loss(Value, model, X.tolist(), labels)
            eager.backward()
            same = close(loss, eager.data) and all(close(a, p.grad) for a, p in zip(grads, params))
            ok = ok and same
            for p, g in zip(params, grads):
                p.grad = g
            acc = sum((s > 0) == (t > 0) for s, t in zip(graph.value(score), labels)) / len(labels)
            print(f"step {k:3d}  loss {loss:.6f}  accuracy {acc:.0%}  "
                  f"eager rebuild agrees to 1e-9: {same}")
        if twin is not None and k < twin_steps:
            twin_loss = micrograd_loss(MicrogradValue, twin, X.tolist(), labels)
            twin.zero_grad()
            twin_loss.backward()
            for p in twin.parameters():
                p.data -= (1.0 - 0.9 * k / 100) * p.grad
            ok = ok and close(loss, twin_loss.data)
            print(f"step {k:3d}  micrograd's own code: loss {twin_loss.data:.6f} "
                  f"(agrees to 1e-9: {close(loss, twin_loss.data)})")
        learning_rate = 1.0 - 0.9 * k / 100
        for p in params:
            p.data -= learning_rate * p.grad
    elapsed = time.perf_counter() - start
    print(f"{steps} batched steps in {elapsed * 1e3:.1f} ms, the checks included")
    if twin is None:
        print("micrograd is not installed: compared with the eager rebuild only")
    final = sum((s > 0) == (t > 0) for s, t in zip(graph.value(score), labels)) / len(labels)
    target = 0.85 if args.quick else 0.95
    print(f"batched replay equals micrograd's loss to 1e-9: {ok}")
    if not ok or final < target:
        print(f"FAILED: accuracy {final:.0%} (wanted {target:.0%}) or a mismatch")
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--quick", action="store_true", help="30 steps")
    parser.add_argument("--batched", action="store_true",
                        help="replay one sample's graph on the 100 points at once")
    args = parser.parse_args(argv)
    steps = 30 if args.quick else args.steps
    if args.batched:
        return main_batched(args, steps)

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

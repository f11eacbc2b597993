"""Train a CNN on the embedded 8x8 digits with graph replay.

The training graph (Conv2d -> ReLU -> MaxPool2d -> Flatten -> Linear,
cross-entropy over a mini-batch of 64) is built once and recorded. Every step
copies the next mini-batch into the recorded input tensor and target array in
place, replays forward and backward, and lets Adam update the parameters in
place. The script checks that a replayed step equals a rebuilt one bit for
bit, times both, and reports the test accuracy.

    python examples/replay_cnn.py [--epochs 8] [--quick]
"""
import argparse
import sys
import time

import numpy as np

import microgrid as mg
from microgrid import functional as F
from microgrid import nn
from microgrid.datasets import batches, load_digits, train_test_split
from microgrid.optim import Adam

BATCH = 64


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 8 x 4 x 4
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs

    images, labels = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        images[:, None] / 16.0, labels, test_size=0.25, seed=args.seed, stratify=labels)
    mg.manual_seed(args.seed)
    model = build_model()
    optimizer = Adam(model.parameters(), lr=1e-2)

    # The recorded graph reads its input from x and its targets from targets:
    # both are overwritten in place before every replay.
    x = mg.tensor(np.zeros((BATCH, 1, 8, 8)))
    targets = np.zeros(BATCH, dtype=np.int64)
    graph = mg.Graph(F.cross_entropy(model(x), targets))
    print(f"recorded {graph}")

    start = time.perf_counter()
    steps = 0
    for epoch in range(epochs):
        for xb, yb in batches(x_train, y_train, batch_size=BATCH, seed=epoch, drop_last=True):
            x.data[...] = xb
            targets[...] = yb
            loss = graph.forward()
            optimizer.zero_grad()
            graph.backward()
            optimizer.step()
            steps += 1
        test_logits = model(mg.tensor(x_test)).data
        acc = float((test_logits.argmax(axis=1) == y_test).mean())
        print(f"epoch {epoch + 1}  last batch loss {float(loss):.4f}  test accuracy {acc:.1%}")
    elapsed = time.perf_counter() - start
    print(f"{steps} replayed steps in {elapsed:.2f} s ({elapsed / steps * 1e3:.2f} ms per step)")

    # One more step both ways: the replay must equal a fresh build.
    x.data[...] = x_train[:BATCH]
    targets[...] = y_train[:BATCH]
    t0 = time.perf_counter()
    replayed = float(graph.forward())
    optimizer.zero_grad()
    graph.backward()
    t_replay = time.perf_counter() - t0
    replayed_grads = [p.grad.copy() for p in model.parameters()]
    t0 = time.perf_counter()
    rebuilt = F.cross_entropy(model(mg.tensor(x_train[:BATCH])), y_train[:BATCH])
    optimizer.zero_grad()
    rebuilt.backward()
    t_rebuild = time.perf_counter() - t0
    same = float(rebuilt.data) == replayed and all(
        np.array_equal(p.grad, g) for p, g in zip(model.parameters(), replayed_grads))
    print(f"rebuild equals replay bit for bit: {same}; one step: rebuild "
          f"{t_rebuild * 1e3:.2f} ms, replay {t_replay * 1e3:.2f} ms")

    target = 0.80 if args.quick else 0.95
    if not same or acc < target:
        print(f"FAILED: test accuracy {acc:.1%} (wanted {target:.0%}) or replay mismatch")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

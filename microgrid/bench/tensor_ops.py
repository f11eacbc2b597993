"""Benchmark: tensor training steps of microgrid against PyTorch (float64).

Two workloads, each one full SGD step (forward, zero grads, backward, update):
- ``mlp_784_200_1``: the homework's 784-200-1 network (ReLU hidden, sigmoid
  output, binary cross-entropy) on a batch of 100;
- ``moons_2_16_16_1``: micrograd's moons MLP (ReLU, ReLU, linear) with its
  max-margin loss mean(relu(1 - y * score)) + 1e-4 * sum(p^2), batch 100.

Both libraries run in the same process, interleaved, with the garbage
collector on; the result is the median time per step over the repeats.
PyTorch is optional (the harness skips it when it is missing).

    python -m microgrid.bench.tensor_ops [--repeats 15] [--steps 20] [--clock wall|process]

BLAS threads: numpy (OpenBLAS) and PyTorch both use every core by default;
on a loaded machine set OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 for both.
"""
import argparse
import statistics
import time

import numpy as np

import microgrid as mg
import microgrid.functional as F


def _data(batch, n_in, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_in))
    y = (rng.random((batch, 1)) < 0.5).astype(np.float64)
    return x, y


def _layers(sizes, seed):
    """(weight, bias) pairs, PyTorch's Linear layout, uniform(-1/sqrt(in), 1/sqrt(in))."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(n_in)
        layers.append((rng.uniform(-bound, bound, (n_out, n_in)), rng.uniform(-bound, bound, n_out)))
    return layers


# ---------------------------------------------------------------------------
# microgrid steps

def microgrid_mlp_step(batch=100, seed=0, lr=0.1):
    x_np, y_np = _data(batch, 784, seed)
    x, y = mg.tensor(x_np), mg.tensor(y_np)
    (w1, b1), (w2, b2) = [(mg.tensor(w, requires_grad=True), mg.tensor(b, requires_grad=True))
                          for w, b in _layers([784, 200, 1], seed)]
    params = [w1, b1, w2, b2]

    def step():
        h = F.relu(F.linear(x, w1, b1))
        p = F.sigmoid(F.linear(h, w2, b2))
        loss = F.binary_cross_entropy(p, y)
        for q in params:
            q.grad = None
        loss.backward()
        for q in params:
            q.data -= lr * q.grad
        return loss
    return step


def microgrid_moons_step(batch=100, seed=0, lr=0.05):
    x_np, y_np = _data(batch, 2, seed)
    x, y = mg.tensor(x_np), mg.tensor(2.0 * y_np - 1.0)
    layers = [(mg.tensor(w, requires_grad=True), mg.tensor(b, requires_grad=True))
              for w, b in _layers([2, 16, 16, 1], seed)]
    params = [p for layer in layers for p in layer]

    def step():
        h = x
        for i, (w, b) in enumerate(layers):
            h = F.linear(h, w, b)
            if i < len(layers) - 1:
                h = F.relu(h)
        loss = F.hinge_loss(h, y) + 1e-4 * sum((p * p).sum() for p in params)
        for q in params:
            q.grad = None
        loss.backward()
        for q in params:
            q.data -= lr * q.grad
        return loss
    return step


# ---------------------------------------------------------------------------
# PyTorch steps (same math)

def torch_mlp_step(batch=100, seed=0, lr=0.1):
    import torch
    x_np, y_np = _data(batch, 784, seed)
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    params = [torch.tensor(a, requires_grad=True) for layer in _layers([784, 200, 1], seed) for a in layer]
    w1, b1, w2, b2 = params
    tf = torch.nn.functional

    def step():
        h = tf.relu(tf.linear(x, w1, b1))
        p = torch.sigmoid(tf.linear(h, w2, b2))
        loss = tf.binary_cross_entropy(p, y)
        for q in params:
            q.grad = None
        loss.backward()
        with torch.no_grad():
            for q in params:
                q -= lr * q.grad
        return loss
    return step


def torch_moons_step(batch=100, seed=0, lr=0.05):
    import torch
    x_np, y_np = _data(batch, 2, seed)
    x, y = torch.tensor(x_np), torch.tensor(2.0 * y_np - 1.0)
    layers = [tuple(torch.tensor(a, requires_grad=True) for a in layer) for layer in _layers([2, 16, 16, 1], seed)]
    params = [p for layer in layers for p in layer]
    tf = torch.nn.functional

    def step():
        h = x
        for i, (w, b) in enumerate(layers):
            h = tf.linear(h, w, b)
            if i < len(layers) - 1:
                h = tf.relu(h)
        loss = torch.relu(1 - y * h).mean() + 1e-4 * sum((p * p).sum() for p in params)
        for q in params:
            q.grad = None
        loss.backward()
        with torch.no_grad():
            for q in params:
                q -= lr * q.grad
        return loss
    return step


WORKLOADS = {
    "mlp_784_200_1": (microgrid_mlp_step, torch_mlp_step),
    "moons_2_16_16_1": (microgrid_moons_step, torch_moons_step),
}


CLOCKS = {
    "wall": time.perf_counter,
    # CPU seconds of this process (all its threads): steadier than wall time
    # on a machine shared with other jobs
    "process": time.process_time,
}


def _time_per_step(step, steps, clock):
    start = clock()
    for _ in range(steps):
        step()
    return (clock() - start) / steps


def run(repeats=15, steps=20, workloads=None, clock="wall"):
    """Median seconds per step for each workload and library, interleaved
    repeat by repeat; returns a list of dicts (one per workload)."""
    clock_fn = CLOCKS[clock]
    try:
        import torch
        torch.set_default_dtype(torch.float64)
    except ImportError:
        torch = None
    results = []
    for name in workloads or WORKLOADS:
        make_mg, make_torch = WORKLOADS[name]
        contenders = {"microgrid": make_mg()}
        if torch is not None:
            contenders["torch"] = make_torch()
        # the same initial loss shows both compute the same step
        first = {lib: step().item() for lib, step in contenders.items()}
        times = {lib: [] for lib in contenders}
        for _ in range(repeats):
            for lib, step in contenders.items():
                times[lib].append(_time_per_step(step, steps, clock_fn))
        row = {"workload": name, "first_loss": first}
        row.update({lib: statistics.median(t) for lib, t in times.items()})
        if "torch" in row:
            row["microgrid/torch"] = row["microgrid"] / row["torch"]
        results.append(row)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args(argv)
    print(f"clock: {args.clock}")
    for row in run(args.repeats, args.steps, clock=args.clock):
        line = f"{row['workload']:>18}: microgrid {row['microgrid'] * 1e6:9.1f} us/step"
        if "torch" in row:
            line += (f"   torch {row['torch'] * 1e6:9.1f} us/step   ratio {row['microgrid/torch']:.2f}"
                     f"   (first loss {row['first_loss']['microgrid']:.6f} vs {row['first_loss']['torch']:.6f})")
        print(line)


if __name__ == "__main__":
    main()

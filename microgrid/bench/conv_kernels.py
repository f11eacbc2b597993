"""Benchmark of the convolution kernels (microgrid.kernels._conv) against PyTorch.

The workload is one CNN layer's training step on plain arrays: conv2d with 8
filters 3x3 -> relu -> 2x2 max pooling -> sum, forward and backward (gradients
of the weight and bias, and of the input when --input-grad is given), on
1x1x28x28 and 64x1x28x28 float64 inputs.  relu and sum are numpy for
microgrid; PyTorch (CPU, float64, autograd) runs the same pipeline in the same
process, in alternating blocks.  Times are medians over repeats with Python's
garbage collector on: wall-clock time, and the CPU time of the whole process
(all threads), which a machine busy with other work disturbs less.

    python -m microgrid.bench.conv_kernels [--repeats N] [--input-grad] [--torch-threads T]
                                           [--top-pad MB]

--top-pad asks glibc's malloc to keep MB megabytes spare at the top of the
heap (mallopt M_TOP_PAD), which stops it from returning and re-faulting the
pages of numpy's large temporaries on every step.
"""
import argparse
import gc
import statistics
import time

import numpy as np

from microgrid.kernels import _conv

ONE, ZERO = (1, 1), (0, 0)
POOL = (2, 2)


def microgrid_step(x, w, b, need_x):
    """Forward and backward of conv -> relu -> maxpool -> sum; returns the loss
    and the gradients."""
    y = _conv.conv2d_forward(x, w, b, ONE, ZERO, ONE, 1)
    r = np.maximum(y, 0.0)
    p, argmax = _conv.max_pool2d_forward(r, POOL, POOL, ZERO, ONE, False)
    loss = p.sum()
    gr = _conv.max_pool2d_backward(np.ones_like(p), argmax, r.shape)
    gy = np.multiply(gr, y > 0.0, out=gr)           # relu'(0) = 0
    grads = _conv.conv2d_backward(gy, x, w, ONE, ZERO, ONE, 1, need_x, True, True)
    return loss, grads


def torch_step(torch, x, w, b):
    F = torch.nn.functional
    if x.grad is not None:
        x.grad = None
    w.grad = b.grad = None
    loss = F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2).sum()
    loss.backward()
    return loss


def median_us(fns, repeats, warmup, rounds=5, pause=0.3):
    """Median (wall, cpu) time of each function in microseconds.

    The functions take turns in blocks of repeats / rounds calls, so a machine
    whose load changes slows them alike.  Blocks rather than single calls, with
    a pause before each: PyTorch's OpenMP workers spin for a while after each
    call and would otherwise eat the CPU of whatever runs next."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for fn, w, c in zip(fns, wall, cpu):
            time.sleep(pause)
            fn()
            for _ in range(per_round):
                c0 = time.process_time()
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                c1 = time.process_time()
                w.append(t1 - t0)
                c.append(c1 - c0)
    return [(statistics.median(w) * 1e6, statistics.median(c) * 1e6)
            for w, c in zip(wall, cpu)]


def run(repeats=200, input_grad=False, batches=(1, 64), torch_threads=None):
    """Rows (batch, microgrid alone, microgrid, torch), each a (wall, cpu) pair
    in microseconds (torch None when it is not installed)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch_threads:
        torch.set_num_threads(torch_threads)
    gc.enable()
    rng = np.random.default_rng(0)
    inputs = {}
    for n in batches:
        inputs[n] = (rng.standard_normal((n, 1, 28, 28)), rng.standard_normal((8, 1, 3, 3)) / 3.0,
                     rng.standard_normal(8) / 10.0)
    reps = {n: max(20, repeats // (1 if n == 1 else 8)) for n in batches}
    # First microgrid alone, before PyTorch has run: torch's large allocations
    # raise glibc's mmap and trim thresholds for the whole process, which then
    # spares numpy's temporaries their page faults (a large effect at batch 64).
    alone = {}
    for n, (x, w, b) in inputs.items():
        alone[n] = median_us([lambda: microgrid_step(x, w, b, input_grad)], reps[n],
                             reps[n] // 4)[0]
    rows = []
    for n, (x, w, b) in inputs.items():
        ours = lambda: microgrid_step(x, w, b, input_grad)
        if torch is None:
            rows.append((n, alone[n], median_us([ours], reps[n], reps[n] // 4)[0], None))
            continue
        xt = torch.tensor(x, requires_grad=input_grad)
        wt = torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        # same result before timing: the benchmark compares equal work
        loss, (gx, gw, gb) = microgrid_step(x, w, b, input_grad)
        torch_step(torch, xt, wt, bt)
        assert np.allclose(gw, wt.grad.numpy()) and np.allclose(gb, bt.grad.numpy())
        times = median_us([ours, lambda: torch_step(torch, xt, wt, bt)], reps[n], reps[n] // 4)
        rows.append((n, alone[n], *times))
    return rows, (torch.get_num_threads() if torch is not None else None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--input-grad", action="store_true",
                        help="also compute the gradient of the input")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--top-pad", type=int, default=None, metavar="MB",
                        help="glibc malloc: keep MB megabytes spare at the heap top")
    args = parser.parse_args(argv)
    if args.top_pad is not None:
        import ctypes
        M_TOP_PAD = -2
        ctypes.CDLL("libc.so.6").mallopt(M_TOP_PAD, args.top_pad << 20)
    rows, threads = run(args.repeats, args.input_grad, torch_threads=args.torch_threads)
    print("conv2d(8x1x3x3) -> relu -> max_pool2d(2) -> sum, forward + backward"
          + (" (with input gradient)" if args.input_grad else ""))
    if threads:
        print(f"torch threads: {threads}")
    if args.top_pad is not None:
        print(f"glibc malloc top pad: {args.top_pad} MB")
    print("times in us, medians; 'alone': microgrid timed before torch ran in the process")
    print(f"{'':>5}  {'------------- wall time -------------':>37}  "
          f"{'-------------- cpu time -------------':>37}")
    print(f"{'batch':>5}  {'alone':>8} {'microgrid':>9} {'torch':>9} {'ratio':>6}   "
          f"{'alone':>8} {'microgrid':>9} {'torch':>9} {'ratio':>6}")
    for n, alone, ours, theirs in rows:
        cells = []
        for k in (0, 1):
            if theirs is None:
                cells.append(f"{alone[k]:>8.1f} {ours[k]:>9.1f} {'-':>9} {'-':>6}")
            else:
                cells.append(f"{alone[k]:>8.1f} {ours[k]:>9.1f} {theirs[k]:>9.1f} "
                             f"{ours[k] / theirs[k]:>6.2f}")
        print(f"{n:>5}  {cells[0]}   {cells[1]}")


if __name__ == "__main__":
    main()

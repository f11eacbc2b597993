"""Threads: independent graphs (scalar, tensor, conv) built and
differentiated in several threads at once give the same results as one
thread.  Independent graphs are safe under the GIL; one graph used from two
threads at once is not (nodes are not locked), so no test does that."""
import sys
import threading

import numpy as np

import microgrid as mg
import microgrid.functional as F

THREADS = 4
ROUNDS = 200


def _tensor_job(seed):
    rng = np.random.default_rng(seed)
    x = mg.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w = mg.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    v = x[1, 2]
    y = ((x @ w).tanh() * v).sum() + F.cross_entropy(x @ w, np.array([0, 1, 2, 3])) + mg.stack([v, v * v]).sum()
    y.backward()
    return y.item(), x.grad.copy(), w.grad.copy()


def _conv_job(seed):
    rng = np.random.default_rng(seed)
    x = mg.tensor(rng.standard_normal((2, 2, 6, 6)), requires_grad=True)
    w = mg.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    y = F.max_pool2d(F.conv2d(x, w, padding=1).relu(), 2).sum()
    y.backward()
    return y.item(), x.grad.copy(), w.grad.copy()


def _scalar_job(seed):
    rng = np.random.default_rng(seed)
    a = [mg.Value(float(t)) for t in rng.standard_normal(8)]
    y = mg.dot(a[:4], a[4:]).tanh() + mg.sum([v * v for v in a]) + (a[0] * a[1]).exp()
    y.backward()
    return y.data, np.array([v.grad for v in a]), np.zeros(1)


def _run_threads(job):
    expected = {s: job(s) for s in range(THREADS * 3)}
    errors, mismatches = [], []
    start = threading.Barrier(THREADS)

    def worker(k):
        try:
            start.wait()
            for r in range(ROUNDS):
                s = (k + r * THREADS) % len(expected)
                got = job(s)
                want = expected[s]
                if got[0] != want[0] or not all(np.array_equal(g, w) for g, w in zip(got[1:], want[1:])):
                    mismatches.append((k, s))
        except BaseException as e:   # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)        # switch threads as often as possible: mid-build, mid-backward
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    assert not mismatches, mismatches[:5]


def test_tensor_graphs_in_parallel_threads():
    _run_threads(_tensor_job)


def test_conv_graphs_in_parallel_threads():
    _run_threads(_conv_job)


def test_scalar_graphs_in_parallel_threads():
    _run_threads(_scalar_job)


def test_anomaly_mode_is_process_wide():
    """detect_anomaly is one global switch (documented): a thread sees it."""
    seen = []
    with mg.detect_anomaly():
        t = threading.Thread(target=lambda: seen.append(mg.is_anomaly_enabled()))
        t.start()
        t.join()
    assert seen == [True]

"""Memory: repeated build/backward/free cycles do not leak, ops leave their
arguments' reference counts as they found them (on success and on error),
and freeing or differentiating very deep graphs never recurses on the C
stack, even in a thread with a small stack."""
import gc
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F

CYCLES = 100_000
LIMIT = 64 * 1024


def _growth(step, cycles):
    """Bytes still allocated (tracemalloc) after ``cycles`` calls of step,
    measured after a warm-up that fills caches and free lists."""
    for _ in range(2000):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(cycles):
            step()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


def test_scalar_cycles_do_not_leak():
    a = mg.Value(0.3)
    b = mg.Value(-1.2)

    def step():
        c = (a * b + a.exp()).tanh() * 2.0 - b ** 2
        d = mg.dot([a, b], [c, c], bias=a).relu() + mg.sum([a, b, c])
        d.backward()
        a.grad = 0.0
        b.grad = 0.0

    growth = _growth(step, CYCLES)
    print(f"scalar graphs: {CYCLES} cycles, tracemalloc growth {growth} bytes")
    assert growth < LIMIT


def test_tensor_cycles_do_not_leak():
    x = mg.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)

    def step():
        y = (x * x).sum()
        y.backward()
        x.grad = None

    growth = _growth(step, CYCLES)
    print(f"tensor graphs: {CYCLES} cycles, tracemalloc growth {growth} bytes")
    assert growth < LIMIT


def test_tensor_graphs_with_bridges_do_not_leak():
    """Matmul, tanh, an element bridge (Value) and a stack of Values; fewer
    cycles, as tracemalloc makes each numpy allocation slow."""
    x = mg.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    w = mg.tensor(np.linspace(0.5, -0.5, 12).reshape(3, 4), requires_grad=True)

    def step():
        v = x[0, 1]
        y = ((x @ w).tanh() * v).sum() + mg.stack([v, v * 2.0]).sum()
        y.backward()
        x.grad = None
        w.grad = None

    growth = _growth(step, CYCLES // 10)
    print(f"tensor graphs with bridges: {CYCLES // 10} cycles, tracemalloc growth {growth} bytes")
    assert growth < LIMIT


def test_error_cycles_do_not_leak():
    t = mg.tensor(np.ones((1, 1, 3, 3)), requires_grad=True)

    def step():
        for bad in (lambda: F.conv2d(t, t, stride=0), lambda: t.sum(dim=7), lambda: t + "x",
                    lambda: F.max_pool2d(t, 5)):
            try:
                bad()
            except (TypeError, ValueError):
                pass

    growth = _growth(step, CYCLES // 10)
    assert growth < LIMIT


# ---------------------------------------------------------------------------
# Reference counts

def _counts(objs):
    # graph nodes and arrays only: small ints are shared by the whole interpreter
    return [sys.getrefcount(o) for o in objs if isinstance(o, (mg.Tensor, mg.Value, np.ndarray))]


def _img(*shape):
    return mg.tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)


REFCOUNT_CASES = [
    ("add", lambda x, y: x + y, lambda: (_img(2, 3), _img(2, 3))),
    ("matmul", lambda x, y: x @ y, lambda: (_img(2, 3), _img(3, 4))),
    ("add array", lambda x, y: x + y, lambda: (_img(2, 3), np.ones(3))),
    ("getitem", lambda x, k: x[k], lambda: (_img(2, 3), (1, 2))),
    ("stack", lambda x, y: mg.stack([x, y]), lambda: (_img(3), _img(3))),
    ("conv2d", lambda x, w: F.conv2d(x, w, stride=1, padding=1), lambda: (_img(1, 2, 5, 5), _img(3, 2, 3, 3))),
    ("conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=2), lambda: (_img(1, 2, 3, 3), _img(2, 1, 2, 2))),
    ("max_pool2d", lambda x, k: F.max_pool2d(x, k), lambda: (_img(1, 1, 4, 4), 2)),
    ("cross_entropy", lambda x, t: F.cross_entropy(x, t), lambda: (_img(4, 3), np.array([0, 1, 2, 1]))),
    ("mse_loss", lambda x, t: F.mse_loss(x, t), lambda: (_img(4, 3), np.zeros((4, 3)))),
    ("value ops", lambda a, b: (a * b).tanh() + a, lambda: (mg.Value(0.5), mg.Value(2.0))),
    ("dot", lambda a, b: mg.dot([a, b], [b, a]), lambda: (mg.Value(0.5), mg.Value(2.0))),
]

ERROR_CASES = [
    ("conv2d stride 0", lambda x, w: F.conv2d(x, w, stride=0), lambda: (_img(1, 2, 5, 5), _img(3, 2, 3, 3))),
    ("conv2d kernel too large", lambda x, w: F.conv2d(x, w), lambda: (_img(1, 2, 2, 2), _img(3, 2, 3, 3))),
    ("matmul mismatch", lambda x, y: x @ y, lambda: (_img(2, 3), _img(2, 3))),
    ("broadcast mismatch", lambda x, y: x + y, lambda: (_img(2, 3), _img(4))),
    ("loss shapes", lambda x, t: F.binary_cross_entropy(x, t), lambda: (_img(4, 3), np.zeros((4, 2)))),
    ("max_pool kernel", lambda x, k: F.max_pool2d(x, k), lambda: (_img(1, 1, 2, 2), 3)),
    ("value dot", lambda a, b: mg.dot([a], [a, b]), lambda: (mg.Value(0.5), mg.Value(2.0))),
    ("tensor from values", lambda a, b: mg.tensor([a, b]), lambda: (mg.Value(0.5), mg.Value(2.0))),
]


@pytest.mark.parametrize("name,op,make", REFCOUNT_CASES, ids=[c[0] for c in REFCOUNT_CASES])
def test_refcounts_unchanged_after_success(name, op, make):
    args = make()
    data = [a.data for a in args if isinstance(a, mg.Tensor)]
    before = _counts(args) + _counts(data)
    out = op(*args)
    out = out if isinstance(out, (mg.Tensor, mg.Value)) else out[0]
    if out.requires_grad:
        out.backward(np.ones(out.shape)) if isinstance(out, mg.Tensor) else out.backward()
    del out
    gc.collect()
    assert _counts(args) + _counts(data) == before


@pytest.mark.parametrize("name,op,make", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_refcounts_unchanged_after_error(name, op, make):
    args = make()
    data = [a.data for a in args if isinstance(a, mg.Tensor)]
    before = _counts(args) + _counts(data)
    for _ in range(3):
        with pytest.raises((TypeError, ValueError)):
            op(*args)
    gc.collect()
    assert _counts(args) + _counts(data) == before


# ---------------------------------------------------------------------------
# Deep graphs

SCALAR_DEPTH = 1_000_000
TENSOR_DEPTH = 100_000


def _in_small_stack_thread(fn):
    """Run fn in a thread with a 256 KiB C stack; re-raise what it raised."""
    result = {}

    def body():
        try:
            result["value"] = fn()
        except BaseException as e:   # noqa: BLE001 - handed to the main thread
            result["error"] = e
    old = threading.stack_size(256 * 1024)
    try:
        t = threading.Thread(target=body)
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _scalar_chain(depth):
    x = mg.Value(0.5)
    y = x
    for i in range(depth):
        y = y * 1.0 + 0.0 if i % 2 else (y + x) * 0.5
    return x, y


def test_deep_scalar_graph_backward_and_free_in_small_stack_thread():
    def work():
        x, y = _scalar_chain(SCALAR_DEPTH)
        y.backward()
        g = x.grad
        del y                       # frees 10^6 nodes: must not recurse in C
        return g
    g = _in_small_stack_thread(work)
    assert g == pytest.approx(1.0)  # (y + x)/2 repeated: d/dx stays 1 at the fixed point


def test_deep_scalar_graph_free_main_thread():
    x, y = _scalar_chain(SCALAR_DEPTH)
    del y
    gc.collect()
    assert sys.getrefcount(x) == 2


def test_deep_tensor_graph_backward_and_free_in_small_stack_thread():
    def work():
        x = mg.tensor(np.array([0.5, -0.25]), requires_grad=True)
        y = x
        for i in range(TENSOR_DEPTH):
            y = (y + x) * 0.5 if i % 2 else y * 1.0
        y.sum().backward()
        g = x.grad.copy()
        del y
        return g
    g = _in_small_stack_thread(work)
    np.testing.assert_allclose(g, [1.0, 1.0])


def test_deep_mixed_graph_free_in_small_stack_thread():
    """A chain through Value <-> Tensor bridges (element picks and stacks)."""
    def work():
        x = mg.tensor(np.array([0.5, -0.25]), requires_grad=True)
        y = x
        for _ in range(TENSOR_DEPTH // 4):
            v = y[0] * 0.5 + y[1] * 0.5
            y = mg.stack([v, v])
        y.sum().backward()
        g = x.grad.copy()
        del y, v
        return g
    g = _in_small_stack_thread(work)
    np.testing.assert_allclose(g, [1.0, 1.0])

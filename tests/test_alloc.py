"""The caching allocator of tensor storage (csrc/mg_alloc.c through
microgrid.tensors._alloc): freed buffers are reused, the bound on what it caches
holds, empty_cache() releases, it is scoped to microgrid's ops (the user's
arrays keep numpy's allocator), independent graphs in several threads
agree with one thread, and results are bit-identical with the pool off."""
import threading

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F
import microgrid.nn as nn
from microgrid.tensors import _alloc

BIG = 8192          # doubles: 64 KiB, well above the pool's smallest class


@pytest.fixture(autouse=True)
def _fresh_pool():
    """Each test starts with the default bound and an empty cache, and
    leaves them so."""
    old = mg.set_cache_limit(_alloc.DEFAULT_CACHE_LIMIT)
    mg.empty_cache()
    yield
    mg.set_cache_limit(old)
    mg.empty_cache()


def _address(arr):
    return arr.__array_interface__["data"][0]


def test_tensor_buffers_come_from_the_pool_and_user_arrays_do_not():
    t = mg.tensor(np.linspace(0.0, 1.0, BIG), requires_grad=True)
    y = t.exp()
    (y * 2.0).sum().backward()
    assert _alloc.handler_name(y.data) == _alloc.HANDLER_NAME
    assert _alloc.handler_name(t.grad) == _alloc.HANDLER_NAME
    # the handler is installed only while an op runs: nothing leaks out
    assert _alloc.handler_name() != _alloc.HANDLER_NAME
    assert _alloc.handler_name(np.ones(BIG)) != _alloc.HANDLER_NAME
    # the leaf copies the user's data outside any op
    assert _alloc.handler_name(t.data) != _alloc.HANDLER_NAME


def test_handler_is_restored_when_an_op_raises():
    a = mg.tensor(np.ones(BIG))
    y = a.exp()
    a.data.dtype = np.int64           # a buffer changed in place: the op's kernel raises
    with pytest.raises(TypeError, match="no longer a C-contiguous float64"):
        y._recompute()
    assert _alloc.handler_name() != _alloc.HANDLER_NAME
    x = mg.tensor(np.ones((2, 1, 5, 5)), requires_grad=True)
    out = F.conv2d(x, mg.tensor(np.ones((1, 1, 3, 3)))).sum()
    x.data.dtype = np.int64           # the conv kernel checks its arrays in backward
    with pytest.raises((TypeError, ValueError)):
        out.backward()
    assert _alloc.handler_name() != _alloc.HANDLER_NAME


def test_freed_buffer_serves_the_next_request_of_its_size():
    t = mg.tensor(np.linspace(-1.0, 1.0, BIG))
    y = t.exp()
    first = _address(y.data)
    hits = mg.cache_info()["hits"]
    del y
    assert mg.cache_info()["cached"] >= BIG * 8
    y = t * 3.0
    assert _address(y.data) == first
    assert mg.cache_info()["hits"] == hits + 1
    np.testing.assert_array_equal(y.data, np.linspace(-1.0, 1.0, BIG) * 3.0)


def test_reused_block_is_zeroed_where_numpy_asked_for_zeros():
    # index backward starts from np.zeros (calloc): a reused, dirty block must read as 0
    t = mg.tensor(np.full(BIG, 3.0), requires_grad=True)
    junk = t.exp()
    del junk                         # a block full of e^3 back in the pool
    t[::2].sum().backward()
    expected = np.zeros(BIG)
    expected[::2] = 1.0
    np.testing.assert_array_equal(t.grad, expected)


def test_realloc_and_odd_sizes_inside_the_pool():
    with _alloc.pooled():
        grown = np.fromiter((float(i) for i in range(50_000)), dtype=np.float64)  # grows by realloc
        empty = np.empty(0)
        odd = np.empty(BIG * 8 + 3, dtype=np.uint8)
    assert _alloc.handler_name(grown) == _alloc.HANDLER_NAME
    np.testing.assert_array_equal(grown, np.arange(50_000, dtype=np.float64))
    assert empty.size == 0 and odd.size == BIG * 8 + 3
    grown.resize(10, refcheck=False)         # shrinks through realloc, outside the scope too
    np.testing.assert_array_equal(grown, np.arange(10.0))


def test_the_bound_on_cached_bytes_holds():
    limit = 5 * BIG * 8
    mg.set_cache_limit(limit)
    t = mg.tensor(np.ones(BIG))
    outs = [t * float(k) for k in range(20)]   # 20 live blocks of one class
    released = mg.cache_info()["released"]
    del outs
    info = mg.cache_info()
    assert 0 < info["cached"] <= limit
    assert info["released"] >= released + 15
    # lowering the bound trims what is already cached
    mg.set_cache_limit(BIG * 8)
    assert mg.cache_info()["cached"] <= BIG * 8


def test_empty_cache_releases_everything_cached_and_nothing_live():
    t = mg.tensor(np.linspace(0.0, 2.0, BIG), requires_grad=True)
    keep = t * 0.5
    tmp = [t.exp(), t * 3.0, t.tanh()]
    del tmp
    cached = mg.cache_info()["cached"]
    assert cached >= 3 * BIG * 8
    assert mg.empty_cache() == cached
    assert mg.cache_info()["cached"] == 0
    np.testing.assert_array_equal(keep.data, np.linspace(0.0, 2.0, BIG) * 0.5)
    assert mg.empty_cache() == 0


def test_limit_zero_turns_the_pool_off():
    mg.set_cache_limit(0)
    t = mg.tensor(np.ones(BIG))
    y = t.exp()
    assert _alloc.handler_name(y.data) != _alloc.HANDLER_NAME
    assert mg.cache_info()["enabled"] is False


def test_set_cache_limit_checks_its_argument():
    with pytest.raises(ValueError, match="at least 0"):
        mg.set_cache_limit(-1)
    with pytest.raises(TypeError, match="int number of bytes"):
        mg.set_cache_limit(1.5)
    with pytest.raises(TypeError):
        mg.set_cache_limit(True)


def _train_cnn(steps):
    """A few steps of the demo's digits CNN shape on fixed data; returns every
    number the run produced."""
    mg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    opt = mg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.uniform(0.0, 16.0, (64, 1, 8, 8)))
    target = rng.integers(0, 10, 64)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.data.copy() for p in model.parameters()]


def test_results_are_bit_identical_with_and_without_the_pool():
    import microgrid.optim  # noqa: F401  (mg.optim)
    with_pool = _train_cnn(6)
    assert mg.cache_info()["hits"] > 0
    mg.set_cache_limit(0)
    without = _train_cnn(6)
    assert with_pool[0] == without[0]
    for a, b in zip(with_pool[1], without[1]):
        np.testing.assert_array_equal(a, b)


def _conv_job(seed):
    # buffers of 100+ KiB: every one of them goes through the pool
    rng = np.random.default_rng(seed)
    x = mg.tensor(rng.standard_normal((8, 2, 16, 16)), requires_grad=True)
    w = mg.tensor(rng.standard_normal((6, 2, 3, 3)), requires_grad=True)
    y = (F.max_pool2d(F.conv2d(x, w, padding=1).relu(), 2) * (seed + 1.0)).tanh().sum()
    y.backward()
    return y.item(), x.grad.copy(), w.grad.copy()


def test_independent_graphs_in_threads_agree_with_one_thread():
    threads, rounds = 4, 40
    expected = {s: _conv_job(s) for s in range(8)}
    errors, mismatches = [], []
    start = threading.Barrier(threads)

    def worker(k):
        try:
            start.wait()
            for r in range(rounds):
                s = (k + r) % len(expected)
                got, want = _conv_job(s), expected[s]
                if got[0] != want[0] or not all(np.array_equal(g, w) for g, w in zip(got[1:], want[1:])):
                    mismatches.append((k, s))
                if r % 10 == 0:
                    mg.empty_cache()      # racing with the other threads' frees
        except BaseException as e:   # noqa: BLE001 - reported by the main thread
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    assert not mismatches
    info = mg.cache_info()
    assert info["hits"] > 0
    assert info["in_use"] >= 0 and info["requested"] <= info["in_use"] + info["cached"] + 1


def test_a_steady_conv_step_takes_every_buffer_from_the_pool():
    """After warm-up, a conv -> relu -> pool -> loss step (outputs, gradients,
    im2col workspaces) is served from the pool: no request goes to the system."""
    rng = np.random.default_rng(1)
    x = mg.tensor(rng.uniform(0.0, 1.0, (16, 1, 28, 28)))
    w = mg.tensor(rng.normal(0.0, 0.3, (8, 1, 3, 3)), requires_grad=True)
    b = mg.tensor(rng.normal(0.0, 0.1, 8), requires_grad=True)
    out = None
    for step in range(8):
        if step == 4:
            before = mg.cache_info()
        w.grad = None
        out = F.max_pool2d(F.conv2d(x, w, b).relu(), 2).sum()   # the last step's graph stays alive
        out.backward()
    after = mg.cache_info()
    assert after["misses"] == before["misses"]
    assert after["hits"] >= before["hits"] + 4 * 5


def test_ops_on_small_operands_skip_the_pool_but_products_do_not():
    # the handler switch costs more than the pool saves on small buffers
    small = mg.tensor(np.ones((10, 10)))
    assert _alloc.handler_name(small.exp().data) != _alloc.HANDLER_NAME
    # a product of small operands may make a large output: always pooled
    col, row = mg.tensor(np.ones((2048, 1))), mg.tensor(np.ones((1, 2048)))
    assert _alloc.handler_name((col @ row).data) == _alloc.HANDLER_NAME

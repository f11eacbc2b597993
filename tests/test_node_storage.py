"""Value nodes: 64 bytes each in 64-byte-aligned slots of the engine's slabs
(csrc/mg_slab.h), in creation order; freed slabs kept for reuse within a
bound and returned by ``mg.empty_cache()``; a few long-lived nodes cannot pin
the memory of many freed ones."""
import gc
import sys
import tracemalloc

import microgrid as mg
from microgrid import Value
from microgrid.bench import harness, replay, scalar
from microgrid.core import _engine


def _chain(n):
    x, y, acc = Value(0.5), Value(0.25), Value(1.0)
    for _ in range(n):
        acc = acc * x + y
    return acc


def test_a_node_is_one_aligned_cache_line_in_creation_order():
    a, b = Value(1.0), Value(2.0)
    nodes = [a * b for _ in range(300)]
    assert sys.getsizeof(nodes[0]) == 64
    assert all(id(v) % 64 == 0 for v in nodes)
    steps = [id(nodes[k + 1]) - id(nodes[k]) for k in range(len(nodes) - 1)]
    # each node sits after the one made before it (in a fresh slab the next
    # slot, in a slab with holes the next hole), except where a slab ends or
    # a node freed meanwhile left a hole that is reused first
    assert sum(step > 0 for step in steps) >= 0.9 * len(steps)


def test_tracemalloc_sees_64_bytes_per_node():
    acc = _chain(10)
    del acc
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        acc = _chain(5000)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 64 * 10_000 <= used < 64 * 10_000 + 4096
    del acc


def test_freed_slabs_are_kept_then_released_by_empty_cache():
    mg.empty_cache()
    acc = _chain(100_000)                  # 200,000 nodes: about 780 slabs
    held, _, slab = _engine._node_memory()
    del acc
    kept = _engine._node_memory()[1]
    # (a few of the nodes may have filled holes of slabs that stay in use)
    assert kept >= 700                      # kept for the next graph
    again = _chain(100_000)                 # reuses them: no new slabs
    assert _engine._node_memory()[0] <= held + 1
    del again
    released = mg.empty_cache()
    assert released >= 700 * slab
    assert _engine._node_memory()[1] == 0


def test_long_lived_nodes_do_not_pin_freed_memory():
    mg.empty_cache()
    base = _engine._node_memory()[0]
    x = Value(2.0)
    survivors = []
    for _ in range(50):
        nodes = [x * 3.0 for _ in range(2500)]   # about ten slabs each round
        survivors.extend(nodes[::255])           # one node per slab survives
        del nodes
    assert len(survivors) >= 450
    # the survivors' slabs are at least half free, so their holes are reused:
    # far fewer slabs than one per survivor
    assert _engine._node_memory()[0] - base < 60
    assert all(v.data == 6.0 for v in survivors)


def test_subclasses_keep_pythons_allocator():
    class Mine(Value):
        pass

    m = Mine(3.0)
    h = Value(1.0, (m,), 'f')                   # a hand-built node
    assert (m * 2).data == 6.0 and isinstance(h, Value)
    del m, h
    gc.collect()


def test_bench_memory_column_and_new_workloads():
    w = replay.BinaryOpBuild()
    rec = harness.run_workload(w, ["microgrid"], quick=True, log=None)[0]
    assert 64 <= rec["bytes_per_unit"] < 65       # the nodes, and a few bytes of the loop
    for w in (scalar.ProductTreeBackward(shuffled=False), scalar.ProductTreeBackward(shuffled=True),
              scalar.ChainBackward()):
        rec = harness.run_workload(w, ["microgrid"], quick=True, log=None)[0]
        assert rec["ns_per_unit"] > 0 and rec["check"]["passed"]


def test_pickling_keeps_the_fields_kept_outside_the_node():
    import copy
    import pickle

    x = Value(2.0, label="x")
    w = x * 3
    w.label = "w"
    s = mg.sum([x, w], start=1.5)
    s2 = pickle.loads(pickle.dumps(s))
    assert (s2.data, s2._op) == (9.5, "sum")
    x2, w2, c2 = s2._parents()
    assert (x2.label, w2.label, c2.data) == ("x", "w", 1.5)
    assert w2._parents()[0] is x2                # shared parents stay shared
    s2.backward()
    assert (x2.grad, w2.grad) == (4.0, 1.0)
    h = copy.deepcopy(Value(1.0, (x,), "f"))      # a hand-built node keeps its _op text
    assert h._op == "f" and h._parents()[0].label == "x"


def test_freeing_nodes_releases_parents_side_tables_and_keeps_a_pending_exception():
    # Value's own deallocator: parents released (shared ones kept), labels
    # and hand-built _op texts dropped from the side tables, an exception
    # being raised left as it is, subclass instances freed by their allocator
    import weakref

    class Mine(Value):
        pass

    shared = Mine(2.0)
    probe = weakref.ref(shared)
    keep = shared * 3.0
    # the side tables hold the texts: each entry is one reference to its text
    label, op_text, temporary = (''.join([w, ' of a freed node']) for w in ('label', 'op', 'temp'))
    counts = [sys.getrefcount(t) for t in (label, op_text, temporary)]
    try:
        node = Value(1.0, (shared,), op_text)
        node.label = label
        (node + shared).label = temporary       # freed at once
        assert [sys.getrefcount(t) for t in (label, op_text, temporary)] == [
            counts[0] + 1, counts[1] + 1, counts[2]]
        raise KeyError('kept')
    except KeyError as e:
        del node                                  # freed while the exception is handled
        gc.collect()
        assert e.args == ('kept',) and sys.exc_info()[1] is e
    assert [sys.getrefcount(t) for t in (label, op_text, temporary)] == counts
    assert probe() is shared and keep.data == 6.0
    del shared
    assert probe() is not None                   # keep still holds it as a parent
    del keep
    gc.collect()
    assert probe() is None
    root = _chain(50_000)
    before = _engine._node_memory()[0]
    del root                                      # a long chain: freed by the loop, no recursion
    assert _engine._node_memory()[0] <= before

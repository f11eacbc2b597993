"""Scalar-graph workloads: cost per node of building and of backward, deep
chains, and a sum of products (Python's ``sum`` against fused nodes).

Every graph is built by one function that runs unchanged on microgrid,
micrograd and PyTorch 0-d tensors (they share ``*``, ``+`` and ``.relu()``);
only leaves are made and read through the engine adapter.
"""
import functools
import sys

import numpy as np

from .engines import ScalarEngine, Skip
from .harness import Case, Workload

# --------------------------------------------------------------------------
# A random scalar DAG of about n nodes.
#
# 1000 leaves in [-1, 1]; then units u = a * b + c (every third one passed
# through relu), a and b two random leaves, c a random earlier unit or leaf;
# finally the units nobody consumed are added up in a balanced tree, so the
# graph has one root.  Values stay bounded (|a * b| <= 1 and the longest
# path grows like log n), and the graph is shallow enough for micrograd's
# recursive sort.

N_LEAVES = 1000


@functools.lru_cache(maxsize=4)
def random_dag_plan(n_nodes, seed=0):
    """(leaf values, units (i, j, c, relu), unconsumed pool indices, node count)."""
    rng = np.random.default_rng(seed)
    leaves = rng.uniform(-1.0, 1.0, N_LEAVES).tolist()
    n_units = max(1, int(n_nodes / (2 + 1 / 3 + 1)))    # + ~1 reduction node per unit
    units, consumed = [], np.zeros(N_LEAVES + n_units, dtype=bool)
    ij = rng.integers(0, N_LEAVES, size=(n_units, 2))
    draws = rng.random(n_units)
    nodes = 0
    for k in range(n_units):
        pool = N_LEAVES + k                      # leaves and earlier units
        c = int(draws[k] * pool)
        consumed[c] = True
        relu = k % 3 == 2
        units.append((int(ij[k, 0]), int(ij[k, 1]), c, relu))
        nodes += 3 if relu else 2
    tail = [N_LEAVES + k for k in range(n_units) if not consumed[N_LEAVES + k]]
    nodes += len(tail) - 1
    return leaves, units, tail, nodes


def tree_sum(level):
    """``level``'s nodes added up pairwise in a balanced tree (len - 1 nodes)."""
    while len(level) > 1:
        pairs = [level[k] + level[k + 1] for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    return level[0]


def build_random_dag(leaves, units, tail):
    """The graph of ``random_dag_plan`` on whatever engine made ``leaves``."""
    pool = list(leaves)
    for i, j, c, relu in units:
        u = leaves[i] * leaves[j] + pool[c]
        if relu:
            u = u.relu()
        pool.append(u)
    return tree_sum([pool[k] for k in tail])


class _RandomDag(Workload):
    unit = "node"
    rtol, atol = 1e-9, 1e-9
    rtol32, atol32 = 1e-3, 1e-3
    full_size, quick_size = 100_000, 20_000

    def size(self, quick):
        return self.quick_size if quick else self.full_size

    def count(self, quick):
        return random_dag_plan(self.size(quick))[3]

    def _graph(self, eng, quick):
        values, units, tail, _ = random_dag_plan(self.size(quick))
        leaves = [eng.leaf(x) for x in values]
        return leaves, units, tail

    @staticmethod
    def _numbers(eng, root, leaves):
        return {"root": eng.value(root), "leaf grads": [eng.grad(x) for x in leaves]}


class ScalarBuild(_RandomDag):
    name = "scalar_build"
    description = "build a random 10^5-node scalar graph (*, +, relu); ns per node"

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        leaves, units, tail = self._graph(eng, quick)

        def numbers():
            root = build_random_dag(leaves, units, tail)
            eng.backward(root)
            return self._numbers(eng, root, leaves)

        return Case(lambda: build_random_dag(leaves, units, tail), numbers)


class ScalarBackward(_RandomDag):
    name = "scalar_backward"
    description = "backward() through a prebuilt random 10^5-node scalar graph; ns per node"

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        leaves, units, tail = self._graph(eng, quick)
        root = build_random_dag(leaves, units, tail)

        def numbers():
            eng.backward(root, again=True)
            return self._numbers(eng, root, leaves)

        # Leaf gradients keep accumulating across repeats; only time matters.
        return Case(lambda: eng.backward(root, again=True), numbers)


# --------------------------------------------------------------------------
# A tree of products: n products a[i] * b[i] of 2n random leaves, added up in
# a balanced tree (2n - 1 nodes; micrograd's recursion stays ~18 deep).  The
# leaves are made one after another; ``shuffled`` pairs them at random, so
# consecutive products read operands far apart in memory, as when leaves come
# from different places.  Backward only, on the prebuilt graph: ns per node
# (products and sums; the leaves are not counted).

class ProductTreeBackward(Workload):
    engines = ("microgrid", "micrograd")     # torch's 0-d tensors take seconds here
    unit = "node"
    rtol, atol = 1e-9, 1e-9
    rtol32, atol32 = 1e-3, 1e-3
    full_size, quick_size = 100_000, 20_000

    def __init__(self, shuffled):
        self.shuffled = shuffled
        self.name = "tree_backward" + ("_shuffled" if shuffled else "")
        self.description = ("backward() through 10^5 products of random leaves summed in a "
                            "tree" + (", operands paired at random (scattered in memory)"
                                      if shuffled else "") + "; ns per node")

    def size(self, quick):
        return self.quick_size if quick else self.full_size

    def count(self, quick):
        return 2 * self.size(quick) - 1

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        n = self.size(quick)
        rng = np.random.default_rng(3)
        leaves = [eng.leaf(x) for x in rng.uniform(-1, 1, 2 * n).tolist()]
        order = rng.permutation(2 * n) if self.shuffled else np.arange(2 * n)
        a, b = [leaves[k] for k in order[:n]], [leaves[k] for k in order[n:]]
        root = tree_sum([x * y for x, y in zip(a, b)])

        def numbers():
            eng.backward(root, again=True)
            return {"root": eng.value(root), "leaf grads": [eng.grad(x) for x in leaves[:1000]]}

        # Leaf gradients keep accumulating across repeats; only time matters.
        return Case(lambda: eng.backward(root, again=True), numbers)


# --------------------------------------------------------------------------
# Deep chains: v <- v * a + b, n nodes deep.  a = 1 - 2^-17, b = 2^-17 keep
# values near 1 and d(root)/dx = a^(n/2) far from underflow at 10^6 (0.02);
# both are exact in float32, so torch32 differs only by its rounding.

CHAIN_A, CHAIN_B, CHAIN_X = 1.0 - 2.0 ** -17, 2.0 ** -17, 0.5


def build_chain(x, a, b, steps):
    v = x
    for _ in range(steps):
        v = v * a + b
    return v


class DeepChain(Workload):
    unit = "node"
    rtol, atol = 1e-9, 1e-12
    rtol32, atol32 = 1e-3, 1e-6      # float32 rounding accumulates along the chain

    def __init__(self, nodes):
        self.nodes = nodes
        self.name = f"deep_chain_1e{len(str(nodes)) - 1}"
        self.description = (f"build a {nodes:,}-node chain v = v * a + b and backward(); "
                            "ns per node")
        if nodes > 10 ** 5:
            self.quick_skip = "not run under --quick (deep chain capped at 10^5 nodes)"
            self.repeats = 3
        elif nodes >= 10 ** 5:
            self.repeats = 5

    def size(self, quick):
        return self.nodes

    def count(self, quick):
        return self.nodes

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        steps = self.nodes // 2
        if engine == "micrograd" and self.nodes > 10 * sys.getrecursionlimit():
            # It already fails at 10^3 (measured by the smaller chains); not
            # worth building a graph this size to fail again.
            raise Skip(f"RecursionError at Python's recursion limit ({sys.getrecursionlimit()}): "
                       f"micrograd walks the graph recursively (fails from 10^3 nodes deep; "
                       f"not attempted at {self.nodes:,})")
        x, a, b = eng.leaf(CHAIN_X), eng.leaf(CHAIN_A), eng.leaf(CHAIN_B)

        def run():
            v = build_chain(x, a, b, steps)
            eng.backward(v)
            return v

        def numbers():
            v = run()
            return {"root": eng.value(v), "dx": eng.grad(x), "da": eng.grad(a),
                    "db": eng.grad(b)}

        return Case(run, numbers)


class ChainBackward(Workload):
    name = "chain_backward"
    description = "backward() through a prebuilt 10^5-node chain v = v * a + b; ns per node"
    unit = "node"
    rtol, atol = 1e-9, 1e-12
    rtol32, atol32 = 1e-3, 1e-6
    nodes = 10 ** 5

    def count(self, quick):
        return self.nodes

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        if engine == "micrograd":
            raise Skip(f"RecursionError at Python's recursion limit ({sys.getrecursionlimit()}): "
                       "micrograd walks the graph recursively")
        x, a, b = eng.leaf(CHAIN_X), eng.leaf(CHAIN_A), eng.leaf(CHAIN_B)
        root = build_chain(x, a, b, self.nodes // 2)

        def numbers():
            eng.backward(root, again=True)
            return {"root": eng.value(root), "dx": eng.grad(x)}

        return Case(lambda: eng.backward(root, again=True), numbers)


# --------------------------------------------------------------------------
# A sum of n products a[i] * b[i], then backward().


class _SumProducts(Workload):
    unit = "term"
    rtol, atol = 1e-9, 1e-9
    rtol32, atol32 = 1e-3, 1e-3
    full_size, quick_size = 100_000, 10_000

    def size(self, quick):
        return self.quick_size if quick else self.full_size

    def count(self, quick):
        return self.size(quick)

    def combine(self, eng, a, b):
        raise NotImplementedError

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        rng = np.random.default_rng(1)
        n = self.size(quick)
        a = [eng.leaf(x) for x in rng.uniform(-1, 1, n).tolist()]
        b = [eng.leaf(x) for x in rng.uniform(-1, 1, n).tolist()]
        self.combine(eng, a[:2], b[:2])          # raises Skip early if unsupported

        def run():
            s = self.combine(eng, a, b)
            eng.backward(s)
            return s

        def numbers():
            s = run()
            return {"sum": eng.value(s), "da": [eng.grad(v) for v in a],
                    "db": [eng.grad(v) for v in b]}

        return Case(run, numbers)


class SumProductsPython(_SumProducts):
    name = "sum_products_python"
    description = "Python's sum(a[i] * b[i]) over 10^5 terms, then backward()"

    def combine(self, eng, a, b):
        return sum(x * y for x, y in zip(a, b))


class SumProductsFusedSum(_SumProducts):
    name = "sum_products_fused_sum"
    description = ("one fused sum of 10^5 products: microgrid.sum([a[i] * b[i]]), "
                   "torch.stack(...).sum()")

    def combine(self, eng, a, b):
        return eng.fused_sum([x * y for x, y in zip(a, b)])


class SumProductsDot(_SumProducts):
    name = "sum_products_dot"
    description = ("one fused dot of 10^5 pairs: microgrid.dot(a, b), "
                   "torch.dot(torch.stack(a), torch.stack(b))")

    def combine(self, eng, a, b):
        return eng.fused_dot(a, b)


WORKLOADS = [
    ScalarBuild(),
    ScalarBackward(),
    ProductTreeBackward(shuffled=False),
    ProductTreeBackward(shuffled=True),
    ChainBackward(),
    DeepChain(10 ** 3),
    DeepChain(10 ** 4),
    DeepChain(10 ** 5),
    DeepChain(10 ** 6),
    SumProductsPython(),
    SumProductsFusedSum(),
    SumProductsDot(),
]

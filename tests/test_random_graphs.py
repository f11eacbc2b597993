"""Random graphs: hypothesis writes small programs (up to 50 ops over a
pool of nodes, so subexpressions are shared) mixing Values and Tensors:
elementwise, broadcasting, reductions, matmul, softmax, element bridges
t[i, j] and stacks of Values.  Each program's gradients must match central
finite differences, and PyTorch float64 where torch is installed.

One interpreter runs a program on either backend, so the microgrid graph and
the torch graph are the same computation.

The graphs are the same on every run (hypothesis derandomised), so a run is
reproducible; MICROGRID_RANDOM_GRAPHS=1 draws new ones, for a campaign.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microgrid as mg

N_OPS = 19
MAX_DEPTH = 50


class MG:
    """microgrid: Tensors and Values."""
    Tensor, Value = mg.Tensor, mg.Value

    @staticmethod
    def is_scalar(x):
        return isinstance(x, mg.Value)

    @staticmethod
    def shape(x):
        return () if isinstance(x, mg.Value) else x.shape

    @staticmethod
    def element(x, k):
        """A scalar Value picked from x (a bridge), or x if it is one."""
        if isinstance(x, mg.Value):
            return x
        if x.ndim == 0:
            return x.reshape(1)[0]
        flat = k % x.numel()
        return x[np.unravel_index(flat, x.shape)]

    @staticmethod
    def stack(vals):
        return mg.stack(vals)

    @staticmethod
    def softmax(x, dim, log):
        return x.log_softmax(dim) if log else x.softmax(dim)

    @staticmethod
    def reduce(x, dim, mean, keepdim=False):
        return x.mean(dim=dim, keepdim=keepdim) if mean else x.sum(dim=dim, keepdim=keepdim)

    @staticmethod
    def fn(x, name):
        return getattr(x, name)()

    @staticmethod
    def sqrt(x):
        return x.sqrt()


class TorchBackend:
    """torch float64: every node is a tensor, Values are 0-d tensors."""

    def __init__(self, torch):
        self.torch = torch

    def is_scalar(self, x):
        return getattr(x, "_is_value", False)

    def shape(self, x):
        return tuple(x.shape)

    def element(self, x, k):
        if self.is_scalar(x):
            return x
        if x.ndim == 0:
            out = x.reshape(1)[0]
        else:
            out = x[np.unravel_index(k % x.numel(), tuple(x.shape))]
        out = out * 1.0
        out._is_value = True
        return out

    def stack(self, vals):
        return self.torch.stack(vals)

    def softmax(self, x, dim, log):
        return self.torch.log_softmax(x, dim) if log else self.torch.softmax(x, dim)

    def reduce(self, x, dim, mean, keepdim=False):
        if dim is None:
            return x.mean() if mean else x.sum()
        return x.mean(dim=dim, keepdim=keepdim) if mean else x.sum(dim=dim, keepdim=keepdim)

    def fn(self, x, name):
        torch = self.torch
        f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "sin": torch.sin, "cos": torch.cos,
             "exp": torch.exp, "softplus": torch.nn.functional.softplus}[name]
        out = f(x)
        if self.is_scalar(x):
            out._is_value = True
        return out

    def sqrt(self, x):
        out = x.sqrt()
        if self.is_scalar(x):
            out._is_value = True
        return out


def _scalar_result(be, a, b, out):
    """torch: mark results of two scalars as scalars (the Value rules)."""
    if isinstance(be, TorchBackend) and be.is_scalar(a) and (b is None or be.is_scalar(b)):
        out._is_value = True
    return out


def run_program(be, leaves, program):
    """Interpret ``program`` over the pool that starts with ``leaves``;
    return the scalar root (the sum of every node's sum)."""
    W = leaves[2]                                    # the (3, 3) matrix leaf: matmul only
    pool = [x for n, x in enumerate(leaves) if n != 2]
    for op, i, j, k in program:
        a = pool[len(pool) - 1 - i % min(len(pool), 3)]    # recent nodes: deep chains
        b = pool[j % len(pool)]                             # any node: shared subexpressions
        sa = be.shape(a)
        if op < 5:                                   # smooth unary, bounded inputs for exp
            name = ("tanh", "sigmoid", "sin", "softplus", "exp")[op]
            out = be.fn(be.fn(a, "tanh"), "exp") if name == "exp" else be.fn(a, name)
        elif op == 5:
            out = _scalar_result(be, a, b, (a + b) * 0.5)
        elif op == 6:
            out = _scalar_result(be, a, b, a * be.fn(b, "tanh"))
        elif op == 7:
            out = _scalar_result(be, a, b, a / (1.0 + b * b))
        elif op == 8:
            out = _scalar_result(be, a, b, 0.5 * b - a if k % 2 else a - 0.5 * b)
        elif op == 9:                                # reductions keep shapes in the family
            if be.is_scalar(a) or sa == ():
                out = a
            elif sa == (2, 3):
                out = be.reduce(a, 0, k % 2 == 1)                 # -> (3,)
            else:
                out = be.reduce(a, None, k % 2 == 1)              # -> ()
        elif op == 10:
            out = be.reduce(a, 1, k % 2 == 1, keepdim=True) if sa == (2, 3) else a   # -> (2, 1)
        elif op == 11:
            out = (a @ W) * 0.3 if sa in ((2, 3), (3,)) and not be.is_scalar(a) else a
        elif op == 12:
            out = be.element(a, k)                   # t[i, j]: a Value bridged to its tensor
        elif op == 13:
            vals = [be.element(pool[(i + d * j) % len(pool)], k + d) for d in range(3)]
            out = be.stack(vals)                     # (3,) from three Values
        elif op == 14 or op == 15:
            if sa in ((2, 3), (3,)) and not be.is_scalar(a):
                out = be.softmax(a, len(sa) - 1, op == 15)
            else:
                out = a
        elif op == 16:                               # tensor * Value and Value * tensor
            v = be.element(b, k)
            out = a * v if k % 2 else v * a
            out = _scalar_result(be, a, v, out)
        elif op == 17:
            out = be.sqrt(_scalar_result(be, a, None, 1.0 + a * a))
        else:
            out = _scalar_result(be, a, None, a ** 2 * 0.5)
        pool.append(out)
    total = None
    for node in pool:
        term = node if be.is_scalar(node) else be.reduce(node, None, False)
        total = term if total is None else total + term
    return total


def make_leaves(rng):
    return [rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, 3), rng.uniform(-1, 1, (3, 3)) * 0.5,
            float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))]


def mg_leaves(raw):
    return [mg.tensor(raw[0], requires_grad=True), mg.tensor(raw[1], requires_grad=True),
            mg.tensor(raw[2], requires_grad=True), mg.Value(raw[3]), mg.Value(raw[4])]


instruction = st.tuples(st.integers(0, N_OPS - 1), st.integers(0, 200), st.integers(0, 200), st.integers(0, 20))
# the length drawn first, uniformly: plain st.lists() keeps most programs short
programs = st.integers(1, MAX_DEPTH).flatmap(lambda n: st.lists(instruction, min_size=n, max_size=n))

GRAPHS = 1000
FIXED = not os.environ.get("MICROGRID_RANDOM_GRAPHS")


def _value(out):
    return float(np.sum(out.data))


def _directional_check(program, raw, directions=2, eps=1e-6):
    """Central differences along random directions d of all leaves at once:
    (f(x + eps d) - f(x - eps d)) / 2 eps must equal grad . d.  Every
    gradient element takes part with a random weight, at 2 forward passes
    per direction instead of 2 per element."""
    leaves = mg_leaves(raw)
    out = run_program(MG, leaves, program)
    out.backward() if isinstance(out, mg.Value) else out.backward(np.ones(out.shape))
    grads = [np.asarray(leaf.grad, dtype=float) for leaf in leaves]
    rng = np.random.default_rng(len(program))
    for _ in range(directions):
        d = [rng.standard_normal(np.shape(x)) for x in raw]
        plus = [np.asarray(x) + eps * dx for x, dx in zip(raw, d)]
        minus = [np.asarray(x) - eps * dx for x, dx in zip(raw, d)]
        numeric = (_value(run_program(MG, mg_leaves(plus[:3] + [float(v) for v in plus[3:]]), program))
                   - _value(run_program(MG, mg_leaves(minus[:3] + [float(v) for v in minus[3:]]), program))) / (2 * eps)
        analytic = sum(float(np.sum(g * dx)) for g, dx in zip(grads, d))
        assert abs(analytic - numeric) <= 1e-5 + 1e-4 * abs(numeric), (analytic, numeric)


class Count:
    graphs = 0
    nodes = 0


@settings(max_examples=GRAPHS, deadline=None, database=None, derandomize=FIXED,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs, st.integers(0, 2**32 - 1))
def test_random_graphs_match_finite_differences(program, seed):
    raw = make_leaves(np.random.default_rng(seed))
    _directional_check(program, raw)
    if seed % 5 == 0:
        # and now and then element by element
        assert mg.gradcheck(lambda *xs: run_program(MG, xs, program), mg_leaves(raw),
                            eps=1e-6, atol=1e-6, rtol=1e-4)
    Count.graphs += 1
    Count.nodes += len(program)


def test_random_graph_count():
    """Runs after the property test: it really checked GRAPHS graphs."""
    assert Count.graphs >= GRAPHS
    print(f"random graphs: {Count.graphs} checked, {Count.nodes} ops in all")


@settings(max_examples=GRAPHS, deadline=None, database=None, derandomize=FIXED,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs, st.integers(0, 2**32 - 1))
def test_random_graphs_match_torch(program, seed):
    torch = pytest.importorskip("torch")
    raw = make_leaves(np.random.default_rng(seed))
    leaves = mg_leaves(raw)
    out = run_program(MG, leaves, program)
    out.backward() if isinstance(out, mg.Value) else out.backward(np.ones(out.shape))
    tl = [torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in raw]
    for t in tl[3:]:
        t._is_value = True
    tout = run_program(TorchBackend(torch), tl, program)
    tout.backward()
    np.testing.assert_allclose(np.asarray(out.data, dtype=float), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for leaf, t in zip(leaves, tl):
        want = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        np.testing.assert_allclose(np.asarray(leaf.grad, dtype=float), want, rtol=1e-9, atol=1e-12)


def test_interpreter_shares_subexpressions():
    """The programs do reuse nodes: a leaf used twice gets both contributions."""
    raw = make_leaves(np.random.default_rng(0))
    leaves = mg_leaves(raw)
    out = run_program(MG, leaves, [(5, 0, 0, 0), (6, 5, 5, 0)])
    out.backward()
    assert mg.gradcheck(lambda *xs: run_program(MG, xs, [(5, 0, 0, 0), (6, 5, 5, 0)]), mg_leaves(raw))

"""grad_fn and next_functions, as PyTorch names and links them."""
import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F
from microgrid.autograd.graph import AccumulateGrad, GradFn


def test_names_and_links():
    w = mg.tensor(np.ones((2, 3)), requires_grad=True)
    x = mg.tensor(np.ones(3))
    loss = F.mse_loss(F.relu(w @ x), mg.tensor([0.0, 1.0]))
    assert isinstance(loss.grad_fn, GradFn) and loss.grad_fn.name() == "MseLossBackward0"
    relu, target = loss.grad_fn.next_functions
    assert relu[0].name() == "ReluBackward0" and target == (None, 0)
    assert relu[0].next_functions[0][0].name() == "MatmulBackward0"
    leaf = relu[0].next_functions[0][0].next_functions[0][0]
    assert isinstance(leaf, AccumulateGrad) and leaf.variable is w
    assert w.grad_fn is None and x.grad_fn is None
    assert repr(loss.grad_fn).startswith("<MseLossBackward0 object at 0x")


def test_value_nodes_and_constant_forms():
    a = mg.Value(2.0)
    assert (a * 3).grad_fn.name() == "MulBackward0"       # a * c is the mul row's constant form
    assert (a.tanh()).grad_fn.name() == "TanhBackward0"
    assert a.grad_fn is None
    with mg.no_grad():
        assert (a * 3).grad_fn is None


def test_matches_torch_names():
    torch = pytest.importorskip("torch")
    t = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    m = mg.tensor([1.0, 2.0], requires_grad=True)
    for fn in (lambda v: v * v, lambda v: v.sigmoid(), lambda v: v.exp(), lambda v: v.relu(),
               lambda v: v.tanh(), lambda v: v / (v + 1)):
        assert fn(m).grad_fn.name() == type(fn(t).grad_fn).__name__

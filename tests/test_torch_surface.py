"""The PyTorch names a tutorial types: factories, the top-level functions
made from the op table, where, Tensor's torch methods, nn.Parameter, the loss
modules and the namespaces after ``import microgrid as mg``.  Values and
dtypes against PyTorch float64 where it is installed, by hand otherwise."""
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F
from microgrid import nn
from microgrid.core import optable


def _torch():
    return pytest.importorskip("torch")


def _same(ours, theirs, atol=1e-12):
    torch = _torch()
    assert ours.shape == tuple(theirs.shape)
    kind = {torch.int64: np.int64, torch.bool: np.bool_}.get(theirs.dtype, np.float64)
    assert ours.dtype == kind, f"{ours.dtype} != torch's {theirs.dtype}"
    np.testing.assert_allclose(np.asarray(ours.data, dtype=np.float64),
                               theirs.detach().numpy().astype(np.float64), rtol=1e-12, atol=atol)


# -- namespaces ----------------------------------------------------------------------

def test_submodules_are_attributes_right_after_import(tmp_path):
    code = ("import microgrid as mg\n"
            "print(mg.nn.Linear.__name__, mg.optim.SGD.__name__, mg.functional.relu.__name__,"
            " mg.datasets.__name__)")
    # a fresh interpreter that imports the microgrid this process imported (from a
    # source checkout, the current directory would offer the uncompiled sources first)
    env = {**os.environ, "PYTHONPATH": str(Path(mg.__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=env).stdout
    assert out.split() == ["Linear", "SGD", "relu", "microgrid.datasets"]


# -- factories -----------------------------------------------------------------------

def test_factories_match_torch():
    torch = _torch()
    f64 = dict(dtype=torch.float64)
    for ours, theirs in (
            (mg.arange(5), torch.arange(5)), (mg.arange(2, 9, 3), torch.arange(2, 9, 3)),
            (mg.arange(0, 1, 0.25), torch.arange(0, 1, 0.25, **f64)), (mg.arange(5, 0, -2), torch.arange(5, 0, -2)),
            (mg.linspace(-1, 1, 5), torch.linspace(-1, 1, 5, **f64)), (mg.linspace(0, 1, 1), torch.linspace(0, 1, 1, **f64)),
            (mg.full((2, 3), 7), torch.full((2, 3), 7)), (mg.full((2,), 1.5), torch.full((2,), 1.5, **f64)),
            (mg.full((2,), True), torch.full((2,), True)),
            (mg.eye(3), torch.eye(3, **f64)), (mg.eye(2, 3), torch.eye(2, 3, **f64)),
            (mg.zeros_like(mg.arange(3)), torch.zeros_like(torch.arange(3))),
            (mg.ones_like(mg.ones(2, 2)), torch.ones_like(torch.ones(2, 2, **f64))),
            (mg.full_like(mg.arange(3), 4), torch.full_like(torch.arange(3), 4)),
            (mg.zeros_like(mg.ones(2), dtype=mg.int64), torch.zeros_like(torch.ones(2), dtype=torch.int64)),
            (mg.from_numpy(np.arange(4)), torch.from_numpy(np.arange(4))),
            (mg.from_numpy(np.array([1.5, 2.0])), torch.from_numpy(np.array([1.5, 2.0]))),
            (mg.arange(3, dtype=mg.float64), torch.arange(3, **f64))):
        _same(ours, theirs)
    assert np.isnan(mg.full((2,), np.nan).data).all()
    assert mg.empty(2, 3).shape == (2, 3) and mg.empty((4,), dtype=mg.int64).dtype == mg.int64


def test_random_factories_follow_manual_seed():
    mg.manual_seed(3)
    a = (mg.rand(4), mg.randint(0, 10, (50,)), mg.randint(5, (3,)), mg.randn(2))
    mg.manual_seed(3)
    b = (mg.rand(4), mg.randint(0, 10, (50,)), mg.randint(5, (3,)), mg.randn(2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.data, y.data)
    r, i, j, _ = a
    assert r.dtype == mg.float64 and np.all((r.data >= 0) & (r.data < 1))
    assert i.dtype == mg.int64 and i.data.min() >= 0 and i.data.max() <= 9 and len(set(i.tolist())) > 5
    assert j.dtype == mg.int64 and j.data.max() < 5
    assert mg.rand(2, 3, requires_grad=True).requires_grad and mg.rand((2, 3)).shape == (2, 3)


@pytest.mark.parametrize("call, exc, message", [
    (lambda: mg.arange(0, 5, 0), ValueError, r"arange\(step\) must not be zero"),
    (lambda: mg.arange(5, 0), ValueError, "inconsistent with step sign"),
    (lambda: mg.arange("5"), TypeError, r"arange\(end\) takes a number"),
    (lambda: mg.linspace(0, 1, 2.5), TypeError, r"linspace\(steps\) takes an int"),
    (lambda: mg.linspace(0, 1, -1), ValueError, r"linspace\(steps\) must be non-negative"),
    (lambda: mg.full((2,), "x"), TypeError, r"full\(fill_value\) takes a number"),
    (lambda: mg.full((-1,), 1), ValueError, r"full\(size\): negative dimension"),
    (lambda: mg.eye(2.5), TypeError, r"eye\(size\) takes ints"),
    (lambda: mg.rand(2, "3"), TypeError, r"rand\(size\) takes ints"),
    (lambda: mg.randint(5, 5, (2,)), ValueError, r"randint: low \(5\) must be smaller than high \(5\)"),
    (lambda: mg.randint(0, 5), TypeError, r"randint\(size\) is required"),
    (lambda: mg.randint(0.5, 5, (2,)), TypeError, r"randint\(low\) takes an int"),
    (lambda: mg.zeros_like([1, 2]), TypeError, r"zeros_like\(input\) must be a Tensor or a numpy array"),
    (lambda: mg.from_numpy([1, 2]), TypeError, r"from_numpy\(ndarray\) takes a numpy array"),
    (lambda: mg.from_numpy(np.array(["a"])), TypeError, r"from_numpy\(data\) must hold real numbers"),
    (lambda: mg.randint(0, 5, (2,), requires_grad=True), RuntimeError, "floating point"),
    (lambda: mg.linspace(0, 1, 3, dtype=mg.float32), ValueError, r"linspace\(dtype=float32\)"),
])
def test_factory_errors(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# -- top-level functions from the op table ---------------------------------------------

def test_every_row_has_a_top_level_function():
    for name, rows in optable.method_groups().items():
        assert callable(getattr(mg, name)), name
        assert name in mg.__all__ or rows[0].torch_function == name
    for name in ("add", "sub", "mul", "div", "pow"):
        assert getattr(mg, name).__module__ == "microgrid"


@pytest.mark.parametrize("name", sorted(optable.method_groups()))
def test_top_level_function_equals_the_method_and_takes_numpy_arrays(name):
    x = np.array([[-1.3, 0.4, 2.0], [0.7, -0.2, 1.1]])
    if name in ("log", "sqrt"):
        x = np.abs(x)
    want = getattr(mg.tensor(x), name)().data
    np.testing.assert_array_equal(getattr(mg, name)(x).data, want)          # a numpy array: a constant
    t = mg.tensor(x, requires_grad=True)
    out = getattr(mg, name)(t)
    np.testing.assert_array_equal(out.data, want)
    assert out.requires_grad
    assert getattr(mg, name)(mg.Value(0.7)).data == getattr(mg.Value(0.7), name)().data
    with pytest.raises(TypeError, match=rf"{name}\(input\) must be a Tensor, a Value or a numpy array"):
        getattr(mg, name)([1.0, 2.0])


def test_top_level_functions_match_torch():
    torch = _torch()
    x = np.array([0.3, 1.2, 2.5])
    for name in ("sin", "cos", "exp", "log", "sqrt", "tanh", "sigmoid", "abs", "neg", "relu", "erf",
                 "log1p", "expm1", "atan"):
        t = mg.tensor(x, requires_grad=True)
        tt = torch.tensor(x, requires_grad=True)
        ours, theirs = getattr(mg, name)(t), getattr(torch, name)(tt)
        _same(ours, theirs)
        ours.sum().backward()
        theirs.sum().backward()
        np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-12, atol=1e-12)
    y = np.array([2.0, 0.5, 1.5])
    for name in ("add", "sub", "mul", "div", "pow"):
        _same(getattr(mg, name)(mg.tensor(x), mg.tensor(y)), getattr(torch, name)(torch.tensor(x), torch.tensor(y)))
        _same(getattr(mg, name)(x, 2.0), getattr(torch, name)(torch.tensor(x), 2.0))
    _same(mg.pow(2, mg.tensor(x)), torch.pow(2, torch.tensor(x)))
    with pytest.raises(TypeError, match=r"pow\(input, exponent\): one of them must be a Tensor"):
        mg.pow(2, 3)


# -- where ---------------------------------------------------------------------------

def test_where_values_and_gradients_match_torch_and_finite_differences():
    torch = _torch()
    a = np.array([[1.0, -2.0, 3.0], [-0.5, 0.5, 0.0]])
    b = np.array([10.0, 20.0, 30.0])
    x, y = mg.tensor(a, requires_grad=True), mg.tensor(b, requires_grad=True)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out, tout = mg.where(x > 0, x, y), torch.where(tx > 0, tx, ty)
    _same(out, tout)
    seed = np.arange(6.0).reshape(2, 3)
    out.backward(seed)
    tout.backward(torch.tensor(seed))
    np.testing.assert_allclose(x.grad, tx.grad.numpy())
    np.testing.assert_allclose(y.grad, ty.grad.numpy())
    # by hand: x's gradient where x > 0, y's summed over the rows where x <= 0
    np.testing.assert_array_equal(x.grad, [[0, 0, 2], [0, 4, 0]])
    np.testing.assert_array_equal(y.grad, [3, 1, 5])
    cond = mg.tensor([True, False, True])
    assert mg.gradcheck(lambda p, q: (mg.where(cond, p, q) * p).tanh(), [x, y])
    assert mg.gradcheck(lambda p: x.where(cond, p.exp()).sum(), [y])
    _same(mg.where(cond, 1.0, 0.0), torch.where(torch.tensor([True, False, True]), 1.0, 0.0).double())
    _same(mg.where(cond, mg.tensor([1, 2, 3]), mg.tensor([4, 5, 6])),
          torch.where(torch.tensor([True, False, True]), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])))


def test_where_replays_with_a_condition_changed_in_place():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    cond = mg.tensor([True, False])
    out = mg.where(cond, x, -x).sum()
    graph = mg.Graph(out)
    cond.data[:] = [False, True]
    graph.forward()
    assert out.item() == 1.0


@pytest.mark.parametrize("call, exc, message", [
    (lambda: mg.where(mg.tensor([1.0, 0.0]), mg.ones(2), mg.zeros(2)), TypeError, r"where\(condition\) must hold bools"),
    (lambda: mg.where("yes", mg.ones(2), mg.zeros(2)), TypeError, r"where\(condition\) must be a bool tensor"),
    (lambda: mg.where(mg.tensor([True]), "a", mg.zeros(2)), TypeError, r"where\(input\) takes a Tensor"),
    (lambda: mg.where(mg.tensor([True]), mg.ones(2), None), TypeError, r"where\(other\) takes a Tensor"),
    (lambda: mg.where(mg.tensor([True, False, True]), mg.ones(2), 0.0), ValueError,
     r"where: shapes \(3,\) \(condition\), \(2,\) \(input\) and \(\) \(other\) cannot be broadcast"),
])
def test_where_errors(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# -- max / min / argmax / argmin / flatten at the top level -------------------------------

def test_reductions_take_numpy_arrays_as_constants():
    torch = _torch()
    a = np.array([[0.1, 2.0, 0.3], [1.5, 0.2, 0.1]])
    values, indices = mg.max(a, 1)
    tvalues, tindices = torch.max(torch.tensor(a), 1)
    _same(values, tvalues)
    _same(indices, tindices)
    _same(mg.min(a, 0).indices, torch.min(torch.tensor(a), 0).indices)
    _same(mg.max(a), torch.max(torch.tensor(a)))
    for name in ("argmax", "argmin"):
        _same(getattr(mg, name)(a), getattr(torch, name)(torch.tensor(a)))
        _same(getattr(mg, name)(a, 1), getattr(torch, name)(torch.tensor(a), 1))
        _same(getattr(mg, name)(a, 0, True), getattr(torch, name)(torch.tensor(a), 0, True))
        _same(getattr(mg.tensor(a), name)(dim=-1), getattr(torch.tensor(a), name)(dim=-1))
    _same(mg.flatten(np.ones((2, 3, 4)), 1), torch.flatten(torch.ones(2, 3, 4, dtype=torch.float64), 1))
    _same(mg.argmax(mg.tensor([1.0, np.nan, 3.0])), torch.argmax(torch.tensor([1.0, np.nan, 3.0])))


@pytest.mark.parametrize("call, exc, message", [
    (lambda: mg.argmax([1, 2]), TypeError, r"argmax\(input\) takes a Tensor or a numpy array"),
    (lambda: mg.argmax(mg.zeros(0)), ValueError, r"argmax\(\): the tensor is empty"),
    (lambda: mg.argmin(mg.zeros(2, 0), 1), ValueError, r"argmin\(dim=1\): that dimension is empty"),
    (lambda: mg.argmax(mg.zeros(2), 3), ValueError, r"argmax\(dim=3\) is out of range"),
    (lambda: mg.argmax(mg.zeros(2), 0, "x"), TypeError, "keepdim"),
    (lambda: mg.max("x"), TypeError, r"max\(input\) takes a Tensor or a numpy array"),
    (lambda: mg.flatten(None), TypeError, r"flatten\(input\) takes a Tensor or a numpy array"),
])
def test_reduction_errors(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# -- Tensor's torch methods ------------------------------------------------------------

def test_size_and_the_torch_methods_of_tensor():
    torch = _torch()
    a = np.arange(6.0).reshape(2, 3)
    t, tt = mg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    assert t.size() == tt.size() == (2, 3) and isinstance(t.size(), tuple) and isinstance(t.size(), mg.Size)
    assert repr(t.size()) == "Size([2, 3])" and t.size().numel() == 6 == t.numel()
    assert t.size(0) == 2 and t.size(-1) == 3 and type(t.size(1)) is int
    assert mg.tensor(1.0).size() == () and t.dim() == t.ndim == 2
    assert t.tolist() == tt.tolist() and t.numpy() is t.data
    with pytest.raises(ValueError, match=r"size\(dim=2\) is out of range"):
        t.size(2)
    with pytest.raises(IndexError, match=r"size\(dim=0\): a 0-d tensor has no dimensions"):
        mg.tensor(1.0).size(0)
    with pytest.raises(TypeError, match=r"size\(dim=...\) takes an int"):
        t.size("0")
    for ours, theirs in ((t.view(3, 2), tt.view(3, 2)), (t.view(-1), tt.view(-1)), (t.unsqueeze(1), tt.unsqueeze(1)),
                         (t.unsqueeze(0).squeeze(), tt.unsqueeze(0).squeeze()), (t.T, tt.T), (t.pow(2), tt.pow(2)),
                         (t.pow(t), tt.pow(tt)), (t.clone(), tt.clone()), (t.detach(), tt.detach())):
        _same(ours, theirs)
    c = t.clone()
    assert c.requires_grad and not c.is_leaf and c.data is not t.data
    (c * c).sum().backward()
    np.testing.assert_array_equal(t.grad, 2 * a)       # clone passes the gradient on
    d = t.detach()
    assert not d.requires_grad and d.data is t.data
    with pytest.raises(TypeError, match=r"pow\(exponent\) takes a Tensor"):
        t.pow("2")


# -- nn.Parameter ----------------------------------------------------------------------

def test_parameter_is_a_tensor_that_modules_register():
    p = nn.Parameter(mg.tensor([1.0, 2.0]))
    assert isinstance(p, mg.Tensor) and p.requires_grad and p.is_leaf and p.dtype == mg.float64
    assert repr(p) == "Parameter containing:\nTensor([1., 2.], requires_grad=True)"
    assert type(p * 2) is mg.Tensor
    frozen = nn.Parameter(mg.ones(2), requires_grad=False)

    class Model(nn.Module):
        def __init__(self):
            self.scale = nn.Parameter(mg.ones(1))
            self.frozen = frozen
            self.cache = mg.ones(3)          # a plain tensor without grad: not a parameter
            self.fc = nn.Linear(2, 1)

        def forward(self, x):
            return self.fc(x) * self.scale

    m = Model()
    assert [n for n, _ in m.named_parameters()] == ["scale", "frozen", "fc.weight", "fc.bias"]
    assert isinstance(m.fc.weight, nn.Parameter)
    assert list(m.state_dict()) == ["scale", "frozen", "fc.weight", "fc.bias"]
    out = m(mg.tensor([[1.0, 2.0]])).sum()
    out.backward()
    assert m.scale.grad.shape == (1,)
    # (microgrid's optimisers refuse a parameter that needs no gradient: pass the trainable ones)
    opt = mg.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    before = m.scale.data.copy()
    opt.step()
    assert m.scale.data != before
    assert nn.Parameter().shape == (0,)
    with pytest.raises(TypeError, match=r"Tensor\(data\) must hold real numbers"):
        nn.Parameter("abc")


# -- loss modules -------------------------------------------------------------------------

_LOSS_CASES = {
    "MSELoss": ("regression", [{}, {"reduction": "sum"}, {"reduction": "none"}]),
    "L1Loss": ("regression", [{}, {"reduction": "sum"}]),
    "HuberLoss": ("regression", [{}, {"delta": 0.5}, {"reduction": "none", "delta": 2.0}]),
    "BCELoss": ("probability", [{}, {"reduction": "sum"}, {"weight": np.array([0.5, 2.0, 1.0])}]),
    "BCEWithLogitsLoss": ("binary", [{}, {"pos_weight": np.array([2.0, 1.0, 0.5])}, {"reduction": "none"}]),
    "CrossEntropyLoss": ("classes", [{}, {"reduction": "sum"}, {"label_smoothing": 0.1},
                                     {"weight": np.array([1.0, 2.0, 0.5])}, {"ignore_index": 1}]),
    "NLLLoss": ("log_probabilities", [{}, {"reduction": "none"}, {"weight": np.array([1.0, 2.0, 0.5])}]),
}


def _loss_inputs(kind, rng):
    x = rng.standard_normal((4, 3))
    if kind == "regression":
        return x, rng.standard_normal((4, 3))
    if kind == "probability":
        return 1 / (1 + np.exp(-x)), rng.random((4, 3))
    if kind == "binary":
        return x, (rng.random((4, 3)) > 0.5).astype(float)
    if kind == "log_probabilities":
        return x - np.log(np.exp(x).sum(1, keepdims=True)), np.array([0, 2, 1, 2])
    return x, np.array([0, 2, 1, 2])


@pytest.mark.parametrize("name", sorted(_LOSS_CASES))
def test_loss_modules_match_torch(name):
    torch = _torch()
    kind, options = _LOSS_CASES[name]
    rng = np.random.default_rng(len(name))
    x, target = _loss_inputs(kind, rng)
    for kwargs in options:
        ours_t = mg.tensor(x, requires_grad=True)
        theirs_t = torch.tensor(x, requires_grad=True)
        ours = getattr(nn, name)(**{k: mg.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
        theirs = getattr(torch.nn, name)(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                                             for k, v in kwargs.items()})
        out = ours(ours_t, mg.tensor(target))
        tout = theirs(theirs_t, torch.tensor(target))
        _same(out, tout)
        out.sum().backward()
        tout.sum().backward()
        np.testing.assert_allclose(ours_t.grad, theirs_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert repr(getattr(nn, name)()) == f"{name}()"
    assert list(getattr(nn, name)().parameters()) == []


def test_loss_modules_take_their_functions_keywords():
    for cls, fn in ((nn.MSELoss, F.mse_loss), (nn.CrossEntropyLoss, F.cross_entropy),
                    (nn.BCEWithLogitsLoss, F.binary_cross_entropy_with_logits), (nn.HuberLoss, F.huber_loss)):
        want = list(inspect.signature(fn).parameters.values())[2:]
        assert list(inspect.signature(cls).parameters.values()) == want
    # positional, as PyTorch's CrossEntropyLoss(weight) and HuberLoss('sum', 0.5)
    assert nn.HuberLoss("sum", 0.5).delta == 0.5 and nn.CrossEntropyLoss([1.0, 2.0]).weight == [1.0, 2.0]
    loss = nn.L1Loss(reduction="sum")
    assert loss(mg.tensor([1.0, 2.0]), np.array([0.0, 0.0])).item() == 3.0     # a numpy target as a constant
    assert nn.MSELoss()(mg.tensor([1.0, 3.0]), mg.tensor([0, 1])).item() == 2.5  # an int64 target


@pytest.mark.parametrize("call, exc, message", [
    (lambda: nn.MSELoss(reduction="avg"), ValueError, r"MSELoss\(reduction=...\) must be 'mean', 'sum' or 'none'"),
    (lambda: nn.CrossEntropyLoss(bogus=1), TypeError, r"CrossEntropyLoss\(\): .*bogus"),
    (lambda: nn.L1Loss("sum", 2), TypeError, r"L1Loss\(\): too many positional arguments"),
    (lambda: nn.HuberLoss(delta=-1.0)(mg.ones(2), mg.ones(2)), ValueError, r"huber_loss\(delta=...\) must be a positive"),
    (lambda: nn.MSELoss()("x", mg.ones(2)), TypeError, r"mse_loss\(input\) must be a Tensor"),
])
def test_loss_module_errors(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# -- a tutorial's training loop, renamed -------------------------------------------------

def test_classifier_training_loop_of_a_tutorial():
    mg.manual_seed(0)
    x = mg.randn(64, 2)
    labels = (x[:, 0] * x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    criterion = nn.CrossEntropyLoss()
    optimizer = mg.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        optimizer.zero_grad()
        loss = criterion(model(x), labels)
        loss.backward()
        optimizer.step()
    _, predicted = mg.max(model(x).data, 1)
    correct = (predicted == labels).sum().item()
    assert labels.size(0) == 64 and correct >= 58

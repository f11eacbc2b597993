"""microgrid.optim: SGD and Adam on Values and Tensors; hand-computed steps,
PyTorch parity over several steps, argument checks."""
import math

import numpy as np
import pytest

import microgrid as mg
from microgrid import Value
from microgrid.nn import MLP
from microgrid.optim import SGD, Adam


def one_value(data=2.0, grad=0.5):
    p = Value(data)
    p.grad = grad
    return p


# -- hand-computed steps (no torch needed) ----------------------------------

def test_sgd_plain_step():
    p = one_value()
    SGD([p], lr=0.1).step()
    assert p.data == pytest.approx(2.0 - 0.1 * 0.5, abs=1e-15)


def test_sgd_weight_decay_adds_to_the_gradient():
    p = one_value()
    SGD([p], lr=0.1, weight_decay=0.1).step()
    assert p.data == pytest.approx(2.0 - 0.1 * (0.5 + 0.1 * 2.0), abs=1e-15)   # 1.93


def test_sgd_momentum_two_steps():
    p = one_value()
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()                          # buffer = g = 0.5
    assert p.data == pytest.approx(1.95, abs=1e-15)
    opt.step()                          # buffer = 0.9 * 0.5 + 0.5 = 0.95
    assert p.data == pytest.approx(1.95 - 0.095, abs=1e-15)


def test_sgd_dampening_applies_from_the_second_step():
    p = one_value()
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    opt.step()                          # first buffer is g itself, undamped
    opt.step()                          # buffer = 0.45 + 0.5 * 0.5 = 0.7
    assert p.data == pytest.approx(2.0 - 0.05 - 0.07, abs=1e-15)


def test_sgd_nesterov_step():
    p = one_value()
    SGD([p], lr=0.1, momentum=0.9, nesterov=True).step()
    assert p.data == pytest.approx(2.0 - 0.1 * (0.5 + 0.9 * 0.5), abs=1e-15)   # 1.905


def test_adam_two_steps_by_hand():
    p = one_value(2.0, 0.5)
    opt = Adam([p], lr=0.1)
    opt.step()
    # step 1: m = 0.05, v = 0.00025; the bias corrections make m/sqrt(v) = sign(g)
    assert p.data == pytest.approx(2.0 - 0.1 * 0.5 / (0.5 + 1e-8), abs=1e-15)
    p.grad = -1.0
    opt.step()
    m = 0.05 + 0.1 * (-1.0 - 0.05)                  # -0.055
    v = 0.999 * 0.00025 + 0.001 * 1.0               # 0.00124975
    expected = 1.9000000020 - 0.1 / (1 - 0.9 ** 2) * m / (math.sqrt(v) / math.sqrt(1 - 0.999 ** 2) + 1e-8)
    assert p.data == pytest.approx(expected, abs=1e-9)
    assert p.data == pytest.approx(1.9 + 0.1 / 0.19 * 0.055 / math.sqrt(0.00124975 / 0.001999), abs=1e-7)


def test_adam_weight_decay_is_l2_added_to_the_gradient():
    p = one_value(2.0, 0.0)
    Adam([p], lr=0.1, weight_decay=0.5).step()      # g = 0 + 0.5 * 2 = 1
    assert p.data == pytest.approx(2.0 - 0.1 * 1.0 / (1.0 + 1e-8), abs=1e-15)


def test_zero_grad_and_values_of_a_model():
    mg.manual_seed(0)
    model = MLP(2, [3, 1])
    opt = SGD(model.parameters(), lr=0.5)
    model([Value(1.0), Value(-2.0)]).backward()
    before = [p.data for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    assert any(g != 0 for g in grads)
    opt.step()
    assert [p.data for p in model.parameters()] == [b - 0.5 * g for b, g in zip(before, grads)]
    opt.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())


def test_parameter_groups_have_their_own_options():
    a, b = one_value(), one_value()
    SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1).step()
    assert a.data == pytest.approx(1.95) and b.data == pytest.approx(1.5)


@pytest.mark.parametrize("make, name", [
    (lambda ps: SGD(ps, lr=-0.1), "lr"),
    (lambda ps: SGD(ps, lr=float("nan")), "lr"),
    (lambda ps: SGD(ps, lr=0.1, momentum=-1), "momentum"),
    (lambda ps: SGD(ps, lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda ps: SGD(ps, lr=0.1, nesterov=True), "nesterov"),
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, dampening=0.1), "nesterov"),
    (lambda ps: Adam(ps, lr=-1.0), "lr"),
    (lambda ps: Adam(ps, eps=-1.0), "eps"),
    (lambda ps: Adam(ps, betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda ps: Adam(ps, betas=(0.9, -0.1)), r"betas\[1\]"),
    (lambda ps: Adam(ps, weight_decay=-1.0), "weight_decay"),
    (lambda ps: SGD([{"params": ps, "lrr": 0.1}], lr=0.1), "lrr"),
])
def test_bad_hyper_parameters_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make([one_value()])


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="params"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="params"):
        SGD(one_value(), lr=0.1)        # a single parameter, not an iterable of them
    with pytest.raises(TypeError, match="params"):
        Adam([1.0])
    with pytest.raises(TypeError, match="lr"):
        SGD([one_value()], lr="fast")
    p = one_value()
    with pytest.raises(ValueError, match="twice"):
        SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="grad"):
        SGD([Value(1.0, requires_grad=False)], lr=0.1)


def test_a_failed_construction_changes_nothing():
    p = one_value()
    with pytest.raises(ValueError):
        SGD([p], lr=-1)
    assert p.data == 2.0 and p.grad == 0.5


# -- PyTorch parity ----------------------------------------------------------

CONFIGS = [
    (SGD, "SGD", dict(lr=0.1)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (Adam, "Adam", dict(lr=0.01)),
    (Adam, "Adam", dict(lr=0.1, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.05)),
    (Adam, "Adam", dict(lr=0.02, betas=(0.7, 0.99))),   # lerp weight 0.3
]


def fake_gradient(x, k):
    """A gradient that depends on the parameters and the step, so that state
    (momentum, moments) matters."""
    return np.sin(3.0 * x + k) + 0.1 * x ** 3


@pytest.mark.parametrize("cls, torch_name, kwargs", CONFIGS)
def test_values_follow_torch_optim_step_for_step(cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    start = np.array([0.5, -1.25, 2.0, 0.0, -0.3])
    ours = [Value(float(x)) for x in start]
    theirs = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = cls(ours, **kwargs)
    topt = getattr(torch.optim, torch_name)([theirs], **kwargs)
    for k in range(8):
        x = np.array([p.data for p in ours])
        for p, g in zip(ours, fake_gradient(x, k)):
            p.grad = float(g)
        theirs.grad = torch.from_numpy(fake_gradient(theirs.detach().numpy().copy(), k))
        opt.step()
        topt.step()
        np.testing.assert_allclose([p.data for p in ours], theirs.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_training_a_scalar_model_matches_torch():
    torch = pytest.importorskip("torch")
    # loss = sum_i c_i (p_i - t_i)^2 + p_0 p_1, built with the scalar engine
    c = [1.0, 2.0, 0.5]
    t = [0.3, -0.7, 1.1]
    ours = [Value(0.0), Value(1.0), Value(-1.0)]
    theirs = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64, requires_grad=True)
    opt = Adam(ours, lr=0.05)
    topt = torch.optim.Adam([theirs], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        loss = mg.sum(ci * (p - ti) ** 2 for ci, p, ti in zip(c, ours, t)) + ours[0] * ours[1]
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = (torch.tensor(c, dtype=torch.float64) * (theirs - torch.tensor(t, dtype=torch.float64)) ** 2).sum() \
            + theirs[0] * theirs[1]
        tloss.backward()
        topt.step()
        assert loss.data == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose([p.data for p in ours], theirs.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("cls, torch_name, kwargs", CONFIGS)
def test_tensors_follow_torch_optim_step_for_step_in_place(cls, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    starts = [rng.normal(size=(3, 4)), rng.normal(size=(4,)), np.array(0.7)]
    ours = [mg.tensor(s, requires_grad=True) for s in starts]
    buffers = [p.data for p in ours]
    theirs = [torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in starts]
    opt = cls(ours, **kwargs)
    topt = getattr(torch.optim, torch_name)(theirs, **kwargs)
    for k in range(8):
        for p, t in zip(ours, theirs):
            g = fake_gradient(np.array(p.data), k)
            p.grad[...] = g
            t.grad = torch.from_numpy(np.asarray(fake_gradient(t.detach().numpy().copy(), k)))
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-13, atol=1e-15)
    for p, held in zip(ours, buffers):
        assert np.shares_memory(p.data, held)      # updated in place


def test_mixed_values_and_tensors_in_one_optimiser():
    v = one_value(2.0, 0.5)
    t = mg.tensor([1.0, -1.0], requires_grad=True)
    t.grad[...] = [0.25, -0.5]
    opt = SGD([v, t], lr=0.1)
    opt.step()
    assert v.data == pytest.approx(1.95)
    np.testing.assert_allclose(t.data, [0.975, -0.95])
    opt.zero_grad()
    assert v.grad == 0 and not np.asarray(t.grad).any()


def test_training_a_tensor_model_matches_torch():
    torch = pytest.importorskip("torch")
    from microgrid import functional as F
    from microgrid import nn
    mg.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4))
    y = rng.integers(0, 3, size=16)
    opt = Adam(ours.parameters(), lr=0.01, weight_decay=1e-3)
    topt = torch.optim.Adam(theirs.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(10):
        loss = F.cross_entropy(ours(mg.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        assert float(loss.data) == pytest.approx(tloss.item(), rel=1e-10)
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_scalar_parameters_are_gathered_and_written_in_compiled_code():
    import numpy as np
    from microgrid.core import _engine
    vs = [mg.Value(float(k), requires_grad=True) for k in range(5)]
    for k, v in enumerate(vs):
        v.grad = 10.0 + k
    data, grad = np.empty(5), np.empty(5)
    _engine._values_read(vs, data, grad)
    assert data.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and grad.tolist() == [10, 11, 12, 13, 14]
    _engine._values_write(vs, data * 2)
    _engine._values_zero_grad(vs)
    assert [v.data for v in vs] == [0.0, 2.0, 4.0, 6.0, 8.0] and all(v.grad == 0 for v in vs)
    with pytest.raises(TypeError, match=r"values\[1\] is a float"):
        _engine._values_zero_grad([vs[0], 1.0])
    with pytest.raises(ValueError, match="5 values but an array of 4"):
        _engine._values_write(vs, np.zeros(4))


def test_plain_sgd_updates_values_in_place_and_a_subclass_update_still_runs():
    # SGD without momentum or weight decay moves Values where they are, with
    # the arithmetic of its array update; a subclass's _update is honoured
    import numpy as np
    vs = [mg.Value(v, requires_grad=True) for v in (0.3, -1.7, 2.5)]
    grads = (0.1, 3.0, -0.7)
    for v, g in zip(vs, grads):
        v.grad = g
    mg.optim.SGD(vs, lr=0.01).step()
    expected = np.array([0.3, -1.7, 2.5]) - 0.01 * np.array(grads)
    assert [v.data for v in vs] == expected.tolist()

    calls = []

    class Traced(mg.optim.SGD):
        def _update(self, group, state, param, grad):
            calls.append(len(param))
            return super()._update(group, state, param, grad)

    Traced(vs, lr=0.01).step()
    assert calls == [3] and [v.data for v in vs] == (expected - 0.01 * np.array(grads)).tolist()

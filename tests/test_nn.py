"""microgrid.nn beyond micrograd's classes: Module discovery and state,
npz save/load (no pickle), PyTorch-style layers and their parity with
torch.nn (names, shapes, reprs, initialisation, outputs)."""
import collections
import math
import os
import pickle
import random

import numpy as np
import pytest

import microgrid as mg
from microgrid import nn
from microgrid.nn import MLP, Module, Neuron


# -- Module machinery on micrograd's scalar classes -------------------------

def test_manual_seed_seeds_python_random_and_the_generator():
    gen = mg.manual_seed(5)
    assert isinstance(gen, np.random.Generator) and gen is nn.default_generator()
    first = [p.data for p in MLP(2, [3, 1]).parameters()]
    a = nn.default_generator().random()
    mg.manual_seed(5)
    assert [p.data for p in MLP(2, [3, 1]).parameters()] == first
    assert nn.default_generator().random() == a
    random.seed(5)
    assert [p.data for p in MLP(2, [3, 1]).parameters()] == first   # micrograd's draws
    with pytest.raises(TypeError, match="seed"):
        mg.manual_seed(1.5)
    with pytest.raises(ValueError, match="seed"):
        mg.manual_seed(-1)


def test_named_parameters_of_micrograd_mlp_follow_parameters_order():
    mg.manual_seed(0)
    model = MLP(2, [3, 1])
    named = model.named_parameters()
    assert [p for _, p in named] == model.parameters()
    names = [n for n, _ in named]
    assert names[:3] == ["layers.0.neurons.0.w.0", "layers.0.neurons.0.w.1", "layers.0.neurons.0.b"]
    assert names[-1] == "layers.1.neurons.0.b" and len(set(names)) == len(names) == 13


def test_generic_parameters_discovery_in_definition_order_with_sharing():
    class Net(Module):
        def __init__(self):
            self.first = Neuron(2)
            self.scale = mg.Value(3.0)
            self.constant = mg.Value(1.0, requires_grad=False)   # not a parameter
            self.blocks = [Neuron(1), (Neuron(1),)]
            self.again = self.first                                # shared: listed once
            self.note = "text"
            self.cached = self.scale * 2.0                         # not a leaf: not a parameter

    random.seed(0)
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["first.w.0", "first.w.1", "first.b", "scale",
                     "blocks.0.w.0", "blocks.0.b", "blocks.1.0.w.0", "blocks.1.0.b"]
    assert len(net.parameters()) == 8
    assert [n for n, _ in net.named_children()] == ["first", "blocks.0", "blocks.1.0", "again"]
    assert Module().parameters() == [] and Module().state_dict() == collections.OrderedDict()


def test_state_dict_and_load_state_dict_with_values():
    mg.manual_seed(1)
    model = MLP(2, [2, 1])
    state = model.state_dict()
    assert isinstance(state, collections.OrderedDict)
    assert all(v.shape == () and v.dtype == np.float64 for v in state.values())
    assert [float(v) for v in state.values()] == [p.data for p in model.parameters()]
    state["layers.0.neurons.0.b"][...] = 7.0            # a copy: the model is untouched
    assert model.layers[0].neurons[0].b.data == 0.0
    result = model.load_state_dict(state)
    assert model.layers[0].neurons[0].b.data == 7.0 and result == ([], [])


def test_load_state_dict_checks_everything_before_changing_anything():
    mg.manual_seed(1)
    model = MLP(2, [2, 1])
    before = [p.data for p in model.parameters()]
    state = {k: v + 1.0 for k, v in model.state_dict().items()}
    bad = dict(state)
    bad["layers.1.neurons.0.b"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"layers\.1\.neurons\.0\.b"):
        model.load_state_dict(bad)
    bad["layers.1.neurons.0.b"] = np.array("x")
    with pytest.raises(TypeError, match=r"layers\.1\.neurons\.0\.b"):
        model.load_state_dict(bad)
    assert [p.data for p in model.parameters()] == before
    missing = dict(state)
    del missing["layers.0.neurons.1.w.1"]
    with pytest.raises(ValueError, match=r"missing keys \['layers\.0\.neurons\.1\.w\.1'\]"):
        model.load_state_dict(missing)
    extra = dict(state, surplus=np.array(1.0))
    with pytest.raises(ValueError, match=r"unexpected keys \['surplus'\]"):
        model.load_state_dict(extra)
    assert [p.data for p in model.parameters()] == before
    result = model.load_state_dict(dict(missing, surplus=np.array(1.0)), strict=False)
    assert result.missing_keys == ["layers.0.neurons.1.w.1"] and result.unexpected_keys == ["surplus"]
    with pytest.raises(TypeError, match="state_dict"):
        model.load_state_dict([1, 2])


def test_save_load_round_trip_is_bit_exact_for_values(tmp_path):
    mg.manual_seed(2)
    model = MLP(3, [4, 2])
    specials = [float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1.7976931348623157e308]
    for p, x in zip(model.parameters(), specials):
        p.data = x
    path = tmp_path / "mlp.npz"
    assert model.save(path) == str(path)
    other = MLP(3, [4, 2])
    assert other.load(path) is other
    ours = np.array([p.data for p in model.parameters()])
    theirs = np.array([p.data for p in other.parameters()])
    assert ours.tobytes() == theirs.tobytes()               # NaN payload and -0.0 included
    with np.load(path, allow_pickle=False) as archive:      # a plain numpy archive
        assert sorted(archive.files) == sorted(model.state_dict())
    assert not [f for f in os.listdir(tmp_path) if f != "mlp.npz"]   # no temporary left


class _Marker:
    """Unpickling this creates a file: evidence that pickled code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_refuses_pickled_objects_without_running_them(tmp_path):
    mg.manual_seed(3)
    model = MLP(1, [1])
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Marker(str(marker))
    np.savez(bad, **{"layers.0.neurons.0.w.0": payload, "layers.0.neurons.0.b": np.array(0.0)})
    with pytest.raises(ValueError, match="evil.npz"):
        model.load(bad)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(ValueError, match="evil.pkl"):
        model.load(plain)
    assert not marker.exists()


def test_load_rejects_truncated_and_foreign_files(tmp_path):
    mg.manual_seed(4)
    model = MLP(2, [3, 1])
    before = [p.data for p in model.parameters()]
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    for name, content in [("half.npz", data[: len(data) // 2]), ("tail.npz", data[:-10]),
                          ("empty.npz", b""), ("junk.npz", b"not an archive at all")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=name):
            model.load(tmp_path / name)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        model.load(tmp_path / "single.npy")
    other = tmp_path / "other.npz"
    MLP(2, [4, 1]).save(other)
    with pytest.raises(ValueError, match="missing keys|unexpected keys"):
        model.load(other)
    with pytest.raises(FileNotFoundError):
        model.load(tmp_path / "nowhere.npz")
    assert [p.data for p in model.parameters()] == before


def test_train_eval_and_call():
    seq = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Tanh()))
    assert seq.training and seq[1][0].training
    assert seq.eval() is seq
    assert not seq.training and not seq[1].training and not seq[1][0].training
    seq.train()
    assert seq[1][0].training
    with pytest.raises(TypeError, match="mode"):
        seq.train("yes")
    with pytest.raises(NotImplementedError, match="forward"):
        Module()(1.0)
    # activations also work on Values, through __call__ -> forward
    v = mg.Value(-0.5)
    assert seq(v).data == 0.0
    assert nn.Sigmoid()(mg.Value(0.0)).data == 0.5


def test_sequential_container():
    a, b, c = nn.ReLU(), nn.Tanh(), nn.Sigmoid()
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    assert isinstance(seq[1:], nn.Sequential) and list(seq[1:]) == [b]
    seq.append(c)
    assert len(seq) == 3
    assert repr(seq) == "Sequential(\n  (0): ReLU()\n  (1): Tanh()\n  (2): Sigmoid()\n)"
    with pytest.raises(TypeError, match="modules"):
        nn.Sequential(nn.ReLU(), "relu")
    with pytest.raises(TypeError, match="module"):
        seq.append(3)


# -- PyTorch-style tensor layers --------------------------------------------

def test_layer_parameter_shapes_and_leaf_tensors():
    mg.manual_seed(0)
    lin = nn.Linear(3, 5)
    assert lin.weight.shape == (5, 3) and lin.bias.shape == (5,)
    assert lin.weight.requires_grad and lin.bias.requires_grad
    assert nn.Linear(3, 5, bias=False).bias is None
    conv = nn.Conv2d(4, 6, (3, 2), groups=2)
    assert conv.weight.shape == (6, 2, 3, 2) and conv.bias.shape == (6,)
    convt = nn.ConvTranspose2d(4, 6, 3, groups=2)
    assert convt.weight.shape == (4, 3, 3, 3) and convt.bias.shape == (6,)
    assert [n for n, _ in nn.Sequential(lin, nn.ReLU(), conv).named_parameters()] == \
        ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Linear(400, 300), 400),
    (lambda: nn.Conv2d(6, 200, 5), 6 * 25),
    (lambda: nn.Conv2d(8, 200, 3, groups=4), 2 * 9),
    (lambda: nn.ConvTranspose2d(200, 6, 5), 6 * 25),      # torch: weight.size(1) * kh * kw
    (lambda: nn.ConvTranspose2d(200, 8, 3, groups=4), 2 * 9),
])
def test_default_initialisation_is_uniform_over_one_over_sqrt_fan_in(make, fan_in):
    mg.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w = np.asarray(layer.weight.data).ravel()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert abs(w.mean()) < 0.05 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound      # U(-b, b) has std b / sqrt(3)
    b = np.asarray(layer.bias.data)
    assert np.abs(b).max() <= bound


def test_initialisation_follows_manual_seed():
    mg.manual_seed(11)
    first = nn.Linear(4, 3).state_dict()
    mg.manual_seed(11)
    again = nn.Linear(4, 3).state_dict()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(nn.Linear(4, 3).state_dict()["weight"], first["weight"])


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(2.0, 3), "in_features"),
    (lambda: nn.Linear(2, -1), "out_features"),
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), "stride"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), "padding"),
    (lambda: nn.Conv2d(3, 4, 3, padding="middle"), "padding"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), "padding"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=0), "dilation"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "groups"),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), "groups"),
    (lambda: nn.Conv2d(4, 4, 3, padding_mode="mirror"), "padding_mode"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect"), "padding_mode"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=2), "output_padding"),
    (lambda: nn.MaxPool2d(0), "kernel_size"),
    (lambda: nn.MaxPool2d(2, stride=0), "stride"),
    (lambda: nn.AvgPool2d(2, padding=-1), "padding"),
    (lambda: nn.Flatten(start_dim=1.0), "start_dim"),
])
def test_bad_layer_arguments_name_the_argument(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


TORCH_EQUIVALENTS = [
    ("Linear(2, 16)", lambda m: m.Linear(2, 16)),
    ("Linear(3, 1, bias=False)", lambda m: m.Linear(3, 1, bias=False)),
    ("Conv2d(1, 8, 3)", lambda m: m.Conv2d(1, 8, 3)),
    ("Conv2d padded", lambda m: m.Conv2d(4, 8, (3, 5), stride=2, padding=(1, 2), dilation=2, groups=2, bias=False)),
    ("ConvTranspose2d", lambda m: m.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)),
    ("MaxPool2d", lambda m: m.MaxPool2d(2)),
    ("MaxPool2d full", lambda m: m.MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True)),
    ("AvgPool2d", lambda m: m.AvgPool2d(2)),
    ("AvgPool2d padded", lambda m: m.AvgPool2d(3, stride=1, padding=1)),
    ("Flatten", lambda m: m.Flatten()),
    ("Flatten(0, 2)", lambda m: m.Flatten(0, 2)),
    ("ReLU", lambda m: m.ReLU()),
    ("Sigmoid", lambda m: m.Sigmoid()),
    ("Tanh", lambda m: m.Tanh()),
    ("Sequential", lambda m: m.Sequential(m.Conv2d(1, 4, 3, padding=1), m.ReLU(), m.MaxPool2d(2),
                                          m.Flatten(), m.Linear(16, 10))),
]


@pytest.mark.parametrize("label, make", TORCH_EQUIVALENTS, ids=[t[0] for t in TORCH_EQUIVALENTS])
def test_reprs_names_and_shapes_match_torch(label, make):
    torch = pytest.importorskip("torch")
    ours, theirs = make(nn), make(torch.nn)
    assert repr(ours) == repr(theirs)
    ours_state = ours.state_dict()
    theirs_state = theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    assert [v.shape for v in ours_state.values()] == [tuple(v.shape) for v in theirs_state.values()]


def digits_like_model(m):
    return m.Sequential(
        m.Conv2d(1, 4, 3, padding=1), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(4, 6, 3), m.Tanh(), m.AvgPool2d(2),
        m.Flatten(), m.Linear(6, 5), m.Sigmoid(), m.Linear(5, 3),
    )


def test_trained_sequential_loads_into_torch_and_gives_the_same_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    from microgrid import functional as F
    from microgrid.optim import SGD
    mg.manual_seed(0)
    ours = digits_like_model(nn)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 1, 8, 8))
    target = np.array([0, 1, 2, 1, 0])
    opt = SGD(ours.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):                                  # "trained": weights moved by steps
        loss = F.cross_entropy(ours(mg.tensor(x)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "model.npz"
    ours.save(path)
    theirs = digits_like_model(torch.nn).double()
    with np.load(path, allow_pickle=False) as archive:
        theirs.load_state_dict({k: torch.from_numpy(archive[k]) for k in archive.files})
    out = np.asarray(ours(mg.tensor(x)).data)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_torch_state_dict_loads_into_ours_and_gradients_agree():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = digits_like_model(torch.nn).double()
    ours = digits_like_model(nn)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(1).normal(size=(2, 1, 8, 8))
    out = ours(mg.tensor(x))
    (out * out).sum().backward()
    tout = theirs(torch.from_numpy(x))
    (tout * tout).sum().backward()
    np.testing.assert_allclose(np.asarray(out.data), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == tname
        np.testing.assert_allclose(np.asarray(p.grad), tp.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_conv_transpose_layer_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1).double()
    ours = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(2).normal(size=(1, 2, 4, 4))
    out = np.asarray(ours(mg.tensor(x)).data)
    assert out.shape == (1, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(out, theirs(torch.from_numpy(x)).numpy(), rtol=1e-10, atol=1e-12)


def test_flatten_shapes():
    x = mg.tensor(np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, -1)(x).shape == (120,)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    assert nn.Flatten(-2)(x).shape == (2, 3, 20)
    np.testing.assert_array_equal(np.asarray(nn.Flatten()(x).data).ravel(), np.arange(120.0))
    with pytest.raises(ValueError, match="start_dim"):
        nn.Flatten(2, 1)(x)
    with pytest.raises(ValueError, match="start_dim"):
        nn.Flatten(5)(x)


def test_linear_forward_by_hand_and_gradcheck_through_a_model():
    lin = nn.Linear(2, 1)
    lin.load_state_dict({"weight": np.array([[2.0, -1.0]]), "bias": np.array([0.5])})
    out = lin(mg.tensor([[1.0, 3.0], [0.0, 1.0]]))
    np.testing.assert_array_equal(np.asarray(out.data), [[-0.5], [-0.5]])
    mg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(8, 3), nn.Sigmoid())
    x = mg.tensor(np.random.default_rng(0).normal(size=(2, 1, 4, 4)), requires_grad=True)
    assert mg.gradcheck(lambda inp: model(inp).sum(), [x])


def test_only_leaf_tensors_that_require_grad_are_parameters():
    class Net(Module):
        def __init__(self):
            self.weight = mg.tensor(np.ones((2, 2)), requires_grad=True)
            self.constant = mg.tensor(np.ones(2))                 # no grad: not a parameter
            self.cached = self.weight * 3.0                        # intermediate: not a parameter
    assert [n for n, _ in Net().named_parameters()] == ["weight"]
    assert list(Net().state_dict()) == ["weight"]


def test_zero_grad_on_tensor_parameters_is_in_place():
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))
    model(mg.tensor(np.ones((4, 3)))).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert any(np.abs(np.asarray(g)).sum() > 0 for g in grads)
    model.zero_grad()
    for p, g in zip(model.parameters(), grads):
        assert np.asarray(p.grad).sum() == 0 and np.asarray(g).sum() == 0


def test_save_load_round_trip_is_bit_exact_for_tensors(tmp_path):
    mg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    w = model[0].weight.data
    w[0, 0, 0, :] = [np.nan, np.inf, -np.inf]
    w[1, 0, 0, 0] = -0.0
    model.save(tmp_path / "m.npz")
    mg.manual_seed(1)
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    held = other[0].weight.data
    other.load(tmp_path / "m.npz")
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert a.tobytes() == b.tobytes(), k
    assert other[0].weight.data is held or np.shares_memory(other[0].weight.data, held)  # in place
    wrong = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"0\.weight"):
        wrong.load(tmp_path / "m.npz")

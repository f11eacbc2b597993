"""Weights in the ecosystem's format: Module.save/load by file extension, and
a CNN that moves between microgrid and PyTorch through safetensors files,
both ways, with the same outputs."""
import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F
from microgrid import nn

safetensors = pytest.importorskip("safetensors")


def _cnn(m):
    """The same CNN in either library (m is microgrid.nn or torch.nn)."""
    return m.Sequential(
        m.Conv2d(1, 4, 3, padding=1), m.BatchNorm2d(4), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(4, 6, 3, padding="same", padding_mode="reflect"), m.ReLU(), m.Dropout(0.2),
        m.Flatten(), m.Linear(6 * 4 * 4, 10))


def _data(seed=0):
    images, labels = mg.datasets.load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), 64, replace=False)
    return (images[idx] / 16.0)[:, None], labels[idx]


def test_save_and_load_pick_the_format_by_extension(tmp_path):
    mg.manual_seed(1)
    model = _cnn(nn)
    path = model.save(tmp_path / "m.safetensors")
    with open(path, "rb") as f:
        assert not f.read(16).startswith(b"PK")        # not a zip (.npz) archive
    from safetensors.numpy import load_file
    stored = load_file(path)
    assert stored["1.num_batches_tracked"].dtype == np.int64
    assert set(stored) == set(model.state_dict())
    mg.manual_seed(2)
    other = _cnn(nn).load(path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    model.save(tmp_path / "m.npz")
    assert open(tmp_path / "m.npz", "rb").read(2) == b"PK"


def test_bad_safetensors_file_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ValueError, match="bad.safetensors"):
        _cnn(nn).load(bad)
    with pytest.raises(FileNotFoundError):
        _cnn(nn).load(tmp_path / "missing.safetensors")


def test_micrograd_scalar_models_save_as_safetensors(tmp_path):
    model = nn.MLP(2, [3, 1])
    model.save(tmp_path / "mlp.safetensors")
    again = nn.MLP(2, [3, 1]).load(tmp_path / "mlp.safetensors")
    assert [p.data for p in again.parameters()] == [p.data for p in model.parameters()]


def test_microgrid_trained_cnn_runs_the_same_in_torch_and_back(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file
    x, y = _data()
    mg.manual_seed(0)
    model = _cnn(nn)
    opt = mg.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(5):                       # train: weights and running statistics move
        loss = F.cross_entropy(model(mg.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = model.save(tmp_path / "cnn.safetensors")

    tmodel = _cnn(torch.nn).double()
    tmodel.load_state_dict(load_file(path))     # strict: every name and shape matches
    tmodel.eval()
    with torch.no_grad():
        want = tmodel(torch.tensor(x)).numpy()
    got = model(mg.tensor(x)).data
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    # and the reverse: torch trains further, microgrid loads its weights
    tmodel.train()
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1)
    for step in range(3):
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y))
        topt.zero_grad()
        tloss.backward()
        topt.step()
    tmodel.eval()
    save_file({k: v.contiguous() for k, v in tmodel.state_dict().items()}, str(tmp_path / "torch.safetensors"))
    mg.manual_seed(5)
    back = _cnn(nn).load(tmp_path / "torch.safetensors").eval()
    assert int(back[1].num_batches_tracked) == 8
    with torch.no_grad():
        want = tmodel(torch.tensor(x)).numpy()
    np.testing.assert_allclose(back(mg.tensor(x)).data, want, rtol=1e-12, atol=1e-12)

"""PyTorch tutorials run on microgrid with the imports renamed, and train as
torch does (float64, the same initial weights and random inputs).

tests/compat/pytorch_*.py hold the code of two pytorch/tutorials scripts
(credited there).  Each runs in this process twice: on torch with float64 as
the default dtype, recording every layer's initial parameters and every
``randn`` draw; then with ``torch`` renamed to ``microgrid`` in its imports,
with the layers starting from the recorded parameters and ``randn`` giving
the recorded draws.  The numbers printed at full precision and the script's
final variables (outputs, losses, gradients, trained parameters) must agree
to 1e-9.  Without torch, the renamed script still has to run.
"""
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import microgrid as mg
import microgrid.nn as mnn

COMPAT = Path(__file__).parent / "compat"
_RENAMES = [
    (re.compile(r"^import torch\.nn\.functional as F$", re.M), "import microgrid.functional as F"),
    (re.compile(r"^import torch\.nn as nn$", re.M), "import microgrid.nn as nn"),
    (re.compile(r"^import torch\.optim as optim$", re.M), "import microgrid.optim as optim"),
    (re.compile(r"^import torch$", re.M), "import microgrid as torch"),
]
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _exec(source, name):
    namespace = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, name, "exec"), namespace)
    return namespace, out.getvalue()


def _run_torch(script, torch, monkeypatch):
    """The script on torch (float64); what it printed, its namespace, and the
    layers' initial parameters and randn draws in the order they were made."""
    layers, draws = [], []
    for cls in (torch.nn.Linear, torch.nn.Conv2d):
        init = cls.__init__

        def recording(self, *args, _init=init, **kwargs):
            _init(self, *args, **kwargs)
            layers.append({k: v.detach().numpy().copy() for k, v in self.named_parameters()})
        monkeypatch.setattr(cls, "__init__", recording)
    randn = torch.randn

    def recording_randn(*args, **kwargs):
        r = randn(*args, **kwargs)
        draws.append(r.numpy().copy())
        return r
    monkeypatch.setattr(torch, "randn", recording_randn)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    try:
        namespace, printed = _exec((COMPAT / script).read_text(), script)
    finally:
        torch.set_default_dtype(previous)
        monkeypatch.undo()
    return namespace, printed, layers, draws


def _run_microgrid(script, monkeypatch, layers=None, draws=None):
    source = (COMPAT / script).read_text()
    for pattern, replacement in _RENAMES:
        source = pattern.sub(replacement, source)
    assert "import torch" not in source
    if layers is not None:
        queue = list(layers)
        for cls in (mnn.Linear, mnn.Conv2d):
            init = cls.__init__

            def seeded(self, *args, _init=init, **kwargs):
                _init(self, *args, **kwargs)
                for name, value in queue.pop(0).items():
                    getattr(self, name).data[...] = value
            monkeypatch.setattr(cls, "__init__", seeded)
        pending = list(draws)
        monkeypatch.setattr(mg, "randn", lambda *shape, **kw: mg.tensor(pending.pop(0)))
    try:
        return _exec(source, script)
    finally:
        monkeypatch.undo()


def _numbers(text):
    return [float(x) for x in _NUMBER.findall(text)]


def _array(x):
    if hasattr(x, "detach"):               # torch
        return x.detach().numpy()
    return np.asarray(x.data if hasattr(x, "data") else x, dtype=np.float64)


def _close(ours, theirs, what):
    ours, theirs = _array(ours), _array(theirs)
    assert ours.shape == theirs.shape, what
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12, err_msg=what)


def test_polynomial_nn_trains_as_torch(monkeypatch):
    script = "pytorch_polynomial_nn.py"
    torch = pytest.importorskip("torch")
    theirs, printed, layers, draws = _run_torch(script, torch, monkeypatch)
    ours, our_printed = _run_microgrid(script, monkeypatch, layers, draws)
    # the losses every 100 steps and the fitted polynomial, printed at full precision
    np.testing.assert_allclose(_numbers(our_printed), _numbers(printed), rtol=1e-9)
    for name in ("loss", "y_pred", "xx"):
        _close(ours[name], theirs[name], name)
    for p, q in zip(ours["model"].parameters(), theirs["model"].parameters()):
        _close(p, q, "trained parameter")
    assert ours["loss"].item() < 20.0          # it trained (torch reaches about 9)


def test_neural_networks_tutorial_as_torch(monkeypatch):
    script = "pytorch_neural_networks_tutorial.py"
    torch = pytest.importorskip("torch")
    theirs, printed, layers, draws = _run_torch(script, torch, monkeypatch)
    ours, our_printed = _run_microgrid(script, monkeypatch, layers, draws)
    for name in ("out", "output", "loss", "target"):
        _close(ours[name], theirs[name], name)
    assert ours["params"][0].size() == tuple(theirs["params"][0].size())
    assert ours["target"].dtype == mg.int64
    for (name, p), (_, q) in zip(ours["net"].named_parameters(), theirs["net"].named_parameters()):
        _close(p, q, f"parameter {name} after the SGD step")
    assert "MseLossBackward0" in our_printed


@pytest.mark.parametrize("script", ["pytorch_polynomial_nn.py", "pytorch_neural_networks_tutorial.py"])
def test_runs_without_torch(script, monkeypatch):
    """The renamed script needs nothing but microgrid."""
    namespace, printed = _run_microgrid(script, monkeypatch)
    assert printed

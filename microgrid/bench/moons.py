"""micrograd's demo training step as a workload: two moons, 100 points,
MLP(2, [16, 16, 1]), SVM max-margin loss + L2 regularisation (alpha 1e-4),
one forward + backward + SGD update.

``demo_training_step`` is written once, in micrograd's API, and runs
unchanged with ``micrograd.engine.Value`` / ``micrograd.nn.MLP`` and with
``microgrid.engine.Value`` / ``microgrid.nn.MLP``.  PyTorch runs the same
model as ``nn.Linear`` layers on the whole batch, for reference.  All
engines start from the same weights and data.
"""
import math

import numpy as np

from .engines import ScalarEngine, Skip, is_torch
from .harness import Case, Workload

N_POINTS = 100
SIZES = (2, 16, 16, 1)
ALPHA = 1e-4
LEARNING_RATE = 1.0          # micrograd's demo at step 0: 1.0 - 0.9 * k / 100


def two_moons(n=N_POINTS, noise=0.1, seed=0):
    """Two interleaved half circles: X of shape (n, 2), y in {-1, +1}.

    A small generator of our own (no scikit-learn in package code): the
    upper moon is the unit half circle, the lower one is shifted by
    (1, 0.5) and flipped, as in the usual construction.
    """
    rng = np.random.default_rng(seed)
    n_upper = n // 2
    n_lower = n - n_upper
    t_upper = np.linspace(0.0, math.pi, n_upper)
    t_lower = np.linspace(0.0, math.pi, n_lower)
    upper = np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1)
    lower = np.stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1)
    X = np.concatenate([upper, lower]) + rng.normal(0.0, noise, size=(n, 2))
    y = np.concatenate([-np.ones(n_upper), np.ones(n_lower)])
    order = rng.permutation(n)
    return X[order], y[order]


def initial_weights(seed=1337):
    """[(W, b)] per layer, W of shape (out, in), drawn like micrograd's
    Neuron: uniform(-1, 1) weights, zero biases."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-1.0, 1.0, (fan_out, fan_in)), np.zeros(fan_out))
            for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:])]


def demo_loss(Value, model, X, y, alpha=ALPHA):
    """micrograd's demo notebook ``loss()``: SVM max-margin loss plus L2, for
    any engine with micrograd's API.  Returns (loss Value, scores)."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = alpha * sum((p * p for p in model.parameters()))
    return data_loss + reg_loss, scores


def demo_sample_loss(Value, model, alpha=ALPHA):
    """micrograd's demo loss for one sample, the graph batched replay
    records: the hinge loss of the sample's score plus the L2 term, so that
    the mean over the samples is ``demo_loss``.  Returns (root, the inputs
    [x1, x2, label])."""
    inputs = [Value(0.0), Value(0.0), Value(0.0)]
    score = model(inputs[:2])
    reg_loss = alpha * sum((p * p for p in model.parameters()))
    return (1 + -inputs[2] * score).relu() + reg_loss, inputs


def demo_training_step(Value, model, X, y, learning_rate=LEARNING_RATE, alpha=ALPHA):
    """One step of micrograd's demo notebook (its ``loss()`` and update).
    Returns (loss Value, accuracy)."""
    total_loss, scores = demo_loss(Value, model, X, y, alpha)
    accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
    model.zero_grad()
    total_loss.backward()
    for p in model.parameters():
        p.data -= learning_rate * p.grad
    return total_loss, sum(accuracy) / len(accuracy)


def _scalar_modules(engine):
    """(Value, MLP) of micrograd or microgrid."""
    if engine == "micrograd":
        from micrograd.engine import Value
        from micrograd.nn import MLP
        return Value, MLP
    from microgrid.engine import Value
    from microgrid.nn import MLP
    return Value, MLP


def _load_scalar_mlp(model, weights):
    # micrograd's parameter order: layer by layer, neuron by neuron, w then b.
    params = model.parameters()
    flat = [v for W, b in weights for j in range(W.shape[0]) for v in (*W[j], b[j])]
    if len(params) != len(flat):
        raise Skip(f"MLP has {len(params)} parameters, expected {len(flat)}")
    for p, v in zip(params, flat):
        p.data = float(v)


def _flat_scalar_params(model):
    return [p.data for p in model.parameters()]


class _TorchMoonsMLP:
    """The same model and step in PyTorch: Linear layers on the batch."""

    def __init__(self, engine, weights, X, y):
        import torch
        self.torch = torch
        dtype = torch.float64 if engine == "torch64" else torch.float32
        layers = []
        for k, (W, b) in enumerate(weights):
            lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if k < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.X = torch.tensor(X, dtype=dtype)
        self.y = torch.tensor(y, dtype=dtype)

    def step(self, learning_rate=LEARNING_RATE, alpha=ALPHA):
        torch = self.torch
        scores = self.model(self.X).squeeze(1)
        data_loss = torch.relu(1 - self.y * scores).mean()
        reg_loss = alpha * sum((p * p).sum() for p in self.model.parameters())
        total_loss = data_loss + reg_loss
        self.model.zero_grad()
        total_loss.backward()
        with torch.no_grad():
            for p in self.model.parameters():
                p -= learning_rate * p.grad
        return total_loss

    def flat_params(self):
        # In micrograd's order: per layer, per output neuron, weights then bias.
        out = []
        for lin in self.model:
            if isinstance(lin, self.torch.nn.Linear):
                W = lin.weight.detach().double().numpy()
                b = lin.bias.detach().double().numpy()
                for j in range(W.shape[0]):
                    out.extend(W[j].tolist())
                    out.append(float(b[j]))
        return out


class MoonsTrainingStep(Workload):
    name = "moons_step_scalar"
    description = ("micrograd's demo step: two moons (100), MLP(2,[16,16,1]), SVM loss + L2, "
                   "forward + backward + SGD")
    rtol, atol = 1e-9, 1e-12
    rtol32, atol32 = 1e-4, 1e-5
    unit = "sample"
    repeats, quick_repeats = 7, 3

    def count(self, quick):
        return N_POINTS

    def prepare(self, engine, quick):
        X, y = two_moons()
        weights = initial_weights()
        if is_torch(engine):
            ScalarEngine(engine)            # raises Skip when torch is off
            model = _TorchMoonsMLP(engine, weights, X, y)
            step, params = model.step, model.flat_params
            value = lambda loss: float(loss.item())
        else:
            Value, MLP = _scalar_modules(engine)
            model = MLP(SIZES[0], list(SIZES[1:]))
            _load_scalar_mlp(model, weights)
            Xl, yl = X.tolist(), [int(v) for v in y]
            step = lambda: demo_training_step(Value, model, Xl, yl)[0]
            params = lambda: _flat_scalar_params(model)
            value = lambda loss: float(loss.data)

        def numbers():
            loss = step()
            return {"loss": value(loss), "parameters after step": params()}

        return Case(step, numbers)


WORKLOADS = [MoonsTrainingStep()]

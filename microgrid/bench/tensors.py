"""Tensor workloads, written once against PyTorch's names (which microgrid's
tensors follow): the moons MLP on a batch, conv2d -> relu -> max_pool2d,
and an SGD step of a 784-200-1 network.

Each function takes the engine adapter (``TensorEngine``): ``tensor``,
``F`` (functional), ``nn``, ``optim``.  When microgrid has no tensors yet
the microgrid column is skipped ("microgrid.Tensor not available") and
PyTorch still runs.
"""
import numpy as np

from .engines import TensorEngine
from .harness import Case, Workload
from .moons import ALPHA, N_POINTS, initial_weights, two_moons


def moons_mlp_loss(eng, params, X, y, alpha=ALPHA):
    """MLP(2, [16, 16, 1]) on the whole batch, SVM loss + L2; ``params`` is
    [(W (in, out), b)] per layer."""
    h = X
    for k, (W, b) in enumerate(params):
        h = h @ W + b
        if k < len(params) - 1:
            h = eng.F.relu(h)
    scores = h.reshape(-1)
    data_loss = eng.F.relu(1 - y * scores).mean()
    reg_loss = alpha * sum((W * W).sum() + (b * b).sum() for W, b in params)
    return data_loss + reg_loss


class MoonsMLPTensor(Workload):
    isolate = True          # a process per engine: see harness
    warmup_calls = 3        # steady state: the previous step's graph is alive during a step
    name = "moons_mlp_tensor"
    description = "moons MLP(2,[16,16,1]) on tensors, batch 100: SVM loss + L2, forward + backward"
    engines = ("microgrid", "torch64", "torch32")
    rtol, atol = 1e-9, 1e-12
    rtol32, atol32 = 1e-4, 1e-5
    unit = "sample"

    def count(self, quick):
        return N_POINTS

    def prepare(self, engine, quick):
        eng = TensorEngine(engine)
        X, y = two_moons()
        params = [(eng.tensor(W.T, requires_grad=True), eng.tensor(b, requires_grad=True))
                  for W, b in initial_weights()]
        Xt, yt = eng.tensor(X), eng.tensor(y)

        def run():
            loss = moons_mlp_loss(eng, params, Xt, yt)
            loss.backward()
            return loss

        def numbers():
            loss = run()
            out = {"loss": eng.numpy(loss)}
            for k, (W, b) in enumerate(params):
                out[f"dW{k}"], out[f"db{k}"] = eng.grad(W), eng.grad(b)
            return out

        return Case(run, numbers)


def conv_pool_sum(eng, x, w, b):
    """conv2d (8 filters 3x3) -> relu -> 2x2 max pooling -> sum."""
    return eng.F.max_pool2d(eng.F.relu(eng.F.conv2d(x, w, b)), 2).sum()


class ConvPool(Workload):
    isolate = True
    warmup_calls = 3
    engines = ("microgrid", "torch64", "torch32")
    rtol, atol = 1e-9, 1e-10
    rtol32, atol32 = 1e-4, 1e-3
    unit = "image"

    def __init__(self, batch):
        self.batch = batch
        self.name = f"conv_pool_b{batch}"
        self.description = (f"conv2d(1->8, 3x3) -> relu -> max_pool2d 2x2 -> sum, "
                            f"forward + backward, batch {batch} of 1x28x28")

    def size(self, quick):
        return self.batch

    def count(self, quick):
        return self.batch

    def prepare(self, engine, quick):
        eng = TensorEngine(engine)
        rng = np.random.default_rng(2)
        x = eng.tensor(rng.uniform(0.0, 1.0, (self.batch, 1, 28, 28)))
        w = eng.tensor(rng.normal(0.0, 1 / 3, (8, 1, 3, 3)), requires_grad=True)
        b = eng.tensor(rng.normal(0.0, 0.1, 8), requires_grad=True)

        def run():
            out = conv_pool_sum(eng, x, w, b)
            out.backward()
            return out

        def numbers():
            out = run()
            return {"sum": eng.numpy(out), "dw": eng.grad(w), "db": eng.grad(b)}

        return Case(run, numbers)


def mlp784_sgd_step(eng, model, opt, X, y):
    """784-200-1 (relu, sigmoid), BCE, one SGD step."""
    hidden, out = model
    p = eng.F.sigmoid(out(eng.F.relu(hidden(X)))).reshape(-1)
    loss = eng.F.binary_cross_entropy(p, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


class MLP784SGD(Workload):
    isolate = True
    warmup_calls = 3
    name = "mlp784_sgd"
    description = "784-200-1 MLP (relu, sigmoid), BCE, one SGD step (lr 0.1) on a batch of 100"
    engines = ("microgrid", "torch64", "torch32")
    rtol, atol = 1e-9, 1e-12
    rtol32, atol32 = 1e-4, 1e-5
    unit = "sample"
    batch = 100

    def count(self, quick):
        return self.batch

    def prepare(self, engine, quick):
        eng = TensorEngine(engine)
        nn, optim = eng.nn, eng.optim
        rng = np.random.default_rng(3)
        X = eng.tensor(rng.uniform(0.0, 1.0, (self.batch, 784)))
        y = eng.tensor((rng.random(self.batch) < 0.5).astype(np.float64))
        hidden, out = nn.Linear(784, 200), nn.Linear(200, 1)
        if engine == "torch64":
            hidden, out = hidden.double(), out.double()
        # Same initial weights everywhere (PyTorch's default init range).
        for layer, fan_in, fan_out in ((hidden, 784, 200), (out, 200, 1)):
            bound = 1 / np.sqrt(fan_in)
            eng.assign(layer.weight, rng.uniform(-bound, bound, (fan_out, fan_in)))
            eng.assign(layer.bias, rng.uniform(-bound, bound, fan_out))
        model = (hidden, out)
        opt = optim.SGD([hidden.weight, hidden.bias, out.weight, out.bias], lr=0.1)

        def numbers():
            loss = mlp784_sgd_step(eng, model, opt, X, y)
            return {"loss": eng.numpy(loss),
                    "W1 after step": eng.numpy(hidden.weight), "b1": eng.numpy(hidden.bias),
                    "W2 after step": eng.numpy(out.weight), "b2": eng.numpy(out.bias)}

        return Case(lambda: mlp784_sgd_step(eng, model, opt, X, y), numbers)


WORKLOADS = [MoonsMLPTensor(), ConvPool(1), ConvPool(64), MLP784SGD()]

"""The exam's two-neuron network (shared/exam-problems.md #1) as a workload:
forward, binary cross-entropy, backward, on a graph of a few dozen nodes.

This is the size of graph people build by hand, so it measures per-op
overhead.  PyTorch runs it on 0-d float64 tensors.  micrograd 0.1.0 has no
sigmoid and no log: they are added the way its users extend it, as nodes
with a ``_backward`` closure.
"""
import math

from .engines import ScalarEngine
from .harness import Case, Workload

X1, X2, Y = 2.0, -3.0, 1.0
WEIGHTS = {"w11": 0.9, "w12": 0.4, "w10": 0.0,
           "w21": -1.5, "w22": -0.7, "w20": 0.0,
           "w31": -0.2, "w32": 1.6, "w30": 0.0}


def _sigmoid(v):
    return v.sigmoid()


def _log(v):
    return v.log()


def _micrograd_sigmoid(v):
    s = 1.0 / (1.0 + math.exp(-v.data)) if v.data >= 0 else math.exp(v.data) / (1.0 + math.exp(v.data))
    out = type(v)(s, (v,), "sigmoid")

    def _backward():
        v.grad += s * (1.0 - s) * out.grad
    out._backward = _backward
    return out


def _micrograd_log(v):
    out = type(v)(math.log(v.data), (v,), "log")

    def _backward():
        v.grad += out.grad / v.data
    out._backward = _backward
    return out


def two_neuron_loss(w, x1, x2, y, sigmoid=_sigmoid, log=_log):
    """The exam network and its BCE loss; ``w`` maps names to leaves."""
    h1 = (w["w11"] * x1 + w["w12"] * x2 + w["w10"]).relu()
    h2 = sigmoid(w["w21"] * x1 + w["w22"] * x2 + w["w20"])
    yhat = w["w31"] * h1 + w["w32"] * h2 + w["w30"]
    return -(y * log(yhat) + (1 - y) * log(1 - yhat))


class ExamTwoNeuron(Workload):
    name = "exam_two_neuron"
    description = "exam problem #1: two-neuron net, forward + BCE + backward (9 parameters)"
    rtol, atol = 1e-12, 1e-14
    rtol32, atol32 = 1e-5, 1e-6
    # The code's answers from shared/exam-problems.md (the hand-work wrote
    # +1.75 for dL/dw12: the sign is a slip).
    expected = {"loss": 1.071539693, "dL/dw12": -1.751923}
    repeats, quick_repeats = 9, 3

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        ops = (_micrograd_sigmoid, _micrograd_log) if engine == "micrograd" else (_sigmoid, _log)
        w = {k: eng.leaf(v) for k, v in WEIGHTS.items()}

        def run():
            loss = two_neuron_loss(w, X1, X2, Y, *ops)
            eng.backward(loss)
            return loss

        def numbers():
            for v in w.values():         # leaves accumulate: start from zero
                v.grad = None if engine.startswith("torch") else 0.0
            loss = run()
            out = {"loss": eng.value(loss)}
            out.update({f"dL/d{k}": eng.grad(v) for k, v in w.items()})
            return out

        return Case(run, numbers)


WORKLOADS = [ExamTwoNeuron()]

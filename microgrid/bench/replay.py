"""Graph-replay workloads: micrograd's demo step trained with ``Graph``
replay against micrograd's own step (the whole-batch graph replayed, and the
per-sample graph replayed on the 100 samples at once), the cost per node of a
replayed forward plus backward, and the cost of one binary op built from
Python.
"""
import numpy as np

from .engines import ScalarEngine
from .harness import Case, Workload, traced_bytes
from .moons import (LEARNING_RATE, N_POINTS, SIZES, MoonsTrainingStep, _flat_scalar_params,
                    _load_scalar_mlp, _scalar_modules, demo_loss, demo_sample_loss,
                    demo_training_step, initial_weights, two_moons)


def _recorded_demo(model, Value, X, y):
    """micrograd's demo loss graph on fixed inputs, recorded once."""
    import microgrid
    return microgrid.Graph(demo_loss(Value, model, X, y)[0])


class MoonsStepReplay(Workload):
    name = "moons_step_replay"
    description = ("micrograd's demo step (moons, MLP(2,[16,16,1]), SVM loss + L2, SGD): "
                   "microgrid replaying a recorded Graph against micrograd's own step")
    engines = ("microgrid", "micrograd")
    rtol, atol = 1e-9, 1e-12
    unit = "sample"
    repeats, quick_repeats = 7, 3

    def count(self, quick):
        return N_POINTS

    def prepare(self, engine, quick):
        X, y = two_moons()
        Xl, yl = X.tolist(), [int(v) for v in y]
        Value, MLP = _scalar_modules(engine)
        model = MLP(SIZES[0], list(SIZES[1:]))
        _load_scalar_mlp(model, initial_weights())
        if engine == "micrograd":
            def step():
                return float(demo_training_step(Value, model, Xl, yl)[0].data)
        else:
            import microgrid
            graph = _recorded_demo(model, Value, Xl, yl)
            opt = microgrid.optim.SGD(model.parameters(), lr=LEARNING_RATE)

            def step():
                loss = graph.forward()
                opt.zero_grad()
                graph.backward()
                opt.step()
                return loss

        def numbers():
            return {"loss": step(), "parameters after step": _flat_scalar_params(model)}

        return Case(step, numbers)


class MoonsStepBatched(MoonsTrainingStep):
    name = "moons_step_batched"
    description = ("micrograd's demo step with batched replay: the per-sample graph (micrograd's "
                   "MLP code, hinge loss + L2) recorded once and run on the 100 samples as "
                   "lanes, reduction='mean', optim.SGD; against micrograd's own step and torch on "
                   "the batch")
    engines = ("microgrid", "micrograd", "torch64")

    def prepare(self, engine, quick):
        if engine != "microgrid":
            return super().prepare(engine, quick)
        import microgrid
        X, y = two_moons()
        Value, MLP = _scalar_modules(engine)
        model = MLP(SIZES[0], list(SIZES[1:]), fused=False)
        _load_scalar_mlp(model, initial_weights())
        root, inputs = demo_sample_loss(Value, model)
        graph = microgrid.Graph(root, inputs=inputs)
        columns = (X[:, 0].copy(), X[:, 1].copy(), y.astype(np.float64))
        # the update as a microgrid user writes it: the optimiser moves all
        # the scalar parameters in compiled code, not a Python loop over them
        opt = microgrid.optim.SGD(model.parameters(), lr=LEARNING_RATE)

        def step():
            loss = graph.forward(*columns, reduction="mean")    # the mean over the samples
            opt.zero_grad()
            graph.backward(reduction="mean")
            opt.step()
            return loss

        def numbers():
            return {"loss": step(), "parameters after step": _flat_scalar_params(model)}

        return Case(step, numbers)


class ReplayForwardBackward(Workload):
    name = "replay_fwd_bwd"
    description = "Graph.forward() + Graph.backward() on micrograd's demo graph; ns per node"
    engines = ("microgrid",)
    unit = "node"

    def count(self, quick):
        return len(self._setup("microgrid")[1])

    @staticmethod
    def _setup(engine):
        X, y = two_moons()
        Value, MLP = _scalar_modules(engine)
        model = MLP(SIZES[0], list(SIZES[1:]))
        _load_scalar_mlp(model, initial_weights())
        return model, _recorded_demo(model, Value, X.tolist(), [int(v) for v in y])

    def prepare(self, engine, quick):
        model, graph = self._setup(engine)

        def run():
            graph.forward()
            graph.backward()

        def numbers():
            loss = graph.forward()
            model.zero_grad()
            graph.backward()
            return {"loss": loss, "grads": [p.grad for p in model.parameters()]}

        return Case(run, numbers)


class BinaryOpBuild(Workload):
    name = "binary_op_build"
    description = ("10^5 binary ops called from Python (acc = acc * x + y over prebuilt "
                   "leaves, the loop included); ns per op")
    rtol, atol = 1e-9, 1e-12
    rtol32, atol32 = 1e-3, 1e-5
    unit = "op"
    full_size, quick_size = 100_000, 20_000

    def size(self, quick):
        return self.quick_size if quick else self.full_size

    def count(self, quick):
        return self.size(quick)

    def prepare(self, engine, quick):
        eng = ScalarEngine(engine)
        n = self.size(quick) // 2
        rng = np.random.default_rng(2)
        xs = [eng.leaf(v) for v in rng.uniform(0.9999, 1.0001, n).tolist()]
        ys = [eng.leaf(v) for v in rng.uniform(-1e-3, 1e-3, n).tolist()]
        pairs = list(zip(xs, ys))
        start = eng.leaf(1.0)

        def build():
            acc = start
            for x, y in pairs:
                acc = acc * x + y
            return acc

        def numbers():
            # the value only: micrograd's recursive backward cannot take a
            # graph this deep (deep_chain_* checks microgrid's gradients)
            return {"root": eng.value(build())}

        # memory per node where the engine's nodes live on Python's heap
        memory = (lambda: traced_bytes(build)) if engine in ("microgrid", "micrograd") else None
        return Case(build, numbers, memory)


WORKLOADS = [BinaryOpBuild(), MoonsStepReplay(), MoonsStepBatched(), ReplayForwardBackward()]

"""Benchmark of the Hessian-vector product by forward-over-reverse
(microgrid.autograd.forward_ad.graph_hvp) against PyTorch.

Two workloads, float64, Python's garbage collector on, medians over repeats:

- moons: micrograd's demo loss (two moons, 100 points, MLP(2, [16, 16, 1]),
  SVM max-margin loss + L2) with respect to its 337 parameters.  microgrid:
  one forward + backward of the scalar graph, and ``graph_hvp`` on the same
  built graph (so hvp / (forward + backward) is what a Hessian-vector
  product costs beside a training step), and build + hvp together.
  PyTorch: the same loss on the whole batch (matrix products) as a function
  of one flat parameter vector, ``torch.autograd.functional.hvp`` and, for
  reference, its own forward + backward.
- exam: the Hessian of exam problem 1's loss (shared/exam-problems.md: two
  neurons, BCE) with respect to its 9 weights: build the graph, then 9
  ``graph_hvp`` calls, against ``torch.autograd.functional.hessian`` of the
  same loss over 0-d tensors.

    python -m microgrid.bench.forward_hvp [--repeats N]
"""
import argparse
import gc
import statistics
import time

import numpy as np

import microgrid as mg
from microgrid.autograd import forward_ad
from microgrid.bench.moons import ALPHA, SIZES, demo_loss, initial_weights, two_moons


def _median_time(fn, repeats, inner=1):
    fn()                                  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def _microgrid_model():
    model = mg.nn.MLP(SIZES[0], list(SIZES[1:]))
    for layer, (W, b) in zip(model.layers, initial_weights()):
        for j, neuron in enumerate(layer.neurons):
            for k, w in enumerate(neuron.w):
                w.data = float(W[j, k])
            neuron.b.data = float(b[j])
    return model


def moons(repeats):
    X, y = two_moons()
    model = _microgrid_model()
    params = model.parameters()
    v = np.random.default_rng(0).standard_normal(len(params))

    def forward_backward():
        loss, _ = demo_loss(mg.Value, model, X, y)
        loss.backward()
        return loss

    loss, _ = demo_loss(mg.Value, model, X, y)
    t_fb = _median_time(forward_backward, repeats)
    t_hvp = _median_time(lambda: forward_ad.graph_hvp(loss, params, v), repeats)
    t_build_hvp = _median_time(
        lambda: forward_ad.graph_hvp(demo_loss(mg.Value, model, X, y)[0], params, v), repeats)
    result = forward_ad.graph_hvp(loss, params, v)
    print(f"moons MLP(2, [16, 16, 1]), {len(params)} parameters, {len(X)} points, "
          f"{len(mg.topological_order(loss))} nodes")
    print(f"  microgrid forward + backward     {t_fb * 1e3:9.3f} ms")
    print(f"  microgrid graph_hvp (built graph){t_hvp * 1e3:9.3f} ms   "
          f"{t_hvp / t_fb:5.2f}x forward + backward")
    print(f"  microgrid build + graph_hvp      {t_build_hvp * 1e3:9.3f} ms   "
          f"{t_build_hvp / t_fb:5.2f}x forward + backward")
    try:
        import torch
    except ImportError:
        print("  (torch not installed)")
        return
    torch.set_num_threads(1)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    shapes = [(W.shape, b.shape) for W, b in initial_weights()]

    def torch_loss(flat):
        h, k = Xt, 0
        for i, ((n_out, n_in), _) in enumerate(shapes):
            block = flat[k:k + n_out * (n_in + 1)].reshape(n_out, n_in + 1)   # per neuron: w, then b
            k += n_out * (n_in + 1)
            h = h @ block[:, :n_in].T + block[:, n_in]
            if i < len(shapes) - 1:
                h = torch.relu(h)
        data_loss = torch.relu(1 - yt * h[:, 0]).mean()
        return data_loss + ALPHA * (flat * flat).sum()

    flat = torch.tensor([p.data for p in params], dtype=torch.float64)
    vt = torch.tensor(v, dtype=torch.float64)

    def torch_forward_backward():
        p = flat.clone().requires_grad_(True)
        torch_loss(p).backward()

    t_torch_fb = _median_time(torch_forward_backward, repeats, inner=10)
    t_torch_hvp = _median_time(lambda: torch.autograd.functional.hvp(torch_loss, flat, vt),
                               repeats, inner=10)
    _, expected = torch.autograd.functional.hvp(torch_loss, flat, vt)
    error = np.max(np.abs(np.array(result.hvp) - expected.numpy()))
    print(f"  torch forward + backward (batch) {t_torch_fb * 1e3:9.3f} ms")
    print(f"  torch functional.hvp (batch)     {t_torch_hvp * 1e3:9.3f} ms   "
          f"{t_torch_hvp / t_torch_fb:5.2f}x its forward + backward")
    print(f"  microgrid graph_hvp / torch hvp  {t_hvp / t_torch_hvp:9.2f}x   "
          f"(max |difference| {error:.1e})")


def _exam_loss(w):
    w11, w12, w10, w21, w22, w20, w31, w32, w30 = w
    h1 = mg.dot([w11, w12], [2.0, -3.0], w10).relu()
    h2 = mg.dot([w21, w22], [2.0, -3.0], w20).sigmoid()
    return -mg.dot([w31, w32], [h1, h2], w30).log()


EXAM_WEIGHTS = [0.9, 0.4, 0.0, -1.5, -0.7, 0.0, -0.2, 1.6, 0.0]


def exam(repeats):
    eye = np.eye(9)

    def hessian():
        w = [mg.Value(x) for x in EXAM_WEIGHTS]
        loss = _exam_loss(w)
        return [forward_ad.graph_hvp(loss, w, eye[i]).hvp for i in range(9)]

    t_mg = _median_time(hessian, repeats, inner=20)
    print("exam problem 1 loss, Hessian w.r.t. its 9 weights")
    print(f"  microgrid build + 9 graph_hvp    {t_mg * 1e6:9.1f} us")
    try:
        import torch
    except ImportError:
        print("  (torch not installed)")
        return

    def torch_loss(*w):
        w11, w12, w10, w21, w22, w20, w31, w32, w30 = w
        h1 = torch.relu(w11 * 2.0 + w12 * -3.0 + w10)
        h2 = torch.sigmoid(w21 * 2.0 + w22 * -3.0 + w20)
        return -torch.log(w31 * h1 + w32 * h2 + w30)

    tw = tuple(torch.tensor(x, dtype=torch.float64) for x in EXAM_WEIGHTS)
    t_torch = _median_time(lambda: torch.autograd.functional.hessian(torch_loss, tw), repeats, inner=5)
    H = np.array(hessian())
    expected = np.array([[h.item() for h in row] for row in torch.autograd.functional.hessian(torch_loss, tw)])
    print(f"  torch functional.hessian (0-d)   {t_torch * 1e6:9.1f} us   "
          f"microgrid {t_torch / t_mg:5.1f}x faster (max |difference| "
          f"{np.max(np.abs(H - expected)):.1e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    gc.enable()
    moons(args.repeats)
    exam(args.repeats)


if __name__ == "__main__":
    main()

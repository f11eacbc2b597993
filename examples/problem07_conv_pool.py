"""Lecture problem 7: convolution and max pooling by hand.

A 6x6 binary image, two 3x3 filters, cross-correlation (as in every
deep-learning library), stride 1 and 2, then 2x2 max pooling.  The two
filters make a 2x4x4 output: each filter is a channel.  Also checked: the
gradient of the pooled maps' sum with respect to the image, which flows
only through the first maximum of each pooling window.  One pooled cell is
worked out by ``mg.explain(pooled[0, 1, 1, 1], wrt=w)``: its pooling window
and winner, the sum of products, and the chain back to each weight.

Run:  python examples/problem07_conv_pool.py
"""
import numpy as np

import microgrid as mg
from _checks import Report

IMAGE = np.array([[1, 0, 0, 0, 0, 1],
                  [0, 1, 0, 0, 1, 0],
                  [0, 0, 1, 1, 0, 0],
                  [1, 0, 0, 0, 1, 0],
                  [0, 1, 0, 0, 1, 0],
                  [0, 0, 1, 0, 1, 0]], dtype=float)
FILTER1 = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
FILTER2 = np.array([[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]], dtype=float)

HAND = {  # as written in the lecture
    "filter 1, stride 1": [[3, -1, -3, -1], [-3, 1, 0, -3], [-3, -3, 0, 1], [3, -2, -2, -1]],
    "filter 2, stride 1": [[-1, -1, -1, -1], [-1, -1, -2, 1], [-1, -1, -2, 1], [-1, 0, -4, 3]],
    "filter 1, stride 2": [[3, -3], [-3, 0]],
    "filter 1, pooled": [[3, 0], [3, 1]],
    "filter 2, pooled": [[-1, 1], [0, 3]],
}


def correlate(image, kernel, stride=1):
    """Reference: slide the kernel, multiply, add."""
    k = kernel.shape[0]
    n = (image.shape[0] - k) // stride + 1
    return np.array([[np.sum(image[i * stride:i * stride + k, j * stride:j * stride + k] * kernel)
                      for j in range(n)] for i in range(n)])


def pool_grad_reference(maps, kernels, shape):
    """Reference gradient of sum(maxpool2x2(conv(image))) w.r.t. the image:
    each window's first maximum (row-major) passes its filter back."""
    g = np.zeros(shape)
    for m, kern in zip(maps, kernels):
        for pi in range(m.shape[0] // 2):
            for pj in range(m.shape[1] // 2):
                window = m[2 * pi:2 * pi + 2, 2 * pj:2 * pj + 2]
                a, b = np.unravel_index(np.argmax(window), window.shape)
                i, j = 2 * pi + a, 2 * pj + b
                g[i:i + 3, j:j + 3] += kern
    return g


def grid(a):
    return "\n".join("    " + " ".join(f"{v:3g}" for v in row) for row in np.asarray(a))


def main():
    import microgrid.functional as F

    report = Report("Problem 7: convolution and max pooling by hand")
    print("Image:")
    print(grid(IMAGE))

    x = mg.tensor(IMAGE.reshape(1, 1, 6, 6), requires_grad=True)
    w = mg.tensor(np.stack([FILTER1, FILTER2]).reshape(2, 1, 3, 3), requires_grad=True)
    x.label, w.label = "x", "w"
    maps = F.conv2d(x, w, stride=1)
    pooled = F.max_pool2d(maps, 2)
    maps.label, pooled.label = "conv", "pool"

    # One pooled cell worked out by mg.explain: the pooling window and its
    # winner, the winning convolution cell's sum of products, and the chain
    # back to each weight, checked by explain against w.grad.
    report.section("One pooled cell worked out: filter 2, bottom-right (mg.explain)")
    worked = mg.explain(pooled[0, 1, 1, 1], wrt=w)
    for line in worked.window + worked.chain.lines:
        print("  " + line)
    pool_step, conv_step = worked.window_steps
    window = [v for _, v in pool_step.cells]
    report.check("explain: the pool window is the map's 2x2 block",
                 window, correlate(IMAGE, FILTER2)[2:4, 2:4].ravel())
    report.check("explain: sum of products", conv_step.total, correlate(IMAGE, FILTER2)[pool_step.winner[2:]])
    r, c = pool_step.winner[2:]
    report.check("explain: d(cell)/d(filter 2) is the image patch under the winner",
                 worked.chain.grad[1, 0], IMAGE[r:r + 3, c:c + 3])
    report.require("explain: chain agrees with backward()", worked.chain.engine_grad is not None
                   and worked.chain.lines[-1].endswith("agrees at every entry)"))
    report.hand("filter 2, pooled [1, 1] (explained)", str(HAND["filter 2, pooled"][1][1]), pool_step.value)
    w.grad = None
    x.grad = None
    w1 = mg.tensor(FILTER1.reshape(1, 1, 3, 3))
    strided = F.conv2d(x, w1, stride=2)
    maps_np = np.asarray(maps.data)
    pooled_np = np.asarray(pooled.data)

    report.section("microgrid's results")
    print(f"  conv2d(image, [filter 1, filter 2]) has shape {tuple(maps.shape)}: each filter is a channel")
    for c in range(2):
        print(f"  filter {c + 1}, stride 1:")
        print(grid(maps_np[0, c]))
        print(f"  filter {c + 1}, 2x2 max pooling:")
        print(grid(pooled_np[0, c]))
    print("  filter 1, stride 2:")
    print(grid(np.asarray(strided.data)[0, 0]))

    report.section("microgrid against the sliding-window reference")
    report.check("output shape (1, 2, 4, 4)", list(maps.shape), [1, 2, 4, 4])
    ref1, ref2 = correlate(IMAGE, FILTER1), correlate(IMAGE, FILTER2)
    report.check("filter 1, stride 1", maps_np[0, 0], ref1)
    report.check("filter 2, stride 1", maps_np[0, 1], ref2)
    report.check("filter 1, stride 2", np.asarray(strided.data)[0, 0], correlate(IMAGE, FILTER1, 2))
    report.check("max pooling", pooled_np[0],
                 np.stack([r.reshape(2, 2, 2, 2).max(axis=(1, 3)) for r in (ref1, ref2)]))
    total = pooled.sum()
    total.backward()
    report.check("d(sum of pooled maps)/d(image)", np.asarray(x.grad)[0, 0],
                 pool_grad_reference([ref1, ref2], [FILTER1, FILTER2], IMAGE.shape))
    print("  gradient of the pooled sum w.r.t. the image:")
    print(grid(np.asarray(x.grad)[0, 0]))

    report.section("microgrid against the hand-work")
    ours = {
        "filter 1, stride 1": maps_np[0, 0], "filter 2, stride 1": maps_np[0, 1],
        "filter 1, stride 2": np.asarray(strided.data)[0, 0],
        "filter 1, pooled": pooled_np[0, 0], "filter 2, pooled": pooled_np[0, 1],
    }
    for name, hand in HAND.items():
        report.hand_array(name, hand, ours[name])
    report.finish()


if __name__ == "__main__":
    main()

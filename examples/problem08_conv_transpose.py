"""Lecture problem 8: transposed convolution by hand (GAN generators).

Input 2x2 [[3,-1],[2,0]], filter [[2,-2,1],[0,5,2],[1,0,-3]].  The slide pads
the input with two rings of zeros (6x6) and slides the filter over it with
stride 1; the first output row reads -9 3 3 -1.

Why the two constructions below agree: conv_transpose2d scatters each input
pixel times the kernel into the output (output[i+a, j+b] += x[i,j] k[a,b]).
Sliding a kernel over the zero-padded input instead gathers
output[p, q] = sum x[i,j] w[i-p+2, j-q+2], which is the same scatter with
k[a,b] = w[2-a, 2-b]: the kernel rotated by 180 degrees.  PyTorch's
conv_transpose2d (and microgrid's) does not flip the kernel, so the slide's
result equals conv_transpose2d with the rotated filter.

Run:  python examples/problem08_conv_transpose.py
"""
import numpy as np

import microgrid as mg
from _checks import Report

X = np.array([[3, -1], [2, 0]], dtype=float)
W = np.array([[2, -2, 1], [0, 5, 2], [1, 0, -3]], dtype=float)
HAND_FIRST_ROW = [-9, 3, 3, -1]


def slide_reference(x, w):
    """The slide's construction: pad by two rings, then correlate."""
    p = np.pad(x, 2)
    return np.array([[np.sum(p[i:i + 3, j:j + 3] * w) for j in range(4)] for i in range(4)])


def scatter_reference(x, k):
    """Transposed convolution as a scatter of x[i,j] * k."""
    out = np.zeros((4, 4))
    for i in range(2):
        for j in range(2):
            out[i:i + 3, j:j + 3] += x[i, j] * k
    return out


def grid(a):
    return "\n".join("    " + " ".join(f"{v:4g}" for v in row) for row in np.asarray(a))


def main():
    import microgrid.functional as F

    report = Report("Problem 8: transposed convolution by hand")
    x = mg.tensor(X.reshape(1, 1, 2, 2), requires_grad=True)
    w = mg.tensor(W.reshape(1, 1, 3, 3))
    w_rot = mg.tensor(W[::-1, ::-1].copy().reshape(1, 1, 3, 3))

    slide = np.asarray(F.conv2d(x, w, padding=2).data)[0, 0]
    transposed = F.conv_transpose2d(x, w_rot)
    transposed_np = np.asarray(transposed.data)[0, 0]
    unflipped = np.asarray(F.conv_transpose2d(x, w).data)[0, 0]

    report.section("The slide's construction: conv2d(input, filter, padding=2)")
    print(grid(slide))
    report.section("conv_transpose2d(input, filter rotated by 180 degrees)")
    print(grid(transposed_np))
    print("  as a scatter: each input pixel times the rotated filter, placed at its offset:")
    k = W[::-1, ::-1]
    for i in range(2):
        for j in range(2):
            print(f"    x[{i},{j}] = {X[i, j]:g} -> rows {i}..{i + 2}, columns {j}..{j + 2}: "
                  f"{X[i, j]:g} * {k.astype(int).tolist()}")
    report.section("conv_transpose2d(input, filter) without the rotation (differs)")
    print(grid(unflipped))

    report.section("microgrid against the references")
    report.check("slide construction (pad 2, correlate)", slide, slide_reference(X, W))
    report.check("conv_transpose2d with rotated filter", transposed_np, scatter_reference(X, W[::-1, ::-1]))
    report.check("the two constructions agree", transposed_np, slide)
    report.check("conv_transpose2d without rotation = scatter of filter", unflipped,
                 scatter_reference(X, W))
    report.require("without the rotation the result differs", not np.allclose(unflipped, slide))
    # backward of a transposed convolution is a correlation: d sum(out)/dx[i,j] = sum(k)
    transposed.sum().backward()
    report.check("d sum(output)/d input = sum of the filter", np.asarray(x.grad)[0, 0],
                 np.full((2, 2), W.sum()))

    report.section("microgrid against the hand-work (first row of the slide)")
    for j, hand in enumerate(HAND_FIRST_ROW):
        report.hand(f"output[0,{j}]", str(hand), slide[0, j])
    report.finish()


if __name__ == "__main__":
    main()

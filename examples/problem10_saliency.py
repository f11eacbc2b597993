"""Lecture problem 10: a saliency map.

The saliency map of image I0 for class c is |dS_c/dI| at I0: the gradient of
the class score (the logit, before softmax) with respect to the input
pixels, collapsed across channels with max.  A small CNN is trained on the
embedded 8x8 digits; the map takes one backward pass from S_c to the image.
It is printed as text shading and, where matplotlib is present, saved as a
PNG.  The gradient is checked against central differences.

Run:  python examples/problem10_saliency.py [--epochs N] [--png PATH] [--quick]
"""
import argparse
import os

import numpy as np

import microgrid as mg
from _checks import Report
from _training import train_classifier

SHADES = " .:-=+*#%@"


def shade(a):
    """Text shading of a 2-D array scaled to its maximum."""
    a = np.asarray(a, dtype=float)
    top = a.max() if a.max() > 0 else 1.0
    idx = np.minimum((a / top * (len(SHADES) - 1)).round().astype(int), len(SHADES) - 1)
    return "\n".join("    " + "".join(SHADES[i] * 2 for i in row) for row in idx)


def build_model(nn):
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="problem10-out", metavar="DIR",
                        help="folder for the saliency picture, created if missing (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="3 epochs (for tests)")
    args = parser.parse_args()
    if args.quick:
        args.epochs = min(args.epochs, 3)
    import microgrid.nn as nn
    from microgrid.datasets import load_digits, train_test_split

    report = Report("Problem 10: saliency map of a digit classifier")
    images, labels = load_digits()
    X = (images / 16.0).reshape(-1, 1, 8, 8)
    Xtr, Xte, ytr, yte = train_test_split(X, labels, test_size=0.25, seed=0, stratify=labels)

    report.section(f"Training a small CNN on the digits ({args.epochs} epochs)")
    np.random.seed(0)
    if hasattr(mg, "manual_seed"):
        mg.manual_seed(0)
    model = train_classifier(build_model(nn), Xtr, ytr, args.epochs, np.random.default_rng(0))
    logits = np.asarray(model(mg.tensor(Xte)).data)
    acc = float(np.mean(logits.argmax(axis=1) == yte))
    print(f"  test accuracy {100 * acc:.1f}% on {len(Xte)} images")

    # the first test image the model classifies correctly
    k = int(np.flatnonzero(logits.argmax(axis=1) == yte)[0])
    c = int(yte[k])
    I0 = Xte[k:k + 1]
    x = mg.tensor(I0, requires_grad=True)
    scores = model(x)
    S_c = scores[0, c]
    S_c.backward()
    grad = np.asarray(x.grad)
    saliency = np.abs(grad).max(axis=1)[0]       # max across channels

    report.section(f"Saliency of test image {k} (a {c}) for its class, |dS_{c}/dI|")
    print("  the image:")
    print(shade(I0[0, 0]))
    print("  its saliency map:")
    print(shade(saliency))

    report.section("Checks")
    report.check("saliency = max over channels of |grad|", saliency, np.abs(grad[0]).max(axis=0))

    def score(img):
        return float(np.asarray(model(mg.tensor(img)).data)[0, c])

    # Central differences at every pixel where the score is differentiable.
    # Where a pixel sits on a kink (a tie inside a max-pooling window, a ReLU
    # input at exactly 0: common here, since the background is all zeros) the
    # one-sided slopes differ and the derivative is not defined; the engine
    # then takes PyTorch's convention (first maximum, relu'(0) = 0).
    eps = 1e-6
    base = score(I0)
    numeric, analytic, kinks = [], [], 0
    for i in range(8):
        for j in range(8):
            up, down = I0.copy(), I0.copy()
            up[0, 0, i, j] += eps
            down[0, 0, i, j] -= eps
            right, left = (score(up) - base) / eps, (base - score(down)) / eps
            if abs(right - left) > 1e-4 * (1 + abs(right)):
                kinks += 1
                continue
            numeric.append((right + left) / 2)
            analytic.append(grad[0, 0, i, j])
    print(f"  {len(numeric)} pixels differentiable, {kinks} on a kink (skipped)")
    report.check(f"dS_c/dI against central differences ({len(numeric)} pixels)",
                 analytic, numeric, tol=1e-5)
    # how many pixels sit on a kink depends on the trained weights; the check
    # above needs a fair sample of the differentiable ones
    report.require("enough differentiable pixels to check", len(numeric) >= 16, f"{len(numeric)} of 64")
    report.require("the classifier learned", acc >= (0.5 if args.quick else 0.9), f"{100 * acc:.1f}%")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: no PNG, the text shading above is the map)")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(6, 3))
        axes[0].imshow(I0[0, 0], cmap="gray")
        axes[0].set_title(f"test image {k} (class {c})")
        axes[1].imshow(saliency, cmap="hot")
        axes[1].set_title(f"|dS_{c}/dI|")
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        os.makedirs(args.out, exist_ok=True)
        png = os.path.join(args.out, "saliency.png")
        fig.savefig(png, dpi=100)
        plt.close(fig)
        print(f"  saliency map saved to {png}")
    report.finish()


if __name__ == "__main__":
    main()

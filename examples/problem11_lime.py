"""Lecture and homework problem 11: LIME, explaining one prediction.

LIME explains a prediction of a black-box model f at an instance x: sample
perturbations z' around it (for images: switch superpixels off), weigh each
by pi_x(z) = exp(-D(x, z)^2 / sigma^2), and fit a weighted linear model
g(z') = w.z' + b; the largest weights are the explanation.

Here f is a small microgrid network trained on the embedded 8x8 digits, the
superpixels are the 16 blocks of 2x2 pixels (switched off = set to 0), D is
the cosine distance between z' and the all-on vector (LIME's default for
images) and sigma = 0.25.  The weighted least-squares fit is done by microgrid
itself, by gradient descent, and checked against numpy's closed-form solve
of the normal equations (Z^T P Z) w = Z^T P f.  As LIME's "highest weights"
selection does, the K = 4 largest weights are kept and the sparse model is
refitted on them, again by microgrid and checked in closed form.

Run:  python examples/problem11_lime.py [--samples N] [--quick]
"""
import argparse

import numpy as np

import microgrid as mg
from _checks import Report
from _training import train_classifier

BLOCK = 2          # superpixel size: 2x2 pixels, 16 superpixels on 8x8
SIGMA = 0.25       # kernel width
K = 4              # features kept in the sparse explanation


def block_masks():
    masks = []
    for bi in range(8 // BLOCK):
        for bj in range(8 // BLOCK):
            m = np.zeros((8, 8))
            m[bi * BLOCK:(bi + 1) * BLOCK, bj * BLOCK:(bj + 1) * BLOCK] = 1
            masks.append(m)
    return np.array(masks)


def fit_wls(Z, f, pi, steps, optim):
    """Weighted least squares min sum pi (Z w - f)^2 / sum pi, by gradient
    descent in microgrid (the intercept is a column of ones in Z)."""
    P = pi / pi.sum()
    # step 1/L, L = the largest curvature of the loss: GD then converges surely
    L = 2 * np.linalg.eigvalsh(Z.T @ (P[:, None] * Z)).max()
    w = mg.tensor(np.zeros(Z.shape[1]), requires_grad=True)
    Zt, ft, Pt = mg.tensor(Z), mg.tensor(f), mg.tensor(P)
    opt = optim.SGD([w], lr=1.0 / L, momentum=0.9)
    for _ in range(steps):
        residual = Zt @ w - ft
        loss = (Pt * residual * residual).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.asarray(w.data).copy(), float(np.asarray(loss.data))


def closed_form(Z, f, pi):
    P = pi / pi.sum()
    return np.linalg.solve(Z.T @ (P[:, None] * Z), Z.T @ (P * f))


def shade_blocks(weights):
    """The 4x4 superpixel weights as text: + for positive, - for negative."""
    top = np.abs(weights).max() or 1.0
    rows = []
    for bi in range(4):
        cells = []
        for bj in range(4):
            v = weights[bi * 4 + bj] / top
            cells.append(f"{'+' if v > 0 else '-' if v < 0 else ' '}{abs(v):.2f}")
        rows.append("    " + "  ".join(cells))
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="fewer samples and epochs (for tests)")
    args = parser.parse_args()
    epochs = 10
    if args.quick:
        args.samples, epochs = min(args.samples, 400), 4
    import microgrid.functional as F
    import microgrid.nn as nn
    import microgrid.optim as optim
    from microgrid.datasets import load_digits, train_test_split

    report = Report("Problem 11: LIME on a digit classifier")
    images, labels = load_digits()
    X = images.reshape(-1, 64) / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, labels, test_size=0.25, seed=0, stratify=labels)

    report.section(f"The black box: a 64-32-10 network ({epochs} epochs)")
    np.random.seed(0)
    if hasattr(mg, "manual_seed"):
        mg.manual_seed(0)
    rng = np.random.default_rng(0)    # shuffles the batches, then draws the perturbations
    model = train_classifier(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
                             Xtr, ytr, epochs, rng)
    acc = float(np.mean(np.asarray(model(mg.tensor(Xte)).data).argmax(axis=1) == yte))
    print(f"  test accuracy {100 * acc:.1f}%")

    def f(batch):
        """Probability of class c for a batch of 8x8 images."""
        probs = F.softmax(model(mg.tensor(batch.reshape(-1, 64))), dim=1)
        return np.asarray(probs.data)[:, c]

    x = Xte[0].reshape(8, 8)
    c = int(np.asarray(model(mg.tensor(x.reshape(1, 64))).data).argmax())
    print(f"  instance: test image 0, true class {yte[0]}, predicted {c} with p = {f(x)[0]:.3f}")

    report.section(f"Perturbations: {args.samples} samples of 16 superpixels (2x2 blocks)")
    masks = block_masks()
    zs = rng.integers(0, 2, size=(args.samples, 16)).astype(float)
    zs[0] = 1.0                                  # the instance itself
    perturbed = np.einsum("nk,kij->nij", zs, masks) * x
    fz = f(perturbed)
    cos = zs.sum(axis=1) / (np.sqrt(zs.sum(axis=1)) * 4.0 + 1e-12)   # cos(z', 1), |1| = 4
    D = 1.0 - cos
    pi = np.exp(-D ** 2 / SIGMA ** 2)
    print(f"  f(z) from {fz.min():.3f} to {fz.max():.3f}; weights pi from {pi.min():.3g} to {pi.max():.3g}")

    report.section("Weighted linear model g(z') = w.z' + b, fitted by microgrid")
    Z = np.hstack([zs, np.ones((args.samples, 1))])
    steps = args.steps
    w_mg, loss = fit_wls(Z, fz, pi, steps, optim)
    w_np = closed_form(Z, fz, pi)
    print(f"  {steps} steps of gradient descent, weighted squared error {loss:.3g}")
    print("  superpixel weights (scaled to the largest |w|; image blocks in place):")
    print(shade_blocks(w_mg[:16]))
    report.check("weights against the closed-form solve", w_mg, w_np, tol=1e-6)

    top = np.argsort(-np.abs(w_mg[:16]))[:K]
    Zk = np.hstack([zs[:, top], np.ones((args.samples, 1))])
    wk_mg, _ = fit_wls(Zk, fz, pi, steps, optim)
    wk_np = closed_form(Zk, fz, pi)
    print(f"  sparse explanation, the {K} superpixels with the largest weights (block: weight):")
    for b, wv in zip(top, wk_mg[:K]):
        print(f"    block ({b // 4}, {b % 4}) = pixels rows {2 * (b // 4)}-{2 * (b // 4) + 1}, "
              f"columns {2 * (b % 4)}-{2 * (b % 4) + 1}: {wv:+.4f}")
    report.check(f"sparse ({K}-feature) refit against the closed-form solve", wk_mg, wk_np, tol=1e-6)

    report.section("Does the explanation explain? (switching blocks off)")
    positive = [b for b in np.argsort(-w_mg[:16])[:K] if w_mg[b] > 0]
    keep = np.ones(16)
    keep[positive] = 0
    off_top = f((np.einsum("k,kij->ij", keep, masks) * x)[None])[0]
    rand = []
    for _ in range(20):
        keep = np.ones(16)
        keep[rng.choice(16, size=len(positive), replace=False)] = 0
        rand.append(f((np.einsum("k,kij->ij", keep, masks) * x)[None])[0])
    print(f"  p(class {c}): instance {fz[0]:.3f}; the {len(positive)} most positive blocks off "
          f"{off_top:.3f}; {len(positive)} random blocks off {np.mean(rand):.3f} (mean of 20)")
    report.finish()


if __name__ == "__main__":
    main()

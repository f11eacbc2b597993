"""Lecture problem 12: Shapley values and SHAP.

The lecture's game: Lisa alone bakes 30 cookies, David alone 20, both
together 40.  The Shapley value averages each player's marginal contribution
over the orders in which the coalition can form: Lisa 25, David 15.  The
script works this out as the lecture does (each order, each contribution,
the average), then by the subset formula, and checks efficiency, symmetry
and dummy on a larger game.

SHAP applies the same to a model's prediction: the players are input
features (here pixel blocks of the embedded 8x8 digits), v(S) is the score
with the features outside S set to a baseline.  For a linear model the
values have a closed form, phi_i = w_i (x_i - baseline_i), checked to 1e-12.
For a trained 64-32-10 network the 16 blocks of 2x2 pixels are few enough
for the exact value (2**16 coalitions, batched through the model); the
permutation-sampled estimate must cover it within its standard error.  The
64 single pixels are sampled only.  Integrated gradients and gradient x
input, from microgrid's backward, are computed on the same image and
compared with SHAP; the pictures sit beside the image's saliency map
|dS_c/dI| (problem 10's definition).  The maps are printed as text; with
--out DIR and matplotlib they are also saved as DIR/problem12_shap.png.

Run:  python examples/problem12_shapley.py [--epochs N] [--permutations N] [--out DIR] [--quick]
"""
import argparse
import os
import time
from fractions import Fraction
from math import factorial

import numpy as np

import microgrid as mg
from _checks import Report
from _training import train_classifier

SHADES = " .:-=+*#%@"
BLOCK = 2                      # pixel blocks of 2x2: 16 players on an 8x8 image


def coalition_name(members):
    return "{" + ", ".join(members) + "}"


def worked_orders(game, players):
    """The lecture's table: every order, what each player adds on joining."""
    worth = {}

    def v(members):
        key = frozenset(members)
        if key not in worth:
            worth[key] = game[tuple(p for p in players if p in key)]
        return worth[key]
    name = lambda members: coalition_name([p for p in players if p in members])   # a set: one spelling
    table = mg.shapley_orders(game, players)
    for order, contributions in table:
        print(f"  order {', '.join(order)}:")
        before = []
        for p in order:
            after = before + [p]
            gain = contributions[players.index(p)]
            print(f"    {p:<6} joins {name(before):<8} adds "
                  f"v({name(after)}) - v({name(before)}) = "
                  f"{v(after):g} - {v(before):g} = {gain:g}")
            before = after
    print(f"  average over the {len(table)} orders:")
    for j, p in enumerate(players):
        gains = [c[j] for _, c in table]
        print(f"    phi_{p:<6} = ({' + '.join(f'{g:g}' for g in gains)}) / {len(table)} "
              f"= {np.mean(gains):g}")
    return np.mean([c for _, c in table], axis=0)


def worked_subsets(game, players):
    """The subset formula written out term by term (exact fractions)."""
    n = len(players)
    v = lambda members: game[tuple(p for p in players if p in members)]
    phi = []
    for p in players:
        rest = [q for q in players if q != p]
        terms, total = [], Fraction(0)
        for mask in range(1 << len(rest)):
            S = [q for k, q in enumerate(rest) if mask >> k & 1]
            weight = Fraction(factorial(len(S)) * factorial(n - len(S) - 1), factorial(n))
            gain = v(S + [p]) - v(S)
            total += weight * gain
            terms.append(f"{weight} ({v(S + [p]):g} - {v(S):g})")
        print(f"    phi_{p:<6} = {' + '.join(terms)} = {float(total):g}")
        phi.append(float(total))
    return np.array(phi)


def bakery(members):
    """Lisa and Mia bake alike (one oven: 30 alone, 45 together); David adds
    20 to no baker, 10 beside one; Carl adds nothing."""
    bakers = len({"Lisa", "Mia"} & members)
    return [0, 30, 45][bakers] + ("David" in members) * (20 if bakers == 0 else 10)


def block_groups():
    """Player label of each pixel: its 2x2 block, numbered row by row."""
    rows, cols = np.indices((8, 8))
    return (rows // BLOCK) * (8 // BLOCK) + cols // BLOCK


def shade(a):
    """Text shading of a non-negative 2-D array scaled to its maximum."""
    a = np.asarray(a, dtype=float)
    top = a.max() if a.max() > 0 else 1.0
    idx = np.minimum((a / top * (len(SHADES) - 1)).round().astype(int), len(SHADES) - 1)
    return "\n".join("    " + "".join(SHADES[i] * 2 for i in row) for row in idx)


def signed(a, width=3):
    """A signed 2-D map as integers -9..9 scaled to the largest |value| ('.' for 0)."""
    a = np.asarray(a, dtype=float)
    top = np.abs(a).max() or 1.0
    q = np.round(a / top * 9).astype(int)
    return "\n".join("    " + "".join(f"{v:+{width}d}" if v else " " * (width - 1) + "." for v in row)
                     for row in q)


def block_grid(phi):
    return "\n".join("    " + "  ".join(f"{phi[r * 4 + c]:+.4f}" for c in range(4)) for r in range(4))


def train_mlp(epochs, nn, Xtr, ytr):
    np.random.seed(0)
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return train_classifier(model, Xtr, ytr, epochs, np.random.default_rng(0))


def save_picture(out_dir, image, c, maps):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: no PNG, the text maps above are the pictures)")
        return
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "problem12_shap.png")
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.4))
    axes = axes.ravel()
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"the image (class {c})")
    for ax, (title, m, kind) in zip(axes[1:], maps):
        if kind == "magnitude":
            ax.imshow(m, cmap="hot")
        else:                               # signed: red for, blue against the class
            top = np.abs(m).max() or 1.0
            ax.imshow(m, cmap="bwr", vmin=-top, vmax=top)
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  picture saved to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder to create for the PNG (default: text only)")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and orders (for tests)")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.permutations = min(args.epochs, 4), min(args.permutations, 300)
    import microgrid.nn as nn
    from microgrid.datasets import load_digits, train_test_split

    t0 = time.perf_counter()
    report = Report("Problem 12: Shapley values and SHAP")

    # ------------------------------------------------------------------ 1
    report.section("The lecture's game: Lisa and David share cookies")
    players = ["Lisa", "David"]
    cookies = {(): 0, ("Lisa",): 30, ("David",): 20, ("Lisa", "David"): 40}
    for members, worth in cookies.items():
        print(f"  v({coalition_name(members)}) = {worth}")
    print("  each order in which the coalition forms, and what each player adds:")
    by_orders = worked_orders(cookies, players)
    print("  the subset formula, phi_i = sum over S without i of |S|! (n-|S|-1)! / n! (v(S+i) - v(S)):")
    by_hand_subsets = worked_subsets(cookies, players)
    by_subsets = mg.shapley_values(cookies, players)
    report.hand("phi_Lisa", "25", by_subsets[0])
    report.hand("phi_David", "15", by_subsets[1])
    report.check("orders = subset formula (microgrid)", by_orders, by_subsets, tol=1e-12)
    report.check("subset formula in exact fractions", by_hand_subsets, by_subsets, tol=1e-12)
    report.check("efficiency: phi_Lisa + phi_David = v(N)", by_subsets.sum(), 40, tol=1e-12)

    report.section("The properties, on a bigger bakery")
    four = ["Lisa", "Mia", "David", "Carl"]
    print("  Mia bakes as Lisa does (together 45, one oven), David adds 20 to no baker and 10")
    print("  beside one, Carl adds nothing; 4 players, 24 orders, 16 coalitions")
    phi4 = mg.shapley_values(lambda s: bakery(s), four)
    phi4_orders = mg.shapley_values(lambda s: bakery(s), four, method="orders")
    print("  " + ", ".join(f"phi_{p} = {v:.4f}" for p, v in zip(four, phi4)))
    report.check("orders = subset formula", phi4_orders, phi4, tol=1e-12)
    report.check("efficiency: the values add up to v(N) = 55", phi4.sum(), bakery(set(four)), tol=1e-12)
    report.check("symmetry: phi_Lisa = phi_Mia", phi4[0], phi4[1], tol=1e-12)
    report.check("dummy: phi_Carl = 0", phi4[3], 0.0, tol=1e-12)
    with_carl = mg.shapley_values(lambda s: cookies[tuple(p for p in players if p in s)],
                                  players + ["Carl"])
    report.check("a dummy changes nobody's value (25, 15, 0)", with_carl, [25, 15, 0], tol=1e-12)

    # ------------------------------------------------------------------ 2
    images, labels = load_digits()
    X = images.reshape(-1, 64) / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, labels, test_size=0.25, seed=0, stratify=labels)
    groups = block_groups()

    report.section("SHAP for a linear model: the closed form phi_i = w_i (x_i - baseline_i)")
    mg.manual_seed(1)
    linear = nn.Linear(64, 10)
    W = np.asarray(linear.weight.data)
    x_lin, base_lin, c_lin = Xte[1], Xtr.mean(axis=0), 3
    print(f"  nn.Linear(64, 10) as initialised (the closed form holds for any weights), "
          f"score of class {c_lin},")
    print("  test image 1, baseline = the mean training image")
    closed = W[c_lin] * (x_lin - base_lin)
    closed_blocks = np.array([closed[groups.reshape(-1) == g].sum() for g in range(16)])
    lin_exact = mg.shap_values(linear, x_lin, base_lin, groups=groups.reshape(-1), target=c_lin)
    report.check("exact SHAP, 16 blocks (2**16 coalitions)", lin_exact, closed_blocks, tol=1e-12)
    lin_sampled, lin_se = mg.shap_sample(linear, x_lin, base_lin, target=c_lin, permutations=20, seed=0)
    report.check("sampled SHAP, 64 pixels, 20 orders", lin_sampled, closed, tol=1e-12)
    report.check("its standard error is 0 (every order agrees)", lin_se.max(), 0.0, tol=1e-12)
    report.check("integrated gradients (8 steps)",
                 mg.integrated_gradients(linear, x_lin, base_lin, target=c_lin, steps=8), closed, tol=1e-12)
    report.check("gradient x (input - baseline)",
                 mg.gradient_x_input(linear, x_lin, base_lin, target=c_lin), closed, tol=1e-12)

    # ------------------------------------------------------------------ 3
    report.section(f"A trained 64-32-10 network on the digits ({args.epochs} epochs)")
    model = train_mlp(args.epochs, nn, Xtr, ytr)
    logits = np.asarray(model(mg.tensor(Xte)).data)
    acc = float(np.mean(logits.argmax(axis=1) == yte))
    print(f"  test accuracy {100 * acc:.1f}% on {len(Xte)} images")
    report.require("the classifier learned", acc >= (0.7 if args.quick else 0.9), f"{100 * acc:.1f}%")
    k = int(np.flatnonzero(logits.argmax(axis=1) == yte)[0])
    c = int(yte[k])
    x = Xte[k]
    baseline = np.zeros(64)                  # a black image: the digits' background

    def score(batch):
        """S_c, the class-c logit, by a plain call of the model."""
        return np.asarray(model(mg.tensor(np.atleast_2d(batch))).data)[:, c]
    f_x, f_b = score(x)[0], score(baseline)[0]
    print(f"  explained: test image {k}, a {c}; S_{c}(x) = {f_x:.4f}, S_{c}(black) = {f_b:.4f}, "
          f"difference {f_x - f_b:.4f}")
    print(shade(x.reshape(8, 8)))

    report.section("SHAP with the 16 blocks of 2x2 pixels as players (black outside the coalition)")
    t = time.perf_counter()
    exact = mg.shap_values(model, x, baseline, groups=groups.reshape(-1), target=c)
    t_exact = time.perf_counter() - t
    print(f"  exact: 2**16 = 65536 coalitions through the model in {t_exact:.2f} s; values by block:")
    print(block_grid(exact))
    report.check("efficiency: sum of exact values = S_c(x) - S_c(black)", exact.sum(), f_x - f_b, tol=1e-10)
    t = time.perf_counter()
    sampled, se = mg.shap_sample(model, x, baseline, groups=groups.reshape(-1), target=c,
                                 permutations=args.permutations, seed=0)
    t_sampled = time.perf_counter() - t
    # a block of black pixels adds nothing in any order: its error is 0 up to
    # rounding and its estimate must be exact, not "within 0 standard errors"
    miss = np.abs(sampled - exact)
    varies = se > 1e-12
    z = np.where(varies, miss / np.where(varies, se, 1.0), np.where(miss <= 1e-12, 0.0, np.inf))
    print(f"  sampled: {args.permutations} random orders ({args.permutations * 15 + 2} coalitions) "
          f"in {t_sampled:.2f} s; standard errors from {se.min():.2g} to {se.max():.2g}")
    print(f"  |sampled - exact| / standard error over the {int(varies.sum())} blocks that vary: median "
          f"{np.median(z[varies]):.2f}, largest {z[varies].max():.2f}")
    print(f"  ({int(np.sum(z[varies] <= 2))} of them within 2 standard errors); the other "
          f"{int((~varies).sum())} blocks are all black: error 0, estimate exact "
          f"({'yes' if np.all(miss[~varies] <= 1e-12) else 'NO'})")
    report.require("the sampled estimate covers the exact values", bool(np.all(z <= 4)),
                   "every block within 4 standard errors")
    report.check("efficiency of the sampled values", sampled.sum(), f_x - f_b, tol=1e-10)

    report.section("SHAP with the 64 pixels as players (sampled only: 2**64 coalitions)")
    t = time.perf_counter()
    pixel_shap, pixel_se = mg.shap_sample(model, x, baseline, target=c,
                                          permutations=args.permutations, seed=1)
    t_pixels = time.perf_counter() - t
    print(f"  {args.permutations} orders ({args.permutations * 63 + 2} coalitions) in {t_pixels:.2f} s; "
          f"largest |phi| {np.abs(pixel_shap).max():.4f}, largest standard error {pixel_se.max():.4f}")
    print("  phi per pixel (scaled to -9..9):")
    print(signed(pixel_shap.reshape(8, 8)))
    report.check("efficiency: sum = S_c(x) - S_c(black)", pixel_shap.sum(), f_x - f_b, tol=1e-10)
    # a black pixel equals the baseline: adding it changes nothing (a dummy player)
    report.check(f"the {int(np.sum(x == 0))} black pixels get 0", pixel_shap[x == 0],
                 np.zeros(int(np.sum(x == 0))), tol=1e-12)

    report.section("Gradient attributions from backward()")
    xt = mg.tensor(x[None], requires_grad=True)
    S = model(xt)
    seed = np.zeros((1, 10))
    seed[0, c] = 1.0
    S.backward(seed)
    grad = np.asarray(xt.grad)[0]
    saliency = np.abs(grad).reshape(8, 8)
    print(f"  saliency |dS_{c}/dI| (problem 10's map, one backward pass):")
    print(shade(saliency))
    eps = 1e-6
    numeric = np.array([(score(x + eps * e)[0] - score(x - eps * e)[0]) / (2 * eps) for e in np.eye(64)])
    # a central difference straddling a ReLU kink is not the derivative: keep the
    # pixels whose one-sided slopes agree (problem 10 does the same)
    right = np.array([(score(x + eps * e)[0] - f_x) / eps for e in np.eye(64)])
    left = np.array([(f_x - score(x - eps * e)[0]) / eps for e in np.eye(64)])
    smooth = np.abs(right - left) <= 1e-4 * (1 + np.abs(right))
    report.check(f"dS_c/dI against central differences ({int(smooth.sum())} pixels)",
                 grad[smooth], numeric[smooth], tol=1e-5)
    gxi = mg.gradient_x_input(model, x, target=c)
    report.check("gradient x input = x * dS_c/dI", gxi, x * grad, tol=1e-12)
    print("  gradient x input (scaled to -9..9):")
    print(signed(gxi.reshape(8, 8)))
    print("  integrated gradients from black: completeness gap |sum - (S_c(x) - S_c(black))|")
    gaps = {}
    for steps in (8, 32, 128, 512):
        ig_n = mg.integrated_gradients(model, x, baseline, target=c, steps=steps)
        gaps[steps] = abs(ig_n.sum() - (f_x - f_b))
        print(f"    {steps:>4} midpoint steps: {gaps[steps]:.3g}")
    ig = ig_n
    # a ReLU network is piecewise linear along the path: the midpoint rule errs
    # only in the few steps that straddle a kink, so the gap shrinks with steps
    report.require("completeness to the error of the steps", gaps[512] <= 1e-3 * abs(f_x - f_b)
                   and gaps[512] <= gaps[8], f"gap {gaps[512]:.2g} at 512 steps, {gaps[8]:.2g} at 8")
    print("  integrated gradients, 512 steps (scaled to -9..9):")
    print(signed(ig.reshape(8, 8)))

    report.section("SHAP against the gradient attributions (same image, same baseline)")
    ig_blocks = np.array([ig[groups.reshape(-1) == g].sum() for g in range(16)])
    gxi_blocks = np.array([gxi[groups.reshape(-1) == g].sum() for g in range(16)])
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])
    top = lambda a: set(np.argsort(-a)[:4].tolist())
    where = lambda blocks: ", ".join(f"({b // 4}, {b % 4})" for b in sorted(blocks))
    print(f"  by block: correlation with exact SHAP: integrated gradients {corr(ig_blocks, exact):.3f}, "
          f"gradient x input {corr(gxi_blocks, exact):.3f}")
    print(f"  by pixel: correlation with sampled SHAP: integrated gradients {corr(ig, pixel_shap):.3f}, "
          f"gradient x input {corr(gxi, pixel_shap):.3f}")
    print(f"  the 4 blocks (row, column) SHAP ranks highest: {where(top(exact))}; integrated gradients share "
          f"{len(top(exact) & top(ig_blocks))} of them, gradient x input {len(top(exact) & top(gxi_blocks))}")
    print(f"  sums: SHAP {exact.sum():.4f}, integrated gradients {ig.sum():.4f}, gradient x input "
          f"{gxi.sum():.4f} (only the first two must add up to {f_x - f_b:.4f})")

    if args.out:
        exact_map = exact[groups]
        save_picture(args.out, x.reshape(8, 8), c, [
            (f"saliency |dS_{c}/dI|", saliency, "magnitude"),
            ("SHAP, 2x2 blocks (exact)", exact_map, "signed"),
            (f"SHAP, pixels ({args.permutations} orders)", pixel_shap.reshape(8, 8), "signed"),
            ("integrated gradients", ig.reshape(8, 8), "signed"),
            ("gradient x input", gxi.reshape(8, 8), "signed")])
    else:
        print("  (pass --out DIR to save the maps side by side as DIR/problem12_shap.png)")
    print(f"  total time {time.perf_counter() - t0:.1f} s")
    report.finish()


if __name__ == "__main__":
    main()

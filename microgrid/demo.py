"""``microgrid demo``: the project's showcase, trained from the embedded data.

1. micrograd's moons demo with the scalar engine: ``MLP(2, [16, 16, 1])``,
   SVM max-margin loss plus L2, SGD with a decaying step, full batch.
2. A small CNN on the embedded 8x8 digits with tensors (Conv2d, ReLU,
   MaxPool2d, Linear, Adam).
3. Pictures: the moons decision boundary, and a grid of digit predictions
   with their saliency maps |d score_c / d input| (one backward pass through
   an input tensor that requires grad).  PNG files when matplotlib is
   installed (Agg backend); otherwise the pictures are drawn as text, in the
   terminal and in ``.txt`` files.

Progress shows on a terminal with tqdm when it is installed, else as a
one-line bar of our own on stderr, redrawn at most ten times a second; when
stderr is not a terminal, as one line per epoch and a summary.  ``run(out_dir, seed, quick)`` does the work and returns
its numbers; ``main(argv)`` is the command line (``microgrid demo``).
"""
import argparse
import contextlib
import os
import sys
import time

import numpy as np

from . import nn
from .core._engine import Value, sum as vsum
from .datasets import batches, load_digits, make_moons, train_test_split
from .nn import manual_seed
from .optim import SGD, Adam

__all__ = ["main", "run"]


# -- progress ------------------------------------------------------------------

class _LineBar:
    """A one-line progress bar on stderr, for when tqdm is not installed.

    On a terminal it redraws in place, at most once per ``min_interval``
    seconds (and at the end): redrawing on every step costs time and, in a
    recording of the terminal, hundreds of lines.  When the stream is not a
    terminal (a log file, a pipe) nothing is redrawn: lines written through
    ``write`` (the demo's one line per epoch) go out as they are, and
    ``close`` adds one summary line."""

    def __init__(self, total, desc, stream=None, width=24, min_interval=0.1, clock=time.perf_counter):
        self.total, self.desc, self.width = total, desc, width
        self.stream = stream or sys.stderr
        self.interactive = _is_terminal(self.stream)
        self.min_interval, self.clock = min_interval, clock
        self.n = 0
        self.postfix = ""
        self._drawn = 0
        self.start = clock()
        self._last_draw = None
        if self.interactive:
            self._draw()

    def set_postfix_str(self, text):
        self.postfix = text

    def update(self, n=1):
        self.n += n
        if self.interactive and (self.n >= self.total
                                 or self.clock() - self._last_draw >= self.min_interval):
            self._draw()

    def _line(self):
        filled = int(self.width * self.n / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = self.clock() - self.start
        return f"{self.desc} [{bar}] {self.n}/{self.total} {elapsed:5.1f}s {self.postfix}"

    def _draw(self):
        line = self._line()
        self.stream.write("\r" + line.ljust(self._drawn))
        self._drawn = len(line)
        self.stream.flush()
        self._last_draw = self.clock()

    def write(self, text):
        """Print a line above the bar (tqdm's ``write``)."""
        if not self.interactive:
            print(text, flush=True)
            return
        self.stream.write("\r" + " " * self._drawn + "\r")
        self.stream.flush()
        print(text, flush=True)
        self._drawn = 0
        self._draw()

    def close(self):
        if self.interactive:
            self._draw()                    # the final state, whatever the interval
            self.stream.write("\n")
        else:
            self.stream.write(self._line().rstrip() + "\n")
        self.stream.flush()


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):    # no isatty, or a closed stream
        return False


def _progress(total, desc):
    """tqdm on a terminal when installed (redrawing at most 10 times a
    second, like the fallback); otherwise, and whenever stderr is not a
    terminal, the fallback bar, which then prints lines instead of redraws."""
    if _is_terminal(sys.stderr):
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, file=sys.stderr, leave=True, dynamic_ncols=True,
                        mininterval=0.1)
    return _LineBar(total, desc)


def _say(text, bar=None):
    """A result line on stdout; above the progress bar while one is shown."""
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def _few_blas_threads():
    """Limits BLAS to one thread while training when threadpoolctl is
    installed: the demo's matrices are small (32 x 512), and BLAS threads cost
    more in hand-offs than they save (measured: 10x slower on a busy 2-core
    machine).  Without threadpoolctl the environment's settings stand."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# -- 1. moons with the scalar engine -------------------------------------------

def moons_loss(model, X, y, alpha=1e-4):
    """micrograd's demo loss: mean SVM max-margin loss plus alpha * |p|^2.
    ``y`` holds -1/+1.  Returns (loss Value, accuracy)."""
    inputs = [[Value(float(a)), Value(float(b))] for a, b in X]
    scores = [model(row) for row in inputs]
    losses = [(1 + -float(yi) * score).relu() for yi, score in zip(y, scores)]
    data_loss = vsum(losses) * (1.0 / len(losses))
    reg_loss = alpha * vsum(p * p for p in model.parameters())
    accuracy = np.mean([(yi > 0) == (s.data > 0) for yi, s in zip(y, scores)])
    return data_loss + reg_loss, float(accuracy)


def train_moons(seed, steps, n_samples):
    X, y01 = make_moons(n_samples, noise=0.1, seed=seed)
    y = 2 * y01 - 1
    model = nn.MLP(2, [16, 16, 1])
    opt = SGD(model.parameters(), lr=1.0)
    bar = _progress(steps, "moons MLP")
    history = []
    try:
        for k in range(steps):
            loss, acc = moons_loss(model, X, y)
            opt.zero_grad()
            loss.backward()
            opt.param_groups[0]["lr"] = 1.0 - 0.9 * k / 100    # micrograd's schedule
            opt.step()
            history.append((loss.data, acc))
            bar.set_postfix_str(f"loss={loss.data:.4f} acc={acc:.0%}")
            bar.update(1)
            if k % 10 == 9 or k == steps - 1:
                _say(f"moons step {k + 1:3d}: loss {loss.data:.4f}, accuracy {acc:.1%}", bar)
    finally:
        bar.close()
    return model, X, y, history


def moons_grid(model, X, resolution):
    """Scores of the model on a resolution x resolution grid covering X."""
    lo, hi = X.min(axis=0) - 0.5, X.max(axis=0) + 0.5
    xs = np.linspace(lo[0], hi[0], resolution)
    ys = np.linspace(lo[1], hi[1], resolution)
    scores = np.empty((resolution, resolution))
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            scores[i, j] = model([float(xv), float(yv)]).data
    return xs, ys, scores


def boundary_text(model, X, y, cols=64, rows=24):
    """The decision boundary as characters: ' ' / ':' for the two regions,
    'o' / 'x' for the data points of class -1 / +1 (rows top to bottom)."""
    lo, hi = X.min(axis=0) - 0.5, X.max(axis=0) + 0.5
    canvas = []
    for r in range(rows):
        yv = hi[1] - (r + 0.5) * (hi[1] - lo[1]) / rows
        line = []
        for c in range(cols):
            xv = lo[0] + (c + 0.5) * (hi[0] - lo[0]) / cols
            line.append(":" if model([float(xv), float(yv)]).data > 0 else " ")
        canvas.append(line)
    for (xv, yv), label in zip(X, y):
        c = int((xv - lo[0]) / (hi[0] - lo[0]) * cols)
        r = int((hi[1] - yv) / (hi[1] - lo[1]) * rows)
        if 0 <= r < rows and 0 <= c < cols:
            canvas[r][c] = "x" if label > 0 else "o"
    border = "+" + "-" * cols + "+"
    return "\n".join([border] + ["|" + "".join(line) + "|" for line in canvas] + [border])


# -- 2. digits with tensors ------------------------------------------------------

def digits_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 4 x 4
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def _as_input(images):
    from . import tensor
    return tensor((images / 16.0)[:, None, :, :])


def digits_accuracy(model, images, labels, batch_size=500):
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(_as_input(images[start:start + batch_size]))
        correct += int((np.asarray(logits.data).argmax(axis=1) == labels[start:start + batch_size]).sum())
    return correct / len(images)


def train_digits(seed, epochs, train_limit=None):
    from . import functional as F

    images, labels = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(images, labels, test_size=0.25,
                                                        seed=seed, stratify=labels)
    if train_limit:
        X_train, y_train = X_train[:train_limit], y_train[:train_limit]
    model = digits_model()
    lr = 2e-3
    opt = Adam(model.parameters(), lr=lr)
    batch_size = 32
    steps_per_epoch = -(-len(X_train) // batch_size)
    bar = _progress(epochs * steps_per_epoch, "digits CNN")
    history = []
    try:
        for epoch in range(epochs):
            opt.param_groups[0]["lr"] = lr * (1 - epoch / epochs)   # linear decay
            model.train()
            total, count = 0.0, 0
            for xb, yb in batches(X_train, y_train, batch_size=batch_size, seed=seed * 1000 + epoch):
                loss = F.cross_entropy(model(_as_input(xb)), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.data) * len(yb)
                count += len(yb)
                bar.set_postfix_str(f"loss={float(loss.data):.4f}")
                bar.update(1)
            model.eval()
            acc = digits_accuracy(model, X_test, y_test)
            history.append((total / count, acc))
            _say(f"digits epoch {epoch + 1}: train loss {total / count:.4f}, test accuracy {acc:.2%}", bar)
    finally:
        bar.close()
    return model, X_test, y_test, history


def saliency(model, images):
    """|d score_c / d input| for each image's predicted class c, all images in
    one backward pass (the images do not interact, so the gradient of the sum
    of their scores w.r.t. one image is the gradient of its own score)."""
    from . import tensor
    x = tensor((images / 16.0)[:, None, :, :], requires_grad=True)
    logits = model(x)
    predicted = np.asarray(logits.data).argmax(axis=1)
    mask = np.zeros(logits.shape)
    mask[np.arange(len(images)), predicted] = 1.0
    (logits * tensor(mask)).sum().backward()
    # one input channel: the max over channels is the channel itself
    return predicted, np.abs(np.asarray(x.grad))[:, 0]


SHADES = " .:-=+*#%@"


def shade_text(image):
    """An 8x8 array as characters, darker for larger values."""
    image = np.asarray(image, dtype=np.float64)
    top = image.max() or 1.0
    rows = []
    for row in image:
        rows.append("".join(SHADES[min(int(v / top * (len(SHADES) - 1) + 0.5), len(SHADES) - 1)] * 2
                            for v in row))
    return rows


# -- pictures -------------------------------------------------------------------

def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None when not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def save_moons_png(plt, path, xs, ys, scores, X, y):
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.contourf(xs, ys, scores > 0, levels=[-0.5, 0.5, 1.5], colors=["#f6c9b8", "#bcd4ea"], alpha=0.9)
    ax.contour(xs, ys, scores, levels=[0.0], colors="k", linewidths=1)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm_r", s=18, edgecolors="k", linewidths=0.4)
    ax.set_title("moons: MLP(2, [16, 16, 1]) decision boundary")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_saliency_png(plt, path, images, labels, predicted, maps):
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.0))
    for i in range(n):
        ok = predicted[i] == labels[i]
        axes[0, i].imshow(images[i], cmap="gray_r", vmin=0, vmax=16)
        axes[0, i].set_title(f"{predicted[i]}" + ("" if ok else f" ({labels[i]})"),
                             color="green" if ok else "red", fontsize=10)
        axes[1, i].imshow(maps[i], cmap="hot")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("saliency")
    fig.suptitle("digits: prediction and |d score / d pixel|", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def saliency_text(images, labels, predicted, maps, count=4):
    blocks = []
    for i in range(min(count, len(images))):
        head = f"digit {labels[i]}, predicted {predicted[i]}"
        left, right = shade_text(images[i]), shade_text(maps[i])
        lines = [f"{head:<36}", f"{'input':<16}    {'saliency':<16}"]
        lines += [f"{a}    {b}" for a, b in zip(left, right)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- the whole demo ---------------------------------------------------------------

def run(out_dir="microgrid-demo-out", seed=0, quick=False):
    """Trains both models, writes the pictures into ``out_dir``, and returns a
    dict of the numbers (final losses and accuracies, files, seconds)."""
    started = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    manual_seed(seed)
    files = []

    steps, n_samples = (15, 60) if quick else (100, 100)
    t0 = time.perf_counter()
    moons_model, X, y, moons_history = train_moons(seed, steps, n_samples)
    moons_seconds = time.perf_counter() - t0
    moons_model.save(os.path.join(out_dir, "moons_mlp.npz"))
    files.append("moons_mlp.npz")

    epochs, limit = (1, 300) if quick else (16, None)
    t0 = time.perf_counter()
    with _few_blas_threads():
        cnn, X_test, y_test, digits_history = train_digits(seed, epochs, train_limit=limit)
    digits_seconds = time.perf_counter() - t0
    cnn.save(os.path.join(out_dir, "digits_cnn.npz"))
    files.append("digits_cnn.npz")

    shown = 8
    predicted, maps = saliency(cnn, X_test[:shown])
    _say(f"saliency maps of {shown} test digits (one backward pass): predicted "
         f"{' '.join(map(str, predicted))}, true {' '.join(map(str, y_test[:shown]))}")

    plt = _pyplot()
    if plt is not None:
        xs, ys, scores = moons_grid(moons_model, X, 40 if quick else 100)
        save_moons_png(plt, os.path.join(out_dir, "moons_boundary.png"), xs, ys, scores, X, y)
        save_saliency_png(plt, os.path.join(out_dir, "digits_saliency.png"),
                          X_test[:shown], y_test[:shown], predicted, maps)
        files += ["moons_boundary.png", "digits_saliency.png"]
    else:
        text = boundary_text(moons_model, X, y)
        _say("matplotlib is not installed: the decision boundary as text "
             "(':' scores > 0, 'x' class +1, 'o' class -1)")
        _say(text)
        with open(os.path.join(out_dir, "moons_boundary.txt"), "w") as f:
            f.write(text + "\n")
        sal = saliency_text(X_test[:shown], y_test[:shown], predicted, maps)
        _say(sal)
        with open(os.path.join(out_dir, "digits_saliency.txt"), "w") as f:
            f.write(sal + "\n")
        files += ["moons_boundary.txt", "digits_saliency.txt"]

    seconds = time.perf_counter() - started
    result = {
        "moons_loss": moons_history[-1][0], "moons_accuracy": moons_history[-1][1],
        "moons_seconds": moons_seconds,
        "digits_loss": digits_history[-1][0], "digits_accuracy": digits_history[-1][1],
        "digits_seconds": digits_seconds,
        "files": [os.path.join(out_dir, f) for f in files], "seconds": seconds,
    }
    _say(f"moons: accuracy {result['moons_accuracy']:.1%} after {steps} steps ({moons_seconds:.1f} s); "
         f"digits: test accuracy {result['digits_accuracy']:.2%} after {epochs} epochs ({digits_seconds:.1f} s)")
    _say(f"wrote {', '.join(result['files'])} in {seconds:.1f} s")
    return result


def _seed(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be non-negative, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="microgrid demo",
        description="Train micrograd's moons MLP (scalar engine) and a small CNN on the "
                    "embedded digits (tensors); save the decision boundary and saliency maps.")
    parser.add_argument("--out", default="microgrid-demo-out", metavar="DIR",
                        help="directory for pictures and models (default: %(default)s)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a few seconds' run, for tests")
    args = parser.parse_args(argv)
    run(args.out, seed=args.seed, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

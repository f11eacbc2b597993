"""Embedded data sets and the small tools to split and batch them.

Nothing here downloads anything: ``make_moons`` generates two interleaving
half circles, ``load_digits`` reads the 1797 8x8 handwritten digits shipped in
this package (see ``DIGITS_LICENSE.txt`` for their origin and licence).
``train_test_split`` and ``batches`` follow scikit-learn's and PyTorch's
conventions closely enough that code written for those reads the same here.
"""
import math
import numbers
import operator
from importlib import resources

import numpy as np

__all__ = ["make_moons", "load_digits", "train_test_split", "batches"]

DIGITS_FILE = "digits.npz"
DIGITS_COUNT = 1797


def _generator(seed, name="seed"):
    """A numpy Generator from an int seed, a Generator, or None (microgrid's
    global generator, so ``microgrid.manual_seed`` makes runs repeatable)."""
    if seed is None:
        from ..nn import default_generator
        return default_generator()
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int, a numpy Generator or None, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name} must be non-negative, got {seed}")
    return np.random.default_rng(int(seed))


def _count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return operator.index(value)


def make_moons(n_samples=100, noise=0.1, seed=0):
    """Two interleaving half circles in the plane, with Gaussian noise.

    Returns ``X`` (n_samples, 2) float64 and ``y`` (n_samples,) int64: class 0
    is the upper arc (cos t, sin t), class 1 the lower arc
    (1 - cos t, 1/2 - sin t), t evenly spaced over [0, pi]; the classes get
    n_samples // 2 and the rest, and the rows are shuffled.
    """
    n_samples = _count(n_samples, "n_samples", 1)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a real number, got {type(noise).__name__}")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be finite and non-negative, got {noise}")
    rng = _generator(seed)
    n_upper = n_samples // 2
    n_lower = n_samples - n_upper
    t_upper = np.linspace(0.0, math.pi, n_upper)
    t_lower = np.linspace(0.0, math.pi, n_lower)
    X = np.concatenate([
        np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1),
        np.stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1),
    ])
    y = np.concatenate([np.zeros(n_upper, np.int64), np.ones(n_lower, np.int64)])
    order = rng.permutation(n_samples)
    X, y = X[order], y[order]
    if noise:
        X = X + rng.normal(0.0, float(noise), size=X.shape)
    return np.ascontiguousarray(X, dtype=np.float64), y


def load_digits():
    """The 1797 8x8 handwritten digits of the UCI ML repository (test set of
    "Optical Recognition of Handwritten Digits", E. Alpaydin and C. Kaynak,
    1998, CC BY 4.0).

    Returns ``(images, labels)``: float64 (1797, 8, 8) with integer values
    0..16, and int64 (1797,) with the digit 0..9 each image shows.  Every
    call returns fresh arrays.
    """
    with resources.files(__name__).joinpath(DIGITS_FILE).open("rb") as f:
        with np.load(f, allow_pickle=False) as archive:
            images = archive["images"]
            labels = archive["labels"]
    if images.shape != (DIGITS_COUNT, 8, 8) or labels.shape != (DIGITS_COUNT,):
        raise ValueError(f"the embedded {DIGITS_FILE} is damaged: shapes {images.shape}, {labels.shape}")
    return images.astype(np.float64), labels.astype(np.int64)


def _as_arrays(arrays, name="arrays"):
    if not arrays:
        raise ValueError(f"{name}: at least one array is required")
    out = [np.asarray(a) for a in arrays]
    for i, a in enumerate(out):
        if a.ndim == 0:
            raise ValueError(f"{name}[{i}] must have at least one dimension")
    n = len(out[0])
    for i, a in enumerate(out):
        if len(a) != n:
            raise ValueError(f"{name} must have the same length: {name}[0] has {n} rows, {name}[{i}] has {len(a)}")
    return out, n


def _test_count(test_size, n):
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise TypeError(f"test_size must be a float in (0, 1) or an int, got {type(test_size).__name__}")
    if isinstance(test_size, numbers.Integral):
        if not 0 < test_size < n:
            raise ValueError(f"test_size={test_size} must be between 1 and n - 1 = {n - 1}")
        return int(test_size)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size={test_size} must be in (0, 1) as a fraction")
    n_test = math.ceil(test_size * n)   # scikit-learn rounds the test share up
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size} leaves an empty train or test set for {n} samples")
    return n_test


def _stratified_test_indices(labels, n_test, rng):
    """Test indices holding each class in proportion; the rounding remainder
    goes to the classes with the largest fractional shares."""
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse)
    if counts.min() < 2:
        raise ValueError("stratify: every class needs at least 2 members")
    exact = n_test * counts / len(labels)
    quota = np.floor(exact).astype(np.int64)
    remainder = n_test - int(quota.sum())
    if remainder:
        # ties broken at random so no class is favoured by its position
        keys = np.lexsort((rng.random(len(classes)), -(exact - quota)))
        quota[keys[:remainder]] += 1
    chosen = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        chosen.append(rng.permutation(members)[:quota[c]])
    return np.concatenate(chosen)


def train_test_split(*arrays, test_size=0.25, seed=0, shuffle=True, stratify=None):
    """Splits arrays of equal length into train and test rows.

    Returns ``[a_train, a_test, b_train, b_test, ...]`` as scikit-learn does.
    ``test_size`` is a fraction (rounded up) or a count; ``stratify`` takes
    labels whose class proportions both parts keep.
    """
    arrays, n = _as_arrays(arrays)
    if n < 2:
        raise ValueError(f"arrays need at least 2 rows to split, got {n}")
    n_test = _test_count(test_size, n)
    if stratify is not None:
        if not shuffle:
            raise ValueError("stratify requires shuffle=True")
        labels = np.asarray(stratify)
        if labels.ndim != 1 or len(labels) != n:
            raise ValueError(f"stratify must be 1-d with {n} entries, got shape {labels.shape}")
        rng = _generator(seed)
        test_idx = _stratified_test_indices(labels, n_test, rng)
        mask = np.zeros(n, dtype=bool)
        mask[test_idx] = True
        train_idx = rng.permutation(np.flatnonzero(~mask))
        test_idx = rng.permutation(test_idx)
    elif shuffle:
        order = _generator(seed).permutation(n)
        train_idx, test_idx = order[n_test:], order[:n_test]
    else:
        train_idx, test_idx = np.arange(n - n_test), np.arange(n - n_test, n)
    out = []
    for a in arrays:
        out += [a[train_idx], a[test_idx]]
    return out


def batches(*arrays, batch_size, shuffle=True, seed=None, drop_last=False):
    """Yields mini-batches of rows: a tuple of arrays per batch, or the bare
    array when one array is given.  The last, smaller batch is kept unless
    ``drop_last``.  ``seed=None`` draws the order from microgrid's global
    generator (``microgrid.manual_seed``)."""
    arrays, n = _as_arrays(arrays)
    batch_size = _count(batch_size, "batch_size", 1)
    order = _generator(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    # validated above, before the first batch is asked for
    return _iterate(arrays, order, batch_size, stop)


def _iterate(arrays, order, batch_size, stop):
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        batch = tuple(a[idx] for a in arrays)
        yield batch[0] if len(batch) == 1 else batch

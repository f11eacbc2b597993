"""microgrid.datasets: the moons generator, the embedded digits, splitting
and batching."""
import hashlib

import numpy as np
import pytest

import microgrid as mg
from microgrid.datasets import batches, load_digits, make_moons, train_test_split

# sha256 of the uint8 image bytes followed by the uint8 label bytes, as read
# from scikit-learn's digits.csv.gz when digits.npz was built
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def test_make_moons_shapes_types_and_balance():
    X, y = make_moons(101, noise=0.1, seed=3)
    assert X.shape == (101, 2) and X.dtype == np.float64
    assert y.shape == (101,) and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}
    assert np.bincount(y).tolist() == [50, 51]


def test_make_moons_without_noise_lies_on_the_two_half_circles():
    X, y = make_moons(60, noise=0.0, seed=0)
    upper, lower = X[y == 0], X[y == 1]
    assert np.allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0)
    assert (upper[:, 1] >= -1e-12).all()
    assert np.allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0)
    assert (lower[:, 1] <= 0.5 + 1e-12).all()


def test_make_moons_noise_is_gaussian_with_the_given_scale_and_seeded():
    clean, y0 = make_moons(4000, noise=0.0, seed=7)
    noisy, y1 = make_moons(4000, noise=0.2, seed=7)
    assert np.array_equal(y0, y1)   # same shuffle for the same seed
    residual = noisy - clean
    assert abs(residual.std() - 0.2) < 0.01 and abs(residual.mean()) < 0.01
    again, _ = make_moons(4000, noise=0.2, seed=7)
    assert np.array_equal(noisy, again)
    other, _ = make_moons(4000, noise=0.2, seed=8)
    assert not np.array_equal(noisy, other)


@pytest.mark.parametrize("kwargs, error", [
    (dict(n_samples=0), ValueError), (dict(n_samples=2.5), TypeError),
    (dict(noise=-0.1), ValueError), (dict(noise=float("nan")), ValueError),
    (dict(noise="big"), TypeError), (dict(seed=-1), ValueError), (dict(seed=1.5), TypeError),
])
def test_make_moons_rejects_bad_arguments(kwargs, error):
    name = next(iter(kwargs))
    with pytest.raises(error, match=name):
        make_moons(**kwargs)


def test_load_digits_shape_range_labels_and_checksum():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float64
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 16
    assert np.array_equal(images, np.rint(images))
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    digest = hashlib.sha256(images.astype(np.uint8).tobytes() + labels.astype(np.uint8).tobytes())
    assert digest.hexdigest() == DIGITS_SHA256


def test_load_digits_returns_fresh_arrays():
    a, la = load_digits()
    a[0, 0, 0] = 99.0
    la[0] = 42
    b, lb = load_digits()
    assert b[0, 0, 0] == 0.0 and lb[0] == 0


def test_load_digits_matches_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    theirs = sklearn_datasets.load_digits()
    images, labels = load_digits()
    assert np.array_equal(images, theirs.images)
    assert np.array_equal(labels, theirs.target)


def test_digits_licence_ships_with_the_data():
    from importlib import resources
    text = resources.files("microgrid.datasets").joinpath("DIGITS_LICENSE.txt").read_text()
    assert "Alpaydin" in text and "Kaynak" in text and "CC BY 4.0" in text


def test_train_test_split_partitions_rows_consistently():
    X = np.arange(40).reshape(20, 2)
    y = np.arange(20)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, seed=1)
    assert len(X_te) == 5 and len(X_tr) == 15
    assert np.array_equal(X_tr[:, 0] // 2, y_tr) and np.array_equal(X_te[:, 0] // 2, y_te)
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == list(range(20))
    again = train_test_split(X, y, test_size=0.25, seed=1)
    assert np.array_equal(again[3], y_te)


def test_train_test_split_sizes_and_no_shuffle():
    y = np.arange(10)
    tr, te = train_test_split(y, test_size=0.33)      # rounded up, as scikit-learn
    assert len(te) == 4 and len(tr) == 6
    tr, te = train_test_split(y, test_size=3, shuffle=False)
    assert tr.tolist() == list(range(7)) and te.tolist() == [7, 8, 9]


def test_train_test_split_stratified_keeps_class_proportions():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    tr, te = train_test_split(labels, test_size=0.2, stratify=labels, seed=5)
    assert np.bincount(te).tolist() == [10, 6, 4]
    assert np.bincount(tr).tolist() == [40, 24, 16]
    # rounding remainders still give the requested test size
    _, te = train_test_split(labels, test_size=7, stratify=labels, seed=5)
    assert len(te) == 7 and (np.bincount(te, minlength=3) >= 1).all()


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(test_size=0.0), ValueError, "test_size"), (dict(test_size=1.5), ValueError, "test_size"),
    (dict(test_size=10), ValueError, "test_size"), (dict(test_size="a"), TypeError, "test_size"),
    (dict(stratify=np.arange(3)), ValueError, "stratify"),
    (dict(stratify=np.zeros(10), shuffle=False), ValueError, "stratify"),
])
def test_train_test_split_rejects_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        train_test_split(np.arange(10), **kwargs)


def test_train_test_split_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="same length"):
        train_test_split(np.arange(10), np.arange(9))


def test_batches_cover_every_row_once_in_shuffled_order():
    X = np.arange(23) * 10
    y = np.arange(23)
    seen = []
    sizes = []
    for xb, yb in batches(X, y, batch_size=5, seed=0):
        assert np.array_equal(xb, yb * 10)
        seen += yb.tolist()
        sizes.append(len(yb))
    assert sizes == [5, 5, 5, 5, 3]
    assert sorted(seen) == list(range(23)) and seen != list(range(23))


def test_batches_options():
    X = np.arange(10)
    assert [b.tolist() for b in batches(X, batch_size=4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(b) for b in batches(X, batch_size=4, drop_last=True)] == [4, 4]
    mg.manual_seed(3)
    first = [b.tolist() for b in batches(X, batch_size=10)]
    mg.manual_seed(3)
    assert [b.tolist() for b in batches(X, batch_size=10)] == first


def test_batches_validates_before_iterating():
    with pytest.raises(ValueError, match="batch_size"):
        batches(np.arange(3), batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        batches(np.arange(3), batch_size=2.0)
    with pytest.raises(ValueError, match="same length"):
        batches(np.arange(3), np.arange(4), batch_size=2)

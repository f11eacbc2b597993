"""Rebuilds ``digits.npz`` from scikit-learn's copy of the UCI digits.

Run once by a maintainer (``python -m microgrid.datasets._build_digits``);
microgrid itself never imports scikit-learn.  The archive holds two uint8
arrays, ``images`` (1797, 8, 8) with values 0..16 and ``labels`` (1797,),
in the row order of the source file.
"""
import gzip
import os

import numpy as np


def build(out_path=None):
    import sklearn  # only here, at build time

    source = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "digits.csv.gz")
    with gzip.open(source, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    if table.shape != (1797, 65) or table.min() < 0 or table.max() > 16:
        raise ValueError(f"unexpected contents in {source}: shape {table.shape}")
    rounded = np.rint(table)
    if not np.array_equal(rounded, table):
        raise ValueError(f"{source} holds non-integer values")
    images = rounded[:, :64].astype(np.uint8).reshape(1797, 8, 8)
    labels = rounded[:, 64].astype(np.uint8)
    out_path = out_path or os.path.join(os.path.dirname(__file__), "digits.npz")
    np.savez_compressed(out_path, images=images, labels=labels)
    return out_path


if __name__ == "__main__":
    print(build())

"""Shared test helpers."""
import os
import pathlib
import subprocess
import sys

import microgrid

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


TESTS = ROOT / "tests"


def child_env(*extra_paths, **variables):
    """The environment of a child interpreter that imports the same microgrid
    as the tests (an installed one, or an in-place build), never the
    uncompiled sources of the checkout.  Run such children with a ``cwd``
    other than the checkout's root, which would shadow the package too."""
    package_parent = str(pathlib.Path(microgrid.__file__).resolve().parent.parent)
    path = os.pathsep.join([package_parent, *map(str, extra_paths)])
    return dict(os.environ, PYTHONPATH=path, MPLBACKEND="Agg", **variables)


def run_example(name, *args, cwd=None, timeout=600):
    """Run examples/<name> in a fresh interpreter (see ``child_env``)."""
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd or TESTS,
                          env=child_env(), capture_output=True, text=True, timeout=timeout)

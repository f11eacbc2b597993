"""Shared test helpers, and the guard that makes the suite test the built
microgrid however it is started."""
import importlib.machinery
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _compiled_in(folder):
    return any((folder / "core" / f"_engine{suffix}").exists()
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


# `python -m pytest` puts the working directory first on sys.path, so from the
# checkout `import microgrid` would find its uncompiled sources and fail half
# way.  Unless the checkout holds a build (pip install -e ., or an in-place
# build), drop it from the path so the installed package is imported.
if not _compiled_in(ROOT / "microgrid"):
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or os.curdir).resolve() != ROOT]
    sys.modules.pop("microgrid", None)
try:
    import microgrid
except ImportError as exc:
    pytest.exit(f"microgrid is not built ({exc}): run `pip install .` (or `pip install -e . "
                f"--no-build-isolation`) in {ROOT}, then the tests", returncode=4)

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

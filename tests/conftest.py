"""Shared test helpers."""
import os
import pathlib
import subprocess
import sys

import microgrid

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name, *args, cwd=None, timeout=600):
    """Run examples/<name> in a fresh interpreter that imports the same
    microgrid as the tests (an installed one, or an in-place build), never
    the uncompiled sources of the checkout."""
    package_parent = str(pathlib.Path(microgrid.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=package_parent, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)

"""The list of workloads ``microgrid bench`` knows, in run order.

To add workloads, write a module in ``microgrid/bench/`` that defines
``WORKLOADS = [...]`` (instances of ``harness.Workload``) and add its name to
``MODULES``.  (conv_kernels.py is a standalone script of the kernels alone,
``python -m microgrid.bench.conv_kernels``, not part of the harness.)
"""
import fnmatch
import importlib

MODULES = ("scalar", "exam", "moons", "replay", "tensors")


def all_workloads():
    workloads = []
    for name in MODULES:
        workloads.extend(importlib.import_module(f"{__package__}.{name}").WORKLOADS)
    names = [w.name for w in workloads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuntimeError(f"workload names registered twice: {duplicates}")
    return workloads


def select(workloads, patterns):
    """Workloads matching any of ``patterns``: an exact name, a glob
    (``deep_chain_*``) or a prefix (``deep_chain``).  Unknown patterns raise
    ValueError naming them."""
    if not patterns:
        return list(workloads)
    chosen, unknown = set(), []
    for pattern in patterns:
        hits = [w.name for w in workloads
                if w.name == pattern or fnmatch.fnmatchcase(w.name, pattern)
                or w.name.startswith(pattern)]
        if not hits:
            unknown.append(pattern)
        chosen.update(hits)
    if unknown:
        raise ValueError(f"--only: no workload matches {', '.join(map(repr, unknown))}; "
                         f"see `microgrid bench --list`")
    return [w for w in workloads if w.name in chosen]

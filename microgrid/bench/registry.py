"""The list of workloads ``microgrid bench`` knows, in run order.

To add workloads, write a module in ``microgrid/bench/`` that defines
``WORKLOADS = [...]`` (instances of ``harness.Workload``) and add its name to
``MODULES``.  Modules named in ``OPTIONAL_MODULES`` are included when they
exist and define ``WORKLOADS``.
"""
import fnmatch
import importlib

MODULES = ("scalar", "exam", "moons", "tensors")
OPTIONAL_MODULES = ("replay", "tensor_ops", "conv_kernels")


def _is_workload_list(items):
    from .harness import Workload
    return isinstance(items, (list, tuple)) and all(isinstance(w, Workload) for w in items)


def all_workloads():
    workloads = []
    for name in MODULES:
        workloads.extend(importlib.import_module(f"{__package__}.{name}").WORKLOADS)
    for name in OPTIONAL_MODULES:
        # Optional modules may be standalone scripts (or need a feature this
        # build lacks): only a list of Workload objects joins the registry.
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ImportError:
            continue
        items = getattr(module, "WORKLOADS", None)
        if _is_workload_list(items):
            workloads.extend(items)
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

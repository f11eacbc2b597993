"""One workload on one engine in a process of its own (``python -m
microgrid.bench.child``), for ``harness.run_in_child``.

Reads a pickled request from stdin ({"workload", "engine", "quick",
"repeats", "use_gc", "threads", "torch_first", "pool", "out"}), and writes to the
file "out" a pickled {"numbers", "timing", "process"} or a fragment with
"skipped".  The parent compares the numbers with the other engines'.

Why a process per engine: allocators keep state.  torch, once it has run,
has changed glibc's malloc behaviour for the whole process (its large
frees raise the mmap threshold), so a microgrid run after torch looks much
faster than the same run for a user who never imported torch.  Here each
engine starts from a fresh interpreter; ``torch_first`` reproduces the other
case on purpose.
"""
import pickle
import sys

# Steps of torch's version of the workload before microgrid's, when asked
# to reproduce a process in which torch ran first.
TORCH_FIRST_STEPS = 5


def _limit_threads(n, need_torch):
    """One thread for BLAS (and torch, when this process uses it), as the
    parent's settings say; returns the threadpoolctl context or None."""
    if need_torch:
        import torch
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def _run_torch_first(workload, quick):
    """Run the workload a few steps on torch (float64), then drop it."""
    from .engines import unavailable_reason
    if unavailable_reason("torch64") is not None:
        return False
    case = workload.prepare("torch64", quick)
    case.numbers()
    for _ in range(TORCH_FIRST_STEPS):
        case.run()
    return True


def run_request(request):
    from . import harness, registry
    from .engines import is_torch

    by_name = {w.name: w for w in registry.all_workloads()}
    workload = by_name[request["workload"]]
    engine = request["engine"]
    torch_first = request["torch_first"] and engine == "microgrid"
    limits = _limit_threads(request["threads"], is_torch(engine) or torch_first)
    try:
        process = "own process"
        if engine == "microgrid" and not request.get("pool", True):
            import microgrid
            microgrid.set_cache_limit(0)
            process += ", pool off"
        if torch_first:
            process += (", torch ran first" if _run_torch_first(workload, request["quick"])
                        else " (torch_first asked, torch not installed)")
        outcome = harness.prepare_case(workload, engine, request["quick"])
        if isinstance(outcome, dict):
            return outcome
        case, numbers, check_call_s = outcome
        timing = harness.time_case(case, request["repeats"], request["quick"],
                                   request["use_gc"], check_call_s, workload.warmup_calls)
        if "skipped" in timing:
            return timing
        return {"numbers": numbers, "timing": timing, "process": process}
    finally:
        if limits is not None:
            limits.restore_original_limits()


def main():
    request = pickle.load(sys.stdin.buffer)
    sys.stdout = sys.stderr          # stray prints must not mix with anything
    result = run_request(request)
    with open(request["out"], "wb") as f:
        pickle.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The measuring loop: check that engines agree, then time them.

A workload (subclass of ``Workload``) prepares one ``Case`` per engine: a
timed callable and a function that computes the numbers to compare (values
and gradients).  For every workload the harness

1. computes the numbers on each engine and compares them with the reference
   engine (microgrid when it runs, else the first engine that does) within
   the workload's stated tolerance; an engine that disagrees is not timed;
2. warms up (the check's call, plus one more call when that was short; it
   also picks how many calls make one repeat, so that microsecond-sized
   workloads are not timed one call at a time);
3. times ``repeats`` repeats with ``time.perf_counter`` and keeps the median
   and the minimum per call (under --quick, repeats stop after ~1 s).  The garbage collector stays on unless asked:
   its pauses are part of what a user of each engine pays.

Every timed record also carries the minor page faults per call over the
timed repeats (``getrusage``'s ``ru_minflt``; None where the OS has none): a
step that maps fresh memory and faults its pages in pays for it in time.

Workloads with ``isolate = True`` (the tensor ones) run each engine in a
child process of its own (``microgrid.bench.child``), so no engine's
allocator state (what torch's allocator did to glibc's malloc thresholds,
say) colours another's; the child returns the numbers to compare and the
times.  With ``torch_first`` the microgrid child first runs the workload on
torch, as a user who imported and used torch before microgrid would.

Ratios are engine median / microgrid median (above 1: slower than microgrid).
"""
import gc
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .engines import ENGINE_NAMES, Skip, unavailable_reason


class Case:
    """One workload prepared on one engine.

    ``run``: the timed callable (no arguments); what it returns is released
    outside the timed region.  ``numbers``: a callable returning a dict of
    name -> array-like, the values and gradients compared across engines; it
    runs before any timing.  ``memory``: optionally, a callable returning the
    bytes one call's result keeps alive (``traced_bytes`` measures it),
    reported per unit beside the time per unit.
    """

    def __init__(self, run, numbers, memory=None):
        self.run = run
        self.numbers = numbers
        self.memory = memory


def traced_bytes(build):
    """The bytes that what ``build()`` returns keeps allocated (tracemalloc:
    Python's allocators, which every engine's Python objects go through; a
    C++ engine's own heap is not seen), measured after a first call so that
    caches and free lists are warm."""
    import tracemalloc
    build()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


class Workload:
    """Base class: override ``prepare`` (and the class attributes)."""

    name = ""
    description = ""
    engines = ENGINE_NAMES
    unit = None            # e.g. "node": report ns per node
    # Tolerances of the cross-engine check, as numpy.allclose: float64
    # engines against the reference, and float32 (torch32) against it.
    rtol, atol = 1e-9, 1e-12
    rtol32, atol32 = 1e-3, 1e-5
    repeats, quick_repeats = 7, 3
    quick_skip = None      # a reason to skip the whole workload under --quick
    isolate = False        # time each engine in a child process of its own
    # Untimed calls before timing, beyond the check's: a workload whose
    # allocators (microgrid's pool, torch's caches) reach their steady state
    # only after a few steps is timed in that state, as a training loop runs.
    warmup_calls = 0
    # Known answers (name -> value) checked on the reference engine, e.g. the
    # hand-worked numbers of an exam problem.
    expected = None

    def size(self, quick):
        """The problem size recorded with the results (or None)."""
        return None

    def count(self, quick):
        """Units (of ``unit``) one timed call processes, for ns per unit."""
        return None

    def prepare(self, engine, quick):
        """A ``Case`` for ``engine`` (a name); raise ``Skip`` when the
        engine cannot run this workload."""
        raise NotImplementedError


def _as_float_array(x):
    return np.asarray(x, dtype=np.float64).ravel()


def compare(numbers, reference, rtol, atol):
    """Compare two dicts of numbers as numpy.allclose would, except that
    equal infinities and NaN against NaN agree; returns a check record."""
    names = sorted(set(reference) ^ set(numbers))
    if names:
        return {"passed": False, "error": f"quantities differ: {names}"}
    worst_abs, worst_rel, worst_name, passed = 0.0, 0.0, None, True
    for key in reference:
        got, want = _as_float_array(numbers[key]), _as_float_array(reference[key])
        if got.shape != want.shape:
            return {"passed": False, "error": f"{key}: shape {got.shape} != {want.shape}"}
        with np.errstate(invalid="ignore", over="ignore"):
            same = (got == want) | (np.isnan(got) & np.isnan(want))
            finite = np.isfinite(got) & np.isfinite(want)
            # Any disagreement involving inf or NaN counts as infinitely far.
            diff = np.where(same, 0.0, np.where(finite, np.abs(got - want), np.inf))
            bad = diff > atol + rtol * np.where(finite, np.abs(want), 0.0)
            rel = diff / np.maximum(np.abs(np.where(finite, want, 1.0)), np.finfo(np.float64).tiny)
        if bad.any():
            passed = False
        if diff.size:
            i = int(np.argmax(diff))
            if diff[i] > worst_abs or worst_name is None:
                worst_abs, worst_name = float(diff[i]), key
            worst_rel = max(worst_rel, float(rel.max()))
    out = {"passed": bool(passed), "max_abs_err": worst_abs, "max_rel_err": worst_rel,
           "rtol": rtol, "atol": atol}
    if not passed:
        out["error"] = f"largest difference in {worst_name!r}: {worst_abs:.3g}"
    return out


def check_expected(numbers, expected, rtol=1e-6, atol=1e-9):
    """Known answers, checked on the reference engine."""
    bad = []
    for key, want in expected.items():
        got = _as_float_array(numbers[key])
        if not np.allclose(got, _as_float_array(want), rtol=rtol, atol=atol):
            bad.append(f"{key} = {got.tolist()} (expected {want})")
    return bad


def minor_faults():
    """Minor page faults of this process so far, or None where the OS does
    not count them (no ``resource`` module)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def faults_per_call(before, after, calls):
    """Page faults per call from two counter readings around ``calls``
    calls; None when either reading is missing or nothing ran."""
    if before is None or after is None or calls <= 0:
        return None
    return (after - before) / calls


def measure(fn, repeats, target_s, use_gc=True, first_call_s=None, budget_s=None):
    """Time ``fn``: ``repeats`` repeats of ``number`` calls each, ``number``
    chosen so that a repeat lasts about ``target_s``.  Returns (times per
    call in seconds, number, repeats done); ``measure_with_faults`` also
    counts page faults.
    """
    times, number, done, _ = measure_with_faults(fn, repeats, target_s, use_gc, first_call_s,
                                                 budget_s)
    return times, number, done


def measure_with_faults(fn, repeats, target_s, use_gc=True, first_call_s=None, budget_s=None,
                        fault_counter=minor_faults):
    """``measure``, returning (times, number, repeats done, minor page
    faults per call over the timed repeats, or None).  The counter is read
    once before and once after all repeats (a getrusage call is ~1 us, not
    worth taking out of the times); the warm-up call is outside.

    ``first_call_s`` is how long the (untimed) check call took: when that was
    already longer than ``target_s`` it served as the warm-up; otherwise one
    more call warms up and measures.  With ``budget_s`` (--quick) the
    repeats stop once that much time is spent, after at least one.
    """
    gc.collect()
    was_enabled = gc.isenabled()
    if not use_gc:
        gc.disable()
    try:
        first = first_call_s
        if first is None or first < target_s:
            t0 = time.perf_counter()
            out = fn()
            first = time.perf_counter() - t0
            del out
        number = 1 if first >= target_s else max(1, min(10_000, int(target_s / max(first, 1e-9))))
        times, spent = [], 0.0
        faults_before = fault_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(number):
                out = fn()
            elapsed = time.perf_counter() - t0
            del out     # freeing the last result is not part of the timing
            times.append(elapsed / number)
            spent += elapsed
            if budget_s is not None and spent >= budget_s:
                break
        faults = faults_per_call(faults_before, fault_counter(), number * len(times))
    finally:
        if was_enabled:
            gc.enable()
    return times, number, len(times), faults


def _log(msg, stream):
    if stream is not None:
        print(msg, file=stream, flush=True)


def prepare_case(workload, engine, quick):
    """Prepare ``workload`` on ``engine`` and compute its numbers: (case,
    numbers, seconds the numbers took), or a record fragment with
    "skipped" (and "error" when it raised)."""
    try:
        case = workload.prepare(engine, quick)
        t0 = time.perf_counter()
        numbers = case.numbers()
        return case, numbers, time.perf_counter() - t0
    except Skip as exc:
        return {"skipped": str(exc)}
    except RecursionError:
        return {"skipped": (f"RecursionError at Python's recursion limit "
                            f"({sys.getrecursionlimit()}): {engine} walks the graph recursively")}
    except Exception as exc:        # a bug or an API gap: report it, run the rest
        return {"skipped": f"error: {type(exc).__name__}: {exc}", "error": True}


def time_case(case, repeats, quick, use_gc, check_call_s, warmup_calls=0):
    """Time a prepared case (after ``warmup_calls`` untimed calls): the
    timing fields of a record, or "skipped"."""
    try:
        out = None
        for _ in range(warmup_calls):
            # keep each result alive across the next call, as the timed
            # loop does: two steps' buffers are live at once there
            out = case.run()
        del out
        times, number, done, faults = measure_with_faults(
            case.run, repeats, 0.02 if quick else 0.1, use_gc, check_call_s,
            budget_s=1.0 if quick else None)
    except Skip as exc:
        return {"skipped": str(exc)}
    except Exception as exc:
        return {"skipped": f"error while timing: {type(exc).__name__}: {exc}", "error": True}
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": done,
            "number": number, "times_s": times, "minor_faults_per_call": faults}


def run_in_child(workload, engine, quick, repeats, use_gc, isolation):
    """Prepare, compute the numbers of, and time ``workload`` on ``engine``
    in a fresh Python process (``python -m microgrid.bench.child``); returns
    {"numbers": ..., "timing": ...} or a fragment with "skipped".
    ``isolation``: {"threads": n, "torch_first": bool, "pool": bool (microgrid's
    buffer pool on, the default)}."""
    fd, out_path = tempfile.mkstemp(prefix="microgrid-bench-", suffix=".pickle")
    os.close(fd)
    request = {"workload": workload.name, "engine": engine, "quick": quick, "repeats": repeats,
               "use_gc": use_gc, "threads": isolation.get("threads", 1),
               "torch_first": bool(isolation.get("torch_first")),
               "pool": isolation.get("pool", True), "out": out_path}
    # started beside the microgrid this process imported, so that `-m` finds
    # the same build (from a source checkout, the working directory would
    # offer the uncompiled sources first)
    import microgrid
    home = os.path.dirname(os.path.dirname(os.path.abspath(microgrid.__file__)))
    try:
        proc = subprocess.run([sys.executable, "-m", "microgrid.bench.child"],
                              input=pickle.dumps(request), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, check=False, cwd=home)
        if proc.returncode != 0 or os.path.getsize(out_path) == 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
            return {"skipped": f"error: the child process exited with {proc.returncode}: "
                               + " | ".join(tail), "error": True}
        with open(out_path, "rb") as f:
            return pickle.load(f)     # written by our own child, a moment ago
    finally:
        os.unlink(out_path)


def run_workload(workload, engines, quick=False, repeats=None, use_gc=True, log=sys.stderr,
                 isolation=None):
    """Check and time one workload on ``engines``; returns a list of result
    records (dicts), one per engine, in the order of ``engines``.  With
    ``isolation`` (a dict, see ``run_in_child``) a workload that asks for it
    runs each engine in a child process."""
    size = workload.size(quick)
    base = {"workload": workload.name}
    if size is not None:
        base["size"] = size
    if quick and workload.quick_skip:
        return [dict(base, engine=e, skipped=workload.quick_skip) for e in engines]
    n_repeats = repeats or (workload.quick_repeats if quick else workload.repeats)
    in_child = isolation is not None and workload.isolate
    records, reference, ref_engine = {}, None, None
    # The reference (microgrid when it runs) goes first, the rest in order.
    for engine in sorted(engines, key=lambda e: e != "microgrid"):
        record = dict(base, engine=engine)
        records[engine] = record
        if engine not in workload.engines:
            record["skipped"] = f"{workload.name} has no {engine} version"
            continue
        reason = unavailable_reason(engine)
        if reason:
            record["skipped"] = reason
            continue
        _log(f"  {workload.name} [{engine}]", log)
        case = timing = None    # the previous engine's graph is freed before this one's
        if in_child:
            outcome = run_in_child(workload, engine, quick, n_repeats, use_gc, isolation)
            if "skipped" in outcome:
                record.update(outcome)
                continue
            numbers, timing = outcome["numbers"], outcome["timing"]
            record["process"] = outcome["process"]
        else:
            outcome = prepare_case(workload, engine, quick)
            if isinstance(outcome, dict):
                record.update(outcome)
                continue
            case, numbers, check_call_s = outcome
        if reference is None:
            reference, ref_engine = numbers, engine
            check = {"passed": True, "reference": engine, "role": "reference"}
            if workload.expected:
                bad = check_expected(numbers, workload.expected)
                check["expected_values"] = "ok" if not bad else "; ".join(bad)
                check["passed"] = not bad
        else:
            low = engine == "torch32" or ref_engine == "torch32"
            rtol, atol = ((workload.rtol32, workload.atol32) if low
                          else (workload.rtol, workload.atol))
            check = compare(numbers, reference, rtol, atol)
            check["reference"] = ref_engine
        record["check"] = check
        if not check["passed"]:
            record["skipped"] = f"check failed against {ref_engine}: {check.get('error') or check.get('expected_values')}"
            continue
        if timing is None:
            if case.memory is not None:
                record["bytes_per_unit"] = case.memory() / workload.count(quick)
            timing = time_case(case, n_repeats, quick, use_gc, check_call_s,
                               workload.warmup_calls)
            case = None
        record.update(timing)
    _add_units_and_ratios(workload, records, quick)
    return [records[e] for e in engines]


def _add_units_and_ratios(workload, records, quick):
    mg = records.get("microgrid", {})
    mg_median = mg.get("median_s")
    for record in records.values():
        if "median_s" not in record:
            continue
        record["ratio_vs_microgrid"] = (record["median_s"] / mg_median) if mg_median else None
        count = workload.count(quick) if workload.unit else None
        if count:
            record["unit"] = workload.unit
            record["count"] = count
            record["ns_per_unit"] = record["median_s"] / count * 1e9


def run(workloads, engines=ENGINE_NAMES, quick=False, repeats=None, use_gc=True, log=sys.stderr,
        isolation=None):
    """Run every workload; returns all result records."""
    results = []
    for workload in workloads:
        _log(f"{workload.name}: {workload.description}", log)
        results.extend(run_workload(workload, engines, quick, repeats, use_gc, log, isolation))
    return results

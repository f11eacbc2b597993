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

Ratios are engine median / microgrid median (above 1: slower than microgrid).
"""
import gc
import statistics
import sys
import time

import numpy as np

from .engines import ENGINE_NAMES, Skip, unavailable_reason


class Case:
    """One workload prepared on one engine.

    ``run``: the timed callable (no arguments); what it returns is released
    outside the timed region.  ``numbers``: a callable returning a dict of
    name -> array-like, the values and gradients compared across engines; it
    runs before any timing.
    """

    def __init__(self, run, numbers):
        self.run = run
        self.numbers = numbers


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


def measure(fn, repeats, target_s, use_gc=True, first_call_s=None, budget_s=None):
    """Time ``fn``: ``repeats`` repeats of ``number`` calls each, ``number``
    chosen so that a repeat lasts about ``target_s``.  Returns (times per
    call in seconds, number, repeats done).

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
    finally:
        if was_enabled:
            gc.enable()
    return times, number, len(times)


def _log(msg, stream):
    if stream is not None:
        print(msg, file=stream, flush=True)


def run_workload(workload, engines, quick=False, repeats=None, use_gc=True, log=sys.stderr):
    """Check and time one workload on ``engines``; returns a list of result
    records (dicts), one per engine, in the order of ``engines``."""
    size = workload.size(quick)
    base = {"workload": workload.name}
    if size is not None:
        base["size"] = size
    if quick and workload.quick_skip:
        return [dict(base, engine=e, skipped=workload.quick_skip) for e in engines]
    n_repeats = repeats or (workload.quick_repeats if quick else workload.repeats)
    target = 0.02 if quick else 0.1
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
        case = None         # the previous engine's graph is freed before this one's
        try:
            case = workload.prepare(engine, quick)
            t0 = time.perf_counter()
            numbers = case.numbers()
            check_call_s = time.perf_counter() - t0
        except Skip as exc:
            record["skipped"] = str(exc)
            continue
        except RecursionError:
            record["skipped"] = (f"RecursionError at Python's recursion limit "
                                 f"({sys.getrecursionlimit()}): {engine} walks the graph recursively")
            continue
        except Exception as exc:        # a bug or an API gap: report it, run the rest
            record["skipped"] = f"error: {type(exc).__name__}: {exc}"
            record["error"] = True
            continue
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
        try:
            times, number, done = measure(case.run, n_repeats, target, use_gc, check_call_s,
                                          budget_s=1.0 if quick else None)
        except Skip as exc:
            record["skipped"] = str(exc)
            continue
        except Exception as exc:
            record["skipped"] = f"error while timing: {type(exc).__name__}: {exc}"
            record["error"] = True
            continue
        finally:
            case = None
        record.update(median_s=statistics.median(times), min_s=min(times),
                      repeats=done, number=number, times_s=times)
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


def run(workloads, engines=ENGINE_NAMES, quick=False, repeats=None, use_gc=True, log=sys.stderr):
    """Run every workload; returns all result records."""
    results = []
    for workload in workloads:
        _log(f"{workload.name}: {workload.description}", log)
        results.extend(run_workload(workload, engines, quick, repeats, use_gc, log))
    return results

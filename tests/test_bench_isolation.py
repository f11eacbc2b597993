"""The benchmark harness's page-fault counting and its child process per
engine (microgrid/bench/harness.py, child.py).  Nothing here is timed: the
fault counts are checked against a counter the test controls, or against
memory the test maps and touches itself."""
import mmap
import sys

import numpy as np
import pytest

from microgrid.bench import harness, report, tensors
from microgrid.bench.harness import Case, Workload


def test_faults_per_call_arithmetic():
    assert harness.faults_per_call(100, 400, 3) == 100.0
    assert harness.faults_per_call(5, 5, 10) == 0.0
    assert harness.faults_per_call(None, 10, 2) is None      # no counter on this OS
    assert harness.faults_per_call(1, 10, 0) is None         # nothing ran


def test_faults_are_read_around_the_timed_calls_only():
    """A fake counter that the warm-up call advances by 1000 and every timed
    call by 7: the record is 7 per timed call."""
    state = {"faults": 0}
    calls = []

    def timed():
        calls.append(1)
        state["faults"] += 1000 if len(calls) == 1 else 7

    times, number, done, faults = harness.measure_with_faults(
        timed, repeats=4, target_s=1e-9, first_call_s=None,
        fault_counter=lambda: state["faults"])
    assert len(calls) == 1 + number * done
    assert faults == 7.0


def test_minor_faults_count_fresh_pages():
    """Touching fresh mapped memory faults its pages in; reusing one mapping
    does not.  (Only where getrusage counts faults.)"""
    if harness.minor_faults() is None:
        pytest.skip("no getrusage on this platform")
    pages, size = 256, 256 * mmap.PAGESIZE

    def fresh():
        m = mmap.mmap(-1, size)
        for p in range(0, size, mmap.PAGESIZE):
            m[p] = 1
        m.close()

    kept = mmap.mmap(-1, size)

    def reused():
        for p in range(0, size, mmap.PAGESIZE):
            kept[p] = 1

    reused()
    _, _, _, f_fresh = harness.measure_with_faults(fresh, 3, 1e-9)
    _, _, _, f_reused = harness.measure_with_faults(reused, 3, 1e-9)
    kept.close()
    # transparent huge pages could merge pages; a 4 KiB-page kernel gives ~256
    assert f_fresh >= pages / 2
    assert f_reused < pages / 8


def test_isolated_workload_runs_in_a_child_and_reports_faults():
    w = tensors.ConvPool(1)
    rec = harness.run_workload(w, ["microgrid"], quick=True, log=None,
                               isolation={"threads": 1, "torch_first": False})[0]
    assert rec["process"] == "own process"
    assert rec["check"]["passed"] and rec["median_s"] > 0
    assert rec["minor_faults_per_call"] is not None and rec["minor_faults_per_call"] >= 0
    # the table shows the faults column
    assert "faults/call" in report.text_table([rec])


def test_a_child_that_fails_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(sys, "executable", sys.executable + "-missing-interpreter", raising=True)
    with pytest.raises(OSError):
        harness.run_in_child(tensors.ConvPool(1), "microgrid", True, 1, True,
                             {"threads": 1})


def test_unknown_workload_in_the_child_is_an_error_record():
    class Unknown(Workload):
        name = "no_such_workload_anywhere"
        engines = ("microgrid",)
        isolate = True
    rec = harness.run_workload(Unknown(), ["microgrid"], quick=True, log=None,
                               isolation={"threads": 1})[0]
    assert rec.get("error") and "child process exited" in rec["skipped"]


def test_pool_off_in_the_child_is_recorded():
    rec = harness.run_workload(tensors.ConvPool(1), ["microgrid"], quick=True, log=None,
                               isolation={"threads": 1, "pool": False})[0]
    assert rec["process"] == "own process, pool off"
    assert "microgrid (pool off)" in report.text_table([rec])

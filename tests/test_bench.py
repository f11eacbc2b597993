"""The benchmark harness (microgrid/bench): the cross-engine check, timing
bookkeeping, skipping, the registry, and the workloads' own numbers.

No test here asserts anything about speed; timing only has to be positive.
"""
import gc
import math

import numpy as np
import pytest

import microgrid as mg
from microgrid.bench import engines, exam, harness, moons, registry, scalar
from microgrid.bench.engines import DISABLE_ENV, Skip
from microgrid.bench.harness import Case, Workload


# --------------------------------------------------------------------------
# The check


def test_compare_within_and_outside_tolerance():
    ref = {"loss": 1.0, "grads": [1.0, -2.0, 3.0]}
    ok = harness.compare({"loss": 1.0 + 1e-12, "grads": [1.0, -2.0, 3.0]}, ref, 1e-9, 0.0)
    assert ok["passed"] and ok["max_abs_err"] == pytest.approx(1e-12, rel=1e-3)
    bad = harness.compare({"loss": 1.0, "grads": [1.0, -2.0, 3.001]}, ref, 1e-9, 1e-12)
    assert not bad["passed"] and "grads" in bad["error"]
    assert bad["max_abs_err"] == pytest.approx(1e-3, rel=1e-6)


def test_compare_nan_and_infinities():
    assert not harness.compare({"x": [math.nan]}, {"x": [1.0]}, 1e-9, 1e-9)["passed"]
    assert not harness.compare({"x": [1.0]}, {"x": [math.nan]}, 1e-9, 1e-9)["passed"]
    assert harness.compare({"x": [math.inf]}, {"x": [math.inf]}, 1e-9, 1e-9)["passed"]
    assert not harness.compare({"x": [-math.inf]}, {"x": [math.inf]}, 1e-9, 1e-9)["passed"]


def test_compare_shape_and_names():
    assert not harness.compare({"x": [1.0, 2.0]}, {"x": [1.0]}, 1e-9, 1e-9)["passed"]
    assert not harness.compare({"y": 1.0}, {"x": 1.0}, 1e-9, 1e-9)["passed"]


# --------------------------------------------------------------------------
# The run loop, on workloads made up for the test (microgrid and micrograd
# only: both are cheap to import)


class FakeWorkload(Workload):
    name = "fake"
    description = "made up for a test"
    engines = ("microgrid", "micrograd")
    repeats = quick_repeats = 3

    def __init__(self, numbers_by_engine, raise_in_prepare=None):
        self.numbers_by_engine = numbers_by_engine
        self.raise_in_prepare = raise_in_prepare or {}

    def prepare(self, engine, quick):
        if engine in self.raise_in_prepare:
            raise self.raise_in_prepare[engine]
        result = dict(self.numbers_by_engine[engine])
        return Case(lambda: sum(range(100)), lambda: result)


def test_engines_that_agree_are_timed_with_ratios():
    w = FakeWorkload({"microgrid": {"x": 1.0}, "micrograd": {"x": 1.0 + 1e-13}})
    recs = harness.run_workload(w, ["microgrid", "micrograd"], quick=True, log=None)
    mg_rec, other = recs
    assert mg_rec["check"]["role"] == "reference" and mg_rec["ratio_vs_microgrid"] == 1.0
    assert other["check"]["passed"] and other["check"]["reference"] == "microgrid"
    for r in recs:
        assert 0 < r["min_s"] <= r["median_s"] and 1 <= r["repeats"] <= 3
        assert len(r["times_s"]) == r["repeats"] and r["number"] >= 1
    assert other["ratio_vs_microgrid"] == pytest.approx(other["median_s"] / mg_rec["median_s"])


def test_an_engine_that_disagrees_is_not_timed():
    w = FakeWorkload({"microgrid": {"x": 1.0}, "micrograd": {"x": 1.5}})
    recs = harness.run_workload(w, ["microgrid", "micrograd"], quick=True, log=None)
    assert "median_s" in recs[0]
    assert not recs[1]["check"]["passed"]
    assert "median_s" not in recs[1] and recs[1]["skipped"].startswith("check failed")


def test_skip_and_recursion_error_become_skipped_records():
    w = FakeWorkload({"microgrid": {"x": 1.0}, "micrograd": {"x": 1.0}},
                     raise_in_prepare={"micrograd": RecursionError()})
    recs = harness.run_workload(w, ["microgrid", "micrograd"], quick=True, log=None)
    assert "recursion limit" in recs[1]["skipped"]
    w = FakeWorkload({"microgrid": {"x": 1.0}, "micrograd": {"x": 1.0}},
                     raise_in_prepare={"microgrid": Skip("no reason at all")})
    recs = harness.run_workload(w, ["microgrid", "micrograd"], quick=True, log=None)
    assert recs[0]["skipped"] == "no reason at all"
    # With microgrid skipped the next engine is the reference; no ratio.
    assert recs[1]["check"]["reference"] == "micrograd"
    assert recs[1]["ratio_vs_microgrid"] is None


def test_workload_without_an_engine_version():
    w = FakeWorkload({"microgrid": {"x": 1.0}})
    w.engines = ("microgrid",)
    recs = harness.run_workload(w, ["microgrid", "micrograd"], quick=True, log=None)
    assert "has no micrograd version" in recs[1]["skipped"]


def test_expected_values_are_checked_on_the_reference():
    w = FakeWorkload({"microgrid": {"x": 2.0}})
    w.engines = ("microgrid",)
    w.expected = {"x": 3.0}
    rec = harness.run_workload(w, ["microgrid"], quick=True, log=None)[0]
    assert not rec["check"]["passed"] and "expected 3.0" in rec["skipped"]


def test_disable_env(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "torch, micrograd")
    assert engines.disabled_engines() == {"torch64", "torch32", "micrograd"}
    assert engines.unavailable_reason("micrograd") == f"disabled by {DISABLE_ENV}"
    with pytest.raises(Skip, match=DISABLE_ENV):
        engines.ScalarEngine("torch32")
    assert engines.unavailable_reason("microgrid") is None
    with pytest.raises(ValueError, match="engine"):
        engines.unavailable_reason("jax")


def test_measure_restores_the_garbage_collector():
    assert gc.isenabled()
    seen = []
    times, number, done = harness.measure(lambda: seen.append(gc.isenabled()), 2, 0.001,
                                          use_gc=False)
    assert gc.isenabled() and not any(seen)
    assert done == 2 and len(times) == 2 and all(t > 0 for t in times) and number >= 1


# --------------------------------------------------------------------------
# Registry


def test_registry_names_are_unique_and_selectable():
    ws = registry.all_workloads()
    names = [w.name for w in ws]
    assert len(names) == len(set(names))
    assert [w.name for w in registry.select(ws, ["deep_chain"])] == [
        "deep_chain_1e3", "deep_chain_1e4", "deep_chain_1e5", "deep_chain_1e6"]
    assert [w.name for w in registry.select(ws, ["sum_*_dot", "exam_two_neuron"])] == [
        "sum_products_dot", "exam_two_neuron"]
    with pytest.raises(ValueError, match="nope"):
        registry.select(ws, ["nope"])
    for w in ws:
        assert w.description and w.rtol > 0 and w.rtol32 >= w.rtol


# --------------------------------------------------------------------------
# The workloads' own numbers


def test_random_dag_node_count_is_the_nodes_built():
    values, units, tail, count = scalar.random_dag_plan(3000)
    leaves = [mg.Value(x) for x in values]
    root = scalar.build_random_dag(leaves, units, tail)
    order = mg.topological_order(root)
    built = [n for n in order if n not in set(leaves)]
    # Every op node is reachable from the root (nothing built is dropped).
    assert len(built) == count
    assert abs(count - 3000) < 300
    root.backward()
    assert all(math.isfinite(x.grad) for x in leaves)


def test_deep_chain_matches_its_closed_form():
    x, a, b = mg.Value(scalar.CHAIN_X), mg.Value(scalar.CHAIN_A), mg.Value(scalar.CHAIN_B)
    n = 500
    v = scalar.build_chain(x, a, b, n)
    v.backward()
    A, B = scalar.CHAIN_A, scalar.CHAIN_B
    assert v.data == pytest.approx(A ** n * scalar.CHAIN_X + B * (1 - A ** n) / (1 - A), rel=1e-12)
    assert x.grad == pytest.approx(A ** n, rel=1e-12)
    assert b.grad == pytest.approx((1 - A ** n) / (1 - A), rel=1e-12)


def test_micrograd_deep_chain_is_skipped_not_crashed(monkeypatch):
    pytest.importorskip("micrograd")
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    w = scalar.DeepChain(10 ** 3)
    rec = harness.run_workload(w, ["microgrid", "micrograd"], quick=True, log=None)
    assert "median_s" in rec[0] and rec[0]["ns_per_unit"] > 0
    assert "RecursionError" in rec[1]["skipped"]


def test_exam_numbers_are_the_exam_answers():
    eng = engines.ScalarEngine("microgrid")
    w = {k: eng.leaf(v) for k, v in exam.WEIGHTS.items()}
    loss = exam.two_neuron_loss(w, exam.X1, exam.X2, exam.Y)
    loss.backward()
    assert loss.data == pytest.approx(1.071539693, rel=1e-9)
    # dL/dw12 = x2 * w31 * relu'(z1) * dL/dyhat = -3 * -0.2 * 1 * (-1 / yhat)
    yhat = -0.2 * 0.6 + 1.6 / (1 + math.exp(0.9))
    assert w["w12"].grad == pytest.approx(-0.6 / yhat, rel=1e-12)
    assert w["w22"].grad != 0 and w["w10"].grad == pytest.approx(0.2 / yhat, rel=1e-12)


def test_two_moons_data():
    X, y = moons.two_moons()
    X2, y2 = moons.two_moons()
    assert X.shape == (100, 2) and y.shape == (100,)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert sorted(set(y.tolist())) == [-1.0, 1.0] and (y == 1).sum() == 50
    # The two moons overlap in x but the upper one sits higher on average.
    assert X[y == -1, 1].mean() > X[y == 1, 1].mean()


def test_demo_step_on_micrograd_matches_torch():
    pytest.importorskip("micrograd")
    pytest.importorskip("torch")
    w = moons.MoonsTrainingStep()
    gc.disable()        # micrograd's graph makes the collector slow; no timing here
    try:
        ref = w.prepare("micrograd", True).numbers()
        got = w.prepare("torch64", True).numbers()
    finally:
        gc.enable()
    assert harness.compare(got, ref, 1e-9, 1e-12)["passed"]
    assert 0 < ref["loss"] < 10


def test_json_report_is_strict_json(tmp_path):
    from microgrid.bench import report
    import json
    rep = report.make_report([{"workload": "w", "engine": "microgrid",
                               "check": {"passed": False, "max_abs_err": math.inf}}],
                             {"quick": True, "gc": True, "repeats": None})
    path = tmp_path / "r.json"
    report.write_json(rep, path)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["results"][0]["check"]["max_abs_err"] == "inf"
    assert data["machine"]["cores"] >= 1 and data["versions"]["python"]


def test_an_exception_in_a_workload_is_recorded_not_raised():
    w = FakeWorkload({"microgrid": {"x": 1.0}, "micrograd": {"x": 1.0}},
                     raise_in_prepare={"micrograd": AttributeError("no attribute 'reshape'")})
    recs = harness.run_workload(w, ["microgrid", "micrograd"], quick=True, log=None)
    assert "median_s" in recs[0]
    assert recs[1]["error"] and "AttributeError: no attribute 'reshape'" in recs[1]["skipped"]

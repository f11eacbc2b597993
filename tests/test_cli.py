"""The ``microgrid`` command line: help for every subcommand, ``version``,
``demo`` wiring, and ``bench`` end to end (a subprocess writing JSON, and
in-process runs with engines switched off)."""
import json
import subprocess
import sys
import types

import pytest
from conftest import TESTS, child_env

import microgrid
from microgrid import cli
from microgrid.bench.engines import DISABLE_ENV



def run_cli(*args, env=None):
    """``python -m microgrid ARGS`` in a child interpreter."""
    return subprocess.run([sys.executable, "-m", "microgrid", *args], cwd=TESTS,
                          env=child_env(**(env or {})), capture_output=True, text=True, timeout=120)


def test_python_m_help_lists_every_subcommand():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("bench", "demo", "version"):
        assert command in proc.stdout


@pytest.mark.parametrize("command, words", [
    ("bench", ["--quick", "--only", "--list", "--repeats", "--json", "--markdown", "--plot",
               "--no-gc", "--engines", DISABLE_ENV]),
    ("demo", ["--out", "--seed", "--quick"]),
    ("version", ["version"]),
])
def test_help_of_each_subcommand(capsys, command, words):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: microgrid {command}")
    for word in words:
        assert word in out


def test_version(capsys):
    assert cli.main(["version"]) == 0
    assert microgrid.__version__ in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert microgrid.__version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "bench" in capsys.readouterr().out


def test_unknown_option_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--no-such-option"])
    assert exc.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


def test_demo_main_gets_the_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("microgrid.demo")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "microgrid.demo", fake)
    assert cli.main(["demo", "--quick", "--seed", "3", "--epochs", "2"]) == 0
    assert seen == [["--quick", "--seed", "3", "--epochs", "2"]]


def test_bench_list(capsys):
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("scalar_build", "scalar_backward", "deep_chain_1e6", "sum_products_dot",
                 "exam_two_neuron", "moons_step_scalar", "conv_pool_b64", "mlp784_sgd"):
        assert name in out


def test_bench_only_unknown_workload(capsys):
    assert cli.main(["bench", "--only", "no_such_workload"]) == 2
    assert "no_such_workload" in capsys.readouterr().err


def test_bench_bad_repeats(capsys):
    assert cli.main(["bench", "--repeats", "0", "--only", "exam"]) == 2
    assert "--repeats" in capsys.readouterr().err


def _check_record(r):
    assert r["workload"] and r["engine"]
    if "skipped" in r:
        assert isinstance(r["skipped"], str) and r["skipped"]
        return
    for key in ("median_s", "min_s", "repeats", "ratio_vs_microgrid", "check"):
        assert key in r, key
    assert 0 < r["min_s"] <= r["median_s"]
    assert r["repeats"] >= 1
    assert r["check"]["passed"] is True
    if r["engine"] == "microgrid":
        assert r["ratio_vs_microgrid"] == 1.0


def test_bench_quick_json_subprocess(tmp_path):
    out = tmp_path / "out.json"
    proc = run_cli("bench", "--quick", "--repeats", "2", "--only", "scalar_build",
                   "exam_two_neuron", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "scalar_build" in proc.stdout
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "versions", "results"}
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert report["versions"]["microgrid"] == microgrid.__version__
    assert report["versions"]["numpy"]
    results = report["results"]
    assert {r["workload"] for r in results} == {"scalar_build", "exam_two_neuron"}
    assert {r["engine"] for r in results} == {"microgrid", "micrograd", "torch64", "torch32"}
    for r in results:
        _check_record(r)
    mg = {r["workload"]: r for r in results if r["engine"] == "microgrid"}
    assert mg["scalar_build"]["ns_per_unit"] > 0 and mg["scalar_build"]["repeats"] <= 2
    assert mg["exam_two_neuron"]["check"]["expected_values"] == "ok"


def test_disabled_engines_are_skipped_cleanly(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(DISABLE_ENV, "torch,micrograd")
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    status = cli.main(["bench", "--quick", "--quiet", "--only", "exam_two_neuron",
                       "deep_chain_1e3", "--json", str(out), "--markdown", str(md)])
    assert status == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == 8
    for r in results:
        _check_record(r)
        if r["engine"] == "microgrid":
            assert "skipped" not in r
        else:
            assert r["skipped"] == f"disabled by {DISABLE_ENV}"
    table = md.read_text()
    assert "| exam_two_neuron | microgrid |" in table
    assert f"skipped: disabled by {DISABLE_ENV}" in table
    assert "skipped" in capsys.readouterr().out


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(DISABLE_ENV, "torch,micrograd")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status = cli.main(["bench", "--quick", "--quiet", "--only", "exam_two_neuron",
                       "--plot", str(tmp_path / "p.png")])
    assert status == 2
    assert "matplotlib" in capsys.readouterr().err


def test_plot_is_written(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv(DISABLE_ENV, "torch,micrograd")
    path = tmp_path / "p.png"
    assert cli.main(["bench", "--quick", "--quiet", "--only", "exam_two_neuron",
                     "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

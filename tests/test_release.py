"""What a release must hold: a clean namespace, one version, the licence, a
numpy-2 build, no generated files in the repository, an sdist that carries
its tests and examples and checks itself, reproducible registry seeds, and
a test suite that tests the built package however it is started."""
import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

tomllib = pytest.importorskip("tomllib")     # Python 3.11+

import microgrid as mg
from conftest import ROOT, child_env

PYPROJECT = ROOT / "pyproject.toml"


def _pyproject():
    return tomllib.loads(PYPROJECT.read_text())


def test_dir_shows_the_public_api_only():
    names = dir(mg)
    assert "numbers" not in names and "_engine" not in names and "_tensor" not in names
    assert [n for n in names if n.startswith("_")] == ["__version__"]
    for n in names:
        assert getattr(mg, n) is not None, n
    assert {"nn", "optim", "datasets", "functional", "Tensor", "max_unpool2d", "dropout"} <= set(names)


def test_import_is_lazy_for_optim_and_datasets():
    code = ("import sys, microgrid as mg; assert 'microgrid.optim' not in sys.modules; "
            "assert 'microgrid.datasets' not in sys.modules; mg.optim.SGD; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT / "tests",
                          capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_one_version_string():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "microgrid.__version__"}
    try:
        installed = importlib.metadata.version("microgrid")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("microgrid is not installed as a distribution")
    assert installed == mg.__version__


def test_licence_file_is_mit_as_the_metadata_says():
    assert _pyproject()["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_build_requires_numpy_2():
    requires = _pyproject()["build-system"]["requires"]
    assert "numpy>=2.0" in requires


def _tracked_files():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        pytest.skip("git ls-files failed")
    return done.stdout.splitlines()


def test_no_generated_outputs_are_tracked_and_they_are_ignored():
    tracked = _tracked_files()
    assert not [f for f in tracked if f.endswith(".png") or f.startswith("microgrid-demo-out/")]
    assert not [f for f in tracked if f.endswith((".so", ".pyd")) or f.startswith("microgrid/") and f.rsplit("/", 1)[-1].startswith("_") and f.endswith((".c", ".cpp"))]
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "microgrid-demo-out/" in ignore and "/*.png" in ignore


def test_opinfo_seeds_do_not_depend_on_the_hash_seed():
    code = "import test_opinfo, opinfo; print(test_opinfo._rng(opinfo.OPS[5]).random())"
    outs = set()
    for seed in ("0", "12345"):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests",
                              env=child_env(ROOT / "tests", PYTHONHASHSEED=seed), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outs.add(done.stdout)
    assert len(outs) == 1


# -- the sdist ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    pytest.importorskip("build", reason="the sdist test needs the `build` package (pip install build)")
    for module in ("setuptools", "Cython"):     # the build requirements, used without isolation
        pytest.importorskip(module, reason=f"building the sdist without isolation needs {module}")
    out = tmp_path_factory.mktemp("dist")
    # no isolation: building an sdist compiles nothing, and this way no
    # download happens (setuptools, Cython and numpy are the test's own)
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (archive,) = out.glob("microgrid-*.tar.gz")
    assert archive.name == f"microgrid-{mg.__version__}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out / archive.name[:-len(".tar.gz")]


@pytest.mark.sdist
def test_sdist_carries_sources_tests_examples_and_licence(sdist):
    names = {str(p.relative_to(sdist)) for p in sdist.rglob("*") if p.is_file()}
    for needed in ("LICENSE", "README.md", "setup.py", "pyproject.toml", "csrc/mg_conv.c",
                   "microgrid/core/_engine.pyx", "microgrid/kernels/_conv.pyi", "microgrid/tensors/losses.pxi",
                   "csrc/mg_ops.def", "csrc/mg_dual.hpp", "microgrid/autograd/_forward.pyx",
                   "microgrid/autograd/_forward.pyi", "microgrid/datasets/digits.npz",
                   "tests/conftest.py", "tests/test_engine.py", "examples/problem01_two_neuron_bce.py"):
        assert needed in names, needed
    assert not [n for n in names if n.endswith((".so", ".png"))]


@pytest.mark.sdist
def test_unpacked_sdist_runs_its_tests_against_the_installed_build(sdist):
    # from the unpacked, unbuilt tree, `python -m pytest` must test the
    # installed microgrid, not trip over the uncompiled sources in front of it
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_gradcheck.py", "tests/test_release.py::test_dir_shows_the_public_api_only"],
                          cwd=sdist, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout


@pytest.mark.sdist
def test_unbuilt_checkout_stops_with_one_clear_line(sdist, tmp_path):
    # a microgrid that cannot be imported (as the bare sources are): one line
    # that says what to run, not a traceback
    fake = tmp_path / "fake" / "microgrid"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ImportError(\"cannot import name '_engine' from partially initialized module 'microgrid'\")\n")
    env = child_env()
    env["PYTHONPATH"] = str(fake.parent)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gradcheck.py"],
                          cwd=sdist, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 4
    out = done.stdout + done.stderr
    assert "microgrid is not built" in out and "pip install ." in out
    assert "Traceback" not in out

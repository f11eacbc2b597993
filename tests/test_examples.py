"""Runs every exam-problem script in examples/ (shared/exam-problems.md).

Each script exits 0 only if microgrid's numbers match its independent
reference values; the tests also look for the key lines of each worked
solution, including the slips in the hand-work that the scripts must report.
"""
from conftest import EXAMPLES, run_example

SCRIPTS = [
    "problem01_two_neuron_bce.py", "problem02_perceptron.py", "problem03_parameter_count.py",
    "problem04_relu_logic.py", "problem05_softmax.py", "problem06_stable_sigmoid.py",
    "problem07_conv_pool.py", "problem08_conv_transpose.py", "problem09_two_layer_noisy.py",
    "problem10_saliency.py", "problem11_lime.py", "problem12_shapley.py",
]

def run(script, *args, tmp_path):
    proc = run_example(script, *args, cwd=tmp_path)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "All of microgrid's numbers match the independent reference values." in proc.stdout
    assert "MISMATCH" not in proc.stdout and "FAILED" not in proc.stdout
    return proc.stdout


def test_one_script_per_problem():
    present = sorted(p.name for p in EXAMPLES.glob("problem*.py"))
    assert present == SCRIPTS
    for name in SCRIPTS:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and "Run:" in text


def test_problem01(tmp_path):
    out = run("problem01_two_neuron_bce.py", tmp_path=tmp_path)
    assert ("dL/dw12 = dL/dyhat · dyhat/dh1 · dh1/dz1 · dz1/dw12 "
            "= (-2.9199)(-0.2)(1)(-3) = -1.7519") in out
    assert "check h2                                       microgrid 0.2890504974" in out
    assert "microgrid 1.071539694" in out
    # the hand-work is marked by mg.check: the sign slip is found, not written in the script
    assert "dL/dw12 = 1.75    WRONG (sign)" in out
    assert "negative factors dL/dyhat = -2.9199, dyhat/dh1 = -0.2, dz1/dw12 = -3" in out
    assert "Marked sheet for L: 6 correct, 1 wrong; first error: dL/dw12" in out
    script = (EXAMPLES / "problem01_two_neuron_bce.py").read_text()
    assert "sign slip" not in script and "sign was" not in script
    assert "number of parameters         hand 9          microgrid 9                agrees" in out
    assert "Where the hand-work differs from the correct values:" in out


def test_problem02(tmp_path):
    out = run("problem02_perceptron.py", tmp_path=tmp_path)
    assert "w -= grad = [1, 3, 2]" in out
    assert "s   = 5      WRONG (arithmetic)         expected 4" in out
    script = (EXAMPLES / "problem02_perceptron.py").read_text()
    assert "arithmetic slip" not in script and "= 4" not in script
    assert "sign(w.[1,1,0])              hand 1          microgrid 1                agrees" in out


def test_problem03(tmp_path):
    out = run("problem03_parameter_count.py", tmp_path=tmp_path)
    assert "one-vs-rest parameters       hand 105        microgrid 105" in out
    assert "Conv2D parameters            hand 250        microgrid 250" in out


def test_problem04(tmp_path):
    out = run("problem04_relu_logic.py", tmp_path=tmp_path)
    assert "   1   1  |  0       0       0" in out          # XOR(1,1) with its kink gradients
    assert "check gradient at x = 0 is 0 (relu'(0) = 0, as in PyTorch) dy/dx = 0: ok" in out


def test_problem05(tmp_path):
    out = run("problem05_softmax.py", tmp_path=tmp_path)
    assert "P(class 1)                   hand 0.534      microgrid 0.5344466454     agrees" in out
    assert "dp1/da1 = -0.2856 + 0.5344 = 0.2488" in out


def test_problem06_quick(tmp_path):
    out = run("problem06_stable_sigmoid.py", "--quick", tmp_path=tmp_path)
    assert "sigmoid(-1000) = 0.0, derivative 0.0" in out
    assert "sigmoid(1000)  = 1.0, derivative 0.0" in out
    assert "check finite differences against backward()" in out
    assert "check step size 0.1 learns" in out and "check step size 10 collapses" in out


def test_problem07(tmp_path):
    out = run("problem07_conv_pool.py", tmp_path=tmp_path)
    assert out.count("entries agree") == 5
    assert "check d(sum of pooled maps)/d(image)" in out


def test_problem08(tmp_path):
    out = run("problem08_conv_transpose.py", tmp_path=tmp_path)
    assert "check the two constructions agree" in out
    assert "output[0,0]                  hand -9         microgrid -9               agrees" in out


def test_problem09_quick(tmp_path):
    out = run("problem09_two_layer_noisy.py", "--quick", tmp_path=tmp_path)
    assert "check scalar engine: backward() against finite differences (105 parameters)" in out
    assert "Training on the scalar engine: 1 trial(s), at most 150 iterations each" in out
    assert "(hand-reported: 32, best of many trials)" in out


def test_problem10_quick(tmp_path):
    out = run("problem10_saliency.py", "--quick", tmp_path=tmp_path)
    assert "its saliency map:" in out and "against central differences" in out
    # the picture goes into a folder of its own, named in the output, never
    # loose in the working directory
    assert not list(tmp_path.glob("*.png"))
    if "saliency map saved to" in out:
        assert "problem10-out" in out and (tmp_path / "problem10-out" / "saliency.png").is_file()


def test_problem11_quick(tmp_path):
    out = run("problem11_lime.py", "--quick", tmp_path=tmp_path)
    assert "check weights against the closed-form solve" in out
    assert "sparse explanation" in out


def test_problem12_quick(tmp_path):
    out = run("problem12_shapley.py", "--quick", "--out", str(tmp_path / "pictures"), tmp_path=tmp_path)
    assert "    Lisa   joins {}       adds v({Lisa}) - v({}) = 30 - 0 = 30" in out
    assert "    phi_Lisa   = (30 + 20) / 2 = 25" in out and "    phi_David  = (10 + 20) / 2 = 15" in out
    assert "phi_Lisa                     hand 25         microgrid 25               agrees" in out
    assert "phi_David                    hand 15         microgrid 15               agrees" in out
    assert "check dummy: phi_Carl = 0" in out and "check symmetry: phi_Lisa = phi_Mia" in out
    assert "check exact SHAP, 16 blocks (2**16 coalitions)" in out
    assert "check the sampled estimate covers the exact values every block within 4 standard errors: ok" in out
    assert "check completeness to the error of the steps" in out
    png = tmp_path / "pictures" / "problem12_shap.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
        return
    assert f"picture saved to {png}" in out and png.stat().st_size > 0


def test_newton_hessian(tmp_path):
    out = run("newton_hessian.py", tmp_path=tmp_path)
    assert "check Hessian at the start" in out and "check Newton's method reaches the minimum (1, 1)" in out
    assert "check Newton's method converges within 20 steps 7 steps: ok" in out
    # the exam loss's Hessian, printed as a 9 x 9 matrix and checked by finite differences
    assert "    w31    -7.8859   11.8288   -3.9429" in out
    assert "check Hessian = central differences of the gradient" in out
    assert "check d2L/dw31^2 = h1^2 / yhat^2 (by hand)     microgrid 3.06923437" in out
    assert not list(tmp_path.iterdir())          # output to stdout only


def test_replay_moons_batched(tmp_path):
    """micrograd's demo per sample, replayed on the 100 points at once, gives
    micrograd's loss curve (checked in the script against an eager rebuild,
    and micrograd itself when installed)."""
    proc = run_example("replay_moons.py", "--batched", "--quick", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "batched replay equals micrograd's loss to 1e-9: True" in proc.stdout
    assert "eager rebuild agrees to 1e-9: False" not in proc.stdout
    assert "step  29" in proc.stdout and "FAILED" not in proc.stdout

"""``microgrid demo`` (microgrid.demo) in its quick form, with and without
matplotlib and tqdm, and the digits examples it builds on
(examples/digits_cnn.py, examples/digits_3v9.py) run with --quick."""
import io
import os
import sys

import numpy as np
import pytest
from conftest import run_example

import microgrid as mg
from microgrid import demo, nn

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_demo_writes_models_and_pictures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert demo.main(["--quick", "--out", str(out), "--seed", "1"]) == 0
    for name in ["moons_boundary.png", "digits_saliency.png"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    stdout = capsys.readouterr().out
    assert "moons step" in stdout and "digits epoch 1" in stdout and "test accuracy" in stdout
    # the saved models load back into the same architectures
    mlp = nn.MLP(2, [16, 16, 1]).load(out / "moons_mlp.npz")
    assert len(mlp.parameters()) == 337
    cnn = demo.digits_model().load(out / "digits_cnn.npz")
    assert list(cnn.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                      "6.weight", "6.bias", "8.weight", "8.bias"]


def test_quick_demo_without_matplotlib_or_tqdm_draws_text(tmp_path, capsys, monkeypatch):
    # a None entry in sys.modules makes the import raise ImportError
    for name in ["matplotlib", "matplotlib.pyplot", "tqdm"]:
        monkeypatch.setitem(sys.modules, name, None)
    result = demo.run(str(tmp_path), seed=0, quick=True)
    captured = capsys.readouterr()
    assert "matplotlib is not installed" in captured.out
    boundary = (tmp_path / "moons_boundary.txt").read_text()
    assert boundary in captured.out
    rows = boundary.splitlines()
    assert rows[0] == rows[-1] == "+" + "-" * 64 + "+"
    assert len(rows) == 26 and all(len(r) == 66 for r in rows)
    body = "".join(rows[1:-1])
    assert {":", " ", "x", "o"} <= set(body)
    assert "saliency" in (tmp_path / "digits_saliency.txt").read_text()
    assert not list(tmp_path.glob("*.png"))
    assert "moons MLP [" in captured.err and "#" in captured.err     # our own progress bar
    assert result["moons_accuracy"] >= 0.85
    assert sorted(os.path.basename(f) for f in result["files"]) == [
        "digits_cnn.npz", "digits_saliency.txt", "moons_boundary.txt", "moons_mlp.npz"]


def test_boundary_text_marks_regions_by_the_model_sign():
    class Sign(nn.Module):   # score = x: positive on the right half
        def __call__(self, x):
            return mg.Value(x[0])
    X = np.array([[-1.0, 0.0], [1.0, 0.0]])
    text = demo.boundary_text(Sign(), X, np.array([-1, 1]), cols=10, rows=4)
    inner = [row[1:-1] for row in text.splitlines()[1:-1]]
    assert all(row[:5].strip(" o") == "" and row[5:].strip(":x") == "" for row in inner)
    assert "o" in inner[2][:5] and "x" in inner[2][5:]


def test_saliency_is_the_input_gradient_of_each_predicted_score():
    mg.manual_seed(0)
    model = demo.digits_model()
    images = np.random.default_rng(0).integers(0, 17, size=(3, 8, 8)).astype(float)
    predicted, maps = demo.saliency(model, images)
    assert maps.shape == (3, 8, 8) and (maps >= 0).all()
    for i in range(3):
        # one image at a time, through the scalar bridge logits[0, c]
        x = mg.tensor(images[i:i + 1, None] / 16.0, requires_grad=True)
        logits = model(x)
        c = int(np.asarray(logits.data).argmax())
        assert c == predicted[i]
        logits[0, c].backward()
        np.testing.assert_allclose(maps[i], np.abs(np.asarray(x.grad))[0, 0], rtol=1e-12, atol=1e-15)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_line_bar_draws_on_its_stream():
    stream = _Terminal()
    bar = demo._LineBar(4, "task", stream=stream, width=8, min_interval=0.0)
    bar.update(2)
    bar.set_postfix_str("loss=1.0")
    bar.update(2)
    bar.close()
    text = stream.getvalue()
    assert "task [####....] 2/4" in text and "task [########] 4/4" in text and "loss=1.0" in text
    assert text.endswith("\n") and text.count("\n") == 1


def test_line_bar_redraws_at_most_ten_times_a_second_on_a_terminal():
    stream, clock = _Terminal(), _Clock()
    bar = demo._LineBar(1000, "task", stream=stream, clock=clock)
    for _ in range(1000):           # 1000 steps in 0.5 s
        clock.now += 0.0005
        bar.update(1)
    bar.close()
    redraws = stream.getvalue().count("\r")
    assert 5 <= redraws <= 8        # the first draw, one per 0.1 s, the last
    assert "1000/1000" in stream.getvalue()


def test_line_bar_prints_lines_not_redraws_when_not_a_terminal(capsys):
    stream = io.StringIO()
    bar = demo._LineBar(100, "task", stream=stream)
    for epoch in range(3):
        for _ in range(33):
            bar.update(1)
        bar.write(f"epoch {epoch}")
    bar.close()
    assert "\r" not in stream.getvalue()
    assert stream.getvalue().count("\n") == 1 and "99/100" in stream.getvalue()
    assert capsys.readouterr().out.splitlines() == ["epoch 0", "epoch 1", "epoch 2"]


def test_demo_log_has_no_redraws(tmp_path):
    # `microgrid demo > demo.log 2>&1`: one line per epoch, no carriage returns
    import subprocess
    import sys
    from conftest import child_env
    done = subprocess.run([sys.executable, "-m", "microgrid", "demo", "--quick", "--out", str(tmp_path / "o")],
                          cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr
    # each bar is one summary line, not a line per redraw
    assert done.stderr.count("digits CNN [") == 1 and done.stderr.count("moons MLP [") == 1


def test_bad_command_line_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--seed", "-3"])
    assert exc.value.code == 2 and "seed" in capsys.readouterr().err




def test_digits_cnn_example_quick():
    proc = run_example("digits_cnn.py", "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch  3" in proc.stdout and "at least the claimed 90%" in proc.stdout


def test_digits_3v9_example_quick():
    proc = run_example("digits_3v9.py", "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "step size 0.1 learns (>= 90%): yes" in proc.stdout
    assert "step size 10 collapses (saturated, <= 60%): yes" in proc.stdout

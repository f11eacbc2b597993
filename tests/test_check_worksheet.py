"""Tests of worksheets (microgrid.check.load_worksheet) and `microgrid check`."""
import pytest

from conftest import EXAMPLES
from microgrid.tools.check import WorksheetError, load_worksheet
from microgrid.cli import main

SHEETS = EXAMPLES / "worksheets"


def run(tmp_path, text, capsys):
    path = tmp_path / "sheet.txt"
    path.write_text(text)
    status = main(["check", str(path)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_problem01_sheet_finds_the_sign_slip(capsys):
    status = main(["check", str(SHEETS / "problem01_two_neuron_bce.txt")])
    out = capsys.readouterr().out
    assert status == 1
    assert "6 correct, 1 wrong; first error: dL/dw12" in out
    assert "dL/dw12 = 1.75    WRONG (sign)" in out


def test_problem04_and_05_sheets_are_correct(capsys):
    for name in ("problem04_relu_xor.txt", "problem05_softmax.txt"):
        assert main(["check", str(SHEETS / name)]) == 0, capsys.readouterr().out
    assert "WRONG" not in capsys.readouterr().out


def test_markdown_output(capsys):
    main(["check", "--markdown", str(SHEETS / "problem04_relu_xor.txt")])
    assert capsys.readouterr().out.startswith("**Marked sheet for y**")


SMALL = """\
a = 2
b = -3
c = a*b + leaky_relu(b, 0.1)
d = tanh(c / 10)
root: d
answers:
c = {c}
dd/da = {g}
"""


def test_small_sheet_with_table_functions(tmp_path, capsys):
    import math
    c = 2 * -3 + -0.3
    g = (1 - math.tanh(c / 10) ** 2) / 10 * -3
    status, out, err = run(tmp_path, SMALL.format(c="-6.3", g=f"{g:.4f}"), capsys)
    assert status == 0, out + err
    status, out, err = run(tmp_path, SMALL.format(c="6.3", g=f"{g:.4f}"), capsys)
    assert status == 1 and "WRONG (sign)" in out


@pytest.mark.parametrize("text, line, message", [
    ("a = 2\nb = a +* 3\nroot: b\n", 2, "not a Python assignment"),
    ("a = 2\nb = foo(a)\nroot: b\n", 2, "unknown function 'foo'"),
    ("a = 2\nb = a @ a\nroot: b\n", 2, "is not an op"),
    ("a = 2\nb = q * a\nroot: b\n", 2, "'q' is not defined"),
    ("a = 2\na = 3\nroot: a\n", 2, "assigned twice"),
    ("a = 2\nb = a\nroot: b\n", 2, "computes nothing new"),
    ("a = 2\nb = a*a\nroot: b\nanswers:\nb = four\n", 5, "not a number"),
    ("a = 2\nb = a*a\nroot: b\nanswers:\nb = 4\nb = 4\n", 6, "second answer"),
    ("a = 2\nb = a*a\nroot: b\nanswers:\nc = 4\n", 5, "does not define"),
    ("a = 2\nc = 3\nb = a*a\nroot: b\nanswers:\ndb/dc = 0\n", 6, "does not depend on"),
    ("a = 2\nb = a*a\nanswers:\nb = 4\n", None, "no 'root: NAME' line"),
    ("a = 2\nb = a*a\nroot: z\n", 3, "root 'z' is not defined"),
    ("a = 2\nb = a*a\nroot: b\nanswers:\nb 4\n", 5, "expected 'name = expression' or key = number"),
    ("a = 2\nb = a.__class__\nroot: b\n", 2, "cannot read"),
])
def test_malformed_sheets_exit_2_with_the_line(tmp_path, capsys, text, line, message):
    status, out, err = run(tmp_path, text, capsys)
    assert status == 2 and "Traceback" not in err
    assert message in err
    if line is not None:
        assert f"sheet.txt:{line}:" in err


def test_missing_file(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_load_worksheet_no_eval():
    # names that would mean something to Python are not reachable
    with pytest.raises(WorksheetError, match="unknown function '__import__'"):
        load_worksheet("a = __import__('os')\nroot: a\n")

"""Shared by the exam-problem scripts: comparing numbers and reporting.

Two kinds of comparison, kept apart on purpose:

- ``hand_sheet(root, answers)``: the hand-work on a graph (values and
  derivatives keyed by label) marked by ``mg.check``, which finds each slip
  and says why (sign, wrong local derivative, arithmetic) by itself; the
  scripts hold the hand numbers only, never an explanation of a slip.
- ``hand(...)``: one number that is not on a graph (a count, a sign) against
  the number written by hand, to the decimals written.  A disagreement is a
  finding about the hand-work (a slip), not a failure.
- ``check(...)``: microgrid's number against an independent reference
  computed another way (plain math, numpy, a closed form).  A disagreement
  here means microgrid is wrong, and the script exits with status 1.
"""
import math
import sys

import numpy as np


def _decimals(text):
    text = text.strip().lstrip("+-")
    if "e" in text.lower():
        return None
    return len(text.split(".")[1]) if "." in text else 0


def show(x, digits=10):
    """A number with enough digits to compare (integers bare)."""
    x = float(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.{digits}g}"


class Report:
    def __init__(self, title):
        self.title = title
        self.failures = []
        self.slips = []
        self.hand_compared = 0
        print(title)
        print("=" * len(title))

    def section(self, name):
        print()
        print(name)
        print("-" * len(name))

    def hand(self, what, written, ours, why=""):
        """Compare a hand-written number (a string, as written) with ours."""
        self.hand_compared += 1
        written = str(written)
        value = float(written)
        d = _decimals(written)
        tol = 0.5 * 10.0 ** -d + 1e-12 if d is not None else 1e-9 * max(1.0, abs(value))
        truncated = d is not None and math.trunc(float(ours) * 10 ** d) == round(value * 10 ** d)
        if abs(float(ours) - value) <= tol:
            verdict = "agrees" + (f" (to the {d} decimal{'s' if d > 1 else ''} written)" if d else "")
        elif truncated:
            verdict = (f"agrees when truncated to {d} decimals "
                       f"(rounded it is {float(ours):.{d}f})")
        else:
            verdict = "DIFFERS from the hand-work" + (f": {why}" if why else "")
            self.slips.append(f"{what}: hand-work {written}, correct {show(ours)}" + (f" ({why})" if why else ""))
        print(f"  {what:<28} hand {written:<10} microgrid {show(ours):<16} {verdict}")

    def hand_sheet(self, root, answers):
        """Mark the hand-work ``answers`` ({label or 'dL/dx': as written}) on
        the graph of ``root`` with ``mg.check`` and print the marked sheet;
        every wrong answer becomes a slip with check's own explanation."""
        import microgrid as mg

        sheet = mg.check(root, answers)
        self.hand_compared += len(sheet.items)
        print("\n".join("  " + line for line in str(sheet).splitlines()))
        for item in sheet.items:
            if item.verdict == "wrong":
                why = item.explanation.splitlines()[0]
                self.slips.append(f"{item.key}: hand-work {item.given}, correct {show(item.expected)} "
                                  f"({item.cause}: {why})")
        return sheet

    def hand_array(self, what, written, ours, why=""):
        """Compare a hand-written array (integers or exact decimals) with ours,
        entry by entry; only the entries that differ are listed."""
        written = np.asarray(written, dtype=float)
        ours = np.asarray(ours, dtype=float)
        if written.shape != ours.shape:
            self.hand_compared += 1
            self.slips.append(f"{what}: hand-work has shape {written.shape}, correct {ours.shape}")
            print(f"  {what:<28} DIFFERS: shape {written.shape} by hand, {ours.shape} computed")
            return
        wrong = np.argwhere(~np.isclose(written, ours, rtol=0, atol=1e-9))
        if len(wrong) == 0:
            self.hand_compared += 1
            print(f"  {what:<28} all {written.size} entries agree")
        for idx in wrong:
            i = tuple(int(k) for k in idx)
            self.hand(f"{what} {list(i)}", f"{written[i]:g}", ours[i], why)

    def check(self, what, ours, reference, tol=1e-9):
        """Compare microgrid's number(s) with an independent reference."""
        ours_a = np.asarray(ours, dtype=float)
        ref_a = np.asarray(reference, dtype=float)
        ok = ours_a.shape == ref_a.shape and bool(
            np.all(np.isclose(ours_a, ref_a, rtol=tol, atol=tol, equal_nan=True)))
        if ours_a.size == 1:
            shown = f"microgrid {show(ours_a.reshape(-1)[0])}, reference {show(ref_a.reshape(-1)[0])}"
        else:
            err = np.max(np.abs(ours_a - ref_a)) if ours_a.shape == ref_a.shape else math.inf
            shown = f"shape {ours_a.shape}, max |difference| {err:.3g}"
        print(f"  check {what:<40} {shown}: {'ok' if ok else 'MISMATCH'}")
        if not ok:
            self.failures.append(what)
        return ok

    def require(self, what, condition, detail=""):
        """A yes/no check of microgrid's own behaviour."""
        print(f"  check {what:<40} {detail + ': ' if detail else ''}{'ok' if condition else 'FAILED'}")
        if not condition:
            self.failures.append(what)
        return bool(condition)

    def finish(self):
        print()
        if self.slips:
            print("Where the hand-work differs from the correct values:")
            for s in self.slips:
                print(f"  - {s}")
        elif self.hand_compared:
            print("The hand-work agrees with microgrid everywhere it was compared.")
        if self.failures:
            print(f"FAILED: microgrid disagrees with the reference in: {', '.join(self.failures)}")
            sys.exit(1)
        print("All of microgrid's numbers match the independent reference values.")
        sys.exit(0)

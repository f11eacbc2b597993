"""Checking a person's hand-worked backprop: ``microgrid.check(root, answers)``.

This module owns the marking of a worked solution.  The person's numbers
come keyed by node labels (``"z1"``: the value of the node labelled z1) and
by derivatives (``"dL/dw12"``: d(node labelled L)/d(node labelled w12)).  Each
answer is marked in the order the computation runs (forward values, with
the local derivatives of each node, then the gradients in backward's order):

- **correct**: the true value, to the precision written (d decimals written:
  the true value rounded or truncated to d decimals; a bare integer or a
  fraction is exact unless marked with ``≈`` or ``~``);
- **carried**: not the true value, but what the correct rule gives from the
  person's own earlier answers (a rounded or wrong answer carried on);
- **wrong**, with a cause: ``"sign"`` (right magnitude, wrong sign, and the
  factors of the chain where it can have been lost), ``"local derivative"``
  (the number is what a named wrong rule gives) or ``"arithmetic"``.

Nothing here is written per op or per problem.  The "person's world" (their
values and gradients, with every missing step filled in by the correct rule)
is recomputed by the engine itself: a node is rebuilt from its op-table row
over the person's operand values, and its local derivatives are the
engine's ``_local_grads()``.  The wrong rules are generic transformations of
one local factor of the chain (see ``WRONG_RULES``).
"""
from __future__ import annotations

import ast
import html
import math
import operator
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ..core import _engine, optable
from ..core._engine import Node, Value, topological_order
from .explain import _is_constant_node, _name_nodes, explain, fmt

__all__ = ["check", "CheckReport", "CheckItem", "parse_answer", "WRONG_RULES"]


# ---------------------------------------------------------------------------
# Numbers as written

@dataclass(frozen=True)
class Answer:
    """A number as the person wrote it: ``value``, and ``decimals`` written
    (None: taken as exact, an integer or a fraction)."""
    text: str
    value: float
    decimals: int | None
    relative: float = 0.0     # a quotient of rounded numbers: its relative precision

    def matches(self, target):
        """Whether ``target`` written to this answer's precision is this answer:
        ``target`` rounded, or truncated, to the decimals written."""
        if target is None or not math.isfinite(target):
            return False
        if self.relative:
            return abs(self.value - target) <= self.relative * abs(target) + 1e-12
        if self.decimals is None:
            return abs(self.value - target) <= 1e-9 * max(1.0, abs(target))
        unit = 10.0 ** -self.decimals
        if abs(self.value - target) <= 0.5 * unit * (1 + 1e-9) + 1e-12:
            return True                                     # rounded
        truncated = math.trunc(target / unit) * unit
        return abs(self.value - truncated) <= 1e-9 * unit   # truncated


_APPROX = ("≈", "~", "approx.", "approx", "about")


def parse_answer(key, raw):
    """The person's answer ``raw`` (a number, or a string as written:
    ``"0.289"``, ``"-1.75"``, ``"1/2"``, ``"≈ 0.34"``) as an ``Answer``;
    ValueError naming ``key`` if it is not a number."""
    if isinstance(raw, bool):
        raise TypeError(f"check: the answer for {key!r} must be a number or a string, got a bool")
    if isinstance(raw, int):
        return Answer(str(raw), float(raw), None)
    if isinstance(raw, Fraction):
        return Answer(str(raw), float(raw), None)
    if isinstance(raw, float) or type(raw).__name__.startswith("float"):
        raw = float(raw)
        if not math.isfinite(raw):
            raise ValueError(f"check: the answer for {key!r} is {raw}, not a finite number")
        return _parse_text(key, repr(raw), repr(raw), exact_ints=False)
    if not isinstance(raw, str):
        raise TypeError(f"check: the answer for {key!r} must be a number or a string, "
                        f"got {type(raw).__name__}")
    return _parse_text(key, raw, raw, exact_ints=True)


def _parse_text(key, shown, text, exact_ints):
    s = text.strip().replace("−", "-").replace("–", "-").replace(" ", "")
    approx = False
    for mark in _APPROX:
        if s.lower().startswith(mark):
            s, approx = s[len(mark):], True
            break
    s = s.rstrip(".…") if s.endswith("…") else s
    bad = ValueError(f"check: the answer for {key!r} is {shown!r}, which is not a number "
                     "(write e.g. 0.289, -1.75, 1/2 or ≈ 0.34)")
    if s.count("/") == 1:
        num, den = s.split("/")
        try:
            parts = [Decimal(num), Decimal(den)]
            f = Fraction(parts[0]) / Fraction(parts[1])
        except (InvalidOperation, ZeroDivisionError, ValueError):
            raise bad from None
        # 1/2 is exact; 1/2.718 carries the precision of 2.718 (relative
        # errors of a quotient's parts add up)
        relative = math.fsum(0.5 * 10.0 ** p.as_tuple().exponent / abs(float(p))
                             for p in parts if p.as_tuple().exponent < 0 and p != 0)
        if approx and not relative:
            relative = 5e-3     # "≈ 1/3": the fraction to about three significant digits
        return Answer(shown.strip(), float(f), None, relative * (1 + 1e-9))
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise bad from None
    if not d.is_finite():
        raise bad
    exponent = d.as_tuple().exponent
    decimals = max(0, -exponent)
    if decimals == 0 and exact_ints and not approx and "." not in s:
        return Answer(shown.strip(), float(d), None)
    return Answer(shown.strip(), float(d), decimals)


# ---------------------------------------------------------------------------
# Rebuilding a node over other operand values, with the engine's own rules

# Python's syntax for the binary operators; which of them are ops is the
# table's business (the BINARY rows' symbols).
_PYTHON_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                     ast.Div: operator.truediv, ast.Pow: operator.pow}


def binary_operators():
    """{ast operator class: (row, function)} for the table's BINARY rows."""
    ops = {}
    for row in optable.ELEMENTWISE:
        if row.kind == "BINARY":
            op_class = type(ast.parse(f"a {row.symbol} b", mode="eval").body.op)
            ops[op_class] = (row, _PYTHON_OPERATORS[op_class])
    return ops


_BY_SYMBOL = {row.symbol: fn for row, fn in binary_operators().values()}

def rebuild(node, operands):
    """A fresh node of ``node``'s op over the numbers ``operands`` (one per
    entry of ``node._parents()``), built by the engine; None if the op cannot
    be rebuilt (a tensor op, or a node built by hand with a custom ``_op``)."""
    row = optable.row_of(node)
    kind = row.kind
    c = node._const
    if kind == "BINARY":
        return _BY_SYMBOL[row.symbol](Value(operands[0]), Value(operands[1]))
    if kind == "BINARY_AC":
        return _BY_SYMBOL[row.symbol](Value(operands[0]), c)
    if kind == "BINARY_CA":
        return _BY_SYMBOL[row.symbol](c, Value(operands[1]))
    if kind == "UNARY":
        kwargs = {row.variant[0]: row.variant[1]} if row.variant else {}
        return getattr(Value(operands[0]), row.name)(**kwargs)
    if kind == "UNARY_C":
        return getattr(Value(operands[0]), row.name)(c)
    # The fused n-ary nodes have no formula row: they are the engine's
    # functions of the same name (mg.sum, mg.mean, mg.dot), rebuilt with them.
    values = [Value(x) for x in operands]
    if row.code_name == "SUM":
        if node._local_grads() and node._local_grads()[-1] is None:   # a constant start
            return _engine.sum(values[:-1], start=operands[-1])
        return _engine.sum(values)
    if row.code_name == "MEAN":
        return _engine.mean(values)
    if row.code_name == "DOT":
        n = len(values) // 2
        return _engine.dot(values[:n], values[n:2 * n], values[-1] if len(values) % 2 else None)
    return None


# ---------------------------------------------------------------------------
# The catalogue of wrong rules: generic transformations of one local factor

def _wrong_rules(node, row, position, local, locals_, out, operand):
    """(rule name, cause, wrong factor) for the local factor d node/d operand
    at ``position``: each is what a typical slip puts in its place."""
    rules = [
        ("the node's own value in place of its derivative", "local derivative", out),
        ("the operand's value in place of the derivative", "local derivative", operand),
        ("the factor dropped (taken as 1)", "local derivative", 1.0),
        ("the sign of the factor flipped", "sign", -local),
    ]
    if row.kind == "BINARY":
        rules.append(("the derivative with respect to the other operand", "local derivative",
                      locals_[1 - position]))
    return [r for r in rules if r[2] is not None and math.isfinite(r[2])
            and abs(r[2] - local) > 1e-12 * max(1.0, abs(local))]


#: The names of the wrong rules check tries on every local factor.
WRONG_RULES = ("the node's own value in place of its derivative",
               "the operand's value in place of the derivative",
               "the factor dropped (taken as 1)",
               "the sign of the factor flipped",
               "the derivative with respect to the other operand",
               "an upstream gradient dropped (taken as 1)")


# ---------------------------------------------------------------------------
# The report

@dataclass
class CheckItem:
    key: str
    given: str                 # as written
    expected: float
    verdict: str               # "correct", "carried" or "wrong"
    cause: str | None = None   # "sign", "local derivative", "arithmetic" (wrong only)
    explanation: str = ""
    value: float = 0.0         # the given number
    follows_from: tuple = ()   # keys of the earlier answers a carried number follows from
    phase: str = "forward"     # "forward" or "backward"


class CheckReport:
    """The marked sheet: ``items`` in computation order, ``ok``,
    ``first_error``; ``print()`` it, ``.to_markdown()``, or let Jupyter show it."""

    def __init__(self, root_name, items, digits=4):
        self.root_name = root_name
        self.items = items
        self.digits = digits

    @property
    def ok(self):
        return all(i.verdict != "wrong" for i in self.items)

    @property
    def first_error(self):
        return next((i for i in self.items if i.verdict == "wrong"), None)

    def __getitem__(self, key):
        for i in self.items:
            if i.key == key:
                return i
        raise KeyError(f"check: no answer for {key!r}")

    def _summary(self):
        counts = {v: sum(i.verdict == v for i in self.items) for v in ("correct", "carried", "wrong")}
        text = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        if self.first_error is not None:
            text += f"; first error: {self.first_error.key}"
        return text or "no answers"

    def _mark(self, item):
        if item.verdict == "wrong":
            return f"WRONG ({item.cause})"
        return item.verdict

    def __str__(self):
        width = max([len(i.key) for i in self.items] + [3])
        gwidth = max([len(i.given) for i in self.items] + [5])
        out = [f"Marked sheet for {self.root_name}: {self._summary()}", ""]
        for i in self.items:
            out.append(f"  {i.key.ljust(width)} = {i.given.ljust(gwidth)}  "
                       f"{self._mark(i):<26} expected {fmt(i.expected, self.digits)}")
            if i.explanation:
                out.extend(f"  {' ' * width}     {line}" for line in i.explanation.splitlines())
        return "\n".join(out)

    def __repr__(self):
        return str(self)

    def to_markdown(self):
        def cell(s):
            return s.replace("|", "\\|").replace("\n", "<br>")
        out = [f"**Marked sheet for {self.root_name}**: {self._summary()}", "",
               "| answer | given | expected | mark | why |", "|---|---:|---:|---|---|"]
        for i in self.items:
            out.append(f"| `{i.key}` | `{cell(i.given)}` | `{fmt(i.expected, self.digits)}` | "
                       f"{'**' + self._mark(i) + '**' if i.verdict == 'wrong' else self._mark(i)} | "
                       f"{cell(i.explanation)} |")
        return "\n".join(out) + "\n"

    def _repr_markdown_(self):
        return self.to_markdown()

    def _repr_html_(self):
        e = html.escape
        out = [f"<p><b>Marked sheet for {e(self.root_name)}</b>: {e(self._summary())}</p>",
               "<table><tr><th>answer</th><th>given</th><th>expected</th><th>mark</th>"
               "<th>why</th></tr>"]
        for i in self.items:
            style = " style='color:#b00'" if i.verdict == "wrong" else ""
            out.append(f"<tr><td><code>{e(i.key)}</code></td><td><code>{e(i.given)}</code></td>"
                       f"<td><code>{e(fmt(i.expected, self.digits))}</code></td>"
                       f"<td{style}>{e(self._mark(i))}</td>"
                       f"<td>{e(i.explanation).replace(chr(10), '<br>')}</td></tr>")
        out.append("</table>")
        return "\n".join(out)


# ---------------------------------------------------------------------------
# check()

_DERIVATIVE = re.compile(r"^d(?P<num>.+?)/d(?P<den>.+)$")


class _Sheet:
    """The graph of ``root`` as check sees it: nodes in topological order,
    names (labels), operands, and the person's answers by node."""

    def __init__(self, root, answers, digits):
        self.root = root
        self.order = [v for v in topological_order(root) if not _is_constant_node(v)]
        for v in self.order:
            if not isinstance(v, Value):
                raise ValueError("check: the graph of root contains a tensor node "
                                 f"({getattr(v, '_op', '') or 'leaf'}); check marks scalar graphs")
        self.pos = {id(v): i for i, v in enumerate(self.order)}
        self.name = _name_nodes(self.order, digits)
        self.by_label = {}
        for v in self.order:
            if v.label:
                if v.label in self.by_label:
                    raise ValueError(f"check: the label {v.label!r} names more than one node of "
                                     "the graph; answers name nodes by label, so labels must be unique")
                self.by_label[v.label] = v
        if not root.label:
            raise ValueError("check: the root has no label; label it (e.g. root.label = 'L') so "
                             "that derivative keys like 'dL/dw' can name it")
        # operands: (graph node or None, number) per entry of _parents()
        self.operands = {}
        for v in self.order:
            ops = []
            for p in v._parents():
                ops.append((p if id(p) in self.pos else None, float(p.data)))
            self.operands[id(v)] = ops
        self.values, self.grads = {}, {}
        for key, raw in answers.items():
            if not isinstance(key, str):
                raise TypeError(f"check: answer keys are strings (labels or 'dL/dx'), got {key!r}")
            self._add(key.strip(), key, parse_answer(key, raw))

    def node(self, label, key):
        if label not in self.by_label:
            labels = ", ".join(sorted(self.by_label))
            raise ValueError(f"check: answer {key!r} names {label!r}, but no node of the graph "
                             f"of {self.root.label} has that label (labels: {labels})")
        return self.by_label[label]

    def _add(self, key, original, answer):
        m = _DERIVATIVE.match(key)
        if key in self.by_label or not m:
            self.values[id(self.node(key, original))] = (original, answer)
            return
        u, v = self.node(m["num"], original), self.node(m["den"], original)
        if v is not u and not _depends(self, u, v):
            raise ValueError(f"check: answer {original!r}: {m['num']} does not depend on "
                             f"{m['den']}, so the derivative names no step of the computation")
        self.grads[(id(u), id(v))] = (original, answer)


def _depends(sheet, u, v):
    reach = {id(v)}
    for w in sheet.order[sheet.pos[id(v)] + 1:sheet.pos[id(u)] + 1]:
        if any(p is not None and id(p) in reach for p, _ in sheet.operands[id(w)]):
            reach.add(id(w))
    return id(u) in reach


def check(root, answers, *, digits=4):
    """Mark the person's ``answers`` on the graph of ``root``; returns a
    ``CheckReport``.  ``answers``: {key: number or string as written}, keys
    a node's label (its value) or ``"d<label>/d<label>"`` (a derivative; of
    the root for the gradients, of a node for its local derivatives)."""
    if not isinstance(root, Node):
        raise TypeError(f"check(root=...) takes a graph node (Value), got {type(root).__name__}")
    if not isinstance(answers, dict):
        raise TypeError(f"check(answers=...) takes a dict of key: number, got {type(answers).__name__}")
    sheet = _Sheet(root, answers, digits)
    world = _PersonWorld(sheet)
    items = _mark_values(sheet, world, digits)
    for u_id in sorted({u for u, _ in sheet.grads}, key=lambda i: -sheet.pos[i]):
        items += _mark_gradients(sheet, world, sheet.order[sheet.pos[u_id]], digits)
    items.sort(key=lambda it: it[0])
    return CheckReport(sheet.name(root), [it[1] for it in items], digits)


class _PersonWorld:
    """The forward pass as the person did it: their given values where they
    wrote one, the correct rule over their numbers elsewhere; and each node's
    local derivatives at those numbers (by the engine)."""

    def __init__(self, sheet):
        self.value, self.source, self.locals = {}, {}, {}
        self.rebuilt = {}        # id -> value of the node recomputed from the person's operands
        for v in sheet.order:
            ops = sheet.operands[id(v)]
            inputs = [self.value[id(p)] if p is not None else x for p, x in ops]
            sources = set().union(*[self.source[id(p)] for p, _ in ops if p is not None])
            changed = any(p is not None and self.value[id(p)] != p.data for p, _ in ops)
            node = rebuild(v, inputs) if changed else v
            self.rebuilt[id(v)] = node.data if node is not None else None
            self.locals[id(v)] = tuple(node._local_grads()) if node is not None else v._local_grads()
            if id(v) in sheet.values:
                key, answer = sheet.values[id(v)]
                self.value[id(v)] = answer.value
                self.source[id(v)] = {key} if answer.value != v.data else set()
            else:
                self.value[id(v)] = self.rebuilt[id(v)] if node is not None else v.data
                self.source[id(v)] = sources


def _mark_values(sheet, world, digits):
    """Forward items (values, and local derivatives d node/d operand) in
    topological order."""
    items = []
    name = sheet.name
    explanation = explain(sheet.root, backward=False, digits=digits)
    rows = {r.name: r for r in explanation.forward}
    for v in sheet.order:
        if id(v) not in sheet.values:
            continue
        key, answer = sheet.values[id(v)]
        true = float(v.data)
        row = rows.get(name(v))
        line = f"{name(v)} = {row.expression} = {fmt(true, digits)}" if row and v._parents() \
            else f"{name(v)} = {fmt(true, digits)} (given in the problem)"
        operands = list(dict.fromkeys(f"{name(p)} = {fmt(p.data, digits)}"
                                      for p, _ in sheet.operands[id(v)] if p is not None))
        if operands:
            line += f" with {', '.join(operands)}"
        mine = world.rebuilt[id(v)]
        sources = set().union(*[world.source[id(p)] for p, _ in sheet.operands[id(v)] if p is not None])
        if answer.matches(true):
            item = CheckItem(key, answer.text, true, "correct", explanation=_precision_note(answer, true))
        elif mine is not None and sources and answer.matches(mine):
            item = CheckItem(key, answer.text, true, "carried", follows_from=tuple(sorted(sources)),
                             explanation=f"follows correctly from your {_yours(sheet, sources)}; "
                                         f"{line}")
        elif true != 0 and (answer.matches(-true) or (mine is not None and answer.matches(-mine))):
            item = CheckItem(key, answer.text, true, "wrong", "sign",
                             explanation=f"right magnitude, wrong sign: {line}")
        else:
            item = CheckItem(key, answer.text, true, "wrong", "arithmetic",
                             explanation=f"should be {line}"
                             + (f" (from your {_yours(sheet, sources)}: {fmt(mine, digits)})"
                                if sources and mine is not None else ""))
        item.value = answer.value
        items.append(((0, sheet.pos[id(v)], 0, 0), item))
    return items


def _yours(sheet, keys):
    parts = []
    for k in sorted(keys):
        parts.append(f"{k} = {_given_of(sheet, k)}")
    return ", ".join(parts)


def _given_of(sheet, key):
    for k, a in list(sheet.values.values()) + list(sheet.grads.values()):
        if k == key:
            return a.text
    return "?"


def _precision_note(answer, true):
    if answer.decimals is None or abs(answer.value - true) <= 1e-12 * max(1.0, abs(true)):
        return ""
    unit = 10.0 ** -answer.decimals
    how = "rounded" if abs(answer.value - round(true, answer.decimals)) < 1e-6 * unit else "truncated"
    return f"{true:.10g} {how} to {answer.decimals} decimal{'s' if answer.decimals != 1 else ''}"


def _mark_gradients(sheet, world, u, digits):
    """The derivatives of ``u`` the person gave, by the chain rule from ``u``
    down: true values, the person's own sweep (their given gradients used
    where they wrote them), and for a wrong one the causes it fits."""
    name = sheet.name
    order = sheet.order[:sheet.pos[id(u)] + 1]
    given = {v: ka for (uu, v), ka in sheet.grads.items() if uu == id(u)}
    true_locals = {id(v): v._local_grads() for v in order}
    true = _sweep(sheet, order, u, true_locals, {})
    person = _sweep(sheet, order, u, world.locals, given, world, true)
    items = []
    for v_id, (key, answer) in given.items():
        v = sheet.order[sheet.pos[v_id]]
        expected = true.grad.get(v_id, 0.0)
        mine = person.grad.get(v_id, 0.0)
        sources = person.source.get(v_id, set())
        is_local = any(p is v for p, _ in sheet.operands[id(u)])
        phase = "forward" if is_local else "backward"
        head = f"d{name(u)}/d{name(v)}"
        line = _chain_line(sheet, u, v, digits)
        if answer.matches(expected):
            item = CheckItem(key, answer.text, expected, "correct",
                             explanation=_precision_note(answer, expected))
        elif sources and answer.matches(mine):
            item = CheckItem(key, answer.text, expected, "carried", follows_from=tuple(sorted(sources)),
                             explanation=f"follows correctly from your {_yours(sheet, sources)}; "
                                         f"with the correct values {line}")
        else:
            cause, why = _diagnose(sheet, world, order, u, v, answer, expected, mine, person,
                                   given, digits, true)
            item = CheckItem(key, answer.text, expected, "wrong", cause,
                             explanation=f"{why}\n{head} should be: {line}")
        item.value = answer.value
        item.phase = phase
        if is_local:
            rank = (0, sheet.pos[id(u)], 1, sheet.pos[v_id])
        else:
            rank = (1, -sheet.pos[id(u)], -sheet.pos[v_id], 0)
        items.append((rank, item))
    return items


@dataclass
class _Sweep:
    grad: dict = field(default_factory=dict)      # id -> d u / d node
    used: dict = field(default_factory=dict)      # id -> the gradient passed on (given or computed)
    source: dict = field(default_factory=dict)    # id -> keys of the given answers it rests on


def _sweep(sheet, order, u, locals_of, given, world=None, true=None):
    """Reverse sweep from ``u``: d u / d node for every node before it, with
    the person's given gradients (``given``: id -> (key, Answer)) passed on in
    place of the computed ones where they wrote one."""
    s = _Sweep()
    s.grad[id(u)] = 1.0
    for v in reversed(order):
        if id(v) not in s.grad:
            continue
        g = s.grad[id(v)]
        src = s.source.get(id(v), set())
        if id(v) in given and v is not u:
            key, answer = given[id(v)]
            g = answer.value
            src = {key} if not _close(answer.value, true.grad.get(id(v), 0.0)) else set()
        # a local factor taken at the person's own (wrong or rounded) values
        # rests on the answers those values came from
        moved = set()
        if world is not None:
            for p, _ in sheet.operands[id(v)]:
                if p is not None:
                    moved |= world.source[id(p)]
        s.used[id(v)] = g
        for (p, _), local, right in zip(sheet.operands[id(v)], locals_of[id(v)], v._local_grads()):
            if p is None or local is None:
                continue
            s.grad[id(p)] = s.grad.get(id(p), 0.0) + g * local
            s.source.setdefault(id(p), set()).update(src)
            if moved and not _close(local, right):
                s.source[id(p)].update(moved)
    return s


def _close(a, b):
    return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))


def _chain_of(u, v, digits):
    """explain's chain d u / d v through the labelled nodes, or None."""
    try:
        return explain(u, wrt=v, backward=False, digits=digits, max_paths=4).chain
    except ValueError:
        return None


def _chain_line(sheet, u, v, digits):
    """The chain rule that gives d u / d v, as explain writes it: the product
    along the one path, or the sum of the paths' products."""
    chain = _chain_of(u, v, digits)
    if chain is None:
        return ""
    return chain.lines[0] if chain.n_paths == 1 else chain.lines[-1] if not chain.lines[-1].startswith("(") \
        else chain.lines[-2]


def _sign_story(sheet, u, v, given, digits):
    """Where the sign of d u / d v can have been lost: the negative factors of
    its one path (through the labelled nodes) after the last gradient the
    person gave with the right sign; None when there are several paths."""
    chain = _chain_of(u, v, digits)
    if chain is None or chain.n_paths != 1 or not chain.paths:
        return None
    names, factors, _ = chain.paths[0]
    start = 0
    for i, n in enumerate(names[1:-1], 1):
        node = sheet.by_label.get(n)
        if node is not None and id(node) in given:
            truth = explain(u, wrt=node, backward=False).chain.total
            if truth != 0 and math.copysign(1, given[id(node)][1].value) == math.copysign(1, truth):
                start = i      # the sign was still right at n
    negative = [f"d{names[i]}/d{names[i + 1]} = {fmt(f, digits)}"
                for i, f in enumerate(factors) if i >= start and f < 0]
    if not negative:
        return None
    if start:
        lead = f"your d{names[0]}/d{names[start]} has the right sign, so the sign was lost after it, "
    else:
        lead = "the sign was lost "
    if len(negative) == 1:
        return lead + f"at {negative[0]}"
    return lead + (f"at one of the {len(negative)} negative factors " + ", ".join(negative)
                   + f" ({len(negative)} negative factors give a "
                   + ("negative" if len(negative) % 2 else "positive") + " product)")


def _diagnose(sheet, world, order, u, v, answer, expected, mine, person, given, digits, true):
    """The cause of a wrong derivative: a single wrong local factor (or a
    dropped upstream gradient) that reproduces the person's number, tried in
    their own world (their given values and gradients) and in the correct one."""
    fits = _fits(sheet, order, u, v, answer, mine, person, world.locals, world.value, given, digits)
    true_values = {id(x): float(x.data) for x in order}
    true_locals = {id(x): x._local_grads() for x in order}
    fits += _fits(sheet, order, u, v, answer, expected, true, true_locals, true_values, {}, digits)
    flipped = expected != 0 and (answer.matches(-expected) or answer.matches(-mine))
    sign_fits = [f for f in fits if f[0] == "sign"]
    if flipped or sign_fits:
        text = "right magnitude, wrong sign" if flipped else "wrong sign of one local factor"
        story = _sign_story(sheet, u, v, given, digits) if flipped else None
        negative = list(dict.fromkeys([f[1] for f in sign_fits if f[3] < 0] or [f[1] for f in sign_fits]))
        if story:
            text += "; " + story
        elif negative:
            text += ("; the sign was lost at " + (negative[0] if len(negative) == 1 else
                     "one of the negative factors " + ", ".join(negative)))
        return "sign", text
    named = list(dict.fromkeys(f[2] for f in fits if f[0] == "local derivative"))
    if named:
        return "local derivative", "; or ".join(named[:3])
    return "arithmetic", (f"no single wrong rule gives {answer.text}; the chain rule gives "
                          f"{fmt(mine, digits)}" + (" from your own earlier answers"
                                                    if abs(mine - expected) > 1e-12 else ""))


def _fits(sheet, order, u, v, answer, base, sweep, locals_of, values_of, given, digits):
    """(cause, factor, text, factor value) for each single-factor slip that
    turns ``base`` (d u / d v in one world) into the person's answer."""
    name = sheet.name
    # reach[x] = d x / d v through the nodes whose gradient the person did
    # not give (a given gradient is where their computation restarted)
    reach = {id(v): 1.0}
    for x in order[sheet.pos[id(v)] + 1:]:
        r, hit = 0.0, False
        for (p, _), local in zip(sheet.operands[id(x)], locals_of[id(x)]):
            if p is None or local is None or id(p) not in reach or (p is not v and id(p) in given):
                continue
            r, hit = r + local * reach[id(p)], True
        if hit:
            reach[id(x)] = r
    fits = []
    for x in order[sheet.pos[id(v)] + 1:]:
        g = sweep.used.get(id(x))
        if not g:
            continue          # no gradient reaches x: its factors cannot matter
        row = optable.row_of(x)
        locals_ = locals_of[id(x)]
        through_x = 0.0
        for pos, ((p, _), local) in enumerate(zip(sheet.operands[id(x)], locals_)):
            if p is None or local is None or id(p) not in reach or (p is not v and id(p) in given):
                continue
            through_x += local * reach[id(p)]
            for rule, cause, wrong in _wrong_rules(x, row, pos, local, locals_,
                                                    values_of[id(x)], values_of[id(p)]):
                if answer.matches(base + g * (wrong - local) * reach[id(p)]):
                    fits.append((cause, f"d{name(x)}/d{name(p)} = {fmt(local, digits)}",
                                 f"{rule}: d{name(x)}/d{name(p)} taken as {fmt(wrong, digits)} "
                                 f"instead of {fmt(local, digits)}", local))
        if x is not u and x.label and g != 1.0 and through_x and \
                answer.matches(base + (1.0 - g) * through_x):
            fits.append(("local derivative", f"d{name(u)}/d{name(x)}",
                         f"an upstream gradient dropped (taken as 1): d{name(u)}/d{name(x)} = "
                         f"{fmt(g, digits)} left out of the product", g))
    return fits


# ---------------------------------------------------------------------------
# Worksheets: a graph and a person's answers in plain text

class WorksheetError(ValueError):
    """A malformed worksheet; the message names the file and line."""


WORKSHEET_HELP = """\
A worksheet is plain text, one statement a line, '#' starts a comment:

    x1 = 2                      # a leaf and its value
    w1 = -0.5
    z = w1*x1 + 1               # a node: + - * / ** and the op table's functions
    h = sigmoid(z)              #   (relu, tanh, exp, log, leaky_relu(z, 0.1), ...
    L = -log(h)                 #    sum([...]), mean([...]), dot([w...], [x...], b))
    root: L                     # the node whose derivatives the answers give
    answers:                    # after this line, the person's numbers
    z = -0.5
    h = 0.378
    dL/dw1 = 1.24               # d<root>/d<node>, or d<node>/d<operand>

Each assigned name becomes the node's label; numbers as written
(0.289, -1.75, 1/2, ≈ 0.34).
"""


def _functions():
    """Functions a worksheet may call: the methods of the table's one-operand
    rows, and the engine's fused n-ary builders named by the n-ary rows."""
    functions = {}
    for row in optable.ELEMENTWISE:
        if row.kind in ("UNARY", "UNARY_C") and row.name:
            functions[row.name] = ("method", row.name)
    for row in optable.ROWS:
        if row.kind == "NARY" and hasattr(_engine, row.code_name.lower()):
            functions[row.code_name.lower()] = ("nary", getattr(_engine, row.code_name.lower()))
    return functions


class _Builder:
    """Evaluates one worksheet expression over the names defined so far,
    with Python's syntax read by ``ast`` (nothing is executed)."""

    def __init__(self, nodes, where):
        self.nodes, self.where = nodes, where
        self.operators = binary_operators()
        self.functions = _functions()

    def fail(self, message):
        raise WorksheetError(f"{self.where}: {message}")

    def __call__(self, tree):
        if isinstance(tree, ast.Constant):
            if isinstance(tree.value, bool) or not isinstance(tree.value, (int, float)):
                self.fail(f"{tree.value!r} is not a number")
            return float(tree.value)
        if isinstance(tree, ast.Name):
            if tree.id not in self.nodes:
                self.fail(f"{tree.id!r} is not defined above")
            return self.nodes[tree.id]
        if isinstance(tree, ast.BinOp):
            if type(tree.op) not in self.operators:
                self.fail(f"operator {type(tree.op).__name__} is not an op of microgrid "
                          f"(ops: {' '.join(r.symbol for r, _ in self.operators.values())})")
            return self._apply(self.operators[type(tree.op)][1], self(tree.left), self(tree.right))
        if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, (ast.USub, ast.UAdd)):
            x = self(tree.operand)
            return -x if isinstance(tree.op, ast.USub) else x
        if isinstance(tree, ast.List):
            return [self(e) for e in tree.elts]
        if isinstance(tree, ast.Call):
            return self._call(tree)
        self.fail(f"cannot read {ast.unparse(tree)!r}: use numbers, names, + - * / **, "
                  f"and the functions {', '.join(sorted(self.functions))}")

    def _apply(self, fn, a, b):
        try:
            return fn(a, b)
        except (ArithmeticError, ValueError, TypeError) as exc:
            self.fail(f"cannot compute: {exc}")

    def _call(self, tree):
        if isinstance(tree.func, ast.Attribute):       # z.relu()
            name, args = tree.func.attr, [tree.func.value] + list(tree.args)
        elif isinstance(tree.func, ast.Name):           # relu(z)
            name, args = tree.func.id, list(tree.args)
        else:
            self.fail(f"cannot call {ast.unparse(tree.func)!r}")
        if name not in self.functions:
            self.fail(f"unknown function {name!r}; functions: {', '.join(sorted(self.functions))}")
        kind, target = self.functions[name]
        values = [self(a) for a in args]
        keywords = {k.arg: self(k.value) for k in tree.keywords}
        try:
            if kind == "method":
                if not values:
                    self.fail(f"{name}() takes the node it applies to")
                first = values[0] if isinstance(values[0], Value) else Value(values[0])
                return getattr(first, target)(*values[1:], **keywords)
            return target(*values, **keywords)
        except WorksheetError:
            raise
        except (ArithmeticError, ValueError, TypeError) as exc:
            self.fail(f"{name}(...): {exc}")


def load_worksheet(text, filename="<worksheet>"):
    """The graph and answers of a worksheet: (root, {key: text}, {key: line})."""
    nodes, answers, lines_of = {}, {}, {}
    root_name, root_line, in_answers = None, None, False
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{filename}:{number}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.rstrip(":").strip().lower() == "answers" and line.endswith(":"):
            in_answers = True
            continue
        if line.lower().startswith("root:"):
            root_name, root_line = line.split(":", 1)[1].strip(), number
            if not root_name.isidentifier():
                raise WorksheetError(f"{where}: 'root:' takes the name of a node, got {root_name!r}")
            continue
        if "=" not in line:
            raise WorksheetError(f"{where}: expected 'name = expression'"
                                 f"{' or key = number' if in_answers else ''}, got {line!r}")
        if in_answers:
            key, value = (s.strip() for s in line.split("=", 1))
            if key in answers:
                raise WorksheetError(f"{where}: a second answer for {key!r} "
                                     f"(the first is on line {lines_of[key]})")
            try:
                parse_answer(key, value)
            except ValueError as exc:
                raise WorksheetError(f"{where}: {exc}") from None
            answers[key], lines_of[key] = value, number
            continue
        _define(line, where, nodes)
    if root_name is None:
        raise WorksheetError(f"{filename}: no 'root: NAME' line names the node to check")
    if root_name not in nodes:
        raise WorksheetError(f"{filename}:{root_line}: root {root_name!r} is not defined")
    root = nodes[root_name]
    _check_keys(root, nodes, answers, lines_of, filename)
    return root, answers, lines_of


def _define(line, where, nodes):
    try:
        tree = ast.parse(line, mode="exec")
    except SyntaxError as exc:
        raise WorksheetError(f"{where}: not a Python assignment ({exc.msg})") from None
    if (len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assign)
            or len(tree.body[0].targets) != 1 or not isinstance(tree.body[0].targets[0], ast.Name)):
        raise WorksheetError(f"{where}: expected one assignment 'name = expression', got {line!r}")
    name = tree.body[0].targets[0].id
    if name in nodes:
        raise WorksheetError(f"{where}: {name!r} is assigned twice")
    value = _Builder(nodes, where)(tree.body[0].value)
    if isinstance(value, list):
        raise WorksheetError(f"{where}: a list is an argument of sum/mean/dot, not a node")
    if not isinstance(value, Value):
        value = Value(value)                 # a leaf: a number (or arithmetic of numbers)
    elif value.label or not value._parents():
        raise WorksheetError(f"{where}: {name} = {ast.unparse(tree.body[0].value)} computes "
                             "nothing new; give each node one name")
    value.label = name
    nodes[name] = value


def _check_keys(root, nodes, answers, lines_of, filename):
    in_graph = {id(v) for v in topological_order(root)}
    for key in answers:
        m = _DERIVATIVE.match(key)
        labels = [key] if key in nodes or not m else [m["num"], m["den"]]
        for label in labels:
            where = f"{filename}:{lines_of[key]}"
            if label not in nodes:
                raise WorksheetError(f"{where}: answer {key!r} names {label!r}, which the "
                                     "worksheet does not define")
            if id(nodes[label]) not in in_graph:
                raise WorksheetError(f"{where}: answer {key!r} names {label!r}, a node that the "
                                     f"root {root.label} does not depend on")


def check_worksheet(path, digits=4):
    """Read and mark a worksheet file: returns (report, text)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    root, answers, lines_of = load_worksheet(text, str(path))
    try:
        return check(root, answers, digits=digits)
    except ValueError as exc:
        raise WorksheetError(f"{path}: {exc}") from None

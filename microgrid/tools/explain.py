"""Worked solutions: ``microgrid.explain(root, wrt=None)``.

This module owns the printed explanation of a computation graph, the way a
person writes one out by hand:

- Forward: one row per node in topological order, with its name (its
  ``label``, else ``n<step>``), the op applied to its inputs, its value and
  the local derivative of the op with respect to each input.
- Backward: every node's gradient in the order ``backward()`` computes it
  (reverse topological order), with the chain-rule sum that produces it.
- Chain (with ``wrt=``): the chain-rule product along every path from the
  root to one leaf, e.g.
  ``dL/dw12 = dL/dyhat · dyhat/dh1 · dh1/dz1 · dz1/dw12 = (-2.9199)(-0.2)(1)(-3) = -1.7519``.

The local derivatives are the engine's (``Value._local_grads()``, the
backward rule itself) and their text is the op table's (csrc/mg_ops.def);
explain multiplies them along the graph with its own chain rule and checks
the result against the ``.grad`` that ``backward()`` filled: a worked
solution that disagrees with the engine says so instead of printing one of
the two silently.

One element of a conv2d / max_pool2d output (``explain(out[0, 0, 1, 1],
wrt=w)``) is also written cell by cell: the pooling window and its winning
cell, the convolution's sum of products, and the chain back to every entry
of a conv2d operand (phase 6).  ``Explanation.to_latex()`` gives the whole
solution as an amsmath ``align*`` block.

explain() runs in phases, one function each: arguments and the backward
policy, naming, forward rows, explain's own gradients and the backward rows,
and the chain for ``wrt`` (waypoints, segments, path count, shown paths).

When does explain call ``backward()``?  (``backward='auto'``, the default)

- the root's ``.grad`` is already non-zero: backward has run; its gradients
  are read as they are and never recomputed (running it again would add to
  the leaves' gradients);
- otherwise, if every leaf's ``.grad`` is zero, explain runs
  ``root.backward()`` once, so afterwards the leaves hold exactly this
  graph's gradients, as if the user had called it;
- otherwise (leaves hold gradients from earlier passes) explain does not run
  it, and shows the gradients of this graph from its own chain rule.

``backward=True`` always runs it (the leaves accumulate, as in PyTorch);
``backward=False`` never does.  A tensor node (any graph node that is not a
``Value`` but has ``.shape`` and ``.data``) takes a single row with its shape
and a min/mean/max summary; gradients through tensor ops come from the
engine only, since their local derivatives are Jacobians.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from ..core import optable
from ..core._engine import Node, Value, topological_order

__all__ = ["explain", "Explanation", "Chain"]


# ---------------------------------------------------------------------------
# Formatting

def fmt(x, digits=4):
    """A number as a person writes it: integers bare, else ``digits``
    decimals with trailing zeros dropped; tiny or huge numbers in e-notation."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    if 10.0 ** -(digits - 1) <= abs(x) < 1e7:
        s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
        return "0" if s in ("-0", "") else s
    return f"{x:.{digits}g}"


def _paren(s):
    return f"({s})"


def _is_tensor(node):
    return not isinstance(node, Value) and hasattr(node, "shape") and hasattr(node, "data")


def _tensor_summary(arr, digits):
    import numpy as np

    a = np.asarray(arr, dtype=float)
    shape = "x".join(str(d) for d in a.shape) or "scalar"
    if a.size == 0:
        return f"[{shape}] (empty)"
    if a.size == 1:
        return f"[{shape}] {fmt(a.reshape(-1)[0], digits)}"
    return (f"[{shape}] min {fmt(a.min(), digits)}, mean {fmt(a.mean(), digits)}, "
            f"max {fmt(a.max(), digits)}")


# ---------------------------------------------------------------------------
# Each node's expression and local derivatives: numbers from the engine
# (``Value._local_grads()``, the backward rule itself), text from the op table

@dataclass
class _Edge:
    """One operand of a node: ``parent`` is a graph node, or None for a
    constant operand (then ``const`` holds its value)."""
    parent: object
    const: float | None
    local: float | None = None       # d(node)/d(operand); None if unknown
    rule: str = ""                   # the formula, in the operands' names


class _Namer:
    def __init__(self, digits):
        self.digits = digits
        self.names = {}

    def __call__(self, node_or_edge):
        if isinstance(node_or_edge, _Edge):
            if node_or_edge.parent is None:
                return fmt(node_or_edge.const, self.digits)
            node_or_edge = node_or_edge.parent
        name = self.names.get(id(node_or_edge))
        if name is None:   # a constant node (an unlabeled leaf that takes no gradient)
            return fmt(node_or_edge.data, self.digits)
        return name


def _operand(name):
    """Wrap a compound operand name (a negative number) in parentheses."""
    return f"({name})" if name.startswith("-") else name


def _describe(node, edges, name, digits):
    """The expression of ``node`` over its operand names, and each edge's
    local derivative and rule (filled in place).  Returns (expression, known)
    where ``known`` is False for nodes with no backward rule (built by hand
    as ``Value(data, _children, _op)``)."""
    if not edges:
        return "(leaf)", True
    row = optable.row_of(node)
    n = [_operand(name(e)) for e in edges]
    if not row.has_rule and row.kind != "NARY":
        return f"{node._op or 'op'}({', '.join(n)})", False
    for e, local in zip(edges, node._local_grads()):
        e.local = local
    if row.has_rule:
        expression = _describe_rule(node, row, edges, n, name, digits)
    else:
        expression = _describe_nary(row, edges, n, digits)
    return expression, True


def _describe_rule(node, row, edges, n, name, digits):
    """An op with a row of formulas: the row's display text over the
    operand names ({a} {b}), its constant ({c}) and the node's name ({out})."""
    me = name(node)
    c = fmt(node._const, digits) if node._const is not None else None
    if row.kind == "BINARY_AC" and row.symbol == "+" and edges[1].const < 0:
        edges[0].rule = "1"
        return f"{n[0]} - {fmt(-edges[1].const, digits)}"   # a - c is built as a + (-c)
    a, b = (n + [None])[:2]
    # the operands that are nodes: both of a op b, a of a op c, b of c op a
    for operand in {"BINARY": (0, 1), "BINARY_CA": (1,)}.get(row.kind, (0,)):
        edges[operand].rule = row.show_grad(operand, a=a, b=b, c=c, out=me)
    return row.show_value(a=a, b=b, c=c, out=me)


def _describe_nary(row, edges, n, digits):
    """A fused n-ary node: its operands joined as a person writes them."""
    k = len(edges)
    if row.code_name == "SUM":
        for e in edges:
            e.rule = "1"
        return " + ".join(n)
    if row.code_name == "MEAN":
        for e in edges:
            e.rule = f"1/{k}"
        return f"mean({', '.join(n)})"
    if row.code_name == "DOT":
        half = k // 2
        for i in range(half):
            edges[i].rule, edges[half + i].rule = n[half + i], n[i]
        terms = [f"{n[i]}*{n[half + i]}" for i in range(half)]
        if k % 2:
            edges[-1].rule = "1"
            terms.append(n[-1])
        return " + ".join(terms) if terms else "0"
    if row.code_name == "ELEMENT":
        edges[0].rule = "1 (into one element)"
        return f"{n[0]}[element]"
    raise ValueError(f"explain: no display for the n-ary op {row.code_name}")


# ---------------------------------------------------------------------------
# The explanation object

@dataclass
class ForwardRow:
    step: int
    name: str
    expression: str
    value: str
    number: object                  # float, or the array of a tensor node
    derivatives: list = field(default_factory=list)   # (text, value)


@dataclass
class BackwardRow:
    name: str
    grad: object                    # float, array, or None (no gradient)
    text: str                       # the gradient as shown
    how: str                        # the chain-rule sum that gives it
    note: str = ""


@dataclass
class Chain:
    """The chain rule from the root to one input, path by path."""
    root: str
    wrt: str
    total: float                      # sum over all paths
    n_paths: int
    paths: list                       # shown paths: (names, factors, product)
    hidden: int                       # paths not shown
    hidden_sum: float                 # their contribution
    lines: list                       # the text
    engine_grad: float | None = None  # .grad of wrt, where it is this graph's

    def __str__(self):
        return "\n".join(self.lines)


class Explanation:
    """A worked solution of a graph; ``print()`` it, ``.to_markdown()``, or
    let Jupyter display it.  Numbers are also available by name:
    ``value(name)``, ``grad(name)``, ``local(node, input)``, ``chain``."""

    def __init__(self, title, forward, backward, chain, notes, values, grads, locals_,
                 hidden_rows=0, window=None, window_steps=None):
        self.title = title
        # one element of a conv/pool output, cell by cell: its lines, and its
        # steps (PoolStep, ElementwiseStep, ConvStep) from the output down
        self.window = window
        self.window_steps = window_steps
        self.forward = forward
        self.backward = backward
        self.chain = chain
        self.notes = notes
        self._values = values
        self._grads = grads
        self._locals = locals_
        self._hidden_rows = hidden_rows

    # -- numbers by name -----------------------------------------------------

    def names(self):
        return [row.name for row in self.forward]

    def value(self, name):
        """The forward value of the node called ``name``."""
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"explain: no node named {name!r}; names are {self.names()}") from None

    def grad(self, name):
        """d(root)/d(node called ``name``) in this graph: the engine's ``.grad``,
        except for a leaf whose ``.grad`` also holds earlier passes (then this
        graph's share, from explain's own chain rule)."""
        try:
            return self._grads[name]
        except KeyError:
            raise KeyError(f"explain: no gradient for {name!r}") from None

    def local(self, node, operand):
        """The local derivative d(node)/d(operand), summed over every operand
        position where ``operand`` appears."""
        try:
            return self._locals[(node, operand)]
        except KeyError:
            raise KeyError(f"explain: {operand!r} is not an input of {node!r}") from None

    # -- rendering -----------------------------------------------------------

    def _forward_table(self):
        head = ("step", "node", "expression", "value", "local derivatives")
        body = [(str(r.step), r.name, r.expression, r.value,
                 [t for t, _ in r.derivatives]) for r in self.forward]
        return head, body

    def __str__(self):
        out = [self.title, "", f"Forward pass ({len(self.forward)} nodes, topological order)"]
        head, body = self._forward_table()
        widths = [max([len(head[i])] + [len(b[i]) for b in body]) for i in range(4)]
        line = lambda cells: "  ".join(c.rjust(widths[0]) if i == 0 else c.ljust(widths[i])
                                      for i, c in enumerate(cells))
        out.append(("  " + line(head[:4]) + "  " + head[4]).rstrip())
        for b in body:
            derivs = b[4] or [""]
            out.append(("  " + line(b[:4]) + "  " + derivs[0]).rstrip())
            pad = " " * (2 + sum(widths) + 2 * 4)
            out.extend(pad + t for t in derivs[1:])
        if self._hidden_rows:
            out.append(f"  ... {self._hidden_rows} more rows not shown (max_rows)")
        out += ["", "Backward pass (reverse topological order, as backward() computes it)"]
        if not self.backward:
            out.append("  (no node of this graph takes a gradient)")
        root = self.backward[0].name if self.backward else ""
        wn = max([len(f"d{root}/d{r.name}") for r in self.backward] + [1])
        wg = max([len(r.text) for r in self.backward] + [1])
        for r in self.backward:
            s = f"  {f'd{root}/d{r.name}'.ljust(wn)} = {r.text.ljust(wg)}   {r.how}"
            out.append(s.rstrip() + (f"   [{r.note}]" if r.note else ""))
        if self.window:
            out += ["", "One element, cell by cell"] + ["  " + l for l in self.window]
        if self.chain is not None:
            out += ["", f"Chain rule for d{self.chain.root}/d{self.chain.wrt}"]
            out += ["  " + l for l in self.chain.lines]
        if self.notes:
            out += ["", "Notes"] + [f"  - {n}" for n in self.notes]
        return "\n".join(out)

    def __repr__(self):
        return str(self)

    def to_markdown(self):
        def cell(s):
            return "`" + s.replace("`", "'").replace("|", "\\|") + "`" if s else ""
        out = [f"**{self.title}**", "", f"*Forward pass* ({len(self.forward)} nodes, topological order)", "",
               "| step | node | expression | value | local derivatives |",
               "|---:|---|---|---:|---|"]
        for r in self.forward:
            derivs = "<br>".join(cell(t) for t, _ in r.derivatives)
            out.append(f"| {r.step} | {cell(r.name)} | {cell(r.expression)} | "
                       f"{cell(r.value)} | {derivs} |")
        if self._hidden_rows:
            out.append(f"| | ... | {self._hidden_rows} more rows not shown | | |")
        root = self.backward[0].name if self.backward else "root"
        out += ["", "*Backward pass* (reverse topological order)", "",
                "| gradient | value | chain rule |", "|---|---:|---|"]
        for r in self.backward:
            how = r.how + (f" ({r.note})" if r.note else "")
            out.append(f"| {cell(f'd{root}/d{r.name}')} | {cell(r.text)} | {cell(how)} |")
        if self.window:
            out += ["", "*One element, cell by cell*", "", "```"] + self.window + ["```"]
        if self.chain is not None:
            out += ["", f"*Chain rule for d{self.chain.root}/d{self.chain.wrt}*", "", "```"]
            out += self.chain.lines + ["```"]
        if self.notes:
            out += ["", "*Notes*", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_latex(self):
        """The worked solution as one amsmath ``align*`` block for a course
        handout: one line per forward row (value, then its local
        derivatives), per backward row (the chain-rule sum) and per line of
        the element's window and the chain; each line aligned at its first
        ``&=``, the sections headed by ``\\intertext``.  Numbers are the text
        form's, names LaTeX-safe (``w12`` -> ``w_{12}``, ``yhat`` -> ``\\hat{y}``)."""
        tex = _Latex(self.names())
        root = self.backward[0].name if self.backward else None
        lines = [f"\\intertext{{Forward pass ({len(self.forward)} nodes, topological order)}}"]
        for r in self.forward:
            value = tex.text(r.value) if r.value.startswith("[") else tex.math(r.value)
            rhs = value if r.expression == "(leaf)" else f"{tex.math(r.expression)} = {value}"
            line = f"{tex.name(r.name)} &= {rhs}"
            if r.derivatives:
                line += " &&" + r",\quad ".join(tex.math(t) for t, _ in r.derivatives)
            lines.append(line)
        if self._hidden_rows:
            lines.append(f"\\intertext{{\\dots\\ {self._hidden_rows} more rows not shown}}")
        lines.append("\\intertext{Backward pass (reverse topological order)}")
        for r in self.backward:
            value = tex.text(r.text) if r.text.startswith(("[", "(")) else tex.math(r.text)
            how = tex.math(r.how[2:]) if r.how.startswith("= ") else tex.text(r.how)
            line = f"{tex.math(f'd{root}/d{r.name}')} &= {value} &&{how}"
            lines.append(line + (r"\quad " + f"{tex.text('[' + r.note + ']')}" if r.note else ""))
        for head, body in (("One element, cell by cell", self.window),
                           (f"Chain rule for d{self.chain.root}/d{self.chain.wrt}" if self.chain else "",
                            self.chain.lines if self.chain else None)):
            if body:
                lines.append(f"\\intertext{{{tex.text_body(head)}}}")
                lines.extend(tex.aligned(l) for l in body)
        # rows end in \\ except the last; \intertext opens the row after it
        out = []
        for k, line in enumerate(lines):
            last = k == len(lines) - 1
            out.append(line if line.startswith("\\intertext") or last else line + r" \\")
        return "\\begin{align*}\n" + "\n".join(out) + "\n\\end{align*}\n"

    def _repr_markdown_(self):
        return self.to_markdown()

    def _repr_html_(self):
        e = html.escape
        code = lambda s: f"<code>{e(s)}</code>" if s else ""
        out = [f"<p><b>{e(self.title)}</b></p>",
               f"<p><i>Forward pass</i> ({len(self.forward)} nodes, topological order)</p>",
               "<table><tr><th>step</th><th>node</th><th>expression</th><th>value</th>"
               "<th>local derivatives</th></tr>"]
        for r in self.forward:
            derivs = "<br>".join(code(t) for t, _ in r.derivatives)
            out.append(f"<tr><td>{r.step}</td><td>{code(r.name)}</td><td>{code(r.expression)}</td>"
                       f"<td style='text-align:right'>{code(r.value)}</td><td>{derivs}</td></tr>")
        out.append("</table>")
        root = self.backward[0].name if self.backward else "root"
        out += ["<p><i>Backward pass</i> (reverse topological order)</p>",
                "<table><tr><th>gradient</th><th>value</th><th>chain rule</th></tr>"]
        for r in self.backward:
            how = r.how + (f" ({r.note})" if r.note else "")
            out.append(f"<tr><td>{code(f'd{root}/d{r.name}')}</td>"
                       f"<td style='text-align:right'>{code(r.text)}</td><td>{code(how)}</td></tr>")
        out.append("</table>")
        if self.window:
            out.append("<p><i>One element, cell by cell</i></p>")
            out.append("<pre>" + e("\n".join(self.window)) + "</pre>")
        if self.chain is not None:
            out.append(f"<p><i>Chain rule for d{e(self.chain.root)}/d{e(self.chain.wrt)}</i></p>")
            out.append("<pre>" + e("\n".join(self.chain.lines)) + "</pre>")
        if self.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ul>")
        return "\n".join(out)


# ---------------------------------------------------------------------------
# LaTeX: the text form's lines turned into amsmath, token by token, so the
# numbers are the text's own

_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "lambda", "mu",
          "nu", "xi", "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega"}
_MATH_FUNCTIONS = {"exp": r"\exp", "log": r"\log", "tanh": r"\tanh", "sin": r"\sin",
                   "cos": r"\cos", "max": r"\max", "min": r"\min"}
_TEXT_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "#": r"\#", "$": r"\$",
                 "%": r"\%", "&": r"\&", "_": r"\_", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "·": r"$\cdot$"}


def _latex_escape(s):
    return "".join(_TEXT_ESCAPES.get(ch, ch) for ch in s)


def _latex_name(name):
    """A node's name in math: w12 -> w_{12}, x_in -> x_{in}, yhat -> \\hat{y},
    sigma -> \\sigma, loss -> \\mathrm{loss}; a repeated label's #2 -> ^{(2)}."""
    import re

    base, _, repeat = name.partition("#")
    sup = f"^{{({repeat})}}" if repeat.isdigit() else ""
    m = re.fullmatch(r"([A-Za-z]+?)(hat)?_?([0-9]+)?", base)
    if m is None:
        m2 = re.fullmatch(r"([A-Za-z]+)_([A-Za-z0-9]+)", base)
        if m2 is None:
            return rf"\text{{{_latex_escape(name)}}}"
        return _latex_letters(m2.group(1)) + f"_{{{_latex_letters(m2.group(2), sub=True)}}}" + sup
    letters, hat, digits = m.groups()
    core = _latex_letters(letters)
    if hat and len(letters) == 1:
        core = rf"\hat{{{core}}}"
    elif hat:
        core = _latex_letters(letters + "hat")
    return core + (f"_{{{digits}}}" if digits else "") + sup


def _latex_letters(word, sub=False):
    if len(word) == 1:
        return word
    if word in _GREEK:
        return "\\" + word
    return rf"\mathrm{{{word}}}"


class _Latex:
    """Turns one line of the text form into LaTeX: node names (with an
    optional [index]) become math names, dA/dB a fraction of partials,
    ``*`` and ``·`` a \\cdot, ``^`` a superscript, function names operators,
    other words \\text{...}; numbers are copied as they are."""

    def __init__(self, names):
        import re

        known = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True)) or "(?!)"
        cell = rf"(?:{known})(?![\w#])(?:\[[0-9, ]+\])?"
        self._token = re.compile(
            rf"(?P<frac>d(?P<a>{cell})/d(?P<b>{cell}))"
            rf"|(?P<name>{cell})"
            r"|(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
            r"|(?P<word>[A-Za-z][A-Za-z0-9_']*)"
            r"|(?P<space>\s+)"
            r"|(?P<char>.)")

    def name(self, cell):
        base, bracket, index = cell.partition("[")
        return _latex_name(base) + (f"[{index}" if bracket else "")

    def _segments(self, s):
        """[(is_text, latex)] for the line ``s``."""
        out = []
        toks = list(self._token.finditer(s))
        k = 0
        while k < len(toks):
            t = toks[k]
            kind, raw = t.lastgroup, t.group(0)
            if kind == "frac":
                piece, text = rf"\frac{{\partial {self.name(t.group('a'))}}}{{\partial {self.name(t.group('b'))}}}", False
            elif kind == "name":
                piece, text = self.name(raw), False
            elif kind == "number":
                piece, text = raw, False
            elif kind == "word":
                after = toks[k + 1].group(0) if k + 1 < len(toks) else ""
                if after == "(" and raw not in ("the", "a", "an"):
                    piece = _MATH_FUNCTIONS.get(raw, rf"\operatorname{{{_latex_escape(raw)}}}")
                    text = False
                elif raw == "pi":
                    piece, text = r"\pi", False
                elif raw == "inf":
                    piece, text = r"\infty", False
                else:
                    piece, text = _latex_escape(raw), True
            elif kind == "space" or raw in ",:;.'":
                text = bool(out) and out[-1][0]      # joins the prose it follows
                piece = " " if kind == "space" else raw
            elif raw in ("*", "·"):
                piece, text = r" \cdot ", False
            elif raw == "^":
                # the exponent is the next token, or the parenthesised group
                k += 1
                depth, group = 0, []
                while k < len(toks):
                    g = toks[k].group(0)
                    group.append(g)
                    depth += g == "("
                    depth -= g == ")"
                    if depth == 0 and g.strip():
                        break
                    k += 1
                inner = "".join(group)
                inner = inner[1:-1] if inner.startswith("(") and inner.endswith(")") else inner
                piece, text = "^{" + self.math(inner) + "}", False
            elif raw in "#$%&_{}~\\":
                piece, text = "\\" + raw if raw in "#$%&_{}" else r"\text{" + _latex_escape(raw) + "}", False
            else:
                piece, text = raw, False
            if out and out[-1][0] == text:
                out[-1] = (text, out[-1][1] + piece)
            else:
                out.append((text, piece))
            k += 1
        return out

    def math(self, s):
        """A line as math; its prose words wrapped in \\text{...}."""
        # prose keeps a space on each side: math mode drops the spaces around it
        return "".join(rf"\text{{ {p.strip()} }}" if text else p
                       for text, p in self._segments(s)).strip()

    def text(self, s):
        """A line shown as text (a tensor summary, a remark)."""
        return rf"\text{{{_latex_escape(s)}}}"

    def text_body(self, s):
        return _latex_escape(s)

    def aligned(self, line):
        """A line of the window or chain text, aligned at its first `` = ``:
        the line's left side, then ``&=`` and the rest; a line with no
        equation (a remark) is written as text after ``&``."""
        stripped = line.strip()
        first = self._token.match(stripped)
        if stripped.startswith("(") or (first and first.lastgroup == "word"):
            return "&" + self.math(stripped)      # a remark: winner, tie, agreement
        left, eq, right = stripped.partition(" = ")
        if not eq:
            return "&" + (self.math(stripped) if stripped.startswith("=") else self.text(stripped))
        if not left:
            return "&= " + self.math(right)
        return f"{self.math(left)} &= {self.math(right)}"


# ---------------------------------------------------------------------------
# explain()

def _is_constant_node(node):
    """A leaf that stands for a number: no label, takes no gradient."""
    return (isinstance(node, Value) and not node._parents() and not node.requires_grad
            and not node.label)


def _close(a, b):
    return a == b or (a != a and b != b) or abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def explain(root, wrt=None, *, backward="auto", digits=4, max_paths=8, max_rows=500,
            through=None):
    """A worked solution of the graph that ends in ``root``.

    ``wrt``: a leaf node (or its name) whose chain-rule product is written out
    path by path (at most ``max_paths`` paths shown, the rest summed).
    ``backward``: 'auto' (see the module docstring), True or False.
    ``digits``: decimals shown.  ``max_rows``: forward rows printed (the
    numbers of every node stay available through ``value``/``grad``).
    ``through``: which nodes the chain is written through: 'labels' (only
    labeled nodes, unlabeled steps between them multiplied together), 'all'
    (every node), or None: 'labels' if any node between root and ``wrt`` has
    a label, else 'all'.
    """
    _check_arguments(root, backward, through, digits, max_paths, max_rows)
    notes = []
    order = topological_order(root)
    engine_ran = _run_backward_policy(root, order, backward, notes)
    shown_nodes = [v for v in order if not _is_constant_node(v)]
    name = _name_nodes(shown_nodes, digits)
    graph = _forward_phase(shown_nodes, {id(v) for v in order}, name, digits)
    hidden_rows, forward = _trim_rows(graph.forward, max_rows)
    own, terms, computable = _own_gradients(root, shown_nodes, graph)
    backward_rows, grads = _backward_rows(root, shown_nodes, graph, name, digits, own, terms,
                                          computable, engine_ran, notes)
    window, walk, why_not = None, None, None
    if isinstance(root, Value) and root._op == "element":
        try:
            walk = _window_steps(root, name)
        except _NotDescribable as err:
            why_not = str(err)
        else:
            _name_the_cell(forward, name(root), walk[3][1][0])
            if walk[0]:
                window = _window_lines(f"{name(root)} = {walk[3][1][0]} = {fmt(root.data, digits)}",
                                       walk[0], digits)
    chain = None
    if wrt is not None:
        target = _resolve_wrt(root, wrt, shown_nodes, name, tensor_ok=True)
        if _is_tensor(target):
            if walk is None:
                raise ValueError(f"explain(wrt={name(target)}): a chain to a tensor is written from "
                                 "one element of a conv2d / max_pool2d output, as "
                                 "explain(out[0, 0, 1, 1], wrt=w); "
                                 + (why_not or f"the root {name(root)} is not an element of a tensor"))
            try:
                chain = _window_chain(root, target, *walk, name, digits,
                                      _grad_of if engine_ran else None)
            except _NotDescribable as err:
                raise ValueError(f"explain(wrt={name(target)}): {err}") from None
        else:
            chain = _chain(root, target, shown_nodes, graph.edges_of, name, digits, max_paths,
                           through, own, computable, _grad_of if engine_ran else None,
                           graph.known_rule)
    shown_root = _tensor_summary(root.data, digits) if _is_tensor(root) else fmt(root.data, digits)
    title = f"Worked solution for {name(root)} = {shown_root}"
    return Explanation(title, forward, backward_rows, chain, notes, graph.values, grads,
                       graph.locals_, hidden_rows, window, walk[0] if window else None)


def _name_the_cell(forward, root_name, cell):
    """The element's row names its cell (``n4[0, 0, 1, 1]``), once it is known."""
    for row in forward:
        if row.name == root_name:
            row.expression = cell


# -- phase 1: arguments and the policy for running backward() ----------------

def _check_arguments(root, backward, through, digits, max_paths, max_rows):
    if not isinstance(root, Node):
        raise TypeError(f"explain(root=...) takes a graph node (Value or Tensor), got {type(root).__name__}")
    if backward not in ("auto", True, False):
        raise ValueError(f"explain(backward=...) must be 'auto', True or False, got {backward!r}")
    if through not in (None, "labels", "all"):
        raise ValueError(f"explain(through=...) must be None, 'labels' or 'all', got {through!r}")
    if not isinstance(digits, int) or digits < 1:
        raise ValueError(f"explain(digits=...) must be a positive int, got {digits!r}")
    if not isinstance(max_paths, int) or max_paths < 0:
        raise ValueError(f"explain(max_paths=...) must be an int >= 0, got {max_paths!r}")
    if not isinstance(max_rows, int) or max_rows < 2:
        raise ValueError(f"explain(max_rows=...) must be an int >= 2, got {max_rows!r}")


def _grad_of(node):
    """A node's ``.grad`` as a float, or a float array for a tensor node."""
    import numpy as np

    g = node.grad
    return None if g is None else (np.asarray(g, dtype=float) if _is_tensor(node) else float(g))


def _nonzero(g):
    import numpy as np

    return g is not None and bool(np.any(np.asarray(g) != 0))


def _run_backward_policy(root, order, backward, notes):
    """Run ``root.backward()`` if the policy of the module docstring says so;
    returns whether the nodes' ``.grad`` hold this graph's gradients."""
    import numpy as np

    leaves = [v for v in order if not v._parents() and v.requires_grad]
    if not root.requires_grad:
        notes.append("nothing in this graph requires a gradient: no backward pass.")
        return False
    if backward is True:
        if any(_nonzero(_grad_of(v)) for v in leaves):
            notes.append("backward=True: leaves already held gradients; their .grad now holds "
                         "the sum over passes (leaves accumulate).")
        root.backward()
        notes.append("explain ran backward() (backward=True).")
        return True
    if backward is False:
        return False
    if _nonzero(_grad_of(root)):
        notes.append("backward() had already run (the root's grad is set); gradients are "
                     "read as they are, not recomputed.")
        return True
    if _is_tensor(root) and int(np.prod(root.shape)) != 1:
        notes.append("the root is a non-scalar tensor: explain does not choose a seed "
                     "gradient for it; call backward(grad) first.")
        return False
    if any(_nonzero(_grad_of(v)) for v in leaves):
        notes.append("backward() not run: leaves already hold gradients from earlier passes "
                     "and would accumulate; the gradients below come from explain's own "
                     "chain rule.")
        return False
    root.backward()
    notes.append("explain ran backward() once (the root's grad was empty); "
                 "the leaves now hold this graph's gradients.")
    return True


# -- phase 2: names -----------------------------------------------------------

def _name_nodes(shown_nodes, digits):
    """Each shown node's name: its label, else ``n<step>``; a repeated label
    gets ``#2``, ``#3``... so that every name is one node."""
    name = _Namer(digits)
    used = {}
    for step, v in enumerate(shown_nodes, 1):
        base = v.label or f"n{step}"
        used[base] = used.get(base, 0) + 1
        name.names[id(v)] = base if used[base] == 1 else f"{base}#{used[base]}"
    return name


# -- phase 3: forward rows (expressions, values, local derivatives) ---------

@dataclass
class _Graph:
    """What the forward phase learns of every shown node, by ``id``."""
    forward: list            # ForwardRow per shown node
    values: dict             # name -> value
    locals_: dict            # (name, operand name) -> local derivative
    edges_of: dict           # id -> list of _Edge
    known_rule: dict         # id -> whether explain knows the node's local derivatives


def _edges(v, in_graph):
    """The operands of ``v`` as edges: graph nodes, or numbers kept in the node."""
    edges = []
    for p in v._parents():
        if id(p) in in_graph:
            edges.append(_Edge(p, None))
        elif isinstance(p, Value):   # a constant operand, made fresh by _parents()
            edges.append(_Edge(None, float(p.data)))
        elif isinstance(p, (int, float)) and not isinstance(p, bool):
            edges.append(_Edge(None, float(p)))
        # anything else an op keeps beside its operands (shapes, strides) is no input
    return edges


def _forward_phase(shown_nodes, in_graph, name, digits):
    graph = _Graph([], {}, {}, {}, {})
    for step, v in enumerate(shown_nodes, 1):
        edges = _edges(v, in_graph)
        graph.edges_of[id(v)] = edges
        if _is_tensor(v) or any(e.parent is not None and _is_tensor(e.parent) and v._op != "element"
                                for e in edges):
            row = _tensor_row(step, v, edges, name, digits)
            graph.known_rule[id(v)] = not edges
        else:
            row, known = _scalar_row(step, v, edges, name, digits, graph.locals_)
            graph.known_rule[id(v)] = known
        graph.forward.append(row)
        graph.values[row.name] = row.number
    return graph


def _tensor_row(step, v, edges, name, digits):
    """A tensor node, or a scalar computed from tensors: its op over its
    operands and a summary of its value (its local derivatives are Jacobians)."""
    import numpy as np

    op = getattr(v, "_op", "") or ""
    args = ", ".join(name(e) for e in edges)
    expr = f"{op}({args})" if edges else "(leaf)"
    if _is_tensor(v):
        value_text, number = _tensor_summary(v.data, digits), np.asarray(v.data, dtype=float)
    else:
        value_text, number = fmt(v.data, digits), float(v.data)
    return ForwardRow(step, name(v), expr, value_text, number, [])


def _scalar_row(step, v, edges, name, digits, locals_):
    """A scalar node: its expression and each local derivative, as rule and
    number (recorded in ``locals_`` by name).  Returns (row, rule known)."""
    me = name(v)
    expr, known = _describe(v, edges, name, digits)
    derivs = []
    for e in edges:
        if e.parent is None or _is_constant_node(e.parent):
            continue          # no derivative is wanted w.r.t. a number
        pn = name(e)
        label = f"d{me}/d{pn}"
        if e.local is None:
            derivs.append((f"{label} = ? ({e.rule or 'no rule known for this op'})", None))
            continue
        rule_num = fmt(e.local, digits)
        text = f"{label} = {e.rule} = {rule_num}" if e.rule and e.rule != rule_num else f"{label} = {rule_num}"
        derivs.append((text, e.local))
        locals_[(me, pn)] = locals_[(me, pn)] + e.local if (me, pn) in locals_ else e.local
    return ForwardRow(step, me, expr, fmt(v.data, digits), float(v.data), derivs), known


def _trim_rows(forward, max_rows):
    """Keep the first and last rows when there are more than ``max_rows``."""
    hidden_rows = max(0, len(forward) - max_rows)
    if hidden_rows:
        forward = forward[:max_rows // 2] + forward[len(forward) - (max_rows - max_rows // 2):]
    return hidden_rows, forward


# -- phase 4: gradients by explain's own chain rule, and the backward rows ----

def _own_gradients(root, shown_nodes, graph):
    """d root / d node for every shown node, from the local derivatives, in
    backward's order.  Returns (own, terms, computable): gradients by id, the
    chain-rule terms (consumer name, its gradient, local) of each, and whether
    it could be computed (not through tensor ops or ops with no known rule)."""
    root_is_tensor = _is_tensor(root)
    own = {id(root): 1.0 if not root_is_tensor else None}
    terms = {id(v): [] for v in shown_nodes}
    computable = {id(v): True for v in shown_nodes}
    computable[id(root)] = not root_is_tensor
    for v in reversed(shown_nodes):
        if not v.requires_grad:
            continue
        g = own.get(id(v), 0.0)
        ok = computable[id(v)] and not _is_tensor(v) and graph.known_rule.get(id(v), False)
        for e in graph.edges_of[id(v)]:
            p = e.parent
            if p is None or not p.requires_grad or id(p) not in computable:
                continue
            if not ok or e.local is None or _is_tensor(p):
                computable[id(p)] = False
                continue
            own[id(p)] = own.get(id(p), 0.0) + g * e.local
            terms[id(p)].append((v, g, e.local))
    return own, terms, computable


def _chain_rule_sum(rname, me, terms, name, digits):
    """``= dL/dc · dc/dx + ... = (g)(l) + ...`` for one node's gradient."""
    sym = " + ".join(f"d{rname}/d{name(c)} · d{name(c)}/d{me}" for c, _, _ in terms[:4])
    num = " + ".join(f"({fmt(g, digits)})({fmt(l, digits)})" for _, g, l in terms[:4])
    if len(terms) > 4:
        sym += f" + ... ({len(terms) - 4} more terms)"
        num += " + ..."
    return f"= {sym} = {num}" if terms else "= 0 (no path from the root)"


def _backward_rows(root, shown_nodes, graph, name, digits, own, terms, computable,
                   engine_ran, notes):
    """One row per node that takes a gradient, in reverse topological order:
    the engine's ``.grad`` where it holds this graph's gradient, else explain's
    own; disagreements are noted.  Returns (rows, gradients by name)."""
    import numpy as np

    root_is_tensor = _is_tensor(root)
    rname = name(root)
    rows, grads = [], {}
    for v in reversed(shown_nodes):
        if not v.requires_grad:
            continue
        me = name(v)
        engine = _grad_of(v) if engine_ran else None
        mine = own.get(id(v), 0.0) if computable[id(v)] else None
        note = ""
        if v is root:
            how = "1 (seed)" if not root_is_tensor else "seed"
        elif mine is None:
            how = "through tensor ops or an op without a known rule: from backward()"
        else:
            how = _chain_rule_sum(rname, me, terms[id(v)], name, digits)
        if engine is not None and not _is_tensor(v):
            shown = engine
            if mine is not None and not _close(engine, mine):
                if not v._parents():
                    note = (f".grad holds {fmt(engine, digits)} but this graph contributes "
                            f"{fmt(mine, digits)}: the leaf accumulated earlier passes")
                else:
                    note = (f"explain's chain rule gives {fmt(mine, digits)} but backward() gave "
                            f"{fmt(engine, digits)}: an op here has no backward rule known to explain")
                    notes.append(f"d{rname}/d{me}: {note}.")
        else:
            shown = engine if engine is not None else mine
        if shown is None:
            text = "(not computed)"
        elif isinstance(shown, np.ndarray):
            text = _tensor_summary(shown, digits)
        else:
            text = fmt(shown, digits)
        rows.append(BackwardRow(me, shown, text, how, note))
        grads[me] = mine if (mine is not None and not v._parents()) else shown
    return rows, grads


# -- phase 5: the chain rule for one input, path by path -----------------------

def _chain(root, wrt, nodes, edges_of, name, digits, max_paths, through, own, computable,
           grad_of, known_rule):
    wrt = _resolve_wrt(root, wrt, nodes, name)
    rname, wname = name(root), name(wrt)
    reaches = _reaching(nodes, edges_of, wrt)
    if id(root) not in reaches:
        lines = [f"d{rname}/d{wname} = 0: {rname} does not depend on {wname}"]
        return Chain(rname, wname, 0.0, 0, [], 0, 0.0, lines)
    on_path = [v for v in nodes if id(v) in reaches]
    for v in on_path:
        if v is not wrt and not known_rule.get(id(v), False):
            raise ValueError(f"explain(wrt=...): node {name(v)} has no local derivative rule "
                             "known to explain, so its chain cannot be written")
    waypoint, through = _waypoints(root, wrt, on_path, through)
    segments = _segments(on_path, wrt, edges_of, reaches, waypoint, through)
    n_paths, grand = _count_paths(root, wrt, on_path, segments)
    shown = _first_paths(root, wrt, segments, name, max_paths)
    hidden = n_paths - len(shown)
    hidden_sum = grand - math.fsum(p for _, _, p in shown)
    lines = _chain_lines(rname, wname, n_paths, shown, hidden, hidden_sum, grand, digits)
    engine = None
    if grad_of is not None:
        engine = _engine_agreement(wrt, wname, grand, own, computable, grad_of, digits, lines)
    return Chain(rname, wname, grand, n_paths, shown, hidden, hidden_sum, lines, engine)


def _resolve_wrt(root, wrt, nodes, name, tensor_ok=False):
    """``wrt`` as a node of the graph (it may be given by name); a tensor
    only with ``tensor_ok`` (the chain from one element of a tensor)."""
    by_name = {name(v): v for v in nodes}
    if isinstance(wrt, str):
        if wrt not in by_name:
            raise ValueError(f"explain(wrt={wrt!r}): no node of the graph has that name; "
                             f"names are {sorted(by_name)}")
        wrt = by_name[wrt]
    if id(wrt) not in {id(v) for v in nodes}:
        raise ValueError("explain(wrt=...): that node is not part of the graph of root")
    if tensor_ok and _is_tensor(wrt) and not _is_tensor(root):
        return wrt
    if _is_tensor(wrt) or _is_tensor(root):
        raise ValueError("explain(wrt=...): the chain is written for scalar nodes only "
                         "(a tensor's local derivatives are Jacobians), or from one element "
                         "of a conv2d / max_pool2d output, as explain(out[0, 0, 1, 1], wrt=w)")
    return wrt


def _reaching(nodes, edges_of, wrt):
    """ids of the nodes with a path to ``wrt`` (``wrt`` included)."""
    reaches = {id(wrt)}
    for v in nodes:
        if any(e.parent is not None and id(e.parent) in reaches for e in edges_of[id(v)]):
            reaches.add(id(v))
    return reaches


def _waypoints(root, wrt, on_path, through):
    """The nodes a written path names: all of them, or the labeled ones."""
    interior = [v for v in on_path if v is not root and v is not wrt]
    if through is None:
        through = "labels" if any(v.label for v in interior) else "all"
    if through == "all":
        return {id(v) for v in on_path}, through
    return {id(v) for v in on_path if v.label} | {id(root), id(wrt)}, through


def _segments(on_path, wrt, edges_of, reaches, waypoint, through):
    """From each waypoint A, the next waypoints B with the value of dA/dB
    along the unnamed routes between them (one per edge under 'all')."""
    pos = {id(v): i for i, v in enumerate(on_path)}
    segments = {}        # id(A) -> list of (B, value)
    for a in on_path:
        if id(a) not in waypoint or a is wrt:
            continue
        if through == "all":
            segments[id(a)] = [(e.parent, e.local) for e in edges_of[id(a)]
                               if e.parent is not None and id(e.parent) in reaches]
            continue
        acc = {id(a): 1.0}
        found = {}
        for v in reversed(on_path[:pos[id(a)] + 1]):
            if id(v) not in acc:
                continue
            g = acc[id(v)]
            for e in edges_of[id(v)]:
                p = e.parent
                if p is None or id(p) not in reaches:
                    continue
                if id(p) in waypoint:
                    found[id(p)] = (p, found.get(id(p), (p, 0.0))[1] + g * e.local)
                else:
                    acc[id(p)] = acc.get(id(p), 0.0) + g * e.local
        segments[id(a)] = sorted(found.values(), key=lambda pv: -pos[id(pv[0])])
    return segments


def _count_paths(root, wrt, on_path, segments):
    """The number of paths root -> wrt (exact integers) and their sum."""
    count = {id(wrt): 1}
    total = {id(wrt): 1.0}
    for v in on_path:
        if id(v) in segments:
            count[id(v)] = sum(count.get(id(b), 0) for b, _ in segments[id(v)])
            total[id(v)] = math.fsum(val * total.get(id(b), 0.0) for b, val in segments[id(v)])
    return count[id(root)], total[id(root)]


def _first_paths(root, wrt, segments, name, max_paths):
    """The first ``max_paths`` paths, depth first: (names, factors, product)."""
    shown = []
    stack = [(root, [root], [])]
    while stack and len(shown) < max_paths:
        v, names_, factors = stack.pop()
        if v is wrt:
            prod = 1.0
            for f in factors:
                prod *= f
            shown.append(([name(u) for u in names_], factors, prod))
            continue
        for b, val in reversed(segments.get(id(v), [])):
            stack.append((b, names_ + [b], factors + [val]))
    return shown


def _product_text(names_, factors, prod, digits):
    sym = " · ".join(f"d{names_[i]}/d{names_[i + 1]}" for i in range(len(factors)))
    num = "".join(f"({fmt(f, digits)})" for f in factors)
    return sym, num, fmt(prod, digits)


def _chain_lines(rname, wname, n_paths, shown, hidden, hidden_sum, grand, digits):
    lines = []
    head = f"d{rname}/d{wname}"
    if n_paths == 1 and shown:
        sym, num, p = _product_text(*shown[0], digits)
        lines.append(f"{head} = {sym} = {num} = {p}")
        return lines
    lines.append(f"{head} = sum over {n_paths} paths from {rname} to {wname}:")
    for k, path in enumerate(shown, 1):
        sym, num, p = _product_text(*path, digits)
        lines.append(f"  path {k}: {sym} = {num} = {p}")
    if hidden:
        lines.append(f"  ... {hidden} more paths not shown, contributing {fmt(hidden_sum, digits)} in all")
    parts = [fmt(p, digits) for _, _, p in shown] + ([fmt(hidden_sum, digits)] if hidden else [])
    lines.append(f"{head} = " + " + ".join(parts) + f" = {fmt(grand, digits)}")
    return lines


def _engine_agreement(wrt, wname, grand, own, computable, grad_of, digits, lines):
    """Compare the path sum with the engine's ``.grad`` (a line is added);
    returns the engine's gradient, or None when it holds other passes too."""
    engine = grad_of(wrt)
    mine = own.get(id(wrt)) if computable.get(id(wrt)) else None
    if mine is not None and _close(engine, mine):
        if _close(engine, grand):
            lines.append(f"(backward() gives {wname}.grad = {fmt(engine, digits)}: agrees)")
        else:
            lines.append(f"(backward() gives {wname}.grad = {fmt(engine, digits)}: DISAGREES "
                         f"with the path sum {fmt(grand, digits)})")
        return engine
    lines.append(f"({wname}.grad = {fmt(engine, digits)} includes gradients from other passes; "
                 f"this graph contributes {fmt(grand, digits)})")
    return None


# -- phase 6: one element of a convolution / pooling output ------------------
#
# ``explain(out[0, 0, 1, 1], wrt=w)`` where ``out`` comes from conv2d, then
# optionally elementwise ops (relu) and max_pool2d: the pool window's cells
# and its winning cell, the convolution window's sum of products, and the
# chain back to every entry of ``wrt`` (a conv2d operand), checked against
# ``wrt.grad``.  The geometry (which input cell each weight tap meets, which
# cells a pooling window covers) is read off the engine's own kernels
# (microgrid._conv), never restated here, so it holds for every stride,
# padding, dilation, groups and ceil_mode the kernels support.

# What explain reads of a tensor node's recorded arguments: these two
# functions are the only readers of ``Tensor._state()``.  They accept the
# ctx tuples of tensor/conv.pxi and typed states with named fields alike.

def _conv_arguments(node):
    """(stride, padding, dilation, groups) of a conv2d node (its ConvState)."""
    state = node._state()
    return state.stride, state.padding, state.dilation, state.groups


def _pool_arguments(node):
    """(kernel, stride, padding, dilation, ceil_mode, argmax) of a
    max_pool2d node (its PoolState); argmax holds each output cell's winning
    input cell as a flat index h * W + w in its plane (the forward's choice)."""
    state = node._state()
    return state.kernel, state.stride, state.padding, state.dilation, state.ceil_mode, state.argmax


class _NotDescribable(ValueError):
    """An element explain cannot write out: raised with the reason."""


def _element_index(elem, source):
    """The multi-index of the cell of ``source`` that the element node
    ``elem`` reads (the flat index it keeps as its constant)."""
    import numpy as np

    return tuple(int(k) for k in np.unravel_index(elem._const, source.shape))


def _ix(name, index):
    return f"{name}[{', '.join(str(k) for k in index)}]"


@dataclass
class PoolStep:
    """max_pool2d at one output cell: the window's cells (index, value) in
    row-major order, the engine's winning cell, and any tied cells."""
    out: str                      # e.g. "n4[0, 0, 1, 1]"
    value: float
    cells: list
    winner: tuple
    ties: list
    outside: int                  # window taps in the padding or past the edge
    source: str                   # the pooled tensor's name


@dataclass
class ElementwiseStep:
    """An elementwise op (relu, ...) at one cell, with its local derivative."""
    out: str
    expression: str
    value: float
    local: float
    rule: str
    source: str                   # the input cell, e.g. "c[0, 0, 2, 2]"


@dataclass
class ConvStep:
    """conv2d at one output cell: (weight index, input index or None for a
    padding tap, weight value, input value) per tap, the bias, the sum."""
    out: str
    value: float
    terms: list
    bias: tuple | None            # (index, value)
    names: tuple                  # (input, weight, bias or None)
    total: float                  # explain's own sum of products


@dataclass
class WindowChain:
    """The chain from one output element back to every entry of a tensor."""
    root: str
    wrt: str
    grad: object                  # explain's own d root / d wrt, an array
    engine_grad: object           # wrt.grad where it is this graph's, else None
    lines: list

    def __str__(self):
        return "\n".join(self.lines)


def _pool_window(x, out_index, kernel, stride, padding, dilation, ceil_mode):
    """The input cells (h, w) of the pooling window of output cell
    ``out_index`` (h, w), as the engine's pooling kernel sees them: a plane
    with a single 1 at cell c pools to 1 exactly in the windows holding c."""
    import numpy as np

    from ..kernels import _conv

    H, W = x.shape[2], x.shape[3]
    cells = []
    chunk = max(1, 4_000_000 // (H * W))        # bound the one-hot stack's memory
    for start in range(0, H * W, chunk):
        n = min(chunk, H * W - start)
        planes = np.zeros((n, 1, H * W))
        planes[np.arange(n), 0, start + np.arange(n)] = 1.0
        pooled, _ = _conv.max_pool2d_forward(planes.reshape(n, 1, H, W), kernel, stride,
                                             padding, dilation, ceil_mode)
        hits = np.flatnonzero(pooled[:, 0, out_index[0], out_index[1]] == 1.0)
        cells.extend(divmod(start + int(c), W) for c in hits)
    return cells


def _conv_taps(x, w, n, co, oh, ow, stride, padding, dilation, groups):
    """For each weight tap (co, ci, i, j): the input cell (c, h, w) of image
    ``n`` it meets at output cell (n, co, oh, ow), or None in the padding.
    Read off the engine's kernel: backward of a one-hot output gradient over
    an image of cell numbers gives each tap the number of the cell it met."""
    import numpy as np

    from ..kernels import _conv

    numbers = np.zeros(x.shape)
    numbers[n] = np.arange(1, x[0].size + 1).reshape(x.shape[1:])
    gy = np.zeros((x.shape[0], w.shape[0]) + _conv.conv2d_output_size(
        x.shape[2:], w.shape[2:], stride, padding, dilation))
    gy[n, co, oh, ow] = 1.0
    _, met, _ = _conv.conv2d_backward(gy, numbers, np.ascontiguousarray(w), stride, padding,
                                      dilation, groups, False, True, False)
    taps = []
    for tap in np.ndindex(w.shape[1:]):
        k = int(round(met[(co,) + tap]))
        cell = None if k == 0 else tuple(int(v) for v in np.unravel_index(k - 1, x.shape[1:]))
        taps.append(((co,) + tap, cell))
    return taps


def _elementwise_local(node, z):
    """The op of an elementwise tensor node applied to one cell, and its
    local derivative there, from the engine's scalar rule for the same row."""
    row = optable.row_of(node)
    if row.kind != "UNARY" or not row.name:
        raise _NotDescribable(f"the elementwise op {node._op} (a {row.kind} row) is not "
                              "written cell by cell")
    kwargs = {row.variant[0]: row.variant[1]} if row.variant else {}
    cell = getattr(Value(z), row.name)(**kwargs)
    return row, float(cell.data), float(cell._local_grads()[0])


def _window_steps(root, name):
    """Walk from the element ``root`` down its tensor's single data path:
    reshapes, elementwise ops and max_pool2d steps, ending at a conv2d (or at
    a leaf).  Returns (steps, end node, index in it, path), ``path`` being
    the cells passed through as (cell, local derivative from the previous
    one), root first; the last cell is the end node's."""
    import numpy as np

    if not isinstance(root, Value) or root._op != "element":
        raise _NotDescribable(f"the root {name(root)} is not one element of a tensor")
    node = root._parents()[0]
    index = _element_index(root, node)
    path = [(name(root), None), (_ix(name(node), index), 1.0)]
    steps = []
    while True:
        op = node._op
        if op == "conv2d":
            steps.append(_conv_step(node, index, name))
            break
        if not node._parents():
            break
        if op == "reshape":                 # C order: the flat index carries over
            parent = node._parents()[0]
            index = tuple(int(k) for k in np.unravel_index(
                np.ravel_multi_index(index, node.shape), parent.shape))
            node, local = parent, 1.0
        elif op == "max_pool2d":
            x = node._parents()[0]
            kernel, stride, padding, dilation, ceil_mode, argmax = _pool_arguments(node)
            data = np.asarray(x.data)
            n, c = index[0], index[1]
            cells = [(n, c) + hw for hw in _pool_window(data, index[2:], kernel, stride, padding,
                                                        dilation, ceil_mode)]
            winner = (n, c) + divmod(int(argmax[index]), data.shape[3])
            ties = [cell for cell in cells if cell != winner and data[cell] == data[winner]]
            steps.append(PoolStep(_ix(name(node), index), float(node.data[index]),
                                  [(cell, float(data[cell])) for cell in cells], winner, ties,
                                  kernel[0] * kernel[1] - len(cells), name(x)))
            node, index, local = x, winner, 1.0
        else:
            row = optable.row_of(node)
            if row.kind != "UNARY" or len(node._parents()) != 1:
                raise _NotDescribable(
                    f"{name(node)} comes from {op}, which explain does not write cell by cell "
                    "(it writes conv2d, max_pool2d, reshapes and elementwise functions)")
            x = node._parents()[0]
            row, value, local = _elementwise_local(node, float(np.asarray(x.data)[index]))
            xi, out = _ix(name(x), index), _ix(name(node), index)
            steps.append(ElementwiseStep(out, row.show_value(a=xi, out=out), value, local,
                                         row.show_grad(0, a=xi, out=out), xi))
            node = x
        path.append((_ix(name(node), index), local))
    return steps, node, index, path


def _conv_step(node, index, name):
    import numpy as np

    stride, padding, dilation, groups = _conv_arguments(node)
    parents = node._parents()
    x, w = parents[0], parents[1]
    b = parents[2] if len(parents) > 2 else None
    xd, wd = np.asarray(x.data), np.asarray(w.data)
    n, co, oh, ow = index
    terms = []
    for w_index, cell in _conv_taps(xd, wd, n, co, oh, ow, stride, padding, dilation, groups):
        x_index = None if cell is None else (n,) + cell
        terms.append((w_index, x_index, float(wd[w_index]), 0.0 if cell is None else float(xd[x_index])))
    bias = ((co,), float(np.asarray(b.data)[co])) if b is not None else None
    total = math.fsum([wv * xv for _, _, wv, xv in terms] + ([bias[1]] if bias else []))
    names = (name(x), name(w), name(b) if b is not None else None)
    return ConvStep(_ix(name(node), index), float(node.data[index]), terms, bias, names, total)


def _window_lines(root_text, steps, digits):
    """The text of the element's steps: pool window and winner, elementwise
    ops, the convolution's sum of products."""
    f = lambda v: fmt(v, digits)
    lines = [root_text]
    for s in steps:
        if isinstance(s, PoolStep):
            shown = ", ".join(f"{_ix(s.source, i)} = {f(v)}" for i, v in s.cells)
            lines.append(f"{s.out} = max({shown}) = {f(s.value)}")
            if s.outside:
                lines.append(f"  ({s.outside} of the window's taps fall in the padding or past "
                             "the edge: they never win)")
            lines.append(f"  winner: {_ix(s.source, s.winner)}, so d{s.out}/d{_ix(s.source, s.winner)} = 1 "
                         "and 0 for the window's other cells")
            if s.ties:
                tied = ", ".join(_ix(s.source, t) for t in s.ties)
                lines.append(f"  tie: {tied} also hold {f(s.value)}; the first maximum in row-major "
                             "order wins, as backward() sends the gradient there")
        elif isinstance(s, ElementwiseStep):
            lines.append(f"{s.out} = {s.expression} = {f(s.value)}")
            lines.append(f"  d{s.out}/d{s.source} = {s.rule} = {f(s.local)}")
        else:
            xn, wn, bn = s.names
            sym = [f"{_ix(wn, wi)}*" + (_ix(xn, xi) if xi is not None else "0 (padding)")
                   for wi, xi, _, _ in s.terms]
            num = [f"({f(wv)})({f(xv)})" for _, _, wv, xv in s.terms]
            if s.bias is not None:
                sym.append(_ix(bn, s.bias[0]))
                num.append(f"({f(s.bias[1])})")
            lines.append(f"{s.out} = " + " + ".join(sym))
            lines.append("  = " + " + ".join(num))
            lines.append(f"  = {f(s.total)}")
            if not _close(s.total, s.value):
                lines.append(f"  (DISAGREES with conv2d's value {f(s.value)})")
    return lines


def _window_chain(root, wrt, steps, end, end_index, path, name, digits, grad_of):
    """d root / d wrt entry by entry, ``wrt`` a conv2d operand (input,
    weight, bias) or the tensor the walk ended at (then one cell)."""
    import numpy as np

    f = lambda v: fmt(v, digits)
    rname, wname = name(root), name(wrt)
    conv = steps[-1] if steps and isinstance(steps[-1], ConvStep) else None
    at = path[-1][0]
    factor = 1.0
    for _, local in path[1:]:
        factor *= local
    grad = np.zeros(np.shape(wrt.data))
    lines = []
    if len(path) > 2:     # the common factor, cell by cell down to ``at``
        sym = " · ".join(f"d{path[k][0]}/d{path[k + 1][0]}" for k in range(len(path) - 1))
        num = "".join(f"({f(local)})" for _, local in path[1:])
        lines.append(f"d{rname}/d{at} = {sym} = {num} = {f(factor)}")
    roles = [k for k, p in enumerate(end._parents()) if p is wrt] if conv is not None else []
    written = set()
    for k in roles:
        if k == 1:        # the weight: each tap times the input cell it met
            for wi, xi, wv, xv in conv.terms:
                grad[wi] += factor * xv
                written.add(wi)
                met = _ix(conv.names[0], xi) if xi is not None else "0 (padding)"
                lines.append(f"d{rname}/d{_ix(wname, wi)} = d{rname}/d{at} · {met} "
                             f"= ({f(factor)})({f(xv)}) = {f(factor * xv)}")
        elif k == 0:      # the input: each cell of the window times its tap
            for wi, xi, wv, xv in conv.terms:
                if xi is not None:
                    grad[xi] += factor * wv
                    written.add(xi)
                    lines.append(f"d{rname}/d{_ix(wname, xi)} = d{rname}/d{at} · {_ix(conv.names[1], wi)} "
                                 f"= ({f(factor)})({f(wv)}) = {f(factor * wv)}")
        else:             # the bias of the output channel
            grad[conv.bias[0]] += factor
            written.add(conv.bias[0])
            lines.append(f"d{rname}/d{_ix(wname, conv.bias[0])} = d{rname}/d{at} · 1 "
                         f"= ({f(factor)})(1) = {f(factor)}")
    if not roles:
        if conv is not None or wrt is not end:
            where = (f"an operand (input, weight, bias) of the conv2d {at.split('[')[0]}"
                     if conv is not None else f"{name(end)}, where the walk back from {rname} ends")
            raise _NotDescribable(f"{wname} is not {where}; explain writes the chain through "
                                  "tensor ops to those only")
        grad[end_index] = factor
        written.add(end_index)
        if len(path) <= 2:
            lines.append(f"d{rname}/d{at} = {f(factor)}")
    if grad.size > len(written):
        lines.append(f"every other entry of {wname}: 0 ({rname} does not depend on it)")
    engine = grad_of(wrt) if grad_of is not None else None
    if engine is not None:
        agree = bool(np.allclose(engine, grad, rtol=1e-9, atol=1e-12))
        lines.append(f"(backward() gives {wname}.grad: " + (
            "agrees at every entry)" if agree else
            f"DISAGREES, largest difference {f(float(np.max(np.abs(engine - grad))))})"))
    else:
        lines.append(f"({wname}.grad does not hold this graph's gradient alone: not compared)")
    return WindowChain(rname, wname, grad, engine, lines)

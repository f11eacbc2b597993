"""Drawing the computation graph: ``to_dot(root)`` and ``draw(root, path)``.

``to_dot`` writes Graphviz DOT source with no dependency, in the layout of
micrograd's notebook: every node a record ``{ label | data | grad }`` and every
op its own small node between its inputs and its result.  Constant operands
(``x * 3``) appear as small plain nodes holding the number.  A graph larger
than ``max_nodes`` is summarised instead of drawn node by node: the root's
neighbourhood is drawn in full and everything beyond it collapses into one
box that counts the remaining nodes per op.

``draw`` renders through the optional ``graphviz`` Python package and the
Graphviz ``dot`` program, and says what to install when either is missing.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter

from ..core._engine import Value, topological_order

__all__ = ["to_dot", "draw", "Drawing", "GraphvizNotFound"]

_INSTALL_HINT = ("drawing needs the graphviz Python package and the Graphviz 'dot' program: "
                 "`pip install graphviz`, and the Graphviz system package "
                 "(apt-get install graphviz, brew install graphviz, conda install graphviz, "
                 "or https://graphviz.org/download/)")


class GraphvizNotFound(RuntimeError):
    """The graphviz Python package or the ``dot`` program is missing."""


def _is_tensor(node):
    return not isinstance(node, Value) and hasattr(node, "shape") and hasattr(node, "data")


def _num(x):
    return f"{float(x):.4f}"


def _escape(text):
    """Escape a string for a record label (braces, bars, angles and quotes
    are record syntax) inside a double-quoted DOT string."""
    return "".join("\\" + ch if ch in '{}|<>"\\' else ch for ch in str(text))


def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _summary(arr):
    import numpy as np

    a = np.asarray(arr, dtype=float)
    shape = "x".join(str(d) for d in a.shape) or "scalar"
    if a.size == 0:
        return f"[{shape}]"
    return f"[{shape}] min {a.min():.3g} mean {a.mean():.3g} max {a.max():.3g}"


def _record(node, name):
    label = _escape(node.label or "")
    if _is_tensor(node):
        grad = getattr(node, "grad", None)
        g = _escape(_summary(grad)) if grad is not None else "grad -"
        return "{ %s | %s | grad %s }" % (label, _escape("data " + _summary(node.data)), g)
    return "{ %s | data %s | grad %s }" % (label, _num(node.data), _num(node.grad))


def to_dot(root, *, rankdir="LR", max_nodes=300, depth=3, keep=40):
    """Graphviz DOT source of the graph that ends in ``root``.

    Node ids: ``v<i>`` for graph nodes (``i`` = step in topological order),
    ``v<i>_op`` for the op node of ``v<i>``, ``c<k>`` for constant operands.
    Over ``max_nodes`` graph nodes, only the nodes within ``depth`` op steps
    of the root (at most ``keep`` of them, nearest first) are drawn; the rest
    are counted per op in one summary box.
    """
    from ..core._engine import Node

    if not isinstance(root, Node):
        raise TypeError(f"to_dot(root=...) takes a graph node (Value or Tensor), got {type(root).__name__}")
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"to_dot(rankdir=...) must be 'LR', 'TB', 'RL' or 'BT', got {rankdir!r}")
    if not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"to_dot(max_nodes=...) must be a positive int, got {max_nodes!r}")
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"to_dot(depth=...) must be an int >= 0, got {depth!r}")
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"to_dot(keep=...) must be a positive int, got {keep!r}")

    order = topological_order(root)
    ids = {id(v): f"v{i}" for i, v in enumerate(order, 1)}
    drawn = set(ids)
    summarised = Counter()
    if len(order) > max_nodes:
        # breadth-first from the root, `depth` op steps, at most max_nodes
        drawn = {id(root)}
        frontier = [root]
        for _ in range(depth):
            nxt = []
            for v in frontier:
                for p in v._parents():
                    if id(p) in ids and id(p) not in drawn and len(drawn) < min(keep, max_nodes):
                        drawn.add(id(p))
                        nxt.append(p)
            frontier = nxt
        for v in order:
            if id(v) not in drawn:
                summarised[getattr(v, "_op", "") or "leaf"] += 1

    lines = ["digraph microgrid {", f"  graph [rankdir={rankdir}];",
             '  node [shape=record, fontname="Helvetica", fontsize=10];']
    const_k = 0
    frontier_ops = []
    for v in order:
        vid = ids[id(v)]
        if id(v) not in drawn:
            continue
        lines.append(f'  {vid} [label="{_record(v, vid)}"];')
        parents = v._parents()
        if not parents:
            continue
        op = getattr(v, "_op", "") or "op"
        lines.append(f"  {vid}_op [label={_quote(op)}, shape=ellipse];")
        lines.append(f"  {vid}_op -> {vid};")
        hidden_parent = False
        for p in parents:
            if id(p) in ids:
                if id(p) in drawn:
                    lines.append(f"  {ids[id(p)]} -> {vid}_op;")
                else:
                    hidden_parent = True
            elif isinstance(p, Value) or (isinstance(p, (int, float)) and not isinstance(p, bool)):
                # a constant operand, not a node of the graph
                const_k += 1
                number = float(p.data) if isinstance(p, Value) else float(p)
                lines.append(f"  c{const_k} [label={_quote(f'{number:g}')}, shape=plaintext];")
                lines.append(f"  c{const_k} -> {vid}_op;")
        if hidden_parent:
            frontier_ops.append(f"{vid}_op")
    if summarised:
        total = sum(summarised.values())
        counts = "\\l".join(f"{op}: {n}" for op, n in summarised.most_common()) + "\\l"
        lines.append(f'  rest [label="{total} more nodes (graph has {len(order)}; '
                     f'max_nodes={max_nodes})\\l{counts}", shape=box, style=dashed];')
        for op_id in frontier_ops:
            lines.append(f"  rest -> {op_id} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise GraphvizNotFound(_INSTALL_HINT + " (the graphviz Python package is not installed)") from None
    if shutil.which("dot") is None:
        raise GraphvizNotFound(_INSTALL_HINT + " (the 'dot' program is not on PATH)")
    return graphviz


class Drawing:
    """A rendered graph: ``.source`` is the DOT text, ``.svg()`` the SVG;
    Jupyter displays it through ``_repr_svg_``."""

    def __init__(self, source):
        self.source = source

    def svg(self):
        graphviz = _graphviz()
        return graphviz.Source(self.source).pipe(format="svg").decode("utf-8")

    def _repr_svg_(self):
        try:
            return self.svg()
        except GraphvizNotFound:
            return None      # Jupyter then falls back to the text repr

    def __repr__(self):
        return self.source


_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def draw(root, path=None, **dot_options):
    """Render the graph of ``root``.  With ``path`` ending in .svg, .png or
    .pdf, write the file and return its path; without, return a ``Drawing``
    that Jupyter shows as SVG.  ``dot_options`` go to ``to_dot``.  Raises
    ``GraphvizNotFound`` saying what to install when graphviz is missing."""
    fmt = None
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"draw(path=...) takes a file path, got {type(path).__name__}")
        ext = os.path.splitext(os.fspath(path))[1].lower()
        fmt = _FORMATS.get(ext)
        if fmt is None:
            raise ValueError(f"draw(path=...) must end in .svg, .png or .pdf, got {os.fspath(path)!r}")
    source = to_dot(root, **dot_options)
    graphviz = _graphviz()
    if path is None:
        return Drawing(source)
    data = graphviz.Source(source).pipe(format=fmt)
    with open(path, "wb") as f:
        f.write(data)
    return path

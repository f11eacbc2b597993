"""``grad_fn``: PyTorch's view of how a node was computed.

``t.grad_fn`` is None for a leaf, else an object naming the op that made
``t`` (``MulBackward0``, ``MseLossBackward0``, or a custom Function's name
with ``Backward``) whose ``next_functions`` lead to the nodes it came from,
as PyTorch prints them; leaves that take a gradient appear as
``AccumulateGrad`` with the leaf as ``variable``.
"""
from ..core import optable
from ..core._engine import Node, Value, _install_method
from ..tensors._tensor import Tensor

__all__ = ["GradFn", "AccumulateGrad"]


def _camel(code_name):
    return "".join(part.capitalize() for part in code_name.split("_"))


class GradFn:
    """The backward function of a non-leaf node (read-only view)."""

    __slots__ = ("_node",)

    def __init__(self, node):
        self._node = node

    def name(self):
        node = self._node
        row = optable.row_of(node)
        if row.code_name == "CUSTOM":          # built by hand, or a Function
            return f"{node._op or 'Custom'}Backward"
        return f"{_camel(optable.ROWS[row.base].code_name)}Backward0"

    @property
    def next_functions(self):
        return tuple((_grad_fn_of(p, leaf_fn=True), 0) for p in self._node._parents())

    def __repr__(self):
        return f"<{self.name()} object at {id(self):#x}>"


class AccumulateGrad:
    """Where a leaf that requires grad receives its gradient."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "torch::autograd::AccumulateGrad"

    next_functions = ()

    def __repr__(self):
        return f"<AccumulateGrad object at {id(self):#x}>"


def _grad_fn_of(node, leaf_fn=False):
    if not isinstance(node, Node) or not node.requires_grad:
        return None
    if not node._parents() and optable.row_of(node).code_name == "LEAF":
        return AccumulateGrad(node) if leaf_fn else None
    return GradFn(node)


_doc = "How this node was computed (None for a leaf), as PyTorch's grad_fn."
for _cls in (Value, Tensor):
    _install_method(_cls, "grad_fn", property(_grad_fn_of, doc=_doc))

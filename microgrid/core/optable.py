"""The op table on the Python side.

Every op of microgrid is one row of csrc/mg_ops.def; the compiled engine
expands the rows into its op codes, its scalar rules and its array loops,
and this module reads the same rows (through ``_engine._op_rows()``) for
everything Python needs of them:

- the elementwise methods of ``Value`` and ``Tensor`` (``relu``, ``sigmoid``,
  ``gelu(approximate=...)``, ``leaky_relu(slope)``, ...), generated here and
  installed at import;
- the ``functional.*`` functions and ``nn.*`` modules of ops PyTorch has
  (``functional_api()``, ``module_classes()``);
- the top-level functions, one per row (``microgrid.sin``, ``microgrid.pow``:
  ``module_functions()``);
- what a worked solution prints (``OpRow.show_value``, ``show_grad``), while
  the numbers come from the engine (``Value._local_grads()``);
- the README's table of ops (``markdown_table()``) and the test registry's
  elementwise entries.

A new elementwise op is a row in csrc/mg_ops.def and a line in each stub
(_engine.pyi, _tensor.pyi); nothing here changes.
"""
from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass

import numpy as np

from . import _engine
from ..tensors import _tensor
from ._engine import KINDS, Value
from ..tensors._tensor import Tensor

__all__ = ["OpRow", "ROWS", "ELEMENTWISE", "row_of", "method_groups", "method_parameters",
           "functional_api", "module_functions", "module_classes", "markdown_table"]

_KIND_NAMES = {code: name for name, code in KINDS.items()}


@dataclass(frozen=True)
class OpRow:
    """One op code's entry of the table (a binary row's constant forms,
    ``a op c`` and ``c op a``, are entries of their own sharing its text)."""
    code: int
    kind: str                     # LEAF, BINARY, BINARY_AC, UNARY, UNARY_C, NARY, REDUCE, ...
    base: int                     # the code of the row this entry comes from
    code_name: str                # "SIGMOID", "ADD_AC"
    name: str                     # the method name, "" if none
    variant: tuple | None         # (keyword, choice) when a keyword selects this row
    symbol: str                   # the node's ``_op``
    torch_function: str | None    # functional.<name> as in PyTorch
    torch_module: str | None      # nn.<name> as in PyTorch
    module_inplace: bool          # PyTorch's module takes inplace=
    value_param: str | None       # keyword of the constant on Value
    tensor_param: str | None      # ... on Tensor and in functional (PyTorch's)
    param_default: float | None
    forward: str                  # the formulas, as written in the row
    grads: tuple                  # d out / d a (, d out / d b)
    show: str                     # display templates: {a} {b} {c} {out}
    show_grads: tuple

    @property
    def has_rule(self):
        """Whether the row gives a scalar forward formula and derivatives."""
        return self.kind in ("BINARY", "BINARY_AC", "BINARY_CA", "UNARY", "UNARY_C")

    def show_value(self, a, b=None, c=None, out=None):
        """The op as a worked solution writes it, over operand names."""
        return self.show.format(a=a, b=b, c=c, out=out)

    def show_grad(self, operand, a, b=None, c=None, out=None):
        """The local derivative with respect to operand 0 (a) or 1 (b)."""
        return self.show_grads[operand].format(a=a, b=b, c=c, out=out)


def _parse(raw):
    name, variant = raw["name"], None
    if ":" in name:
        name, choice = name.split(":", 1)
        keyword, value = choice.split("=", 1)
        variant = (keyword, value)
    torch = raw["torch"].split()
    module = torch[1] if len(torch) > 1 else None
    inplace = module is not None and module.endswith("(inplace)")
    params = raw["param"].split()
    grads = tuple(g for g in (raw["grad_a"], raw["grad_b"]) if g)
    shows = tuple(g for g in (raw["show_grad_a"], raw["show_grad_b"]) if g)
    return OpRow(
        code=raw["code"], kind=_KIND_NAMES[raw["kind"]], base=raw["base"],
        code_name=raw["code_name"], name=name, variant=variant, symbol=raw["symbol"],
        torch_function=torch[0] if torch else None,
        torch_module=module.removesuffix("(inplace)") if module else None,
        module_inplace=inplace,
        value_param=params[0] if params else None,
        tensor_param=params[-1] if params else None,
        param_default=raw["param_default"] if params else None,
        forward=raw["forward"], grads=grads, show=raw["show"], show_grads=shows)


#: Every entry, indexed by op code.
ROWS = tuple(_parse(raw) for raw in _engine._op_rows())

#: The rows with a scalar rule that Value and Tensor share (operators and
#: elementwise functions), in table order, without the constant forms.
ELEMENTWISE = tuple(r for r in ROWS if r.kind in ("BINARY", "UNARY", "UNARY_C"))


def row_of(node):
    """The table entry of a graph node's op."""
    return ROWS[_engine._opcode(node)]


# ---------------------------------------------------------------------------
# Methods of Value and Tensor, generated from the rows

def method_groups():
    """{method name: the rows it builds (one, or one per choice of its
    keyword)}, in table order, for the rows that have a method."""
    groups = {}
    for r in ELEMENTWISE:
        if r.name and r.kind != "BINARY":
            groups.setdefault(r.name, []).append(r)
    return groups


def method_parameters(rows, cls):
    """The keywords of the method building ``rows`` on ``cls``: (keyword,
    default, kind) triples, as _engine._elementwise_method takes them."""
    params = []
    variants = [r.variant for r in rows if r.variant]
    if variants:
        params.append((variants[0][0], variants[0][1], "variant"))
    constant = rows[0]
    if constant.value_param:
        keyword = constant.value_param if cls is Value else constant.tensor_param
        params.append((keyword, constant.param_default, "constant"))
    return tuple(params)


def _doc(rows, cls):
    first = rows[0]
    lines = [f"Elementwise {first.name}: out = {first.forward}, d out/da = {first.grads[0]}."]
    for r in rows[1:]:
        lines.append(f"With {r.variant[0]}={r.variant[1]!r}: out = {r.forward}, "
                     f"d out/da = {r.grads[0]}.")
    if first.value_param:
        keyword = first.value_param if cls is Value else first.tensor_param
        lines.append(f"c is the {keyword} (default {first.param_default}).")
    lines.append("(A row of the op table, csrc/mg_ops.def.)")
    return "\n".join(lines)


def _signature(params):
    return inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
           for k, d, _ in params])


def _install_methods():
    for name, rows in method_groups().items():
        codes = {r.variant[1] if r.variant else None: r.code for r in rows}
        for cls in (Value, Tensor):
            params = method_parameters(rows, cls)
            if params:
                method = _engine._elementwise_method(cls, name, params, codes, _doc(rows, cls))
                method.__signature__ = _signature(params)
            else:
                method = _engine._plain_method(cls, name, rows[0].code, _doc(rows, cls))
            _engine._install_method(cls, name, method)


_install_methods()


# ---------------------------------------------------------------------------
# functional.* and nn.* entries of the rows PyTorch has

def functional_api():
    """{name: function} for the rows with a PyTorch functional name: each
    takes ``input`` (a Tensor or Value; a numpy array as a constant) and the
    method's keywords under PyTorch's names, and builds the same node as the
    Tensor method."""
    api = {}
    for name, rows in method_groups().items():
        fname = rows[0].torch_function
        if not fname:
            continue
        api[fname] = _functional(fname, name, method_parameters(rows, Tensor), rows)
    return api


def _functional(fname, method_name, params, rows):
    def function(input, *args, **kwargs):
        # a scalar Value takes the same op through its own method
        input = _input(input, f"{fname}(input)")
        if isinstance(input, Value) and rows[0].value_param != rows[0].tensor_param:
            kwargs = {rows[0].value_param if k == rows[0].tensor_param else k: v
                      for k, v in kwargs.items()}
        return getattr(input, method_name)(*args, **kwargs)

    function.__name__ = function.__qualname__ = fname
    function.__doc__ = _doc(rows, Tensor).replace("Elementwise", f"{fname}(input): elementwise", 1)
    function.__signature__ = inspect.Signature(
        [inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
           for k, d, _ in params])
    function.__module__ = "microgrid.functional"
    return function


def module_functions():
    """{name: function} of the top-level functions, one per row with a name
    (``mg.sin(x)``, ``mg.gelu(x, approximate='tanh')``, ``mg.pow(x, 2)``,
    ``mg.add(x, y)``): the method of a Tensor or Value input, or the operator
    of a binary row.  A numpy array input is a constant tensor, as PyTorch
    takes tensors there."""
    functions = {}
    for name, rows in method_groups().items():
        functions[name] = _module_function(name, method_parameters(rows, Tensor), _doc(rows, Tensor))
    for r in ELEMENTWISE:
        if r.kind == "BINARY" and r.name:
            functions[r.name] = _module_binary(r)
    return functions


def _input(x, where):
    """A Tensor or Value argument of a top-level function; numpy arrays as constants."""
    if isinstance(x, (Tensor, Value)):
        return x
    if isinstance(x, np.ndarray):
        return _tensor.tensor(x)
    raise TypeError(f"{where} must be a Tensor, a Value or a numpy array, got {type(x).__name__}")


def _module_function(name, params, doc):
    def function(input, *args, **kwargs):
        return getattr(_input(input, f"{name}(input)"), name)(*args, **kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc.replace("Elementwise", f"{name}(input): elementwise", 1)
    function.__signature__ = inspect.Signature(
        [inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
           for k, d, _ in params])
    function.__module__ = "microgrid"
    return function


_OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
              "div": operator.truediv, "pow": operator.pow}


def _module_binary(row):
    apply = _OPERATORS[row.name]
    second = "exponent" if row.name == "pow" else "other"

    def function(input, other):
        # one operand may be a number (``mg.pow(2, x)``), not both
        nodes = (Tensor, Value, np.ndarray)
        if not isinstance(input, nodes) and not isinstance(other, nodes):
            raise TypeError(f"{row.name}(input, {second}): one of them must be a Tensor, a Value or a "
                            f"numpy array, got {type(input).__name__} and {type(other).__name__}")
        if isinstance(input, np.ndarray):
            input = _tensor.tensor(input)
        if isinstance(other, np.ndarray):
            other = _tensor.tensor(other)
        return apply(input, other)

    function.__name__ = function.__qualname__ = row.name
    function.__doc__ = (f"{row.name}(input, {second}): input {row.symbol} {second}, elementwise with "
                        f"broadcasting; out = {row.forward}, d out/da = {row.grads[0]}, "
                        f"d out/db = {row.grads[1]}.\n(A row of the op table, csrc/mg_ops.def.)")
    function.__signature__ = inspect.Signature(
        [inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter(second, inspect.Parameter.POSITIONAL_OR_KEYWORD)])
    function.__module__ = "microgrid"
    return function


def module_classes(Module, functional):
    """{name: class} of the nn modules for the rows PyTorch has one for
    (``nn.SiLU()``, ``nn.ELU(alpha=1.0)``, ``nn.GELU(approximate='none')``),
    subclasses of ``Module`` calling ``functional``'s function."""
    classes = {}
    for name, rows in method_groups().items():
        first = rows[0]
        if not first.torch_module:
            continue
        classes[first.torch_module] = _module_class(
            Module, first.torch_module, getattr(functional, first.torch_function),
            method_parameters(rows, Tensor), first.module_inplace)
    return classes


def _module_class(Module, class_name, function, params, inplace):
    keywords = [k for k, _, _ in params]
    arguments = keywords + (["inplace"] if inplace else [])
    signature = _signature(params + ((("inplace", False, "flag"),) if inplace else ()))

    def __init__(self, *args, **kwargs):
        Module.__init__(self)
        if len(args) > len(arguments):
            raise TypeError(f"{class_name}() takes "
                            f"{len(arguments) or 'no'} argument{'' if len(arguments) == 1 else 's'} "
                            f"({len(args)} given)")
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for k in arguments:
            setattr(self, k, bound.arguments[k])
        if inplace and not isinstance(self.inplace, bool):
            raise TypeError(f"{class_name}(inplace=...) must be a bool, got {type(self.inplace).__name__}")
        if keywords:
            function(Tensor(0.0), **self._keywords())   # check the arguments now

    __init__.__signature__ = signature

    def _keywords(self):
        return {k: getattr(self, k) for k in keywords}

    def forward(self, input):
        # (inplace= is PyTorch's memory saving; the result is the same)
        return function(input, **self._keywords())

    def extra_repr(self):
        shown = [f"{k}={v!r}" for k, v in self._keywords().items()]
        return ", ".join(shown + (["inplace=True"] if inplace and self.inplace else []))

    return type(class_name, (Module,), {
        "__init__": __init__, "_keywords": _keywords, "forward": forward,
        "extra_repr": extra_repr, "__module__": "microgrid.nn",
        "__doc__": f"{class_name}: functional.{function.__name__} as a layer; works on "
                   "Values as well as Tensors."})


# ---------------------------------------------------------------------------
# The README's table

def markdown_table():
    """The README's table of the elementwise ops, one line per row."""
    lines = ["| Python | `_op` | value | local derivative | PyTorch |",
             "| --- | --- | --- | --- | --- |"]
    for r in ELEMENTWISE:
        if r.kind == "BINARY":
            python = f"`a {r.symbol} b`"
        elif r.variant:
            python = f"`a.{r.name}({r.variant[0]}={r.variant[1]!r})`"
        elif r.value_param:
            python = f"`a.{r.name}({r.value_param}={_number(r.param_default)})`"
        else:
            python = f"`a.{r.name}()`"
        grads = ", ".join(f"`{g}`" for g in r.grads)
        torch = ", ".join(f"`{prefix}.{n}`" for prefix, n in
                          (("F", r.torch_function), ("nn", r.torch_module)) if n)
        lines.append(f"| {python} | `{r.symbol}` | `{r.forward}` | {grads} | {torch} |")
    return "\n".join(lines)


def _number(x):
    return str(int(x)) if x == int(x) and math.isfinite(x) else repr(x)

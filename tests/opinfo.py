"""The op registry of the test suite, in the spirit of PyTorch's OpInfo: one
``OpInfo`` per public op and layer of microgrid (top level, functional,
Tensor and Value methods and operators, nn), each with sample inputs, a
reference implementation (numpy or closed form) and error inputs.

``public_api()`` enumerates the public names of the package as it is, so a
new op without an entry makes tests/test_opinfo.py fail.  Names that are not
ops (metadata properties, exception classes) are listed in ``NOT_OPS`` with
the reason.

Conventions of an entry:
  * ``op(*inputs, *sample.args, **sample.kwargs)`` runs the op; ``inputs``
    are the sample's arrays wrapped as Tensors (``kind='tensor'``) or its
    floats wrapped as Values (``kind='value'``), with requires_grad set.
  * ``ref(*raw_inputs, *sample.args, **sample.kwargs)`` computes the same
    value with numpy on the raw arrays / floats.
  * ``errors()`` yields ``ErrorInput(thunk, exc, regex)``: calling ``thunk``
    must raise ``exc`` with a message matching ``regex``, which names the
    offending argument.
"""
import inspect
import math
import operator
import random
import re
from dataclasses import dataclass, field

import numpy as np

import microgrid as mg
import microgrid.functional as F
import microgrid.nn as nn
from microgrid.core import optable

Tensor, Value = mg.Tensor, mg.Value


@dataclass
class Sample:
    inputs: tuple                     # arrays (tensor kind) or floats (value kind)
    args: tuple = ()                  # extra positional constants
    kwargs: dict = field(default_factory=dict)
    grad: bool = True                 # gradcheck this sample


@dataclass
class ErrorInput:
    thunk: object
    exc: type
    regex: str


@dataclass
class OpInfo:
    name: str
    op: object
    ref: object
    samples: object                   # rng -> iterable of Sample
    errors: object                    # () -> iterable of ErrorInput
    kind: str = "tensor"
    aliases: tuple = ()               # other public names of the same callable
    grad: bool = True                 # differentiable: gradcheck applies
    nan: object = True                # True, or a str saying why NaN-in/NaN-out does not apply
    broadcast: object = None          # rng -> iterable of Sample with broadcasting inputs
    atol: float = 1e-10
    gradgrad: object = True           # True (gradgradcheck applies), or a str saying why not yet


def wrap(entry, raw):
    """The sample's raw inputs as graph leaves of the entry's kind."""
    if entry.kind == "value":
        return [Value(float(x)) for x in raw]
    return [mg.tensor(x, requires_grad=True) for x in raw]


def as_array(out):
    """An op's result as a numpy array (or a list of them) for comparison."""
    if isinstance(out, (Tensor, Value)):
        return np.asarray(out.data, dtype=np.float64)
    if isinstance(out, (list, tuple)):
        return [as_array(o) for o in out]
    return np.asarray(out, dtype=np.float64)


def graph_output(out):
    """The node gradcheck differentiates (a tuple result's first node)."""
    if isinstance(out, (list, tuple)):
        nodes = [o for o in out if isinstance(o, (Tensor, Value))]
        if len(nodes) == 1:
            return nodes[0]
        return mg.stack(nodes) if all(isinstance(o, Value) for o in nodes) else nodes[0]
    return out


# ---------------------------------------------------------------------------
# Sample helpers

def _away(rng, shape, lo=0.2, hi=1.5):
    """Random numbers with |x| in [lo, hi], away from kinks at 0."""
    x = rng.uniform(lo, hi, shape)
    return x * np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def _pos(rng, shape, lo=0.3, hi=2.0):
    return rng.uniform(lo, hi, shape)


UNARY_SHAPES = [(), (4,), (2, 3), (2, 1, 3)]


def _unary_samples(gen):
    def samples(rng):
        for s in UNARY_SHAPES:
            yield Sample((gen(rng, s),))
    return samples


def _unary_broadcast(gen):
    return None


def _binary_samples(gen_a, gen_b):
    def samples(rng):
        for sa, sb in [((), ()), ((3,), (3,)), ((2, 3), (2, 3))]:
            yield Sample((gen_a(rng, sa), gen_b(rng, sb)))
    return samples


def _binary_broadcast(gen_a, gen_b):
    def samples(rng):
        for sa, sb in [((2, 3), (3,)), ((2, 1), (1, 3)), ((2, 3), ()), ((4, 1, 3), (2, 1))]:
            yield Sample((gen_a(rng, sa), gen_b(rng, sb)))
    return samples


def _t(*shape, rg=True):
    return mg.tensor(np.arange(1.0, 1.0 + int(np.prod(shape))).reshape(shape) / 7.0, requires_grad=rg)


# Errors every method that takes nothing but self can get: an unknown
# keyword, extra positionals, and a self that is not a Tensor/Value.
def _method_errors(cls, method, arity=0):
    def errors():
        target = _t(2, 3) if cls is Tensor else Value(0.5)
        # (a method of CPython's no-argument kind, like the op table's, says
        # "takes no keyword arguments" rather than naming the keyword)
        yield ErrorInput(lambda: getattr(target, method)(*([1] * arity), bogus=1),
                         TypeError, rf"bogus|{re.escape(method)}\(\) takes no keyword")
        yield ErrorInput(lambda: getattr(target, method)(*([1] * (arity + 3))),
                         TypeError, rf"{re.escape(method)}\(\) takes" if not method.startswith("__")
                         else "expected 0 arguments, got 3")   # CPython's slot wrapper message
        yield ErrorInput(lambda: getattr(cls, method)("not a node", *([1] * arity)),
                         TypeError, rf"'{re.escape(method)}' (for|requires a) '.*{cls.__name__}'")
        yield ErrorInput(lambda: getattr(cls, method)(None, *([1] * arity)),
                         TypeError, rf"'{re.escape(method)}' (for|requires a) '.*{cls.__name__}'")
    return errors


def _operator_errors(cls, method, symbol):
    """A binary operator given a str, None or an object array."""
    def errors():
        target = _t(2, 3) if cls is Tensor else Value(0.5)
        reflected = method.startswith("__r") and method not in ("__rshift__",)
        # (a str on the left of + or * is str's own concatenation/repeat)
        for bad in ((None, object(), {}) if reflected or symbol == "*" else ("a string", None, object())):
            if reflected:
                thunk = (lambda bad=bad: eval(f"bad {symbol} target", {"bad": bad, "target": target}))
                regex = rf"unsupported operand type\(s\) for {re.escape(symbol)}.*'{type(bad).__name__}' and '.*{cls.__name__}'"
            else:
                thunk = (lambda bad=bad: eval(f"target {symbol} bad", {"bad": bad, "target": target}))
                regex = rf"unsupported operand type\(s\) for {re.escape(symbol)}.*'.*{cls.__name__}' and '{type(bad).__name__}'"
            yield ErrorInput(thunk, TypeError, regex)
        if cls is Tensor and symbol != "@":
            yield ErrorInput(lambda: eval(f"target {symbol} other", {"target": _t(2, 3), "other": _t(4)}),
                             ValueError, r"shapes \(2, 3\) and \(4,\) cannot be broadcast")
    return errors


def _tensor_input_errors(fn, name, *rest, **kw):
    """A functional op's ``input`` given a str, a list and None."""
    def errors():
        for bad in ("x", [1.0, 2.0], None):
            yield ErrorInput(lambda bad=bad: fn(bad, *rest, **kw), TypeError,
                             rf"{name}\(input\) must be a Tensor")
    return errors


def _chain(*makers):
    def errors():
        for m in makers:
            yield from m()
    return errors


def _extra(*items):
    def errors():
        yield from items
    return errors


# ---------------------------------------------------------------------------
# Numpy references

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _softmax(x, dim):
    e = np.exp(x - np.max(x, axis=dim, keepdims=True))
    return e / np.sum(e, axis=dim, keepdims=True)


def _log_softmax(x, dim):
    s = x - np.max(x, axis=dim, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=dim, keepdims=True))


def _reduce(losses, reduction):
    return {"none": losses, "sum": np.sum(losses), "mean": np.mean(losses)}[reduction]


def _conv2d_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = padding if isinstance(padding, tuple) else (padding, padding)
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    oh = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wd + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    out = np.zeros((n, co, oh, ow))
    opg = co // groups
    for o in range(co):
        g = o // opg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * s[0]:i * s[0] + d[0] * (kh - 1) + 1:d[0],
                           j * s[1]:j * s[1] + d[1] * (kw - 1) + 1:d[1]]
                out[:, o, i, j] = np.sum(patch * w[o], axis=(1, 2, 3))
    if b is not None:
        out += b[None, :, None, None]
    return out[0] if unbatched else out


def _conv_transpose2d_ref(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    # scatter form: every input pixel adds its weighted kernel to the output
    s, p, op, d = [(v, v) if isinstance(v, int) else v for v in (stride, padding, output_padding, dilation)]
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    n, ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    oh = (h - 1) * s[0] - 2 * p[0] + d[0] * (kh - 1) + op[0] + 1
    ow = (wd - 1) * s[1] - 2 * p[1] + d[1] * (kw - 1) + op[1] + 1
    full = np.zeros((n, cog * groups, oh + 2 * p[0] + s[0] + d[0] * kh, ow + 2 * p[1] + s[1] + d[1] * kw))
    cig = ci // groups
    for c in range(ci):
        g = c // cig
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for bb in range(kw):
                        full[:, g * cog:(g + 1) * cog, i * s[0] + a * d[0], j * s[1] + bb * d[1]] += \
                            x[:, c, i, j][:, None] * w[c, :, a, bb][None, :]
    out = full[:, :, p[0]:p[0] + oh, p[1]:p[1] + ow]
    if b is not None:
        out = out + b[None, :, None, None]
    return out[0] if unbatched else out


def _pool_ref(x, k, s=None, p=0, reducer=np.max, pad_value=-np.inf, count_include_pad=True):
    k = (k, k) if isinstance(k, int) else k
    s = k if s is None else ((s, s) if isinstance(s, int) else s)
    p = (p, p) if isinstance(p, int) else p
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=pad_value)
    ones = np.pad(np.ones((h, w)), ((p[0], p[0]), (p[1], p[1])))
    oh = (h + 2 * p[0] - k[0]) // s[0] + 1
    ow = (w + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
            if reducer is np.max:
                out[:, :, i, j] = np.max(win, axis=(2, 3))
            else:
                cnt = k[0] * k[1] if count_include_pad else \
                    ones[i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].sum()
                out[:, :, i, j] = np.sum(win, axis=(2, 3)) / cnt
    return out[0] if unbatched else out


def _ce_ref(x, t, reduction="mean"):
    lp = _log_softmax(x, 0 if x.ndim == 1 else 1)
    if x.ndim == 1:
        return -lp[t]
    picked = -np.take_along_axis(lp, np.expand_dims(t, 1), axis=1).squeeze(1)
    return _reduce(picked, reduction)


def _nll_ref(x, t, reduction="mean"):
    if x.ndim == 1:
        return -x[t]
    picked = -np.take_along_axis(x, np.expand_dims(t, 1), axis=1).squeeze(1)
    return _reduce(picked, reduction)


def _huber(d, delta):
    ad = np.abs(d)
    return np.where(ad <= delta, 0.5 * d * d, delta * (ad - 0.5 * delta))


# ---------------------------------------------------------------------------
# The registry

OPS = []


def add(entry):
    OPS.append(entry)
    return entry


# -- the op table's elementwise rows: Value and Tensor methods, functional twins
#
# Enumerated from microgrid.core.optable, so a new row of csrc/mg_ops.def is in the
# registry without a line here.  The reference is numpy's own function where
# one is listed below (independent of the row); otherwise the row's formula
# evaluated with numpy, and the PyTorch parity test (test_optable.py) checks
# the row against torch.

_REFERENCES = {
    "neg": np.negative, "abs": np.abs, "relu": lambda x: np.maximum(x, 0.0), "sigmoid": _sigmoid,
    "tanh": np.tanh, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "softplus": _softplus,
    "sin": np.sin, "cos": np.cos, "leaky_relu": lambda x, c: np.where(x > 0, x, c * x),
}

# the functions the rows' formulas are written in (mg_scalar.h's vocabulary), in numpy
FORMULA_VOCABULARY = {
    "where": np.where, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh,
    "sin": np.sin, "cos": np.cos, "fabs": np.abs, "pow": np.power, "sigmoid": _sigmoid,
    "softplus": _softplus, "sign": np.sign, "erf": np.vectorize(math.erf, otypes=[float]),
    "log1p": np.log1p, "expm1": np.expm1, "atan": np.arctan,
    "M_SQRT1_2": math.sqrt(0.5), "M_2_SQRTPI": 2 / math.sqrt(math.pi), "M_SQRT2": math.sqrt(2),
}


def formula(row, expression=None):
    """A row's formula (its forward by default) as a numpy function of a (, b), c, out."""
    code = compile(expression or row.forward, f"<{row.code_name}>", "eval")

    def evaluate(a, b=None, c=None, out=None):
        with np.errstate(all="ignore"):
            return np.asarray(eval(code, dict(FORMULA_VOCABULARY), {"a": a, "b": b, "c": c, "out": out}),
                              dtype=float) + 0.0 * np.asarray(a)
    return evaluate


def _row_domain(rows):
    """Inputs where the op is defined: away from kinks at 0, and positive if
    the op gives NaN for negative numbers (log, sqrt)."""
    probe = getattr(mg.tensor([-1.3, -0.4]), rows[0].name)()
    return _pos if np.isnan(probe.data).any() else _away


def _row_reference(rows, keyword=None):
    """The reference of the method building ``rows``: (x, *args, **kwargs) -> array."""
    name = rows[0].name
    choices = {r.variant[1] if r.variant else None: r for r in rows}
    variant = rows[0].variant[0] if rows[0].variant else None

    def reference(x, *args, **kwargs):
        x = np.asarray(x, dtype=float)
        if variant is not None:
            row = choices[kwargs.pop(variant, args[0] if args else rows[0].variant[1])]
            args = args[1:]
        else:
            row = rows[0]
        if row.value_param:
            c = kwargs.pop(keyword, args[0] if args else row.param_default)
            if name in _REFERENCES and not row.variant:
                return _REFERENCES[name](x, c)
            return formula(row)(x, c=c)
        if name in _REFERENCES and not row.variant:
            return _REFERENCES[name](x)
        return formula(row)(x)
    return reference


def _row_samples(rows, cls, gen):
    keyword = rows[0].value_param if cls is Value else rows[0].tensor_param
    variant = rows[0].variant[0] if rows[0].variant else None

    def samples(rng):
        shapes = [()] * 4 if cls is Value else UNARY_SHAPES
        raw = (lambda s: float(gen(rng, s))) if cls is Value else (lambda s: gen(rng, s))
        for s in shapes:
            yield Sample((raw(s),))
        if keyword:
            yield Sample((raw((3,) if cls is Tensor else ()),), (0.2,))
            yield Sample((raw(()),), kwargs={keyword: -0.5})
        if variant:
            for r in rows:
                yield Sample((raw((4,) if cls is Tensor else ()),), kwargs={variant: r.variant[1]})
    return samples


def _row_errors(rows, cls):
    name = rows[0].name
    keyword = rows[0].value_param if cls is Value else rows[0].tensor_param
    variant = rows[0].variant[0] if rows[0].variant else None
    if not keyword and not variant:
        return _method_errors(cls, name)
    target = (lambda: _t(2, 3)) if cls is Tensor else (lambda: Value(0.5))
    errors = [ErrorInput(lambda: getattr(target(), name)(bogus=1), TypeError, r"bogus"),
              ErrorInput(lambda: getattr(target(), name)(*([1] * 3)), TypeError, rf"{name}\(\) takes"),
              ErrorInput(lambda: getattr(cls, name)("not a node"), TypeError,
                         rf"'{name}' for '.*{cls.__name__}'")]
    if keyword:
        errors += [ErrorInput(lambda bad=bad: getattr(target(), name)(**{keyword: bad}), TypeError,
                              rf"{name}\({keyword}=") for bad in ("a", None, [0.1])]
    if variant:
        errors += [ErrorInput(lambda bad=bad: getattr(target(), name)(**{variant: bad}), ValueError,
                              rf"{name}\({variant}=") for bad in ("bogus", None)]
    return _extra(*errors)


def _functional_errors(fn, fname):
    return _tensor_input_errors(fn, fname)


for _name, _rows in optable.method_groups().items():
    _gen = _row_domain(_rows)
    for _cls in (Tensor, Value):
        _keyword = _rows[0].value_param if _cls is Value else _rows[0].tensor_param
        add(OpInfo(f"{_cls.__name__}.{_name}", (lambda n: lambda x, *a, **k: getattr(x, n)(*a, **k))(_name),
                   _row_reference(_rows, _keyword), _row_samples(_rows, _cls, _gen), _row_errors(_rows, _cls),
                   kind="value" if _cls is Value else "tensor"))
    _fname = _rows[0].torch_function
    if _fname:
        _fn = getattr(F, _fname)
        add(OpInfo(f"functional.{_fname}", _fn, _row_reference(_rows, _rows[0].tensor_param),
                   _row_samples(_rows, Tensor, _gen), _functional_errors(_fn, _fname),
                   aliases=(f"mg.{_fname}",)))

add(OpInfo("Tensor.clamp", lambda t, *a, **k: t.clamp(*a, **k), lambda x, lo=None, hi=None: np.clip(x, lo, hi),
           lambda rng: [Sample((np.array([-1.3, -0.2, 0.4, 1.7]),), (-0.5, 0.9)),
                        Sample((np.array([[-1.3, 0.6], [0.2, 1.1]]),), (None, 0.5)),
                        Sample((np.array([-1.3, 0.6, 0.1]),), (0.0,))],
           _extra(ErrorInput(lambda: _t(2).clamp(), ValueError, r"min=.*max="),
                  ErrorInput(lambda: _t(2).clamp("a"), TypeError, r"clamp\(min="),
                  ErrorInput(lambda: _t(2).clamp(0, [1]), TypeError, r"clamp\(max="),
                  ErrorInput(lambda: _t(2).clamp(True), TypeError, r"clamp\(min="))))
add(OpInfo("Tensor.clip", lambda t, *a: t.clip(*a), lambda x, lo=None, hi=None: np.clip(x, lo, hi),
           lambda rng: [Sample((np.array([-1.3, -0.2, 0.4, 1.7]),), (-0.5, 0.9))],
           _extra(ErrorInput(lambda: _t(2).clip(), ValueError, r"min=.*max="),
                  ErrorInput(lambda: _t(2).clip("a"), TypeError, r"min="),
                  ErrorInput(lambda: _t(2).clip(None, "b"), TypeError, r"max="))))

# -- operators ----------------------------------------------------------------

_BINOPS = {
    "__add__": ("+", np.add, _away, _away),
    "__sub__": ("-", np.subtract, _away, _away),
    "__mul__": ("*", np.multiply, _away, _away),
    "__truediv__": ("/", np.divide, _away, _away),
    "__pow__": ("**", np.power, _pos, _away),
}

_PY_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}

for _m, (_sym, _ref, _ga, _gb) in _BINOPS.items():
    _op = (lambda f: lambda a, b: f(a, b))(_PY_OPS[_sym])
    add(OpInfo(f"Tensor.{_m}", _op, _ref, _binary_samples(_ga, _gb),
               _operator_errors(Tensor, _m, _sym), broadcast=_binary_broadcast(_ga, _gb)))
    # reflected: a numpy array or a float on the left, the Tensor on the right
    _rm = "__r" + _m[2:]
    _rop = (lambda f: lambda b, c: f(c, b))(_PY_OPS[_sym])
    add(OpInfo(f"Tensor.{_rm}", _rop, (lambda f: lambda b, c: f(c, b))(_ref),
               (lambda ga, gb: lambda rng: [Sample((gb(rng, (2, 3)),), (ga(rng, (2, 3)),)),
                                            Sample((gb(rng, (3,)),), (float(ga(rng, ())),)),
                                            Sample((gb(rng, (2, 3)),), (ga(rng, (3,)),))])(_ga, _gb),
               _operator_errors(Tensor, _rm, _sym)))
    add(OpInfo(f"Value.{_m}", _op, _ref,
               (lambda ga, gb: lambda rng: [Sample((float(ga(rng, ())), float(gb(rng, ()))))
                                            for _ in range(3)])(_ga, _gb),
               _operator_errors(Value, _m, _sym), kind="value"))
    add(OpInfo(f"Value.{_rm}", _rop, (lambda f: lambda b, c: f(c, b))(_ref),
               (lambda ga, gb: lambda rng: [Sample((float(gb(rng, ())),), (float(ga(rng, ())),))
                                            for _ in range(3)])(_ga, _gb),
               _operator_errors(Value, _rm, _sym), kind="value"))


# -- in-place ops: on a non-leaf (a * 1) they record the op, so values,
# gradients and errors are checked like the out-of-place ops

_INPLACE = {
    "add_": (lambda a, b, **k: a.add_(b, **k), lambda x, y, alpha=1: x + alpha * y),
    "sub_": (lambda a, b, **k: a.sub_(b, **k), lambda x, y, alpha=1: x - alpha * y),
    "mul_": (lambda a, b: a.mul_(b), np.multiply), "div_": (lambda a, b: a.div_(b), np.divide),
    "__iadd__": (operator.iadd, np.add), "__isub__": (operator.isub, np.subtract),
    "__imul__": (operator.imul, np.multiply), "__itruediv__": (operator.itruediv, np.divide),
}


def _inplace_errors(name, fn):
    def errors():
        yield ErrorInput(lambda: fn(_t(2, rg=False), _t(3, 1)), RuntimeError, r"doesn't match the broadcast shape")
        yield ErrorInput(lambda: fn(_t(2), _t(2)), RuntimeError, r"leaf Variable that requires grad")
        yield ErrorInput(lambda: fn(_t(2) * 1, "x"), TypeError,
                         r"(\(other\) takes a Tensor|unsupported operand)")
    return errors


for _m, (_fn, _ref) in _INPLACE.items():
    _alpha = _m in ("add_", "sub_")
    add(OpInfo(f"Tensor.{_m}", (lambda f: lambda a, b, **k: f(a * 1.0, b, **k))(_fn), _ref,
               (lambda alpha: lambda rng: [
                   Sample((rng.standard_normal((2, 3)), rng.uniform(0.5, 2.0, (2, 3)))),
                   Sample((rng.standard_normal((2, 3)), rng.uniform(0.5, 2.0, (3,)))),
                   *([Sample((rng.standard_normal((2, 3)), rng.standard_normal((2, 3))),
                             kwargs={"alpha": -2.5})] if alpha else [])])(_alpha),
               _chain(_inplace_errors(_m, _fn),
                      _extra(*([ErrorInput(lambda: (_t(2) * 1).add_(1.0, alpha="x"), TypeError, r"alpha")]
                               if _alpha else [])))))
for _m, _fn in (("clamp_", lambda a, *bounds: (a * 1.0).clamp_(*bounds)),
                ("clip_", lambda a, *bounds: (a * 1.0).clip_(*bounds))):
    add(OpInfo(f"Tensor.{_m}", _fn, lambda x, lo=None, hi=None: np.clip(x, lo, hi),
               lambda rng: [Sample((np.array([-1.3, -0.2, 0.4, 1.7]),), (-0.5, 0.9)),
                            Sample((np.array([[-1.3, 0.6], [0.2, 1.1]]),), (None, 0.5))],
               (lambda m: _extra(ErrorInput(lambda: getattr(_t(2) * 1, m)(), ValueError, r"min=.*max="),
                                 ErrorInput(lambda: getattr(_t(2) * 1, m)("a"), TypeError, r"(clamp_|clip_)\(min="),
                                 ErrorInput(lambda: getattr(_t(2), m)(0.0), RuntimeError, r"leaf Variable")))(_m)))
add(OpInfo("Tensor.copy_", lambda a, b: (a * 1.0).copy_(b), lambda x, y: np.broadcast_to(y, x.shape) + 0.0,
           lambda rng: [Sample((rng.standard_normal((2, 3)), rng.standard_normal((2, 3)))),
                        Sample((rng.standard_normal((2, 3)), rng.standard_normal((3,))))],
           _inplace_errors("copy_", lambda a, b: a.copy_(b)), nan="the destination's values are overwritten"))
add(OpInfo("Tensor.fill_", lambda a: (a * 1.0).fill_(-1.5), lambda x: np.full_like(x, -1.5),
           lambda rng: [Sample((rng.standard_normal((2, 3)),))],
           _extra(ErrorInput(lambda: (_t(2) * 1).fill_("x"), TypeError, r"fill_\(value\)"),
                  ErrorInput(lambda: (_t(2) * 1).fill_(_t(2)), RuntimeError, r"0-dimension"),
                  ErrorInput(lambda: _t(2).fill_(0.0), RuntimeError, r"leaf Variable")), grad=False,
           nan="the values are overwritten"))
add(OpInfo("Tensor.zero_", lambda a: (a * 1.0).zero_(), np.zeros_like,
           lambda rng: [Sample((rng.standard_normal((2, 3)),))],
           _extra(ErrorInput(lambda: _t(2).zero_(), RuntimeError, r"leaf Variable"),
                  ErrorInput(lambda: (_t(2) * 1).zero_(1), TypeError, r"zero_\(\)|argument"),
                  ErrorInput(lambda: Tensor.zero_(Value(1.0)), TypeError, r"Tensor")), grad=False,
           nan="the values are overwritten"))


def _matmul_samples(rng):
    for sa, sb in [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 2)), ((2, 3), (3, 4)), ((2, 2, 3), (3, 2)),
                   ((2, 1, 2, 3), (3, 3, 2))]:
        yield Sample((rng.standard_normal(sa), rng.standard_normal(sb)))


def _matmul_errors(fn):
    def errors():
        yield ErrorInput(lambda: fn(_t(2, 3), _t(2, 3)), ValueError, r"contracted dimension")
        yield ErrorInput(lambda: fn(_t(2, 3), mg.tensor(1.0)), ValueError, r"at least one dimension")
        yield ErrorInput(lambda: fn(_t(2, 2, 3), _t(3, 3, 2)), ValueError, r"batch dimensions")
        yield ErrorInput(lambda: fn(_t(2, 3), "x"), TypeError, r"(matmul\(other\)|unsupported operand.*@.*'str')")
    return errors


add(OpInfo("Tensor.__matmul__", lambda a, b: a @ b, np.matmul, _matmul_samples,
           _chain(_matmul_errors(lambda a, b: a @ b), _operator_errors(Tensor, "__matmul__", "@"))))
add(OpInfo("Tensor.matmul", lambda a, b: a.matmul(b), np.matmul, _matmul_samples,
           _matmul_errors(lambda a, b: a.matmul(b))))
add(OpInfo("mg.matmul", mg.matmul, np.matmul, _matmul_samples,
           _chain(_matmul_errors(mg.matmul),
                  _extra(ErrorInput(lambda: mg.matmul("x", _t(2)), TypeError, r"matmul\(input\)")))))
add(OpInfo("Tensor.__rmatmul__", lambda b, c: c @ b, lambda b, c: np.matmul(c, b),
           lambda rng: [Sample((rng.standard_normal((3, 2)),), (rng.standard_normal((2, 3)),)),
                        Sample((rng.standard_normal(3),), (rng.standard_normal((2, 3)),))],
           _chain(_operator_errors(Tensor, "__rmatmul__", "@"),
                  _extra(ErrorInput(lambda: np.ones((2, 2)) @ _t(3, 2), ValueError, r"contracted dimension")))))

for _m, _sym, _ref in [("__neg__", "-", np.negative), ("__abs__", "abs", np.abs), ("__pos__", "+", lambda x: x)]:
    _op = (lambda m: lambda a: getattr(a, m)())(_m)
    for _cls in (Tensor, Value):
        add(OpInfo(f"{_cls.__name__}.{_m}", _op, _ref,
                   (lambda k: (lambda rng: [Sample((_away(rng, (2, 3)),)), Sample((_away(rng, ()),))])
                    if k is Tensor else (lambda rng: [Sample((float(_away(rng, ())),)) for _ in range(3)]))(_cls),
                   _method_errors(_cls, _m), kind="tensor" if _cls is Tensor else "value",
                   grad=True))

# -- reductions ---------------------------------------------------------------


def _reduction_samples(rng):
    x = rng.standard_normal((2, 3, 4))
    yield Sample((x,))
    yield Sample((x,), (1,))
    yield Sample((x,), ((0, 2),), {"keepdim": True})
    yield Sample((x,), (-1,), {"keepdim": False})
    yield Sample((rng.standard_normal(()),))


def _reduction_errors(fn, name):
    def errors():
        yield ErrorInput(lambda: fn(_t(2, 3), 2), ValueError, rf"{name}\(dim=2\) is out of range")
        yield ErrorInput(lambda: fn(_t(2, 3), "a"), TypeError, rf"{name}\(dim=...\)")
        yield ErrorInput(lambda: fn(_t(2, 3), (0, 0)), ValueError, rf"{name}\(dim=...\) names dimension 0 twice")
        yield ErrorInput(lambda: fn(_t(2, 3), 0, keepdim="yes"), TypeError, r"keepdim")
        yield ErrorInput(lambda: fn(_t(2, 3), (10**30, 1)), ValueError, rf"{name}\(dim=10{{30}}\) is out of range")
    return errors


def _sum_ref(x, dim=None, keepdim=False):
    return np.sum(x, axis=dim, keepdims=keepdim)


def _mean_ref(x, dim=None, keepdim=False):
    return np.mean(x, axis=dim, keepdims=keepdim)


add(OpInfo("Tensor.sum", lambda t, *a, **k: t.sum(*a, **k), _sum_ref, _reduction_samples,
           _reduction_errors(lambda t, *a, **k: t.sum(*a, **k), "sum")))
add(OpInfo("Tensor.mean", lambda t, *a, **k: t.mean(*a, **k), _mean_ref, _reduction_samples,
           _reduction_errors(lambda t, *a, **k: t.mean(*a, **k), "mean")))


def _mg_sum_samples(rng):
    yield from _reduction_samples(rng)


add(OpInfo("mg.sum[Tensor]", mg.sum, _sum_ref, _mg_sum_samples, _reduction_errors(mg.sum, "sum"),
           aliases=("mg.sum",)))
add(OpInfo("mg.mean[Tensor]", mg.mean, _mean_ref, _mg_sum_samples, _reduction_errors(mg.mean, "mean"),
           aliases=("mg.mean",)))
add(OpInfo("mg.sum[list of Tensors]", lambda *ts, **k: mg.sum(list(ts), **k),
           lambda *xs, start=0: start + sum(np.broadcast_arrays(*xs)),
           lambda rng: [Sample((rng.standard_normal((2, 3)), rng.standard_normal(3))),
                        Sample((rng.standard_normal(2), rng.standard_normal(2)), kwargs={"start": 1.5})],
           _extra(ErrorInput(lambda: mg.sum([_t(2), _t(3)]), ValueError, r"shapes \(2,\) and \(3,\)"),
                  ErrorInput(lambda: mg.sum([_t(2), "a"]), TypeError, r"unsupported operand.*'str'"),
                  ErrorInput(lambda: mg.sum([_t(2)], start="a"), TypeError, r"sum\(start=...\)"))))
add(OpInfo("mg.sum[Values]", lambda *vs, **k: mg.sum(list(vs), **k), lambda *xs, start=0: start + math.fsum(xs),
           lambda rng: [Sample(tuple(float(v) for v in rng.standard_normal(n))) for n in (1, 3, 7)]
           + [Sample((0.5, -1.5), kwargs={"start": 2.0})],
           _extra(ErrorInput(lambda: mg.sum(3), TypeError, r"sum\(values\)"),
                  ErrorInput(lambda: mg.sum([Value(1), "a"]), TypeError, r"sum\(values\)"),
                  ErrorInput(lambda: mg.sum([Value(1)], start="a"), TypeError, r"sum\(start=")),
           kind="value"))
add(OpInfo("mg.mean[Values]", lambda *vs: mg.mean(list(vs)), lambda *xs: math.fsum(xs) / len(xs),
           lambda rng: [Sample(tuple(float(v) for v in rng.standard_normal(n))) for n in (1, 3, 7)],
           _extra(ErrorInput(lambda: mg.mean([]), ValueError, r"mean\(values\) needs at least one"),
                  ErrorInput(lambda: mg.mean([Value(1), None]), TypeError, r"mean\(values\)"),
                  ErrorInput(lambda: mg.mean(5), TypeError, r"mean\(values\)")),
           kind="value"))
add(OpInfo("mg.dot", lambda *vs, **k: mg.dot(vs[:len(vs) // 2], vs[len(vs) // 2:], **k),
           lambda *xs, bias=None: float(np.dot(xs[:len(xs) // 2], xs[len(xs) // 2:])) + (bias or 0.0),
           lambda rng: [Sample(tuple(float(v) for v in rng.standard_normal(2 * n))) for n in (1, 3, 9)]
           + [Sample((1.5, -0.5, 0.25, 2.0), kwargs={"bias": 0.75})],
           _extra(ErrorInput(lambda: mg.dot([1.0], [1.0, 2.0]), ValueError, r"weights has 1 elements but inputs has 2"),
                  ErrorInput(lambda: mg.dot([Value(1)], ["a"]), TypeError, r"dot\(inputs\)"),
                  ErrorInput(lambda: mg.dot(["a"], [Value(1)]), TypeError, r"dot\(weights\)"),
                  ErrorInput(lambda: mg.dot([Value(1)], [Value(2)], bias="b"), TypeError, r"dot\(bias\)")),
           kind="value"))


def _extreme_ref(fn):
    def ref(x, dim=None, keepdim=False):
        return fn(x, axis=dim, keepdims=keepdim)
    return ref


def _extreme_samples(rng):
    # distinct values: no ties, so the gradient is defined everywhere
    x = rng.permutation(24).reshape(2, 3, 4) / 5.0 - 2.0
    yield Sample((x,))
    yield Sample((x,), (1,))
    yield Sample((x,), (-1,), {"keepdim": True})
    yield Sample((np.array(0.7),), (0,))


def _extreme_errors(fn, name):
    def errors():
        yield ErrorInput(lambda: fn(_t(2, 3), 5), ValueError, rf"{name}\(dim=5\) is out of range")
        yield ErrorInput(lambda: fn(_t(2, 3), 1.5), TypeError, rf"{name}\(dim=...\)")
        yield ErrorInput(lambda: fn(mg.zeros(0, 3)), ValueError, rf"{name}\(\): the tensor is empty")
        yield ErrorInput(lambda: fn(mg.zeros(0, 3), 0), ValueError, rf"{name}\(dim=0\): that dimension is empty")
        yield ErrorInput(lambda: fn(_t(2), 0, "x"), TypeError, r"keepdim")
    return errors


def _values_of(fn):
    def op(*a, **k):
        r = fn(*a, **k)
        return r.values if isinstance(r, tuple) else r
    return op


for _name, _np in (("max", np.max), ("min", np.min)):
    _meth = (lambda n: lambda t, *a, **k: getattr(t, n)(*a, **k))(_name)
    add(OpInfo(f"Tensor.{_name}", _values_of(_meth), _extreme_ref(_np), _extreme_samples,
               _extreme_errors(_meth, _name)))
    _top = getattr(mg, _name)
    add(OpInfo(f"mg.{_name}", _values_of(_top), _extreme_ref(_np), _extreme_samples,
               _chain(_extreme_errors(_top, _name),
                      _extra(ErrorInput(lambda f=_top: f([1.0, 2.0]), TypeError, rf"{_name}\(input\)")))))

# -- shape ops ----------------------------------------------------------------


def _shape_errors(*items):
    return _extra(*items)


_X234 = lambda rng: rng.standard_normal((2, 3, 4))  # noqa: E731

add(OpInfo("Tensor.reshape", lambda t, *s: t.reshape(*s), lambda x, *s: np.reshape(x, s[0] if len(s) == 1 else s),
           lambda rng: [Sample((_X234(rng),), (6, 4)), Sample((_X234(rng),), ((4, -1),)), Sample((_X234(rng),), (-1,)),
                        Sample((rng.standard_normal(()),), ((1, 1),))],
           _shape_errors(ErrorInput(lambda: _t(2, 3).reshape(4), ValueError, r"reshape\(shape\).*into \(4,\)"),
                         ErrorInput(lambda: _t(2, 3).reshape(2.5, 2), TypeError, r"reshape\(shape\) takes ints"),
                         ErrorInput(lambda: _t(2, 3).reshape("a"), TypeError, r"reshape\(shape\) takes ints"),
                         ErrorInput(lambda: _t(2, 3).reshape(-1, -1), ValueError, r"reshape\(shape\)"))))
add(OpInfo("Tensor.view", lambda t, *s: t.view(*s), lambda x, *s: np.reshape(x, s),
           lambda rng: [Sample((_X234(rng),), (3, 8)), Sample((_X234(rng),), (-1,))],
           _shape_errors(ErrorInput(lambda: _t(2, 3).view(5), ValueError, r"shape"),
                         ErrorInput(lambda: _t(2, 3).view(None), TypeError, r"shape\) takes ints"),
                         ErrorInput(lambda: _t(2, 3).view([2], [3]), TypeError, r"shape\) takes ints"))))
add(OpInfo("Tensor.flatten", lambda t, *a: t.flatten(*a),
           lambda x, s=0, e=-1: x.reshape(x.shape[:s] + (-1,) + x.shape[(e % x.ndim) + 1:]) if x.ndim else x.reshape(1),
           lambda rng: [Sample((_X234(rng),)), Sample((_X234(rng),), (1,)), Sample((_X234(rng),), (0, 1)),
                        Sample((rng.standard_normal(()),))],
           _shape_errors(ErrorInput(lambda: _t(2, 3).flatten(1, 0), ValueError, r"start_dim comes after end_dim"),
                         ErrorInput(lambda: _t(2, 3).flatten(5), ValueError, r"flatten\(start_dim=5\)"),
                         ErrorInput(lambda: _t(2, 3).flatten("a"), TypeError, r"flatten\(start_dim=...\)"))))
add(OpInfo("Tensor.unsqueeze", lambda t, d: t.unsqueeze(d), lambda x, d: np.expand_dims(x, d),
           lambda rng: [Sample((rng.standard_normal((2, 3)),), (0,)), Sample((rng.standard_normal((2, 3)),), (-1,)),
                        Sample((rng.standard_normal(()),), (0,))],
           _shape_errors(ErrorInput(lambda: _t(2, 3).unsqueeze(3), ValueError, r"unsqueeze\(dim=3\)"),
                         ErrorInput(lambda: _t(2, 3).unsqueeze(None), TypeError, r"unsqueeze\(dim=...\)"),
                         ErrorInput(lambda: _t(2, 3).unsqueeze(-4), ValueError, r"unsqueeze\(dim=-4\)"))))
add(OpInfo("Tensor.squeeze", lambda t, *d: t.squeeze(*d),
           lambda x, *d: np.squeeze(x, *d) if not d or x.shape[d[0]] == 1 else x,
           lambda rng: [Sample((rng.standard_normal((2, 1, 3)),)), Sample((rng.standard_normal((2, 1, 3)),), (1,)),
                        Sample((rng.standard_normal((2, 1, 3)),), (0,))],
           _shape_errors(ErrorInput(lambda: _t(2, 1).squeeze(2), ValueError, r"squeeze\(dim=2\)"),
                         ErrorInput(lambda: _t(2, 1).squeeze("1"), TypeError, r"squeeze\(dim=...\)"),
                         ErrorInput(lambda: _t(2, 1).squeeze(1.0), TypeError, r"squeeze\(dim=...\)"))))
add(OpInfo("Tensor.permute", lambda t, *d: t.permute(*d), lambda x, *d: np.transpose(x, d[0] if len(d) == 1 else d),
           lambda rng: [Sample((_X234(rng),), (2, 0, 1)), Sample((_X234(rng),), ((1, 2, 0),)),
                        Sample((_X234(rng),), (-1, 0, 1))],
           _shape_errors(ErrorInput(lambda: _t(2, 3).permute(0), ValueError, r"permute\(dims\).*needs 2 dims"),
                         ErrorInput(lambda: _t(2, 3).permute(0, 0), ValueError, r"permute\(dims\).*repeats"),
                         ErrorInput(lambda: _t(2, 3).permute(0, "a"), TypeError, r"permute\(dims\) takes ints"),
                         ErrorInput(lambda: _t(2, 3).permute(0, 2), ValueError, r"permute\(dim=2\)"))))
add(OpInfo("Tensor.transpose", lambda t, a, b: t.transpose(a, b), lambda x, a, b: np.swapaxes(x, a, b),
           lambda rng: [Sample((_X234(rng),), (0, 2)), Sample((rng.standard_normal((2, 3)),), (-1, 0))],
           _shape_errors(ErrorInput(lambda: _t(2, 3).transpose(0, 2), ValueError, r"transpose\(dim=2\)"),
                         ErrorInput(lambda: _t(2, 3).transpose("a", 1), TypeError, r"transpose\(dim=...\)"),
                         ErrorInput(lambda: _t(2, 3).transpose(0), TypeError, r"transpose\(\) takes"))))
add(OpInfo("Tensor.T", lambda t: t.T, lambda x: x.T,
           lambda rng: [Sample((_X234(rng),)), Sample((rng.standard_normal((2, 3)),)), Sample((rng.standard_normal(3),))],
           _extra(ErrorInput(lambda: Tensor.T.__get__("x"), TypeError, r"'T' for '.*Tensor' objects"),
                  ErrorInput(lambda: Tensor.T.__get__(None, None), TypeError, r"(__get__|None)"),
                  ErrorInput(lambda: setattr(_t(2), "T", 1), AttributeError, r"'T'"))))


def _getitem_samples(rng):
    x = rng.standard_normal((3, 4))
    yield Sample((x,), ((1, 2),))               # every dimension: a Value bridge
    yield Sample((x,), ((-1, 0),))
    yield Sample((x,), (1,))                    # a row
    yield Sample((x,), ((slice(None), slice(1, 3)),))
    yield Sample((x,), ((slice(None, None, 2), np.array([0, 3])),))
    yield Sample((x,), ((Ellipsis, None, 1),))
    yield Sample((x,), (np.array([2, 0, 2]),))   # repeated rows: gradients add up


add(OpInfo("Tensor.__getitem__", lambda t, k: t[k], lambda x, k: x[k], _getitem_samples,
           _extra(ErrorInput(lambda: _t(2, 3)[2, 0], IndexError, r"index 2 is out of bounds for dimension 0"),
                  ErrorInput(lambda: _t(2, 3)["a"], (TypeError, IndexError), r"Tensor index"),
                  ErrorInput(lambda: _t(2, 3)[10**30, 0], IndexError, r"index 10{30} is out of bounds for dimension 0"),
                  ErrorInput(lambda: _t(2, 3)[np.array([0.5])], TypeError, r"index arrays must hold integers"),
                  ErrorInput(lambda: _t(2, 3)[Value(1)], TypeError, r"Tensor index.*Value"))))

# -- joins ----------------------------------------------------------------------


def _join_errors(fn, name):
    def errors():
        yield ErrorInput(lambda: fn([]), ValueError, rf"{name}\(tensors\) needs at least one")
        yield ErrorInput(lambda: fn(_t(2)), TypeError, rf"{name}\(tensors\) takes a sequence")
        yield ErrorInput(lambda: fn([_t(2), "a"]), TypeError, rf"{name}\(tensors\): element 1")
        yield ErrorInput(lambda: fn([_t(2), _t(2)], dim=3), ValueError, rf"{name}\(dim=3\)")
    return errors


add(OpInfo("mg.stack", lambda *ts, **k: mg.stack(list(ts), **k),
           lambda *xs, dim=0: np.stack(xs, axis=dim),
           lambda rng: [Sample((rng.standard_normal((2, 3)), rng.standard_normal((2, 3)))),
                        Sample((rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)), kwargs={"dim": 1}),
                        Sample((rng.standard_normal(()), rng.standard_normal(())), kwargs={"dim": -1})],
           _chain(_join_errors(mg.stack, "stack"),
                  _extra(ErrorInput(lambda: mg.stack([_t(2), _t(3)]), ValueError, r"stack\(tensors\): element 1 has shape")))))
add(OpInfo("mg.stack[Values]", lambda *vs: mg.stack(list(vs)), lambda *xs: np.array(xs),
           lambda rng: [Sample(tuple(float(v) for v in rng.standard_normal(n))) for n in (1, 4)],
           _extra(ErrorInput(lambda: mg.stack([Value(1), 2.0]), TypeError, r"stack\(tensors\): element 1"),
                  ErrorInput(lambda: mg.stack([Value(1)], dim=1), ValueError, r"stack\(dim=1\)"),
                  ErrorInput(lambda: mg.stack(Value(1)), TypeError, r"stack\(tensors\)")),
           kind="value"))
for _name in ("concatenate", "cat"):
    _fn = getattr(mg, _name)
    add(OpInfo(f"mg.{_name}", (lambda f: lambda *ts, **k: f(list(ts), **k))(_fn),
               lambda *xs, dim=0: np.concatenate(xs, axis=dim),
               lambda rng: [Sample((rng.standard_normal((2, 3)), rng.standard_normal((1, 3)))),
                            Sample((rng.standard_normal((2, 3)), rng.standard_normal((2, 1))), kwargs={"dim": 1}),
                            Sample((rng.standard_normal(3), rng.standard_normal(2), rng.standard_normal(1)))],
               _chain(_join_errors(_fn, "concatenate"),
                      _extra(ErrorInput(lambda f=_fn: f([mg.tensor(1.0)]), ValueError, r"0-d tensors"),
                             ErrorInput(lambda f=_fn: f([_t(2, 3), _t(2, 2)]), ValueError, r"element 1 has shape")))))

# -- functional -----------------------------------------------------------------


for _name, _ref in (("softmax", _softmax), ("log_softmax", _log_softmax)):
    _fn = getattr(F, _name)

    def _sm_samples(rng):
        yield Sample((rng.standard_normal((2, 3)),), (1,))
        yield Sample((rng.standard_normal((2, 3, 4)),), (0,))
        yield Sample((rng.standard_normal(5),), (-1,))
    add(OpInfo(f"functional.{_name}", _fn, _ref, _sm_samples,
               _chain(_tensor_input_errors(_fn, _name, 0),
                      _extra(ErrorInput(lambda f=_fn: f(_t(2, 3), 2), ValueError, r"dim=2"),
                             ErrorInput(lambda f=_fn: f(_t(2, 3), None), TypeError, r"dim=...\)"))),
               aliases=(f"mg.{_name}",)))
    add(OpInfo(f"Tensor.{_name}", (lambda n: lambda t, d: getattr(t, n)(d))(_name), _ref, _sm_samples,
               _extra(ErrorInput(lambda n=_name: getattr(_t(2, 3), n)(2), ValueError, rf"{_name}\(dim=2\)"),
                      ErrorInput(lambda n=_name: getattr(_t(2, 3), n)("a"), TypeError, rf"{_name}\(dim=...\)"),
                      ErrorInput(lambda n=_name: getattr(_t(2, 3), n)(), TypeError, rf"{_name}\(\) takes"))))

add(OpInfo("functional.linear", F.linear,
           lambda x, w, b=None: x @ w.T + (0.0 if b is None else b),
           lambda rng: [Sample((rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2))),
                        Sample((rng.standard_normal(3), rng.standard_normal((2, 3)))),
                        Sample((rng.standard_normal((2, 2, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)))],
           _chain(_tensor_input_errors(F.linear, "linear", _t(2, 3)),
                  _extra(ErrorInput(lambda: F.linear(_t(4, 3), _t(3)), ValueError, r"linear\(weight\) must be 2-d"),
                         ErrorInput(lambda: F.linear(_t(4, 3), _t(2, 4)), ValueError, r"linear\(input\).*in_features"),
                         ErrorInput(lambda: F.linear(_t(4, 3), _t(2, 3), _t(3)), ValueError, r"linear\(bias\)"),
                         ErrorInput(lambda: F.linear(_t(4, 3), np.ones((2, 3))), TypeError, r"linear\(weight\)"))),
           aliases=("mg.linear",)))


def _class_samples(rng):
    yield Sample((rng.standard_normal((4, 3)),), (np.array([0, 2, 1, 2]),))
    yield Sample((rng.standard_normal((4, 3)),), (np.array([1, 1, 0, 2]),), {"reduction": "sum"})
    yield Sample((rng.standard_normal((3, 5)),), (np.array([4, 0, 3]),), {"reduction": "none"})
    yield Sample((rng.standard_normal(4),), (np.array(3),))


def _class_errors(fn, name):
    def errors():
        yield from _tensor_input_errors(fn, name, np.array([0]))()
        yield ErrorInput(lambda: fn(_t(2, 3), np.array([0, 3])), ValueError, rf"{name}\(target\): class index 3 is out of range")
        yield ErrorInput(lambda: fn(_t(2, 3), np.array([0.5, 1.0])), TypeError, rf"{name}\(target\) must hold integer")
        yield ErrorInput(lambda: fn(_t(2, 3), np.array([0, 1, 1])), ValueError, rf"{name}\(target\): shape \(3,\)")
        yield ErrorInput(lambda: fn(_t(2, 3), np.array([0, 1]), reduction="avg"), ValueError, rf"{name}\(reduction=")
        yield ErrorInput(lambda: fn(mg.tensor(1.0), np.array(0)), ValueError, rf"{name}\(input\) needs at least one dimension")
    return errors


add(OpInfo("functional.cross_entropy", F.cross_entropy, _ce_ref, _class_samples,
           _class_errors(F.cross_entropy, "cross_entropy"), aliases=("mg.cross_entropy",)))
add(OpInfo("functional.nll_loss", F.nll_loss, _nll_ref, _class_samples,
           _class_errors(F.nll_loss, "nll_loss"), aliases=("mg.nll_loss",)))


def _loss_samples(gen_x, gen_y):
    def samples(rng):
        yield Sample((gen_x(rng, (2, 3)),), (gen_y(rng, (2, 3)),))
        yield Sample((gen_x(rng, (4,)),), (gen_y(rng, (4,)),), {"reduction": "sum"})
        yield Sample((gen_x(rng, (2, 2)),), (gen_y(rng, (2, 2)),), {"reduction": "none"})
    return samples


def _loss_errors(fn, name, broadcasting):
    def errors():
        yield from _tensor_input_errors(fn, name, np.zeros(2))()
        yield ErrorInput(lambda: fn(_t(2, 3), np.zeros(2)), ValueError,
                         rf"{name}.*target shape \(2,\)")
        yield ErrorInput(lambda: fn(_t(2), np.zeros(2), reduction="all"), ValueError, rf"{name}\(reduction=")
        yield ErrorInput(lambda: fn(_t(2), "ab"), TypeError, rf"{name}\(target\)")
        yield ErrorInput(lambda: fn(_t(2), np.array([object(), object()])), TypeError, r"(target|dtype object)")
    return errors


def _p(rng, shape):
    return rng.uniform(0.1, 0.9, shape)


def _label(rng, shape):
    return rng.integers(0, 2, shape).astype(float)


def _bce_ref(p, y, reduction="mean", weight=None):
    losses = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return _reduce(losses if weight is None else losses * weight, reduction)


def _bcel_ref(x, y, reduction="mean", weight=None, pos_weight=None):
    pw = 1.0 if pos_weight is None else pos_weight
    losses = (1 - y) * x + (1 + (pw - 1) * y) * _softplus(-x)
    return _reduce(losses if weight is None else losses * weight, reduction)


add(OpInfo("functional.binary_cross_entropy", F.binary_cross_entropy, _bce_ref, _loss_samples(_p, _p),
           _chain(_loss_errors(F.binary_cross_entropy, "binary_cross_entropy", False),
                  _extra(ErrorInput(lambda: F.binary_cross_entropy(mg.tensor([0.5, 1.5]), np.zeros(2)), ValueError,
                                    r"binary_cross_entropy\(input\): all elements must be between 0 and 1"))),
           aliases=("mg.binary_cross_entropy",), nan="input outside [0, 1] (NaN included) is refused by design"))
add(OpInfo("functional.binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits, _bcel_ref,
           lambda rng: list(_loss_samples(_away, _label)(rng))
           + [Sample((_away(rng, (2, 3)),), (_label(rng, (2, 3)),), {"pos_weight": np.array([1.0, 2.0, 3.0])}),
              Sample((_away(rng, (3,)),), (_p(rng, (3,)),), {"weight": np.array([0.5, 1.0, 2.0])})],
           _chain(_loss_errors(F.binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits", False),
                  _extra(ErrorInput(lambda: F.binary_cross_entropy_with_logits(_t(2), np.zeros(2), weight=np.ones(3)),
                                    ValueError, r"binary_cross_entropy_with_logits\(weight\)"))),
           aliases=("mg.binary_cross_entropy_with_logits",)))
for _name, _ref in (("mse_loss", lambda x, y, reduction="mean": _reduce((x - y) ** 2, reduction)),
                    ("l1_loss", lambda x, y, reduction="mean": _reduce(np.abs(x - y), reduction)),
                    ("hinge_loss", lambda x, y, reduction="mean": _reduce(np.maximum(1 - x * y, 0), reduction))):
    _fn = getattr(F, _name)
    add(OpInfo(f"functional.{_name}", _fn, _ref,
               _loss_samples(_away, (lambda rng, s: np.sign(_away(rng, s))) if _name == "hinge_loss"
                             else (lambda rng, s: _away(rng, s) * 0.05)),
               _loss_errors(_fn, _name, True), aliases=(f"mg.{_name}",)))
add(OpInfo("functional.huber_loss", F.huber_loss,
           lambda x, y, reduction="mean", delta=1.0: _reduce(_huber(x - y, delta), reduction),
           lambda rng: list(_loss_samples(lambda r, s: 2 * _away(r, s), lambda r, s: 0.01 * _away(r, s))(rng))
           + [Sample((np.array([0.1, -3.0, 2.5]),), (np.array([0.0, 0.0, 0.4]),), {"delta": 0.5})],
           _chain(_loss_errors(F.huber_loss, "huber_loss", True),
                  _extra(ErrorInput(lambda: F.huber_loss(_t(2), np.zeros(2), delta=0), ValueError, r"huber_loss\(delta=")),
                  _extra(ErrorInput(lambda: F.huber_loss(_t(2), np.zeros(2), delta="1"), ValueError, r"huber_loss\(delta="))),
           aliases=("mg.huber_loss",)))


def _image_errors(fn, name, *rest, **kw):
    def errors():
        yield from _tensor_input_errors(fn, name, *rest, **kw)()
        yield ErrorInput(lambda: fn(_t(3, 4), *rest, **kw), ValueError, rf"{name}\(input\) must be 3-d")
        yield ErrorInput(lambda: fn(mg.zeros(1, 0, 4, 4), *rest, **kw), ValueError, rf"{name}\(input\) is empty")
    return errors


add(OpInfo("functional.conv2d", F.conv2d, _conv2d_ref,
           lambda rng: [Sample((rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3))),
                        Sample((rng.standard_normal((1, 4, 6, 5)), rng.standard_normal((2, 2, 2, 3))), (None,),
                               {"stride": 2, "padding": 1, "groups": 2}),
                        Sample((rng.standard_normal((2, 5, 5)), rng.standard_normal((1, 2, 2, 2))), (None,),
                               {"dilation": 2, "padding": (1, 0)})],
           _chain(_image_errors(F.conv2d, "conv2d", _t(1, 1, 2, 2)),
                  _extra(ErrorInput(lambda: F.conv2d(_t(1, 1, 4, 4), _t(1, 1, 2, 2), stride=0), ValueError, r"conv2d\(stride\) must be >= 1"),
                         ErrorInput(lambda: F.conv2d(_t(1, 1, 4, 4), _t(1, 1, 2, 2), padding=-1), ValueError, r"conv2d\(padding\)"),
                         ErrorInput(lambda: F.conv2d(_t(1, 1, 2, 2), _t(1, 1, 3, 3)), ValueError, r"conv2d\(weight\): kernel size"),
                         ErrorInput(lambda: F.conv2d(_t(1, 2, 4, 4), _t(1, 1, 2, 2)), ValueError, r"conv2d\(weight\)"),
                         ErrorInput(lambda: F.conv2d(_t(1, 1, 4, 4), _t(1, 1, 2, 2), stride=1.5), TypeError, r"conv2d\(stride\)"),
                         ErrorInput(lambda: F.conv2d(_t(1, 1, 4, 4), _t(1, 1, 2, 2), groups=0), ValueError, r"conv2d\(groups\)"),
                         ErrorInput(lambda: F.conv2d(_t(1, 1, 4, 4), _t(2, 1, 2, 2), _t(3)), ValueError, r"conv2d\(bias\)"))),
           aliases=("mg.conv2d",)))
add(OpInfo("functional.conv_transpose2d", F.conv_transpose2d, _conv_transpose2d_ref,
           lambda rng: [Sample((rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 3, 2, 2)), rng.standard_normal(3))),
                        Sample((rng.standard_normal((1, 4, 3, 2)), rng.standard_normal((4, 1, 3, 2))), (None,),
                               {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
                        Sample((rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 1, 2, 2))), (None,),
                               {"dilation": 2})],
           _chain(_image_errors(F.conv_transpose2d, "conv_transpose2d", _t(1, 1, 2, 2)),
                  _extra(ErrorInput(lambda: F.conv_transpose2d(_t(1, 1, 3, 3), _t(1, 1, 2, 2), stride=0), ValueError, r"conv_transpose2d\(stride\)"),
                         ErrorInput(lambda: F.conv_transpose2d(_t(1, 1, 3, 3), _t(1, 1, 2, 2), output_padding=1), ValueError, r"conv_transpose2d\(output_padding\)"),
                         ErrorInput(lambda: F.conv_transpose2d(_t(1, 1, 1, 1), _t(1, 1, 1, 1), padding=1), ValueError, r"conv_transpose2d\(padding\)"),
                         ErrorInput(lambda: F.conv_transpose2d(_t(1, 2, 3, 3), _t(1, 1, 2, 2)), ValueError, r"conv_transpose2d\(weight\)"))),
           aliases=("mg.conv_transpose2d",)))


def _pool_errors(fn, name):
    def errors():
        yield from _image_errors(fn, name, 2)()
        yield ErrorInput(lambda: fn(_t(1, 1, 4, 4), 0), ValueError, rf"{name}\(kernel_size\) must be >= 1")
        yield ErrorInput(lambda: fn(_t(1, 1, 2, 2), 3), ValueError, rf"{name}\(kernel_size\): kernel .* is larger")
        yield ErrorInput(lambda: fn(_t(1, 1, 4, 4), 2, -1), ValueError, rf"{name}\(stride\) must be >= 1")
        yield ErrorInput(lambda: fn(_t(1, 1, 4, 4), 2, 2, 2), ValueError, rf"{name}\(padding\)")
        yield ErrorInput(lambda: fn(_t(1, 1, 4, 4), "2"), TypeError, rf"{name}\(kernel_size\)")
        yield ErrorInput(lambda: fn(_t(1, 1, 4, 4), (2, 2, 2)), ValueError, rf"{name}\(kernel_size\)")
    return errors


def _pool_samples(rng):
    # a permutation: distinct values, so max has no ties
    yield Sample((rng.permutation(2 * 2 * 4 * 4).reshape(2, 2, 4, 4) / 10.0,), (2,))
    yield Sample((rng.permutation(30).reshape(1, 5, 6) / 10.0,), ((2, 3),), {"stride": 1, "padding": 1})
    yield Sample((rng.permutation(50).reshape(2, 1, 5, 5) / 10.0,), (3,), {"stride": 2})


add(OpInfo("functional.max_pool2d", F.max_pool2d, lambda x, k, stride=None, padding=0: _pool_ref(x, k, stride, padding),
           _pool_samples, _pool_errors(F.max_pool2d, "max_pool2d"), aliases=("mg.max_pool2d",)))
add(OpInfo("functional.avg_pool2d", F.avg_pool2d,
           lambda x, k, stride=None, padding=0, count_include_pad=True:
           _pool_ref(x, k, stride, padding, np.mean, 0.0, count_include_pad),
           lambda rng: list(_pool_samples(rng))
           + [Sample((rng.standard_normal((1, 2, 5, 5)),), (3,), {"padding": 1, "count_include_pad": False})],
           _chain(_pool_errors(F.avg_pool2d, "avg_pool2d"),
                  _extra(ErrorInput(lambda: F.avg_pool2d(_t(1, 1, 4, 4), 2, count_include_pad=None), TypeError,
                                    r"avg_pool2d\(count_include_pad\)"))),
           aliases=("mg.avg_pool2d",)))
add(OpInfo("functional.pad", F.pad, lambda x, p: np.pad(x, [(0, 0)] * (x.ndim - len(p) // 2)
                                                     + [(p[2 * i], p[2 * i + 1]) for i in reversed(range(len(p) // 2))]),
           lambda rng: [Sample((rng.standard_normal((2, 3)),), ((1, 2),)),
                        Sample((rng.standard_normal((1, 2, 3)),), ((0, 1, 2, 0),)),
                        Sample((rng.standard_normal((2, 2)),), ((1, 1, 1, 1),))],
           _chain(_tensor_input_errors(F.pad, "pad", (1, 1)),
                  _extra(ErrorInput(lambda: F.pad(_t(2, 3), (1,)), ValueError, r"pad\(pad\) must hold pairs"),
                         ErrorInput(lambda: F.pad(_t(2, 3), (1, -1)), ValueError, r"pad\(pad\) takes non-negative"),
                         ErrorInput(lambda: F.pad(_t(2, 3), (1, 1), value=2.0), ValueError, r"pad\(value=..."),
                         ErrorInput(lambda: F.pad(_t(2, 3), 1), TypeError, r"pad\(pad\)"))),
           aliases=("mg.pad",)))

# -- constructors -----------------------------------------------------------------


def _ctor_samples(rng):
    yield Sample((), (rng.standard_normal((2, 3)),))
    yield Sample((), ([[1, 2], [3, 4]],))                       # ints become float64
    yield Sample((), (np.array([True, False]),))
    yield Sample((), (2.5,))
    yield Sample((), (rng.standard_normal(6)[::2],))           # strided
    yield Sample((), (np.asfortranarray(rng.standard_normal((3, 2))),))
    yield Sample((), (np.zeros((0, 3)),))                      # empty tensors are allowed


def _ctor_errors(fn, where):
    def errors():
        yield ErrorInput(lambda: fn("abc"), TypeError, rf"{where} must hold real numbers")
        yield ErrorInput(lambda: fn(np.array([object(), 1.0], dtype=object)), TypeError, rf"{where} must hold real numbers.*object")
        yield ErrorInput(lambda: fn([[1.0, 2.0], [3.0]]), TypeError, rf"{where} must be array-like")
        yield ErrorInput(lambda: fn([Value(1.0)]), TypeError, rf"{where} holds Values")
        yield ErrorInput(lambda: fn(np.array([1 + 2j])), TypeError, rf"{where} must hold real numbers.*complex")
        yield ErrorInput(lambda: fn(None), TypeError, rf"{where}")
        yield ErrorInput(lambda: fn([1.0], requires_grad="yes"), TypeError, r"requires_grad")
    return errors


for _name, _fn, _where in (("mg.tensor", mg.tensor, r"tensor\(data\)"), ("mg.Tensor", mg.Tensor, r"Tensor\(data\)")):
    add(OpInfo(_name, _fn, lambda x: np.asarray(x, dtype=np.float64), _ctor_samples, _ctor_errors(_fn, _where),
               grad=False, nan=True))


def _shape_ctor_errors(fn, name):
    def errors():
        yield ErrorInput(lambda: fn(2, -1), ValueError, rf"{name}\(shape\): negative dimension")
        yield ErrorInput(lambda: fn(2.5), TypeError, rf"{name}\(shape\) takes ints")
        yield ErrorInput(lambda: fn("3"), TypeError, rf"{name}\(shape\) takes ints")
        yield ErrorInput(lambda: fn(2, requires_grad=None), TypeError, r"requires_grad")
    return errors


for _name, _ref in (("zeros", np.zeros), ("ones", np.ones)):
    add(OpInfo(f"mg.{_name}", getattr(mg, _name), (lambda r: lambda *s: r(s[0] if len(s) == 1 and isinstance(s[0], tuple) else s))(_ref),
               lambda rng: [Sample((), (2, 3)), Sample((), ((4,),)), Sample((), ()), Sample((), (0, 2))],
               _shape_ctor_errors(getattr(mg, _name), _name), grad=False, nan="takes a shape, no float input"))
add(OpInfo("mg.randn", mg.randn, lambda *s, seed=None: np.random.default_rng(seed).standard_normal(s),
           lambda rng: [Sample((), (2, 3), {"seed": 3}), Sample((), (5,), {"seed": 0}), Sample((), (), {"seed": 7})],
           _chain(_shape_ctor_errors(mg.randn, "randn"),
                  _extra(ErrorInput(lambda: mg.randn(2, seed="a"), (TypeError, ValueError), r"seed"))),
           grad=False, nan="takes a shape, no float input"))

# -- Tensor conversions and bookkeeping --------------------------------------------


def _backward_op(t, *grad):
    y = t * t
    y.backward(*grad)
    return t.grad


add(OpInfo("Tensor.backward", _backward_op, lambda x, *g: 2 * x * (g[0] if g else 1.0),
           lambda rng: [Sample((rng.standard_normal(()),)), Sample((rng.standard_normal((2, 3)),), (rng.standard_normal((2, 3)),)),
                        Sample((rng.standard_normal((1, 1)),))],
           _extra(ErrorInput(lambda: (_t(2, 3) * 2).backward(), RuntimeError, r"grad can be implicitly created only for scalar outputs"),
                  ErrorInput(lambda: (_t(2) * 2).backward(np.ones(3)), ValueError, r"backward\(grad\): shape \(3,\)"),
                  ErrorInput(lambda: (_t(2) * 2).backward("a"), TypeError, r"backward\(grad\)"),
                  ErrorInput(lambda: _t(2, rg=False).sum().backward(), RuntimeError, r"does not require grad")),
           grad=False))
add(OpInfo("Tensor.zero_grad", lambda t: (t.sum().backward(), t.zero_grad(), t.grad)[2], np.zeros_like,
           lambda rng: [Sample((rng.standard_normal((2, 3)),))], _method_errors(Tensor, "zero_grad"), grad=False,
           nan="the result is zeros whatever the data"))
add(OpInfo("Tensor.detach", lambda t: t.detach(), lambda x: x,
           lambda rng: [Sample((rng.standard_normal((2, 3)),)), Sample((rng.standard_normal(()),))],
           _method_errors(Tensor, "detach"), grad=False))
add(OpInfo("Tensor.requires_grad_", lambda t, *a: mg.tensor(t.data).requires_grad_(*a), lambda x, *a: x,
           lambda rng: [Sample((rng.standard_normal(3),)), Sample((rng.standard_normal(3),), (False,))],
           _extra(ErrorInput(lambda: _t(2).requires_grad_("x"), TypeError, r"requires_grad must be a bool"),
                  ErrorInput(lambda: (_t(2) * 2).requires_grad_(False), ValueError, r"requires_grad: only leaf"),
                  ErrorInput(lambda: _t(2).requires_grad_(None), TypeError, r"requires_grad must be a bool")),
           grad=False))
for _name, _ref in (("item", lambda x: float(x.reshape(-1)[0])), ("__float__", lambda x: float(x.reshape(-1)[0]))):
    add(OpInfo(f"Tensor.{_name}", (lambda n: lambda t: getattr(t, n)())(_name), _ref,
               lambda rng: [Sample((rng.standard_normal(()),)), Sample((rng.standard_normal((1, 1)),))],
               _chain(_extra(ErrorInput(lambda n=_name: getattr(_t(2), n)(), ValueError,
                                        r"item\(\): only a one-element tensor")),
                      _method_errors(Tensor, _name)),
               grad=False))
for _name, _ref in (("numpy", lambda x: x), ("tolist", lambda x: x), ("__array__", lambda x: x),
                    ("dim", lambda x: x.ndim), ("numel", lambda x: x.size)):
    add(OpInfo(f"Tensor.{_name}", (lambda n: lambda t: getattr(t, n)())(_name), _ref,
               lambda rng: [Sample((rng.standard_normal((2, 3)),)), Sample((rng.standard_normal(()),))],
               _method_errors(Tensor, _name) if _name != "__array__" else
               _extra(ErrorInput(lambda: _t(2).__array__(bogus=1), TypeError, r"bogus"),
                      ErrorInput(lambda: _t(2).__array__("not a dtype"), TypeError, r"(dtype|not a dtype)"),
                      ErrorInput(lambda: Tensor.__array__("x"), TypeError, r"'__array__' for '.*Tensor' objects")),
               grad=False, nan="returns metadata" if _name in ("dim", "numel") else True))
add(OpInfo("Tensor.__len__", lambda t: len(t), lambda x: len(x),
           lambda rng: [Sample((rng.standard_normal((2, 3)),)), Sample((rng.standard_normal(4),))],
           _extra(ErrorInput(lambda: len(mg.tensor(1.0)), TypeError, r"len\(\) of a 0-d tensor"),
                  ErrorInput(lambda: Tensor.__len__("x"), TypeError, r"'__len__' (for|requires a) '.*Tensor'"),
                  ErrorInput(lambda: _t(2).__len__(1), TypeError, r"expected 0 arguments, got 1")),
           grad=False, nan="returns metadata"))
add(OpInfo("Tensor.__iter__", lambda t: list(t), lambda x: list(x),
           lambda rng: [Sample((rng.standard_normal((2, 3)),)), Sample((rng.standard_normal(3),))],
           _extra(ErrorInput(lambda: iter(mg.tensor(1.0)), TypeError, r"iteration over a 0-d tensor"),
                  ErrorInput(lambda: Tensor.__iter__(3), TypeError, r"'__iter__' (for|requires a) '.*Tensor'"),
                  ErrorInput(lambda: _t(2).__iter__(1), TypeError, r"expected 0 arguments, got 1"))))

# -- Value ------------------------------------------------------------------------

add(OpInfo("Value.__float__", lambda v: float(v), lambda x: x,
           lambda rng: [Sample((float(rng.standard_normal()),))], _method_errors(Value, "__float__"),
           kind="value", grad=False))
add(OpInfo("Value.backward", lambda v, *g: ((v * v).backward(*g), v.grad)[1], lambda x, *g: 2 * x * (g[0] if g else 1.0),
           lambda rng: [Sample((float(rng.standard_normal()),)), Sample((0.5,), (3.0,))],
           _extra(ErrorInput(lambda: (Value(1) * 2).backward("a"), TypeError, r"backward\(grad=...\)"),
                  ErrorInput(lambda: (Value(1) * 2).backward(None), TypeError, r"backward\(grad=...\)"),
                  ErrorInput(lambda: Value(1, requires_grad=False).exp().backward(), RuntimeError, r"does not require grad")),
           kind="value", grad=False))
add(OpInfo("mg.Value", lambda *xs: Value(*xs), lambda x: x,
           lambda rng: [Sample((), (float(rng.standard_normal()),)), Sample((), (3,)), Sample((), (np.float32(0.5),))],
           _extra(ErrorInput(lambda: Value("1"), TypeError, r"Value\(data=...\)"),
                  ErrorInput(lambda: Value(None), TypeError, r"Value\(data=...\)"),
                  ErrorInput(lambda: Value(1.0, _children=(1,)), TypeError, r"Value\(_children=...\)"),
                  ErrorInput(lambda: Value(1.0, label=3), TypeError, r"label must be a str")),
           kind="value", grad=False))

# -- utilities: graph inspection, replay, checking ---------------------------------


def _graph_op(a, b):
    g = mg.Graph((a * b + a.exp()).tanh())
    g.forward()
    return g.root


add(OpInfo("mg.Graph", _graph_op, lambda x, y: np.tanh(x * y + np.exp(x)),
           lambda rng: [Sample((float(_away(rng, ())), float(_away(rng, ())))) for _ in range(3)],
           _extra(ErrorInput(lambda: mg.Graph(3), TypeError, r"Graph\(root\)"),
                  ErrorInput(lambda: mg.Graph(None), TypeError, r"Graph\(root\)"),
                  ErrorInput(lambda: mg.Graph(Value(1.0, requires_grad=False) * 2).backward(), RuntimeError,
                             r"root does not require grad"),
                  ErrorInput(lambda: mg.Graph(Value(1.0) * 2).backward("x"), TypeError, r"backward\(grad=...\)")),
           kind="value"))
add(OpInfo("mg.Graph[Tensor]", _graph_op, lambda x, y: np.tanh(x * y + np.exp(x)),
           lambda rng: [Sample((_away(rng, (2, 3)), _away(rng, (2, 3))))],
           _extra(ErrorInput(lambda: mg.Graph([Value(1)]), TypeError, r"Graph\(root\)"),
                  ErrorInput(lambda: mg.Graph("x"), TypeError, r"Graph\(root\)"),
                  ErrorInput(lambda: mg.Graph(mg.tensor(1.0)).backward(), RuntimeError, r"root does not require grad"))))


def _topo_op(a, b):
    c = a * b
    d = c + a
    order = mg.topological_order(d)
    assert order[-1] is d and order.index(c) < order.index(d)
    return [n.data for n in order]


add(OpInfo("mg.topological_order", _topo_op,
           lambda x, y: sorted([x, y, x * y, x * y + x], key=lambda v: 0),
           lambda rng: [Sample((1.5, -2.0)), Sample((0.5, 3.0))],
           _extra(ErrorInput(lambda: mg.topological_order(3), TypeError, r"root"),
                  ErrorInput(lambda: mg.topological_order(None), TypeError, r"root"),
                  ErrorInput(lambda: mg.topological_order(Value(1), True), TypeError, r"topological_order\(\) takes exactly 1 positional")),
           kind="value", grad=False, nan="inspects the graph"))


def _gradcheck_op(a):
    return float(mg.gradcheck(lambda x: (x * x).sum(), [a]))


add(OpInfo("mg.gradcheck", _gradcheck_op, lambda x: 1.0,
           lambda rng: [Sample((rng.standard_normal((2, 3)),))],
           _extra(ErrorInput(lambda: mg.gradcheck(lambda x: x, []), ValueError, r"gradcheck\(inputs\)"),
                  ErrorInput(lambda: mg.gradcheck(lambda x: 3.0, [Value(1)]), TypeError, r"gradcheck\(f\)"),
                  ErrorInput(lambda: mg.gradcheck(lambda x: x * x, [Value(1)], eps=-1), ValueError, r"eps"),
                  ErrorInput(lambda: mg.gradcheck(lambda x: (x * x).data * x, [Value(1.0)]), mg.GradcheckError, r"input 0")),
           grad=False, nan="checks gradients; NaN is reported as a mismatch"))


def _anomaly_op(a):
    with mg.detect_anomaly():
        assert mg.is_anomaly_enabled()
        out = (a * 2).sum()
        out.backward()
    assert not mg.is_anomaly_enabled()
    return a.grad


add(OpInfo("mg.detect_anomaly", _anomaly_op, lambda x: np.full_like(x, 2.0),
           lambda rng: [Sample((rng.standard_normal((2, 3)),))],
           _extra(ErrorInput(lambda: _anomaly_raise(lambda: mg.tensor([0.0], requires_grad=True).log()), FloatingPointError, r"'log'"),
                  ErrorInput(lambda: _anomaly_raise(lambda: Value(-1.0).sqrt()), FloatingPointError, r"'sqrt'"),
                  ErrorInput(lambda: _anomaly_raise(lambda: mg.tensor([1e300], requires_grad=True) * 1e300), FloatingPointError, r"'\*'")),
           aliases=("mg.is_anomaly_enabled",), grad=False, nan="raises on NaN by design"))


def _anomaly_raise(build):
    with mg.detect_anomaly():
        return build()


# -- nn ---------------------------------------------------------------------------


def _mlp_forward(xs, model):
    """The model's output computed with numpy from its parameters' values."""
    x = np.array(xs, dtype=float)
    layers = model.layers if isinstance(model, nn.MLP) else [model] if isinstance(model, nn.Layer) else None
    if layers is None:          # a Neuron
        act = float(np.dot([w.data for w in model.w], x)) + model.b.data
        return max(act, 0.0) if model.nonlin else act
    for layer in layers:
        out = []
        for n in layer.neurons:
            act = float(np.dot([w.data for w in n.w], x)) + n.b.data
            out.append(max(act, 0.0) if n.nonlin else act)
        x = np.array(out)
    return x[0] if len(x) == 1 else x


def _model(cls, *a, seed=0, **k):
    random.seed(seed)
    return cls(*a, **k)


def _nn_op(*xs_and_model):
    *xs, model = xs_and_model
    return model(list(xs))


def _nn_ref(*xs_and_model):
    *xs, model = xs_and_model
    return _mlp_forward(xs, model)


def _nn_errors(cls, name):
    def errors():
        yield ErrorInput(lambda: cls("3", *([] if cls is nn.Neuron else [[2]] if cls is nn.MLP else [2])), TypeError, r"nin")
        yield ErrorInput(lambda: cls(-1, *([] if cls is nn.Neuron else [[2]] if cls is nn.MLP else [2])), ValueError, r"nin")
        yield ErrorInput(lambda: _model(cls, 3, *([] if cls is nn.Neuron else [[2]] if cls is nn.MLP else [2]))([1.0, 2.0]),
                         ValueError, r"(inputs|weights has 3 elements but inputs has 2)")
        yield ErrorInput(lambda: _model(cls, 2, *([] if cls is nn.Neuron else [[2]] if cls is nn.MLP else [2]))(["a", 1.0]),
                         TypeError, r"dot\(inputs\)")
    return errors


add(OpInfo("nn.Neuron", _nn_op, _nn_ref,
           lambda rng: [Sample((0.5, -1.2, 2.0), (_model(nn.Neuron, 3, seed=1),)),
                        Sample((0.5, -1.2), (_model(nn.Neuron, 2, nonlin=False, seed=2),))],
           _nn_errors(nn.Neuron, "Neuron"), kind="value"))
add(OpInfo("nn.Layer", _nn_op, _nn_ref,
           lambda rng: [Sample((0.5, -1.2, 2.0), (_model(nn.Layer, 3, 4, seed=3),)),
                        Sample((0.3,), (_model(nn.Layer, 1, 1, nonlin=False, seed=4),))],
           _chain(_nn_errors(nn.Layer, "Layer"),
                  _extra(ErrorInput(lambda: nn.Layer(2, "4"), TypeError, r"nout"),
                         ErrorInput(lambda: nn.Layer(2, 0), ValueError, r"nout"))), kind="value"))
add(OpInfo("nn.MLP", _nn_op, _nn_ref,
           lambda rng: [Sample((0.5, -1.2, 2.0), (_model(nn.MLP, 3, [4, 4, 1], seed=5),)),
                        Sample((0.7, 0.1), (_model(nn.MLP, 2, [3, 2], seed=6),))],
           _chain(_nn_errors(nn.MLP, "MLP"),
                  _extra(ErrorInput(lambda: nn.MLP(2, 3), TypeError, r"nouts"),
                         ErrorInput(lambda: nn.MLP(2, [3, 0]), ValueError, r"nouts"))), kind="value"))


def _module_op(a):
    class Scale(nn.Module):
        def __init__(self, w):
            self.w = w

        def parameters(self):
            return [self.w]
    m = Scale(a)
    (a * 3.0).backward()
    before = a.grad
    m.zero_grad()
    return Value(before - a.grad)


add(OpInfo("nn.Module", _module_op, lambda x: 3.0,
           lambda rng: [Sample((1.5,))],
           _extra(ErrorInput(lambda: nn.Module().zero_grad(1), TypeError, r"zero_grad\(\) takes"),
                  ErrorInput(lambda: nn.Module().parameters(1), TypeError, r"parameters\(\) takes"),
                  ErrorInput(lambda: nn.Module(1), TypeError, r"(Module\(\) takes no arguments|takes no arguments)")),
           kind="value", grad=False, nan="bookkeeping base class"))


# -- PyTorch-style layers: a layer's output against the functional reference
# computed from its own parameters

def _layer(make, seed=0):
    mg.manual_seed(seed)
    return make()


def _layer_op(x, layer):
    return layer(x)


def _params(layer):
    return [np.array(p.data) for p in layer.parameters()]


def _linear_ref(x, layer):
    w, b = _params(layer)
    return x @ w.T + b


def _sequential_ref(x, layer):
    w1, b1, w2, b2 = _params(layer)
    return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2


_IMG = lambda rng: rng.standard_normal((2, 2, 6, 6))  # noqa: E731

add(OpInfo("nn.Linear", _layer_op, _linear_ref,
           lambda rng: [Sample((rng.standard_normal((4, 3)),), (_layer(lambda: nn.Linear(3, 5)),)),
                        Sample((rng.standard_normal(3),), (_layer(lambda: nn.Linear(3, 2), 1),))],
           _extra(ErrorInput(lambda: nn.Linear("3", 4), TypeError, r"in_features"),
                  ErrorInput(lambda: nn.Linear(-1, 4), ValueError, r"in_features"),
                  ErrorInput(lambda: nn.Linear(3, 4)(_t(2, 5)), ValueError, r"in_features"),
                  ErrorInput(lambda: nn.Linear(3, 4)("x"), TypeError, r"input"))))
add(OpInfo("nn.Conv2d", _layer_op,
           lambda x, layer: _conv2d_ref(x, *_params(layer), stride=layer.stride, padding=layer.padding),
           lambda rng: [Sample((_IMG(rng),), (_layer(lambda: nn.Conv2d(2, 3, 3, padding=1)),)),
                        Sample((_IMG(rng),), (_layer(lambda: nn.Conv2d(2, 4, 2, stride=2), 1),))],
           _extra(ErrorInput(lambda: nn.Conv2d("1", 2, 3), TypeError, r"in_channels"),
                  ErrorInput(lambda: nn.Conv2d(1, 2, 0), ValueError, r"kernel_size"),
                  ErrorInput(lambda: nn.Conv2d(1, 2, 3)(_t(1, 3, 5, 5)), ValueError, r"input channels"))))
add(OpInfo("nn.ConvTranspose2d", _layer_op,
           lambda x, layer: _conv_transpose2d_ref(x, *_params(layer), stride=layer.stride,
                                                  padding=layer.padding),
           lambda rng: [Sample((_IMG(rng),), (_layer(lambda: nn.ConvTranspose2d(2, 3, 3, stride=2)),))],
           _extra(ErrorInput(lambda: nn.ConvTranspose2d("1", 2, 3), TypeError, r"in_channels"),
                  ErrorInput(lambda: nn.ConvTranspose2d(1, 2, -1), ValueError, r"kernel_size"),
                  ErrorInput(lambda: nn.ConvTranspose2d(1, 2, 3)(_t(1, 3, 5, 5)), ValueError,
                             r"input channels"))))
add(OpInfo("nn.MaxPool2d", _layer_op, lambda x, layer: _pool_ref(x, 2),
           lambda rng: [Sample((_IMG(rng),), (nn.MaxPool2d(2),))],
           _extra(ErrorInput(lambda: nn.MaxPool2d(0), ValueError, r"kernel_size"),
                  ErrorInput(lambda: nn.MaxPool2d("2"), TypeError, r"kernel_size"),
                  ErrorInput(lambda: nn.MaxPool2d(2)(_t(3)), ValueError, r"max_pool2d\(input\)"))))
add(OpInfo("nn.AvgPool2d", _layer_op,
           lambda x, layer: _pool_ref(x, 2, reducer=np.mean, pad_value=0.0),
           lambda rng: [Sample((_IMG(rng),), (nn.AvgPool2d(2),))],
           _extra(ErrorInput(lambda: nn.AvgPool2d(0), ValueError, r"kernel_size"),
                  ErrorInput(lambda: nn.AvgPool2d("2"), TypeError, r"kernel_size"),
                  ErrorInput(lambda: nn.AvgPool2d(2)(_t(3)), ValueError, r"avg_pool2d\(input\)"))))
add(OpInfo("nn.Flatten", _layer_op, lambda x, layer: x.reshape(x.shape[0], -1),
           lambda rng: [Sample((_IMG(rng),), (nn.Flatten(),))],
           _extra(ErrorInput(lambda: nn.Flatten("a"), TypeError, r"start_dim"),
                  ErrorInput(lambda: nn.Flatten(5)(_t(2, 3)), ValueError, r"start_dim"),
                  ErrorInput(lambda: nn.Flatten()("x"), TypeError, r"Flatten\(input\)"))))
# the activation layers: one per op-table row with a PyTorch module name
for _name, _rows in optable.method_groups().items():
    if not _rows[0].torch_module:
        continue
    _cls, _fn = getattr(nn, _rows[0].torch_module), _rows[0].torch_function
    _gen = _row_domain(_rows)
    _parameters = optable.method_parameters(_rows, Tensor)
    _errors = [ErrorInput(lambda c=_cls: c()("x"), TypeError, _fn + r"\(input\)"),
               ErrorInput(lambda c=_cls: c()(None), TypeError, _fn + r"\(input\)"),
               ErrorInput(lambda c=_cls: c(*([1] * (len(inspect.signature(c).parameters) + 1))),
                          TypeError, r"takes (no|\d+) arguments?")]
    for _keyword, _default, _kind in _parameters:
        _errors.append(ErrorInput(lambda c=_cls, k=_keyword, bad="x" if _kind == "constant" else "bogus":
                                  c(**{k: bad}), (TypeError, ValueError), rf"{_keyword}="))
    add(OpInfo(f"nn.{_cls.__name__}", _layer_op,
               (lambda r: lambda x, layer: r(x, **layer._keywords()))(_row_reference(_rows, _rows[0].tensor_param)),
               (lambda c, g: lambda rng: [Sample((g(rng, (3, 4)),), (c(),))])(_cls, _gen),
               _extra(*_errors)))
add(OpInfo("nn.Sequential", _layer_op, _sequential_ref,
           lambda rng: [Sample((rng.standard_normal((4, 3)),),
                               (_layer(lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))),))],
           _extra(ErrorInput(lambda: nn.Sequential(1), TypeError, r"modules\[0\]"),
                  ErrorInput(lambda: nn.Sequential(nn.Linear(3, 4))(_t(2, 5)), ValueError, r"in_features"),
                  ErrorInput(lambda: nn.Sequential(nn.ReLU())("x"), TypeError, r"relu\(input\)"))))


# -- CNN layers: unpooling, dropout, batch normalisation ------------------------------


def _unpool_op(x, k):
    # the indices of a pooling of a fixed, tie-free image: the op is linear in x
    idx = F.max_pool2d(mg.tensor(np.arange(16.0).reshape(1, 1, 4, 4) % 7), k, return_indices=True)[1]
    return F.max_unpool2d(x, idx, k)


def _unpool_ref(x, k):
    idx = F.max_pool2d(mg.tensor(np.arange(16.0).reshape(1, 1, 4, 4) % 7), k, return_indices=True)[1]
    out = np.zeros((1, 1, 4, 4))
    out.reshape(-1)[idx.reshape(-1)] = x.reshape(-1)
    return out


add(OpInfo("functional.max_unpool2d", _unpool_op, _unpool_ref,
           lambda rng: [Sample((rng.standard_normal((1, 1, 2, 2)),), (2,))],
           _extra(ErrorInput(lambda: F.max_unpool2d(_t(1, 1, 2, 2), np.full((1, 1, 2, 2), 16), 2), ValueError,
                             r"max_unpool2d\(indices\): index 16"),
                  ErrorInput(lambda: F.max_unpool2d(_t(1, 1, 2, 2), np.zeros((1, 1, 2)), 2), ValueError,
                             r"max_unpool2d\(indices\): shape"),
                  ErrorInput(lambda: F.max_unpool2d("x", np.zeros((1, 1, 2, 2)), 2), TypeError,
                             r"max_unpool2d\(input\)"),
                  ErrorInput(lambda: F.max_unpool2d(_t(1, 1, 2, 2), np.zeros((1, 1, 2, 2)), 0), ValueError,
                             r"max_unpool2d\(kernel_size\)")),
           aliases=("mg.max_unpool2d",)))


def _seeded_dropout(x, p, **kw):
    mg.manual_seed(0)                   # the same mask on every call (gradcheck calls again)
    return F.dropout(x, p, **kw)


def _dropout_ref(x, p, training=True):
    if not training:
        return x
    return x * (np.random.default_rng(0).random(x.shape) >= p) / (1 - p)


add(OpInfo("functional.dropout", _seeded_dropout, _dropout_ref,
           lambda rng: [Sample((rng.standard_normal((4, 5)),), (0.3,)), Sample((rng.standard_normal(6),), (0.5,)),
                        Sample((rng.standard_normal((2, 3)),), (0.5,), {"training": False})],
           _extra(ErrorInput(lambda: F.dropout(_t(2), 1.5), ValueError, r"dropout\(p\)"),
                  ErrorInput(lambda: F.dropout(_t(2), "a"), ValueError, r"dropout\(p\)"),
                  ErrorInput(lambda: F.dropout(_t(2), 0.5, training=None), TypeError, r"dropout\(training\)"),
                  ErrorInput(lambda: F.dropout([1.0], 0.5), TypeError, r"dropout\(input\)")),
           aliases=("mg.dropout",)))


def _bn_ref(x, w=None, b=None, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    if w is not None:
        out = out * w.reshape(shape) + b.reshape(shape)
    return out


add(OpInfo("functional.batch_norm",
           lambda x, w, b: F.batch_norm(x, np.zeros(x.shape[1]), np.ones(x.shape[1]), w, b, training=True),
           _bn_ref,
           lambda rng: [Sample((rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(3))),
                        Sample((rng.standard_normal((2, 2, 3, 2)), rng.standard_normal(2), rng.standard_normal(2)))],
           _extra(ErrorInput(lambda: F.batch_norm(_t(3), None, None, training=True), ValueError, r"batch_norm\(input\)"),
                  ErrorInput(lambda: F.batch_norm(_t(1, 2), None, None, training=True), ValueError,
                             r"batch_norm\(input\): expected more than 1 value"),
                  ErrorInput(lambda: F.batch_norm(_t(2, 2), np.zeros(3), np.ones(2)), TypeError, r"batch_norm\(running_mean\)"),
                  ErrorInput(lambda: F.batch_norm(_t(2, 2), None, None, _t(3), training=True), TypeError,
                             r"batch_norm\(weight\)")),
           aliases=("mg.batch_norm",)))


def _dropout_layer_op(x, layer):
    mg.manual_seed(0)
    return layer(x)


add(OpInfo("nn.Dropout", _dropout_layer_op, lambda x, layer: _dropout_ref(x, layer.p, layer.training),
           lambda rng: [Sample((rng.standard_normal((4, 5)),), (nn.Dropout(0.25),)),
                        Sample((rng.standard_normal((4, 5)),), (nn.Dropout(0.25).eval(),))],
           _extra(ErrorInput(lambda: nn.Dropout(-0.5), ValueError, r"p must be a probability"),
                  ErrorInput(lambda: nn.Dropout(0.5, inplace="yes"), TypeError, r"inplace"),
                  ErrorInput(lambda: nn.Dropout()("x"), TypeError, r"dropout\(input\)"))))
for _cls, _shape in ((nn.BatchNorm1d, (4, 3)), (nn.BatchNorm2d, (3, 3, 2, 2))):
    add(OpInfo(f"nn.{_cls.__name__}", _layer_op, lambda x, layer: _bn_ref(x, *_params(layer)),
               (lambda c, s: lambda rng: [Sample((rng.standard_normal(s),), (_layer(lambda: c(3)),))])(_cls, _shape),
               (lambda c: _extra(ErrorInput(lambda: c(0), ValueError, r"num_features"),
                                 ErrorInput(lambda: c(3, eps=-1.0), ValueError, r"eps"),
                                 ErrorInput(lambda: c(3, momentum="a"), TypeError, r"momentum"),
                                 ErrorInput(lambda: c(3)(_t(2, 4, 2, 2)), ValueError, r"input")))(_cls)))


# ---------------------------------------------------------------------------
# The public API this registry must cover

# The second-order column: entries whose ops have no differentiable backward
# rule (graph rule) yet, with the reason ({name: why}); every other
# differentiable entry passes mg.gradgradcheck (tests/test_opinfo.py checks
# both ways).  Empty: every op has its graph rule.
_SECOND_ORDER_NOT_YET = {}
for _entry in OPS:
    if _entry.name in _SECOND_ORDER_NOT_YET:
        _entry.gradgrad = _SECOND_ORDER_NOT_YET[_entry.name]

# Public names that are not ops, with the reason.

# -- PyTorch's names: top-level functions of the table's rows, factories, dtypes,
#    conversions, where, argmax/argmin, Parameter and the loss modules
#    (tests/test_torch_surface.py and tests/test_dtypes.py check them against torch)

def _top_level_errors(fn, name, *rest):
    def errors():
        for bad in ("x", [1.0, 2.0], None):
            yield ErrorInput(lambda bad=bad: fn(bad, *rest), TypeError,
                             rf"{name}\(input\) (must be|takes) a Tensor")
    return errors


for _name, _rows in optable.method_groups().items():
    if _rows[0].torch_function == _name:
        continue                          # mg.<name> is functional's function (its entry above)
    _gen = _row_domain(_rows)
    add(OpInfo(f"mg.{_name}", getattr(mg, _name), _row_reference(_rows, _rows[0].tensor_param),
               _row_samples(_rows, Tensor, _gen), _top_level_errors(getattr(mg, _name), _name)))

for _name, (_sym, _ref, _ga, _gb) in (("add", _BINOPS["__add__"]), ("sub", _BINOPS["__sub__"]),
                                      ("mul", _BINOPS["__mul__"]), ("div", _BINOPS["__truediv__"]),
                                      ("pow", _BINOPS["__pow__"])):
    _fn = getattr(mg, _name)
    add(OpInfo(f"mg.{_name}", _fn, _ref, _binary_samples(_ga, _gb),
               _extra(ErrorInput(lambda f=_fn: f(1.0, 2.0), TypeError, r"one of them must be a Tensor"),
                      ErrorInput(lambda f=_fn: f(_t(2, 3), _t(4)), ValueError, r"cannot be broadcast"),
                      ErrorInput(lambda f=_fn: f(_t(2), None), TypeError, r"unsupported operand"),
                      ErrorInput(lambda f=_fn: f(_t(2)), TypeError, r"missing")),
               broadcast=_binary_broadcast(_ga, _gb)))
add(OpInfo("Tensor.pow", lambda a, b: a.pow(b), np.power, _binary_samples(_pos, _away),
           _extra(ErrorInput(lambda: _t(2).pow("a"), TypeError, r"pow\(exponent\) takes a Tensor"),
                  ErrorInput(lambda: _t(2).pow(None), TypeError, r"pow\(exponent\)"),
                  ErrorInput(lambda: _t(2, 3).pow(_t(4)), ValueError, r"pow: shapes \(2, 3\) and \(4,\)")),
           broadcast=_binary_broadcast(_pos, _away)))


def _where_samples(rng):
    for sa, sb in (((3,), (3,)), ((2, 3), (3,)), ((2, 3), ()), ((2, 1), (1, 3))):
        yield Sample((_away(rng, sa), _away(rng, sb)))


def _where_errors(fn, operand="input"):
    def errors():
        yield ErrorInput(lambda: fn(mg.tensor([1.0, 0.0]), _t(2), _t(2)), TypeError, r"where\(condition\) must hold bools")
        yield ErrorInput(lambda: fn("yes", _t(2), _t(2)), TypeError, r"where\(condition\) must be a bool tensor")
        yield ErrorInput(lambda: fn(mg.tensor([True]), "a", _t(2)), TypeError, rf"where\({operand}\)")
        yield ErrorInput(lambda: fn(mg.tensor([True, False, True]), _t(2), _t(2)), ValueError, r"where: shapes")
    return errors


add(OpInfo("mg.where", lambda a, b: mg.where(a > 0, a, b), lambda x, y: np.where(x > 0, x, y), _where_samples,
           _where_errors(mg.where), broadcast=_where_samples,
           nan="the condition (x > 0) is False at NaN: the other operand is taken, as numpy's and torch's where"))
add(OpInfo("Tensor.where", lambda a, b: a.where(b < 0, b), lambda x, y: np.where(y < 0, x, y), _where_samples,
           _where_errors(lambda c, a, b: a.where(c, b) if isinstance(a, Tensor) else _t(2).where(c, a), "other"),
           nan="NaN in the taken operand only"))


def _arg_ref(pick):
    def ref(x, dim=None, keepdim=False):
        x = np.asarray(x)
        if dim is None:
            r = pick(x)
            return np.reshape(r, (1,) * x.ndim) if keepdim else r
        return np.zeros(()) if x.ndim == 0 else pick(x, axis=dim, keepdims=keepdim)
    return ref


def _arg_errors(fn, name):
    def errors():
        yield ErrorInput(lambda: fn(mg.zeros(0)), ValueError, rf"{name}\(\): the tensor is empty")
        yield ErrorInput(lambda: fn(mg.zeros(2, 0), 1), ValueError, rf"{name}\(dim=1\): that dimension is empty")
        yield ErrorInput(lambda: fn(_t(2, 3), 5), ValueError, rf"{name}\(dim=5\) is out of range")
        yield ErrorInput(lambda: fn(_t(2), 0, "x"), TypeError, r"keepdim")
    return errors


for _name, _np in (("argmax", np.argmax), ("argmin", np.argmin)):
    _meth = (lambda n: lambda t, *a, **k: getattr(t, n)(*a, **k))(_name)
    add(OpInfo(f"Tensor.{_name}", _meth, _arg_ref(_np), _extreme_samples, _arg_errors(_meth, _name), grad=False,
               nan="an index, not a float: the index of the first NaN"))
    add(OpInfo(f"mg.{_name}", getattr(mg, _name), _arg_ref(_np), _extreme_samples,
               _chain(_arg_errors(getattr(mg, _name), _name),
                      _extra(ErrorInput(lambda f=getattr(mg, _name): f([1.0]), TypeError, rf"{_name}\(input\)"))),
               grad=False, nan="an index, not a float: the index of the first NaN"))

add(OpInfo("mg.flatten", lambda t, *a: mg.flatten(t, *a),
           lambda x, s=0, e=-1: x.reshape(x.shape[:s] + (-1,) + x.shape[(e % x.ndim) + 1:]) if x.ndim else x.reshape(1),
           lambda rng: [Sample((_X234(rng),)), Sample((_X234(rng),), (1,)), Sample((rng.standard_normal(()),))],
           _extra(ErrorInput(lambda: mg.flatten(_t(2, 3), 1, 0), ValueError, r"start_dim comes after end_dim"),
                  ErrorInput(lambda: mg.flatten([1.0]), TypeError, r"flatten\(input\) takes a Tensor"),
                  ErrorInput(lambda: mg.flatten(_t(2, 3), "a"), TypeError, r"flatten\(start_dim=...\)"))))
add(OpInfo("Tensor.clone", lambda t: t.clone(), lambda x: x,
           lambda rng: [Sample((rng.standard_normal((2, 3)),)), Sample((rng.standard_normal(()),))],
           _method_errors(Tensor, "clone")))

# dtype conversions: new leaves, cut from the graph
for _name, _ref, _nan in (("long", np.trunc, "NaN has no integer value (a ValueError)"), ("double", lambda x: x, True),
                          ("float", lambda x: x, True), ("bool", lambda x: x != 0, "bool of NaN is True")):
    add(OpInfo(f"Tensor.{_name}", (lambda n: lambda t: getattr(t, n)())(_name), _ref,
               lambda rng: [Sample((rng.standard_normal((2, 3)) * 3,)), Sample((np.array(2.7),)),
                            Sample((np.array([0.0, -0.0, 1.5]),))],
               _method_errors(Tensor, _name), grad=False, nan=_nan))
for _name, _ref in (("__int__", lambda x: np.trunc(x).reshape(())), ("__bool__", lambda x: (x != 0).reshape(())),
                    ("__index__", lambda x: np.trunc(x).reshape(()))):
    _fn = {"__int__": int, "__bool__": bool, "__index__": lambda t: t.long().__index__()}[_name]
    add(OpInfo(f"Tensor.{_name}", (lambda f: lambda t: f(t))(_fn), _ref,
               lambda rng: [Sample((np.array(2.7),)), Sample((np.array([-1.5]),)), Sample((np.array([[3.0]]),))],
               _extra(ErrorInput(lambda n=_name: getattr(_t(2), n)(), (ValueError, TypeError, RuntimeError),
                                 r"(only a one-element|single element|more than one value)"),
                      ErrorInput(lambda n=_name: getattr(Tensor, n)("x"), TypeError, rf"'{_name}' (for|requires a) '.*Tensor'"),
                      ErrorInput(lambda n=_name: getattr(_t(1), n)(1), TypeError, r"expected 0 arguments, got 1")),
               grad=False, nan="a Python int or bool: NaN has none (a ValueError)" if _name != "__bool__"
               else "bool of NaN is True"))


def _factory(name, op, ref, samples, *errors, nan="takes a shape or numbers, no float input"):
    add(OpInfo(f"mg.{name}", op, ref, samples, _extra(*errors), grad=False, nan=nan))


_factory("arange", mg.arange, lambda *a, **k: np.arange(*a),
         lambda rng: [Sample((), (5,)), Sample((), (2, 9, 3)), Sample((), (0, 1, 0.25)), Sample((), (5, 0, -2))],
         ErrorInput(lambda: mg.arange(0, 5, 0), ValueError, r"arange\(step\) must not be zero"),
         ErrorInput(lambda: mg.arange(5, 0), ValueError, r"inconsistent with step sign"),
         ErrorInput(lambda: mg.arange("5"), TypeError, r"arange\(end\) takes a number"))
_factory("linspace", mg.linspace, lambda a, b, n: np.linspace(a, b, n),
         lambda rng: [Sample((), (0, 1, 5)), Sample((), (-2.5, 3, 1)), Sample((), (1, 0, 0))],
         ErrorInput(lambda: mg.linspace(0, 1, 2.5), TypeError, r"linspace\(steps\) takes an int"),
         ErrorInput(lambda: mg.linspace(0, 1, -1), ValueError, r"linspace\(steps\) must be non-negative"),
         ErrorInput(lambda: mg.linspace(None, 1, 2), TypeError, r"linspace\(start\) takes a number"))
_factory("full", mg.full, lambda size, v: np.full(size, v),
         lambda rng: [Sample((), ((2, 3), 7)), Sample((), ((4,), -1.5)), Sample((), ((), 2.0))],
         ErrorInput(lambda: mg.full((2,), "x"), TypeError, r"full\(fill_value\) takes a number"),
         ErrorInput(lambda: mg.full((-1,), 1), ValueError, r"full\(size\): negative dimension"),
         ErrorInput(lambda: mg.full((2.5,), 1), TypeError, r"full\(size\) takes ints"),
         nan="its first argument is the size (a NaN fill value gives NaNs: tests/test_torch_surface.py)")
_factory("eye", mg.eye, lambda n, m=None: np.eye(n, m),
         lambda rng: [Sample((), (3,)), Sample((), (2, 4)), Sample((), (0,))],
         ErrorInput(lambda: mg.eye(2.5), TypeError, r"eye\(size\) takes ints"),
         ErrorInput(lambda: mg.eye(-1), ValueError, r"eye\(size\): negative dimension"),
         ErrorInput(lambda: mg.eye(2, "3"), TypeError, r"eye\(size\) takes ints"))
_factory("empty", mg.empty, lambda *s: np.zeros(s[0] if len(s) == 1 and isinstance(s[0], tuple) else s),
         lambda rng: [Sample((), (2, 3)), Sample((), ((4,),)), Sample((), ())],
         ErrorInput(lambda: mg.empty(-1), ValueError, r"empty\(size\): negative dimension"),
         ErrorInput(lambda: mg.empty("2"), TypeError, r"empty\(size\) takes ints"),
         ErrorInput(lambda: mg.empty(2, dtype=mg.float32), ValueError, r"empty\(dtype=float32\)"))
_factory("rand", lambda *s: (mg.manual_seed(5), mg.rand(*s))[1], lambda *s: np.random.default_rng(5).random(s),
         lambda rng: [Sample((), (2, 3)), Sample((), (4,)), Sample((), ())],
         ErrorInput(lambda: mg.rand(-1), ValueError, r"rand\(size\): negative dimension"),
         ErrorInput(lambda: mg.rand(2.0), TypeError, r"rand\(size\) takes ints"),
         ErrorInput(lambda: mg.rand(2, requires_grad="x"), TypeError, r"requires_grad"))
_factory("randint", lambda *a: (mg.manual_seed(5), mg.randint(*a))[1],
         lambda lo, hi, size: np.random.default_rng(5).integers(lo, hi, size=size),
         lambda rng: [Sample((), (0, 10, (2, 3))), Sample((), (-3, 3, (5,)))],
         ErrorInput(lambda: mg.randint(5, 5, (2,)), ValueError, r"randint: low \(5\) must be smaller"),
         ErrorInput(lambda: mg.randint(0, 5), TypeError, r"randint\(size\) is required"),
         ErrorInput(lambda: mg.randint(0.5, 5, (2,)), TypeError, r"randint\(low\) takes an int"))
for _name, _ref in (("zeros_like", np.zeros_like), ("ones_like", np.ones_like),
                    ("full_like", lambda x, v=None: np.full_like(x, v)), ("from_numpy", lambda x: x)):
    _fn = getattr(mg, _name)
    _rest = (3.5,) if _name == "full_like" else ()
    _factory(_name, _fn, _ref,
             (lambda rest: lambda rng: [Sample((), (rng.standard_normal((2, 3)),) + rest),
                                        Sample((), (rng.standard_normal(()),) + rest)])(_rest),
             ErrorInput(lambda f=_fn, r=_rest: f([1.0, 2.0], *r), TypeError, rf"{_name}\(\w+\) (must be|takes) a"),
             ErrorInput(lambda f=_fn, r=_rest: f(None, *r), TypeError, rf"{_name}\(\w+\)"),
             ErrorInput(lambda f=_fn, r=_rest: f(np.array(["a"]), *r), TypeError, r"(must hold real numbers|fill_value)"),
             nan=True if _name == "from_numpy" else "the result does not depend on the data")

# nn.Parameter and the loss modules
add(OpInfo("nn.Parameter", lambda t: nn.Parameter(t), lambda x: x,
           lambda rng: [Sample((rng.standard_normal((2, 3)),)), Sample((rng.standard_normal(()),))],
           _extra(ErrorInput(lambda: nn.Parameter("abc"), TypeError, r"Tensor\(data\) must hold real numbers"),
                  ErrorInput(lambda: nn.Parameter([1.0], requires_grad="x"), TypeError, r"requires_grad"),
                  ErrorInput(lambda: nn.Parameter([Value(1.0)]), TypeError, r"holds Values")),
           grad=False))


def _loss_module(cls):
    return lambda x, target, **k: cls(**k)(x, target)


def _loss_module_errors(cls, fname):
    def errors():
        yield ErrorInput(lambda: cls(reduction="avg"), ValueError, rf"{cls.__name__}\(reduction=...\)")
        yield ErrorInput(lambda: cls(bogus=1), TypeError, rf"{cls.__name__}\(\): .*bogus")
        yield ErrorInput(lambda: cls()("x", np.zeros(2)), TypeError, rf"{fname}\(input\) must be a Tensor")
    return errors


for _cls_name, _fname, _ref, _samples, _nan in (
        ("MSELoss", "mse_loss", lambda x, y, reduction="mean": _reduce((x - y) ** 2, reduction),
         _loss_samples(_away, _away), True),
        ("L1Loss", "l1_loss", lambda x, y, reduction="mean": _reduce(np.abs(x - y), reduction),
         _loss_samples(_away, lambda r, s: _away(r, s) * 0.05), True),
        ("HuberLoss", "huber_loss", lambda x, y, reduction="mean", delta=1.0: _reduce(_huber(x - y, delta), reduction),
         _loss_samples(lambda r, s: 2 * _away(r, s), lambda r, s: 0.01 * _away(r, s)), True),
        ("BCELoss", "binary_cross_entropy", _bce_ref, _loss_samples(_p, _p),
         "input outside [0, 1] (NaN included) is refused by design"),
        ("BCEWithLogitsLoss", "binary_cross_entropy_with_logits", _bcel_ref, _loss_samples(_away, _label), True),
        ("CrossEntropyLoss", "cross_entropy", _ce_ref, _class_samples, True),
        ("NLLLoss", "nll_loss", _nll_ref, _class_samples, True)):
    _cls = getattr(nn, _cls_name)
    add(OpInfo(f"nn.{_cls_name}", _loss_module(_cls), _ref, _samples, _loss_module_errors(_cls, _fname), nan=_nan))


NOT_OPS = {
    **{f"mg.{n}": "dtype name (tests/test_dtypes.py)" for n in ("float64", "double", "int64", "long", "float32")},
    "mg.Size": "the shape type of Tensor.size() (tests/test_torch_surface.py)",
    "mg.GradcheckError": "exception class",
    "mg.grad": "gradients of a graph, not an op (tests/test_higher_order.py)",
    "mg.gradgradcheck": "checking tool, not an op (tests/test_higher_order.py, test_opinfo.py)",
    "mg.functional": "module",
    "mg.explain": "graph tool, not an op (tests/test_explain.py)",
    "mg.check": "marking tool, not an op (tests/test_check.py)",
    "mg.CheckReport": "marking tool's report class, not an op (tests/test_check.py)",
    "mg.to_dot": "graph tool, not an op (tests/test_explain.py)",
    "mg.draw": "graph tool, not an op (tests/test_explain.py)",
    "mg.manual_seed": "random-number seeding (tests/test_nn.py)",
    **{f"mg.{n}": "memory pool control, not an op (tests/test_alloc.py)" for n in
       ("empty_cache", "set_cache_limit", "cache_info")},
    **{f"mg.{n}": "attribution method, not an op (tests/test_attribution.py)" for n in
       ("shapley_values", "shapley_orders", "shap_values", "shap_sample", "integrated_gradients",
        "gradient_x_input")},
    "nn.manual_seed": "random-number seeding (tests/test_nn.py)",
    "nn.default_generator": "random-number generator accessor (tests/test_nn.py)",
    **{f"Tensor.{n}": "metadata/buffer property" for n in
       ("data", "grad", "requires_grad", "is_leaf", "shape", "ndim", "size", "dtype", "label")},
    **{f"Value.{n}": "metadata/buffer property" for n in ("data", "grad", "requires_grad", "label")},
    **{f"{c}.grad_fn": "graph view, not an op (tests/test_grad_fn.py)" for c in ("Tensor", "Value")},
    **{f"mg.{n}": "grad mode, not an op (tests/test_grad_mode.py)" for n in
       ("no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled")},
}

# Dunders that belong to the object protocol rather than to the op set.
_PROTOCOL = {
    "__class__", "__delattr__", "__dir__", "__doc__", "__eq__", "__format__", "__ge__",
    "__getattribute__", "__getstate__", "__gt__", "__hash__", "__init__", "__init_subclass__",
    "__le__", "__lt__", "__ne__", "__new__", "__pyx_vtable__", "__reduce__", "__reduce_cython__",
    "__reduce_ex__", "__repr__", "__setattr__", "__setstate__", "__setstate_cython__", "__sizeof__",
    "__str__", "__subclasshook__", "__array_ufunc__", "__module__", "__dict__", "__weakref__",
    "__slotnames__", "__annotations__", "__static_attributes__", "__firstlineno__",
}


def public_api():
    """Every public op name of the package as it is now."""
    names = set()
    for n in mg.__all__:
        names.add(f"mg.{n}")
    for n in F.__all__:
        if getattr(F, n) is not getattr(mg, n, None):
            names.add(f"functional.{n}")
    for cls in (Tensor, Value):
        for n in dir(cls):
            if n.startswith("__") and n.endswith("__"):
                if n not in _PROTOCOL:
                    names.add(f"{cls.__name__}.{n}")
            elif not n.startswith("_"):
                names.add(f"{cls.__name__}.{n}")
    for n in getattr(nn, "__all__", [n for n in dir(nn) if not n.startswith("_")]):
        names.add(f"nn.{n}")
    return names


def covered():
    """Public names with an entry (an entry covers its name, its aliases and
    any functional name whose callable is the same object)."""
    out = set()
    for e in OPS:
        base = e.name.split("[")[0]
        out.add(base)
        out.update(e.aliases)
        if base.startswith("functional."):
            out.add("mg." + base.split(".", 1)[1])
    return out


BY_NAME = {e.name: e for e in OPS}

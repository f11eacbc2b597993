# cython: language_level=3, wraparound=True
# (wraparound: this module indexes shape tuples from the end, shape[-1];
# its loops over buffers use raw pointers, which the directive does not touch)
"""The tensor node: ``Tensor``, an n-d float64 array in the same graph as
``Value``, its ops (elementwise with broadcasting, reductions, shape ops,
indexing, matmul), the fused functional nodes that functional.py builds
(softmax, losses, convolution, pooling) and the Value <-> Tensor bridges.

Every op follows one pattern: ``new_node`` links the parents and calls
``_forward``, which computes ``_data`` from the parents' current data (in
place when a buffer exists, so a recorded graph can be replayed);
``_backward`` switches on the op code and adds the parents' gradients with
numpy (BLAS for products) or the C loops below, only for parents whose
``requires_grad`` is set.  No Python closure is stored per node.
"""

cimport cython
from cpython.contextvars cimport PyContextVar_Get, PyContextVar_Set, PyContextVar_Reset
from cpython.ref cimport PyObject, Py_DECREF
cimport numpy as cnp
from libc.math cimport exp, log, log1p, fabs, isnan
from libc.stdlib cimport calloc, malloc
from libc.string cimport memcpy, memset

from microgrid.core._engine cimport (
    Node, ArrayNode, Value, PyRule, gc_node_type, run_backward, make_element, next_seq, OP_LEAF,
    OP_CUSTOM, OP_COUNT,
    anomaly_enabled, check_forward, grad_enabled, make_leaf, mg_op_kind, register_tensor_builder,
    KIND_BINARY, KIND_UNARY, KIND_UNARY_C, KIND_ELEMENTWISE, KIND_REDUCE, KIND_SHAPE,
    KIND_PRODUCT, KIND_LOSS, KIND_CONV)
from microgrid.core._engine import _OP_SYMBOLS
from microgrid.tensors._alloc cimport pool_enter, pool_enter_for, pool_exit

import numbers

import numpy as np

cnp.import_array()
cnp.import_ufunc()

cdef extern from "mg_scalar.h" nogil:
    double mg_sigmoid(double x)
    double mg_softplus(double x)

cdef extern from "mg_ufuncs.h":
    cnp.PyUFuncGenericFunction* mg_forward_loops
    cnp.PyUFuncGenericFunction* mg_grad_a_loops
    cnp.PyUFuncGenericFunction* mg_grad_b_loops
    void mg_ufuncs_init()

__all__ = ["Tensor", "Size", "tensor", "zeros", "ones", "randn", "stack",
           "concatenate", "cat", "matmul", "where"]

cdef object _ndarray = np.ndarray
cdef object _float64 = np.float64
cdef object _errstate = np.errstate
cdef object _add = np.add
cdef object _add_reduce = np.add.reduce

# Every op runs with numpy's floating-point warnings off (IEEE results, as
# the scalar ops).  np.errstate costs ~1.5 us per use; setting numpy's
# context variable directly costs ~0.2 us.  That variable is numpy-internal,
# so np.errstate stays as the fallback.
cdef object _fp_state = None
cdef object _fp_ignore = None
try:
    from numpy._core._ufunc_config import _extobj_contextvar
    with np.errstate(all='ignore'):
        _fp_ignore = _extobj_contextvar.get()
    _fp_state = _extobj_contextvar
except Exception:
    _fp_state = None


cdef object fp_enter():
    """numpy's warnings off for the ops that follow; a token for fp_exit, or
    None when they are off already (backward() turns them off once for its
    whole sweep, so its nodes only read the variable)."""
    cdef PyObject* current
    if _fp_state is None:
        state = _errstate(all='ignore')
        state.__enter__()
        return state
    PyContextVar_Get(_fp_state, NULL, &current)
    if current != NULL:
        Py_DECREF(<object>current)
        if current == <PyObject*>_fp_ignore:
            return None
    return PyContextVar_Set(_fp_state, _fp_ignore)


cdef int fp_exit(object token) except -1:
    if token is None:
        return 0
    if _fp_state is None:
        token.__exit__(None, None, None)
    else:
        PyContextVar_Reset(_fp_state, token)
    return 0

# The array loops of the op table's rows (csrc/mg_ufuncs.h) as numpy ufuncs,
# by op code: numpy broadcasts and iterates, the row's C function computes.
#   _FORWARD[op](a, c) or (a, b)            the value
#   _GRAD_A[op](a, out, g, c) or (a, b, out, g)   g times d out/da
#   _GRAD_B[op](a, b, out, g)               g times d out/db
cdef char _TYPES[5]
cdef void* _NO_DATA[1]
cdef list _FORWARD = [None] * OP_COUNT
cdef list _GRAD_A = [None] * OP_COUNT
cdef list _GRAD_B = [None] * OP_COUNT


cdef object _ufunc(cnp.PyUFuncGenericFunction* loop, int nin, str name):
    return cnp.PyUFunc_FromFuncAndData(loop, _NO_DATA, _TYPES, 1, nin, 1, cnp.PyUFunc_None,
                                       name.encode(), b"", 0)


cdef _make_ufuncs():
    cdef int op, kind
    _TYPES[:] = [cnp.NPY_DOUBLE] * 5
    _NO_DATA[0] = NULL
    mg_ufuncs_init()
    for op in range(OP_COUNT):
        kind = mg_op_kind[op]
        if kind == KIND_BINARY or kind == KIND_UNARY or kind == KIND_UNARY_C:
            name = _OP_SYMBOLS[op]
            _FORWARD[op] = _ufunc(&mg_forward_loops[op], 2, name)
            _GRAD_A[op] = _ufunc(&mg_grad_a_loops[op], 4, name + "_grad_a")
            if kind == KIND_BINARY:
                _GRAD_B[op] = _ufunc(&mg_grad_b_loops[op], 4, name + "_grad_b")


_make_ufuncs()

# The op codes functional.py builds nodes with (through ``_node``).
OPS = {_OP_SYMBOLS[code]: code for code in range(OP_COUNT)
       if mg_op_kind[code] in (KIND_LOSS, KIND_CONV) or code in (T_PAD, T_MATMUL, T_LINEAR)}

# ---------------------------------------------------------------------------
# Buffers

cdef inline bint _is_buffer(object x):
    """A C-contiguous float64 ndarray (what _data and _grad always are)."""
    return (type(x) is _ndarray and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
            and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_DOUBLE)


cdef inline double* _ptr(object arr) except NULL:
    """The float64 elements of a node buffer, for the C loops.  Checked, so
    a buffer changed in place (``t.data.dtype = ...``) raises instead of
    being read out of bounds."""
    if not _is_buffer(arr):
        raise TypeError(
            "a tensor buffer is no longer a C-contiguous float64 array (was .data or "
            ".grad changed in place?); assign a new array to .data / .grad instead")
    return <double*>cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef inline Py_ssize_t _size(object arr):
    return cnp.PyArray_SIZE(<cnp.ndarray>arr)


cdef inline object _own(object r):
    """numpy returns a scalar for 0-d results; a node keeps a 0-d array."""
    if _is_buffer(r):
        return r
    return np.array(r, dtype=_float64, order='C')


cdef inline bint _needs(object p):
    return p is not None and (<Node>p).requires_grad


cdef int _acc(object parent, object g, bint owned) except -1:
    """Add ``g`` into ``parent``'s gradient.  ``owned``: nobody else holds
    ``g``, so the first gradient of a node can be kept without a copy."""
    cdef Tensor p = <Tensor>parent
    if not p.requires_grad:
        return 0
    if p._grad is None:
        if owned and _is_buffer(g) and g.shape == p._data.shape:
            p._grad = g
        else:
            p._grad = _filled(p._data.shape, g)
    else:
        _add(p._grad, g, out=p._grad)
    return 0


cdef int _copy_into(object dst, object src) except -1:
    """dst[...] = src, broadcast, through numpy's C API (np.copyto and
    np.broadcast_to are Python-level functions, a cost per node)."""
    if type(src) is _ndarray:
        return cnp.PyArray_CopyInto(<cnp.ndarray>dst, <cnp.ndarray>src)
    return cnp.PyArray_FillWithScalar(<cnp.ndarray>dst, src)


cdef object _filled(tuple shape, object g):
    """A fresh buffer of ``shape`` holding ``g`` broadcast."""
    r = np.empty(shape)
    _copy_into(r, g)
    return r


cdef tuple _broadcast_shape(tuple a, tuple b):
    """numpy's broadcast of two shapes, or ValueError."""
    cdef Py_ssize_t na = len(a), nb = len(b), n = max(na, nb), i
    out = [0] * n
    for i in range(n):
        da = a[na - n + i] if na - n + i >= 0 else 1
        db = b[nb - n + i] if nb - n + i >= 0 else 1
        if da == db or db == 1:
            out[i] = da
        elif da == 1:
            out[i] = db
        else:
            raise ValueError(f"shapes {a} and {b} cannot be broadcast together")
    return tuple(out)


def broadcast_shape(tuple a, tuple b):
    return _broadcast_shape(a, b)


cdef tuple _broadcast_axes(tuple gshape, tuple shape):
    """The axes numpy broadcasting added to ``shape`` to reach ``gshape``:
    the leading ones, and those where ``shape`` has 1 and ``gshape`` not."""
    cdef Py_ssize_t nd = len(gshape) - len(shape), i
    axes = list(range(nd))
    for i in range(len(shape)):
        if shape[i] == 1 and gshape[nd + i] != 1:
            axes.append(nd + i)
    return tuple(axes)


cdef object _unbroadcast(object g, tuple shape):
    """Sum ``g`` over the axes numpy broadcasting added to reach ``shape``."""
    cdef tuple gshape = g.shape if type(g) is _ndarray else np.shape(g)
    if gshape == shape:
        return g
    axes = _broadcast_axes(gshape, shape)
    if len(axes) == len(gshape) - len(shape) and _is_buffer(g):
        return _sum_rows(g, shape)      # only leading axes added: a bias's gradient
    if axes:
        g = _add_reduce(g, axis=axes, keepdims=True)
    return g.reshape(shape)


cdef object _sum_rows(object g, tuple shape):
    """Buffer ``g`` viewed as rows of ``shape``, summed row after row (the
    order numpy's reduction over leading axes takes), into a new buffer."""
    r = np.empty(shape)
    cdef double* out = _ptr(r)
    cdef const double* src = _ptr(g)
    cdef Py_ssize_t k = _size(r), rows = _size(g) // k if k else 0, i, j
    if rows == 0:
        memset(out, 0, k * sizeof(double))
        return r
    memcpy(out, src, k * sizeof(double))
    for i in range(1, rows):
        for j in range(k):
            out[j] += src[i * k + j]
    return r


cdef object _to_array(object data, str where):
    """A fresh C-contiguous float64 copy of array-like ``data``."""
    return np.array(_real_array(data, where), dtype=_float64, order='C')


cdef object _real_array(object data, str where):
    """Array-like ``data`` as a numpy array of real numbers (not copied)."""
    if isinstance(data, Tensor):
        return (<Tensor>data)._data
    if isinstance(data, Value):
        return np.array((<Value>data).data, dtype=_float64)
    if isinstance(data, (list, tuple)):
        probe = np.asarray(data, dtype=object)
        if probe.size and any(isinstance(x, (Value, Tensor)) for x in probe.flat):
            raise TypeError(
                f"{where} holds Values or Tensors: use microgrid.stack(...) to "
                f"build a Tensor that keeps their gradients")
    try:
        arr = np.asarray(data)
    except Exception as e:
        raise TypeError(f"{where} must be array-like of real numbers: {e}") from None
    if arr.dtype.kind not in 'biuf':
        raise TypeError(
            f"{where} must hold real numbers, got an array of dtype {arr.dtype}")
    return arr


# ---------------------------------------------------------------------------
# Dtypes
#
# Graph nodes hold float64 buffers.  Integer (int64) and bool tensors are
# leaves that never require grad: labels, indices, masks, counts.  An op over
# them either keeps them integers (the ops of _INTEGER_OPS, as PyTorch's
# integer arithmetic, sums, max/min and shape ops: the op's own rule runs on
# float64 copies, exact for integers up to 2**53, and the result is cast
# back), or takes them as float64 constants (every other op: PyTorch
# promotes integers to floats there).  The fast path of a float64 graph is
# one dtype check per operand (``_floating``).

cdef object _INT64 = np.dtype(np.int64)
cdef object _BOOL = np.dtype(np.bool_)
cdef object _FLOAT64 = np.dtype(np.float64)
cdef double _EXACT = 2.0 ** 53

_REQUIRES_FLOAT = ("Only Tensors of floating point and complex dtype can require gradients "
                   "(this one is {}; microgrid's integer and bool tensors are labels, indices and masks)")


cdef inline bint _floating(object p):
    """Whether ``p`` can be a parent of a graph node as it is: anything but a
    Tensor whose buffer is an integer or bool array.  (A float64 buffer whose
    dtype was changed in place stays here, so that ``_ptr`` refuses it.)"""
    if not isinstance(p, Tensor):
        return True
    d = (<Tensor>p)._data
    if type(d) is not _ndarray or cnp.PyArray_TYPE(<cnp.ndarray>d) == cnp.NPY_DOUBLE:
        return True
    return not (cnp.PyArray_ISINTEGER(<cnp.ndarray>d) or cnp.PyArray_ISBOOL(<cnp.ndarray>d))


cdef object _dtype_arg(object dtype, str where):
    """The dtype a ``dtype=`` argument asks for: float64, int64 or bool (None
    stays None).  Other floating dtypes are refused: microgrid computes in
    float64; other integer dtypes are int64."""
    if dtype is None:
        return None
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}(dtype=...) takes microgrid.float64, microgrid.int64 or "
                        f"microgrid.bool, got {dtype!r}") from None
    if d.kind == 'f':
        if d != _FLOAT64:
            raise ValueError(f"{where}(dtype={d}): microgrid computes in float64 only; "
                             f"use microgrid.float64 (.float() and .double() give float64)")
        return _FLOAT64
    if d.kind in 'iu':
        return _INT64
    if d.kind == 'b':
        return _BOOL
    raise TypeError(f"{where}(dtype=...) takes microgrid.float64, microgrid.int64 or "
                    f"microgrid.bool, got {d}")


cdef object _kind_dtype(object arr):
    """The dtype an array of this kind becomes: bool, int64 or float64."""
    kind = arr.dtype.kind
    return _BOOL if kind == 'b' else (_INT64 if kind in 'iu' else _FLOAT64)


cdef object _cast(object arr, object dtype, str where):
    """A fresh C-contiguous copy of ``arr`` in ``dtype`` (floats to integers
    truncate toward zero, as PyTorch's conversions)."""
    if dtype is _INT64 and arr.dtype.kind == 'f' and not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: NaN and infinity have no integer value")
    return np.array(arr, dtype=dtype, order='C')


cdef Tensor _typed_leaf(object array, object requires_grad):
    """A leaf of ``array`` (any of the three dtypes); only float64 may require grad."""
    cdef bint rg = _flag(requires_grad, 'requires_grad')
    if rg and array.dtype != _FLOAT64:
        raise RuntimeError("requires_grad: " + _REQUIRES_FLOAT.format(array.dtype))
    return _leaf(array, rg)


def _make(array, dtype=None, requires_grad=False, where='tensor'):
    """A leaf holding a copy of numpy ``array`` in ``dtype`` (None: bool,
    int64 or float64 after the array's kind); for the factory functions."""
    arr = _real_array(array, f"{where}(data)")
    d = _dtype_arg(dtype, where)
    return _typed_leaf(_cast(arr, _kind_dtype(arr) if d is None else d, where), requires_grad)


cdef object _as_float(object p):
    """A non-float Tensor as a float64 constant; anything else as it is."""
    if _floating(p):
        return p
    x = (<Tensor>p)._data
    if x.dtype.kind != 'b' and x.size and np.max(np.abs(x)) > _EXACT:
        raise ValueError(f"an integer tensor holds {int(np.max(np.abs(x)))}, beyond 2**53: "
                         f"microgrid's ops compute through float64, exact up to 2**53")
    return _leaf(np.array(x, dtype=_float64, order='C'), False)


# The ops whose result over integer (and bool) tensors stays an integer (bool)
# tensor, as in PyTorch; those of _BOOL_OPS keep all-bool operands bool.
cdef frozenset _INTEGER_OPS = frozenset([
    T_ADD, T_SUB, T_MUL, T_POW, T_NEG, T_ABS, T_SUM, T_MAX, T_MIN, T_MAX_DIM, T_MIN_DIM,
    T_RESHAPE, T_PERMUTE, T_INDEX, T_CONCAT, T_STACK, T_PAD, T_MATMUL, T_WHERE])
cdef frozenset _BOOL_OPS = frozenset([
    T_ADD, T_MUL, T_ABS, T_MAX, T_MIN, T_MAX_DIM, T_MIN_DIM,
    T_RESHAPE, T_PERMUTE, T_INDEX, T_CONCAT, T_STACK, T_PAD, T_WHERE])


cdef object _nonfloat_node(unsigned short op, object a, object b, tuple args, object ctx, double c):
    """The op over operands some of which are integer or bool tensors."""
    operands = [p for p in ((a, b) + (args if args is not None else ())) if isinstance(p, Tensor)]
    integer = op in _INTEGER_OPS and not any([_floating(p) for p in operands])
    all_bool = integer and all([(<Tensor>p)._data.dtype == _BOOL for p in operands])
    if all_bool and (op == T_SUB or op == T_NEG):
        raise TypeError(f"{_OP_SYMBOLS[op]}: subtraction and negation of bool tensors are not "
                        f"supported; use ~ or logical operations, or convert with .long()")
    if integer and op == T_POW and not all_bool and np.any((<Tensor>b)._data < 0):
        raise ValueError("pow: Integers to negative integer powers are not allowed")
    fargs = None if args is None else tuple([_as_float(p) for p in args])
    if mg_op_kind[op] == KIND_UNARY or mg_op_kind[op] == KIND_UNARY_C:
        out = _elementwise(_as_float(a), op, c)
    else:
        out = new_node(op, _as_float(a), _as_float(b), fargs, ctx)
    if not integer:
        return out
    dtype = _BOOL if all_bool and op in _BOOL_OPS else _INT64
    return _leaf(np.array((<Tensor>out)._data, dtype=dtype, order='C'), False)


cdef inline bint _is_int(object x):
    return (type(x) is int or isinstance(x, (numbers.Integral, np.integer))) \
        and not isinstance(x, (bool, np.bool_))


cdef tuple _shape_arg(tuple shape, str where):
    """``f(2, 3)`` or ``f((2, 3))`` as a tuple of ints."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not _is_int(s):
            raise TypeError(f"{where} takes ints, got {type(s).__name__}")
    return tuple([int(s) for s in shape])


cdef object _axes(object dim, Py_ssize_t ndim, str where):
    """Normalised reduction axes (negative allowed), or None for all."""
    if dim is None:
        return None
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if len(dims) == 0:
        return None          # PyTorch: an empty dim list reduces everything
    cdef Py_ssize_t n = ndim if ndim > 0 else 1, d
    out = []
    for x in dims:
        if not _is_int(x):
            raise TypeError(f"{where}(dim=...) takes an int or a tuple of ints, got {type(x).__name__}")
        if x < -n or x >= n:      # checked as a Python int: a huge one would overflow d
            raise ValueError(
                f"{where}(dim={x}) is out of range for a tensor with {ndim} dimensions")
        d = x
        if d < 0:
            d += n
        if d in out:
            raise ValueError(f"{where}(dim=...) names dimension {d} twice")
        out.append(d)
    if ndim == 0:
        return None
    return tuple(out)


cdef Py_ssize_t _axis(object dim, Py_ssize_t ndim, str where, str name='dim') except -2:
    """One normalised axis of a tensor with ``ndim`` dimensions; ``name`` is
    the argument's name for error messages."""
    if not _is_int(dim):
        raise TypeError(f"{where}({name}=...) takes an int, got {type(dim).__name__}")
    cdef Py_ssize_t d, n = ndim if ndim > 0 else 1
    if dim < -n or dim >= n:      # checked as a Python int: a huge one would overflow d
        raise ValueError(f"{where}({name}={dim}) is out of range for a tensor with {ndim} dimensions")
    d = dim
    return d + n if d < 0 else d


# ---------------------------------------------------------------------------
# Node construction

cdef Tensor _leaf(object array, bint requires_grad):
    cdef Tensor t = Tensor.__new__(Tensor)
    t._data = array
    t.requires_grad = requires_grad
    t.seq = next_seq()
    return t


cdef Tensor new_node(unsigned short op, object a, object b, tuple args, object ctx):
    """Link a node to its parents and compute its value."""
    if not (_floating(a) and _floating(b)) or (args is not None and not all([_floating(p) for p in args])):
        return <Tensor>_nonfloat_node(op, a, b, args, ctx, 0.0)
    cdef Tensor out = Tensor.__new__(Tensor)
    cdef bint rg = _needs(a) or _needs(b)
    out.op = op
    out.a = a
    out.b = b
    out.args = args
    out.ctx = ctx
    if not rg and args is not None:
        for p in args:
            if isinstance(p, Node) and (<Node>p).requires_grad:
                rg = True
                break
    out.requires_grad = rg
    out.seq = next_seq()
    out._forward()
    if not grad_enabled():
        make_leaf(out)
    return out


def _node(int op, a, b=None, args=None, ctx=None):
    """Build a node of op code ``op`` (functional.py's entry; it validates)."""
    if op < 0 or op >= OP_COUNT or mg_op_kind[op] < KIND_ELEMENTWISE:
        raise ValueError(f"unknown tensor op code {op}")
    return new_node(op, a, b, args, ctx)


cdef Tensor _from_value(Value v):
    return new_node(T_FROM_VALUE, v, None, None, None)


def _value_tensor(Value v not None):
    """A Value as a 0-d Tensor whose gradient flows back into the Value."""
    return _from_value(v)


cdef object _operand(object x):
    """A Tensor for the other operand of an arithmetic op, or None."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Value):
        return _from_value(<Value>x)
    if type(x) is float or type(x) is int:
        return _leaf(np.array(x, dtype=_float64), False)
    if isinstance(x, (numbers.Real, _ndarray, list, tuple)):
        try:
            return _leaf(_to_array(x, 'operand'), False)
        except TypeError:
            return None
    return None


cdef object _operand_of(Tensor t, object x):
    """_operand for the other side of an arithmetic operator on ``t``: next to
    an integer or bool tensor, integers stay integers (``labels + 1``)."""
    if _floating(t) or isinstance(x, (Tensor, Value)):
        return _operand(x)
    try:
        arr = _real_array(x, 'operand')
    except TypeError:
        return None
    return _leaf(_cast(arr, _kind_dtype(arr), 'operand'), False)


cdef Tensor _binary(unsigned short op, object a, object b, str name):
    try:
        return new_node(op, a, b, None, None)
    except ValueError:
        try:
            _broadcast_shape(np.shape((<Tensor>a)._data), np.shape((<Tensor>b)._data))
        except ValueError:
            raise ValueError(
                f"{name}: shapes {(<Tensor>a)._data.shape} and {(<Tensor>b)._data.shape} "
                f"cannot be broadcast together") from None
        raise


cdef tuple _matmul_shape(tuple sa, tuple sb):
    if len(sa) == 0 or len(sb) == 0:
        raise ValueError(
            f"matmul: both operands need at least one dimension, got shapes {sa} and {sb}")
    ka = sa[-1]
    kb = sb[0] if len(sb) == 1 else sb[-2]
    if ka != kb:
        raise ValueError(
            f"matmul: shapes {sa} and {sb} do not match in the contracted dimension ({ka} != {kb})")
    try:
        _broadcast_shape(sa[:-2], sb[:-2])
    except ValueError:
        raise ValueError(
            f"matmul: batch dimensions of shapes {sa} and {sb} cannot be broadcast") from None
    return ()


cdef tuple _kept_shape(tuple shape, tuple axes):
    """``shape`` with the reduced ``axes`` kept as size 1 (keepdim=True)."""
    return tuple([1 if i in axes else shape[i] for i in range(len(shape))])


cdef Py_ssize_t _shape_size(tuple shape):
    cdef Py_ssize_t n = 1
    for d in shape:
        n *= <Py_ssize_t>d
    return n


cdef int _store(Tensor t, object r) except -1:
    """Make ``r`` the node's value: written into its buffer when it has one
    (a replayed graph keeps its buffers), else kept as its own buffer."""
    if t._data is None:
        t._data = _own(r)
    elif r is not t._data:
        _copy_into(t._data, r)
    return 0


# ---------------------------------------------------------------------------
# The rules of tensor nodes, by op code: each family's file holds its ops'
# forward and backward side by side and registers them here.  A forward rule
# computes t._data from the parents' values x = a._data and y = b._data
# (None for a parent that is not a Tensor), writing into t._data when it
# exists; a backward rule adds t's gradient g, times the local derivative,
# into the gradient of each parent that requires one.

ctypedef int (*forward_rule)(Tensor t, object x, object y) except -1
ctypedef int (*backward_rule)(Tensor t, object g, object a, object b) except -1

cdef forward_rule* _forward_rules = <forward_rule*>calloc(OP_COUNT, sizeof(forward_rule))
cdef backward_rule* _backward_rules = <backward_rule*>calloc(OP_COUNT, sizeof(backward_rule))


cdef void _rule(int op, forward_rule forward, backward_rule backward) noexcept:
    _forward_rules[op] = forward
    _backward_rules[op] = backward


# The differentiable form of a backward rule (create_graph=True, higher-order
# gradients): given the node t and its incoming gradient g (a graph node,
# Tensor or Value), it returns the gradients of t's parents as graph nodes
# built from microgrid ops, one entry per parent of t._parents() in that
# order (None for a parent that needs none), so they can be differentiated
# again.  Each family's file registers its ops' rules beside their forward
# and backward.
ctypedef object (*graph_rule)(Tensor t, object g)

cdef graph_rule* _graph_rules = <graph_rule*>calloc(OP_COUNT, sizeof(graph_rule))


cdef void _graph_rule(int op, graph_rule rule) noexcept:
    _graph_rules[op] = rule


include "inplace.pxi"


# Helpers of the graph rules: the numpy steps backward rules take on arrays,
# as graph nodes (Tensor ops) so they can be differentiated again.

cdef object _g_unbroadcast(object g, tuple shape):
    """``_unbroadcast`` as graph nodes: tensor ``g`` summed over the axes
    numpy broadcasting added to reach ``shape``."""
    cdef tuple gshape = (<Tensor>g)._data.shape
    if gshape == shape:
        return g
    axes = _broadcast_axes(gshape, shape)
    if axes:
        g = g.sum(axes, True)
    return new_node(T_RESHAPE, g, None, None, shape)


cdef object _g_expand(object g, tuple shape):
    """Tensor ``g`` broadcast to ``shape`` as a graph node: plus constant
    zeros (exact), whose backward sums the gradient back."""
    if (<Tensor>g)._data.shape == shape:
        return g
    return new_node(T_ADD, g, _leaf(np.zeros(shape), False), None, None)


cdef object _g_scatter(object x, object key, bint basic, tuple shape):
    """zeros(shape) with ``x`` added at ``key``: the adjoint of ``x[key]``."""
    return new_node(T_SCATTER, x, None, None, IndexState(key, basic, shape))


def _graph_select(cond, x, y):
    """``where(cond, x, y)`` as graph nodes, for the op table's derivative
    formulas: ``cond`` a bool array, ``x`` and ``y`` Tensors or numbers
    (arrays).  Only the picked elements of a Tensor enter the result (an
    unpicked inf or NaN does not leak into it as 0 * inf would)."""
    cond = np.asarray(cond, dtype=bool)
    shape = cond.shape
    for branch in (x, y):
        shape = _broadcast_shape(shape, np.shape((<Tensor>branch)._data if isinstance(branch, Tensor)
                                                 else branch))
    cond = np.broadcast_to(cond, shape)
    result = None
    constant = None
    for branch, mask in ((x, cond), (y, ~cond)):
        if isinstance(branch, Tensor):
            if not mask.any():
                continue
            part = _g_expand(branch, shape)
            if not mask.all():
                key = np.nonzero(mask)       # each element once
                part = _g_scatter(new_node(T_INDEX, part, None, None, IndexState(key, True)),
                                  key, True, shape)
            result = part if result is None else new_node(T_ADD, result, part, None, None)
        else:
            picked = np.where(mask, branch, 0.0)
            constant = picked if constant is None else constant + picked
    if result is None:
        return _leaf(np.array(constant, dtype=_float64, order='C'), False)
    if constant is not None and np.any(constant != 0.0):
        result = new_node(T_ADD, result, _leaf(np.array(constant, dtype=_float64, order='C'), False),
                          None, None)
    return result


def _graph_unbroadcast(Tensor g not None, tuple shape):
    """Tensor ``g`` summed back to ``shape`` (broadcasting's adjoint), as graph nodes."""
    return _g_unbroadcast(g, shape)


def _array_unbroadcast(g, tuple shape):
    """Array ``g`` summed back to ``shape`` (broadcasting's adjoint)."""
    return _unbroadcast(g, shape)


def _add_scaled(y, double alpha, x):
    """``y += alpha * x`` in place in one pass over memory (no temporary
    ``alpha * x``), when ``y`` is a writable C-contiguous float64 array and
    ``x`` one of the same shape: then True (bit for bit numpy's ``y -= lr * x``
    for alpha = -lr: the same two roundings); otherwise False and nothing done."""
    cdef double* py
    cdef const double* px
    cdef Py_ssize_t i, n
    if not (type(y) is np.ndarray and type(x) is np.ndarray
            and cnp.PyArray_TYPE(<cnp.ndarray>y) == cnp.NPY_DOUBLE
            and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_DOUBLE
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>y)
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>y)
            and y.shape == x.shape):
        return False
    py = <double*>cnp.PyArray_DATA(<cnp.ndarray>y)
    px = <const double*>cnp.PyArray_DATA(<cnp.ndarray>x)
    n = cnp.PyArray_SIZE(<cnp.ndarray>y)
    with nogil:
        for i in range(n):
            py[i] = py[i] + alpha * px[i]
    return True


def _graph_scatter_values(list values, list flat, tuple shape):
    """The Tensor of ``shape`` holding Value ``values[i]`` at flat index
    ``flat[i]`` (repeats add up) and zeros elsewhere, as graph nodes: the
    gradient a tensor gets from its elements ``t[i, j]``."""
    stacked = new_node(T_STACK_VALUES, None, None, tuple(values), None)
    key = (np.array(flat, dtype=np.intp),)
    n = _shape_size(shape)
    return new_node(T_RESHAPE, _g_scatter(stacked, key, len(set(flat)) == len(flat), (n,)),
                    None, None, shape)


include "elementwise.pxi"
include "reduce.pxi"
include "shape.pxi"
include "products.pxi"
include "losses.pxi"
include "conv.pxi"

_register_elementwise()
_register_reduce()
_register_shape()
_register_products()
_register_losses()
_register_conv()
_register_saved_from_table()
register_tensor_builder(_elementwise)


# ---------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------
# Tensor

@cython.no_gc
@cython.binding(False)   # methods check the type of self (Cython #1903)
@cython.embedsignature.format('clinic')   # and keep inspect.signature working
cdef class Tensor(ArrayNode):
    """An n-d float64 array that remembers how it was computed.

    ``Tensor(data, requires_grad=False)`` (or ``microgrid.tensor``) makes a
    leaf holding a copy of ``data``.  ``.data`` and ``.grad`` are the node's
    own numpy buffers, so ``p.data -= lr * p.grad`` updates in place.
    """

    # numpy must hand ``array <op> tensor`` to the Tensor's reflected operator
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False):
        self._data = _to_array(data, 'Tensor(data)')
        self.requires_grad = _flag(requires_grad, 'requires_grad')
        self.seq = next_seq()

    # -- buffers and metadata ---------------------------------------------

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        if value is self._data:
            return                      # ``t.data -= x`` already worked in place
        if _floating(self):
            array = _to_array(value, 'data')
        else:                           # an integer or bool tensor takes the new data's kind
            array = _real_array(value, 'data')
            array = _cast(array, _kind_dtype(array), 'data')
        if self.op != OP_LEAF and array.shape != self._data.shape:
            raise ValueError(
                f"data: a non-leaf tensor keeps its shape {self._data.shape}, got {array.shape}")
        if self._grad is not None and array.shape != self._data.shape:
            self._grad = None
        self._data = array

    @property
    def grad(self):
        """The gradient, zeros until backward() reaches this tensor."""
        if self._grad is None:
            self._grad = np.zeros(self._data.shape)
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is self._grad:
            return
        if value is None:
            self._grad = None
            return
        array = _to_array(value, 'grad')
        if array.shape != self._data.shape:
            raise ValueError(f"grad: shape {array.shape} does not match data shape {self._data.shape}")
        self._grad = array

    @property
    def requires_grad(self):
        return bool(self.requires_grad)

    @requires_grad.setter
    def requires_grad(self, value):
        flag = _flag(value, 'requires_grad')
        if self.op != OP_LEAF and not flag:
            raise ValueError(
                "requires_grad: only leaf tensors can change it; use .detach() for a "
                "tensor cut from the graph")
        if self.op != OP_LEAF:
            return
        if flag and not _floating(self):
            raise RuntimeError("requires_grad: " + _REQUIRES_FLOAT.format(self._data.dtype))
        self.requires_grad = flag

    def requires_grad_(self, requires_grad=True):
        # setattr goes through the property's checks; ``self.requires_grad = x``
        # here would write the C field directly (any truthy object, non-leaves too)
        setattr(self, 'requires_grad', requires_grad)
        return self

    @property
    def is_leaf(self):
        return self.op == OP_LEAF

    @property
    def shape(self):
        return self._data.shape

    @property
    def ndim(self):
        return self._data.ndim

    def size(self, dim=None):
        """The shape as a ``Size`` (a tuple), or with ``dim`` the length of that dimension."""
        if dim is None:
            return Size(self._data.shape)
        if self._data.ndim == 0:
            raise IndexError(f"size(dim={dim}): a 0-d tensor has no dimensions")
        return self._data.shape[_axis(dim, self._data.ndim, 'size')]

    @property
    def dtype(self):
        """float64 (graph nodes), int64 or bool (leaves: labels, indices, masks)."""
        return self._data.dtype

    # -- dtype conversions: a tensor already of that dtype is returned as it is;
    # otherwise a new leaf, cut from the graph (an integer has no gradient)

    def long(self):
        """An int64 copy (floats truncated toward zero)."""
        return self._converted(_INT64, 'long')

    def double(self):
        """A float64 copy."""
        return self._converted(_FLOAT64, 'double')

    def float(self):
        """A float64 copy: microgrid computes in float64, where PyTorch's float() is float32."""
        return self._converted(_FLOAT64, 'float')

    def bool(self):
        """A bool copy (nonzero is True)."""
        return self._converted(_BOOL, 'bool')

    def _converted(self, dtype, str where):
        if self._data.dtype == dtype:
            return self
        return _leaf(_cast(self._data, dtype, f"{where}()"), False)

    def dim(self):
        return self._data.ndim

    def numel(self):
        return self._data.size

    def clone(self):
        """A copy whose gradient flows back into this tensor."""
        return new_node(T_RESHAPE, self, None, None, self._data.shape)

    @property
    def _op(self):
        if self.op == OP_CUSTOM:
            return self.b            # the name of the Function that made it
        return _OP_SYMBOLS[self.op]

    def _parents(self):
        parents = [p for p in (self.a, self.b) if isinstance(p, Node)]
        if self.args is not None:
            parents.extend([p for p in self.args if isinstance(p, Node)])
        return tuple(parents)

    def _graph_vjp(self, g):
        """The gradients of this node's parents (``_parents()`` order, None
        where a parent needs none) for incoming gradient ``g``, as graph nodes
        that can be differentiated again: the op's registered graph rule."""
        if self.op == OP_LEAF:
            return ()
        if self.op == OP_CUSTOM and isinstance(self.a, PyRule):
            return self.a._graph_vjp(self, g)
        if _graph_rules[self.op] == NULL:
            raise NotImplementedError(
                f"no differentiable backward rule for {_OP_SYMBOLS[self.op]!r} yet")
        return _graph_rules[self.op](self, g)

    def _state(self):
        """The op's state besides its operands (the node's ``ctx``: a typed
        state such as ConvState or PoolState with read-only fields, or the one
        value its family's file names), or None for a leaf; for worked
        solutions (explain)."""
        return self.ctx

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __repr__(self):
        body = np.array2string(self._data, separator=', ', prefix='Tensor(')
        return f"Tensor({body}, requires_grad=True)" if self.requires_grad else f"Tensor({body})"

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        # an integer tensor as a Python index: ``classes[labels[i]]``
        if _floating(self) or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self._data.reshape(-1)[0])

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self._data.reshape(-1)[0])

    # Tensors stay hashable by identity (graphs keep them in sets) although
    # == compares elementwise.
    def __hash__(self):
        return object.__hash__(self)

    # -- elementwise comparisons: bool tensors, never graph nodes

    def __eq__(self, other):
        return _compare(self, other, np.equal)

    def __ne__(self, other):
        return _compare(self, other, np.not_equal)

    def __lt__(self, other):
        return _compare(self, other, np.less)

    def __le__(self, other):
        return _compare(self, other, np.less_equal)

    def __gt__(self, other):
        return _compare(self, other, np.greater)

    def __ge__(self, other):
        return _compare(self, other, np.greater_equal)

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._data, dtype=dtype)
        return self._data if dtype is None else self._data.astype(dtype)

    def item(self):
        """The value of a one-element tensor as a Python float (int, bool for
        an integer or bool tensor)."""
        if self._data.size != 1:
            raise ValueError(
                f"item(): only a one-element tensor converts to a number, this one has {self._data.size}")
        return self._data.reshape(-1)[0].item()

    def numpy(self):
        """The data buffer itself (shared, as PyTorch's numpy())."""
        return self._data

    def tolist(self):
        return self._data.tolist()

    def detach(self):
        """A leaf sharing this tensor's data, cut from the graph."""
        return _leaf(self._data, False)

    def _recompute(self):
        """Recompute ``data`` in place from the parents' current data (what a
        graph replay does for each node in topological order)."""
        self._forward()

    # -- backward ----------------------------------------------------------

    def backward(self, grad=None, create_graph=False):
        """Fill ``.grad`` of every tensor and Value this one depends on.

        ``grad`` is the gradient of the output w.r.t. this tensor; it may be
        omitted only for a one-element tensor (then it is 1).  ``.grad``
        always holds numbers; with ``create_graph=True`` they come from the
        differentiable sweep (microgrid.autograd), which fails clearly on an
        op without a differentiable rule.  The gradients as graph nodes, to
        differentiate again: ``mg.grad(..., create_graph=True)``.
        """
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
        else:
            grad = _to_array(grad, 'backward(grad)')
            if grad.shape != self._data.shape:
                raise ValueError(
                    f"backward(grad): shape {grad.shape} does not match the tensor's shape {self._data.shape}")
        if create_graph:
            from microgrid.autograd import _graph_backward_into_grad
            _graph_backward_into_grad(self, np.ones(self._data.shape) if grad is None else grad)
            return
        # the pool and numpy's warnings off once for the whole sweep (each
        # node's _backward then finds them in place)
        memory = pool_enter()
        fp = fp_enter()
        try:
            run_backward(self, grad)
        finally:
            fp_exit(fp)
            pool_exit(memory)

    def zero_grad(self):
        """Reset this tensor's gradient to zeros."""
        if self._grad is not None:
            self._grad.fill(0.0)

    cdef int _zero_grad(self) except -1:
        self._grad = None
        return 0

    cdef int _seed(self, object grad, bint accumulate) except -1:
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            grad = 1.0
        if accumulate and self._grad is not None:
            np.add(self._grad, grad, out=self._grad)
        else:
            self._grad = _filled(self._data.shape, grad)
        return 0

    cdef object _swap_grad(self, object grad):
        old = self._grad
        self._grad = grad
        return old

    cdef int _add_grad_at(self, Py_ssize_t index, double g) except -1:
        if self._grad is None:
            self._grad = np.zeros(self._data.shape)
        _ptr(self._grad)[index] += g
        return 0

    # -- forward -----------------------------------------------------------

    cdef int _forward(self) except -1:
        cdef unsigned short op = self.op
        if op == OP_LEAF:
            return 0
        x = (<Tensor>self.a)._data if isinstance(self.a, Tensor) else None
        y = (<Tensor>self.b)._data if isinstance(self.b, Tensor) else None
        if _forward_rules[op] == NULL:
            raise SystemError(f"forward: no rule for tensor op code {op}")
        # products and convolutions may make outputs and workspaces much larger than their operands
        memory = pool_enter_for(x, y, mg_op_kind[op] == KIND_PRODUCT or mg_op_kind[op] == KIND_CONV)
        fp = fp_enter()
        try:
            _forward_rules[op](self, x, y)
        finally:
            fp_exit(fp)
            pool_exit(memory)
        if anomaly_enabled():
            check_forward(self)
        return 0

    cdef double _element(self, Py_ssize_t index) except? -1.0:
        return _ptr(self._data)[index]

    cdef int _backward(self) except -1:
        cdef unsigned short op = self.op
        g = self._grad
        if g is None or op == OP_LEAF:
            return 0              # no gradient reached this node
        if _backward_rules[op] == NULL:
            raise SystemError(f"backward: no rule for tensor op code {op}")
        if _inplace_ops:
            _check_versions(self)
        memory = pool_enter()
        fp = fp_enter()
        try:
            _backward_rules[op](self, g, self.a, self.b)
        finally:
            fp_exit(fp)
            pool_exit(memory)
        return 0

    # -- indexing -----------------------------------------------------------

    def __getitem__(self, key):
        cdef tuple shape = self._data.shape
        cdef Py_ssize_t nd = len(shape), d, k, n, flat = 0
        cdef tuple ints
        if _is_int(key):
            ints = (key,)
        elif type(key) is tuple and all([_is_int(k_) for k_ in key]):
            ints = key
        else:
            ints = None
        if ints is not None and len(ints) == nd and nd > 0:
            # every dimension picked: one scalar Value bridged to this tensor
            for d in range(nd):
                n = shape[d]
                if ints[d] < -n or ints[d] >= n:   # as a Python int: a huge one would overflow k
                    raise IndexError(f"index {ints[d]} is out of bounds for dimension {d} with size {n}")
                k = ints[d]
                if k < 0:
                    k += n
                flat = flat * n + k
            if not _floating(self):      # an integer's element: a 0-d integer tensor
                return _leaf(np.array(self._data.reshape(-1)[flat]), False)
            return make_element(self, flat, _ptr(self._data)[flat], self.requires_grad)
        key, basic = _index_key(key)
        try:
            return new_node(T_INDEX, self, None, None, IndexState(key, basic))
        except IndexError:
            raise
        except OverflowError:        # numpy's answer to an int beyond any index
            raise IndexError(f"Tensor index {key!r} is out of bounds for shape "
                             f"{self._data.shape}") from None
        except (TypeError, ValueError) as e:
            raise IndexError(f"Tensor index {key!r}: {e}") from None

    # -- arithmetic ---------------------------------------------------------

    def __add__(self, other):
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_ADD, self, o, 'add')

    def __radd__(self, other):
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_ADD, o, self, 'add')

    def __sub__(self, other):
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_SUB, self, o, 'sub')

    def __rsub__(self, other):  # other - self
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_SUB, o, self, 'sub')

    def __mul__(self, other):
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_MUL, self, o, 'mul')

    def __rmul__(self, other):
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_MUL, o, self, 'mul')

    def __truediv__(self, other):
        o = _operand(other)
        return NotImplemented if o is None else _binary(T_DIV, self, o, 'div')

    def __rtruediv__(self, other):  # other / self
        o = _operand(other)
        return NotImplemented if o is None else _binary(T_DIV, o, self, 'div')

    # -- in place (inplace.pxi) ----------------------------------------------

    def add_(self, other, *, alpha=1):
        """self += alpha * other, in place (PyTorch's add_)."""
        o = _scaled(_inplace_operand(other, 'add_'), alpha, 'add_')
        return _inplace(self, lambda x: _binary(T_ADD, x, o, 'add_'), 'add_')

    def sub_(self, other, *, alpha=1):
        """self -= alpha * other, in place."""
        o = _scaled(_inplace_operand(other, 'sub_'), alpha, 'sub_')
        return _inplace(self, lambda x: _binary(T_SUB, x, o, 'sub_'), 'sub_')

    def mul_(self, other):
        """self *= other, in place."""
        o = _inplace_operand(other, 'mul_')
        return _inplace(self, lambda x: _binary(T_MUL, x, o, 'mul_'), 'mul_')

    def div_(self, other):
        """self /= other, in place."""
        o = _inplace_operand(other, 'div_')
        return _inplace(self, lambda x: _binary(T_DIV, x, o, 'div_'), 'div_')

    def __iadd__(self, other):
        return NotImplemented if _operand(other) is None else self.add_(other)

    def __isub__(self, other):
        return NotImplemented if _operand(other) is None else self.sub_(other)

    def __imul__(self, other):
        return NotImplemented if _operand(other) is None else self.mul_(other)

    def __itruediv__(self, other):
        return NotImplemented if _operand(other) is None else self.div_(other)

    def copy_(self, src):
        """Copy src's values (broadcast to this tensor's shape) into it, in
        place; the gradient flows to src."""
        o = _inplace_operand(src, 'copy_')
        shape = self._data.shape
        return _inplace(self, lambda x: _broadcast_to(o, shape), 'copy_')

    def fill_(self, value):
        """Set every element to ``value`` (a number or a 0-d tensor), in place."""
        if isinstance(value, Tensor) and (<Tensor>value)._data.ndim != 0:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                               f"with {(<Tensor>value)._data.ndim} dimensions.")
        if not isinstance(value, (Tensor, Value, numbers.Real)) or isinstance(value, bool):
            raise TypeError(f"fill_(value) takes a real number or a 0-d Tensor, got {type(value).__name__}")
        return self.copy_(value)

    def zero_(self):
        """Set every element to zero, in place."""
        return self.fill_(0.0)

    def clamp_(self, min=None, max=None):
        """clamp(min, max), in place."""
        state = _clamp_state(min, max, 'clamp_')
        return _inplace(self, lambda x: new_node(T_CLAMP, x, None, None, state), 'clamp_')

    clip_ = clamp_

    @property
    def _version(self):
        """How many times this tensor was changed in place (PyTorch's _version)."""
        return self.version

    def __pow__(self, other, modulo):
        if modulo is not None:
            return NotImplemented
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_POW, self, o, 'pow')

    def __rpow__(self, other, modulo):  # other ** self
        if modulo is not None:
            return NotImplemented
        o = _operand_of(self, other)
        return NotImplemented if o is None else _binary(T_POW, o, self, 'pow')

    def __matmul__(self, other):
        o = _operand(other)
        if o is None:
            return NotImplemented
        _matmul_shape(self._data.shape, (<Tensor>o)._data.shape)
        return new_node(T_MATMUL, self, o, None, None)

    def __rmatmul__(self, other):
        o = _operand(other)
        if o is None:
            return NotImplemented
        _matmul_shape((<Tensor>o)._data.shape, self._data.shape)
        return new_node(T_MATMUL, o, self, None, None)

    def matmul(self, other):
        o = _operand(other)
        if o is None:
            raise TypeError(f"matmul(other) takes a Tensor or an array, got {type(other).__name__}")
        return self.__matmul__(o)

    def pow(self, exponent):
        """``self ** exponent``."""
        o = _operand_of(self, exponent)
        if o is None:
            raise TypeError(f"pow(exponent) takes a Tensor, a Value or a number, got {type(exponent).__name__}")
        return _binary(T_POW, self, o, 'pow')

    def __neg__(self):
        return new_node(T_NEG, self, None, None, None)

    def __pos__(self):
        return self

    def __abs__(self):
        return new_node(T_ABS, self, None, None, None)

    # -- elementwise functions -------------------------------------------

    # The elementwise methods (relu, sigmoid, tanh, exp, ...) are generated
    # from the op table: see microgrid/core/optable.py.

    def clamp(self, min=None, max=None):
        return new_node(T_CLAMP, self, None, None, _clamp_state(min, max, 'clamp'))

    clip = clamp

    # -- reductions --------------------------------------------------------

    def sum(self, dim=None, keepdim=False):
        return new_node(T_SUM, self, None, None,
                        ReduceState(_axes(dim, self._data.ndim, 'sum'), _flag(keepdim, 'keepdim')))

    def mean(self, dim=None, keepdim=False):
        return new_node(T_MEAN, self, None, None,
                        ReduceState(_axes(dim, self._data.ndim, 'mean'), _flag(keepdim, 'keepdim')))

    def max(self, dim=None, keepdim=False):
        """The largest element, or with ``dim`` the pair (values, indices) as
        PyTorch returns it; ties in a full reduction share the gradient."""
        return _extreme(self, dim, keepdim, True)

    def min(self, dim=None, keepdim=False):
        return _extreme(self, dim, keepdim, False)

    def argmax(self, dim=None, keepdim=False):
        """The int64 index of the largest element (of the flattened tensor
        without ``dim``); the first one among ties, NaN counting as largest."""
        return _arg_extreme(self, dim, keepdim, True)

    def argmin(self, dim=None, keepdim=False):
        return _arg_extreme(self, dim, keepdim, False)

    # -- shape -------------------------------------------------------------

    def reshape(self, *shape):
        shape = _shape_arg(shape, 'reshape(shape)')
        try:
            target = self._data.reshape(shape).shape   # resolves a -1
        except ValueError:
            raise ValueError(f"reshape(shape): cannot reshape a tensor of shape "
                             f"{self._data.shape} into {shape}") from None
        return new_node(T_RESHAPE, self, None, None, target)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        cdef tuple shape = self._data.shape
        if len(shape) == 0:
            return self.reshape(1)
        s = _axis(start_dim, len(shape), 'flatten', 'start_dim')
        e = _axis(end_dim, len(shape), 'flatten', 'end_dim')
        if s > e:
            raise ValueError(f"flatten(start_dim={start_dim}, end_dim={end_dim}): start_dim comes after end_dim")
        return self.reshape(shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:])

    def unsqueeze(self, dim):
        cdef Py_ssize_t nd = self._data.ndim
        d = _axis(dim, nd + 1, 'unsqueeze')
        shape = self._data.shape
        return self.reshape(shape[:d] + (1,) + shape[d:])

    def squeeze(self, dim=None):
        shape = self._data.shape
        if dim is None:
            return self.reshape(tuple([n for n in shape if n != 1]))
        d = _axis(dim, len(shape), 'squeeze')
        if len(shape) == 0 or shape[d] != 1:
            return self.reshape(shape)
        return self.reshape(shape[:d] + shape[d + 1:])

    def permute(self, *dims):
        cdef Py_ssize_t nd = self._data.ndim
        dims = _shape_arg(dims, 'permute(dims)')
        if len(dims) != nd:
            raise ValueError(f"permute(dims): a tensor with {nd} dimensions needs {nd} dims, got {len(dims)}")
        axes = tuple([_axis(d, nd, 'permute') for d in dims])
        if len(set(axes)) != nd:
            raise ValueError(f"permute(dims): {dims} repeats a dimension")
        return new_node(T_PERMUTE, self, None, None, axes)

    def transpose(self, dim0, dim1):
        cdef Py_ssize_t nd = self._data.ndim
        if nd < 2:
            return self.reshape(self._data.shape)
        d0 = _axis(dim0, nd, 'transpose')
        d1 = _axis(dim1, nd, 'transpose')
        axes = list(range(nd))
        axes[d0], axes[d1] = axes[d1], axes[d0]
        return new_node(T_PERMUTE, self, None, None, tuple(axes))

    @property
    def T(self):
        nd = self._data.ndim
        return new_node(T_PERMUTE, self, None, None, tuple(range(nd - 1, -1, -1)))

    # -- functional ops as methods ----------------------------------------

    def softmax(self, dim):
        return new_node(T_SOFTMAX, self, None, None, _axis(dim, self._data.ndim, 'softmax'))

    def log_softmax(self, dim):
        return new_node(T_LOG_SOFTMAX, self, None, None, _axis(dim, self._data.ndim, 'log_softmax'))

    def where(self, condition, other):
        """``where(condition, self, other)``."""
        return where(condition, self, other)


cdef object _compare(Tensor t, object other, object compare):
    """A bool tensor of ``t <compare> other`` elementwise (numpy broadcasting)."""
    if isinstance(other, Tensor):
        y = (<Tensor>other)._data
    elif isinstance(other, Value):
        y = (<Value>other).data
    elif isinstance(other, (numbers.Real, _ndarray, list, tuple)):
        try:
            y = _real_array(other, 'operand')
        except TypeError:
            return NotImplemented
    else:
        return NotImplemented
    x = t._data
    _broadcast_shape(x.shape, np.shape(y))
    return _leaf(np.array(compare(x, y), dtype=_BOOL, order='C'), False)


cdef object _arg_extreme(Tensor t, object dim, object keepdim, bint is_max):
    name = 'argmax' if is_max else 'argmin'
    keep = _flag(keepdim, 'keepdim')
    pick = np.argmax if is_max else np.argmin
    x = t._data
    if dim is None:
        if x.size == 0:
            raise ValueError(f"{name}(): the tensor is empty")
        r = pick(x)
        if keep:
            r = np.reshape(r, (1,) * x.ndim)
    else:
        axis = _axis(dim, x.ndim, name)
        if x.ndim == 0:
            r = np.zeros((), dtype=_INT64)
        elif x.shape[axis] == 0:
            raise ValueError(f"{name}(dim={dim}): that dimension is empty")
        else:
            r = pick(x, axis=axis, keepdims=keep)
    return _leaf(np.array(r, dtype=_INT64, order='C'), False)


cdef object _extreme(Tensor t, object dim, object keepdim, bint is_max):
    name = 'max' if is_max else 'min'
    keep = _flag(keepdim, 'keepdim')
    if dim is None:
        if t._data.size == 0:
            raise ValueError(f"{name}(): the tensor is empty; give dim= to reduce a non-empty dimension")
        return new_node(T_MAX if is_max else T_MIN, t, None, None, ReduceState(None, keep))
    axis = _axis(dim, t._data.ndim, name)
    if t._data.ndim == 0:
        values = new_node(T_RESHAPE, t, None, None, (1,) if keep else ())
        return _MaxMin(values, _leaf(np.zeros((1,) if keep else (), dtype=_INT64), False))
    if t._data.shape[axis] == 0:
        raise ValueError(f"{name}(dim={dim}): that dimension is empty")
    state = ReduceState(axis, keep)
    values = new_node(T_MAX_DIM if is_max else T_MIN_DIM, t, None, None, state)
    index = state.indices if keep else np.squeeze(state.indices, axis=axis)
    return _MaxMin(values, _leaf(np.array(index, dtype=_INT64, order='C'), False))


class Size(tuple):
    """A tensor's shape as ``Tensor.size()`` gives it: a tuple of ints, as
    PyTorch's torch.Size."""
    __slots__ = ()

    def numel(self):
        """The number of elements of a tensor of this shape."""
        n = 1
        for d in self:
            n *= d
        return n

    def __repr__(self):
        return f"Size({list(self)})"


class _HandBuiltTensor(Tensor):
    """A Tensor node whose rule is Python code (the output of a
    microgrid.autograd.Function), tracked by the cyclic garbage collector:
    its rule may hold the node itself (a saved output)."""
    __slots__ = ("_gc",)     # a slot of its own makes the type garbage-collected


gc_node_type(_HandBuiltTensor)


def _custom_tensor(data, tuple parents, object rule, str op, bint requires_grad):
    """A CUSTOM Tensor node holding a copy of ``data``, of ``parents``
    (nodes), whose rule is ``rule``."""
    cdef Tensor out = _HandBuiltTensor.__new__(_HandBuiltTensor)
    out._data = _to_array(data, 'data')
    out.seq = next_seq()
    out.op = OP_CUSTOM
    out.args = parents
    out.b = op
    out.a = rule
    out.requires_grad = requires_grad
    return out


class _MaxMin(tuple):
    """(values, indices), as PyTorch's max/min with a dim return them; the
    indices are an int64 tensor."""
    __slots__ = ()

    def __new__(cls, values, indices):
        return tuple.__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


cdef tuple _index_key(object key):
    """The key numpy should see, and whether it is basic indexing (each
    element picked at most once, so backward may add with ``+=``)."""
    parts = key if type(key) is tuple else (key,)
    basic = True
    out = []
    for k in parts:
        if isinstance(k, Tensor) and not _floating(k):
            out.append((<Tensor>k)._data)      # an int64 or bool tensor indexes as its array
            basic = False
            continue
        if isinstance(k, (Tensor, Value)):
            raise TypeError(
                f"Tensor index: index with ints, slices, int64 or bool tensors or integer arrays, "
                f"not a float {type(k).__name__}; convert it with .long()")
        if k is None or k is Ellipsis or isinstance(k, slice) or _is_int(k):
            out.append(k)
        else:
            arr = np.asarray(k)
            if arr.dtype.kind not in 'biu':
                raise TypeError(f"Tensor index: index arrays must hold integers or booleans, got dtype {arr.dtype}")
            out.append(arr)
            basic = False
    return (tuple(out) if type(key) is tuple else out[0]), basic


cdef bint _flag(object x, str where) except -1:
    if isinstance(x, (bool, np.bool_)) or x in (0, 1):
        return bool(x)
    raise TypeError(f"{where} must be a bool, got {type(x).__name__}")


# ---------------------------------------------------------------------------
# Constructors

def tensor(data, dtype=None, requires_grad=False):
    """A leaf Tensor holding a copy of ``data`` (array-like): int64 for
    integers, bool for bools, float64 otherwise, or ``dtype``; a Tensor's
    copy keeps its dtype.  Only a float64 tensor can require grad."""
    return _make(_real_array(data, 'tensor(data)'), dtype, requires_grad, 'tensor')


def zeros(*shape, dtype=None, requires_grad=False):
    shape = _shape_arg(shape, 'zeros(shape)')
    if any(n < 0 for n in shape):
        raise ValueError(f"zeros(shape): negative dimension in {shape}")
    return _make(np.zeros(shape), dtype, requires_grad, 'zeros')


def ones(*shape, dtype=None, requires_grad=False):
    shape = _shape_arg(shape, 'ones(shape)')
    if any(n < 0 for n in shape):
        raise ValueError(f"ones(shape): negative dimension in {shape}")
    return _make(np.ones(shape), dtype, requires_grad, 'ones')


def randn(*shape, requires_grad=False, seed=None):
    """Standard normal samples: numpy's default_rng(seed), or without a seed
    the Generator that ``microgrid.manual_seed`` seeds."""
    shape = _shape_arg(shape, 'randn(shape)')
    if any(n < 0 for n in shape):
        raise ValueError(f"randn(shape): negative dimension in {shape}")
    if seed is not None and not _is_int(seed):
        raise TypeError(f"randn(seed=...) takes an int or None, got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ValueError(f"randn(seed=...) must be non-negative, got {seed}")
    if seed is None:
        from microgrid.nn import default_generator   # nn imports this module
        rng = default_generator()
    else:
        rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape)
    # np.array, not np.ascontiguousarray: randn() is 0-d, not shape (1,)
    return _leaf(np.array(data, dtype=_float64, order='C'), _flag(requires_grad, 'requires_grad'))


def stack(tensors, dim=0):
    """A Tensor from a sequence of Values (a 1-d tensor whose gradient flows
    back to each Value) or of same-shape Tensors joined along a new ``dim``."""
    items = list(tensors) if not isinstance(tensors, (Tensor, Value)) else None
    if items is None:
        raise TypeError("stack(tensors) takes a sequence of Values or Tensors")
    if not items:
        raise ValueError("stack(tensors) needs at least one element")
    if all([isinstance(x, Value) for x in items]):
        _axis(dim, 1, 'stack')
        return new_node(T_STACK_VALUES, None, None, tuple(items), None)
    kind = Value if isinstance(items[0], Value) else Tensor   # element 0 sets the kind
    for i, x in enumerate(items):
        if not isinstance(x, kind):
            raise TypeError(
                f"stack(tensors): element {i} is a {type(x).__name__}, element 0 a "
                f"{type(items[0]).__name__}; give all Values or all Tensors")
    shape = (<Tensor>items[0])._data.shape
    for i, x in enumerate(items):
        if (<Tensor>x)._data.shape != shape:
            raise ValueError(
                f"stack(tensors): element {i} has shape {(<Tensor>x)._data.shape}, element 0 has {shape}")
    axis = _axis(dim, len(shape) + 1, 'stack')
    return new_node(T_STACK, None, None, tuple(items), axis)


def concatenate(tensors, dim=0):
    """Tensors joined along an existing dimension ``dim``."""
    if isinstance(tensors, (Tensor, Value)):
        raise TypeError("concatenate(tensors) takes a sequence of Tensors")
    items = list(tensors)
    if not items:
        raise ValueError("concatenate(tensors) needs at least one tensor")
    for i, x in enumerate(items):
        if not isinstance(x, Tensor):
            raise TypeError(f"concatenate(tensors): element {i} is a {type(x).__name__}, not a Tensor")
    shape = (<Tensor>items[0])._data.shape
    if len(shape) == 0:
        raise ValueError("concatenate(tensors): 0-d tensors cannot be concatenated; use stack")
    axis = _axis(dim, len(shape), 'concatenate')
    for i, x in enumerate(items):
        s = (<Tensor>x)._data.shape
        if len(s) != len(shape) or s[:axis] + s[axis + 1:] != shape[:axis] + shape[axis + 1:]:
            raise ValueError(
                f"concatenate(tensors): element {i} has shape {s}, which does not match "
                f"element 0's {shape} outside dim {axis}")
    return new_node(T_CONCAT, None, None, tuple(items), axis)


cat = concatenate


def matmul(input, other):
    """``input @ other`` with numpy's matmul rules (1-d, 2-d, batched)."""
    a = _operand(input)
    if a is None:
        raise TypeError(f"matmul(input) takes a Tensor or an array, got {type(input).__name__}")
    return (<Tensor>a).matmul(other)


def where(condition, input, other):
    """``input`` where ``condition`` (a bool tensor or array) holds and
    ``other`` elsewhere, broadcast together; each element's gradient goes to
    the operand it was taken from."""
    if isinstance(condition, Tensor):
        cond = (<Tensor>condition)._data
    elif isinstance(condition, (_ndarray, list, tuple, bool, np.bool_)):
        cond = np.asarray(condition)
    else:
        raise TypeError(f"where(condition) must be a bool tensor or array, got {type(condition).__name__}")
    if cond.dtype != _BOOL:
        raise TypeError(f"where(condition) must hold bools, got dtype {cond.dtype}; compare first (x > 0)")
    a = _operand(input)
    b = _operand(other)
    for name, x, o in (('input', input, a), ('other', other, b)):
        if o is None:
            raise TypeError(f"where({name}) takes a Tensor, a Value, a number or an array, got {type(x).__name__}")
    try:
        _broadcast_shape(cond.shape, _broadcast_shape((<Tensor>a)._data.shape, (<Tensor>b)._data.shape))
    except ValueError:
        raise ValueError(f"where: shapes {cond.shape} (condition), {(<Tensor>a)._data.shape} (input) and "
                         f"{(<Tensor>b)._data.shape} (other) cannot be broadcast together") from None
    return new_node(T_WHERE, a, b, None, cond)

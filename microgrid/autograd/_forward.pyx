# distutils: language = c++
# cython: language_level=3
"""Forward-mode differentiation over built graphs, in compiled code.

Two sweeps over the topological order of a graph that already exists (no
node is added to it, no reverse graph is built):

- ``tangents(roots, seeds)``: the tangent of each root along tangents given
  for some nodes of its graph (a Jacobian-vector product).  A node's
  tangent is the sum over its operands of the op table's local derivative
  (csrc/mg_ops.def) times the operand's tangent.  Value nodes are swept in
  C over flat arrays.  Tensor nodes go by their op: elementwise rows through
  the same rows, ops that are linear in their operands (reductions by sum
  and mean, shape ops, average pooling) through their own forward rule
  applied to the tangents, bilinear products (matmul, linear, convolution)
  through their forward rule term by term; any other tensor op is refused.
- ``hvp(root, inputs, v)``: the gradient of a scalar graph of Values and its
  Hessian times ``v``, by forward-over-reverse: one tangent sweep, then one
  reverse sweep carrying each node's gradient together with the gradient's
  tangent, the local derivatives evaluated on dual numbers
  (csrc/mg_dual.hpp, the same rows expanded over duals).

Nodes whose tangent is exactly zero contribute nothing (see mg_dual.hpp).
"""

cimport cython
from cpython.ref cimport PyObject
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.math cimport NAN

from microgrid.core._engine cimport (
    Node, Value, operands, second_parent, mg_op_kind, mg_op_operands, mg_local_grads, OP_LEAF, OP_CUSTOM, OP_SUM,
    OP_MEAN, OP_DOT, OP_ELEMENT, OP_COUNT, KIND_BINARY, KIND_UNARY, KIND_UNARY_C)
from microgrid.tensors._tensor cimport (
    Tensor, T_SUM, T_MEAN, T_RESHAPE, T_PERMUTE, T_INDEX, T_CONCAT, T_STACK, T_PAD,
    T_FROM_VALUE, T_STACK_VALUES, T_AVG_POOL2D, T_MATMUL, T_LINEAR, T_CONV2D,
    T_CONV_TRANSPOSE2D, T_SCATTER)
from microgrid.core._engine import topological_order, _OP_SYMBOLS
from microgrid.tensors._tensor import _node

cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "mg_dual.hpp" namespace "mg_fwd":
    cdef cppclass dual:
        double v
        double d
        dual()
        dual(double, double)
    cdef struct vocabulary_entry:
        const char* name
        int code
    const vocabulary_entry* vocabulary
    double term(double derivative, double tangent) nogil
    void local_grads(int op, dual a, dual b, dual out, double c, dual* da, dual* db) nogil
    dual forward(int op, dual a, dual b, double c) nogil


# ---------------------------------------------------------------------------
# The rows over duals, one op at a time (for the tests and explain-like tools)

def dual_local_grads(int op, double a, double ta, double b, double tb, double out,
                     double tout, double c=0.0):
    """The local derivatives of row ``op`` at the dual operands (a + ta e,
    b + tb e) and dual value (out + tout e), with constant ``c``: a tuple
    (da, tangent of da, db, tangent of db); db's pair is NaN for an op that
    reads one operand."""
    cdef dual da, db
    _check_row(op)
    db = dual(NAN, NAN)
    local_grads(op, dual(a, ta), dual(b, tb), dual(out, tout), c, &da, &db)
    return (da.v, da.d, db.v, db.d)


def dual_forward(int op, double a, double ta, double b=0.0, double tb=0.0, double c=0.0):
    """The forward formula of row ``op`` evaluated on duals: (value, tangent)
    by the vocabulary's chain rule alone (the derivative rows are not used)."""
    cdef dual r
    _check_row(op)
    r = forward(op, dual(a, ta), dual(b, tb), c)
    return (r.v, r.d)


def dual_vocabulary():
    """The vocabulary functions whose dual form comes from a row:
    {name: op code}."""
    cdef Py_ssize_t i = 0
    out = {}
    while vocabulary[i].name != NULL:
        out[(<bytes>vocabulary[i].name).decode()] = vocabulary[i].code
        i += 1
    return out


cdef int _check_row(int op) except -1:
    if op < 0 or op >= OP_COUNT or mg_op_operands(op) == 0:
        raise ValueError(f"op {op} is not the code of a row with a scalar rule")
    return 0


# ---------------------------------------------------------------------------
# A graph's nodes in topological order, as flat arrays

# tensor ops whose value is linear in all their operands together: the
# tangent is the op applied to the tangents
cdef frozenset _LINEAR = frozenset([T_SUM, T_MEAN, T_RESHAPE, T_PERMUTE, T_INDEX, T_SCATTER,
                                    T_CONCAT, T_STACK, T_PAD, T_FROM_VALUE, T_STACK_VALUES,
                                    T_AVG_POOL2D])
# tensor ops x * w (+ bias) bilinear in x and w for a product *, bias args[0]
cdef frozenset _BILINEAR = frozenset([T_MATMUL, T_LINEAR, T_CONV2D, T_CONV_TRANSPOSE2D])


cdef object _no_custom_rule(Node node):
    return NotImplementedError(
        f"forward-mode AD: a node ('{node._op}') is a custom op (a Function, or a "
        "Value built by Value(data, _children, _op)) and has no forward-mode rule")


cdef inline double* _buffer(object arr) except NULL:
    """The elements of a C-contiguous float64 ndarray (borrowed: the caller
    keeps ``arr`` alive)."""
    if not (type(arr) is np.ndarray and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>arr)
            and cnp.PyArray_TYPE(<cnp.ndarray>arr) == cnp.NPY_DOUBLE):
        raise SystemError("forward-mode AD: a tangent buffer is not a C-contiguous float64 array")
    return <double*>cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef object _spread(object arr, tuple shape):
    """``arr`` broadcast to ``shape``, as its own C-contiguous float64 buffer."""
    return np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=np.float64)


# node -> position in the order: open addressing over the node's address
cdef inline size_t _slot(PyObject* key, size_t mask) noexcept nogil:
    cdef unsigned long long h = <unsigned long long><size_t>key
    h ^= h >> 17
    h *= 0x9E3779B97F4A7C15ULL
    return <size_t>(h >> 20) & mask


# The position map's entries: a node's address and its position.
ctypedef struct Entry:
    PyObject* key
    int position


# One block of memory holds an order's arrays; the block is kept for the next
# order (a large graph would otherwise pay page faults for fresh memory on
# every call).  An order takes the spare block, leaving NULL, and hands it
# back when it is freed.
cdef char* _spare = NULL
cdef size_t _spare_size = 0


cdef char* _take_block(size_t size, size_t* got) except NULL:
    global _spare, _spare_size
    cdef char* block
    if _spare != NULL and _spare_size >= size:
        block = _spare
        got[0] = _spare_size
        _spare = NULL
        _spare_size = 0
        return block
    block = <char*>malloc(size)
    if block == NULL:
        raise MemoryError()
    got[0] = size
    return block


cdef void _give_block(char* block, size_t size) noexcept:
    global _spare, _spare_size
    if block == NULL:
        return
    if size > _spare_size:
        free(_spare)
        _spare = block
        _spare_size = size
    else:
        free(block)


@cython.final
cdef class _Order:
    """The nodes the roots depend on, every one (whatever requires_grad),
    roots' ancestors first, with each node's op, operand positions, constant
    and (for Values) value; then the tangent of each node, and for hvp the
    gradient and its tangent."""
    cdef list nodes                 # owns the nodes
    cdef Py_ssize_t n
    cdef char* block                # every array below lives in it
    cdef size_t block_size
    cdef Entry* table               # the position map
    cdef size_t mask
    cdef double* aux
    cdef double* val
    cdef double* tan                # a Value's tangent (0 where it has none)
    cdef double* grad               # hvp: the gradient of the root
    cdef double* gtan               # hvp: its tangent
    cdef int* a                     # position of operand a, or -1 (none, or not a node)
    cdef int* b
    cdef int* start                 # operands in args: args[start[i]:start[i + 1]]
    cdef int* args
    cdef unsigned short* op
    cdef unsigned char* is_value
    cdef unsigned char* has         # the node depends on a seeded node
    cdef unsigned char* seeded
    cdef list ttan                  # a Tensor's tangent (an ndarray) or None

    def __dealloc__(self):
        _give_block(self.block, self.block_size)

    cdef int find(self, object node) noexcept:
        """The position of ``node`` in the order, or -1."""
        cdef PyObject* key = <PyObject*>node
        cdef size_t s = _slot(key, self.mask)
        while self.table[s].key != NULL:
            if self.table[s].key == key:
                return self.table[s].position
            s = (s + 1) & self.mask
        return -1

    cdef void _insert(self, object node, int position) noexcept:
        cdef PyObject* key = <PyObject*>node
        cdef size_t s = _slot(key, self.mask)
        while self.table[s].key != NULL:
            s = (s + 1) & self.mask
        self.table[s].key = key
        self.table[s].position = position

    cdef int _allocate(self, Py_ssize_t n, Py_ssize_t n_args, size_t cap) except -1:
        """Carve the arrays out of one block (widest first, so each is aligned)."""
        cdef size_t k = max(n, 1)
        cdef size_t size = (cap * sizeof(Entry) + 5 * k * sizeof(double)
                            + (3 * k + 1 + max(n_args, 1)) * sizeof(int)
                            + k * sizeof(unsigned short) + 3 * k)
        cdef char* p
        if n >= 0x7fffffff or n_args >= 0x7fffffff:
            raise MemoryError("forward-mode AD: the graph has too many nodes")
        self.block = _take_block(size, &self.block_size)
        p = self.block
        self.table = <Entry*>p
        memset(p, 0, cap * sizeof(Entry))
        p += cap * sizeof(Entry)
        self.aux = <double*>p
        self.val = self.aux + k
        self.tan = self.val + k
        self.grad = self.tan + k
        self.gtan = self.grad + k
        memset(self.tan, 0, 3 * k * sizeof(double))
        p += 5 * k * sizeof(double)
        self.a = <int*>p
        self.b = self.a + k
        self.start = self.b + k
        self.args = self.start + k + 1
        p += (3 * k + 1 + max(n_args, 1)) * sizeof(int)
        self.op = <unsigned short*>p
        p += k * sizeof(unsigned short)
        self.is_value = <unsigned char*>p
        self.has = self.is_value + k
        self.seeded = self.has + k
        memset(self.has, 0, 2 * k)
        return 0

    cdef int build(self, roots) except -1:
        cdef list sorts = [topological_order(r) for r in roots]
        cdef Py_ssize_t bound = 0, n_args = 0, i, m
        cdef int k
        cdef size_t cap = 16
        cdef Node node
        cdef tuple args
        for s in sorts:
            bound += len(<list>s)
        while cap < 2 * <size_t>bound:
            cap *= 2
        self.mask = cap - 1
        if len(sorts) == 1:
            self.nodes = sorts[0]       # one sort lists each node once
        else:
            self.nodes = []
            seen = set()
            for s in sorts:
                for x in <list>s:
                    if id(x) not in seen:
                        seen.add(id(x))
                        self.nodes.append(x)
        self.n = len(self.nodes)
        for i in range(self.n):
            args = operands(<Node>self.nodes[i])
            if args is not None:
                n_args += len(args)
        self._allocate(self.n, n_args, cap)
        for i in range(self.n):
            self._insert(self.nodes[i], <int>i)
        k = 0
        for i in range(self.n):
            node = <Node>self.nodes[i]
            self.op[i] = node.op
            self.is_value[i] = isinstance(node, Value)
            if self.is_value[i]:
                self.val[i] = (<Value>node).data
                self.aux[i] = (<Value>node).aux
            else:
                self.val[i] = 0.0
                self.aux[i] = 0.0
            self.a[i] = self.find(node.a) if node.a is not None else -1
            # (a hand-built Tensor keeps its _op string in b: not a node, not found)
            self.b[i] = self.find(second_parent(node)) if second_parent(node) is not None else -1
            self.start[i] = k
            args = operands(node)
            if args is not None:
                for m in range(len(args)):
                    self.args[k] = self.find(args[m])
                    k += 1
        self.start[self.n] = k
        self.ttan = None
        return 0

    cdef int seed(self, dict seeds) except -1:
        """Give the seeded nodes of the graph their tangents (a float for a
        Value, an array for a Tensor); a seeded node ignores its operands."""
        cdef Py_ssize_t i
        for node, tangent in seeds.items():
            i = self.find(node)
            if i < 0:
                continue
            self.seeded[i] = 1
            self.has[i] = 1
            if self.is_value[i]:
                self.tan[i] = <double>tangent
            else:
                self._tensor_tangents()[i] = tangent
        return 0

    cdef list _tensor_tangents(self):
        if self.ttan is None:
            self.ttan = [None] * self.n
        return self.ttan

    cdef int sweep(self, bint values_only) except -1:
        """Every node's tangent, in topological order.  ``values_only``: a
        tensor node that depends on a seeded node is an error (hvp)."""
        cdef Py_ssize_t i
        for i in range(self.n):
            if self.seeded[i] or self.op[i] == OP_LEAF:
                continue
            if self.is_value[i]:
                self._value_tangent(i)
            elif values_only:
                if self._any_operand_has(i):
                    raise NotImplementedError(
                        f"the Hessian-vector product covers graphs of Values: node "
                        f"#{(<Tensor>self.nodes[i]).seq} is a Tensor ('{_OP_SYMBOLS[self.op[i]]}')"
                        f" that depends on the inputs")
            elif self._any_operand_has(i):
                if (<Tensor>self.nodes[i]).written_seq > (<Tensor>self.nodes[i]).seq:
                    raise RuntimeError(
                        f"forward-mode AD: Tensor node #{(<Tensor>self.nodes[i]).seq} "
                        f"('{_OP_SYMBOLS[self.op[i]]}') was changed in place by an op that "
                        "recorded no node (nothing it involved requires grad), so its tangent "
                        "cannot follow; use the out-of-place op")
                self._tensor_tangents()[i] = self._tensor_tangent(i)
                self.has[i] = 1
        return 0

    cdef bint _any_operand_has(self, Py_ssize_t i) noexcept:
        cdef Py_ssize_t k
        if self.a[i] >= 0 and self.has[self.a[i]]:
            return True
        if self.b[i] >= 0 and self.has[self.b[i]]:
            return True
        for k in range(self.start[i], self.start[i + 1]):
            if self.args[k] >= 0 and self.has[self.args[k]]:
                return True
        return False

    cdef int _value_tangent(self, Py_ssize_t i) except -1:
        """d out = sum of (d out / d operand) * d operand, the derivatives
        from the op's row (a fused node: its own sums)."""
        cdef unsigned short op = self.op[i]
        cdef Py_ssize_t pa = self.a[i], pb = self.b[i], k, s = self.start[i], e = self.start[i + 1]
        cdef Py_ssize_t half, w, x
        cdef int operands = mg_op_operands(op)
        cdef double da, db, t = 0.0
        cdef double* val = self.val
        cdef double* tan = self.tan
        cdef unsigned char* has = self.has
        cdef bint any_ = False
        if operands:
            if operands == 2:
                if not (has[pa] or has[pb]):
                    return 0
                mg_local_grads(op, val[pa], val[pb], val[i], self.aux[i], &da, &db)
                t = term(da, tan[pa]) + term(db, tan[pb])
            else:
                if not has[pa]:
                    return 0
                mg_local_grads(op, val[pa], 0.0, val[i], self.aux[i], &da, &db)
                t = term(da, tan[pa])
            tan[i] = t
            has[i] = 1
            return 0
        if op == OP_SUM or op == OP_MEAN:
            for k in range(s, e):
                if has[self.args[k]]:
                    t += tan[self.args[k]]
                    any_ = True
            if any_:
                tan[i] = t if op == OP_SUM else t / (e - s)
                has[i] = 1
            return 0
        if op == OP_DOT:
            half = (e - s) // 2
            for k in range(s, s + half):
                w = self.args[k]
                x = self.args[k + half]
                if has[w]:
                    t += term(val[x], tan[w])
                    any_ = True
                if has[x]:
                    t += term(val[w], tan[x])
                    any_ = True
            if pa >= 0 and has[pa]:
                t += tan[pa]
                any_ = True
            if any_:
                tan[i] = t
                has[i] = 1
            return 0
        if op == OP_ELEMENT:
            if pa >= 0 and has[pa]:
                tan[i] = _buffer(self.ttan[pa])[<Py_ssize_t>self.aux[i]]
                has[i] = 1
            return 0
        if op == OP_CUSTOM:
            if self._any_operand_has(i):
                raise _no_custom_rule(self.nodes[i])
            return 0
        raise SystemError(f"forward-mode AD: unknown scalar op code {op}")

    # -- tensor nodes ---------------------------------------------------------

    cdef object _carrier(self, object operand, Py_ssize_t p):
        """A leaf holding the tangent of ``operand`` (position ``p``), zeros
        if it has none, for applying an op's forward rule to tangents."""
        if p < 0:
            return operand
        if self.is_value[p]:
            return Value(self.tan[p], requires_grad=False)
        t = self.ttan[p] if self.ttan is not None else None
        return Tensor(np.zeros((<Tensor>operand)._data.shape) if t is None else t)

    cdef bint _has(self, Py_ssize_t p) noexcept:
        return p >= 0 and self.has[p]

    cdef object _tensor_tangent(self, Py_ssize_t i):
        cdef Tensor t = <Tensor>self.nodes[i]
        cdef unsigned short op = t.op
        cdef int kind = mg_op_kind[op]
        cdef Py_ssize_t k
        if op == OP_CUSTOM:
            raise _no_custom_rule(t)
        if kind == KIND_BINARY or kind == KIND_UNARY or kind == KIND_UNARY_C:
            return self._elementwise_tangent(i, t, kind == KIND_BINARY)
        if op in _LINEAR:
            args = None
            if t.args is not None:
                args = tuple([self._carrier(t.args[k - self.start[i]], self.args[k])
                              for k in range(self.start[i], self.start[i + 1])])
            return (<Tensor>_node(op, self._carrier(t.a, self.a[i]),
                                  self._carrier(t.b, self.b[i]), args, t.ctx))._data
        if op in _BILINEAR:
            # d(x * w + bias) = dx * w + x * dw + dbias, * the op's product
            bias = t.args[0] if t.args is not None else None
            pbias = self.args[self.start[i]] if bias is not None else -1
            out = None
            if self._has(self.a[i]) or self._has(pbias):
                out = (<Tensor>_node(op, self._carrier(t.a, self.a[i]), t.b,
                                     None if bias is None else (self._carrier(bias, pbias),),
                                     t.ctx))._data
            if self._has(self.b[i]):
                r = (<Tensor>_node(op, t.a, self._carrier(t.b, self.b[i]), None, t.ctx))._data
                out = r if out is None else np.add(out, r, out=out)
            return out
        raise NotImplementedError(
            f"forward-mode AD has no tangent rule for the tensor op '{_OP_SYMBOLS[op]}' "
            "(it covers the elementwise ops, sum, mean, the shape ops, scatter, matmul, linear, "
            "conv2d, conv_transpose2d and avg_pool2d)")

    cdef object _elementwise_tangent(self, Py_ssize_t i, Tensor t, bint binary):
        """The row's local derivatives, element by element over the broadcast
        operands, times the operands' tangents."""
        cdef unsigned short op = t.op
        cdef double c = t.aux, da, db, r
        cdef Py_ssize_t k, n
        cdef Py_ssize_t pa = self.a[i], pb = self.b[i] if binary else -1
        cdef double *x
        cdef double *y = NULL
        cdef double *o
        cdef double *ta = NULL
        cdef double *tb = NULL
        cdef double *dst
        out = t._data
        shape = out.shape
        xa = _spread((<Tensor>t.a)._data, shape)
        ya = _spread((<Tensor>t.b)._data, shape) if binary else None
        ta_arr = _spread(self.ttan[pa], shape) if self._has(pa) else None
        tb_arr = _spread(self.ttan[pb], shape) if self._has(pb) else None
        result = np.empty(shape)
        n = result.size
        x = _buffer(xa)
        o = _buffer(out)
        dst = _buffer(result)
        if ya is not None:
            y = _buffer(ya)
        if ta_arr is not None:
            ta = _buffer(ta_arr)
        if tb_arr is not None:
            tb = _buffer(tb_arr)
        for k in range(n):
            mg_local_grads(op, x[k], y[k] if y != NULL else 0.0, o[k], c, &da, &db)
            r = 0.0
            if ta != NULL:
                r = term(da, ta[k])
            if tb != NULL:
                r = r + term(db, tb[k])
            dst[k] = r
        return result


# ---------------------------------------------------------------------------
# Entry points (microgrid.autograd.forward_ad validates the arguments)

def tangents(roots, dict seeds):
    """The tangent of each of ``roots`` (a float for a Value, an ndarray for a
    Tensor, None for a root that depends on no seeded node), along ``seeds``:
    {node: tangent} (a float for a Value, a C-contiguous float64 array of
    the node's shape for a Tensor)."""
    cdef _Order order = _Order.__new__(_Order)
    cdef Py_ssize_t i
    roots = list(roots)
    order.build(roots)
    order.seed(seeds)
    order.sweep(False)
    out = []
    for r in roots:
        i = order.find(r)
        if not order.has[i]:
            out.append(None)
        elif order.is_value[i]:
            out.append(order.tan[i])
        else:
            out.append(order.ttan[i])
    return out


def hvp(Value root, inputs, v):
    """(value, gradient, Hessian times v) of the scalar ``root`` with respect
    to the leaf Values ``inputs`` (distinct), along ``v`` (floats): tuples of
    floats, one per input (zeros for an input the root does not depend on)."""
    cdef _Order order = _Order.__new__(_Order)
    cdef Py_ssize_t n, i, k, p, q, s, e, half, w, x
    cdef double g, gd, y, yd
    cdef double* grad
    cdef double* gtan
    cdef double* val
    cdef double* tan
    cdef unsigned char* has
    cdef unsigned short op
    cdef int operands
    cdef dual da, db
    inputs = list(inputs)
    v = [float(t) for t in v]
    order.build([root])
    n = order.n
    order.seed({node: t for node, t in zip(inputs, v)})
    order.sweep(True)
    val, tan, has = order.val, order.tan, order.has
    grad, gtan = order.grad, order.gtan
    grad[n - 1] = 1.0
    for i in range(n - 1, -1, -1):
        op = order.op[i]
        if not has[i] or op == OP_LEAF or order.seeded[i]:
            continue
        g = grad[i]
        gd = gtan[i]
        operands = mg_op_operands(op)
        if operands:
            p = order.a[i]
            q = order.b[i] if operands == 2 else p
            local_grads(op, dual(val[p], tan[p]), dual(val[q], tan[q]), dual(val[i], tan[i]),
                        order.aux[i], &da, &db)
            if has[p]:
                grad[p] += g * da.v
                gtan[p] += term(da.v, gd) + term(da.d, g)
            if operands == 2 and has[q]:
                grad[q] += g * db.v
                gtan[q] += term(db.v, gd) + term(db.d, g)
            continue
        s = order.start[i]
        e = order.start[i + 1]
        if op == OP_SUM or op == OP_MEAN:
            y, yd = g, gd
            if op == OP_MEAN:
                y = g / (e - s)
                yd = gd / (e - s)
            for k in range(s, e):
                p = order.args[k]
                if has[p]:
                    grad[p] += y
                    gtan[p] += yd
        elif op == OP_DOT:
            half = (e - s) // 2
            for k in range(s, s + half):
                w = order.args[k]
                x = order.args[k + half]
                if has[w]:
                    grad[w] += g * val[x]
                    gtan[w] += term(val[x], gd) + term(tan[x], g)
                if has[x]:
                    grad[x] += g * val[w]
                    gtan[x] += term(val[w], gd) + term(tan[w], g)
            p = order.a[i]
            if p >= 0 and has[p]:
                grad[p] += g
                gtan[p] += gd
        else:
            # ELEMENT and CUSTOM nodes that depend on the inputs were refused by the sweep
            raise SystemError(f"hvp: unexpected scalar op code {op}")
    grads, hvps = [], []
    for node in inputs:
        i = order.find(node)
        grads.append(grad[i] if i >= 0 else 0.0)
        hvps.append(gtan[i] if i >= 0 else 0.0)
    return root.data, tuple(grads), tuple(hvps)

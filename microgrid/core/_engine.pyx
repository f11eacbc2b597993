# cython: language_level=3
"""The scalar engine: the node base of every graph node, the ``Value`` scalar
node, the fused n-ary scalar ops and ``backward()``.

Every node is a compiled object with C fields (no ``__dict__``, no closure).
``backward()`` sorts the graph with an explicit stack, marking visits with an
epoch stamp, then sweeps it once in reverse, switching on the op code; the
forward and local-derivative formulas live in csrc/mg_ops.h.  Nodes are not tracked by
Python's cyclic garbage collector (a graph has no cycles), and a node's
parents are released through a work list, so freeing a very deep graph never
recurses in C.
"""

cimport cython
from cpython.ref cimport PyObject, Py_INCREF, Py_XINCREF
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.sequence cimport PySequence_Fast_GET_ITEM
from cpython.list cimport PyList_GET_ITEM
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcmp, memset
from libc.math cimport fabs, isfinite, NAN

import numbers

cdef extern from "Python.h":
    ctypedef struct PyTupleObject:
        PyObject* ob_item[1]

cdef extern from "mg_ops.h":
    # the commonest rows by name (_op_forward, _binary_grads, _unary_grad),
    # the others through the table's switch, called out of line
    double mg_f_MUL(double a, double b) noexcept nogil
    double mg_f_ADD(double a, double b) noexcept nogil
    double mg_f_RELU(double a, double c) noexcept nogil
    double mg_forward_call(int op, double a, double b, double c) noexcept nogil
    void mg_local_grads_call(int op, double a, double b, double out, double c,
                             double* da, double* db) noexcept nogil
    double mg_da_RELU(double a, double out, double c) noexcept nogil
    double mg_da_MUL(double a, double b, double out) noexcept nogil
    double mg_db_MUL(double a, double b, double out) noexcept nogil
    double mg_da_ADD(double a, double b, double out) noexcept nogil
    double mg_db_ADD(double a, double b, double out) noexcept nogil
    ctypedef struct mg_op_row:
        int code
        int kind
        int base
        const char* code_name
        const char* name
        const char* symbol
        const char* torch
        const char* param
        double param_default
        const char* forward
        const char* grad_a
        const char* grad_b
        const char* show
        const char* show_grad_a
        const char* show_grad_b
    const mg_op_row* mg_op_rows


cdef inline PyObject** _tuple_items(tuple t) noexcept:
    """The item array of a tuple: borrowed references, read without refcounting."""
    return &(<PyTupleObject*>t).ob_item[0]



cdef extern from "Python.h":
    ctypedef int (*visitproc)(PyObject*, void*)
    ctypedef int (*traverseproc)(PyObject*, visitproc, void*)
    ctypedef int (*inquiry)(PyObject*)
    ctypedef struct PyTypeObject:
        PyObject* tp_dict
        unsigned long tp_flags
        traverseproc tp_traverse
        inquiry tp_clear
        void* tp_new
        void* tp_vectorcall
    void PyType_Modified(PyTypeObject* t)
    unsigned long Py_TPFLAGS_IMMUTABLETYPE
    Py_ssize_t PyTuple_GET_SIZE(PyObject* p)
    PyObject* PyDict_GetItemString(PyObject* d, const char* key)
    PyObject* _type_of "(PyObject*)Py_TYPE"(PyObject* o)
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf)
    PyObject* PyObject_Vectorcall(PyObject* callable, PyObject** args, size_t nargsf,
                                  PyObject* kwnames)
    int PyUnicode_CompareWithASCIIString(PyObject* s, const char* text)
    int PyObject_GC_IsTracked(object o)
    void PyObject_GC_UnTrack(void* o)
    object PyObject_GenericGetDict(object o, void* context)

cdef extern from "mg_slab.h":
    void* mg_value_alloc
    void* mg_value_free
    ctypedef struct mg_slabs:
        size_t n_empty
        size_t n_slabs
    mg_slabs mg_value_slabs
    size_t mg_slab_trim(mg_slabs* a)
    int MG_SLAB_BYTES

cdef extern from *:
    ctypedef struct PyTypeObject_alloc "PyTypeObject":
        void* tp_alloc
        void* tp_free
        void* tp_dealloc

# The deallocators below work on a node whose count has reached zero, so
# they must not make Python references to it: they read its fields through
# the C record Cython generates for Node, and count references with the C
# macros themselves.
cdef extern from *:
    """
    typedef struct __pyx_obj_9microgrid_4core_7_engine_Node mg_node_record;
    static inline void mg_free_object(PyObject *o) { Py_TYPE(o)->tp_free(o); }
    """
    ctypedef struct NodeRecord "mg_node_record":
        unsigned char flags
        PyObject* a
        PyObject* b
    void mg_free_object(PyObject* o) noexcept
    void _decref "Py_DECREF"(PyObject* o) noexcept
    void PyErr_Fetch(PyObject** t, PyObject** v, PyObject** tb) noexcept
    void PyErr_Restore(PyObject* t, PyObject* v, PyObject* tb) noexcept

# Values live in the slabs of csrc/mg_slab.h: one aligned cache line each, in
# creation order.  Set before any Value exists (each is freed by the
# allocator that made it).
(<PyTypeObject_alloc*>Value).tp_alloc = mg_value_alloc
(<PyTypeObject_alloc*>Value).tp_free = mg_value_free
(<PyTypeObject_alloc*>Value).tp_dealloc = <void*>_value_dealloc


def _release_node_memory():
    """Return the kept empty slabs of Value nodes to the system; the bytes
    released (microgrid.empty_cache calls it)."""
    return mg_slab_trim(&mg_value_slabs)


def _node_memory():
    """(slabs held, of which empty and kept, slab size in bytes)."""
    return mg_value_slabs.n_slabs, mg_value_slabs.n_empty, MG_SLAB_BYTES


ctypedef PyObject* (*mg_newfunc)(PyTypeObject*, PyObject*, PyObject*) noexcept
ctypedef PyObject* (*mg_vectorcall)(PyObject*, PyObject**, size_t, PyObject*) noexcept

# What ``._op`` reports for each op code (a op c with op ** appends c), and
# where a constant operand sits among ``_parents()`` (0: before ``a``, 1:
# after it), as micrograd would show it: both from the op table.
_OP_SYMBOLS = [(<bytes>mg_op_rows[i].symbol).decode() for i in range(OP_COUNT)]


# ---------------------------------------------------------------------------
# Module state

cdef unsigned long long _seq = 0          # creation order of nodes
cdef unsigned int _epoch = 0              # traversal stamp of the latest sort

cdef unsigned long long next_seq():
    global _seq
    _seq += 1
    return _seq


# The fields few nodes have, kept out of the node record: a node's label and
# the ``_op`` text of a hand-built Value, keyed by the node's address (the
# node's flag bits say it has an entry; its deallocator removes it).
cdef dict _labels = {}
cdef dict _op_texts = {}


cdef inline object _key(Node node):
    return <size_t><void*>node


cdef void _forget(PyObject* node) noexcept:
    """Drop the entries of ``node`` (being freed) from the side tables."""
    cdef NodeRecord* rec = <NodeRecord*>node
    cdef PyObject* etype
    cdef PyObject* evalue
    cdef PyObject* etb
    PyErr_Fetch(&etype, &evalue, &etb)      # a node may be freed while an exception is raised
    if rec.flags & F_LABELED:
        _labels.pop(<size_t>node, None)
    if rec.flags & F_OP_TEXT:
        _op_texts.pop(<size_t>node, None)
    rec.flags = 0
    PyErr_Restore(etype, evalue, etb)


cdef void _set_op_text(Node node, str text):
    if text:
        _op_texts[_key(node)] = text
        node.flags |= F_OP_TEXT


cdef str _op_text(Node node):
    """The ``_op`` text a hand-built node was given ('' if none)."""
    return _op_texts[_key(node)] if node.flags & F_OP_TEXT else ''


# Parents whose last owner is being freed wait here instead of being released
# from inside their child's deallocator, so releasing a chain is a loop.
cdef PyObject** _parked = NULL
cdef Py_ssize_t _parked_len = 0
cdef Py_ssize_t _parked_cap = 0
cdef bint _draining = False


cdef inline void _release(PyObject* o) noexcept:
    """Drop a freed node's reference to ``o`` (a parent, an operand tuple):
    if it is the last one, ``o`` goes onto the work list instead, released
    by _drain, so a deep graph is freed in a loop rather than by recursion."""
    global _parked, _parked_cap, _parked_len
    cdef PyObject** grown
    if o == NULL:
        return
    if o.ob_refcnt == 1:
        if _parked_len == _parked_cap:
            grown = <PyObject**>realloc(_parked, (2 * _parked_cap + 64) * sizeof(PyObject*))
            if grown == NULL:
                _decref(o)             # out of memory: plain release
                return
            _parked = grown
            _parked_cap = 2 * _parked_cap + 64
        _parked[_parked_len] = o       # the reference moves to the list
        _parked_len += 1
        return
    _decref(o)                         # someone else still owns it: no chain to unwind


cdef inline void _drain() noexcept:
    """Release the work list (unless an outer call is doing so): freeing a
    parked object may park its own parents, released by the same loop."""
    global _draining, _parked_len
    if _draining:
        return
    _draining = True
    while _parked_len:
        _parked_len -= 1
        _decref(_parked[_parked_len])
    _draining = False


cdef inline void _release_parents(PyObject* node) noexcept:
    """What a freed node lets go of: its side-table entries and its parents
    (through _release; the caller drains the work list)."""
    cdef NodeRecord* rec = <NodeRecord*>node
    cdef PyObject* a = rec.a
    cdef PyObject* b = rec.b
    if rec.flags & F_SIDE_TABLES:
        _forget(node)
    rec.a = rec.b = NULL
    _release(a)
    _release(b)


cdef void _value_dealloc(PyObject* o) noexcept:
    """Value's deallocator: its parents released through the work list, its
    slot given back (no Python-level code runs for a plain node)."""
    _release_parents(o)
    mg_free_object(o)
    _drain()


cdef inline bint _to_double(object x, double* out) except -1:
    """Store x as a C double if it is a real number; False if it is not one."""
    if type(x) is float:
        out[0] = PyFloat_AS_DOUBLE(x)
        return True
    if type(x) is int or isinstance(x, numbers.Real):
        out[0] = float(x)
        return True
    return False


# ---------------------------------------------------------------------------
# Grad mode: whether ops record the graph (``no_grad`` turns it off), per
# thread as in PyTorch.  The hot path reads one plain global, the number of
# threads that turned recording off, and looks at its own thread's flag only
# when that count is nonzero.

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #define MG_THREAD_LOCAL __declspec(thread)
    #else
    #define MG_THREAD_LOCAL __thread
    #endif
    static MG_THREAD_LOCAL int mg_grad_off = 0;   /* this thread records no graph */
    static int mg_grad_off_threads = 0;           /* threads with mg_grad_off set (under the GIL) */
    """
    int mg_grad_off
    int mg_grad_off_threads


cdef inline bint _recording() noexcept:
    return not (mg_grad_off_threads and mg_grad_off)


cdef bint grad_enabled() noexcept:
    return _recording()


cdef void make_leaf(Node node) noexcept:
    """Cut a node just built under no_grad from its parents: a leaf that
    requires no gradient (its value and any op state stay)."""
    node.a = None
    node.b = None
    if not isinstance(node, Value):
        (<ArrayNode>node).args = None
    node.op = OP_LEAF
    node.requires_grad = False
    node.flags &= ~(F_A_LEAF | F_B_LEAF)


def _set_grad_enabled(bint enabled):
    """Turn graph recording on or off for this thread; the previous state."""
    global mg_grad_off, mg_grad_off_threads
    cdef bint previous = not mg_grad_off
    if enabled and mg_grad_off:
        mg_grad_off = 0
        mg_grad_off_threads -= 1
    elif not enabled and not mg_grad_off:
        mg_grad_off = 1
        mg_grad_off_threads += 1
    return previous


def is_grad_enabled():
    """Whether ops record the graph in this thread (False inside no_grad)."""
    return not mg_grad_off


# ---------------------------------------------------------------------------
# Anomaly mode: name the first op whose forward or backward made NaN or inf

cdef bint _anomaly_mode = False


cdef str _node_name(Node node):
    label = node.label
    number = "" if isinstance(node, Value) else f" #{(<ArrayNode>node).seq}"
    return f"'{node._op}' node{number}" + (f" ({label})" if label else "")


def _non_finite(x):
    """The first non-finite number in x (a float or an array), or None."""
    if isinstance(x, float):
        return None if isfinite(x) else x
    import numpy
    bad = ~numpy.isfinite(x)
    return x[bad].flat[0] if bad.any() else None


cdef int check_forward(Node out) except -1:
    """In anomaly mode, raise if ``out``'s value is not finite."""
    bad = _non_finite(out.data) if _anomaly_mode else None
    if bad is not None:
        raise FloatingPointError(
            f"detect_anomaly: the forward pass of {_node_name(out)} produced {bad}")
    return 0


cdef int check_backward(Node node) except -1:
    """In anomaly mode, raise if ``node``'s rule left a non-finite gradient in
    a parent whose gradient was finite before."""
    for i, parent in enumerate(node._parents()):
        if parent.requires_grad:
            bad = _non_finite(parent.grad)
            if bad is not None and _non_finite(node.grad) is None:
                raise FloatingPointError(
                    f"detect_anomaly: the backward pass of {_node_name(node)} produced {bad} "
                    f"in the gradient of its input {i}")
    return 0


class detect_anomaly:
    """Context manager: inside it, any op whose forward or backward pass
    produces NaN or inf raises FloatingPointError naming the op.

        with microgrid.detect_anomaly():
            loss.backward()
    """

    def __init__(self, enabled=True):
        self.enabled = bool(enabled)

    def __enter__(self):
        global _anomaly_mode
        self.previous = _anomaly_mode
        _anomaly_mode = self.enabled
        return self

    def __exit__(self, *exc):
        global _anomaly_mode
        _anomaly_mode = self.previous
        return False


def is_anomaly_enabled():
    return bool(_anomaly_mode)


cdef bint anomaly_enabled() noexcept:
    return _anomaly_mode


# ---------------------------------------------------------------------------
# Node: the C-level base of every graph node

@cython.no_gc
@cython.binding(False)   # methods check the type of self (Cython #1903)
@cython.embedsignature.format('clinic')   # and keep inspect.signature working
cdef class Node:
    """Base of all graph nodes.  Not constructed directly."""

    def __dealloc__(self):
        # (a Value has its own deallocator, _value_dealloc)
        _release_parents(<PyObject*>self)
        _drain()

    @property
    def label(self):
        return _labels[_key(self)] if self.flags & F_LABELED else ''

    @label.setter
    def label(self, value):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"label must be a str, got {type(value).__name__}")
        if value:
            _labels[_key(self)] = value
            self.flags |= F_LABELED
        elif self.flags & F_LABELED:
            del _labels[_key(self)]
            self.flags &= ~F_LABELED

    @property
    def requires_grad(self):
        return bool(self.requires_grad)

    def _parents(self):
        """The parent nodes in operand order (constants appear as Values)."""
        cdef tuple args = operands(self)
        if self.op == OP_CUSTOM:
            return args
        if self.op == OP_DOT:
            return (args + (self.a,)) if self.a is not None else args
        parents = [p for p in (self.a, second_parent(self)) if p is not None]
        if args is not None:
            parents.extend(args)
        return tuple(parents)

    @property
    def _prev(self):
        """The parents as a set, as micrograd exposes them."""
        return set(self._parents())


@cython.no_gc
@cython.binding(False)
@cython.embedsignature.format('clinic')
cdef class ArrayNode(Node):
    """Base of the nodes whose value is an array (Tensor); its C methods are
    the rules the engine calls on them.  Not constructed directly."""

    def __dealloc__(self):
        # parked here, released by Node's deallocator, which runs next
        cdef PyObject* args = <PyObject*>self.args
        if self.args is not None:
            Py_INCREF(self.args)       # _release takes over this reference
            self.args = None
            _release(args)

    cdef int _zero_grad(self) except -1:
        return 0

    cdef int _seed(self, object grad, bint accumulate) except -1:
        raise NotImplementedError(f"{type(self).__name__} cannot seed a backward pass")

    cdef int _backward(self) except -1:
        return 0

    cdef int _forward(self) except -1:
        return 0

    cdef int _add_grad_at(self, Py_ssize_t index, double g) except -1:
        raise TypeError(f"{type(self).__name__} has no elements to take a gradient into")

    cdef double _element(self, Py_ssize_t index) except? -1.0:
        raise TypeError(f"{type(self).__name__} has no elements to read")

    cdef object _swap_grad(self, object grad):
        raise TypeError(f"{type(self).__name__} has no gradient storage")


# A node's gradient, whichever kind it is

cdef int seed_grad(Node node, object grad, bint accumulate) except -1:
    """Set (or add to, if ``accumulate``) the gradient of a backward root."""
    if not isinstance(node, Value):
        return (<ArrayNode>node)._seed(grad, accumulate)
    if accumulate:
        (<Value>node).grad += <double>grad
    else:
        (<Value>node).grad = <double>grad
    return 0


cdef object swap_grad(Node node, object grad):
    """``node``'s gradient storage as it is, replaced by ``grad`` (None: zero)."""
    if not isinstance(node, Value):
        return (<ArrayNode>node)._swap_grad(grad)
    old = (<Value>node).grad
    (<Value>node).grad = 0.0 if grad is None else <double>grad
    return old


# ---------------------------------------------------------------------------
# Value: a scalar node

@cython.no_gc
@cython.binding(False)   # methods check the type of self (Cython #1903)
@cython.embedsignature.format('clinic')   # and keep inspect.signature working
cdef class Value(Node):
    """A scalar that remembers how it was computed.

    ``Value(data, _children=(), _op='', label='')`` as in micrograd; ``data``
    and ``grad`` are floats kept in C.  Operators and the methods below build
    new nodes; ``backward()`` fills ``grad`` of everything the node depends on.
    """

    def __init__(self, data, _children=(), _op='', label='', *, requires_grad=True):
        cdef double d
        if not _to_double(data, &d):
            raise TypeError(
                f"Value(data=...) takes a real number (int or float), got {type(data).__name__}")
        children = tuple(_children)
        for c in children:
            if not isinstance(c, Node):
                raise TypeError(
                    f"Value(_children=...) takes graph nodes, got {type(c).__name__}")
        if (children or _op) and self.flags & F_LEAF_OPERAND:
            raise TypeError(
                "Value.__init__(_children=..., _op=...) run again on a leaf that nodes were "
                "already built from: they rely on it staying a leaf; make a new Value instead")
        self.data = d
        self.requires_grad = bool(requires_grad)
        self.label = label
        if children or _op:
            self.op = OP_CUSTOM
            self.b = children
            _set_op_text(self, str(_op))

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    def __reduce__(self):
        # the fields, and what lives in the side tables (label, _op text)
        return (_value_from_state, (type(self), self.op, self.requires_grad, self.a, self.b,
                                    self.data, self.grad, self.aux, self.label,
                                    _op_text(self), getattr(self, "__dict__", None)))

    def __float__(self):
        return self.data

    @property
    def _op(self):
        if self.op == OP_CUSTOM:
            return _op_text(self)
        if self.op == OP_POW_AC:
            return '**' + _format_number(self.aux)
        return _OP_SYMBOLS[self.op]

    def _parents(self):
        cdef int kind = mg_op_kind[self.op]
        if kind == KIND_BINARY_AC:
            return (self.a, _constant(self.aux))
        if kind == KIND_BINARY_CA:
            return (_constant(self.aux), self.a)
        if self.op == OP_SUM and self.aux != 0.0:
            return <tuple>self.b + (_constant(self.aux),)
        return Node._parents(self)

    @property
    def _const(self):
        """The constant the node keeps inside (c of ``a op c``, ``c op a`` or
        leaky_relu's slope; an element's flat index in its tensor), or None."""
        cdef int kind = mg_op_kind[self.op]
        if kind == KIND_BINARY_AC or kind == KIND_BINARY_CA or kind == KIND_UNARY_C:
            return self.aux
        if self.op == OP_ELEMENT:
            return <Py_ssize_t>self.aux
        return None

    def _local_grads(self):
        """The local derivative of this node with respect to each operand of
        ``_parents()`` (None for a constant), computed by the backward rule
        itself: what a worked solution multiplies along the chain."""
        cdef int kind = mg_op_kind[self.op]
        cdef double da = NAN, db = NAN
        cdef Py_ssize_t n, i
        if kind == KIND_LEAF or kind == KIND_CUSTOM:
            return ()
        if mg_op_operands(self.op):
            mg_local_grads(self.op, (<Value>self.a).data,
                           (<Value>self.b).data if kind == KIND_BINARY else 0.0,
                           self.data, self.aux, &da, &db)
            if kind == KIND_BINARY:
                return (da, db)
            if kind == KIND_BINARY_AC:
                return (da, None)
            if kind == KIND_BINARY_CA:
                return (None, da)
            return (da,)
        if self.op == OP_SUM or self.op == OP_MEAN:
            n = len(<tuple>self.b)
            grads = (1.0 if self.op == OP_SUM else 1.0 / n,) * n
            return grads + ((None,) if self.op == OP_SUM and self.aux != 0.0 else ())
        if self.op == OP_DOT:
            args = <tuple>self.b
            n = len(args) // 2
            grads = tuple([(<Value>args[n + i]).data for i in range(n)]
                          + [(<Value>args[i]).data for i in range(n)])
            return grads + ((1.0,) if self.a is not None else ())
        if self.op == OP_ELEMENT:
            return (1.0,)
        raise SystemError(f"_local_grads: unknown scalar op code {self.op}")

    # -- arithmetic -----------------------------------------------------------

    def __add__(self, other):
        cdef double c
        if isinstance(other, Value):
            return _binary(OP_ADD, self, <Value>other)
        if _to_double(other, &c):
            return _with_const(OP_ADD_AC, self, c)
        return NotImplemented

    def __radd__(self, other):
        cdef double c
        if _to_double(other, &c):
            return _with_const(OP_ADD_AC, self, c)
        return NotImplemented

    def __sub__(self, other):
        cdef double c
        if isinstance(other, Value):
            return _binary(OP_SUB, self, <Value>other)
        if _to_double(other, &c):  # self + (-other) as micrograd, exact in IEEE arithmetic
            return _with_const(OP_ADD_AC, self, -c)
        return NotImplemented

    def __rsub__(self, other):  # other - self
        cdef double c
        if _to_double(other, &c):
            return _with_const(OP_SUB_CA, self, c)
        return NotImplemented

    def __mul__(self, other):
        cdef double c
        if isinstance(other, Value):
            return _binary(OP_MUL, self, <Value>other)
        if _to_double(other, &c):
            return _with_const(OP_MUL_AC, self, c)
        return NotImplemented

    def __rmul__(self, other):
        cdef double c
        if _to_double(other, &c):
            return _with_const(OP_MUL_AC, self, c)
        return NotImplemented

    def __truediv__(self, other):
        cdef double c
        if isinstance(other, Value):
            return _binary(OP_DIV, self, <Value>other)
        if _to_double(other, &c):
            return _with_const(OP_DIV_AC, self, c)
        return NotImplemented

    def __rtruediv__(self, other):  # other / self
        cdef double c
        if _to_double(other, &c):
            return _with_const(OP_DIV_CA, self, c)
        return NotImplemented

    def __pow__(self, other, modulo):
        cdef double c
        if modulo is not None:
            return NotImplemented
        if isinstance(other, Value):
            return _binary(OP_POW, self, <Value>other)
        if _to_double(other, &c):
            return _with_const(OP_POW_AC, self, c)
        return NotImplemented

    def __rpow__(self, other, modulo):  # other ** self
        cdef double c
        if modulo is None and _to_double(other, &c):
            return _with_const(OP_POW_CA, self, c)
        return NotImplemented

    def __neg__(self):
        return _unary(OP_NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _unary(OP_ABS, self)

    # The elementwise methods (relu, sigmoid, tanh, exp, ...) are generated
    # from the op table: see microgrid/core/optable.py.

    # -- gradients ------------------------------------------------------------

    def _graph_vjp(self, g):
        """For the output of a microgrid.autograd.Function: the gradients of
        its parents (``_parents()`` order, None where none) for incoming
        gradient ``g``, as graph nodes built by the Function's backward, so
        that they can be differentiated again."""
        if self.op == OP_CUSTOM and isinstance(self.a, PyRule):
            return self.a._graph_vjp(self, g)
        if self.op == OP_CUSTOM and self.a is not None:
            raise NotImplementedError(
                f"the {self._op!r} node's rule is a Python _backward that adds numbers into "
                ".grad, so it cannot build differentiable gradients; write the op as a "
                "microgrid.autograd.Function whose backward uses microgrid ops")
        raise NotImplementedError(
            f"_graph_vjp: the {self._op!r} node has no Python rule (table ops are "
            "differentiated by microgrid.autograd)")

    def backward(self, grad=1.0, create_graph=False):
        """Fill ``.grad`` of every node this one depends on.

        The root is seeded with ``grad``; gradients of intermediate nodes are
        recomputed from zero on every call, leaves accumulate until zeroed.
        ``.grad`` always holds numbers; with ``create_graph=True`` they come
        from the differentiable sweep (microgrid.autograd), which fails
        clearly on an op without a differentiable rule.  The gradients as
        graph nodes, to differentiate again: ``mg.grad(..., create_graph=True)``.
        """
        cdef double g
        if not _to_double(grad, &g):
            raise TypeError(f"backward(grad=...) takes a real number, got {type(grad).__name__}")
        if create_graph:
            from microgrid.autograd import _graph_backward_into_grad
            _graph_backward_into_grad(self, g)
            return
        run_backward(self, g)


def _value_from_state(type cls, unsigned short op, bint requires_grad, a, b, double data,
                      double grad, double aux, str label, str op_text, dict state):
    """A Value unpickled (see Value.__reduce__)."""
    cdef Value v = cls.__new__(cls)
    v.op, v.requires_grad, v.a, v.b = op, requires_grad, a, b
    v.data, v.grad, v.aux = data, grad, aux
    v.label = label
    _set_op_text(v, op_text)
    if state:
        v.__dict__.update(state)
    return v


def _format_number(double x):
    if x == <long long>x and fabs(x) < 1e15:
        return str(<long long>x)
    return repr(x)


cdef Value _constant(double x):
    """A leaf holding a constant operand: it takes no gradient."""
    cdef Value v = Value.__new__(Value)
    v.data = x
    return v


cdef inline Value _new(unsigned short op, bint requires_grad):
    cdef Value out = Value.__new__(Value)
    out.op = op
    out.requires_grad = requires_grad
    return out


# Builders set the parents, then compute the value with _forward_data, the one
# place each forward formula lives (so a replayed graph is bit-identical).

cdef inline Value _finish(Value out):
    out.data = _forward_data(out)
    if _anomaly_mode and not isfinite(out.data):
        check_forward(out)
    if not _recording():
        make_leaf(out)
    return out


cdef inline unsigned char _leaf_bit(Value parent, unsigned char bit) noexcept:
    """``bit`` if ``parent`` is a leaf (marked then as one that must stay a
    leaf), else 0."""
    if parent.op != OP_LEAF:
        return 0
    parent.flags |= F_LEAF_OPERAND
    return bit


cdef inline Value _binary(unsigned short op, Value a, Value b):
    cdef Value out = _new(op, a.requires_grad or b.requires_grad)
    out.a = a
    out.b = b
    out.flags = _leaf_bit(a, F_A_LEAF) | _leaf_bit(b, F_B_LEAF)
    return _finish(out)


cdef inline Value _unary(unsigned short op, Value a):
    cdef Value out = _new(op, a.requires_grad)
    out.a = a
    out.flags = _leaf_bit(a, F_A_LEAF)
    return _finish(out)


cdef inline Value _with_const(unsigned short op, Value a, double c):
    cdef Value out = _new(op, a.requires_grad)
    out.a = a
    out.aux = c
    out.flags = _leaf_bit(a, F_A_LEAF)
    return _finish(out)


cdef Value make_element(Node source, Py_ssize_t index, double data, bint requires_grad):
    """A scalar view of element ``index`` (flat, C order) of a tensor node."""
    cdef Value out = _new(OP_ELEMENT, requires_grad)
    out.a = source
    out.aux = <double>index
    out.data = data
    if not _recording():
        make_leaf(out)
    return out


cdef Value _as_value(object x, str argument):
    cdef double d
    if isinstance(x, Value):
        return <Value>x
    if _to_double(x, &d):
        return _constant(d)
    raise TypeError(f"{argument} must hold Values or real numbers, got {type(x).__name__}")


# ---------------------------------------------------------------------------
# Fused n-ary ops: one node however many operands

cdef object _items(object values, str where):
    """An iterator over ``values``, or a TypeError naming the argument."""
    try:
        return iter(values)
    except TypeError:
        raise TypeError(
            f"{where} takes an iterable of Values or real numbers, got {type(values).__name__}") from None


def sum(values, start=0):
    """``start + values[0] + values[1] + ...`` as a single node."""
    cdef list nodes = []
    cdef double const = 0.0, d
    cdef bint rg = False
    if isinstance(start, Value):
        nodes.append(start)
    elif not _to_double(start, &const):
        raise TypeError(f"sum(start=...) takes a Value or a real number, got {type(start).__name__}")
    for x in _items(values, 'sum(values)'):
        if isinstance(x, Value):
            nodes.append(x)
            rg = rg or (<Value>x).requires_grad
        elif _to_double(x, &d):
            const += d
        else:
            raise TypeError(f"sum(values) takes Values or real numbers, got {type(x).__name__}")
    if not nodes:
        return Value(const)
    if isinstance(start, Value):
        rg = rg or (<Value>start).requires_grad
    return _nary(OP_SUM, tuple(nodes), None, const, rg)


def mean(values):
    """The arithmetic mean of ``values`` as a single node."""
    cdef tuple nodes = tuple([_as_value(x, 'mean(values)') for x in _items(values, 'mean(values)')])
    cdef bint rg = False
    if not nodes:
        raise ValueError("mean(values) needs at least one value")
    for x in nodes:
        rg = rg or (<Value>x).requires_grad
    return _nary(OP_MEAN, nodes, None, 0.0, rg)


def dot(weights, inputs, bias=None):
    """``bias + sum(w * x for w, x in zip(weights, inputs))`` as a single node.

    This is a neuron's pre-activation: one node instead of 2n.
    """
    return _dot(weights, inputs, bias)


cdef Value _dot(object weights, object inputs, object bias):
    cdef bint rg = False
    cdef tuple operands = _value_pairs(weights, inputs, &rg)
    if operands is not None and (bias is None or isinstance(bias, Value)):
        rg = rg or (bias is not None and (<Value>bias).requires_grad)
        return _nary(OP_DOT, operands, bias, 0.0, rg)
    return _dot_general(weights, inputs, bias)


def _neuron(weights, inputs, bias, bint nonlin):
    """A neuron of microgrid.nn: ``dot(weights, inputs, bias)``, then relu
    when ``nonlin``."""
    return _neuron_out(weights, inputs, bias, nonlin)


cdef Value _neuron_out(object weights, object inputs, object bias, bint nonlin):
    cdef Value act = _dot(weights, inputs, bias)
    return _with_const(OP_RELU, act, 0.0) if nonlin else act


def _layer(list neurons, inputs, type plain):
    """The outputs of a microgrid.nn Layer's neurons on ``inputs``: each
    neuron of class ``plain`` (Neuron itself, fused) built here from its
    fields, without a Python call per neuron; any other neuron is called."""
    cdef list out = []
    cdef dict d
    if type(inputs) is not list and type(inputs) is not tuple:
        inputs = list(inputs)       # every neuron reads them
    for n in neurons:
        if type(n) is plain:
            d = <dict>PyObject_GenericGetDict(n, NULL)
            w, b, nonlin = d.get('w'), d.get('b'), d.get('nonlin')
            if d.get('fused') is True and w is not None and nonlin is not None:
                out.append(_neuron_out(w, inputs, b, nonlin))
                continue
        out.append(n(inputs))
    return out


cdef tuple _value_pairs(object weights, object inputs, bint* rg):
    """``(*weights, *inputs)`` in one pass when both are lists or tuples of
    Values of one length (a neuron's call), else None; ``rg``: whether any
    requires grad."""
    cdef Py_ssize_t n, i
    cdef PyObject* w
    cdef PyObject* x
    if not ((type(weights) is list or type(weights) is tuple)
            and (type(inputs) is list or type(inputs) is tuple)):
        return None
    n = len(weights)
    if len(inputs) != n:
        return None
    cdef tuple out = PyTuple_New(2 * n)
    for i in range(n):
        w = PySequence_Fast_GET_ITEM(weights, i)
        x = PySequence_Fast_GET_ITEM(inputs, i)
        if not (isinstance(<object>w, Value) and isinstance(<object>x, Value)):
            return None          # the slots not yet filled are NULL: freed as such
        Py_XINCREF(w)
        PyTuple_SET_ITEM(out, i, <object>w)
        Py_XINCREF(x)
        PyTuple_SET_ITEM(out, n + i, <object>x)
        rg[0] = rg[0] or (<Value>w).requires_grad or (<Value>x).requires_grad
    return out


cdef Value _dot_general(object weights, object inputs, object bias):
    cdef list w = [_as_value(item, 'dot(weights)') for item in _items(weights, 'dot(weights)')]
    cdef list x = [_as_value(item, 'dot(inputs)') for item in _items(inputs, 'dot(inputs)')]
    cdef Value b = None if bias is None else _as_value(bias, 'dot(bias)')
    cdef bint rg = b is not None and b.requires_grad
    if len(x) != len(w):
        raise ValueError(
            f"dot(weights, inputs): weights has {len(w)} elements but inputs has {len(x)}")
    for v in w:
        rg = rg or (<Value>v).requires_grad
    for v in x:
        rg = rg or (<Value>v).requires_grad
    return _nary(OP_DOT, tuple(w + x), b, 0.0, rg)


cdef Value _nary(unsigned short op, tuple args, Value a, double aux, bint rg):
    # The operand tuple is reachable only through its node, which the
    # collector does not track: tracking the tuple would only make the
    # collector run (a neuron's call makes one) and find nothing to free.
    if PyObject_GC_IsTracked(args):
        PyObject_GC_UnTrack(<void*>args)
    cdef Value out = _new(op, rg)
    out.b = args
    out.a = a
    out.aux = aux
    return _finish(out)


# ---------------------------------------------------------------------------
# Forward formulas: the value of a scalar node from its parents' values

cdef extern from "mg_tape.h":
    double mg_dot_values(PyObject** items, Py_ssize_t n, double bias,
                         Py_ssize_t data_offset) noexcept nogil

cdef Py_ssize_t _value_data_offset():
    cdef Value probe = Value(0.0)
    return <char*>&probe.data - <char*><PyObject*>probe

# where a Value keeps its data, for the C loops that read operand Values
cdef Py_ssize_t _DATA_OFFSET = _value_data_offset()


cdef inline double _dot_data(PyObject** items, Py_ssize_t n, double bias) noexcept:
    """bias + sum of items[i].data * items[n + i].data, in MG_DOT_SUM's order."""
    return mg_dot_values(items, n, bias, _DATA_OFFSET)


cdef inline double _op_forward(unsigned short op, double a, double b, double c) noexcept nogil:
    """A scalar op's value from its operands' (b unused by a unary op): the
    commonest rows called by name (inlined), the others through the table's
    switch."""
    if op == OP_MUL:
        return mg_f_MUL(a, b)
    if op == OP_ADD:
        return mg_f_ADD(a, b)
    if op == OP_RELU:
        return mg_f_RELU(a, c)
    return mg_forward_call(op, a, b, c)


cdef inline double _forward_data(Value v) except? -1.0:
    cdef unsigned short op = v.op
    cdef double total
    cdef Py_ssize_t i
    cdef tuple args
    if op == OP_LEAF or op == OP_CUSTOM:
        return v.data
    if mg_op_operands(op):
        return _op_forward(op, (<Value>v.a).data,
                           (<Value>v.b).data if mg_op_operands(op) == 2 else 0.0, v.aux)
    args = <tuple>v.b
    if op == OP_SUM:
        total = 0.0
        for i in range(len(args)):
            total += (<Value>args[i]).data
        return total + v.aux
    if op == OP_MEAN:
        total = 0.0
        for i in range(len(args)):
            total += (<Value>args[i]).data
        return total / len(args)
    if op == OP_DOT:
        return _dot_data(_tuple_items(args), len(args) // 2,
                         0.0 if v.a is None else (<Value>v.a).data)
    if op == OP_ELEMENT:
        return (<ArrayNode>v.a)._element(<Py_ssize_t>v.aux)
    raise SystemError(f"forward: unknown scalar op code {op}")


# ---------------------------------------------------------------------------
# backward(): topological sort, then one reverse sweep

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define MG_PREFETCH(p) __builtin_prefetch((const void*)(p))
    #else
    #define MG_PREFETCH(p) ((void)(p))
    #endif
    """
    # start loading the cache line at p (never faults: any address will do)
    void MG_PREFETCH(const void* p) noexcept nogil

# How far ahead the passes load what they will read (the sweeps know their
# order; the sort guesses it from creation order): far enough that a line
# from memory arrives in time.
cdef enum:
    _SORT_AHEAD_BYTES = 16 * 64  # the walks, below the node they will enter (in memory)
    _SWEEP_NODE_AHEAD = 32       # the sweep loads the node this far ahead,
    _SWEEP_PARENTS_AHEAD = 16    # and the parents of the node this far ahead
    _RESTORE_AHEAD = 48          # the stash's leaves
    _WIDE_AHEAD = 64             # the breadth-first pass's queue (its parents half as far)


ctypedef struct Frame:
    PyObject* node
    PyObject* b             # (plain) the node's parent b, read when it was pushed
    int next_child
    bint plain              # an exact Value with parents in a and b: the walk comes
                            # back to it (for b, then to emit it) without reading it
    unsigned char leaf_bits # (plain, a backward's sort) its F_A_LEAF | F_B_LEAF


cdef inline PyObject* _wanted(PyObject* c, unsigned int epoch, bint every_node) noexcept:
    """``c`` if it is a node the sort has yet to visit, else NULL."""
    if c != <PyObject*>None and (every_node or (<Node>c).requires_grad) \
            and (<Node>c).epoch != epoch:
        return c
    return NULL


cdef inline PyObject* _next_child(Node node, int* k, unsigned int epoch,
                                  bint every_node) noexcept:
    """The next parent of ``node`` that needs a visit, or NULL.

    Parent slots hold None or a Node, so a slot is checked by identity and
    its fields read without a type test.  Slot 0 is ``a``; then a Value's
    ``b`` is its second parent or its operand tuple, and an array node's
    ``b`` is followed by its ``args``.  A hand-built node's parents are its
    operand tuple only (its rule sits in ``a``, a Tensor's _op text in ``b``).
    """
    cdef PyObject* c
    cdef Py_ssize_t i
    cdef tuple args
    cdef bint scalar = isinstance(node, Value)
    cdef bint tuple_b = scalar and args_in_b(node.op)
    if k[0] == 0:
        # the first look at this node: ask for both parents at once, so the
        # second is in cache by the time the first one's subtree is done
        MG_PREFETCH(<PyObject*>node.a)
        MG_PREFETCH(<PyObject*>node.b)
    while True:
        i = k[0]
        k[0] += 1
        if i == 0:            # (a hand-built node's a is its rule)
            c = <PyObject*>None if node.op == OP_CUSTOM else <PyObject*>node.a
        elif i == 1 and not tuple_b:     # (a hand-built Tensor's b is its _op text)
            c = <PyObject*>None if node.op == OP_CUSTOM else <PyObject*>node.b
        else:
            args = <tuple>node.b if tuple_b else (None if scalar else (<ArrayNode>node).args)
            i -= 1 if tuple_b else 2
            if args is None or i >= len(args):
                return NULL
            c = PyTuple_GET_ITEM(args, i)
        if _wanted(c, epoch, every_node) != NULL:
            return c


# The sort's two work arrays are kept between calls: a large graph would
# otherwise pay page faults for fresh memory on every backward().  A caller
# takes them (leaving NULL, so a concurrent sort in another thread allocates
# its own) and hands them back when done.
cdef Frame* _spare_stack = NULL
cdef Py_ssize_t _spare_stack_cap = 0
cdef PyObject** _spare_order = NULL
cdef Py_ssize_t _spare_order_cap = 0


cdef void _return_buffers(Frame* stack, Py_ssize_t stack_cap,
                          PyObject** order, Py_ssize_t order_cap) noexcept:
    global _spare_stack, _spare_stack_cap, _spare_order, _spare_order_cap
    if stack != NULL:
        if stack_cap > _spare_stack_cap:
            free(_spare_stack)
            _spare_stack, _spare_stack_cap = stack, stack_cap
        else:
            free(stack)
    if order != NULL:
        if order_cap > _spare_order_cap:
            free(_spare_order)
            _spare_order, _spare_order_cap = order, order_cap
        else:
            free(order)


cdef inline void _push(Frame* frame, PyObject* node, bint for_backward) noexcept:
    """A frame for ``node``, whose line is in cache (the walk just read it):
    what the walk needs when it comes back is copied into the frame; for a
    backward, a Value's leaf bits too, and its gradient is reset now rather
    than when it is emitted (nothing reads it in between)."""
    cdef unsigned short op = (<Node>node).op
    frame.node = node
    frame.next_child = 0
    frame.plain = _type_of(node) == <PyObject*>Value and op != OP_LEAF and not args_in_b(op)
    if frame.plain:
        frame.b = <PyObject*>(<Node>node).b
        frame.leaf_bits = (<Node>node).flags & (F_A_LEAF | F_B_LEAF) if for_backward else 0
        if for_backward:
            (<Value>node).grad = 0.0


cdef Py_ssize_t _topo_sort(Node root, PyObject*** out, Py_ssize_t* out_cap,
                           bint every_node, _LeafStash leaf_stash) except -1:
    """Post-order of the nodes reachable from ``root`` (only through nodes that
    need a gradient unless ``every_node``), as borrowed references, root last.
    The array and its capacity go to ``out``/``out_cap``; give it back with
    ``_return_buffers``.  Given a ``leaf_stash`` (for a backward pass), each
    non-leaf node's gradient is reset as the walk reaches it and each leaf's
    is set aside in the stash (saving backward a pass over the graph), the
    leaves then left out of the order (but for a leaf root); a leaf parent of
    a Value built by an op is not visited at all: the sweep sets its gradient
    aside when it first passes it one (_accumulate)."""
    global _epoch, _spare_stack, _spare_stack_cap, _spare_order, _spare_order_cap
    cdef Py_ssize_t stack_cap = _spare_stack_cap, order_cap = _spare_order_cap
    cdef Frame* stack = _spare_stack
    cdef PyObject** order = _spare_order
    cdef Py_ssize_t depth = 1, n = 0
    cdef Frame* frame
    cdef PyObject* child
    cdef PyObject* node
    cdef bint for_backward = leaf_stash is not None
    _spare_stack, _spare_stack_cap, _spare_order, _spare_order_cap = NULL, 0, NULL, 0
    if stack == NULL:
        stack_cap = 256
        stack = <Frame*>malloc(stack_cap * sizeof(Frame))
    if order == NULL:
        order_cap = 256
        order = <PyObject**>malloc(order_cap * sizeof(PyObject*))
    try:
        if stack == NULL or order == NULL:
            raise MemoryError()
        _epoch += 1
        root.epoch = _epoch
        if for_backward:
            leaf_stash.epoch = _epoch
        _push(&stack[0], <PyObject*>root, for_backward)
        while depth:
            frame = &stack[depth - 1]
            node = frame.node
            if frame.plain:
                # a Value's parents are its slots a and b: checked here, with
                # both asked from memory at once on the first look; in a
                # backward, a parent flagged as a leaf is not read at all (the
                # sweep, which reads it anyway, sets its gradient aside)
                child = NULL
                if frame.next_child == 0:
                    frame.next_child = 1
                    if not frame.leaf_bits & F_B_LEAF:
                        MG_PREFETCH(frame.b)
                    if not frame.leaf_bits & F_A_LEAF:
                        MG_PREFETCH(<PyObject*>(<Node>node).a)
                        child = _wanted(<PyObject*>(<Node>node).a, _epoch, every_node)
                if child == NULL and frame.next_child == 1:
                    frame.next_child = 2
                    if not frame.leaf_bits & F_B_LEAF:
                        child = _wanted(frame.b, _epoch, every_node)
            else:
                child = _next_child(<Node>node, &frame.next_child, _epoch, every_node)
            if child == NULL:
                depth -= 1                   # its parents are done: emit it
            else:
                (<Node>child).epoch = _epoch
                if (<Node>child).op != OP_LEAF:
                    if depth == stack_cap:
                        stack = <Frame*>_grow(stack, 2 * stack_cap * sizeof(Frame))
                        stack_cap *= 2
                    # nodes made one after another sit one after another
                    # (mg_slab.h), and a walk from the root meets the ones
                    # made before this one next: their lines are asked for
                    # now, which a chain, one node after another, waits on
                    MG_PREFETCH(<void*>(<size_t>child - _SORT_AHEAD_BYTES))
                    _push(&stack[depth], child, for_backward)
                    depth += 1
                    continue
                if leaf_stash is not None:
                    # a backward pass: a leaf passes nothing on, so it takes
                    # no place in the order; its gradient is set aside
                    leaf_stash.add(<Node>child)
                    continue
                node = child                 # a leaf has no parents: emitted at once, unpushed
            if n == order_cap:
                order = <PyObject**>_grow(order, 2 * order_cap * sizeof(PyObject*))
                order_cap *= 2
            order[n] = node
            n += 1
            if for_backward and not (child == NULL and frame.plain):
                if (<Node>node).op == OP_LEAF:
                    leaf_stash.add(<Node>node)
                elif isinstance(<object>node, Value):
                    (<Value>node).grad = 0.0
                else:
                    (<ArrayNode>node)._zero_grad()
    except BaseException:
        _return_buffers(stack, stack_cap, order, order_cap)
        raise
    _return_buffers(stack, stack_cap, NULL, 0)
    out[0] = order
    out_cap[0] = order_cap
    return n


cdef inline int _accumulate(PyObject* parent, double g, _LeafStash stash) except -1:
    # (a borrowed pointer: passing the object would count a reference per call)
    if (<Value>parent).requires_grad:
        if stash is not None and (<Node>parent).epoch != stash.epoch:
            # a leaf parent the sort left to the sweep (F_A_LEAF, F_B_LEAF),
            # given its first gradient of the pass: what it held is set aside
            (<Node>parent).epoch = stash.epoch
            stash.add(<Node>parent)
        (<Value>parent).grad = (<Value>parent).grad + g
    return 0


cdef inline void _binary_grads(unsigned short op, double a, double b, double out, double c,
                               double* da, double* db) noexcept nogil:
    """A binary op's local derivatives: the commonest rows called by name
    (inlined), the others through the table's switch."""
    if op == OP_MUL:
        da[0] = mg_da_MUL(a, b, out)
        db[0] = mg_db_MUL(a, b, out)
    elif op == OP_ADD:
        da[0] = mg_da_ADD(a, b, out)
        db[0] = mg_db_ADD(a, b, out)
    else:
        mg_local_grads_call(op, a, b, out, c, da, db)


cdef inline double _unary_grad(unsigned short op, double a, double out, double c) noexcept nogil:
    """A unary op's local derivative: ReLU by name (inlined), the others
    through the table's switch."""
    cdef double da, db
    if op == OP_RELU:
        return mg_da_RELU(a, out, c)
    mg_local_grads_call(op, a, 0.0, out, c, &da, &db)
    return da


cdef inline int _scalar_backward(Value v, _LeafStash stash) except -1:
    """Apply the local derivative rule of ``v``'s op to its parents (``stash``:
    run_backward's, which the leaves its sort left unvisited go to)."""
    cdef double g = v.grad, da, db
    cdef unsigned short op = v.op
    cdef Py_ssize_t i, n
    cdef PyObject** items
    n = mg_op_operands(op)
    if n == 2:
        _binary_grads(op, (<Value>v.a).data, (<Value>v.b).data, v.data, v.aux, &da, &db)
        _accumulate(<PyObject*>v.a, g * da, stash)
        _accumulate(<PyObject*>v.b, g * db, stash)
    elif n == 1:
        _accumulate(<PyObject*>v.a, g * _unary_grad(op, (<Value>v.a).data, v.data, v.aux), stash)
    elif op == OP_SUM or op == OP_MEAN:
        items = _tuple_items(<tuple>v.b)
        n = len(<tuple>v.b)
        y = g if op == OP_SUM else g / n
        for i in range(n):
            if (<Value>items[i]).requires_grad:
                (<Value>items[i]).grad = (<Value>items[i]).grad + y
    elif op == OP_DOT:
        # the n weights, then the n inputs; borrowed pointers, no refcounting
        # (written as x.grad = x.grad + ..., since += would take a reference)
        items = _tuple_items(<tuple>v.b)
        n = len(<tuple>v.b) // 2
        for i in range(n):
            if (<Value>items[i]).requires_grad:
                (<Value>items[i]).grad = (<Value>items[i]).grad + g * (<Value>items[n + i]).data
            if (<Value>items[n + i]).requires_grad:
                (<Value>items[n + i]).grad = (<Value>items[n + i]).grad + g * (<Value>items[i]).data
        if v.a is not None:
            _accumulate(<PyObject*>v.a, g, stash)
    elif op == OP_ELEMENT:
        (<ArrayNode>v.a)._add_grad_at(<Py_ssize_t>v.aux, g)
    else:
        raise SystemError(f"backward: unknown scalar op code {op}")
    return 0


ctypedef struct Stashed:
    size_t leaf             # a Value leaf met by the pass (borrowed), its lowest
                            # bit _ZEROED if the pass adds up from zero
    double grad             # its gradient before the pass
    double first            # (_LeafStash.take) the first share it was handed


cdef enum:
    _ZEROED = 1             # Stashed.leaf: the earlier gradient is to be added back


# The stash's array is kept between passes, as the sort's are (a pass takes
# it, leaving NULL for a concurrent pass in another thread, and gives it back).
cdef Stashed* _spare_stash = NULL
cdef Py_ssize_t _spare_stash_cap = 0


@cython.final
cdef class _LeafStash:
    """Leaf gradients set aside for one backward pass.

    A pass first adds up each leaf's contributions from zero, then adds that
    sum to what the leaf held, as PyTorch does: a second pass over the same
    graph then gives exactly twice the gradient, not merely to rounding.
    (For a leaf handed a single share, adding it to what the leaf held
    straight away is the same sum: ``take`` does so, and adds back only for
    the leaves handed more.)"""
    cdef Stashed* items
    cdef Py_ssize_t n, cap
    cdef Py_ssize_t n_zeroed       # entries marked _ZEROED
    cdef list tensors              # (tensor leaf, copy of its earlier grad)
    cdef unsigned int epoch        # the sort's: the sweep takes a leaf stamped otherwise
                                   # (one the sort left to it) as met for the first time

    def __cinit__(self):
        global _spare_stash, _spare_stash_cap
        self.items, self.cap = _spare_stash, _spare_stash_cap
        _spare_stash, _spare_stash_cap = NULL, 0

    def __dealloc__(self):
        global _spare_stash, _spare_stash_cap
        if self.cap > _spare_stash_cap:
            free(_spare_stash)
            _spare_stash, _spare_stash_cap = self.items, self.cap
        else:
            free(self.items)

    cdef int _grow_items(self) except -1:
        cdef Py_ssize_t cap = 2 * self.cap + 16
        self.items = <Stashed*>_grow(self.items, cap * sizeof(Stashed))
        self.cap = cap
        return 0

    cdef inline int add(self, Node leaf) except -1:
        """Set ``leaf``'s gradient aside and zero it (a zero gradient, as in a
        training loop that zeroes before backward, needs nothing set aside)."""
        if not isinstance(leaf, Value):
            return self._add_array(leaf)
        if (<Value>leaf).grad == 0.0:
            return 0
        if self.n == self.cap:
            self._grow_items()
        self.items[self.n].leaf = <size_t><PyObject*>leaf | _ZEROED
        self.items[self.n].grad = (<Value>leaf).grad
        (<Value>leaf).grad = 0.0
        self.n += 1
        self.n_zeroed += 1
        return 0

    cdef inline int take(self, PyObject* leaf, double g, unsigned int epoch) except -1:
        """Hand a Value ``leaf`` its share ``g`` of the breadth-first pass
        stamped ``epoch``, which no rule outside the table writes gradients in:
        the first share is added to what the leaf held (which is kept, with
        the share, in an entry the leaf's unused ``aux`` points at, or -1 for
        none when it held 0); a second share starts the sum from zero
        instead (first + second), to which restore() adds the earlier
        gradient back.  The leaf is stamped ``epoch`` when handed one share,
        ``epoch + 1`` when handed more."""
        cdef Py_ssize_t k
        if not (<Node>leaf).requires_grad:
            return 0
        if (<Node>leaf).epoch == epoch + 1:
            (<Value>leaf).grad = (<Value>leaf).grad + g
        elif (<Node>leaf).epoch == epoch:
            (<Node>leaf).epoch = epoch + 1
            k = <Py_ssize_t>(<Value>leaf).aux
            if k < 0:
                (<Value>leaf).grad = (<Value>leaf).grad + g
            else:
                self.items[k].leaf |= _ZEROED
                self.n_zeroed += 1
                (<Value>leaf).grad = (0.0 + self.items[k].first) + g
        else:
            (<Node>leaf).epoch = epoch
            if (<Value>leaf).grad == 0.0:
                (<Value>leaf).aux = -1.0
            else:
                if self.n == self.cap:
                    self._grow_items()
                self.items[self.n].leaf = <size_t>leaf
                self.items[self.n].grad = (<Value>leaf).grad
                self.items[self.n].first = g
                (<Value>leaf).aux = <double>self.n
                self.n += 1
            (<Value>leaf).grad = (<Value>leaf).grad + g
        return 0

    cdef void zero_all(self) noexcept:
        """Mark every entry as adding up from zero (the caller zeroes the
        leaves: a breadth-first pass undone)."""
        cdef Py_ssize_t k
        for k in range(self.n):
            self.items[k].leaf |= _ZEROED
        self.n_zeroed = self.n

    cdef int _add_array(self, Node leaf) except -1:
        # its gradient buffer as it is (None: zeros, nothing to copy), the
        # leaf left with none
        if self.tensors is None:
            self.tensors = []
        self.tensors.append((leaf, (<ArrayNode>leaf)._swap_grad(None)))
        return 0

    cdef void restore(self) noexcept:
        """Add each leaf's earlier gradient back to this pass's total."""
        cdef Py_ssize_t k
        cdef PyObject* v
        for k in range(self.n if self.n_zeroed else 0):
            if k + _RESTORE_AHEAD < self.n and self.items[k + _RESTORE_AHEAD].leaf & _ZEROED:
                MG_PREFETCH(<void*>(self.items[k + _RESTORE_AHEAD].leaf - _ZEROED))
            if self.items[k].leaf & _ZEROED:
                v = <PyObject*>(self.items[k].leaf - _ZEROED)
                (<Value>v).grad = self.items[k].grad + (<Value>v).grad
        if self.tensors is not None:
            for leaf, earlier in self.tensors:
                try:
                    grad = leaf.grad
                    # earlier None: add zeros, in place, as a Value leaf's 0.0
                    # is added to (so that -0.0 comes out as 0.0 in both)
                    grad += 0.0 if earlier is None else earlier
                except BaseException:
                    pass        # nothing sensible to do in cleanup


cdef enum:
    _PASSED = 1          # _hand_on: the parent has handed its own gradient on already


cdef inline int _hand_on(PyObject* c, double g, _LeafStash stash, PyObject** q,
                         Py_ssize_t* tail, unsigned int epoch, bint counted) except -1:
    """Give ``g`` to parent ``c`` in ``_wide_pass``: a leaf takes it
    (``_LeafStash.take``), a node met for the first time takes it and joins
    the queue, a queued one adds it up; ``_PASSED`` if ``c`` has been entered
    already.  ``counted``: a node adds it up and joins the queue when the last
    of its users has handed it its share.  (No ``stash``: the pass only
    records the order.)"""
    if (<Node>c).op == OP_LEAF:
        return 0 if stash is None else stash.take(c, g, epoch)
    if not (<Node>c).requires_grad:
        return 0
    if counted:             # its stamp: epoch + the users yet to hand theirs on
        if stash is not None:
            (<Value>c).grad = (<Value>c).grad + g
        (<Node>c).epoch -= 1
        if (<Node>c).epoch == epoch:         # the last: it joins the queue
            q[tail[0]] = c
            tail[0] += 1
        return 0
    if (<Node>c).epoch == epoch:             # queued: add up
        if stash is not None:
            (<Value>c).grad = (<Value>c).grad + g
    elif (<Node>c).epoch == epoch + 1:       # entered: too late
        return _PASSED
    else:
        (<Node>c).epoch = epoch
        if stash is not None:
            (<Value>c).grad = 0.0 + g        # (0.0 +: -0.0 becomes 0.0, as when adding up)
        q[tail[0]] = c
        tail[0] += 1
    return 0


cdef Py_ssize_t _wide_pass(Value root, double seed, _LeafStash stash, bint counted,
                           PyObject*** entered, Py_ssize_t* entered_cap) except -2:
    """backward() from a Value ``root`` in one breadth-first pass: the number
    of nodes entered, or -1 if this graph needs another order (then nothing
    has changed but the leaves' stash, the caller's to go on with).

    Entering the nodes in the order a queue meets them, each node hands its
    gradient on as it is entered: no sort first.  That is a topological
    order when every user of a node is met before the node itself, as in a
    tree, a chain or a layered network (a node's users all one step further
    from the root); a node whose gradient turns up after it was entered
    (users at different depths), or an op other than the table's scalar
    ones, sends the pass back, its leaves' gradients undone.  A queue knows
    the nodes it will enter: their lines, and their parents', are asked from
    memory ahead, where a depth-first walk waits on each node's line before
    it can find the next.  Nodes are stamped with the pass's epoch when
    queued and the next one when entered.

    ``counted``: Kahn's order instead, for any graph of the table's scalar
    ops (-1 for others, left to the sort and sweep): a first breadth-first
    walk counts each node's users (``_count_users``), and a node joins the
    queue when the last of them has handed it its share.  Three passes over
    the graph, each asking memory ahead, where the sort and sweep take two
    that wait on each node.

    ``seed``: the root's gradient.  Without a ``stash`` nothing is written
    but the stamps (and the gradients put back): the nodes entered, root
    first, go to ``entered`` (its capacity to ``entered_cap``), which the
    caller gives back with ``_return_buffers``.  Graph records its order so,
    and so adds up each gradient in backward()'s order."""
    global _epoch, _spare_order, _spare_order_cap
    cdef Py_ssize_t cap = _spare_order_cap, head = 0, tail = 1, i, n, m
    cdef PyObject** q = _spare_order
    cdef PyObject* node
    cdef PyObject* ahead
    cdef PyObject* a
    cdef PyObject* b
    cdef PyObject** items
    cdef unsigned short op
    cdef unsigned int epoch
    cdef double g, da, db, y
    cdef int passed = 0
    cdef bint complete = False
    _spare_order, _spare_order_cap = NULL, 0
    if q == NULL:
        cap = 256
        q = <PyObject**>malloc(cap * sizeof(PyObject*))
    try:
        if q == NULL:
            raise MemoryError()
        if counted:
            if not _count_users(root, &q, &cap, stash is None, &epoch):
                _return_buffers(NULL, 0, q, cap)
                return -1
        else:
            epoch = _epoch + 1
            _epoch += 2          # (a sort after this pass takes a fresh epoch)
            root.epoch = epoch
        if stash is not None:
            stash.epoch = epoch
            root.grad = seed
        q[0] = <PyObject*>root
        while head < tail:
            # (the queue's prefetch, as in _count_users: written out, since GCC
            # emitted none of it from a Cython inline function)
            if head + _WIDE_AHEAD < tail:
                MG_PREFETCH(q[head + _WIDE_AHEAD])
            if head + _WIDE_AHEAD // 2 < tail:
                ahead = q[head + _WIDE_AHEAD // 2]
                MG_PREFETCH(<PyObject*>(<Node>ahead).a)
                MG_PREFETCH(<PyObject*>(<Node>ahead).b)
            node = q[head]
            if not _runs_wide(node):
                break                    # a hand-built rule, or a tensor's element
            op = (<Node>node).op
            n = mg_op_operands(op)
            m = n if n else len(<tuple>(<Node>node).b) + 1     # (dot's bias too)
            if tail + m > cap:
                while tail + m > cap:
                    cap *= 2
                q = <PyObject**>_grow(q, cap * sizeof(PyObject*))
            head += 1
            if not counted:
                (<Node>node).epoch = epoch + 1
            g = (<Value>node).grad
            # each parent in the order _scalar_backward hands them theirs
            a = <PyObject*>(<Node>node).a
            if n == 2:
                b = <PyObject*>(<Node>node).b
                _binary_grads(op, (<Value>a).data, (<Value>b).data,
                              (<Value>node).data, (<Value>node).aux, &da, &db)
                passed = _hand_on(a, g * da, stash, q, &tail, epoch, counted)
                if not passed:
                    passed = _hand_on(b, g * db, stash, q, &tail, epoch, counted)
            elif n == 1:
                da = _unary_grad(op, (<Value>a).data, (<Value>node).data, (<Value>node).aux)
                passed = _hand_on(a, g * da, stash, q, &tail, epoch, counted)
            else:
                items = _tuple_items(<tuple>(<Node>node).b)
                n = m - 1
                if op == OP_DOT:
                    n //= 2
                    for i in range(n):
                        passed = _hand_on(items[i], g * (<Value>items[n + i]).data,
                                          stash, q, &tail, epoch, counted) \
                            or _hand_on(items[n + i], g * (<Value>items[i]).data,
                                        stash, q, &tail, epoch, counted)
                        if passed:
                            break
                    if not passed and a != <PyObject*>None:
                        passed = _hand_on(a, g, stash, q, &tail, epoch, counted)
                else:
                    y = g if op == OP_SUM else g / n
                    for i in range(n):
                        passed = _hand_on(items[i], y, stash, q, &tail, epoch, counted)
                        if passed:
                            break
            if passed:
                break
            if head == tail:
                complete = True
            elif tail - head < _WIDE_AHEAD:
                # a short queue (a chain): the next node's parents now, and
                # the nodes made before it (which come next)
                ahead = q[tail - 1]
                MG_PREFETCH(<PyObject*>(<Node>ahead).a)
                MG_PREFETCH(<void*>(<size_t>ahead - _SORT_AHEAD_BYTES))
        if not complete and stash is not None:
            stash.zero_all()
            _undo_leaves(q, head)
    except BaseException:
        _return_buffers(NULL, 0, q, cap)
        raise
    if complete and stash is None:
        entered[0], entered_cap[0] = q, cap
        return head
    _return_buffers(NULL, 0, q, cap)
    return head if complete else -1


cdef inline bint _runs_wide(PyObject* node) noexcept:
    """Whether ``_wide_pass`` runs ``node``: a Value of one of the table's
    binary, unary or n-ary ops (not a leaf, a hand-built rule or a tensor's
    element)."""
    cdef unsigned short op = (<Node>node).op
    return isinstance(<object>node, Value) and (
        mg_op_operands(op) != 0 or op == OP_SUM or op == OP_MEAN or op == OP_DOT)


cdef inline void _count_user(PyObject* c, PyObject** q, Py_ssize_t* tail, double* saved,
                             unsigned int mark) noexcept:
    # one more user of parent c (a node that takes a gradient): the first
    # time, c is stamped and queued (its gradient kept in ``saved``, if any)
    if c == <PyObject*>None or (<Node>c).op == OP_LEAF or not (<Node>c).requires_grad:
        return
    if (<Node>c).epoch == mark:
        (<Value>c).grad = (<Value>c).grad + 1.0
        return
    (<Node>c).epoch = mark
    if saved != NULL:
        saved[tail[0]] = (<Value>c).grad
    (<Value>c).grad = 1.0
    q[tail[0]] = c
    tail[0] += 1


cdef bint _count_users(Value root, PyObject*** queue, Py_ssize_t* queue_cap, bint keep_grads,
                       unsigned int* ready) except -1:
    """Stamp each node below ``root`` (that takes a gradient) with ``ready``
    plus the number of its users, its gradient zeroed (or, if
    ``keep_grads``, left as it was); False, with nothing but stamps changed,
    if a node is one ``_wide_pass`` does not run.  First a breadth-first
    walk counts the users in the gradients, then a pass over the nodes it
    found moves the counts into the stamps.  ``queue``: a buffer to use (and
    its capacity), which may be grown."""
    global _epoch
    cdef PyObject** q = queue[0]
    cdef Py_ssize_t cap = queue_cap[0], head = 0, tail = 1, i, n, m, k
    cdef double* saved = NULL
    cdef unsigned int mark = _epoch + 1, base, most = 1, users
    cdef PyObject* node
    cdef PyObject* ahead
    cdef PyObject** items
    cdef bint ok = True
    _epoch += 1
    try:
        if keep_grads:
            saved = <double*>_grow(NULL, cap * sizeof(double))
            saved[0] = root.grad
        root.epoch = mark
        root.grad = 0.0
        q[0] = <PyObject*>root
        while head < tail:
            if head + _WIDE_AHEAD < tail:
                MG_PREFETCH(q[head + _WIDE_AHEAD])
            if head + _WIDE_AHEAD // 2 < tail:
                ahead = q[head + _WIDE_AHEAD // 2]
                MG_PREFETCH(<PyObject*>(<Node>ahead).a)
                MG_PREFETCH(<PyObject*>(<Node>ahead).b)
            node = q[head]
            head += 1
            if not _runs_wide(node):
                ok = False
                break
            n = mg_op_operands((<Node>node).op)
            m = n if n else len(<tuple>(<Node>node).b) + 1
            if tail + m > cap:
                while tail + m > cap:
                    cap *= 2
                q = <PyObject**>_grow(q, cap * sizeof(PyObject*))
                if saved != NULL:
                    saved = <double*>_grow(saved, cap * sizeof(double))
            _count_user(<PyObject*>(<Node>node).a, q, &tail, saved, mark)
            if n == 2:
                _count_user(<PyObject*>(<Node>node).b, q, &tail, saved, mark)
            elif n == 0:
                items = _tuple_items(<tuple>(<Node>node).b)
                for i in range(m - 1):
                    _count_user(items[i], q, &tail, saved, mark)
        base = _epoch + 1
        for k in range(tail):
            if k + _WIDE_AHEAD < tail:
                MG_PREFETCH(q[k + _WIDE_AHEAD])
            node = q[k]
            users = <unsigned int>(<Value>node).grad
            most = users if users > most else most
            (<Value>node).grad = saved[k] if saved != NULL else 0.0
            if ok:
                (<Node>node).epoch = base + users
        # (the leaves take base and base + 1: _LeafStash.take)
        _epoch = base + most
        ready[0] = base
    finally:
        free(saved)
        queue[0], queue_cap[0] = q, cap
    return ok

cdef void _undo_leaves(PyObject** entered, Py_ssize_t n) noexcept:
    """Zero the gradient of every leaf the ``n`` entered nodes handed theirs
    to (what it held before is in the stash)."""
    cdef Py_ssize_t k, i
    cdef PyObject* node
    cdef PyObject** items
    for k in range(n):
        node = entered[k]
        if (<Node>node).a is not None:
            _zero_leaf(<PyObject*>(<Node>node).a)
        if args_in_b((<Node>node).op):
            items = _tuple_items(<tuple>(<Node>node).b)
            for i in range(len(<tuple>(<Node>node).b)):
                _zero_leaf(items[i])
        elif (<Node>node).b is not None:
            _zero_leaf(<PyObject*>(<Node>node).b)


cdef inline void _zero_leaf(PyObject* v) noexcept:
    if (<Node>v).op == OP_LEAF and (<Node>v).requires_grad:
        (<Value>v).grad = 0.0


cdef void* _grow(void* p, size_t size) except NULL:
    cdef void* q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q


cdef int run_backward(Node root, object grad) except -1:
    """Backpropagate from ``root`` seeded with ``grad`` (a float for a Value,
    an array for a tensor), through every node that needs a gradient."""
    cdef PyObject** order = NULL
    cdef Py_ssize_t n, i, order_cap = 0
    cdef Node node
    cdef _LeafStash stash = _LeafStash.__new__(_LeafStash)
    cdef double seed
    if not root.requires_grad:
        raise RuntimeError(
            "backward(): this node does not require grad; nothing it depends on takes a gradient")
    # Intermediate gradients are recomputed from zero on every pass (the
    # breadth-first pass starts each from its first share, the sort zeroes
    # them); leaves (op LEAF) keep accumulating until the user zeroes them
    # (their gradients are set aside in the stash, by the sort or as the
    # passes first hand them a share).  A Value root's graph is entered
    # breadth first where that is an order, else in Kahn's order (both
    # _wide_pass), else sorted.
    try:
        if not _anomaly_mode and isinstance(root, Value) and root.op != OP_LEAF:
            seed = <double>grad
            if _wide_pass(<Value>root, seed, stash, False, NULL, NULL) >= 0 \
                    or _wide_pass(<Value>root, seed, stash, True, NULL, NULL) >= 0:
                return 0
        n = _topo_sort(root, &order, &order_cap, False, stash)
        seed_grad(root, grad, False)
        _sweep(order, n, stash)
    finally:
        stash.restore()
        _return_buffers(NULL, 0, order, order_cap)
    return 0


cdef int _sweep(PyObject** order, Py_ssize_t n, _LeafStash stash) except -1:
    """The reverse sweep: each node that needs a gradient passes its own on to
    its parents, in reverse topological order.  (Nodes are borrowed from the
    order: no reference counting, so the sweep writes only gradients.)
    ``stash``: run_backward's, whose sort left some leaves to the sweep."""
    cdef Py_ssize_t i
    cdef PyObject* node
    cdef PyObject* ahead
    for i in range(n - 1, -1, -1):
        # the order is known in advance: load the node _SWEEP_NODE_AHEAD
        # places ahead, and the parents of the node _SWEEP_PARENTS_AHEAD
        # places ahead (whose line has arrived)
        if i >= _SWEEP_NODE_AHEAD:
            MG_PREFETCH(order[i - _SWEEP_NODE_AHEAD])
        if i >= _SWEEP_PARENTS_AHEAD:
            ahead = order[i - _SWEEP_PARENTS_AHEAD]
            MG_PREFETCH(<PyObject*>(<Node>ahead).a)
            MG_PREFETCH(<PyObject*>(<Node>ahead).b)
        node = order[i]
        if (<Node>node).op == OP_LEAF or not (<Node>node).requires_grad:
            continue                 # nothing to pass on
        if (<Node>node).op == OP_CUSTOM:
            if (<Node>node).a is not None:   # a rule written in Python (_backward, Function)
                run_python_rule(<Node>node)
        elif isinstance(<object>node, Value):
            _scalar_backward(<Value>node, stash)
        else:
            (<ArrayNode>node)._backward()
        if _anomaly_mode:
            check_backward(<Node>node)
    return 0


def _grad_pass(tuple roots, tuple seeds, tuple inputs):
    """The compiled first-order pass behind ``microgrid.autograd.grad``:
    gradients of ``roots`` (each seeded with its entry of ``seeds``, a float
    for a Value, an array for a Tensor) with respect to ``inputs``, leaving
    the ``.grad`` of every node as it was.  Returns one entry per input: a
    float for a Value, an array (or None for zeros) for a Tensor, and
    ``False`` for an input the pass does not reach."""
    cdef PyObject** order = NULL
    cdef Py_ssize_t n = 0, i, k, order_cap = 0
    cdef double* saved = NULL
    cdef list tensors = []          # (tensor, its gradient storage before the pass)
    cdef list merged = None
    cdef set seen = None
    cdef Node node
    for r in roots:
        if not (<Node?>r).requires_grad:
            raise RuntimeError("grad(): an output does not require grad")
    if len(roots) == 1:
        n = _topo_sort(<Node>roots[0], &order, &order_cap, False, None)
    else:
        # each root's post-order, nodes met before left out: still an order
        # in which every node comes after the nodes it depends on
        merged, seen = [], set()
        for r in roots:
            n = _topo_sort(<Node>r, &order, &order_cap, False, None)
            try:
                for i in range(n):
                    if id(<object>order[i]) not in seen:
                        seen.add(id(<object>order[i]))
                        merged.append(<object>order[i])
            finally:
                _return_buffers(NULL, 0, order, order_cap)
                order = NULL
        n = len(merged)
        order = <PyObject**>malloc((n + 1) * sizeof(PyObject*))
        order_cap = n + 1
        if order == NULL:
            raise MemoryError()
        for i in range(n):
            order[i] = <PyObject*>merged[i]
    try:
        saved = <double*>malloc((n + 1) * sizeof(double))
        if saved == NULL:
            raise MemoryError()
        k = 0
        try:
            for k in range(n):
                node = <Node>order[k]
                if isinstance(node, Value):
                    saved[k] = (<Value>node).grad
                    (<Value>node).grad = 0.0
                else:
                    tensors.append((node, swap_grad(node, None)))
            k = n
            for i in range(len(roots)):
                seed_grad(<Node>roots[i], seeds[i], True)
            _sweep(order, n, None)
            out = []
            for x in inputs:
                if seen is None and (<Node>x).epoch != _epoch or seen is not None and id(x) not in seen:
                    out.append(False)
                elif isinstance(x, Value):
                    out.append((<Value>x).grad)
                else:
                    g = swap_grad(<Node>x, None)
                    swap_grad(<Node>x, g)
                    out.append(g)
            return tuple(out)
        finally:
            for i in range(k):
                if isinstance(<object>order[i], Value):
                    (<Value>order[i]).grad = saved[i]
            for node, earlier in tensors:
                swap_grad(node, earlier)
    finally:
        free(saved)
        _return_buffers(NULL, 0, order, order_cap)


def topological_order(Node root not None, *, bint every_node=True):
    """The nodes ``root`` depends on, in the order a forward pass computes
    them, ``root`` last; with ``every_node=False`` only those backward visits."""
    cdef PyObject** order = NULL
    cdef Py_ssize_t order_cap = 0
    cdef Py_ssize_t n = _topo_sort(root, &order, &order_cap, every_node, None), i
    try:
        return [<object>order[i] for i in range(n)]
    finally:
        _return_buffers(NULL, 0, order, order_cap)


# ---------------------------------------------------------------------------
# Many Values' numbers at once (an optimiser's step over scalar parameters)

cdef int _check_values(list values) except -1:
    """A TypeError unless every entry of ``values`` is a Value, raised before
    any of them is read or written."""
    cdef Py_ssize_t i
    for i in range(len(values)):
        if not isinstance(<object>PyList_GET_ITEM(values, i), Value):
            raise TypeError(f"values[{i}] is a {type(values[i]).__name__}, not a Value")
    return 0


# The loops below read the entries through borrowed pointers (the list owns
# them and is not changed meanwhile): no reference counting per Value.

def _values_read(list values not None, double[::1] data, double[::1] grad):
    """Copy each Value's data and grad into ``data[i]`` and ``grad[i]``."""
    cdef Py_ssize_t i, n = len(values)
    cdef PyObject* v
    if data.shape[0] != n or grad.shape[0] != n:
        raise ValueError(f"_values_read: {n} values but arrays of {data.shape[0]} and {grad.shape[0]}")
    _check_values(values)
    for i in range(n):
        v = PyList_GET_ITEM(values, i)
        data[i] = (<Value>v).data
        grad[i] = (<Value>v).grad


def _values_write(list values not None, const double[::1] data):
    """Set each Value's data to ``data[i]``."""
    cdef Py_ssize_t i, n = len(values)
    if data.shape[0] != n:
        raise ValueError(f"_values_write: {n} values but an array of {data.shape[0]}")
    _check_values(values)
    for i in range(n):
        (<Value>PyList_GET_ITEM(values, i)).data = data[i]


def _values_zero_grad(list values not None):
    """Set each Value's grad to zero."""
    cdef Py_ssize_t i
    _check_values(values)
    for i in range(len(values)):
        (<Value>PyList_GET_ITEM(values, i)).grad = 0.0


def _values_add_scaled(list values not None, double alpha):
    """``v.data = v.data + alpha * v.grad`` for each Value: the arithmetic of
    tensors._tensor._add_scaled on the gathered arrays (for alpha = -lr,
    SGD's plain step), without gathering them."""
    cdef Py_ssize_t i
    cdef PyObject* v
    _check_values(values)
    for i in range(len(values)):
        v = PyList_GET_ITEM(values, i)
        (<Value>v).data = (<Value>v).data + alpha * (<Value>v).grad


# ---------------------------------------------------------------------------
# Graph replay (microgrid.Graph)

include "replay.pxi"


# ---------------------------------------------------------------------------
# The op table on the Python side, and the methods generated from it

def _op_rows():
    """Every entry of the op table (csrc/mg_ops.def), one per op code, as a
    dict of its columns; microgrid.core.optable reads it."""
    cdef Py_ssize_t i
    cdef mg_op_row r
    rows = []
    for i in range(OP_COUNT):
        r = mg_op_rows[i]
        rows.append(dict(
            code=r.code, kind=r.kind, base=r.base, code_name=r.code_name.decode(),
            name=r.name.decode(), symbol=r.symbol.decode(), torch=r.torch.decode(),
            param=r.param.decode(), param_default=r.param_default,
            forward=r.forward.decode(), grad_a=r.grad_a.decode(), grad_b=r.grad_b.decode(),
            show=r.show.decode(), show_grad_a=r.show_grad_a.decode(),
            show_grad_b=r.show_grad_b.decode()))
    return rows


KINDS = {name: value for name, value in (
    ("LEAF", KIND_LEAF), ("CUSTOM", KIND_CUSTOM), ("BINARY", KIND_BINARY),
    ("BINARY_AC", KIND_BINARY_AC), ("BINARY_CA", KIND_BINARY_CA), ("UNARY", KIND_UNARY),
    ("UNARY_C", KIND_UNARY_C), ("NARY", KIND_NARY), ("ELEMENTWISE", KIND_ELEMENTWISE),
    ("REDUCE", KIND_REDUCE), ("SHAPE", KIND_SHAPE), ("PRODUCT", KIND_PRODUCT),
    ("LOSS", KIND_LOSS), ("CONV", KIND_CONV))}


def _opcode(Node node not None):
    """The op code of ``node`` (an index into the op table)."""
    return node.op


cdef elementwise_builder _tensor_builder = NULL


cdef void register_tensor_builder(elementwise_builder builder) noexcept:
    global _tensor_builder
    _tensor_builder = builder


cdef object _foreign_self(str name, type cls, object self):
    return TypeError(f"descriptor '{name}' for '{cls.__name__}' objects doesn't apply to a "
                     f"'{type(self).__name__}' object")


cdef extern from "mg_methods.h":
    ctypedef object (*mg_builder_fn)(object self, int op)
    ctypedef struct PyMethodDef:
        const char* ml_name
        const char* ml_doc
    PyMethodDef* mg_method_defs
    void mg_methods_init(mg_builder_fn builder)
    object PyDescr_NewMethod(PyTypeObject* cls, PyMethodDef* method)


cdef object _build_plain(object self, int op):
    """What a generated no-argument method builds (CPython has checked the
    type of self against the class the method belongs to)."""
    if isinstance(self, Value):
        return _with_const(op, <Value>self, 0.0)
    return _tensor_builder(self, op, 0.0)


mg_methods_init(_build_plain)
cdef list _method_texts = []      # keeps the names and docstrings the C definitions point to


def _plain_method(type cls, str name, int op, str doc):
    """The method ``name()`` of ``cls`` (Value or Tensor) that builds a node
    of the one-operand row ``op``: a C method of CPython's own kind."""
    if not (cls is Value or (issubclass(cls, Node) and _tensor_builder != NULL)):
        raise TypeError(f"_plain_method: no builder for {cls.__name__}")
    if op < 0 or op >= OP_COUNT or mg_op_kind[op] != KIND_UNARY:
        raise ValueError(f"_plain_method: {op} is not the code of a one-operand row")
    if mg_method_defs[op].ml_name == NULL:
        name_bytes = name.encode()
        doc_bytes = f"{name}($self, /)\n--\n\n{doc}".encode()
        _method_texts.extend([name_bytes, doc_bytes])
        mg_method_defs[op].ml_name = name_bytes
        mg_method_defs[op].ml_doc = doc_bytes
    return PyDescr_NewMethod(<PyTypeObject*>cls, &mg_method_defs[op])


def _elementwise_method(type cls, str name, tuple parameters, dict codes, str doc):
    """A method of ``cls`` (Value or Tensor) that builds an elementwise node
    of a row with a constant or of one of several rows a keyword chooses.

    ``parameters``: the method's keywords after self, as (keyword, default,
    kind) triples; kind "constant" is the op's constant (a real number),
    kind "variant" a string choosing the op code from ``codes`` (keyed by
    the string; with no variant keyword ``codes`` has the one key None).
    """
    cdef bint is_value = cls is Value
    if not (is_value or (issubclass(cls, Node) and _tensor_builder != NULL)):
        raise TypeError(f"_elementwise_method: no builder for {cls.__name__}")

    def method(self, *args, **kwargs):
        cdef double c = 0.0
        cdef int code
        if not isinstance(self, cls):
            raise _foreign_self(name, cls, self)
        if len(args) > len(parameters):
            raise TypeError(f"{name}() takes at most {len(parameters)} argument"
                            f"{'s' if len(parameters) > 1 else ''} after self ({len(args)} given)")
        chosen = None
        for i, (keyword, default, kind) in enumerate(parameters):
            if i < len(args):
                if keyword in kwargs:
                    raise TypeError(f"{name}() got multiple values for argument '{keyword}'")
                value = args[i]
            else:
                value = kwargs.pop(keyword, default)
            if kind == "variant":
                if not isinstance(value, str) or value not in codes:
                    raise ValueError(f"{name}({keyword}=...) must be one of "
                                     f"{', '.join(repr(k) for k in codes)}, got {value!r}")
                chosen = value
            elif not _to_double(value, &c):
                raise TypeError(f"{name}({keyword}=...) takes a real number, "
                                f"got {type(value).__name__}")
        if kwargs:
            raise TypeError(f"{name}() got an unexpected keyword argument "
                            f"'{next(iter(kwargs))}'")
        code = codes[chosen]
        if is_value:
            return _with_const(code, <Value>self, c)
        return _tensor_builder(self, code, c)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return method


def _install_method(type cls, str name, object method):
    """Put ``method`` into the type dict of ``cls`` (a compiled class, whose
    attributes Python code cannot set), where Python finds its methods."""
    if not issubclass(cls, Node):
        raise TypeError(f"_install_method: {cls.__name__} is not a graph node class")
    (<dict>(<PyTypeObject*>cls).tp_dict)[name] = method
    PyType_Modified(<PyTypeObject*>cls)


# ---------------------------------------------------------------------------
# Nodes whose rule is Python code
#
# A node the user builds by hand, ``Value(data, _children, _op)``, has op
# CUSTOM: its parents sit in ``args``, its ``_op`` text in ``b``, and ``a``,
# unused by that kind, holds its rule when it has one: a callable taking no
# arguments that adds into the parents' ``.grad`` (micrograd's ``_backward``),
# or a ``PyRule`` (the context of a microgrid.autograd.Function call).  The
# reverse sweep calls it where it would apply a table rule; no other node
# pays anything for this.
#
# Such a rule is usually a closure over its own node (``out._backward``
# reads ``out.grad``), a reference cycle.  Compiled nodes are not tracked by
# the cyclic garbage collector, so hand-built nodes are instances of a
# subclass that is: ``Value(data, _children, _op)`` makes a
# ``_HandBuiltValue`` (16 bytes of GC header more than a Value, and tracked),
# and only such nodes (and the Tensor outputs of Functions) take a Python rule.

cdef class PyRule:
    """Base of the rule objects of nodes whose backward is Python code that
    needs the node itself (microgrid.autograd.Function's context).  The
    reverse sweep calls ``_apply(node)``; reading ``node._backward`` gives a
    callable that runs ``_apply_once(node)``; the differentiable sweep
    (create_graph) calls ``_graph_vjp(node, g)``."""

    def _apply(self, node):
        raise NotImplementedError(f"{type(self).__name__}._apply")

    def _apply_once(self, node):
        self._apply(node)

    def _graph_vjp(self, node, g):
        raise NotImplementedError(f"{type(self).__name__}._graph_vjp")


cdef int run_python_rule(Node node) except -1:
    """Run the Python rule of a CUSTOM node (its ``a``)."""
    rule = node.a
    if isinstance(rule, PyRule):
        rule._apply(node)
    else:
        rule()
    return 0


cdef int _traverse_node(PyObject* o, visitproc visit, void* arg) noexcept:
    """tp_traverse of hand-built nodes: the rule, the parents and the type."""
    cdef int r
    cdef Node n = <Node>o
    for field in (n.a, n.b, None if isinstance(n, Value) else (<ArrayNode>n).args):
        if field is not None:
            r = visit(<PyObject*>field, arg)
            if r:
                return r
    return visit(_type_of(o), arg)


cdef int _clear_node(PyObject* o) noexcept:
    """tp_clear of hand-built nodes: dropping the rule breaks the cycle."""
    cdef Node n = <Node>o
    if n.op == OP_CUSTOM:
        n.a = None
    return 0


cdef void gc_node_type(type cls) noexcept:
    """Make the cyclic collector see the rule and parents of ``cls``'s nodes
    (``cls``: a garbage-collected subclass of a node class)."""
    (<PyTypeObject*>cls).tp_traverse = _traverse_node
    (<PyTypeObject*>cls).tp_clear = _clear_node


cdef mg_newfunc _value_tp_new = <mg_newfunc>(<PyTypeObject*>Value).tp_new


cdef PyObject* _value_new(PyTypeObject* cls, PyObject* args, PyObject* kwds) noexcept:
    """``Value(...)``: a node given ``_children`` or ``_op`` is built by hand
    and so takes the garbage-collected subclass."""
    if cls == <PyTypeObject*>Value and (
            (args != NULL and PyTuple_GET_SIZE(args) > 1)
            or (kwds != NULL and (PyDict_GetItemString(kwds, "_children") != NULL
                                  or PyDict_GetItemString(kwds, "_op") != NULL))):
        cls = <PyTypeObject*>_HandBuiltValue
    return _value_tp_new(cls, args, kwds)


cdef mg_vectorcall _value_tp_vectorcall = <mg_vectorcall>(<PyTypeObject*>Value).tp_vectorcall


cdef PyObject* _value_call(PyObject* cls, PyObject** args, size_t nargsf,
                           PyObject* kwnames) noexcept:
    """``Value(...)`` through the vectorcall protocol: the same choice."""
    cdef Py_ssize_t i
    cdef bint by_hand = PyVectorcall_NARGS(nargsf) > 1
    if kwnames != NULL and not by_hand:
        for i in range(PyTuple_GET_SIZE(kwnames)):
            name = PyTuple_GET_ITEM(<object>kwnames, i)
            if (PyUnicode_CompareWithASCIIString(name, "_children") == 0
                    or PyUnicode_CompareWithASCIIString(name, "_op") == 0):
                by_hand = True
    if by_hand and cls == <PyObject*>Value:
        return PyObject_Vectorcall(<PyObject*>_HandBuiltValue, args, nargsf, kwnames)
    return _value_tp_vectorcall(cls, args, nargsf, kwnames)


(<PyTypeObject*>Value).tp_new = <void*>_value_new
if _value_tp_vectorcall != NULL:
    (<PyTypeObject*>Value).tp_vectorcall = <void*>_value_call


class _HandBuiltValue(Value):
    """A Value built by hand, ``Value(data, _children, _op)``: a node whose
    rule may be Python code, tracked by the cyclic garbage collector."""
    __slots__ = ("_gc",)     # a slot of its own makes the type garbage-collected


gc_node_type(_HandBuiltValue)


def _custom_value(double data, tuple parents, object rule, str op, bint requires_grad):
    """A CUSTOM Value node of ``parents`` (nodes) whose rule is ``rule``."""
    cdef Value out = _HandBuiltValue.__new__(_HandBuiltValue)
    out.data = data
    out.op = OP_CUSTOM
    out.b = parents
    _set_op_text(out, op)
    out.a = rule
    out.requires_grad = requires_grad
    return out


def _in_pass(Node node not None):
    """Whether the latest topological sort (that of the backward pass under
    way, when a rule asks) reached ``node``."""
    return node.epoch == _epoch


def _pass_stamp():
    """The stamp of the latest topological sort: a rule that waits for
    several nodes of one pass tells passes apart by it."""
    return _epoch


# -- reading and assigning ``_backward`` (micrograd's extension pattern) -------

@cython.final
cdef class _ApplyRule:
    """A node's rule as a callable, applied once (``node._backward()``): it
    reads the node's ``grad`` and adds into its parents' ``grad``."""
    cdef Node node

    def __call__(self):
        cdef Node node = self.node
        if node.op == OP_LEAF:
            return None
        if node.op == OP_CUSTOM:
            if isinstance(node.a, PyRule):
                node.a._apply_once(node)
            elif node.a is not None:
                node.a()
            return None
        # the sweep over this one node: _scalar_backward keeps its one call
        # site, inlined in the sweep's loop
        cdef PyObject* one = <PyObject*>node
        _sweep(&one, 1, None)
        return None

    def __repr__(self):
        return f"<rule of the {self.node._op!r} node>"


def _get_backward(Node self):
    cdef _ApplyRule apply
    if self.op == OP_CUSTOM and self.a is not None and not isinstance(self.a, PyRule):
        return self.a        # the callable the user assigned, as assigned
    apply = _ApplyRule.__new__(_ApplyRule)
    apply.node = self
    return apply


def _set_backward(Node self, rule):
    if rule is not None and not callable(rule):
        raise TypeError(f"_backward must be a callable taking no arguments (or None), "
                        f"got {type(rule).__name__}")
    if self.op != OP_CUSTOM:
        raise TypeError(
            f"_backward: this {'leaf' if self.op == OP_LEAF else repr(self._op) + ' node'} "
            "has no rule of your own to set; a rule written in Python belongs to a node built "
            "as Value(data, _children, _op), as in micrograd")
    self.a = rule


(<dict>(<PyTypeObject*>Value).tp_dict)["_backward"] = property(
    _get_backward, _set_backward, None,
    "The node's backward rule as a callable: calling it applies the rule once (reads "
    "this node's grad, adds into its parents' grad).  A node built by hand, "
    "Value(data, _children, _op), takes a Python callable as its rule, which "
    "backward() then runs in topological order.")

# Value is a compiled class, but micrograd's users extend theirs by assigning
# to it (``Value.tanh = tanh``): its dict may be written like a Python class's.
# The methods already there (compiled, or generated from the op table) stay
# as they are until replaced.
(<PyTypeObject*>Value).tp_flags &= ~Py_TPFLAGS_IMMUTABLETYPE
PyType_Modified(<PyTypeObject*>Value)

# The C-level node model shared by every compiled module of microgrid.
#
# Node is the base of every graph node (Value here, Tensor in _tensor.pyx
# through ArrayNode): an op code, flags, the traversal mark used by
# backward() and two parent slots.  Scalar ops are switched on inline in
# backward(); array nodes supply their rules through ArrayNode's virtual
# methods.

cimport cython

cdef extern from "mg_ops.h":
    # The op codes (generated from csrc/mg_ops.def); only the codes the engine
    # handles by name are declared here, the others are numbers read from
    # the table.
    ctypedef enum mg_op:
        OP_LEAF "MG_OP_LEAF"
        OP_CUSTOM "MG_OP_CUSTOM"
        OP_ADD "MG_OP_ADD"
        OP_ADD_AC "MG_OP_ADD_AC"
        OP_SUB "MG_OP_SUB"
        OP_SUB_AC "MG_OP_SUB_AC"
        OP_SUB_CA "MG_OP_SUB_CA"
        OP_MUL "MG_OP_MUL"
        OP_MUL_AC "MG_OP_MUL_AC"
        OP_DIV "MG_OP_DIV"
        OP_DIV_AC "MG_OP_DIV_AC"
        OP_DIV_CA "MG_OP_DIV_CA"
        OP_POW "MG_OP_POW"
        OP_POW_AC "MG_OP_POW_AC"
        OP_POW_CA "MG_OP_POW_CA"
        OP_NEG "MG_OP_NEG"
        OP_ABS "MG_OP_ABS"
        OP_RELU "MG_OP_RELU"
        OP_SUM "MG_OP_SUM"
        OP_MEAN "MG_OP_MEAN"
        OP_DOT "MG_OP_DOT"
        OP_ELEMENT "MG_OP_ELEMENT"
        OP_COUNT "MG_OP_COUNT"
    # How a node of each op code is computed (mg_op_kind[op]).
    ctypedef enum mg_kind:
        KIND_LEAF "MG_KIND_LEAF"
        KIND_CUSTOM "MG_KIND_CUSTOM"
        KIND_BINARY "MG_KIND_BINARY"
        KIND_BINARY_AC "MG_KIND_BINARY_AC"
        KIND_BINARY_CA "MG_KIND_BINARY_CA"
        KIND_UNARY "MG_KIND_UNARY"
        KIND_UNARY_C "MG_KIND_UNARY_C"
        KIND_NARY "MG_KIND_NARY"
        KIND_ELEMENTWISE "MG_KIND_ELEMENTWISE"
        KIND_REDUCE "MG_KIND_REDUCE"
        KIND_SHAPE "MG_KIND_SHAPE"
        KIND_PRODUCT "MG_KIND_PRODUCT"
        KIND_LOSS "MG_KIND_LOSS"
        KIND_CONV "MG_KIND_CONV"
    const unsigned char* mg_op_kind
    int mg_op_operands(int op) nogil
    double mg_forward(int op, double a, double b, double c) nogil
    void mg_local_grads(int op, double a, double b, double out, double c,
                        double* da, double* db) nogil


# no_gc here too: modules that cimport Node see only this declaration, and
# their subclasses would otherwise be tracked by the cyclic collector
#
# The layout is what every node pays for, so it is kept to the fields a pass
# reads: a Value is one 64-byte cache line (object header 16, op/flags/epoch 8,
# a and b 16, data, grad and aux 24).  No C method lives on Node or Value (a
# method table pointer would cost every Value 8 bytes): the rules of array
# nodes are the virtual methods of ArrayNode, and the engine calls them after
# telling a Value from an array node.  Rarely used fields live outside the
# record: a label (any node) and the ``_op`` text of a hand-built Value in
# tables keyed by the node (a flag bit says it has an entry), an array node's
# operand tuple and creation number on ArrayNode.
cdef enum:
    F_LABELED = 1          # the node has an entry in the label table
    F_OP_TEXT = 2          # (hand-built Value) it has an entry in the _op text table
    F_SIDE_TABLES = 3      # (either of the two above)
    # (a Value built by an op) parent a / b was a leaf when the node was
    # built: backward's sort leaves that parent to the sweep (see _topo_sort)
    F_A_LEAF = 4
    F_B_LEAF = 8
    # (a leaf) a node built from it has F_A_LEAF or F_B_LEAF for it, so it
    # must stay a leaf (Value.__init__ refuses to give it children)
    F_LEAF_OPERAND = 16


@cython.no_gc
cdef class Node:
    cdef unsigned short op
    cdef unsigned char requires_grad
    cdef unsigned char flags
    cdef unsigned int epoch
    # the parents: for a Value, ``a`` and ``b`` are its operands, except that
    # the operand tuple of sum/mean/dot (and the children of a hand-built
    # node) sits in ``b`` (dot's bias in ``a``; a hand-built node's rule in
    # ``a``); read them with operands()/second_parent() below
    cdef object a
    cdef object b


@cython.no_gc
cdef class Value(Node):
    cdef public double data
    cdef public double grad
    cdef double aux


@cython.no_gc
cdef class ArrayNode(Node):
    # the base of Tensor: n-ary operands, creation number (the in-place
    # checks compare it) and the contract each array node kind fulfils
    cdef tuple args
    cdef unsigned long long seq

    # reset this node's gradient to zeros (run_backward calls it on every
    # non-leaf node before the sweep)
    cdef int _zero_grad(self) except -1
    # set, or add to if ``accumulate`` (a leaf root), this root's gradient
    cdef int _seed(self, object grad, bint accumulate) except -1
    # add this node's gradient, times the local derivative, into the
    # gradient of each parent whose requires_grad is set
    cdef int _backward(self) except -1
    # recompute this node's value from its parents' current values
    cdef int _forward(self) except -1
    # add g into element ``index`` (flat, C order) of this node's gradient
    cdef int _add_grad_at(self, Py_ssize_t index, double g) except -1
    # element ``index`` (flat, C order) of this node's value
    cdef double _element(self, Py_ssize_t index) except? -1.0
    # this node's gradient storage as it is (a Tensor's buffer or None),
    # replaced by ``grad`` (None: zero); for passes that must leave ``.grad``
    # as they found it (microgrid.autograd.grad)
    cdef object _swap_grad(self, object grad)


cdef inline bint args_in_b(unsigned short op) noexcept:
    """Whether a Value of op ``op`` keeps an operand tuple in ``b``."""
    return op == OP_SUM or op == OP_MEAN or op == OP_DOT or op == OP_CUSTOM


cdef inline tuple operands(Node n):
    """The n-ary operands of ``n`` (a tuple, or None)."""
    if isinstance(n, Value):
        return <tuple>n.b if args_in_b(n.op) else None
    return (<ArrayNode>n).args


cdef inline object second_parent(Node n):
    """The parent in slot b, or None (for a Value whose b holds its operands)."""
    if isinstance(n, Value) and args_in_b(n.op):
        return None
    return n.b


# The rule object of a node whose backward is Python code (see _engine.pyx)
cdef class PyRule:
    pass

# run the Python rule of a CUSTOM node (kept in its ``a``)
cdef int run_python_rule(Node node) except -1
# give a garbage-collected node subclass the collector hooks of hand-built nodes
cdef void gc_node_type(type cls) noexcept

cdef bint anomaly_enabled() noexcept
# False inside no_grad (this thread records no graph); make_leaf cuts a node
# built there from its parents
cdef bint grad_enabled() noexcept
cdef void make_leaf(Node node) noexcept
cdef int check_forward(Node out) except -1
cdef int check_backward(Node node) except -1
cdef unsigned long long next_seq()
cdef int run_backward(Node root, object grad) except -1
# The builder of an elementwise tensor node, which _tensor registers: the
# methods generated from the op table call it for Tensor operands.
ctypedef object (*elementwise_builder)(object self, int op, double c)
cdef void register_tensor_builder(elementwise_builder builder) noexcept
cdef Value make_element(Node source, Py_ssize_t index, double data, bint requires_grad)

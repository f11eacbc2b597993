# The C-level node model shared by every compiled module of microgrid.
#
# Node is the base of every graph node (Value here, Tensor in _tensor.pyx):
# an op code, up to two parent references plus a tuple for n-ary ops, a label,
# a creation sequence number and the traversal mark used by backward().
# Scalar ops are switched on inline in backward(); every other node kind
# supplies its rules through the virtual methods below.

cimport cython

cdef extern from "mg_ops.h":
    # The scalar op codes (csrc/mg_ops.h documents each).
    ctypedef enum mg_op:
        OP_LEAF "MG_OP_LEAF"
        OP_CUSTOM "MG_OP_CUSTOM"
        OP_ADD "MG_OP_ADD"
        OP_SUB "MG_OP_SUB"
        OP_MUL "MG_OP_MUL"
        OP_DIV "MG_OP_DIV"
        OP_POW "MG_OP_POW"
        OP_ADD_CONST "MG_OP_ADD_CONST"
        OP_RSUB_CONST "MG_OP_RSUB_CONST"
        OP_MUL_CONST "MG_OP_MUL_CONST"
        OP_DIV_CONST "MG_OP_DIV_CONST"
        OP_RDIV_CONST "MG_OP_RDIV_CONST"
        OP_POW_CONST "MG_OP_POW_CONST"
        OP_RPOW_CONST "MG_OP_RPOW_CONST"
        OP_NEG "MG_OP_NEG"
        OP_ABS "MG_OP_ABS"
        OP_RELU "MG_OP_RELU"
        OP_LEAKY_RELU "MG_OP_LEAKY_RELU"
        OP_SIGMOID "MG_OP_SIGMOID"
        OP_TANH "MG_OP_TANH"
        OP_EXP "MG_OP_EXP"
        OP_LOG "MG_OP_LOG"
        OP_SQRT "MG_OP_SQRT"
        OP_SOFTPLUS "MG_OP_SOFTPLUS"
        OP_SIN "MG_OP_SIN"
        OP_COS "MG_OP_COS"
        OP_SUM "MG_OP_SUM"
        OP_MEAN "MG_OP_MEAN"
        OP_DOT "MG_OP_DOT"
        OP_ELEMENT "MG_OP_ELEMENT"
        OP_SCALAR_END "MG_OP_SCALAR_END"
    int OP_FIRST_NARY "MG_OP_FIRST_NARY"
    bint mg_op_is_binary(int op) nogil
    double mg_forward(int op, double x, double y, double aux) nogil
    void mg_backward(int op, double x, double y, double out, double aux,
                     double g, double* gx, double* gy) nogil


# no_gc here too: modules that cimport Node see only this declaration, and
# their subclasses would otherwise be tracked by the cyclic collector
@cython.no_gc
cdef class Node:
    cdef unsigned short op
    cdef unsigned char requires_grad
    cdef unsigned int epoch
    cdef unsigned long long seq
    cdef object a
    cdef object b
    cdef tuple args
    cdef object _label

    # The contract each node kind fulfils (Value's scalar rules are inlined in
    # run_backward instead):
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


@cython.no_gc
cdef class Value(Node):
    cdef public double data
    cdef public double grad
    cdef double aux


cdef bint anomaly_enabled() noexcept
cdef int check_forward(Node out) except -1
cdef int check_backward(Node node) except -1
cdef unsigned long long next_seq()
cdef int run_backward(Node root, object grad) except -1
cdef Value make_element(Node source, Py_ssize_t index, double data, bint requires_grad)

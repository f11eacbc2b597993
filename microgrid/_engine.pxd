# The C-level node model shared by every compiled module of microgrid.
#
# Node is the base of every graph node (Value here, Tensor in _tensor.pyx):
# an op code, up to two parent references plus a tuple for n-ary ops, a label,
# a creation sequence number and the traversal mark used by backward().
# Scalar ops are switched on inline in backward(); every other node kind
# supplies its rules through the virtual methods below.

cimport cython

cdef enum Op:
    OP_LEAF = 0
    OP_CUSTOM       # built by Value(data, _children, _op): parents kept, no rule
    OP_ADD
    OP_SUB
    OP_MUL
    OP_DIV
    OP_POW
    OP_ADD_CONST    # a + aux
    OP_RSUB_CONST   # aux - a
    OP_MUL_CONST    # a * aux
    OP_DIV_CONST    # a / aux
    OP_RDIV_CONST   # aux / a
    OP_POW_CONST    # a ** aux
    OP_RPOW_CONST   # aux ** a
    OP_NEG
    OP_ABS
    OP_RELU
    OP_LEAKY_RELU   # aux = negative slope
    OP_SIGMOID
    OP_TANH
    OP_EXP
    OP_LOG
    OP_SQRT
    OP_SOFTPLUS
    OP_SIN
    OP_COS
    OP_SUM          # args + aux
    OP_MEAN         # (sum of args) / len(args)
    OP_DOT          # sum args[i] * args[n + i] + a (bias, optional)
    OP_ELEMENT      # a[aux]: one element of a Tensor, by flat index
    OP_SCALAR_END   # op codes from here on belong to other node kinds


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


@cython.no_gc
cdef class Value(Node):
    cdef public double data
    cdef public double grad
    cdef double aux


cdef unsigned long long next_seq()
cdef int run_backward(Node root, object grad) except -1
cdef Value make_element(Node source, Py_ssize_t index, double data, bint requires_grad)

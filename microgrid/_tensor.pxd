# The tensor node: an n-d float64 array that is a node of the same graph as
# Value.  Other compiled modules cimport it to build tensor nodes or to read
# their buffers without going through Python properties.

cimport cython
from microgrid._engine cimport Node

# The op codes of tensor nodes that the tensor code handles by name: the one
# code space of the op table (csrc/mg_ops.def), shared with Value nodes; an
# elementwise node carries its row's code (MG_OP_SIGMOID for a sigmoid Value
# and a sigmoid Tensor alike).  ctx holds what an op needs besides its
# parents.
cdef extern from "mg_ops.h":
    ctypedef enum:
        T_ADD "MG_OP_ADD"
        T_SUB "MG_OP_SUB"
        T_MUL "MG_OP_MUL"
        T_DIV "MG_OP_DIV"
        T_POW "MG_OP_POW"
        T_NEG "MG_OP_NEG"
        T_ABS "MG_OP_ABS"
        T_CLAMP "MG_OP_CLAMP"                     # ctx = (min or None, max or None)
        T_SUM "MG_OP_REDUCE_SUM"                  # reductions: ctx = (axes or None, keepdim[, argmax/argmin indices])
        T_MEAN "MG_OP_REDUCE_MEAN"
        T_MAX "MG_OP_REDUCE_MAX"
        T_MIN "MG_OP_REDUCE_MIN"
        T_MAX_DIM "MG_OP_MAX_DIM"
        T_MIN_DIM "MG_OP_MIN_DIM"
        T_RESHAPE "MG_OP_RESHAPE"                 # ctx = shape
        T_PERMUTE "MG_OP_PERMUTE"                 # ctx = axes
        T_INDEX "MG_OP_INDEX"                     # ctx = (key, key is basic indexing)
        T_CONCAT "MG_OP_CONCAT"                   # args = tensors, ctx = axis
        T_STACK "MG_OP_STACK"                     # args = tensors, ctx = axis
        T_PAD "MG_OP_PAD"                         # ctx = ((before, after) per dimension), zeros
        T_FROM_VALUE "MG_OP_FROM_VALUE"           # a = Value, data is 0-d
        T_STACK_VALUES "MG_OP_STACK_VALUES"       # args = Values, data is 1-d
        T_MATMUL "MG_OP_MATMUL"
        T_LINEAR "MG_OP_LINEAR"                   # a = x, b = weight, args = (bias,) or None
        T_SOFTMAX "MG_OP_SOFTMAX"                 # ctx = axis
        T_LOG_SOFTMAX "MG_OP_LOG_SOFTMAX"         # ctx = axis
        T_CROSS_ENTROPY "MG_OP_CROSS_ENTROPY"     # ctx = [target, reduction, ignore_index, log-softmax]
        T_NLL_LOSS "MG_OP_NLL_LOSS"               # ctx = (target, reduction, ignore_index)
        T_BCE "MG_OP_BCE"                         # a = p, b = target; ctx = (reduction, weight)
        T_BCE_LOGITS "MG_OP_BCE_LOGITS"           # a = x, b = target; ctx = (reduction, weight, pos_weight)
        T_MSE_LOSS "MG_OP_MSE_LOSS"               # a = input, b = target; ctx = reduction
        T_L1_LOSS "MG_OP_L1_LOSS"
        T_HUBER_LOSS "MG_OP_HUBER_LOSS"           # ctx = (reduction, delta)
        T_HINGE_LOSS "MG_OP_HINGE_LOSS"           # a = scores, b = labels in {-1, +1}; ctx = reduction
        T_CONV2D "MG_OP_CONV2D"                   # a = x, b = weight, args = (bias,) or None
        T_CONV_TRANSPOSE2D "MG_OP_CONV_TRANSPOSE2D"
        T_MAX_POOL2D "MG_OP_MAX_POOL2D"           # ctx = [kernel, stride, padding, dilation, ceil_mode, argmax]
        T_AVG_POOL2D "MG_OP_AVG_POOL2D"


@cython.no_gc
cdef class Tensor(Node):
    # _data: C-contiguous float64 ndarray, the node's value (``.data``)
    # _grad: C-contiguous float64 ndarray of the same shape, or None meaning
    #        zeros (allocated when a gradient first arrives or is read)
    # ctx:   whatever the op needs besides its parents (shapes, axes, kernel args)
    # aux:   a scalar constant of the op (leaky_relu's slope)
    cdef object _data
    cdef object _grad
    cdef object ctx
    cdef double aux

    # the op groups _forward and _backward dispatch to
    cdef int _dispatch_forward(self, unsigned short op) except -1
    cdef int _dispatch_backward(self, unsigned short op, object g) except -1
    cdef int _clamp_forward(self, object x, object out) except -1
    cdef int _reduce_forward(self, object x, object out) except -1
    cdef int _shape_forward(self, object x, object out) except -1
    cdef int _fused_forward(self, object x, object y, object out) except -1
    cdef int _conv_forward(self, object x, object w) except -1
    cdef int _binary_backward(self, object g, object a, object b) except -1
    cdef int _clamp_backward(self, object g, object x) except -1
    cdef int _reduce_backward(self, object g, object x) except -1
    cdef int _shape_backward(self, object g) except -1
    cdef int _matmul_backward(self, object g, object a, object b) except -1
    cdef int _linear_backward(self, object g, object a, object w) except -1
    cdef int _fused_backward(self, object g, object a, object b) except -1
    cdef int _bce_logits_pos_weight_backward(self, object up, object a, object b, object x, object y) except -1
    cdef int _conv_backward(self, object g, object a, object b) except -1


cdef Tensor new_node(unsigned short op, object a, object b, tuple args, object ctx)

# The tensor node: an n-d float64 array that is a node of the same graph as
# Value.  Other compiled modules cimport it to build tensor nodes or to read
# their buffers without going through Python properties.

cimport cython
from microgrid._engine cimport Node

# Op codes of tensor nodes; they start above the scalar op codes of
# _engine.Op (OP_SCALAR_END), so one backward sweep tells the kinds apart.
cdef enum TensorOp:
    T_FIRST = 64
    # elementwise, numpy broadcasting: a, b are the operands
    T_ADD = 64
    T_SUB
    T_MUL
    T_DIV
    T_POW
    T_NEG
    T_ABS
    T_RELU
    T_LEAKY_RELU    # aux = negative slope
    T_SIGMOID
    T_TANH
    T_EXP
    T_LOG
    T_SQRT
    T_SOFTPLUS
    T_SIN
    T_COS
    T_CLAMP         # ctx = (min or None, max or None)
    # reductions: ctx = (axes or None, keepdim[, argmax/argmin indices])
    T_SUM
    T_MEAN
    T_MAX
    T_MIN
    T_MAX_DIM
    T_MIN_DIM
    # shape
    T_RESHAPE       # ctx = shape
    T_PERMUTE       # ctx = axes
    T_INDEX         # ctx = (key, key is basic indexing)
    T_CONCAT        # args = tensors, ctx = axis
    T_STACK         # args = tensors, ctx = axis
    T_PAD           # ctx = ((before, after) per dimension), zeros
    # bridges from scalar Values
    T_FROM_VALUE    # a = Value, data is 0-d
    T_STACK_VALUES  # args = Values, data is 1-d
    # products
    T_MATMUL
    T_LINEAR        # a = x, b = weight, args = (bias,) or None
    # fused functional ops
    T_SOFTMAX       # ctx = axis
    T_LOG_SOFTMAX   # ctx = axis
    T_CROSS_ENTROPY # ctx = [target, reduction, ignore_index, log-softmax]
    T_NLL_LOSS      # ctx = (target, reduction, ignore_index)
    T_BCE           # a = p, b = target; ctx = (reduction, weight)
    T_BCE_LOGITS    # a = x, b = target; ctx = (reduction, weight, pos_weight)
    T_MSE_LOSS      # a = input, b = target; ctx = reduction
    T_L1_LOSS
    T_HUBER_LOSS    # ctx = (reduction, delta)
    T_HINGE_LOSS    # a = scores, b = labels in {-1, +1}; ctx = reduction
    # convolution and pooling (kernels in microgrid._conv)
    T_CONV2D        # a = x, b = weight, args = (bias,) or None
    T_CONV_TRANSPOSE2D
    T_MAX_POOL2D    # ctx = [kernel, stride, padding, dilation, ceil_mode, argmax]
    T_AVG_POOL2D
    T_END


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
    cdef int _unary_forward(self, object x, object out) except -1
    cdef int _reduce_forward(self, object x, object out) except -1
    cdef int _shape_forward(self, object x, object out) except -1
    cdef int _fused_forward(self, object x, object y, object out) except -1
    cdef int _conv_forward(self, object x, object w) except -1
    cdef int _binary_backward(self, object g, object a, object b) except -1
    cdef int _unary_backward(self, object g, object x) except -1
    cdef int _reduce_backward(self, object g, object x) except -1
    cdef int _shape_backward(self, object g) except -1
    cdef int _matmul_backward(self, object g, object a, object b) except -1
    cdef int _linear_backward(self, object g, object a, object w) except -1
    cdef int _fused_backward(self, object g, object a, object b) except -1
    cdef int _bce_logits_pos_weight_backward(self, object up, object a, object b, object x, object y) except -1
    cdef int _conv_backward(self, object g, object a, object b) except -1


cdef Tensor new_node(unsigned short op, object a, object b, tuple args, object ctx)

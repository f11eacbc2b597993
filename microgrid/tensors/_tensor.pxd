# The tensor node: an n-d float64 array that is a node of the same graph as
# Value.  Other compiled modules cimport it to build tensor nodes or to read
# their buffers without going through Python properties.

cimport cython
from microgrid.core._engine cimport Node, ArrayNode

# The op codes of tensor nodes that the tensor code handles by name: the one
# code space of the op table (csrc/mg_ops.def), shared with Value nodes; an
# elementwise node carries its row's code (MG_OP_SIGMOID for a sigmoid Value
# and a sigmoid Tensor alike).  Each op's rules and state are in its family's
# file, microgrid/tensors/*.pxi.
cdef extern from "mg_ops.h":
    ctypedef enum:
        T_ADD "MG_OP_ADD"
        T_SUB "MG_OP_SUB"
        T_MUL "MG_OP_MUL"
        T_DIV "MG_OP_DIV"
        T_POW "MG_OP_POW"
        T_NEG "MG_OP_NEG"
        T_ABS "MG_OP_ABS"
        T_CLAMP "MG_OP_CLAMP"
        T_WHERE "MG_OP_WHERE"
        T_SUM "MG_OP_REDUCE_SUM"
        T_MEAN "MG_OP_REDUCE_MEAN"
        T_MAX "MG_OP_REDUCE_MAX"
        T_MIN "MG_OP_REDUCE_MIN"
        T_MAX_DIM "MG_OP_MAX_DIM"
        T_MIN_DIM "MG_OP_MIN_DIM"
        T_RESHAPE "MG_OP_RESHAPE"
        T_PERMUTE "MG_OP_PERMUTE"
        T_INDEX "MG_OP_INDEX"
        T_CONCAT "MG_OP_CONCAT"
        T_STACK "MG_OP_STACK"
        T_PAD "MG_OP_PAD"
        T_FROM_VALUE "MG_OP_FROM_VALUE"
        T_STACK_VALUES "MG_OP_STACK_VALUES"
        T_SCATTER "MG_OP_SCATTER"
        T_MATMUL "MG_OP_MATMUL"
        T_LINEAR "MG_OP_LINEAR"
        T_SOFTMAX "MG_OP_SOFTMAX"
        T_LOG_SOFTMAX "MG_OP_LOG_SOFTMAX"
        T_CROSS_ENTROPY "MG_OP_CROSS_ENTROPY"
        T_NLL_LOSS "MG_OP_NLL_LOSS"
        T_BCE "MG_OP_BCE"
        T_BCE_LOGITS "MG_OP_BCE_LOGITS"
        T_MSE_LOSS "MG_OP_MSE_LOSS"
        T_L1_LOSS "MG_OP_L1_LOSS"
        T_HUBER_LOSS "MG_OP_HUBER_LOSS"
        T_HINGE_LOSS "MG_OP_HINGE_LOSS"
        T_CONV2D "MG_OP_CONV2D"
        T_CONV_TRANSPOSE2D "MG_OP_CONV_TRANSPOSE2D"
        T_MAX_POOL2D "MG_OP_MAX_POOL2D"
        T_AVG_POOL2D "MG_OP_AVG_POOL2D"
        T_CONV2D_WEIGHT_GRAD "MG_OP_CONV2D_WEIGHT_GRAD"
        T_CONV_TRANSPOSE2D_WEIGHT_GRAD "MG_OP_CONV_TRANSPOSE2D_WEIGHT_GRAD"
        T_MAX_POOL2D_GRAD "MG_OP_MAX_POOL2D_GRAD"
        T_AVG_POOL2D_GRAD "MG_OP_AVG_POOL2D_GRAD"


@cython.no_gc
cdef class Tensor(ArrayNode):
    # _data: C-contiguous float64 ndarray, the node's value (``.data``); a
    #        leaf's may be int64 or bool (labels, masks: never a graph node's
    #        parent as it is, see _tensor.pyx's Dtypes)
    # _grad: C-contiguous float64 ndarray of the same shape, or None meaning
    #        zeros (allocated when a gradient first arrives or is read)
    # ctx:   the op's state besides its parents (its family's file says what)
    # aux:   a scalar constant of the op (leaky_relu's slope)
    cdef object _data
    cdef object _grad
    cdef object ctx
    cdef double aux
    # in-place ops (inplace.pxi): how many times the buffer was changed in
    # place, and the sequence numbers at which it was last written in place
    # and last rebased onto a new node (0: never)
    cdef unsigned int version
    cdef unsigned long long written_seq
    cdef unsigned long long rebased_seq


cdef Tensor new_node(unsigned short op, object a, object b, tuple args, object ctx)

# Tensor rules, reduction family: sum, mean, max, min (whole tensor or along
# dims) and max/min along one dim with their indices.  Included by
# microgrid/tensors/_tensor.pyx.

@cython.final
cdef class ReduceState:
    """What a reduction needs besides its input."""
    cdef readonly object axes       # the reduced axes (a tuple) or None for all;
                                    # max/min along a dim: that dim (an int)
    cdef readonly bint keepdim      # reduced axes kept with size 1
    cdef readonly object indices    # max/min along a dim: the argmax/argmin the forward
                                    # picked, kept along ``axes`` (keepdims=True)

    def __cinit__(self, axes, keepdim):
        self.axes = axes
        self.keepdim = keepdim


# -- sum and mean -------------------------------------------------------------------

cdef int sum_forward(Tensor t, object x, object y) except -1:
    cdef ReduceState s = <ReduceState>t.ctx
    r = np.add.reduce(x, axis=s.axes, keepdims=s.keepdim, out=t._data)
    if t.op == T_MEAN:
        r = np.divide(r, x.size // max(r.size, 1) if x.size else 0,
                      out=r if t._data is not None else None)
    t._data = _own(r)
    return 0


cdef int sum_backward(Tensor t, object g, object a, object b) except -1:
    cdef ReduceState s = <ReduceState>t.ctx
    if not _needs(a):
        return 0
    x = (<Tensor>a)._data
    if s.axes is not None and not s.keepdim:
        g = g.reshape(_kept_shape(x.shape, s.axes))
    if t.op == T_MEAN:
        g = g / (x.size // max(t._data.size, 1) if x.size else 1)
    _acc(a, g, False)      # broadcast by the copy or the add
    return 0


cdef object sum_graph(Tensor t, object g):
    cdef ReduceState s = <ReduceState>t.ctx
    shape = (<Tensor>t.a)._data.shape
    if s.axes is not None and not s.keepdim:
        g = new_node(T_RESHAPE, g, None, None, _kept_shape(shape, s.axes))
    if t.op == T_MEAN:
        n = _shape_size(shape) // max(t._data.size, 1) if _shape_size(shape) else 1
        g = g * (1.0 / n)
    return (_g_expand(g, shape),)


# -- max and min of the whole tensor -------------------------------------------------

cdef int extreme_forward(Tensor t, object x, object y) except -1:
    cdef ReduceState s = <ReduceState>t.ctx
    pick = np.max if t.op == T_MAX else np.min
    t._data = _own(pick(x, axis=None, keepdims=s.keepdim, out=t._data))
    return 0


cdef int extreme_backward(Tensor t, object g, object a, object b) except -1:
    # PyTorch's rule for a full reduction: split evenly among ties
    if not _needs(a):
        return 0
    x = (<Tensor>a)._data
    y = t._data.reshape(())
    mask = np.isnan(x) if np.isnan(y) else (x == y)
    _acc(a, mask * (g.reshape(()) / np.count_nonzero(mask)), True)
    return 0


cdef object extreme_graph(Tensor t, object g):
    x = (<Tensor>t.a)._data
    y = t._data.reshape(())
    mask = np.isnan(x) if np.isnan(y) else (x == y)
    return (new_node(T_RESHAPE, g, None, None, ()) * (mask / np.count_nonzero(mask)),)


# -- max and min along a dim -----------------------------------------------------------

cdef int extreme_dim_forward(Tensor t, object x, object y) except -1:
    cdef ReduceState s = <ReduceState>t.ctx
    pick = np.argmax if t.op == T_MAX_DIM else np.argmin
    s.indices = pick(x, axis=s.axes, keepdims=True)
    r = np.take_along_axis(x, s.indices, axis=s.axes)
    if not s.keepdim:
        r = np.squeeze(r, axis=s.axes)
    _store(t, r)
    return 0


cdef int extreme_dim_backward(Tensor t, object g, object a, object b) except -1:
    # all of the gradient to the index the forward picked
    cdef ReduceState s = <ReduceState>t.ctx
    if not _needs(a):
        return 0
    if not s.keepdim:
        g = np.expand_dims(g, s.axes)
    r = np.zeros((<Tensor>a)._data.shape)
    np.put_along_axis(r, s.indices, g, axis=s.axes)
    _acc(a, r, True)
    return 0


cdef object extreme_dim_graph(Tensor t, object g):
    # a scatter of g to the picked indices (each element once)
    cdef ReduceState s = <ReduceState>t.ctx
    cdef int axis = s.axes
    shape = (<Tensor>t.a)._data.shape
    idx = s.indices
    key = tuple([idx if d == axis else
                 np.arange(shape[d]).reshape([shape[d] if k == d else 1 for k in range(len(shape))])
                 for d in range(len(shape))])
    if not s.keepdim:
        g = new_node(T_RESHAPE, g, None, None, idx.shape)
    return (_g_scatter(g, key, True, shape),)


cdef _register_reduce():
    _rule(T_SUM, sum_forward, sum_backward)
    _rule(T_MEAN, sum_forward, sum_backward)
    _rule(T_MAX, extreme_forward, extreme_backward)
    _rule(T_MIN, extreme_forward, extreme_backward)
    _rule(T_MAX_DIM, extreme_dim_forward, extreme_dim_backward)
    _rule(T_MIN_DIM, extreme_dim_forward, extreme_dim_backward)
    for op in (T_SUM, T_MEAN, T_MAX_DIM, T_MIN_DIM):
        _saved(op, 0)        # shapes, and the indices kept in the state
    for op in (T_MAX, T_MIN):
        _saved(op, SAVES_A | SAVES_OUT)   # the elements equal to the extreme
    _graph_rule(T_SUM, sum_graph)
    _graph_rule(T_MEAN, sum_graph)
    _graph_rule(T_MAX, extreme_graph)
    _graph_rule(T_MIN, extreme_graph)
    _graph_rule(T_MAX_DIM, extreme_dim_graph)
    _graph_rule(T_MIN_DIM, extreme_dim_graph)

# Tensor rules, shape family: reshape, permute, indexing, concatenation,
# stacking, padding, and the bridges from scalar Values (a Value as a 0-d
# tensor, Values stacked into a 1-d tensor).  A shape op's value is a buffer
# of its own, never a view of its parent's.  Included by microgrid/tensors/_tensor.pyx.
#
# ctx of each op: RESHAPE the target shape; PERMUTE the axes; INDEX an
# IndexState; CONCAT and STACK the axis; PAD the (before, after) widths per
# dimension (zeros); FROM_VALUE and STACK_VALUES nothing (the Values are the
# parents: a, or args); SCATTER an IndexState with the result's shape.
#
# SCATTER is the adjoint of INDEX (zeros with the operand added at the key):
# the gradient of an index, and the gradient of a scatter is an index, so
# every linear map here differentiates to any order with these two nodes
# (pad's crop, cat's and stack's slices are indexes too).

@cython.final
cdef class IndexState:
    cdef readonly object key        # the normalised index
    cdef readonly bint basic        # basic indexing: no element is picked twice
    cdef readonly object shape      # SCATTER: the shape of its result (INDEX: None)

    def __cinit__(self, key, basic, shape=None):
        self.key = key
        self.basic = basic
        self.shape = shape


cdef int _store_copy(Tensor t, object r) except -1:
    """The result as the node's own buffer (views of the parent copied)."""
    if t._data is None:
        t._data = np.array(r, dtype=_float64, order='C')
    elif r is not t._data:
        _copy_into(t._data, r)
    return 0


cdef int reshape_forward(Tensor t, object x, object y) except -1:
    return _store_copy(t, x.reshape(t.ctx))


cdef int reshape_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        _acc(a, g.reshape((<Tensor>a)._data.shape), False)
    return 0


cdef object reshape_graph(Tensor t, object g):
    return (new_node(T_RESHAPE, g, None, None, (<Tensor>t.a)._data.shape),)


cdef int permute_forward(Tensor t, object x, object y) except -1:
    return _store_copy(t, np.transpose(x, t.ctx))


cdef int permute_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        _acc(a, np.transpose(g, np.argsort(t.ctx)), False)
    return 0


cdef object permute_graph(Tensor t, object g):
    inverse = tuple([int(d) for d in np.argsort(t.ctx)])
    return (new_node(T_PERMUTE, g, None, None, inverse),)


cdef int index_forward(Tensor t, object x, object y) except -1:
    return _store_copy(t, x[(<IndexState>t.ctx).key])


cdef int index_backward(Tensor t, object g, object a, object b) except -1:
    cdef IndexState s = <IndexState>t.ctx
    if not _needs(a):
        return 0
    r = np.zeros((<Tensor>a)._data.shape)
    if s.basic:
        r[s.key] += g           # no element is picked twice
    else:
        np.add.at(r, s.key, g)  # repeated indices add up
    _acc(a, r, True)
    return 0


cdef object index_graph(Tensor t, object g):
    cdef IndexState s = <IndexState>t.ctx
    return (_g_scatter(g, s.key, s.basic, (<Tensor>t.a)._data.shape),)


cdef int scatter_forward(Tensor t, object x, object y) except -1:
    cdef IndexState s = <IndexState>t.ctx
    r = np.zeros(s.shape)
    if s.basic:
        r[s.key] += x
    else:
        np.add.at(r, s.key, x)
    return _store_copy(t, r)


cdef int scatter_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        _acc(a, g[(<IndexState>t.ctx).key], False)
    return 0


cdef object scatter_graph(Tensor t, object g):
    cdef IndexState s = <IndexState>t.ctx
    return (new_node(T_INDEX, g, None, None, IndexState(s.key, s.basic)),)


cdef int concat_forward(Tensor t, object x, object y) except -1:
    return _store_copy(t, np.concatenate([(<Tensor>p)._data for p in t.args], axis=t.ctx,
                                         out=t._data))


cdef int concat_backward(Tensor t, object g, object a, object b) except -1:
    cdef Py_ssize_t start = 0, n
    for p in t.args:
        n = (<Tensor>p)._data.shape[t.ctx]
        if _needs(p):
            _acc(p, np.take(g, range(start, start + n), axis=t.ctx), True)
        start += n
    return 0


cdef object concat_graph(Tensor t, object g):
    cdef Py_ssize_t start = 0, n
    cdef int axis = t.ctx
    out = []
    for p in t.args:
        n = (<Tensor>p)._data.shape[axis]
        key = (slice(None),) * axis + (slice(start, start + n),)
        out.append(new_node(T_INDEX, g, None, None, IndexState(key, True)) if _needs(p) else None)
        start += n
    return tuple(out)


cdef int stack_forward(Tensor t, object x, object y) except -1:
    return _store_copy(t, np.stack([(<Tensor>p)._data for p in t.args], axis=t.ctx, out=t._data))


cdef int stack_backward(Tensor t, object g, object a, object b) except -1:
    cdef Py_ssize_t i
    for i in range(len(t.args)):
        if _needs(t.args[i]):
            _acc(t.args[i], np.take(g, i, axis=t.ctx), False)
    return 0


cdef object stack_graph(Tensor t, object g):
    cdef Py_ssize_t i
    cdef int axis = t.ctx
    return tuple([new_node(T_INDEX, g, None, None, IndexState((slice(None),) * axis + (i,), True))
                  if _needs(t.args[i]) else None for i in range(len(t.args))])


cdef int pad_forward(Tensor t, object x, object y) except -1:
    return _store_copy(t, np.pad(x, t.ctx))


cdef int pad_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        key = tuple([slice(lo, g.shape[d] - hi) for d, (lo, hi) in enumerate(t.ctx)])
        _acc(a, g[key], False)
    return 0


cdef object pad_graph(Tensor t, object g):
    shape = (<Tensor>g)._data.shape
    key = tuple([slice(lo, shape[d] - hi) for d, (lo, hi) in enumerate(t.ctx)])
    return (new_node(T_INDEX, g, None, None, IndexState(key, True)),)


cdef int from_value_forward(Tensor t, object x, object y) except -1:
    return _store_copy(t, np.array((<Value>t.a).data, dtype=_float64))


cdef int from_value_backward(Tensor t, object g, object a, object b) except -1:
    cdef Value v = <Value>a
    if v.requires_grad:
        v.grad += float(np.sum(g))
    return 0


cdef object from_value_graph(Tensor t, object g):
    # the Value's gradient: the sum of g, taken out of the tensor as a Value
    total = g if (<Tensor>g)._data.ndim == 0 else g.sum()
    return (make_element(total, 0, _ptr((<Tensor>total)._data)[0], (<Tensor>total).requires_grad),)


cdef int stack_values_forward(Tensor t, object x, object y) except -1:
    cdef Py_ssize_t i, n = len(t.args)
    cdef double* dst
    if t._data is None:
        t._data = np.empty(n)
    dst = _ptr(t._data)
    for i in range(n):
        dst[i] = (<Value>t.args[i]).data
    return 0


cdef int stack_values_backward(Tensor t, object g, object a, object b) except -1:
    cdef Py_ssize_t i, n = len(t.args)
    cdef double* pg = _ptr(g)
    cdef Value v
    for i in range(n):
        v = <Value>t.args[i]
        if v.requires_grad:
            v.grad += pg[i]
    return 0


cdef object stack_values_graph(Tensor t, object g):
    cdef Py_ssize_t i
    cdef double* pg = _ptr((<Tensor>g)._data)
    cdef bint rg = (<Tensor>g).requires_grad
    return tuple([make_element(g, i, pg[i], rg) if (<Value>t.args[i]).requires_grad else None
                  for i in range(len(t.args))])


cdef _register_shape():
    _rule(T_RESHAPE, reshape_forward, reshape_backward)
    _rule(T_PERMUTE, permute_forward, permute_backward)
    _rule(T_INDEX, index_forward, index_backward)
    _rule(T_CONCAT, concat_forward, concat_backward)
    _rule(T_STACK, stack_forward, stack_backward)
    _rule(T_PAD, pad_forward, pad_backward)
    _rule(T_FROM_VALUE, from_value_forward, from_value_backward)
    _rule(T_STACK_VALUES, stack_values_forward, stack_values_backward)
    _rule(T_SCATTER, scatter_forward, scatter_backward)
    for op in (T_RESHAPE, T_PERMUTE, T_INDEX, T_CONCAT, T_STACK, T_PAD, T_FROM_VALUE, T_STACK_VALUES,
               T_SCATTER):
        _saved(op, 0)        # their backward reads shapes, never values
    _graph_rule(T_RESHAPE, reshape_graph)
    _graph_rule(T_PERMUTE, permute_graph)
    _graph_rule(T_INDEX, index_graph)
    _graph_rule(T_CONCAT, concat_graph)
    _graph_rule(T_STACK, stack_graph)
    _graph_rule(T_PAD, pad_graph)
    _graph_rule(T_FROM_VALUE, from_value_graph)
    _graph_rule(T_STACK_VALUES, stack_values_graph)
    _graph_rule(T_SCATTER, scatter_graph)

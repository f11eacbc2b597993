# Tensor rules, elementwise family: the op table's rows (binary operators and
# one-operand functions, computed by the rows' own array loops, _FORWARD /
# _GRAD_A / _GRAD_B), clamp and where.  Included by microgrid/tensors/_tensor.pyx.

# -- the op table's rows --------------------------------------------------------

cdef int binary_forward(Tensor t, object x, object y) except -1:
    t._data = _own(_FORWARD[t.op](x, y, out=t._data))
    return 0


cdef int binary_backward(Tensor t, object g, object a, object b) except -1:
    """The row's derivative loops over the broadcast operands, summed back to
    each operand's shape (add and sub pass g itself on)."""
    cdef unsigned short op = t.op
    x = (<Tensor>a)._data
    y = (<Tensor>b)._data
    if _needs(a):
        ga = g if op == T_ADD or op == T_SUB else _GRAD_A[op](x, y, t._data, g)
        ga = _unbroadcast(ga, x.shape)
        _acc(a, ga, ga is not g)
    if _needs(b):
        gb = g if op == T_ADD else _GRAD_B[op](x, y, t._data, g)
        gb = _unbroadcast(gb, y.shape)
        _acc(b, gb, gb is not g)
    return 0


cdef int unary_forward(Tensor t, object x, object y) except -1:
    _ptr(x)   # a buffer changed in place raises (numpy would cast it)
    t._data = _own(_FORWARD[t.op](x, t.aux, out=t._data))
    return 0


cdef int unary_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        _acc(a, _GRAD_A[t.op]((<Tensor>a)._data, t._data, g, t.aux), True)
    return 0


# The differentiable form of a row's rule is the row's derivative formula
# evaluated over graph nodes; microgrid.autograd reads the formulas from the
# op table (microgrid/core/optable.py) and registers the evaluator here:
#   row_vjp(t, g, c) -> (g * d t/da, g * d t/db) as graph nodes (None where
#   an operand needs none), before any summing back over broadcast axes.
cdef object _row_vjp = None


def _set_row_vjp(fn):
    """Register the evaluator of the rows' derivative formulas over graph
    nodes (microgrid.autograd does at import)."""
    global _row_vjp
    _row_vjp = fn


cdef object row_graph(Tensor t, object g):
    if _row_vjp is None:
        import microgrid.autograd     # registers the evaluator
    grads = _row_vjp(t, g, t.aux)
    return tuple([None if gp is None else _g_unbroadcast(gp, (<Tensor>p)._data.shape)
                  for p, gp in zip(t._parents(), grads)])


cdef object _elementwise(object a, int op, double c):
    """A node of the op table's row ``op`` over tensor ``a``, with constant
    ``c``: what the generated elementwise methods build."""
    if not _floating(a):
        return _nonfloat_node(op, a, None, None, None, c)
    cdef Tensor out = Tensor.__new__(Tensor)
    out.op = op
    out.a = a
    out.aux = c
    out.requires_grad = (<Tensor>a).requires_grad
    out.seq = next_seq()
    out._forward()
    if not grad_enabled():
        make_leaf(out)
    return out


# -- clamp ------------------------------------------------------------------------

@cython.final
cdef class ClampState:
    """clamp's bounds: each a float, or None for no bound on that side."""
    cdef readonly object min
    cdef readonly object max

    def __cinit__(self, min, max):
        self.min = min
        self.max = max


cdef ClampState _clamp_state(object min, object max, str name):
    """clamp's bounds, checked: real numbers or None, at least one given."""
    for side, bound in (('min', min), ('max', max)):
        if bound is not None and (not isinstance(bound, numbers.Real) or isinstance(bound, bool)):
            raise TypeError(f"{name}({side}=...) takes a real number or None, got {type(bound).__name__}")
    if min is None and max is None:
        raise ValueError(f"{name}(min=..., max=...): at least one bound must be given")
    return ClampState(None if min is None else float(min), None if max is None else float(max))


cdef int clamp_forward(Tensor t, object x, object y) except -1:
    cdef ClampState s = <ClampState>t.ctx
    r = x
    if s.min is not None:
        r = np.where(r < s.min, s.min, r)   # NaN is not below min: it stays
    if s.max is not None:
        r = np.where(r > s.max, s.max, r)
    if r is x:
        r = x.copy()
    _store(t, r)
    return 0


cdef int clamp_backward(Tensor t, object g, object a, object b) except -1:
    cdef ClampState s = <ClampState>t.ctx
    if not _needs(a):
        return 0
    x = (<Tensor>a)._data
    keep = np.ones(x.shape, dtype=bool)
    if s.min is not None:
        keep &= x >= s.min
    if s.max is not None:
        keep &= x <= s.max
    _acc(a, np.where(keep, g, 0.0), True)
    return 0


cdef object clamp_graph(Tensor t, object g):
    cdef ClampState s = <ClampState>t.ctx
    x = (<Tensor>t.a)._data
    keep = np.ones(x.shape, dtype=bool)
    if s.min is not None:
        keep &= x >= s.min
    if s.max is not None:
        keep &= x <= s.max
    return (_graph_select(keep, g, 0.0),)


# -- where ----------------------------------------------------------------------
# ctx: the condition, a bool array broadcasting with both operands.  The
# value is the input where the condition holds and the other operand
# elsewhere; each element's gradient goes to the operand it was taken from.

cdef int where_forward(Tensor t, object x, object y) except -1:
    _store(t, np.where(t.ctx, x, y))
    return 0


cdef int where_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        _acc(a, _unbroadcast(np.where(t.ctx, g, 0.0), (<Tensor>a)._data.shape), True)
    if _needs(b):
        _acc(b, _unbroadcast(np.where(t.ctx, 0.0, g), (<Tensor>b)._data.shape), True)
    return 0


cdef object where_graph(Tensor t, object g):
    # each operand's gradient is g where it was picked, itself a where node
    zero = _leaf(np.zeros(()), False)
    ga = gb = None
    if _needs(t.a):
        ga = _g_unbroadcast(new_node(T_WHERE, g, zero, None, t.ctx), (<Tensor>t.a)._data.shape)
    if _needs(t.b):
        gb = _g_unbroadcast(new_node(T_WHERE, zero, g, None, t.ctx), (<Tensor>t.b)._data.shape)
    return (ga, gb)


cdef _register_elementwise():
    cdef int op, kind
    for op in range(OP_COUNT):
        kind = mg_op_kind[op]
        if kind == KIND_BINARY:
            _rule(op, binary_forward, binary_backward)
            _graph_rule(op, row_graph)
        elif kind == KIND_UNARY or kind == KIND_UNARY_C:
            _rule(op, unary_forward, unary_backward)
            _graph_rule(op, row_graph)
    _rule(T_CLAMP, clamp_forward, clamp_backward)
    _graph_rule(T_CLAMP, clamp_graph)
    _rule(T_WHERE, where_forward, where_backward)
    _graph_rule(T_WHERE, where_graph)

# Tensor rules, products family: matmul (numpy's broadcasting and 1-d
# promotion rules, through BLAS) and linear (x W^T + b in one node).
# Included by microgrid/tensors/_tensor.pyx.  ctx: nothing; linear's bias is args[0].

cdef int matmul_forward(Tensor t, object x, object y) except -1:
    t._data = _own(np.matmul(x, y, out=t._data))
    return 0


cdef int matmul_backward(Tensor t, object g, object a, object b) except -1:
    x = (<Tensor>a)._data
    y = (<Tensor>b)._data
    if x.ndim == 2 and y.ndim == 2:
        if _needs(a):
            _acc(a, np.matmul(g, y.T), True)
        if _needs(b):
            _acc(b, np.matmul(x.T, g), True)
        return 0
    # promote 1-d operands as matmul does, then undo it on the gradients
    x2 = x[None, :] if x.ndim == 1 else x
    y2 = y[:, None] if y.ndim == 1 else y
    if x.ndim == 1 and y.ndim == 1:
        g2 = np.reshape(g, (1, 1))
    elif x.ndim == 1:
        g2 = np.expand_dims(g, -2)
    elif y.ndim == 1:
        g2 = np.expand_dims(g, -1)
    else:
        g2 = g
    if _needs(a):
        ga = np.matmul(g2, np.swapaxes(y2, -1, -2))
        _acc(a, np.reshape(_unbroadcast(ga, x2.shape), x.shape), True)
    if _needs(b):
        gb = np.matmul(np.swapaxes(x2, -1, -2), g2)
        _acc(b, np.reshape(_unbroadcast(gb, y2.shape), y.shape), True)
    return 0


cdef object _g_transpose(object x):
    """x with its last two axes swapped, as a graph node."""
    cdef Py_ssize_t nd = (<Tensor>x)._data.ndim
    axes = list(range(nd))
    axes[nd - 2], axes[nd - 1] = axes[nd - 1], axes[nd - 2]
    return new_node(T_PERMUTE, x, None, None, tuple(axes))


cdef object matmul_graph(Tensor t, object g):
    # as matmul_backward: 1-d operands promoted to matrices, products with the
    # other operand transposed, batch axes summed back, promotion undone
    a, b = t.a, t.b
    sa, sb = (<Tensor>a)._data.shape, (<Tensor>b)._data.shape
    a2 = new_node(T_RESHAPE, a, None, None, (1,) + sa) if len(sa) == 1 else a
    b2 = new_node(T_RESHAPE, b, None, None, sb + (1,)) if len(sb) == 1 else b
    s2 = (<Tensor>a2)._data.shape
    t2 = (<Tensor>b2)._data.shape
    g2 = new_node(T_RESHAPE, g, None, None,
                  _broadcast_shape(s2[:-2], t2[:-2]) + (s2[-2], t2[-1]))
    ga = gb = None
    if _needs(a):
        ga = new_node(T_MATMUL, g2, _g_transpose(b2), None, None)
        ga = new_node(T_RESHAPE, _g_unbroadcast(ga, s2), None, None, sa)
    if _needs(b):
        gb = new_node(T_MATMUL, _g_transpose(a2), g2, None, None)
        gb = new_node(T_RESHAPE, _g_unbroadcast(gb, t2), None, None, sb)
    return (ga, gb)


cdef int linear_forward(Tensor t, object x, object w) except -1:
    r = np.matmul(x, np.transpose(w), out=t._data)
    if t.args is not None:
        r = np.add(r, (<Tensor>t.args[0])._data, out=r)
    t._data = _own(r)
    return 0


cdef int linear_backward(Tensor t, object g, object a, object w) except -1:
    x = (<Tensor>a)._data
    if _needs(a):
        _acc(a, np.matmul(g, (<Tensor>w)._data), True)
    if _needs(w):
        if x.ndim == 1:
            _acc(w, np.multiply.outer(g, x), True)
        elif x.ndim == 2:
            _acc(w, np.matmul(g.T, x), True)
        else:
            _acc(w, np.matmul(g.reshape(-1, g.shape[-1]).T, x.reshape(-1, x.shape[-1])), True)
    if t.args is not None and _needs(t.args[0]):
        bias = t.args[0]
        _acc(bias, g if g.ndim == 1 else g.reshape(-1, g.shape[-1]).sum(axis=0), g.ndim != 1)
    return 0


cdef object linear_graph(Tensor t, object g):
    x, w = t.a, t.b
    sx = (<Tensor>x)._data.shape
    sw = (<Tensor>w)._data.shape
    gx = gw = gb = None
    if _needs(x):
        gx = new_node(T_MATMUL, g, w, None, None)
    if _needs(w) or (t.args is not None and _needs(t.args[0])):
        # g and x as matrices (rows: every leading index), 1-d as one row
        g2 = new_node(T_RESHAPE, g, None, None, (_shape_size((<Tensor>g)._data.shape) // sw[0], sw[0]))
        if _needs(w):
            x2 = new_node(T_RESHAPE, x, None, None, (_shape_size(sx) // sw[1], sw[1]))
            gw = new_node(T_MATMUL, _g_transpose(g2), x2, None, None)
        if t.args is not None and _needs(t.args[0]):
            gb = g2.sum(0)
    return (gx, gw) if t.args is None else (gx, gw, gb)


cdef _register_products():
    _rule(T_MATMUL, matmul_forward, matmul_backward)
    _rule(T_LINEAR, linear_forward, linear_backward)
    _saved(T_MATMUL, SAVES_A | SAVES_B)
    _saved(T_LINEAR, SAVES_A | SAVES_B)      # x and W; the bias's gradient is g
    _graph_rule(T_MATMUL, matmul_graph)
    _graph_rule(T_LINEAR, linear_graph)

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


cdef _register_products():
    _rule(T_MATMUL, matmul_forward, matmul_backward)
    _rule(T_LINEAR, linear_forward, linear_backward)
    _saved(T_MATMUL, SAVES_A | SAVES_B)
    _saved(T_LINEAR, SAVES_A | SAVES_B)      # x and W; the bias's gradient is g

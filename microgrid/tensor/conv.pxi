# Tensor rules, convolution and pooling family: nodes over the C kernels of
# microgrid._conv (csrc/mg_conv.c), which functional.py's checked arguments
# reach.  Included by microgrid/_tensor.pyx.
#
# ctx of each op:
#   CONV2D              (stride, padding, dilation, groups); bias is args[0]
#   CONV_TRANSPOSE2D    (stride, padding, output_padding, dilation, groups)
#   MAX_POOL2D          [kernel, stride, padding, dilation, ceil_mode, argmax
#                        (the forward's winning cells, for backward)]
#   AVG_POOL2D          the kernel arguments avg_pool2d_forward takes

# The kernels (microgrid._conv), imported on first use.
_conv_module = None


cdef object _kernels():
    global _conv_module
    if _conv_module is None:
        from microgrid import _conv
        _conv_module = _conv
    return _conv_module


cdef int conv_forward(Tensor t, object x, object w) except -1:
    k = _kernels()
    c = t.ctx
    bias = (<Tensor>t.args[0])._data if t.args is not None else None
    if t.op == T_CONV2D:
        r = k.conv2d_forward(x, w, bias, c[0], c[1], c[2], c[3])
    else:
        r = k.conv_transpose2d_forward(x, w, bias, c[0], c[1], c[2], c[3], c[4])
    _store(t, r)
    return 0


cdef int conv_backward(Tensor t, object g, object a, object b) except -1:
    k = _kernels()
    c = t.ctx
    x = (<Tensor>a)._data
    w = (<Tensor>b)._data
    g = np.ascontiguousarray(g)
    bias = t.args[0] if t.args is not None else None
    need_b = _needs(bias)
    if t.op == T_CONV2D:
        gx, gw, gb = k.conv2d_backward(g, x, w, c[0], c[1], c[2], c[3],
                                       _needs(a), _needs(b), need_b)
    else:
        gx, gw, gb = k.conv_transpose2d_backward(g, x, w, c[0], c[1], c[2], c[3], c[4],
                                                 _needs(a), _needs(b), need_b)
    if _needs(a):
        _acc(a, gx, True)
    if _needs(b):
        _acc(b, gw, True)
    if need_b:
        _acc(bias, gb, True)
    return 0


cdef int max_pool_forward(Tensor t, object x, object y) except -1:
    c = t.ctx
    r, c[5] = _kernels().max_pool2d_forward(x, c[0], c[1], c[2], c[3], c[4])
    _store(t, r)
    return 0


cdef int max_pool_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        g = np.ascontiguousarray(g)
        _acc(a, _kernels().max_pool2d_backward(g, t.ctx[5], (<Tensor>a)._data.shape), True)
    return 0


cdef int avg_pool_forward(Tensor t, object x, object y) except -1:
    c = t.ctx
    _store(t, _kernels().avg_pool2d_forward(x, c[0], c[1], c[2], c[3], c[4]))
    return 0


cdef int avg_pool_backward(Tensor t, object g, object a, object b) except -1:
    c = t.ctx
    if _needs(a):
        g = np.ascontiguousarray(g)
        _acc(a, _kernels().avg_pool2d_backward(g, (<Tensor>a)._data.shape,
                                               c[0], c[1], c[2], c[3], c[4]), True)
    return 0


cdef _register_conv():
    _rule(T_CONV2D, conv_forward, conv_backward)
    _rule(T_CONV_TRANSPOSE2D, conv_forward, conv_backward)
    _rule(T_MAX_POOL2D, max_pool_forward, max_pool_backward)
    _rule(T_AVG_POOL2D, avg_pool_forward, avg_pool_backward)

# Tensor rules, convolution and pooling family: nodes over the C kernels of
# microgrid.kernels._conv (csrc/mg_conv.c), which functional.py's checked arguments
# reach.  Included by microgrid/tensors/_tensor.pyx.  ctx: a ConvState or a
# PoolState; a convolution's bias is args[0].

@cython.final
cdef class ConvState:
    """conv2d's and conv_transpose2d's arguments, as (height, width) pairs."""
    cdef readonly tuple stride
    cdef readonly tuple padding
    cdef readonly tuple dilation
    cdef readonly Py_ssize_t groups
    cdef readonly tuple output_padding   # conv_transpose2d: extra rows/columns of output

    def __cinit__(self, tuple stride, tuple padding, tuple dilation, Py_ssize_t groups,
                  tuple output_padding=(0, 0)):
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.output_padding = output_padding


@cython.final
cdef class PoolState:
    """max_pool2d's and avg_pool2d's arguments, as (height, width) pairs."""
    cdef readonly tuple kernel
    cdef readonly tuple stride
    cdef readonly tuple padding
    cdef readonly tuple dilation
    cdef readonly bint ceil_mode
    cdef readonly bint count_include_pad   # avg_pool2d: padding cells count in the mean
    cdef readonly object argmax            # max_pool2d: each window's winning cell, from
                                           # the forward (flat index h * W + w in its plane)

    def __cinit__(self, tuple kernel, tuple stride, tuple padding, tuple dilation=(1, 1),
                  bint ceil_mode=False, bint count_include_pad=True):
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad


# The kernels (microgrid.kernels._conv), imported on first use.
_conv_module = None


cdef object _kernels():
    global _conv_module
    if _conv_module is None:
        from microgrid.kernels import _conv
        _conv_module = _conv
    return _conv_module


cdef int conv_forward(Tensor t, object x, object w) except -1:
    cdef ConvState c = <ConvState>t.ctx
    k = _kernels()
    bias = (<Tensor>t.args[0])._data if t.args is not None else None
    if t.op == T_CONV2D:
        r = k.conv2d_forward(x, w, bias, c.stride, c.padding, c.dilation, c.groups)
    else:
        r = k.conv_transpose2d_forward(x, w, bias, c.stride, c.padding, c.output_padding,
                                       c.dilation, c.groups)
    _store(t, r)
    return 0


cdef int conv_backward(Tensor t, object g, object a, object b) except -1:
    cdef ConvState c = <ConvState>t.ctx
    k = _kernels()
    x = (<Tensor>a)._data
    w = (<Tensor>b)._data
    g = np.ascontiguousarray(g)
    bias = t.args[0] if t.args is not None else None
    need_b = _needs(bias)
    if t.op == T_CONV2D:
        gx, gw, gb = k.conv2d_backward(g, x, w, c.stride, c.padding, c.dilation, c.groups,
                                       _needs(a), _needs(b), need_b)
    else:
        gx, gw, gb = k.conv_transpose2d_backward(g, x, w, c.stride, c.padding, c.output_padding,
                                                 c.dilation, c.groups, _needs(a), _needs(b), need_b)
    if _needs(a):
        _acc(a, gx, True)
    if _needs(b):
        _acc(b, gw, True)
    if need_b:
        _acc(bias, gb, True)
    return 0


cdef int max_pool_forward(Tensor t, object x, object y) except -1:
    cdef PoolState p = <PoolState>t.ctx
    r, p.argmax = _kernels().max_pool2d_forward(x, p.kernel, p.stride, p.padding, p.dilation,
                                                p.ceil_mode)
    _store(t, r)
    return 0


cdef int max_pool_backward(Tensor t, object g, object a, object b) except -1:
    if _needs(a):
        g = np.ascontiguousarray(g)
        _acc(a, _kernels().max_pool2d_backward(g, (<PoolState>t.ctx).argmax,
                                               (<Tensor>a)._data.shape), True)
    return 0


cdef int avg_pool_forward(Tensor t, object x, object y) except -1:
    cdef PoolState p = <PoolState>t.ctx
    _store(t, _kernels().avg_pool2d_forward(x, p.kernel, p.stride, p.padding, p.ceil_mode,
                                            p.count_include_pad))
    return 0


cdef int avg_pool_backward(Tensor t, object g, object a, object b) except -1:
    cdef PoolState p = <PoolState>t.ctx
    if _needs(a):
        g = np.ascontiguousarray(g)
        _acc(a, _kernels().avg_pool2d_backward(g, (<Tensor>a)._data.shape, p.kernel, p.stride,
                                               p.padding, p.ceil_mode, p.count_include_pad), True)
    return 0


cdef _register_conv():
    _rule(T_CONV2D, conv_forward, conv_backward)
    _rule(T_CONV_TRANSPOSE2D, conv_forward, conv_backward)
    _rule(T_MAX_POOL2D, max_pool_forward, max_pool_backward)
    _rule(T_AVG_POOL2D, avg_pool_forward, avg_pool_backward)

# Tensor rules, convolution and pooling family: nodes over the C kernels of
# microgrid.kernels._conv (csrc/mg_conv.c), which functional.py's checked arguments
# reach.  Included by microgrid/tensors/_tensor.pyx.  ctx: a ConvState or a
# PoolState; a convolution's bias is args[0].
#
# Graph rules (differentiable backward): a convolution's input gradient is the
# other convolution (conv_transpose2d for conv2d and the reverse); its weight
# gradient and the pools' input gradients are internal nodes whose forward is
# the backward kernel (CONV2D_WEIGHT_GRAD, CONV_TRANSPOSE2D_WEIGHT_GRAD,
# MAX_POOL2D_GRAD, AVG_POOL2D_GRAD; ctx a GradState), each with its own
# backward and graph rule, so gradients can be taken to any order.

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


@cython.final
cdef class GradState:
    """An internal gradient node's state: the state of the op it differentiates
    (a ConvState or PoolState, shared with that op's node) and the shape of the
    gradient it computes (the weight's or the input's)."""
    cdef readonly object state
    cdef readonly tuple shape

    def __cinit__(self, state, tuple shape):
        self.state = state
        self.shape = shape


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


# -- differentiable backward (graph rules) ------------------------------------------------

cdef Tensor _conv2d_input_grad(object g, object w, ConvState c, tuple x_shape):
    """conv2d's input gradient for output gradient g and weight w, as a node:
    the transposed convolution, with the output padding that gives back
    x_shape's height and width (rows and columns the strides skipped)."""
    cdef tuple kernel = (<Tensor>w)._data.shape[2:]
    cdef tuple out = (<Tensor>g)._data.shape[2:]
    extra = tuple([x_shape[2 + i] - ((out[i] - 1) * c.stride[i] - 2 * c.padding[i]
                                     + c.dilation[i] * (kernel[i] - 1) + 1) for i in range(2)])
    return new_node(T_CONV_TRANSPOSE2D, g, w, None,
                    ConvState(c.stride, c.padding, c.dilation, c.groups, extra))


cdef Tensor _conv_transpose2d_input_grad(object g, object w, ConvState c, tuple x_shape):
    """conv_transpose2d's input gradient for output gradient g and weight w,
    as a node: conv2d of g by w, cut to x_shape (an output padding at least
    the stride adds windows that reach no input pixel)."""
    cdef Tensor r = new_node(T_CONV2D, g, w, None,
                             ConvState(c.stride, c.padding, c.dilation, c.groups))
    if r._data.shape[2:] != x_shape[2:]:
        return r[:, :, :x_shape[2], :x_shape[3]]
    return r


cdef object conv_graph(Tensor t, object g):
    cdef ConvState c = <ConvState>t.ctx
    g = _grad_node(g)
    x, w = t.a, t.b
    gx = gw = gb = None
    if _needs(x):
        if t.op == T_CONV2D:
            gx = _conv2d_input_grad(g, w, c, (<Tensor>x)._data.shape)
        else:
            gx = _conv_transpose2d_input_grad(g, w, c, (<Tensor>x)._data.shape)
    if _needs(w):
        op = T_CONV2D_WEIGHT_GRAD if t.op == T_CONV2D else T_CONV_TRANSPOSE2D_WEIGHT_GRAD
        gw = new_node(op, x, g, None, GradState(c, (<Tensor>w)._data.shape))
    if t.args is None:
        return (gx, gw)
    if _needs(t.args[0]):
        gb = g.sum(dim=(0, 2, 3))
    return (gx, gw, gb)


# The weight gradient as a node of (x, g), bilinear in them: for conv2d,
# gw = sum over images and positions of g times x's windows.  Its adjoints
# are the convolution itself (for g) and the input gradient with gw's
# gradient G in place of the weight (for x).

cdef int conv_weight_grad_forward(Tensor t, object x, object g) except -1:
    cdef GradState s = <GradState>t.ctx
    cdef ConvState c = <ConvState>s.state
    k = _kernels()
    w = np.empty(s.shape)        # only its shape is read
    if t.op == T_CONV2D_WEIGHT_GRAD:
        _, r, _ = k.conv2d_backward(g, x, w, c.stride, c.padding, c.dilation, c.groups,
                                    False, True, False)
    else:
        _, r, _ = k.conv_transpose2d_backward(g, x, w, c.stride, c.padding, c.output_padding,
                                              c.dilation, c.groups, False, True, False)
    _store(t, r)
    return 0


cdef int conv_weight_grad_backward(Tensor t, object G, object a, object b) except -1:
    cdef GradState s = <GradState>t.ctx
    cdef ConvState c = <ConvState>s.state
    k = _kernels()
    x = (<Tensor>a)._data
    g = (<Tensor>b)._data
    G = np.ascontiguousarray(G)
    if t.op == T_CONV2D_WEIGHT_GRAD:
        if _needs(a):
            _acc(a, k.conv2d_backward(g, x, G, c.stride, c.padding, c.dilation, c.groups,
                                      True, False, False)[0], True)
        if _needs(b):
            _acc(b, k.conv2d_forward(x, G, None, c.stride, c.padding, c.dilation, c.groups),
                 True)
    else:
        if _needs(a):
            _acc(a, k.conv_transpose2d_backward(g, x, G, c.stride, c.padding, c.output_padding,
                                                c.dilation, c.groups, True, False, False)[0],
                 True)
        if _needs(b):
            _acc(b, k.conv_transpose2d_forward(x, G, None, c.stride, c.padding,
                                               c.output_padding, c.dilation, c.groups), True)
    return 0


cdef object conv_weight_grad_graph(Tensor t, object G):
    cdef GradState s = <GradState>t.ctx
    cdef ConvState c = <ConvState>s.state
    G = _grad_node(G)
    x, g = t.a, t.b
    gx = gg = None
    if t.op == T_CONV2D_WEIGHT_GRAD:
        if _needs(x):
            gx = _conv2d_input_grad(g, G, c, (<Tensor>x)._data.shape)
        if _needs(g):
            gg = new_node(T_CONV2D, x, G, None, c)
    else:
        if _needs(x):
            gx = _conv_transpose2d_input_grad(g, G, c, (<Tensor>x)._data.shape)
        if _needs(g):
            gg = new_node(T_CONV_TRANSPOSE2D, x, G, None, c)
    return (gx, gg)


cdef object max_pool_graph(Tensor t, object g):
    if not _needs(t.a):
        return (None,)
    return (new_node(T_MAX_POOL2D_GRAD, _grad_node(g), None, None,
                     GradState(t.ctx, (<Tensor>t.a)._data.shape)),)


cdef object avg_pool_graph(Tensor t, object g):
    if not _needs(t.a):
        return (None,)
    return (new_node(T_AVG_POOL2D_GRAD, _grad_node(g), None, None,
                     GradState(t.ctx, (<Tensor>t.a)._data.shape)),)


# A pool's input gradient as a node of g, linear in it: max pooling's adds
# each g at its window's maximum (the pool node's argmax, kept current by its
# forward), average pooling's spreads g over its window.  Their adjoints: a
# gather at the argmax, and average pooling itself.

cdef int pool_grad_forward(Tensor t, object g, object y) except -1:
    cdef GradState s = <GradState>t.ctx
    cdef PoolState p = <PoolState>s.state
    k = _kernels()
    if t.op == T_MAX_POOL2D_GRAD:
        _store(t, k.max_pool2d_backward(g, p.argmax, s.shape))
    else:
        _store(t, k.avg_pool2d_backward(g, s.shape, p.kernel, p.stride, p.padding, p.ceil_mode,
                                        p.count_include_pad))
    return 0


cdef object _argmax_gather_index(GradState s):
    """Flat indices into an input-shaped array, one per pooled output: each
    window's maximum; an argmax outside its plane (a window over padding
    alone) points one past the end, at an appended zero."""
    argmax = (<PoolState>s.state).argmax
    cdef Py_ssize_t plane = s.shape[2] * s.shape[3]
    planes = np.arange(s.shape[0] * s.shape[1], dtype=np.int64).reshape(
        s.shape[0], s.shape[1], 1, 1)
    inside = (argmax >= 0) & (argmax < plane)
    return np.where(inside, planes * plane + argmax, _shape_size(s.shape))


cdef int pool_grad_backward(Tensor t, object G, object a, object b) except -1:
    cdef GradState s = <GradState>t.ctx
    cdef PoolState p = <PoolState>s.state
    if not _needs(a):
        return 0
    G = np.ascontiguousarray(G)
    if t.op == T_MAX_POOL2D_GRAD:
        _acc(a, np.append(G.reshape(-1), 0.0)[_argmax_gather_index(s)], True)
    else:
        _acc(a, _kernels().avg_pool2d_forward(G, p.kernel, p.stride, p.padding, p.ceil_mode,
                                              p.count_include_pad), True)
    return 0


cdef object pool_grad_graph(Tensor t, object G):
    cdef GradState s = <GradState>t.ctx
    if not _needs(t.a):
        return (None,)
    G = _grad_node(G)
    if t.op == T_MAX_POOL2D_GRAD:
        index = _argmax_gather_index(s)
        flat = G.reshape(-1)
        if np.any(index == _shape_size(s.shape)):
            flat = concatenate([flat, _leaf(np.zeros(1), False)], 0)
        return (flat[index],)
    return (new_node(T_AVG_POOL2D, G, None, None, s.state),)


cdef _register_conv():
    _rule(T_CONV2D, conv_forward, conv_backward)
    _rule(T_CONV_TRANSPOSE2D, conv_forward, conv_backward)
    _rule(T_MAX_POOL2D, max_pool_forward, max_pool_backward)
    _rule(T_AVG_POOL2D, avg_pool_forward, avg_pool_backward)
    _rule(T_CONV2D_WEIGHT_GRAD, conv_weight_grad_forward, conv_weight_grad_backward)
    _rule(T_CONV_TRANSPOSE2D_WEIGHT_GRAD, conv_weight_grad_forward, conv_weight_grad_backward)
    _rule(T_MAX_POOL2D_GRAD, pool_grad_forward, pool_grad_backward)
    _rule(T_AVG_POOL2D_GRAD, pool_grad_forward, pool_grad_backward)
    for op in (T_CONV2D, T_CONV_TRANSPOSE2D):
        _graph_rule(op, conv_graph)
    _graph_rule(T_MAX_POOL2D, max_pool_graph)
    _graph_rule(T_AVG_POOL2D, avg_pool_graph)
    for op in (T_CONV2D_WEIGHT_GRAD, T_CONV_TRANSPOSE2D_WEIGHT_GRAD):
        _graph_rule(op, conv_weight_grad_graph)
    for op in (T_MAX_POOL2D_GRAD, T_AVG_POOL2D_GRAD):
        _graph_rule(op, pool_grad_graph)

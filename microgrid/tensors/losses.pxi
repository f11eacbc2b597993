# Tensor rules, softmax and loss family: softmax, log_softmax and the fused
# losses, each one node evaluated in a form that never overflows.  Included
# by microgrid/tensors/_tensor.pyx; functional.py validates the arguments.
#
# ctx: SOFTMAX and LOG_SOFTMAX the axis; CROSS_ENTROPY and NLL_LOSS a
# ClassLossState; the elementwise losses a LossState.
#
# Each loss's graph rule (differentiable backward) sits after its backward
# and states the same gradient with Tensor ops over the node's parents, so it
# can be differentiated again; masks of piecewise rules (ignored targets,
# huber's and hinge's pieces, the clamps) are constants, as in PyTorch.

@cython.final
cdef class LossState:
    """What an elementwise loss needs besides its input and target."""
    cdef readonly str reduction     # 'none', 'mean' or 'sum'
    cdef readonly object weight     # BCE: per-element weights (an array), or None
    cdef readonly object pos_weight # BCE with logits: weight of the positive term, or None
    cdef readonly double delta      # huber: where the quadratic part turns linear

    def __cinit__(self, str reduction, weight=None, pos_weight=None, double delta=1.0):
        self.reduction = reduction
        self.weight = weight
        self.pos_weight = pos_weight
        self.delta = delta


@cython.final
cdef class ClassLossState:
    """cross_entropy and nll_loss over class-index targets."""
    cdef readonly object target        # the class indices (int64 array or int)
    cdef readonly str reduction        # 'none', 'mean' or 'sum'
    cdef readonly object ignore_index  # targets equal to it add nothing
    cdef readonly Py_ssize_t axis      # the class dimension of the input
    cdef object log_probs              # cross_entropy: the forward's log-softmax

    def __cinit__(self, target, str reduction, ignore_index, Py_ssize_t axis):
        self.target = target
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.axis = axis


cdef inline double _clamped_log(double p) noexcept nogil:
    # PyTorch's binary_cross_entropy clamps the logs at -100
    cdef double r = log(p)
    return r if r > -100.0 else -100.0


cdef inline double _clamped_log1m(double p) noexcept nogil:
    cdef double r = log1p(-p)
    return r if r > -100.0 else -100.0


cdef void _sigmoid_loop(double* x, double* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = mg_sigmoid(x[i])


cdef void _softplus_loop(double* x, double* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = mg_softplus(x[i])


cdef object _reduced(object losses, str reduction):
    if reduction == 'none':
        return losses
    if reduction == 'sum':
        return np.sum(losses)
    if _size(losses) == 0:
        return np.nan
    return np.mean(losses)


cdef object _loss_grad(Tensor t, str reduction, Py_ssize_t n):
    """The upstream gradient of each element of an elementwise loss."""
    g = t._grad
    if reduction == 'none':
        return g
    if reduction == 'sum':
        return float(g)
    return float(g) / n


cdef object _losses_buffer(Tensor t, object x, object y):
    """Where an elementwise loss writes its per-element losses: the node's
    own buffer when it keeps them (reduction 'none'), else a fresh one."""
    if (<LossState>t.ctx).reduction == 'none' and np.shape(x) == np.shape(y):
        if t._data is None:
            t._data = np.empty_like(x, dtype=_float64, order='C')
        return t._data
    return np.empty(_broadcast_shape(x.shape, y.shape))


# -- helpers of the graph rules -------------------------------------------------------------

cdef Tensor _grad_node(object g):
    """A graph rule's incoming gradient as a Tensor node: a Value joins through
    the bridge node, an array or a number becomes a constant."""
    if isinstance(g, Tensor):
        return g
    if isinstance(g, Value):
        return _from_value(<Value>g)
    return _leaf(_to_array(g, 'gradient'), False)


cdef Tensor _const(object array):
    return _leaf(np.asarray(array, dtype=_float64), False)


cdef object _loss_up(Tensor g, str reduction, Py_ssize_t n):
    """The upstream gradient of each element of a loss, as a node: g itself,
    or g / n for the mean (the graph form of _loss_grad)."""
    return g / float(n) if reduction == 'mean' else g


# -- softmax and log_softmax -------------------------------------------------------------

cdef int softmax_forward(Tensor t, object x, object y) except -1:
    shifted = x - np.max(x, axis=t.ctx, keepdims=True)
    if t.op == T_SOFTMAX:
        r = np.exp(shifted)
        r /= np.sum(r, axis=t.ctx, keepdims=True)
    else:
        r = shifted - np.log(np.sum(np.exp(shifted), axis=t.ctx, keepdims=True))
    _store(t, r)
    return 0


cdef int softmax_backward(Tensor t, object g, object a, object b) except -1:
    if not _needs(a):
        return 0
    if t.op == T_SOFTMAX:
        _acc(a, t._data * (g - np.sum(g * t._data, axis=t.ctx, keepdims=True)), True)
    else:
        _acc(a, g - np.exp(t._data) * np.sum(g, axis=t.ctx, keepdims=True), True)
    return 0


# Differentiable backward (create_graph) of softmax and log_softmax, with the
# node's own value as a graph node: y = softmax(x): g_x = y (g - sum(g y));
# y = log_softmax(x): g_x = g - exp(y) sum(g).  (The losses' graph rules are
# kept apart from these two.)
cdef object softmax_graph(Tensor t, object g):
    cdef int axis = t.ctx
    if t.op == T_SOFTMAX:
        return (t * (g - (g * t).sum(axis, True)),)
    return (g - t.exp() * g.sum(axis, True),)


# -- cross_entropy and nll_loss (class-index targets) ---------------------------------------

cdef int class_loss_forward(Tensor t, object x, object y) except -1:
    cdef ClassLossState s = <ClassLossState>t.ctx
    target, reduction, axis = s.target, s.reduction, s.axis
    if t.op == T_CROSS_ENTROPY:
        shifted = x - np.max(x, axis=axis, keepdims=True)
        logp = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        s.log_probs = logp
    else:
        logp = x
    valid = target != s.ignore_index
    safe = np.where(valid, target, 0)
    picked = np.squeeze(np.take_along_axis(logp, np.expand_dims(safe, axis), axis=axis), axis=axis)
    losses = np.where(valid, -picked, 0.0)
    if reduction == 'none':
        r = losses
    elif reduction == 'sum':
        r = np.sum(losses)
    else:
        r = np.sum(losses) / np.count_nonzero(valid)
    _store(t, r)
    return 0


cdef int class_loss_backward(Tensor t, object g, object a, object b) except -1:
    cdef ClassLossState s = <ClassLossState>t.ctx
    if not _needs(a):
        return 0
    target, reduction, axis = s.target, s.reduction, s.axis
    x = (<Tensor>a)._data
    valid = target != s.ignore_index
    if reduction == 'none':
        per = np.where(valid, g, 0.0)
    elif reduction == 'sum':
        per = np.where(valid, float(g), 0.0)
    else:
        per = np.where(valid, float(g) / np.count_nonzero(valid), 0.0)
    per = np.expand_dims(per, axis)
    safe = np.expand_dims(np.where(valid, target, 0), axis)
    if t.op == T_CROSS_ENTROPY:
        # d/dx of -log_softmax(x)[t] = softmax(x) - onehot(t)
        r = np.exp(s.log_probs)
        np.put_along_axis(r, safe, np.take_along_axis(r, safe, axis=axis) - 1.0, axis=axis)
        r *= per
    else:
        r = np.zeros(x.shape)
        np.put_along_axis(r, safe, -per, axis=axis)
    _acc(a, r, True)
    return 0


cdef object class_loss_graph(Tensor t, object g):
    cdef ClassLossState s = <ClassLossState>t.ctx
    a = t.a
    if not _needs(a):
        return (None,)
    target, axis = s.target, s.axis
    x = (<Tensor>a)._data
    valid = target != s.ignore_index
    up = _grad_node(g)
    if s.reduction == 'mean':
        up = up / float(np.count_nonzero(valid))
    per = (up * _const(valid.astype(_float64))).unsqueeze(axis)
    onehot = np.zeros(x.shape)
    np.put_along_axis(onehot, np.expand_dims(np.where(valid, target, 0), axis), 1.0, axis=axis)
    if t.op == T_CROSS_ENTROPY:
        # softmax(x) - onehot(t), the softmax through log_softmax as the forward has it
        return (((<Tensor>a).log_softmax(axis).exp() - _const(onehot)) * per,)
    return (_const(np.negative(onehot)) * per,)


# -- binary cross-entropy, on probabilities and on logits ---------------------------------------

cdef int bce_forward(Tensor t, object x, object y) except -1:
    # same shapes (functional.py checks); loops in C, no temporaries
    cdef Py_ssize_t i, n = _size(x)
    cdef double* px = _ptr(x)
    cdef double* py = _ptr(y)
    cdef double* pl
    cdef double xi, yi
    cdef LossState s = <LossState>t.ctx
    losses = _losses_buffer(t, x, y)
    pl = _ptr(losses)
    if t.op == T_BCE:
        for i in range(n):
            xi = px[i]
            yi = py[i]
            pl[i] = -(yi * _clamped_log(xi) + (1.0 - yi) * _clamped_log1m(xi))
    else:
        for i in range(n):
            # (1 - y) x + softplus(-x), softplus evaluated stably
            xi = px[i]
            pl[i] = (1.0 - py[i]) * xi + mg_softplus(-xi)
        if s.pos_weight is not None:
            # (1 - y) x + (1 + (pw - 1) y) softplus(-x)
            sp = np.empty_like(x)
            _softplus_loop(_ptr(np.negative(x)), _ptr(sp), n)
            losses += (s.pos_weight - 1.0) * y * sp
    if s.weight is not None:
        losses *= s.weight
    _store(t, _reduced(losses, s.reduction))
    return 0


cdef int bce_backward(Tensor t, object g, object a, object b) except -1:
    cdef Py_ssize_t i, n
    cdef double* px
    cdef double* py
    cdef double* pr
    cdef double* pg
    cdef double scale, xi, yi, gi
    cdef unsigned short op = t.op
    cdef LossState s = <LossState>t.ctx
    weight = s.weight
    x = (<Tensor>a)._data
    y = (<Tensor>b)._data
    up = _loss_grad(t, s.reduction, _size(x))
    per_element = s.reduction == 'none'
    if per_element or weight is not None or (op == T_BCE_LOGITS and s.pos_weight is not None):
        scale = 1.0
        up = up if weight is None else up * weight
        per_element = True
        if op == T_BCE_LOGITS and s.pos_weight is not None:
            return _bce_logits_pos_weight_backward(t, up, a, b, x, y)
    else:
        scale = up
    gup = _filled(x.shape, up) if per_element else None
    pg = _ptr(gup) if per_element else NULL
    if _needs(a):
        r = np.empty_like(x)
        px = _ptr(x)
        py = _ptr(y)
        pr = _ptr(r)
        n = _size(x)
        for i in range(n):
            xi = px[i]
            yi = py[i]
            gi = pg[i] if per_element else scale
            if op == T_BCE:
                # PyTorch: (x - y) / max(x (1 - x), eps), its eps being
                # the float32 1e-12 (9.99999996e-13 as a double)
                pr[i] = gi * (xi - yi) / max((1.0 - xi) * xi, <double>(<float>1e-12))
            else:
                pr[i] = gi * (mg_sigmoid(xi) - yi)
        _acc(a, r, True)
    if _needs(b):
        if op == T_BCE:
            lx = np.maximum(np.log(x), -100.0)
            l1x = np.maximum(np.log1p(-x), -100.0)
            _acc(b, (gup if per_element else scale) * (l1x - lx), True)
        else:
            _acc(b, -(gup if per_element else scale) * x, True)
    return 0


cdef int _bce_logits_pos_weight_backward(Tensor t, object up, object a, object b, object x,
                                         object y) except -1:
    pw = (<LossState>t.ctx).pos_weight
    sig = np.empty_like(x)
    _sigmoid_loop(_ptr(x), _ptr(sig), _size(x))
    l = 1.0 + (pw - 1.0) * y
    if _needs(a):
        # d/dx [(1 - y) x + l softplus(-x)] = (1 - y) - l (1 - sigmoid(x))
        _acc(a, _filled(x.shape, up * ((1.0 - y) - l * (1.0 - sig))), True)
    if _needs(b):
        sp = np.empty_like(x)
        _softplus_loop(_ptr(np.negative(x)), _ptr(sp), _size(x))
        _acc(b, _filled(y.shape, up * (-x + (pw - 1.0) * sp)), True)
    return 0


cdef object bce_graph(Tensor t, object g):
    cdef LossState s = <LossState>t.ctx
    a, b = t.a, t.b
    up = _loss_up(_grad_node(g), s.reduction, _size((<Tensor>a)._data))
    if s.weight is not None:
        up = up * _const(s.weight)
    gx = gy = None
    if t.op == T_BCE:
        if _needs(a):
            # eps as the first-order rule: PyTorch's float32 1e-12
            gx = (up * (a - b)) / (a * (1.0 - a)).clamp(min=<double>(<float>1e-12))
        if _needs(b):
            gy = up * ((-a).log1p().clamp(min=-100.0) - a.log().clamp(min=-100.0))
        return (gx, gy)
    if s.pos_weight is None:
        if _needs(a):
            gx = up * (a.sigmoid() - b)
        if _needs(b):
            gy = -up * a
        return (gx, gy)
    pw1 = _const(s.pos_weight - 1.0)
    if _needs(a):
        gx = up * ((1.0 - b) - (1.0 + pw1 * b) * (1.0 - a.sigmoid()))
    if _needs(b):
        gy = up * (-a + pw1 * (-a).softplus())
    return (gx, gy)


# -- mse, l1, huber and hinge (broadcasting input and target) ---------------------------------------

cdef int pointwise_loss_forward(Tensor t, object x, object y) except -1:
    cdef unsigned short op = t.op
    cdef LossState s = <LossState>t.ctx
    losses = _losses_buffer(t, x, y)
    d = np.subtract(x, y, out=losses)
    if op == T_MSE_LOSS:
        np.multiply(d, d, out=losses)
    elif op == T_L1_LOSS:
        np.abs(d, out=losses)
    elif op == T_HUBER_LOSS:
        ad = np.abs(d)
        np.copyto(losses, np.where(ad <= s.delta, 0.5 * d * d, s.delta * (ad - 0.5 * s.delta)))
    else:   # hinge: relu(1 - x y)
        margin = 1.0 - x * y
        np.copyto(losses, np.where(margin < 0.0, 0.0, margin))
    _store(t, _reduced(losses, s.reduction))
    return 0


cdef int pointwise_loss_backward(Tensor t, object g, object a, object b) except -1:
    cdef unsigned short op = t.op
    cdef LossState s = <LossState>t.ctx
    reduction = s.reduction
    x = (<Tensor>a)._data
    y = (<Tensor>b)._data
    n = _size(t._data) if reduction == 'none' else _shape_size(_broadcast_shape(x.shape, y.shape))
    up = _loss_grad(t, reduction, n)
    if op == T_HINGE_LOSS:
        # d/ds relu(1 - y s) = -y where the margin is positive
        active = (1.0 - x * y) > 0.0
        if _needs(a):
            _acc(a, _unbroadcast(np.where(active, -y, 0.0) * up, x.shape), True)
        if _needs(b):
            _acc(b, _unbroadcast(np.where(active, -x, 0.0) * up, y.shape), True)
        return 0
    d = x - y
    if op == T_MSE_LOSS:
        r = 2.0 * d
    elif op == T_L1_LOSS:
        r = np.sign(d)
    else:
        r = np.clip(d, -s.delta, s.delta)
    r = r * up
    if _needs(a):
        _acc(a, _unbroadcast(r, x.shape), True)
    if _needs(b):
        _acc(b, _unbroadcast(np.negative(r), y.shape), True)
    return 0


cdef object pointwise_loss_graph(Tensor t, object g):
    cdef unsigned short op = t.op
    cdef LossState s = <LossState>t.ctx
    a, b = t.a, t.b
    x = (<Tensor>a)._data
    y = (<Tensor>b)._data
    shape = _broadcast_shape(x.shape, y.shape)
    up = _loss_up(_grad_node(g), s.reduction, _shape_size(shape))
    if op == T_HINGE_LOSS:
        # -y (for x) and -x (for y) where the margin is positive, else 0
        off = np.where((1.0 - x * y) > 0.0, -1.0, 0.0)
        return (_g_unbroadcast((b * _const(off)) * up, x.shape) if _needs(a) else None,
                _g_unbroadcast((a * _const(off)) * up, y.shape) if _needs(b) else None)
    d = x - y
    if op == T_MSE_LOSS:
        r = (2.0 * (a - b)) * up
    elif op == T_L1_LOSS:
        r = _const(np.sign(d)) * up
    else:
        # d inside (-delta, delta), +-delta outside: the clip as a linear piece
        inside = np.abs(d) < s.delta
        r = ((a - b) * _const(inside.astype(_float64))
             + _const(np.where(inside, 0.0, np.clip(d, -s.delta, s.delta)))) * up
    return (_g_unbroadcast(r, x.shape) if _needs(a) else None,
            _g_unbroadcast(-r, y.shape) if _needs(b) else None)


cdef _register_losses():
    _rule(T_SOFTMAX, softmax_forward, softmax_backward)
    _rule(T_LOG_SOFTMAX, softmax_forward, softmax_backward)
    _graph_rule(T_SOFTMAX, softmax_graph)
    _graph_rule(T_LOG_SOFTMAX, softmax_graph)
    _rule(T_CROSS_ENTROPY, class_loss_forward, class_loss_backward)
    _rule(T_NLL_LOSS, class_loss_forward, class_loss_backward)
    _rule(T_BCE, bce_forward, bce_backward)
    _rule(T_BCE_LOGITS, bce_forward, bce_backward)
    for op in (T_MSE_LOSS, T_L1_LOSS, T_HUBER_LOSS, T_HINGE_LOSS):
        _rule(op, pointwise_loss_forward, pointwise_loss_backward)
    for op in (T_CROSS_ENTROPY, T_NLL_LOSS):
        _graph_rule(op, class_loss_graph)
    for op in (T_BCE, T_BCE_LOGITS):
        _graph_rule(op, bce_graph)
    for op in (T_MSE_LOSS, T_L1_LOSS, T_HUBER_LOSS, T_HINGE_LOSS):
        _graph_rule(op, pointwise_loss_graph)

# In-place ops (add_, mul_, +=, zero_, copy_, clamp_, ...) and the version
# counter that keeps them from ever giving a wrong gradient.  Included by
# microgrid/tensors/_tensor.pyx.
#
# An in-place op computes the same result as its out-of-place op, then:
#   - when no graph is recorded (no_grad, or nothing involved requires grad),
#     writes it into the tensor's own buffer: the tensor's data has changed
#     (``written_seq``);
#   - when the graph is recorded, "rebases" the tensor: its old node moves to
#     a new object holding a copy of the old value, and the tensor becomes
#     the op's node over that old node, with its buffer rewritten, as
#     PyTorch's history does (``rebased_seq``).  A leaf that requires grad
#     refuses, as in PyTorch.
# Every tensor node was built at a known sequence number (``seq``).  Before a node's
# backward rule runs, it checks each tensor parent: if the parent was rebased
# after the node was built, gradient sent to it would go to its new history,
# not the value the node used; if it was written after, and the rule reads
# that parent's value, the rule would use the new value.  Either raises
# PyTorch's error instead.

cdef extern from "mg_ops.h":
    ctypedef struct mg_op_row:
        const char* grad_a
        const char* grad_b
    const mg_op_row* mg_op_rows

cdef enum:
    SAVES_A = 1        # the backward rule reads the first operand's value
    SAVES_B = 2        # ... the second operand's
    SAVES_ARGS = 4     # ... the values of the further operands (args)
    SAVES_OUT = 8      # ... the node's own value
    SAVES_ALL = 15

cdef unsigned char* _saves = <unsigned char*>malloc(OP_COUNT)
memset(_saves, SAVES_ALL, OP_COUNT)      # an op that says nothing reads everything
cdef unsigned long long _inplace_ops = 0   # in-place ops ever run: the check is free before the first


cdef void _saved(int op, unsigned char which) noexcept:
    """Register which operand values op's backward rule reads."""
    _saves[op] = which


cdef _register_saved_from_table():
    """The op table's rows read an operand's value when the operand's name
    appears in one of their derivative formulas (sigmoid's ``out * (1 -
    out)`` reads none; mul's ``b`` and ``a`` read both)."""
    import re
    cdef int op
    for op in range(OP_COUNT):
        if mg_op_kind[op] not in (KIND_BINARY, KIND_UNARY, KIND_UNARY_C):
            continue
        formulas = (mg_op_rows[op].grad_a or b'').decode() + ' ' + (mg_op_rows[op].grad_b or b'').decode()
        names = set(re.findall(r'[A-Za-z_]\w*', formulas))
        _saves[op] = ((SAVES_A if 'a' in names else 0) | (SAVES_B if 'b' in names else 0)
                      | (SAVES_OUT if 'out' in names else 0))


cdef int _check_versions(Tensor t) except -1:
    """Raise if t or an operand of t changed in a way t's backward rule
    cannot see."""
    cdef unsigned char saves = _saves[t.op]
    cdef int i = 0
    if saves & SAVES_OUT and t.written_seq > t.seq:
        raise RuntimeError(
            f"one of the variables needed for gradient computation has been modified by an "
            f"inplace operation: the output of '{_OP_SYMBOLS[t.op]}' node #{t.seq}, of shape "
            f"{tuple(t._data.shape)}, is at version {t.version}; its backward reads the value "
            f"it computed.  Compute a new tensor instead, or clone() it before changing it.")
    for parent, which in ((t.a, SAVES_A), (t.b, SAVES_B)):
        if isinstance(parent, Tensor):
            _check_parent(t, <Tensor>parent, i, saves & which)
        i += 1
    if t.args is not None:
        for parent in t.args:
            if isinstance(parent, Tensor):
                _check_parent(t, <Tensor>parent, i, saves & SAVES_ARGS)
            i += 1
    return 0


cdef int _check_parent(Tensor t, Tensor p, int i, bint reads) except -1:
    if p.rebased_seq > t.seq or (reads and p.written_seq > t.seq):
        raise RuntimeError(
            f"one of the variables needed for gradient computation has been modified by an "
            f"inplace operation: the tensor of shape {tuple(p._data.shape)} that is operand {i} "
            f"of '{_OP_SYMBOLS[t.op]}' node #{t.seq}, is at version {p.version}; it was "
            f"changed after that node was built.  Compute a new tensor instead (x = x + y "
            f"rather than x += y), or clone() it before changing it.")
    return 0


cdef Tensor _inplace(Tensor self, object build, str name):
    """Make ``self`` hold ``build(x)``, where x is ``self``'s current value as
    a node (build makes the out-of-place result of the op), in place."""
    global _inplace_ops
    cdef Tensor old, r
    cdef bint recording = grad_enabled()
    if recording and self.op == OP_LEAF and self.requires_grad:
        raise RuntimeError(
            f"{name}: a leaf Variable that requires grad is being used in an in-place "
            f"operation.  Update parameters inside `with microgrid.no_grad():`, or "
            f"through .data")
    _inplace_ops += 1
    if not recording:
        r = build(self)
        _write(self, r)
        self.written_seq = next_seq()
        return self
    # the old node, as a new object with a copy of the old value
    old = Tensor.__new__(Tensor)
    old.op, old.a, old.b, old.args, old.ctx, old.aux = self.op, self.a, self.b, self.args, self.ctx, self.aux
    old.requires_grad, old.seq, old.label = self.requires_grad, self.seq, self.label
    old._data = self._data.copy()
    r = build(old)
    if not r.requires_grad:       # nothing involved needs a gradient: just write
        _write(self, r)
        self.written_seq = next_seq()
        return self
    _write(self, r)
    self.op, self.a, self.b, self.args, self.ctx, self.aux = r.op, r.a, r.b, r.args, r.ctx, r.aux
    self.requires_grad = r.requires_grad
    self._grad = None
    # built now: nodes built before see it as rebased, its own rule does not
    self.seq = self.rebased_seq = self.written_seq = next_seq()
    return self


cdef int _write(Tensor self, Tensor r) except -1:
    shape = self._data.shape
    if r._data.shape != shape:
        raise RuntimeError(f"output with shape {list(shape)} doesn't match the broadcast "
                           f"shape {list(r._data.shape)}")
    _copy_into(self._data, r._data)
    self.version += 1
    return 0


cdef object _inplace_operand(object other, str name):
    o = _operand(other)
    if o is None:
        raise TypeError(f"{name}(other) takes a Tensor, a Value, a real number or an array, "
                        f"got {type(other).__name__}")
    return o


cdef object _scaled(object o, object alpha, str name):
    """alpha * o for add_/sub_'s alpha (o itself for alpha == 1)."""
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool):
        raise TypeError(f"{name}(alpha=...) takes a real number, got {type(alpha).__name__}")
    return o if alpha == 1 else o * float(alpha)


cdef object _broadcast_to(object src, tuple shape):
    """src broadcast to ``shape`` as a node (adding -0.0 keeps every value,
    -0.0 included); its gradient sums back to src's shape."""
    return src + _leaf(np.full(shape, -0.0), False)

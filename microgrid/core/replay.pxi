# Included by _engine.pyx: graph replay (microgrid.Graph).

# Graph replay: record the order once, rerun forward and backward in C

# A graph made of Values only is compiled into a tape: flat arrays indexed by
# position in the recorded order, so replay reads and writes contiguous
# doubles instead of chasing node pointers.  Values and gradients are copied
# back into the nodes as they are computed.  The arithmetic is the nodes'
# own (mg_forward/mg_local_grads, the same summation order), so a replay equals a
# fresh build bit for bit.
ctypedef struct Tape:
    Py_ssize_t n
    unsigned short* op
    unsigned char* requires_grad
    int* a                  # position of parent a (the bias for dot), or -1
    int* b                  # position of parent b, or -1
    int* args_start         # n-ary operands: args[args_start[i] : args_start[i + 1]]
    int* args
    double* aux
    double* val
    double* grad


cdef void _tape_free(Tape* t) noexcept:
    if t == NULL:
        return
    free(t.op)
    free(t.requires_grad)
    free(t.a)
    free(t.b)
    free(t.args_start)
    free(t.args)
    free(t.aux)
    free(t.val)
    free(t.grad)
    free(t)


cdef Tape* _tape_build(tuple nodes) except NULL:
    cdef Py_ssize_t n = len(nodes), i, k, n_args = 0
    cdef Value v
    cdef dict position = {id(node): i for i, node in enumerate(nodes)}
    cdef Tape* t = <Tape*>calloc(1, sizeof(Tape))
    if t == NULL:
        raise MemoryError()
    for node in nodes:
        if operands(<Node>node) is not None:
            n_args += len(operands(<Node>node))
    t.n = n
    t.op = <unsigned short*>malloc(n * sizeof(unsigned short))
    t.requires_grad = <unsigned char*>malloc(n)
    t.a = <int*>malloc(n * sizeof(int))
    t.b = <int*>malloc(n * sizeof(int))
    t.args_start = <int*>malloc((n + 1) * sizeof(int))
    t.args = <int*>malloc(max(n_args, 1) * sizeof(int))
    t.aux = <double*>malloc(n * sizeof(double))
    t.val = <double*>malloc(n * sizeof(double))
    t.grad = <double*>malloc(n * sizeof(double))
    if (t.op == NULL or t.requires_grad == NULL or t.a == NULL or t.b == NULL
            or t.args_start == NULL or t.args == NULL or t.aux == NULL
            or t.val == NULL or t.grad == NULL):
        _tape_free(t)
        raise MemoryError()
    k = 0
    for i in range(n):
        v = <Value>nodes[i]
        t.op[i] = v.op
        t.requires_grad[i] = v.requires_grad
        t.a[i] = position[id(v.a)] if v.a is not None else -1
        t.b[i] = position[id(second_parent(v))] if second_parent(v) is not None else -1
        t.aux[i] = v.aux
        t.val[i] = v.data
        t.args_start[i] = k
        if operands(v) is not None:
            for arg in operands(v):
                t.args[k] = position[id(arg)]
                k += 1
    t.args_start[n] = k
    return t


cdef inline double _tape_dot(const double* val, const int* w, const int* x, Py_ssize_t n,
                             double bias) noexcept:
    """_dot_data's arithmetic, over tape positions."""
    cdef double s0 = bias, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 += val[w[i]] * val[x[i]]
        s1 += val[w[i + 1]] * val[x[i + 1]]
        s2 += val[w[i + 2]] * val[x[i + 2]]
        s3 += val[w[i + 3]] * val[x[i + 3]]
        i += 4
    while i < n:
        s0 += val[w[i]] * val[x[i]]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef void _tape_forward(Tape* t, PyObject** nodes) noexcept:
    cdef Py_ssize_t i, k, start, count
    cdef unsigned short op
    cdef double total
    cdef double* val = t.val
    for i in range(t.n):
        op = t.op[i]
        if op == OP_LEAF:
            val[i] = (<Value>nodes[i]).data
            continue
        if mg_op_operands(op):
            val[i] = mg_forward(op, val[t.a[i]], val[t.b[i]] if mg_op_operands(op) == 2 else 0.0,
                                t.aux[i])
        else:
            start = t.args_start[i]
            count = t.args_start[i + 1] - start
            if op == OP_DOT:
                val[i] = _tape_dot(val, t.args + start, t.args + start + count // 2, count // 2,
                                   val[t.a[i]] if t.a[i] >= 0 else 0.0)
            else:
                total = 0.0
                for k in range(start, start + count):
                    total += val[t.args[k]]
                val[i] = total + t.aux[i] if op == OP_SUM else total / count
        (<Value>nodes[i]).data = val[i]


cdef void _tape_backward(Tape* t, PyObject** nodes, double seed) noexcept:
    cdef Py_ssize_t i, k, start, count, half
    cdef unsigned short op
    cdef double g, da, db, y
    cdef int w, x, p
    cdef double* val = t.val
    cdef double* grad = t.grad
    cdef unsigned char* rg = t.requires_grad
    # Derivatives are taken at the values of the last forward() (the tape
    # keeps them); every gradient, a leaf's too, starts at zero: a leaf's pass
    # total is added to what it held at the end, as run_backward does.
    memset(grad, 0, t.n * sizeof(double))
    grad[t.n - 1] = seed
    for i in range(t.n - 1, -1, -1):
        op = t.op[i]
        if op == OP_LEAF or not rg[i]:
            continue
        g = grad[i]
        if mg_op_operands(op):
            p = t.a[i]
            if mg_op_operands(op) == 2:
                mg_local_grads(op, val[p], val[t.b[i]], val[i], t.aux[i], &da, &db)
                if rg[p]:
                    grad[p] += g * da
                if rg[t.b[i]]:
                    grad[t.b[i]] += g * db
            else:
                mg_local_grads(op, val[p], 0.0, val[i], t.aux[i], &da, &db)
                if rg[p]:
                    grad[p] += g * da
            continue
        start = t.args_start[i]
        count = t.args_start[i + 1] - start
        if op == OP_DOT:
            half = count // 2
            for k in range(start, start + half):
                w = t.args[k]
                x = t.args[k + half]
                if rg[w]:
                    grad[w] += g * val[x]
                if rg[x]:
                    grad[x] += g * val[w]
            if t.a[i] >= 0 and rg[t.a[i]]:
                grad[t.a[i]] += g
        else:
            y = g if op == OP_SUM else g / count
            for k in range(start, start + count):
                if rg[t.args[k]]:
                    grad[t.args[k]] += y
    for i in range(t.n):
        if rg[i]:
            if t.op[i] == OP_LEAF:
                (<Value>nodes[i]).grad = (<Value>nodes[i]).grad + grad[i]
            else:
                (<Value>nodes[i]).grad = grad[i]

@cython.final
@cython.binding(False)   # methods check the type of self (Cython #1903)
@cython.embedsignature.format('clinic')   # and keep inspect.signature working
cdef class Graph:
    """A recorded graph whose forward and backward passes can be replayed.

    ``Graph(root)`` records the topological order of every node ``root``
    depends on.  Afterwards, change leaf values in place (``p.data = ...`` on a
    Value, ``t.data[...] = ...`` on a tensor) and call ``forward()`` to
    recompute every node from its parents, then ``backward()`` to rerun the
    reverse sweep: the results equal those of a freshly built graph, bit for
    bit.  ``backward()`` differentiates at the values of the last
    ``forward()``: after changing leaves, call ``forward()`` first.
    The recorded structure is fixed: if the code that built the graph
    would branch differently on new data (a Python ``if`` on a value), replay
    still follows the recorded branch.  ``matches(new_root)`` tells whether a
    fresh build has the recorded structure.
    """
    cdef tuple _nodes               # owns the recorded nodes, root last
    cdef PyObject** _order          # the same nodes, borrowed, for the C loops
    cdef Py_ssize_t _n
    cdef readonly Node root
    cdef list _tensor_leaves        # (leaf, shape) pairs checked before forward
    cdef Tape* _tape                # flat program of a graph of Values only, or NULL

    def __cinit__(self):
        self._order = NULL
        self._tape = NULL

    def __init__(self, root):
        cdef Py_ssize_t i
        cdef Node node
        if not isinstance(root, Node):
            raise TypeError(f"Graph(root) takes a Value or Tensor, got {type(root).__name__}")
        self.root = <Node>root
        self._nodes = tuple(topological_order(self.root))
        self._n = len(self._nodes)
        self._order = <PyObject**>malloc(max(self._n, 1) * sizeof(PyObject*))
        if self._order == NULL:
            raise MemoryError()
        self._tensor_leaves = []
        for i in range(self._n):
            node = <Node>self._nodes[i]
            self._order[i] = <PyObject*>node
            if node.op == OP_CUSTOM:
                if isinstance(node.a, PyRule):
                    raise ValueError(
                        f"Graph(root): node {i} is the output of the custom Function "
                        f"{node._op!r}, whose forward is Python code that a replay does not "
                        "run; build the graph afresh each step (or write the op with "
                        "microgrid ops) instead of recording it")
                raise ValueError(
                    f"Graph(root): node {i} ({node._op!r}) was built by Value(data, _children, "
                    "_op) and has no forward rule, so the graph cannot be replayed")
            if node.op == OP_LEAF and not isinstance(node, Value):
                self._tensor_leaves.append((node, node.shape))
        if all(isinstance(n, Value) and (<Node>n).op != OP_ELEMENT for n in self._nodes):
            self._tape = _tape_build(self._nodes)

    def __dealloc__(self):
        free(self._order)
        _tape_free(self._tape)

    def __len__(self):
        return self._n

    def __repr__(self):
        return (f"Graph({self._n} nodes, {len(self.leaves)} leaves, "
                f"{len(self.parameters)} parameters, root={self.root!r})")

    @property
    def nodes(self):
        """Every recorded node in forward order, the root last."""
        return list(self._nodes)

    @property
    def leaves(self):
        """The leaf nodes: what may change between replays."""
        return [n for n in self._nodes if (<Node>n).op == OP_LEAF]

    @property
    def parameters(self):
        """The leaves that take a gradient."""
        return [n for n in self._nodes if (<Node>n).op == OP_LEAF and (<Node>n).requires_grad]

    def forward(self):
        """Recompute every node from the current values of the leaves; returns
        the root's new value (a float for a Value root)."""
        cdef Py_ssize_t i
        cdef Node node
        for leaf, shape in self._tensor_leaves:
            if leaf.shape != shape:
                raise ValueError(
                    f"Graph.forward(): a leaf tensor changed shape from {shape} to {leaf.shape}; "
                    "a recorded graph has fixed shapes, so build and record it again")
        if self._tape != NULL and not _anomaly_mode:
            _tape_forward(self._tape, self._order)
            return self.root.data
        for i in range(self._n):
            node = <Node>self._order[i]
            if node.op == OP_LEAF:
                continue
            if isinstance(node, Value):
                (<Value>node).data = _forward_data(<Value>node)
            else:
                (<ArrayNode>node)._forward()
        return self.root.data

    def backward(self, grad=None):
        """Rerun the reverse sweep over the recorded order, with backward()'s
        semantics: intermediate gradients recomputed, leaves accumulate."""
        cdef Py_ssize_t i
        cdef Node node
        cdef double g
        cdef _LeafStash stash
        if not self.root.requires_grad:
            raise RuntimeError("Graph.backward(): the root does not require grad")
        if isinstance(self.root, Value):
            if grad is None:
                g = 1.0
            elif not _to_double(grad, &g):
                raise TypeError(f"backward(grad=...) takes a real number, got {type(grad).__name__}")
            grad = g
        if self._tape != NULL and not _anomaly_mode:
            _tape_backward(self._tape, self._order, g)
            return
        stash = _LeafStash.__new__(_LeafStash)
        try:
            for i in range(self._n):
                node = <Node>self._order[i]
                if not node.requires_grad:
                    continue
                if node.op == OP_LEAF:
                    stash.add(node)
                elif isinstance(node, Value):
                    (<Value>node).grad = 0.0
                else:
                    (<ArrayNode>node)._zero_grad()
            seed_grad(self.root, grad, False)
            _sweep(self._order, self._n)
        finally:
            stash.restore()

    def step(self):
        """``forward()`` then ``backward()``; returns the root's value."""
        out = self.forward()
        self.backward()
        return out

    def matches(self, root):
        """Whether a freshly built graph from ``root`` has the recorded
        structure: the same ops in the same order, wired the same way, with
        the same constants.  Use it to check that data-dependent code did not
        take another branch."""
        cdef list fresh = topological_order(root)
        cdef dict position = {}
        cdef Py_ssize_t i
        if len(fresh) != self._n:
            return False
        for i in range(self._n):
            position[id(fresh[i])] = i
        recorded_position = {id(n): i for i, n in enumerate(self._nodes)}
        for i in range(self._n):
            old, new = <Node>self._nodes[i], <Node>fresh[i]
            if old.op != new.op or type(old) is not type(new):
                return False
            if isinstance(old, Value) and (<Value>old).op != OP_LEAF \
                    and (<Value>old).aux != (<Value>new).aux:
                return False
            old_parents = [recorded_position[id(p)] for p in _slots(old)]
            new_parents = [position[id(p)] for p in _slots(new)]
            if old_parents != new_parents:
                return False
        return True


cdef list _slots(Node node):
    """Every parent node of ``node`` in slot order (constants excluded)."""
    cdef list out = []
    if node.op != OP_CUSTOM:
        out.extend([p for p in (node.a, second_parent(node)) if p is not None])
    if operands(node) is not None:
        out.extend(operands(node))
    return out

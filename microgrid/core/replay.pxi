# Included by _engine.pyx: graph replay (microgrid.Graph).

# Graph replay: record the order once, rerun forward and backward in C

# A graph made of Values only is compiled into a tape: flat arrays indexed by
# position in the recorded order, so replay reads and writes contiguous
# doubles instead of chasing node pointers.  Values and gradients are copied
# back into the nodes as they are computed.  The arithmetic is the nodes'
# own (mg_forward/mg_local_grads, the same summation order), so a replay equals a
# fresh build bit for bit.

# A row (mg_tape.h): m nodes at positions first .. first + m - 1 that one
# call evaluates, or passes the gradients of.  Dots: node j's weights at
# a0 + j * a_step + k * w_step and its inputs at x0 + k * x_step, k < n_pairs.
# Unary nodes: node j's operand at a0 + j * a_step.
ctypedef struct TapeRow:
    int first
    int m
    int a0
    int a_step
    int w_step
    int x0
    int x_step
    int n_pairs


ctypedef struct Tape:
    Py_ssize_t n
    unsigned short* op
    unsigned char* requires_grad
    int* a                  # position of parent a (the bias for dot), or -1
    int* b                  # position of parent b, or -1
    int* args_start         # n-ary operands: args[args_start[i] : args_start[i + 1]]
    int* args
    int* row                # the index + 1 of the row a position begins or ends
                            # (a sweep enters a row at one end and leaves at the
                            # other), else 0
    TapeRow* rows
    Py_ssize_t n_rows
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
    free(t.row)
    free(t.rows)
    free(t.aux)
    free(t.val)
    free(t.grad)
    free(t)


cdef Tape* _tape_build(tuple nodes) except NULL:
    cdef Py_ssize_t n = len(nodes), i, k, n_args = 0
    cdef unsigned char* weight_of_row
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
    t.row = <int*>calloc(n, sizeof(int))
    t.rows = <TapeRow*>malloc(max(n, 1) * sizeof(TapeRow))
    t.aux = <double*>malloc(n * sizeof(double))
    t.val = <double*>malloc(n * sizeof(double))
    t.grad = <double*>calloc(n, sizeof(double))
    if (t.op == NULL or t.requires_grad == NULL or t.a == NULL or t.b == NULL
            or t.args_start == NULL or t.args == NULL or t.row == NULL or t.rows == NULL
            or t.aux == NULL or t.val == NULL or t.grad == NULL):
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
    weight_of_row = <unsigned char*>calloc(n, 1)
    if weight_of_row == NULL:
        _tape_free(t)
        raise MemoryError()
    i = 0
    while i < n:
        i += _tape_find_row(t, i, weight_of_row)
    free(weight_of_row)
    return t


cdef extern from "mg_tape.h":
    double mg_tape_dot(const double* val, const int* w, const int* x, Py_ssize_t n,
                       double bias) noexcept nogil
    void mg_tape_dot_back(const double* val, double* grad, const int* w, const int* x,
                          Py_ssize_t n, double g) noexcept nogil
    void mg_tape_dot_rows(double* val, int out, int m, int w0, int row_step, int sw, int x0,
                          int sx, Py_ssize_t n, const int* bias) noexcept nogil
    void mg_tape_dot_rows_back(const double* val, double* grad, int out, int m, int w0,
                               int row_step, int sw, int x0, int sx, Py_ssize_t n,
                               const int* bias) noexcept nogil
    void mg_tape_unary_rows(int op, double* val, int out, int m, int a0, int a_step,
                            double c) noexcept nogil
    void mg_tape_unary_rows_back(int op, const double* val, double* grad, int out, int m,
                                 int a0, int a_step, double c) noexcept nogil


cdef inline int _run_step(const int* p, Py_ssize_t n) noexcept:
    """The step s of positions p[k] = p[0] + k * s (1 for a single one), or 0."""
    cdef Py_ssize_t k
    cdef int s = p[1] - p[0] if n > 1 else 1
    for k in range(1, n):
        if p[k] - p[k - 1] != s:
            return 0
    return s


cdef bint _dot_runs(Tape* t, Py_ssize_t i, int* sw, int* sx) noexcept:
    """Whether dot i reads its weights and its inputs from two runs of
    positions (evenly spaced, each position once; their steps in sw and sx),
    apart, its bias not among the inputs: then it is a row of one dot at
    least (mg_tape.h)."""
    cdef Py_ssize_t half = (t.args_start[i + 1] - t.args_start[i]) // 2
    cdef const int* w = t.args + t.args_start[i]
    cdef const int* x = w + half
    if t.op[i] != OP_DOT or half == 0:
        return False
    sw[0] = _run_step(w, half)
    sx[0] = _run_step(x, half)
    return not (sw[0] == 0 or sx[0] == 0
                or (max(w[0], w[half - 1]) >= min(x[0], x[half - 1])        # the runs overlap
                    and max(x[0], x[half - 1]) >= min(w[0], w[half - 1]))
                or min(x[0], x[half - 1]) <= t.a[i] <= max(x[0], x[half - 1]))  # bias an input


cdef inline bint _dot_row_continues(Tape* t, TapeRow* r, unsigned char* weight_of_row) noexcept:
    """Whether the dot at position p = r.first + r.m continues the row of
    dots r: the same inputs, steps and size, weights one row step on, its
    operands all made before the row, and its bias none of the row's weights
    (mg_tape.h passes the weights' gradients on before the biases')."""
    cdef Py_ssize_t p = r.first + r.m, k
    cdef const int* w = t.args + t.args_start[p]
    cdef int sw, sx
    if (p >= t.n or not _dot_runs(t, p, &sw, &sx)
            or sw != r.w_step or sx != r.x_step
            or t.args_start[p + 1] - t.args_start[p] != 2 * r.n_pairs or w[r.n_pairs] != r.x0
            or t.requires_grad[p] != t.requires_grad[r.first]
            or t.a[p] >= r.first or max(w[0], w[r.n_pairs - 1]) >= r.first
            or (t.a[p] >= 0 and weight_of_row[t.a[p]])):
        return False
    if r.m == 1:
        r.a_step = w[0] - r.a0
    elif w[0] - t.args[t.args_start[p - 1]] != r.a_step:
        return False
    for k in range(r.n_pairs):
        weight_of_row[w[k]] = 1
    return True


cdef inline bint _same_bits(double a, double b) noexcept:
    """a and b the same double, bit for bit (0.0 and -0.0 differ)."""
    return memcmp(&a, &b, sizeof(double)) == 0


cdef inline bint _unary_row_continues(Tape* t, Py_ssize_t first, Py_ssize_t p) noexcept:
    """Whether the node at position p continues the row of unary nodes
    begun at first: the same op and constant (to the bit), its operand one
    step on and made before the row."""
    return (p < t.n and t.op[p] == t.op[first] and _same_bits(t.aux[p], t.aux[first])
            and t.requires_grad[p] == t.requires_grad[first] and t.a[p] < first
            and t.a[p] - t.a[p - 1] == t.a[first + 1] - t.a[first] and t.a[p] != t.a[p - 1])


cdef Py_ssize_t _tape_find_row(Tape* t, Py_ssize_t first,
                               unsigned char* weight_of_row) noexcept:
    """Records the row of dots or of unary nodes that begins at position
    first: a dot in runs is a row of one at least, unary nodes make one if
    two or more do.  Returns how many positions it covers (1 if none)."""
    cdef TapeRow* r = &t.rows[t.n_rows]
    cdef const int* w = t.args + t.args_start[first]
    cdef Py_ssize_t k, j
    cdef int sw, sx
    memset(r, 0, sizeof(TapeRow))
    r.first, r.m = first, 1
    if _dot_runs(t, first, &sw, &sx):
        r.n_pairs = (t.args_start[first + 1] - t.args_start[first]) // 2
        r.a0, r.w_step, r.x0, r.x_step = w[0], sw, w[r.n_pairs], sx
        for k in range(r.n_pairs):
            weight_of_row[w[k]] = 1
        while _dot_row_continues(t, r, weight_of_row):
            r.m += 1
        for j in range(r.m):
            for k in range(r.n_pairs):
                weight_of_row[r.a0 + j * r.a_step + k * r.w_step] = 0
    elif mg_op_operands(t.op[first]) == 1 and first + 1 < t.n and t.op[first + 1] == t.op[first]:
        r.a0 = t.a[first]
        while _unary_row_continues(t, first, first + r.m):
            r.m += 1
        if r.m == 1:
            return 1
        r.a_step = t.a[first + 1] - t.a[first]
    else:
        return 1
    t.n_rows += 1
    t.row[first] = t.row[first + r.m - 1] = t.n_rows
    return r.m


cdef inline void _tape_row(Tape t, const TapeRow* r, double* grad) noexcept nogil:
    """Row r evaluated (grad NULL) or passing its gradients on."""
    if t.op[r.first] != OP_DOT:
        if grad == NULL:
            mg_tape_unary_rows(t.op[r.first], t.val, r.first, r.m, r.a0, r.a_step,
                               t.aux[r.first])
        else:
            mg_tape_unary_rows_back(t.op[r.first], t.val, grad, r.first, r.m, r.a0, r.a_step,
                                    t.aux[r.first])
    elif grad == NULL:
        mg_tape_dot_rows(t.val, r.first, r.m, r.a0, r.a_step, r.w_step, r.x0, r.x_step,
                         r.n_pairs, t.a + r.first)
    else:
        mg_tape_dot_rows_back(t.val, grad, r.first, r.m, r.a0, r.a_step, r.w_step, r.x0,
                              r.x_step, r.n_pairs, t.a + r.first)


# The sweeps work on a copy of the tape (its array pointers): the extension
# is compiled with -fno-strict-aliasing, so through a Tape* every store into
# a value or a node would make the compiler reload them; a local copy stays
# in registers across a whole sweep.
cdef inline void _tape_eval(Tape t, Py_ssize_t i) noexcept nogil:
    """Node i's value from its operands' values on the tape."""
    cdef Py_ssize_t k, start, count
    cdef unsigned short op = t.op[i]
    cdef double total
    cdef double* val = t.val
    if mg_op_operands(op):
        val[i] = _op_forward(op, val[t.a[i]], val[t.b[i]] if mg_op_operands(op) == 2 else 0.0,
                             t.aux[i])
        return
    start = t.args_start[i]
    count = t.args_start[i + 1] - start
    if op == OP_DOT:
        val[i] = mg_tape_dot(val, t.args + start, t.args + start + count // 2, count // 2,
                             val[t.a[i]] if t.a[i] >= 0 else 0.0)
    else:
        total = 0.0
        for k in range(start, start + count):
            total += val[t.args[k]]
        val[i] = total + t.aux[i] if op == OP_SUM else total / count


cdef inline void _tape_pass_back(Tape t, Py_ssize_t i, double* grad) noexcept nogil:
    """Node i's gradient passed on to its operands: to every operand, one that
    takes no gradient included (what it is given is never read: a sweep passes
    on and stores only the gradients of nodes that take one), so that the
    loops test nothing per operand."""
    cdef Py_ssize_t k, start, count, half
    cdef unsigned short op = t.op[i]
    cdef double g = grad[i], da, db, y
    cdef int p
    cdef double* val = t.val
    if mg_op_operands(op):
        p = t.a[i]
        if mg_op_operands(op) == 2:
            _binary_grads(op, val[p], val[t.b[i]], val[i], t.aux[i], &da, &db)
            grad[p] += g * da
            grad[t.b[i]] += g * db
        else:
            grad[p] += g * _unary_grad(op, val[p], val[i], t.aux[i])
        return
    start = t.args_start[i]
    count = t.args_start[i + 1] - start
    if op == OP_DOT:
        half = count // 2
        mg_tape_dot_back(val, grad, t.args + start, t.args + start + half, half, g)
        if t.a[i] >= 0:
            grad[t.a[i]] += g
    else:
        y = g if op == OP_SUM else g / count
        for k in range(start, start + count):
            grad[t.args[k]] += y


cdef enum:
    SYNC_LOAD = 0           # the tape's value <- the node's data (a leaf)
    SYNC_STORE_DATA = 1     # the node's data <- the tape's value
    SYNC_STORE_GRAD = 2     # the node's grad <- the tape's gradient (a leaf accumulates)


cdef inline void _node_sync(PyObject* node, int what, double* x, bint leaf) noexcept:
    """The one place replay touches node fields after _tape_build: copies a
    node's data or grad to or from its place x on the tape (a leaf's grad
    accumulates).  Nodes are read through borrowed pointers (the Graph owns
    them): no reference counting."""
    if what == SYNC_LOAD:
        x[0] = (<Value>node).data
    elif what == SYNC_STORE_DATA:
        (<Value>node).data = x[0]
    elif leaf:
        (<Value>node).grad = (<Value>node).grad + x[0]
    else:
        (<Value>node).grad = x[0]


cdef void _tape_forward(Tape* t, PyObject** nodes) noexcept:
    cdef Py_ssize_t i = 0, j
    cdef Tape tape = t[0]
    cdef const TapeRow* r
    while i < tape.n:
        if tape.row[i]:
            r = &tape.rows[tape.row[i] - 1]
            _tape_row(tape, r, NULL)
            for j in range(i, i + r.m):
                _node_sync(nodes[j], SYNC_STORE_DATA, &tape.val[j], False)
            i += r.m
            continue
        if tape.op[i] == OP_LEAF:
            _node_sync(nodes[i], SYNC_LOAD, &tape.val[i], True)
        else:
            _tape_eval(tape, i)
            _node_sync(nodes[i], SYNC_STORE_DATA, &tape.val[i], False)
        i += 1


cdef void _tape_backward(Tape* t, PyObject** nodes, double seed) noexcept:
    cdef Py_ssize_t i, j
    cdef Tape tape = t[0]
    cdef const TapeRow* r
    # Derivatives are taken at the values of the last forward() (the tape
    # keeps them); every gradient, a leaf's too, starts at zero: a leaf's pass
    # total is added to what it held at the end, as run_backward does.
    # A node's gradient is complete when the reverse sweep reaches it (every
    # node it feeds comes later in the order), so it is stored there.
    memset(tape.grad, 0, tape.n * sizeof(double))
    tape.grad[tape.n - 1] = seed
    i = tape.n - 1
    while i >= 0:
        if tape.row[i]:
            r = &tape.rows[tape.row[i] - 1]
            if tape.requires_grad[i]:
                _tape_row(tape, r, tape.grad)
                for j in range(r.first, i + 1):
                    _node_sync(nodes[j], SYNC_STORE_GRAD, &tape.grad[j], False)
            i = r.first - 1
            continue
        if tape.requires_grad[i]:
            if tape.op[i] != OP_LEAF:
                _tape_pass_back(tape, i, tape.grad)
            _node_sync(nodes[i], SYNC_STORE_GRAD, &tape.grad[i], tape.op[i] == OP_LEAF)
        i -= 1


# Batched replay: the same per-sample graph run on B samples at once

# Graph(root, inputs=[...]) marks the leaves that vary per sample.  A node
# that depends on an input has B values ("lanes"), side by side in one
# buffer (node slot s: lanes[s * B : (s + 1) * B]); a node that does not (a
# parameter, what only parameters feed) has one value, computed once, that
# every lane reads.  The lane loops are csrc/mg_lanes.h's (the op table's
# rows over lanes).  Gradients flow from lane nodes to lane nodes and to
# nodes without lanes, never back: so the backward runs the lane sweep
# first, each lane on its own (a thread owns a range of lanes), sending the
# shared nodes it reads their share summed per chunk of 128 lanes; the
# chunks are then added in order, and a scalar sweep finishes the shared
# nodes.
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcpy, strcmp
from cpython.buffer cimport (PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release,
                             PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE)

cdef extern from "mg_lanes.h":
    ctypedef struct mg_lane_graph:
        ptrdiff_t B
        const unsigned short* op
        const int* a
        const int* b
        const int* args_start
        const int* args
        const double* aux
        const double* val
        const unsigned char* rg
        const int* vslot
        const int* gslot
        const int* pslot
        const unsigned char* first_ab
        const unsigned char* first_args
        const int* order
        const int* run
        void* links
        const int* layer
        const unsigned char* layer_chain
        ptrdiff_t n_order
        int store_all
        ptrdiff_t n_chunks
        int root
        double* lanes
        double* grads
        double* partials
    ctypedef void (*mg_lane_task)(const mg_lane_graph* g, ptrdiff_t l0, ptrdiff_t l1) noexcept nogil
    void mg_lanes_forward(const mg_lane_graph* g, ptrdiff_t l0, ptrdiff_t l1) noexcept nogil
    void mg_lanes_backward(const mg_lane_graph* g, ptrdiff_t l0, ptrdiff_t l1) noexcept nogil
    void mg_lanes_run(mg_lane_task task, const mg_lane_graph* g, int threads) noexcept nogil
    void mg_lanes_plan_links(const mg_lane_graph* g) noexcept nogil
    double mg_lanes_total(const double* p, ptrdiff_t n) noexcept nogil
    ptrdiff_t mg_shared_forward(const mg_lane_graph* g, double* val, const int* nodes,
                                ptrdiff_t k, ptrdiff_t n) noexcept nogil
    ptrdiff_t mg_shared_backward(const mg_lane_graph* g, const double* val, double* grad,
                                 const int* nodes, ptrdiff_t k) noexcept nogil
    ctypedef struct mg_lane_link:
        pass
    int MG_LANES_MAX_THREADS
    int MG_LANE_CHUNK
    int MG_LANE_CHAIN_MAX
    enum: MG_LANE_LAYER_MAX
    int mg_lanes_layers_apply() noexcept nogil
    void mg_lanes_layer_starts(const int* run, const unsigned char* layer_chain, ptrdiff_t k,
                               int count, ptrdiff_t* starts) noexcept nogil


ctypedef struct Lanes:
    mg_lane_graph g         # what the lane loops read: the tape's arrays and those below
    unsigned char* rg       # the tape's requires_grad, the inputs taken as constants
    unsigned char* shared   # no lanes: computed once (parameters, what only they feed)
    unsigned char* shared_rg    # shared and taking a gradient: written back after backward
    int* shared_leaves      # the shared leaves' positions, in forward order
    Py_ssize_t n_shared_leaves
    int* shared_ops         # the other shared nodes' positions, in forward order
    Py_ssize_t n_shared_ops
    int* grad_order         # the positions of the shared nodes taking a gradient, in forward order
    Py_ssize_t n_grad
    unsigned char* first    # per edge of the sweep: the operand's first gradient (2n + n_args)
    int* vslot
    int* gslot
    int* pslot
    int* order
    int* run                # per order index: a multiply-add chain of n pairs starts (n), ends (-n)
    unsigned char* inner    # a chain's inner node: its lanes are stored only on demand
    int* layer              # per order index: at a layer's last chain's end, its chain count
    unsigned char* layer_chain  # per order index: 1 at the end of a layer's chain
    int* boundary           # the shared nodes lane nodes send gradients to, by pslot
    Py_ssize_t n_boundary
    int* inputs             # the inputs' positions, in the order of inputs=[...]
    Py_ssize_t n_inputs
    Py_ssize_t n_vslots
    Py_ssize_t n_gslots


cdef void _lanes_free(Lanes* L) noexcept:
    if L == NULL:
        return
    free(L.rg)
    free(L.shared)
    free(L.shared_rg)
    free(L.shared_leaves)
    free(L.shared_ops)
    free(L.grad_order)
    free(L.first)
    free(L.vslot)
    free(L.gslot)
    free(L.pslot)
    free(L.order)
    free(L.run)
    free(L.g.links)
    free(L.inner)
    free(L.layer)
    free(L.layer_chain)
    free(L.boundary)
    free(L.inputs)
    free(L.g.lanes)
    free(L.g.grads)
    free(L.g.partials)
    free(L)


cdef Py_ssize_t _sweep_edges(Tape* t, Py_ssize_t i, int* parent, Py_ssize_t* flag) noexcept:
    """Node i's operands in the order the lanes' reverse sweep sends them
    their gradients (mg_lanes_backward), with where each edge's
    "first" flag lives (2i, 2i + 1: operands a, b; 2n + k: args[k])."""
    cdef Py_ssize_t e = 0, k, start = t.args_start[i], count = t.args_start[i + 1] - start
    cdef Py_ssize_t half = count // 2
    if mg_op_operands(t.op[i]):
        parent[0], flag[0] = t.a[i], 2 * i
        if mg_op_operands(t.op[i]) == 2:
            parent[1], flag[1] = t.b[i], 2 * i + 1
            return 2
        return 1
    if t.op[i] == OP_DOT:
        for k in range(start, start + half):
            parent[e], flag[e] = t.args[k], 2 * t.n + k
            parent[e + 1], flag[e + 1] = t.args[k + half], 2 * t.n + k + half
            e += 2
        if t.a[i] >= 0:
            parent[e], flag[e] = t.a[i], 2 * i
            e += 1
        return e
    for k in range(start, start + count):
        parent[e], flag[e] = t.args[k], 2 * t.n + k
        e += 1
    return e


cdef Lanes* _lanes_build(Tape* t, list input_positions) except NULL:
    """Which nodes have lanes and where their lanes live, from the tape
    alone.  The inputs are constants for the gradient (no gradient lanes
    are kept for them), so requires_grad is recomputed."""
    cdef Py_ssize_t n = t.n, n_args = t.args_start[t.n]
    cdef unsigned char* lane = <unsigned char*>calloc(n, 1)
    cdef int* scratch = <int*>malloc((n + n_args + 2) * sizeof(int))
    cdef Py_ssize_t* flag = <Py_ssize_t*>malloc((n_args + 2) * sizeof(Py_ssize_t))
    cdef Lanes* L = <Lanes*>calloc(1, sizeof(Lanes))
    try:
        if L == NULL or lane == NULL or scratch == NULL or flag == NULL:
            raise MemoryError()
        L.rg = <unsigned char*>calloc(n, 1)
        L.shared = <unsigned char*>calloc(n, 1)
        L.shared_rg = <unsigned char*>calloc(n, 1)
        L.first = <unsigned char*>calloc(2 * n + n_args, 1)
        L.vslot = <int*>malloc(n * sizeof(int))
        L.gslot = <int*>malloc(n * sizeof(int))
        L.pslot = <int*>malloc(n * sizeof(int))
        L.order = <int*>malloc(n * sizeof(int))
        L.run = <int*>calloc(n, sizeof(int))
        L.shared_leaves = <int*>malloc(n * sizeof(int))
        L.shared_ops = <int*>malloc(n * sizeof(int))
        L.grad_order = <int*>malloc(n * sizeof(int))
        L.inner = <unsigned char*>calloc(n, 1)
        L.layer = <int*>calloc(n, sizeof(int))
        L.layer_chain = <unsigned char*>calloc(n, 1)
        L.boundary = <int*>malloc(n * sizeof(int))
        L.inputs = <int*>malloc(max(len(input_positions), 1) * sizeof(int))
        if (L.rg == NULL or L.shared == NULL or L.shared_rg == NULL or L.first == NULL
                or L.vslot == NULL or L.gslot == NULL or L.pslot == NULL or L.order == NULL
                or L.run == NULL or L.inner == NULL or L.layer == NULL or L.layer_chain == NULL
                or L.boundary == NULL or L.inputs == NULL
                or L.shared_leaves == NULL or L.shared_ops == NULL or L.grad_order == NULL):
            raise MemoryError()
        _lanes_mark(L, t, input_positions, lane, scratch, flag)
        _lanes_plan_chains(L, t, scratch, flag)
        _lanes_plan_layers(L, t, scratch, flag)
        _lanes_plan_gradients(L, t, lane, scratch, scratch + n_args + 2, flag)
    except BaseException:
        _lanes_free(L)
        raise
    finally:
        free(lane)
        free(scratch)
        free(flag)
    L.g.op = t.op
    L.g.a = t.a
    L.g.b = t.b
    L.g.args_start = t.args_start
    L.g.args = t.args
    L.g.aux = t.aux
    L.g.val = t.val
    L.g.rg = L.rg
    L.g.vslot = L.vslot
    L.g.gslot = L.gslot
    L.g.pslot = L.pslot
    L.g.first_ab = L.first
    L.g.first_args = L.first + 2 * n
    L.g.order = L.order
    L.g.run = L.run
    L.g.layer = L.layer
    L.g.layer_chain = L.layer_chain
    L.g.store_all = 0
    L.g.n_order = L.n_vslots
    L.g.root = n - 1
    L.g.links = calloc(max(L.n_vslots, 1), sizeof(mg_lane_link))
    if L.g.links == NULL:
        _lanes_free(L)
        raise MemoryError()
    mg_lanes_plan_links(&L.g)
    return L


cdef int _lanes_mark(Lanes* L, Tape* t, list input_positions, unsigned char* lane,
                     int* parent, Py_ssize_t* flag) except -1:
    """Which nodes depend on an input (lane), which take a gradient (rg),
    and the value slots of the lane nodes."""
    cdef Py_ssize_t i, j, e
    cdef bint any_lane, any_rg
    for k, i in enumerate(input_positions):
        L.inputs[k] = i
        lane[i] = 1
    L.n_inputs = len(input_positions)
    for i in range(t.n):
        L.vslot[i] = L.gslot[i] = L.pslot[i] = -1
        if t.op[i] == OP_LEAF:
            L.rg[i] = t.requires_grad[i] and not lane[i]
        else:
            any_lane = any_rg = False
            e = _sweep_edges(t, i, parent, flag)
            for j in range(e):
                any_lane = any_lane or lane[parent[j]]
                any_rg = any_rg or L.rg[parent[j]]
            lane[i] = any_lane
            L.rg[i] = t.requires_grad[i] and any_rg
        if lane[i]:
            L.vslot[i] = L.n_vslots
            L.order[L.n_vslots] = i
            L.n_vslots += 1
        L.shared[i] = not lane[i]
        L.shared_rg[i] = L.shared[i] and L.rg[i]
        if L.shared[i] and t.op[i] == OP_LEAF:
            L.shared_leaves[L.n_shared_leaves] = i
            L.n_shared_leaves += 1
        elif L.shared[i]:
            L.shared_ops[L.n_shared_ops] = i
            L.n_shared_ops += 1
        if L.shared_rg[i]:
            L.grad_order[L.n_grad] = i
            L.n_grad += 1
    return 0


cdef Py_ssize_t _plan_node_gradient(Lanes* L, Tape* t, const unsigned char* lane, int* parent,
                                    int* free_slots, Py_ssize_t* flag, Py_ssize_t n_free,
                                    int i, bint give_back) noexcept:
    """Node i passes its gradient on, on paper, if one reaches it: a lane
    operand takes a slot at its first gradient (that edge's flag says
    "set"), a shared operand a row of chunk partials (pslot); then i gives
    its slot back (give_back) or keeps it.  Returns how many slots are free."""
    cdef Py_ssize_t j, e
    cdef int p
    if not L.rg[i] or L.gslot[i] < 0:
        return n_free
    e = _sweep_edges(t, i, parent, flag)
    for j in range(e):
        p = parent[j]
        if not L.rg[p]:
            continue
        if lane[p]:
            if L.gslot[p] < 0:
                L.first[flag[j]] = 1
                if n_free:
                    n_free -= 1
                    L.gslot[p] = free_slots[n_free]
                else:
                    L.gslot[p] = L.n_gslots
                    L.n_gslots += 1
        elif L.pslot[p] < 0:
            L.pslot[p] = L.n_boundary
            L.boundary[L.n_boundary] = p
            L.n_boundary += 1
    if give_back:
        free_slots[n_free] = L.gslot[i]
        n_free += 1
    return n_free


cdef int _lanes_plan_gradients(Lanes* L, Tape* t, const unsigned char* lane, int* parent,
                               int* free_slots, Py_ssize_t* flag) except -1:
    """The reverse sweep, run on paper, in the order mg_lanes_backward runs
    it: a lane node takes a gradient slot at the first gradient it receives
    and gives it back once it has passed its gradient on.  The last S of a
    multiply-add chain keeps its slot until the chain's first node (the
    chain's step reads those lanes while it sends the chain's operands
    their gradients, so none of them may take it).  A layer runs the other
    nodes among its chains first, then its chains, and every chain's last S
    keeps its slot until the layer is done."""
    cdef Py_ssize_t k, kk, n_free = 0
    cdef ptrdiff_t starts[MG_LANE_LAYER_MAX]
    cdef int c, count, pairs
    cdef int root = t.n - 1
    if L.rg[root]:
        L.gslot[root] = 0
        L.n_gslots = 1
    k = L.n_vslots - 1
    while k >= 0:
        count = L.layer[k]
        if count > 0:
            pairs = -L.run[k]
            mg_lanes_layer_starts(L.run, L.layer_chain, k, count, starts)
            kk = k
            while kk >= starts[0]:
                if L.layer_chain[kk]:
                    kk += 2 * L.run[kk]
                else:
                    n_free = _plan_chain_gradients(L, t, lane, parent, free_slots, flag, n_free, kk)
                    kk += 2 * L.run[kk] if L.run[kk] < 0 else -1
            for c in range(count - 1, -1, -1):
                for kk in range(starts[c] + 2 * pairs - 1, starts[c] - 1, -1):
                    n_free = _plan_node_gradient(L, t, lane, parent, free_slots, flag, n_free,
                                                 L.order[kk], kk != starts[c] + 2 * pairs - 1)
            for c in range(count):
                free_slots[n_free] = L.gslot[L.order[starts[c] + 2 * pairs - 1]]
                n_free += 1
            k = starts[0] - 1
            continue
        n_free = _plan_chain_gradients(L, t, lane, parent, free_slots, flag, n_free, k)
        k += 2 * L.run[k] if L.run[k] < 0 else -1
    return 0


cdef Py_ssize_t _plan_chain_gradients(Lanes* L, Tape* t, const unsigned char* lane, int* parent,
                                      int* free_slots, Py_ssize_t* flag, Py_ssize_t n_free,
                                      Py_ssize_t k) noexcept:
    """The plan's step at order index k: a node, or, at a chain's end, the
    whole chain, its last S keeping its slot until the chain is done."""
    cdef Py_ssize_t kk, k0 = k + 2 * L.run[k] + 1 if L.run[k] < 0 else k
    for kk in range(k, k0 - 1, -1):
        n_free = _plan_node_gradient(L, t, lane, parent, free_slots, flag, n_free, L.order[kk],
                                     kk != k or L.run[k] >= 0)
    if L.run[k] < 0 and L.rg[L.order[k]] and L.gslot[L.order[k]] >= 0:
        free_slots[n_free] = L.gslot[L.order[k]]
        n_free += 1
    return n_free


cdef inline int _chain_head(Lanes* L, Tape* t, Py_ssize_t k) noexcept:
    """The head (S_(-1)) of the chain whose M_0 is at order index k."""
    cdef int m = L.order[k], s = L.order[k + 1]
    return t.b[s] if t.a[s] == m else t.a[s]


cdef inline int _pair_x(Lanes* L, Tape* t, int m) noexcept:
    """A chain pair's operand with lanes (x of M = w * x)."""
    return t.a[m] if L.vslot[t.a[m]] >= 0 else t.b[m]


cdef bint _layer_joins(Lanes* L, Tape* t, const unsigned char* reached, Py_ssize_t k0,
                       Py_ssize_t k, Py_ssize_t n) noexcept:
    """Whether the chain at order index k can be in the layer the chain at
    k0 starts: n pairs reading the same x in the same order with w on the
    same side, a bias without lanes, and a gradient reaching its last S."""
    cdef Py_ssize_t j
    cdef int m, m0
    if L.run[k] != n or not reached[L.order[k + 2 * n - 1]] or L.vslot[_chain_head(L, t, k)] >= 0:
        return False
    for j in range(n):
        m, m0 = L.order[k + 2 * j], L.order[k0 + 2 * j]
        if (L.vslot[t.a[m]] < 0) != (L.vslot[t.a[m0]] < 0) or _pair_x(L, t, m) != _pair_x(L, t, m0):
            return False
    return True


cdef list _chain_parameters(Lanes* L, Tape* t, Py_ssize_t k, Py_ssize_t n):
    """The bias and weights of the chain at order index k."""
    cdef Py_ssize_t j
    cdef int m
    out = [_chain_head(L, t, k)]
    for j in range(n):
        m = L.order[k + 2 * j]
        out.append(t.b[m] if _pair_x(L, t, m) == t.a[m] else t.a[m])
    return out


cdef int _lanes_plan_layers(Lanes* L, Tape* t, int* parent, Py_ssize_t* flag) except -1:
    """Marks the layers (mg_lanes.h): 2 to MG_LANE_LAYER_MAX chains that read
    the same x, distinct and computed before the first chain, each with its
    own parameters, where no other node among them reads one of those x or
    parameters (so those nodes may pass their gradients on first), and
    whose last S a gradient reaches."""
    cdef Py_ssize_t i, j, e
    cdef unsigned char* reached
    if not mg_lanes_layers_apply():
        return 0
    # which nodes a gradient reaches (where the gradient plan will give a slot)
    reached = <unsigned char*>calloc(t.n, 1)
    if reached == NULL:
        raise MemoryError()
    try:
        reached[t.n - 1] = L.rg[t.n - 1]
        for i in range(t.n - 1, -1, -1):
            if reached[i]:
                e = _sweep_edges(t, i, parent, flag)
                for j in range(e):
                    reached[parent[j]] = reached[parent[j]] or L.rg[parent[j]]
        _plan_layers(L, t, reached, parent, flag)
    finally:
        free(reached)
    return 0


cdef int _plan_layers(Lanes* L, Tape* t, const unsigned char* reached, int* parent,
                      Py_ssize_t* flag) except -1:
    """_lanes_plan_layers' search, given which nodes a gradient reaches."""
    cdef Py_ssize_t k = 0, scan, n, j, e, last_end, kk, item_end
    cdef list members
    cdef set xs, params, read
    while k < L.n_vslots:
        n = L.run[k]
        if n <= 0:
            k += 1
            continue
        xs = {_pair_x(L, t, L.order[k + 2 * j]) for j in range(n)}
        if (not _layer_joins(L, t, reached, k, k, n) or len(xs) != n
                or any(L.vslot[x] >= k for x in xs)):
            k += 2 * n
            continue
        params = set(_chain_parameters(L, t, k, n))
        if len(params) != n + 1:
            k += 2 * n
            continue
        members, read = [k], set()
        last_end = scan = k + 2 * n
        # (a few nodes apart at most: a neuron's nonlinearity and what reads it)
        while scan < L.n_vslots and len(members) < MG_LANE_LAYER_MAX and scan - last_end < 2 * n + 64:
            if _layer_joins(L, t, reached, k, scan, n):
                chain = _chain_parameters(L, t, scan, n)
                if len(set(chain)) == n + 1 and params.isdisjoint(chain) and read.isdisjoint(chain):
                    params.update(chain)
                    members.append(scan)
                    scan += 2 * n
                    last_end = scan
                    continue
            # another node (or chain) among the layer's: it must not read
            # the layer's x or parameters
            item_end = scan + 2 * L.run[scan] if L.run[scan] > 0 else scan + 1
            for kk in range(scan, item_end):
                e = _sweep_edges(t, L.order[kk], parent, flag)
                read.update([parent[j] for j in range(e)])
            if not read.isdisjoint(xs) or not read.isdisjoint(params):
                break
            scan = item_end
        if len(members) >= 2:
            L.layer[last_end - 1] = len(members)
            for kk in members:
                L.layer_chain[kk + 2 * n - 1] = 1
            k = last_end
        else:
            k += 2 * n
    return 0


cdef int _lanes_plan_chains(Lanes* L, Tape* t, int* parent, Py_ssize_t* flag) except -1:
    """Marks the multiply-add chains of the lane nodes (mg_lanes.h): runs of
    pairs M = w * x (w without lanes, x with lanes), S = acc + M, adjacent in
    the sweep order, where M and every S but the last are read by their
    successor alone.  The reverse sweep then sends every edge leaving the
    chain in the order the node-by-node sweep does, so the gradient plan
    stands as it is."""
    cdef Py_ssize_t i, j, e, k, k0, pairs
    cdef int m, s, acc
    cdef int* uses = <int*>calloc(t.n, sizeof(int))
    if uses == NULL:
        raise MemoryError()
    try:
        for i in range(t.n):
            if t.op[i] != OP_LEAF:
                e = _sweep_edges(t, i, parent, flag)
                for j in range(e):
                    uses[parent[j]] += 1
        k = 0
        while k + 1 < L.n_vslots:
            k0, pairs = k, 0
            while k + 1 < L.n_vslots and pairs < MG_LANE_CHAIN_MAX:
                m, s = L.order[k], L.order[k + 1]
                if (t.op[m] != OP_MUL or t.op[s] != OP_ADD or uses[m] != 1
                        or not t.requires_grad[m] or not t.requires_grad[s]
                        or (L.vslot[t.a[m]] < 0) == (L.vslot[t.b[m]] < 0)
                        or (t.a[s] == m) == (t.b[s] == m)):
                    break
                acc = t.b[s] if t.a[s] == m else t.a[s]
                if pairs > 0 and (acc != L.order[k - 1] or uses[acc] != 1):
                    break
                pairs += 1
                k += 2
            if pairs == 0:
                k += 1
                continue
            # the head must not be one of the chain's x (its gradient would
            # be sent in another order): cut the chain before that pair
            acc = _chain_head(L, t, k0)
            for j in range(pairs):
                if _pair_x(L, t, L.order[k0 + 2 * j]) == acc:
                    pairs = j
                    break
            if pairs == 0:
                k = k0 + 1
                continue
            k = k0 + 2 * pairs
            L.run[k0] = pairs
            L.run[k - 1] = -pairs
            for j in range(k0, k - 1):
                L.inner[L.order[j]] = 1
    finally:
        free(uses)
    return 0


cdef int _lanes_reserve(Lanes* L, Py_ssize_t B) except -1:
    """Lane buffers for B samples."""
    cdef Py_ssize_t n_chunks = (B + MG_LANE_CHUNK - 1) // MG_LANE_CHUNK
    if B == L.g.B:
        return 0
    free(L.g.lanes)
    free(L.g.grads)
    free(L.g.partials)
    L.g.B = 0
    L.g.lanes = <double*>malloc(max(L.n_vslots * B, 1) * sizeof(double))
    L.g.grads = <double*>malloc(max(L.n_gslots * B, 1) * sizeof(double))
    L.g.partials = <double*>malloc(max(L.n_boundary * n_chunks, 1) * sizeof(double))
    if L.g.lanes == NULL or L.g.grads == NULL or L.g.partials == NULL:
        raise MemoryError()
    L.g.B = B
    L.g.n_chunks = n_chunks
    return 0


cdef object _np_empty = None


cdef Py_ssize_t _column_length(object c):
    """B if c is a C-contiguous 1-d buffer of float64 numbers (a numpy
    column as forward() usually gets it), else -1.  The buffer protocol
    answers in a few pointer reads, where numpy's attributes take Python
    calls."""
    cdef Py_buffer view
    cdef Py_ssize_t B = -1
    if not PyObject_CheckBuffer(c):
        return -1
    try:
        PyObject_GetBuffer(c, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    except (BufferError, ValueError, TypeError):     # not contiguous, not numbers
        return -1
    if view.ndim == 1 and view.itemsize == 8 and view.format != NULL \
            and strcmp(view.format, b"d") == 0:
        B = view.shape[0]
    PyBuffer_Release(&view)
    return B


cdef int _read_column(object c, double* dst, Py_ssize_t n) except -1:
    """Copies the n numbers of column c (one _column_length accepted) to dst."""
    cdef Py_buffer view
    PyObject_GetBuffer(c, &view, PyBUF_C_CONTIGUOUS)
    try:
        if view.len != n * <Py_ssize_t>sizeof(double):
            raise ValueError("Graph.forward(columns): a column changed length during the call")
        memcpy(dst, view.buf, n * sizeof(double))
    finally:
        PyBuffer_Release(&view)
    return 0


cdef object _new_column(const double* src, Py_ssize_t n):
    """A new float64 numpy array of the n numbers at src."""
    global _np_empty
    cdef Py_buffer view
    if _np_empty is None:
        import numpy
        _np_empty = numpy.empty
    out = _np_empty(n)
    PyObject_GetBuffer(out, &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
    memcpy(view.buf, src, n * sizeof(double))
    PyBuffer_Release(&view)
    return out


def _as_columns(tuple columns, Py_ssize_t n_inputs):
    """forward(*columns) as one contiguous float64 array of B numbers per
    input, or a TypeError/ValueError naming the argument."""
    import numpy
    cdef Py_ssize_t B = -1, b
    for c in columns:           # the usual call: float64 columns as they are
        b = _column_length(c)
        if b < 0 or (B >= 0 and b != B):
            break
        B = b
    else:
        if len(columns) == n_inputs and B >= 1:
            return list(columns)
    arrays = []
    for k, c in enumerate(columns):
        try:
            arrays.append(numpy.asarray(c, dtype=numpy.float64))
        except (TypeError, ValueError) as e:
            raise TypeError(f"Graph.forward(columns[{k}]): expected numbers, "
                            f"got {type(c).__name__} ({e})") from None
    if len(arrays) == 1 and arrays[0].ndim == 2:
        if arrays[0].shape[1] != n_inputs:
            raise ValueError(
                f"Graph.forward(columns): a 2-d array must have shape (B, {n_inputs}), one "
                f"column per input; got shape {arrays[0].shape}")
        arrays = list(arrays[0].T)
    elif len(arrays) != n_inputs:
        raise TypeError(
            f"Graph.forward(columns): the graph has {n_inputs} input(s), so forward takes "
            f"{n_inputs} column(s) of B numbers or one (B, {n_inputs}) array; got "
            f"{len(arrays)} argument(s)")
    for k, c in enumerate(arrays):
        if c.ndim != 1:
            raise ValueError(f"Graph.forward(columns[{k}]): a column is 1-d (B numbers), "
                             f"got shape {c.shape}")
        if c.shape[0] != arrays[0].shape[0]:
            raise ValueError(
                f"Graph.forward(columns[{k}]): every column has the same length B; "
                f"columns[0] has {arrays[0].shape[0]}, columns[{k}] has {c.shape[0]}")
    if arrays[0].shape[0] < 1:
        raise ValueError("Graph.forward(columns): B, the number of samples, must be at least 1")
    return [numpy.ascontiguousarray(c) for c in arrays]


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

    Batched replay: ``Graph(root, inputs=[x1, x2, ...])`` records a graph
    built for one sample and marks the leaf Values that vary per sample.
    ``forward(col1, col2, ...)`` (one column of B numbers per input, or one
    (B, n_inputs) array) then computes every node for the B samples at once
    and returns the root's B values; ``backward(reduction="sum" | "mean")``
    adds the sum (or mean) over samples of d root / d p to each parameter's
    ``.grad``.  Nodes that depend on an input keep B values ("lanes"), read
    them with ``value(node)``; nodes that do not (parameters, an L2 term)
    are computed once.  Each sample's values equal the unbatched replay of
    that sample bit for bit (the same formulas in the same order); a
    parameter's gradient is a sum over samples in another order than
    adding the samples' gradients one by one, so it agrees to rounding
    (about 1e-15 relative), not bit for bit.  ``threads=n`` splits the samples across up to n
    native threads, in whole chunks of 64 samples (the GIL is released);
    a thread computes whole samples, a sum over samples adds fixed chunks
    in chunk order, so the results do not depend on n.  Nodes with lanes
    keep their ``.data`` and ``.grad`` untouched (use ``value(node)``); the
    inputs get no ``.grad``; the other nodes get their value and gradient
    as with an unbatched replay.
    """
    cdef tuple _nodes               # owns the recorded nodes, root last
    cdef PyObject** _order          # the same nodes, borrowed, for the C loops
    cdef Py_ssize_t _n
    cdef readonly Node root
    cdef list _tensor_leaves        # (leaf, shape) pairs checked before forward
    cdef Tape* _tape                # flat program of a graph of Values only, or NULL
    cdef Lanes* _lanes              # batched graphs (inputs=[...]): the lane layout, or NULL
    cdef tuple _inputs
    cdef int _threads
    cdef Py_ssize_t _batch          # B of the last batched forward, 0 before
    cdef bint _busy                 # a batched pass runs (the GIL released)
    cdef bint _complete             # every lane node's lanes are stored (else the chains' inner ones wait)
    cdef dict _position             # id(node) -> position, made on first use

    def __cinit__(self):
        self._order = NULL
        self._tape = NULL
        self._lanes = NULL

    def __init__(self, root, inputs=None, *, threads=1):
        cdef Py_ssize_t i
        cdef Node node
        if not isinstance(root, Node):
            raise TypeError(f"Graph(root) takes a Value or Tensor, got {type(root).__name__}")
        if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
            raise TypeError(f"Graph(threads=...) takes an int, got {type(threads).__name__}")
        if not 1 <= threads <= MG_LANES_MAX_THREADS:
            raise ValueError(f"Graph(threads=...) must be between 1 and {MG_LANES_MAX_THREADS}, "
                             f"got {threads}")
        if inputs is None and threads != 1:
            raise ValueError("Graph(threads=...) splits the samples of a batched graph; "
                             "it needs inputs=[...]")
        if inputs is not None:
            if isinstance(inputs, Node):
                raise TypeError("Graph(inputs=...) takes a list of leaf Values, got a single "
                                f"{type(inputs).__name__}: write inputs=[x]")
            try:
                inputs = tuple(inputs)
            except TypeError:
                raise TypeError("Graph(inputs=...) takes a list of leaf Values, "
                                f"got {type(inputs).__name__}") from None
            if not inputs:
                raise ValueError("Graph(inputs=[]): name at least one input, or leave inputs "
                                 "out for an unbatched graph")
            for k, x in enumerate(inputs):
                if not isinstance(x, Value):
                    raise TypeError(f"Graph(inputs[{k}]): inputs are leaf Values, "
                                    f"got {type(x).__name__}")
        self._threads = threads
        self.root = <Node>root
        self._nodes = tuple(_replay_order(self.root, inputs is not None))
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
        if inputs is not None:
            self._lanes = _lanes_build(self._tape, self._input_positions(inputs))
            self._inputs = inputs

    cdef list _input_positions(self, tuple inputs):
        """The tape positions of inputs=[...], checked."""
        cdef list positions = []
        cdef dict seen = {}
        if self._tape == NULL:
            raise ValueError("Graph(inputs=...): batched replay needs a graph of Values only "
                             "(this one has tensor nodes or tensor elements)")
        position = self._positions()
        for k, x in enumerate(inputs):
            i = position.get(id(x), -1)
            if i < 0:
                raise ValueError(f"Graph(inputs[{k}]): {x!r} is not a node of the graph "
                                 "(the root does not depend on it)")
            if self._tape.op[i] != OP_LEAF:
                raise ValueError(f"Graph(inputs[{k}]): {x!r} is computed by the graph, not a "
                                 "leaf; inputs are the leaves that vary per sample")
            if i in seen:
                raise ValueError(f"Graph(inputs[{k}]): the same Value as inputs[{seen[i]}]; "
                                 "each input is named once")
            seen[i] = k
            positions.append(i)
        return positions

    cdef dict _positions(self):
        if self._position is None:
            self._position = {id(node): i for i, node in enumerate(self._nodes)}
        return self._position

    def __dealloc__(self):
        free(self._order)
        _tape_free(self._tape)
        _lanes_free(self._lanes)

    def __len__(self):
        return self._n

    def __repr__(self):
        batched = f", {len(self._inputs)} inputs" if self._lanes != NULL else ""
        return (f"Graph({self._n} nodes, {len(self.leaves)} leaves{batched}, "
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
        """The leaves that take a gradient (the inputs of a batched graph excepted)."""
        inputs = self._inputs or ()
        return [n for n in self._nodes if (<Node>n).op == OP_LEAF and (<Node>n).requires_grad
                and not any(n is x for x in inputs)]

    @property
    def _dot_steps(self):
        """The tape's dots (for tests): (weight step, input step) each where
        it found the operands in runs, else (0, 0)."""
        cdef Tape* t = self._tape
        cdef Py_ssize_t i, k
        if t == NULL:
            return []
        steps = {}
        for k in range(t.n_rows):
            for i in range(t.rows[k].first, t.rows[k].first + t.rows[k].m):
                steps[i] = (t.rows[k].w_step, t.rows[k].x_step)
        return [steps.get(i, (0, 0)) for i in range(t.n) if t.op[i] == OP_DOT]

    @property
    def _rows(self):
        """The tape's rows of two nodes or more (for tests): (first node's
        op, count) each."""
        cdef Tape* t = self._tape
        cdef Py_ssize_t k
        if t == NULL:
            return []
        return [((<Node>self._nodes[t.rows[k].first])._op, t.rows[k].m)
                for k in range(t.n_rows) if t.rows[k].m > 1]

    @property
    def _layers(self):
        """The batched plan's layers (for tests): (neurons, operands) each."""
        cdef Lanes* L = self._lanes
        cdef Py_ssize_t k
        if L == NULL:
            return []
        return [(L.layer[k], -L.run[k]) for k in range(L.n_vslots) if L.layer[k] > 0]

    @property
    def inputs(self):
        """The leaves that vary per sample (``inputs=[...]``), or None."""
        return None if self._inputs is None else list(self._inputs)

    def forward(self, *columns, reduction=None):
        """Recompute every node from the current values of the leaves; returns
        the root's new value (a float for a Value root).

        A batched graph takes the inputs' values, one column of B numbers per
        input (``forward(xs, ys)``) or one (B, n_inputs) array, and returns
        the root's B values (a float64 numpy array), or with
        ``reduction="sum"`` or ``"mean"`` their sum or mean as a float (added
        in one fixed order, the one a parameter's gradient is summed in: it
        agrees with numpy's sum to rounding).  An unbatched graph has one
        sample, for which sum and mean are the root's value."""
        cdef Py_ssize_t i
        cdef Node node
        if reduction is not None and reduction != "sum" and reduction != "mean":
            raise ValueError(f"Graph.forward(reduction=...) is None, 'sum' or 'mean', "
                             f"got {reduction!r}")
        if self._lanes != NULL:
            return self._forward_lanes(_as_columns(columns, self._lanes.n_inputs),
                                       0 if reduction is None else 1 if reduction == "sum" else 2)
        if columns:
            raise TypeError("Graph.forward() takes no columns: the graph has no inputs=[...]")
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

    def backward(self, grad=None, reduction="sum"):
        """Rerun the reverse sweep over the recorded order, with backward()'s
        semantics: intermediate gradients recomputed, leaves accumulate.

        A batched graph adds, to each parameter's ``.grad``, the sum over the
        samples of the last forward (``reduction="mean"``: the mean) of
        d root / d parameter; ``grad`` must then be None.  An unbatched graph
        has one sample, for which sum and mean agree."""
        cdef Py_ssize_t i
        cdef Node node
        cdef double g
        cdef _LeafStash stash
        if reduction != "sum" and reduction != "mean":
            raise ValueError(f"Graph.backward(reduction=...) is 'sum' or 'mean', got {reduction!r}")
        if self._lanes != NULL:
            if grad is not None:
                raise TypeError("Graph.backward(grad=...): a batched graph seeds every sample's "
                                "root with 1; scale the result instead")
            self._backward_lanes(reduction == "mean")
            return
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
            _sweep(self._order, self._n, None)
        finally:
            stash.restore()

    def step(self, *columns, reduction="sum"):
        """``forward(*columns)`` then ``backward(reduction=...)``; returns
        what forward returned."""
        if reduction != "sum" and reduction != "mean":
            raise ValueError(f"Graph.step(reduction=...) is 'sum' or 'mean', got {reduction!r}")
        out = self.forward(*columns)
        self.backward(reduction=reduction)
        return out

    def value(self, node):
        """``node``'s value at the last forward.  In a batched graph, a node
        that depends on an input has one value per sample (a float64 numpy
        array of length B, a copy); a node that does not has one value for
        all samples, returned as a float."""
        cdef Py_ssize_t i = self._positions().get(id(node), -1)
        cdef Py_ssize_t B = self._batch
        if i < 0:
            if not isinstance(node, Node):
                raise TypeError(f"Graph.value(node) takes a node of the graph, "
                                f"got {type(node).__name__}")
            raise ValueError("Graph.value(node): the node is not in the recorded graph")
        if self._lanes == NULL:
            return node.data
        if self._lanes.vslot[i] < 0:
            return self._tape.val[i]
        if B == 0:
            raise RuntimeError("Graph.value(node): no batched forward has run yet; call "
                               "forward(*columns) first")
        if self._lanes.inner[i] and not self._complete:
            self._store_inner()
        return self._lane_copy(self._lanes.vslot[i])

    cdef int _store_inner(self) except -1:
        """The lanes of the chains' inner nodes, which forward() leaves
        out: the same forward again (the same values), storing them."""
        cdef Lanes* L = self._lanes
        self._enter()
        try:
            L.g.store_all = 1
            with nogil:
                mg_lanes_run(mg_lanes_forward, &L.g, self._threads)
            self._complete = True
        finally:
            L.g.store_all = 0
            self._busy = False
        return 0

    cdef object _lane_copy(self, Py_ssize_t slot):
        return _new_column(self._lanes.g.lanes + slot * self._batch, self._batch)

    cdef object _forward_lanes(self, list columns, int reduce):
        """The batched forward; returns the root's lanes (reduce 0), their sum
        (1) or their mean (2)."""
        cdef Lanes* L = self._lanes
        cdef Tape* t = self._tape
        cdef Tape tape
        cdef Py_ssize_t B = _column_length(columns[0]), i, k
        cdef double total
        self._enter()
        try:
            _lanes_reserve(L, B)
            self._batch = 0
            tape = t[0]
            # the nodes without lanes: the leaves read, the others computed
            # (n-ary ones here, the rest in C), then stored into their nodes
            for k in range(L.n_shared_leaves):
                i = L.shared_leaves[k]
                _node_sync(self._order[i], SYNC_LOAD, &tape.val[i], True)
            k = mg_shared_forward(&L.g, tape.val, L.shared_ops, 0, L.n_shared_ops)
            while k < L.n_shared_ops:
                _tape_eval(tape, L.shared_ops[k])
                k = mg_shared_forward(&L.g, tape.val, L.shared_ops, k + 1, L.n_shared_ops)
            for k in range(L.n_shared_ops):
                i = L.shared_ops[k]
                _node_sync(self._order[i], SYNC_STORE_DATA, &tape.val[i], False)
            for k in range(L.n_inputs):
                _read_column(columns[k], L.g.lanes + L.vslot[L.inputs[k]] * B, B)
            with nogil:
                mg_lanes_run(mg_lanes_forward, &L.g, self._threads)
            self._batch = B
            self._complete = False
        finally:
            self._busy = False
        if _anomaly_mode:
            for i in range(t.n):
                if t.op[i] != OP_LEAF:
                    self._check_finite(i, self.value(<object>self._order[i]),
                                       "the batched forward pass of {node} produced {bad}")
        if reduce:
            total = mg_lanes_total(L.g.lanes + L.vslot[t.n - 1] * B, B)
            return total / B if reduce == 2 else total
        return self._lane_copy(L.vslot[t.n - 1])

    cdef int _check_finite(self, Py_ssize_t i, values, str message) except -1:
        """detect_anomaly for batched replay (checked after the pass): node
        i's value, or gradient, is finite in every sample."""
        import numpy
        bad = _non_finite(values)
        if bad is not None:
            text = message.format(node=_node_name(<Node>self._order[i]), bad=bad)
            if not isinstance(values, float):
                text += f" for sample {numpy.flatnonzero(~numpy.isfinite(values))[0]}"
            raise FloatingPointError("detect_anomaly: " + text)
        return 0

    cdef int _backward_lanes(self, bint mean) except -1:
        cdef Lanes* L = self._lanes
        cdef Tape* t = self._tape
        cdef Py_ssize_t B = self._batch, i, k, c
        cdef double total
        cdef Tape tape
        if B == 0:
            raise RuntimeError("Graph.backward(): no batched forward has run yet; call "
                               "forward(*columns) first")
        if not t.requires_grad[t.n - 1]:
            raise RuntimeError("Graph.backward(): the root does not require grad")
        if not L.rg[t.n - 1]:
            return 0            # no parameter below the root: nothing to add
        self._enter()
        try:
            memset(L.g.partials, 0, L.n_boundary * L.g.n_chunks * sizeof(double))
            with nogil:
                mg_lanes_run(mg_lanes_backward, &L.g, self._threads)
            for k in range(L.n_grad):       # only shared nodes pass gradients on below
                t.grad[L.grad_order[k]] = 0.0
            for k in range(L.n_boundary):
                total = 0.0
                for c in range(L.g.n_chunks):
                    total += L.g.partials[k * L.g.n_chunks + c]
                t.grad[L.boundary[k]] = total / B if mean else total
            tape = t[0]
            # the reverse sweep of the nodes without lanes (n-ary ones here,
            # the rest in C), then their gradients stored (a leaf accumulates)
            k = mg_shared_backward(&L.g, tape.val, tape.grad, L.grad_order, L.n_grad)
            while k > 0:
                _tape_pass_back(tape, L.grad_order[k - 1], tape.grad)
                k = mg_shared_backward(&L.g, tape.val, tape.grad, L.grad_order, k - 1)
            for k in range(L.n_grad):
                i = L.grad_order[k]
                _node_sync(self._order[i], SYNC_STORE_GRAD, &tape.grad[i], tape.op[i] == OP_LEAF)
        finally:
            self._busy = False
        if _anomaly_mode:
            for i in range(t.n):
                if L.shared_rg[i]:
                    self._check_finite(i, t.grad[i], "the batched backward pass produced "
                                                     "{bad} in the gradient of {node}")
        return 0

    cdef int _enter(self) except -1:
        if self._busy:
            raise RuntimeError("Graph: a batched forward or backward of this graph is running "
                               "in another thread; a graph runs one pass at a time")
        self._busy = True
        return 0

    def matches(self, root):
        """Whether a freshly built graph from ``root`` has the recorded
        structure: the same ops in the same order, wired the same way, with
        the same constants.  Use it to check that data-dependent code did not
        take another branch."""
        cdef list fresh = _replay_order(root, self._lanes != NULL)
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


cdef list _replay_order(Node root, bint batched):
    """The order a Graph records ``root``'s nodes in, each after its
    parents, ``root`` last.  Unbatched, where backward() enters the nodes
    with ``_wide_pass`` (breadth first, or in Kahn's order): the nodes it
    enters, reversed, after their parents that take no gradient (the leaves,
    and each node that takes none with what it is computed from), so that a
    replay adds up every gradient in backward()'s order.  The leaves come
    first: each dot's weights (the first half of its operands) and bias,
    dot by dot in forward order, so that a layer's neurons read their
    weights from evenly spaced runs of positions (the tape's rows, whatever
    order backward() meets the leaves in); then the other leaves as
    backward() meets them.  Otherwise, and
    ``batched``, ``topological_order(root)`` (backward()'s sort; the lanes
    run a dense layer's neurons as one step in that order, and a sample's
    values do not depend on the order)."""
    cdef PyObject** entered = NULL
    cdef Py_ssize_t n = -1, i, cap = 0
    cdef list leaves = [], held = [], nodes
    cdef set seen = set()
    cdef tuple args
    if not batched and isinstance(root, Value) and root.op != OP_LEAF:
        n = _wide_pass(<Value>root, 0.0, None, False, &entered, &cap)
        if n < 0:
            n = _wide_pass(<Value>root, 0.0, None, True, &entered, &cap)
    if n < 0:
        return topological_order(root)
    try:
        nodes = [<object>entered[i] for i in range(n - 1, -1, -1)]
    finally:
        _return_buffers(NULL, 0, entered, cap)
    for node in nodes:
        if (<Node>node).op == OP_DOT:
            args = operands(<Node>node)
            for c in args[:len(args) // 2] + ((<Node>node).a,):
                if c is not None and (<Node>c).op == OP_LEAF and id(c) not in seen:
                    seen.add(id(c))
                    leaves.append(c)
    for node in reversed(nodes):         # (as backward() meets them)
        for c in _slots(<Node>node):
            if id(c) not in seen and ((<Node>c).op == OP_LEAF or not (<Node>c).requires_grad):
                for d in ([c] if (<Node>c).op == OP_LEAF else topological_order(c)):
                    if id(d) not in seen:
                        seen.add(id(d))
                        (leaves if (<Node>d).op == OP_LEAF else held).append(d)
    return leaves + held + nodes

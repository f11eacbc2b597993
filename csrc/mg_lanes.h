/* mg_lanes.h: batched replay's loops.  A recorded graph run on B samples at
 * once keeps, for every node that depends on a per-sample input, B values
 * ("lanes") side by side; a node that does not (a parameter, an L2 term) has
 * one value that every lane reads.
 *
 * The loops over lanes are the op table's rows (mg_ops.def) expanded once
 * more: each row's inline functions of mg_ops.h, applied lane by lane.  A
 * node switches on its op once and runs one tight loop over contiguous lanes
 * (restrict pointers, no branch inside), so the compiler vectorises what
 * vectorises (+ - * / and the fused sums); an operand without lanes is a
 * scalar in the loop.  Every lane computes what the unbatched replay of its
 * sample computes, in the same order: its values equal it bit for bit, and
 * so do its gradients, until they are summed over lanes.
 *
 * mg_lanes_run splits the lanes across a few native threads; each thread owns
 * a range of lanes and never writes outside it, so the result does not depend
 * on the thread count.
 */
#ifndef MG_LANES_H
#define MG_LANES_H

#include <stddef.h>
#include <string.h>
#include "mg_ops.h"
#ifndef _WIN32
#include <pthread.h>
#endif

/* An operand of a lane loop: its lanes (p), or, when p is NULL, one value s
 * that every lane reads. */
typedef struct {
    const double *p;
    double s;
} mg_lane_arg;

/* Run STMT for i in [0, n) with x0, x1 the operands' values at lane i: one
 * loop per combination of lanes and broadcast values, none branching. */
#define MG_LANES_EACH(X0, X1, n, STMT)                                                 \
    do {                                                                               \
        const double *restrict p0_ = (X0).p;                                           \
        const double *restrict p1_ = (X1).p;                                           \
        ptrdiff_t i;                                                                   \
        if (p0_ && p1_) {                                                              \
            for (i = 0; i < (n); i++) { const double x0 = p0_[i], x1 = p1_[i]; STMT; } \
        } else if (p0_) {                                                              \
            const double x1 = (X1).s;                                                  \
            for (i = 0; i < (n); i++) { const double x0 = p0_[i]; STMT; }              \
        } else if (p1_) {                                                              \
            const double x0 = (X0).s;                                                  \
            for (i = 0; i < (n); i++) { const double x1 = p1_[i]; STMT; }              \
        } else {                                                                       \
            const double x0 = (X0).s, x1 = (X1).s;                                     \
            for (i = 0; i < (n); i++) { STMT; }                                        \
        }                                                                              \
    } while (0)

/* A row's loops.  x0, x1 are the row's own arguments: (a, b) for a binary
 * row, (a, c) for a unary one; the sweep below maps a node's operands and
 * constant onto them (c op a: x0 = c, x1 = a).
 *   forward:  out[i] = f(x0, x1)
 *   grad:     G[i] += g[i] * d out / d x   (G: the gradient lanes of the operand),
 *             or, for the first gradient an operand receives (set),
 *             G[i] = 0.0 + g[i] * d out / d x: what adding to a zeroed
 *             gradient gives, signed zeros included, without zeroing first */
typedef void (*mg_lane_forward_fn)(mg_lane_arg x0, mg_lane_arg x1, double *restrict out,
                                   ptrdiff_t n);
typedef void (*mg_lane_grad_fn)(mg_lane_arg x0, mg_lane_arg x1, const double *restrict out,
                                const double *restrict g, double *restrict G, ptrdiff_t n,
                                int set);

#define MG_LANE_FORWARD(NAME, F)                                                       \
    MG_SIMD static void NAME(mg_lane_arg X0, mg_lane_arg X1, double *restrict out, ptrdiff_t n) \
    { MG_LANES_EACH(X0, X1, n, out[i] = (F)); }
/* CONTRIB: what lane i sends the operand (g[i] times its local derivative) */
#define MG_LANE_GRAD(NAME, CONTRIB)                                                    \
    MG_SIMD static void NAME(mg_lane_arg X0, mg_lane_arg X1, const double *restrict out,       \
                     const double *restrict g, double *restrict G, ptrdiff_t n, int set) \
    {                                                                                  \
        (void)out;                                                                     \
        if (set)                                                                       \
            MG_LANES_EACH(X0, X1, n, G[i] = 0.0 + (CONTRIB));                          \
        else                                                                           \
            MG_LANES_EACH(X0, X1, n, G[i] += (CONTRIB));                               \
    }

#define MG_BINARY(CODE, ...)                                                           \
    MG_LANE_FORWARD(mg_lanes_f_##CODE, mg_f_##CODE(x0, x1))                            \
    MG_LANE_GRAD(mg_lanes_da_##CODE, g[i] * mg_da_##CODE(x0, x1, out[i]))              \
    MG_LANE_GRAD(mg_lanes_db_##CODE, g[i] * mg_db_##CODE(x0, x1, out[i]))
#define MG_UNARY(CODE, ...)                                                            \
    MG_LANE_FORWARD(mg_lanes_f_##CODE, mg_f_##CODE(x0, x1))                            \
    MG_LANE_GRAD(mg_lanes_da_##CODE, g[i] * mg_da_##CODE(x0, out[i], x1))
#define MG_UNARY_C MG_UNARY
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"

/* By op code: the forward loop, and the gradient loops of operand a and b. */
static const mg_lane_forward_fn mg_lane_forward[MG_OP_COUNT] = {
#define MG_BINARY(CODE, ...)                                                           \
    [MG_OP_##CODE] = mg_lanes_f_##CODE, [MG_OP_##CODE##_AC] = mg_lanes_f_##CODE,       \
    [MG_OP_##CODE##_CA] = mg_lanes_f_##CODE,
#define MG_UNARY(CODE, ...) [MG_OP_##CODE] = mg_lanes_f_##CODE,
#define MG_UNARY_C MG_UNARY
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
};
static const mg_lane_grad_fn mg_lane_grad_a[MG_OP_COUNT] = {
#define MG_BINARY(CODE, ...)                                                           \
    [MG_OP_##CODE] = mg_lanes_da_##CODE, [MG_OP_##CODE##_AC] = mg_lanes_da_##CODE,     \
    [MG_OP_##CODE##_CA] = mg_lanes_db_##CODE,   /* c op a: a is the row's b */
#define MG_UNARY(CODE, ...) [MG_OP_##CODE] = mg_lanes_da_##CODE,
#define MG_UNARY_C MG_UNARY
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
};
static const mg_lane_grad_fn mg_lane_grad_b[MG_OP_COUNT] = {
#define MG_BINARY(CODE, ...) [MG_OP_##CODE] = mg_lanes_db_##CODE,
#define MG_UNARY(...)
#define MG_UNARY_C(...)
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
};

/* The fused nodes' derivatives, as the scalar replay applies them: dot's
 * operand w receives g * x (x1 = x; the bias: x1 = 1, as g * 1 = g), sum's
 * operands g (x1 = 1), mean's g / count (x1 = count). */
MG_LANE_GRAD(mg_lanes_d_times, ((void)x0, g[i] * x1))
MG_LANE_GRAD(mg_lanes_d_over, ((void)x0, g[i] / x1))

/* -- the batched graph ----------------------------------------------------------
 * The replay tape's arrays (by position in the recorded order) plus where
 * each node keeps its lanes.  Built by the engine (core/replay.pxi).
 *
 * Gradient lanes exist only while they are live: a node's slot is taken by
 * the first gradient it receives in the reverse sweep and given back once
 * the node has passed its gradient on, so a few slots serve the whole
 * graph and stay in cache.  The first gradient a node receives is stored
 * (set), the later ones added: nothing is zeroed.  A node without lanes
 * receives, from each node with lanes that reads it, the sum over each
 * chunk of MG_LANE_CHUNK lanes of what those lanes send (partials[pslot *
 * n_chunks + chunk]); the caller adds the chunks up in order afterwards.
 * Chunks, not threads, fix the order of these sums: the result does not
 * depend on the thread count. */
#define MG_LANE_CHUNK 128

/* A multiply-add chain's pair as the engine planned it (mg_lanes_plan_links),
 * kept at the order index of its M (the head's fields at its S_0's): slots
 * and positions, turned into pointers when a sweep starts. */
typedef struct {
    int w, x_slot, m_slot, s_slot;    /* w's position; value slots of x, M, S */
    int gx_slot, w_slot;              /* x's gradient slot, w's row of partials; -1: none */
    unsigned char x_first, w_is_a, acc_is_a;
} mg_lane_link;

typedef struct {
    ptrdiff_t B;                  /* lanes per node */
    const unsigned short *op;     /* the tape: op code, operands a and b (-1: none; */
    const int *a, *b;             /*   a is dot's bias), n-ary operands args[args_start[i]..] */
    const int *args_start, *args;
    const double *aux;            /*   the op's constant */
    const double *val;            /* the value of a node without lanes */
    const unsigned char *rg;      /* takes a gradient (inputs do not) */
    const int *vslot;             /* a node's value lanes: lanes[vslot * B ...], or -1 */
    const int *gslot;             /* a lane node's gradient lanes: grads[gslot * B ...] */
    const int *pslot;             /* a node without lanes that lane nodes send gradients to */
    const unsigned char *first_ab;    /* node i's gradient is the first operand a (2i), */
    const unsigned char *first_args;  /*   b (2i + 1), args[k] receives: set, not add */
    const int *order;             /* the positions of the nodes with lanes, in forward order */
    const int *run;               /* per order index: a chain of n pairs starts (n) or ends (-n) here, else 0 */
    mg_lane_link *links;          /* per order index: a chain's pairs (mg_lanes_plan_links) */
    const int *layer;             /* per order index: at a layer's last chain's end, its chain count */
    const unsigned char *layer_chain; /* per order index: 1 at the end of a layer's chain */
    ptrdiff_t n_order;
    int store_all;                /* forward: also store the lanes of the chains' inner nodes */
    ptrdiff_t n_chunks;           /* (B + MG_LANE_CHUNK - 1) / MG_LANE_CHUNK */
    int root;                     /* the root's position (it has lanes) */
    double *lanes;
    double *grads;
    double *partials;
} mg_lane_graph;

/* Operand pos at lanes [l0, ...): its lanes, or its single value. */
static inline mg_lane_arg mg_lane_value(const mg_lane_graph *g, int pos, ptrdiff_t l0)
{
    mg_lane_arg r;
    int s = g->vslot[pos];
    r.p = s >= 0 ? g->lanes + (ptrdiff_t)s * g->B + l0 : NULL;
    r.s = s >= 0 ? 0.0 : g->val[pos];
    return r;
}

static inline mg_lane_arg mg_lane_const(double c)
{
    mg_lane_arg r;
    r.p = NULL;
    r.s = c;
    return r;
}

static inline mg_lane_arg mg_lane_shift(mg_lane_arg x, ptrdiff_t k)
{
    if (x.p) x.p += k;
    return x;
}

static inline double *mg_lane_grad(const mg_lane_graph *g, int pos, ptrdiff_t l0)
{
    return g->grads + (ptrdiff_t)g->gslot[pos] * g->B + l0;
}

/* The fused dot: MG_DOT_SUM's four partial sums (mg_tape.h: s0 starts at
 * the bias; term k < n4 goes to s[k % 4], the tail to s0; then (s0 + s1) +
 * (s2 + s3)), kept per lane for a chunk of lanes at a time. */
MG_SIMD static void mg_lanes_dot(const mg_lane_graph *g, int node, double *restrict out,
                         ptrdiff_t l0, ptrdiff_t n)
{
    const int start = g->args_start[node];
    const ptrdiff_t half = (g->args_start[node + 1] - start) / 2, n4 = half - half % 4;
    const int *w = g->args + start, *x = w + half;
    double s[4][MG_LANE_CHUNK];
    ptrdiff_t c0, m, k, i;
    for (c0 = 0; c0 < n; c0 += MG_LANE_CHUNK) {
        m = n - c0 < MG_LANE_CHUNK ? n - c0 : MG_LANE_CHUNK;
        mg_lane_arg bias = g->a[node] >= 0 ? mg_lane_value(g, g->a[node], l0 + c0)
                                           : mg_lane_const(0.0);
        for (i = 0; i < m; i++) {
            s[0][i] = bias.p ? bias.p[i] : bias.s;
            s[1][i] = s[2][i] = s[3][i] = 0.0;
        }
        for (k = 0; k < half; k++) {
            double *restrict acc = s[k < n4 ? k % 4 : 0];
            mg_lane_arg wk = mg_lane_value(g, w[k], l0 + c0), xk = mg_lane_value(g, x[k], l0 + c0);
            MG_LANES_EACH(wk, xk, m, acc[i] += x0 * x1);
        }
        for (i = 0; i < m; i++)
            out[c0 + i] = (s[0][i] + s[1][i]) + (s[2][i] + s[3][i]);
    }
}

/* sum (plus its constant) and mean, adding the operands in order. */
MG_SIMD static void mg_lanes_sum(const mg_lane_graph *g, int node, double *restrict out,
                         ptrdiff_t l0, ptrdiff_t n)
{
    const int start = g->args_start[node], count = g->args_start[node + 1] - start;
    ptrdiff_t i;
    int k;
    memset(out, 0, n * sizeof(double));
    for (k = 0; k < count; k++) {
        const mg_lane_arg v = mg_lane_value(g, g->args[start + k], l0);
        const double *restrict p = v.p;
        if (p)
            for (i = 0; i < n; i++) out[i] += p[i];
        else
            for (i = 0; i < n; i++) out[i] += v.s;
    }
    if (g->op[node] == MG_OP_SUM) {
        const double c = g->aux[node];
        for (i = 0; i < n; i++) out[i] = out[i] + c;
    } else {
        for (i = 0; i < n; i++) out[i] = out[i] / count;
    }
}

/* -- multiply-add chains --------------------------------------------------------
 * A neuron built as micrograd builds it, b + w0*x0 + w1*x1 + ..., is a chain of
 * pairs M_j = w_j * x_j (one operand without lanes, w_j, one with lanes, x_j),
 * S_j = S_(j-1) + M_j (either operand order), where S_(-1) is any node (the
 * head) and each inner node (every M_j, every S_j but the last) is read by
 * its successor alone.  The engine marks such chains (run: order[k0 ..
 * k0 + 2n) holds M_0, S_0, ..., M_(n-1), S_(n-1)) and the sweeps run a
 * chain as one step: the forward over blocks of MG_LANE_BLOCK lanes, the
 * running sums in registers; the reverse sweep pair by pair over a chunk of
 * lanes, the running gradient in a chunk-long array.  Per lane they do the
 * same operations in the same order as node by node (the rows' own
 * mg_f_/mg_da_/mg_db_ functions), so the values and gradients are
 * unchanged, bit for bit.  The inner nodes' lanes are only stored when
 * store_all asks (Graph.value() reads them); the reverse sweep needs none
 * of them: a product is recomputed, the running sums too when the
 * derivatives of + read them, and an inner node's gradient is the chain's
 * running gradient. */
#define MG_LANE_BLOCK 16
/* x's value lanes and gradient lanes live in different buffers: a loop
 * that reads one and writes the other needs no runtime test of overlap. */
#if defined(__GNUC__) && !defined(__clang__)
#define MG_IVDEP _Pragma("GCC ivdep")
#else
#define MG_IVDEP
#endif
#define MG_LANE_CHAIN_MAX 32

typedef struct {
    double w;                     /* the operand without lanes */
    const double *x;              /* the operand with lanes, from the range's first lane */
    double *m, *s;                /* M_j's and S_j's value lanes (stored with store_all) */
    double *gx;                   /* x's gradient lanes, or NULL: x takes none */
    int x_first;                  /* x's gradient is set, not added, by this edge */
    int w_slot;                   /* w's row of chunk partials, or -1: w takes no gradient */
    int w_is_a;                   /* M_j = w * x (else x * w) */
    int acc_is_a;                 /* S_j = S_(j-1) + M_j (else M_j + S_(j-1)) */
} mg_lane_pair;

typedef struct {
    int n;
    mg_lane_pair pair[MG_LANE_CHAIN_MAX];
    mg_lane_arg head;             /* S_(-1)'s value */
    double head_fill[MG_LANE_BLOCK];  /* head.s in every lane, when the head has no lanes */
    double *ghead;                /* its gradient lanes, or NULL */
    int head_first, head_slot;    /* set, not add; its row of partials (no lanes), or -1 */
    double *out;                  /* the last S's value lanes */
    const double *g;              /* the last S's gradient lanes */
} mg_lane_chain;

/* Fills the links of every chain once the plan is made: the same lookups
 * for every sweep, done once. */
static void mg_lanes_plan_links(const mg_lane_graph *g)
{
    ptrdiff_t k, j, n;
    int m, s, w, x, acc;
    for (k = 0; k < g->n_order; k++) {
        if (g->run[k] <= 0) continue;
        n = g->run[k];
        for (j = 0; j < n; j++) {
            mg_lane_link *q = &g->links[k + 2 * j], *h = &g->links[k + 1];
            m = g->order[k + 2 * j];
            s = g->order[k + 2 * j + 1];
            q->w_is_a = g->vslot[g->a[m]] < 0;
            w = q->w_is_a ? g->a[m] : g->b[m];
            x = q->w_is_a ? g->b[m] : g->a[m];
            q->acc_is_a = g->b[s] == m;
            q->w = w;
            q->x_slot = g->vslot[x];
            q->m_slot = g->vslot[m];
            q->s_slot = g->vslot[s];
            q->gx_slot = g->rg[x] ? g->gslot[x] : -1;
            q->w_slot = g->rg[w] ? g->pslot[w] : -1;
            q->x_first = g->first_ab[2 * (ptrdiff_t)m + q->w_is_a];
            if (j == 0) {       /* the head: S_0's other operand */
                acc = q->acc_is_a ? g->a[s] : g->b[s];
                h->w = acc;
                h->x_slot = g->vslot[acc];
                h->gx_slot = g->rg[acc] && g->vslot[acc] >= 0 ? g->gslot[acc] : -1;
                h->w_slot = g->rg[acc] && g->vslot[acc] < 0 ? g->pslot[acc] : -1;
                h->x_first = g->first_ab[2 * (ptrdiff_t)s + !q->acc_is_a];
            }
        }
    }
}

static void mg_lane_chain_load(const mg_lane_graph *g, ptrdiff_t k0, int n, ptrdiff_t l0,
                               int backward, mg_lane_chain *c)
{
    const mg_lane_link *h = &g->links[k0 + 1];
    int j;
    c->n = n;
    for (j = 0; j < n; j++) {
        const mg_lane_link *l = &g->links[k0 + 2 * j];
        mg_lane_pair *q = &c->pair[j];
        q->w_is_a = l->w_is_a;
        q->acc_is_a = l->acc_is_a;
        q->w = g->val[l->w];
        q->x = g->lanes + (ptrdiff_t)l->x_slot * g->B + l0;
        if (backward) {         /* what the reverse sweep reads */
            q->gx = l->gx_slot >= 0 ? g->grads + (ptrdiff_t)l->gx_slot * g->B + l0 : NULL;
            q->x_first = l->x_first;
            q->w_slot = l->w_slot;
        } else if (g->store_all) {      /* where the forward stores the inner nodes */
            q->m = g->lanes + (ptrdiff_t)l->m_slot * g->B + l0;
            q->s = g->lanes + (ptrdiff_t)l->s_slot * g->B + l0;
        }
    }
    c->head.p = h->x_slot >= 0 ? g->lanes + (ptrdiff_t)h->x_slot * g->B + l0 : NULL;
    c->head.s = h->x_slot >= 0 ? 0.0 : g->val[h->w];
    for (j = 0; j < MG_LANE_BLOCK; j++) c->head_fill[j] = c->head.s;
    c->head_first = h->x_first;
    c->ghead = backward && h->gx_slot >= 0 ? g->grads + (ptrdiff_t)h->gx_slot * g->B + l0 : NULL;
    c->head_slot = backward ? h->w_slot : -1;
    c->out = g->lanes + (ptrdiff_t)g->links[k0 + 2 * (ptrdiff_t)n - 2].s_slot * g->B + l0;
    c->g = backward ? mg_lane_grad(g, g->order[k0 + 2 * n - 1], l0) : NULL;
}

/* One pair's product and running sum at lane values x and acc. */
#define MG_PAIR_M(q, xv) ((q)->w_is_a ? mg_f_MUL((q)->w, xv) : mg_f_MUL(xv, (q)->w))
#define MG_PAIR_S(q, acc, mv) ((q)->acc_is_a ? mg_f_ADD(acc, mv) : mg_f_ADD(mv, acc))

/* Lanes [i0, i0 + nb) of a chain, nb <= MG_LANE_BLOCK: the block's running
 * sums stay in registers across the pairs (nb is a constant where the block
 * is full: the loops over its lanes become a few vector operations). */
static MG_ALWAYS_INLINE void mg_lane_chain_forward_block(const mg_lane_chain *c, ptrdiff_t i0, ptrdiff_t nb,
                                               int store)
{
    double acc[MG_LANE_BLOCK];
    const double *restrict head = c->head.p ? c->head.p + i0 : c->head_fill;
    ptrdiff_t i;
    int j;
    for (i = 0; i < nb; i++) acc[i] = head[i];
    if (store) {
        for (j = 0; j < c->n; j++) {
            const mg_lane_pair *q = &c->pair[j];
            const double *restrict x = q->x + i0;
            double *restrict m = q->m + i0, *restrict s = q->s + i0;
            for (i = 0; i < nb; i++) {
                const double mv = MG_PAIR_M(q, x[i]);
                m[i] = mv;
                s[i] = acc[i] = MG_PAIR_S(q, acc[i], mv);
            }
        }
    } else {
        for (j = 0; j < c->n; j++) {
            const mg_lane_pair *q = &c->pair[j];
            const double *restrict x = q->x + i0;
            for (i = 0; i < nb; i++) acc[i] = MG_PAIR_S(q, acc[i], MG_PAIR_M(q, x[i]));
        }
    }
    for (i = 0; i < nb; i++) c->out[i0 + i] = acc[i];
}

/* A full block, its sixteen running sums as sixteen variables (the
 * compiler keeps them in four vector registers across the pairs; an array
 * it may keep in memory). */
#define MG_LANE16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) \
    X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
static MG_ALWAYS_INLINE void mg_lane_chain_forward_full(const mg_lane_chain *c, ptrdiff_t i0)
{
    const double *head = c->head.p ? c->head.p + i0 : c->head_fill;
    int j;
#define MG_DECL(i) double acc##i = head[i];
#define MG_STEP(i) acc##i = MG_PAIR_S(q, acc##i, MG_PAIR_M(q, x[i]));
#define MG_OUT(i) c->out[i0 + i] = acc##i;
    MG_LANE16(MG_DECL)
    for (j = 0; j < c->n; j++) {
        const mg_lane_pair *q = &c->pair[j];
        const double *x = q->x + i0;
        MG_LANE16(MG_STEP)
    }
    MG_LANE16(MG_OUT)
#undef MG_DECL
#undef MG_STEP
#undef MG_OUT
}

MG_SIMD static void mg_lanes_chain_forward(const mg_lane_graph *g, ptrdiff_t k0, int n,
                                                 ptrdiff_t l0, ptrdiff_t len)
{
    mg_lane_chain c;
    ptrdiff_t i0;
    mg_lane_chain_load(g, k0, n, l0, 0, &c);
    if (g->store_all) {
        for (i0 = 0; i0 < len; i0 += MG_LANE_BLOCK)
            mg_lane_chain_forward_block(&c, i0, len - i0 < MG_LANE_BLOCK ? len - i0
                                        : MG_LANE_BLOCK, 1);
        return;
    }
    for (i0 = 0; i0 + MG_LANE_BLOCK <= len; i0 += MG_LANE_BLOCK)
        mg_lane_chain_forward_full(&c, i0);
    for (; i0 + 4 <= len; i0 += 4)          /* the rest: four lanes, then fewer */
        mg_lane_chain_forward_block(&c, i0, 4, 0);
    if (i0 < len)
        mg_lane_chain_forward_block(&c, i0, len - i0, 0);
}

/* A chunk's sum of what its lanes send a node without lanes, in one fixed
 * order (so the same whatever the thread count): lane i of the first
 * n - n % MG_LANE_SUMS into partial sum i % MG_LANE_SUMS, the rest into the
 * first, in lane order, then the partial sums as mg_lane_sums_total adds
 * them.  Sixteen partial sums are four vector registers whose adds do not
 * wait for each other. */
#define MG_LANE_SUMS 16
static MG_ALWAYS_INLINE double mg_lane_sums_total(const double *s)
{
    double t[4];
    int e;
    for (e = 0; e < 4; e++) t[e] = (s[e] + s[e + 4]) + (s[e + 8] + s[e + 12]);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

static MG_ALWAYS_INLINE double mg_lanes_total(const double *restrict p, ptrdiff_t n)
{
    double s[MG_LANE_SUMS];
    ptrdiff_t i = 0;
    int e;
    for (e = 0; e < MG_LANE_SUMS; e++) s[e] = 0.0;
    for (; i + MG_LANE_SUMS <= n; i += MG_LANE_SUMS)
        for (e = 0; e < MG_LANE_SUMS; e++) s[e] += p[i + e];
    for (; i < n; i++) s[0] += p[i];
    return mg_lane_sums_total(s);
}

/* One pair's step of the reverse sweep at lane i: M_j's gradient (its first
 * and only one) from S_j's, gs[i]; S_(j-1)'s replaces gs[i] (unit: both
 * are gs[i], see mg_lane_chain_unit).  What w receives is added to *w_sum
 * as it is: the node-by-node sweep's 0 + p, added to a sum that starts at
 * +0 and so is never -0, gives the same number.  x's lane gets its share.
 * The flags are constants once inlined (one loop per case, none branching,
 * which the compiler vectorises). */
static MG_ALWAYS_INLINE void mg_lane_pair_lane(const mg_lane_pair *q, const double *restrict x,
                                               const double *restrict acc_prev,
                                               const double *restrict sv, double *restrict gs,
                                               double *restrict gx, ptrdiff_t i, double *w_sum,
                                               int to_w, int to_x, int x_first, int unit)
{
    const double w = q->w;
    const double xv = x[i], mv = MG_PAIR_M(q, xv), sval = sv[i], acc = acc_prev[i];
    const double dm = q->acc_is_a ? mg_db_ADD(acc, mv, sval) : mg_da_ADD(mv, acc, sval);
    const double dacc = q->acc_is_a ? mg_da_ADD(acc, mv, sval) : mg_db_ADD(mv, acc, sval);
    const double gm = unit ? gs[i] : 0.0 + gs[i] * dm;
    if (to_w)
        *w_sum += gm * (q->w_is_a ? mg_da_MUL(w, xv, mv) : mg_db_MUL(xv, w, mv));
    if (to_x) {
        const double dx = q->w_is_a ? mg_db_MUL(w, xv, mv) : mg_da_MUL(xv, w, mv);
        if (x_first)
            gx[i] = 0.0 + gm * dx;
        else
            gx[i] += gm * dx;
    }
    if (!unit)
        gs[i] = 0.0 + gs[i] * dacc;
}

/* A pair's step over the m lanes of a chunk; what w receives summed in
 * mg_lanes_total's order into *w_total. */
static MG_ALWAYS_INLINE void mg_lane_pair_backward(const mg_lane_pair *q, const double *restrict x,
                                                   const double *restrict acc_prev,
                                                   const double *restrict sv,
                                                   double *restrict gs, double *restrict gx,
                                                   double *restrict w_total, ptrdiff_t m,
                                                   int to_w, int to_x, int x_first, int unit)
{
    double s[MG_LANE_SUMS];
    ptrdiff_t i = 0;
    int e;
    for (e = 0; e < MG_LANE_SUMS; e++) s[e] = 0.0;
    MG_IVDEP
    for (; i + MG_LANE_SUMS <= m; i += MG_LANE_SUMS)
        for (e = 0; e < MG_LANE_SUMS; e++)
            mg_lane_pair_lane(q, x, acc_prev, sv, gs, gx, i + e, &s[e], to_w, to_x, x_first, unit);
    MG_IVDEP
    for (; i < m; i++)
        mg_lane_pair_lane(q, x, acc_prev, sv, gs, gx, i, &s[0], to_w, to_x, x_first, unit);
    if (to_w)
        *w_total = mg_lane_sums_total(s);
}

/* Whether the derivatives of a chain's sums read their operands' values:
 * only then does the reverse sweep recompute the running sums.  And
 * whether they are the constant 1: then M_j's gradient, 0 + gs * 1, and
 * S_(j-1)'s are gs itself (a gradient lane is never -0), so the running
 * gradient is read, not updated, pair by pair.  (The op table's + is
 * such a sum: the compiler sees through mg_da_ADD and mg_db_ADD; without
 * __builtin_constant_p the answers are yes and no.)  When the sums are not
 * recomputed, the derivatives are called with other values, which they
 * ignore. */
static MG_ALWAYS_INLINE int mg_lane_chain_reads_sums(double a, double b, double out)
{
#if defined(__GNUC__)
    const double da = mg_da_ADD(a, b, out), db = mg_db_ADD(a, b, out);
    return !(__builtin_constant_p(da) && __builtin_constant_p(db));
#else
    (void)a; (void)b; (void)out;
    return 1;
#endif
}

static MG_ALWAYS_INLINE int mg_lane_chain_unit(double a, double b, double out)
{
#if defined(__GNUC__)
    const double da = mg_da_ADD(a, b, out), db = mg_db_ADD(a, b, out);
    return __builtin_constant_p(da) && __builtin_constant_p(db) && da == 1.0 && db == 1.0;
#else
    (void)a; (void)b; (void)out;
    return 0;
#endif
}

/* The reverse sweep of a chain over lanes [0, len) (from the range's first
 * lane, a multiple of MG_LANE_CHUNK), a chunk at a time, pair by pair from
 * the last: per lane the node-by-node sweep's operations in its order.  A
 * node without lanes (a w, the head) gets the chunk's sum of what its lanes
 * send, added to its row of partials in the order that sweep adds them. */
MG_SIMD static void mg_lanes_chain_backward(const mg_lane_graph *g, ptrdiff_t k0, int n,
                                            ptrdiff_t l0, ptrdiff_t len)
{
    mg_lane_chain c;
    double gs_buf[MG_LANE_CHUNK], share[MG_LANE_CHUNK], head[MG_LANE_CHUNK];
    double sv[MG_LANE_CHAIN_MAX][MG_LANE_CHUNK];
    ptrdiff_t c0, m, i;
    int j, in_place;
    const int sums = mg_lane_chain_reads_sums(g->val[0], g->val[0], g->val[0]);
    const int unit = mg_lane_chain_unit(g->val[0], g->val[0], g->val[0]);
    mg_lane_chain_load(g, k0, n, l0, 1, &c);
    /* With unit derivatives the running gradient is the last S's own lanes,
     * only read (a gradient lane is never -0: its first value is 0 + p, so
     * 0 + gs * 1 is gs itself), unless the chain writes them: an operand's
     * gradient may take over the slot of the last S's, dead by then. */
    in_place = unit && c.ghead != c.g;
    for (j = 0; j < n; j++) in_place = in_place && c.pair[j].gx != c.g;
    for (c0 = 0; c0 < len; c0 += MG_LANE_CHUNK) {
        double *partials = g->partials + (l0 + c0) / MG_LANE_CHUNK;
        double *gs = in_place ? (double *)c.g + c0 : gs_buf;
        m = len - c0 < MG_LANE_CHUNK ? len - c0 : MG_LANE_CHUNK;
        for (i = 0; i < m && !in_place; i++) gs[i] = c.g[c0 + i];
        for (i = 0; i < m && !unit; i++) head[i] = c.head.p ? c.head.p[c0 + i] : c.head.s;
        for (j = 0; j < n && sums; j++) {   /* the running sums, as the forward computed them */
            const mg_lane_pair *q = &c.pair[j];
            const double *restrict x = q->x + c0, *restrict acc = j ? sv[j - 1] : head;
            for (i = 0; i < m; i++) sv[j][i] = MG_PAIR_S(q, acc[i], MG_PAIR_M(q, x[i]));
        }
        for (j = n - 1; j >= 0; j--) {
            const mg_lane_pair *q = &c.pair[j];
            const double *restrict x = q->x + c0;
            /* the derivatives' other arguments (unit: not read) */
            const double *restrict acc = unit ? x : j && sums ? sv[j - 1] : head;
            const double *restrict sval = unit ? x : sums ? sv[j] : head;
            double *gx = q->gx ? q->gx + c0 : NULL, w_total = 0.0;
            if (j == 0 && (c.ghead || c.head_slot >= 0)) {  /* S_0 sends the head its share */
                const double *sent = gs;                     /* unit: gs itself */
                if (!unit) {
                    for (i = 0; i < m; i++) {
                        const double mv = MG_PAIR_M(q, x[i]);
                        share[i] = gs[i] * (q->acc_is_a ? mg_da_ADD(acc[i], mv, sval[i])
                                                        : mg_db_ADD(mv, acc[i], sval[i]));
                    }
                    sent = share;
                }
                if (!c.ghead)   /* (0 + p added to a sum that is never -0 is p added) */
                    partials[(ptrdiff_t)c.head_slot * g->n_chunks] += mg_lanes_total(sent, m);
                else if (c.head_first)
                    for (i = 0; i < m; i++) c.ghead[c0 + i] = 0.0 + sent[i];
                else
                    for (i = 0; i < m; i++) c.ghead[c0 + i] += sent[i];
            }
            /* one inlined loop per case (the flags constants in each) */
#define MG_PAIR(TO_W, TO_X, FIRST) mg_lane_pair_backward(q, x, acc, sval, gs, TO_X ? gx : NULL, \
                                                         &w_total, m, TO_W, TO_X, FIRST, unit)
#define MG_PAIR_CASES(TO_W) (!gx ? MG_PAIR(TO_W, 0, 0) : q->x_first ? MG_PAIR(TO_W, 1, 1) \
                                                                   : MG_PAIR(TO_W, 1, 0))
            if (q->w_slot >= 0) {
                MG_PAIR_CASES(1);
                partials[(ptrdiff_t)q->w_slot * g->n_chunks] += w_total;
            } else {
                MG_PAIR_CASES(0);
            }
#undef MG_PAIR_CASES
#undef MG_PAIR
        }
    }
}

/* -- layers ---------------------------------------------------------------------
 * A dense layer written as micrograd writes it is a set of chains, one per
 * neuron, that read the same operands x_0 .. x_(n-1) in the same order, each
 * chain c with its own weights w_cj and a bias without lanes.  In the
 * recorded (depth-first) order the chains need not be adjacent: a neuron's
 * consumers (its nonlinearity, the next layer's products) come right after
 * it; and a layer's first neuron is not one of its chains, its operands
 * being computed between its pairs.  No node between the chains reads an x
 * or a parameter of the layer, and none is read by the layer's chains
 * (their x come before the first), so the reverse sweep may run those
 * nodes first, in their order, and then the chains as one step.  With unit
 * derivatives of + (mg_lane_chain_unit) that step is two small matrix
 * products over the lanes: w_cj receives the sum over the lanes of G_c
 * times the product's derivative by w_cj (x_j), x_j's gradient lanes the
 * sum over the chains of G_c times its derivative by x_j (w_cj); G_c is
 * the gradient lanes of chain c's last S.  It computes them a
 * few chains and operands at a time, the sums in registers, so a lane is
 * read once per block rather than once per pair.  Per lane it does what
 * the chain steps do, in their order: x_j's gradient receives chain L-1's
 * share first (set or added, as planned), then chain L-2's, ..., chain
 * 0's.  What a w receives is summed over a chunk's lanes in its own fixed
 * order (lane i of the first m - m % 4 into partial sum i % 4, the rest
 * into the first, in lane order; then (s0 + s1) + (s2 + s3)), so a weight's
 * gradient agrees with the chain step's to rounding; a bias receives what
 * the chain step sends it.  The plan (replay.pxi) marks a layer only where
 * nothing else can tell: its weights and biases are distinct parameters,
 * its x distinct, every pair has its w on the same side of the product,
 * and the gradient slots are planned for this order (every G_c kept until
 * the layer is done).  The step is written with GCC's and Clang's vector
 * types; with another compiler no layer is planned and the chain steps run. */
#define MG_LANE_LAYER_MAX 32

/* The order indices where the `count` chains of the layer whose last chain
 * ends at k start (run, layer_chain: mg_lane_graph's), first to last. */
static void mg_lanes_layer_starts(const int *run, const unsigned char *layer_chain, ptrdiff_t k,
                                  int count, ptrdiff_t *starts)
{
    const ptrdiff_t size = -2 * (ptrdiff_t)run[k];
    for (; count > 0; k--)
        if (layer_chain[k])
            k = starts[--count] = k - size + 1;
}

#ifdef MG_V4
#define MG_LANE_LAYERS 1

typedef struct {
    int L, n, w_is_a;
    const double *G[MG_LANE_LAYER_MAX];            /* chain c's gradient lanes */
    mg_v4 w[MG_LANE_LAYER_MAX][MG_LANE_CHAIN_MAX]; /* w_cj in four lanes */
    int w_row[MG_LANE_LAYER_MAX][MG_LANE_CHAIN_MAX], head_row[MG_LANE_LAYER_MAX];
    const double *x[MG_LANE_CHAIN_MAX];            /* operand j's value lanes */
    double *gx[MG_LANE_CHAIN_MAX];                 /* its gradient lanes, or NULL */
    unsigned char x_first[MG_LANE_CHAIN_MAX];
} mg_lane_layer;

/* The layer's L chains of n pairs, chain c from order index starts[c]. */
static void mg_lane_layer_load(const mg_lane_graph *g, const ptrdiff_t *starts, int L, int n,
                               ptrdiff_t l0, mg_lane_layer *y)
{
    const ptrdiff_t size = 2 * (ptrdiff_t)n;
    int c, j;
    y->L = L;
    y->n = n;
    y->w_is_a = g->links[starts[0]].w_is_a;
    for (c = 0; c < L; c++) {
        const ptrdiff_t kc = starts[c];
        y->G[c] = mg_lane_grad(g, g->order[kc + size - 1], l0);
        y->head_row[c] = g->links[kc + 1].w_slot;
        for (j = 0; j < n; j++) {
            const double w = g->val[g->links[kc + 2 * j].w];
            const mg_v4 w4 = {w, w, w, w};
            y->w[c][j] = w4;
            y->w_row[c][j] = g->links[kc + 2 * j].w_slot;
        }
    }
    for (j = 0; j < n; j++) {
        const mg_lane_link *q = &g->links[starts[L - 1] + 2 * j];
        y->x[j] = g->lanes + (ptrdiff_t)q->x_slot * g->B + l0;
        y->gx[j] = q->gx_slot >= 0 ? g->grads + (ptrdiff_t)q->gx_slot * g->B + l0 : NULL;
        y->x_first[j] = q->x_first;
    }
}

/* The product's derivatives w.r.t. its w and its x at lane value xv, as the
 * op table has them (w_is_a, WA, is a constant where they are used), for
 * one lane and for four (a vector: the compiler folds the four calls into
 * the vector operation they amount to). */
#define MG_LAYER_DW(w, xv, WA) \
    ((WA) ? mg_da_MUL(w, xv, mg_f_MUL(w, xv)) : mg_db_MUL(xv, w, mg_f_MUL(xv, w)))
#define MG_LAYER_DX(w, xv, WA) \
    ((WA) ? mg_db_MUL(w, xv, mg_f_MUL(w, xv)) : mg_da_MUL(xv, w, mg_f_MUL(xv, w)))

static MG_ALWAYS_INLINE mg_v4 mg_v4_dw(mg_v4 w, mg_v4 x, int WA)
{
    mg_v4 d;
    int e;
    for (e = 0; e < 4; e++) d[e] = MG_LAYER_DW(w[e], x[e], WA);
    return d;
}

static MG_ALWAYS_INLINE mg_v4 mg_v4_dx(mg_v4 w, mg_v4 x, int WA)
{
    mg_v4 d;
    int e;
    for (e = 0; e < 4; e++) d[e] = MG_LAYER_DX(w[e], x[e], WA);
    return d;
}

/* What chains c0 .. c0 + 3 send weights j0, j0 + 1 (or c0 and j0 alone:
 * `one`) from a chunk's lanes [i0, i0 + m), added to the weights' rows of
 * partials: eight sums in registers over blocks of four lanes, each lane
 * of G and x read once. */
static MG_ALWAYS_INLINE void mg_lane_layer_weights(const mg_lane_layer *y, int c0, int j0, int one,
                                                   ptrdiff_t i0, ptrdiff_t m, int WA,
                                                   double *partials, ptrdiff_t n_chunks)
{
    const int C = one ? 1 : 4, J = one ? 1 : 2;
    mg_v4 s[4][2] = {{{0}}};
    ptrdiff_t i;
    int c, j;
    for (i = i0; i + 4 <= i0 + m; i += 4) {
        mg_v4 x[2];
        for (j = 0; j < J; j++) x[j] = mg_v4_load(y->x[j0 + j] + i, 1);
        for (c = 0; c < C; c++) {
            const mg_v4 g = mg_v4_load(y->G[c0 + c] + i, 1);
            for (j = 0; j < J; j++) s[c][j] += g * mg_v4_dw(y->w[c0 + c][j0 + j], x[j], WA);
        }
    }
    for (; i < i0 + m; i++)
        for (c = 0; c < C; c++)
            for (j = 0; j < J; j++)
                s[c][j][0] += y->G[c0 + c][i]
                              * MG_LAYER_DW(y->w[c0 + c][j0 + j][0], y->x[j0 + j][i], WA);
    for (c = 0; c < C; c++)
        for (j = 0; j < J; j++)
            if (y->w_row[c0 + c][j0 + j] >= 0)
                partials[(ptrdiff_t)y->w_row[c0 + c][j0 + j] * n_chunks]
                    += (s[c][j][0] + s[c][j][1]) + (s[c][j][2] + s[c][j][3]);
}

/* The gradient lanes of operands j0 .. j0 + 3 (or j0 alone: `one`) at V
 * blocks of four lanes from i (V = 1 or 2): each the chains' shares from
 * the last chain to the first, summed in registers and stored once. */
static MG_ALWAYS_INLINE void mg_lane_layer_inputs(const mg_lane_layer *y, int j0, int one,
                                                  ptrdiff_t i, int V, int WA)
{
    const int J = one ? 1 : 4;
    mg_v4 acc[4][2], x[4][2];
    int c, j, v;
    for (j = 0; j < J; j++)
        for (v = 0; v < V; v++) {
            const mg_v4 zero = {0};
            x[j][v] = mg_v4_load(y->x[j0 + j] + i + 4 * v, 1);
            acc[j][v] = y->x_first[j0 + j] ? zero : mg_v4_load(y->gx[j0 + j] + i + 4 * v, 1);
        }
    for (c = y->L - 1; c >= 0; c--) {
        mg_v4 g[2];
        for (v = 0; v < V; v++) g[v] = mg_v4_load(y->G[c] + i + 4 * v, 1);
        for (j = 0; j < J; j++)
            for (v = 0; v < V; v++) acc[j][v] += g[v] * mg_v4_dx(y->w[c][j0 + j], x[j][v], WA);
    }
    for (j = 0; j < J; j++)
        for (v = 0; v < V; v++) memcpy(y->gx[j0 + j] + i + 4 * v, &acc[j][v], sizeof acc[j][v]);
}

/* Operands j .. j + e - 1 (e <= 4) over lanes [i, i + 4 V). */
static MG_ALWAYS_INLINE void mg_lane_layer_inputs_run(const mg_lane_layer *y, int j, int e,
                                                      ptrdiff_t i, int V, int WA)
{
    int c;
    if (e == 4)
        mg_lane_layer_inputs(y, j, 0, i, V, WA);
    else
        for (c = 0; c < e; c++) mg_lane_layer_inputs(y, j + c, 1, i, V, WA);
}

/* The same for operand j alone, lanes [i, i + E), E < 4. */
static MG_ALWAYS_INLINE void mg_lane_layer_inputs_tail(const mg_lane_layer *y, int j, ptrdiff_t i,
                                                       ptrdiff_t E, int WA)
{
    ptrdiff_t e;
    int c;
    for (e = i; e < i + E; e++) {
        double a = y->x_first[j] ? 0.0 : y->gx[j][e];
        for (c = y->L - 1; c >= 0; c--)
            a += y->G[c][e] * MG_LAYER_DX(y->w[c][j][0], y->x[j][e], WA);
        y->gx[j][e] = a;
    }
}

static MG_ALWAYS_INLINE void mg_lane_layer_chunk(const mg_lane_layer *y, ptrdiff_t i0, ptrdiff_t m,
                                                 int WA, double *partials, ptrdiff_t n_chunks)
{
    ptrdiff_t i;
    int c, j, e;
    for (c = 0; c + 4 <= y->L; c += 4) {
        for (j = 0; j + 2 <= y->n; j += 2)
            mg_lane_layer_weights(y, c, j, 0, i0, m, WA, partials, n_chunks);
        for (; j < y->n; j++)
            for (e = 0; e < 4; e++)
                mg_lane_layer_weights(y, c + e, j, 1, i0, m, WA, partials, n_chunks);
    }
    for (; c < y->L; c++)
        for (j = 0; j < y->n; j++)
            mg_lane_layer_weights(y, c, j, 1, i0, m, WA, partials, n_chunks);
    for (c = 0; c < y->L; c++)      /* the biases: the chain step's sums */
        if (y->head_row[c] >= 0)
            partials[(ptrdiff_t)y->head_row[c] * n_chunks] += mg_lanes_total(y->G[c] + i0, m);
    for (j = 0; j < y->n; j += e) {     /* runs of up to four operands that take gradients */
        for (e = 0; j + e < y->n && e < 4 && y->gx[j + e]; e++)
            ;
        if (e == 0) {
            e = 1;
            continue;
        }
        for (i = i0; i + 8 <= i0 + m; i += 8) mg_lane_layer_inputs_run(y, j, e, i, 2, WA);
        if (i + 4 <= i0 + m) {
            mg_lane_layer_inputs_run(y, j, e, i, 1, WA);
            i += 4;
        }
        for (c = 0; c < e; c++) mg_lane_layer_inputs_tail(y, j + c, i, i0 + m - i, WA);
    }
}

/* The reverse sweep of a layer's chains (see mg_lane_layer_load) over lanes
 * [0, len) from l0, a chunk at a time. */
MG_SIMD static void mg_lanes_layer_backward(const mg_lane_graph *g, const ptrdiff_t *starts, int L,
                                            int n, ptrdiff_t l0, ptrdiff_t len)
{
    mg_lane_layer y;
    ptrdiff_t c0, m;
    mg_lane_layer_load(g, starts, L, n, l0, &y);
    for (c0 = 0; c0 < len; c0 += MG_LANE_CHUNK) {
        double *partials = g->partials + (l0 + c0) / MG_LANE_CHUNK;
        m = len - c0 < MG_LANE_CHUNK ? len - c0 : MG_LANE_CHUNK;
        if (y.w_is_a)
            mg_lane_layer_chunk(&y, c0, m, 1, partials, g->n_chunks);
        else
            mg_lane_layer_chunk(&y, c0, m, 0, partials, g->n_chunks);
    }
}

#endif /* __GNUC__ */

/* Whether a layer can run as one step: vector types, and the op table's +
 * with unit derivatives (replay.pxi asks before it plans one). */
static int mg_lanes_layers_apply(void)
{
#ifdef MG_LANE_LAYERS
    const double z = 0.0;
    return mg_lane_chain_unit(z, z, z);
#else
    return 0;
#endif
}

/* Forward over lanes [l0, l1) of every node with lanes (the nodes without
 * lanes and the inputs' lanes are set before). */
static void mg_lanes_forward(const mg_lane_graph *g, ptrdiff_t l0, ptrdiff_t l1)
{
    const ptrdiff_t n = l1 - l0;
    ptrdiff_t k;
    for (k = 0; k < g->n_order; k++) {
        const int i = g->order[k], op = g->op[i];
        double *out = g->lanes + (ptrdiff_t)g->vslot[i] * g->B + l0;
        if (g->run[k] > 0) {            /* a multiply-add chain: one step */
            mg_lanes_chain_forward(g, k, g->run[k], l0, n);
            k += 2 * (ptrdiff_t)g->run[k] - 1;
            continue;
        }
        switch (mg_op_kind[op]) {
        case MG_KIND_BINARY:
            mg_lane_forward[op](mg_lane_value(g, g->a[i], l0), mg_lane_value(g, g->b[i], l0), out, n);
            break;
        case MG_KIND_BINARY_CA:
            mg_lane_forward[op](mg_lane_const(g->aux[i]), mg_lane_value(g, g->a[i], l0), out, n);
            break;
        case MG_KIND_BINARY_AC:
        case MG_KIND_UNARY:
        case MG_KIND_UNARY_C:
            mg_lane_forward[op](mg_lane_value(g, g->a[i], l0), mg_lane_const(g->aux[i]), out, n);
            break;
        case MG_KIND_NARY:
            if (op == MG_OP_DOT)
                mg_lanes_dot(g, i, out, l0, n);
            else
                mg_lanes_sum(g, i, out, l0, n);
            break;
        default:        /* a leaf: an input, set by the caller */
            break;
        }
    }
}

/* Send operand p its gradient from lanes [l0, l0 + n) of a node: fn's
 * contribution at x0, x1 (out: the node's value lanes, gi: its gradient
 * lanes).  A lane operand gets it in its gradient lanes (set if first); an
 * operand without lanes gets the sum over each chunk of lanes. */
MG_SIMD static void mg_lane_send(const mg_lane_graph *g, mg_lane_grad_fn fn, mg_lane_arg x0,
                                 mg_lane_arg x1, const double *out, const double *gi, int p,
                                 int first, ptrdiff_t l0, ptrdiff_t n)
{
    double share[MG_LANE_CHUNK];
    ptrdiff_t c0, m;
    if (!g->rg[p])
        return;
    if (g->vslot[p] >= 0) {
        fn(x0, x1, out, gi, mg_lane_grad(g, p, l0), n, first);
        return;
    }
    for (c0 = 0; c0 < n; c0 += MG_LANE_CHUNK) {
        m = n - c0 < MG_LANE_CHUNK ? n - c0 : MG_LANE_CHUNK;
        fn(mg_lane_shift(x0, c0), mg_lane_shift(x1, c0), out + c0, gi + c0, share, m, 1);
        g->partials[(ptrdiff_t)g->pslot[p] * g->n_chunks + (l0 + c0) / MG_LANE_CHUNK]
            += mg_lanes_total(share, m);
    }
}

/* Node `node` (with lanes) passes the gradient of lanes [l0, l0 + n) on to
 * its operands, if a gradient reaches it. */
static void mg_lane_node_backward(const mg_lane_graph *g, int node, ptrdiff_t l0, ptrdiff_t n)
{
    const mg_lane_arg one = mg_lane_const(1.0);
    const int op = g->op[node], a = g->a[node], b = g->b[node];
    const unsigned char *first = g->first_ab + 2 * (ptrdiff_t)node;
    if (!g->rg[node] || g->gslot[node] < 0)     /* no gradient reaches it */
        return;
    const double *gi = mg_lane_grad(g, node, l0);
    const double *out = g->lanes + (ptrdiff_t)g->vslot[node] * g->B + l0;
    switch (mg_op_kind[op]) {
    case MG_KIND_BINARY: {
        mg_lane_arg xa = mg_lane_value(g, a, l0), xb = mg_lane_value(g, b, l0);
        mg_lane_send(g, mg_lane_grad_a[op], xa, xb, out, gi, a, first[0], l0, n);
        mg_lane_send(g, mg_lane_grad_b[op], xa, xb, out, gi, b, first[1], l0, n);
        break;
    }
    case MG_KIND_BINARY_CA:
        mg_lane_send(g, mg_lane_grad_a[op], mg_lane_const(g->aux[node]), mg_lane_value(g, a, l0),
                     out, gi, a, first[0], l0, n);
        break;
    case MG_KIND_BINARY_AC:
    case MG_KIND_UNARY:
    case MG_KIND_UNARY_C:
        mg_lane_send(g, mg_lane_grad_a[op], mg_lane_value(g, a, l0), mg_lane_const(g->aux[node]),
                     out, gi, a, first[0], l0, n);
        break;
    case MG_KIND_NARY: {
        const int start = g->args_start[node], count = g->args_start[node + 1] - start;
        const unsigned char *first_arg = g->first_args + start;
        int j;
        if (op == MG_OP_DOT) {
            const int half = count / 2, *w = g->args + start, *x = w + half;
            for (j = 0; j < half; j++) {
                mg_lane_send(g, mg_lanes_d_times, one, mg_lane_value(g, x[j], l0), out, gi,
                             w[j], first_arg[j], l0, n);
                mg_lane_send(g, mg_lanes_d_times, one, mg_lane_value(g, w[j], l0), out, gi,
                             x[j], first_arg[j + half], l0, n);
            }
            if (a >= 0)
                mg_lane_send(g, mg_lanes_d_times, one, one, out, gi, a, first[0], l0, n);
        } else {
            const mg_lane_arg by = mg_lane_const(op == MG_OP_SUM ? 1.0 : count);
            for (j = 0; j < count; j++)
                mg_lane_send(g, op == MG_OP_SUM ? mg_lanes_d_times : mg_lanes_d_over, one, by,
                             out, gi, g->args[start + j], first_arg[j], l0, n);
        }
        break;
    }
    default:
        break;
    }
}

/* Backward over lanes [l0, l1) (l0 a multiple of MG_LANE_CHUNK): the root's
 * gradient is one in every lane (d root / d root for each sample), and the
 * reverse sweep over the nodes with lanes passes every lane's gradient on,
 * in the scalar replay's order; a layer (replay.pxi plans them) runs the
 * other nodes between its chains first, then its chains as one step. */
static void mg_lanes_backward(const mg_lane_graph *g, ptrdiff_t l0, ptrdiff_t l1)
{
    const ptrdiff_t n = l1 - l0;
    ptrdiff_t k, i;
    double *root = mg_lane_grad(g, g->root, l0);
    for (i = 0; i < n; i++) root[i] = 1.0;
    for (k = g->n_order - 1; k >= 0; k--) {
        const int node = g->order[k];
#ifdef MG_LANE_LAYERS
        if (g->layer[k] > 0) {          /* the end of a layer's last chain */
            ptrdiff_t starts[MG_LANE_LAYER_MAX], kk;
            const int count = g->layer[k], pairs = -g->run[k];
            mg_lanes_layer_starts(g->run, g->layer_chain, k, count, starts);
            for (kk = k; kk >= starts[0]; kk--) {   /* the other nodes first, in order */
                if (g->run[kk] < 0) {
                    const ptrdiff_t s0 = kk + 2 * (ptrdiff_t)g->run[kk] + 1;
                    const int end = g->order[kk];
                    if (!g->layer_chain[kk] && g->rg[end] && g->gslot[end] >= 0)
                        mg_lanes_chain_backward(g, s0, -g->run[kk], l0, n);
                    kk = s0;
                } else {
                    mg_lane_node_backward(g, g->order[kk], l0, n);
                }
            }
            mg_lanes_layer_backward(g, starts, count, pairs, l0, n);
            k = starts[0];
            continue;
        }
#endif
        if (g->run[k] < 0) {            /* the end of a multiply-add chain: one step */
            const ptrdiff_t k0 = k + 2 * (ptrdiff_t)g->run[k] + 1;
            if (g->rg[node] && g->gslot[node] >= 0)
                mg_lanes_chain_backward(g, k0, -g->run[k], l0, n);
            k = k0;
            continue;
        }
        mg_lane_node_backward(g, node, l0, n);
    }
}

/* -- the nodes without lanes --------------------------------------------------
 * Computed once per pass on the tape's values (val) and gradients (grad), as
 * the unbatched replay does, node by node with the op table's scalar rules;
 * a fused n-ary node (dot, sum, mean) is left to the caller: the sweep stops
 * there and says where.  nodes: positions in forward order (no leaf in the
 * forward's list).  The op table's switches are inlined into the loops
 * (flatten): a jump per node, no call. */
#if defined(__GNUC__)
#define MG_FLATTEN __attribute__((flatten))
#else
#define MG_FLATTEN
#endif

/* Forward over nodes[k ..): returns n, or the index of an n-ary node. */
MG_FLATTEN static ptrdiff_t mg_shared_forward(const mg_lane_graph *g, double *restrict val, const int *nodes,
                                   ptrdiff_t k, ptrdiff_t n)
{
    for (; k < n; k++) {
        const int i = nodes[k], op = g->op[i], count = mg_op_operands(op);
        if (!count)
            return k;
        if (op == MG_OP_MUL)        /* micrograd's graphs: * and + of two nodes, */
            val[i] = mg_f_MUL(val[g->a[i]], val[g->b[i]]);      /* without a switch */
        else if (op == MG_OP_ADD)
            val[i] = mg_f_ADD(val[g->a[i]], val[g->b[i]]);
        else
            val[i] = mg_forward(op, val[g->a[i]], count == 2 ? val[g->b[i]] : 0.0, g->aux[i]);
    }
    return n;
}

/* The reverse sweep over nodes[.. k), from nodes[k - 1] down (leaves are
 * skipped), each node passing its gradient to its operands (to every one, as
 * the tape's sweep does: a node that takes no gradient is never read back):
 * returns 0, or k with nodes[k - 1] an n-ary node. */
MG_FLATTEN static ptrdiff_t mg_shared_backward(const mg_lane_graph *g, const double *restrict val,
                                    double *restrict grad, const int *nodes, ptrdiff_t k)
{
    for (; k > 0; k--) {
        const int i = nodes[k - 1], op = g->op[i], count = mg_op_operands(op);
        int p;
        double da, db;
        if (op == MG_OP_LEAF)
            continue;
        if (!count)
            return k;
        p = g->a[i];
        if (op == MG_OP_MUL || op == MG_OP_ADD) {     /* as mg_local_grads, without a switch */
            const double va = val[p], vb = val[g->b[i]];
            da = op == MG_OP_MUL ? mg_da_MUL(va, vb, val[i]) : mg_da_ADD(va, vb, val[i]);
            db = op == MG_OP_MUL ? mg_db_MUL(va, vb, val[i]) : mg_db_ADD(va, vb, val[i]);
            grad[p] += grad[i] * da;
            grad[g->b[i]] += grad[i] * db;
        } else if (count == 2) {
            mg_local_grads(op, val[p], val[g->b[i]], val[i], g->aux[i], &da, &db);
            grad[p] += grad[i] * da;
            grad[g->b[i]] += grad[i] * db;
        } else {
            mg_local_grads(op, val[p], 0.0, val[i], g->aux[i], &da, &db);
            grad[p] += grad[i] * da;
        }
    }
    return 0;
}

/* -- threads ------------------------------------------------------------------ */
typedef void (*mg_lane_task)(const mg_lane_graph *g, ptrdiff_t l0, ptrdiff_t l1);

typedef struct {
    mg_lane_task task;
    const mg_lane_graph *g;
    ptrdiff_t l0, l1;
} mg_lane_job;

#ifndef _WIN32
static void *mg_lane_job_run(void *p)
{
    mg_lane_job *job = (mg_lane_job *)p;
    job->task(job->g, job->l0, job->l1);
    return NULL;
}
#endif

#define MG_LANES_MAX_THREADS 64

/* Run task over lanes [0, B) split into `threads` contiguous ranges (whole
 * chunks of lanes each), the first on the calling thread, the others on
 * native threads; a range whose thread cannot start runs on the calling
 * thread.  Without pthreads (Windows) the ranges run one after the other. */
static void mg_lanes_run(mg_lane_task task, const mg_lane_graph *g, int threads)
{
    mg_lane_job jobs[MG_LANES_MAX_THREADS];
#ifndef _WIN32
    pthread_t ids[MG_LANES_MAX_THREADS];
    int started[MG_LANES_MAX_THREADS];
#endif
    ptrdiff_t step, l0;
    int t, n_jobs = 0;
    if (threads > MG_LANES_MAX_THREADS) threads = MG_LANES_MAX_THREADS;
    if (threads < 1) threads = 1;
    step = (g->B + threads - 1) / threads;
    step = (step + MG_LANE_CHUNK - 1) / MG_LANE_CHUNK * MG_LANE_CHUNK;
    for (l0 = 0; l0 < g->B; l0 += step, n_jobs++) {
        jobs[n_jobs].task = task;
        jobs[n_jobs].g = g;
        jobs[n_jobs].l0 = l0;
        jobs[n_jobs].l1 = l0 + step < g->B ? l0 + step : g->B;
    }
#ifndef _WIN32
    for (t = 1; t < n_jobs; t++)
        started[t] = pthread_create(&ids[t], NULL, mg_lane_job_run, &jobs[t]) == 0;
    task(g, jobs[0].l0, jobs[0].l1);
    for (t = 1; t < n_jobs; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            task(g, jobs[t].l0, jobs[t].l1);
    }
#else
    for (t = 0; t < n_jobs; t++)
        task(g, jobs[t].l0, jobs[t].l1);
#endif
}

#endif /* MG_LANES_H */

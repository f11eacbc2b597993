/* mg_ops.h: the op table (mg_ops.def) expanded into C.
 *
 * From each row this header derives the op codes, the scalar forward value
 * and local derivatives (used by Value nodes, the graph builder and the
 * replay tape alike, so a replayed value is the same computation as a
 * freshly built one, bit for bit), the kind of each op code, and a table of
 * the rows' text for the Python side (microgrid.core.optable).  The array
 * loops of Tensor nodes are derived in mg_ufuncs.h from the same inline
 * functions.
 */
#ifndef MG_OPS_H
#define MG_OPS_H

#include "mg_scalar.h"

/* The array loops (mg_ufuncs.h, mg_lanes.h) are compiled twice on x86-64
 * Linux with GCC, for AVX2 and for the baseline, and the loader picks one
 * for the machine (the same IEEE operations either way, no FMA
 * contraction: the results agree bit for bit). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MG_SIMD __attribute__((target_clones("avx2", "default")))
#else
#define MG_SIMD
#endif

/* A helper inlined at every call, optimising or not: one whose flags are
 * constants at each call (each call becomes its own branch-free loop), or
 * one that takes or returns a vector and is called from an AVX2 clone
 * (called out of line, it would pass the vector by another convention). */
#if defined(__GNUC__) || defined(__clang__)
#define MG_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define MG_ALWAYS_INLINE inline
#endif

/* Four doubles, for the loops the compiler would not vectorise as written
 * (GCC and Clang; elsewhere MG_V4 is undefined and those loops keep their
 * scalar forms).  Their operations are carried out element by element, in
 * whatever vector width the clone has: the same IEEE operations. */
#if defined(__GNUC__) || defined(__clang__)
#define MG_V4 1
#include <stddef.h>
#include <string.h>

typedef double mg_v4 __attribute__((vector_size(4 * sizeof(double))));

/* p[0], p[s], p[2 s], p[3 s] */
static MG_ALWAYS_INLINE mg_v4 mg_v4_load(const double *p, ptrdiff_t s)
{
    mg_v4 v;
    if (s == 1)
        memcpy(&v, p, sizeof v);
    else
        v = (mg_v4){p[0], p[s], p[2 * s], p[3 * s]};
    return v;
}

static MG_ALWAYS_INLINE void mg_v4_store(double *p, ptrdiff_t s, mg_v4 v)
{
    if (s == 1) {
        memcpy(p, &v, sizeof v);
    } else {
        p[0] = v[0];
        p[s] = v[1];
        p[2 * s] = v[2];
        p[3 * s] = v[3];
    }
}
#endif

/* -- op codes --------------------------------------------------------------
 * LEAF and CUSTOM first, then every row in table order; a binary row also
 * gives the codes of its constant-operand forms. */
#define MG_BINARY(CODE, ...) MG_OP_##CODE, MG_OP_##CODE##_AC, MG_OP_##CODE##_CA,
#define MG_UNARY(CODE, ...) MG_OP_##CODE,
#define MG_UNARY_C(CODE, ...) MG_OP_##CODE,
#define MG_END_OF_RULES()
#define MG_NARY(CODE, ...) MG_OP_##CODE,
#define MG_TENSOR(CODE, ...) MG_OP_##CODE,
typedef enum {
    MG_OP_LEAF = 0,
    MG_OP_CUSTOM,       /* built by Value(data, _children, _op): parents kept, no rule */
#include "mg_ops.def"
    MG_OP_COUNT
} mg_op;
#include "mg_ops_clear.h"

/* -- kinds: how a node of each op code is computed --------------------------- */
typedef enum {
    MG_KIND_LEAF = 0,
    MG_KIND_CUSTOM,       /* no rule: a node the user built by hand */
    MG_KIND_BINARY,       /* a op b: two operand nodes */
    MG_KIND_BINARY_AC,    /* a op c: operand a, constant c */
    MG_KIND_BINARY_CA,    /* c op a: constant c, operand a */
    MG_KIND_UNARY,        /* f(a) */
    MG_KIND_UNARY_C,      /* f(a; c): a constant parameter c */
    MG_KIND_NARY,         /* fused n-ary Value node */
    /* tensor nodes with whole-array rules, by family */
    MG_KIND_ELEMENTWISE,
    MG_KIND_REDUCE,
    MG_KIND_SHAPE,
    MG_KIND_PRODUCT,
    MG_KIND_LOSS,
    MG_KIND_CONV
} mg_kind;

/* -- the scalar rules ----------------------------------------------------------
 * The row's formulas become inline functions of doubles:
 *   mg_f_<CODE>(a, b)  and  mg_da_<CODE> / mg_db_<CODE>(a, b, out)  (binary)
 *   mg_f_<CODE>(a, c)  and  mg_da_<CODE>(a, out, c)                 (unary)
 * with the expression vocabulary of mg_scalar.h in scope. */
/* The expression vocabulary of the rows (mg_scalar.h has the functions). */
#define where(cond, x, y) ((cond) ? (x) : (y))
#define sigmoid mg_sigmoid
#define softplus mg_softplus
#define sign mg_sign
#define MG_BINARY(CODE, name, symbol, F, DA, DB, ...)                                  \
    static inline double mg_f_##CODE(double a, double b) { return (F); }               \
    static inline double mg_da_##CODE(double a, double b, double out)                  \
    { (void)a; (void)b; (void)out; return (DA); }                                      \
    static inline double mg_db_##CODE(double a, double b, double out)                  \
    { (void)a; (void)b; (void)out; return (DB); }
#define MG_UNARY(CODE, name, symbol, torch, F, DA, ...)                                \
    static inline double mg_f_##CODE(double a, double c) { (void)c; return (F); }      \
    static inline double mg_da_##CODE(double a, double out, double c)                  \
    { (void)a; (void)out; (void)c; return (DA); }
#define MG_UNARY_C(CODE, name, symbol, torch, param, dflt, F, DA, ...)                 \
    static inline double mg_f_##CODE(double a, double c) { return (F); }               \
    static inline double mg_da_##CODE(double a, double out, double c)                  \
    { (void)a; (void)out; (void)c; return (DA); }
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
#undef where
#undef sigmoid
#undef softplus
#undef sign

/* The kind of each op code. */
static const unsigned char mg_op_kind[MG_OP_COUNT] = {
    MG_KIND_LEAF, MG_KIND_CUSTOM,
#define MG_BINARY(...) MG_KIND_BINARY, MG_KIND_BINARY_AC, MG_KIND_BINARY_CA,
#define MG_UNARY(...) MG_KIND_UNARY,
#define MG_UNARY_C(...) MG_KIND_UNARY_C,
#define MG_END_OF_RULES()
#define MG_NARY(...) MG_KIND_NARY,
#define MG_TENSOR(CODE, symbol, family) MG_KIND_##family,
#include "mg_ops.def"
#include "mg_ops_clear.h"
};

/* How many operand nodes op's scalar rule reads: 2 for a op b, 1 for f(a),
 * a op c and c op a, 0 for an op without a scalar rule (a table, not a
 * switch: the reverse sweep asks it once per node). */
static const unsigned char mg_op_operand_count[MG_OP_COUNT] = {
    0, 0,   /* LEAF, CUSTOM */
#define MG_BINARY(...) 2, 1, 1,
#define MG_UNARY(...) 1,
#define MG_UNARY_C(...) 1,
#define MG_END_OF_RULES()
#define MG_NARY(...) 0,
#define MG_TENSOR(...) 0,
#include "mg_ops.def"
#include "mg_ops_clear.h"
};

static inline int mg_op_operands(int op)
{
    return mg_op_operand_count[op];
}

/* The value of op at operands a (, b) and constant c. */
static inline double mg_forward(int op, double a, double b, double c)
{
    switch (op) {
#define MG_BINARY(CODE, ...)                                                           \
    case MG_OP_##CODE: return mg_f_##CODE(a, b);                                       \
    case MG_OP_##CODE##_AC: return mg_f_##CODE(a, c);                                  \
    case MG_OP_##CODE##_CA: return mg_f_##CODE(c, a);
#define MG_UNARY(CODE, ...) case MG_OP_##CODE: return mg_f_##CODE(a, c);
#define MG_UNARY_C(CODE, ...) case MG_OP_##CODE: return mg_f_##CODE(a, c);
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
    default: return NAN;
    }
}

/* The local derivatives of op's value out with respect to its operand
 * nodes: *da for a, *db for b (left untouched unless op reads two). */
static inline void mg_local_grads(int op, double a, double b, double out, double c,
                                  double *da, double *db)
{
    switch (op) {
#define MG_BINARY(CODE, ...)                                                           \
    case MG_OP_##CODE: *da = mg_da_##CODE(a, b, out); *db = mg_db_##CODE(a, b, out); return; \
    case MG_OP_##CODE##_AC: *da = mg_da_##CODE(a, c, out); return;                     \
    case MG_OP_##CODE##_CA: *da = mg_db_##CODE(c, a, out); return;
#define MG_UNARY(CODE, ...) case MG_OP_##CODE: *da = mg_da_##CODE(a, out, c); return;
#define MG_UNARY_C(CODE, ...) case MG_OP_##CODE: *da = mg_da_##CODE(a, out, c); return;
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
    default: *da = NAN; return;
    }
}

/* The two above compiled once, out of line, for the loops that name their
 * commonest rows and leave the others to the table: the whole switch
 * inlined into such a loop makes it too large for GCC to keep the loop's
 * own helpers inline (the replay tape's node evaluation, for one). */
#if defined(__GNUC__) || defined(__clang__)
#define MG_NOINLINE __attribute__((noinline))
#else
#define MG_NOINLINE
#endif

MG_NOINLINE static double mg_forward_call(int op, double a, double b, double c)
{
    return mg_forward(op, a, b, c);
}

MG_NOINLINE static void mg_local_grads_call(int op, double a, double b, double out, double c,
                                            double *da, double *db)
{
    mg_local_grads(op, a, b, out, c, da, db);
}

/* -- the rows' text, for the Python side ----------------------------------------
 * One entry per op code (a binary row's constant forms share its text). */
typedef struct {
    int code;
    int kind;
    int base;                 /* the row's own code (differs for a op c, c op a) */
    const char *code_name;    /* "SIGMOID" */
    const char *name;         /* method name, "" if none */
    const char *symbol;       /* the node's _op */
    const char *torch;        /* PyTorch's functional / nn names, "" if none */
    const char *param;        /* keyword(s) of the constant, "" if none */
    double param_default;
    const char *forward;      /* the formulas, as written in the row */
    const char *grad_a;
    const char *grad_b;
    const char *show;         /* display templates */
    const char *show_grad_a;
    const char *show_grad_b;
} mg_op_row;

static const mg_op_row mg_op_rows[MG_OP_COUNT] = {
    {MG_OP_LEAF, MG_KIND_LEAF, MG_OP_LEAF, "LEAF", "", "", "", "", 0, "", "", "", "", "", ""},
    {MG_OP_CUSTOM, MG_KIND_CUSTOM, MG_OP_CUSTOM, "CUSTOM", "", "", "", "", 0, "", "", "", "", "", ""},
#define MG_BINARY(CODE, name, symbol, F, DA, DB, show, sa, sb)                         \
    {MG_OP_##CODE, MG_KIND_BINARY, MG_OP_##CODE, #CODE, name, symbol, "", "", 0,       \
     #F, #DA, #DB, show, sa, sb},                                                      \
    {MG_OP_##CODE##_AC, MG_KIND_BINARY_AC, MG_OP_##CODE, #CODE "_AC", "", symbol, "", "", 0, \
     #F, #DA, #DB, show, sa, sb},                                                      \
    {MG_OP_##CODE##_CA, MG_KIND_BINARY_CA, MG_OP_##CODE, #CODE "_CA", "", symbol, "", "", 0, \
     #F, #DA, #DB, show, sa, sb},
#define MG_UNARY(CODE, name, symbol, torch, F, DA, show, sa)                           \
    {MG_OP_##CODE, MG_KIND_UNARY, MG_OP_##CODE, #CODE, name, symbol, torch, "", 0,     \
     #F, #DA, "", show, sa, ""},
#define MG_UNARY_C(CODE, name, symbol, torch, param, dflt, F, DA, show, sa)            \
    {MG_OP_##CODE, MG_KIND_UNARY_C, MG_OP_##CODE, #CODE, name, symbol, torch, param, dflt, \
     #F, #DA, "", show, sa, ""},
#define MG_END_OF_RULES()
#define MG_NARY(CODE, symbol, show, sa)                                                \
    {MG_OP_##CODE, MG_KIND_NARY, MG_OP_##CODE, #CODE, "", symbol, "", "", 0,           \
     "", "", "", show, sa, ""},
#define MG_TENSOR(CODE, symbol, family)                                                \
    {MG_OP_##CODE, MG_KIND_##family, MG_OP_##CODE, #CODE, "", symbol, "", "", 0,       \
     "", "", "", "", "", ""},
#include "mg_ops.def"
#include "mg_ops_clear.h"
};

#endif /* MG_OPS_H */

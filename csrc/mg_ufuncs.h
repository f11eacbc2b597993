/* mg_ufuncs.h: the array loops of the op table's rows, as numpy ufunc inner
 * loops.  Each loop applies a row's inline function from mg_ops.h to every
 * element, so a Tensor op computes exactly what the Value op does, element
 * by element, while numpy's ufunc machinery handles broadcasting, strides
 * and output buffers.  Contiguous operands (the common case) take a plain
 * indexed loop the compiler can vectorise.
 *
 * Per row, indexed by op code (NULL where a code has no row):
 *   mg_forward_loops   (a, c) -> out            unary rows (c: the constant, 0 if none)
 *                      (a, b) -> out            binary rows
 *   mg_grad_a_loops    (a, out, g, c) -> g * d out/da          unary rows
 *                      (a, b, out, g) -> g * d out/da          binary rows
 *   mg_grad_b_loops    (a, b, out, g) -> g * d out/db          binary rows
 * Only for use from one compiled module (the tables are static).
 */
#ifndef MG_UFUNCS_H
#define MG_UFUNCS_H

#include <numpy/ndarraytypes.h>
#include <numpy/ufuncobject.h>
#include "mg_ops.h"

#define MG_D(p) (*(const double *)(p))

/* Two inputs x0, x1 -> one output. */
#define MG_LOOP2(NAME, EXPR)                                                           \
    MG_SIMD static void NAME(char **args, npy_intp const *dims, npy_intp const *steps, void *d) \
    {                                                                                  \
        npy_intp n = dims[0], i;                                                       \
        char *p0 = args[0], *p1 = args[1], *po = args[2];                              \
        (void)d;                                                                       \
        if (steps[0] == sizeof(double) && steps[2] == sizeof(double)                   \
            && (steps[1] == sizeof(double) || steps[1] == 0)) {                        \
            const double *restrict A = (const double *)p0;                             \
            const double *restrict B = (const double *)p1;                             \
            double *restrict O = (double *)po;                                         \
            if (steps[1] == 0) {                                                       \
                const double x1 = B[0];                                                \
                for (i = 0; i < n; i++) { const double x0 = A[i]; O[i] = (EXPR); }     \
            } else {                                                                   \
                for (i = 0; i < n; i++) { const double x0 = A[i], x1 = B[i]; O[i] = (EXPR); } \
            }                                                                          \
            return;                                                                    \
        }                                                                              \
        for (i = 0; i < n; i++, p0 += steps[0], p1 += steps[1], po += steps[2]) {     \
            const double x0 = MG_D(p0), x1 = MG_D(p1);                                 \
            *(double *)po = (EXPR);                                                    \
        }                                                                              \
    }

/* Four inputs x0..x3 -> one output; x3 may be a constant (stride 0: the
 * constant c of a one-operand row's derivative). */
#define MG_LOOP4(NAME, EXPR)                                                           \
    MG_SIMD static void NAME(char **args, npy_intp const *dims, npy_intp const *steps, void *d) \
    {                                                                                  \
        npy_intp n = dims[0], i;                                                       \
        char *p0 = args[0], *p1 = args[1], *p2 = args[2], *p3 = args[3], *po = args[4]; \
        (void)d;                                                                       \
        if (steps[0] == sizeof(double) && steps[1] == sizeof(double)                   \
            && steps[2] == sizeof(double) && steps[4] == sizeof(double)                \
            && (steps[3] == sizeof(double) || steps[3] == 0)) {                        \
            const double *restrict A = (const double *)p0;                             \
            const double *restrict B = (const double *)p1;                             \
            const double *restrict C = (const double *)p2;                             \
            const double *restrict D = (const double *)p3;                             \
            double *restrict O = (double *)po;                                         \
            if (steps[3] == 0) {                                                       \
                const double x3 = D[0];                                                \
                for (i = 0; i < n; i++) {                                              \
                    const double x0 = A[i], x1 = B[i], x2 = C[i];                      \
                    O[i] = (EXPR);                                                     \
                }                                                                      \
            } else {                                                                   \
                for (i = 0; i < n; i++) {                                              \
                    const double x0 = A[i], x1 = B[i], x2 = C[i], x3 = D[i];           \
                    O[i] = (EXPR);                                                     \
                }                                                                      \
            }                                                                          \
            return;                                                                    \
        }                                                                              \
        for (i = 0; i < n; i++, p0 += steps[0], p1 += steps[1], p2 += steps[2],       \
                              p3 += steps[3], po += steps[4]) {                        \
            const double x0 = MG_D(p0), x1 = MG_D(p1), x2 = MG_D(p2), x3 = MG_D(p3);   \
            *(double *)po = (EXPR);                                                    \
        }                                                                              \
    }

#define MG_BINARY(CODE, ...)                                                           \
    MG_LOOP2(mg_loop_f_##CODE, mg_f_##CODE(x0, x1))                                    \
    MG_LOOP4(mg_loop_da_##CODE, x3 * mg_da_##CODE(x0, x1, x2))                         \
    MG_LOOP4(mg_loop_db_##CODE, x3 * mg_db_##CODE(x0, x1, x2))
#define MG_UNARY(CODE, ...)                                                            \
    MG_LOOP2(mg_loop_f_##CODE, mg_f_##CODE(x0, x1))                                    \
    MG_LOOP4(mg_loop_da_##CODE, x2 * mg_da_##CODE(x0, x1, x3))
#define MG_UNARY_C MG_UNARY
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"

static PyUFuncGenericFunction mg_forward_loops[MG_OP_COUNT];
static PyUFuncGenericFunction mg_grad_a_loops[MG_OP_COUNT];
static PyUFuncGenericFunction mg_grad_b_loops[MG_OP_COUNT];

/* Fill the three tables (call once, before making ufuncs of them). */
static void mg_ufuncs_init(void)
{
#define MG_BINARY(CODE, ...)                                                           \
    mg_forward_loops[MG_OP_##CODE] = mg_loop_f_##CODE;                                 \
    mg_grad_a_loops[MG_OP_##CODE] = mg_loop_da_##CODE;                                 \
    mg_grad_b_loops[MG_OP_##CODE] = mg_loop_db_##CODE;
#define MG_UNARY(CODE, ...)                                                            \
    mg_forward_loops[MG_OP_##CODE] = mg_loop_f_##CODE;                                 \
    mg_grad_a_loops[MG_OP_##CODE] = mg_loop_da_##CODE;
#define MG_UNARY_C MG_UNARY
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
}

#endif /* MG_UFUNCS_H */

/* mg_tape.h: the replay tape's loops, and the arithmetic of the fused dot
 * node (bias + sum of w[k] * x[k]).
 *
 * The dot's order of additions is written once, here (MG_DOT_SUM): a Value
 * dot built from Python, a replayed dot and a batched lane (mg_lanes.h,
 * which keeps the same four sums per lane) all add in this order, so a
 * replay equals a fresh build bit for bit.
 */
#ifndef MG_TAPE_H
#define MG_TAPE_H

#include <Python.h>
#include <stddef.h>
#include "mg_ops.h"

/* out = bias + sum over k < n of TERM(k), in four partial sums so that the
 * additions do not wait on each other: term k < n - n % 4 goes to sum
 * k % 4, the rest to the first (which starts at the bias), then
 * (s0 + s1) + (s2 + s3).  Four sums are also one AVX2 register. */
#define MG_DOT_SUM(out, n, bias, TERM)                                                  \
    do {                                                                                \
        double s0_ = (bias), s1_ = 0.0, s2_ = 0.0, s3_ = 0.0;                           \
        ptrdiff_t k_ = 0;                                                               \
        for (; k_ + 4 <= (n); k_ += 4) {                                                \
            s0_ += TERM(k_);                                                            \
            s1_ += TERM(k_ + 1);                                                        \
            s2_ += TERM(k_ + 2);                                                        \
            s3_ += TERM(k_ + 3);                                                        \
        }                                                                               \
        for (; k_ < (n); k_++)                                                          \
            s0_ += TERM(k_);                                                            \
        (out) = (s0_ + s1_) + (s2_ + s3_);                                              \
    } while (0)

/* A dot node's value from its operand Values: items[k] and items[n + k]
 * are pair k's weight and input, whose values sit data_offset bytes into
 * the objects. */
#define MG_DOT_DATA(o) (*(const double *)((const char *)(o) + data_offset))
#define MG_DOT_VALUES_TERM(k) (MG_DOT_DATA(items[k]) * MG_DOT_DATA(items[n + (k)]))

static inline double mg_dot_values(PyObject *const *items, ptrdiff_t n, double bias,
                                   ptrdiff_t data_offset)
{
    double out;
    MG_DOT_SUM(out, n, bias, MG_DOT_VALUES_TERM);
    return out;
}

/* -- the replay tape's dots ------------------------------------------------------
 * A dot whose weights and inputs the tape looks up: pair k at positions
 * w[k] and x[k]. */

#define MG_DOT_GATHER_TERM(k) (val[w[k]] * val[x[k]])

MG_SIMD static double mg_tape_dot(const double *val, const int *w, const int *x, ptrdiff_t n,
                                  double bias)
{
    double out;
    MG_DOT_SUM(out, n, bias, MG_DOT_GATHER_TERM);
    return out;
}

/* Its gradient g passed on, pair by pair. */
MG_SIMD static void mg_tape_dot_back(const double *val, double *grad, const int *w,
                                     const int *x, ptrdiff_t n, double g)
{
    for (ptrdiff_t k = 0; k < n; k++) {
        grad[w[k]] += g * val[x[k]];
        grad[x[k]] += g * val[w[k]];
    }
}

/* A row of dots: m >= 1 dots at consecutive positions out..out + m - 1 (a
 * layer of neurons on one sample) that read the same inputs, in a run of
 * positions x0 + k * sx, dot j its weights in a run w0 + j * row_step +
 * k * sw and its bias at bias[j] (-1: none); the runs apart, made before the
 * row, no bias among the inputs.  Stepping through runs, the loops look no
 * position up.  One call evaluates the row, or passes all its gradients on
 * (each position's additions in the order the sweep would make them one
 * dot at a time, the last dot first).
 *
 * MG_BY_STEPS compiles a loop for the steps a layered network gives
 * (weights made one after another: 1; the layer below, in the order
 * backward() enters it: -1, or 1 for leaves) with the steps known, so that
 * it becomes a vector loop, and once for any other steps. */
#define MG_BY_STEPS(sw, sx, LOOP)                                                       \
    do {                                                                                 \
        if ((sw) == 1 && (sx) == -1)                                                     \
            LOOP(1, -1);                                                                 \
        else if ((sw) == 1 && (sx) == 1)                                                 \
            LOOP(1, 1);                                                                  \
        else                                                                             \
            LOOP(sw, sx);                                                                \
    } while (0)

#define MG_DOT_RUN_TERM(k) (wr[(k) * sw] * xr[(k) * sx])

static inline double mg_dot_run(const double *restrict wr, ptrdiff_t sw,
                                const double *restrict xr, ptrdiff_t sx, ptrdiff_t n,
                                double bias)
{
    double out;
    MG_DOT_SUM(out, n, bias, MG_DOT_RUN_TERM);
    return out;
}

#define MG_DOT_BIAS(j) (bias[j] >= 0 ? val[bias[j]] : 0.0)

/* Dots of fewer than four pairs (a first layer on points in the plane, say)
 * add every term to the first sum: four of them at a time are the lanes of
 * one vector, each lane the additions MG_DOT_SUM makes, (s + 0) + (0 + 0)
 * at the end. */
#ifdef MG_V4
#define MG_DOT_ROWS_NARROW(SW, SX)                                                      \
    if (n < 4)                                                                           \
        for (; j + 4 <= m; j += 4) {                                                     \
            const double *w = val + w0 + (ptrdiff_t)j * row_step;                        \
            mg_v4 s = {MG_DOT_BIAS(j), MG_DOT_BIAS(j + 1), MG_DOT_BIAS(j + 2),           \
                       MG_DOT_BIAS(j + 3)};                                              \
            for (ptrdiff_t k = 0; k < n; k++)                                            \
                s += mg_v4_load(w + k * (SW), row_step) * val[x0 + k * (SX)];            \
            mg_v4_store(val + out + j, 1, (s + 0.0) + (0.0 + 0.0));                      \
        }
#else
#define MG_DOT_ROWS_NARROW(SW, SX)
#endif

#define MG_DOT_ROWS(SW, SX)                                                             \
    do {                                                                                 \
        int j = 0;                                                                       \
        MG_DOT_ROWS_NARROW(SW, SX)                                                       \
        for (; j < m; j++)                                                               \
            val[out + j] = mg_dot_run(val + w0 + (ptrdiff_t)j * row_step, SW, val + x0, SX, \
                                      n, MG_DOT_BIAS(j));                                \
    } while (0)

MG_SIMD static void mg_tape_dot_rows(double *val, int out, int m, int w0, int row_step, int sw,
                                     int x0, int sx, ptrdiff_t n, const int *bias)
{
    MG_BY_STEPS(sw, sx, MG_DOT_ROWS);
}

/* to[k * step] += g * other[k * other_step] for k < n */
static inline void mg_dot_pass_run(double *restrict to, ptrdiff_t step,
                                   const double *restrict other, ptrdiff_t other_step,
                                   ptrdiff_t n, double g)
{
    for (ptrdiff_t k = 0; k < n; k++)
        to[k * step] += g * other[k * other_step];
}

/* The inputs' gradients: each input's own sum, taken in registers for four
 * inputs at a time over the dots, the last dot first, rather than through
 * memory dot by dot. */
static inline void mg_dot_rows_pass_x(double *restrict gx, ptrdiff_t sx,
                                      const double *restrict w, ptrdiff_t row_step,
                                      ptrdiff_t sw, const double *restrict g, int m,
                                      ptrdiff_t n)
{
    ptrdiff_t k = 0;
    for (; k + 4 <= n; k += 4) {
        double a0 = gx[k * sx], a1 = gx[(k + 1) * sx], a2 = gx[(k + 2) * sx],
               a3 = gx[(k + 3) * sx];
        for (int j = m - 1; j >= 0; j--) {
            const double *wj = w + (ptrdiff_t)j * row_step + k * sw;
            a0 += g[j] * wj[0];
            a1 += g[j] * wj[sw];
            a2 += g[j] * wj[2 * sw];
            a3 += g[j] * wj[3 * sw];
        }
        gx[k * sx] = a0;
        gx[(k + 1) * sx] = a1;
        gx[(k + 2) * sx] = a2;
        gx[(k + 3) * sx] = a3;
    }
    for (; k < n; k++) {
        double a = gx[k * sx];
        for (int j = m - 1; j >= 0; j--)
            a += g[j] * w[(ptrdiff_t)j * row_step + k * sw];
        gx[k * sx] = a;
    }
}

/* Inputs k .. k + 4 NV - 1 of a row whose weights are runs of step 1: the
 * inputs' values and their gradients' sums stay in registers (NV vectors of
 * four, whose additions do not wait on each other) while the dots, the
 * last first, hand each sum its share and each weight its own. */
#ifdef MG_V4
#define MG_DOT_ROWS_BACK_BLOCK(NV, SX)                                                  \
    for (; k + 4 * (NV) <= n; k += 4 * (NV)) {                                           \
        mg_v4 x_[NV], gx_[NV];                                                           \
        for (int v = 0; v < (NV); v++) {                                                 \
            x_[v] = mg_v4_load(val + x0 + (k + 4 * v) * (SX), (SX));                     \
            gx_[v] = mg_v4_load(grad + x0 + (k + 4 * v) * (SX), (SX));                   \
        }                                                                                \
        for (int j = m - 1; j >= 0; j--) {                                               \
            const double g = grad[out + j];                                              \
            const ptrdiff_t w = w0 + (ptrdiff_t)j * row_step + k;                        \
            for (int v = 0; v < (NV); v++) {                                             \
                mg_v4_store(grad + w + 4 * v, 1,                                         \
                            mg_v4_load(grad + w + 4 * v, 1) + g * x_[v]);                \
                gx_[v] += g * mg_v4_load(val + w + 4 * v, 1);                            \
            }                                                                            \
        }                                                                                \
        for (int v = 0; v < (NV); v++)                                                   \
            mg_v4_store(grad + x0 + (k + 4 * v) * (SX), (SX), gx_[v]);                   \
    }
#else
#define MG_DOT_ROWS_BACK_BLOCK(NV, SX)
#endif

/* Every position takes its additions in the order the sweep would make
 * them one dot at a time, the last dot first: a weight or a bias one per
 * dot, each input its sum over the dots.  The runs are apart, no bias is an
 * input, and no dot's bias is a weight of a dot before it (the tape
 * checks), so that passing the inputs k < K on for every dot before the
 * weights k >= K and the biases changes no bit.  With the weights in runs
 * of step 1, the inputs go in blocks of sixteen and then four; the rest
 * (any other steps, and the last n % 4 pairs) in the loops above. */
#define MG_DOT_ROWS_BACK(SW, SX)                                                        \
    do {                                                                                 \
        ptrdiff_t k = 0;                                                                 \
        if ((SW) == 1) {                                                                 \
            MG_DOT_ROWS_BACK_BLOCK(4, SX)                                                \
            MG_DOT_ROWS_BACK_BLOCK(1, SX)                                                \
        }                                                                                \
        for (int j = m - 1; j >= 0; j--) {                                               \
            const double g = grad[out + j];                                              \
            mg_dot_pass_run(grad + w0 + (ptrdiff_t)j * row_step + k * (SW), SW,           \
                            val + x0 + k * (SX), SX, n - k, g);                          \
            if (bias[j] >= 0)                                                            \
                grad[bias[j]] += g;                                                      \
        }                                                                                \
        mg_dot_rows_pass_x(grad + x0 + k * (SX), SX, val + w0 + k * (SW), row_step, SW,  \
                           grad + out, m, n - k);                                        \
    } while (0)

MG_SIMD static void mg_tape_dot_rows_back(const double *val, double *grad, int out, int m,
                                          int w0, int row_step, int sw, int x0, int sx,
                                          ptrdiff_t n, const int *bias)
{
    MG_BY_STEPS(sw, sx, MG_DOT_ROWS_BACK);
}

/* -- a row of unary nodes ------------------------------------------------------
 * m nodes of one unary op and constant c at consecutive positions
 * out..out + m - 1 (the activations of a row of dots), node j reading
 * position a0 + j * a_step, all made before the row.  ReLU's loops are
 * vector loops (backward, where the step is 1: a row of dots'
 * activations); other ops go through the table's switch. */

MG_SIMD static void mg_tape_unary_rows(int op, double *val, int out, int m, int a0, int a_step,
                                       double c)
{
    if (op == MG_OP_RELU) {
        for (int j = 0; j < m; j++)
            val[out + j] = mg_f_RELU(val[a0 + (ptrdiff_t)j * a_step], c);
        return;
    }
    for (int j = 0; j < m; j++)
        val[out + j] = mg_forward(op, val[a0 + (ptrdiff_t)j * a_step], 0.0, c);
}

/* grad_a[j] += grad_out[j] * ReLU'(a[j]), the last first */
static inline void mg_relu_row_back(double *restrict grad_a, const double *restrict grad_out,
                                    const double *restrict a, const double *restrict out,
                                    int m, double c)
{
    for (int j = m - 1; j >= 0; j--)
        grad_a[j] += grad_out[j] * mg_da_RELU(a[j], out[j], c);
}

/* Their gradients passed on, the last node first (each operand is another
 * position, and the operands are apart from the row: the order changes no
 * bit). */
MG_SIMD static void mg_tape_unary_rows_back(int op, const double *val, double *grad, int out,
                                            int m, int a0, int a_step, double c)
{
    double da, db;
    if (op == MG_OP_RELU && a_step == 1) {
        mg_relu_row_back(grad + a0, grad + out, val + a0, val + out, m, c);
        return;
    }
    for (int j = m - 1; j >= 0; j--) {
        const ptrdiff_t p = a0 + (ptrdiff_t)j * a_step;
        mg_local_grads(op, val[p], 0.0, val[out + j], c, &da, &db);
        grad[p] += grad[out + j] * da;
    }
}

#endif /* MG_TAPE_H */

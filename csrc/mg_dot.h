/* mg_dot.h: the arithmetic of the fused dot node (bias + sum of w[k] * x[k]).
 *
 * Its order of additions is written once, here (MG_DOT_SUM): a Value dot
 * built from Python, a replayed dot and a batched lane (mg_lanes.h, which
 * keeps the same four sums per lane) all add in this order, so a replay
 * equals a fresh build bit for bit.
 */
#ifndef MG_DOT_H
#define MG_DOT_H

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

/* -- the replay tape's dot ----------------------------------------------------
 * Pair k's weight and input sit at tape positions w[k] and x[k]; when the
 * tape found them in two runs (evenly spaced, apart: sw != 0), at
 * w[0] + k * sw and x[0] + k * sx, read without looking each one up.  The
 * steps a layered network gives (weights made one after another: 1; the
 * layer below in the order backward() enters it: -1, or 1 for leaves) are
 * compiled with the step known, so the loops become vector loops. */

#define MG_DOT_RUN_TERM(k) (wr[(k) * sw] * xr[(k) * sx])

static inline double mg_dot_run(const double *restrict wr, ptrdiff_t sw,
                                const double *restrict xr, ptrdiff_t sx, ptrdiff_t n,
                                double bias)
{
    double out;
    MG_DOT_SUM(out, n, bias, MG_DOT_RUN_TERM);
    return out;
}

#define MG_DOT_GATHER_TERM(k) (val[w[k]] * val[x[k]])

MG_SIMD static double mg_tape_dot(const double *val, const int *w, const int *x, int sw,
                                  int sx, ptrdiff_t n, double bias)
{
    double out;
    if (sw == 1 && sx == -1)
        return mg_dot_run(val + w[0], 1, val + x[0], -1, n, bias);
    if (sw == 1 && sx == 1)
        return mg_dot_run(val + w[0], 1, val + x[0], 1, n, bias);
    if (sw)
        return mg_dot_run(val + w[0], sw, val + x[0], sx, n, bias);
    MG_DOT_SUM(out, n, bias, MG_DOT_GATHER_TERM);
    return out;
}

/* to[k * step] += g * other[k * other_step] for k < n */
static inline void mg_dot_pass_run(double *restrict to, ptrdiff_t step,
                                   const double *restrict other, ptrdiff_t other_step,
                                   ptrdiff_t n, double g)
{
    for (ptrdiff_t k = 0; k < n; k++)
        to[k * step] += g * other[k * other_step];
}

/* The dot's gradient g passed on to its weights and inputs (found as
 * mg_tape_dot finds them).  Runs take theirs one run after the other: each
 * position is added to once (the runs are apart), so the order changes no
 * bit. */
MG_SIMD static void mg_tape_dot_back(const double *val, double *grad, const int *w,
                                     const int *x, int sw, int sx, ptrdiff_t n, double g)
{
    if (sw == 1 && sx == -1) {
        mg_dot_pass_run(grad + w[0], 1, val + x[0], -1, n, g);
        mg_dot_pass_run(grad + x[0], -1, val + w[0], 1, n, g);
    } else if (sw == 1 && sx == 1) {
        mg_dot_pass_run(grad + w[0], 1, val + x[0], 1, n, g);
        mg_dot_pass_run(grad + x[0], 1, val + w[0], 1, n, g);
    } else if (sw) {
        mg_dot_pass_run(grad + w[0], sw, val + x[0], sx, n, g);
        mg_dot_pass_run(grad + x[0], sx, val + w[0], sw, n, g);
    } else {
        for (ptrdiff_t k = 0; k < n; k++) {
            grad[w[k]] += g * val[x[k]];
            grad[x[k]] += g * val[w[k]];
        }
    }
}

#endif /* MG_DOT_H */

/* mg_scalar.h: the numeric functions the op table's formulas are written in
 * (besides C's <math.h>): the expression vocabulary of csrc/mg_ops.def.
 *
 * All IEEE: no branch raises, overflow gives inf, invalid input gives nan,
 * and NaN in gives NaN out.  The stable forms (sigmoid, softplus) never
 * evaluate exp() of a large positive number.
 */
#ifndef MG_SCALAR_H
#define MG_SCALAR_H

#include <math.h>

/* The constants the formulas use, where <math.h> does not define them. */
#ifndef M_SQRT2
#define M_SQRT2 1.41421356237309504880      /* sqrt(2) */
#endif
#ifndef M_SQRT1_2
#define M_SQRT1_2 0.70710678118654752440    /* 1/sqrt(2) */
#endif
#ifndef M_2_SQRTPI
#define M_2_SQRTPI 1.12837916709551257390   /* 2/sqrt(pi) */
#endif

/* 1 / (1 + e^-x) evaluated so that exp() only ever sees a non-positive number. */
static inline double mg_sigmoid(double x)
{
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    double z = exp(x); /* also the NaN path */
    return z / (1.0 + z);
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|); NaN survives the log1p term. */
static inline double mg_softplus(double x)
{
    return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

/* sign(x), with sign(0) = 0 and sign(NaN) = NaN: the derivative of |x|. */
static inline double mg_sign(double x)
{
    if (x > 0.0) return 1.0;
    if (x < 0.0) return -1.0;
    return x == x ? 0.0 : x;
}

#endif /* MG_SCALAR_H */

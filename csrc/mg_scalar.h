/* mg_scalar.h: forward formulas and local derivatives of the scalar ops.
 *
 * One function per formula, all IEEE: no branch raises, overflow gives inf,
 * invalid input gives nan, and NaN in gives NaN out.  The stable forms
 * (sigmoid, softplus) never evaluate exp() of a large positive number.
 */
#ifndef MG_SCALAR_H
#define MG_SCALAR_H

#include <math.h>

/* relu keeps NaN (x < 0 is false for NaN); relu'(0) = 0 as in PyTorch. */
static inline double mg_relu(double x) { return x < 0.0 ? 0.0 : x; }
static inline double mg_relu_grad(double x) { return x <= 0.0 ? 0.0 : 1.0; }

static inline double mg_leaky_relu(double x, double slope) { return x > 0.0 ? x : x * slope; }
static inline double mg_leaky_relu_grad(double x, double slope) { return x > 0.0 ? 1.0 : slope; }

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

/* d|x|/dx = sign(x), with sign(0) = 0 and sign(NaN) = NaN. */
static inline double mg_sign(double x)
{
    if (x > 0.0) return 1.0;
    if (x < 0.0) return -1.0;
    return x == x ? 0.0 : x;
}

/* d(a^b)/da = b a^(b-1); the b = 0 case is 0 even where a^(-1) is inf. */
static inline double mg_pow_grad_base(double a, double b)
{
    return b == 0.0 ? 0.0 : b * pow(a, b - 1.0);
}

/* d(a^b)/db = a^b log(a); 0 where a = 0 and b >= 0 (PyTorch's convention). */
static inline double mg_pow_grad_exponent(double a, double b, double out)
{
    return (a == 0.0 && b >= 0.0) ? 0.0 : out * log(a);
}

#endif /* MG_SCALAR_H */

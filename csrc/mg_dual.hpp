/* mg_dual.hpp: the op table (mg_ops.def) over dual numbers, for forward-mode
 * differentiation.  C++ only (operator overloading): included by
 * microgrid/autograd/_forward.pyx, which is compiled as C++.
 *
 * A dual number x + x' e (e^2 = 0) carries a value and its tangent.  The
 * expression vocabulary of the rows (mg_scalar.h: exp, log, sigmoid, where,
 * ...) is overloaded for duals here, and each vocabulary function that is
 * itself an op of the table takes its derivative from that op's row (dual
 * exp(x) = exp(x) + exp'(x) x' e with exp' from the EXP row), so no rule is
 * written twice.  Only sign (piecewise constant, derivative 0) and where (a
 * choice between two operands) are defined here, as they have no row.
 *
 * Expanding the rows' derivative formulas over duals gives each op's local
 * derivative together with the derivative's own tangent: what
 * forward-over-reverse (a Hessian-vector product) needs, in
 * mg_fwd::local_grads.  Its value parts are the double arithmetic of
 * mg_local_grads, operation for operation.  Expanding the forward formulas
 * over duals (mg_fwd::forward) gives an op's value and tangent by the
 * vocabulary's chain rule alone: the tests check the derivative rows
 * against it.
 *
 * A zero tangent contributes nothing, even against an infinite or NaN
 * derivative: an operand that does not vary (a constant exponent of pow at
 * a negative base, whose d/db row is NaN) leaves the tangent finite.
 */
#ifndef MG_DUAL_HPP
#define MG_DUAL_HPP

#ifndef __cplusplus
#error "mg_dual.hpp is C++: include it from a module compiled as C++"
#endif

#include "mg_ops.h"

namespace mg_fwd {

struct dual {
    double v;   /* value */
    double d;   /* tangent */
    dual(double value = 0.0, double tangent = 0.0) : v(value), d(tangent) {}
};

/* derivative times tangent, zero for a zero tangent */
static inline double term(double derivative, double tangent)
{
    return tangent == 0.0 ? 0.0 : derivative * tangent;
}

/* -- arithmetic (a number converts to a dual with tangent 0) ------------------ */
static inline dual operator+(const dual &x, const dual &y) { return dual(x.v + y.v, x.d + y.d); }
static inline dual operator-(const dual &x, const dual &y) { return dual(x.v - y.v, x.d - y.d); }
static inline dual operator-(const dual &x) { return dual(-x.v, -x.d); }
static inline dual operator*(const dual &x, const dual &y)
{
    return dual(x.v * y.v, term(y.v, x.d) + term(x.v, y.d));
}
static inline dual operator/(const dual &x, const dual &y)
{
    double q = x.v / y.v;
    return dual(q, term(1.0 / y.v, x.d) + term(-q / y.v, y.d));
}

/* -- comparisons: of the values (the branches of where) ----------------------- */
static inline bool operator<(const dual &x, const dual &y) { return x.v < y.v; }
static inline bool operator<=(const dual &x, const dual &y) { return x.v <= y.v; }
static inline bool operator>(const dual &x, const dual &y) { return x.v > y.v; }
static inline bool operator>=(const dual &x, const dual &y) { return x.v >= y.v; }
static inline bool operator==(const dual &x, const dual &y) { return x.v == y.v; }
static inline bool operator!=(const dual &x, const dual &y) { return x.v != y.v; }

/* -- the vocabulary ------------------------------------------------------------
 * Each function that is an op of the table: its value from the row's forward
 * formula, its derivative from the row's d/da.  The list pairs the
 * vocabulary's name with the row (tests check the row's forward is name(a)). */
#define MG_DUAL_VOCABULARY(X)                                                         \
    X(exp, EXP) X(log, LOG) X(sqrt, SQRT) X(tanh, TANH) X(sin, SIN) X(cos, COS)        \
    X(erf, ERF) X(log1p, LOG1P) X(expm1, EXPM1) X(atan, ATAN) X(sigmoid, SIGMOID)      \
    X(softplus, SOFTPLUS) X(fabs, ABS)

#define MG_DUAL_FUNCTION(fn, CODE)                                                     \
    static inline dual fn(const dual &x)                                               \
    {                                                                                  \
        double out = ::mg_f_##CODE(x.v, 0.0);                                          \
        return dual(out, term(::mg_da_##CODE(x.v, out, 0.0), x.d));                    \
    }
MG_DUAL_VOCABULARY(MG_DUAL_FUNCTION)
#undef MG_DUAL_FUNCTION

/* pow from the POW row, both operands */
static inline dual pow(const dual &x, const dual &y)
{
    double out = ::mg_f_POW(x.v, y.v);
    return dual(out, term(::mg_da_POW(x.v, y.v, out), x.d) + term(::mg_db_POW(x.v, y.v, out), y.d));
}

/* piecewise constant: derivative 0 */
static inline dual sign(const dual &x) { return dual(::mg_sign(x.v), 0.0); }

/* the chosen operand with its tangent (both are evaluated; neither traps) */
template <class X, class Y>
static inline dual where(bool cond, const X &x, const Y &y)
{
    return cond ? dual(x) : dual(y);
}

/* -- the rows over duals -------------------------------------------------------
 *   da_<CODE> / db_<CODE>(a, b, out)   binary rows
 *   da_<CODE>(a, out, c)               one-operand rows
 *   f_<CODE>(a, b) / f_<CODE>(a, c)    forward formulas */
#define MG_BINARY(CODE, name, symbol, F, DA, DB, ...)                                  \
    static inline dual f_##CODE(dual a, dual b) { return (F); }                        \
    static inline dual da_##CODE(dual a, dual b, dual out)                             \
    { (void)a; (void)b; (void)out; return (DA); }                                      \
    static inline dual db_##CODE(dual a, dual b, dual out)                             \
    { (void)a; (void)b; (void)out; return (DB); }
#define MG_UNARY(CODE, name, symbol, torch, F, DA, ...)                                \
    static inline dual f_##CODE(dual a, double c) { (void)c; return (F); }             \
    static inline dual da_##CODE(dual a, dual out, double c)                           \
    { (void)a; (void)out; (void)c; return (DA); }
#define MG_UNARY_C(CODE, name, symbol, torch, param, dflt, F, DA, ...)                 \
    static inline dual f_##CODE(dual a, double c) { return (F); }                      \
    static inline dual da_##CODE(dual a, dual out, double c)                           \
    { (void)a; (void)out; (void)c; return (DA); }
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"

/* The local derivatives of op (as mg_local_grads) at dual operands and a
 * dual value out: each derivative with its tangent.  *db is left untouched
 * unless op reads two operand nodes. */
static inline void local_grads(int op, dual a, dual b, dual out, double c, dual *da, dual *db)
{
    switch (op) {
#define MG_BINARY(CODE, ...)                                                           \
    case MG_OP_##CODE: *da = da_##CODE(a, b, out); *db = db_##CODE(a, b, out); return; \
    case MG_OP_##CODE##_AC: *da = da_##CODE(a, dual(c), out); return;                  \
    case MG_OP_##CODE##_CA: *da = db_##CODE(dual(c), a, out); return;
#define MG_UNARY(CODE, ...) case MG_OP_##CODE: *da = da_##CODE(a, out, c); return;
#define MG_UNARY_C(CODE, ...) case MG_OP_##CODE: *da = da_##CODE(a, out, c); return;
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
    default: *da = dual(NAN, NAN); return;
    }
}

/* The forward formula of op over duals (as mg_forward): its value and, by the
 * vocabulary's chain rule, its tangent. */
static inline dual forward(int op, dual a, dual b, double c)
{
    switch (op) {
#define MG_BINARY(CODE, ...)                                                           \
    case MG_OP_##CODE: return f_##CODE(a, b);                                          \
    case MG_OP_##CODE##_AC: return f_##CODE(a, dual(c));                               \
    case MG_OP_##CODE##_CA: return f_##CODE(dual(c), a);
#define MG_UNARY(CODE, ...) case MG_OP_##CODE: return f_##CODE(a, c);
#define MG_UNARY_C(CODE, ...) case MG_OP_##CODE: return f_##CODE(a, c);
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
    default: return dual(NAN, NAN);
    }
}

/* The vocabulary's pairs (name, op code) for the tests. */
struct vocabulary_entry {
    const char *name;
    int code;
};
#define MG_DUAL_ENTRY(fn, CODE) {#fn, MG_OP_##CODE},
static const vocabulary_entry vocabulary[] = {
    MG_DUAL_VOCABULARY(MG_DUAL_ENTRY)
    {"pow", MG_OP_POW},
    {0, 0}
};
#undef MG_DUAL_ENTRY

} /* namespace mg_fwd */

#endif /* MG_DUAL_HPP */

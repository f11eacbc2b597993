/* mg_ops.h: the scalar op codes and, for every op with at most two operands,
 * its forward formula and local derivatives, keyed by op code.
 *
 * Both the graph builder and the replay tape call these two functions, so a
 * replayed value is the same computation as a freshly built one, bit for bit.
 */
#ifndef MG_OPS_H
#define MG_OPS_H

#include "mg_scalar.h"

typedef enum {
    MG_OP_LEAF = 0,
    MG_OP_CUSTOM,       /* built by Value(data, _children, _op): parents kept, no rule */
    MG_OP_ADD,          /* a + b */
    MG_OP_SUB,          /* a - b */
    MG_OP_MUL,          /* a * b */
    MG_OP_DIV,          /* a / b */
    MG_OP_POW,          /* a ** b */
    MG_OP_ADD_CONST,    /* a + aux */
    MG_OP_RSUB_CONST,   /* aux - a */
    MG_OP_MUL_CONST,    /* a * aux */
    MG_OP_DIV_CONST,    /* a / aux */
    MG_OP_RDIV_CONST,   /* aux / a */
    MG_OP_POW_CONST,    /* a ** aux */
    MG_OP_RPOW_CONST,   /* aux ** a */
    MG_OP_NEG,
    MG_OP_ABS,
    MG_OP_RELU,
    MG_OP_LEAKY_RELU,   /* aux = negative slope */
    MG_OP_SIGMOID,
    MG_OP_TANH,
    MG_OP_EXP,
    MG_OP_LOG,
    MG_OP_SQRT,
    MG_OP_SOFTPLUS,
    MG_OP_SIN,
    MG_OP_COS,
    MG_OP_SUM,          /* args + aux */
    MG_OP_MEAN,         /* (sum of args) / len(args) */
    MG_OP_DOT,          /* sum args[i] * args[n + i] + a (bias, optional) */
    MG_OP_ELEMENT,      /* a[aux]: one element of a tensor, by flat index */
    MG_OP_SCALAR_END    /* op codes from here on belong to other node kinds */
} mg_op;

/* Ops below this code read one or two operands (a, b) and a constant (aux). */
#define MG_OP_FIRST_NARY MG_OP_SUM

static inline int mg_op_is_binary(int op)
{
    return op >= MG_OP_ADD && op <= MG_OP_POW;
}

/* The value of op applied to x (= a), y (= b, or 0) and aux. */
static inline double mg_forward(int op, double x, double y, double aux)
{
    switch (op) {
    case MG_OP_ADD: return x + y;
    case MG_OP_SUB: return x - y;
    case MG_OP_MUL: return x * y;
    case MG_OP_DIV: return x / y;
    case MG_OP_POW: return pow(x, y);
    case MG_OP_ADD_CONST: return x + aux;
    case MG_OP_RSUB_CONST: return aux - x;
    case MG_OP_MUL_CONST: return x * aux;
    case MG_OP_DIV_CONST: return x / aux;
    case MG_OP_RDIV_CONST: return aux / x;
    case MG_OP_POW_CONST: return pow(x, aux);
    case MG_OP_RPOW_CONST: return pow(aux, x);
    case MG_OP_NEG: return -x;
    case MG_OP_ABS: return fabs(x);
    case MG_OP_RELU: return mg_relu(x);
    case MG_OP_LEAKY_RELU: return mg_leaky_relu(x, aux);
    case MG_OP_SIGMOID: return mg_sigmoid(x);
    case MG_OP_TANH: return tanh(x);
    case MG_OP_EXP: return exp(x);
    case MG_OP_LOG: return log(x);
    case MG_OP_SQRT: return sqrt(x);
    case MG_OP_SOFTPLUS: return mg_softplus(x);
    case MG_OP_SIN: return sin(x);
    case MG_OP_COS: return cos(x);
    default: return NAN;
    }
}

/* The gradient contributions g * d(out)/dx into *gx and g * d(out)/dy into
 * *gy (left untouched for one-operand ops), where out = mg_forward(op, ...). */
static inline void mg_backward(int op, double x, double y, double out, double aux,
                               double g, double *gx, double *gy)
{
    switch (op) {
    case MG_OP_ADD: *gx = g; *gy = g; return;
    case MG_OP_SUB: *gx = g; *gy = -g; return;
    case MG_OP_MUL: *gx = g * y; *gy = g * x; return;
    case MG_OP_DIV: *gx = g / y; *gy = -g * x / (y * y); return;
    case MG_OP_POW:
        *gx = g * mg_pow_grad_base(x, y);
        *gy = g * mg_pow_grad_exponent(x, y, out);
        return;
    case MG_OP_ADD_CONST: *gx = g; return;
    case MG_OP_RSUB_CONST: *gx = -g; return;
    case MG_OP_NEG: *gx = -g; return;
    case MG_OP_MUL_CONST: *gx = g * aux; return;
    case MG_OP_DIV_CONST: *gx = g / aux; return;
    case MG_OP_RDIV_CONST: *gx = -g * aux / (x * x); return;
    case MG_OP_POW_CONST: *gx = g * mg_pow_grad_base(x, aux); return;
    case MG_OP_RPOW_CONST: *gx = g * mg_pow_grad_exponent(aux, x, out); return;
    case MG_OP_ABS: *gx = g * mg_sign(x); return;
    case MG_OP_RELU: *gx = g * mg_relu_grad(x); return;
    case MG_OP_LEAKY_RELU: *gx = g * mg_leaky_relu_grad(x, aux); return;
    case MG_OP_SIGMOID: *gx = g * out * (1.0 - out); return;
    case MG_OP_TANH: *gx = g * (1.0 - out * out); return;
    case MG_OP_EXP: *gx = g * out; return;
    case MG_OP_LOG: *gx = g / x; return;
    case MG_OP_SQRT: *gx = g / (2.0 * out); return;
    case MG_OP_SOFTPLUS: *gx = g * mg_sigmoid(x); return;
    case MG_OP_SIN: *gx = g * cos(x); return;
    case MG_OP_COS: *gx = -g * sin(x); return;
    default: *gx = NAN; return;
    }
}

#endif /* MG_OPS_H */

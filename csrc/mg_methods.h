/* mg_methods.h: the methods of Value and Tensor for the op table's one-operand
 * rows without a constant (relu(), sigmoid(), exp(), ...), as C functions
 * with CPython's own no-argument calling convention: as fast as a method
 * written in the class, with CPython's own argument and type checks.
 *
 * mg_method_builder (set by the engine) builds the node; mg_method_defs[op]
 * is the method definition of row op (its name and docstring are filled in
 * by the engine from the table before it makes descriptors of them).
 * Only for use from one compiled module (the tables are static).
 */
#ifndef MG_METHODS_H
#define MG_METHODS_H

#include <Python.h>
#include "mg_ops.h"

typedef PyObject *(*mg_builder_fn)(PyObject *self, int op);
static mg_builder_fn mg_method_builder = NULL;

#define MG_UNARY(CODE, ...)                                                            \
    static PyObject *mg_method_##CODE(PyObject *self, PyObject *unused)                \
    { (void)unused; return mg_method_builder(self, MG_OP_##CODE); }
#define MG_BINARY(...)
#define MG_UNARY_C(...)
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"

static PyMethodDef mg_method_defs[MG_OP_COUNT];

static void mg_methods_init(mg_builder_fn builder)
{
    mg_method_builder = builder;
#define MG_UNARY(CODE, ...)                                                            \
    mg_method_defs[MG_OP_##CODE].ml_meth = mg_method_##CODE;                           \
    mg_method_defs[MG_OP_##CODE].ml_flags = METH_NOARGS;
#define MG_BINARY(...)
#define MG_UNARY_C(...)
#define MG_END_OF_RULES()
#define MG_NARY(...)
#define MG_TENSOR(...)
#include "mg_ops.def"
#include "mg_ops_clear.h"
}

#endif /* MG_METHODS_H */

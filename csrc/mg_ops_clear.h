/* mg_ops_clear.h: ends one expansion of the op table (mg_ops.def).  Include
 * it after each #include "mg_ops.def" so the next expansion can define the
 * row macros afresh.  (No include guard: it is meant to be included often.) */
#undef MG_BINARY
#undef MG_UNARY
#undef MG_UNARY_C
#undef MG_END_OF_RULES
#undef MG_NARY
#undef MG_TENSOR

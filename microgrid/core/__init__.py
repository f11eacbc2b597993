"""The engine core: the op table (optable.py, the rows of csrc/mg_ops.def) and
the node model with backward and graph replay (_engine.pyx)."""

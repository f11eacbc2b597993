"""The tensor node (_tensor.pyx) and its rules, one file per family with each
op's forward beside its backward: elementwise.pxi, reduce.pxi, shape.pxi,
products.pxi, losses.pxi, conv.pxi."""

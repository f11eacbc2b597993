# The caching allocator's hooks for the other compiled modules (_tensor):
# route numpy's allocations through the pool around one op.

# Install the pool as numpy's allocator in this context; returns what to hand
# to pool_exit (None when nothing was changed: the pool is off, or already in).
cdef object pool_enter()
cdef int pool_exit(object previous) except -1

# pool_enter for an op whose operands' buffers are x and y (arrays or None):
# only when one of them is large enough for the pool to pay, or ``always``.
cdef object pool_enter_for(object x, object y, bint always)

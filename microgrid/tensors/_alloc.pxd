# The caching allocator's hooks for the other compiled modules (_tensor):
# route numpy's allocations through the pool around one op.

# Install the pool as numpy's allocator in this context; returns what to hand
# to pool_exit (None when nothing was changed: the pool is off, or already in).
cdef object pool_enter()
cdef int pool_exit(object previous) except -1

# cython: language_level=3
"""The caching allocator for tensor storage (csrc/mg_alloc.c) as numpy's
data-memory handler, and its Python controls: ``empty_cache()``,
``set_cache_limit()``, ``cache_info()``.

numpy lets a library route allocations through a handler of its own
(``PyDataMem_SetHandler``) that is scoped by a context variable: microgrid
installs the pool only while its own ops run (``pool_enter``/``pool_exit``
around each Tensor forward and backward), so the user's other arrays keep
numpy's allocator and no process-wide malloc setting changes.  An array
remembers the handler that allocated it, so a tensor buffer freed anywhere
later goes back to the pool.
"""
cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_New
from libc.string cimport strncpy

import numpy as np

cnp.import_array()

cdef extern from "mg_alloc.h" nogil:
    ctypedef struct mg_pool:
        pass
    ctypedef struct mg_pool_stats:
        size_t limit, cached, in_use, requested, peak_requested, peak_held
        unsigned long long hits, misses, released
    size_t MG_POOL_MIN_BYTES
    mg_pool *mg_pool_new(size_t limit)
    void *mg_pool_malloc(void *ctx, size_t size)
    void *mg_pool_calloc(void *ctx, size_t nelem, size_t elsize)
    void *mg_pool_realloc(void *ctx, void *ptr, size_t new_size)
    void mg_pool_free(void *ctx, void *ptr, size_t size)
    size_t mg_pool_empty(mg_pool *pool)
    size_t mg_pool_set_limit(mg_pool *pool, size_t limit)
    void mg_pool_get_stats(mg_pool *pool, mg_pool_stats *out)
    void mg_pool_reset_peaks(mg_pool *pool)

__all__ = ["empty_cache", "set_cache_limit", "cache_info", "reset_peak_stats",
           "DEFAULT_CACHE_LIMIT"]

# What the pool may hold when nothing is running: enough for the buffers of
# a training step of a mid-sized CNN, small beside today's memory.
DEFAULT_CACHE_LIMIT = 256 * 1024 * 1024

# One pool for the process; the handler struct must outlive every array it
# allocated (each array holds a reference to the capsule, the struct is static).
cdef mg_pool *_pool = mg_pool_new(DEFAULT_CACHE_LIMIT)
if _pool == NULL:
    raise MemoryError("microgrid: could not create the tensor memory pool")
cdef cnp.PyDataMem_Handler _handler
strncpy(<char*>_handler.name, b"microgrid_pool", 126)
_handler.version = 1
_handler.allocator.ctx = <void*>_pool
_handler.allocator.malloc = mg_pool_malloc
_handler.allocator.calloc = mg_pool_calloc
_handler.allocator.realloc = mg_pool_realloc
_handler.allocator.free = mg_pool_free
cdef object _capsule = PyCapsule_New(<void*>&_handler, b"mem_handler", NULL)
cdef bint _enabled = True


cdef object pool_enter():
    if not _enabled:
        return None
    # backward() installs it once for the whole sweep; the nodes then find
    # it in place and change nothing (a context-variable read, no write)
    current = cnp.PyDataMem_GetHandler()
    if current is _capsule:
        return None
    return cnp.PyDataMem_SetHandler(_capsule)


# An op on small operands skips the pool: its buffers come from malloc's
# heap without page faults, and switching numpy's handler (two context
# variable writes, ~0.85 us measured) would cost more than the pool saves
# (9% of the moons MLP's step, whose arrays are all ~13 KB).
cdef Py_ssize_t _SMALL_OPERAND_BYTES = 32 * 1024


cdef inline bint _small(object a):
    return a is None or (type(a) is np.ndarray
                         and cnp.PyArray_NBYTES(<cnp.ndarray>a) < _SMALL_OPERAND_BYTES)


cdef object pool_enter_for(object x, object y, bint always):
    # ops without array operands (n-ary concat/stack) may still make large outputs
    if not always and (x is not None or y is not None) and _small(x) and _small(y):
        return None
    return pool_enter()


cdef int pool_exit(object previous) except -1:
    if previous is not None:
        cnp.PyDataMem_SetHandler(previous)
    return 0


def empty_cache():
    """Return the tensor buffers the pool holds for reuse to the system;
    the number of bytes released.  Buffers of live tensors are not touched."""
    return mg_pool_empty(_pool)


def set_cache_limit(limit):
    """Bound the bytes of freed tensor buffers the pool keeps for reuse
    (default 256 MiB); returns the previous bound.  0 turns the pool off:
    microgrid's buffers then come from numpy's own allocator."""
    global _enabled
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"set_cache_limit(limit): an int number of bytes, got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"set_cache_limit(limit): at least 0 bytes, got {limit}")
    old = mg_pool_set_limit(_pool, limit)
    _enabled = limit > 0
    return old


def cache_info():
    """The pool's counters, in bytes unless named otherwise:
    ``limit``; ``cached`` (free blocks held for reuse); ``in_use`` (blocks
    handed out, at their class's size); ``requested`` (what the live
    allocations asked for); ``peak_requested`` and ``peak_held`` (high-water
    marks of ``requested`` and of ``in_use + cached``); ``hits`` and
    ``misses`` (requests of a cached size served from / not from the pool);
    ``released`` (blocks given back to the system); ``min_pooled_bytes``
    (smaller requests go straight to malloc); ``enabled``."""
    cdef mg_pool_stats s
    mg_pool_get_stats(_pool, &s)
    return {"limit": s.limit, "cached": s.cached, "in_use": s.in_use,
            "requested": s.requested, "peak_requested": s.peak_requested,
            "peak_held": s.peak_held, "hits": s.hits, "misses": s.misses,
            "released": s.released, "min_pooled_bytes": MG_POOL_MIN_BYTES,
            "enabled": bool(_enabled)}


def reset_peak_stats():
    """Restart ``peak_requested`` and ``peak_held`` from the current levels."""
    mg_pool_reset_peaks(_pool)


try:
    from numpy._core.multiarray import get_handler_name as _handler_name
except ImportError:         # numpy 1.x
    from numpy.core.multiarray import get_handler_name as _handler_name

HANDLER_NAME = "microgrid_pool"


def handler_name(arr=None):
    """numpy's name of the allocator that owns ``arr``'s memory (following
    views to the array that owns it), or of the allocator the next array
    made here will get when ``arr`` is None; the pool's is ``HANDLER_NAME``."""
    if arr is None:
        return _handler_name()
    while arr.base is not None and type(arr.base) is type(arr):
        arr = arr.base
    return _handler_name(arr)


class pooled:
    """``with pooled():`` numpy arrays made inside the block come from the
    pool, as inside microgrid's ops (for tests and measurements)."""

    def __enter__(self):
        self._previous = pool_enter()
        return self

    def __exit__(self, *exc):
        pool_exit(self._previous)
        return False

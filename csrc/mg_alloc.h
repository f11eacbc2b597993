/* mg_alloc.h: a bounded caching allocator for microgrid's tensor storage.
 *
 * Why: a training step allocates the same multi-megabyte buffers (outputs,
 * gradients, im2col workspaces) every step.  Above glibc's mmap threshold
 * each one is a fresh mapping whose pages fault in on first touch and are
 * unmapped at the end of the step: thousands of page faults per step, and a
 * step several times slower than the same work in warm memory.  The pool
 * keeps freed blocks in size-class free lists and hands them to the next
 * request of the same class, so a steady training loop touches only memory
 * it already owns.  Nothing process-wide changes (no mallopt): only the
 * allocations routed here (numpy's PyDataMem handler that microgrid installs
 * around its own ops) are pooled.
 *
 * Layout: every block carries a 16-byte header (requested size, size class,
 * a magic number) in front of the pointer it hands out, so free() and
 * realloc() need not trust the size numpy passes.  Requests below
 * MG_POOL_MIN_BYTES are passed to malloc (glibc serves small blocks from its
 * arenas without faults); larger ones are rounded up to one of 16 classes per
 * power of two (at most 1/17 wasted) and cached when freed, while the cached
 * bytes stay within the pool's limit; a free that would exceed it goes
 * back to the system.  Free lists are LIFO: the block freed last, still warm
 * in cache, is reused first.
 *
 * All entry points take the pool as a void* context (numpy's
 * PyDataMemAllocator signature) and are thread safe (one mutex per pool).
 * Plain C, no Python: the Cython module microgrid/tensors/_alloc.pyx wraps it.
 */
#ifndef MG_ALLOC_H
#define MG_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define MG_POOL_MIN_BYTES ((size_t)8192)

typedef struct mg_pool mg_pool;

typedef struct {
    size_t limit;            /* bound on cached (free, held) bytes */
    size_t cached;           /* bytes held in the free lists */
    size_t in_use;           /* bytes handed out and not yet freed (block capacities) */
    size_t requested;        /* bytes asked for by the live allocations */
    size_t peak_requested;   /* high-water mark of requested */
    size_t peak_held;        /* high-water mark of in_use + cached */
    uint64_t hits;           /* pooled-size requests served from a free list */
    uint64_t misses;         /* pooled-size requests that went to the system */
    uint64_t released;       /* blocks returned to the system (limit, empty_cache) */
} mg_pool_stats;

/* A new, empty pool caching at most `limit` bytes; NULL when out of memory. */
mg_pool *mg_pool_new(size_t limit);

/* numpy's PyDataMemAllocator entry points (ctx is the pool). */
void *mg_pool_malloc(void *ctx, size_t size);
void *mg_pool_calloc(void *ctx, size_t nelem, size_t elsize);
void *mg_pool_realloc(void *ctx, void *ptr, size_t new_size);
void mg_pool_free(void *ctx, void *ptr, size_t size);

/* Return every cached block to the system; the bytes released. */
size_t mg_pool_empty(mg_pool *pool);
/* Set the bound on cached bytes (releasing what is over it); the old bound. */
size_t mg_pool_set_limit(mg_pool *pool, size_t limit);
void mg_pool_get_stats(mg_pool *pool, mg_pool_stats *out);
/* Restart the high-water marks from the current levels. */
void mg_pool_reset_peaks(mg_pool *pool);

#endif

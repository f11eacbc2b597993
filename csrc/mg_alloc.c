/* mg_alloc.c: the caching allocator of mg_alloc.h (layout and policy there). */
#include "mg_alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
typedef CRITICAL_SECTION mg_mutex;
#define mg_mutex_init(m) InitializeCriticalSection(m)
#define mg_lock(m) EnterCriticalSection(m)
#define mg_unlock(m) LeaveCriticalSection(m)
#else
#include <pthread.h>
typedef pthread_mutex_t mg_mutex;
#define mg_mutex_init(m) pthread_mutex_init((m), NULL)
#define mg_lock(m) pthread_mutex_lock(m)
#define mg_unlock(m) pthread_mutex_unlock(m)
#endif

/* 16 classes per power of two from 2^13 (MG_POOL_MIN_BYTES) up to 2^48;
 * larger requests are not cached. */
#define MIN_EXP 13
#define MAX_EXP 48
#define STEPS_LOG2 4
#define STEPS (1 << STEPS_LOG2)
#define N_CLASSES ((MAX_EXP - MIN_EXP + 1) * STEPS)
#define NOT_POOLED 0xffffffffu
#define MAGIC 0x6d67706cu   /* "mgpl" */

/* 16 bytes, so the data after it keeps malloc's 16-byte alignment. */
typedef struct {
    size_t requested;
    uint32_t cls;           /* size class, or NOT_POOLED */
    uint32_t magic;
} header;

/* A cached block links to the next one through its (unused) data area. */
typedef struct free_block {
    struct free_block *next;
} free_block;

struct mg_pool {
    mg_mutex lock;
    free_block *lists[N_CLASSES];
    mg_pool_stats stats;
};

static int floor_log2(size_t x)
{
    int e = 0;
    while (x >>= 1) e++;
    return e;
}

/* The class of a request of `size` bytes (>= MG_POOL_MIN_BYTES), or
 * NOT_POOLED when it is beyond the largest class. */
static uint32_t size_class(size_t size)
{
    int e = floor_log2(size - 1);          /* 2^e < size <= 2^(e+1) */
    if (e + 1 > MAX_EXP) return NOT_POOLED;
    int shift = e - STEPS_LOG2;
    size_t k = (size + ((size_t)1 << shift) - 1) >> shift;   /* STEPS+1 .. 2*STEPS */
    return (uint32_t)((e + 1 - MIN_EXP) * STEPS + (int)(k - STEPS - 1));
}

/* The bytes a block of class `cls` holds (its largest request). */
static size_t class_capacity(uint32_t cls)
{
    int e = (int)(cls / STEPS) + MIN_EXP - 1;
    size_t k = (size_t)(cls % STEPS) + STEPS + 1;
    return k << (e - STEPS_LOG2);
}

static size_t capacity_of(const header *h)
{
    return h->cls == NOT_POOLED ? h->requested : class_capacity(h->cls);
}

static header *header_of(void *ptr)
{
    header *h = (header *)ptr - 1;
    if (h->magic != MAGIC) {
        /* not one of ours, or the header was overwritten: memory is corrupt,
         * and carrying on would corrupt it further */
        fprintf(stderr, "microgrid: mg_alloc: block %p has no valid header "
                        "(heap corruption or a foreign pointer); aborting\n", ptr);
        abort();
    }
    return h;
}

static void note_live(mg_pool *p, size_t requested, size_t capacity)
{
    mg_pool_stats *s = &p->stats;
    s->requested += requested;
    s->in_use += capacity;
    if (s->requested > s->peak_requested) s->peak_requested = s->requested;
    if (s->in_use + s->cached > s->peak_held) s->peak_held = s->in_use + s->cached;
}

mg_pool *mg_pool_new(size_t limit)
{
    mg_pool *p = (mg_pool *)calloc(1, sizeof(mg_pool));
    if (p == NULL) return NULL;
    mg_mutex_init(&p->lock);
    p->stats.limit = limit;
    return p;
}

/* A block for `size` bytes; `zero`: its first `size` bytes read as 0. */
static void *pool_alloc(mg_pool *p, size_t size, int zero)
{
    if (size == 0) size = 1;               /* a unique pointer, as malloc(0) may not give */
    uint32_t cls = size >= MG_POOL_MIN_BYTES ? size_class(size) : NOT_POOLED;
    size_t capacity = cls == NOT_POOLED ? size : class_capacity(cls);
    header *h = NULL;
    if (cls != NOT_POOLED) {
        mg_lock(&p->lock);
        free_block *b = p->lists[cls];
        if (b != NULL) {
            p->lists[cls] = b->next;
            p->stats.cached -= capacity;
            p->stats.hits++;
            h = (header *)b - 1;
            h->requested = size;
            note_live(p, size, capacity);
        } else {
            p->stats.misses++;
        }
        mg_unlock(&p->lock);
        if (h != NULL) {
            if (zero) memset(h + 1, 0, size);
            return h + 1;
        }
    }
    if (capacity > (size_t)-1 - sizeof(header)) return NULL;
    /* a fresh block: calloc's pages of a new mapping are zero without a memset */
    h = (header *)(zero ? calloc(1, sizeof(header) + capacity) : malloc(sizeof(header) + capacity));
    if (h == NULL) return NULL;
    h->requested = size;
    h->cls = cls;
    h->magic = MAGIC;
    mg_lock(&p->lock);
    note_live(p, size, capacity);
    mg_unlock(&p->lock);
    return h + 1;
}

void *mg_pool_malloc(void *ctx, size_t size)
{
    return pool_alloc((mg_pool *)ctx, size, 0);
}

void *mg_pool_calloc(void *ctx, size_t nelem, size_t elsize)
{
    if (elsize != 0 && nelem > (size_t)-1 / elsize) return NULL;
    return pool_alloc((mg_pool *)ctx, nelem * elsize, 1);
}

void mg_pool_free(void *ctx, void *ptr, size_t size)
{
    (void)size;                            /* the header knows; numpy's size may be rounded */
    if (ptr == NULL) return;
    mg_pool *p = (mg_pool *)ctx;
    header *h = header_of(ptr);
    size_t capacity = capacity_of(h);
    int keep = 0;
    mg_lock(&p->lock);
    p->stats.requested -= h->requested;
    p->stats.in_use -= capacity;
    if (h->cls != NOT_POOLED && p->stats.cached + capacity <= p->stats.limit) {
        free_block *b = (free_block *)ptr;
        b->next = p->lists[h->cls];
        p->lists[h->cls] = b;
        p->stats.cached += capacity;
        keep = 1;
    } else if (h->cls != NOT_POOLED) {
        p->stats.released++;
    }
    mg_unlock(&p->lock);
    if (!keep) {
        h->magic = 0;                      /* a second free of it aborts instead of corrupting */
        free(h);
    }
}

void *mg_pool_realloc(void *ctx, void *ptr, size_t new_size)
{
    mg_pool *p = (mg_pool *)ctx;
    if (ptr == NULL) return pool_alloc(p, new_size, 0);
    if (new_size == 0) new_size = 1;
    header *h = header_of(ptr);
    size_t old = h->requested;
    if (h->cls != NOT_POOLED && new_size <= class_capacity(h->cls)
            && new_size >= MG_POOL_MIN_BYTES) {
        /* still fits its block (numpy shrinks arrays in place, e.g. fromiter) */
        mg_lock(&p->lock);
        p->stats.requested -= old;
        note_live(p, new_size, 0);
        h->requested = new_size;
        mg_unlock(&p->lock);
        return ptr;
    }
    void *fresh = pool_alloc(p, new_size, 0);
    if (fresh == NULL) return NULL;        /* realloc's contract: ptr stays valid */
    memcpy(fresh, ptr, old < new_size ? old : new_size);
    mg_pool_free(ctx, ptr, old);
    return fresh;
}

/* Free cached blocks until at most `keep` bytes stay cached; the bytes freed.
 * Called with the lock held; the blocks are unlinked first and freed after. */
static free_block *trim_locked(mg_pool *p, size_t keep, size_t *freed)
{
    free_block *out = NULL;
    *freed = 0;
    for (int c = N_CLASSES - 1; c >= 0 && p->stats.cached > keep; c--) {
        size_t capacity = class_capacity((uint32_t)c);
        while (p->lists[c] != NULL && p->stats.cached > keep) {
            free_block *b = p->lists[c];
            p->lists[c] = b->next;
            b->next = out;
            out = b;
            p->stats.cached -= capacity;
            p->stats.released++;
            *freed += capacity;
        }
    }
    return out;
}

static void free_chain(free_block *b)
{
    while (b != NULL) {
        free_block *next = b->next;
        header *h = (header *)b - 1;
        h->magic = 0;
        free(h);
        b = next;
    }
}

size_t mg_pool_empty(mg_pool *pool)
{
    size_t freed;
    mg_lock(&pool->lock);
    free_block *chain = trim_locked(pool, 0, &freed);
    mg_unlock(&pool->lock);
    free_chain(chain);
    return freed;
}

size_t mg_pool_set_limit(mg_pool *pool, size_t limit)
{
    size_t freed;
    mg_lock(&pool->lock);
    size_t old = pool->stats.limit;
    pool->stats.limit = limit;
    free_block *chain = trim_locked(pool, limit, &freed);
    mg_unlock(&pool->lock);
    free_chain(chain);
    return old;
}

void mg_pool_get_stats(mg_pool *pool, mg_pool_stats *out)
{
    mg_lock(&pool->lock);
    *out = pool->stats;
    mg_unlock(&pool->lock);
}

void mg_pool_reset_peaks(mg_pool *pool)
{
    mg_lock(&pool->lock);
    pool->stats.peak_requested = pool->stats.requested;
    pool->stats.peak_held = pool->stats.in_use + pool->stats.cached;
    mg_unlock(&pool->lock);
}

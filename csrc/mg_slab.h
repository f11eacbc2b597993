/* Storage of Value nodes: 64-byte slots in 16 KiB slabs.
 *
 * A Value is 64 bytes; here each sits in one 64-byte-aligned slot, so a node
 * is exactly one cache line, and nodes made one after another sit one after
 * another in memory (the slab being filled hands out slots in address order),
 * which is the order backward() reads them in.
 *
 * A slab's first slot is its header.  A freed slot goes on its slab's free
 * list; a slab whose nodes are all freed is kept for reuse (up to
 * MG_SLAB_KEEP_BYTES, so rebuilding a graph every step maps no fresh pages)
 * or returned to the system.  When the slab being filled is full, the next
 * is an empty kept slab, else a slab at least half free (its free slots are
 * reused, so a few long-lived nodes cannot pin whole slabs: memory stays
 * within about twice the live nodes), else a new one.
 *
 * Every call happens under the GIL (tp_alloc and tp_free of the Value type).
 * tracemalloc sees each node as a 64-byte block of its own.
 */
#ifndef MG_SLAB_H
#define MG_SLAB_H

#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MG_SLOT_BYTES 64
#define MG_SLAB_BYTES (16 * 1024)
#define MG_SLAB_SLOTS (MG_SLAB_BYTES / MG_SLOT_BYTES)   /* slot 0 is the header */
#define MG_SLAB_KEEP_BYTES ((size_t)32 << 20)

typedef struct mg_slab {
    struct mg_slab* prev;      /* neighbours on the list the slab is on */
    struct mg_slab* next;
    void* free;                /* freed slots, linked through their first word */
    uint32_t live;             /* slots handed out and not freed */
    uint32_t bump;             /* next never-used slot */
    int list;                  /* which list: MG_LIST_* */
} mg_slab;

enum { MG_LIST_NONE, MG_LIST_HALF_FREE, MG_LIST_EMPTY };

typedef struct {
    mg_slab* current;          /* the slab being filled (on no list) */
    mg_slab* half_free;        /* slabs at least half free */
    mg_slab* empty;            /* kept empty slabs */
    size_t n_empty;
    size_t n_slabs;            /* slabs held in all */
} mg_slabs;

static mg_slabs mg_value_slabs = {NULL, NULL, NULL, 0, 0};

static inline mg_slab* mg_slab_of(void* p)
{
    return (mg_slab*)((uintptr_t)p & ~(uintptr_t)(MG_SLAB_BYTES - 1));
}

static void mg_slab_unlink(mg_slab** head, mg_slab* s)
{
    if (s->prev) s->prev->next = s->next; else *head = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->list = MG_LIST_NONE;
}

static void mg_slab_push(mg_slab** head, mg_slab* s, int list)
{
    s->prev = NULL;
    s->next = *head;
    if (*head) (*head)->prev = s;
    *head = s;
    s->list = list;
}

static inline int mg_slab_full(const mg_slab* s)
{
    return s->free == NULL && s->bump == MG_SLAB_SLOTS;
}

/* Relink a slab's free slots in address order, so that the nodes made into
 * its holes still sit in creation order. */
static void mg_slab_sort_free(mg_slab* s)
{
    unsigned char is_free[MG_SLAB_SLOTS] = {0};
    void** link = &s->free;
    uint32_t k;
    void* p;
    for (p = s->free; p != NULL; p = *(void**)p)
        is_free[((char*)p - (char*)s) / MG_SLOT_BYTES] = 1;
    for (k = 1; k < s->bump; k++) {
        if (is_free[k]) {
            p = (char*)s + (size_t)k * MG_SLOT_BYTES;
            *link = p;
            link = (void**)p;
        }
    }
    *link = NULL;
}

/* A slab to fill: a kept empty one, one at least half free, or a new one. */
static mg_slab* mg_slab_next(mg_slabs* a)
{
    mg_slab* s = a->empty;
    if (s) {
        mg_slab_unlink(&a->empty, s);
        a->n_empty--;
        return s;
    }
    s = a->half_free;
    if (s) {
        mg_slab_unlink(&a->half_free, s);
        mg_slab_sort_free(s);
        return s;
    }
#if defined(_WIN32)
    s = (mg_slab*)_aligned_malloc(MG_SLAB_BYTES, MG_SLAB_BYTES);
#else
    if (posix_memalign((void**)&s, MG_SLAB_BYTES, MG_SLAB_BYTES) != 0) s = NULL;
#endif
    if (s == NULL) return NULL;
    memset(s, 0, sizeof(mg_slab));
    s->bump = 1;
    a->n_slabs++;
    return s;
}

static void mg_slab_release(mg_slabs* a, mg_slab* s)
{
    a->n_slabs--;
#if defined(_WIN32)
    _aligned_free(s);
#else
    free(s);
#endif
}

static void* mg_slab_alloc(mg_slabs* a)
{
    mg_slab* s = a->current;
    void* p;
    if (s == NULL || mg_slab_full(s)) {
        s = mg_slab_next(a);
        if (s == NULL) return NULL;
        a->current = s;
    }
    if (s->bump < MG_SLAB_SLOTS) {
        p = (char*)s + (size_t)s->bump * MG_SLOT_BYTES;
        if (++s->bump == MG_SLAB_SLOTS && s->free != NULL)
            mg_slab_sort_free(s);        /* the holes next, in address order */
    } else {
        p = s->free;
        s->free = *(void**)p;
    }
    s->live++;
    return p;
}

static void mg_slab_free(mg_slabs* a, void* p)
{
    mg_slab* s = mg_slab_of(p);
    *(void**)p = s->free;
    s->free = p;
    s->live--;
    if (s == a->current) {
        if (s->live == 0) {              /* start the slab afresh, in address order */
            s->free = NULL;
            s->bump = 1;
        }
        return;
    }
    if (s->live == 0) {
        if (s->list == MG_LIST_HALF_FREE) mg_slab_unlink(&a->half_free, s);
        if ((a->n_empty + 1) * (size_t)MG_SLAB_BYTES <= MG_SLAB_KEEP_BYTES) {
            s->free = NULL;
            s->bump = 1;
            mg_slab_push(&a->empty, s, MG_LIST_EMPTY);
            a->n_empty++;
        } else {
            mg_slab_release(a, s);
        }
    } else if (s->live == (MG_SLAB_SLOTS - 1) / 2 && s->list == MG_LIST_NONE) {
        mg_slab_push(&a->half_free, s, MG_LIST_HALF_FREE);
    }
}

/* Return every kept empty slab to the system; the bytes released. */
static size_t mg_slab_trim(mg_slabs* a)
{
    size_t released = 0;
    while (a->empty) {
        mg_slab* s = a->empty;
        mg_slab_unlink(&a->empty, s);
        a->n_empty--;
        mg_slab_release(a, s);
        released += MG_SLAB_BYTES;
    }
    return released;
}

/* tp_alloc and tp_free of the Value type (exactly Value: subclasses keep
 * CPython's allocator, which tp_free checks by the type of the object). */
static PyObject* mg_value_alloc(PyTypeObject* type, Py_ssize_t nitems)
{
    PyObject* o;
    if (type->tp_basicsize != MG_SLOT_BYTES || type->tp_itemsize != 0)
        return PyType_GenericAlloc(type, nitems);     /* not a 64-byte node */
    o = (PyObject*)mg_slab_alloc(&mg_value_slabs);
    if (o == NULL) return PyErr_NoMemory();
    memset(o, 0, MG_SLOT_BYTES);
    PyTraceMalloc_Track(0, (uintptr_t)o, MG_SLOT_BYTES);
    return PyObject_Init(o, type);
}

static void mg_value_free(void* p)
{
    PyTraceMalloc_Untrack(0, (uintptr_t)p);
    mg_slab_free(&mg_value_slabs, p);
}

#endif

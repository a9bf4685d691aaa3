/* cowpy: a copy-on-write-safe way for the cyclic GC to find garbage.
 *
 * Stock CPython (Python/gc.c) finds cyclic garbage by writing into every
 * object it examines: update_refs() copies the refcount into _gc_prev,
 * subtract_refs() decrements it there and move_unreachable() relinks
 * _gc_next/_gc_prev of survivors and garbage alike.  In a forked worker
 * each of those writes copies a 4 KiB page that was shared with the
 * parent.
 *
 * Here the same computation keeps all per-object scratch in a *side
 * arena*: an open-addressing table, keyed by the address of the object's
 * PyGC_Head, mmap()ed for one collection and munmap()ed when it ends.
 * Each 12-byte slot (16 with compilers that cannot pack it) holds
 *
 *     key  uintptr_t  PyGC_Head address, 0 = empty slot
 *     val  uint32_t   bit 31: reachable; bit 30: passed by the mark scan;
 *                     bits 0-29: gc_refs (saturating, below) until the
 *                     object is found reachable, then the mark-stack link
 *
 * At a load factor of at most 3/4 that is 16 bytes per examined object
 * when the set was counted, at most 24 when the table was sized from the
 * previous collection (see arena_deduce_unreachable()); nothing else is
 * allocated.  The mark stack is threaded through the values (an object is
 * pushed once, when it becomes reachable, and its gc_refs are dead from
 * then on), so deep graphs need no recursion and no extra memory.
 *
 * What finding the garbage this way writes (see docs/design.md):
 *   - survivors: nothing, except the one link word of each list neighbour
 *     of a garbage object (no refcount, flag or body write; survivors are
 *     not relinked; tuples and dicts in the permanent generation are not
 *     untracked);
 *   - each garbage object: unlinked from its list (writes its two
 *     neighbours' links) and appended to the unreachable list with the
 *     flags deduce_unreachable() would leave, so gc.c's stock pipeline
 *     (legacy finalizers, weakrefs, tp_finalize, resurrection, tp_clear)
 *     runs on it unchanged;
 *   - list heads: O(1) splices in gc.c, as in every collection.
 */

#include "Python.h"
#include "pycore_dict.h"          // PyDictValues.embedded
#include "pycore_gc.h"
#include "pycore_frame.h"        // _PyInterpreterFrame
#include "pycore_gc_cow.h"
#include "gc_cow_internal.h"      // cow_list_move()
#include "pycore_hashtable.h"      // _Py_hashtable_t (oracle)
#include "pycore_initconfig.h"    // _PyStatus_ERR()
#include "pycore_interp.h"        // PyInterpreterState.gc
#include "pycore_object.h"        // _PyObject_IS_GC()
#include "pycore_pyerrors.h"      // _PyErr_GetRaisedException()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "pycore_unicodeobject.h" // _PyUnicode_InternImmortal()

#include <stdint.h>
#include <string.h>
#include <wchar.h>
#ifdef HAVE_PTHREAD_H
#  include <pthread.h>          // pthread_atfork()
#endif
#ifdef HAVE_SYS_MMAN_H
#  include <sys/mman.h>
#endif

#ifndef Py_GIL_DISABLED

typedef struct _gc_runtime_state GCState;

#define AS_GC(op) _Py_AS_GC(op)
#define FROM_GC(gc) _Py_FROM_GC(gc)

/* Slot value encoding: two flag bits and a 30-bit field. */
/* Found reachable (from then on the field links the mark stack). */
#define VAL_REACHABLE   ((uint32_t)1 << 31)
/* The mark phase's list-order scan has passed the object (stock: the
   object no longer has PREV_MASK_COLLECTING). */
#define VAL_SCANNED     ((uint32_t)1 << 30)
#define VAL_MASK        (VAL_SCANNED - 1)
/* gc_refs at or above this are not counted exactly: such an object is
   treated as referenced from outside (2**30 internal references would
   take 8 GiB of pointers, so this never hides garbage in practice). */
#define REFS_SATURATED  VAL_MASK
/* End of the mark stack; also bounds the table to 2**30 - 1 slots. */
#define STACK_END       VAL_MASK

/* The collector's settings and counters: _PyGC_cow (gc_cow_internal.h),
   defined here. */
_PyGC_CowState _PyGC_cow = {
    .mode = COW_MODE_DEFAULT,
    .fork_mode = COW_FORK_FREEZE,
    .shared_threshold = 1,
};


/* ------------------------------------------------------------ the arena */

#if defined(__GNUC__) || defined(__clang__)
/* 12 bytes a slot: keys are then only 4-byte aligned, which x86-64 and
   AArch64 load at full speed, and the table costs 16 bytes per object at
   the maximum load, leaving room in the 24-byte budget for sizing it from
   an estimate (see arena_deduce_unreachable()). */
typedef struct __attribute__((packed, aligned(4))) {
    uintptr_t key;
    uint32_t val;
} cow_slot;
#else
typedef struct {
    uintptr_t key;
    uint32_t val;
} cow_slot;
#endif

/* Table lookups are random accesses into a table larger than the caches,
   and the collector makes two per reference.  Issued one at a time they
   stall on every miss, so lookups go through a short ring instead: a
   lookup prefetches its slot and is carried out RING_LEN lookups later,
   by which time the slot is (usually) in cache.  The order in which
   decrements and marks happen does not matter to the result. */
#define RING_LEN 32
#define RING_MASK (RING_LEN - 1)

enum { ACT_INSERT, ACT_DECREF, ACT_SCAN, ACT_MARK };

typedef struct {
    cow_slot *slots;
    size_t nslots;
    size_t maplen;
    /* Mark stack of objects to traverse, threaded through the slot
       values (an object is pushed once, when it becomes reachable and the
       scan has reached it; its gc_refs are dead from then on), so it
       needs no memory and no recursion. */
    uint32_t top;
    /* Pending lookups. */
    unsigned rhead, rlen;
    uintptr_t rkey[RING_LEN];
    size_t rhome[RING_LEN];
    uint32_t rval[RING_LEN];
    uint8_t ract[RING_LEN];
} cow_arena;

static inline size_t
arena_home(const cow_arena *a, uintptr_t key)
{
    /* PyGC_Head addresses are 16-byte aligned: drop the zero bits, mix
       with a Fibonacci multiplier, then map onto [0, nslots) without a
       division (nslots need not be a power of two, which keeps the table
       small). */
    uint64_t h = (uint64_t)(key >> 4) * UINT64_C(0x9E3779B97F4A7C15);
#if defined(__SIZEOF_INT128__)
    return (size_t)(((unsigned __int128)h * a->nslots) >> 64);
#else
    return (size_t)(h % a->nslots);
#endif
}

static inline void
prefetch(const void *p)
{
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
}

/* No swap reserved for the table: most of it is touched once, if at all
   (where the flag is missing, as on some BSDs, the mapping reserves). */
#ifdef MAP_NORESERVE
#  define COW_MAP_NORESERVE MAP_NORESERVE
#else
#  define COW_MAP_NORESERVE 0
#endif

/* 0 on success; -1 no memory; -2 more objects than 30-bit indices. */
static int
arena_alloc(cow_arena *a, Py_ssize_t nobjects)
{
    size_t nslots = (size_t)nobjects + (size_t)nobjects / 3 + 1;
    if (nslots >= STACK_END) {
        return -2;
    }
    size_t len = nslots * sizeof(cow_slot);
#if defined(HAVE_MMAP) && defined(MAP_ANONYMOUS)
    /* Fresh zero pages straight from the kernel, returned by munmap():
       never a reused heap page that a forked child shares. */
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | COW_MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        return -1;
    }
#  ifdef MADV_HUGEPAGE
    /* Lookups are random: huge pages spare a TLB miss on most of them. */
    if (len >= 4 * 1024 * 1024) {
        (void)madvise(p, len, MADV_HUGEPAGE);
    }
#  endif
#else
    void *p = calloc(1, len);
    if (p == NULL) {
        return -1;
    }
#endif
    a->slots = (cow_slot *)p;
    a->nslots = nslots;
    a->maplen = len;
    a->top = STACK_END;
    a->rhead = a->rlen = 0;
    return 0;
}

static void
arena_free(cow_arena *a)
{
#if defined(HAVE_MMAP) && defined(MAP_ANONYMOUS)
    munmap(a->slots, a->maplen);
#else
    free(a->slots);
#endif
    a->slots = NULL;
}

/* Push slot i (reachable and scanned) for traversal. */
static inline void
arena_push(cow_arena *a, size_t i)
{
    a->slots[i].val = VAL_REACHABLE | VAL_SCANNED | a->top;
    a->top = (uint32_t)i;
    prefetch((const void *)a->slots[i].key);
}

static inline size_t
arena_pop(cow_arena *a)
{
    size_t i = a->top;
    a->top = a->slots[i].val & VAL_MASK;
    return i;
}

/* Carry out one lookup of `key` (whose home slot is `home`). */
static inline void
arena_lookup(cow_arena *a, uintptr_t key, size_t home, uint32_t val,
             int act)
{
    size_t i = home;
    for (;;) {
        uintptr_t k = a->slots[i].key;
        if (k == key) {
            break;
        }
        if (k == 0) {
            if (act == ACT_INSERT) {
                a->slots[i].key = key;
                a->slots[i].val = val;
            }
            /* Otherwise: not in the collection set (another generation,
               or immortal); ignored, as gc.c ignores objects without
               PREV_MASK_COLLECTING. */
            return;
        }
        if (++i == a->nslots) {
            i = 0;
        }
    }
    assert(act != ACT_INSERT);
    uint32_t v = a->slots[i].val;
    switch (act) {
    case ACT_DECREF:
        /* v == 0 would mean more references traversed than counted (a
           broken tp_traverse); stock asserts, we clamp. */
        assert(v > 0);
        if (v != REFS_SATURATED && v != 0) {
            a->slots[i].val = v - 1;
        }
        break;
    case ACT_SCAN:
        /* The scan reaches the object: traverse it if something reached
           it already or gc_refs > 0 (referenced from outside the set);
           otherwise it is tentatively unreachable. */
        assert(!(v & VAL_SCANNED));
        if ((v & VAL_REACHABLE) || v != 0) {
            arena_push(a, i);
        }
        else {
            a->slots[i].val = VAL_SCANNED;
        }
        break;
    case ACT_MARK:
        if (v & VAL_REACHABLE) {
            break;
        }
        if (v & VAL_SCANNED) {
            /* Passed over as unreachable: traverse it now (stock moves
               it back to the young list to be scanned again). */
            arena_push(a, i);
        }
        else {
            /* Ahead of the scan, which will traverse it. */
            a->slots[i].val = VAL_REACHABLE;
        }
        break;
    }
}

static inline void
arena_ring_push(cow_arena *a, uintptr_t key, uint32_t val, int act)
{
    size_t home = arena_home(a, key);
    /* Both ends: a 12-byte slot may straddle two cache lines. */
    prefetch(&a->slots[home]);
    prefetch((const char *)&a->slots[home] + sizeof(cow_slot) - 1);
    if (a->rlen == RING_LEN) {
        unsigned o = a->rhead;
        a->rhead = (o + 1) & RING_MASK;
        a->rlen--;
        arena_lookup(a, a->rkey[o], a->rhome[o], a->rval[o], a->ract[o]);
    }
    unsigned t = (a->rhead + a->rlen) & RING_MASK;
    a->rkey[t] = key;
    a->rhome[t] = home;
    a->rval[t] = val;
    a->ract[t] = (uint8_t)act;
    a->rlen++;
}

/* Carry out every pending lookup (each with the action it was queued
   with; marks may queue objects, never lookups). */
static void
arena_ring_drain(cow_arena *a)
{
    while (a->rlen > 0) {
        unsigned o = a->rhead;
        a->rhead = (o + 1) & RING_MASK;
        a->rlen--;
        arena_lookup(a, a->rkey[o], a->rhome[o], a->rval[o], a->ract[o]);
    }
}


/* ------------------------------------------------ finding the garbage */

/* The collection set: one or two gc lists (young, then permanent). */
#define FOR_EACH_IN_SET(lists, nlists, gc)                                \
    for (int _l = 0; _l < (nlists); _l++)                                 \
        for (PyGC_Head *gc = _PyGCHead_NEXT((lists)[_l]);                  \
             gc != (lists)[_l]; gc = _PyGCHead_NEXT(gc))

/* Queue a lookup of a referent, unless it cannot be in the collection set
   (not a GC object, or untracked): those need no table access. */
static inline void
arena_visit(cow_arena *a, PyObject *op, int act)
{
    if (!_PyObject_IS_GC(op)) {
        return;
    }
    PyGC_Head *gc = AS_GC(op);
    if (gc->_gc_next == 0) {
        return;
    }
    arena_ring_push(a, (uintptr_t)gc, 0, act);
}

/* subtract_refs() without writing the referent. */
static int
visit_decref_arena(PyObject *op, void *arg)
{
    arena_visit((cow_arena *)arg, op, ACT_DECREF);
    return 0;
}

/* move_unreachable()'s propagation, as a mark phase. */
static int
visit_mark_arena(PyObject *op, void *arg)
{
    arena_visit((cow_arena *)arg, op, ACT_MARK);
    return 0;
}

static inline void
traverse_slot(cow_arena *a, size_t i, visitproc visit)
{
    PyObject *op = FROM_GC((PyGC_Head *)a->slots[i].key);
    (void)Py_TYPE(op)->tp_traverse(op, visit, a);
}

/* update_refs(): gc_refs = refcount for every object in the set.
   Immortal objects stay out (stock moves them to the permanent
   generation; either way their references are never subtracted, so what
   they refer to survives).  Returns the number inserted, or -1 if the set
   outgrew the table; *walked: the objects of the set, immortal ones
   included. */
static Py_ssize_t
arena_insert_all(cow_arena *a, PyGC_Head **lists, int nlists,
                 Py_ssize_t *walked)
{
    size_t capacity = a->nslots - a->nslots / 4;
    size_t n = 0;
    *walked = 0;
    FOR_EACH_IN_SET(lists, nlists, gc) {
        PyObject *op = FROM_GC(gc);
        (*walked)++;
        if (_Py_IsImmortal(op)) {
            continue;
        }
        if (++n > capacity) {
            return -1;
        }
        Py_ssize_t refs = Py_REFCNT(op);
        /* As in gc.c: a tracked object with refcount 0 means a tp_dealloc
           let a dying object stay tracked and called back into Python. */
        _PyObject_ASSERT(op, refs != 0);
        uint32_t v = refs >= (Py_ssize_t)REFS_SATURATED
                     ? REFS_SATURATED : (uint32_t)refs;
        arena_ring_push(a, (uintptr_t)gc, v, ACT_INSERT);
    }
    arena_ring_drain(a);
    return (Py_ssize_t)n;
}

/* subtract_refs().  Objects are traversed in list order, as stock does:
   it is roughly allocation order, so an object's referents tend to sit
   on the lines just touched; only the table lookups are random. */
static void
arena_subtract(cow_arena *a, PyGC_Head **lists, int nlists)
{
    FOR_EACH_IN_SET(lists, nlists, gc) {
        PyObject *op = FROM_GC(gc);
        if (!_Py_IsImmortal(op)) {
            (void)Py_TYPE(op)->tp_traverse(op, visit_decref_arena, a);
        }
    }
    arena_ring_drain(a);
}

/* move_unreachable(): everything reachable from an object with
   gc_refs > 0 (referenced from outside the set) survives.  As in stock,
   objects are scanned in list order and traversed when the scan reaches
   them (pushed, and popped right after that list step), so traversals
   mostly walk memory in allocation order; objects found reachable after
   the scan passed them are pushed when found. */
static void
arena_mark(cow_arena *a, PyGC_Head **lists, int nlists)
{
    FOR_EACH_IN_SET(lists, nlists, gc) {
        if (_Py_IsImmortal(FROM_GC(gc))) {
            continue;           /* not in the table: nothing to look up */
        }
        arena_ring_push(a, (uintptr_t)gc, 0, ACT_SCAN);
        while (a->top != STACK_END) {
            traverse_slot(a, arena_pop(a), visit_mark_arena);
        }
    }
    for (;;) {
        while (a->top != STACK_END) {
            traverse_slot(a, arena_pop(a), visit_mark_arena);
        }
        if (a->rlen == 0) {
            break;
        }
        arena_ring_drain(a);
    }
}

/* Move the garbage onto `unreachable` in the state deduce_unreachable()
   leaves it: PREV_MASK_COLLECTING and NEXT_MASK_UNREACHABLE set on every
   member, the list head clean.  Only garbage and its list neighbours are
   written. */
static Py_ssize_t
arena_move_unreachable(cow_arena *a, PyGC_Head *unreachable)
{
    Py_ssize_t n = 0;
    unreachable->_gc_next = (uintptr_t)unreachable;
    unreachable->_gc_prev = (uintptr_t)unreachable;
    for (size_t s = 0; s < a->nslots; s++) {
        if (a->slots[s].key == 0 || (a->slots[s].val & VAL_REACHABLE)) {
            continue;
        }
        if (_PyGC_cow.inject_oracle_break > 0 && n == 0) {
            /* Test hook: leave the first garbage object where it is. */
            _PyGC_cow.inject_oracle_break--;
            a->slots[s].val |= VAL_REACHABLE;
            continue;
        }
        PyGC_Head *gc = (PyGC_Head *)a->slots[s].key;
        PyGC_Head *prev = _PyGCHead_PREV(gc);
        PyGC_Head *next = _PyGCHead_NEXT(gc);
        _PyGCHead_SET_NEXT(prev, next);
        _PyGCHead_SET_PREV(next, prev);

        PyGC_Head *last = (PyGC_Head *)unreachable->_gc_prev;
        gc->_gc_prev = (gc->_gc_prev & _PyGC_PREV_MASK_FINALIZED)
                       | _PyGC_PREV_MASK_COLLECTING | (uintptr_t)last;
        last->_gc_next = COW_NEXT_MASK_UNREACHABLE | (uintptr_t)gc;
        gc->_gc_next = COW_NEXT_MASK_UNREACHABLE | (uintptr_t)unreachable;
        unreachable->_gc_prev = (uintptr_t)gc;
        n++;
    }
    /* The head's own link got the mask when the first member was
       appended; deduce_unreachable() leaves it clean. */
    unreachable->_gc_next &= ~COW_NEXT_MASK_UNREACHABLE;
    return n;
}

/* Slack over the hint: a quarter with 12-byte slots, a sixteenth with
   16-byte ones, so that 24 bytes per object hold at the hinted size. */
#define HINT_SLACK(n) ((n) / (sizeof(cow_slot) <= 12 ? 4 : 16))

static Py_ssize_t
count_set(PyGC_Head **lists, int nlists)
{
    Py_ssize_t n = 0;
    FOR_EACH_IN_SET(lists, nlists, gc) {
        n++;
    }
    return n;
}

/* Find the unreachable objects among `lists` with the side arena.
   -1: the arena could not be allocated; nothing was written.

   Sizing: counting the set is a full walk of its lists (a pointer chase;
   perf put it at a fifth of the arena code), so the table is sized from
   *hint, what the previous collection of the same kind examined, plus
   HINT_SLACK: with 12-byte slots 20 bytes per hinted object, within 24
   per examined object as long as the set did not shrink by more than a
   sixth.  Only when there is no hint, or the set outgrew the table (the
   insert pass stops early), or a hinted table would be too large, is it
   counted exactly. */
static int
arena_deduce_unreachable(PyGC_Head **lists, int nlists,
                         PyGC_Head *unreachable, Py_ssize_t *hint)
{
    /* cow_fail_arena(n): a collection's arena "cannot be mapped". */
    if (_PyGC_cow.inject_failures > 0) {
        _PyGC_cow.inject_failures--;
        return -1;
    }
    cow_arena a;
    Py_ssize_t n;
    Py_ssize_t size = *hint > 0 ? *hint + HINT_SLACK(*hint) + 64 : -1;
    for (;;) {
        int counted = size < 0;
        if (counted) {
            size = count_set(lists, nlists);
        }
        int err = arena_alloc(&a, size);
        if (err == -2 && !counted) {
            size = -1;
            continue;
        }
        if (err < 0) {
            return -1;
        }
        n = arena_insert_all(&a, lists, nlists, &_PyGC_cow.last_walked);
        if (n >= 0) {
            break;
        }
        arena_free(&a);
        size = -1;
    }
    *hint = n;
    arena_subtract(&a, lists, nlists);
    arena_mark(&a, lists, nlists);
    (void)arena_move_unreachable(&a, unreachable);

    _PyGC_cow.arena_collections++;
    _PyGC_cow.last_examined = n;
    _PyGC_cow.last_arena_bytes = a.maplen;
    if (a.maplen > _PyGC_cow.max_arena_bytes) {
        _PyGC_cow.max_arena_bytes = a.maplen;
    }
    arena_free(&a);
    return 0;
}


/* The list helpers (cow_list_init(), cow_list_move(), cow_list_splice())
   are in gc_cow_internal.h. */

/* ------------------------------------ scratch in the headers (no fork) */

/* Until the process first forks, no page of it is shared with anyone, so
   a shared collection may keep its scratch where stock keeps it, in the
   examined headers, and need no arena (measured: the arena for a frozen
   heap of 1M objects raised the speed suite's after_freeze peak RSS by
   10 %).  Same result as the arena, same post-state (survivors in their
   own lists, permanent members stay frozen):

     update:    _gc_prev = FINALIZED flag | COLLECTING | refcount << 2
     subtract:  gc_refs -= 1 per reference from inside the set
     mark:      an object found reachable loses COLLECTING; while it waits
                on the mark stack its _gc_prev pointer bits link the stack
                (its gc_refs are dead by then)
     finish:    one forward pass per list over the _gc_next links, which
                were never written: garbage (still COLLECTING) is unlinked
                onto `unreachable`, survivors get their prev link back.

   Immortal objects stay out of the set, as in the arena: their _gc_prev
   is still a (aligned) prev pointer, so they never look COLLECTING. */

static inline uintptr_t
header_refs(PyGC_Head *gc)
{
    return gc->_gc_prev >> _PyGC_PREV_SHIFT;
}

static inline int
header_in_set(PyGC_Head *gc)
{
    return (gc->_gc_prev & _PyGC_PREV_MASK_COLLECTING) != 0;
}

static Py_ssize_t
header_update_refs(PyGC_Head **lists, int nlists, Py_ssize_t *walked)
{
    Py_ssize_t n = 0;
    *walked = 0;
    FOR_EACH_IN_SET(lists, nlists, gc) {
        PyObject *op = FROM_GC(gc);
        (*walked)++;
        if (_Py_IsImmortal(op)) {
            continue;
        }
        Py_ssize_t refs = Py_REFCNT(op);
        _PyObject_ASSERT(op, refs != 0);     /* see arena_insert_all() */
        gc->_gc_prev = (gc->_gc_prev & _PyGC_PREV_MASK_FINALIZED)
                       | _PyGC_PREV_MASK_COLLECTING
                       | ((uintptr_t)refs << _PyGC_PREV_SHIFT);
        n++;
    }
    return n;
}

static int
visit_decref_header(PyObject *op, void *Py_UNUSED(arg))
{
    if (_PyObject_IS_GC(op)) {
        PyGC_Head *gc = AS_GC(op);
        /* 0 would mean a broken tp_traverse: clamp, as the arena does. */
        if (header_in_set(gc) && header_refs(gc) > 0) {
            gc->_gc_prev -= (uintptr_t)1 << _PyGC_PREV_SHIFT;
        }
    }
    return 0;
}

static void
header_subtract(PyGC_Head **lists, int nlists)
{
    FOR_EACH_IN_SET(lists, nlists, gc) {
        if (header_in_set(gc)) {
            PyObject *op = FROM_GC(gc);
            (void)Py_TYPE(op)->tp_traverse(op, visit_decref_header, NULL);
        }
    }
}

/* Mark gc reachable and push it; the stack ends at NULL. */
static inline void
header_push(PyGC_Head **top, PyGC_Head *gc)
{
    gc->_gc_prev = (gc->_gc_prev & _PyGC_PREV_MASK_FINALIZED)
                   | (uintptr_t)*top;
    *top = gc;
}

static int
visit_mark_header(PyObject *op, void *arg)
{
    if (_PyObject_IS_GC(op)) {
        PyGC_Head *gc = AS_GC(op);
        if (header_in_set(gc)) {
            header_push((PyGC_Head **)arg, gc);
        }
    }
    return 0;
}

static void
header_mark(PyGC_Head **lists, int nlists)
{
    PyGC_Head *top = NULL;
    FOR_EACH_IN_SET(lists, nlists, gc) {
        if (!header_in_set(gc) || header_refs(gc) == 0) {
            continue;
        }
        header_push(&top, gc);
        while (top != NULL) {
            PyGC_Head *g = top;
            top = (PyGC_Head *)(g->_gc_prev & _PyGC_PREV_MASK);
            PyObject *op = FROM_GC(g);
            (void)Py_TYPE(op)->tp_traverse(op, visit_mark_header, &top);
        }
    }
}

/* Rebuild every list's prev links and clear COLLECTING.  With
   `unreachable`, objects still COLLECTING (garbage) are moved onto it in
   the state deduce_unreachable() leaves it; without, none is garbage. */
static void
header_finish(PyGC_Head **lists, int nlists, PyGC_Head *unreachable)
{
    if (unreachable != NULL) {
        cow_list_init(unreachable);
    }
    for (int l = 0; l < nlists; l++) {
        PyGC_Head *head = lists[l];
        PyGC_Head *prev = head;
        PyGC_Head *gc = (PyGC_Head *)head->_gc_next;
        while (gc != head) {
            PyGC_Head *next = (PyGC_Head *)gc->_gc_next;
            uintptr_t fin = gc->_gc_prev & _PyGC_PREV_MASK_FINALIZED;
            int garbage = unreachable != NULL && header_in_set(gc);
            if (garbage && _PyGC_cow.inject_oracle_break > 0) {
                /* Test hook, as in arena_move_unreachable(). */
                _PyGC_cow.inject_oracle_break--;
                garbage = 0;
            }
            if (garbage) {
                PyGC_Head *last = (PyGC_Head *)unreachable->_gc_prev;
                gc->_gc_prev = fin | _PyGC_PREV_MASK_COLLECTING
                               | (uintptr_t)last;
                last->_gc_next = COW_NEXT_MASK_UNREACHABLE | (uintptr_t)gc;
                gc->_gc_next = COW_NEXT_MASK_UNREACHABLE
                               | (uintptr_t)unreachable;
                unreachable->_gc_prev = (uintptr_t)gc;
            }
            else {
                gc->_gc_prev = fin | (uintptr_t)prev;
                prev->_gc_next = (uintptr_t)gc;
                prev = gc;
            }
            gc = next;
        }
        prev->_gc_next = (uintptr_t)head;
        head->_gc_prev = (uintptr_t)prev;
    }
    if (unreachable != NULL) {
        /* As in arena_move_unreachable(): the head's link stays clean. */
        unreachable->_gc_next &= ~COW_NEXT_MASK_UNREACHABLE;
    }
}

static void
header_deduce_unreachable(PyGC_Head **lists, int nlists,
                          PyGC_Head *unreachable)
{
    Py_ssize_t n = header_update_refs(lists, nlists, &_PyGC_cow.last_walked);
    header_subtract(lists, nlists);
    header_mark(lists, nlists);
    header_finish(lists, nlists, unreachable);
    _PyGC_cow.header_collections++;
    _PyGC_cow.last_examined = n;
}

/* ------------------------------------------- roots of the immortal walk */

/* visit() each object the running frames of the interpreter's threads
   hold in their local variables (fast locals, cells, free variables).
   Frames of generators and coroutines are left out: their owner's
   tp_traverse visits them already.  The value stack is left out too
   (its depth is not saved while a frame calls into C): what it holds
   stays a root, which only means it may become immortal. */
static void
visit_frame_locals(PyInterpreterState *interp, visitproc visit, void *arg)
{
    for (PyThreadState *t = interp->threads.head; t != NULL; t = t->next) {
        for (_PyInterpreterFrame *f = t->current_frame; f != NULL;
             f = f->previous)
        {
            if (f->owner != FRAME_OWNED_BY_THREAD
                || !PyCode_Check(f->f_executable))
            {
                continue;
            }
            int n = ((PyCodeObject *)f->f_executable)->co_nlocalsplus;
            for (int i = 0; i < n; i++) {
                if (f->localsplus[i] != NULL) {
                    (void)visit(f->localsplus[i], arg);
                }
            }
        }
    }
}

/* For gc_cow_immortal.c: call fn(op, gc_refs, arg) for each object of the
   lists referenced from outside them (gc_refs > 0 once the set's internal
   references are subtracted, as the first half of a collection computes
   them), until fn returns non-zero.  In the headers if the process never
   forked (no page is shared yet; restored before returning, list links
   never written, see header_deduce_unreachable()), else in a side arena.
   fn may write refcounts, never list links.  -1: no memory for the
   arena, fn never called.

   Not in the headers while a collection is running (a finalizer that
   freezes, or forks in the immortal fork mode): the objects on its
   unreachable lists still carry PREV_MASK_COLLECTING, so the header
   scratch would count their references into their _gc_prev, which is a
   link gc.c still follows. */
int
_PyGC_CowExternalRoots(PyGC_Head **lists, int nlists, int frames,
                       _PyGC_CowRootFn fn, void *arg)
{
    Py_ssize_t walked;
    PyInterpreterState *interp = _PyInterpreterState_GET();
    GCState *gcstate = &interp->gc;
    if (!cow_flag(&_PyGC_cow.forked)
        && !_Py_atomic_load_int_relaxed(&gcstate->collecting))
    {
        (void)header_update_refs(lists, nlists, &walked);
        header_subtract(lists, nlists);
        if (!frames) {
            visit_frame_locals(interp, visit_decref_header, NULL);
        }
        FOR_EACH_IN_SET(lists, nlists, gc) {
            if (header_in_set(gc) && header_refs(gc) > 0) {
                if (fn(FROM_GC(gc), (Py_ssize_t)header_refs(gc), arg)) {
                    break;
                }
            }
        }
        header_finish(lists, nlists, NULL);
        return 0;
    }
    cow_arena a;
    if (arena_alloc(&a, count_set(lists, nlists)) < 0) {
        return -1;
    }
    if (arena_insert_all(&a, lists, nlists, &walked) < 0) {
        arena_free(&a);         /* cannot happen: counted exactly */
        return -1;
    }
    arena_subtract(&a, lists, nlists);
    if (!frames) {
        visit_frame_locals(interp, visit_decref_arena, &a);
        arena_ring_drain(&a);
    }
    for (size_t i = 0; i < a.nslots; i++) {
        uint32_t refs = a.slots[i].val & VAL_MASK;
        if (a.slots[i].key != 0 && refs != 0) {
            if (fn(FROM_GC((PyGC_Head *)a.slots[i].key), (Py_ssize_t)refs,
                   arg)) {
                break;
            }
        }
    }
    arena_free(&a);
    return 0;
}


/* ------------------------------------------------------ gc.c's hooks */

static _PyGC_CowPath
select_path(PyInterpreterState *interp, int generation, _PyGC_Reason reason)
{
    GCState *gcstate = &interp->gc;
    if (_PyGC_cow.mode == COW_MODE_STOCK
        || !_Py_IsMainInterpreter(interp))
    {
        /* Other interpreters collect as stock does: their heaps are never
           inherited by a fork, and under their own GIL (PEP 684) they
           must not touch the main interpreter's counters and tables. */
        return _PyGC_COW_STOCK;
    }
    PyGC_Head *perm = &gcstate->permanent_generation.head;
    int has_permanent = _PyGCHead_NEXT(perm) != perm;
    if (generation == NUM_GENERATIONS - 1 && has_permanent) {
        if (cow_flag(&_PyGC_cow.child)
            && (reason == _Py_GC_REASON_SHUTDOWN
                || _PyInterpreterState_GetFinalizing(interp) != NULL))
        {
            /* A forked child's exit: module teardown turns the inherited
               heap into garbage, and freeing it would write (copy) about
               every inherited page only for the kernel to drop them
               (measured: 115 MiB of a 200,000-item heap, 5x slower
               exits).  Like stock, leave the frozen heap alone; what
               the child made itself is collected as usual.  Also
               Py_FinalizeEx()'s first PyGC_Collect() (a manual
               collection, before the modules go): it would map and fill
               an arena as large as the inherited heap for nothing.  A
               forking parent and a process that never forked keep
               these shared collections. */
            return _PyGC_cow.mode == COW_MODE_ARENA ? _PyGC_COW_ARENA
                                                    : _PyGC_COW_STOCK;
        }
        if (reason != _Py_GC_REASON_HEAP) {
            /* gc.collect() and the collections at shutdown. */
            return _PyGC_COW_SHARED;
        }
        if (_PyGC_cow.shared_threshold > 0) {
            _PyGC_cow.full_since_shared++;
            _PyGC_cow.pending_since_shared += gcstate->long_lived_pending;
            if (_PyGC_cow.full_since_shared >= _PyGC_cow.shared_threshold
                && _PyGC_cow.pending_since_shared >= _PyGC_cow.shared_estimate)
            {
                return _PyGC_COW_SHARED;
            }
        }
    }
    return _PyGC_cow.mode == COW_MODE_ARENA ? _PyGC_COW_ARENA
                                            : _PyGC_COW_STOCK;
}

_PyGC_CowPath
_PyGC_CowDeduceUnreachable(PyInterpreterState *interp, int generation,
                           _PyGC_Reason reason, PyGC_Head *young,
                           PyGC_Head *unreachable, _PyGC_CowDeduceFn stock)
{
    GCState *gcstate = &interp->gc;
    _PyGC_CowPath path = select_path(interp, generation, reason);
    if (path == _PyGC_COW_STOCK) {
        return path;
    }
    PyGC_Head *lists[2] = {young, &gcstate->permanent_generation.head};
    int nlists = path == _PyGC_COW_SHARED ? 2 : 1;
    Py_ssize_t *hint = &_PyGC_cow.size_hint[path == _PyGC_COW_SHARED
                                      ? NUM_GENERATIONS : generation];
#ifdef Py_DEBUG
    _Py_hashtable_t *oracle = NULL;
    if (_PyGC_cow.oracle) {
        oracle = _PyGC_CowOracleStockGarbage(lists, nlists, stock);
    }
#else
    (void)stock;
#endif
    int err = 0;
    if (path == _PyGC_COW_SHARED && _PyGC_cow.mode == COW_MODE_DEFAULT
        && !cow_flag(&_PyGC_cow.forked))
    {
        header_deduce_unreachable(lists, nlists, unreachable);
    }
    else {
        err = arena_deduce_unreachable(lists, nlists, unreachable, hint);
    }
#ifdef Py_DEBUG
    if (oracle != NULL) {
        if (err == 0) {
            _PyGC_CowOracleCompare(oracle, unreachable, generation, path);
        }
        _Py_hashtable_destroy(oracle);
    }
#endif
    if (err < 0) {
        /* No memory for the arena: fall back to the in-header algorithm
           over the collected generations only (never the permanent one,
           which holds the inherited heap after freeze-at-fork) and try
           the shared collection again next time. */
        _PyGC_cow.arena_fallbacks++;
        return _PyGC_COW_STOCK;
    }
    return path;
}

void
_PyGC_CowCollectionDone(PyInterpreterState *interp, _PyGC_CowPath path,
                        Py_ssize_t collected, Py_ssize_t uncollectable)
{
    /* gc_collect_main()'s lists are empty now, and leave scope soon. */
    _PyGC_CowNoteStackList(_PyGC_COW_LIST_UNREACHABLE, NULL);
    _PyGC_CowNoteStackList(_PyGC_COW_LIST_FINALIZERS, NULL);
    _PyGC_CowNoteStackList(_PyGC_COW_LIST_FINAL_UNREACHABLE, NULL);
    if (path != _PyGC_COW_SHARED) {
        return;
    }
    _PyGC_cow.shared_collections++;
    _PyGC_cow.shared_collected += collected;
    _PyGC_cow.shared_uncollectable += uncollectable;
    _PyGC_cow.full_since_shared = 0;
    _PyGC_cow.pending_since_shared = 0;
    _PyGC_cow.shared_estimate = _PyGC_cow.last_walked;
}

int
_PyGC_CowVisibleLists(PyInterpreterState *interp, PyGC_Head **lists)
{
    if (_PyGC_cow.mode == COW_MODE_STOCK) {
        return 0;
    }
    int n = 0;
    lists[n++] = &interp->gc.permanent_generation.head;
    PyGC_Head *aside = _PyGC_CowImmortalList(interp);
    if (aside != NULL) {
        lists[n++] = aside;
    }
    return n;
}

#endif  /* !Py_GIL_DISABLED */

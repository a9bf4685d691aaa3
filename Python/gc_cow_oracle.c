/* cowpy: the differential oracle of the side-arena collector (debug
 * builds only; see docs/design.md and Python/gc_cow.c, which calls it).
 */

#include "Python.h"
#include "pycore_gc.h"
#include "pycore_gc_cow.h"
#include "pycore_hashtable.h"     // _Py_hashtable_t
#include "pycore_object.h"        // _PyObject_IS_GC()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "gc_cow_internal.h"

#if !defined(Py_GIL_DISABLED)

#define FROM_GC(gc) _Py_FROM_GC(gc)

#ifdef Py_DEBUG
/* PYTHONCOWORACLE=1 or -X coworacle, debug builds only.  Before every
   side-arena collection, gc.c's own deduce_unreachable() runs on the same
   object set; the set is then put back as it was (list membership and
   header flags; order within a list may change, as any stock collection
   changes it), the arena runs, and the two garbage sets must be equal, or
   the process aborts with a report naming each object the two algorithms
   disagree on.  The stock run writes into every examined header, so with
   the oracle on a shared collection no longer keeps pages shared. */

static _Py_hashtable_t *
ptrset_new(void)
{
    return _Py_hashtable_new(_Py_hashtable_hash_ptr,
                             _Py_hashtable_compare_direct);
}

static int
ptrset_add(_Py_hashtable_t *set, const void *p)
{
    if (_Py_hashtable_set(set, p, (void *)1) < 0) {
        Py_FatalError("cowpy GC oracle: out of memory");
    }
    return 0;
}

static int
ptrset_has(_Py_hashtable_t *set, const void *p)
{
    return _Py_hashtable_get(set, p) != NULL;
}

/* The garbage gc.c's in-header algorithm finds among `lists`, which are
   left with the same members and flags.  Immortal objects are set aside
   first: update_refs() would move them to the permanent generation, and
   for both algorithms they are outside the set (roots). */
_Py_hashtable_t *
_PyGC_CowOracleStockGarbage(PyGC_Head **lists, int nlists,
                            _PyGC_CowDeduceFn deduce)
{
    if (nlists > 1) {
        /* Relinked below in another order. */
        _PyGC_CowFinalizersScattered(_PyInterpreterState_GET());
    }
    _Py_hashtable_t *from_perm = ptrset_new();
    _Py_hashtable_t *garbage = ptrset_new();
    if (from_perm == NULL || garbage == NULL) {
        Py_FatalError("cowpy GC oracle: out of memory");
    }
    PyGC_Head work, unreach, immortal[2];
    cow_list_init(&work);
    cow_list_init(&immortal[0]);
    cow_list_init(&immortal[1]);
    for (int l = 0; l < nlists; l++) {
        PyGC_Head *gc = _PyGCHead_NEXT(lists[l]);
        while (gc != lists[l]) {
            PyGC_Head *next = _PyGCHead_NEXT(gc);
            if (_Py_IsImmortal(FROM_GC(gc))) {
                cow_list_move(gc, &immortal[l]);
            }
            else {
                if (l == 1) {
                    ptrset_add(from_perm, gc);
                }
                cow_list_move(gc, &work);
            }
            gc = next;
        }
    }
    deduce(&work, &unreach);
    /* Undo what move_unreachable() left on the garbage. */
    PyGC_Head *gc = _PyGCHead_NEXT(&unreach);
    while (gc != &unreach) {
        PyGC_Head *next = (PyGC_Head *)(gc->_gc_next
                                        & ~COW_NEXT_MASK_UNREACHABLE);
        ptrset_add(garbage, gc);
        gc->_gc_next = (uintptr_t)next;
        gc->_gc_prev &= ~(uintptr_t)_PyGC_PREV_MASK_COLLECTING;
        gc = next;
    }
    cow_list_splice(&unreach, &work);
    gc = _PyGCHead_NEXT(&work);
    while (gc != &work) {
        PyGC_Head *next = _PyGCHead_NEXT(gc);
        cow_list_move(gc, ptrset_has(from_perm, gc) ? lists[1] : lists[0]);
        gc = next;
    }
    for (int l = 0; l < nlists; l++) {
        cow_list_splice(&immortal[l], lists[l]);
    }
    _Py_hashtable_destroy(from_perm);
    return garbage;
}

static void
oracle_report(PyGC_Head *gc, const char *verdict, int *shown)
{
    if ((*shown)++ >= 20) {
        return;
    }
    PyObject *op = FROM_GC(gc);
    fprintf(stderr, "  %p  %-24.24s refcnt=%zd  %s\n", (void *)op,
            Py_TYPE(op)->tp_name, Py_REFCNT(op), verdict);
}

typedef struct {
    _Py_hashtable_t *arena;
    int *shown;
    Py_ssize_t missing;
} oracle_cmp;

static int
oracle_missing_cb(_Py_hashtable_t *ht, const void *key, const void *value,
                  void *arg)
{
    oracle_cmp *c = (oracle_cmp *)arg;
    if (!ptrset_has(c->arena, key)) {
        c->missing++;
        oracle_report((PyGC_Head *)key,
                      "stock: unreachable, side arena: reachable",
                      c->shown);
    }
    return 0;
}

/* Compare the arena's garbage (on `unreachable`, in deduce_unreachable()'s
   post-state) with the stock garbage set; abort on any difference. */
void
_PyGC_CowOracleCompare(_Py_hashtable_t *stock, PyGC_Head *unreachable,
                       int generation, _PyGC_CowPath path)
{
    _Py_hashtable_t *arena = ptrset_new();
    if (arena == NULL) {
        Py_FatalError("cowpy GC oracle: out of memory");
    }
    int shown = 0;
    Py_ssize_t extra = 0, n = 0;
    PyGC_Head *gc = _PyGCHead_NEXT(unreachable);
    while (gc != unreachable) {
        n++;
        ptrset_add(arena, gc);
        if (!ptrset_has(stock, gc)) {
            extra++;
            if (shown == 0) {
                fprintf(stderr, "cowpy GC oracle: the side arena and "
                        "gc.c disagree (generation %d, %s collection):\n",
                        generation,
                        path == _PyGC_COW_SHARED ? "shared" : "arena");
            }
            oracle_report(gc, "side arena: unreachable, stock: reachable",
                          &shown);
        }
        gc = (PyGC_Head *)(gc->_gc_next & ~COW_NEXT_MASK_UNREACHABLE);
    }
    oracle_cmp c = {arena, &shown, 0};
    if (shown == 0 && (size_t)n != _Py_hashtable_len(stock)) {
        fprintf(stderr, "cowpy GC oracle: the side arena and gc.c disagree "
                "(generation %d, %s collection):\n", generation,
                path == _PyGC_COW_SHARED ? "shared" : "arena");
    }
    (void)_Py_hashtable_foreach(stock, oracle_missing_cb, &c);
    _Py_hashtable_destroy(arena);
    _PyGC_cow.oracle_checks++;
    if (extra || c.missing) {
        fprintf(stderr, "  side arena found %zd garbage objects, stock %zu; "
                "%zd only by the arena, %zd only by stock\n", n,
                _Py_hashtable_len(stock), extra, c.missing);
        Py_FatalError("cowpy GC oracle: garbage sets differ");
    }
}
#endif  /* Py_DEBUG */

#endif  /* !Py_GIL_DISABLED */

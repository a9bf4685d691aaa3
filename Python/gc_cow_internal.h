/* cowpy: what Python/gc_cow*.c (finding garbage and the hooks, the fork's
   life cycle, the immortalizing walk, settled code, the oracle, options
   and the gc module functions) share; not for the rest of the
   interpreter (that is pycore_gc_cow.h). */

#ifndef Py_GC_COW_INTERNAL_H
#define Py_GC_COW_INTERNAL_H

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "pycore_gc.h"            // PyGC_Head
#include "pycore_gc_cow.h"        // _PyGC_CowPath, _PyGC_CowDeduceFn

/* Modes (PYTHONCOWGC / -X cowgc / gc.set_cow_mode()). */
enum {
    COW_MODE_DEFAULT = 0,   /* shared collections when the permanent
                               generation is examined; stock otherwise */
    COW_MODE_ARENA = 1,     /* every collection through the side arena */
    COW_MODE_STOCK = 2,     /* stock CPython: never the side arena, frozen
                               objects never examined nor listed */
};
/* Freeze-at-fork modes (PYTHONCOWFORK / -X cowfork / gc.set_fork_mode()). */
enum { COW_FORK_OFF = 0, COW_FORK_FREEZE = 1, COW_FORK_IMMORTAL = 2 };
/* PYTHONCOWCODE / -X cowcode: what the immortalizing walk does to code
   (gc_cow_code.c): leave it, settle it until it is hot in a process
   (SETTLE), or settle it until its first few calls there (LIGHT, the
   default).  The order is that of the names in gc_cow_settings.c. */
enum { COW_CODE_STOCK = 0, COW_CODE_SETTLE = 1, COW_CODE_LIGHT = 2 };

/* Process-wide: settings come from the main interpreter's configuration
   and every GIL-holding collection updates the counters. */
typedef struct {
    int mode;
    int fork_mode;                /* COW_FORK_* */
    Py_ssize_t shared_threshold;  /* 0: no automatic shared collections */
    /* Amortizes automatic shared collections as stock amortizes full
       ones: one runs when the objects promoted to the oldest generation
       since the last one reach what it will examine.  Stock's ratio for
       full collections is a quarter; a frozen heap is long-lived by
       construction, so it is scanned four times less often (measured:
       the speed suite's after_freeze workload, 250k promotions after
       freezing 1M objects, paid a whole-heap scan at a quarter). */
    Py_ssize_t full_since_shared;
    Py_ssize_t pending_since_shared;
    Py_ssize_t shared_estimate;
    /* gc.get_shared_stats() */
    Py_ssize_t shared_collections;
    Py_ssize_t shared_collected;
    Py_ssize_t shared_uncollectable;
    Py_ssize_t arena_collections;
    Py_ssize_t arena_fallbacks;
    Py_ssize_t last_examined;
    /* Objects the last side-arena collection walked, immortal ones
       included: what the next shared collection costs. */
    Py_ssize_t last_walked;
    /* Table sizing hints: objects examined by the last side-arena
       collection of each generation, and of the last shared one. */
    Py_ssize_t size_hint[NUM_GENERATIONS + 1];
    size_t last_arena_bytes;
    size_t max_arena_bytes;
    /* Immortalizing walks at fork that ran out of memory. */
    Py_ssize_t immortalize_failures;
    /* _testinternalcapi.cow_fail_arena(n): the next n arena allocations
       fail (tests). */
    Py_ssize_t inject_failures;
    /* Differential oracle (debug builds, PYTHONCOWORACLE=1): on, checks
       done, and _testinternalcapi.cow_break_arena(n): the next n
       side-arena collections keep one garbage object as if reachable (a
       leak, never a crash), which the oracle must report (tests). */
    int oracle;
    Py_ssize_t oracle_checks;
    Py_ssize_t inject_oracle_break;
    /* Shared collections that kept their scratch in the headers (the
       process had never forked, see header_deduce_unreachable()). */
    Py_ssize_t header_collections;
    /* The five fork flags below (forked, child, announcing, unannounced,
       fork_walked) are process-wide facts, written by pthread_atfork()
       handlers that may run on any thread: accessed only through
       cow_flag() and cow_set_flag() (relaxed atomics: each is a single
       independent word; the GIL or the fork orders everything else). */
    /* Set for good by the first fork (pthread_atfork(), in the parent
       before it forks: the child inherits it): from then on pages may be
       shared, with children or with the parent. */
    int forked;
    /* Set in a forked child (pthread_atfork() child handler): at its
       shutdown the frozen heap it inherited is left alone, as stock
       leaves it, instead of being freed page by page (#15). */
    int child;
    /* Fork announcements (pthread_atfork() handlers; #14): set by
       _PyGC_CowBeforeFork() for the fork that follows and cleared by the
       parent and child handlers; a child whose fork was not announced
       (a C fork() without PyOS_BeforeFork(), e.g. uWSGI without its fork
       hooks) sets `unannounced`, and its first collection does what
       freeze at fork would have done. */
    int announcing;
    int unannounced;
    Py_ssize_t unannounced_forks;
    /* The immortal fork mode immortalizes at a process's first announced
       fork only (#18): set by that fork's walk, cleared in the child (a
       new process: a daemonized master forks its workers from one).
       Later forks only freeze, so data a process holds between forks is
       never made immortal by a fork it did not exist at. */
    int fork_walked;
    /* Forks that only froze for that reason (gc.get_shared_stats()). */
    Py_ssize_t fork_walks_skipped;
    /* Settled code (gc_cow_code.c): COW_CODE_*, and the code objects
       settled by walks and thawed in this process. */
    int code_mode;
    Py_ssize_t code_settled;
    Py_ssize_t code_thawed;
    /* Freezing puts the objects with a finalizer first in the permanent
       generation, for a forked child's exit (gc_cow_fork.c, freeze()):
       an upper bound of that prefix's length, and whether a candidate
       may be elsewhere too. */
    Py_ssize_t finalizers_front;
    int finalizers_scattered;
} _PyGC_CowState;

extern _PyGC_CowState _PyGC_cow;

static inline int
cow_flag(int *flag)
{
    return _Py_atomic_load_int_relaxed(flag);
}

static inline void
cow_set_flag(int *flag, int value)
{
    _Py_atomic_store_int_relaxed(flag, value);
}



/* gc_cow.c: pthread_atfork() prepare handler; "this process forked". */
extern void _PyGC_CowNoteFork(void);
/* gc_cow.c: pthread_atfork() child and parent handlers. */
extern void _PyGC_CowNoteChild(void);
extern void _PyGC_CowNoteParent(void);
/* gc_cow.c: a new runtime (the first, or one after Py_FinalizeEx(), as
   embedders do) starts from the default settings, zero counters and no
   immortal list: the previous runtime's immortal objects are leaked, not
   listed (their memory may have been reused).  Whether the process
   forked stays true. */
extern void _PyGC_CowRuntimeReset(void);

/* Borrowed from gc.c, where it is private: the lowest bit of _gc_next
   marks members of the unreachable list between move_unreachable() and
   move_legacy_finalizers().  It must stay equal to gc.c's value. */
#define COW_NEXT_MASK_UNREACHABLE  ((uintptr_t)1)

/* gc list helpers (gc.c has its own, private to it). */

static inline void
cow_list_init(PyGC_Head *head)
{
    head->_gc_next = (uintptr_t)head;
    head->_gc_prev = (uintptr_t)head;
}

/* Unlink `gc` and append it to `list`, keeping its prev-word flags. */
static inline void
cow_list_move(PyGC_Head *gc, PyGC_Head *list)
{
    PyGC_Head *prev = _PyGCHead_PREV(gc);
    PyGC_Head *next = _PyGCHead_NEXT(gc);
    _PyGCHead_SET_NEXT(prev, next);
    _PyGCHead_SET_PREV(next, prev);
    PyGC_Head *last = (PyGC_Head *)list->_gc_prev;
    _PyGCHead_SET_NEXT(last, gc);
    _PyGCHead_SET_PREV(gc, last);
    _PyGCHead_SET_NEXT(gc, list);
    list->_gc_prev = (uintptr_t)gc;
}

/* Move every object of `from` to the end of `to`. */
static inline void
cow_list_splice(PyGC_Head *from, PyGC_Head *to)
{
    PyGC_Head *gc = _PyGCHead_NEXT(from);
    while (gc != from) {
        PyGC_Head *next = _PyGCHead_NEXT(gc);
        cow_list_move(gc, to);
        gc = next;
    }
}

#ifdef Py_DEBUG
/* gc_cow_oracle.c: the garbage stock's algorithm finds among `lists`
   (left as they were), and its comparison with the side arena's. */
struct _Py_hashtable_t;
extern struct _Py_hashtable_t *_PyGC_CowOracleStockGarbage(
    PyGC_Head **lists, int nlists, _PyGC_CowDeduceFn deduce);
extern void _PyGC_CowOracleCompare(struct _Py_hashtable_t *stock,
                                   PyGC_Head *unreachable, int generation,
                                   _PyGC_CowPath path);
#endif

/* gc_cow.c, for gc_cow_fork.c: raise the shared-collection estimate
   before a freeze; a full collection even while the collector is
   disabled, before an immortalizing walk. */
extern void _PyGC_CowNoteFreeze(struct _gc_runtime_state *gcstate);
/* The debug oracle relinks the permanent generation (gc_cow_fork.c). */
extern void _PyGC_CowFinalizersScattered(PyInterpreterState *interp);
extern void _PyGC_CowCollectBeforeImmortalizing(void);

/* Roots of the immortalizing walk: see gc_cow.c.  With frames == 0, what
   the running threads' frames hold in their local variables does not
   count as a reference from outside (the immortal fork mode, #18). */
typedef int (*_PyGC_CowRootFn)(PyObject *op, Py_ssize_t gc_refs, void *arg);
extern int _PyGC_CowExternalRoots(PyGC_Head **lists, int nlists, int frames,
                                  _PyGC_CowRootFn fn, void *arg);

/* gc_cow_immortal.c */
extern Py_ssize_t _PyGC_CowImmortalize(PyInterpreterState *interp,
                                       int frames);
extern PyGC_Head *_PyGC_CowImmortalList(PyInterpreterState *interp);
extern Py_ssize_t _PyGC_CowImmortalized(void);
extern void _PyGC_CowImmortalPrepare(void);
extern void _PyGC_CowImmortalReset(void);

/* Objects/dictobject.c (patch 0017): add a name to a class's shared keys
   as an instance's first store of it would; -1 if they are full. */
struct _dictkeysobject;
extern Py_ssize_t _PyDictKeys_CowAddSharedKey(struct _dictkeysobject *keys,
                                              PyObject *name);

/* gc_cow_code.c */
extern void _PyGC_CowSettleCode(PyCodeObject *co);
extern void _PyGC_CowCodeReset(void);

#endif  /* !Py_GC_COW_INTERNAL_H */

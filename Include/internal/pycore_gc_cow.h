/* cowpy: a copy-on-write-safe cyclic collector (Python/gc_cow.c).
 *
 * Upstream files call only what is declared here.  The stock collector
 * (Python/gc.c) keeps its lists, generations and garbage pipeline; this
 * subsystem replaces just the step that finds the garbage, for collections
 * that must not write into the objects they examine.
 */
#ifndef Py_INTERNAL_GC_COW_H
#define Py_INTERNAL_GC_COW_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "pycore_gc.h"            // PyGC_Head, _PyGC_Reason

/* How a collection finds its garbage. */
typedef enum {
    /* In-header algorithm of gc.c (update_refs/subtract_refs/
       move_unreachable) over the collected generations. */
    _PyGC_COW_STOCK = 0,
    /* Side-arena algorithm over exactly the same set (test mode). */
    _PyGC_COW_ARENA = 1,
    /* Over the collected generations *and* the permanent generation: a
       "shared collection".  Side arena once the process has forked; in a
       process that never forked, scratch in the headers, as stock keeps
       it, without relinking survivors (no page is shared yet). */
    _PyGC_COW_SHARED = 2,
} _PyGC_CowPath;

/* Read PYTHONCOWGC / -X cowgc and PYTHONCOWFORK / -X cowfork.  A bad value
   is a start-up error that names the option. */
extern PyStatus _PyGC_CowInit(PyInterpreterState *interp);

/* gc.c's deduce_unreachable(). */
typedef void (*_PyGC_CowDeduceFn)(PyGC_Head *base, PyGC_Head *unreachable);

/* Called by gc_collect_main() in place of deduce_unreachable(young, ...).
   Chooses the path for this collection; for the arena and shared paths
   it leaves `unreachable` exactly as deduce_unreachable() would (every
   member has PREV_MASK_COLLECTING and NEXT_MASK_UNREACHABLE set); with
   the side arena, of the objects that stay reachable it writes only the
   link word of each list neighbour of a garbage object (with the header
   scratch of a never-forked process, their headers too, as stock does;
   survivors stay in their own lists).  Returns the path taken; on
   _PyGC_COW_STOCK the caller runs deduce_unreachable() itself (also the
   fallback when the arena cannot be allocated).  `stock` is gc.c's own
   deduce_unreachable(), which the differential oracle of debug builds
   (PYTHONCOWORACLE=1) runs on the same set to check the arena's answer. */
extern _PyGC_CowPath _PyGC_CowDeduceUnreachable(
    PyInterpreterState *interp, int generation, _PyGC_Reason reason,
    PyGC_Head *young, PyGC_Head *unreachable, _PyGC_CowDeduceFn stock);

/* Account a finished collection that took `path`. */
extern void _PyGC_CowCollectionDone(PyInterpreterState *interp,
                                    _PyGC_CowPath path,
                                    Py_ssize_t collected,
                                    Py_ssize_t uncollectable);

/* The lists gc.get_objects() and gc.get_referrers() also walk, stored in
   lists[0..n) (at most 2), n returned: the permanent generation (frozen
   objects are ordinary, collectable objects in cowpy) and the immortal
   objects set aside from it by immortalizing freezes.  None with
   PYTHONCOWGC=stock, which hides frozen objects as stock does. */
extern int _PyGC_CowVisibleLists(PyInterpreterState *interp,
                                 PyGC_Head **lists);

/* PyOS_BeforeFork(), before it takes its locks: in the "immortal" fork
   mode, collect first (finalizers may run). */
extern void _PyGC_CowPrepareFork(PyInterpreterState *interp);

/* gc.freeze([immortalize=True]): with immortalize, collect first; freeze
   (noting the frozen heap's size for automatic shared collections); with
   immortalize, then make every frozen object and everything reachable
   from it immortal.  -1 with an exception set on failure. */
extern int _PyGC_CowFreeze(PyInterpreterState *interp, int immortalize);

/* PyOS_BeforeFork(): move every tracked object into the permanent
   generation (O(1) list splices) when freeze-at-fork is on, so neither
   parent nor child writes into the inherited heap in later ordinary
   collections. */
extern void _PyGC_CowBeforeFork(PyInterpreterState *interp);

/* gc_collect_main(), once it owns the collection (gcstate->collecting
   set): records the collecting thread. */
extern void _PyGC_CowCollectionStarted(PyThreadState *tstate);

/* The gc lists a collection keeps on its thread's stack while Python code
   runs (weakref callbacks, finalizers, tp_clear): gc.c names each one
   once it is initialized, and forgets it (NULL) when it goes out of
   scope; _PyGC_CowCollectionDone() forgets gc_collect_main()'s own. */
typedef enum {
    _PyGC_COW_LIST_UNREACHABLE,         /* gc_collect_main() */
    _PyGC_COW_LIST_FINALIZERS,          /* gc_collect_main() */
    _PyGC_COW_LIST_FINAL_UNREACHABLE,   /* gc_collect_main() */
    _PyGC_COW_LIST_SEEN,                /* finalize_garbage() */
    _PyGC_COW_LIST_WRCB,                /* handle_weakrefs() */
    _PyGC_COW_NLISTS
} _PyGC_CowStackList;

extern void _PyGC_CowNoteStackList(_PyGC_CowStackList which,
                                   PyGC_Head *head);

/* PyOS_AfterFork_Child(): if another thread of the parent was in the
   middle of a collection, that collection will never finish in the child:
   its objects go back onto the oldest generation with clean flags, and
   gcstate->collecting is cleared so that the child collects again (stock
   3.13 leaves it set: such a child never collects a cycle).  A collection
   the forking thread itself was running (fork from a gc callback or a
   finalizer) goes on. */
extern void _PyGC_CowAfterForkChild(PyThreadState *tstate);

/* Whether this is a forked child's shutdown (the main interpreter
   finalizing in a child): then module teardown and the interned strings'
   teardown leave inherited immortal objects unwritten, instead of writing
   a page of the inherited heap per object for nothing (#15; hooks in
   moduleobject.c, unicodeobject.c and pylifecycle.c, patch 0018).  An
   immortal object is never freed: what that teardown would write into it
   releases nothing. */
extern int _PyGC_CowChildExiting(PyInterpreterState *interp);

/* In that shutdown, _PyModule_ClearDict() leaves a global whose value
   this accepts bound: immortal objects, classes and objects of plain
   built-in types (no finalizer; Python/gc_cow_immortal.c).  Releasing
   them only wrote the inherited heap. */
extern int _PyGC_CowKeptAtExit(PyObject *op);

/* finalize_modules(), once the modules are cleared and before sys is:
   in a forked child's shutdown, call the finalizer of every object that
   has one, is not finalized yet and is still alive (kept alive by a
   global left bound, or inherited in a frozen cycle): a child's own
   buffered file stored in an inherited dict is flushed as stock's
   teardown would have flushed it when it released the dict. */
extern void _PyGC_CowFinalizeAtChildExit(PyInterpreterState *interp);

/* Objects/typeobject.c: NAME was set on a class (type_update_dict()),
   and an object's class changed (object_set_class()).  A finalizer that
   appears so on an object already frozen tells that exit to read the
   whole permanent generation (see freeze() in Python/gc_cow_fork.c). */
extern void _PyGC_CowTypeAttrSet(PyObject *name);
extern void _PyGC_CowClassAssigned(PyTypeObject *oldto,
                                   PyTypeObject *newto);

/* The gc module's cowpy functions, added by gcmodule_exec(). */
extern PyMethodDef _PyGC_CowMethods[];

/* Test hooks (cow_fail_arena(), cow_break_arena(), cow_oracle(),
   cow_set_forked(), cow_finalizers_front()), added by
   _testinternalcapi: exported for it. */
PyAPI_DATA(PyMethodDef) _PyGC_CowTestMethods[];

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_GC_COW_H */

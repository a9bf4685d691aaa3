/* cowpy: what Python/gc_cow.c and Python/gc_cow_immortal.c share (not
   for the rest of the interpreter: that is pycore_gc_cow.h). */

#ifndef Py_GC_COW_INTERNAL_H
#define Py_GC_COW_INTERNAL_H

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "pycore_gc.h"            // PyGC_Head

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

/* Roots of the immortalizing walk: see gc_cow.c. */
typedef int (*_PyGC_CowRootFn)(PyObject *op, Py_ssize_t gc_refs, void *arg);
extern int _PyGC_CowExternalRoots(PyGC_Head **lists, int nlists,
                                  _PyGC_CowRootFn fn, void *arg);

/* gc_cow_immortal.c */
extern Py_ssize_t _PyGC_CowImmortalize(PyInterpreterState *interp);
extern PyGC_Head *_PyGC_CowImmortalList(PyInterpreterState *interp);
extern Py_ssize_t _PyGC_CowImmortalized(void);
extern void _PyGC_CowImmortalPrepare(void);

#endif  /* !Py_GC_COW_INTERNAL_H */

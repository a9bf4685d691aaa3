/* cowpy: the immortalizing walk (gc.freeze(immortalize=True) and the
 * 'immortal' fork mode).
 *
 * Makes the frozen heap immortal (PEP 683) so that Py_INCREF/Py_DECREF in
 * forked workers stop writing into it, and does the other first-use
 * writes (str/bytes hashes, type version tags, module dict key versions)
 * in the parent.  Which frozen objects are referenced from outside the
 * frozen set (the walk's roots) is computed by gc_cow.c
 * (_PyGC_CowExternalRoots()), with the scratch placement of a shared
 * collection.  See docs/design.md, section 8.
 */

#include "Python.h"
#include "pycore_dict.h"          // _PyDictKeys_GetVersionForCurrentState()
#include "pycore_gc.h"
#include "pycore_gc_cow.h"
#include "pycore_interp.h"        // PyInterpreterState.gc
#include "pycore_object.h"        // _PyObject_IS_GC()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "pycore_unicodeobject.h" // _PyUnicode_InternImmortal()
#include "gc_cow_internal.h"

#ifndef Py_GIL_DISABLED

typedef struct _gc_runtime_state GCState;

#define FROM_GC(gc) _Py_FROM_GC(gc)

/* Objects made immortal by immortalizing walks (gc.get_shared_stats()). */
static Py_ssize_t immortalized_total;

Py_ssize_t
_PyGC_CowImmortalized(void)
{
    return immortalized_total;
}

/* gc.freeze(immortalize=True): make the frozen heap immortal (PEP 683), so
   that Py_INCREF/Py_DECREF stop writing into it, and do the other
   first-use writes (str/bytes hashes, type version tags) now, in the
   parent, rather than in every worker.

   Walk: from the frozen objects referenced from outside the frozen set
   (see immortalize_permanent()), everything reachable through tp_traverse
   (code objects, which are not GC objects in this build, through their
   fields), with an explicit stack.  An object is made immortal when first
   reached, which is also the "visited" mark.  Objects with a finalizer
   (tp_finalize or tp_del: open files, sockets, generators, classes with
   __del__) stay mortal so that they are still finalized and flushed, and
   the walk does not go through them: what only they reach stays mortal
   and is freed with them.  GC objects stay tracked (unlike
   _Py_SetImmortal(), which untracks) so gc.get_objects() and
   gc.get_referrers() still see them; the side arena skips immortal
   objects, and they leave the permanent generation for a list of their
   own. */

typedef struct {
    PyObject **stack;
    size_t len, cap;
    Py_ssize_t immortalized;
    int nomem;
} imm_walk;

static void
imm_push(imm_walk *w, PyObject *op)
{
    if (w->len == w->cap) {
        size_t ncap = w->cap ? 2 * w->cap : 4096;
        PyObject **n = PyMem_RawRealloc(w->stack, ncap * sizeof(PyObject *));
        if (n == NULL) {
            w->nomem = 1;
            return;
        }
        w->stack = n;
        w->cap = ncap;
    }
    w->stack[w->len++] = op;
}

static inline int
keeps_mortal(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    return tp->tp_finalize != NULL || tp->tp_del != NULL;
}

/* Give a module dict's keys their version now (what LOAD_GLOBAL and
   LOAD_ATTR on a module specialize on), so that a worker specializing on
   them only reads it: measured, dk_version writes into about 45 inherited
   key tables, 42 of them module dicts, copied 27 pages per worker
   (docs/last-writers.md).  A version only names the keys' current state;
   a later new key resets it, as it would have anyway.  An empty dict
   may share the static empty keys, which must keep version 0. */
static void
assign_keys_version(PyObject *dict)
{
    if (dict != NULL && PyDict_CheckExact(dict)
        && ((PyDictObject *)dict)->ma_values == NULL
        && PyDict_GET_SIZE(dict) > 0)
    {
        (void)_PyDictKeys_GetVersionForCurrentState(
            _PyInterpreterState_GET(), ((PyDictObject *)dict)->ma_keys);
    }
}

/* Make op immortal (or remember it, if it stays mortal) and queue it for
   traversal; no-op for objects already reached. */
static int
imm_reach(PyObject *op, void *arg)
{
    imm_walk *w = (imm_walk *)arg;
    if (op == NULL || _Py_IsImmortal(op) || w->nomem) {
        return 0;
    }
    if (keeps_mortal(op)) {
        /* Not traversed either: what only it reaches (its __dict__ and
           the attributes in it) must be freed with it. */
        return 0;
    }
    if (PyUnicode_CheckExact(op)) {
        (void)PyObject_Hash(op);            /* cache it before the fork */
        if (PyUnicode_CHECK_INTERNED(op) == SSTATE_INTERNED_MORTAL) {
            /* Interned strings change state, not only refcount, so that
               interpreter shutdown treats them as immortal interned. */
            PyObject *s = Py_NewRef(op);
            _PyUnicode_InternImmortal(_PyInterpreterState_GET(), &s);
            assert(s == op && _Py_IsImmortal(op));
            w->immortalized++;
            return 0;
        }
    }
    else if (PyBytes_CheckExact(op)) {
        (void)PyObject_Hash(op);
    }
    else if (PyType_Check(op)) {
        (void)PyUnstable_Type_AssignVersionTag((PyTypeObject *)op);
    }
    else if (PyModule_Check(op)) {
        assign_keys_version(PyModule_GetDict(op));
    }
#ifdef Py_REF_DEBUG
    /* As immortalize_interned(): decrements of immortal objects are not
       counted, so take the current references out of the total now. */
    for (Py_ssize_t i = 0; i < Py_REFCNT(op); i++) {
        _Py_DecRefTotal(_PyThreadState_GET());
    }
#endif
    op->ob_refcnt = _Py_IMMORTAL_REFCNT;
    w->immortalized++;
    if (PyObject_IS_GC(op) || PyCode_Check(op)) {
        imm_push(w, op);
    }
    return 0;
}

static void
imm_traverse(imm_walk *w, PyObject *op)
{
    if (PyCode_Check(op)) {
        PyCodeObject *co = (PyCodeObject *)op;
        imm_reach(co->co_consts, w);
        imm_reach(co->co_names, w);
        imm_reach(co->co_exceptiontable, w);
        imm_reach(co->co_localsplusnames, w);
        imm_reach(co->co_localspluskinds, w);
        imm_reach(co->co_filename, w);
        imm_reach(co->co_name, w);
        imm_reach(co->co_qualname, w);
        imm_reach(co->co_linetable, w);
        if (co->_co_cached != NULL) {
            imm_reach(co->_co_cached->_co_code, w);
            imm_reach(co->_co_cached->_co_varnames, w);
            imm_reach(co->_co_cached->_co_cellvars, w);
            imm_reach(co->_co_cached->_co_freevars, w);
        }
        return;
    }
    traverseproc traverse = Py_TYPE(op)->tp_traverse;
    if (traverse != NULL && PyObject_IS_GC(op)) {
        (void)traverse(op, imm_reach, w);
    }
}

/* The main interpreter's immortal GC objects, set aside from the
   permanent generation once made immortal: they are never garbage, so
   shared collections need not walk them (measured: ~2M immortal objects
   cost a worker 166 ms per gc.collect() while they stayed in the
   permanent generation).  Not walking them is exact: what they refer to
   counts as referenced from outside the set, which it is, forever.
   gc.get_objects() and gc.get_referrers() still list them;
   gc.get_freeze_count() and gc.unfreeze() do not touch them (an immortal
   object cannot be unfrozen into a generation where it could die). */
static PyGC_Head immortal_list;

PyGC_Head *
_PyGC_CowImmortalList(PyInterpreterState *interp)
{
    if (!_Py_IsMainInterpreter(interp)) {
        return NULL;
    }
    if (immortal_list._gc_next == 0) {
        cow_list_init(&immortal_list);
    }
    return &immortal_list;
}

/* The __dict__ of an instance whose attributes live inline in the
   instance (3.13's embedded values): its owner holds a reference to it
   that the owner's tp_traverse does not visit, so it looks referenced
   from outside the frozen set.  It is no root: its owner decides, and
   with an owner that stays mortal it must too (made immortal, it would
   keep every attribute alive after its owner died). */
static inline int
is_embedded_dict(PyObject *op)
{
    return PyDict_CheckExact(op)
           && ((PyDictObject *)op)->ma_values != NULL
           && ((PyDictObject *)op)->ma_values->embedded;
}

/* Walk from one root (a frozen object with gc_refs > 0). */
static void
imm_root(imm_walk *w, PyObject *op)
{
    if (is_embedded_dict(op)) {
        return;
    }
    imm_reach(op, w);
    while (w->len > 0 && !w->nomem) {
        imm_traverse(w, w->stack[--w->len]);
    }
}

static int
imm_root_cb(PyObject *op, Py_ssize_t Py_UNUSED(gc_refs), void *arg)
{
    imm_walk *w = (imm_walk *)arg;
    imm_root(w, op);
    return w->nomem;
}

/* Immortalize everything reachable from the permanent generation, and
   set what became immortal aside (above).  Returns the number of objects
   made immortal, -1 if the walk's stack or its arena could not grow
   (what was done stays done). */
Py_ssize_t
_PyGC_CowImmortalize(PyInterpreterState *interp)
{
    GCState *gcstate = &interp->gc;
    PyGC_Head *perm = &gcstate->permanent_generation.head;
    PyGC_Head *aside = _PyGC_CowImmortalList(interp);
    imm_walk w = {0};

    /* Roots: the frozen objects referenced from outside the frozen set
       (module and interpreter state held from C, frames, untracked
       containers, already-immortal objects), i.e. those with gc_refs > 0
       once the set's internal references are subtracted, as the first
       half of a collection computes them (in the headers if the
       process never forked, else in a side arena).  A frozen
       object referenced only from inside the set becomes immortal only
       when the walk reaches it through objects made immortal, never
       through one that stays mortal: with every frozen object a root, a
       finalizer's __dict__ (tracked on its own) was made immortal and
       leaked all it held once its owner died (found by the fuzzer). */
    PyGC_Head *lists[1] = {perm};
    if (_PyGC_CowExternalRoots(lists, 1, imm_root_cb, &w) < 0) {
        return -1;
    }
    PyMem_RawFree(w.stack);

    /* Set the immortal ones aside.  Only list links are written, in the
       parent, before any fork. */
    if (aside != NULL) {
        PyGC_Head *gc = _PyGCHead_NEXT(perm);
        while (gc != perm) {
            PyGC_Head *next = _PyGCHead_NEXT(gc);
            if (_Py_IsImmortal(FROM_GC(gc))) {
                cow_list_move(gc, aside);
            }
            gc = next;
        }
    }
    immortalized_total += w.immortalized;
    if (w.nomem) {
        return -1;
    }
    return w.immortalized;
}

#endif  /* !Py_GIL_DISABLED */

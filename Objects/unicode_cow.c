/* cowpy: a forked child interns new strings in a dict of its own.
 *
 * A pre-fork worker inherits its master's interned-string dict: one big
 * table (a Django site's: 43,000 strings, a 256 KiB index), made
 * immortal with the rest of the heap.  Each string the worker interns
 * anew (the names in the code of a module it imports at its first
 * request, an attribute name given to setattr()) writes a slot of that
 * index at a place its hash picks: about one shared page copied per new
 * string.  Measured on the servers benchmark's Django site (immortal
 * mode): a worker's 85 new strings (lazily imported message storage,
 * signing, context processors) copied 54 pages
 * (bench/servers/heap_writes.py, PYTHONCOWALLOC=stock).
 *
 * So in a child whose inherited heap is immortal, the inherited dict is
 * only read: a string it lacks goes to a dict of the child's own.  Each
 * value is interned once across the two (a string is looked up in the
 * inherited dict before the own one is set), so interning still gives
 * one object per value, and `is` between interned strings behaves as
 * in stock.  At the interpreter's teardown the own dict is merged into
 * the inherited one, which the stock teardown then clears as usual.
 * sys.getunicodeinternedsize() counts both.  PYTHONCOWALLOC=stock
 * (stock's placement of memory) turns it off with the allocator's
 * set-aside.
 *
 * Only the main interpreter's dict, the one a child inherits, is kept
 * read-only (legacy subinterpreters share it, and with it the own dict);
 * an isolated subinterpreter's own interned dict is left alone.
 */

#include "Python.h"
#include "pycore_interp.h"        // _Py_INTERP_CACHED_OBJECT()
#include "pycore_object.h"        // _Py_SetImmortal()
#include "pycore_pystate.h"       // _PyInterpreterState_Main()
#include "pycore_unicode_cow.h"

#ifndef Py_GIL_DISABLED

/* The child's own dict (strong reference), or NULL; armed: whether this
   process is a child whose inherited heap is immortal.  Both inherited
   by a grandchild, whose new strings then go to the same own dict. */
static PyObject *own_interned;
static int armed;

void
_PyUnicode_CowAfterForkChild(int heap_immortal)
{
    if (heap_immortal) {
        armed = 1;
    }
}

/* The main interpreter's interned dict: the one a child inherits. */
static inline PyObject *
main_interned(void)
{
    return _Py_INTERP_CACHED_OBJECT(_PyInterpreterState_Main(),
                                    interned_strings);
}

/* Whether `interned` is the dict whose pages this child shares. */
static inline int
inherited_dict(PyObject *interned)
{
    return armed && interned == main_interned();
}

PyObject *
_PyUnicode_CowInternTarget(PyObject *interned, PyObject *s)
{
    if (!inherited_dict(interned)) {
        return interned;
    }
    /* A lookup writes nothing into the dict (only s's own hash). */
    PyObject *found;
    int r = PyDict_GetItemRef(interned, s, &found);
    if (r != 0) {
        /* Found (the set will find it too), or an error that the set
           will meet again and report as stock does.  Only our own
           error is cleared: the caller's pending one, if any, stays. */
        if (r < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(found);
        return interned;
    }
    if (own_interned == NULL) {
        own_interned = PyDict_New();
        if (own_interned == NULL) {
            PyErr_Clear();
            return interned;        /* stock behaviour */
        }
    }
    return own_interned;
}

PyObject *
_PyUnicode_CowInternHolder(PyObject *interned, PyObject *s)
{
    if (own_interned == NULL || !inherited_dict(interned)) {
        return interned;
    }
    int r = PyDict_Contains(own_interned, s);
    if (r < 0) {
        PyErr_Clear();
    }
    return r > 0 ? own_interned : interned;
}

void
_PyUnicode_CowMergeInterned(PyObject *interned)
{
    PyObject *own = own_interned;
    if (own == NULL || interned != main_interned()) {
        return;
    }
    own_interned = NULL;
    armed = 0;
    /* Both dicts hold their strings by two references (key and value)
       that the strings' reference counts do not include: the set below
       adds two, dropping the own dict takes them back. */
    Py_ssize_t pos = 0;
    PyObject *s, *value;
    while (PyDict_Next(own, &pos, &s, &value)) {
        PyObject *t;
        int r = PyDict_SetDefaultRef(interned, s, s, &t);
        if (r < 0) {
            PyErr_Clear();
        }
        else {
            Py_DECREF(t);
        }
        if (r != 0) {
            /* Not moved (no memory; or, never expected, an equal string
               there already): leave it alive, as stock leaves a string
               it cannot unintern. */
            _Py_SetImmortal(s);
        }
    }
    Py_DECREF(own);
}

Py_ssize_t
_PyUnicode_CowInternedSize(int immortal_only)
{
    if (own_interned == NULL) {
        return 0;
    }
    if (!immortal_only) {
        return PyDict_GET_SIZE(own_interned);
    }
    Py_ssize_t pos = 0, n = 0;
    PyObject *s, *value;
    while (PyDict_Next(own_interned, &pos, &s, &value)) {
        n += PyUnicode_CHECK_INTERNED(s) == SSTATE_INTERNED_IMMORTAL;
    }
    return n;
}

#else  /* Py_GIL_DISABLED: cowpy's fork handling is not built */

void
_PyUnicode_CowAfterForkChild(int Py_UNUSED(heap_immortal))
{
}

PyObject *
_PyUnicode_CowInternTarget(PyObject *interned, PyObject *Py_UNUSED(s))
{
    return interned;
}

PyObject *
_PyUnicode_CowInternHolder(PyObject *interned, PyObject *Py_UNUSED(s))
{
    return interned;
}

void
_PyUnicode_CowMergeInterned(PyObject *Py_UNUSED(interned))
{
}

Py_ssize_t
_PyUnicode_CowInternedSize(int Py_UNUSED(immortal_only))
{
    return 0;
}

#endif  /* !Py_GIL_DISABLED */

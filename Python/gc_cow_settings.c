/* cowpy: the collector's settings (PYTHONCOWGC, PYTHONCOWFORK,
 * PYTHONCOWALLOC, PYTHONCOWCODE, PYTHONCOWORACLE and their -X options,
 * read at start-up by _PyGC_CowInit()) and the gc module's cowpy functions
 * (_PyGC_CowMethods, added by gcmodule_exec()).  The state they read and
 * set is _PyGC_cow (gc_cow_internal.h, defined in gc_cow.c).
 */

#include "Python.h"
#include "pycore_gc.h"
#include "pycore_gc_cow.h"
#include "pycore_initconfig.h"    // _PyStatus_ERR()
#include "pycore_interp.h"        // PyInterpreterState.gc
#include "pycore_obmalloc_cow.h"  // _PyObject_CowAllocSetMode()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "gc_cow_internal.h"

#include <string.h>
#include <wchar.h>
#ifdef HAVE_PTHREAD_H
#  include <pthread.h>          // pthread_atfork()
#endif

#ifndef Py_GIL_DISABLED

/*[clinic input]
module gc
[clinic start generated code]*/
/*[clinic end generated code: output=da39a3ee5e6b4b0d input=b5c9690ecc842d79]*/

#include "clinic/gc_cow_settings.c.h"

static const char *const mode_names[] = {"default", "arena", "stock", NULL};
static const char *const fork_names[] = {"off", "freeze", "immortal", NULL};
static const char *const code_names[] = {"stock", "settle", "light", NULL};
/* PYTHONCOWORACLE / -X coworacle (debug builds). */
static const char *const oracle_names[] = {"0", "1", NULL};


/* ------------------------------------------------------------ settings */

static int
choice_index(const char *value, const char *const *names)
{
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(value, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* -X NAME=VALUE from the configuration; NULL when absent.  The value is
   converted into buf (ASCII only; anything else is an invalid value). */
static const char *
get_xoption(const PyConfig *config, const wchar_t *name, char *buf,
            size_t bufsize)
{
    const char *found = NULL;
    size_t nlen = wcslen(name);
    for (Py_ssize_t i = 0; i < config->xoptions.length; i++) {
        const wchar_t *opt = config->xoptions.items[i];
        if (wcsncmp(opt, name, nlen) != 0) {
            continue;
        }
        if (opt[nlen] != L'=' && opt[nlen] != L'\0') {
            continue;
        }
        const wchar_t *v = opt[nlen] == L'=' ? opt + nlen + 1 : L"";
        size_t j = 0;
        for (; v[j] != L'\0' && j + 1 < bufsize; j++) {
            buf[j] = (v[j] > 0 && v[j] < 128) ? (char)v[j] : '?';
        }
        buf[j] = '\0';
        found = buf;            /* the last occurrence wins, as for -X */
    }
    return found;
}

/* A choice option: PYTHONxxx (ignored under -E, or when empty), then -X
   NAME=VALUE, which wins.  *out keeps its default when neither is set.
   Returns NULL, or for a value not in names the message that names where
   it came from and lists the EXPECTED values (in a static buffer:
   start-up fails on it at once). */
static const char *
read_choice(const PyConfig *config, const char *env, const wchar_t *xopt,
            const char *const *names, const char *expected, int *out)
{
    static char msg[128];
    char buf[32];
    const char *v = config->use_environment ? getenv(env) : NULL;
    if (v != NULL && v[0] != '\0' && (*out = choice_index(v, names)) < 0) {
        PyOS_snprintf(msg, sizeof(msg), "%s: invalid value; expected %s",
                      env, expected);
        return msg;
    }
    v = get_xoption(config, xopt, buf, sizeof(buf));
    if (v != NULL && (*out = choice_index(v, names)) < 0) {
        PyOS_snprintf(msg, sizeof(msg), "-X %ls: invalid value; expected %s",
                      xopt, expected);
        return msg;
    }
    return NULL;
}

PyStatus
_PyGC_CowInit(PyInterpreterState *interp)
{
    if (!_Py_IsMainInterpreter(interp)) {
        return _PyStatus_OK();
    }
    _PyGC_CowRuntimeReset();
    const PyConfig *config = _PyInterpreterState_GetConfig(interp);
    char buf[32];
    const char *v;

    const char *bad;
    if ((bad = read_choice(config, "PYTHONCOWGC", L"cowgc", mode_names,
                           "default, arena or stock",
                           &_PyGC_cow.mode)) != NULL) {
        return _PyStatus_ERR(bad);
    }
    /* Freeze-at-fork defaults to on, except in stock mode. */
    _PyGC_cow.fork_mode = _PyGC_cow.mode != COW_MODE_STOCK;
    if ((bad = read_choice(config, "PYTHONCOWFORK", L"cowfork", fork_names,
                           "off, freeze or immortal",
                           &_PyGC_cow.fork_mode)) != NULL) {
        return _PyStatus_ERR(bad);
    }

    /* The differential oracle: debug builds only, and never silently
       ignored where it is not available. */
    int oracle = 0;
    v = config->use_environment ? getenv("PYTHONCOWORACLE") : NULL;
    if (v != NULL && v[0] != '\0') {
        if ((oracle = choice_index(v, oracle_names)) < 0) {
            return _PyStatus_ERR("PYTHONCOWORACLE: invalid value; "
                                 "expected 0 or 1");
        }
    }
    v = get_xoption(config, L"coworacle", buf, sizeof(buf));
    if (v != NULL) {
        /* -X coworacle alone means on. */
        if (v[0] == '\0') {
            oracle = 1;
        }
        else if ((oracle = choice_index(v, oracle_names)) < 0) {
            return _PyStatus_ERR("-X coworacle: invalid value; "
                                 "expected 0 or 1");
        }
    }
    /* The allocator's set-aside after fork (Objects/obmalloc_cow.c). */
    int alloc_mode = 0;
    if ((bad = read_choice(config, "PYTHONCOWALLOC", L"cowalloc",
                           _PyObject_CowAllocModes, "aside or stock",
                           &alloc_mode)) != NULL) {
        return _PyStatus_ERR(bad);
    }
    _PyObject_CowAllocSetMode(alloc_mode);
    /* Settled code (gc_cow_code.c). */
    if ((bad = read_choice(config, "PYTHONCOWCODE", L"cowcode", code_names,
                           "light, settle or stock",
                           &_PyGC_cow.code_mode)) != NULL) {
        return _PyStatus_ERR(bad);
    }

#ifdef HAVE_PTHREAD_H
    /* Any fork, also one made from C without PyOS_BeforeFork(). */
    static int atfork_registered;
    if (!atfork_registered) {
        if (pthread_atfork(_PyGC_CowNoteFork, _PyGC_CowNoteParent,
                           _PyGC_CowNoteChild) != 0) {
            _PyGC_CowNoteFork();    /* cannot tell: keep pages clean always */
        }
        atfork_registered = 1;
    }
#else
    _PyGC_CowNoteFork();
#endif
#ifdef Py_DEBUG
    _PyGC_cow.oracle = oracle;
#else
    if (oracle) {
        return _PyStatus_ERR("PYTHONCOWORACLE / -X coworacle: the "
                             "differential GC oracle needs a debug build "
                             "(configure --with-pydebug)");
    }
#endif
    return _PyStatus_OK();
}


/* ---------------------------------------------------- the gc module */

static int
index_arg(PyObject *arg, const char *fname, Py_ssize_t *out)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument must be int, not %T", fname, arg);
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (n < 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s() argument must not be negative", fname);
        return -1;
    }
    *out = n;
    return 0;
}


/*[clinic input]
gc.get_cow_mode

Return how the collector finds garbage: 'default', 'arena' or 'stock'.

default: collections that include the permanent generation (gc.collect()
  and automatic shared collections) also collect frozen objects.  Once
  the process has forked they use the side arena and write into no
  surviving object except the list link of a garbage object's
  neighbours; before, no page is shared, and they keep their scratch in
  the object headers as stock does.  All other collections are stock.
arena:   every collection uses the side arena (a test mode).
stock:   exactly stock CPython (frozen objects are never examined).
[clinic start generated code]*/

static PyObject *
gc_get_cow_mode_impl(PyObject *module)
/*[clinic end generated code: output=a19fe48d7cbfaaf4 input=2a70f77d052a8805]*/
{
    return PyUnicode_FromString(mode_names[_PyGC_cow.mode]);
}


/* The index of str argument `arg` in `names`; -1 with TypeError or
   ValueError (listing `expected`) set. */
static int
choice_arg(PyObject *arg, const char *fname, const char *const *names,
           const char *expected)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument must be str, not %T", fname, arg);
        return -1;
    }
    const char *str = PyUnicode_AsUTF8(arg);
    if (str == NULL) {
        return -1;
    }
    int i = choice_index(str, names);
    if (i < 0) {
        PyErr_Format(PyExc_ValueError, "%s() argument must be %s, not %R",
                     fname, expected, arg);
    }
    return i;
}

/* The settings are process-wide, and only the main interpreter's heap
   is inherited by a fork (os.fork() is refused in isolated
   subinterpreters, and a child deletes the others): a subinterpreter,
   which may run under its own GIL (PEP 684), may read them but not
   change the main interpreter's collector. */
static int
settable_here(const char *name)
{
    if (_Py_IsMainInterpreter(_PyInterpreterState_GET())) {
        return 1;
    }
    PyErr_Format(PyExc_RuntimeError,
                 "gc.%s(): cowpy's collector settings are process-wide; "
                 "set them from the main interpreter", name);
    return 0;
}

/*[clinic input]
gc.set_cow_mode

    mode: object
    /

Set the collector mode: 'default', 'arena' or 'stock'.

See get_cow_mode().  Start-up default: PYTHONCOWGC or -X cowgc.
Freeze-at-fork is a separate switch (set_freeze_at_fork()); only at
start-up does the stock mode also turn it off by default.
[clinic start generated code]*/

static PyObject *
gc_set_cow_mode(PyObject *module, PyObject *mode)
/*[clinic end generated code: output=c62554a3acad0772 input=e874482f736739e7]*/
{
    if (!settable_here("set_cow_mode")) {
        return NULL;
    }
    int m = choice_arg(mode, "set_cow_mode", mode_names,
                       "'default', 'arena' or 'stock'");
    if (m < 0) {
        return NULL;
    }
    _PyGC_cow.mode = m;
    Py_RETURN_NONE;
}


/*[clinic input]
gc.get_freeze_at_fork

Return True if os.fork() freezes every tracked object first.
[clinic start generated code]*/

static PyObject *
gc_get_freeze_at_fork_impl(PyObject *module)
/*[clinic end generated code: output=9f248032fdafd2d7 input=07cd9300521805bc]*/
{
    return PyBool_FromLong(_PyGC_cow.fork_mode != COW_FORK_OFF);
}


/*[clinic input]
gc.set_freeze_at_fork

    enabled: object
    /

Enable or disable freezing at fork.

When enabled, os.fork() and everything else that runs the interpreter's
fork hooks first moves every tracked object into the permanent
generation (as gc.freeze() does), in the parent and so in the child:
later ordinary collections in either process never write into the
inherited heap, and gc.collect() still reclaims garbage among those
objects with a shared collection.  Start-up default: on, unless
PYTHONCOWFORK=off, -X cowfork=off or the stock mode.  True selects the
'freeze' fork mode; see set_fork_mode() for 'immortal'.
[clinic start generated code]*/

static PyObject *
gc_set_freeze_at_fork(PyObject *module, PyObject *enabled)
/*[clinic end generated code: output=97e5cec1bd50de89 input=ea3a67ec30e21b54]*/
{
    if (!settable_here("set_freeze_at_fork")) {
        return NULL;
    }
    if (!PyBool_Check(enabled) && !PyLong_Check(enabled)) {
        PyErr_Format(PyExc_TypeError,
                     "set_freeze_at_fork() argument must be bool, not %T",
                     enabled);
        return NULL;
    }
    int v = PyObject_IsTrue(enabled);
    if (v < 0) {
        return NULL;
    }
    _PyGC_cow.fork_mode = v ? COW_FORK_FREEZE : COW_FORK_OFF;
    Py_RETURN_NONE;
}


/*[clinic input]
gc.get_fork_mode

Return what os.fork() does to the heap first.

One of 'off', 'freeze' or 'immortal'; see set_fork_mode().
[clinic start generated code]*/

static PyObject *
gc_get_fork_mode_impl(PyObject *module)
/*[clinic end generated code: output=ff58a13be49138d4 input=ecf44228c67d5cc7]*/
{
    return PyUnicode_FromString(fork_names[_PyGC_cow.fork_mode]);
}


/*[clinic input]
gc.set_fork_mode

    mode: object
    /

Set what os.fork() does to the heap first.

'off': nothing (stock).  'freeze': gc.freeze(), in the parent and so in
the child.  'immortal': at the process's first fork, gc.collect(), then
gc.freeze(immortalize=True) for what the program holds (modules,
classes, objects held from C; not what only the running code's local
variables hold): the inherited heap also stops receiving reference-count
writes.  Later forks of the same process only freeze, so that data it
holds between forks is never made immortal; setting 'immortal' again
makes the next fork immortalize.
Start-up default: PYTHONCOWFORK or -X cowfork, else 'freeze'.
[clinic start generated code]*/

static PyObject *
gc_set_fork_mode(PyObject *module, PyObject *mode)
/*[clinic end generated code: output=f48c5a4e5a19b09d input=6df6f7ddac7c66f8]*/
{
    if (!settable_here("set_fork_mode")) {
        return NULL;
    }
    int m = choice_arg(mode, "set_fork_mode", fork_names,
                       "'off', 'freeze' or 'immortal'");
    if (m < 0) {
        return NULL;
    }
    _PyGC_cow.fork_mode = m;
    if (m == COW_FORK_IMMORTAL) {
        /* asked for: the next fork walks */
        cow_set_flag(&_PyGC_cow.fork_walked, 0);
    }
    Py_RETURN_NONE;
}


/*[clinic input]
gc.is_immortal

    obj: object
    /

Return True if obj is immortal.

Its reference count is never written and it is never freed (PEP 683; see gc.freeze(immortalize=True)).
[clinic start generated code]*/

static PyObject *
gc_is_immortal(PyObject *module, PyObject *obj)
/*[clinic end generated code: output=dfbc9eac1b61c319 input=a6f6109233b8a656]*/
{
    return PyBool_FromLong(_Py_IsImmortal(obj));
}


/*[clinic input]
gc.get_shared_threshold

Return the automatic shared-collection threshold.
[clinic start generated code]*/

static PyObject *
gc_get_shared_threshold_impl(PyObject *module)
/*[clinic end generated code: output=465386b49c57da42 input=d5ca8c39903e9622]*/
{
    return PyLong_FromSsize_t(_PyGC_cow.shared_threshold);
}


/*[clinic input]
gc.set_shared_threshold

    threshold: object
    /

Set the automatic shared-collection threshold.

A shared collection examines the permanent (frozen) generation together
with all others, without writing into surviving objects.  With threshold
N > 0, an automatic full collection becomes a shared one when at least N
automatic full collections ran since the last shared collection and the
objects promoted to the oldest generation since then reach the size of
the frozen heap (so the cost stays linear, as for full collections).
0 disables automatic shared collections: frozen objects are then only
examined by gc.collect().  Default: 1.
[clinic start generated code]*/

static PyObject *
gc_set_shared_threshold(PyObject *module, PyObject *threshold)
/*[clinic end generated code: output=ca2c93deb03d26d6 input=fcb8a3e371ba2f02]*/
{
    if (!settable_here("set_shared_threshold")) {
        return NULL;
    }
    Py_ssize_t n;
    if (index_arg(threshold, "set_shared_threshold", &n) < 0) {
        return NULL;
    }
    _PyGC_cow.shared_threshold = n;
    Py_RETURN_NONE;
}


/*[clinic input]
gc.get_shared_stats

Return a dict of side-arena collector statistics.

collections, collected, uncollectable: shared collections and what they
  found; arena_collections: all side-arena collections; fallbacks: those
  that fell back to the stock algorithm for lack of memory;
  last_examined: objects examined by the last side-arena collection;
  last_arena_bytes, max_arena_bytes: the size of its arena (released
  when it ended) and the largest so far; immortalized: objects made
  immortal by immortalizing freezes; oracle_checks: side-arena
  collections checked by the differential oracle (debug builds with
  PYTHONCOWORACLE=1; always 0 otherwise); header_collections: shared
  collections that kept their scratch in the object headers, as stock
  does, because the process had not forked yet (no page was shared);
  unannounced_forks: 1 in a child forked without PyOS_BeforeFork() (a C
  fork()) once its first collection froze the heap it inherited;
  fork_walks_skipped: forks in the 'immortal' fork mode that only froze,
  because the process had made its heap immortal at an earlier fork;
  forked: whether the process has forked (or descends from a fork):
  from then on shared collections use the side arena; code_settled:
  code objects settled by immortalizing freezes (PYTHONCOWCODE light,
  the default, or settle),
  code_thawed: those this process ran hot enough to thaw.
[clinic start generated code]*/

static PyObject *
gc_get_shared_stats_impl(PyObject *module)
/*[clinic end generated code: output=b5f3e62a575f34b5 input=c0204498c63b083a]*/
{
    return Py_BuildValue(
        "{snsnsnsnsnsnsnsnsnsnsnsnsnsNsnsn}",
        "collections", _PyGC_cow.shared_collections,
        "collected", _PyGC_cow.shared_collected,
        "uncollectable", _PyGC_cow.shared_uncollectable,
        "arena_collections", _PyGC_cow.arena_collections,
        "fallbacks", _PyGC_cow.arena_fallbacks,
        "last_examined", _PyGC_cow.last_examined,
        "last_arena_bytes", (Py_ssize_t)_PyGC_cow.last_arena_bytes,
        "max_arena_bytes", (Py_ssize_t)_PyGC_cow.max_arena_bytes,
        "immortalized", _PyGC_CowImmortalized(),
        "oracle_checks", _PyGC_cow.oracle_checks,
        "header_collections", _PyGC_cow.header_collections,
        "unannounced_forks", _PyGC_cow.unannounced_forks,
        "fork_walks_skipped", _PyGC_cow.fork_walks_skipped,
        "forked", PyBool_FromLong(cow_flag(&_PyGC_cow.forked)),
        "code_settled", _PyGC_cow.code_settled,
        "code_thawed", _PyGC_cow.code_thawed);
}

PyMethodDef _PyGC_CowMethods[] = {
    GC_GET_COW_MODE_METHODDEF
    GC_SET_COW_MODE_METHODDEF
    GC_GET_FREEZE_AT_FORK_METHODDEF
    GC_SET_FREEZE_AT_FORK_METHODDEF
    GC_GET_FORK_MODE_METHODDEF
    GC_SET_FORK_MODE_METHODDEF
    GC_IS_IMMORTAL_METHODDEF
    GC_GET_SHARED_THRESHOLD_METHODDEF
    GC_SET_SHARED_THRESHOLD_METHODDEF
    GC_GET_SHARED_STATS_METHODDEF
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------- test hooks */

/* For cowpy's tests only, so they are not in the gc module, where
   production code could call them: _testinternalcapi adds these
   (patch 0013), as CPython keeps its own test hooks there.  The counters
   make the next n side-arena collections fail to allocate their arena
   (cow_fail_arena) or keep one garbage object alive, a leak the
   differential oracle must report (cow_break_arena). */
static PyObject *
set_test_counter(PyObject *arg, const char *fname, Py_ssize_t *counter)
{
    Py_ssize_t n;
    if (index_arg(arg, fname, &n) < 0) {
        return NULL;
    }
    *counter = n;
    Py_RETURN_NONE;
}

static PyObject *
gc_cow_fail_arena(PyObject *module, PyObject *arg)
{
    return set_test_counter(arg, "cow_fail_arena",
                            &_PyGC_cow.inject_failures);
}

static PyObject *
gc_cow_break_arena(PyObject *module, PyObject *arg)
{
    return set_test_counter(arg, "cow_break_arena",
                            &_PyGC_cow.inject_oracle_break);
}

static PyObject *
gc_cow_oracle(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(_PyGC_cow.oracle);
}

/* Pretend the process has (True) or has not (False) forked, so that a
   test picks where shared collections keep their scratch; returns the
   previous value.  False in a real fork's parent or child only makes
   shared collections write into the shared headers, as stock does. */
static PyObject *
gc_cow_set_forked(PyObject *module, PyObject *arg)
{
    if (!PyBool_Check(arg)) {
        PyErr_Format(PyExc_TypeError,
                     "cow_set_forked() argument must be bool, not %.200s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    int old = cow_flag(&_PyGC_cow.forked);
    cow_set_flag(&_PyGC_cow.forked, arg == Py_True);
    return PyBool_FromLong(old);
}

/* (front, scattered): the permanent generation's prefix that holds the
   objects with a finalizer, as a forked child's exit reads it
   (gc_cow_fork.c, freeze()): an upper bound of its length, and whether
   the whole generation is read instead. */
static PyObject *
gc_cow_finalizers_front(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nO)", _PyGC_cow.finalizers_front,
                         _PyGC_cow.finalizers_scattered ? Py_True
                                                        : Py_False);
}

PyMethodDef _PyGC_CowTestMethods[] = {
    {"cow_fail_arena", gc_cow_fail_arena, METH_O,
     "Make the arena allocations of the next n side-arena collections\n"
     "fail (for tests)."},
    {"cow_oracle", gc_cow_oracle, METH_NOARGS,
     "Whether the differential GC oracle is on (debug builds)."},
    {"cow_break_arena", gc_cow_break_arena, METH_O,
     "Make the next n side-arena collections keep one garbage object\n"
     "alive, so that the differential oracle must report it (for tests)."},
    {"cow_set_forked", gc_cow_set_forked, METH_O,
     "Set whether shared collections act as in a process that forked\n"
     "(scratch in the side arena) or not (in the headers); return the\n"
     "previous value (for tests)."},
    {"cow_finalizers_front", gc_cow_finalizers_front, METH_NOARGS,
     "(front, scattered): how many objects at the permanent generation's\n"
     "front a forked child's exit reads for finalizers (an upper bound),\n"
     "and whether it reads the whole generation instead (for tests)."},
    {NULL, NULL, 0, NULL},
};

#endif  /* !Py_GIL_DISABLED */

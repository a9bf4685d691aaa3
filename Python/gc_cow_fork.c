/* cowpy: freezing (gc.freeze() and PyOS_BeforeFork()'s freeze, with the
 * immortal mode's walk at a process's first fork) and the fork's life
 * cycle as the collector sees it: the pthread_atfork() handlers, a child
 * forked while another thread collects, a child forked without
 * PyOS_BeforeFork(), and the runtime's reset.  See docs/design.md,
 * sections 6 and 8.
 */

#include "Python.h"
#include "pycore_gc.h"
#include "pycore_gc_cow.h"
#include "pycore_interp.h"        // PyInterpreterState.gc
#include "pycore_obmalloc_cow.h"  // _PyObject_CowAllocAfterForkChild(), ...
#include "pycore_pyerrors.h"      // _PyErr_GetRaisedException()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "pycore_runtime.h"       // _Py_ID()
#include "pycore_unicodeobject.h" // _PyUnicode_Equal()
#include "pycore_unicode_cow.h"   // _PyUnicode_CowAfterForkChild()
#include "gc_cow_internal.h"

#if !defined(Py_GIL_DISABLED)

typedef struct _gc_runtime_state GCState;

/* ------------------------------------------------------------ freezing */

/* Before any freeze: the automatic shared-collection rule compares the
   objects promoted since the last shared collection with what the next
   one will examine.  Without an estimate of the frozen heap, the first
   automatic full collection after a freeze would scan all of it at once;
   what moves is at least the oldest generation as last counted (not
   reset by a freeze: take the larger, so that forking many workers does
   not count the same heap many times). */
void
_PyGC_CowNoteFreeze(GCState *gcstate)
{
    Py_ssize_t moved = gcstate->long_lived_total
                       + gcstate->long_lived_pending;
    if (moved > _PyGC_cow.shared_estimate) {
        _PyGC_cow.shared_estimate = moved;
    }
}

/* A full collection even while the collector is disabled (PyGC_Collect()
   would do nothing then, and pre-fork recipes disable it in the parent):
   garbage must not be made immortal, it could never be freed. */
void
_PyGC_CowCollectBeforeImmortalizing(void)
{
    PyThreadState *tstate = _PyThreadState_GET();
    PyObject *exc = _PyErr_GetRaisedException(tstate);
    (void)_PyGC_Collect(tstate, NUM_GENERATIONS - 1, _Py_GC_REASON_MANUAL);
    _PyErr_SetRaisedException(tstate, exc);
}

/* Finalizer candidates first (#15).  A forked child's exit finalizes
   what is still alive and has a finalizer (_PyGC_CowFinalizeAtChildExit()
   below).  Reading every inherited object's type for that, a cache miss
   per object, was about 70 % of a Flask worker's exit (perf).  So each
   freeze of the main interpreter moves the objects whose type has a
   finalizer to the front of the permanent generation, and the exit
   reads only that prefix.  finalizers_front bounds its length from
   above: objects only leave it (freed, or collected: collections leave
   survivors in place, and resurrected garbage goes to the oldest
   generation); the immortal objects gc.c appends are never finalized.
   What could leave a candidate elsewhere sets finalizers_scattered, and
   the exit reads the whole permanent generation as before, until a
   freeze finds it empty: a freeze that does not sort (a child whose fork
   was not announced: sorting there would write inherited headers), the
   debug oracle (it relinks), and a class or object gaining a finalizer
   once frozen (__del__ assigned to a class, __class__ assignment). */
static inline int
finalizer_candidate(PyObject *op)
{
    return Py_TYPE(op)->tp_finalize != NULL && !_Py_IsImmortal(op);
}

static void
freeze(PyInterpreterState *interp, int sort)
{
    GCState *gcstate = &interp->gc;
    PyGC_Head *perm = &gcstate->permanent_generation.head;
    if (!_Py_IsMainInterpreter(interp)) {
        _PyGC_Freeze(interp);
        return;
    }
    if (_PyGCHead_NEXT(perm) == perm) {
        _PyGC_cow.finalizers_front = 0;
        _PyGC_cow.finalizers_scattered = 0;
    }
    PyGC_Head batch;
    cow_list_init(&batch);
    Py_ssize_t n = 0;
    for (int i = 0; i < NUM_GENERATIONS; i++) {
        PyGC_Head *head = &gcstate->generations[i].head;
        if (!sort || _PyGC_cow.finalizers_scattered) {
            if (_PyGCHead_NEXT(head) != head) {
                _PyGC_cow.finalizers_scattered = 1;
            }
            continue;
        }
        PyGC_Head *gc = _PyGCHead_NEXT(head);
        while (gc != head) {
            PyGC_Head *next = _PyGCHead_NEXT(gc);
            if (finalizer_candidate(_Py_FROM_GC(gc))) {
                cow_list_move(gc, &batch);
                n++;
            }
            gc = next;
        }
    }
    if (n > 0) {
        /* The batch goes before the permanent generation's first object
           (one link written there, in a frozen object's header). */
        PyGC_Head *first = _PyGCHead_NEXT(&batch);
        PyGC_Head *last = _PyGCHead_PREV(&batch);
        PyGC_Head *old_first = _PyGCHead_NEXT(perm);
        _PyGCHead_SET_NEXT(perm, first);
        _PyGCHead_SET_PREV(first, perm);
        _PyGCHead_SET_NEXT(last, old_first);
        _PyGCHead_SET_PREV(old_first, last);
        _PyGC_cow.finalizers_front += n;
    }
    _PyGC_Freeze(interp);
}

void
_PyGC_CowFinalizersScattered(PyInterpreterState *interp)
{
    PyGC_Head *perm = &interp->gc.permanent_generation.head;
    if (_Py_IsMainInterpreter(interp) && _PyGCHead_NEXT(perm) != perm) {
        _PyGC_cow.finalizers_scattered = 1;
    }
}

void
_PyGC_CowTypeAttrSet(PyObject *name)
{
    if (_PyUnicode_Equal(name, &_Py_ID(__del__))) {
        _PyGC_CowFinalizersScattered(_PyInterpreterState_GET());
    }
}

void
_PyGC_CowClassAssigned(PyTypeObject *oldto, PyTypeObject *newto)
{
    if (newto->tp_finalize != NULL && oldto->tp_finalize == NULL) {
        _PyGC_CowFinalizersScattered(_PyInterpreterState_GET());
    }
}

int
_PyGC_CowFreeze(PyInterpreterState *interp, int immortalize)
{
    if (immortalize && !_Py_IsMainInterpreter(interp)) {
        /* The walk's state (the immortal list, its counters) is the main
           interpreter's; a subinterpreter's heap is never inherited. */
        PyErr_SetString(PyExc_RuntimeError,
                        "gc.freeze(immortalize=True) is supported in the "
                        "main interpreter only");
        return -1;
    }
    if (immortalize) {
        _PyGC_CowImmortalPrepare();
        _PyGC_CowCollectBeforeImmortalizing();
    }
    _PyGC_CowNoteFreeze(&interp->gc);
    freeze(interp, 1);
    if (immortalize && _PyGC_CowImmortalize(interp, 1) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}


/* ------------------------------------------------ the fork's handlers */

/* pthread_atfork() prepare handler (registered by _PyGC_CowInit()). */
void
_PyGC_CowNoteFork(void)
{
    cow_set_flag(&_PyGC_cow.forked, 1);
}

/* pthread_atfork() child handler: stores only, async-signal-safe (no
   collection, no lock, no allocation here: the GIL may not be held). */
void
_PyGC_CowNoteChild(void)
{
    cow_set_flag(&_PyGC_cow.child, 1);
    cow_set_flag(&_PyGC_cow.fork_walked, 0);
    if (!cow_flag(&_PyGC_cow.announcing)) {
        cow_set_flag(&_PyGC_cow.unannounced, 1);
    }
    cow_set_flag(&_PyGC_cow.announcing, 0);
}

/* pthread_atfork() parent handler. */
void
_PyGC_CowNoteParent(void)
{
    cow_set_flag(&_PyGC_cow.announcing, 0);
}

/* Whether this fork makes the heap immortal: in the immortal fork mode,
   at the process's first fork only (see _PyGC_CowState.fork_walked).
   What a pre-fork master preloaded is immortal from its first worker
   on, so workers forked later (replacements after recycling) find it
   so; what a process allocates after that and holds while it forks
   again (a worker forking per request, a loop of short-lived children)
   is only frozen: made immortal, it could never be freed (measured:
   6.4 MB leaked per fork, #18).  gc.freeze(immortalize=True) still
   immortalizes whenever it is called. */
static int
fork_walks(PyInterpreterState *interp)
{
    return _PyGC_cow.fork_mode == COW_FORK_IMMORTAL
           && !cow_flag(&_PyGC_cow.fork_walked)
           && _Py_IsMainInterpreter(interp);
}

void
_PyGC_CowPrepareFork(PyInterpreterState *interp)
{
    /* Collect before immortalizing, so that garbage is not made immortal.
       Here, before PyOS_BeforeFork() takes its locks: finalizers may run. */
    if (fork_walks(interp)) {
        _PyGC_CowImmortalPrepare();
        _PyGC_CowCollectBeforeImmortalizing();
    }
}

void
_PyGC_CowBeforeFork(PyInterpreterState *interp)
{
    if (_PyGC_cow.fork_mode == COW_FORK_OFF) {
        /* Also where pthread_atfork() is missing. */
        _PyGC_CowNoteFork();
        cow_set_flag(&_PyGC_cow.announcing, 1);
        return;
    }
    _PyGC_CowNoteFreeze(&interp->gc);
    freeze(interp, 1);
    if (fork_walks(interp)) {
        /* Runs no Python code; a failure to grow the walk's stack leaves
           part of the heap mortal, which is only slower. */
        cow_set_flag(&_PyGC_cow.fork_walked, 1);
        if (_PyGC_CowImmortalize(interp, 0) < 0) {
            _PyGC_cow.immortalize_failures++;
        }
        /* After the walk, which frees its scratch: the heap is what the
           workers will share. */
        _PyObject_CowPlugHeapHoles();
    }
    else if (_PyGC_cow.fork_mode == COW_FORK_IMMORTAL) {
        _PyGC_cow.fork_walks_skipped++;
    }
    /* Only now: before fork() itself no page is shared, so the first
       fork's immortalizing walk may keep its scratch in the headers. */
    _PyGC_CowNoteFork();
    cow_set_flag(&_PyGC_cow.announcing, 1);
}


/* The main interpreter's collecting thread (only the main interpreter
   forks workers; other interpreters' threads could collect at the same
   time under their own GIL).  Compared, never dereferenced: in a forked
   child the one thread state left is the forking thread's, at the same
   address. */
static PyThreadState *collecting_tstate;

/* The first collection of a child whose fork was not announced (see
   _PyGC_CowNoteChild()): freeze, as freeze at fork would have, and set
   the allocator's pools aside, now that the GIL is held.  Before it
   selects a generation, so the collection then sees the frozen heap as
   any collection after an announced fork does.  The immortal mode's
   walk needs the announced fork (it must run in the parent, before any
   page is shared): such a child only freezes. */
static void
after_unannounced_fork(PyInterpreterState *interp)
{
    cow_set_flag(&_PyGC_cow.unannounced, 0);
    _PyGC_cow.unannounced_forks++;
    if (_PyGC_cow.mode != COW_MODE_STOCK
        && _PyGC_cow.fork_mode != COW_FORK_OFF)
    {
        _PyGC_CowNoteFreeze(&interp->gc);
        freeze(interp, 0);
    }
    _PyObject_CowAllocAfterForkChild(interp);
}

void
_PyGC_CowCollectionStarted(PyThreadState *tstate)
{
    if (cow_flag(&_PyGC_cow.unannounced)
        && _Py_IsMainInterpreter(tstate->interp))
    {
        after_unannounced_fork(tstate->interp);
    }
    if (_Py_IsMainInterpreter(tstate->interp)) {
        collecting_tstate = tstate;
    }
}

/* The main interpreter's collection's lists on its thread's stack (see
   pycore_gc_cow.h), for a child forked by another thread meanwhile: the
   dead thread's stack is still mapped in the child, and the lists are
   consistent whenever that thread could have released the GIL. */
static PyGC_Head *stack_lists[_PyGC_COW_NLISTS];

void
_PyGC_CowRuntimeReset(void)
{
    int forked = cow_flag(&_PyGC_cow.forked);
    int child = cow_flag(&_PyGC_cow.child);
    _PyGC_cow = (_PyGC_CowState){
        .mode = COW_MODE_DEFAULT,
        .fork_mode = COW_FORK_FREEZE,
        .shared_threshold = 1,
        .code_mode = COW_CODE_LIGHT,
        .forked = forked,
        .child = child,
    };
    collecting_tstate = NULL;
    memset(stack_lists, 0, sizeof(stack_lists));
    _PyGC_CowImmortalReset();
    _PyGC_CowCodeReset();
}

void
_PyGC_CowNoteStackList(_PyGC_CowStackList which, PyGC_Head *head)
{
    if (_Py_IsMainInterpreter(_PyInterpreterState_GET())) {
        stack_lists[which] = head;
    }
}

/* Append every object of a dead collection's list to `to`, with the flags
   of an object outside any collection (its FINALIZED bit kept). */
static void
salvage_list(PyGC_Head *head, PyGC_Head *to)
{
    PyGC_Head *gc = (PyGC_Head *)(head->_gc_next
                                  & ~COW_NEXT_MASK_UNREACHABLE);
    while (gc != head) {
        PyGC_Head *next = (PyGC_Head *)(gc->_gc_next
                                        & ~COW_NEXT_MASK_UNREACHABLE);
        gc->_gc_prev &= ~_PyGC_PREV_MASK_COLLECTING;
        PyGC_Head *last = (PyGC_Head *)to->_gc_prev;
        _PyGCHead_SET_NEXT(last, gc);
        _PyGCHead_SET_PREV(gc, last);
        _PyGCHead_SET_NEXT(gc, to);
        to->_gc_prev = (uintptr_t)gc;
        gc = next;
    }
}

void
_PyGC_CowAfterForkChild(PyThreadState *tstate)
{
    GCState *gcstate = &tstate->interp->gc;
    /* Also where pthread_atfork() is missing; whether the fork was
       announced is the atfork child handler's to say. */
    cow_set_flag(&_PyGC_cow.child, 1);
    cow_set_flag(&_PyGC_cow.fork_walked, 0);
    /* New interned strings stay off the inherited (immortal) dict;
       PYTHONCOWALLOC=stock keeps stock's placement of memory here too. */
    _PyUnicode_CowAfterForkChild(_PyGC_CowImmortalized() > 0
                                 && _PyObject_CowAllocAside());
    if (_Py_IsMainInterpreter(tstate->interp)
        && _Py_atomic_load_int_relaxed(&gcstate->collecting)
        && collecting_tstate != tstate)
    {
        /* What that collection was finalizing or clearing is on lists
           whose heads were on the dead thread's stack, still flagged
           PREV_MASK_COLLECTING: the next collection would count
           references into their _gc_prev links, which an untrack then
           follows.  Back onto the oldest generation, with clean flags:
           a later collection decides again (an object the dead thread
           held a reference to stays alive, leaked as in stock). */
        PyGC_Head *old = &gcstate->generations[NUM_GENERATIONS - 1].head;
        for (int i = 0; i < _PyGC_COW_NLISTS; i++) {
            if (stack_lists[i] != NULL) {
                salvage_list(stack_lists[i], old);
            }
        }
        memset(stack_lists, 0, sizeof(stack_lists));
        _Py_atomic_store_int(&gcstate->collecting, 0);
    }
}

int
_PyGC_CowChildExiting(PyInterpreterState *interp)
{
    return cow_flag(&_PyGC_cow.child)
           && _Py_IsMainInterpreter(interp)
           && _PyInterpreterState_GetFinalizing(interp) != NULL;
}

/* sys's standard streams, stored into streams[6] (NULL where missing):
   they are closed when sys is wiped, after the pass below, as in stock
   (later messages still need them). */
static void
std_streams(PyInterpreterState *interp, PyObject **streams)
{
    static const char *const names[] = {
        "stdin", "stdout", "stderr", "__stdin__", "__stdout__",
        "__stderr__",
    };
    for (size_t i = 0; i < Py_ARRAY_LENGTH(names); i++) {
        /* Borrowed; a missing key sets no error. */
        streams[i] = interp->sysdict == NULL ? NULL
            : PyDict_GetItemString(interp->sysdict, names[i]);
    }
}

static int
is_in(PyObject *op, PyObject **objs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (objs[i] == op) {
            return 1;
        }
    }
    return 0;
}

/* Candidates of the pass below, sorted by address, and what
   order_owners_first() counts for each: how many other candidates
   refer to it. */
typedef struct {
    PyObject **sorted;
    size_t n;
    size_t *index;          /* sorted[k] is found[index[k]] */
    size_t *owners;         /* per found[] entry */
    PyObject *self;
    int delta;
} owner_count;

static int
cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(PyObject *const *)a;
    uintptr_t y = (uintptr_t)*(PyObject *const *)b;
    return (x > y) - (x < y);
}

static int
visit_owned(PyObject *op, void *arg)
{
    owner_count *c = (owner_count *)arg;
    if (op == NULL || op == c->self) {
        return 0;
    }
    PyObject **hit = bsearch(&op, c->sorted, c->n, sizeof(PyObject *),
                             cmp_ptr);
    if (hit != NULL) {
        c->owners[c->index[hit - c->sorted]] += (size_t)c->delta;
    }
    return 0;
}

/* Order found[] so that an object referred to by another candidate is
   finalized after it (Kahn's order over the candidates' references, read
   through tp_traverse; cycles keep the lists' order): a buffered file
   flushes before its raw file is closed, as when releasing the owner
   would have finalized both.  Left as it is without memory. */
static void
order_owners_first(PyObject **found, size_t n)
{
    if (n < 2) {
        return;
    }
    owner_count c = {0};
    PyObject **order = PyMem_RawMalloc(n * sizeof(PyObject *));
    char *done = PyMem_RawCalloc(n, 1);
    c.sorted = PyMem_RawMalloc(n * sizeof(PyObject *));
    c.index = PyMem_RawMalloc(n * sizeof(size_t));
    c.owners = PyMem_RawCalloc(n, sizeof(size_t));
    if (order == NULL || done == NULL || c.sorted == NULL
        || c.index == NULL || c.owners == NULL)
    {
        goto end;
    }
    c.n = n;
    memcpy(c.sorted, found, n * sizeof(PyObject *));
    qsort(c.sorted, n, sizeof(PyObject *), cmp_ptr);
    for (size_t i = 0; i < n; i++) {
        PyObject **hit = bsearch(&found[i], c.sorted, n,
                                 sizeof(PyObject *), cmp_ptr);
        c.index[hit - c.sorted] = i;
    }
    c.delta = 1;
    for (size_t i = 0; i < n; i++) {
        traverseproc traverse = Py_TYPE(found[i])->tp_traverse;
        if (traverse != NULL) {
            c.self = found[i];
            (void)traverse(found[i], visit_owned, &c);
        }
    }
    /* Repeatedly take, in the lists' order, the candidates no other
       remaining candidate refers to; when only cycles are left, the
       first of them. */
    size_t m = 0;
    c.delta = -1;
    while (m < n) {
        size_t before = m;
        for (size_t i = 0; i < n; i++) {
            if (!done[i] && c.owners[i] == 0) {
                done[i] = 1;
                order[m++] = found[i];
                traverseproc traverse = Py_TYPE(found[i])->tp_traverse;
                if (traverse != NULL) {
                    c.self = found[i];
                    (void)traverse(found[i], visit_owned, &c);
                }
            }
        }
        if (m == before) {
            for (size_t i = 0; i < n; i++) {
                if (!done[i]) {
                    c.owners[i] = 0;
                    break;
                }
            }
        }
    }
    memcpy(found, order, n * sizeof(PyObject *));
end:
    PyMem_RawFree(order);
    PyMem_RawFree(done);
    PyMem_RawFree(c.sorted);
    PyMem_RawFree(c.index);
    PyMem_RawFree(c.owners);
}

void
_PyGC_CowFinalizeAtChildExit(PyInterpreterState *interp)
{
    if (!_PyGC_CowChildExiting(interp)) {
        return;
    }
    GCState *gcstate = &interp->gc;
    PyGC_Head *lists[NUM_GENERATIONS + 1];
    for (int i = 0; i < NUM_GENERATIONS; i++) {
        lists[i] = &gcstate->generations[i].head;
    }
    lists[NUM_GENERATIONS] = &gcstate->permanent_generation.head;
    /* First the candidates, each held by a strong reference: a finalizer
       may allocate, free and untrack, which moves objects between lists.
       Reading the lists writes nothing; only the candidates' refcounts
       and finalized flags are written. */
    PyObject *streams[6];
    std_streams(interp, streams);
    PyObject **found = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i <= NUM_GENERATIONS; i++) {
        /* Of the permanent generation, the prefix freeze() sorted. */
        Py_ssize_t left = PY_SSIZE_T_MAX;
        if (i == NUM_GENERATIONS && !_PyGC_cow.finalizers_scattered) {
            left = _PyGC_cow.finalizers_front;
        }
        for (PyGC_Head *gc = _PyGCHead_NEXT(lists[i]);
             gc != lists[i] && left > 0; gc = _PyGCHead_NEXT(gc), left--)
        {
            PyObject *op = _Py_FROM_GC(gc);
            if (!finalizer_candidate(op) || _PyGC_FINALIZED(op)
                || is_in(op, streams, Py_ARRAY_LENGTH(streams)))
            {
                continue;
            }
            if (n == cap) {
                size_t ncap = cap ? 2 * cap : 64;
                PyObject **p = PyMem_RawRealloc(found,
                                                ncap * sizeof(*found));
                if (p == NULL) {
                    goto done;      /* finalize what was found */
                }
                found = p;
                cap = ncap;
            }
            found[n++] = Py_NewRef(op);
        }
    }
done:
    order_owners_first(found, n);
    for (size_t i = 0; i < n; i++) {
        PyObject_CallFinalizer(found[i]);
    }
    for (size_t i = 0; i < n; i++) {
        Py_DECREF(found[i]);
    }
    PyMem_RawFree(found);
}

#else  /* Py_GIL_DISABLED: cowpy's fork handling is not built */

int
_PyGC_CowChildExiting(PyInterpreterState *Py_UNUSED(interp))
{
    return 0;
}

void
_PyGC_CowFinalizeAtChildExit(PyInterpreterState *Py_UNUSED(interp))
{
}

void
_PyGC_CowTypeAttrSet(PyObject *Py_UNUSED(name))
{
}

void
_PyGC_CowClassAssigned(PyTypeObject *Py_UNUSED(oldto),
                       PyTypeObject *Py_UNUSED(newto))
{
}

int
_PyGC_CowKeptAtExit(PyObject *op)
{
    return _Py_IsImmortal(op);
}

#endif  /* !Py_GIL_DISABLED */

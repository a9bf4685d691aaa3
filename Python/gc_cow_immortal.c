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
#include "pycore_descrobject.h"   // _PyMethodWrapper_Type
#include "pycore_code.h"          // _PyCode_CODE(), _Py_GetBaseOpcode()
#include "pycore_dict.h"          // _PyDictKeys_GetVersionForCurrentState()
#include "pycore_gc.h"
#include "pycore_gc_cow.h"
#include "pycore_hashtable.h"     // _Py_hashtable_t
#include "pycore_interp.h"        // PyInterpreterState.gc
#include "pycore_namespace.h"     // _PyNamespace_Type
#include "pycore_object.h"        // _PyObject_IS_GC()
#include "pycore_opcode_metadata.h"   // _PyOpcode_Caches
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "pycore_unicodeobject.h" // _PyUnicode_InternImmortal()
#include "pycore_unionobject.h"   // _PyUnion_Type
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

   Leaving an object mortal is always safe; making it immortal is safe
   only when nothing depends on it ever being freed or on its reference
   count.  So an object stays mortal when
     - its type has a finalizer (tp_finalize, tp_del: open files,
       sockets, generators, classes with __del__): it must still be
       finalized and flushed;
     - its type releases something in tp_dealloc beyond its own memory
       and references: only types known not to (type_may_be_immortal())
       become immortal; memoryview exports, mmap, epoll, SemLock,
       capsules and unknown C types stay mortal;
     - it is a tuple that nothing in the frozen heap refers to, only C
       code (a C static, a C local): C code may own it alone and fill
       it in place through the refcount-1 APIs PyTuple_SetItem() and
       _PyTuple_Resize() (uWSGI's cached argument tuple, tuple() or
       itertools.batched() over an iterator that forks halfway).  What
       it refers to is still walked.  Other C-held objects have no such
       idiom, and strings and bytes (_PyBytes_Resize()) held only from
       C are no GC objects: the walk never reaches them.
   The walk does not go through objects of the first two kinds: what
   only they reach stays mortal and is freed with them.

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

/* Verdicts of type_may_be_immortal(), cached per type for one walk
   (direct-mapped: a collision only recomputes). */
#define TYPE_CACHE_SIZE 256

typedef struct {
    PyObject **stack;
    size_t len, cap;
    /* __dict__s over inline values met as roots (see imm_root()). */
    PyObject **dicts;
    size_t ndicts, dicts_cap;
    Py_ssize_t immortalized;
    int nomem;
    PyTypeObject *cache_type[TYPE_CACHE_SIZE];
    char cache_ok[TYPE_CACHE_SIZE];
} imm_walk;

/* Append op to a growing array; on failure set w->nomem. */
static void
imm_append(imm_walk *w, PyObject ***arr, size_t *len, size_t *cap,
           PyObject *op)
{
    if (*len == *cap) {
        size_t ncap = *cap ? 2 * *cap : 4096;
        PyObject **n = PyMem_RawRealloc(*arr, ncap * sizeof(PyObject *));
        if (n == NULL) {
            w->nomem = 1;
            return;
        }
        *arr = n;
        *cap = ncap;
    }
    (*arr)[(*len)++] = op;
}

static void
imm_push(imm_walk *w, PyObject *op)
{
    imm_append(w, &w->stack, &w->len, &w->cap, op);
}

/* tp_dealloc of classes defined in Python (typeobject.c's
   subtype_dealloc(), private there): learnt from a class made for the
   purpose by _PyGC_CowImmortalPrepare(), outside any fork lock.  NULL
   until then, and instances of every heap type stay mortal. */
static destructor python_class_dealloc;

void
_PyGC_CowImmortalPrepare(void)
{
    if (python_class_dealloc != NULL) {
        return;
    }
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *cls = PyObject_CallFunction((PyObject *)&PyType_Type, "s(O){}",
                                          "cowpy_probe", &PyBaseObject_Type);
    if (cls != NULL) {
        python_class_dealloc = ((PyTypeObject *)cls)->tp_dealloc;
        Py_DECREF(cls);         /* a cycle: the collection that follows */
    }
    else {
        PyErr_Clear();
    }
    PyErr_SetRaisedException(exc);
}

/* Built-in types whose deallocation only drops references and frees
   memory (checked in their tp_dealloc): their objects may become
   immortal.  Exception and type objects are recognized by flag. */
static PyTypeObject *const plain_types[] = {
    &PyBaseObject_Type, &PyDict_Type, &PyList_Type, &PyTuple_Type,
    &PyUnicode_Type, &PyBytes_Type, &PyByteArray_Type, &PyLong_Type,
    &PyBool_Type, &PyFloat_Type, &PyComplex_Type, &PySet_Type,
    &PyFrozenSet_Type, &PyODict_Type, &PyFunction_Type, &PyCode_Type,
    &PyModule_Type, &PyModuleDef_Type, &PyCell_Type, &PyMethod_Type,
    &PyInstanceMethod_Type, &PyCFunction_Type, &PyCMethod_Type,
    &PyProperty_Type, &PyClassMethod_Type, &PyStaticMethod_Type,
    &PyMethodDescr_Type, &PyClassMethodDescr_Type, &PyWrapperDescr_Type,
    &PyMemberDescr_Type, &PyGetSetDescr_Type, &_PyMethodWrapper_Type,
    &PyDictProxy_Type, &PyDictKeys_Type, &PyDictValues_Type,
    &PyDictItems_Type, &PyODictKeys_Type, &PyODictValues_Type,
    &PyODictItems_Type, &PyRange_Type, &PySlice_Type, &PyEllipsis_Type,
    &_PyWeakref_RefType, &_PyWeakref_ProxyType,
    &_PyWeakref_CallableProxyType, &_PyNamespace_Type, &PyContext_Type,
    &PyContextVar_Type, &PyContextToken_Type, &Py_GenericAliasType,
    &_PyUnion_Type, &PySuper_Type, &PyEnum_Type, &PyReversed_Type,
    &PyMap_Type, &PyFilter_Type, &PyZip_Type,
};

/* Types of stdlib extension modules (heap or static types, known by
   name: they are not exported) that are plain in the same sense; what
   large preloaded heaps hold. */
static const char *const plain_type_names[] = {
    "collections.deque", "collections.defaultdict", "functools.partial",
    "functools._lru_cache_wrapper", "re.Pattern", "decimal.Decimal",
    "array.array", "operator.itemgetter", "operator.attrgetter",
    "operator.methodcaller", "_abc._abc_data", "_struct.Struct",
    "_json.Scanner", "_json.Encoder", "_random.Random",
    "datetime.date", "datetime.datetime", "datetime.time",
    "datetime.timedelta", "datetime.timezone", "datetime.tzinfo",
    "zoneinfo.ZoneInfo", "typing.TypeVar", "typing.ParamSpec",
    "typing.TypeVarTuple", "typing.TypeAliasType",
};

static int
type_is_plain(PyTypeObject *tp)
{
    /* A class defined in Python deallocates through its base's
       tp_dealloc (subtype_dealloc() calls it): judge that base. */
    while (python_class_dealloc != NULL
           && (tp->tp_flags & Py_TPFLAGS_HEAPTYPE)
           && tp->tp_dealloc == python_class_dealloc
           && tp->tp_base != NULL)
    {
        tp = tp->tp_base;
    }
    if (tp->tp_flags & (Py_TPFLAGS_TYPE_SUBCLASS
                        | Py_TPFLAGS_BASE_EXC_SUBCLASS)) {
        /* Classes and exceptions; a subclass with its own C dealloc is
           judged by the rule above only when defined in Python. */
        return !(tp->tp_flags & Py_TPFLAGS_HEAPTYPE)
               || tp->tp_dealloc == python_class_dealloc
               || tp == &PyType_Type;
    }
    if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        for (size_t i = 0; i < Py_ARRAY_LENGTH(plain_types); i++) {
            if (tp == plain_types[i]) {
                return 1;
            }
        }
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(plain_type_names); i++) {
        if (strcmp(tp->tp_name, plain_type_names[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Whether objects of type tp may become immortal (see the top of this
   section). */
static int
type_may_be_immortal(imm_walk *w, PyTypeObject *tp)
{
    size_t h = ((uintptr_t)tp >> 4) % TYPE_CACHE_SIZE;
    if (w->cache_type[h] == tp) {
        return w->cache_ok[h];
    }
    int ok = tp->tp_finalize == NULL && tp->tp_del == NULL
             && type_is_plain(tp);
    w->cache_type[h] = tp;
    w->cache_ok[h] = (char)ok;
    return ok;
}

static inline int
keeps_mortal(imm_walk *w, PyObject *op)
{
    return !type_may_be_immortal(w, Py_TYPE(op));
}

/* For a forked child's module teardown (_PyModule_ClearDict(), patch
   0018): whether a global keeps its value instead of being set to None.
   Immortal values, classes, and objects of the built-in and stdlib types
   above (plain: no finalizer, a deallocation that only drops references
   and frees memory): releasing them would write a page of the inherited
   heap per object only for the kernel to drop it, and nothing observable
   depends on their being freed.  Instances of classes defined in Python
   and everything else are cleared as stock clears them; what a kept
   value holds that has a finalizer is finalized after module teardown
   (_PyGC_CowFinalizeAtChildExit()). */
int
_PyGC_CowKeptAtExit(PyObject *op)
{
    if (_Py_IsImmortal(op)) {
        return 1;
    }
    PyTypeObject *tp = Py_TYPE(op);
    if (tp == &PyType_Type) {
        return 1;                       /* a class (type is plain) */
    }
    if (tp->tp_finalize != NULL || tp->tp_del != NULL
        || (tp->tp_flags & (Py_TPFLAGS_TYPE_SUBCLASS
                            | Py_TPFLAGS_BASE_EXC_SUBCLASS)))
    {
        return 0;
    }
    if (python_class_dealloc != NULL
        && tp->tp_dealloc == python_class_dealloc)
    {
        return 0;       /* an instance of a class defined in Python */
    }
    return type_is_plain(tp);
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

/* A class whose instances keep their attributes inline shares one keys
   table among them, and each new instance decrements its dk_usable
   (dictobject.c, _PyObject_InitInlineValues()) until it reaches 1: after
   an immortalizing freeze, every worker that creates instances would
   write the inherited keys table for its first ones (measured: 1,833 B
   per hot class in bench/code/code_writes.py, warm master).  Settle it
   now, in the parent, as if enough instances had been created: only
   the inline capacity of instances created later shrinks (they keep the
   attribute names the table already has, plus one; a further new name
   materializes their __dict__, as it does once a class has had its 29th
   instance).  So first name, in the parent, what the class's methods
   assign to self (prefill_cached_keys()). */
static void prefill_cached_keys(PyTypeObject *tp, PyDictKeysObject *keys);

static void
settle_cached_keys(PyTypeObject *tp)
{
    if ((tp->tp_flags & Py_TPFLAGS_HEAPTYPE)
        && (tp->tp_flags & Py_TPFLAGS_INLINE_VALUES))
    {
        PyDictKeysObject *keys = ((PyHeapTypeObject *)tp)->ht_cached_keys;
        /* A new name resets the keys' version, on which the parent's
           specialized method loads may guard: then leave the names as
           they are (the workers' code keeps its specializations). */
        if (keys != NULL && keys->dk_version == 0) {
            prefill_cached_keys(tp, keys);
        }
        if (keys != NULL && keys->dk_usable > 1) {
            keys->dk_usable = 1;
        }
    }
}

/* Add to keys the names that code assigns to its first argument
   (`self.NAME = ...`: STORE_ATTR right after loading local 0), in order.
   -1 once the keys are full. */
static int
add_self_stores(PyDictKeysObject *keys, PyObject *func)
{
    if (func == NULL || !PyFunction_Check(func)) {
        return 0;
    }
    PyCodeObject *co = (PyCodeObject *)PyFunction_GET_CODE(func);
    if (co->co_argcount < 1) {
        return 0;                       /* no self */
    }
    _Py_CODEUNIT *instr = _PyCode_CODE(co);
    Py_ssize_t nnames = PyTuple_GET_SIZE(co->co_names);
    int self_on_top = 0, extended = 0;
    for (Py_ssize_t i = 0; i < Py_SIZE(co); i++) {
        int opcode = _Py_GetBaseOpcode(co, (int)i);
        int oparg = instr[i].op.arg;
        if (opcode == STORE_ATTR && self_on_top && !extended
            && oparg < nnames)
        {
            PyObject *name = PyTuple_GET_ITEM(co->co_names, oparg);
            if (!PyUnicode_CheckExact(name)
                || _PyDictKeys_CowAddSharedKey(keys, name) < 0)
            {
                return -1;              /* full */
            }
        }
        /* Local 0 (self) pushed last: LOAD_FAST 0, or the second of a
           LOAD_FAST_LOAD_FAST pair.  Opargs past 255 (EXTENDED_ARG)
           are left to the instances. */
        self_on_top = !extended
                      && ((opcode == LOAD_FAST && oparg == 0)
                          || (opcode == LOAD_FAST_LOAD_FAST
                              && (oparg & 15) == 0));
        extended = opcode == EXTENDED_ARG;
        i += _PyOpcode_Caches[opcode];
    }
    return 0;
}

/* A property's fget or fset (NAME), read through property's own member
   table: descrobject.c keeps its struct private. */
static PyObject *
property_accessor(PyObject *prop, const char *name)
{
    for (PyMemberDef *m = PyProperty_Type.tp_members;
         m != NULL && m->name != NULL; m++)
    {
        if (strcmp(m->name, name) == 0) {
            return *(PyObject **)((char *)prop + m->offset);
        }
    }
    return NULL;
}

/* Name a class's shared keys after the attributes its methods assign to
   self, as its instances would: without them, a worker's first instance
   wrote its names into the inherited keys (measured: 2,020 B per class in
   bench/code/code_writes.py's per-call shape, 1,832 of them the keys),
   and a name an instance gets after __init__ (set in another method or a
   property, as request objects set their lazy attributes) found the
   settled keys full: the instance got a __dict__, slower to use (1.34x
   CPU on an attribute-heavy loop).  First the __init__s along the MRO,
   then every other function and property accessor of each class in it,
   until the keys are full (30 names).  Which names the keys hold changes
   no behaviour: an instance that never sets one leaves its slot empty,
   and a name a data descriptor handles is never stored in the slot. */
static void
prefill_cached_keys(PyTypeObject *tp, PyDictKeysObject *keys)
{
    PyObject *mro = tp->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro)) {
        return;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(mro); k++) {
            PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, k);
            PyObject *dict = base->tp_dict;
            if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE)
                || dict == NULL || !PyDict_CheckExact(dict))
            {
                continue;               /* object, builtins: no Python */
            }
            if (pass == 0) {
                PyObject *init = PyDict_GetItemWithError(
                    dict, &_Py_ID(__init__));   /* borrowed */
                if (init == NULL && PyErr_Occurred()) {
                    PyErr_Clear();
                    return;
                }
                if (add_self_stores(keys, init) < 0) {
                    return;
                }
                continue;
            }
            Py_ssize_t pos = 0;
            PyObject *key, *value;
            while (PyDict_Next(dict, &pos, &key, &value)) {
                if (Py_IS_TYPE(value, &PyProperty_Type)) {
                    if (add_self_stores(keys,
                                        property_accessor(value, "fget")) < 0
                        || add_self_stores(keys,
                                           property_accessor(value, "fset"))
                           < 0)
                    {
                        return;
                    }
                }
                else if (key != &_Py_ID(__init__)
                         && add_self_stores(keys, value) < 0)
                {
                    return;
                }
            }
        }
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
    if (keeps_mortal(w, op)) {
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
        settle_cached_keys((PyTypeObject *)op);
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
        _PyGC_CowSettleCode(co);
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
    if (Py_TYPE(op)->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        /* A __dict__ over inline values is not visited by its owner's
           tp_traverse (the values are): reach it here, or it would stay
           mortal beside an immortal owner and no later walk would go
           through what is stored into it afterwards (no root: see
           is_embedded_dict()).  Owners that stay mortal are never
           traversed, so their dicts stay mortal with them. */
        imm_reach((PyObject *)_PyObject_GetManagedDict(op), w);
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

void
_PyGC_CowImmortalReset(void)
{
    immortal_list._gc_next = 0;     /* made a list again on first use */
    immortal_list._gc_prev = 0;
    immortalized_total = 0;
}

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

static void
imm_drain(imm_walk *w)
{
    while (w->len > 0 && !w->nomem) {
        imm_traverse(w, w->stack[--w->len]);
    }
}

/* Walk from one root: a frozen object with gc_refs > 0, referenced from
   outside the frozen set.  A tuple all of whose references come from
   outside (gc_refs == refcount) is held only from C (or only by objects
   an earlier walk made immortal, which cannot be told apart cheaply;
   leaving it mortal is safe either way): it stays mortal, and the walk
   goes through it.  If the heap refers to it after all through an
   object that is no GC object (a code object's constants), the walk
   reaches it there and makes it immortal, in either order. */
static void
imm_root(imm_walk *w, PyObject *op, Py_ssize_t gc_refs)
{
    if (_Py_IsImmortal(op)) {
        return;
    }
    if (is_embedded_dict(op)) {
        /* Decided after the walk, by its owner (imm_owned_dicts()). */
        imm_append(w, &w->dicts, &w->ndicts, &w->dicts_cap, op);
        return;
    }
    if (PyTuple_CheckExact(op) && gc_refs >= Py_REFCNT(op)) {
        imm_traverse(w, op);
    }
    else {
        imm_reach(op, w);
    }
    imm_drain(w);
}

static int
imm_root_cb(PyObject *op, Py_ssize_t gc_refs, void *arg)
{
    imm_walk *w = (imm_walk *)arg;
    imm_root(w, op, gc_refs);
    return w->nomem;
}

/* The __dict__s over inline values that the walk did not reach from their
   owners: an owner that stayed mortal keeps its dict mortal, but one made
   immortal by an earlier walk is never traversed again, and a dict it
   materialized since (or never had reached) must be walked here, or what
   is stored into it would stay mortal at every later walk (found by the
   fuzzer).  Such owners are on the immortal list: map their inline
   values to them, only when there is a dict left to decide. */
static void
imm_owned_dicts(imm_walk *w, PyGC_Head *aside)
{
    _Py_hashtable_t *owners = NULL;
    for (size_t i = 0; i < w->ndicts && !w->nomem; i++) {
        PyObject *d = w->dicts[i];
        if (_Py_IsImmortal(d)) {
            continue;               /* reached from its owner */
        }
        if (owners == NULL) {
            if (aside == NULL) {
                break;
            }
            owners = _Py_hashtable_new(_Py_hashtable_hash_ptr,
                                       _Py_hashtable_compare_direct);
            if (owners == NULL) {
                w->nomem = 1;
                break;
            }
            for (PyGC_Head *gc = _PyGCHead_NEXT(aside); gc != aside;
                 gc = _PyGCHead_NEXT(gc))
            {
                PyObject *op = FROM_GC(gc);
                if ((Py_TYPE(op)->tp_flags & Py_TPFLAGS_INLINE_VALUES)
                    && _Py_hashtable_set(owners, _PyObject_InlineValues(op),
                                         op) < 0)
                {
                    w->nomem = 1;
                    break;
                }
            }
        }
        if (!w->nomem && _Py_hashtable_get(
                owners, ((PyDictObject *)d)->ma_values) != NULL)
        {
            imm_reach(d, w);
            imm_drain(w);
        }
    }
    if (owners != NULL) {
        _Py_hashtable_destroy(owners);
    }
}

/* Immortalize everything reachable from the permanent generation, and
   set what became immortal aside (above).  Returns the number of objects
   made immortal, -1 if the walk's stack or its arena could not grow
   (what was done stays done). */
Py_ssize_t
_PyGC_CowImmortalize(PyInterpreterState *interp, int frames)
{
    GCState *gcstate = &interp->gc;
    PyGC_Head *perm = &gcstate->permanent_generation.head;
    PyGC_Head *aside = _PyGC_CowImmortalList(interp);
    imm_walk w = {0};           /* 2.3 KiB, with its type cache */

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
       leaked all it held once its owner died (found by the fuzzer).
       With frames == 0 (at fork), what only the running code's local
       variables hold is no root either: that is a request's data, not
       the program's (modules, classes, what C state holds), and would
       leak at every fork of a process that forks while serving. */
    PyGC_Head *lists[1] = {perm};
    if (_PyGC_CowExternalRoots(lists, 1, frames, imm_root_cb, &w) < 0) {
        return -1;
    }
    imm_owned_dicts(&w, aside);
    PyMem_RawFree(w.stack);
    PyMem_RawFree(w.dicts);

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
    return w.nomem ? -1 : w.immortalized;
}

#endif  /* !Py_GIL_DISABLED */

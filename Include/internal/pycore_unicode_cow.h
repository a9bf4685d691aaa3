/* cowpy: a forked child interns new strings in a dict of its own
 * (Objects/unicode_cow.c).
 *
 * Upstream files call only what is declared here: intern_common(),
 * unicode_dealloc(), _PyUnicode_ClearInterned() and the interned-size
 * functions (Objects/unicodeobject.c), and PyOS_AfterFork_Child() through
 * _PyGC_CowAfterForkChild().
 */
#ifndef Py_INTERNAL_UNICODE_COW_H
#define Py_INTERNAL_UNICODE_COW_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

/* After a fork, in the child: arm the own dict if the heap the child
   inherited was made immortal (an immortalizing fork or freeze) and
   PYTHONCOWALLOC is "aside". */
extern void _PyUnicode_CowAfterForkChild(int heap_immortal);

/* intern_common(): the dict to set s into.  `interned` is the
   interpreter's interned dict; when it is the main interpreter's and
   the process is an armed child, that dict is only read: if it holds s,
   it is returned (the set finds s there and writes nothing), else the
   child's own dict (created on first use; `interned` if that fails). */
extern PyObject *_PyUnicode_CowInternTarget(PyObject *interned,
                                            PyObject *s);

/* unicode_dealloc(): the dict that holds the dying interned string s,
   `interned` or the child's own. */
extern PyObject *_PyUnicode_CowInternHolder(PyObject *interned,
                                            PyObject *s);

/* _PyUnicode_ClearInterned(), before it clears `interned` (the main
   interpreter's): move the own dict's strings into it, so that the
   interpreter's teardown treats them as it treats every interned
   string, and drop the own dict. */
extern void _PyUnicode_CowMergeInterned(PyObject *interned);

/* The number of strings in the own dict (for immortal_only, those
   interned as immortal), added by _PyUnicode_InternedSize() and
   _PyUnicode_InternedSize_Immortal() (sys.getunicodeinternedsize()). */
extern Py_ssize_t _PyUnicode_CowInternedSize(int immortal_only);

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_UNICODE_COW_H */

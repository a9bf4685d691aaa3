/* cowpy: settled code (Python/gc_cow_code.c, #17).
 *
 * CPython 3.13 keeps each adaptive instruction's warm-up counter in the
 * first inline cache entry of the instruction, inside the code object
 * (co_code_adaptive): every generic execution of an inherited instruction
 * writes its counter, and so copies the page, in every forked worker.
 * Unless PYTHONCOWCODE=stock, the immortalizing walk "settles" the code
 * it makes immortal: its counters get a value the interpreter neither
 * counts down nor specializes on, so a worker runs inherited code as the
 * master left it, specialized or generic, without writing it, until the
 * code is hot in that worker (its first few calls in the default light
 * mode, some tens with PYTHONCOWCODE=settle: gc_cow_code.c); then the
 * worker thaws it (counters back to warm-up) and it specializes as
 * usual.
 */
#ifndef Py_INTERNAL_GC_COW_CODE_H
#define Py_INTERNAL_GC_COW_CODE_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "pycore_backoff.h"       // _Py_BackoffCounter
#include "pycore_frame.h"         // _PyInterpreterFrame

/* The settled counter: backoff 14 with a full value.  Upstream uses
   backoff 0..12 and 0xFFFF (UNREACHABLE_BACKOFF: backoff 15, value 0xFFF)
   only, so no counter reaches this value by counting; its value is not
   zero, so backoff_counter_triggers() never fires on it. */
#define _PyGC_COW_SETTLED_BACKOFF 14

static inline _Py_BackoffCounter
_PyGC_CowSettledCounter(void)
{
    return make_backoff_counter(0xFFF, _PyGC_COW_SETTLED_BACKOFF);
}

static inline int
_PyGC_CowIsSettled(_Py_BackoffCounter counter)
{
    return counter.as_counter == _PyGC_CowSettledCounter().as_counter;
}

/* ADVANCE_ADAPTIVE_COUNTER() on a settled counter: counts the execution
   in a process-private table, not in the code, and thaws the frame's
   code once it is hot here. */
extern void _PyGC_CowSettledHit(_PyInterpreterFrame *frame);

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_GC_COW_CODE_H */

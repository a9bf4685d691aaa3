/* cowpy: settled code (#17; header Include/internal/pycore_gc_cow_code.h).
 *
 * Unless PYTHONCOWCODE=stock, the immortalizing walk settles every
 * code object it makes immortal (_PyGC_CowSettleCode()): in the parent,
 * before the fork, each adaptive instruction's counter becomes the
 * settled value and RESUME becomes RESUME_CHECK (what its first execution
 * would write).  A forked worker then runs the inherited code as the
 * master left it, specialized or generic, without writing a byte of it:
 * ceval's ADVANCE_ADAPTIVE_COUNTER() leaves a settled counter alone and
 * calls _PyGC_CowSettledHit(), which counts the code's settled executions
 * in a table of this process's own (see hits below).  Code that reaches
 * the thaw threshold in a process is hot there: it is thawed (counters
 * back to warm-up, as _PyCode_Quicken() sets them) and specializes as
 * usual, copying its pages as it did before.  Code that stays lukewarm
 * in a worker stays shared.  Specializing is an optimization only: code
 * left generic runs the same program, slower.  Two thresholds:
 *
 * - light (the default): COW_THAW_HITS_LIGHT, the first few calls.  What
 *   a worker runs once or twice (start-up, lazy initialization at its
 *   first request) stays shared; the request path thaws at once.  The
 *   Django site (make bench-code): 4.6 MiB copied per worker instead of
 *   5.0; the pre-fork app's first 300 requests: 1.00x CPU.
 * - settle (opt-in): COW_THAW_HITS, for code bases whose workers run a
 *   long tail of code some tens of times each.  5,000 functions called
 *   20 times by a worker copy under 60 B per function instead of about
 *   2,600; the pre-fork app's request path, whose lukewarm code stays
 *   generic longer, costs 1.12-1.15x CPU over a process's first 300
 *   requests.
 *
 * See docs/design.md, section 8 ("Writes into inherited code and
 * classes").
 */

#include "Python.h"
#include "pycore_code.h"          // _PyCode_CODE(), adaptive_counter_warmup()
#include "pycore_frame.h"         // _PyFrame_GetCode()
#include "pycore_gc_cow_code.h"
#include "pycore_opcode_metadata.h"   // _PyOpcode_Caches
#include "pycore_opcode_utils.h"  // RESUME_AT_FUNC_START
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "gc_cow_internal.h"

#ifndef Py_GIL_DISABLED

/* Settled executions (generic executions of settled instructions, summed
   over a code object) that make inherited code hot in this process.  The
   price of a settled execution is a counter in a table instead of one in
   the code, and a generic instruction instead of a specialized one; the
   price of a thaw is a copy of the code's pages, which the first
   executions used to cost.  2,048 thaws a request handler within some
   tens of requests, while a function a worker calls 20 times stays shared
   (bench/code/code_writes.py --calls-sweep: it thaws between 20 and 50
   calls; at 1,024, code sharing a slot thawed before 20). */
#define COW_THAW_HITS 2048

/* The light mode's threshold: a function with some tens of adaptive
   instructions thaws within its first few calls, so the code a worker
   runs on every request is specialized after a handful of requests, and
   settling costs each code object at most this many generic executions
   (1.00x CPU over the pre-fork app's first 300 requests, against 1.13x
   with COW_THAW_HITS: bench/results/code_settle_speed.txt).  What it
   keeps shared is the code a worker runs only a few times. */
#define COW_THAW_HITS_LIGHT 256

/* The counts: one 16-bit counter per hash of a code object's address, in
   a table of this process's own (calloc'ed on the first settled
   execution: only the pages it counts in are ever touched).  No keys:
   code objects that share a slot add up and thaw early, which costs
   memory, never correctness.  Measured against a keyed table
   (_Py_hashtable_t, an allocation per code object): 15,000 counted code
   objects cost a worker 850 KiB there, at most 128 KiB here.  A worker
   touches about every page of the table, so its size is the light mode's
   price per worker: a quarter of settle's (32 KiB), where a collision
   thaws code after a few calls instead of some tens. */
#define COW_HIT_SLOTS_LOG2 16
#define COW_HIT_SLOTS_LOG2_LIGHT 14
static uint16_t *hits;
static int hit_slots_log2;

static inline size_t
hit_slot(PyCodeObject *co)
{
    /* Fibonacci hashing of the address (objects are 16-byte aligned). */
    uint64_t h = ((uint64_t)(uintptr_t)co >> 4) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> (64 - hit_slots_log2));
}

/* Set the counter of each instruction whose first cache entry is an
   adaptive counter (those _PyCode_Quicken() gives adaptive_counter_warmup())
   to value; with only_settled, only the counters that are settled. */
static void
for_each_counter(PyCodeObject *co, _Py_BackoffCounter value,
                 int only_settled)
{
    _Py_CODEUNIT *instructions = _PyCode_CODE(co);
    for (Py_ssize_t i = 0; i < Py_SIZE(co); i++) {
        int opcode = _Py_GetBaseOpcode(co, (int)i);
        int caches = _PyOpcode_Caches[opcode];
        if (caches == 0) {
            continue;
        }
        switch (opcode) {
            case JUMP_BACKWARD:     /* tier 2's counter, not adaptive */
            case POP_JUMP_IF_FALSE: /* branch history, not a counter */
            case POP_JUMP_IF_TRUE:
            case POP_JUMP_IF_NONE:
            case POP_JUMP_IF_NOT_NONE:
                break;
            default:
                if (!only_settled
                    || _PyGC_CowIsSettled(instructions[i + 1].counter))
                {
                    instructions[i + 1].counter = value;
                }
                break;
        }
        i += caches;
    }
}

void
_PyGC_CowSettleCode(PyCodeObject *co)
{
#if ENABLE_SPECIALIZATION
    /* Instrumented code (sys.monitoring, sys.settrace) is rewritten by
       the instrumentation anyway; leave it as it is. */
    if (_PyGC_cow.code_mode == COW_CODE_STOCK
        || co->_co_monitoring != NULL)
    {
        return;
    }
    for_each_counter(co, _PyGC_CowSettledCounter(), 0);
    /* The RESUME that starts the function rewrites itself into
       RESUME_CHECK at its first execution; RESUME_CHECK goes back to
       RESUME's generic path whenever the code's instrumentation version
       is not the interpreter's, so doing it now changes nothing but who
       writes the byte.  Not the RESUMEs after a yield or an await:
       sys.monitoring's LINE events look at them as they are
       (instrumentation.c, _Py_call_instrumentation_line(): a generator
       closed at such a yield would lose its line event). */
    _Py_CODEUNIT *instructions = _PyCode_CODE(co);
    for (Py_ssize_t i = 0; i < Py_SIZE(co); i++) {
        if (instructions[i].op.code == RESUME
            && (instructions[i].op.arg & RESUME_OPARG_LOCATION_MASK)
               == RESUME_AT_FUNC_START)
        {
            instructions[i].op.code = RESUME_CHECK;
        }
        i += _PyOpcode_Caches[_Py_GetBaseOpcode(co, (int)i)];
    }
    _PyGC_cow.code_settled++;
#endif
}

/* Thawed counters read as if each instruction had run once since
   _PyCode_Quicken() (warm-up counted down to zero): the next execution
   specializes, as the second one does in code never settled. */
static void
thaw(PyCodeObject *co)
{
    _Py_BackoffCounter warm = adaptive_counter_warmup();
    for_each_counter(co, make_backoff_counter(0, warm.backoff), 1);
    _PyGC_cow.code_thawed++;
}

void
_PyGC_CowSettledHit(_PyInterpreterFrame *frame)
{
    PyCodeObject *co = _PyFrame_GetCode(frame);
    /* The table is the main interpreter's (its code is what the walk
       settles); anywhere else, and without memory, thaw at once.  Code
       under sys.monitoring thaws at once too: some events depend on
       which form an instruction runs in (3.13's generic FOR_ITER does not
       report a generator's implicit STOP_ITERATION, its specialized form
       does), and a tool must see what it sees without cowpy. */
    if (!_Py_IsMainInterpreter(_PyInterpreterState_GET())
        || co->_co_monitoring != NULL)
    {
        thaw(co);
        return;
    }
    int settle = _PyGC_cow.code_mode == COW_CODE_SETTLE;
    if (hits == NULL) {
        hit_slots_log2 = settle ? COW_HIT_SLOTS_LOG2
                                : COW_HIT_SLOTS_LOG2_LIGHT;
        hits = PyMem_RawCalloc((size_t)1 << hit_slots_log2, sizeof(*hits));
        if (hits == NULL) {
            thaw(co);
            return;
        }
    }
    uint16_t *slot = &hits[hit_slot(co)];
    if (++*slot >= (settle ? COW_THAW_HITS : COW_THAW_HITS_LIGHT)) {
        *slot = 0;
        thaw(co);
    }
}

void
_PyGC_CowCodeReset(void)
{
    PyMem_RawFree(hits);
    hits = NULL;
}

#endif  /* !Py_GIL_DISABLED */

/* cowpy: pymalloc's set-aside after fork (Objects/obmalloc_cow.c).
 *
 * In a forked child, the pools that were partly used at the fork (the
 * usedpools[] lists) hold the parent's free blocks ("holes") scattered
 * over pages the child shares with its parent.  Stock pymalloc refills
 * them first, so each small object the child allocates can copy a whole
 * page.  At the fork the child forgets those pools instead (they are "set
 * aside"): its new objects go to empty pools and new arenas, which it
 * writes as a whole.  An aside pool comes back at the first free of one of
 * its blocks: that block's page has just been written (it is private), so
 * reusing blocks freed after the fork copies nothing new; the inherited
 * holes of that pool are dropped until the pool is empty again.
 *
 * Upstream files call only what is declared here.  A process that never
 * forks pays one predicted-false test per free (_PyObject_CowFreeIsAside():
 * the pool's arena index against a bound that is then 0).
 */
#ifndef Py_INTERNAL_OBMALLOC_COW_H
#define Py_INTERNAL_OBMALLOC_COW_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "pycore_obmalloc.h"      // poolp, POOL_SIZE, struct _obmalloc_state

/* The nextoffset of a "dropped" pool: one reclaimed from the set-aside,
   whose inherited free blocks and never-used tail were abandoned.  The
   value is borrowed from pool_header.nextoffset (the ABI keeps the struct
   as it is): a real nextoffset is at most POOL_SIZE (the offset past the
   last block once the tail is used up), so POOL_SIZE + 1 is never a real
   one, and being > maxnextoffset it makes pymalloc_pool_extend() treat the
   pool as exhausted.  A dropped pool's free list holds only blocks freed
   since it was reclaimed, except once it is empty (see
   _PyObject_CowReclaimPool); allocate_from_new_pool() therefore
   reinitialises a dropped pool instead of trusting its free list, which
   gives the abandoned blocks back. */
#define _PyObject_COW_POOL_DROPPED ((pymem_uint)(POOL_SIZE + 1))

/* One bit per pool: with 1 MiB arenas and 16 KiB pools (or 256 KiB and
   4 KiB) an arena spans at most 64 pool-aligned slots, numbered from the
   pool-aligned address at or below the arena's start. */
#if ARENA_BITS - POOL_BITS > 6
#  error "the set-aside bitmap needs at most 64 pools per arena"
#endif

/* One arena of the set-aside.  An arena holding an aside pool is never
   freed (the pool has an allocated block until it is reclaimed, which
   clears its bit), so while bits is not 0 the entry's index keeps naming
   the same address. */
typedef struct {
    uint64_t bits;       /* its aside pools, by _PyObject_CowPoolBit() */
    uintptr_t first;     /* its address >> POOL_BITS while bits != 0: a
                            copy, so that a free reads no arena_object */
} _PyObject_CowAsideArena;

typedef struct {
    /* Pools still set aside.  Non-zero only in a forked child. */
    Py_ssize_t count;
    /* The obmalloc state the bits describe (the main interpreter's at the
       fork); other states (isolated subinterpreters created later) have
       their own arena indices and are never aside. */
    struct _obmalloc_state *state;
    /* arenas[i]: allarenas[i], for i < narenas (maxarenas at the last
       fork). */
    _PyObject_CowAsideArena *arenas;
    pymem_uint narenas;
    /* No arena at or above this index holds an aside pool: 0 while none
       is aside.  pymalloc_free() tests it first, so that a free in an
       arena the child made pays one comparison. */
    pymem_uint limit;
} _PyObject_CowAsideMap;

extern _PyObject_CowAsideMap _PyObject_CowAside;

/* Bit number of pool within its arena. */
static inline pymem_uint
_PyObject_CowPoolBit(struct _obmalloc_state *state, poolp pool)
{
    uintptr_t base = state->mgmt.arenas[pool->arenaindex].address;
    return (pymem_uint)(((uintptr_t)pool >> POOL_BITS) - (base >> POOL_BITS));
}

/* Is pool (a pool of state holding at least one allocated block) set
   aside?  Reads its header (arenaindex), which pymalloc_free() reads
   next anyway. */
static inline int
_PyObject_CowPoolIsAside(struct _obmalloc_state *state, poolp pool)
{
    const _PyObject_CowAsideMap *m = &_PyObject_CowAside;
    pymem_uint ai = pool->arenaindex;
    if (ai >= m->limit || state != m->state) {
        return 0;
    }
    const _PyObject_CowAsideArena *a = &m->arenas[ai];
    /* A stale first (bits == 0) gives a meaningless shift of 0. */
    pymem_uint bit = (pymem_uint)(((uintptr_t)pool >> POOL_BITS) - a->first);
    return (int)((a->bits >> (bit & 63)) & 1);
}

/* pymalloc_free()'s test: the same answer as _PyObject_CowPoolIsAside(),
   with the common "no" (no fork, or an arena the child made) in one
   predicted-false comparison before anything else is read. */
static inline int
_PyObject_CowFreeIsAside(struct _obmalloc_state *state, poolp pool)
{
    if (pool->arenaindex >= _PyObject_CowAside.limit) {
        return 0;
    }
    return _PyObject_CowPoolIsAside(state, pool);
}

/* pymalloc_free_aside() (obmalloc.c), for a free in an aside pool, before
   it frees the block the stock way.  Takes the pool back as a "full,
   unlinked" pool with an empty free list (freeblock NULL, nextoffset
   _PyObject_COW_POOL_DROPPED), so that the stock code links it to
   usedpools[] with valid links and a free list of just the freed block.
   If the freed block is the pool's last one, the pool is linked to
   itself and given a non-NULL freeblock instead, so that the stock code
   moves it to its arena's free pools (its unlink from usedpools[] then
   touches only the pool). */
extern void _PyObject_CowReclaimPool(struct _obmalloc_state *state,
                                     poolp pool);

/* PyOS_AfterFork_Child(): set aside the pools of the usedpools[] lists of
   the main interpreter (reading their headers only) and empty the lists.
   No-op with PYTHONCOWALLOC=stock. */
extern void _PyObject_CowAllocAfterForkChild(PyInterpreterState *interp);

/* PyOS_BeforeFork(), at the fork whose immortalizing walk ran: fill the
   C heap's free chunks (glibc's) so that children allocate elsewhere
   than on the pages they share (Objects/obmalloc_cow.c).  No-op with
   PYTHONCOWALLOC=stock, off the main thread, or without glibc. */
extern void _PyObject_CowPlugHeapHoles(void);

/* PYTHONCOWALLOC / -X cowalloc: the values, in mode order (0 = aside,
   the default; 1 = stock), and the setter _PyGC_CowInit() calls once it
   has read them with cowpy's other start-up options. */
extern const char *const _PyObject_CowAllocModes[];
extern void _PyObject_CowAllocSetMode(int mode);
/* Whether PYTHONCOWALLOC is "aside" (the default); a forked child's own
   interned strings (Objects/unicode_cow.c) follow it too. */
extern int _PyObject_CowAllocAside(void);

/* sys._cow_alloc_stats() */
extern PyObject *_PyObject_CowAllocStats(PyObject *module,
                                         PyObject *Py_UNUSED(ignored));
extern const char _PyObject_CowAllocStats__doc__[];

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_OBMALLOC_COW_H */

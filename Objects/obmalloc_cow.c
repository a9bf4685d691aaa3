/* cowpy: pymalloc's set-aside after fork, and the C heap's holes.
 *
 * See Include/internal/pycore_obmalloc_cow.h for what it does and why,
 * and docs/last-writers.md ("Allocator set-aside") for what it buys.
 *
 * The C heap's holes (_PyObject_CowPlugHeapHoles(), called by
 * _PyGC_CowBeforeFork(), Python/gc_cow_fork.c) are described where they
 * are filled, below.  The set-aside has three pieces, each called from a
 * hook in an upstream file:
 *
 *   _PyObject_CowAllocAfterForkChild()  (PyOS_AfterFork_Child)
 *       walks the usedpools[] lists of the main interpreter, reading pool
 *       headers only, records each pool in a bitmap we own, and empties
 *       the lists.  No pool header is written: that would copy a page per
 *       pool.  The aside pools keep stale nextpool/prevpool links, which
 *       nothing follows (nothing reaches an aside pool but a free of one
 *       of its blocks, and that reclaims it first).
 *   _PyObject_CowReclaimPool()          (pymalloc_free_aside)
 *       gives an aside pool back at the first free of one of its blocks;
 *       pymalloc_free() tests the pool's arena index against
 *       _PyObject_CowAside.limit, then the pool's bit
 *       (_PyObject_CowFreeIsAside()).
 *   the dropped-pool test                (allocate_from_new_pool)
 *       reinitialises a reclaimed pool that became empty, so the holes it
 *       abandoned come back (no leak).
 *
 * What is not set aside, on purpose: empty pools (the arenas' freepools)
 * and pools never carved.  Reusing one writes its pages from scratch, the
 * same cost as a page of a new arena, and an empty pool's pages are
 * mostly all the child writes there (a page shared with the parent is
 * copied once, then filled by the child only).  Full pools are not aside
 * either: they have no free block to refill, and a block freed in them
 * after the fork was just written.
 */

#include "Python.h"
#include "pycore_interp.h"        // PyInterpreterState.obmalloc
#include "pycore_obmalloc.h"
#include "pycore_obmalloc_cow.h"
#include "pycore_pystate.h"       // _Py_IsMainThread()

#include <string.h>               // memcpy()

/* The C heap's holes (below): glibc's malloc only, whose mallinfo2()
   (2.33) names the top chunk; not under a sanitizer, whose allocator
   replaces it. */
#if defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#  if __GLIBC_PREREQ(2, 33) && !defined(_Py_ADDRESS_SANITIZER) \
      && !defined(_Py_MEMORY_SANITIZER) && !defined(_Py_THREAD_SANITIZER)
#    define COW_PLUG_HEAP 1
#    include <malloc.h>           // mallinfo2(), malloc_usable_size()
#    include <unistd.h>           // sbrk()
#  endif
#endif

_PyObject_CowAsideMap _PyObject_CowAside = {0, NULL, NULL, 0, 0};

enum { COW_ALLOC_ASIDE = 0, COW_ALLOC_STOCK = 1 };

static struct {
    int mode;
    /* Pools aside right after the last fork (new ones plus those still
       aside from earlier forks), and their free blocks (holes plus
       never-used tails) at that time. */
    Py_ssize_t aside_at_fork;
    Py_ssize_t new_at_fork;
    Py_ssize_t free_blocks_at_fork;
    /* Pools reclaimed since the last fork: aside_at_fork == count +
       reclaimed. */
    Py_ssize_t reclaimed;
    /* Forks this process went through as a child, in its ancestry (the
       counters are inherited). */
    Py_ssize_t forks;
    /* Forks at which the bitmap could not be allocated (set-aside skipped;
       stock behaviour for that fork). */
    Py_ssize_t failed;
} cow_alloc = {COW_ALLOC_ASIDE, 0, 0, 0, 0, 0, 0};


/* ------------------------------------------------------------ reclaim */

/* Lower m->limit past the arenas left without aside pools. */
static void
lower_limit(_PyObject_CowAsideMap *m)
{
    while (m->limit > 0 && m->arenas[m->limit - 1].bits == 0) {
        m->limit--;
    }
}

void
_PyObject_CowReclaimPool(struct _obmalloc_state *state, poolp pool)
{
    _PyObject_CowAsideMap *m = &_PyObject_CowAside;
    assert(_PyObject_CowPoolIsAside(state, pool));
    assert(pool->ref.count > 0);
    m->arenas[pool->arenaindex].bits &=
        ~((uint64_t)1 << _PyObject_CowPoolBit(state, pool));
    m->count--;
    cow_alloc.reclaimed++;
    lower_limit(m);
    assert(m->limit > 0 || m->count == 0);

    /* Drop the inherited free list and the never-used tail. */
    pool->nextoffset = _PyObject_COW_POOL_DROPPED;
    if (pool->ref.count > 1) {
        /* Full and in no list, as pymalloc_free() expects of a pool whose
           free list is empty. */
        pool->freeblock = NULL;
        return;
    }
    /* The block being freed is the pool's last one.  pymalloc_free() puts
       such a pool to its arena's free pools only when the free list was
       not empty, and insert_to_freepool() unlinks it from usedpools[]
       first.  Linked to itself, the unlink writes only the pool's own
       links, so it needs no list; the non-NULL free list is never
       followed: allocate_from_new_pool() reinitialises a dropped pool. */
    pool->nextpool = pool;
    pool->prevpool = pool;
    pool->freeblock = (pymem_block *)pool + POOL_OVERHEAD;
}


/* ------------------------------------------------------------ at fork */

/* The head of usedpools[2 * i], as pycore_obmalloc_init.h's PTA() makes
   it: a fake pool_header whose nextpool and prevpool are used[2i] and
   used[2i + 1]; the list is empty when both point to the head itself. */
static poolp
used_head(struct _obmalloc_state *state, pymem_uint i)
{
    return (poolp)((uint8_t *)&state->pools.used[i + i]
                   - 2 * sizeof(pymem_block *));
}

void
_PyObject_CowAllocAfterForkChild(PyInterpreterState *interp)
{
#if defined(WITH_PYMALLOC) && !defined(Py_GIL_DISABLED)
    _PyObject_CowAsideMap *m = &_PyObject_CowAside;
    struct _obmalloc_state *state = interp->obmalloc;
    if (cow_alloc.mode != COW_ALLOC_ASIDE || state == NULL) {
        return;
    }
    /* Only the main interpreter survives a fork; an earlier fork's bits
       describe the same state.  (Without pymalloc in use the lists are
       empty and nothing is set aside.) */
    assert(m->state == NULL || m->state == state);
    cow_alloc.forks++;

    pymem_uint n = state->mgmt.maxarenas;
    _PyObject_CowAsideArena *arenas = NULL;
    if (n > 0) {
        arenas = PyMem_RawCalloc(n, sizeof(*arenas));
        if (arenas == NULL) {
            /* Keep what is aside already; this fork's pools stay in use
               (stock behaviour).  Nothing else can fail. */
            cow_alloc.failed++;
            return;
        }
    }
    /* Pools still aside from an earlier fork stay aside: their holes are
       shared with this process's parent as well.  maxarenas never
       shrinks, so the old bitmap fits. */
    assert(m->narenas <= n);
    if (m->arenas != NULL) {
        if (m->narenas > 0) {
            memcpy(arenas, m->arenas, m->narenas * sizeof(*arenas));
        }
        PyMem_RawFree(m->arenas);
    }

    Py_ssize_t added = 0, free_blocks = 0;
    for (pymem_uint i = 0; i < NB_SMALL_SIZE_CLASSES; i++) {
        poolp head = used_head(state, i);
        for (poolp p = head->nextpool; p != head; p = p->nextpool) {
            pymem_uint ai = p->arenaindex;
            assert(p->szidx == i);
            assert(ai < n && state->mgmt.arenas[ai].address != 0);
            pymem_uint bit = _PyObject_CowPoolBit(state, p);
            assert(bit < 64);
            assert(!(arenas[ai].bits & ((uint64_t)1 << bit)));
            arenas[ai].bits |= (uint64_t)1 << bit;
            arenas[ai].first = state->mgmt.arenas[ai].address >> POOL_BITS;
            added++;
            free_blocks += NUMBLOCKS(i) - p->ref.count;
        }
        /* Empty the list as obmalloc initialises it. */
        state->pools.used[i + i] = head;
        state->pools.used[i + i + 1] = head;
    }
    m->arenas = arenas;
    m->narenas = n;
    m->state = state;
    m->count += added;
    m->limit = n;
    lower_limit(m);
    cow_alloc.new_at_fork = added;
    cow_alloc.aside_at_fork = m->count;
    cow_alloc.free_blocks_at_fork = free_blocks;
    cow_alloc.reclaimed = 0;
#else
    (void)interp;
#endif
}


/* ------------------------------------------------ the C heap's holes */

/* What pymalloc does not serve (blocks over 512 bytes: big key tables,
   long strings, code and type objects; and C libraries' own allocations)
   comes from glibc's heap.  Its free chunks at the fork ("holes") lie on
   pages the child shares with its parent, and glibc refills them first
   (its tcache, then its bins), so each such allocation of a worker copies
   a page that was mostly shared.  Measured on the servers benchmark's
   Django site (immortal mode): 509 of a worker's 870 copied heap pages
   were the master's holes.  A child cannot forget them as it forgets
   pymalloc's pools: glibc writes a chunk's neighbours and bin links when
   it allocates or frees, and aborts on lists it does not recognize.  So
   the parent fills them, just before the fork: it allocates every free
   chunk below the top chunk and keeps it for good, chained through its
   first word from heap_plugs (so that leak checkers see it reachable).
   The child then allocates from the top chunk, on pages of its own.  The
   price is the parent's: it can no longer reuse those holes.  So this
   happens once per process, at the fork whose immortalizing walk ran
   (the one that starts a pre-fork server's workers, its heap just
   built); later forks leave the holes made since alone, and a process
   that goes on forking leaks nothing more. */
static struct {
    void *head;
    Py_ssize_t chunks;
    size_t bytes;
} heap_plugs;

#ifdef COW_PLUG_HEAP
/* What glibc's tcache may hold beyond what mallinfo2() counts free: 64
   size classes of at most 7 chunks of at most 1,040 bytes. */
#define TCACHE_SLACK ((size_t)64 * 7 * 1040)

/* Allocate chunks of `request` bytes while they come from a hole (an
   address in [low, top)) and the budget lasts; the first from elsewhere
   (the top chunk) is given back. */
static void
plug_size(size_t request, const char *low, const char *top, size_t *budget)
{
    while (*budget > 0) {
        void *p = malloc(request);
        if (p == NULL) {
            return;
        }
        if ((const char *)p < low || (const char *)p >= top) {
            free(p);
            return;
        }
        size_t got = malloc_usable_size(p);
        *(void **)p = heap_plugs.head;
        heap_plugs.head = p;
        heap_plugs.chunks++;
        heap_plugs.bytes += got;
        *budget -= got < *budget ? got : *budget;
    }
}
#endif

void
_PyObject_CowPlugHeapHoles(void)
{
#ifdef COW_PLUG_HEAP
    /* glibc gives the main thread the main arena, the one in the brk
       heap that mallinfo2()'s keepcost (its top chunk) describes. */
    if (cow_alloc.mode != COW_ALLOC_ASIDE || !_Py_IsMainThread()) {
        return;
    }
    struct mallinfo2 mi = mallinfo2();
    const char *end = sbrk(0);
    if (end == (const char *)-1 || mi.arena == 0 || mi.keepcost > mi.arena
        || (uintptr_t)end < mi.arena)
    {
        return;             /* not glibc's own heap (valgrind, ...) */
    }
    const char *top = end - mi.keepcost;
    const char *low = end - mi.arena;
    size_t budget = mi.fordblks - mi.keepcost + TCACHE_SLACK;
    /* Large to small: a big request splits big holes, what is left of
       them goes to the smaller ones; then every tcache and small-bin
       class exactly (chunks of 32 to 1,040 bytes). */
    for (size_t chunk = 64 * 1024; chunk > 1040; chunk /= 2) {
        plug_size(chunk - sizeof(size_t), low, top, &budget);
    }
    for (size_t chunk = 1040; chunk >= 32; chunk -= 16) {
        plug_size(chunk - sizeof(size_t), low, top, &budget);
    }
#endif
}


/* ------------------------------------------------------------ options */

/* PYTHONCOWALLOC / -X cowalloc are read with cowpy's other start-up
   options, by _PyGC_CowInit() (Python/gc_cow.c). */
const char *const _PyObject_CowAllocModes[] = {"aside", "stock", NULL};

void
_PyObject_CowAllocSetMode(int mode)
{
    assert(mode == COW_ALLOC_ASIDE || mode == COW_ALLOC_STOCK);
    cow_alloc.mode = mode;
}

int
_PyObject_CowAllocAside(void)
{
    return cow_alloc.mode == COW_ALLOC_ASIDE;
}


/* ------------------------------------------------------------ stats */

const char _PyObject_CowAllocStats__doc__[] =
"_cow_alloc_stats()\n"
"\n"
"cowpy: pymalloc's set-aside after fork, as a dict.\n"
"\n"
"mode: 'aside' or 'stock' (PYTHONCOWALLOC, -X cowalloc).\n"
"forks: forks this process and its ancestors went through as a child.\n"
"aside_at_last_fork: pools set aside at the last fork (new_at_last_fork\n"
"  of them that fork, the rest still aside from earlier ones).\n"
"free_blocks_at_last_fork: free blocks in the new ones then.\n"
"aside: pools still aside; their free blocks are aside_free_blocks.\n"
"reclaimed: pools given back since the last fork (at the first free of\n"
"  one of their blocks).\n"
"heap_plugged_chunks, heap_plugged_kib: the C heap's free chunks the\n"
"  parent filled at the fork that made its heap immortal, so that its\n"
"  children allocate elsewhere than on pages they share with it.\n"
"pool_layout: this build's pymalloc pool facts, so that tools reading\n"
"  pool headers (Tools/cowstat) take them from the runtime: pool_size,\n"
"  arena_size, alignment, small_request_threshold, pool_overhead,\n"
"  header_size, dropped_nextoffset (a pool taken back from the\n"
"  set-aside), pointer_size, and fields: {name: (offset, size)} of the\n"
"  pool header's count, freeblock, nextpool, prevpool, arenaindex,\n"
"  szidx, nextoffset and maxnextoffset.  None without pymalloc.";

#if defined(WITH_PYMALLOC) && !defined(Py_GIL_DISABLED)
/* pool_layout of _cow_alloc_stats(): read from the compiler, never
   restated, so a layout change upstream reaches the tools by itself. */
static PyObject *
pool_layout(void)
{
#define FIELD(NAME, MEMBER) \
    NAME, offsetof(struct pool_header, MEMBER), \
    sizeof(((struct pool_header *)0)->MEMBER)
    PyObject *fields = Py_BuildValue(
        "{s:(nn),s:(nn),s:(nn),s:(nn),s:(nn),s:(nn),s:(nn),s:(nn)}",
        FIELD("count", ref.count), FIELD("freeblock", freeblock),
        FIELD("nextpool", nextpool), FIELD("prevpool", prevpool),
        FIELD("arenaindex", arenaindex), FIELD("szidx", szidx),
        FIELD("nextoffset", nextoffset),
        FIELD("maxnextoffset", maxnextoffset));
#undef FIELD
    if (fields == NULL) {
        return NULL;
    }
    return Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:N}",
        "pool_size", (Py_ssize_t)POOL_SIZE,
        "arena_size", (Py_ssize_t)ARENA_SIZE,
        "alignment", (Py_ssize_t)ALIGNMENT,
        "small_request_threshold", (Py_ssize_t)SMALL_REQUEST_THRESHOLD,
        "pool_overhead", (Py_ssize_t)POOL_OVERHEAD,
        "header_size", (Py_ssize_t)sizeof(struct pool_header),
        "dropped_nextoffset", (Py_ssize_t)_PyObject_COW_POOL_DROPPED,
        "pointer_size", (Py_ssize_t)sizeof(void *),
        "fields", fields);
}
#else
static PyObject *
pool_layout(void)
{
    Py_RETURN_NONE;
}
#endif

PyObject *
_PyObject_CowAllocStats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    const _PyObject_CowAsideMap *m = &_PyObject_CowAside;
    Py_ssize_t aside_free = 0;
    if (m->count != 0) {
        struct _obmalloc_state *state = m->state;
        for (pymem_uint ai = 0; ai < m->narenas; ai++) {
            uint64_t b = m->arenas[ai].bits;
            uintptr_t base = state->mgmt.arenas[ai].address;
            for (int bit = 0; b != 0; bit++, b >>= 1) {
                if (b & 1) {
                    poolp p = (poolp)(((base >> POOL_BITS) + bit)
                                      << POOL_BITS);
                    aside_free += NUMBLOCKS(p->szidx) - p->ref.count;
                }
            }
        }
    }
    PyObject *layout = pool_layout();
    if (layout == NULL) {
        return NULL;
    }
    return Py_BuildValue(
        "{s:s,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:N}",
        "mode", _PyObject_CowAllocModes[cow_alloc.mode],
        "forks", cow_alloc.forks,
        "aside_at_last_fork", cow_alloc.aside_at_fork,
        "new_at_last_fork", cow_alloc.new_at_fork,
        "free_blocks_at_last_fork", cow_alloc.free_blocks_at_fork,
        "aside", m->count,
        "aside_free_blocks", aside_free,
        "reclaimed", cow_alloc.reclaimed,
        "failed_forks", cow_alloc.failed,
        "heap_plugged_chunks", heap_plugs.chunks,
        "heap_plugged_kib", (Py_ssize_t)(heap_plugs.bytes / 1024),
        "pool_layout", layout);
}

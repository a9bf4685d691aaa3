"""The parts of Tools/fuzz/gc_fuzz.py, the model-based random fuzzer for
cowpy's cyclic garbage collector (see that script for how to run it).

The model
---------
A case keeps a graph of *nodes* and, outside the graph, a model of it.
Node kinds: "plain" (instance with a __dict__), "slots" (__slots__),
"list", "dict", "del" and "slotsdel" (with __del__, which counts its runs),
"res" (__del__ resurrects the object once into a global list), "mut"
(__del__ mutates the graph: drops edges of, adds a new node to, replaces
the payload of, or hangs junk cycles on the nodes it points to) and
"legacy" (a legacy tp_del finalizer; Python classes cannot have one, so
this kind exists only when _testcapi.with_tp_del is importable).  Lists and
dicts cannot be weakly referenced, so each holds a Tag object that nothing
else refers to and that dies with it.  Every node carries a random payload
(ints, strings, interned strings, bytes, tuples, frozensets) whose checksum
is kept in the model.

The model records, per node id: kind, payload checksum, its strong edges
(slot -> node id) and in-graph weakrefs, a chain of registry weakrefs with
callbacks (one per "incarnation": a resurrection registers a new one),
whether it is frozen, and whether it was made immortal ("pinned").  Edges
are changed in the model first and in the object second, so that
finalizers triggered by the change (which edit both) leave them in step.
Automatic collection is switched off except inside the operations that are
about collection (churn, fork, freeze, collect), so that finalizers never
run between a model edit and the matching object edit.  Finalizers do
only order-independent edits and draw nothing from the random generator:
a side-arena collection finalizes in hash order, which varies from run to
run with the addresses.

Holders: the root list, the list of resurrected objects, gc.garbage (where
legacy finalizers end up) and pinned nodes.  By a walk over the model's
own edges (never through gc):

    LIVE  reachable from a holder: must be alive, of the right type, with
          its payload and edges as modelled, tracked, listed by
          gc.get_objects(), and immortal exactly if pinned;
    MAY   reachable from a frozen live node while the collector may not
          examine frozen objects (stock mode, a stock interpreter): no
          expectation;
    DIE   everything else: after a full collection (repeated until no
          finalizer runs and no side-arena fallback happens) its registry
          weakref must be dead.

Always: a finalizer runs at most once per node, and has run for every dead
node with one; a registry weakref is dead exactly when its callback ran,
and that callback ran at most once; an in-graph weakref callback runs at
most once and only for a dead referent, and a weakref held by a live node
is cleared exactly when its referent died; resurrected objects are not
finalized again when they die for good.

An immortalizing freeze (gc.freeze(immortalize=True), or the "immortal"
fork mode at a process's first os.fork(), or its first after
gc.set_fork_mode("immortal"); later forks only freeze) starts at the frozen objects referenced from
outside the frozen set and never goes through an object that stays
mortal (one whose type has a finalizer: here the kinds with __del__ or
tp_del).  So the model pins every node reachable from a holder by a path
that does not pass through a node with a finalizer; a pinned node (and
what it refers to) is a holder from then on, since immortal objects are
never freed.  Nodes with finalizers stay mortal, and so does what the
holders reach only through them: it dies with them (DIE above).  The
__dict__ of a node that stays mortal must stay mortal too: an immortal
one would keep whatever it holds when the node dies (a bug the fuzzer
found, now fixed).  Immortal objects leave the permanent generation, so
gc.get_freeze_count() does not count them; the model does not use that
count, and expects gc.get_objects() and gc.get_referrers() to list pinned
nodes as any other.

Operations, chosen at random with per-case weights: create nodes, add
edges and cycles, remove edges, drop roots, revive a dropped node through
its weakref, add in-graph weakrefs, replace payloads, gc.collect(0/1/2),
gc.collect(), gc.freeze(), gc.freeze(immortalize=True), gc.unfreeze(),
os.fork() (the child runs steps and checks of its own and reports through
a pipe, exiting with os._exit()), gc.disable()/enable(), collector and
fork mode switches, thresholds, allocation churn (automatic collections),
heap ballast (tens of thousands of lists, flat, nested or in cycles),
injected side-arena failures, release of resurrected objects, clearing
gc.garbage, gc.get_objects()/get_referrers().  Per case the seed also
picks the collector mode (default/arena), the fork mode (freeze, immortal
or off) and thresholds.  On an interpreter without cowpy's gc additions
(stock CPython) the cowpy-only operations are skipped and frozen objects
are treated as never collected, so the script runs there too.

CPython behaviour the model follows: weakrefs to garbage are cleared, and
their callbacks run, before finalizers, so a resurrection leaves cleared
weakrefs on live objects (the resurrector registers new ones for what it
brings back); a weakref that is garbage itself is cleared without its
callback even if its referent lives on (bpo-38006), which shows when its
holder is resurrected; legacy finalizers in garbage go to gc.garbage with
what they reach, and run only when freed by reference counting.
"""

"""A WSGI app for the uWSGI benchmark and smoke tests: importing it builds
a read-mostly catalogue (COWPY_ITEMS items, each an instance with a dict,
a list and strings, plus an index dict: about 5 objects per item) that
every request reads, as a preloaded application does.

COWPY_RECIPE=1 applies stock CPython's documented recipe: the collector
off while loading, gc.freeze() once loaded, on again in each worker
(uwsgi.post_fork_hook, called after fork when fork hooks are on)."""

import gc
import json
import os

RECIPE = os.environ.get("COWPY_RECIPE") == "1"
if RECIPE:
    gc.disable()


class Item:
    def __init__(self, i):
        self.name = "item-%d" % i
        self.tags = ["t%d" % (i % 50), "x" * (i % 13)]
        self.meta = {"id": i, "price": i * 0.25}


CATALOG = [Item(i) for i in range(int(os.environ.get("COWPY_ITEMS",
                                                      "130000")))]
INDEX = {it.name: it for it in CATALOG}

if RECIPE:
    gc.freeze()
    try:
        import uwsgi
        uwsgi.post_fork_hook = gc.enable
    except ImportError:
        pass


_next = iter(range(10**12))


def stats():
    """What the tests check: the fork mode, what is frozen, immortal."""
    out = {"frozen": gc.get_freeze_count(),
           "immortal": hasattr(gc, "is_immortal")
           and gc.is_immortal(CATALOG[len(CATALOG) // 2])}
    if hasattr(gc, "get_fork_mode"):
        out["fork_mode"] = gc.get_fork_mode()
        out["unannounced_forks"] = gc.get_shared_stats()["unannounced_forks"]
    return json.dumps(out).encode()


def application(environ, start_response):
    if environ.get("QUERY_STRING") == "stats":
        gc.collect(0)       # an unannounced fork is handled at the first
        body = stats()      # collection
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    # Each request reads another slice of the catalogue (so that a
    # worker's requests visit all of it, as real traffic does) and makes
    # a little short-lived data (so that its collector runs).
    q = environ.get("QUERY_STRING") or ""
    i = int(q) if q.isdigit() else next(_next)
    start = (i * 50) % len(CATALOG)
    page = [{"name": x.name, "id": x.meta["id"], "tag": x.tags[0]}
            for x in CATALOG[start:start + 50]]
    it = INDEX[page[0]["name"]]
    total = sum(p["id"] for p in page)
    body = ("%s %d %s\n" % (it.name, total, it.tags[0])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]

"""A Flask app shaped like a real pre-fork service, for bench/prefork/run.py.

At import (in gunicorn's master, with --preload) it imports a broad slice of
the stdlib and builds a large, read-mostly, deterministic object graph:

    categories <-> products          (category.products lists its products)
    users -> orders -> line items -> products
    order.user, item.order           (back-references: reference cycles)
    user.friends                     (cross references between users)

Classes with a __dict__ (User, Category, Order as a dataclass) and with
__slots__ (Product, LineItem), plus per-object dicts, lists, tuples,
strings, Decimals and datetimes.  PREFORK_USERS (default 20000) scales it;
the default has ~90,000 orders, ~270,000 line items and ~630,000 objects
tracked by the cyclic collector (untracked strings, Decimals, datetimes
come on top); the master's RSS is ~140 MiB.

Routes:
    /item/<int:i>   user i % USERS serialized to JSON with their orders,
                    line items, products and friends' names (reads a
                    random-ish part of the inherited heap; incref/decref
                    of what it touches is the unavoidable copy-on-write);
                    it also leaves a few objects in reference cycles
                    (garbage only the cyclic collector frees) and fills a
                    bounded per-worker cache (long-lived survivors, as
                    real caches are), so young and full collections run.
    /health         liveness, plus the size of the heap built at import.

Optional: PREFORK_STATS_DIR=DIR makes every forked worker write
DIR/worker-PID.json at exit: requests served, collections per generation
since the fork, time spent in the collector (gc.callbacks) and, under
cowpy, gc.get_shared_stats().  Only stock APIs are required.

Optional: COWPY_BENCH_ATTRIBUTION_DIR=DIR (with Tools/cowstat on
PYTHONPATH) installs cowstat's attribution signal handler in the master at
import (so it needs --preload; the workers inherit it): a forked worker that
receives COWPY_BENCH_ATTRIBUTION_SIGNAL (a number; default SIGPWR, which
gunicorn 20.1 leaves alone in the master and in its workers, unlike SIGUSR2,
which the master uses for re-exec and the worker resets to SIG_DFL, i.e.
death) writes DIR/attribution-PID.json: the pages it copied from the master,
by object type.  Before the report the worker records its collector
statistics as they are (what it writes at exit), disables the collector for
the report's duration and, on stock CPython with a frozen heap, calls
gc.unfreeze() so that gc.get_objects() lists the inherited objects (cowpy
lists frozen objects itself); COWPY_BENCH_ATTRIBUTION_UNFREEZE=0 skips that.
COWPY_BENCH_ATTRIBUTION_DETAIL=1 adds cowstat's per-page detail (every copied
page: region, types, changed bytes) to the report.
DIR/attribution-PID.meta.json says what was done.  Meant to be sent once,
after the measurements: the report itself copies pages (it walks every
object) and the worker is not meant to serve more requests afterwards.

Optional: COWPY_BENCH_WARMUP=N (default 0: nothing) serves N /item/<id>
requests (ids spread over the users) and one /health through Flask's test
client in the master at import, before gunicorn forks, so that the
request path's code has run (specialized bytecode, caches filled) in the
inherited heap; product_summary's cache is cleared afterwards, so the
workers start with the same empty per-worker cache as without warm-up.
"""

# A broad stdlib import set, as a real service has (each module's code,
# classes and constants are part of the shared heap).
import argparse
import base64
import bisect
import collections
import configparser
import contextlib
import csv
import dataclasses
import datetime
import decimal
import difflib
import email
import email.message
import email.policy
import email.utils
import enum
import functools
import gc
import hashlib
import heapq
import hmac
import html
import html.parser
import http
import http.client
import http.cookies
import io
import ipaddress
import itertools
import json
import logging
import logging.handlers
import operator
import os
import pathlib
import pprint
import random
import re
import secrets
import shlex
import sqlite3
import statistics
import string
import struct
import textwrap
import threading
import time
import tomllib
import typing
import unicodedata
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
import zlib

from flask import Flask, Response, abort

SEED = 20250713
USERS = int(os.environ.get("PREFORK_USERS", "20000"))
N_PRODUCTS = max(50, USERS // 4)
N_CATEGORIES = max(5, USERS // 400)
STATUSES = ("new", "paid", "shipped", "delivered", "returned")
CENT = decimal.Decimal("0.01")
EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
WORD_RE = re.compile(r"[a-z]+")
EMAIL_RE = re.compile(r"^[a-z0-9._-]+@[a-z0-9.-]+\.[a-z]{2,}$")

log = logging.getLogger("prefork.app")

WORDS = (
    "amber basalt cedar delta ember fjord garnet harbor indigo juniper "
    "kestrel lagoon meadow nimbus onyx prairie quartz raven sierra tundra "
    "umber violet willow xenon yarrow zephyr anchor beacon canyon dune"
).split()


class Category:
    def __init__(self, cid, name, parent):
        self.id = cid
        self.name = name
        self.parent = parent
        self.products = []            # back-references from products
        self.attrs = {"slug": name.lower().replace(" ", "-"), "depth": 0}


class Product:
    __slots__ = ("id", "sku", "name", "price", "tags", "category", "stock")

    def __init__(self, pid, sku, name, price, tags, category, stock):
        self.id = pid
        self.sku = sku
        self.name = name
        self.price = price
        self.tags = tags
        self.category = category
        self.stock = stock


class User:
    def __init__(self, uid, name, email_addr, created, address, prefs):
        self.id = uid
        self.name = name
        self.email = email_addr
        self.created = created
        self.address = address
        self.prefs = prefs
        self.orders = []
        self.friends = []


@dataclasses.dataclass
class Order:
    id: int
    user: User                        # back-reference: user <-> order cycle
    created: datetime.datetime
    status: str
    items: list = dataclasses.field(default_factory=list)
    meta: dict = dataclasses.field(default_factory=dict)


class LineItem:
    __slots__ = ("order", "product", "qty", "price", "note")

    def __init__(self, order, product, qty, price, note):
        self.order = order            # back-reference: order <-> item cycle
        self.product = product
        self.qty = qty
        self.price = price
        self.note = note


def _name(rng, k):
    return " ".join(rng.choice(WORDS).capitalize() for _ in range(k))


def build(users=USERS, seed=SEED):
    rng = random.Random(seed)
    cats = []
    for c in range(N_CATEGORIES):
        parent = cats[rng.randrange(len(cats))] if cats and c % 3 else None
        cat = Category(c, _name(rng, 2), parent)
        if parent is not None:
            cat.attrs["depth"] = parent.attrs["depth"] + 1
        cats.append(cat)
    products = []
    for p in range(N_PRODUCTS):
        cat = cats[rng.randrange(len(cats))]
        prod = Product(
            p, f"SKU-{p:06d}-{rng.randrange(16**4):04x}", _name(rng, 3),
            decimal.Decimal(rng.randrange(99, 99999)) * CENT,
            tuple(rng.sample(WORDS, rng.randint(1, 4))), cat,
            rng.randrange(500))
        cat.products.append(prod)
        products.append(prod)
    users = [None] * users
    oid = 0
    for u in range(len(users)):
        first, last = rng.choice(WORDS), rng.choice(WORDS)
        user = User(
            u, f"{first.capitalize()} {last.capitalize()}",
            f"{first}.{last}{u}@example.com",
            EPOCH + datetime.timedelta(minutes=rng.randrange(500000)),
            {"street": f"{rng.randrange(1, 999)} {_name(rng, 2)} St",
             "city": _name(rng, 1), "zip": f"{rng.randrange(100000):05d}",
             "geo": [rng.uniform(-90, 90), rng.uniform(-180, 180)]},
            {"lang": rng.choice(("en", "fr", "de", "es", "ja")),
             "newsletter": rng.random() < 0.3,
             "tags": [rng.choice(WORDS) for _ in range(rng.randint(0, 3))]})
        for _ in range(rng.randint(1, 8)):
            order = Order(
                oid, user,
                user.created + datetime.timedelta(hours=rng.randrange(9000)),
                rng.choice(STATUSES),
                meta={"channel": rng.choice(("web", "app", "phone")),
                      "coupon": None if rng.random() < 0.8
                      else f"C{rng.randrange(10**6):06d}"})
            oid += 1
            for _ in range(rng.randint(1, 5)):
                prod = products[rng.randrange(len(products))]
                note = f"gift for {rng.choice(WORDS)}" \
                    if rng.random() < 0.1 else ""
                order.items.append(LineItem(
                    order, prod, rng.randint(1, 4), prod.price, note))
            user.orders.append(order)
        users[u] = user
    for user in users:
        user.friends = [users[rng.randrange(len(users))]
                        for _ in range(rng.randint(0, 6))]
    # Per-request lookups and a small "config" snapshot built from the
    # stdlib, as services do at start-up.
    by_email = {user.email: user for user in users}
    by_sku = {prod.sku: prod for prod in products}
    tree = ET.Element("categories")
    for cat in cats:
        ET.SubElement(tree, "category", id=str(cat.id), name=cat.name)
    db = sqlite3.connect(":memory:")
    db.execute("create table flags(name text primary key, value integer)")
    db.executemany("insert into flags values (?, ?)",
                   [(f"flag_{i}", i % 2) for i in range(64)])
    flags = dict(db.execute("select name, value from flags"))
    db.close()
    cfg = configparser.ConfigParser()
    cfg.read_string("[server]\nname = prefork\nregion = local\n")
    msg = email.message.EmailMessage()
    msg["Subject"] = "order confirmation"
    msg.set_content("Thank you for your order.")
    return dict(categories=cats, products=products, users=users,
                by_email=by_email, by_sku=by_sku,
                xml=ET.tostring(tree), flags=flags,
                config={s: dict(cfg[s]) for s in cfg.sections()},
                template=msg.as_string(), orders=oid)


_t0 = time.perf_counter()
DATA = build()
BUILD_SECONDS = time.perf_counter() - _t0
USER_LIST = DATA["users"]
# Counted once in the master at import (gc.get_objects() touches every
# tracked object; never call it in a worker).
TRACKED_AT_IMPORT = len(gc.get_objects())
log.info("built %d users, %d orders in %.2fs; %d tracked objects",
         USERS, DATA["orders"], BUILD_SECONDS, TRACKED_AT_IMPORT)

app = Flask(__name__)


class Trace:
    """Per-request scratch object; a small reference cycle on purpose."""

    def __init__(self, path):
        self.path = path
        self.spans = []
        self.parent = None


@functools.lru_cache(maxsize=2048)
def product_summary(pid):
    # A bounded per-worker cache: its entries survive young collections
    # (long-lived objects created in the worker), as real caches do.
    prod = DATA["products"][pid]
    return {"sku": prod.sku, "name": prod.name, "price": str(prod.price),
            "category": prod.category.name, "tags": list(prod.tags)}


def serialize_user(user):
    orders = []
    for order in user.orders:
        total = decimal.Decimal(0)
        items = []
        for item in order.items:
            total += item.price * item.qty
            items.append({"product": product_summary(item.product.id),
                          "qty": item.qty, "note": item.note})
        orders.append({"id": order.id, "status": order.status,
                       "created": order.created.isoformat(),
                       "total": str(total.quantize(CENT)),
                       "channel": order.meta["channel"], "items": items})
    return {"id": user.id, "name": user.name, "email": user.email,
            "city": user.address["city"], "lang": user.prefs["lang"],
            "friends": [f.name for f in user.friends], "orders": orders}


REQUESTS = 0
# PREFORK_FORK_EVERY=N: every N-th request of a worker forks a child that
# exits at once, while the request holds data of its own (a worker that
# runs subprocess with preexec_fn or multiprocessing per job; #18).
FORK_EVERY = int(os.environ.get("PREFORK_FORK_EVERY", "0") or 0)


def _fork_during_request(i):
    rows = [serialize_user(USER_LIST[(i + k) % USERS]) for k in range(200)]
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return len(rows)


@app.route("/item/<int:i>")
def item(i):
    global REQUESTS
    REQUESTS += 1
    if i < 0:
        abort(404)
    user = USER_LIST[i % USERS]
    if FORK_EVERY and REQUESTS % FORK_EVERY == 0:
        _fork_during_request(i)
    # Cyclic garbage: a trace, its span dicts pointing back at it, and a
    # self-referencing list; unreachable when the request ends.
    trace = Trace(f"/item/{i}")
    for k in range(2):
        span = {"trace": trace, "name": f"span{k}", "t": time.monotonic()}
        trace.spans.append(span)
    loop = [trace]
    loop.append(loop)
    body = json.dumps(serialize_user(user), separators=(",", ":"))
    return Response(body, mimetype="application/json")


@app.route("/health")
def health():
    return {"ok": True, "pid": os.getpid(), "users": USERS,
            "orders": DATA["orders"], "products": len(DATA["products"]),
            "tracked_at_import": TRACKED_AT_IMPORT,
            "build_seconds": round(BUILD_SECONDS, 3),
            "python": __import__("sys").version.split()[0]}


# ------------------------------------------------------------ worker stats
_STATS_DIR = os.environ.get("PREFORK_STATS_DIR")
_gc_time = {"total_ns": 0, "max_ns": 0, "start": 0, "by_gen": [0, 0, 0]}
_base = {}


def _gc_callback(phase, info):
    now = time.perf_counter_ns()
    if phase == "start":
        _gc_time["start"] = now
    elif _gc_time["start"]:
        dt = now - _gc_time["start"]
        _gc_time["total_ns"] += dt
        _gc_time["max_ns"] = max(_gc_time["max_ns"], dt)
        _gc_time["by_gen"][info.get("generation", 2)] += dt
        _gc_time["start"] = 0


def _after_fork_in_child():
    global REQUESTS
    REQUESTS = 0
    _base["stats"] = gc.get_stats()
    _base["pid"] = os.getpid()
    shared = getattr(gc, "get_shared_stats", None)   # cowpy only
    _base["shared"] = shared() if shared is not None else None
    gc.callbacks.append(_gc_callback)


def _collect_stats():
    now = gc.get_stats()
    out = {"pid": os.getpid(), "requests": REQUESTS,
           "collections": [a["collections"] - b["collections"]
                           for a, b in zip(now, _base["stats"])],
           "collected": [a["collected"] - b["collected"]
                         for a, b in zip(now, _base["stats"])],
           "gc_ms": _gc_time["total_ns"] / 1e6,
           "gc_ms_by_gen": [t / 1e6 for t in _gc_time["by_gen"]],
           "gc_max_pause_ms": _gc_time["max_ns"] / 1e6,
           "freeze_count": gc.get_freeze_count(),
           "cache": product_summary.cache_info()._asdict()}
    if _base["shared"] is not None:
        now_shared = gc.get_shared_stats()
        out["shared"] = now_shared
        out["shared_since_fork"] = {
            k: now_shared[k] - _base["shared"].get(k, 0)
            for k in ("collections", "collected", "arena_collections",
                      "fallbacks") if k in now_shared}
    return out


def _freeze_stats():
    """Keep the statistics as they are now: what _write_stats writes at
    exit (the attribution report runs after the measurements and must not
    show up in them)."""
    if _STATS_DIR and _base.get("pid") == os.getpid() \
            and "final" not in _base:
        _base["final"] = _collect_stats()


def _write_stats():
    if _base.get("pid") != os.getpid():
        return                        # the master, or a grandchild
    out = _base.get("final") or _collect_stats()
    path = os.path.join(_STATS_DIR, f"worker-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)


if _STATS_DIR:
    import atexit
    os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(_write_stats)


# ------------------------------------------------------------ attribution
_ATTRIBUTION_DIR = os.environ.get("COWPY_BENCH_ATTRIBUTION_DIR")
_forked = {"pid": None}


def _install_attribution(directory):
    import signal
    import sys
    # Imported here, in the master, before the fork: importing it in the
    # worker just before the report would itself write to inherited pages.
    from cowstat import attribution        # Tools/cowstat on PYTHONPATH

    signum = int(os.environ.get("COWPY_BENCH_ATTRIBUTION_SIGNAL")
                 or signal.SIGPWR)
    unfreeze = os.environ.get("COWPY_BENCH_ATTRIBUTION_UNFREEZE", "1") != "0"
    is_cowpy = hasattr(gc, "get_shared_stats")
    attribution.install_signal_handler(
        signum=signum,
        path_template=os.path.join(directory, "attribution-{pid}.json"),
        top=None,                          # every type: the runner averages
        detail=os.environ.get("COWPY_BENCH_ATTRIBUTION_DETAIL", "0") != "0")
    report_handler = signal.getsignal(signum)

    def handler(sig, frame):
        if _forked["pid"] != os.getpid():
            return          # the master (or a process forked before import)
        enabled = gc.isenabled()
        gc.disable()        # no collection caused by the report's objects
        _freeze_stats()
        frozen = gc.get_freeze_count()
        unfrozen = False
        try:
            if unfreeze and not is_cowpy and frozen:
                # Stock gc.get_objects() does not list the permanent
                # generation; merging it back writes at most three GC
                # headers (the two list ends), before the snapshot.
                gc.unfreeze()
                unfrozen = True
            report_handler(sig, frame)    # snapshot, walk, write the file
            # Written after the report, so as not to allocate before its
            # snapshot.
            meta = {"pid": os.getpid(), "ppid": os.getppid(),
                    "python": sys.version.split()[0]
                    + (" (cowpy)" if is_cowpy else ""),
                    "frozen_before": frozen, "unfrozen": unfrozen,
                    "gc_enabled": enabled, "requests": REQUESTS}
            path = os.path.join(directory, f"attribution-{os.getpid()}")
            with open(path + ".meta.json.tmp", "w") as f:
                json.dump(meta, f)
            os.replace(path + ".meta.json.tmp", path + ".meta.json")
        finally:
            if enabled:
                gc.enable()

    signal.signal(signum, handler)


# ------------------------------------------------------------ warm-up
def _warm_up(n):
    """Serve N requests in this process (the master, before the fork)."""
    global REQUESTS
    client = app.test_client()
    for k in range(n):
        resp = client.get(f"/item/{(k * 7919) % USERS}")
        if resp.status_code != 200:
            raise RuntimeError("warm-up request failed: %s"
                               % resp.status_code)
    client.get("/health")
    product_summary.cache_clear()
    REQUESTS = 0


_WARMUP = int(os.environ.get("COWPY_BENCH_WARMUP", "0") or 0)
if _WARMUP > 0:
    _t0 = time.perf_counter()
    _warm_up(_WARMUP)
    log.warning("warm-up: %d requests in the master in %.2fs", _WARMUP,
                time.perf_counter() - _t0)


if _ATTRIBUTION_DIR:
    os.register_at_fork(
        after_in_child=lambda: _forked.__setitem__("pid", os.getpid()))
    _install_attribution(_ATTRIBUTION_DIR)

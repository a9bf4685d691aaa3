"""A read-mostly data set, as pre-fork applications load one at import:
a product catalogue (instances with a dict of attributes, a tag list and
strings) and an index by SKU.  About 4 objects per record.

SERVERS_RECORDS (default 100,000) records; SERVERS_RECIPE=1 applies the
stock freeze recipe's first step, gc.disable(), before building (the
frameworks' own hooks do the rest: see each app)."""

import gc
import os
import random

RECORDS = int(os.environ.get("SERVERS_RECORDS", "100000"))
RECIPE = os.environ.get("SERVERS_RECIPE") == "1"

if RECIPE:
    gc.disable()

CATEGORIES = ["books", "garden", "kitchen", "toys", "tools", "music",
              "sports", "office", "health", "auto"]


class Product:
    __slots__ = ("sku", "name", "price", "attrs", "tags")

    def __init__(self, i, rng):
        self.sku = "SKU-%07d" % i
        self.name = "product %d %s" % (i, rng.choice(CATEGORIES))
        self.price = round(rng.uniform(1, 500), 2)
        self.attrs = {"category": rng.choice(CATEGORIES),
                      "stock": rng.randrange(1000),
                      "rating": rng.randrange(50) / 10}
        self.tags = ["t%d" % (i % 97), "c%d" % (i % 13)]

    def as_dict(self):
        return {"sku": self.sku, "name": self.name, "price": self.price,
                "category": self.attrs["category"], "tags": self.tags}


def build(n=RECORDS, seed=1):
    rng = random.Random(seed)
    products = [Product(i, rng) for i in range(n)]
    index = {p.sku: p for p in products}
    return products, index


PRODUCTS, INDEX = build()


def lookup(i):
    """What a request or task does: read a few records."""
    p = PRODUCTS[i % len(PRODUCTS)]
    q = INDEX["SKU-%07d" % ((i * 7919) % len(PRODUCTS))]
    return {"a": p.as_dict(), "b": q.price, "n": len(q.tags)}


def scan(k, n=2000):
    """A task's work: read N records from the k-th slice (400 tasks of
    2,000 over 4 workers touch every record in each worker)."""
    total = 0.0
    for j in range(k * n, (k + 1) * n):
        r = lookup(j)
        total += r["b"] + r["n"]
    return round(total % 1e6, 2)

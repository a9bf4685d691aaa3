"""json_roundtrip: json.dumps / json.loads of nested data.

A nested document (list of user records with nested dicts, lists,
unicode strings, floats, booleans and None), serialized compactly, with
indentation and sort_keys, and parsed back, as an API server does for
every request.  Uses the C accelerator (_json) for both directions;
loads creates many dicts and lists that die right away.
"""

import json
import random


def make_doc(rng, n):
    doc = []
    for i in range(n):
        doc.append({
            "id": i,
            "name": "user-%d" % rng.randrange(10**6),
            "email": "u%d@example.org" % i,
            "score": rng.random() * 100,
            "active": bool(i & 1),
            "tags": [rng.choice(["a", "b", "c", "ünï", "кот", "d\"q"])
                     for _ in range(rng.randrange(1, 6))],
            "address": {"street": "%d Main St" % rng.randrange(1000),
                        "zip": "%05d" % rng.randrange(100000),
                        "geo": [rng.uniform(-90, 90), rng.uniform(-180, 180)]},
            "history": [{"t": j, "v": rng.randrange(100), "ok": None}
                        for j in range(rng.randrange(0, 8))],
        })
    return doc


def run(scale=1.0):
    rng = random.Random(99)
    doc = make_doc(rng, 200)
    reps = max(1, int(180 * scale))
    total = 0
    for r in range(reps):
        s = json.dumps(doc)
        back = json.loads(s)
        total += len(s) + len(back)
        if r % 4 == 0:
            s2 = json.dumps(back, indent=2, sort_keys=True)
            total += len(json.loads(s2))
        s3 = json.dumps(back[r % 200], ensure_ascii=False)
        total += len(s3)
    return total

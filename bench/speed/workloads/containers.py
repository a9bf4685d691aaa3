"""containers: dict, list, set and str manipulation.

The everyday built-in container work of request handling: building and
merging dicts, lookups with str keys, list append/extend/slice/insert/pop,
set algebra, and str split/join/format/replace/strip.  Many short-lived
objects, mostly freed by reference counting.
"""

import random

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta",
         "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron"]


def run(scale=1.0):
    rng = random.Random(7)
    reps = max(1, int(25_000 * scale))
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(64)]
    total = 0
    for r in range(reps):
        line = lines[r & 63]
        # str
        parts = line.split()
        joined = ",".join(p.upper() for p in parts)
        text = "{0}:{1}:{2}".format(r, joined[:20], len(parts))
        text = text.replace("A", "a").strip(":")
        total += len(text) + joined.count(",")
        # dict: word counts, merge, lookups
        counts = {}
        for p in parts:
            counts[p] = counts.get(p, 0) + 1
        merged = {**counts, "n": len(parts)}
        merged.update({w: 0 for w in WORDS[:5]})
        for w in WORDS:
            if w in merged:
                total += merged[w]
        total += sum(counts.values()) + len(merged)
        items = sorted(merged.items())
        total += len(items)
        # list
        lst = list(range(200))
        lst.extend(lst[50:100])
        lst.insert(0, -1)
        while len(lst) > 150:
            lst.pop()
        lst.reverse()
        total += lst[10] + len(lst[::3])
        # set
        a = set(parts)
        b = set(WORDS[r % 7: r % 7 + 8])
        total += len(a | b) + len(a & b) + len(a - b)
        # a small table of dict rows
        rows = [{"id": i, "name": WORDS[i % 15], "v": i * r % 31}
                for i in range(40)]
        total += sum(row["v"] for row in rows if row["name"] in a)
    return total

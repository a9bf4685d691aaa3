"""sort_keys: sorting with key functions and functools.cmp_to_key.

Sorts of ints, floats, strings, tuples and records with key=lambda,
operator.itemgetter/attrgetter, str.lower, multi-pass stable sorts and
cmp_to_key comparators.  Stresses the timsort implementation and the
Python-level calls made by key and compare functions.
"""

import functools
import operator
import random


class Rec:
    __slots__ = ("name", "age", "score")

    def __init__(self, name, age, score):
        self.name = name
        self.age = age
        self.score = score


def cmp_rec(a, b):
    if a.age != b.age:
        return -1 if a.age < b.age else 1
    if a.name != b.name:
        return -1 if a.name < b.name else 1
    return 0


def run(scale=1.0):
    rng = random.Random(5)
    n = max(500, int(20_000 * min(1.0, scale)))   # smaller data below scale 1
    ints = [rng.randrange(10**6) for _ in range(n)]
    floats = [rng.random() for _ in range(n)]
    strs = ["".join(rng.choice("abcdefghijKLMNOP") for _ in range(8))
            for _ in range(n)]
    tuples = [(rng.randrange(100), rng.randrange(100), s) for s in strs]
    dicts = [{"k": rng.randrange(1000), "s": s} for s in strs]
    recs = [Rec(s, rng.randrange(80), rng.random()) for s in strs]
    reps = max(1, int(4 * scale))
    total = 0
    for _ in range(reps):
        total += sorted(ints)[n // 2]
        total += int(sorted(floats, reverse=True)[10] * 1000)
        total += len(sorted(strs, key=str.lower)[0])
        total += sorted(tuples)[0][0]
        total += sorted(dicts, key=operator.itemgetter("k"))[-1]["k"]
        total += sorted(dicts, key=lambda d: (d["k"], d["s"]))[0]["k"]
        total += sorted(recs, key=operator.attrgetter("age", "name"))[0].age
        by = sorted(recs, key=lambda r: r.score)
        by.sort(key=lambda r: r.age)          # stable two-pass sort
        total += by[0].age
        total += sorted(recs, key=functools.cmp_to_key(cmp_rec))[-1].age
        total += sorted(ints, key=functools.cmp_to_key(
            lambda a, b: (a % 1000) - (b % 1000)))[0] % 1000
        part = ints[:]
        part.sort(key=lambda v: -v)
        total += part[0]
    return total

"""generators: generators, comprehensions and itertools pipelines.

Generator functions chained into pipelines, yield from, generator
expressions, list/dict/set comprehensions and the itertools building
blocks (chain, islice, groupby, accumulate, product, permutations,
zip_longest, starmap, tee).  Exercises frame suspension/resumption and
iterator protocols.
"""

import itertools
import operator


def numbers(n):
    for i in range(n):
        yield i


def evens(it):
    for v in it:
        if v % 2 == 0:
            yield v


def scaled(it, k):
    for v in it:
        yield v * k


def flatten(nested):
    for sub in nested:
        if isinstance(sub, list):
            yield from flatten(sub)
        else:
            yield sub


def run(scale=1.0):
    reps = max(1, int(250 * scale))
    nested = [[i, [i + 1, [i + 2]], i + 3] for i in range(300)]
    total = 0
    for r in range(reps):
        total += sum(scaled(evens(numbers(20_000)), 3))
        total += sum(flatten(nested))
        sq = [i * i for i in range(5_000) if i % 3]
        d = {i: str(i) for i in range(2_000)}
        s = {v % 97 for v in sq}
        total += len(sq) + len(d) + len(s)
        total += sum(x for x in sq if x & 1)
        total += sum(itertools.islice(itertools.count(r), 0, 10_000, 7))
        total += sum(itertools.accumulate(range(3_000), operator.add)) % 10**9
        for k, g in itertools.groupby(sorted(d.values(), key=len), key=len):
            total += k * sum(1 for _ in g)
        total += sum(a * b for a, b in itertools.product(range(60), range(60)))
        total += sum(1 for _ in itertools.permutations(range(7), 4))
        total += sum(itertools.starmap(operator.mul, zip(range(3_000), range(3_000))))
        a, b = itertools.tee(numbers(3_000))
        total += sum(x - y for x, y in zip(a, b))
        total += sum(len(str(x)) for x in itertools.zip_longest(range(500), "abc"))
        total += len(list(itertools.chain.from_iterable(nested)))
    return total

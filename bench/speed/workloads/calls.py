"""calls: Python-level function calls, recursion, methods and closures.

The interpreter's call path: recursive calls (fib, Ackermann-like
recursion), bound and static/class method calls, closures and their cell
variables, keyword and *args/**kwargs calls, lambdas passed as
arguments.  Allocation is minimal, so this measures the evaluation loop
and frame handling rather than the collector; it is a control for the
GC-heavy workloads.
"""


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def tak(x, y, z):
    if y >= x:
        return z
    return tak(tak(x - 1, y, z), tak(y - 1, z, x), tak(z - 1, x, y))


class Counter:
    def __init__(self):
        self.n = 0

    def bump(self, k=1):
        self.n += k
        return self.n

    @staticmethod
    def twice(x):
        return x * 2

    @classmethod
    def make(cls):
        return cls()


class Sub(Counter):
    def bump(self, k=1):
        return super().bump(k + 1)


def make_adder(k):
    def add(x):
        return x + k
    return add


def make_acc():
    total = 0

    def acc(x):
        nonlocal total
        total += x
        return total
    return acc


def kw(a, b=2, *args, c=3, **kwargs):
    return a + b + c + len(args) + len(kwargs)


def apply(f, x):
    return f(x)


def run(scale=1.0):
    reps = max(1, int(20 * scale))
    total = 0
    for _ in range(reps):
        total += fib(22)
        total += tak(16, 10, 4)
        c = Counter.make()
        s = Sub()
        add3 = make_adder(3)
        acc = make_acc()
        for i in range(20_000):
            c.bump()
            s.bump(i & 3)
            total += Counter.twice(i) + add3(i)
            acc(i)
            total += kw(i, c=1) + kw(1, 2, 3, 4, d=5)
            total += apply(lambda v: v + 1, i)
        total += c.n + s.n + acc(0)
    return total

"""decimal_float: decimal arithmetic and float math.

Money-style Decimal arithmetic (quantize, rounding, a 28-digit context)
and a high-precision series, plus float loops: math library calls, a
numeric integration and a small Mandelbrot grid.  The C _decimal module
and float objects; floats are allocated and freed at a high rate (freelist
and small-object allocator), with no GC-tracked objects.
"""

import decimal
import math
from decimal import Decimal


def compound(ctx, principal, rate, periods):
    cent = Decimal("0.01")
    bal = principal
    for _ in range(periods):
        interest = (bal * rate).quantize(cent, rounding=decimal.ROUND_HALF_EVEN)
        bal = ctx.add(bal, interest)
    return bal


def pi_series(prec):
    # Machin-like: pi = 16 atan(1/5) - 4 atan(1/239)
    with decimal.localcontext() as ctx:
        ctx.prec = prec + 5

        def atan_inv(x):
            x = Decimal(x)
            x2 = x * x
            term = 1 / x
            total = term
            n = 1
            sign = -1
            eps = Decimal(10) ** -(prec + 3)
            while abs(term) > eps:
                term /= x2
                n += 2
                total += sign * term / n
                sign = -sign
            return total
        return +(16 * atan_inv(5) - 4 * atan_inv(239))


def integrate(f, a, b, n):
    h = (b - a) / n
    s = 0.5 * (f(a) + f(b))
    for i in range(1, n):
        s += f(a + i * h)
    return s * h


def mandel(w, h, it):
    count = 0
    for y in range(h):
        ci = -1.2 + 2.4 * y / h
        for x in range(w):
            cr = -2.0 + 3.0 * x / w
            zr = zi = 0.0
            for _ in range(it):
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                if zr * zr + zi * zi > 4.0:
                    break
            else:
                count += 1
    return count


def run(scale=1.0):
    reps = max(1, int(40 * scale))
    ctx = decimal.Context(prec=28)
    total = 0.0
    for r in range(reps):
        bal = compound(ctx, Decimal("1000.00") + r, Decimal("0.0041"), 8_000)
        total += float(bal)
        prices = [Decimal(i) / 7 for i in range(1, 3_000)]
        total += float(sum(p.quantize(Decimal("0.01")) for p in prices))
        total += float(pi_series(300)) 
        total += integrate(lambda x: math.sin(x) * math.exp(-x / 5), 0.0, 10.0, 60_000)
        total += sum(math.hypot(i, i + 1) + math.sqrt(i) + math.log1p(i)
                     for i in range(30_000))
        total += mandel(60, 40, 60)
    return round(total, 6)

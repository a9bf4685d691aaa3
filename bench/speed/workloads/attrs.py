"""attrs: attribute reads and writes on class instances.

Instances with a plain __dict__ (3.13's inline values), with __slots__,
with properties (getter and setter), inherited class attributes, and
getattr/setattr by name.  These go through the specializing
interpreter's LOAD_ATTR/STORE_ATTR fast paths and the type attribute
cache; allocation is small.
"""


class Plain:
    kind = "plain"

    def __init__(self, x, y):
        self.x = x
        self.y = y
        self.z = 0


class Slotted:
    __slots__ = ("x", "y", "z")
    kind = "slotted"

    def __init__(self, x, y):
        self.x = x
        self.y = y
        self.z = 0


class WithProp:
    def __init__(self, x):
        self._x = x

    @property
    def x(self):
        return self._x

    @x.setter
    def x(self, v):
        self._x = v

    @property
    def double(self):
        return self._x * 2


class Child(Plain):
    extra = 5


NAMES = ("x", "y", "z")


def run(scale=1.0):
    reps = max(1, int(350 * scale))
    objs_p = [Plain(i, i + 1) for i in range(100)]
    objs_s = [Slotted(i, i + 1) for i in range(100)]
    objs_w = [WithProp(i) for i in range(100)]
    objs_c = [Child(i, 2 * i) for i in range(100)]
    total = 0
    for _ in range(reps):
        for _ in range(60):
            for o in objs_p:
                o.z = o.x + o.y
                total += o.z
            for o in objs_s:
                o.z = o.x + o.y
                total += o.z
            for o in objs_w:
                o.x = o.x + 1
                total += o.double
            for o in objs_c:
                total += o.extra + o.x + len(o.kind)
        for o in objs_p:
            for name in NAMES:
                setattr(o, name, getattr(o, name) % 1000)
        for o in objs_w:
            o.x = o.x % 1000
    return total

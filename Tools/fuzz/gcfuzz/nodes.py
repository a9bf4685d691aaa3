"""What every part of the fuzzer shares: what the interpreter has, the
limits, Finding, MODEL (the case being run), the node kinds with their
finalizers and weakref callbacks, and how to read a node object.

MODEL lives here, and only here: the finalizers and callbacks below read
it as a global of this module, and gcfuzz.runner sets it (nodes.MODEL);
other modules must not copy it with "from ... import MODEL".
"""

import gc
import os
import signal
import zlib

try:
    from _testcapi import with_tp_del
except ImportError:
    with_tp_del = None

HAS_COW = hasattr(gc, "get_cow_mode")
HAS_IMMORTAL = HAS_COW and hasattr(gc, "is_immortal")
try:
    import _testinternalcapi as _testcow
except ImportError:
    _testcow = None
HAS_FAIL_ARENA = hasattr(_testcow, "cow_fail_arena")
HAS_FORK = hasattr(os, "fork")

DEFAULT_STEPS = 150
MAX_DEPTH = 2              # fork children may fork once more
MAX_NODES = 300            # accessible nodes before creation is skipped
GROWN_BASE = 10 ** 12      # ids of nodes created by finalizers
RESULT_TAG = "GCFUZZ-RESULT "

# The case being run; finalizers and callbacks report to it.
MODEL = None


class Finding(Exception):
    """An expectation of the model does not hold."""


# ------------------------------------------------------------ node classes

class Tag:
    """Identity of a list or dict node; only its container refers to it."""
    __slots__ = ("nid", "__weakref__")


class Junk:
    """Garbage outside the model."""


class Plain:
    """Node with an instance __dict__."""


SLOT_NAMES = ("nid", "payload", "e0", "e1", "e2", "g", "w0", "junk",
              "__weakref__")


class Slotted:
    """Node with __slots__."""
    __slots__ = SLOT_NAMES


class WithDel:
    """Node whose __del__ counts its runs."""

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)


class SlottedWithDel:
    """Node with __slots__ and a counting __del__."""
    __slots__ = SLOT_NAMES

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)


class Resurrector:
    """Node whose __del__ stores it into a global list, once."""

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)
            model.resurrect(self)


class Mutator:
    """Node whose __del__ edits the nodes it points to."""

    def __del__(self):
        model = MODEL
        if model is not None:
            model.finalized(self)
            model.mutate_from(self)


if with_tp_del is not None:
    class Legacy:
        """Node with a legacy (tp_del) finalizer."""

        def __tp_del__(self):
            model = MODEL
            if model is not None:
                model.finalized(self)

    Legacy = with_tp_del(Legacy)
else:
    Legacy = None

CLASSES = {
    "plain": Plain, "slots": Slotted, "list": list, "dict": dict,
    "del": WithDel, "slotsdel": SlottedWithDel, "res": Resurrector,
    "mut": Mutator,
}
if Legacy is not None:
    CLASSES["legacy"] = Legacy
KINDS = tuple(CLASSES)
CLASS_SET = frozenset(CLASSES.values())
MORTAL = frozenset({"del", "slotsdel", "res", "mut", "legacy"})
SLOTTED = frozenset({"slots", "slotsdel"})
CONTAINERS = frozenset({"list", "dict"})
KIND_WEIGHTS = {"plain": 4, "slots": 3, "list": 4, "dict": 3, "del": 2,
                "slotsdel": 1, "res": 1, "mut": 2, "legacy": 1}
MUT_ACTS = ("clear", "drop1", "junk", "grow", "payload")
# Attribute names a node may have besides edges ("e*", "g*") and
# weakrefs ("w*").
FIXED_ATTRS = frozenset({"nid", "payload", "junk", "tag"})


def _registry_cb(nid, gen, wr):
    model = MODEL
    if model is not None:
        model.cb[(nid, gen)] += 1


def _graph_cb(wid, wr):
    model = MODEL
    if model is not None:
        model.wcb[wid] += 1
        junk = Junk()          # allocate, and leave a cycle behind
        junk.self = junk


def nid_of(obj):
    """The node id of a node object; Finding if obj is not a node."""
    try:
        tp = type(obj)
        if tp is list:
            tag = obj[0]
        elif tp is dict:
            tag = obj["tag"]
        else:
            return obj.nid
        if type(tag) is not Tag:
            raise TypeError("no tag")
        return tag.nid
    except Exception as exc:
        raise Finding(f"malformed node object of type "
                      f"{type(obj).__name__}: {exc!r}") from None


def is_node(obj):
    return type(obj) in CLASS_SET


def handle_of(obj, kind):
    """What the registry weakref points to: the node, or its tag."""
    if kind == "list":
        return obj[0]
    if kind == "dict":
        return obj["tag"]
    return obj


def get_payload(obj, kind):
    if kind == "list":
        return obj[1]
    if kind == "dict":
        return obj["payload"]
    return obj.payload


def attr_items(obj, kind):
    """(name, value) of a non-list node's attributes or keys."""
    if kind == "dict":
        return list(obj.items())
    if kind in SLOTTED:
        out = []
        for name in SLOT_NAMES[:-1]:
            try:
                out.append((name, getattr(obj, name)))
            except AttributeError:
                pass
        return out
    return list(vars(obj).items())


def strong_children(obj, kind):
    """[(slot, child)] of a node's strong edges, as found in the object."""
    if kind == "list":
        return list(enumerate(obj[2:]))
    return [(k, v) for k, v in attr_items(obj, kind)
            if k[:1] in ("e", "g")]


def checksum(payload):
    text = f"{type(payload).__name__}:{payload!r}"
    return zlib.crc32(text.encode("utf-8", "backslashreplace"))


def slot_key(slot):
    """Sort key of slot names: 'e12' < 'e100', 'e*' < 'g*'."""
    if isinstance(slot, int):
        return ("", slot)
    return (slot[:1], int(slot[1:]) if slot[1:].isdigit() else -1)


def signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"

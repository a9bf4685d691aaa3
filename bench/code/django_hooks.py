"""gunicorn config file for django_writes.py: in each worker, right after
the fork, a copy of the inline bytecode (co_code_adaptive) of every code
object the worker can reach; on SIGPWR the worker compares its code with
that copy and writes DIR/codes-PID.json (DIR: COWPY_CODE_REPORT_DIR).
With SERVERS_RECIPE=1 it also applies the stock freeze recipe
(bench/prefork/freeze_hooks.py's hooks)."""

import gc
import json
import os
import signal
import sys
import types

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import bytecode_diff  # noqa: E402  (imported in the master, before forking)

if os.environ.get("SERVERS_RECIPE") == "1":
    sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "prefork"))
    import freeze_hooks  # noqa: E402  (its import disables the collector)
    on_starting = freeze_hooks.on_starting
    pre_fork = freeze_hooks.pre_fork
    _recipe_post_fork = freeze_hooks.post_fork
else:
    def _recipe_post_fork(server, worker):
        pass

PAGE = os.sysconf("SC_PAGE_SIZE")
_CODE = types.CodeType
_snapshot = []          # [(code, its bytecode at the fork)]


def _codes():
    """Every code object reachable from a module (functions, classes and
    their attributes, nested code in co_consts), plus those the collector
    lists (cowpy lists frozen objects; stock does not)."""
    seen = {}
    todo = []

    def add_code(co):
        if id(co) not in seen:
            seen[id(co)] = co
            todo.append(co)

    def visit(v, depth=0):
        if isinstance(v, _CODE):
            add_code(v)
        elif isinstance(v, types.FunctionType):
            add_code(v.__code__)
        elif isinstance(v, (staticmethod, classmethod)):
            visit(v.__func__)
        elif isinstance(v, property):
            for f in (v.fget, v.fset, v.fdel):
                visit(f)
        elif isinstance(v, type) and depth < 4:
            for a in list(vars(v).values()):
                visit(a, depth + 1)

    for m in list(sys.modules.values()):
        d = getattr(m, "__dict__", None)
        if isinstance(d, dict):
            for v in list(d.values()):
                visit(v)
    for o in gc.get_objects():
        if isinstance(o, types.FunctionType):
            add_code(o.__code__)
    while todo:
        co = todo.pop()
        for c in co.co_consts:
            if isinstance(c, _CODE):
                add_code(c)
    return list(seen.values())


def _report(signum, frame):
    basic = _CODE.__basicsize__
    out = {"pid": os.getpid(), "codes": len(_snapshot), "written": 0,
           "categories": {}, "families": {}, "pages": {}}
    page_kinds = {}
    for co, old in _snapshot:
        new = co._co_code_adaptive
        if new == old:
            continue
        out["written"] += 1
        base = id(co) + basic
        for unit, fam, cat, nbytes, hit in bytecode_diff.classify(old, new):
            kind = bytecode_diff.KIND_OF.get(cat, "other")
            c = out["categories"].setdefault(cat, [0, 0])
            c[0] += 1
            c[1] += nbytes
            f = out["families"].setdefault(fam, {}).setdefault(kind, 0)
            out["families"][fam][kind] = f + 1
            for u in hit:
                page_kinds.setdefault((base + 2 * u) // PAGE, set()).add(
                    kind)
    for kinds in page_kinds.values():
        for k in ("specialization", "deopt", "counter", "RESUME", "other"):
            if k in kinds:
                out["pages"][k] = out["pages"].get(k, 0) + 1
                break
    path = os.path.join(os.environ["COWPY_CODE_REPORT_DIR"],
                        "codes-%d.json" % os.getpid())
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)


def post_fork(server, worker):
    _recipe_post_fork(server, worker)
    _snapshot[:] = [(co, co._co_code_adaptive) for co in _codes()]
    signal.signal(signal.SIGPWR, _report)

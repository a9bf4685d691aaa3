"""How a worker changed an inherited code object's inline bytecode
(co_code_adaptive): each changed instruction of the master's bytes PB
against the worker's CB, classified by comparing opcode, oparg and inline
cache entries (families and cache sizes from dis and opcode).  The final
state is compared with the master's, so an instruction counted down and
then specialized shows as "specialize".

Used by code_writes.py (a generated code base) and django_writes.py (the
servers benchmark's Django site)."""

import dis
import opcode

RESUME_CAT = "RESUME -> RESUME_CHECK"
COUNTER_CATS = ("warmup counter", "failed specialization (backoff)",
                "miss counter (specialized, deopt backoff)",
                "branch history", "jump counter")
# Coarse kinds for a page's write (the split): a specialization
# rewrote an opcode or its cache data, a counter moved, or the opcode went
# back to its generic form.
KIND_OF = {
    "specialize": "specialization",
    "re-specialize": "specialization",
    "cache data only": "specialization",
    "deopt to generic": "deopt",
    "miss counter (specialized, deopt backoff)": "deopt",
    "failed specialization (backoff)": "counter",
    "warmup counter": "counter",
    "branch history": "counter",
    "jump counter": "counter",
    RESUME_CAT: "RESUME",
}

_opnames = dis._all_opname
_deopt = dis._deoptop
_ncache = opcode._inline_cache_entries


def classify(pb, cb, units=None):
    """Yield (unit, family, category, changed bytes, hit units) for each
    instruction of PB whose code units (2 bytes each: the instruction,
    then its cache entries) differ in CB; UNITS, if given, is the set of
    code units known to differ (else all are compared)."""
    nunits = len(pb) // 2
    i = 0
    while i < nunits:
        pop, parg = pb[2 * i], pb[2 * i + 1]
        base = _deopt(pop)
        name = _opnames[base]
        nc = _ncache.get(name, 0)
        span = range(i, min(i + 1 + nc, nunits))
        if units is None:
            hit = [u for u in span
                   if pb[2 * u:2 * u + 2] != cb[2 * u:2 * u + 2]]
        else:
            hit = [u for u in span if u in units]
        if hit:
            cop, carg = cb[2 * i], cb[2 * i + 1]
            nbytes = sum((pb[2 * u] != cb[2 * u]) +
                         (pb[2 * u + 1] != cb[2 * u + 1]) for u in hit)
            pc = int.from_bytes(pb[2 * i + 2:2 * i + 4], "little")
            cc = int.from_bytes(cb[2 * i + 2:2 * i + 4], "little")
            rest = slice(2 * i + 4, 2 * (i + 1 + nc))
            if _deopt(cop) != base:
                cat = "other (family changed?)"
            elif pop != cop:
                if name == "RESUME":
                    cat = RESUME_CAT
                elif pop == base:
                    cat = "specialize"
                elif cop == base:
                    cat = "deopt to generic"
                else:
                    cat = "re-specialize"
            elif name.startswith("POP_JUMP_IF"):
                cat = "branch history"
            elif name == "JUMP_BACKWARD":
                cat = "jump counter"
            elif nc and pc != cc:
                if pop != base:
                    cat = "miss counter (specialized, deopt backoff)"
                elif (cc & 0xF) > (pc & 0xF):
                    cat = "failed specialization (backoff)"
                else:
                    cat = "warmup counter"
            elif pb[rest] != cb[rest]:
                cat = "cache data only"
            elif parg != carg:
                cat = "oparg"
            else:
                cat = "other"
            yield i, name, cat, nbytes, hit
        i += 1 + nc


def executes_pop_jump(pb, lo, addr, page):
    """Whether PB (bytecode starting at address LO) holds, on the page at
    ADDR, the inline cache of a POP_JUMP_IF_* instruction."""
    i = 0
    while i < len(pb) // 2:
        name = _opnames[_deopt(pb[2 * i])]
        if name.startswith("POP_JUMP_IF") and \
                addr <= lo + 2 * i + 2 < addr + page:
            return True
        i += 1 + _ncache.get(name, 0)
    return False

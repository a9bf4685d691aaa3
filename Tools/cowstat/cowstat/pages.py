"""Which pages of a forked child are copies of its parent's, and which
are new, read from outside both processes through /proc/PID/pagemap.

    copied, new = count_pages(parent_pid, child_pid)

The parent must stay idle after the fork (a page it writes would count
as copied by the child).  As root, pagemap shows physical frame numbers:
a page present in both at the same address with another frame is a copy;
without them (not root) the "exclusively mapped" bit stands in.  Counts
are pages, by region: 'heap' (brk heap), 'anon' (other anonymous
mappings: pymalloc arenas, mmap'd blocks), 'file' (private file
mappings written: a binary's data, relocations)."""

import os

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def writable_private_ranges(pid):
    ranges = []
    with open("/proc/%s/maps" % pid) as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            perms = parts[1]
            if perms[1] == "w" and perms[3] == "p":
                name = parts[5] if len(parts) > 5 else ""
                ranges.append((lo, hi, name))
    return ranges


def read_pagemap(pid, lo, hi, page):
    import array
    a = array.array("Q")
    with open("/proc/%s/pagemap" % pid, "rb", buffering=0) as f:
        f.seek(lo // page * 8)
        a.frombytes(f.read((hi - lo) // page * 8))
    return a


PRESENT = 1 << 63
EXCLUSIVE = 1 << 56
PFN_MASK = (1 << 55) - 1


def count_pages(parent, child, page=PAGE_SIZE):
    """Pages of the child, by region ('heap', 'anon', 'file'): copied
    (present in the parent at the same address, another physical page:
    the parent stays idle after the fork) and new (the parent has no page
    there).  Read from outside both processes (as root, pagemap shows
    physical frame numbers; else the 'exclusively mapped' bit is used)."""
    copied = {"heap": 0, "anon": 0, "file": 0}
    new = {"heap": 0, "anon": 0, "file": 0}
    pranges = writable_private_ranges(parent)
    for lo, hi, name in writable_private_ranges(child):
        region = ("heap" if name == "[heap]" else
                  "anon" if name == "" else "file")
        cur = read_pagemap(child, lo, hi, page)
        pent = [0] * len(cur)
        for plo, phi, _ in pranges:
            a, b = max(plo, lo), min(phi, hi)
            if a < b:
                pm = read_pagemap(parent, a, b, page)
                off = (a - lo) // page
                pent[off:off + len(pm)] = pm
        for e, pe in zip(cur, pent):
            if not e & PRESENT:
                continue
            if not pe & PRESENT:
                new[region] += 1
            elif e & PFN_MASK:
                if e & PFN_MASK != pe & PFN_MASK:
                    copied[region] += 1
            elif e & EXCLUSIVE:
                copied[region] += 1
    return copied, new


def frames(pid, page=PAGE_SIZE):
    """The physical frames (PFNs) of every present page of process PID,
    any mapping, as a set; empty without the PFNs (not root).  The union
    over a process tree is the memory it holds, each page once however
    many processes map it: unlike a sum of PSS read process by process,
    it does not count twice when processes fork or exit between reads."""
    import array
    out = set()
    with open("/proc/%s/maps" % pid) as f:
        maps = f.read().splitlines()
    with open("/proc/%s/pagemap" % pid, "rb", buffering=0) as pm:
        for line in maps:
            parts = line.split()
            if len(parts) > 5 and parts[5] == "[vsyscall]":
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            pm.seek(lo // page * 8)
            a = array.array("Q")
            a.frombytes(pm.read((hi - lo) // page * 8))
            out.update(e & PFN_MASK for e in a if e & PRESENT)
    out.discard(0)
    return out

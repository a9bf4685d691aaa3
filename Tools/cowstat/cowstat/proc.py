"""Reading process trees and their memory from /proc (Linux only).

All sizes are in KiB, as the kernel reports them in ``smaps_rollup``.
"""

import errno
import os

from cowstat import CowstatError

PROC = "/proc"

# Columns read from /proc/PID/smaps_rollup, in output order.
MEMORY_FIELDS = ("rss", "pss", "uss", "shared_clean", "shared_dirty")

_SMAPS_KEYS = {
    "Rss": "rss",
    "Pss": "pss",
    "Private_Clean": "private_clean",
    "Private_Dirty": "private_dirty",
    "Shared_Clean": "shared_clean",
    "Shared_Dirty": "shared_dirty",
}

# errno values that mean "the process went away while we read it".
_GONE_ERRNOS = (errno.ENOENT, errno.ESRCH)


class NoSuchProcess(CowstatError):
    """The root PID does not exist (or has exited)."""

    def __init__(self, pid, detail=None):
        msg = "no process with PID %d" % pid
        if detail:
            msg += " (%s)" % detail
        CowstatError.__init__(self, msg)
        self.pid = pid


class AccessDenied(CowstatError):
    """A /proc file of a process in the tree cannot be read."""

    def __init__(self, path, err):
        CowstatError.__init__(
            self,
            "cannot read %s: %s (run cowstat as the owner of the process "
            "or as root)" % (path, err.strerror or "permission denied"))
        self.path = path


class ProcessGone(Exception):
    """Internal: a process exited while it was being read."""


def _read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def _split_stat(data):
    """Split the text of /proc/PID/stat into (command name, the fields after
    it); None if it has no command name.

    The command name is in parentheses and may itself contain spaces or
    parentheses: it ends at the last ')'.  The fields after it start with
    the kernel's field 3 (state): index i is field i + 3 of proc(5).
    """
    lpar = data.find("(")
    rpar = data.rfind(")")
    if lpar < 0 or rpar < lpar:
        return None
    return data[lpar + 1:rpar], data[rpar + 1:].split()


def read_stat(pid):
    """Return (command name, state, ppid) from /proc/PID/stat.

    Raises ProcessGone if the process does not exist (any more).
    """
    try:
        data = _read_text("%s/%d/stat" % (PROC, pid))
    except OSError as e:
        if e.errno in _GONE_ERRNOS:
            raise ProcessGone(pid)
        raise
    split = _split_stat(data)
    if split is None:
        raise ProcessGone(pid)
    comm, rest = split
    if len(rest) < 2:
        raise ProcessGone(pid)
    try:
        ppid = int(rest[1])
    except ValueError:
        raise ProcessGone(pid)
    return comm, rest[0], ppid


def _thread_group(pid):
    """Return the Tgid of PID (equal to PID unless PID is a thread)."""
    try:
        for line in _read_text("%s/%d/status" % (PROC, pid)).splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return pid


def check_root(pid):
    """Validate the root PID of a tree; raise a CowstatError if unusable.

    Returns (command name, state).
    """
    if not os.path.isdir(PROC + "/self"):
        raise CowstatError("%s is not mounted: cowstat needs Linux procfs"
                           % PROC)
    try:
        comm, state, _ = read_stat(pid)
    except ProcessGone:
        raise NoSuchProcess(pid)
    except PermissionError as e:
        raise AccessDenied("%s/%d/stat" % (PROC, pid), e)
    tgid = _thread_group(pid)
    if tgid != pid:
        raise CowstatError("%d is a thread of process %d, not a process; "
                           "use PID %d" % (pid, tgid, tgid))
    if state in ("Z", "X"):
        raise NoSuchProcess(pid, "it has exited and is a zombie")
    return comm, state


def list_processes():
    """Return {pid: (comm, state, ppid)} for every process in /proc."""
    result = {}
    try:
        names = os.listdir(PROC)
    except OSError as e:
        raise CowstatError("cannot list %s: %s" % (PROC, e.strerror))
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            result[pid] = read_stat(pid)
        except (ProcessGone, OSError):
            continue
    return result


def process_tree(root):
    """Return the tree rooted at ROOT as a list of dicts in depth-first
    order (children sorted by PID): pid, ppid, depth, command, state.

    Raises NoSuchProcess if ROOT does not exist.
    """
    procs = list_processes()
    if root not in procs:
        # /proc listings omit threads; check_root gives the precise error.
        check_root(root)
        raise NoSuchProcess(root)
    children = {}
    for pid, (_, _, ppid) in procs.items():
        if pid != root:
            children.setdefault(ppid, []).append(pid)
    tree = []
    stack = [(root, 0)]
    seen = set()
    while stack:
        pid, depth = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        comm, state, ppid = procs[pid]
        tree.append({"pid": pid, "ppid": ppid, "depth": depth,
                     "command": comm, "state": state})
        for child in sorted(children.get(pid, ()), reverse=True):
            stack.append((child, depth + 1))
    return tree


def parse_smaps(text):
    """Sum the memory fields of smaps or smaps_rollup text.

    Returns a dict with MEMORY_FIELDS (KiB), or None when the text has no
    Rss line (a zombie or a kernel thread: no user address space).
    """
    raw = dict.fromkeys(_SMAPS_KEYS.values(), 0)
    found = False
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        field = _SMAPS_KEYS.get(key)
        if not sep or field is None:
            continue
        parts = value.split()
        if not parts:
            continue
        try:
            raw[field] += int(parts[0])
        except ValueError:
            continue
        found = True
    if not found:
        return None
    return {
        "rss": raw["rss"],
        "pss": raw["pss"],
        "uss": raw["private_clean"] + raw["private_dirty"],
        "shared_clean": raw["shared_clean"],
        "shared_dirty": raw["shared_dirty"],
    }


def read_memory(pid):
    """Return the MEMORY_FIELDS of process PID from smaps_rollup (or smaps
    on kernels older than 4.14).

    Raises ProcessGone if the process exited or has no user memory, and
    AccessDenied (naming the file) if the file cannot be read.
    """
    path = "%s/%d/smaps_rollup" % (PROC, pid)
    try:
        text = _read_text(path)
    except PermissionError as e:
        raise AccessDenied(path, e)
    except OSError as e:
        if e.errno not in _GONE_ERRNOS:
            raise CowstatError("cannot read %s: %s" % (path, e.strerror))
        if not os.path.exists("%s/%d" % (PROC, pid)):
            raise ProcessGone(pid)
        # The process exists but the kernel has no smaps_rollup: sum smaps.
        path = "%s/%d/smaps" % (PROC, pid)
        try:
            text = _read_text(path)
        except PermissionError as e:
            raise AccessDenied(path, e)
        except OSError as e:
            if e.errno in _GONE_ERRNOS:
                raise ProcessGone(pid)
            raise CowstatError("cannot read %s: %s" % (path, e.strerror))
    mem = parse_smaps(text)
    if mem is None:
        raise ProcessGone(pid)
    return mem


def sample_tree(root):
    """Return the process tree of ROOT with memory figures.

    Each entry is a process_tree() dict plus MEMORY_FIELDS.  Processes
    that exit while being read, zombies and kernel threads are skipped.
    Raises NoSuchProcess if ROOT itself does not exist or has exited,
    AccessDenied if a process's smaps_rollup cannot be read.
    """
    tree = process_tree(root)
    result = []
    for proc in tree:
        if proc["state"] in ("Z", "X"):
            if proc["pid"] == root:
                raise NoSuchProcess(root, "it has exited and is a zombie")
            continue
        try:
            mem = read_memory(proc["pid"])
        except ProcessGone:
            if proc["pid"] != root:
                continue
            try:
                # It may have exited between its state and its smaps
                # (a zombie has no address space either).
                state = read_stat(root)[1]
            except ProcessGone:
                state = "X"
            if state not in ("Z", "X"):
                comm = proc["command"]
                raise CowstatError(
                    "process %d (%s) has no user address space (a kernel "
                    "thread?)" % (root, comm))
            raise NoSuchProcess(root, "it exited while being read")
        entry = dict(proc)
        entry["role"] = "master" if proc["depth"] == 0 else "worker"
        entry.update(mem)
        result.append(entry)
    return result


def totals(entries):
    """Sum MEMORY_FIELDS over ENTRIES."""
    return {field: sum(e[field] for e in entries) for field in MEMORY_FIELDS}


# ------------------------------------------------------------------
# Raw readers for scripts (the benchmarks): /proc's own field names and
# units, OSError (FileNotFoundError, ProcessLookupError, ...) when a
# process is gone, as open() raises it.

# Clock ticks per second: the unit of the times in /proc/PID/stat.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_rollup(pid="self"):
    """Return every "kB" field of /proc/PID/smaps_rollup by its kernel name
    (Rss, Pss, Pss_Anon, Private_Clean, Private_Dirty, Swap, ...), in KiB,
    plus "USS" = Private_Clean + Private_Dirty (what the process alone
    holds).

    PID is a number or "self".  A process without user memory (a zombie)
    has only USS, 0.  Raises OSError if the file cannot be read.
    """
    vals = {}
    for line in _read_text("%s/%s/smaps_rollup" % (PROC, pid)).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            vals[parts[0].rstrip(":")] = int(parts[1])
    vals["USS"] = vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)
    return vals


def stat_fields(pid):
    """Return the fields of /proc/PID/stat after the command name, as
    strings: index i is field i + 3 of proc(5) (0: state, 1: ppid,
    2: pgrp, 7: minflt, 11: utime, 12: stime, 19: starttime).

    Raises OSError if the file cannot be read, ValueError if it has no
    command name.
    """
    split = _split_stat(_read_text("%s/%s/stat" % (PROC, pid)))
    if split is None:
        raise ValueError("no command name in %s/%s/stat" % (PROC, pid))
    return split[1]


def read_cpu_faults(pid):
    """Return {"cpu_s": user + system CPU seconds, "minflt": minor page
    faults (copy-on-write faults among them)} of process PID."""
    fields = stat_fields(pid)
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            "minflt": int(fields[7])}


def start_ticks(pid):
    """Return the start time of PID in clock ticks (CLOCK_TICKS a second)
    since boot (stat field 22); compare with uptime()."""
    return int(stat_fields(pid)[19])


def uptime():
    """Return the seconds since boot (/proc/uptime)."""
    return float(_read_text(PROC + "/uptime").split()[0])


def proc_table():
    """Return {pid: (ppid, pgrp)} of every process in /proc (processes that
    exit while being read are left out)."""
    out = {}
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        try:
            fields = stat_fields(name)
        except OSError:
            continue
        out[int(name)] = (int(fields[1]), int(fields[2]))
    return out


def table_children(table, pid):
    """Return the sorted PIDs whose parent is PID in TABLE (a
    proc_table())."""
    return sorted(p for p, (pp, _) in table.items() if pp == pid)


def child_pids(pid):
    """Return the sorted children of PID: the kernel's list of the main
    thread's children (/proc/PID/task/PID/children) if the kernel has one,
    cheaper than scanning /proc, else from proc_table()."""
    try:
        text = _read_text("%s/%d/task/%d/children" % (PROC, pid, pid))
    except FileNotFoundError:
        return table_children(proc_table(), pid)
    return sorted(int(x) for x in text.split())


def group_members(pgid):
    """Return the sorted PIDs of the processes of process group PGID."""
    return sorted(p for p, (_, pg) in proc_table().items() if pg == pgid)

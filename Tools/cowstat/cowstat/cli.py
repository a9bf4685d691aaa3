"""Command line of cowstat.

    cowstat PID [--json]
    cowstat watch PID --interval S --csv FILE [--duration S | --samples N]
    cowstat plot FILE --png OUT
"""

import argparse
import json
import os
import sys

from cowstat import CowstatError, __version__
from cowstat import proc

COMMANDS = ("show", "watch", "plot")

_EPILOG = """\
other commands:
  cowstat watch PID --interval S --csv FILE [--duration S | --samples N]
  cowstat plot FILE --png OUT
  (cowstat watch -h, cowstat plot -h for details)

columns (KiB, from /proc/PID/smaps_rollup):
  RSS        resident memory, shared pages counted in full
  PSS        proportional: each shared page divided by its sharers
  USS        unique: Private_Clean + Private_Dirty (what the process alone
             holds; freed if it exits)
  SH_CLEAN   Shared_Clean: shared pages never written since shared
  SH_DIRTY   Shared_Dirty: shared pages that were written before sharing
The TOTAL of PSS is the tree's real footprint; the TOTAL of RSS counts
shared pages once per process.
"""


def pid_arg(text):
    """argparse type for a PID: a positive decimal integer."""
    s = text.strip()
    if not s.isdigit() or not s.isascii():
        raise argparse.ArgumentTypeError(
            "invalid PID %r: must be a positive integer" % text)
    pid = int(s)
    if pid <= 0:
        raise argparse.ArgumentTypeError(
            "invalid PID %r: must be a positive integer" % text)
    return pid


def _positive_float(name):
    def conv(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(
                "invalid %s %r: must be a positive number of seconds"
                % (name, text))
        return value
    conv.__name__ = name
    return conv


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            "invalid count %r: must be a positive integer" % text)
    return value


def _show_parser():
    p = argparse.ArgumentParser(
        prog="cowstat",
        description="Memory of a process and all its descendants: RSS, "
                    "PSS, USS and shared pages, from /proc/PID/smaps_rollup.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pid", metavar="PID", type=pid_arg,
                   help="root process of the tree (e.g. a pre-fork master)")
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of a table")
    p.add_argument("--version", action="version",
                   version="cowstat " + __version__)
    return p


def _watch_parser():
    p = argparse.ArgumentParser(
        prog="cowstat watch",
        description="Sample the tree of PID repeatedly and append one CSV "
                    "row per process and sample: timestamp, pid, ppid, "
                    "role (master for PID, worker for its descendants), "
                    "depth, command, rss, pss, uss, shared (KiB).  Stops "
                    "when PID exits, after --duration or --samples, or on "
                    "SIGINT/SIGTERM.")
    p.add_argument("pid", metavar="PID", type=pid_arg)
    p.add_argument("--interval", type=_positive_float("interval"),
                   default=1.0, metavar="S",
                   help="seconds between samples (default 1)")
    p.add_argument("--csv", required=True, metavar="FILE",
                   help="CSV file to append to (created with a header)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive_float("duration"),
                      metavar="S", help="stop after S seconds")
    stop.add_argument("--samples", type=_positive_int, metavar="N",
                      help="stop after N samples")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not report each sample on stderr")
    return p


def _plot_parser():
    p = argparse.ArgumentParser(
        prog="cowstat plot",
        description="Draw shared and private (USS) memory per process over "
                    "time from a 'cowstat watch' CSV.  Needs matplotlib; "
                    "re-runs itself with /usr/bin/python3 (Debian package "
                    "python3-matplotlib) if this Python lacks it.")
    p.add_argument("csv", metavar="FILE", help="CSV written by cowstat watch")
    p.add_argument("--png", required=True, metavar="OUT",
                   help="PNG file to write")
    p.add_argument("--title", help="figure title")
    return p


def _err(msg):
    sys.stderr.write("cowstat: %s\n" % msg)


def format_table(entries):
    """Return the text table of sample_tree() ENTRIES with a TOTAL row."""
    cols = [("PID", "pid"), ("PPID", "ppid"), ("COMMAND", "command"),
            ("RSS", "rss"), ("PSS", "pss"), ("USS", "uss"),
            ("SH_CLEAN", "shared_clean"), ("SH_DIRTY", "shared_dirty")]
    rows = []
    for e in entries:
        row = []
        for _, key in cols:
            v = e[key]
            if key == "command":
                v = "  " * e["depth"] + v
            row.append(str(v))
        rows.append(row)
    tot = proc.totals(entries)
    rows.append(["TOTAL", "", "%d processes" % len(entries)]
                + [str(tot[k]) for _, k in cols[3:]])
    widths = [max(len(h), *(len(r[i]) for r in rows))
              for i, (h, _) in enumerate(cols)]

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            if i == 2:
                out.append(c.ljust(widths[i]))
            else:
                out.append(c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line([h for h, _ in cols])]
    lines += [line(r) for r in rows[:-1]]
    lines.append(line(rows[-1]))
    lines.append("(sizes in KiB; USS = Private_Clean + Private_Dirty)")
    return "\n".join(lines) + "\n"


def to_json(root, entries):
    procs = []
    for e in entries:
        d = {k: e[k] for k in ("pid", "ppid", "depth", "role", "command")}
        for k in proc.MEMORY_FIELDS:
            d[k] = e[k]
        procs.append(d)
    return json.dumps({"root": root, "unit": "KiB", "processes": procs,
                       "total": proc.totals(entries)}, indent=2)


def _cmd_show(args):
    entries = proc.sample_tree(args.pid)
    out = to_json(args.pid, entries) + "\n" if args.json \
        else format_table(entries)
    sys.stdout.write(out)
    return 0


def _cmd_watch(args):
    from cowstat import watch

    log = None
    if not args.quiet:
        def log(msg):
            sys.stderr.write("cowstat: %s\n" % msg)
    taken, rows, reason = watch.watch(args.pid, args.interval, args.csv,
                                      duration=args.duration,
                                      samples=args.samples, log=log)
    _err("stopped (%s): %d samples, %d rows appended to %s"
         % (reason, taken, rows, args.csv))
    return 0


def _cmd_plot(args, argv):
    from cowstat import plot

    n, bad = plot.plot(args.csv, args.png, argv, title=args.title)
    if bad:
        _err("skipped %d malformed rows in %s" % (bad, args.csv))
    _err("wrote %s (%d processes)" % (args.png, n))
    return 0


def main(argv=None):
    """Run cowstat with ARGV (default sys.argv[1:]); return the exit
    status.  Usage errors exit through argparse (status 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = "show"
    rest = argv
    if argv and argv[0] in COMMANDS:
        cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "watch":
            return _cmd_watch(_watch_parser().parse_args(rest))
        if cmd == "plot":
            return _cmd_plot(_plot_parser().parse_args(rest), argv)
        return _cmd_show(_show_parser().parse_args(rest))
    except CowstatError as e:
        _err(str(e))
        return 2
    except BrokenPipeError:
        # Output piped into e.g. head: stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130

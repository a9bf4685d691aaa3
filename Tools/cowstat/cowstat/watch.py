"""``cowstat watch``: sample a process tree into a CSV file."""

import csv
import os
import signal
import time

from cowstat import CowstatError
from cowstat import proc

CSV_COLUMNS = ("timestamp", "pid", "ppid", "role", "depth", "command",
               "rss", "pss", "uss", "shared")


class _Stop(Exception):
    pass


class _Signals:
    """SIGINT/SIGTERM handler that stops the loop, but never in the middle
    of writing a sample (so the CSV never ends with a partial row)."""

    def __init__(self):
        self.writing = False
        self.stop = False
        self.old = {}

    def handler(self, signum, frame):
        self.stop = True
        if not self.writing:
            raise _Stop(signum)

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[signum] = signal.signal(signum, self.handler)
            except ValueError:      # not in the main thread
                pass

    def restore(self):
        for signum, old in self.old.items():
            signal.signal(signum, old)


def _open_csv(path):
    """Open PATH for appending; write the header if the file is new or
    empty, check it otherwise."""
    try:
        if os.path.isdir(path):
            raise CowstatError("%s is a directory, not a CSV file" % path)
        exists = os.path.exists(path) and os.path.getsize(path) > 0
        if exists:
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if tuple(header or ()) != CSV_COLUMNS:
                raise CowstatError(
                    "%s exists and is not a cowstat watch CSV (its first "
                    "line should be %s); choose another file"
                    % (path, ",".join(CSV_COLUMNS)))
        f = open(path, "a", newline="")
    except OSError as e:
        raise CowstatError("cannot write %s: %s" % (path, e.strerror or e))
    writer = csv.writer(f)
    if not exists:
        writer.writerow(CSV_COLUMNS)
        f.flush()
    return f, writer


def watch(root, interval, csv_path, duration=None, samples=None, log=None):
    """Sample the tree of ROOT every INTERVAL seconds, appending rows to
    CSV_PATH, until ROOT exits, DURATION seconds passed or SAMPLES samples
    were taken, or SIGINT/SIGTERM arrives.

    Returns (samples taken, rows written, reason stopped).
    """
    if interval <= 0:
        raise CowstatError("--interval must be positive")
    proc.check_root(root)
    f, writer = _open_csv(csv_path)
    signals = _Signals()
    signals.install()
    taken = rows = 0
    reason = None
    start = time.monotonic()
    try:
        while True:
            try:
                entries = proc.sample_tree(root)
            except proc.NoSuchProcess:
                reason = "process %d exited" % root
                break
            now = round(time.time(), 3)
            signals.writing = True
            for e in entries:
                writer.writerow((now, e["pid"], e["ppid"], e["role"],
                                 e["depth"], e["command"], e["rss"],
                                 e["pss"], e["uss"],
                                 e["shared_clean"] + e["shared_dirty"]))
            f.flush()
            signals.writing = False
            taken += 1
            rows += len(entries)
            if signals.stop:
                reason = "interrupted"
                break
            if log:
                log("sample %d: %d processes" % (taken, len(entries)))
            if samples is not None and taken >= samples:
                reason = "%d samples taken" % taken
                break
            next_at = start + taken * interval
            if duration is not None and next_at - start > duration:
                reason = "%g s elapsed" % duration
                break
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except (KeyboardInterrupt, _Stop):
        reason = "interrupted"
    finally:
        f.close()
        signals.restore()
    return taken, rows, reason

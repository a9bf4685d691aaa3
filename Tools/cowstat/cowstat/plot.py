"""``cowstat plot``: draw a ``cowstat watch`` CSV as a PNG.

Needs matplotlib.  If the running interpreter cannot import it (cowpy and
stock builds usually cannot), the command re-executes itself with Debian's
/usr/bin/python3, which has it once ``python3-matplotlib`` is installed.
"""

import csv
import os
import sys

from cowstat import CowstatError

SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGE = "python3-matplotlib"
_REEXEC_ENV = "COWSTAT_PLOT_REEXEC"

_NEEDED = ("timestamp", "pid", "role", "uss", "shared")


def read_csv(path):
    """Return {pid: {"role", "command", "t": [...], "uss": [...],
    "shared": [...]}} from a watch CSV (KiB; t in Unix seconds).

    Raises CowstatError for a missing or malformed file.  Malformed rows
    are skipped; their count is returned as the second item.
    """
    try:
        f = open(path, newline="")
    except OSError as e:
        raise CowstatError("cannot read %s: %s" % (path, e.strerror or e))
    series = {}
    bad = 0
    with f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        missing = [c for c in _NEEDED if c not in fields]
        if missing:
            raise CowstatError(
                "%s is not a cowstat watch CSV (missing column%s %s)"
                % (path, "s" if len(missing) > 1 else "", ", ".join(missing)))
        try:
            for row in reader:
                try:
                    pid = int(row["pid"])
                    t = float(row["timestamp"])
                    uss = int(row["uss"])
                    shared = int(row["shared"])
                except (TypeError, ValueError):
                    bad += 1
                    continue
                s = series.get(pid)
                if s is None:
                    s = series[pid] = {"role": row.get("role") or "?",
                                       "command": row.get("command") or "",
                                       "t": [], "uss": [], "shared": []}
                s["t"].append(t)
                s["uss"].append(uss)
                s["shared"].append(shared)
        except (csv.Error, UnicodeDecodeError) as e:
            raise CowstatError("%s: malformed CSV: %s" % (path, e))
    if not series:
        raise CowstatError("%s has no samples" % path)
    return series, bad


def _import_matplotlib():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def load_pyplot(argv):
    """Return matplotlib.pyplot, re-executing ``cowstat ARGV`` with
    /usr/bin/python3 when this interpreter has no matplotlib."""
    try:
        return _import_matplotlib()
    except ImportError:
        pass
    first = os.environ.get(_REEXEC_ENV)
    if first is None and os.access(SYSTEM_PYTHON, os.X_OK) \
            and not _same_file(sys.executable, SYSTEM_PYTHON):
        env = dict(os.environ)
        env[_REEXEC_ENV] = sys.executable or "python3"
        env.pop("PYTHONHOME", None)
        pkg_parent = os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + old if old else "")
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(SYSTEM_PYTHON,
                      [SYSTEM_PYTHON, "-m", "cowstat"] + list(argv), env)
        except OSError:
            pass
    tried = [first or sys.executable]
    if first is not None or os.access(SYSTEM_PYTHON, os.X_OK):
        if SYSTEM_PYTHON not in tried:
            tried.append(SYSTEM_PYTHON)
    if len(tried) == 1:
        who = "%s cannot" % tried[0]
    else:
        who = "neither %s nor %s can" % tuple(tried)
    raise CowstatError(
        "plot needs matplotlib, which %s import; install Debian's "
        "package: apt-get install %s (it serves %s), or pip install "
        "matplotlib for your interpreter"
        % (who, DEBIAN_PACKAGE, SYSTEM_PYTHON))


def plot(csv_path, png_path, argv, title=None):
    """Draw CSV_PATH into PNG_PATH; return (processes, rows skipped)."""
    series, bad = read_csv(csv_path)
    out_dir = os.path.dirname(os.path.abspath(png_path))
    if not os.path.isdir(out_dir):
        raise CowstatError("cannot write %s: directory %s does not exist"
                           % (png_path, out_dir))
    plt = load_pyplot(argv)
    t0 = min(min(s["t"]) for s in series.values())
    fig, (ax_sh, ax_pr) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    order = sorted(series, key=lambda p: (series[p]["role"] != "master", p))
    cmap_name = "tab10" if len(order) <= 10 else "tab20"
    try:
        import matplotlib
        cmap = matplotlib.colormaps[cmap_name]
    except (AttributeError, KeyError):       # matplotlib < 3.5
        cmap = plt.get_cmap(cmap_name)
    max_legend = 20
    for n, pid in enumerate(order):
        s = series[pid]
        t = [x - t0 for x in s["t"]]
        master = s["role"] == "master"
        label = "%d %s (%s)" % (pid, s["command"], s["role"])
        style = dict(color=cmap(n % cmap.N), linewidth=2.2 if master else 1.2,
                     marker="o" if len(t) < 30 else None, markersize=3)
        ax_sh.plot(t, [v / 1024.0 for v in s["shared"]],
                   label=label if n < max_legend else None, **style)
        ax_pr.plot(t, [v / 1024.0 for v in s["uss"]], **style)
    ax_sh.set_ylabel("shared (MiB)\nShared_Clean + Shared_Dirty")
    ax_pr.set_ylabel("private (MiB)\nUSS = Private_Clean + Private_Dirty")
    ax_pr.set_xlabel("seconds since first sample")
    for ax in (ax_sh, ax_pr):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_sh.set_title("shared memory per process")
    ax_pr.set_title("private memory (USS) per process")
    legend_title = "PID command (role)"
    if len(order) > max_legend:
        legend_title += "; first %d of %d" % (max_legend, len(order))
    ax_sh.legend(title=legend_title, fontsize="small", loc="upper left",
                 bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title or "cowstat: %s" % os.path.basename(csv_path))
    fig.tight_layout()
    try:
        fig.savefig(png_path, dpi=100)
    except OSError as e:
        raise CowstatError("cannot write %s: %s"
                           % (png_path, e.strerror or e))
    finally:
        plt.close(fig)
    return len(series), bad

"""What the cowstat tests share: the tool on sys.path, a way to run it,
and facts about this machine."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = ROOT / "Tools" / "cowstat"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from cowstat import attribution  # noqa: E402

PAGE = attribution.PAGE_SIZE
HAVE_PROC = os.path.exists("/proc/self/pagemap")


def tool_env(**extra):
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(TOOLS) + (os.pathsep + old if old else "")
    env.update(extra)
    return env


def run_cowstat(*args, timeout=60, python=None):
    return subprocess.run(
        [python or sys.executable, "-m", "cowstat"] + [str(a) for a in args],
        env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=timeout)


def absent_pid():
    """A PID that no process has (beyond pid_max)."""
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read()) + 1000
    except (OSError, ValueError):
        return 99999999

"""Shared by the pre-fork benchmark's modules (run.py, soak.py): paths,
constants, the Mode record and log().

Importing it puts Tools/cowstat on sys.path, so that the other modules
can import cowstat's /proc reader (``from cowstat import proc``).
"""

import dataclasses
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COWSTAT = os.path.join(ROOT, "Tools", "cowstat")
# The signal that makes a worker write its attribution report.  gunicorn
# 20.1 takes HUP QUIT INT TERM TTIN TTOU USR1 USR2 WINCH in the master
# (USR2: re-exec) and resets ABRT HUP QUIT INT TERM USR1 USR2 WINCH CHLD to
# SIG_DFL in every worker before installing its own handlers (so a USR2
# handler inherited from the master is gone, and USR2 kills the worker).
# SIGPWR is in neither list: the handler app.py installs in the master at
# import is inherited by the workers and stays.
ATTRIBUTION_SIGNAL = getattr(signal, "SIGPWR", None) or signal.SIGRTMIN + 5
DIST = "/usr/lib/python3/dist-packages"
FREEZE_HOOKS = os.path.join(HERE, "freeze_hooks.py")
SPREAD = os.path.join(HERE, "spread.lua")
DEB_LIST = os.path.join(HERE, "debian-packages.txt")
MIB = 1024.0  # smaps values are in kB (KiB)

if COWSTAT not in sys.path:
    sys.path.insert(0, COWSTAT)


@dataclasses.dataclass
class Mode:
    name: str
    python: str            # "stock" or "cowpy": which interpreter argument
    env: dict              # added to the servers' environment
    gunicorn_args: list    # extra gunicorn arguments (before app:app)
    desc: str
    # "gunicorn", or "uwsgi": uWSGI built against the twin (make uwsgi),
    # serving the same app:app with ini lines UWSGI_INI (server.py).
    server: str = "gunicorn"
    uwsgi_ini: tuple = ()
    # The WSGI entry point uWSGI loads (gunicorn always serves app:app).
    module: str = "app:app"


def log(*a):
    print(*a, file=sys.stderr, flush=True)

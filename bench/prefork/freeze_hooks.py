"""gunicorn config file: the documented stock-CPython freeze recipe.

    python -m gunicorn -c bench/prefork/freeze_hooks.py --preload ... app:app

This is Instagram's recipe, the one the gc.freeze() documentation describes
("disable the collector early in the parent process, freeze just before
fork(), and enable it again in the child processes"), wired through
gunicorn 20.1's server hooks:

- gc.disable() when this file is imported.  gunicorn executes its config
  file before it builds the Arbiter, so this runs before --preload imports
  the application; on_starting(server) runs only after the preload (see
  Arbiter.setup/start in gunicorn/arbiter.py), too late to keep the master
  from collecting while it builds its heap, so it merely repeats it.
- pre_fork(server, worker): gc.freeze() in the master just before each
  os.fork(), moving everything allocated so far into the permanent
  generation, which the collector never examines.
- post_fork(server, worker): gc.enable() in the new worker.  The master
  keeps its collector disabled, as in the recipe.

Only stock gc APIs are used; under cowpy the same file works unchanged.
"""

import gc

gc.disable()


def on_starting(server):
    gc.disable()


def pre_fork(server, worker):
    gc.freeze()


def post_fork(server, worker):
    gc.enable()

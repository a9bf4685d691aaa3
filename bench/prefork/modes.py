"""The pre-fork benchmark's modes (run.py --modes, soak.py, reload.py and
tests/test_uwsgi.py): which interpreter, server, environment and options
each runs with."""

from common import FREEZE_HOOKS, Mode

REFORK_ENV = {"PREFORK_FORK_EVERY": "20"}
REFORK_ARGS = ["--max-requests", "1500", "--max-requests-jitter", "100"]
UWSGI_HOOKS = ("py-call-uwsgi-fork-hooks = true",)

# Add a mode here to run it (--modes NAME selects it).
MODES = [
    Mode("stock", "stock", {}, [],
         "stock, no application change"),
    Mode("stock+hooks", "stock", {}, ["-c", FREEZE_HOOKS],
         "stock + freeze_hooks.py (gc.disable at import, gc.freeze in "
         "pre_fork, gc.enable in post_fork)"),
    Mode("cowpy", "cowpy", {}, [],
         "cowpy defaults (freeze at fork), no application change"),
    Mode("cowpy-nofreeze", "cowpy", {"PYTHONCOWFORK": "off"}, [],
         "cowpy with PYTHONCOWFORK=off (its collector, no freeze at fork)"),
    # Not run by default:
    Mode("cowpy+hooks", "cowpy", {}, ["-c", FREEZE_HOOKS],
         "cowpy + the stock freeze hooks"),
    Mode("cowpy-stockgc", "cowpy", {"PYTHONCOWGC": "stock"}, [],
         "cowpy with PYTHONCOWGC=stock (should behave as stock)"),
    Mode("cowpy-immortal", "cowpy", {"PYTHONCOWFORK": "immortal"}, [],
         "cowpy with PYTHONCOWFORK=immortal (collect, freeze and make the "
         "inherited heap immortal at fork)"),
    Mode("cowpy-immortal-settle", "cowpy",
         {"PYTHONCOWFORK": "immortal", "PYTHONCOWCODE": "settle"}, [],
         "cowpy-immortal with PYTHONCOWCODE=settle: workers leave inherited "
         "code unwritten until it is hot in them"),
    Mode("cowpy-immortal-noaside", "cowpy",
         {"PYTHONCOWFORK": "immortal", "PYTHONCOWALLOC": "stock"}, [],
         "cowpy-immortal with PYTHONCOWALLOC=stock: workers refill the "
         "master's pymalloc holes, as before the allocator set-aside"),
    # A worker's whole life (#18): recycled after 1,500 (+-100) requests,
    # and forking a short-lived child every 20th request while it holds
    # request data.  Run with --watch for memory over time.
    Mode("stock+hooks-refork", "stock", dict(REFORK_ENV),
         ["-c", FREEZE_HOOKS] + REFORK_ARGS,
         "stock + freeze_hooks.py, workers recycled and forking per job"),
    Mode("cowpy-refork", "cowpy", dict(REFORK_ENV), list(REFORK_ARGS),
         "cowpy defaults, workers recycled and forking per job"),
    Mode("cowpy-immortal-refork", "cowpy",
         dict(REFORK_ENV, PYTHONCOWFORK="immortal"), list(REFORK_ARGS),
         "cowpy-immortal, workers recycled and forking per job"),
    Mode("cowpy-arena-nofreeze", "cowpy",
         {"PYTHONCOWGC": "arena", "PYTHONCOWFORK": "off"}, [],
         "cowpy, every collection via the side arena (a test mode), no "
         "freeze at fork"),
    # uWSGI 2.0.28 (make uwsgi), the same app and load (#14).  "hooks" is
    # py-call-uwsgi-fork-hooks: PyOS_BeforeFork()/AfterFork around each
    # fork; without it the master forks from C, unannounced.
    Mode("uwsgi-stock+recipe", "stock", {}, [],
         "uWSGI on stock, hooks, the freeze recipe (uwsgi_recipe.py)",
         "uwsgi", UWSGI_HOOKS, module="uwsgi_recipe:app"),
    Mode("uwsgi-stock+recipe-nohooks", "stock", {}, [],
         "uWSGI on stock, no hooks, the freeze recipe (uwsgi_recipe.py)",
         "uwsgi", module="uwsgi_recipe:app"),
    Mode("uwsgi-cowpy", "cowpy", {}, [],
         "uWSGI on cowpy, hooks, no option (freeze at fork)",
         "uwsgi", UWSGI_HOOKS),
    Mode("uwsgi-cowpy-nohooks", "cowpy", {}, [],
         "uWSGI on cowpy, no hooks, no option (frozen at the worker's "
         "first collection)", "uwsgi"),
    Mode("uwsgi-cowpy-immortal", "cowpy", {"PYTHONCOWFORK": "immortal"}, [],
         "uWSGI on cowpy, hooks, PYTHONCOWFORK=immortal", "uwsgi",
         UWSGI_HOOKS),
    # What the immortal mode does without the hooks: nothing runs in the
    # master before the fork, so each worker only freezes at its first
    # collection (as uwsgi-cowpy-nohooks).
    Mode("uwsgi-cowpy-immortal-nohooks", "cowpy",
         {"PYTHONCOWFORK": "immortal"}, [],
         "uWSGI on cowpy, no hooks, PYTHONCOWFORK=immortal", "uwsgi"),
]
DEFAULT_MODES = "stock,stock+hooks,cowpy,cowpy-nofreeze"
DEFAULT_BASELINE = "stock+hooks"

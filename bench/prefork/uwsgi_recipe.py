"""uWSGI entry point: the documented stock-CPython freeze recipe around
app.py, as freeze_hooks.py does for gunicorn.

    [uwsgi]
    module = uwsgi_recipe:app
    py-call-uwsgi-fork-hooks = true

uWSGI loads the application in the master before it forks its workers
(no lazy-apps), so "freeze just before fork()" is the end of this
import; uwsgi.post_fork_hook runs in each worker after the fork and
turns the collector on again there.  The master keeps it off, as in the
recipe.  Only stock gc APIs are used.
"""

import gc

gc.disable()

from app import app  # noqa: E402  (imported with the collector off)

gc.freeze()

try:
    import uwsgi
except ImportError:         # imported outside uWSGI (tests, tools)
    pass
else:
    uwsgi.post_fork_hook = gc.enable

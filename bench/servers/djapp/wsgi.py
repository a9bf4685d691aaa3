"""WSGI entry point; importing it builds the site's read-mostly state in
the process that imports it (gunicorn --preload: the master): the
database (created and filled once), then every product loaded as model
instances into a module-level cache, as sites cache catalogues and
settings.  Connections are closed before the workers fork, as Django
expects; each worker opens its own on first use."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import catalogue  # noqa: E402,F401  (SERVERS_RECIPE's gc.disable())
import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connections  # noqa: E402

from djapp.shop import models  # noqa: E402

RECORDS = int(os.environ.get("SERVERS_DJANGO_RECORDS", "30000"))

# A log file opened in the master, written by every worker (db views).
if os.environ.get("SERVERS_DJANGO_LOG"):
    import logging
    _handler = logging.FileHandler(os.environ["SERVERS_DJANGO_LOG"])
    _handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
    logging.getLogger("djapp").addHandler(_handler)
    logging.getLogger("djapp").setLevel(logging.INFO)

call_command("migrate", run_syncdb=True, verbosity=0)
models.fill(RECORDS)
models.load_cache()
connections.close_all()

application = get_wsgi_application()

# What Django does lazily at a worker's first request, done here once, as
# a preloading site would: import the URLconf (views, the admin) and
# compile the templates (DEBUG=False keeps them in the cached loader).
from django.template.loader import get_template  # noqa: E402
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns
get_template("shop/page.html")

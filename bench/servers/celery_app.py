"""Celery prefork: a task module whose import loads the catalogue; tasks
read it.  Broker filesystem://, results file:// (no server), both under
SERVERS_CELERY_DIR.  SERVERS_RECIPE=1: the stock freeze recipe
(gc.disable() at import, gc.collect(); gc.freeze() in worker_init, in the
master before the pool forks, gc.enable() in worker_process_init)."""

import gc
import os

from celery import Celery, signals

import catalogue

DIR = os.environ.get("SERVERS_CELERY_DIR", "/tmp/cowpy-celery")
for sub in ("queue", "processed", "results"):
    os.makedirs(os.path.join(DIR, sub), exist_ok=True)

app = Celery("celery_app")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": os.path.join(DIR, "queue"),
        "data_folder_out": os.path.join(DIR, "queue"),
        "processed_folder": os.path.join(DIR, "processed"),
        # kombu's default is "control" in the working directory: this
        # source tree.
        "control_folder": os.path.join(DIR, "control"),
        "polling_interval": 0.05,
    },
    result_backend="file://" + os.path.join(DIR, "results"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)
if os.environ.get("SERVERS_MAX_TASKS"):
    app.conf.worker_max_tasks_per_child = int(
        os.environ["SERVERS_MAX_TASKS"])

INIT_LOG = os.path.join(DIR, "process_init.log")


@signals.worker_init.connect
def _master_ready(**kw):
    if catalogue.RECIPE:
        gc.collect()
        gc.freeze()


@signals.worker_process_init.connect
def _child_ready(**kw):
    if catalogue.RECIPE:
        gc.enable()
    with open(INIT_LOG, "a") as f:
        f.write("%d\n" % os.getpid())


@app.task
def scan(k):
    """Read 2,000 records of the catalogue (catalogue.scan())."""
    imm = getattr(gc, "is_immortal", None)
    return {"sum": catalogue.scan(k), "pid": os.getpid(),
            "immortal": bool(imm and imm(catalogue.PRODUCTS[k % 1000]))}

"""The Celery app every worker and beat process runs: `celery -A portal worker|beat`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps
from celery.signals import (
    beat_init,
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("fabrikam")
app.config_from_object("portal.celeryconfig:CONFIG")
app.autodiscover_tasks(["workers"])


class Heartbeat(bootsteps.StartStopStep):
    """Touches a file from the worker's own event loop while it is connected to the broker.

    A hung worker (its loop blocked, or its broker connection lost) stops touching it, which
    the Kubernetes liveness probe `python -m workers.liveness` sees.
    """

    requires = ("celery.worker.components:Timer",)
    interval_seconds = float(os.environ.get("WORKER_HEARTBEAT_INTERVAL", "10"))

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        from django.conf import settings

        self.path = Path(settings.WORKER_HEARTBEAT_FILE)
        self.timer_ref: Any = None

    def start(self, worker: Any) -> None:
        self.beat(worker)
        self.timer_ref = worker.timer.call_repeatedly(self.interval_seconds, self.beat, (worker,))

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
        self.path.unlink(missing_ok=True)

    def beat(self, worker: Any) -> None:
        consumer = getattr(worker, "consumer", None)
        connection = getattr(consumer, "connection", None)
        if consumer is None or (connection is not None and connection.connected):
            self.path.touch()


app.steps["worker"].add(Heartbeat)


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(sender: Any = None, **_: Any) -> None:
    """What Django does around a request: drop connections past CONN_MAX_AGE or broken.

    Not for a task run eagerly in the caller's process, whose connection is the caller's."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Django's LOGGING (JSON lines with trace ids, secrets redacted) instead of Celery's own."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@worker_init.connect
def _worker_metrics(**_: Any) -> None:
    """In the worker's main process, before the pool forks: /metrics for the whole pod."""
    from django.conf import settings

    from portal import metrics

    metrics.multiprocess_reset()
    metrics.serve(settings.METRICS_PORT)


@worker_process_init.connect
def _worker_telemetry(**_: Any) -> None:
    from portal.runtime import startup_objects_freeze
    from portal.telemetry import configure_telemetry

    configure_telemetry(service_name="fabrikam-worker")
    startup_objects_freeze("worker")


@worker_process_shutdown.connect
def _worker_process_gone(pid: int | None = None, **_: Any) -> None:
    from portal import metrics

    metrics.child_exited(pid or os.getpid())


@beat_init.connect
def _beat_telemetry(**_: Any) -> None:
    from django.conf import settings

    from portal import metrics
    from portal.telemetry import configure_telemetry

    if configure_telemetry(service_name="fabrikam-beat"):
        # Beat runs once per cluster: the only process that exports the database's gauges.
        metrics.observe_database_gauges()
    metrics.serve(settings.METRICS_PORT)


@before_task_publish.connect
def _stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """When the message left, for the queue wait a worker measures."""
    if headers is not None:
        headers.setdefault("fabrikam_sent_at", time.time())


@task_prerun.connect
def _queue_wait(task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    sent_at = getattr(request, "fabrikam_sent_at", None)
    if request is None or sent_at is None or getattr(request, "is_eager", False):
        return
    from portal import metrics

    ready_at = float(sent_at)
    if request.eta:
        # A countdown's message waits on purpose until then; only the rest is queueing.
        from datetime import datetime

        ready_at = max(ready_at, datetime.fromisoformat(str(request.eta)).timestamp())
    metrics.TASK_QUEUE_WAIT_SECONDS.observe(max(0.0, time.time() - ready_at), task=task.name)

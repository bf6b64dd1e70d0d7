"""The Celery app every worker and beat process runs: `celery -A portal worker|beat`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps
from celery.signals import beat_init, task_postrun, task_prerun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("fabrikam")
app.config_from_object("portal.celeryconfig:CONFIG", namespace="CELERY")
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


@worker_process_init.connect
def _worker_telemetry(**_: Any) -> None:
    from portal.telemetry import configure_telemetry

    configure_telemetry(service_name="fabrikam-worker")


@beat_init.connect
def _beat_telemetry(**_: Any) -> None:
    from portal.telemetry import configure_telemetry

    configure_telemetry(service_name="fabrikam-beat")

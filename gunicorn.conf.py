"""gunicorn reads this file from the working directory by default (the Procfile's, the image's).

- gunicorn's own lines (starting, booting a worker, a worker timing out) are written like every
  other line (portal/logs.py: JSON by default, secrets redacted); the access log is the
  application's (portal.logs.AccessLogMiddleware: the route template, not the raw path).
- Each worker, its application loaded, freezes the objects of its start (portal/runtime.py).
- With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics there and /metrics sums
  them (portal/metrics.py): start from an empty directory, and forget workers that exit.
"""

from typing import Any

from gunicorn import glogging


class Logger(glogging.Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from portal.logs import console_handler_parts

        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                formatter, filters = console_handler_parts()
                handler.setFormatter(formatter)
                for line_filter in filters:
                    handler.addFilter(line_filter)


logger_class = Logger


def on_starting(server: Any) -> None:
    from portal.metrics import multiprocess_reset

    multiprocess_reset()


def post_worker_init(worker: Any) -> None:
    from django.urls import get_resolver

    from portal.runtime import startup_objects_freeze

    get_resolver().url_patterns  # noqa: B018 - imports the views and what they use, now
    startup_objects_freeze("web")


def child_exit(server: Any, worker: Any) -> None:
    from portal.metrics import child_exited

    child_exited(worker.pid)

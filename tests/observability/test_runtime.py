"""The web and worker processes, their application loaded, freeze the objects of their start
(portal/runtime.py), so that a full garbage collection does not stall a request or a task."""

from __future__ import annotations

import gc
import re
from pathlib import Path

from portal.runtime import startup_objects_freeze
from tests.observability.conftest import Stack
from tests.observability.test_logs import lines
from tests.support import wait_for


def frozen(path: Path, process: str) -> list[int]:
    """The counts of objects each process of that kind said it froze, from its log lines."""
    pattern = re.compile(rf"{process}: (\d+) objects of the start frozen")
    found = (pattern.match(line.get("message", "")) for line in lines(path))
    return [int(match.group(1)) for match in found if match]


def test_web_and_worker_processes_freeze_the_objects_of_their_start(stack: Stack) -> None:
    wait_for(lambda: bool(frozen(stack.web.log, "web")), timeout=10, what="the web worker's line")
    wait_for(lambda: bool(frozen(stack.worker_log, "worker")), timeout=10, what="the worker's line")
    # Django, DRF (the web's views are imported first), Celery: far more than a bare Python.
    (web,) = frozen(stack.web.log, "web")  # one gunicorn worker, one line
    (worker,) = frozen(stack.worker_log, "worker")  # concurrency 1
    assert web > 50_000 and worker > 50_000, (web, worker)


def test_what_was_frozen_is_out_of_the_collector_s_sight() -> None:
    """In this process (Django and the test session loaded): every object the collector
    tracks is frozen, so that its full collections have almost nothing left to look at."""
    tracked = len(gc.get_objects())
    try:
        count = startup_objects_freeze("test")
        assert count > 50_000 and count >= tracked / 2
        assert len(gc.get_objects()) < count / 10  # what a full collection still looks at
    finally:
        gc.unfreeze()

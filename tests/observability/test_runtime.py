"""The web and worker processes, their application loaded, freeze the objects of their start
(portal/runtime.py), so that a full garbage collection does not stall a request or a task."""

from __future__ import annotations

import gc
import re
import time
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


def test_a_full_collection_skips_what_was_frozen() -> None:
    """In this process (Django and the test session loaded): a full collection looks at every
    object before, and at only those made since once the rest is frozen."""

    def full_collection_ms() -> float:
        began = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - began) * 1000

    before = min(full_collection_ms() for _ in range(3))
    try:
        count = startup_objects_freeze("test")
        after = min(full_collection_ms() for _ in range(3))
        assert count > 50_000
        assert len(gc.get_objects()) < count / 10  # what a collection still looks at
        assert after < before / 5, (before, after)
    finally:
        gc.unfreeze()

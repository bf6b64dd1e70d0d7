"""Bulk background work that yields the CPU to requests and to the delivery workflow.

A webhook fan-out is bulk work: thousands of events, none of them awaited within milliseconds.
The requests and assignments sharing the CPUs are. Linux keeps a niceness per thread, and a
thread inherits its creator's, so `run_yielding` runs such work in a thread of its own (per
process) at WORKER_YIELDING_NICE: when both want a CPU, the scheduler gives a thread at nice 10
about a tenth of the share of one at 0; when nothing else wants it, the whole CPU. In a worker
pod, the fan-out then yields to the delivery workflow; on a machine shared with web (`make run`,
the bench), to requests as well. Raising one's own niceness needs no privilege; lowering it
again would, which is why the work gets a thread of its own rather than the task's for a while.

Measured on PostgreSQL 15 (Redis broker), bench/webhooks.py: POST p99 at 50/s, the median of
four 10-s windows with webhook fan-out against that of four without, four runs ordered ABBA:
+6.0 and +7.3 ms with WORKER_YIELDING_NICE=0 (above the +5.0 allowed), +2.6 and +3.4 ms at 10;
the fan-out's rate beside the POSTs was the same (144 and 148 events/s at 0, 149 and 150 at 10).

The thread has its own database connection, kept and checked as the task's own is (Django's
CONN_MAX_AGE and health checks, portal/celery.py), and the caller's context (the trace) is
carried over. Work called inside a transaction runs inline: another connection could not see
what that transaction has not committed.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

_thread: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, nice, the thread)


def _lower_priority(nice: int) -> None:
    """This thread (and the threads it starts) at niceness `nice`, if it is not lower already."""
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:  # a platform without per-thread niceness: the work still runs
        logger.warning("background work runs at the worker's own priority: %s", exc)


def _executor(nice: int) -> ThreadPoolExecutor:
    """This process's yielding thread (made after a worker's fork, never inherited)."""
    global _thread
    if _thread is None or _thread[:2] != (os.getpid(), nice):
        executor = ThreadPoolExecutor(1, "yielding", initializer=_lower_priority, initargs=(nice,))
        _thread = (os.getpid(), nice, executor)
    return _thread[2]


def run_yielding(work: Callable[[], T]) -> T:
    """`work()`, at WORKER_YIELDING_NICE, in this process's yielding thread; its result or
    its exception. Inline when the setting is 0, where Linux's per-thread niceness is not to
    be had, or inside a transaction."""
    nice = settings.WORKER_YIELDING_NICE
    if nice <= 0 or not hasattr(os, "setpriority") or connection.in_atomic_block:
        return work()
    context = contextvars.copy_context()

    def job() -> T:
        close_old_connections()  # as around every task: one past its age or broken goes
        try:
            return context.run(work)
        finally:
            close_old_connections()

    return _executor(nice).submit(job).result()

"""Helpers for tests that start real processes: workers, servers, the whole system."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def stop_process_group(process: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    """SIGTERM the process's group, then SIGKILL whatever is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # children that outlived their parent
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def celery_worker(
    env: dict[str, str], *, log: Path, concurrency: int = 2, name: str = "test"
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process with the given environment, stopped on exit."""
    command = [
        PYTHON, "-m", "celery", "-A", "portal", "worker",
        "--loglevel", "INFO", "--concurrency", str(concurrency),
        "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop_process_group(process)


@contextmanager
def broker_for_this_process(url: str) -> Iterator[None]:
    """Point this process's Celery app (which the live server publishes with) at `url`."""
    from portal.celery import app

    def reset() -> None:
        # kombu keys its producer pools by connection, so a new URL gets pools of its own.
        app._pool = None  # type: ignore[attr-defined]
        app.amqp._producer_pool = None  # type: ignore[attr-defined]

    previous = app.conf.broker_write_url
    # broker_write_url, because Celery prefers the CELERY_BROKER_URL variable to broker_url.
    app.conf.broker_write_url = url  # type: ignore[misc]
    reset()
    try:
        connection, wanted = app.connection_for_write(), urlsplit(url)
        assert (connection.hostname, connection.port) == (wanted.hostname, wanted.port)
        yield
    finally:
        app.conf.broker_write_url = previous  # type: ignore[misc]
        reset()

"""Helpers for tests that start real processes: workers, servers, the whole system."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devtools.localservices import free_port

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
    with running(command, env=env, log=log) as process:
        yield process


@contextmanager
def celery_beat(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery beat`, as `make run` starts one: the outbox relay (a message the web
    process could not publish within its budget), the sweeper, the webhooks' dispatch and the
    rest of portal.settings.CELERY_BEAT_SCHEDULE run on time."""
    command = [
        PYTHON, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO",
        "--schedule", str(tmp_path / "celerybeat-schedule"),
    ]  # fmt: skip
    with running(command, env=env, log=tmp_path / "beat.log") as process:
        yield process


@contextmanager
def running(
    command: list[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` run from the project's directory in a session of its own, its output appended
    to `log`; stopped with its children on exit."""
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


def procfile_command(kind: str, **variables: str) -> list[str]:
    """The Procfile's command line for `kind`, ${VAR:-default} filled in, venv tools first."""
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            filled = re.sub(
                r"\$\{(\w+)(?::-([^}]*))?\}",
                lambda m: variables.get(m.group(1), m.group(2) or ""),
                command,
            )
            argv = shlex.split(filled)
            tool = Path(sys.executable).with_name(argv[0])
            return [str(tool) if tool.exists() else argv[0], *argv[1:]]
    raise AssertionError(f"no {kind!r} line in the Procfile")


@dataclass
class LiveProcess:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def live_process_running(env: dict[str, str], log: Path) -> Iterator[LiveProcess]:
    """The Procfile's `live` process (uvicorn) on a free port, answering, stopped at the end."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            procfile_command("live", LIVE_PORT=str(port)), cwd=BASE_DIR, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = LiveProcess(port, process, log)
    try:
        wait_for(
            lambda: urllib.request.urlopen(server.url("/healthz/live"), timeout=2).status == 200,  # noqa: S310
            timeout=30,
            what=f"the live process answering (log: {log})",
        )
        yield server
    finally:
        stop_process_group(process)

"""Publishing task messages cheaply: a producer kept per process, a Redis client per channel.

Publishing was a quarter of the cost of accepting a delivery, most of it set-up repeated for
every message rather than the message itself:

- `app.send_task` routes the message, prepares result bookkeeping, acquires a producer from
  kombu's pool, binds it to a channel again and declares the task queue again. A web process
  publishes one message per accepted request, so `send_task` here builds the message with
  Celery's message API, keeps one producer per process (its threads share it under a lock),
  declares the queue with its first message only (Celery sends to the queue by name), and
  starts afresh after any error: the broker restarted, or the app's producer pool was replaced.
- kombu's Redis channel builds a new `redis.Redis` for every message it sends; the client's
  constructor (its table of response callbacks) costs more than the LPUSH. `RedisTransport`
  keeps one client per channel, on the channel's own connection pool; settings select it for
  `redis://` brokers.

A publish never holds its caller longer than BROKER_PUBLISH_TIMEOUT_MS (`send_task`): a broker that
accepts connections and never answers would otherwise hold every request for the transports'
socket timeouts (seconds), and a web pod has only a few processes. Past the budget the caller
gets `PublishTimeout` and leaves the message to the outbox (or the sweep); the publish goes on in
its thread until the socket timeouts end it, so the message may still leave: a duplicate,
which the tasks (idempotent) make harmless.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu.transport import redis


class RedisChannel(redis.Channel):
    _reused_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        reused = self._reused_client
        # A channel replaces its pool when it reconnects: the client must follow it.
        if reused is None or reused.connection_pool is not self.pool:
            reused = self._reused_client = self._create_client()  # type: ignore[attr-defined]
        yield reused


class RedisTransport(redis.Transport):
    """kombu's Redis transport with `RedisChannel`."""

    Channel = RedisChannel


@dataclass
class _Held:
    pid: int
    pool: Any
    producer: Any
    declared: bool = False


_lock = threading.Lock()
_send_lock = threading.Lock()
_held: _Held | None = None


class PublishTimeout(Exception):
    """The broker did not take the message within the budget (it may still, later)."""


@dataclass
class _Publisher:
    pid: int
    executor: ThreadPoolExecutor
    # When the publish now in the thread started (None: none is): one older than the budget
    # is hung, and the ones after it give up at once.
    running_since: float | None = None

    def run(self, name: str, kwargs: dict[str, Any]) -> None:
        self.running_since = time.monotonic()
        try:
            _send(name, kwargs)
        finally:
            self.running_since = None


_publisher: _Publisher | None = None


def send_task(name: str, kwargs: dict[str, Any], *, timeout: float | None = None) -> None:
    """Publish task `name` with `kwargs` to the default queue within `timeout` seconds (default
    BROKER_PUBLISH_TIMEOUT_MS), or raise what the broker raised, or PublishTimeout.

    One publishing thread per process: publishes of concurrent requests queue for it (each
    takes about a millisecond), but while one hangs past the budget the next ones give up at
    once instead of queueing behind it (the broker is not answering; the outbox is the place
    for them)."""
    global _publisher
    from django.conf import settings

    if timeout is None:
        timeout = settings.BROKER_PUBLISH_TIMEOUT_MS / 1000
    with _lock:
        publisher = _publisher
        if publisher is None or publisher.pid != os.getpid():
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
            publisher = _publisher = _Publisher(os.getpid(), executor)
        since = publisher.running_since
        if since is not None and time.monotonic() - since > timeout:
            raise PublishTimeout("the broker has not answered an earlier publish yet")
        # The caller's context (its trace) goes with the message.
        context = contextvars.copy_context()
        future = publisher.executor.submit(context.run, publisher.run, name, kwargs)
    try:
        future.result(timeout=timeout)
    except FutureTimeout:
        future.cancel()  # still queued behind a hung one: never sent, the outbox has it
        raise PublishTimeout(f"the broker did not answer within {timeout * 1000:.0f} ms") from None


def _send(name: str, kwargs: dict[str, Any]) -> None:
    """Publish task `name` with `kwargs` to the default queue now, or raise what the broker
    raised (no retries).

    Through Celery's own message API (`create_task_message`, `send_task_message`), which
    `app.send_task` wraps with what these messages never need: routing (there are no
    `task_routes`; they go to the default queue), result bookkeeping (results are ignored),
    parent and root ids of a calling task. That wrapping was a third of the publish.
    """
    from celery.utils import uuid

    from portal.celery import app

    global _held
    amqp = app.amqp
    message = amqp.create_task_message(
        uuid(),
        name,
        (),
        kwargs,
        ignore_result=app.conf.task_ignore_result,
        # Or Celery computes them with its size-bounded repr; these carry a couple of ids.
        argsrepr="()",
        kwargsrepr=repr(kwargs),
    )
    with _send_lock:
        pool = app.producer_pool
        held = _held
        if held is None or held.pid != os.getpid() or held.pool is not pool:
            held = _held = _Held(os.getpid(), pool, pool.acquire(block=True))
        try:
            amqp.send_task_message(
                held.producer, name, message, retry=False, declare=[] if held.declared else None
            )
        except Exception as exc:
            _held = None
            held.producer.release()
            _publish_failed(name, message, exc)
            raise
        held.declared = True


def _publish_failed(name: str, message: Any, exc: Exception) -> None:
    """Close what `before_task_publish` opened for a message that never left: Celery sends
    `after_task_publish` only after a send that worked, and without it the tracing's producer
    span would stay open (never exported) and current for the rest of the request."""
    from celery import signals

    from portal import telemetry

    if not telemetry.enabled():
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording() and getattr(span, "name", "").startswith("apply_async/"):
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
    signals.after_task_publish.send(
        sender=name, body=message.body, headers=message.headers, exchange="", routing_key=""
    )

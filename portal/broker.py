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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
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
_held: _Held | None = None


def send_task(name: str, kwargs: dict[str, Any]) -> None:
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
    with _lock:
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

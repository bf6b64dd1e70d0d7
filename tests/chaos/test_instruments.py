"""The chaos test's own instruments: the proxy that makes an outage, the double-booking check
(it must be able to see what the chaos test asserts is absent), and the count of the tasks a
killed worker held."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.chaos.proxy import FaultProxy
from tests.chaos.test_chaos import booked_twice, under_way


def redis_behind(proxy: FaultProxy) -> redis.Redis:
    # No retries: each call says at once what it found.
    return redis.Redis(
        port=proxy.port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )


def test_a_cut_closes_open_connections_and_refuses_new_ones_until_restored() -> None:
    target = redis.Redis.from_url(os.environ["REDIS_URL"])
    host, port = (
        target.connection_pool.connection_kwargs["host"],
        target.connection_pool.connection_kwargs["port"],
    )
    proxy = FaultProxy("redis", host, port).start()
    try:
        client = redis_behind(proxy)
        assert client.ping()
        proxy.cut()
        assert not proxy.up
        with pytest.raises(redis.ConnectionError):
            client.ping()  # the open connection is gone, and a new one refused
        with pytest.raises(redis.ConnectionError, match="refused"):
            redis_behind(proxy).ping()
        proxy.restore()
        assert client.ping()
        assert proxy.connections >= 2
    finally:
        proxy.stop()


def event(n: int, delivery: str, status: str, note: str = "") -> dict[str, Any]:
    return {"id": n, "delivery_id": delivery, "status": status, "note": note}


def test_a_drone_held_by_two_deliveries_at_once_is_seen() -> None:
    events = [
        event(1, "a", "assigned", "drone FD-1"),
        event(2, "b", "assigned", "drone FD-1"),
        event(3, "a", "delivered"),
    ]
    assert booked_twice(events) == ["FD-1: a and b"]


def test_a_drone_booked_again_after_its_delivery_is_not_double_booked() -> None:
    events = [
        event(1, "a", "assigned", "drone FD-1"),
        event(2, "a", "en_route_to_pickup"),
        event(3, "a", "delivered"),
        event(4, "b", "assigned", "drone FD-1"),
        event(5, "c", "assigned", "drone FD-2"),
        event(6, "c", "requested", "drone FD-2 grounded; finding another drone"),
        event(7, "d", "assigned", "drone FD-2"),
    ]
    assert booked_twice(events) == []


def test_the_tasks_a_worker_held_are_read_from_its_log() -> None:
    log = "\n".join(
        [
            "INFO celery.worker.strategy Task workers.delivery_process[aa-1] received",
            "INFO celery.worker.strategy Task workers.notification_send[bb-2] received",
            "INFO celery.worker.strategy Task workers.webhooks_send[cc-3] received",
            "INFO celery.app.trace Task workers.delivery_process[aa-1] succeeded in 0.1s: 'done'",
            "ERROR celery.app.trace Task workers.webhooks_send[cc-3] raised unexpected: Error",
        ]
    )
    assert under_way(log) == ["bb-2"]

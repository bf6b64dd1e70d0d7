"""Publishing: the kept producer and the Redis transport's kept client, against a real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from devtools.localservices import redis_server
from portal import broker
from tests.support import broker_for_this_process

TASK = "workers.ping"


def queued(url: str) -> int:
    return int(redis.Redis.from_url(url).llen("celery"))


def test_the_redis_transport_keeps_one_client_per_channel_and_delivers_every_message(
    tmp_path: Path,
) -> None:
    server = redis_server(tmp_path / "redis").start()
    try:
        with Connection(server.url, transport=broker.RedisTransport) as connection:
            channel: Any = connection.default_channel
            clients = []  # the objects, not their ids, which Python reuses once one is freed
            for number in range(5):
                with channel.conn_or_acquire() as client:
                    clients.append(client)
                channel._put("celery", {"body": str(number)})
            assert all(client is clients[0] for client in clients)
            assert queued(server.url) == 5
            # A channel that reconnects gets a new pool; the client follows it.
            channel._pool = None
            with channel.conn_or_acquire() as client:
                assert client.connection_pool is channel.pool
                assert client is not clients[0]
    finally:
        server.stop()


def test_settings_select_the_transport_for_a_redis_broker() -> None:
    from django.conf import settings

    from portal.celery import app

    assert settings.CELERY_BROKER_URL.startswith("redis://")
    assert isinstance(app.connection_for_write().transport, broker.RedisTransport)


def test_a_publish_after_the_broker_came_back_starts_afresh(tmp_path: Path) -> None:
    server = redis_server(tmp_path / "broker", durable=True).start()
    try:
        with broker_for_this_process(server.url):
            broker.send_task(TASK, {})
            broker.send_task(TASK, {})  # the kept producer, the queue declared already
            assert queued(server.url) == 2

            server.stop()
            with pytest.raises(Exception):  # noqa: B017 - whatever the broker's client raises
                broker.send_task(TASK, {})
            assert broker._held is None  # dropped: the next publish starts afresh

            server.start()
            broker.send_task(TASK, {})
            assert queued(server.url) == 3
    finally:
        server.stop()

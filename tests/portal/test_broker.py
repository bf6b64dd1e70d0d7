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


def test_celery_has_every_celery_setting_under_its_own_name_and_warns_of_none() -> None:
    """Under namespace="CELERY" Celery took three of these for its pre-4.0 names and warned at
    every start that they were deprecated."""
    import warnings

    from django.conf import settings

    from portal.celery import app
    from portal.celeryconfig import celery_name

    names = [name for name in dir(settings) if name.startswith("CELERY_")]
    assert "CELERY_ACCEPT_CONTENT" in names and "CELERY_DB_REUSE_MAX" in names
    for name in names:
        assert app.conf.get(celery_name(name)) == getattr(settings, name), name
    assert app.conf.task_acks_late is True and app.conf.accept_content == ["json"]
    # What Celery's Django fixup reads, under the Django name.
    assert app.conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.conf.maybe_warn_deprecated_settings()
    assert not caught and not app.conf.deprecated_settings

"""A broker that accepts connections and never answers costs a request at most
BROKER_PUBLISH_TIMEOUT_MS; the delivery is relayed once the broker answers again."""

from __future__ import annotations

import time

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from deliveries import services
from deliveries.models import OutboxMessage
from portal import broker
from tests.conftest import Tenant, delivery_body, make_fleet
from tests.outages.hung import hung_server
from tests.support import broker_for_this_process, wait_for

# What a request may cost beyond the budget on this busy machine: the rest of the request.
SLACK_SECONDS = 0.6


def queued() -> int:
    return int(redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("celery"))


def post_timed(tenant: Tenant) -> tuple[float, int, str]:
    started = time.monotonic()
    response = tenant.client.post_json("/api/v1/deliveries", delivery_body())
    return time.monotonic() - started, response.status_code, response.json().get("id", "")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_hung_broker_costs_a_request_at_most_the_budget_and_the_relay_delivers_later(
    tenant: Tenant, scheme: str
) -> None:
    make_fleet(2)
    budget = settings.BROKER_PUBLISH_TIMEOUT_MS / 1000
    post_timed(tenant)  # warm: the first request of a process pays for imports and caches
    timings = []
    ids = []
    with hung_server() as port:
        url = f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://127.0.0.1:{port}//"
        with broker_for_this_process(url):
            for _ in range(3):
                elapsed, status, delivery_id = post_timed(tenant)
                assert status == 202
                timings.append(elapsed)
                ids.append(delivery_id)
    print(f"\n{scheme} broker hung: requests took {', '.join(f'{t:.3f}' for t in timings)} s")
    assert max(timings) <= budget + SLACK_SECONDS, timings
    waiting = OutboxMessage.objects.filter(published_at__isnull=True)
    assert {m.payload["delivery_id"] for m in waiting} == set(ids)

    # The broker is back (the configured one): the relay publishes every one of them, once the
    # publish the hung broker still held has ended on the transport's own socket timeout.
    before = queued()
    relayed = [0]

    def relay() -> bool:
        relayed[0] += services.outbox_relay(older_than_seconds=0)
        return relayed[0] == 3

    wait_for(
        relay,
        timeout=settings.BROKER_SOCKET_TIMEOUT_SECONDS + 10,
        what="the relay to publish the three messages",
    )
    assert queued() == before + 3
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_a_publish_past_the_budget_raises_and_the_next_one_does_not_wait_behind_it() -> None:
    with hung_server() as port, broker_for_this_process(f"redis://127.0.0.1:{port}/0"):
        started = time.monotonic()
        with pytest.raises(broker.PublishTimeout):
            broker.send_task("workers.ping", {}, timeout=0.2)
        # Within the budget and the slack a loaded machine needs, far below the socket timeout.
        assert 0.15 < time.monotonic() - started < 0.2 + SLACK_SECONDS
        started = time.monotonic()
        with pytest.raises(broker.PublishTimeout):
            broker.send_task("workers.ping", {}, timeout=0.2)
        assert time.monotonic() - started < 0.05  # the earlier one still hangs: give up at once
    with override_settings(BROKER_PUBLISH_TIMEOUT_MS=250):

        def publish() -> bool:
            broker.send_task("workers.ping", {})
            return True

        wait_for(
            publish,
            timeout=settings.BROKER_SOCKET_TIMEOUT_SECONDS + 10,
            what="publishing again once the hung publish ended",
        )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://cache.example.com:6379/0",
            {"socket_timeout": 5.0, "socket_connect_timeout": 3.0},
        ),
        (
            "amqp://guest:guest@rabbit.example.com:5672//",
            {"read_timeout": 5.0, "write_timeout": 5.0},
        ),
        (
            "azureservicebus://DefaultAzureCredential@bus.servicebus.windows.net",
            {"use_lock_renewal": True, "peek_lock_seconds": 60, "retry_total": 2},
        ),
    ],
)
def test_every_broker_transport_gets_its_timeouts(url: str, expected: dict[str, object]) -> None:
    from tests.portal.test_settings import PRODUCTION, manage

    code = (
        "from django.conf import settings as s; import json; "
        "print(json.dumps([s.CELERY_BROKER_TRANSPORT_OPTIONS, s.CELERY_BROKER_CONNECTION_TIMEOUT,"
        " s.BROKER_MAX_COUNTDOWN_SECONDS]))"
    )
    result = manage("shell", "-c", code, env={**PRODUCTION, "CELERY_BROKER_URL": url})
    assert result.returncode == 0, result.stderr
    import json

    options, connect_timeout, max_countdown = json.loads(result.stdout.strip().splitlines()[-1])
    assert expected.items() <= options.items()
    assert connect_timeout == 3.0
    assert max_countdown < 60  # under the Service Bus lock

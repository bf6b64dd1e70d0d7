"""The one lifecycle: driven by its own transition table, and a live status that never goes back
in time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django_redis import get_redis_connection

from deliveries import live
from deliveries.lifecycle import (
    TRANSITIONS,
    WITH_DRONE,
    InvalidStageTransition,
    StaleDelivery,
    delivery_move,
)
from deliveries.models import Delivery, DeliveryEvent
from drones.models import Drone
from tests.conftest import Tenant, make_fleet

Status = Delivery.Status
EVERY_MOVE = [(a, b) for a in Status.values for b in Status.values]


def a_delivery(tenant: Tenant, status: str) -> Delivery:
    """A delivery in `status`, holding a booked drone when that status holds one."""
    drone = make_fleet(1)[0]
    delivery = Delivery.objects.create(
        business=tenant.business,
        status=status,
        pickup_lat=47.6097,
        pickup_lon=-122.3422,
        dropoff_lat=47.6205,
        dropoff_lon=-122.3493,
        package_size="small",
        package_weight_kg=2.0,
        drone=drone if status in WITH_DRONE else None,
    )
    if status in WITH_DRONE:
        Drone.objects.filter(pk=drone.pk).update(assigned_delivery_id=delivery.pk)
    return delivery


@pytest.mark.parametrize(("start", "to"), EVERY_MOVE, ids=[f"{a}->{b}" for a, b in EVERY_MOVE])
def test_every_move_the_table_allows_works_and_every_other_is_refused(
    tenant: Tenant, start: str, to: str
) -> None:
    delivery = a_delivery(tenant, start)
    drone_id = delivery.drone_id
    if to not in TRANSITIONS[start]:
        with pytest.raises(InvalidStageTransition):
            delivery_move(delivery, to)
        assert Delivery.objects.get(pk=delivery.pk).status == start
        assert not DeliveryEvent.objects.filter(delivery=delivery).exists()
        return

    delivery_move(delivery, to, position=(47.61, -122.34, 60.0), note="a test")

    stored = Delivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.version) == (to, 1)
    event = DeliveryEvent.objects.get(delivery=delivery)
    assert (event.status, event.lat, event.lon, event.alt_m) == (to, 47.61, -122.34, 60.0)
    if drone_id is not None:
        booked = Drone.objects.get(pk=drone_id).assigned_delivery_id
        # The drone is kept while the delivery needs it, released when it no longer does.
        assert (booked == delivery.pk) == (to in WITH_DRONE)


def test_a_move_from_a_stale_read_is_refused(tenant: Tenant) -> None:
    delivery = a_delivery(tenant, Status.ASSIGNED)
    stale = Delivery.objects.get(pk=delivery.pk)
    delivery_move(delivery, Status.CANCELLED)

    with pytest.raises(StaleDelivery):
        delivery_move(stale, Status.EN_ROUTE_TO_PICKUP)
    assert Delivery.objects.get(pk=delivery.pk).status == Status.CANCELLED


def test_a_late_assigned_never_overwrites_a_cancel_in_the_live_status(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    delivery = a_delivery(tenant, Status.REQUESTED)
    late_worker_view = Delivery.objects.get(pk=delivery.pk)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_move(delivery, Status.CANCELLED)
    assert live.status_read(delivery.pk)["status"] == "cancelled"  # type: ignore[index]

    # A worker that read the delivery before the cancel writes its (older) status late.
    with django_capture_on_commit_callbacks(execute=True):
        live.status_write(late_worker_view)
    assert live.status_read(delivery.pk)["status"] == "cancelled"  # type: ignore[index]


def test_a_newer_live_status_is_published_and_an_older_one_is_not(tenant: Tenant) -> None:
    delivery = a_delivery(tenant, Status.EN_ROUTE_TO_PICKUP)
    delivery.version = 3
    pubsub = get_redis_connection("default").pubsub()
    pubsub.subscribe(live.channel(delivery.pk))
    pubsub.get_message(timeout=1)  # the subscription itself
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    newer = {"status": "en_route_to_pickup", "drone_location": {"lat": 1.0}}
    older = {"status": "en_route_to_pickup", "drone_location": {"lat": 0.5}}
    live.statuses_write([(delivery.pk, 3, now, newer)])
    live.statuses_write([(delivery.pk, 3, now - timedelta(seconds=1), older)])
    live.statuses_write([(delivery.pk, 2, now + timedelta(hours=1), older)])

    assert live.status_read(delivery.pk) == newer
    message = pubsub.get_message(timeout=1)
    assert message is not None and json.loads(message["data"]) == newer
    assert pubsub.get_message(timeout=0.3) is None
    pubsub.close()


def test_the_public_status_shows_only_our_failure_reasons_and_in_customer_words(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    internal = a_delivery(tenant, Status.ASSIGNED)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_move(
            internal,
            Status.FAILED,
            changes={"failure_reason": "OperationalError: connection to 10.0.0.4 refused"},
        )
    ours = a_delivery(tenant, Status.REQUESTED)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_move(
            ours, Status.FAILED, changes={"failure_reason": "no drone became free in time"}
        )

    assert live.status_read(internal.pk)["failure_reason"] is None  # type: ignore[index]
    page = Client().get(f"/track/{internal.tracking_token}").content.decode()
    assert "10.0.0.4" not in page and "OperationalError" not in page
    assert live.status_read(ours.pk)["failure_reason"] == "no drone was free in time"  # type: ignore[index]
    assert (
        "no drone was free in time"
        in Client().get(f"/track/{ours.tracking_token}").content.decode()
    )


@pytest.mark.parametrize("path", ["/track/a%00b", "/live/track/a%00b", "/live/track/a%00b.json"])
def test_a_tracking_token_with_a_nul_byte_is_a_404(db: None, path: str) -> None:
    assert Client().get(path).status_code == 404


def unreachable_redis() -> Any:
    """A Redis client for a port nothing listens on: every call is refused, as in an outage."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from devtools.localservices import free_port

    return redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


@pytest.mark.parametrize("path", ["one write", "a batch of writes"])
def test_a_status_written_while_redis_was_down_is_not_read_stale_once_it_is_back(
    tenant: Tenant,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    # The copy from before the outage must not outlive it: the process that could not write
    # the new status deletes the old copy at its next use of Redis, and the reader falls back
    # to the database.
    delivery = a_delivery(tenant, Status.AT_DROPOFF)
    live.statuses_write([(delivery.pk, 0, delivery.updated_at, live.status_of(delivery))])
    assert live.status_read(delivery.pk)["status"] == "at_dropoff"  # type: ignore[index]

    working = live.get_redis_connection
    monkeypatch.setattr(live, "get_redis_connection", lambda alias: unreachable_redis())
    with django_capture_on_commit_callbacks(execute=True):
        if path == "one write":
            delivery_move(delivery, Status.DELIVERED)
        else:  # as telemetry writes the statuses of a report's deliveries together
            Delivery.objects.filter(pk=delivery.pk).update(status=Status.DELIVERED, version=1)
            stored = Delivery.objects.get(pk=delivery.pk)
            live.statuses_write([(stored.pk, 1, stored.updated_at, live.status_of(stored))])
    assert live.status_read(delivery.pk) is None  # unreadable: the database answers
    monkeypatch.setattr(live, "get_redis_connection", working)

    assert live.status_read(delivery.pk) is None  # the stale copy is gone
    with django_capture_on_commit_callbacks(execute=True):  # the refill, after the request
        answer = tenant.client.get(f"/api/v1/deliveries/{delivery.pk}/status")
    assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    assert live.status_read(delivery.pk)["status"] == "delivered"  # type: ignore[index]

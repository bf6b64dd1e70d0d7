"""Rounds of assignment: one workflow message assigns its delivery and the new ones queued behind
it (deliveries.services.deliveries_assign_round), in one transaction, and never a drone or a
delivery twice, however many workers run rounds at once. On the test database (PostgreSQL in
CI, with row locks; SQLite with its one writer) and the MongoDB-protocol server."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from deliveries import services
from deliveries.models import Delivery, DeliveryEvent
from drones.models import Drone
from notifications.models import Notification
from packages.selectors import package_get
from portal.celery import app
from tests.conftest import Tenant, make_fleet
from tests.deliveries.test_services import request
from workers.tasks import delivery_process

pytestmark = pytest.mark.django_db(transaction=True)


def create(tenant: Tenant, count: int, **overrides: Any) -> list[Delivery]:
    made = [
        services.delivery_create(
            business_id=tenant.business.id,
            request=request(recipient={"name": "Ada", "email": "ada@example.com"}, **overrides),
        )
        for _ in range(count)
    ]
    app.control.purge()  # the tests run the messages' bodies themselves
    return made


def assigned_once_each() -> None:
    """Every delivery that holds a drone is the one its drone holds; no delivery was assigned
    twice; no drone holds two."""
    holders = dict(
        Drone.objects.filter(assigned_delivery_id__isnull=False).values_list(
            "assigned_delivery_id", "pk"
        )
    )
    held = dict(Delivery.objects.filter(status="assigned").values_list("pk", "drone_id"))
    assert held == holders
    assert len(set(held.values())) == len(held)
    twice = Counter(
        DeliveryEvent.objects.filter(status="assigned").values_list("delivery_id", flat=True)
    )
    assert not [d for d, n in twice.items() if n > 1]


def test_one_message_assigns_its_delivery_and_the_new_ones_behind_it(tenant: Tenant) -> None:
    make_fleet(10)
    first, *others = create(tenant, 6)

    assert delivery_process(str(first.id)) == "done"

    for delivery in [first, *others]:
        delivery.refresh_from_db()
        assert delivery.status == "assigned", delivery
        assert delivery.pickup_eta is not None and delivery.dropoff_eta is not None
        route = delivery.route or {}
        assert len(route["to_pickup"]) >= 2 and len(route["to_dropoff"]) >= 2
        # The package document, the event with the drone's place, the email to send.
        assert package_get(package_id=delivery.package_id) is not None
        event = DeliveryEvent.objects.get(delivery=delivery, status="assigned")
        assert event.note.startswith("drone T-") and event.lat is not None
        assert Notification.objects.filter(delivery=delivery, kind="assigned").count() == 1
    assigned_once_each()
    # Their own messages come later and find nothing to do.
    assert {delivery_process(str(d.id)) for d in others} == {"done"}
    assert DeliveryEvent.objects.filter(status="assigned").count() == 6


def test_a_round_takes_at_most_its_size_and_leaves_the_rest_to_their_messages(
    tenant: Tenant,
) -> None:
    make_fleet(10)
    first, *others = create(tenant, 6)

    with override_settings(DELIVERY_ASSIGN_ROUND=3):
        delivery_process(str(first.id))

    statuses = Counter(Delivery.objects.values_list("status", flat=True))
    assert statuses == {"assigned": 3, "requested": 3}
    # The oldest first.
    assert set(Delivery.objects.filter(status="assigned").values_list("pk", flat=True)) == {
        first.id,
        others[0].id,
        others[1].id,
    }
    with override_settings(DELIVERY_ASSIGN_ROUND=1):
        delivery_process(str(others[2].id))
    assert Delivery.objects.filter(status="assigned").count() == 4


def test_what_a_round_cannot_do_plainly_is_left_to_the_delivery_s_own_message(
    tenant: Tenant,
) -> None:
    make_fleet(10)
    first = create(tenant, 1)[0]
    # A deadline no drone can meet, and a pickup for later: not for a round.
    (late,) = create(tenant, 1, deadline=timezone.now() + timedelta(seconds=30))
    (later,) = create(tenant, 1, pickup_time=timezone.now() + timedelta(minutes=5))
    (plain,) = create(tenant, 1)

    delivery_process(str(first.id))

    assert Delivery.objects.get(pk=first.id).status == "assigned"
    assert Delivery.objects.get(pk=plain.id).status == "assigned"
    assert Delivery.objects.get(pk=late.id).status == "requested"
    assert Delivery.objects.get(pk=later.id).status == "requested"
    # Its own message then takes it one by one, as it always did: no drone can make the
    # deadline, so it waits for one with a next attempt (and fails at the deadline).
    assert delivery_process(str(late.id)) == "waiting"
    late.refresh_from_db()
    assert late.status == "requested" and late.attempts == 1 and late.drone_id is None


def test_with_no_drone_free_the_round_assigns_what_it_can_and_the_rest_wait(
    tenant: Tenant,
) -> None:
    make_fleet(2)
    made = create(tenant, 5)

    delivery_process(str(made[0].id))

    assert Delivery.objects.filter(status="assigned").count() == 2
    assigned_once_each()
    # The others' own messages find no drone and wait, with a next attempt.
    outcomes = {delivery_process(str(d.id)) for d in made[1:]}
    assert "waiting" in outcomes
    waiting = Delivery.objects.filter(status="requested")
    assert waiting.count() == 3
    assert all(d.next_attempt_at is not None and d.attempts >= 1 for d in waiting)


def test_workers_running_rounds_at_once_never_book_a_drone_or_a_delivery_twice(
    tenant: Tenant,
) -> None:
    """Eight threads, each its own database connection, run the messages of 60 deliveries for
    25 drones: each message twice (a redelivery), in different orders."""
    make_fleet(25)
    made = create(tenant, 60)
    ids = [str(d.id) for d in made]
    # Four threads take a quarter each, oldest first; four more the same quarters newest first.
    orders = [ids[i::4] for i in range(4)] + [ids[i::4][::-1] for i in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(orders))

    def run(order: list[str]) -> None:
        try:
            barrier.wait()
            for delivery_id in order:
                delivery_process(delivery_id)
        except BaseException as exc:  # noqa: BLE001 - the test reports every failure
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker hangs"
    assert not errors, errors

    assert Delivery.objects.filter(status="assigned").count() == 25
    assigned_once_each()
    assert Delivery.objects.filter(status="requested").count() == 35


def test_the_drones_of_a_round_are_booked_for_their_own_deliveries() -> None:
    """drones_claim: several at once, each for its delivery, and only those still free."""
    from drones.services import drones_claim

    drones = make_fleet(3)
    wanted: dict[UUID, UUID] = {d.pk: UUID(int=i + 1) for i, d in enumerate(drones)}
    Drone.objects.filter(pk=drones[1].pk).update(state=Drone.State.CHARGING)

    with transaction.atomic():  # as every caller books: with its own writes
        assert drones_claim(wanted) == {drones[0].pk, drones[2].pk}
    assert dict(
        Drone.objects.filter(assigned_delivery_id__isnull=False).values_list(
            "pk", "assigned_delivery_id"
        )
    ) == {drones[0].pk: UUID(int=1), drones[2].pk: UUID(int=3)}
    # Booked already: not again, for anyone.
    with transaction.atomic():
        assert drones_claim({drones[0].pk: UUID(int=9)}) == set()

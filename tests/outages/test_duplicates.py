"""A workflow message delivered twice at once (a lock lost, a redelivery) has its effects once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from deliveries import services
from deliveries.models import DeliveryEvent
from drones.models import Drone
from notifications.models import Notification
from packages.store import packages_collection
from tests.conftest import Tenant, make_fleet
from tests.deliveries.test_services import request
from workers.tasks import delivery_process


@pytest.mark.django_db(transaction=True)
def test_a_message_delivered_twice_at_once_has_its_effects_once(tenant: Tenant) -> None:
    make_fleet(3)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    start = threading.Barrier(2)
    results: list[str] = []

    def run() -> None:
        start.wait()
        try:
            results.append(
                delivery_process.apply(
                    kwargs={"delivery_id": str(delivery.id)}, task_id="one-message"
                ).get()
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["done", "done"]
    assert DeliveryEvent.objects.filter(delivery=delivery, status="assigned").count() == 1
    assert Drone.objects.filter(assigned_delivery_id=delivery.id).count() == 1
    assert packages_collection().count_documents({"delivery_id": str(delivery.id)}) == 1
    kinds = list(
        Notification.objects.filter(delivery_id=delivery.id).values_list("kind", flat=True)
    )
    assert len(kinds) == len(set(kinds))  # each email recorded once (and claimed before sent)

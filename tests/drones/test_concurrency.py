"""Reservations racing in real threads, each with its own database connection."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from drones.models import Drone
from drones.selectors import FlightPlan
from drones.services import NoDroneFree, drone_reserve
from tests.drones.fleet import HERE, START, base, drone, drone_model, offset

pytestmark = pytest.mark.django_db(transaction=True)

DROPOFF = offset(HERE, north_km=2.0)


def race(calls: list[Callable[[], FlightPlan]]) -> list[FlightPlan | Exception]:
    """Run the calls at once, one thread each; their results (or errors) in order."""
    results: list[FlightPlan | Exception] = [RuntimeError("did not run")] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test looks at every outcome
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a reservation hangs"
    return results


def reservation(delivery_id: uuid.UUID) -> Callable[[], FlightPlan]:
    def reserve() -> FlightPlan:
        # As the delivery workflow does: the booking commits with the caller's own writes.
        with transaction.atomic():
            return drone_reserve(
                delivery_id=delivery_id, pickup=HERE, dropoff=DROPOFF, weight_kg=1.0, start=START
            )

    return reserve


def ten_drones() -> None:
    model = drone_model()
    for i in range(10):
        drone(model, base(offset(HERE, east_km=0.5 * i)))


def test_fifty_deliveries_racing_for_ten_drones_book_each_drone_once() -> None:
    ten_drones()
    deliveries = [uuid.uuid4() for _ in range(50)]

    results = race([reservation(d) for d in deliveries])

    plans = [r for r in results if isinstance(r, FlightPlan)]
    errors = [r for r in results if not isinstance(r, FlightPlan)]
    assert len(plans) == 10
    assert all(isinstance(e, NoDroneFree) for e in errors), errors
    assert len({p.drone_id for p in plans}) == 10
    booked = dict(
        Drone.objects.filter(assigned_delivery_id__isnull=False).values_list(
            "pk", "assigned_delivery_id"
        )
    )
    winners = {
        r.drone_id: d for d, r in zip(deliveries, results, strict=True) if isinstance(r, FlightPlan)
    }
    assert booked == winners


def test_one_delivery_redelivered_to_ten_workers_at_once_books_one_drone() -> None:
    ten_drones()
    delivery_id = uuid.uuid4()

    results = race([reservation(delivery_id) for _ in range(10)])

    assert all(isinstance(r, FlightPlan) for r in results), results
    assert Counter(r.drone_id for r in results if isinstance(r, FlightPlan)).most_common() == [
        (Drone.objects.get(assigned_delivery_id=delivery_id).pk, 10)
    ]
    assert Drone.objects.filter(assigned_delivery_id__isnull=False).count() == 1

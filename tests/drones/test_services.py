from __future__ import annotations

import re
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from drones import services
from drones.geo import Point, distance_km
from drones.models import Base, Drone
from drones.selectors import FlightPlan
from drones.services import (
    DeliveryImpossible,
    NoDroneFree,
    drone_release,
    drone_reserve,
    drone_state_set,
)
from portal.errors import NotFound, Unavailable, Unprocessable
from tests.conftest import Tenant, make_fleet
from tests.drones.fleet import HERE, START, base, drone, drone_model, offset

pytestmark = pytest.mark.django_db

PICKUP = HERE
DROPOFF = offset(HERE, north_km=2.0)


def reserve(delivery_id: uuid.UUID, weight_kg: float = 1.0) -> FlightPlan:
    with transaction.atomic():
        return drone_reserve(
            delivery_id=delivery_id,
            pickup=PICKUP,
            dropoff=DROPOFF,
            weight_kg=weight_kg,
            start=START,
        )


def test_reserving_books_the_best_drone_for_the_delivery() -> None:
    model = drone_model()
    nearest = drone(model, base())
    other = drone(model, base(offset(HERE, east_km=3.0)))
    delivery_id = uuid.uuid4()

    plan = reserve(delivery_id)

    assert plan.drone_id == nearest.pk
    nearest.refresh_from_db()
    other.refresh_from_db()
    assert nearest.assigned_delivery_id == delivery_id
    assert other.assigned_delivery_id is None
    assert not nearest.is_free


def test_reserving_again_for_the_same_delivery_returns_the_same_drone() -> None:
    model = drone_model()
    drone(model, base())
    drone(model, base(offset(HERE, east_km=3.0)))
    delivery_id = uuid.uuid4()

    first = reserve(delivery_id)
    second = reserve(delivery_id)

    assert second == first
    assert Drone.objects.filter(assigned_delivery_id__isnull=False).count() == 1


def test_a_second_delivery_gets_the_next_best_drone() -> None:
    model = drone_model()
    nearest = drone(model, base())
    second_best = drone(model, base(offset(HERE, east_km=3.0)))

    assert reserve(uuid.uuid4()).drone_id == nearest.pk
    assert reserve(uuid.uuid4()).drone_id == second_best.pk


def test_when_every_capable_drone_is_busy_no_drone_is_free() -> None:
    model = drone_model()
    drone(model, base())
    reserve(uuid.uuid4())

    with pytest.raises(NoDroneFree) as raised:
        reserve(uuid.uuid4())

    assert raised.value.code == "no_drone_free"
    assert isinstance(raised.value, Unavailable)


def test_a_delivery_no_drone_could_ever_make_is_impossible_with_the_reason() -> None:
    drone(drone_model(max_payload_kg=5.0), base())

    with pytest.raises(DeliveryImpossible) as raised:
        reserve(uuid.uuid4(), weight_kg=7.0)

    assert raised.value.code == "no_drone_can_do_it"
    assert isinstance(raised.value, Unprocessable)
    assert "5 kg" in raised.value.message
    assert not Drone.objects.filter(assigned_delivery_id__isnull=False).exists()


def test_a_drone_taken_between_choice_and_claim_is_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = drone_model()
    nearest = drone(model, base())
    next_best = drone(model, base(offset(HERE, east_km=3.0)))
    rival = uuid.uuid4()
    real_plan_best = services.drone_plan_best

    def plan_then_lose_the_race(**kwargs: object) -> FlightPlan | None:
        plan = real_plan_best(**kwargs)  # type: ignore[arg-type]
        if plan is not None and plan.drone_id == nearest.pk:
            Drone.objects.filter(pk=nearest.pk).update(assigned_delivery_id=rival)
        return plan

    monkeypatch.setattr(services, "drone_plan_best", plan_then_lose_the_race)

    plan = reserve(uuid.uuid4())

    assert plan.drone_id == next_best.pk
    assert Drone.objects.get(pk=nearest.pk).assigned_delivery_id == rival


def test_a_delivery_booked_concurrently_gets_that_booking_and_the_transaction_survives() -> None:
    model = drone_model()
    free = drone(model, base())
    already = drone(model, base(offset(HERE, east_km=3.0)))
    delivery_id = uuid.uuid4()
    # Another worker booked the farther drone for this delivery: claiming the nearer one
    # breaks the unique booking column, which is how the search learns of that booking.
    Drone.objects.filter(pk=already.pk).update(assigned_delivery_id=delivery_id)

    with transaction.atomic():
        plan = drone_reserve(
            delivery_id=delivery_id, pickup=PICKUP, dropoff=DROPOFF, weight_kg=1.0, start=START
        )
        assert Base.objects.count() == 2  # the caller's transaction is still usable

    assert plan.drone_id == already.pk
    assert Drone.objects.get(pk=free.pk).assigned_delivery_id is None


def test_releasing_frees_the_drone_once() -> None:
    model = drone_model()
    drone(model, base())
    delivery_id = uuid.uuid4()
    plan = reserve(delivery_id)

    assert drone_release(drone_id=plan.drone_id, delivery_id=delivery_id) is True
    assert drone_release(drone_id=plan.drone_id, delivery_id=delivery_id) is False
    assert Drone.objects.get(pk=plan.drone_id).is_free
    assert reserve(uuid.uuid4()).drone_id == plan.drone_id


def test_releasing_for_another_delivery_leaves_the_booking() -> None:
    drone(drone_model(), base())
    delivery_id = uuid.uuid4()
    plan = reserve(delivery_id)

    assert drone_release(drone_id=plan.drone_id, delivery_id=uuid.uuid4()) is False
    assert Drone.objects.get(pk=plan.drone_id).assigned_delivery_id == delivery_id


def test_state_battery_and_position_are_recorded() -> None:
    d = drone(drone_model(), base())

    drone_state_set(
        drone_id=d.pk, state="flying", battery_pct=87.5, position=(47.61, -122.33, 80.0)
    )

    d.refresh_from_db()
    assert (d.state, d.battery_pct, d.lat, d.lon, d.alt_m) == ("flying", 87.5, 47.61, -122.33, 80.0)


def test_a_grounded_drone_is_not_chosen_until_it_returns_to_service() -> None:
    d = drone(drone_model(), base())

    drone_state_set(drone_id=d.pk, state=Drone.State.GROUNDED)
    with pytest.raises(NoDroneFree):
        reserve(uuid.uuid4())

    drone_state_set(drone_id=d.pk, state=Drone.State.IDLE)
    assert reserve(uuid.uuid4()).drone_id == d.pk


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"state": "hovering"}, "state"),
        ({"state": "idle", "battery_pct": 101.0}, "battery_pct"),
        ({"state": "idle", "position": (95.0, 0.0, 0.0)}, "position"),
    ],
)
def test_impossible_states_are_refused(changes: dict[str, object], field: str) -> None:
    d = drone(drone_model(), base())

    with pytest.raises(Unprocessable) as raised:
        drone_state_set(drone_id=d.pk, **changes)  # type: ignore[arg-type]

    assert raised.value.field == field
    assert Drone.objects.get(pk=d.pk).state == Drone.State.IDLE


def test_the_state_of_an_unknown_drone_is_not_found() -> None:
    with pytest.raises(NotFound):
        drone_state_set(drone_id=uuid.uuid4(), state="idle")


def test_seed_fleet_creates_drones_on_bases_and_can_run_again() -> None:
    out = StringIO()

    call_command("seed_fleet", count=120, lat=47.6, lon=-122.3, seed=1, stdout=out)
    call_command("seed_fleet", count=30, lat=47.6, lon=-122.3, radius_km=5, stdout=StringIO())

    lines = out.getvalue().splitlines()
    assert lines[0] == "120 drones on 2 bases:"
    assert re.fullmatch(r"  Base 01 at 47\.\d{5}, -122\.\d{5}: 60 drones", lines[1])
    assert sorted(Base.objects.values_list("name", flat=True)) == ["Base 01", "Base 02", "Base 03"]
    assert Drone.objects.count() == 150
    assert Drone.objects.values("serial").distinct().count() == 150
    assert Drone.objects.filter(state=Drone.State.IDLE, battery_pct__gte=85).count() == 150
    assert {d.model.name for d in Drone.objects.select_related("model")} == {
        "light",
        "standard",
        "heavy",
    }
    for b in Base.objects.all():
        assert distance_km(Point(b.lat, b.lon), Point(47.6, -122.3)) <= 10.0
    at_home = Drone.objects.select_related("base")
    assert all((d.lat, d.lon) == (d.base.lat, d.base.lon) for d in at_home)
    plan = reserve(uuid.uuid4())  # a seeded fleet is usable
    assert plan.drone_serial.startswith("FD-")


def test_sending_home_is_refused_with_the_package_aboard_or_when_the_drone_is_lost(
    tenant: Tenant,
) -> None:
    from deliveries.models import Delivery
    from deliveries.services import delivery_assign, delivery_create
    from tests.deliveries.test_services import request

    make_fleet(1)
    delivery = delivery_create(business_id=tenant.business.id, request=request())
    assert delivery_assign(delivery_id=delivery.id).result == "assigned"
    delivery.refresh_from_db()
    assert delivery.drone_id is not None
    Drone.objects.filter(pk=delivery.drone_id).update(state=Drone.State.FLYING)
    Delivery.objects.filter(pk=delivery.id).update(status="en_route_to_dropoff")

    with pytest.raises(services.NothingToSendHome, match=r"package of delivery .* aboard"):
        services.drone_send_home(drone_id=delivery.drone_id)
    Drone.objects.filter(pk=delivery.drone_id).update(state=Drone.State.LOST)
    with pytest.raises(services.NothingToSendHome, match="is lost"):
        services.drone_send_home(drone_id=delivery.drone_id)
    assert Drone.objects.get(pk=delivery.drone_id).assigned_delivery_id == delivery.id
    assert Delivery.objects.get(pk=delivery.id).status == "en_route_to_dropoff"

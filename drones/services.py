"""Writes to the fleet: reserving a drone for a delivery, releasing it, changing its state."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.db.models import Case, UUIDField, Value, When
from django.utils import timezone

from drones.geo import EARTH_RADIUS_KM, Point
from drones.models import Base, Drone, DroneModel, TelemetryKey
from drones.selectors import (
    FlightPlan,
    delivery_impossible_reason,
    drone_plan_best,
    drone_plan_for,
)
from portal.errors import Conflict, NotFound, Unavailable, Unprocessable

logger = logging.getLogger(__name__)

# Each lost race excludes one drone; after this many the fleet is too contended to keep trying
# inside one transaction, and the caller retries later.
MAX_CLAIM_ATTEMPTS = 8


class NoDroneFree(Unavailable):
    """Some drone could make the delivery, but none that can is free now."""

    code = "no_drone_free"


class DeliveryImpossible(Unprocessable):
    """No drone of the fleet could ever make the delivery; the message says why."""

    code = "no_drone_can_do_it"


def drone_reserve(
    *,
    delivery_id: UUID,
    pickup: Point,
    dropoff: Point,
    weight_kg: float,
    start: datetime,
    not_before: datetime | None = None,
) -> FlightPlan:
    """Book the best free drone for the delivery and return its flight plan: search
    (`drone_plan_best`), then `drone_claim`, again while other claims win the race.

    The search only reads, outside any transaction of this call's; each claim is a
    compare-and-swap in a short transaction of its own (a savepoint when the caller has one).
    The delivery workflow does the same with its own status change in the claim's transaction
    (deliveries.services.delivery_assign).

    Idempotent: a delivery that already has a drone gets that drone's plan again (the unique
    booking column says so when a second claim is tried). Raises DeliveryImpossible when no
    drone could ever make the delivery, NoDroneFree when drones could but none is free now.
    """

    def book(plan: FlightPlan) -> FlightPlan | None:
        try:
            with transaction.atomic():
                if not drone_claim(drone_id=plan.drone_id, delivery_id=delivery_id):
                    return None  # another delivery took it between our read and our write
                return plan
        except IntegrityError:
            # Only assigned_delivery_id is unique among the columns written: this delivery
            # already has a drone (a redelivered message, or another worker got there first).
            booked = booked_plan()
            if booked is None:
                raise
            return booked

    def booked_plan() -> FlightPlan | None:
        return _booked_plan(
            delivery_id=delivery_id,
            pickup=pickup,
            dropoff=dropoff,
            start=start,
            not_before=not_before,
        )

    lost: set[UUID] = set()
    for _ in range(MAX_CLAIM_ATTEMPTS):
        plan = drone_plan_best(
            pickup=pickup,
            dropoff=dropoff,
            weight_kg=weight_kg,
            start=start,
            not_before=not_before,
            exclude=frozenset(lost),
        )
        if plan is None:
            break
        booked = book(plan)
        if booked is not None:
            return booked
        lost.add(plan.drone_id)
    # Nothing free to claim: unless this delivery has had its drone all along.
    booked = booked_plan()
    if booked is not None:
        return booked
    if lost:
        logger.info("delivery %s lost the race for %d drones", delivery_id, len(lost))
    else:
        # Asked only now: when a drone is free, the answer is known to be no.
        reason = delivery_impossible_reason(pickup=pickup, dropoff=dropoff, weight_kg=weight_kg)
        if reason is not None:
            raise DeliveryImpossible(reason)
    raise NoDroneFree("No drone able to make this delivery is free now; it will be retried.")


def drone_claim(*, drone_id: UUID, delivery_id: UUID) -> bool:
    """Compare-and-swap: book the drone if it is still free; False if someone else has it.

    Where rows can be locked, a drone another transaction is claiming right now is passed
    over at once (SKIP LOCKED) rather than waited for; SQLite has one writer at a time anyway.
    """
    return bool(drones_claim({drone_id: delivery_id}))


def drones_claim(bookings: dict[UUID, UUID]) -> set[UUID]:
    """drone_claim for several drones at once (drone id → delivery id), in one statement (two
    when some were taken); returns the drones this call booked."""
    if not bookings:
        return set()
    free = Drone.objects.filter(
        pk__in=bookings, state=Drone.State.IDLE, assigned_delivery_id__isnull=True
    )
    if connection.features.has_select_for_update_skip_locked:
        free = free.filter(pk__in=free.select_for_update(skip_locked=True).order_by().values("pk"))
    if len(bookings) == 1:
        booked: Any = next(iter(bookings.values()))
    else:
        booked = Case(
            *(When(pk=d, then=Value(v, output_field=UUIDField())) for d, v in bookings.items())
        )
    stamp = timezone.now()
    claimed = free.update(assigned_delivery_id=booked, updated_at=stamp)
    if claimed == len(bookings):
        return set(bookings)
    if not claimed:
        return set()
    # Which of them: by this statement's own time, not by the delivery alone, which another
    # worker may have booked the same drone for (the same search for the same delivery).
    return {
        drone_id
        for drone_id, delivery_id, at in Drone.objects.filter(pk__in=bookings).values_list(
            "pk", "assigned_delivery_id", "updated_at"
        )
        if bookings[drone_id] == delivery_id and at == stamp
    }


def drone_release(*, drone_id: UUID, delivery_id: UUID) -> bool:
    """Free the drone if it is booked for this delivery; True if this call freed it."""
    released = Drone.objects.filter(pk=drone_id, assigned_delivery_id=delivery_id).update(
        assigned_delivery_id=None, updated_at=timezone.now()
    )
    return released == 1


def drone_state_set(
    *,
    drone_id: UUID,
    state: str,
    battery_pct: float | None = None,
    position: tuple[float, float, float] | None = None,
) -> None:
    """Record a drone's state, and optionally its battery and (lat, lon, alt_m) position."""
    if state not in Drone.State.values:
        raise Unprocessable(
            f"Unknown drone state {state!r}; one of {', '.join(Drone.State.values)}.",
            field="state",
        )
    changes: dict[str, object] = {"state": state, "updated_at": timezone.now()}
    if battery_pct is not None:
        if not 0 <= battery_pct <= 100:
            raise Unprocessable("Battery must be between 0 and 100 %.", field="battery_pct")
        changes["battery_pct"] = battery_pct
    if position is not None:
        lat, lon, alt_m = position
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise Unprocessable(f"({lat}, {lon}) is not a position on Earth.", field="position")
        changes.update(lat=lat, lon=lon, alt_m=alt_m)
    if not Drone.objects.filter(pk=drone_id).update(**changes):
        raise NotFound(f"No drone {drone_id}.")


class NothingToSendHome(Conflict):
    """The drone is not out on a delivery that can be called off; the message says why."""

    code = "nothing_to_send_home"


def drone_send_home(*, drone_id: UUID, operator: str = "") -> Drone:
    """Call a drone flying out for a delivery back to its base, before the package is aboard:
    its delivery goes back for another drone (the lifecycle releases this one), the drone
    learns `return_to_base` from the answer to its next report, and is free again once it has
    landed. The drone stays in service (grounding takes it out).

    Refused, saying why, when there is nothing to call off: a drone on the ground (ground it to
    give its delivery another drone), a lost one (it hears nothing until it reports again), one
    flying home already, or one with the package aboard (it comes home after the dropoff;
    grounding brings it home with the package)."""
    from deliveries.lifecycle import BEFORE_PICKUP, WITH_DRONE
    from deliveries.models import Delivery
    from deliveries.services import delivery_replace_drone

    with transaction.atomic():
        drone = Drone.objects.select_for_update().filter(pk=drone_id).first()
        if drone is None:
            raise NotFound(f"No drone {drone_id}.")
        delivery = (
            Delivery.objects.filter(pk=drone.assigned_delivery_id).first()
            if drone.assigned_delivery_id
            else None
        )
        if drone.state == Drone.State.LOST:
            raise NothingToSendHome(
                f"drone {drone.serial} is lost: it hears nothing until it reports again"
            )
        if drone.state == Drone.State.GROUNDED:
            raise NothingToSendHome(
                f"drone {drone.serial} is grounded: it already flies home or stays at its base"
            )
        if drone.state != Drone.State.FLYING:
            raise NothingToSendHome(
                f"drone {drone.serial} is on the ground ({drone.state}); to give its delivery "
                "another drone, ground it"
            )
        if delivery is None or delivery.status not in WITH_DRONE:
            raise NothingToSendHome(f"drone {drone.serial} is already flying home")
        if delivery.status not in BEFORE_PICKUP:
            raise NothingToSendHome(
                f"drone {drone.serial} has the package of delivery {delivery.pk} aboard: it "
                "comes home after the dropoff (ground it to bring the package back now)"
            )
        who = f"operator {operator}" if operator else "an operator"
        delivery_replace_drone(
            delivery_id=delivery.pk,
            reason=f"drone {drone.serial} sent home by {who}; finding another drone",
        )
        drone.assigned_delivery_id = None
    logger.info("drone %s sent home by %s", drone.serial, who)
    return drone


def _booked_plan(
    *,
    delivery_id: UUID,
    pickup: Point,
    dropoff: Point,
    start: datetime,
    not_before: datetime | None,
) -> FlightPlan | None:
    drone_id = (
        Drone.objects.filter(assigned_delivery_id=delivery_id).values_list("pk", flat=True).first()
    )
    if drone_id is None:
        return None
    return drone_plan_for(
        drone_id=drone_id, pickup=pickup, dropoff=dropoff, start=start, not_before=not_before
    )


# Demo and benchmark fleets: the three models `seed_fleet` creates when missing.
SEED_MODELS = (
    ("light", 2.5, 60.0, 20.0),
    ("standard", 5.0, 55.0, 30.0),
    ("heavy", 12.0, 45.0, 25.0),
)
SEED_MODEL_SHARES = (0.4, 0.4, 0.2)
DRONES_PER_BASE = 50
MAX_SEED_BASES = 12


@dataclass(frozen=True)
class SeededBase:
    id: UUID
    name: str
    lat: float
    lon: float
    drones: int


@dataclass(frozen=True)
class SeededFleet:
    bases: list[SeededBase]
    drone_ids: list[UUID]


@transaction.atomic
def fleet_seed(
    *, count: int, center: Point, radius_km: float = 10.0, seed: int | None = None
) -> SeededFleet:
    """Add `count` idle, (nearly) fully charged drones on a few new bases within `radius_km`
    of `center` (about one per 50 drones, at most 12); the drone models are created if
    missing."""
    if count < 0:
        raise Unprocessable("The number of drones cannot be negative.", field="count")
    if radius_km < 0:
        raise Unprocessable("The radius cannot be negative.", field="radius_km")
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    models = [
        DroneModel.objects.get_or_create(
            name=name,
            defaults={"max_payload_kg": payload, "cruise_speed_kmh": speed, "range_km": range_km},
        )[0]
        for name, payload, speed, range_km in SEED_MODELS
    ]
    n_bases = min(max(1, round(count / DRONES_PER_BASE)), MAX_SEED_BASES) if count else 0
    taken = [
        int(name[5:])
        for name in Base.objects.filter(name__startswith="Base ").values_list("name", flat=True)
        if name[5:].isdigit()
    ]
    bases = []
    for number in range(max(taken, default=0) + 1, max(taken, default=0) + 1 + n_bases):
        # Uniform over the disc: the distance goes as the square root.
        distance = radius_km * math.sqrt(rng.random())
        bearing = rng.uniform(0, 2 * math.pi)
        lat = center.lat + math.degrees(distance * math.cos(bearing) / EARTH_RADIUS_KM)
        lon = center.lon + math.degrees(
            distance * math.sin(bearing) / EARTH_RADIUS_KM / math.cos(math.radians(center.lat))
        )
        bases.append(
            Base.objects.create(name=f"Base {number:02d}", lat=round(lat, 5), lon=round(lon, 5))
        )
    numbers = [
        int(serial[3:])
        for serial in Drone.objects.filter(serial__startswith="FD-").values_list(
            "serial", flat=True
        )
        if serial[3:].isdigit()
    ]
    first = max(numbers, default=0) + 1
    per_base = {base.pk: 0 for base in bases}
    drones = []
    for i in range(count):
        base = bases[i % len(bases)]
        per_base[base.pk] += 1
        drones.append(
            Drone(
                serial=f"FD-{first + i:04d}",
                model=rng.choices(models, weights=SEED_MODEL_SHARES)[0],
                base=base,
                state=Drone.State.IDLE,
                battery_pct=100.0 if rng.random() < 0.5 else round(rng.uniform(85, 100), 1),
                lat=base.lat,
                lon=base.lon,
                alt_m=0.0,
            )
        )
    Drone.objects.bulk_create(drones, batch_size=1000)
    return SeededFleet(
        bases=[SeededBase(b.pk, b.name, b.lat, b.lon, per_base[b.pk]) for b in bases],
        drone_ids=[d.pk for d in drones],
    )


# --- telemetry credentials --------------------------------------------------------------------


def telemetry_key_create(
    *,
    name: str,
    drone_id: UUID | None = None,
    base_ids: list[UUID] | None = None,
) -> tuple[TelemetryKey, str]:
    """A credential for one drone, or for a gateway reporting for the drones of some bases.
    Returns the key record and the key itself, which is shown once (only its hash is kept)."""
    if (drone_id is None) == (not base_ids):
        raise Unprocessable(
            "a telemetry key is either one drone's or a gateway's for some bases; give one",
            field="drone",
        )
    with transaction.atomic():
        if drone_id is not None and not Drone.objects.filter(pk=drone_id).exists():
            raise NotFound(f"No drone {drone_id}.")
        record, key = TelemetryKey.objects.create_key(name=name, drone_id=drone_id)
        assert isinstance(record, TelemetryKey)
        if base_ids:
            bases = list(Base.objects.filter(pk__in=base_ids))
            if len(bases) != len(set(base_ids)):
                raise NotFound("Some of the bases do not exist.")
            record.bases.set(bases)
    return record, key


def telemetry_key_revoke(*, prefix: str) -> TelemetryKey:
    record = TelemetryKey.objects.filter(prefix=prefix).first()
    if record is None:
        raise NotFound(f"no telemetry key with prefix {prefix!r}")
    if not record.revoked:
        record.revoked = True
        record.save(update_fields=["revoked"])
    return record

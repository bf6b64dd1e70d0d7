"""The one place a delivery changes stage.

Every door (the API, admin, Celery tasks, telemetry) moves a delivery with `delivery_move`,
which checks the transition table, compare-and-swaps on the status and version it was given,
writes the event (time, drone position, note), releases the drone when the delivery no longer
needs it, and writes the live status, versioned so that an older copy never overwrites a newer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from deliveries import announce, live
from deliveries.models import Delivery, DeliveryEvent
from drones.services import drone_release
from portal import metrics, telemetry
from portal.db import insert, update_rows
from portal.errors import Conflict

Status = Delivery.Status
Position = tuple[float, float, float]

# Which status may follow which.
# - Cancelling is allowed until the package is picked up (the drone, if flying, goes home).
# - Back to `requested`: rescheduled, the drone grounded or lost before pickup (another drone
#   is needed), or an operator's retry of a failed delivery.
# - `failed`: the workflow gave up, or an operator marked it.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.REQUESTED: frozenset(
        {Status.REQUESTED, Status.ASSIGNED, Status.CANCELLED, Status.FAILED}
    ),
    Status.ASSIGNED: frozenset(
        {Status.EN_ROUTE_TO_PICKUP, Status.REQUESTED, Status.CANCELLED, Status.FAILED}
    ),
    Status.EN_ROUTE_TO_PICKUP: frozenset(
        {Status.AT_PICKUP, Status.REQUESTED, Status.CANCELLED, Status.FAILED}
    ),
    Status.AT_PICKUP: frozenset(
        {Status.EN_ROUTE_TO_DROPOFF, Status.REQUESTED, Status.CANCELLED, Status.FAILED}
    ),
    Status.EN_ROUTE_TO_DROPOFF: frozenset({Status.AT_DROPOFF, Status.FAILED}),
    Status.AT_DROPOFF: frozenset({Status.DELIVERED, Status.FAILED}),
    Status.DELIVERED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.FAILED: frozenset({Status.REQUESTED}),
}
# Until the package is on board: cancelling is allowed, and a grounded drone is replaced.
BEFORE_PICKUP = frozenset(
    {Status.REQUESTED, Status.ASSIGNED, Status.EN_ROUTE_TO_PICKUP, Status.AT_PICKUP}
)
PACKAGE_ABOARD = frozenset({Status.EN_ROUTE_TO_DROPOFF, Status.AT_DROPOFF})
# A delivery in one of these holds its drone.
WITH_DRONE = frozenset(
    {
        Status.ASSIGNED,
        Status.EN_ROUTE_TO_PICKUP,
        Status.AT_PICKUP,
        Status.EN_ROUTE_TO_DROPOFF,
        Status.AT_DROPOFF,
    }
)
FINISHED = frozenset({Status.DELIVERED, Status.CANCELLED, Status.FAILED})


class InvalidStageTransition(Conflict):
    code = "invalid_transition"


class StaleDelivery(Conflict):
    """The delivery changed since the caller read it (another door moved it first)."""

    code = "conflict"


def delivery_move(
    delivery: Delivery,
    to: str,
    *,
    at: datetime | None = None,
    note: str = "",
    position: Position | None = None,
    changes: dict[str, Any] | None = None,
    location: dict[str, Any] | None = None,
) -> Delivery:
    """Move `delivery`, as the caller read it, to status `to`; returns it updated in place.

    In the caller's transaction if there is one. Raises InvalidStageTransition when the table
    does not allow the move, StaleDelivery when the delivery is no longer what the caller read.
    `changes` are other fields written in the same swap (a drone, ETAs, a failure reason).
    `location`: the drone's whole report (heading, speed, time) for the live status, when known.
    Leaving the drone-holding stages for `requested` or a finished one releases the drone.
    """
    if to not in TRANSITIONS[delivery.status]:
        raise InvalidStageTransition(
            f"a delivery cannot go from {delivery.status.replace('_', ' ')} "
            f"to {to.replace('_', ' ')}"
        )
    now = timezone.now()
    fields: dict[str, Any] = {"status": to, "version": delivery.version + 1, "updated_at": now}
    if to != Status.REQUESTED:
        fields["next_attempt_at"] = None
    drone_id = delivery.drone_id
    release = drone_id is not None and (to in FINISHED or to == Status.REQUESTED)
    if to == Status.REQUESTED:
        # Whatever belonged to the last assignment is forgotten: its drone, its ETAs, a failure.
        fields.update(
            drone_id=None, pickup_eta=None, dropoff_eta=None, failure_reason="", attention=""
        )
    if to in FINISHED:
        fields["book_at"] = None
    fields.update(changes or {})
    # No savepoint inside a caller's transaction (two round trips fewer per change): a failed
    # swap has written nothing and leaves the block normally, so the caller's transaction stays
    # usable after StaleDelivery; any other error fails the caller's transaction with it.
    with (
        telemetry.linked(
            "delivery.stage_change", delivery, stage_from=delivery.status, stage_to=to
        ),
        transaction.atomic(savepoint=False),
    ):
        swapped = Delivery.objects.filter(
            pk=delivery.pk, status=delivery.status, version=delivery.version
        ).update(**fields)
        if swapped:
            _moved(delivery, to, fields, release, drone_id, at or now, position, note, location)
    if not swapped:
        raise StaleDelivery(f"delivery {delivery.pk} changed meanwhile; read it again")
    return delivery


def _moved(
    delivery: Delivery,
    to: str,
    fields: dict[str, Any],
    release: bool,
    drone_id: Any,
    at: datetime,
    position: Position | None,
    note: str,
    location: dict[str, Any] | None,
) -> None:
    """What follows a swapped status, in its transaction: the drone released when the
    delivery is done with it, the event, the announcements, the live status."""
    if release and drone_id is not None:
        drone_release(drone_id=drone_id, delivery_id=delivery.pk)
    _event(delivery, to, at=at, position=position, note=note)
    previous = delivery.status
    for name, value in fields.items():
        setattr(delivery, name, value)
    announce.stage_changed(delivery, previous=previous, at=at)
    live.status_write(delivery, drone_location=location or position, at=at)
    # Counted when it is for real: the caller's transaction may still roll it back.
    transaction.on_commit(lambda: metrics.DELIVERY_STAGE_CHANGES.inc(stage=to))


@dataclass(frozen=True)
class Assignment:
    """A requested delivery, as read, and what its assignment writes (delivery_move's `changes`,
    which must hold the drone)."""

    delivery: Delivery
    changes: dict[str, Any]
    note: str = ""
    position: Position | None = None


def deliveries_lock(deliveries: list[Delivery]) -> set[Any]:
    """Lock the rows of these deliveries for the caller's transaction, in the order of their
    ids (so that two workers locking several never wait on each other in a circle); the ids of
    those still requested at the version the caller read. Where rows cannot be locked
    (SQLite), the transaction's write lock serialises writers anyway."""
    if not deliveries:
        return set()
    current = dict(
        Delivery.objects.select_for_update()
        .filter(pk__in=[d.pk for d in deliveries], status=Status.REQUESTED)
        .order_by("pk")
        .values_list("pk", "version")
    )
    return {d.pk for d in deliveries if current.get(d.pk) == d.version}


def deliveries_assign(assignments: list[Assignment], *, at: datetime) -> list[Delivery]:
    """delivery_move to `assigned` for several requested deliveries at once (a round of the
    workflow), in the caller's transaction, which must have locked them (deliveries_lock: they
    are as read) and booked their drones: four statements however many. Returns them,
    updated in place."""
    if not assignments:
        return []
    now = timezone.now()
    for a in assignments:
        fields = {
            "status": Status.ASSIGNED,
            "version": a.delivery.version + 1,
            "updated_at": now,
            "next_attempt_at": None,
            **a.changes,
        }
        for name, value in fields.items():
            setattr(a.delivery, name, value)
    deliveries = [a.delivery for a in assignments]
    update_rows(deliveries, sorted(_ASSIGN_FIELDS | assignments[0].changes.keys()))
    DeliveryEvent.objects.bulk_create(
        DeliveryEvent(
            delivery=a.delivery,
            status=Status.ASSIGNED,
            at=at,
            lat=a.position[0] if a.position else None,
            lon=a.position[1] if a.position else None,
            alt_m=a.position[2] if a.position else None,
            note=a.note[:300],
        )
        for a in assignments
    )
    announce.stage_changed_together(deliveries, previous=Status.REQUESTED, at=at)
    for a in assignments:
        # A span per delivery, linked to its request's trace: each delivery's trace shows
        # the round that assigned it.
        with telemetry.linked(
            "delivery.stage_change",
            a.delivery,
            stage_from=Status.REQUESTED,
            stage_to=Status.ASSIGNED,
        ):
            pass
    live.statuses_write_after_commit(
        (a.delivery.pk, a.delivery.version, at, live.status_of(a.delivery, a.position))
        for a in assignments
    )
    count = len(assignments)
    transaction.on_commit(lambda: metrics.DELIVERY_STAGE_CHANGES.inc(count, stage=Status.ASSIGNED))
    return deliveries


# What an assignment writes besides its changes.
_ASSIGN_FIELDS = frozenset({"status", "version", "updated_at", "next_attempt_at"})


def delivery_flag(
    delivery: Delivery,
    attention: str,
    *,
    at: datetime | None = None,
    position: Position | None = None,
) -> None:
    """Draw operators' attention to a delivery (its drone lost contact, was grounded with the
    package aboard), or clear it with an empty `attention`; an event of its current status
    says what happened. Not a change of stage. Inside a caller's transaction it takes no
    savepoint (as delivery_move): an error fails the caller's transaction with it."""
    with transaction.atomic(savepoint=False):
        Delivery.objects.filter(pk=delivery.pk).update(attention=attention[:200])
        _event(
            delivery,
            delivery.status,
            at=at or timezone.now(),
            position=position,
            note=attention or "back to normal",
        )
    delivery.attention = attention[:200]


def delivery_reroute(
    delivery: Delivery, route: dict[str, Any], *, note: str, attention: str = ""
) -> bool:
    """New routes for a delivery in flight (a no-fly zone opened or closed across its way): its
    drone is told by the answer to its next report (route_version). Not a change of stage; an
    event says what happened. False when the delivery changed stage meanwhile."""
    with transaction.atomic():
        changed = Delivery.objects.filter(pk=delivery.pk, version=delivery.version).update(
            route=route,
            route_version=delivery.route_version + 1,
            attention=attention[:200],
            updated_at=timezone.now(),
        )
        if not changed:
            return False
        _event(delivery, delivery.status, at=timezone.now(), note=note)
    delivery.route, delivery.route_version = route, delivery.route_version + 1
    delivery.attention = attention[:200]
    return True


def _event(
    delivery: Delivery, status: str, *, at: datetime, note: str, position: Position | None = None
) -> None:
    """What happened to the delivery, when and where its drone was."""
    lat, lon, alt = position if position else (None, None, None)
    insert(
        DeliveryEvent(
            delivery=delivery, status=status, at=at, lat=lat, lon=lon, alt_m=alt, note=note[:300]
        )
    )

"""Writes to deliveries: ingestion with the outbox, the workflow's steps, cancel and reschedule.

Every status change is a compare-and-swap on the current status, so that two workers, a worker
and a cancelling business, or a redelivered message can never both win.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from deliveries import live
from deliveries.models import Delivery, DeliveryEvent, IdempotencyRecord, OutboxMessage, Quote
from drones.geo import Point, distance_km
from drones.selectors import FlightPlan, delivery_impossible_reason, drone_plan_best
from drones.services import DeliveryImpossible, NoDroneFree, drone_release, drone_reserve
from portal.db import execute, insert, prepare_insert
from portal.errors import Conflict, NotFound, Unprocessable

logger = logging.getLogger(__name__)

Status = Delivery.Status
WORKFLOW_TASK = "workers.delivery_process"

# Which status may follow which. Cancelling is allowed until the package is picked up;
# `assigned → requested` is a reschedule that needs another drone; `failed → requested` is an
# operator's retry.
TRANSITIONS: dict[str, set[str]] = {
    Status.REQUESTED: {Status.ASSIGNED, Status.CANCELLED, Status.FAILED},
    Status.ASSIGNED: {Status.EN_ROUTE_TO_PICKUP, Status.CANCELLED, Status.FAILED, Status.REQUESTED},
    Status.EN_ROUTE_TO_PICKUP: {Status.EN_ROUTE_TO_DROPOFF, Status.CANCELLED, Status.FAILED},
    Status.EN_ROUTE_TO_DROPOFF: {Status.DELIVERED, Status.FAILED},
    Status.DELIVERED: set(),
    Status.CANCELLED: set(),
    Status.FAILED: {Status.REQUESTED},
}
BEFORE_PICKUP = {Status.REQUESTED, Status.ASSIGNED, Status.EN_ROUTE_TO_PICKUP}
# A delivery in one of these no longer holds its drone.
FINISHED = {Status.DELIVERED, Status.CANCELLED, Status.FAILED}
CLOCK_SKEW = timedelta(seconds=60)


class InvalidStageTransition(Conflict):
    code = "invalid_transition"


@dataclass(frozen=True)
class Place:
    point: Point
    address: str = ""


@dataclass(frozen=True)
class DeliveryRequest:
    """A delivery as a business asks for it, already well-formed (the API checked the shape)."""

    pickup: Place
    dropoff: Place
    package_size: str
    package_weight_kg: float
    package_tag: str = ""
    pickup_time: datetime | None = None
    deadline: datetime | None = None
    expedited: bool = False
    confirmation_required: str = Delivery.Confirmation.NONE
    recipient: dict[str, str] = field(default_factory=dict)

    def quote_terms(self) -> dict[str, Any]:
        """What a quote promises, to check that a delivery made from it asks for the same."""
        return {
            "pickup": [round(self.pickup.point.lat, 6), round(self.pickup.point.lon, 6)],
            "dropoff": [round(self.dropoff.point.lat, 6), round(self.dropoff.point.lon, 6)],
            "package_size": self.package_size,
            "package_weight_kg": round(self.package_weight_kg, 3),
            "expedited": self.expedited,
            "confirmation_required": self.confirmation_required,
        }


# --- validation -------------------------------------------------------------------------------


def _check_point(point: Point, name: str) -> None:
    if not -90 <= point.lat <= 90:
        raise Unprocessable(
            f"{name} latitude {point.lat} is outside -90..90",
            field=f"{name}.lat",
            code="invalid_coordinates",
        )
    if not -180 <= point.lon <= 180:
        raise Unprocessable(
            f"{name} longitude {point.lon} is outside -180..180",
            field=f"{name}.lon",
            code="invalid_coordinates",
        )


def delivery_request_check(
    request: DeliveryRequest, *, now: datetime | None = None, fleet_max_age_seconds: float = 0.0
) -> None:
    """Refuse what is well-formed but impossible, saying why (the API answers 422)."""
    now = now or timezone.now()
    _check_point(request.pickup.point, "pickup")
    _check_point(request.dropoff.point, "dropoff")
    if request.package_weight_kg <= 0:
        raise Unprocessable("the package weight must be more than 0 kg", field="package.weight_kg")
    if distance_km(request.pickup.point, request.dropoff.point) < 0.01:
        raise Unprocessable(
            "pickup and dropoff are the same place", field="dropoff", code="same_place"
        )
    if request.pickup_time is not None and request.pickup_time < now - CLOCK_SKEW:
        raise Unprocessable(
            f"the pickup time {request.pickup_time.isoformat()} is in the past",
            field="pickup_time",
            code="pickup_time_in_past",
        )
    if request.deadline is not None:
        if request.deadline < now:
            raise Unprocessable(
                "the deadline is in the past", field="deadline", code="deadline_in_past"
            )
        if request.pickup_time is not None and request.deadline <= request.pickup_time:
            raise Unprocessable(
                "the deadline must come after the pickup time",
                field="deadline",
                code="deadline_before_pickup",
            )
    reason = delivery_impossible_reason(
        pickup=request.pickup.point,
        dropoff=request.dropoff.point,
        weight_kg=request.package_weight_kg,
        max_age_seconds=fleet_max_age_seconds,
    )
    if reason:
        raise DeliveryImpossible(reason)


# --- quotes -----------------------------------------------------------------------------------


def price_for(request: DeliveryRequest) -> Decimal:
    km = Decimal(str(distance_km(request.pickup.point, request.dropoff.point)))
    price = (
        settings.PRICE_BASE
        + settings.PRICE_PER_KM * km
        + settings.PRICE_PER_KG * Decimal(str(request.package_weight_kg))
    )
    if request.confirmation_required != Delivery.Confirmation.NONE:
        price += settings.PRICE_CONFIRMATION
    if request.expedited:
        price *= settings.PRICE_EXPEDITED_FACTOR
    return price.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def quote_create(*, business_id: UUID, request: DeliveryRequest) -> Quote:
    now = timezone.now()
    delivery_request_check(request, now=now)
    plan = drone_plan_best(
        pickup=request.pickup.point,
        dropoff=request.dropoff.point,
        weight_kg=request.package_weight_kg,
        start=now,
        not_before=request.pickup_time,
    )
    if plan is None:
        raise Unprocessable(
            "every drone that could carry this is busy or charging; ask again in a few minutes",
            code="no_drone_free",
        )
    if request.deadline is not None and plan.dropoff_eta > request.deadline:
        raise Unprocessable(
            f"no drone is free to deliver before the deadline; the earliest dropoff is "
            f"{plan.dropoff_eta.isoformat()}",
            field="deadline",
            code="deadline_unreachable",
        )
    return Quote.objects.create(
        business_id=business_id,
        request=request.quote_terms(),
        price_amount=price_for(request),
        price_currency=settings.PRICE_CURRENCY,
        pickup_eta=plan.pickup_eta,
        dropoff_eta=plan.dropoff_eta,
        expires_at=now + timedelta(seconds=settings.QUOTE_TTL_SECONDS),
    )


def _quote_for(*, business_id: UUID, quote_id: UUID, request: DeliveryRequest) -> Quote:
    quote = Quote.objects.filter(pk=quote_id, business_id=business_id).first()
    if quote is None:
        raise Unprocessable(f"there is no quote {quote_id}", field="quote_id", code="unknown_quote")
    if quote.expires_at < timezone.now():
        raise Unprocessable(
            f"the quote expired at {quote.expires_at.isoformat()}; ask for a new one",
            field="quote_id",
            code="quote_expired",
        )
    if quote.request != request.quote_terms():
        raise Unprocessable(
            "the delivery differs from what was quoted (places, package, options)",
            field="quote_id",
            code="quote_mismatch",
        )
    return quote


# --- ingestion and the outbox -----------------------------------------------------------------


def delivery_create(
    *, business_id: UUID, request: DeliveryRequest, quote_id: UUID | None = None
) -> Delivery:
    """Store the delivery and its first event in one transaction; publish the workflow
    message after commit.

    If the broker is down the message goes to the outbox and the relay publishes it later (see
    `_workflow_enqueue`). A request that cannot be stored raises: it is never acknowledged. The
    rows are prepared before the transaction, which holds only their two INSERTs.
    """
    now = timezone.now()
    delivery_request_check(
        request, now=now, fleet_max_age_seconds=settings.FLEET_SHAPE_CACHE_SECONDS
    )
    quote = (
        _quote_for(business_id=business_id, quote_id=quote_id, request=request)
        if quote_id
        else None
    )
    delivery = Delivery(
        business_id=business_id,
        pickup_lat=request.pickup.point.lat,
        pickup_lon=request.pickup.point.lon,
        pickup_address=request.pickup.address,
        dropoff_lat=request.dropoff.point.lat,
        dropoff_lon=request.dropoff.point.lon,
        dropoff_address=request.dropoff.address,
        package_size=request.package_size,
        package_weight_kg=request.package_weight_kg,
        package_tag=request.package_tag,
        pickup_time=request.pickup_time,
        deadline=request.deadline,
        expedited=request.expedited,
        confirmation_required=request.confirmation_required,
        recipient_name=request.recipient.get("name", ""),
        recipient_email=request.recipient.get("email", ""),
        recipient_phone=request.recipient.get("phone", ""),
        quote=quote,
        price_amount=quote.price_amount if quote else price_for(request),
        price_currency=quote.price_currency if quote else settings.PRICE_CURRENCY,
    )
    rows = prepare_insert(
        delivery, DeliveryEvent(delivery=delivery, status=Status.REQUESTED, at=now)
    )
    with transaction.atomic():
        execute(rows)
        _workflow_enqueue(delivery_id=delivery.id)
    return delivery


def _workflow_enqueue(*, delivery_id: UUID, attempt: int = 0) -> None:
    """In the caller's transaction: publish the workflow message once the transaction commits.

    The committed delivery row is the outbox record: a delivery in `requested` whose next
    attempt is overdue is republished by the sweeper, so a process that dies between commit
    and publish loses nothing. A publish the broker refuses is stored as an OutboxMessage for
    the relay, which tries again within seconds rather than the sweeper's minutes. The usual
    case so costs no write beyond the delivery and its event.
    """
    payload = {"delivery_id": str(delivery_id), "attempt": attempt}
    # robust: the request is committed and answered 202 whatever happens here; outbox_publish
    # handles the broker, and a database failure after commit is left to the sweeper.
    transaction.on_commit(lambda: outbox_publish(task=WORKFLOW_TASK, payload=payload), robust=True)


def outbox_publish(*, task: str, payload: dict[str, Any], message_id: UUID | None = None) -> bool:
    """Send one message to the broker; on failure keep it in the outbox for the relay.

    `message_id` is the stored message being relayed, None for a first attempt."""
    from portal import broker

    try:
        broker.send_task(task, payload)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the message for the relay
        logger.warning("%s %s not published, the relay will retry: %s", task, payload, exc)
        error = f"{type(exc).__name__}: {exc}"[:300]
        if message_id is None:
            OutboxMessage.objects.create(task=task, payload=payload, attempts=1, last_error=error)
        else:
            OutboxMessage.objects.filter(pk=message_id).update(
                attempts=F("attempts") + 1, last_error=error
            )
        return False
    if message_id is not None:
        OutboxMessage.objects.filter(pk=message_id).update(published_at=timezone.now())
    return True


def outbox_relay(*, older_than_seconds: float = 5.0, batch: int = 500) -> int:
    """Publish stored messages that were not published after their commit. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    pending = list(
        OutboxMessage.objects.filter(published_at__isnull=True, created_at__lt=cutoff)
        .order_by("created_at")
        .values("id", "task", "payload")[:batch]
    )
    published = 0
    for message in pending:
        if outbox_publish(
            task=message["task"], payload=message["payload"], message_id=message["id"]
        ):
            published += 1
        else:
            break  # the broker is still down; try again next round
    return published


def outbox_prune(*, older_than: timedelta = timedelta(days=7)) -> int:
    deleted, _ = OutboxMessage.objects.filter(published_at__lt=timezone.now() - older_than).delete()
    return deleted


def deliveries_sweep(*, grace: timedelta = timedelta(seconds=120)) -> int:
    """Republish the workflow of deliveries still waiting long after their next attempt was due.

    Covers a message lost by the broker (Redis without persistence) or a worker killed between
    two steps: the workflow is idempotent, so a spare message is harmless.
    """
    now = timezone.now()
    cutoff = now - grace
    overdue = Q(next_attempt_at__lt=cutoff) | Q(next_attempt_at__isnull=True, created_at__lt=cutoff)
    stuck = Delivery.objects.filter(overdue, status=Status.REQUESTED).values_list("id", "attempts")[
        :500
    ]
    count = 0
    for delivery_id, attempts in stuck:
        with transaction.atomic():
            updated = Delivery.objects.filter(
                pk=delivery_id, status=Status.REQUESTED, attempts=attempts
            ).update(next_attempt_at=now + grace)
            if updated:
                _workflow_enqueue(delivery_id=delivery_id, attempt=attempts)
                count += 1
    return count


# --- the workflow's steps ---------------------------------------------------------------------


@dataclass(frozen=True)
class AssignOutcome:
    """What the assignment step did: assigned, wait (no drone free now) or done (nothing to do)."""

    result: str
    delivery: Delivery | None = None
    retry_in: float = 0.0
    attempt: int = 0
    drone_serial: str = ""


def _point(lat: float, lon: float) -> Point:
    return Point(lat=lat, lon=lon)


def delivery_assign(
    *, delivery_id: UUID, attempt: int = 0, delivery: Delivery | None = None
) -> AssignOutcome:
    """Reserve the best drone and mark the delivery assigned, in one transaction.

    Safe to run twice and concurrently: the drone claim and the status change are both
    compare-and-swaps, committed together, and a stale attempt (another message already moved
    on) does nothing. The search for the drone runs before that short transaction.
    `delivery` spares a read when the caller has just loaded it; the swaps check it still holds.
    """
    if delivery is None:
        delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Status.REQUESTED:
        return AssignOutcome("done", delivery)
    if delivery.attempts != attempt:
        return AssignOutcome("done", delivery)  # a newer message carries this delivery on
    now = timezone.now()

    def record(plan: FlightPlan) -> None:
        """In the drone claim's transaction: the delivery's side of the booking."""
        if delivery.deadline is not None and plan.dropoff_eta > delivery.deadline:
            raise _DeadlineMissed(plan)
        changed = Delivery.objects.filter(
            pk=delivery.id, status=Status.REQUESTED, attempts=attempt
        ).update(
            status=Status.ASSIGNED,
            drone_id=plan.drone_id,
            pickup_eta=plan.pickup_eta,
            dropoff_eta=plan.dropoff_eta,
            next_attempt_at=None,
            updated_at=now,
        )
        if not changed:
            # Cancelled or taken on by another message meanwhile: undo the drone claim.
            raise _Superseded
        insert(
            DeliveryEvent(
                delivery=delivery, status=Status.ASSIGNED, at=now, note=f"drone {plan.drone_serial}"
            )
        )

    try:
        plan = drone_reserve(
            delivery_id=delivery.id,
            pickup=_point(delivery.pickup_lat, delivery.pickup_lon),
            dropoff=_point(delivery.dropoff_lat, delivery.dropoff_lon),
            weight_kg=delivery.package_weight_kg,
            start=now,
            not_before=delivery.pickup_time,
            then=record,
        )
    except _Superseded:
        return AssignOutcome("done", delivery)
    except DeliveryImpossible as exc:
        delivery_fail(delivery_id=delivery.id, reason=exc.message)
        return AssignOutcome("done", delivery)
    except _DeadlineMissed:
        return _wait_or_give_up(delivery, attempt, now, "no drone can deliver before the deadline")
    except NoDroneFree:
        return _wait_or_give_up(delivery, attempt, now, "no drone became free in time")
    # What the swap wrote, without reading it back.
    delivery.status = Status.ASSIGNED
    delivery.drone_id = plan.drone_id
    delivery.pickup_eta, delivery.dropoff_eta = plan.pickup_eta, plan.dropoff_eta
    delivery.next_attempt_at, delivery.updated_at = None, now
    # A free drone is idle, on the ground: no need to read its position back.
    position = plan.drone_position
    live.status_write(
        delivery, drone_location=(position.lat, position.lon, 0.0) if position else None
    )
    return AssignOutcome("assigned", delivery, drone_serial=plan.drone_serial)


class _Superseded(Exception):
    """The delivery changed under the workflow (cancelled, or another message moved it on)."""


class _DeadlineMissed(Exception):
    def __init__(self, plan: FlightPlan) -> None:
        self.plan = plan


def _wait_or_give_up(delivery: Delivery, attempt: int, now: datetime, reason: str) -> AssignOutcome:
    """No suitable drone free now: look again later with backoff, or fail past the limits.

    The time limit counts from when the delivery last became requested: created, rescheduled
    or retried by an operator (its latest `requested` event)."""
    waiting_since = (
        DeliveryEvent.objects.filter(delivery_id=delivery.id, status=Status.REQUESTED)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    ) or delivery.created_at
    limit = waiting_since + timedelta(seconds=settings.DELIVERY_ASSIGN_TIMEOUT_SECONDS)
    if delivery.deadline is not None:
        limit = min(limit, delivery.deadline)
    if now >= limit:
        delivery_fail(delivery_id=delivery.id, reason=reason)
        return AssignOutcome("done", delivery)
    delay = min(
        settings.DELIVERY_RETRY_MAX_SECONDS,
        settings.DELIVERY_RETRY_BASE_SECONDS * 2 ** min(attempt, 12),
    )
    delay = delay * (0.75 + random.random() / 2)  # noqa: S311 - jitter, not security
    changed = Delivery.objects.filter(
        pk=delivery.id, status=Status.REQUESTED, attempts=attempt
    ).update(attempts=attempt + 1, next_attempt_at=now + timedelta(seconds=delay))
    if not changed:
        return AssignOutcome("done", delivery)
    return AssignOutcome("wait", delivery, retry_in=delay, attempt=attempt + 1)


def delivery_fail(*, delivery_id: UUID, reason: str) -> bool:
    """Give up: release the drone if one was reserved, mark failed with the reason."""
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or Status.FAILED not in TRANSITIONS[delivery.status]:
            return False
        if delivery.drone_id:
            drone_release(drone_id=delivery.drone_id, delivery_id=delivery.id)
        Delivery.objects.filter(pk=delivery.id).update(
            status=Status.FAILED, failure_reason=reason[:300], next_attempt_at=None, updated_at=now
        )
        DeliveryEvent.objects.create(
            delivery=delivery, status=Status.FAILED, at=now, note=reason[:300]
        )
    delivery.refresh_from_db()
    live.status_write(delivery)
    return True


def delivery_notify_eta(
    *, delivery_id: UUID, delivery: Delivery | None = None, drone_serial: str | None = None
) -> bool:
    """Email the customer the ETA once; a redelivered message does not send it again.

    `delivery` (with its business) and `drone_serial` spare reads when the workflow has just
    assigned the delivery."""
    if delivery is None:
        delivery = (
            Delivery.objects.select_related("business", "drone").filter(pk=delivery_id).first()
        )
    if (
        delivery is None
        or delivery.eta_notified_at is not None
        or delivery.status != Status.ASSIGNED
    ):
        return False
    recipient = delivery.recipient_email or delivery.business.email
    if not recipient:
        return False
    tracking = f"{settings.PUBLIC_BASE_URL}/track/{delivery.tracking_token}"
    eta = delivery.dropoff_eta.strftime("%Y-%m-%d %H:%M %Z") if delivery.dropoff_eta else "soon"
    if drone_serial is None:
        drone_serial = delivery.drone.serial if delivery.drone else ""
    send_mail(
        subject=f"Your drone delivery arrives around {eta}",
        message=(
            f"Hello {delivery.recipient_name or delivery.business.name},\n\n"
            f"Drone {drone_serial} is assigned to your "
            f"delivery {delivery.id}.\nPickup around {delivery.pickup_eta:%H:%M %Z}, "
            f"dropoff around {eta}.\n\nFollow it live: {tracking}\n"
        ),
        from_email=None,
        recipient_list=[recipient],
    )
    # Marked after sending: a worker dying in between sends the email again rather than never.
    Delivery.objects.filter(pk=delivery.id, eta_notified_at__isnull=True).update(
        eta_notified_at=timezone.now()
    )
    return True


# --- changes asked by the business ------------------------------------------------------------


def _locked(delivery_id: UUID, *, business_id: UUID | None = None) -> Delivery:
    """The delivery, row-locked until the transaction ends; scoped to a business when given."""
    deliveries = Delivery.objects.select_for_update().filter(pk=delivery_id)
    if business_id is not None:
        deliveries = deliveries.filter(business_id=business_id)
    delivery = deliveries.first()
    if delivery is None:
        raise NotFound("no such delivery")
    return delivery


def delivery_cancel(*, business_id: UUID, delivery_id: UUID) -> Delivery:
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id, business_id=business_id)
        if delivery.status == Status.CANCELLED:
            return delivery  # cancelling twice is harmless
        if delivery.status not in BEFORE_PICKUP:
            raise Conflict(
                f"the delivery is {delivery.status.replace('_', ' ')}; it can be cancelled only "
                "until the package is picked up",
                code="too_late_to_cancel",
            )
        if delivery.drone_id:
            drone_release(drone_id=delivery.drone_id, delivery_id=delivery.id)
        Delivery.objects.filter(pk=delivery.id).update(
            status=Status.CANCELLED, next_attempt_at=None, updated_at=now
        )
        DeliveryEvent.objects.create(
            delivery=delivery, status=Status.CANCELLED, at=now, note="cancelled by business"
        )
    delivery.refresh_from_db()
    live.status_write(delivery)
    return delivery


def delivery_reschedule(
    *,
    business_id: UUID,
    delivery_id: UUID,
    pickup_time: datetime | None = None,
    dropoff: Place | None = None,
    deadline: datetime | None = None,
) -> Delivery:
    """Move the pickup time or the dropoff before pickup. A reserved drone is released and the
    workflow looks for the best drone again, since the old one may no longer be the right one."""
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id, business_id=business_id)
        if delivery.status not in (Status.REQUESTED, Status.ASSIGNED):
            raise Conflict(
                f"the delivery is {delivery.status.replace('_', ' ')}; it can be rescheduled only "
                "before its drone sets off",
                code="too_late_to_reschedule",
            )
        new = DeliveryRequest(
            pickup=Place(_point(delivery.pickup_lat, delivery.pickup_lon), delivery.pickup_address),
            dropoff=dropoff
            or Place(_point(delivery.dropoff_lat, delivery.dropoff_lon), delivery.dropoff_address),
            package_size=delivery.package_size,
            package_weight_kg=delivery.package_weight_kg,
            pickup_time=pickup_time if pickup_time is not None else delivery.pickup_time,
            deadline=deadline if deadline is not None else delivery.deadline,
        )
        # Only what the business changes is judged against the clock: a pickup time it keeps
        # may have passed while the delivery waited for a drone.
        delivery_request_check(
            replace(
                new,
                pickup_time=pickup_time,
                deadline=deadline if deadline is not None else _future(delivery.deadline, now),
            ),
            now=now,
        )
        _request_again(
            delivery,
            now=now,
            note="rescheduled",
            dropoff_lat=new.dropoff.point.lat,
            dropoff_lon=new.dropoff.point.lon,
            dropoff_address=new.dropoff.address,
            pickup_time=new.pickup_time,
            deadline=new.deadline,
        )
    delivery.refresh_from_db()
    live.status_write(delivery)
    return delivery


def _request_again(delivery: Delivery, *, now: datetime, note: str, **changes: Any) -> None:
    """In the caller's transaction (the delivery row locked): back to `requested` for the
    workflow to start over, with `changes` to the delivery. Its drone is released, and what
    belonged to the last assignment is forgotten: the drone, the ETAs, the email sent about them
    (the new ETAs get theirs), a failure reason. A new attempt, so older messages do nothing."""
    if delivery.drone_id:
        drone_release(drone_id=delivery.drone_id, delivery_id=delivery.id)
    attempts = delivery.attempts + 1
    Delivery.objects.filter(pk=delivery.id).update(
        status=Status.REQUESTED,
        drone=None,
        pickup_eta=None,
        dropoff_eta=None,
        eta_notified_at=None,
        failure_reason="",
        attempts=attempts,
        next_attempt_at=None,
        updated_at=now,
        **changes,
    )
    DeliveryEvent.objects.create(delivery=delivery, status=Status.REQUESTED, at=now, note=note)
    _workflow_enqueue(delivery_id=delivery.id, attempt=attempts)


def _future(moment: datetime | None, now: datetime) -> datetime | None:
    return moment if moment is not None and moment > now else None


def delivery_advance(
    *,
    delivery_id: UUID,
    status: str,
    position: tuple[float, float, float] | None = None,
    note: str = "",
) -> Delivery:
    """Move a delivery to its next stage (telemetry, operators), refusing impossible jumps."""
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id)
        if status not in TRANSITIONS[delivery.status]:
            raise InvalidStageTransition(f"a delivery cannot go from {delivery.status} to {status}")
        if status in FINISHED and delivery.drone_id:
            drone_release(drone_id=delivery.drone_id, delivery_id=delivery.id)
        Delivery.objects.filter(pk=delivery.id).update(status=status, updated_at=now)
        lat, lon, alt = position if position else (None, None, None)
        DeliveryEvent.objects.create(
            delivery=delivery, status=status, at=now, lat=lat, lon=lon, alt_m=alt, note=note
        )
    delivery.refresh_from_db()
    live.status_write(delivery, drone_location=position)
    return delivery


def delivery_retry(*, delivery_id: UUID) -> Delivery:
    """An operator's retry of a failed delivery: back to requested, the workflow starts over."""
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id)
        if delivery.status != Status.FAILED:
            raise InvalidStageTransition(
                f"only a failed delivery can be retried, not a {delivery.status} one"
            )
        _request_again(delivery, now=now, note="retried by operator")
    delivery.refresh_from_db()
    live.status_write(delivery)
    return delivery


# --- idempotency ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any
    headers: dict[str, str]
    replayed: bool = False


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    canonical = json.dumps(
        {"method": method, "path": path, "body": body}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent(
    *,
    business_id: UUID,
    key: str | None,
    method: str,
    path: str,
    fingerprint: str,
    produce: Callable[[], StoredResponse],
) -> StoredResponse:
    """Run `produce` once per key: the same key and request replay the first answer; the same key
    with another request is a conflict. The answer is stored in produce's own transaction, so a
    request that failed leaves no record and may be sent again."""
    if not key:
        return produce()
    if len(key) > 255:
        raise Unprocessable(
            "the Idempotency-Key header is longer than 255 characters", field="Idempotency-Key"
        )
    fresh_since = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    existing = IdempotencyRecord.objects.filter(
        business_id=business_id, key=key, created_at__gte=fresh_since
    ).first()
    if existing is not None:
        return _replay(existing, fingerprint)
    IdempotencyRecord.objects.filter(
        business_id=business_id, key=key, created_at__lt=fresh_since
    ).delete()
    try:
        with transaction.atomic():
            response = produce()
            if response.status < 500:
                IdempotencyRecord.objects.create(
                    business_id=business_id,
                    key=key,
                    method=method,
                    path=path,
                    request_hash=fingerprint,
                    response_status=response.status,
                    response_body=response.body,
                    response_headers=response.headers,
                )
    except IntegrityError:
        # The same key arrived concurrently and the other request stored its answer first.
        existing = IdempotencyRecord.objects.filter(business_id=business_id, key=key).first()
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    return response


def _replay(record: IdempotencyRecord, fingerprint: str) -> StoredResponse:
    if record.request_hash != fingerprint:
        raise Conflict(
            "this Idempotency-Key was already used with a different request; use a new key",
            code="idempotency_key_reused",
        )
    return StoredResponse(
        record.response_status, record.response_body, record.response_headers, replayed=True
    )


def idempotency_prune() -> int:
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted

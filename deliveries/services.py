"""Writes to deliveries: ingestion with the outbox, the workflow's steps, cancel and reschedule.

Every status change is a compare-and-swap on the current status, so that two workers, a worker
and a cancelling business, or a redelivered message can never both win.
"""

from __future__ import annotations

import functools
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
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from airspace.routing import InsideZone, NoRoute
from deliveries.lifecycle import (
    BEFORE_PICKUP,
    FINISHED,
    Assignment,
    StaleDelivery,
    deliveries_assign,
    deliveries_lock,
    delivery_move,
)
from deliveries.lifecycle import (
    InvalidStageTransition as InvalidStageTransition,  # raised through these services
)
from deliveries.models import Delivery, DeliveryEvent, IdempotencyRecord, OutboxMessage, Quote
from drones.flight import route_km
from drones.geo import Point, distance_km
from drones.routes import LegRouter, Router, route_json, router_for
from drones.selectors import (
    FlightPlan,
    delivery_impossible_reason,
    drone_plan_best,
    fleet_pairs,
)
from drones.services import (
    MAX_CLAIM_ATTEMPTS,
    DeliveryImpossible,
    drone_claim,
    drones_claim,
)
from packages.services import packages_upsert
from portal import metrics, telemetry
from portal.db import execute_together, prepare_insert
from portal.errors import Conflict, LimitReached, NotFound, Unprocessable

logger = logging.getLogger(__name__)

Status = Delivery.Status
WORKFLOW_TASK = "workers.delivery_process"

CLOCK_SKEW = timedelta(seconds=60)


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
    request: DeliveryRequest,
    *,
    now: datetime | None = None,
    fleet_max_age_seconds: float = 0.0,
    router: Router | None = None,
) -> list[Point]:
    """Refuse what is well-formed but impossible, saying why (the API answers 422). Returns the
    route from the pickup to the dropoff, around the no-fly zones active from the pickup time
    (or now) on."""
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
    days = settings.DELIVERY_MAX_DAYS_AHEAD
    if request.pickup_time is not None and request.pickup_time > now + timedelta(days=days):
        raise Unprocessable(
            f"the pickup time can be at most {days} days ahead "
            f"(until {(now + timedelta(days=days)).isoformat(timespec='minutes')})",
            field="pickup_time",
            code="pickup_time_too_far",
        )
    if request.deadline is not None and request.deadline > now + timedelta(days=days + 1):
        raise Unprocessable(
            f"the deadline can be at most {days + 1} days ahead",
            field="deadline",
            code="deadline_too_far",
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
    router = router or router_for(request.pickup_time or now)
    route = _leg_route(request, router)
    # Whether some drone has the range: by the planned leg and straight lines from and to the
    # bases, the least they could be. A detour around zones near a base can still put the trip
    # out of range: the workflow, which plans every leg, then fails it with the reason. Planning
    # the bases' legs here too would cost each request two more routes.
    reason = delivery_impossible_reason(
        pickup=request.pickup.point,
        dropoff=request.dropoff.point,
        weight_kg=request.package_weight_kg,
        max_age_seconds=fleet_max_age_seconds,
        router=LegRouter(request.pickup.point, request.dropoff.point, route),
    )
    if reason:
        raise DeliveryImpossible(reason)
    return route


def _leg_route(request: DeliveryRequest, router: Router) -> list[Point]:
    """The way from the pickup to the dropoff; 422 when a stop lies in a no-fly zone (the
    pickup named first when both do) or the zones leave no way between them. Planning the
    route finds a stop inside a zone, so no lookup of its own is needed."""
    try:
        return router.route(request.pickup.point, request.dropoff.point)
    except InsideZone as exc:
        name = "pickup" if exc.point == request.pickup.point else "dropoff"
        raise Unprocessable(
            f"the {name} lies inside the no-fly zone '{exc.zone.name}'",
            field=name,
            code="inside_no_fly_zone",
        ) from None
    except NoRoute as exc:
        names = ", ".join(f"'{zone.name}'" for zone in exc.zones) or "in the way"
        raise Unprocessable(
            f"no route from the pickup to the dropoff keeps clear of the no-fly zones {names}",
            field="dropoff",
            code="no_route",
        ) from None


# --- quotes -----------------------------------------------------------------------------------


def price_for(request: DeliveryRequest, *, route: list[Point] | None = None) -> Decimal:
    """The price of the trip from the pickup to the dropoff, by its route (around no-fly zones)
    when given, else the straight line."""
    km = Decimal(str(route_km(route or [request.pickup.point, request.dropoff.point])))
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
    router = router_for(request.pickup_time or now)
    route = delivery_request_check(request, now=now, router=router)
    plan = drone_plan_best(
        pickup=request.pickup.point,
        dropoff=request.dropoff.point,
        weight_kg=request.package_weight_kg,
        start=now,
        not_before=request.pickup_time,
        router=router,
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
        price_amount=price_for(request, route=route),
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
    *,
    business_id: UUID,
    request: DeliveryRequest,
    quote_id: UUID | None = None,
    customer_id: int | None = None,
) -> Delivery:
    """Store the delivery and its first event in one transaction; publish the workflow
    message after commit. `customer_id` is the site's customer who scheduled it.

    If the broker is down the message goes to the outbox and the relay publishes it later (see
    `_workflow_enqueue`). A request that cannot be stored raises: it is never acknowledged. The
    rows are prepared first and written in one statement (portal.db.execute_together).
    """
    now = timezone.now()
    route = delivery_request_check(
        request, now=now, fleet_max_age_seconds=settings.FLEET_SHAPE_CACHE_SECONDS
    )
    quote = (
        _quote_for(business_id=business_id, quote_id=quote_id, request=request)
        if quote_id
        else None
    )
    book_at = booking_time(request.pickup_time, now=now)
    over_limit = deliveries_limit_query(
        business_id=business_id, customer_id=customer_id, ahead=book_at is not None
    )
    delivery = Delivery(
        business_id=business_id,
        customer_id=customer_id,
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
        price_amount=quote.price_amount if quote else price_for(request, route=route),
        price_currency=quote.price_currency if quote else settings.PRICE_CURRENCY,
        book_at=book_at,
        route={"to_dropoff": route_json(route)},
        traceparent=telemetry.traceparent(),
    )
    rows = prepare_insert(
        delivery, DeliveryEvent(delivery=delivery, status=Status.REQUESTED, at=now)
    )
    written = execute_together(rows, unless=over_limit.query if over_limit else None)
    if not written and over_limit is not None:  # only a limit refuses
        raise LimitReached(over_limit.message)
    if delivery.book_at is None:
        # Published as soon as the rows are committed: now, or with the caller's transaction.
        _workflow_enqueue(delivery_id=delivery.id)
    telemetry.annotate(delivery_id=delivery.id, business_id=business_id)
    metrics.DELIVERY_STAGE_CHANGES.inc(stage=Status.REQUESTED)
    return delivery


@dataclass(frozen=True)
class LimitQuery:
    query: tuple[str, list[Any]]  # one row, one boolean: true when the limit is reached
    message: str


def deliveries_limit_query(
    *, business_id: UUID, customer_id: int | None, ahead: bool
) -> LimitQuery | None:
    """The check that the business does not already have BUSINESS_MAX_ACTIVE_DELIVERIES under
    way (or BUSINESS_MAX_SCHEDULED_DELIVERIES booked ahead, for a later pickup), so that no
    business can hold the fleet; None when the limit is off. A site customer's delivery (of
    the customers' business, which serves every customer of the site) counts against that
    customer's CUSTOMER_MAX_* instead. delivery_create runs it with the INSERTs, in the same
    statement on PostgreSQL.

    A count, not a lock: two requests at once may both pass at the limit, which lets a business
    exceed it by its concurrency at most. It is on every request's path, so its SQL is written
    once per process (building it with the ORM each time cost more than running it) and reads
    the partial indexes `delivery_business_held`/`_ahead`: at most `limit` entries, however
    many finished deliveries the business has."""
    who = "customer" if customer_id is not None else "business"
    limit = getattr(settings, f"{who.upper()}_MAX_{'SCHEDULED' if ahead else 'ACTIVE'}_DELIVERIES")
    if limit <= 0:
        return None
    what = "booked ahead" if ahead else "under way"
    holder = customer_id if customer_id is not None else business_id
    # As the database takes it (a UUID is a string of hex digits on SQLite).
    holder = Delivery._meta.get_field(who).target_field.get_db_prep_value(holder, connection)  # type: ignore[union-attr]
    return LimitQuery(
        (_held_sql(who, ahead=ahead), [limit, holder, limit]),
        f"this {who} already has {limit} deliveries {what}, the most allowed; "
        "retry when some have finished",
    )


@functools.cache
def _held_sql(who: str, *, ahead: bool) -> str:
    """Whether a business or customer holds `limit` deliveries (parameters: the limit, the
    business or customer, the limit): under way, or booked ahead. The statuses are written in,
    not bound, so that the database matches the statement to the partial indexes that carry
    the same conditions."""
    quote = connection.ops.quote_name
    column = f"{who}_id"  # the foreign key's column
    if ahead:
        held = f"{quote('status')} = '{Status.REQUESTED}' AND {quote('book_at')} IS NOT NULL"
    else:
        finished = ", ".join(f"'{status}'" for status in sorted(FINISHED))
        held = f"{quote('status')} NOT IN ({finished}) AND {quote('book_at')} IS NULL"
    table = quote(Delivery._meta.db_table)
    # Names and statuses are the model's own; the business or customer and the limit are bound.
    return f"SELECT COUNT(*) >= %s FROM (SELECT 1 FROM {table} WHERE {quote(column)} = %s AND {held} LIMIT %s) held"  # noqa: S608, E501  # nosec B608 # names and statuses are the model's own


def booking_time(pickup_time: datetime | None, *, now: datetime) -> datetime | None:
    """When a delivery picked up at `pickup_time` should look for its drone: None for now, or
    DELIVERY_BOOKING_LEAD_SECONDS before the pickup, so that a pickup days ahead holds no drone
    until shortly before it is needed."""
    if pickup_time is None:
        return None
    book_at = pickup_time - timedelta(seconds=settings.DELIVERY_BOOKING_LEAD_SECONDS)
    return book_at if book_at > now else None


def deliveries_book_due(*, batch: int = 500) -> int:
    """Start the workflow of scheduled deliveries whose booking time has come (beat, every few
    seconds). The booking time is cleared with a compare-and-swap, so one message each."""
    now = timezone.now()
    due = list(
        Delivery.objects.filter(status=Status.REQUESTED, book_at__lte=now).values_list(
            "id", "attempts", "traceparent"
        )[:batch]
    )
    started = 0
    for delivery_id, attempts, traceparent in due:
        with transaction.atomic():
            if Delivery.objects.filter(
                pk=delivery_id, status=Status.REQUESTED, book_at__lte=now
            ).update(book_at=None, next_attempt_at=None):
                _workflow_enqueue(
                    delivery_id=delivery_id, attempt=attempts, traceparent=traceparent
                )
                started += 1
    return started


def _workflow_enqueue(*, delivery_id: UUID, attempt: int = 0, traceparent: str = "") -> None:
    """In the caller's transaction: publish the workflow message once the transaction commits.

    The committed delivery row is the outbox record: a delivery in `requested` whose next
    attempt is overdue is republished by the sweeper, so a process that dies between commit
    and publish loses nothing. A publish the broker refuses is stored as an OutboxMessage for
    the relay, which tries again within seconds rather than the sweeper's minutes. The usual
    case so costs no write beyond the delivery and its event.

    `traceparent`: the trace of the request that created the delivery, for a message published
    later on its behalf (booking, sweeper), which then continues that trace.
    """
    payload = {"delivery_id": str(delivery_id), "attempt": attempt}

    def publish() -> None:
        with telemetry.continued(traceparent, "delivery.publish", delivery_id=delivery_id):
            outbox_publish(task=WORKFLOW_TASK, payload=payload)

    # robust: the request is committed and answered 202 whatever happens here; outbox_publish
    # handles the broker, and a database failure after commit is left to the sweeper.
    transaction.on_commit(publish, robust=True)


def outbox_publish(
    *,
    task: str,
    payload: dict[str, Any],
    message_id: UUID | None = None,
    timeout: float | None = None,
) -> bool:
    """Send one message to the broker; on failure, or past `timeout` seconds (default
    BROKER_PUBLISH_TIMEOUT_MS, a request's budget), keep it in the outbox for the relay.

    `message_id` is the stored message being relayed, None for a first attempt."""
    from portal import broker

    try:
        broker.send_task(task, payload, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the message for the relay
        logger.warning("%s %s not published, the relay will retry: %s", task, payload, exc)
        error = f"{type(exc).__name__}: {exc}"[:300]
        if message_id is None:
            OutboxMessage.objects.create(
                task=task,
                payload=payload,
                attempts=1,
                last_error=error,
                traceparent=telemetry.traceparent(),
            )
        else:
            OutboxMessage.objects.filter(pk=message_id).update(
                attempts=F("attempts") + 1, last_error=error
            )
        return False
    if message_id is not None:
        OutboxMessage.objects.filter(pk=message_id).update(published_at=timezone.now())
    return True


RELAY_PUBLISH_TIMEOUT_SECONDS = 5.0


def outbox_relay(*, older_than_seconds: float = 5.0, batch: int = 500) -> int:
    """Publish stored messages that were not published after their commit. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    pending = list(
        OutboxMessage.objects.filter(published_at__isnull=True, created_at__lt=cutoff)
        .order_by("created_at")
        .values("id", "task", "payload", "traceparent")[:batch]
    )
    published = 0
    for message in pending:
        # Inside the trace the message was first published in, not the relay's own.
        with telemetry.continued(
            message["traceparent"], "outbox.relay", outbox_message_id=message["id"]
        ):
            # No request waits on the relay: it may give a slow broker longer than the budget.
            sent = outbox_publish(
                task=message["task"],
                payload=message["payload"],
                message_id=message["id"],
                timeout=RELAY_PUBLISH_TIMEOUT_SECONDS,
            )
        if sent:
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
    # A delivery waiting for its booking time has no message in flight: deliveries_book_due
    # starts it.
    stuck = Delivery.objects.filter(
        overdue, status=Status.REQUESTED, book_at__isnull=True
    ).values_list("id", "attempts", "traceparent")[:500]
    count = 0
    for delivery_id, attempts, traceparent in stuck:
        with transaction.atomic():
            updated = Delivery.objects.filter(
                pk=delivery_id, status=Status.REQUESTED, attempts=attempts
            ).update(next_attempt_at=now + grace)
            if updated:
                _workflow_enqueue(
                    delivery_id=delivery_id, attempt=attempts, traceparent=traceparent
                )
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
    """Book the best drone and move the delivery to `assigned`.

    The search for the drone only reads, before any transaction; the claim of the drone (a
    compare-and-swap on the drone row) and the status change (a compare-and-swap on the
    delivery's status and version, deliveries.lifecycle) commit together in one short
    transaction. Safe to run twice and concurrently: a stale attempt (another message already
    moved on) does nothing, and a drone taken meanwhile is passed over for the next best.
    `delivery` spares a read when the caller has just loaded it.
    """
    if delivery is None:
        delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Status.REQUESTED:
        return AssignOutcome("done", delivery)
    if delivery.attempts != attempt or delivery.book_at is not None:
        return AssignOutcome("done", delivery)  # a newer message, or not yet time to book
    now = timezone.now()
    pickup = _point(delivery.pickup_lat, delivery.pickup_lon)
    dropoff = _point(delivery.dropoff_lat, delivery.dropoff_lon)
    router = router_for(max(now, delivery.pickup_time or now))
    lost: set[UUID] = set()
    for _ in range(MAX_CLAIM_ATTEMPTS):
        try:
            plan = drone_plan_best(
                pickup=pickup,
                dropoff=dropoff,
                weight_kg=delivery.package_weight_kg,
                start=now,
                not_before=delivery.pickup_time,
                exclude=frozenset(lost),
                router=router,
            )
        except NoRoute as exc:
            # A zone opened across the way since the request was accepted.
            names = ", ".join(f"'{zone.name}'" for zone in exc.zones) or "in the way"
            return _wait_or_give_up(
                delivery, attempt, now, f"no route keeps clear of the no-fly zones {names}"
            )
        if plan is None:
            break
        if delivery.deadline is not None and plan.dropoff_eta > delivery.deadline:
            return _wait_or_give_up(
                delivery, attempt, now, "no drone can deliver before the deadline"
            )
        try:
            with transaction.atomic():
                # The delivery locked before its drone is booked, as in a round: two workers
                # on one delivery queue here, and the second finds it changed.
                if not deliveries_lock([delivery]):
                    raise StaleDelivery(f"delivery {delivery.pk} changed meanwhile")
                if not drone_claim(drone_id=plan.drone_id, delivery_id=delivery.id):
                    lost.add(plan.drone_id)  # taken between our read and our write
                    continue
                booking = _assignment(delivery, plan)
                delivery_move(
                    delivery,
                    Status.ASSIGNED,
                    at=now,
                    note=booking.note,
                    position=booking.position,
                    changes=booking.changes,
                )
        except (StaleDelivery, IntegrityError):
            # Cancelled or taken on by another message meanwhile (the unique booking column
            # says when another worker booked a drone for it first): nothing is left claimed.
            return AssignOutcome("done", delivery)
        return AssignOutcome("assigned", delivery, drone_serial=plan.drone_serial)
    if not lost:
        # Asked only now: when a drone is free, the answer is known to be no.
        reason = delivery_impossible_reason(
            pickup=pickup, dropoff=dropoff, weight_kg=delivery.package_weight_kg, router=router
        )
        if reason is not None:
            delivery_fail(delivery_id=delivery.id, reason=reason)
            return AssignOutcome("done", delivery)
    return _wait_or_give_up(delivery, attempt, now, "no drone became free in time")


def _assignment(delivery: Delivery, plan: FlightPlan) -> Assignment:
    position = plan.drone_position
    return Assignment(
        delivery,
        changes={
            "drone_id": plan.drone_id,
            "pickup_eta": plan.pickup_eta,
            "dropoff_eta": plan.dropoff_eta,
            "route": {leg: route_json(r) for leg, r in plan.routes.items()},
        },
        note=f"drone {plan.drone_serial}",
        position=(position.lat, position.lon, 0.0) if position else None,
    )


def deliveries_assign_round(*, first: Delivery, attempt: int) -> AssignOutcome | None:
    """Assign `first` (the delivery of the message at hand, attempt `attempt`) together with
    up to DELIVERY_ASSIGN_ROUND - 1 new deliveries whose own messages are still queued: their
    package documents in one write, a search per delivery (each drone chosen passed over for
    the next), then every drone claimed, every delivery moved, its event, emails and webhooks
    recorded in one transaction of a few statements (drones_claim, lifecycle.deliveries_assign).
    Their own messages then find them assigned and stop.

    Only the plain case is done here: a delivery with no drone free, no route or a deadline it
    would miss is left as it was, to its own message (the one-by-one path, delivery_assign);
    one whose drone another worker booked first searches again, up to ROUND_PASSES times.
    Returns `first`'s outcome when it was assigned, else None (and the caller takes the
    one-by-one path).

    The others are read with SKIP LOCKED (where rows can be locked) and marked in the same
    short transaction (next_attempt_at, ROUND_MARK_SECONDS ahead), so that concurrent rounds
    take different ones and a delivery taken once is not taken by another round; its own
    message still comes. Should a worker die mid-round, the deliveries' messages are still
    queued.
    """
    size = settings.DELIVERY_ASSIGN_ROUND
    if (
        size <= 1
        or first.status != Status.REQUESTED
        or first.attempts != attempt
        or first.book_at is not None
        or first.pickup_time is not None
    ):
        return None
    now = timezone.now()
    others = _round_take(first.pk, size - 1, now)
    if not others:
        return None
    packages_upsert(others)
    fleet = fleet_pairs()
    router = router_for(now)
    waiting = [first, *others]
    passed_over: set[UUID] = set()  # drones booked in this round, or lost to another
    first_plan: FlightPlan | None = None
    for _ in range(ROUND_PASSES):
        chosen = _round_plan(waiting, now, router, fleet, passed_over)
        if not chosen:
            break
        with transaction.atomic():
            # The deliveries first, as the one-by-one path does: whoever locks one first
            # books its drone, and the other finds it changed.
            unchanged = deliveries_lock([d for d, _ in chosen])
            chosen = [(d, plan) for d, plan in chosen if d.pk in unchanged]
            claimed = drones_claim({plan.drone_id: d.pk for d, plan in chosen})
            moved = {
                d.pk
                for d in deliveries_assign(
                    [_assignment(d, plan) for d, plan in chosen if plan.drone_id in claimed],
                    at=now,
                )
            }
        passed_over |= {plan.drone_id for _, plan in chosen}
        first_plan = first_plan or next(
            (p for d, p in chosen if d is first and d.pk in moved), None
        )
        # Those whose drone another worker took meanwhile search again, passing it over.
        waiting = [d for d, plan in chosen if plan.drone_id not in claimed]
        logger.info("round: %d assigned, %d drones lost", len(moved), len(waiting))
    if first_plan is None:
        return None
    return AssignOutcome("assigned", first, drone_serial=first_plan.drone_serial)


# Searches of a round for the deliveries that lost their drone to another worker.
ROUND_PASSES = 3
# How long a delivery taken by a round is left to it: its own message's turn comes anyway,
# this only keeps other rounds off it (and the sweeper waits this long more).
ROUND_MARK_SECONDS = 30


def _round_plan(
    deliveries: list[Delivery],
    now: datetime,
    router: Router,
    fleet: list[Any],
    passed_over: set[UUID],
) -> list[tuple[Delivery, FlightPlan]]:
    """Each delivery's best drone in turn, every drone chosen passed over for the next; the
    deliveries with no route or a deadline they would miss are left out; none after the first
    that finds no drone free (the rest would find none either)."""
    chosen: list[tuple[Delivery, FlightPlan]] = []
    for delivery in deliveries:
        try:
            plan = drone_plan_best(
                pickup=_point(delivery.pickup_lat, delivery.pickup_lon),
                dropoff=_point(delivery.dropoff_lat, delivery.dropoff_lon),
                weight_kg=delivery.package_weight_kg,
                start=now,
                exclude=frozenset(passed_over | {p.drone_id for _, p in chosen}),
                router=router,
                fleet=fleet,
            )
        except NoRoute:
            continue
        if plan is None:
            break
        if delivery.deadline is None or plan.dropoff_eta <= delivery.deadline:
            chosen.append((delivery, plan))
    return chosen


def _round_take(first_id: UUID, limit: int, now: datetime) -> list[Delivery]:
    """Up to `limit` new deliveries (requested, to be assigned now, never tried: no
    next_attempt_at), oldest first, marked as taken by this round."""
    new = Delivery.objects.filter(
        status=Status.REQUESTED,
        next_attempt_at__isnull=True,
        book_at__isnull=True,
        pickup_time__isnull=True,
    ).exclude(pk=first_id)
    taking = new.order_by("created_at")
    if connection.features.has_select_for_update_skip_locked:
        taking = taking.select_for_update(skip_locked=True)
    # Read, then marked: a LIMIT in the UPDATE's own subquery may be read again, and match
    # more rows, when PostgreSQL rechecks a row another transaction changed.
    with transaction.atomic():  # the locks' (and SQLite's write's) transaction
        taken = list(taking[:limit])
        if taken:
            # Not the message's own delivery, which this transaction has not locked: another
            # round may take it too, and the first to lock it (deliveries_lock) assigns it.
            Delivery.objects.filter(pk__in=[d.pk for d in taken]).update(
                next_attempt_at=now + timedelta(seconds=ROUND_MARK_SECONDS)
            )
    return taken


def delivery_state(delivery_id: UUID) -> tuple[str, int] | None:
    """The delivery's status and attempt, None if there is no such delivery: one short
    statement."""
    table = connection.ops.quote_name(Delivery._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status, attempts FROM {table} WHERE id = %s",  # noqa: S608  # nosec B608 # a table name
            [Delivery._meta.pk.get_db_prep_value(delivery_id, connection)],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def _wait_or_give_up(delivery: Delivery, attempt: int, now: datetime, reason: str) -> AssignOutcome:
    """No suitable drone free now: look again later with backoff, or fail past the limits.

    The time limit counts from when the delivery last became requested (created, rescheduled
    or retried by an operator: its latest `requested` event), or from its pickup time when that
    is later: a delivery for tomorrow morning may wait for a drone from tomorrow morning."""
    waiting_since = (
        DeliveryEvent.objects.filter(delivery_id=delivery.id, status=Status.REQUESTED)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    ) or delivery.created_at
    if delivery.pickup_time is not None:
        waiting_since = max(waiting_since, delivery.pickup_time)
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


# How the workflow's reasons for giving up on an outage or an error begin (deliveries.reasons
# gives customers and businesses plain words for them; the rest is for operators).
UNAVAILABLE_REASON = "a service it needs was unavailable until its deadline"
STEP_FAILED_REASON = "a step of the workflow failed"
DEAD_LETTER_REASON = "its workflow message was delivered too many times without finishing"


def delivery_retry_later(*, delivery_id: UUID, attempt: int, reason: str) -> AssignOutcome:
    """A step of attempt `attempt` failed: the next attempt after a backoff (the outcome says
    when), or fail with `reason` past the delivery's assignment deadline. Nothing (done) when
    another message already moved the delivery on."""
    delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Status.REQUESTED or delivery.attempts != attempt:
        return AssignOutcome("done", delivery)
    return _wait_or_give_up(delivery, attempt, timezone.now(), reason)


def delivery_fail(*, delivery_id: UUID, reason: str) -> bool:
    """Give up: mark failed with the reason (its drone, if any, is released). False when the
    delivery is gone or already past failing (delivered, cancelled, failed).

    The reason, with any error's detail, is for operators; the event's note, which businesses
    read, is the reason in plain words (deliveries.reasons)."""
    from deliveries.reasons import public_reason

    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None:
            return False
        try:
            delivery_move(
                delivery,
                Status.FAILED,
                note=public_reason(reason),
                changes={"failure_reason": reason[:300]},
            )
        except InvalidStageTransition:
            return False
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


def delivery_cancel(*, business_id: UUID, delivery_id: UUID, note: str = "") -> Delivery:
    """Cancel until the package is picked up; the drone is released (one in the air goes
    home, told so in the answer to its next telemetry report)."""
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
        delivery_move(delivery, Status.CANCELLED, note=note or "cancelled by business")
    return delivery


def delivery_reschedule(
    *,
    business_id: UUID,
    delivery_id: UUID,
    pickup_time: datetime | None = None,
    dropoff: Place | None = None,
    deadline: datetime | None = None,
) -> Delivery:
    """Move the pickup time or the dropoff before the drone sets off, re-priced for the new
    trip. A booked drone is released and the workflow looks for the best drone again, since the
    old one may no longer be the right one."""
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
            expedited=delivery.expedited,
            confirmation_required=delivery.confirmation_required,
        )
        # Only what the business changes is judged against the clock: a pickup time it keeps
        # may have passed while the delivery waited for a drone. The zones are those active
        # from the pickup time on, whether it changes or not.
        route = delivery_request_check(
            replace(
                new,
                pickup_time=pickup_time,
                deadline=deadline if deadline is not None else _future(delivery.deadline, now),
            ),
            now=now,
            router=router_for(max(now, new.pickup_time or now)),
        )
        changes: dict[str, Any] = {
            "dropoff_lat": new.dropoff.point.lat,
            "dropoff_lon": new.dropoff.point.lon,
            "dropoff_address": new.dropoff.address,
            "pickup_time": new.pickup_time,
            "deadline": new.deadline,
            "route": {"to_dropoff": route_json(route)},
        }
        if dropoff is not None:
            # A new trip, a new price; the quote no longer describes it.
            changes.update(price_amount=price_for(new, route=route), quote=None)
        _request_again(delivery, now=now, note="rescheduled", changes=changes)
    return delivery


def _request_again(
    delivery: Delivery, *, now: datetime, note: str, changes: dict[str, Any] | None = None
) -> None:
    """In the caller's transaction (the delivery row locked): back to `requested` for the
    workflow to start over, with `changes` to the delivery. The lifecycle releases the drone
    and forgets the last assignment; a new attempt, so older messages do nothing. A pickup far
    ahead waits for its booking time instead of a message now."""
    attempts = delivery.attempts + 1
    pickup_time = (changes or {}).get("pickup_time", delivery.pickup_time)
    book_at = booking_time(pickup_time, now=now)
    delivery_move(
        delivery,
        Status.REQUESTED,
        at=now,
        note=note,
        changes={**(changes or {}), "attempts": attempts, "book_at": book_at},
    )
    if book_at is None:
        _workflow_enqueue(delivery_id=delivery.id, attempt=attempts)


def _future(moment: datetime | None, now: datetime) -> datetime | None:
    return moment if moment is not None and moment > now else None


class RetryRefused(Conflict):
    """An operator's retry that could only fail again at once; the message says what to change."""

    code = "retry_refused"


def delivery_retry(*, delivery_id: UUID, operator: str = "") -> Delivery:
    """An operator's retry of a failed delivery: back to requested, the workflow starts over.

    Refused (RetryRefused, saying why) when the workflow could only give up again at once: its
    deadline has passed, or no drone could ever make the trip as it stands (a pickup or dropoff
    inside a no-fly zone, no way around the zones, too heavy or too far)."""
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id)
        if delivery.status != Status.FAILED:
            raise InvalidStageTransition(
                f"only a failed delivery can be retried, not a {delivery.status} one"
            )
        _retry_check(delivery, now=now)
        _request_again(delivery, now=now, note=f"retried by {_operator(operator)}")
    return delivery


def _operator(name: str) -> str:
    return f"operator {name}" if name else "an operator"


def _when(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M %Z}"


def _retry_check(delivery: Delivery, *, now: datetime) -> None:
    if delivery.deadline is not None and delivery.deadline <= now:
        raise RetryRefused(
            f"the deadline {_when(delivery.deadline)} has passed; change it first",
            field="deadline",
        )
    pickup_time = _future(delivery.pickup_time, now)
    trip = DeliveryRequest(
        pickup=Place(_point(delivery.pickup_lat, delivery.pickup_lon)),
        dropoff=Place(_point(delivery.dropoff_lat, delivery.dropoff_lon)),
        package_size=delivery.package_size,
        package_weight_kg=delivery.package_weight_kg,
        pickup_time=pickup_time,
        deadline=delivery.deadline,
    )
    try:
        delivery_request_check(trip, now=now, router=router_for(pickup_time or now))
    except Unprocessable as exc:
        raise RetryRefused(f"{exc.message}; it would fail again", field=exc.field) from None


def delivery_deadline_check(
    delivery: Delivery, deadline: datetime | None, *, now: datetime
) -> None:
    """Whether an operator may give this delivery this deadline (None: no deadline): only a failed
    delivery's, ahead of now, and after its pickup time when that is ahead too."""
    if delivery.status != Status.FAILED:
        raise Conflict(
            f"the delivery is {delivery.status.replace('_', ' ')}; only a failed delivery's "
            "deadline can be changed",
            code="deadline_not_editable",
        )
    if deadline is None:
        return
    days = settings.DELIVERY_MAX_DAYS_AHEAD + 1
    if deadline <= now:
        raise Unprocessable(
            f"the new deadline {_when(deadline)} is in the past",
            field="deadline",
            code="deadline_in_past",
        )
    if deadline > now + timedelta(days=days):
        raise Unprocessable(
            f"the deadline can be at most {days} days ahead",
            field="deadline",
            code="deadline_too_far",
        )
    pickup_time = _future(delivery.pickup_time, now)
    if pickup_time is not None and deadline <= pickup_time:
        raise Unprocessable(
            f"the deadline must come after the pickup time {_when(pickup_time)}",
            field="deadline",
            code="deadline_before_pickup",
        )


def delivery_deadline_set(
    *, delivery_id: UUID, deadline: datetime | None, operator: str = ""
) -> Delivery:
    """An operator moves (or removes, with None) the deadline of a failed delivery, so that it
    can be retried (delivery_deadline_check says what is allowed). It stays failed until it is
    retried."""
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id)
        delivery_deadline_check(delivery, deadline, now=now)
        Delivery.objects.filter(pk=delivery.pk).update(deadline=deadline, updated_at=now)
    logger.info(
        "deadline of delivery %s set to %s by %s", delivery.pk, deadline, _operator(operator)
    )
    delivery.deadline = deadline
    return delivery


def delivery_replace_drone(*, delivery_id: UUID, reason: str) -> Delivery | None:
    """Its drone cannot go on (grounded) and the package is not aboard: back to `requested`
    for another drone. None when there is nothing to do (already past pickup, or finished)."""
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.status not in BEFORE_PICKUP - {Status.REQUESTED}:
            return None
        _request_again(delivery, now=now, note=reason)
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

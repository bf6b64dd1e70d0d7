"""What moves drones and their deliveries: telemetry reports, drones losing contact, operators
grounding drones. And what each drone is told in the answer to its reports (its orders).

A report is a drone's position, speed, heading and battery at a time. Each drone's latest
applied report is kept in Redis (`drone:{id}:last`); the database gets the position at most
every TELEMETRY_DB_WRITE_SECONDS per drone and at every change of state. The stages of a
delivery are read from the position, as a ground station would (drones.flight): the drone
left the ground, is over the pickup at the handling altitude, has risen from it, and so on;
every such change goes through the lifecycle (deliveries.lifecycle.delivery_move), stamped with
the report's time and position. ETAs are recomputed from every report, from the route left and
the drone's recent ground speed, and written to the live status.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_redis import get_redis_connection

from airspace.routing import NoRoute
from deliveries import announce, live
from deliveries.lifecycle import (
    BEFORE_PICKUP,
    PACKAGE_ABOARD,
    WITH_DRONE,
    InvalidStageTransition,
    Position,
    StaleDelivery,
    delivery_flag,
    delivery_move,
    delivery_reroute,
)
from deliveries.models import Delivery
from drones import flight
from drones.geo import Point
from drones.models import Drone
from drones.routes import PLAN_WINDOW, route_json, route_points, router_for
from portal import metrics
from portal import telemetry as tracing
from portal.errors import Conflict, NotFound
from portal.timefmt import iso

logger = logging.getLogger(__name__)

Status = Delivery.Status
State = Drone.State
LAST_TTL_SECONDS = 24 * 3600
# How much the newest cruise speed counts in the recent ground speed.
SPEED_WEIGHT = 0.5
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class Report:
    drone: str  # serial
    time: datetime
    lat: float
    lon: float
    alt_m: float
    ground_speed_mps: float
    heading: float
    battery_pct: float

    @property
    def position(self) -> Point:
        return Point(self.lat, self.lon)

    @property
    def t_ms(self) -> int:
        return int(self.time.timestamp() * 1000)


@dataclass(frozen=True)
class Reporter:
    """Who reports: one drone's key, or a gateway's key for the drones of some bases."""

    key_prefix: str
    drone_id: UUID | None = None
    base_ids: frozenset[UUID] = frozenset()

    def may_report_for(self, drone: Drone) -> bool:
        return drone.pk == self.drone_id or drone.base_id in self.base_ids


@dataclass
class ItemResult:
    index: int
    drone: str
    result: str  # accepted, ignored or refused
    reason: str = ""


@dataclass
class BatchOutcome:
    results: list[ItemResult] = field(default_factory=list)
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Last:
    """A drone's latest applied report, as kept in Redis."""

    t: int = 0  # ms
    lat: float = 0.0
    lon: float = 0.0
    alt: float = 0.0
    v: float = 0.0
    hdg: float = 0.0
    bat: float = 0.0
    db: int = 0  # ms of the report last written to the database
    kmh: float | None = None  # recent cruise speed, km/h of sim time
    stage_t: int = 0  # ms of the report that moved its delivery to the current stage
    home: list[list[float]] | None = None  # the route home, planned once per flight home

    @classmethod
    def parse(cls, raw: bytes | None) -> _Last | None:
        if not raw:
            return None
        return cls(**json.loads(raw))

    def dump(self) -> str:
        return json.dumps(self.__dict__)


def _last_key(drone_id: UUID) -> str:
    return f"drone:{drone_id}:last"


# --- telemetry in ----------------------------------------------------------------------------


def telemetry_apply(*, reporter: Reporter, reports: list[tuple[int, Report]]) -> BatchOutcome:
    """Apply a batch of reports (with their indexes in the batch): each drone's in time order,
    ignoring one not newer than the last applied (out of order, or a duplicate), refusing one
    for a drone the reporter may not report for. Returns each item's result and the orders of
    every drone that reported."""
    outcome = BatchOutcome()
    if not reports:
        return outcome
    serials = {report.drone for _, report in reports}
    drones = {
        d.serial: d
        for d in Drone.objects.filter(serial__in=serials).select_related("model", "base")
    }
    now = timezone.now()
    mine: dict[str, list[tuple[int, Report]]] = defaultdict(list)
    for index, report in reports:
        drone = drones.get(report.drone)
        if drone is None:
            outcome.results.append(
                ItemResult(index, report.drone, "refused", f"there is no drone {report.drone}")
            )
        elif not reporter.may_report_for(drone):
            outcome.results.append(
                ItemResult(
                    index, report.drone, "refused", f"this key may not report for {report.drone}"
                )
            )
        elif report.time > now + CLOCK_SKEW:
            outcome.results.append(
                ItemResult(index, report.drone, "refused", "the report's time is in the future")
            )
        else:
            mine[report.drone].append((index, report))
    if not mine:
        _count(outcome)
        return outcome

    flying = [drones[serial] for serial in mine]
    deliveries = {
        d.pk: d
        for d in Delivery.objects.filter(
            pk__in=[drone.assigned_delivery_id for drone in flying if drone.assigned_delivery_id]
        )
    }
    redis = get_redis_connection("default")
    lasts = redis.mget([_last_key(drone.pk) for drone in flying])
    positions: dict[UUID, dict[str, Any]] = {}
    delivery_etas: dict[UUID, Delivery] = {}
    live_writes: list[tuple[UUID, int, datetime, dict[str, Any]]] = []
    new_lasts: dict[UUID, _Last] = {}
    for drone, raw in zip(flying, lasts, strict=True):
        last = _Last.parse(raw)
        delivery = (
            deliveries.get(drone.assigned_delivery_id) if drone.assigned_delivery_id else None
        )
        if delivery is not None:
            tracing.link_delivery(delivery)  # the report belongs to that delivery's trace
        applied: Report | None = None
        write_db = False
        for index, report in sorted(mine[drone.serial], key=lambda item: item[1].time):
            if last is not None and report.t_ms <= last.t:
                outcome.results.append(
                    ItemResult(
                        index, drone.serial, "ignored", "not newer than the last report applied"
                    )
                )
                continue
            last = _next_last(last, report)
            if delivery is not None and delivery.status in WITH_DRONE:
                _estimate(delivery, drone, report, last)  # a stage change carries these ETAs
            stage = delivery.status if delivery is not None else None
            changed = _apply(drone, delivery, report)
            if delivery is not None and delivery.status != stage:
                last.stage_t = report.t_ms
            write_db = write_db or changed
            applied = report
            outcome.results.append(ItemResult(index, drone.serial, "accepted"))
            if delivery is not None and delivery.status in WITH_DRONE:
                if delivery.status != stage:
                    _estimate(delivery, drone, report, last)  # from the new stage on
                live_writes.append(
                    (delivery.pk, delivery.version, report.time, _live_doc(delivery, report))
                )
        if applied is None or last is None:
            continue
        write_every_ms = settings.TELEMETRY_DB_WRITE_SECONDS * 1000
        if write_db or applied.t_ms - last.db >= write_every_ms:
            last.db = applied.t_ms
            here = applied.position
            base = Point(drone.base.lat, drone.base.lon)
            if flight.landed_at(here, applied.alt_m, base):
                here = base  # home: exactly where the drone choice looks for drones at home
            positions[drone.pk] = {
                "lat": here.lat,
                "lon": here.lon,
                "alt_m": applied.alt_m,
                "battery_pct": applied.battery_pct,
                "last_report_at": applied.time,
            }
            if delivery is not None and delivery.status in WITH_DRONE:
                delivery_etas[delivery.pk] = delivery
        new_lasts[drone.pk] = last

    _write_database(positions, delivery_etas)
    for drone, raw in zip(flying, lasts, strict=True):
        # Every report ignored: the orders from what was known before.
        last = new_lasts.get(drone.pk) or _Last.parse(raw)
        delivery = (
            deliveries.get(drone.assigned_delivery_id) if drone.assigned_delivery_id else None
        )
        outcome.commands[drone.serial] = drone_orders(drone, delivery, last)
    pipeline = redis.pipeline(transaction=False)
    for drone_id, last in new_lasts.items():
        pipeline.set(_last_key(drone_id), last.dump(), ex=LAST_TTL_SECONDS)
    pipeline.execute()
    live.statuses_write(live_writes)
    outcome.results.sort(key=lambda item: item.index)
    _count(outcome)
    return outcome


def _count(outcome: BatchOutcome) -> None:
    counts: dict[str, int] = defaultdict(int)
    for item in outcome.results:
        counts[item.result] += 1
    for result, n in counts.items():
        metrics.TELEMETRY_REPORTS.inc(n, result=result)


def _next_last(last: _Last | None, report: Report) -> _Last:
    kmh = last.kmh if last is not None else None
    if report.alt_m >= flight.CRUISE_ALT_M - 1 and report.ground_speed_mps > 0.5:
        sample = report.ground_speed_mps * 3.6 / flight.speedup()
        kmh = sample if kmh is None else SPEED_WEIGHT * sample + (1 - SPEED_WEIGHT) * kmh
    return _Last(
        t=report.t_ms,
        lat=report.lat,
        lon=report.lon,
        alt=report.alt_m,
        v=report.ground_speed_mps,
        hdg=report.heading,
        bat=report.battery_pct,
        db=last.db if last is not None else 0,
        kmh=kmh,
        stage_t=last.stage_t if last is not None else 0,
        home=last.home if last is not None else None,
    )


def _apply(drone: Drone, delivery: Delivery | None, report: Report) -> bool:
    """What one report changes: the drone's state and its delivery's stage. True when something
    changed (the position then goes to the database at once)."""
    changed = False
    position, alt = report.position, report.alt_m
    base = Point(drone.base.lat, drone.base.lon)
    if drone.state == State.LOST:
        changed |= _set_state(drone, _state_on_return(drone, report))
        if delivery is not None and delivery.status in WITH_DRONE and delivery.attention:
            delivery_flag(delivery, "", at=report.time, position=_position(report))
    carrying = delivery is not None and delivery.status in WITH_DRONE
    if carrying and drone.state != State.GROUNDED:
        assert delivery is not None
        changed |= _advance(drone, delivery, report)
        carrying = delivery.status in WITH_DRONE
    if carrying:
        return changed
    if drone.state == State.FLYING and flight.landed_at(position, alt, base):
        changed |= _set_state(drone, _state_on_ground(report))
    elif drone.state == State.CHARGING and report.battery_pct >= settings.DRONE_MIN_DISPATCH_PCT:
        changed |= _set_state(drone, State.IDLE)
    elif drone.state in (State.IDLE, State.CHARGING) and flight.is_airborne(alt):
        changed |= _set_state(drone, State.FLYING)
    return changed


def _advance(drone: Drone, delivery: Delivery, report: Report) -> bool:
    """Move the delivery through the stages the position shows (several if the drone went
    through them between two reports)."""
    position, alt = report.position, report.alt_m
    pickup = Point(delivery.pickup_lat, delivery.pickup_lon)
    dropoff = Point(delivery.dropoff_lat, delivery.dropoff_lon)
    changed = False
    for _ in range(5):
        status = delivery.status
        if status == Status.ASSIGNED and flight.is_airborne(alt):
            to, note = Status.EN_ROUTE_TO_PICKUP, f"drone {drone.serial} took off"
            changed |= _set_state(drone, State.FLYING)
        elif status == Status.EN_ROUTE_TO_PICKUP and flight.arrived_at(position, alt, pickup):
            to, note = Status.AT_PICKUP, "arrived at the pickup"
        elif status == Status.AT_PICKUP and flight.left(position, alt, pickup):
            to, note = Status.EN_ROUTE_TO_DROPOFF, "picked up"
        elif status == Status.EN_ROUTE_TO_DROPOFF and flight.arrived_at(position, alt, dropoff):
            to, note = Status.AT_DROPOFF, "arrived at the dropoff"
        elif status == Status.AT_DROPOFF and flight.left(position, alt, dropoff):
            to, note = Status.DELIVERED, "delivered"
        else:
            return changed
        try:
            delivery_move(
                delivery,
                to,
                at=report.time,
                note=note,
                position=_position(report),
                location=_location(report),
                changes={"pickup_eta": delivery.pickup_eta, "dropoff_eta": delivery.dropoff_eta},
            )
        except (StaleDelivery, InvalidStageTransition):
            # Moved by another door meanwhile (cancelled): read it again, next report acts.
            delivery.refresh_from_db()
            return True
        changed = True
    return changed


def _estimate(delivery: Delivery, drone: Drone, report: Report, last: _Last) -> None:
    """The delivery's ETAs from this report: the route left, at the drone's recent cruise
    speed (its model's until it has cruised), with the climbs, descents and handling left."""
    speed = last.kmh or drone.model.cruise_speed_kmh
    pickup = Point(delivery.pickup_lat, delivery.pickup_lon)
    dropoff = Point(delivery.dropoff_lat, delivery.dropoff_lon)
    hovering = None
    if delivery.status in (Status.AT_PICKUP, Status.AT_DROPOFF) and last.stage_t:
        hovering = max(0.0, (report.t_ms - last.stage_t) / 1000)
    planned = delivery.route or {}
    to_pickup, to_done = flight.remaining_seconds(
        position=report.position,
        alt_m=report.alt_m,
        stage=delivery.status,
        pickup=pickup,
        dropoff=dropoff,
        speed_kmh=speed,
        # The routes the drone flies (around no-fly zones), what is left of them from here.
        route_to_pickup=route_points(planned.get("to_pickup")) or None,
        route_to_dropoff=route_points(planned.get("to_dropoff")) or None,
        hovering_for=hovering,
    )
    start = report.time
    if delivery.status == Status.ASSIGNED and to_pickup is not None:
        takeoff = _takeoff_at(delivery, to_pickup)
        if takeoff is not None and takeoff > start:
            start = takeoff
    if to_pickup is not None:
        delivery.pickup_eta = start + timedelta(seconds=to_pickup)
    delivery.dropoff_eta = start + timedelta(seconds=to_done)


def _takeoff_at(delivery: Delivery, to_pickup_seconds: float) -> datetime | None:
    """When a drone booked for a scheduled pickup takes off, so as to be there on time."""
    if delivery.pickup_time is None:
        return None
    return delivery.pickup_time - timedelta(seconds=to_pickup_seconds)


def _location(report: Report) -> dict[str, Any]:
    return {
        "lat": report.lat,
        "lon": report.lon,
        "alt_m": report.alt_m,
        "heading": report.heading,
        "ground_speed_mps": report.ground_speed_mps,
        "at": iso(report.time),
    }


def _live_doc(delivery: Delivery, report: Report) -> dict[str, Any]:
    return live.status_of(delivery, _location(report))


def _position(report: Report) -> tuple[float, float, float]:
    return (report.lat, report.lon, report.alt_m)


def _state_on_ground(report: Report) -> str:
    if report.battery_pct < settings.DRONE_MIN_DISPATCH_PCT:
        return State.CHARGING
    return State.IDLE


def _state_on_return(drone: Drone, report: Report) -> str:
    """The state of a lost drone heard from again."""
    base = Point(drone.base.lat, drone.base.lon)
    if flight.landed_at(report.position, report.alt_m, base):
        return _state_on_ground(report)
    return State.FLYING


def _set_state(drone: Drone, state: str) -> bool:
    """Compare-and-swap the drone's state, so that an operator grounding it meanwhile wins."""
    if drone.state == state:
        return False
    if Drone.objects.filter(pk=drone.pk, state=drone.state).update(
        state=state, updated_at=timezone.now()
    ):
        drone.state = state
        return True
    drone.refresh_from_db(fields=["state", "assigned_delivery_id"])
    return False


def _write_database(
    positions: dict[UUID, dict[str, Any]], deliveries: dict[UUID, Delivery]
) -> None:
    """Positions and ETAs, in one short transaction for the batch."""
    if not positions and not deliveries:
        return
    with transaction.atomic():
        for drone_id, values in positions.items():
            Drone.objects.filter(pk=drone_id).update(**values)
        now = timezone.now()
        for delivery in deliveries.values():
            # Only if no stage change came between: the lifecycle wrote its own.
            if Delivery.objects.filter(pk=delivery.pk, version=delivery.version).update(
                pickup_eta=delivery.pickup_eta, dropoff_eta=delivery.dropoff_eta
            ):
                announce.eta_changed(delivery, at=now)


# --- orders for the drones ------------------------------------------------------------------


def _latlon(point: Point) -> dict[str, float]:
    return {"lat": point.lat, "lon": point.lon}


def drone_orders(drone: Drone, delivery: Delivery | None, last: _Last | None) -> dict[str, Any]:
    """What the drone is to do now, sent in the answer to each of its reports (its uplink):
    fly its delivery along the planned routes, come home, hold where it is, or stand by. The
    same orders every time, so a drone acts on a change (a new delivery, a new route around a
    zone that opened: `route_version`) and a restarted one picks up where it was."""
    base = Point(drone.base.lat, drone.base.lon)
    here = Point(last.lat, last.lon) if last is not None else Point(drone.lat, drone.lon)
    alt = last.alt if last is not None else drone.alt_m
    if (
        delivery is not None
        and delivery.status in WITH_DRONE
        and drone.state not in (State.GROUNDED, State.LOST)
    ):
        if last is not None:
            last.home = None
        if (delivery.route or {}).get("hold"):
            return {"type": "hold", "delivery_id": str(delivery.pk)}
        pickup = Point(delivery.pickup_lat, delivery.pickup_lon)
        dropoff = Point(delivery.dropoff_lat, delivery.dropoff_lon)
        takeoff = None
        if delivery.status == Status.ASSIGNED:
            to_pickup, _ = flight.remaining_seconds(
                position=here,
                alt_m=alt,
                stage=Status.ASSIGNED,
                pickup=pickup,
                dropoff=dropoff,
                speed_kmh=drone.model.cruise_speed_kmh,
            )
            takeoff = _takeoff_at(delivery, to_pickup or 0.0)
        planned = delivery.route or {}
        return {
            "type": "deliver",
            "delivery_id": str(delivery.pk),
            "stage": delivery.status,
            "takeoff_at": iso(takeoff),
            "payload_kg": delivery.package_weight_kg,
            "pickup": _latlon(pickup),
            "dropoff": _latlon(dropoff),
            "base": _latlon(base),
            "routes": {
                "to_pickup": planned.get("to_pickup") or route_json([here, pickup]),
                "to_dropoff": planned.get("to_dropoff") or route_json([pickup, dropoff]),
                "to_base": planned.get("to_base") or route_json([dropoff, base]),
            },
            "route_version": delivery.route_version,
        }
    if flight.landed_at(here, alt, base):
        if last is not None:
            last.home = None
        return {"type": "stand_by"}
    home = _home_route(here, base, last)
    if not home:
        return {"type": "hold"}
    return {"type": "return_to_base", "base": _latlon(base), "route": home}


def _home_route(here: Point, base: Point, last: _Last | None) -> list[list[float]]:
    """The way home around the zones active now, planned once per flight home (kept with the
    drone's last report) rather than at every report."""
    if last is not None and last.home and last.home[-1] == route_json([base])[0]:
        return last.home
    try:
        route = route_json(router_for(timezone.now()).route(here, base))
    except NoRoute as exc:
        # Never straight through a zone: the drone holds (drone_orders) until the zones change.
        logger.warning("no way home around the no-fly zones for a drone at %s: %s", here, exc)
        return []
    if last is not None:
        last.home = route
    return route


# --- drones that stop reporting -------------------------------------------------------------


def drones_watch(*, now: datetime | None = None) -> int:
    """Mark `lost` the drones silent for DRONE_LOST_AFTER_SECONDS (beat, every few seconds):
    never assigned while lost, their deliveries flagged to operators with an event. A lost
    drone recovers with its next report. Returns how many were marked.

    At most 1,000 a run, marked in one statement and logged in one line: a gateway that goes
    down silences every drone it reports for at once, and a statement and a log line for each
    drone took a seventh of the worker's time then (bench/system.py, whose simulator falls
    tens of seconds behind with the reports of thousands of drones)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.DRONE_LOST_AFTER_SECONDS)
    watched = Drone.objects.filter(last_report_at__lt=cutoff).exclude(
        state__in=[State.LOST, State.GROUNDED]
    )
    silent = list(watched.values_list("pk", "lat", "lon", "alt_m")[:1000])
    if not silent:
        return 0
    # The database has a drone's position every few seconds; Redis has its latest report.
    lasts = get_redis_connection("default").mget([_last_key(row[0]) for row in silent])
    heard_of: dict[UUID, tuple[_Last | None, Position]] = {}
    for (drone_id, lat, lon, alt), raw in zip(silent, lasts, strict=True):
        last = _Last.parse(raw)
        if last is not None and last.t >= cutoff.timestamp() * 1000:
            continue
        heard_of[drone_id] = (last, (last.lat, last.lon, last.alt) if last else (lat, lon, alt))
    if not heard_of:
        return 0
    skip_locked = connection.features.has_select_for_update_skip_locked
    with transaction.atomic():
        # Still silent, and neither lost nor grounded meanwhile. Rows locked by a report being
        # written now are skipped, drones and deliveries alike (that drone is not silent): this
        # transaction never waits for a lock, so it cannot deadlock with a report's.
        still = watched.filter(pk__in=heard_of)
        if skip_locked:
            still = still.select_for_update(skip_locked=True)
        marked = {
            pk: (serial, delivery_id)
            for pk, serial, delivery_id in still.values_list("pk", "serial", "assigned_delivery_id")
        }
        carrying = {delivery_id: pk for pk, (_, delivery_id) in marked.items() if delivery_id}
        loads = Delivery.objects.filter(pk__in=carrying)
        if skip_locked:
            loads = loads.select_for_update(skip_locked=True)
        deliveries = list(loads)
        missing = carrying.keys() - {d.pk for d in deliveries}
        if missing and skip_locked:
            # Skipped because a report being written holds it: that drone waits for the next
            # run. (One whose delivery is gone is marked, with nothing to flag.)
            held = Delivery.objects.filter(pk__in=missing).values_list("pk", flat=True)
            for delivery_id in held:
                del marked[carrying[delivery_id]]
        Drone.objects.filter(pk__in=marked).update(state=State.LOST, updated_at=now)
        # In the same transaction: a drone is never lost without its delivery flagged, even if
        # the process dies here (the next run passes lost drones by).
        for delivery in deliveries:
            drone_id = carrying[delivery.pk]
            if delivery.status not in WITH_DRONE:
                continue
            last, position = heard_of[drone_id]
            heard = datetime.fromtimestamp(last.t / 1000, tz=now.tzinfo) if last else None
            delivery_flag(
                delivery,
                f"drone {marked[drone_id][0]} lost contact"
                + (f" (last heard at {heard:%H:%M:%S} UTC)" if heard else ""),
                position=position,
            )
    if not marked:
        return 0
    serials = sorted(serial for serial, _ in marked.values())
    logger.warning(
        "%d drone%s lost contact: %s%s",
        len(serials),
        "" if len(serials) == 1 else "s",
        ", ".join(serials[:20]),
        f" and {len(serials) - 20} more" if len(serials) > 20 else "",
    )
    return len(marked)


# --- operators -------------------------------------------------------------------------------


def drone_ground(*, drone_id: UUID, operator: str = "") -> Drone:
    """Take a drone out of service: it is never assigned while grounded. A delivery it holds
    whose package is not yet aboard gets another drone; one whose package is aboard is flagged
    for operators. A drone in the air is sent home (the answer to its next report says so)."""
    from deliveries.services import delivery_replace_drone

    by = f"operator {operator}" if operator else "an operator"
    with transaction.atomic():
        drone = Drone.objects.select_for_update().filter(pk=drone_id).first()
        if drone is None:
            raise NotFound(f"No drone {drone_id}.")
        if drone.state == State.GROUNDED:
            return drone
        Drone.objects.filter(pk=drone.pk).update(state=State.GROUNDED, updated_at=timezone.now())
        drone.state = State.GROUNDED
        delivery = (
            Delivery.objects.filter(pk=drone.assigned_delivery_id).first()
            if drone.assigned_delivery_id
            else None
        )
        if delivery is not None and delivery.status in BEFORE_PICKUP:
            delivery_replace_drone(
                delivery_id=delivery.pk,
                reason=f"drone {drone.serial} grounded by {by}; finding another drone",
            )
            drone.assigned_delivery_id = None
        elif delivery is not None and delivery.status in PACKAGE_ABOARD:
            delivery_flag(
                delivery,
                f"drone {drone.serial} grounded by {by} with the package aboard; it is flying "
                "back to its base",
            )
    return drone


def drone_return_to_service(*, drone_id: UUID) -> Drone:
    """Release a grounded drone: idle (or charging) if it is on the ground at its base, else
    flying home, to be idle once it lands."""
    drone = Drone.objects.select_related("base").filter(pk=drone_id).first()
    if drone is None:
        raise NotFound(f"No drone {drone_id}.")
    if drone.state != State.GROUNDED:
        raise Conflict(
            f"drone {drone.serial} is {drone.state}, not grounded", code="drone_not_grounded"
        )
    last = _Last.parse(get_redis_connection("default").get(_last_key(drone.pk)))
    here = Point(last.lat, last.lon) if last else Point(drone.lat, drone.lon)
    alt = last.alt if last else drone.alt_m
    battery = last.bat if last else drone.battery_pct
    if flight.landed_at(here, alt, Point(drone.base.lat, drone.base.lon)):
        state = State.IDLE if battery >= settings.DRONE_MIN_DISPATCH_PCT else State.CHARGING
    else:
        state = State.FLYING
    Drone.objects.filter(pk=drone.pk, state=State.GROUNDED).update(
        state=state, updated_at=timezone.now()
    )
    drone.state = state
    return drone


# --- zones that open or close while drones fly --------------------------------------------------

REROUTE_SIGNATURE_KEY = "airspace:flights-signature"
# The legs still to fly in each stage, and where the first of them starts.
LEGS_LEFT: dict[str, tuple[str, ...]] = {
    Status.ASSIGNED: ("to_pickup", "to_dropoff", "to_base"),
    Status.EN_ROUTE_TO_PICKUP: ("to_pickup", "to_dropoff", "to_base"),
    Status.AT_PICKUP: ("to_dropoff", "to_base"),
    Status.EN_ROUTE_TO_DROPOFF: ("to_dropoff", "to_base"),
    Status.AT_DROPOFF: ("to_base",),
}


def flights_reroute(*, now: datetime | None = None) -> int:
    """When the no-fly zones active now change (beat, every few seconds), plan again every
    flight not yet home: the leg under way from where the drone is, the later legs whole.
    A delivery whose routes changed gets them with a new route_version (its drone reroutes at
    its next report); one with no way around holds where it is and is flagged to operators,
    until a later change lets it go on. Drones flying home get a new way home. Returns how many
    deliveries were rerouted or held."""
    from airspace.selectors import airspace_cache_clear, zones_active

    now = now or timezone.now()
    redis = get_redis_connection("default")
    # A zone's id and last change (one drawn anew counts as another), over the window the
    # routes are planned for: a zone due to open within it is avoided before it opens.
    active = zones_active(start=now, end=now + PLAN_WINDOW).values_list("id", "updated_at")
    signature = ",".join(sorted(f"{zone_id}@{changed.isoformat()}" for zone_id, changed in active))
    previous = redis.get(REROUTE_SIGNATURE_KEY)
    if previous is not None and previous.decode() == signature:
        return 0
    airspace_cache_clear()  # plan with the zones just read, not this process's cached ones
    router = router_for(now)
    changed = 0
    deliveries = list(
        Delivery.objects.filter(status__in=list(LEGS_LEFT), drone__isnull=False).select_related(
            "drone__base"
        )
    )
    lasts = (
        redis.mget([_last_key(d.drone_id) for d in deliveries if d.drone_id]) if deliveries else []
    )
    for delivery, raw in zip(deliveries, lasts, strict=True):
        changed += _reroute(delivery, _Last.parse(raw), router)
    # Drones flying home plan their way home again at their next report.
    returning = Drone.objects.filter(state=State.FLYING, assigned_delivery_id__isnull=True)
    for drone_id in returning.values_list("pk", flat=True):
        last = _Last.parse(redis.get(_last_key(drone_id)))
        if last is not None and last.home:
            last.home = None
            redis.set(_last_key(drone_id), last.dump(), ex=LAST_TTL_SECONDS)
    redis.set(REROUTE_SIGNATURE_KEY, signature)
    return changed


def _reroute(delivery: Delivery, last: _Last | None, router: Any) -> int:
    drone = delivery.drone
    assert drone is not None
    pickup = Point(delivery.pickup_lat, delivery.pickup_lon)
    dropoff = Point(delivery.dropoff_lat, delivery.dropoff_lon)
    base = Point(drone.base.lat, drone.base.lon)
    here = Point(last.lat, last.lon) if last is not None else Point(drone.lat, drone.lon)
    stops = {"to_pickup": pickup, "to_dropoff": dropoff, "to_base": base}
    starts = {"to_pickup": here, "to_dropoff": pickup, "to_base": dropoff}
    legs = LEGS_LEFT[delivery.status]
    if delivery.status in (Status.EN_ROUTE_TO_DROPOFF,):
        starts["to_dropoff"] = here
    if delivery.status == Status.AT_DROPOFF:
        starts["to_base"] = here
    planned = dict(delivery.route or {})
    new = {key: value for key, value in planned.items() if key != "hold"}
    try:
        for leg in legs:
            new[leg] = route_json(router.route(starts[leg], stops[leg]))
    except NoRoute as exc:
        if planned.get("hold"):
            return 0
        names = ", ".join(f"'{zone.name}'" for zone in exc.zones) or "in the way"
        attention = f"no way around the no-fly zones {names}: drone {drone.serial} holds"
        return int(
            delivery_reroute(
                delivery, {**planned, "hold": True}, note=attention, attention=attention
            )
        )
    unchanged = all(
        _same_route(new[leg], planned.get(leg), from_here=starts[leg] == here) for leg in legs
    )
    if unchanged and not planned.get("hold"):
        return 0
    return int(delivery_reroute(delivery, new, note="rerouted: the no-fly zones active changed"))


def _same_route(new: list[list[float]], old: Any, *, from_here: bool) -> bool:
    """Whether a leg's route is unchanged, within a metre or two (routes are planned in a
    projection around their own middle, which moves with the drone): every waypoint the new
    route turns at is one of the old route's. For the leg under way the new route starts where
    the drone is, not at a waypoint. A detour no longer needed counts as unchanged: the drone
    flies on the longer, safe way."""
    if not old:
        return False
    turns = new[1:] if from_here else new

    def on_old(point: list[float]) -> bool:
        return any(abs(point[0] - p[0]) < 2e-5 and abs(point[1] - p[1]) < 3e-5 for p in old)

    return all(on_old(point) for point in turns)

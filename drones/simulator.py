"""The fleet simulator: every drone of the fleet flown and reported through the telemetry HTTP
API, as a ground-control gateway would (`manage.py simulate_fleet`).

Two halves, so that the flying can be tested without HTTP or a database:

- Kinematics. A `SimDrone` follows a plan of phases (on the ground, climb or descent, cruise
  along a polyline, hover over a stop) built from the server's command. `advance(t0, t1, k)`
  flies it from real-clock time t0 to t1 with the sim clock running k times faster, and queues
  a report at every phase boundary crossed on the way (arrival over a stop at the handling
  altitude, the first instant of the climb away from it, landing) with its interpolated time,
  so that the server, which reads the stages from positions alone (flight.arrived_at, left,
  landed_at), misses none of them at any speedup. `tick_report(t1)` is the once-per-tick one.
- I/O. `Simulator` reads the fleet from the database (reads only), posts every tick's reports
  in batches over one keep-alive connection, hands each answer's commands to the drones and
  touches the heartbeat file after every tick the API answered.

Everything in the hot path is plain floats, tuples and dicts: 1,000 drones at 1 report/s must
fit in a small part of one core (bench/simulator.py measures it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import requests

from drones import flight
from drones.geo import Point, distance_km

logger = logging.getLogger(__name__)

# Recharging at the base: 2 % per sim minute.
CHARGE_PCT_PER_S = 2.0 / 60.0
# The first climb report away from a stop (or the ground): just above where the server says
# the drone has left (flight.left).
LEAVING_ALT_M = flight.HANDLING_ALT_M + flight.LEAVING_MARGIN_M + 0.1
# Already over a point when this close to it: no climb and cruise, only the vertical.
OVER_POINT_M = 1.0
# Boundary reports a drone keeps while the API is unreachable, to send when it answers again.
MAX_UNSENT = 32

# The delivery stages of a "deliver" command, by the part of the mission still to fly.
_TO_PICKUP = ("requested", "assigned", "en_route_to_pickup")
_AT_PICKUP = ("at_pickup",)
_TO_DROPOFF = ("en_route_to_dropoff",)
_AT_DROPOFF = ("at_dropoff",)

Report = dict[str, Any]
Command = dict[str, Any]


# --- kinematics -------------------------------------------------------------------------------


class Phase:
    """One part of a flight. `run` flies the drone from real time t towards t1 with the sim
    clock k times faster, and returns the real time the phase ended at, or None when it goes
    on past t1."""

    __slots__ = ("boundary", "leg")

    def __init__(self, *, leg: str, boundary: bool = False) -> None:
        # leg: "ground", "waiting" (for takeoff_at), "to_pickup", "at_pickup", "to_dropoff",
        # "at_dropoff", "home" or "hover" (airborne, no orders yet).
        self.leg = leg
        # Report the instant this phase ends.
        self.boundary = boundary

    def run(self, d: SimDrone, t: float, t1: float, k: float) -> float | None:
        raise NotImplementedError


class Ground(Phase):
    """On the ground, charging if at the home base, until the real time `until` (None: until
    told otherwise)."""

    __slots__ = ("until",)

    def __init__(self, *, until: float | None = None, leg: str = "ground") -> None:
        super().__init__(leg=leg)
        self.until = until

    def run(self, d: SimDrone, t: float, t1: float, k: float) -> float | None:
        d.speed = 0.0
        until = self.until
        end = t1 if until is None or until > t1 else max(t, until)
        if d.battery < 100.0 and d.charging:
            d.battery = min(100.0, d.battery + (end - t) * k * CHARGE_PCT_PER_S)
        return None if until is None or until > t1 else end


class Vertical(Phase):
    """Straight up or down to `to_alt` at `rate` m/s (sim)."""

    __slots__ = ("rate", "to_alt")

    def __init__(self, to_alt: float, rate: float, *, leg: str, boundary: bool = False) -> None:
        super().__init__(leg=leg, boundary=boundary)
        self.to_alt = to_alt
        self.rate = rate

    def run(self, d: SimDrone, t: float, t1: float, k: float) -> float | None:
        d.speed = 0.0
        need = abs(self.to_alt - d.alt) / self.rate
        have = (t1 - t) * k
        if need > have:
            d.alt += have * self.rate if self.to_alt > d.alt else -have * self.rate
            return None
        d.alt = self.to_alt
        return t + need / k


class Hover(Phase):
    """In place for `seconds` of sim time (None: until told otherwise)."""

    __slots__ = ("left",)

    def __init__(self, seconds: float | None, *, leg: str, boundary: bool = False) -> None:
        super().__init__(leg=leg, boundary=boundary)
        self.left = seconds

    def run(self, d: SimDrone, t: float, t1: float, k: float) -> float | None:
        d.speed = 0.0
        have = (t1 - t) * k
        if self.left is None:
            return None
        if self.left > have:
            self.left -= have
            return None
        end = t + self.left / k
        self.left = 0.0
        return end


# A straight piece of a route: from, to, km, bearing.
Segment = tuple[Point, Point, float, float]


class Cruise(Phase):
    """Along the great circles of a polyline at the cruise altitude, draining the battery by
    the distance flown."""

    __slots__ = ("done_km", "i", "kmps", "pct_per_km", "segments")

    def __init__(
        self, route: Sequence[Point], *, speed_kmh: float, pct_per_km: float, leg: str
    ) -> None:
        super().__init__(leg=leg)
        self.segments: list[Segment] = [
            (a, b, km, flight.bearing_deg(a, b))
            for a, b in pairwise(route)
            if (km := distance_km(a, b)) > 1e-9
        ]
        self.kmps = speed_kmh / 3600.0
        self.pct_per_km = pct_per_km
        self.i = 0
        self.done_km = 0.0

    def run(self, d: SimDrone, t: float, t1: float, k: float) -> float | None:
        d.speed = self.kmps * 1000.0 * k  # as it looks in the real clock
        have = (t1 - t) * k * self.kmps
        used = 0.0
        segments = self.segments
        while self.i < len(segments):
            a, b, km, bearing = segments[self.i]
            d.heading = bearing
            rest = km - self.done_km
            if rest > have - used:
                step = have - used
                self.done_km += step
                d.battery = max(0.0, d.battery - step * self.pct_per_km)
                p = flight.interpolate(a, b, self.done_km / km)
                d.lat, d.lon = p.lat, p.lon
                return None
            used += rest
            d.battery = max(0.0, d.battery - rest * self.pct_per_km)
            d.lat, d.lon = b.lat, b.lon
            self.i += 1
            self.done_km = 0.0
        return t + used / self.kmps / k


class SimDrone:
    """One drone in the simulation: where it is, its plan, the reports it has to send."""

    __slots__ = (
        "alt",
        "base",
        "battery",
        "command",
        "delivery_id",
        "heading",
        "last_ms",
        "lat",
        "lon",
        "max_payload_kg",
        "phase",
        "plan",
        "range_km",
        "route_version",
        "serial",
        "speed",
        "speed_kmh",
        "unsent",
    )

    def __init__(
        self,
        serial: str,
        *,
        speed_kmh: float,
        range_km: float,
        max_payload_kg: float,
        base: Point,
        position: Point,
        alt_m: float = 0.0,
        battery_pct: float = 100.0,
    ) -> None:
        self.serial = serial
        self.speed_kmh = speed_kmh
        self.range_km = range_km
        self.max_payload_kg = max_payload_kg
        self.base = base
        self.lat, self.lon, self.alt = position.lat, position.lon, alt_m
        self.battery = max(0.0, min(100.0, battery_pct))
        self.speed = 0.0  # apparent ground speed, m/s of the real clock
        self.heading = 0.0
        self.command: Command | None = None
        self.delivery_id: str | None = None
        self.route_version = 0
        # Reports of phase boundaries not yet accepted or ignored by the server.
        self.unsent: list[Report] = []
        self.last_ms = 0  # the time of the last report, ms since the epoch
        self.plan: deque[Phase] = deque()
        self.phase: Phase = self._idle()

    # --- state ---

    @property
    def position(self) -> Point:
        return Point(self.lat, self.lon)

    @property
    def airborne(self) -> bool:
        return flight.is_airborne(self.alt)

    @property
    def charging(self) -> bool:
        return not self.airborne and flight.horizontal_m(self.position, self.base) <= (
            flight.ARRIVAL_RADIUS_M
        )

    @property
    def leg(self) -> str:
        return self.phase.leg

    # --- flying ---

    def advance(self, t0: float, t1: float, k: float) -> None:
        """Fly from real time t0 to t1, the sim clock running k times faster; a report of every
        phase boundary crossed goes to `unsent`."""
        t = t0
        while True:
            end = self.phase.run(self, t, t1, k)
            if end is None:
                return
            if self.phase.boundary:
                self.unsent.append(self.report(end, boundary=True))
            self.phase = self.plan.popleft() if self.plan else self._idle()
            t = end

    def report(self, t: float, *, boundary: bool = False, time_text: str | None = None) -> Report:
        """A telemetry report of the drone now, timed t. Times strictly increase per drone: a
        boundary report in the same millisecond as the last one moves 1 ms on."""
        ms = round(t * 1000)
        if boundary and ms <= self.last_ms:
            ms = self.last_ms + 1
            time_text = None
        self.last_ms = max(self.last_ms, ms)
        return {
            "drone": self.serial,
            "time": time_text or iso_ms(ms),
            "lat": round(self.lat, 7),
            "lon": round(self.lon, 7),
            "alt_m": round(self.alt, 2),
            "ground_speed_mps": round(self.speed, 2),
            "heading": round(self.heading, 1),
            "battery_pct": round(self.battery, 2),
        }

    def tick_report(self, t: float, time_text: str | None = None) -> Report | None:
        """The once-per-tick report, unless a boundary report already stands for its
        millisecond."""
        if round(t * 1000) <= self.last_ms:
            return None
        return self.report(t, time_text=time_text)

    # --- orders ---

    def obey(self, command: Command) -> None:
        """Act on the server's command if it changed (each answer repeats it)."""
        if command == self.command:
            return
        self.command = command
        kind = command.get("type")
        if kind == "deliver":
            self._deliver(command)
        elif kind == "return_to_base":
            self.delivery_id = None
            self.base = _point(command["base"]) if command.get("base") else self.base
            self._go_home(command.get("route"))
        elif kind == "hold":
            # No way around a zone that opened: wait where it is for new routes.
            self._start([Hover(None, leg="hold")] if self.airborne else [])
        elif kind == "stand_by":
            self.delivery_id = None
            if self.airborne:
                self._go_home([])
            else:
                self._start([])
        else:
            logger.warning("drone %s: unknown command %r, ignored", self.serial, kind)

    def _deliver(self, command: Command) -> None:
        delivery_id = str(command["delivery_id"])
        version = int(command.get("route_version") or 0)
        if delivery_id == self.delivery_id and self.leg not in ("waiting", "hold"):
            # The stage moved on as the server saw us fly; the plan already holds it. Unless
            # the routes changed (a no-fly zone opened): fly the new ones from here.
            if version != self.route_version:
                self.route_version = version
                self._reroute(command.get("routes") or {})
            return
        self.delivery_id = delivery_id
        self.route_version = version
        if command.get("base"):
            self.base = _point(command["base"])
        stage = command.get("stage") or "assigned"
        pickup, dropoff = _point(command["pickup"]), _point(command["dropoff"])
        routes = command.get("routes") or {}
        to_pickup = _route(routes.get("to_pickup"), self.position, pickup)
        to_dropoff = _route(routes.get("to_dropoff"), pickup, dropoff)
        to_base = _route(routes.get("to_base"), dropoff, self.base)
        empty = self._pct_per_km(0.0)
        loaded = self._pct_per_km(float(command.get("payload_kg") or 0.0))

        plan: list[Phase] = []
        at, alt = self.position, self.alt
        if stage in _TO_PICKUP and not self.airborne and command.get("takeoff_at"):
            plan.append(Ground(until=_epoch(command["takeoff_at"]), leg="waiting"))
        if stage in _TO_PICKUP + _AT_PICKUP:
            plan += self._leg(at, alt, to_pickup, flight.HANDLING_ALT_M, "to_pickup", empty)
            plan.append(Hover(flight.HANDLING_SECONDS, leg="at_pickup"))
            at, alt = to_pickup[-1], flight.HANDLING_ALT_M
        if stage in _TO_PICKUP + _AT_PICKUP + _TO_DROPOFF + _AT_DROPOFF:
            plan += self._leg(at, alt, to_dropoff, flight.HANDLING_ALT_M, "to_dropoff", loaded)
            plan.append(Hover(flight.HANDLING_SECONDS, leg="at_dropoff"))
            at, alt = to_dropoff[-1], flight.HANDLING_ALT_M
        plan += self._leg(at, alt, to_base, 0.0, "home", empty)
        self._start(plan)

    def _reroute(self, routes: dict[str, Any]) -> None:
        """Fly new routes for the mission under way: the cruises still ahead follow them, the
        one of the current leg from where the drone is."""
        by_leg = {"to_pickup": "to_pickup", "to_dropoff": "to_dropoff", "home": "to_base"}
        phases = []
        for phase in (self.phase, *self.plan):
            points = routes.get(by_leg.get(phase.leg, ""))
            if isinstance(phase, Cruise) and points:
                route = [_point(p) for p in points]
                if phase.leg == self.leg:
                    route = flight.route_rest(route, self.position)
                phase = Cruise(
                    route, speed_kmh=self.speed_kmh, pct_per_km=phase.pct_per_km, leg=phase.leg
                )
            phases.append(phase)
        self.phase, self.plan = phases[0], deque(phases[1:])

    def _go_home(self, route: Iterable[Any] | None) -> None:
        """Home along `route` (the command's polyline; straight when there is none), then land."""
        if self.leg == "home" and self._heading_to(self.base):
            if route and self.airborne:
                self._reroute({"to_base": route})  # a new way home: a zone opened
            return  # already on the way
        if not self.airborne and flight.landed_at(self.position, self.alt, self.base):
            self._start([])
            return
        path = _route(route, self.position, self.base)
        self._start(self._leg(self.position, self.alt, path, 0.0, "home", self._pct_per_km(0)))

    def _heading_to(self, place: Point) -> bool:
        last = [p for p in (self.phase, *self.plan) if isinstance(p, Cruise) and p.segments]
        if not last:
            return True  # descending onto it
        end = last[-1].segments[-1][1]
        return flight.horizontal_m(end, place) <= flight.ARRIVAL_RADIUS_M

    def _leg(
        self,
        start: Point,
        start_alt: float,
        route: Sequence[Point],
        end_alt: float,
        leg: str,
        pct_per_km: float,
    ) -> list[Phase]:
        """From `start` along what is left of `route` to its end, arriving at `end_alt`: climb,
        cruise, descent, each edge the server needs to see reported as it is crossed."""
        stop = route[-1]
        if flight.horizontal_m(start, stop) <= OVER_POINT_M:
            if abs(start_alt - end_alt) < 1e-9:
                return []
            rate = flight.CLIMB_MPS if end_alt > start_alt else flight.DESCENT_MPS
            return [Vertical(end_alt, rate, leg=leg, boundary=True)]
        phases: list[Phase] = []
        if start_alt < LEAVING_ALT_M:
            phases.append(Vertical(LEAVING_ALT_M, flight.CLIMB_MPS, leg=leg, boundary=True))
        phases += [
            Vertical(flight.CRUISE_ALT_M, flight.CLIMB_MPS, leg=leg),
            Cruise(
                flight.route_rest(route, start),
                speed_kmh=self.speed_kmh,
                pct_per_km=pct_per_km,
                leg=leg,
            ),
            Vertical(end_alt, flight.DESCENT_MPS, leg=leg, boundary=True),
        ]
        return phases

    def _start(self, plan: list[Phase]) -> None:
        self.plan = deque(plan)
        self.phase = self.plan.popleft() if self.plan else self._idle()

    def _idle(self) -> Phase:
        return Hover(None, leg="hover") if self.airborne else Ground()

    def _pct_per_km(self, payload_kg: float) -> float:
        return flight.battery_pct_per_km(
            range_km=self.range_km, payload_kg=payload_kg, max_payload_kg=self.max_payload_kg
        )


def _point(value: Any) -> Point:
    if isinstance(value, dict):
        return Point(float(value["lat"]), float(value["lon"]))
    return Point(float(value[0]), float(value[1]))


def _route(points: Iterable[Any] | None, start: Point, end: Point) -> list[Point]:
    """The command's polyline, ending at `end` (straight from `start` when there is none)."""
    route = [_point(p) for p in points or ()] or [start]
    if flight.horizontal_m(route[-1], end) > OVER_POINT_M:
        route.append(end)
    return route if len(route) > 1 else [start, *route]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def iso_ms(ms: int) -> str:
    """UTC ISO 8601 with milliseconds and Z: 2026-11-30T12:00:00.123Z."""
    seconds, rest = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{rest:03d}Z"


# --- I/O --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetRow:
    """What the simulator reads of a drone from the database."""

    serial: str
    base_id: str
    base: Point
    speed_kmh: float
    range_km: float
    max_payload_kg: float
    position: Point
    alt_m: float
    battery_pct: float


def fleet_rows() -> list[FleetRow]:
    """Every drone of the fleet, with its model and home base: one query."""
    from drones.models import Drone

    rows = Drone.objects.values_list(
        "serial", "base_id", "base__lat", "base__lon", "model__cruise_speed_kmh",
        "model__range_km", "model__max_payload_kg", "lat", "lon", "alt_m", "battery_pct",
    )  # fmt: skip
    return [
        FleetRow(
            serial=serial,
            base_id=str(base_id),
            base=Point(base_lat, base_lon),
            speed_kmh=speed,
            range_km=range_km,
            max_payload_kg=payload,
            position=Point(lat, lon),
            alt_m=alt,
            battery_pct=battery,
        )
        for (serial, base_id, base_lat, base_lon, speed, range_km, payload, lat, lon, alt, battery)
        in rows
    ]  # fmt: skip


def gateway_key_create(base_ids: Iterable[str]) -> str:
    """A new gateway key for the simulator, scoped to these bases (drones.services)."""
    from drones.services import telemetry_key_create

    _, key = telemetry_key_create(
        name="fleet simulator", base_ids=[UUID(base_id) for base_id in sorted(base_ids)]
    )
    return key


def gateway_key_revoke(key: str) -> None:
    """Revoke a key `gateway_key_create` made, when it is replaced or the simulator stops."""
    from drones.services import telemetry_key_revoke

    telemetry_key_revoke(prefix=key.partition(".")[0])


class TransportError(Exception):
    """The API could not be reached, or answered with something other than a telemetry answer."""


class Transport(Protocol):
    def post(self, body: bytes) -> dict[str, Any]: ...

    def authorize(self, key: str) -> None: ...


class HttpTransport:
    """POST /api/v1/telemetry over one keep-alive connection (requests.Session)."""

    def __init__(self, url: str, *, key: str = "", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/") + "/api/v1/telemetry"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Content-Type"] = "application/json"
        self.authorize(key)

    def authorize(self, key: str) -> None:
        self.session.headers["Authorization"] = f"Telemetry-Key {key}"

    def post(self, body: bytes) -> dict[str, Any]:
        try:
            response = self.session.post(self.url, data=body, timeout=(2.0, self.timeout))
        except requests.RequestException as error:
            raise TransportError(f"POST {self.url}: {error}") from error
        # 400: some reports were malformed; the rest were applied and the answer is complete.
        if response.status_code not in (200, 400):
            raise TransportError(f"POST {self.url}: {response.status_code} {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError as error:
            raise TransportError(f"POST {self.url}: not JSON: {response.text[:200]}") from error
        if not isinstance(answer, dict):
            raise TransportError(f"POST {self.url}: unexpected answer {response.text[:200]}")
        return answer

    def close(self) -> None:
        self.session.close()


@dataclass
class Counters:
    ticks: int = 0
    reports: int = 0
    accepted: int = 0
    ignored: int = 0
    refused: int = 0
    malformed: int = 0
    errors: int = 0
    requests: int = 0
    http_seconds: float = 0.0


class Simulator:
    """Flies the fleet and reports it: `tick()` once per interval, `run()` until stopped."""

    def __init__(
        self,
        transport: Transport,
        *,
        speedup: float = 1.0,
        batch: int = 250,
        interval: float = 1.0,
        heartbeat_file: Path | None = None,
        load_fleet: Callable[[], list[FleetRow]] | None = fleet_rows,
        refresh_seconds: float = 10.0,
        make_key: Callable[[Iterable[str]], str] | None = None,
        summary_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.speedup = speedup
        self.batch = max(1, min(1000, batch))
        self.interval = interval
        self.heartbeat_file = heartbeat_file
        self.load_fleet = load_fleet
        self.refresh_seconds = refresh_seconds
        # With no key given, the simulator makes its own for the bases it flies, and a new one
        # when drones of a new base join.
        self.make_key = make_key
        self.key_bases: frozenset[str] = frozenset()
        self.summary_seconds = summary_seconds
        self.clock = clock
        self.drones: dict[str, SimDrone] = {}
        self.now: float | None = None  # the real time the fleet has been flown to
        self.counters = Counters()
        self._last_error = ""
        self._last_refusal = ""

    # --- the fleet ---

    def sync_fleet(self, rows: Iterable[FleetRow]) -> None:
        """New drones join where the database has them; removed ones leave; the others keep
        flying (their database row is only what the server stored of our reports), taking on
        a changed model or home base."""
        seen: set[str] = set()
        bases: set[str] = set()
        for row in rows:
            seen.add(row.serial)
            bases.add(row.base_id)
            drone = self.drones.get(row.serial)
            if drone is None:
                self.drones[row.serial] = SimDrone(
                    row.serial,
                    speed_kmh=row.speed_kmh,
                    range_km=row.range_km,
                    max_payload_kg=row.max_payload_kg,
                    base=row.base,
                    position=row.position,
                    alt_m=row.alt_m,
                    battery_pct=row.battery_pct,
                )
            else:
                drone.speed_kmh, drone.range_km = row.speed_kmh, row.range_km
                drone.max_payload_kg, drone.base = row.max_payload_kg, row.base
        for serial in self.drones.keys() - seen:
            del self.drones[serial]
        if self.make_key is not None and bases and not bases <= self.key_bases:
            self.transport.authorize(self.make_key(bases))
            self.key_bases = frozenset(bases)
            logger.info("fleet simulator: a gateway key of its own for %d bases", len(bases))

    def refresh_fleet(self) -> None:
        if self.load_fleet is None:
            return
        try:
            self.sync_fleet(self.load_fleet())
        except Exception:
            # The database may be restarting: fly the fleet we know and try again later.
            logger.exception("fleet simulator: reading the fleet failed")

    # --- one tick ---

    def tick(self, now: float | None = None) -> bool:
        """Fly every drone to `now` (real clock) and report it; True when the API answered."""
        now = self.clock() if now is None else now
        start = now if self.now is None else self.now
        now = self.now = max(start, now)  # a wall clock set back does not fly drones backwards
        k = self.speedup
        self.counters.ticks += 1
        time_text = iso_ms(round(now * 1000))
        batches: list[tuple[list[SimDrone], list[Report]]] = []
        drones: list[SimDrone] = []
        reports: list[Report] = []
        for drone in self.drones.values():
            drone.advance(start, now, k)
            last = drone.tick_report(now, time_text)
            mine = drone.unsent if last is None else [*drone.unsent, last]
            if reports and len(reports) + len(mine) > self.batch:
                batches.append((drones, reports))
                drones, reports = [], []
            drones.append(drone)
            reports += mine
        if reports:
            batches.append((drones, reports))

        answered = not batches  # no drones: nothing to say, and the loop is alive
        for batch_drones, batch_reports in batches:
            answered = self._post(batch_drones, batch_reports) or answered
        if answered:
            self._heartbeat()
        return answered

    def _post(self, drones: list[SimDrone], reports: list[Report]) -> bool:
        counters = self.counters
        counters.requests += 1
        started = time.perf_counter()
        try:
            answer = self.transport.post(json.dumps({"reports": reports}).encode())
        except TransportError as error:
            counters.errors += 1
            for drone in drones:  # their boundary reports go again next tick
                del drone.unsent[:-MAX_UNSENT]
            message = str(error)
            if message != self._last_error:
                logger.warning("fleet simulator: %s (the drones fly on; retrying)", message)
                self._last_error = message
            return False
        finally:
            counters.http_seconds += time.perf_counter() - started
        self._last_error = ""
        counters.reports += len(reports)
        for name in ("accepted", "ignored", "refused", "malformed"):
            value = answer.get(name)
            if isinstance(value, int):
                setattr(counters, name, getattr(counters, name) + value)
        if answer.get("refused") or answer.get("malformed"):
            self._note_refusals(answer)
        for drone in drones:
            drone.unsent = []
        commands = answer.get("commands") or {}
        for serial, command in commands.items():
            target = self.drones.get(serial)
            if target is not None and isinstance(command, dict):
                try:
                    target.obey(command)
                except (KeyError, TypeError, ValueError, IndexError):
                    logger.exception("drone %s: cannot obey %r", serial, command)
        return True

    def _note_refusals(self, answer: dict[str, Any]) -> None:
        for item in answer.get("results") or ():
            if isinstance(item, dict) and item.get("result") in ("refused", "malformed"):
                reason = item.get("reason") or item.get("errors") or item.get("result")
                self._last_refusal = f"{item.get('drone')}: {reason}"
                return

    def _heartbeat(self) -> None:
        if self.heartbeat_file is not None:
            try:
                self.heartbeat_file.touch()
            except OSError:
                logger.exception("fleet simulator: cannot touch %s", self.heartbeat_file)

    # --- the loop ---

    def run(self, stop: threading.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; re-read the fleet every
        `refresh_seconds` and log a summary every `summary_seconds`."""
        monotonic = time.monotonic
        next_refresh = next_tick = since = monotonic()
        before = replace(self.counters)
        while not stop.is_set():
            if monotonic() >= next_refresh:
                self.refresh_fleet()
                next_refresh = monotonic() + self.refresh_seconds
            self.tick()
            if monotonic() - since >= self.summary_seconds:
                self._summary(since, before)
                since, before = monotonic(), replace(self.counters)
            next_tick += self.interval
            delay = next_tick - monotonic()
            if delay < 0:  # fell behind (a slow answer): skip ahead, the drones fly on
                next_tick, delay = monotonic(), 0.0
            stop.wait(delay)
        self._summary(since, before)

    def _summary(self, since: float, before: Counters) -> None:
        seconds = max(1e-9, time.monotonic() - since)
        after = self.counters
        flying = sum(1 for d in self.drones.values() if d.airborne)
        posts = after.requests - before.requests
        refused = after.refused - before.refused + after.malformed - before.malformed
        logger.info(
            "fleet simulator: %d drones, %d flying, %.0f reports/s, %d errors, %d refused, "
            "%.0f ms per request%s",
            len(self.drones),
            flying,
            (after.reports - before.reports) / seconds,
            after.errors - before.errors,
            refused,
            (after.http_seconds - before.http_seconds) / max(1, posts) * 1000,
            f" (last refusal: {self._last_refusal})" if refused else "",
        )

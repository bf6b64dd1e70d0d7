"""How a delivery drone flies: the flight profile that plans, ETAs and the fleet simulator share.

A flight from A to B is: climb vertically to the cruise altitude, cruise along the route
(a polyline) at the model's speed, descend to the handling altitude over B and hover there while
the package is loaded or released; a flight home ends with a landing instead of the hover.

Times are in the real clock. `FLEET_SIM_SPEEDUP` (settings; 1 in production) is how much faster
than real time the simulated fleet flies, so that at 30x a drone arrives 30 times sooner and
every ETA says so: every duration here is divided by it.

The server reads a drone's stage from its position alone, as a real ground station would from
position telemetry: `is_airborne`, `arrived_at`, `left`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from drones.geo import EARTH_RADIUS_KM, Point, distance_km

CRUISE_ALT_M = 60.0
CLIMB_MPS = 5.0
DESCENT_MPS = 4.0
# Over a pickup or dropoff the drone hovers this low while the package is handled.
HANDLING_ALT_M = 5.0
HANDLING_SECONDS = 30.0
# Within this horizontal distance of a point, a drone is there.
ARRIVAL_RADIUS_M = 25.0
# Above this altitude a drone is in the air.
AIRBORNE_ALT_M = 1.0
# A drone that has risen this far above the handling altitude has left (the package is aboard,
# or delivered).
LEAVING_MARGIN_M = 2.0

CLIMB_SECONDS = (CRUISE_ALT_M - HANDLING_ALT_M) / CLIMB_MPS  # from the ground it is a bit more
DESCENT_TO_HANDLING_SECONDS = (CRUISE_ALT_M - HANDLING_ALT_M) / DESCENT_MPS
LANDING_SECONDS = CRUISE_ALT_M / DESCENT_MPS
TAKEOFF_SECONDS = CRUISE_ALT_M / CLIMB_MPS


def speedup() -> float:
    from django.conf import settings

    return float(getattr(settings, "FLEET_SIM_SPEEDUP", 1.0)) or 1.0


def route_km(route: Sequence[Point]) -> float:
    return sum(distance_km(a, b) for a, b in itertools.pairwise(route))


@dataclass(frozen=True)
class Leg:
    """One flight between two stops: `route` from where it starts to where it ends."""

    route: tuple[Point, ...]
    # "handling": ends hovering over the stop for the package; "landing": ends on the ground.
    ends_with: str = "handling"
    starts_on_ground: bool = True

    @property
    def km(self) -> float:
        return route_km(self.route)


def leg_seconds(km: float, speed_kmh: float, *, from_ground: bool, to_ground: bool) -> float:
    """Sim-time seconds of a whole leg: climb, cruise, descent (no handling)."""
    climb = (CRUISE_ALT_M - (0.0 if from_ground else HANDLING_ALT_M)) / CLIMB_MPS
    descent = (CRUISE_ALT_M - (0.0 if to_ground else HANDLING_ALT_M)) / DESCENT_MPS
    return climb + km / speed_kmh * 3600 + descent


@dataclass(frozen=True)
class Schedule:
    """Real-clock seconds from takeoff to the pickup, and from there to the delivery done."""

    to_pickup: float
    pickup_to_delivered: float


def delivery_schedule(*, to_pickup_km: float, leg_km: float, speed_kmh: float) -> Schedule:
    """From takeoff at the base: arrival over the pickup; then handling, the leg, the dropoff's
    handling (a delivery is done when its drone leaves the dropoff)."""
    k = speedup()
    to_pickup = leg_seconds(to_pickup_km, speed_kmh, from_ground=True, to_ground=False)
    carry = leg_seconds(leg_km, speed_kmh, from_ground=False, to_ground=False)
    return Schedule(to_pickup / k, (HANDLING_SECONDS + carry + HANDLING_SECONDS) / k)


def horizontal_m(a: Point, b: Point) -> float:
    return distance_km(a, b) * 1000


def is_airborne(alt_m: float) -> bool:
    return alt_m > AIRBORNE_ALT_M


def arrived_at(position: Point, alt_m: float, stop: Point) -> bool:
    """Over the stop, down at the handling altitude (or on the ground)."""
    return horizontal_m(position, stop) <= ARRIVAL_RADIUS_M and alt_m <= HANDLING_ALT_M + 1.0


def left(position: Point, alt_m: float, stop: Point) -> bool:
    """Risen from the handling hover, or moved away from the stop."""
    return (
        horizontal_m(position, stop) > ARRIVAL_RADIUS_M or alt_m > HANDLING_ALT_M + LEAVING_MARGIN_M
    )


def landed_at(position: Point, alt_m: float, place: Point) -> bool:
    return horizontal_m(position, place) <= ARRIVAL_RADIUS_M and not is_airborne(alt_m)


def remaining_seconds(
    *,
    position: Point,
    alt_m: float,
    stage: str,
    pickup: Point,
    dropoff: Point,
    speed_kmh: float,
    route_to_pickup: Sequence[Point] | None = None,
    route_to_dropoff: Sequence[Point] | None = None,
    hovering_for: float | None = None,
) -> tuple[float | None, float]:
    """Real-clock seconds from now until the drone is over the pickup (None once it has been
    there) and until the delivery is done, for a drone at `position` in delivery stage `stage`.

    `speed_kmh` is the cruise speed in sim time (the drone's recent ground speed, divided by
    the speedup; or the model's speed). Routes default to straight lines. `hovering_for`: how
    long (real seconds) the drone has been handling the package over its stop, when known.
    """
    k = speedup()
    carry_route = list(route_to_dropoff or (pickup, dropoff))
    carry = leg_seconds(route_km(carry_route), speed_kmh, from_ground=False, to_ground=False)
    after_pickup = HANDLING_SECONDS + carry + HANDLING_SECONDS
    if stage in ("requested", "assigned", "en_route_to_pickup"):
        to_pickup = _to_stop_seconds(
            position, alt_m, list(route_to_pickup or (position, pickup)), speed_kmh
        )
        return to_pickup / k, (to_pickup + after_pickup) / k
    handling_left = HANDLING_SECONDS / 2  # on average, when it is not known
    if hovering_for is not None:
        handling_left = max(0.0, HANDLING_SECONDS - hovering_for * k)
    if stage == "at_pickup":
        return None, (after_pickup - HANDLING_SECONDS + handling_left) / k
    if stage == "en_route_to_dropoff":
        to_dropoff = _to_stop_seconds(position, alt_m, carry_route, speed_kmh)
        return None, (to_dropoff + HANDLING_SECONDS) / k
    if stage == "at_dropoff":
        return None, handling_left / k
    return None, 0.0


def _to_stop_seconds(position: Point, alt_m: float, route: list[Point], speed_kmh: float) -> float:
    """Sim seconds until over the route's end at the handling altitude. The drone climbs
    straight up, cruises, and descends straight down over the stop."""
    rest = route_rest(route, position)
    km = route_km(rest)
    if km * 1000 <= ARRIVAL_RADIUS_M:
        return max(0.0, alt_m - HANDLING_ALT_M) / DESCENT_MPS
    climb = max(0.0, CRUISE_ALT_M - alt_m) / CLIMB_MPS
    return climb + km / speed_kmh * 3600 + (CRUISE_ALT_M - HANDLING_ALT_M) / DESCENT_MPS


def route_rest(route: Sequence[Point], position: Point) -> list[Point]:
    """What is left of `route` from `position`: the position, then the waypoints after the
    segment the position is closest to."""
    points = list(route)
    if len(points) < 2:
        return [position, *points]
    best, best_index = math.inf, 1
    for i in range(1, len(points)):
        d = _to_segment_m(position, points[i - 1], points[i])
        if d < best:
            best, best_index = d, i
    return [position, *points[best_index:]]


def _to_segment_m(p: Point, a: Point, b: Point) -> float:
    """Distance from p to segment ab, in metres, on a local flat projection around p."""

    def xy(q: Point) -> tuple[float, float]:
        x = math.radians(q.lon - p.lon) * math.cos(math.radians(p.lat)) * EARTH_RADIUS_KM * 1000
        y = math.radians(q.lat - p.lat) * EARTH_RADIUS_KM * 1000
        return x, y

    (ax, ay), (bx, by) = xy(a), xy(b)
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return math.hypot(ax + t * dx, ay + t * dy)


def interpolate(a: Point, b: Point, fraction: float) -> Point:
    """The point `fraction` of the way along the great circle from a to b."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    d = distance_km(a, b) / EARTH_RADIUS_KM
    if d == 0:
        return a
    s = math.sin(d)
    f1, f2 = math.sin((1 - fraction) * d) / s, math.sin(fraction * d) / s
    x = f1 * math.cos(lat1) * math.cos(lon1) + f2 * math.cos(lat2) * math.cos(lon2)
    y = f1 * math.cos(lat1) * math.sin(lon1) + f2 * math.cos(lat2) * math.sin(lon2)
    z = f1 * math.sin(lat1) + f2 * math.sin(lat2)
    return Point(math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x)))


def bearing_deg(a: Point, b: Point) -> float:
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlon = math.radians(b.lon - a.lon)
    x = math.sin(dlon) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon)
    return (math.degrees(math.atan2(x, y)) + 360) % 360


def battery_pct_per_km(*, range_km: float, payload_kg: float, max_payload_kg: float) -> float:
    """Battery a km of flight costs: the model's range on a full battery, a tenth less with
    a full payload (the planner's 20 % reserve covers it)."""
    load = min(1.0, max(0.0, payload_kg / max_payload_kg)) if max_payload_kg > 0 else 0.0
    return 100.0 / range_km * (1 + 0.1 * load)

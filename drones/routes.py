"""The way a drone flies from one point to another: around the no-fly zones active while it
flies (airspace.routing), straight when nothing is in the way.

Every flight plan asks a Router: quotes and the API's early checks, the drone choice, the
telemetry's orders to fly home. A Router is for one moment of planning (the zones active in its
time window); it remembers the routes it has planned, since a plan asks for the same few legs
(a base to the pickup, the dropoff to a base) many times.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from drones.flight import route_km
from drones.geo import Point

# A plan counts the zones active at any moment from its start to this much later (a delivery's
# flights take minutes; a zone due to open within the hour is already avoided).
PLAN_WINDOW = timedelta(hours=1)


class Router:
    def __init__(self, airspace: Any, *, start: datetime | None, end: datetime | None) -> None:
        self.airspace = airspace
        self.start, self.end = start, end
        self._routes: dict[tuple[Point, Point], list[Point]] = {}

    def route(self, a: Point, b: Point) -> list[Point]:
        """The polyline from a to b; raises airspace.routing.NoRoute (InsideZone) when none."""
        if self.airspace is None:
            return [a, b]
        key = (a, b)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self.airspace.route(a, b, start=self.start, end=self.end)
        return route

    def km(self, a: Point, b: Point) -> float:
        return route_km(self.route(a, b))

    def zone_at(self, point: Point) -> Any:
        """The no-fly zone (airspace.routing.Zone) the point lies in, or None."""
        if self.airspace is None:
            return None
        return self.airspace.zone_at(point, start=self.start, end=self.end)

    def reach_km(self, a: Point, b: Point) -> float:
        """The route's length, or infinity when there is none (a stop enclosed by zones)."""
        if self.airspace is None:
            return route_km([a, b])
        from airspace.routing import NoRoute

        try:
            return self.km(a, b)
        except NoRoute:
            return math.inf


class LegRouter(Router):
    """The one leg already planned, straight lines for every other: the lower bound of each
    distance, for a check that may say yes too easily but never no wrongly (the API's early
    check: the workflow then plans every leg)."""

    def __init__(self, a: Point, b: Point, route: list[Point]) -> None:
        super().__init__(None, start=None, end=None)
        self.leg = (a, b)
        self.leg_route = route

    def route(self, a: Point, b: Point) -> list[Point]:
        return self.leg_route if (a, b) == self.leg else [a, b]


def router_for(start: datetime | None, end: datetime | None = None) -> Router:
    """A router for flights from `start` (None: now) to `end` (default an hour later)."""
    from airspace.selectors import airspace_get

    airspace = airspace_get()
    if not airspace.zones:
        return STRAIGHT  # no zone anywhere: every route is the straight line
    if start is None:
        start = datetime.now(tz=UTC)
    if end is None:
        try:
            end = start + PLAN_WINDOW
        except OverflowError:  # a time at the end of the calendar: the caller refuses it
            end = None
    return Router(airspace, start=start, end=end)


STRAIGHT = Router(None, start=None, end=None)


def route_json(route: list[Point]) -> list[list[float]]:
    """A route as stored and sent to drones: [[lat, lon], ...]."""
    return [[round(p.lat, 7), round(p.lon, 7)] for p in route]


def route_points(stored: Any) -> list[Point]:
    return [Point(float(lat), float(lon)) for lat, lon in stored or ()]

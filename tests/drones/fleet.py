"""Building small fleets for the drone tests."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

from drones.geo import EARTH_RADIUS_KM, Point
from drones.models import Base, Drone, DroneModel

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# Seattle, where the reference implementation's demo lives.
HERE = Point(47.6062, -122.3321)

_serials = itertools.count(1)


def offset(point: Point, *, north_km: float = 0.0, east_km: float = 0.0) -> Point:
    """The point `north_km` north and `east_km` east of `point` (small distances)."""
    return Point(
        point.lat + math.degrees(north_km / EARTH_RADIUS_KM),
        point.lon + math.degrees(east_km / EARTH_RADIUS_KM / math.cos(math.radians(point.lat))),
    )


def drone_model(
    name: str = "standard",
    *,
    max_payload_kg: float = 5.0,
    cruise_speed_kmh: float = 60.0,
    range_km: float = 30.0,
) -> DroneModel:
    return DroneModel.objects.create(
        name=name,
        max_payload_kg=max_payload_kg,
        cruise_speed_kmh=cruise_speed_kmh,
        range_km=range_km,
    )


def base(point: Point = HERE, name: str | None = None) -> Base:
    return Base.objects.create(
        name=name or f"Base {point.lat:.5f},{point.lon:.5f}", lat=point.lat, lon=point.lon
    )


def drone(
    model: DroneModel,
    home: Base,
    *,
    at: Point | None = None,
    battery_pct: float = 100.0,
    state: str = Drone.State.IDLE,
    serial: str | None = None,
) -> Drone:
    position = at or Point(home.lat, home.lon)
    return Drone.objects.create(
        serial=serial or f"T-{next(_serials):05d}",
        model=model,
        base=home,
        state=state,
        battery_pct=battery_pct,
        lat=position.lat,
        lon=position.lon,
    )

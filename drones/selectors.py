"""Reads of the fleet: could any drone ever do a delivery, and which free drone should do it.

The drone choice never loads the fleet. It asks the database for the free drones in a box
around the pickup, ordered by an arithmetic (index-friendly, trigonometry-free) estimate of the
time each needs to reach the pickup, with a LIMIT; checks the few rows it gets exactly in Python;
and widens the box or the limit only when the best drone found is not yet provably the best:

- a drone outside the box is more than `half_width_km` away (the box is computed so that this
  holds on the sphere), so it cannot arrive sooner than `half_width_km / fastest speed`;
- a drone inside the box but past the LIMIT has an estimate no better than the last row's,
  and the estimate agrees with the haversine time to far better than `_TOLERANCE`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, Q

from drones.geo import EARTH_RADIUS_KM, Point, distance_km
from drones.models import Base, Drone, DroneModel

KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180
# The first box: 2 km around the pickup, about the spacing of bases in a dense city fleet.
_FIRST_HALF_WIDTH_KM = 2.0
_FIRST_LIMIT = 16
# A drone whose time to the pickup is within this fraction of the best counts as a tie.
_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FlightPlan:
    drone_id: UUID
    drone_serial: str
    to_pickup_km: float
    pickup_to_dropoff_km: float
    dropoff_to_base_km: float
    pickup_eta: datetime
    dropoff_eta: datetime

    @property
    def total_km(self) -> float:
        return self.to_pickup_km + self.pickup_to_dropoff_km + self.dropoff_to_base_km


@dataclass(frozen=True)
class _Model:
    id: UUID
    max_payload_kg: float
    cruise_speed_kmh: float
    range_km: float


def battery_reserve_pct() -> float:
    """The battery a drone must still have when it lands back at its base."""
    return float(getattr(settings, "DRONE_BATTERY_RESERVE_PCT", 20))


def delivery_impossible_reason(*, pickup: Point, dropoff: Point, weight_kg: float) -> str | None:
    """Why no drone of the fleet could ever make this delivery, even idle and fully charged at
    its home base; None when some drone could (whether one is free now or not)."""
    has_drones = Exists(Drone.objects.filter(model=OuterRef("pk")))
    models = [_model(row) for row in DroneModel.objects.filter(has_drones).values_list(*_FIELDS)]
    if not models:
        return "There are no drones in the fleet."
    heaviest = max(m.max_payload_kg for m in models)
    if weight_kg > heaviest:
        return (
            f"The package weighs {weight_kg:g} kg; the most any drone of the fleet carries "
            f"is {heaviest:g} kg."
        )
    capable = [m for m in models if m.max_payload_kg >= weight_kg]
    bases = Base.objects.filter(Exists(Drone.objects.filter(base=OuterRef("pk"))))
    leg_km = distance_km(pickup, dropoff)
    trips = {
        base_id: distance_km(Point(lat, lon), pickup)
        + leg_km
        + distance_km(dropoff, Point(lat, lon))
        for base_id, lat, lon in bases.values_list("id", "lat", "lon")
    }
    usable = {m.id: _usable_km(m, battery_pct=100.0) for m in capable}
    pairs = Q()
    for model in capable:
        for base_id, trip_km in trips.items():
            if trip_km <= usable[model.id]:
                pairs |= Q(model_id=model.id, base_id=base_id)
    if pairs and Drone.objects.filter(pairs).exists():
        return None
    return (
        f"The shortest trip base → pickup → dropoff → base is {min(trips.values()):.1f} km; "
        f"a drone able to carry {weight_kg:g} kg flies at most {max(usable.values()):.1f} km "
        f"keeping the {battery_reserve_pct():g} % battery reserve."
    )


def drone_plan_best(
    *,
    pickup: Point,
    dropoff: Point,
    weight_kg: float,
    start: datetime,
    not_before: datetime | None = None,
    exclude: frozenset[UUID] = frozenset(),
) -> FlightPlan | None:
    """The plan of the free drone that can carry the package, has the battery for
    position → pickup → dropoff → home base plus the reserve, and reaches the pickup soonest.
    Nothing is reserved."""
    leg_km = distance_km(pickup, dropoff)
    models = {
        m.id: m
        for m in map(_model, DroneModel.objects.values_list(*_FIELDS))
        if m.max_payload_kg >= weight_kg and _usable_km(m, battery_pct=100.0) >= leg_km
    }
    if not models:
        return None
    # What the longest-flying model has left for the flights to the pickup and home.
    spare_km = max(_usable_km(m, battery_pct=100.0) for m in models.values()) - leg_km
    to_base = {}
    for base_id, lat, lon in Base.objects.values_list("id", "lat", "lon"):
        home_km = distance_km(dropoff, Point(lat, lon))
        if home_km <= spare_km:
            to_base[base_id] = home_km
    if not to_base:
        return None
    # No drone further than this from the pickup could make the trip, whatever its battery.
    reach_km = spare_km - min(to_base.values())
    fastest_kmh = max(m.cruise_speed_kmh for m in models.values())
    half_width_km = min(_FIRST_HALF_WIDTH_KM, reach_km)
    limit = _FIRST_LIMIT
    while True:
        rows = _free_drones_near(
            pickup=pickup,
            leg_km=leg_km,
            models=models.values(),
            to_base=to_base,
            half_width_km=half_width_km,
            limit=limit,
            exclude=exclude,
        )
        best = _best_feasible(rows, models=models, to_base=to_base, pickup=pickup, leg_km=leg_km)
        # The soonest a drone not seen yet could reach the pickup, in hours.
        unseen_hours = math.inf if half_width_km >= reach_km else half_width_km / fastest_kmh
        truncated = len(rows) == limit
        if truncated:
            unseen_hours = min(unseen_hours, math.sqrt(rows[-1][-1]) * (1 + _TOLERANCE))
        if best is not None and best.hours <= unseen_hours:
            break
        if truncated and (best is None or best.hours > rows[-1][-1] ** 0.5 * (1 + _TOLERANCE)):
            limit *= 4  # the rows past the limit may hold a better one
        elif half_width_km >= reach_km:
            break
        elif best is not None:
            # Just wide enough to prove it, or to find the one that beats it.
            half_width_km = min(best.hours * fastest_kmh * (1 + _TOLERANCE), reach_km)
        else:
            half_width_km = min(half_width_km * 2, reach_km)
    if best is None:
        return None
    serial = Drone.objects.filter(pk=best.drone_id).values_list("serial", flat=True).first()
    return _plan(best, serial=serial or "", start=start, not_before=not_before)


def drone_plan_for(
    *,
    drone_id: UUID,
    pickup: Point,
    dropoff: Point,
    start: datetime,
    not_before: datetime | None = None,
) -> FlightPlan | None:
    """The plan of one given drone from where it is now (no feasibility check), or None if
    there is no such drone."""
    row = (
        Drone.objects.filter(pk=drone_id)
        .values_list("serial", "lat", "lon", "base__lat", "base__lon", "model__cruise_speed_kmh")
        .first()
    )
    if row is None:
        return None
    serial, lat, lon, base_lat, base_lon, speed_kmh = row
    to_pickup_km = distance_km(Point(lat, lon), pickup)
    candidate = _Candidate(
        drone_id=drone_id,
        hours=to_pickup_km / speed_kmh,
        battery_pct=0.0,
        speed_kmh=speed_kmh,
        to_pickup_km=to_pickup_km,
        leg_km=distance_km(pickup, dropoff),
        to_base_km=distance_km(dropoff, Point(base_lat, base_lon)),
    )
    return _plan(candidate, serial=serial, start=start, not_before=not_before)


_FIELDS = ("id", "max_payload_kg", "cruise_speed_kmh", "range_km")


def _model(row: tuple[UUID, float, float, float]) -> _Model:
    return _Model(*row)


def _usable_km(model: _Model, *, battery_pct: float) -> float:
    return model.range_km * (battery_pct - battery_reserve_pct()) / 100


@dataclass(frozen=True)
class _Candidate:
    drone_id: UUID
    hours: float
    battery_pct: float
    speed_kmh: float
    to_pickup_km: float
    leg_km: float
    to_base_km: float


_Row = tuple[UUID, float, float, UUID, float, UUID, float]


def _free_drones_near(
    *,
    pickup: Point,
    leg_km: float,
    models: Iterable[_Model],
    to_base: dict[UUID, float],
    half_width_km: float,
    limit: int,
    exclude: frozenset[UUID],
) -> list[_Row]:
    """Free drones of the given models and bases within the box that seem to have the battery
    for the trip, by estimated time to the pickup: rows of
    (id, lat, lon, model_id, battery_pct, base_id, estimated hours squared).

    Plain SQL: built through the ORM's expressions the same query costs three times as much
    to compile as to run.
    """
    lat0, lon0 = pickup.lat, pickup.lon
    dlat_deg = math.degrees(half_width_km / EARTH_RADIUS_KM)
    where = ["state = %s", "assigned_delivery_id IS NULL", "lat >= %s", "lat <= %s"]
    params: list[Any] = [Drone.State.IDLE.value, lat0 - dlat_deg, lat0 + dlat_deg]
    # A point at a longitude difference of at least L is at least asin(cos(lat0)·sin(L)) away
    # (its distance to the meridian that bounds it), so this box loses no drone closer than
    # the half width. Fleets do not straddle the antimeridian.
    sin_l = math.sin(half_width_km / EARTH_RADIUS_KM) / max(math.cos(math.radians(lat0)), 1e-12)
    if sin_l < 1:
        dlon_deg = math.degrees(math.asin(sin_l))
        where += ["lon >= %s", "lon <= %s"]
        params += [lon0 - dlon_deg, lon0 + dlon_deg]
    models = list(models)
    where.append(f"model_id IN ({', '.join(['%s'] * len(models))})")
    params += [_db_uuid(m.id) for m in models]
    where.append(f"base_id IN ({', '.join(['%s'] * len(to_base))})")
    params += [_db_uuid(b) for b in to_base]
    if exclude:
        where.append(f"id NOT IN ({', '.join(['%s'] * len(exclude))})")
        params += [_db_uuid(d) for d in exclude]
    # Equirectangular distance with the cosine taken at the mid latitude, to first order
    # (cos(lat0 + d/2) ≈ cos(lat0) - sin(lat0)·d/2): plain arithmetic, so SQLite needs no
    # functions, and within 1e-5 of the haversine distance at a few hundred km.
    cos0, sin0 = math.cos(math.radians(lat0)), math.sin(math.radians(lat0))
    dx = "((lon - %s) * (%s - %s * (lat - %s)))"
    dx_params = [lon0, cos0, sin0 * math.pi / 360, lat0]
    km2 = f"(((lat - %s) * (lat - %s) + {dx} * {dx}) * %s)"
    km2_params = [lat0, lat0, *dx_params, *dx_params, KM_PER_DEGREE**2]
    per_model = " ".join(["WHEN %s THEN %s"] * len(models))
    per_base = " ".join(["WHEN %s THEN %s"] * len(to_base))
    km_per_pct = [x for m in models for x in (_db_uuid(m.id), m.range_km / 100)]
    hours2_per_km2 = [x for m in models for x in (_db_uuid(m.id), 1 / m.cruise_speed_kmh**2)]
    home_km = [x for base_id, km in to_base.items() for x in (_db_uuid(base_id), km)]
    # budget: what the battery leaves for the flight to the pickup, once the leg to the
    # dropoff and the flight home are paid; the estimate must fit in it.
    sql = f"""
        SELECT id, lat, lon, model_id, battery_pct, base_id, km2 * hours2_per_km2 AS hours2
        FROM (
            SELECT id, lat, lon, model_id, battery_pct, base_id, {km2} AS km2,
                CASE model_id {per_model} END * (battery_pct - %s) - %s
                    - CASE base_id {per_base} END AS budget_km,
                CASE model_id {per_model} END AS hours2_per_km2
            FROM {connection.ops.quote_name(Drone._meta.db_table)}
            WHERE {" AND ".join(where)}
        ) AS near
        WHERE budget_km >= 0 AND km2 <= budget_km * budget_km * %s
        ORDER BY hours2
        LIMIT %s
    """  # noqa: S608 - only placeholders and constants are interpolated
    all_params = [
        *km2_params,
        *km_per_pct,
        battery_reserve_pct(),
        leg_km,
        *home_km,
        *hours2_per_km2,
        *params,
        (1 + _TOLERANCE) ** 2,
        limit,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, all_params)
        return [
            (_uuid(i), lat, lon, _uuid(m), battery, _uuid(b), hours2)
            for i, lat, lon, m, battery, b, hours2 in cursor.fetchall()
        ]


_UUID_FIELD = Drone._meta.get_field("id")


def _db_uuid(value: UUID) -> object:
    return _UUID_FIELD.get_db_prep_value(value, connection)


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _best_feasible(
    rows: list[_Row],
    *,
    models: dict[UUID, _Model],
    to_base: dict[UUID, float],
    pickup: Point,
    leg_km: float,
) -> _Candidate | None:
    best: _Candidate | None = None
    for drone_id, lat, lon, model_id, battery_pct, base_id, _ in rows:
        model = models[model_id]
        to_pickup_km = distance_km(Point(lat, lon), pickup)
        if to_pickup_km + leg_km + to_base[base_id] > _usable_km(model, battery_pct=battery_pct):
            continue
        candidate = _Candidate(
            drone_id=drone_id,
            hours=to_pickup_km / model.cruise_speed_kmh,
            battery_pct=battery_pct,
            speed_kmh=model.cruise_speed_kmh,
            to_pickup_km=to_pickup_km,
            leg_km=leg_km,
            to_base_km=to_base[base_id],
        )
        # Sooner wins; between equals, the fuller battery, then a stable order.
        if best is None or (candidate.hours, -candidate.battery_pct, str(candidate.drone_id)) < (
            best.hours,
            -best.battery_pct,
            str(best.drone_id),
        ):
            best = candidate
    return best


def _plan(
    candidate: _Candidate, *, serial: str, start: datetime, not_before: datetime | None
) -> FlightPlan:
    pickup_eta = start + timedelta(hours=candidate.hours)
    if not_before is not None and pickup_eta < not_before:
        pickup_eta = not_before
    return FlightPlan(
        drone_id=candidate.drone_id,
        drone_serial=serial,
        to_pickup_km=candidate.to_pickup_km,
        pickup_to_dropoff_km=candidate.leg_km,
        dropoff_to_base_km=candidate.to_base_km,
        pickup_eta=pickup_eta,
        dropoff_eta=pickup_eta + timedelta(hours=candidate.leg_km / candidate.speed_kmh),
    )

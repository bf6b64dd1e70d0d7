"""Reads of the fleet: could any drone ever do a delivery, and which free drone should do it.

The drone choice never loads the fleet into Python, and it is built for how fleets look: a few
bases with many drones each, idle drones waiting where they live. It runs in two steps.

1. Drones at their home base. For each (base, model) pair the time to the pickup and the battery
   the whole trip needs are the same for every drone of the pair, so one index probe per pair
   finds a free drone with that battery (the fullest). Pairs are probed in order of arrival
   time, a few per query, and the first query that finds any drone has the best of them.
2. Free drones anywhere else (landed elsewhere, not back yet). They are searched in a box
   around the pickup, through an index of drones away from their base alone (Drone.away),
   ordered by an arithmetic (trigonometry-free, so portable) estimate of the time to the pickup,
   with a LIMIT; the rows are checked exactly in Python. The box is just wide enough to hold
   every drone that could beat step 1's time, and grows, or the limit does, only when the best
   drone found is not yet provably the best:

   - a drone outside the box is more than `half_width_km` away (the box is computed so that
     this holds on the sphere), so it cannot arrive sooner than `half_width_km / fastest speed`;
   - a drone inside the box but past the LIMIT has an estimate no better than the last row's,
     and the estimate agrees with the haversine time to far better than `_TOLERANCE`.

The models and bases are read once per call (they are few); nothing is cached.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection

from drones.flight import delivery_schedule
from drones.geo import EARTH_RADIUS_KM, Point, distance_km
from drones.models import Base, Drone, DroneModel
from drones.routes import STRAIGHT, Router

KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180
# (model, base) pairs probed per query in step 1.
_PAIRS_PER_QUERY = 8
_FIRST_LIMIT = 16
# Arrival times within this fraction of each other count as a tie.
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
    # Where the drone is now, when the search read it: free drones are idle, on the ground.
    drone_position: Point | None = None
    # The polylines it flies: to the pickup, to the dropoff, home (around no-fly zones).
    routes: dict[str, list[Point]] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def total_km(self) -> float:
        return self.to_pickup_km + self.pickup_to_dropoff_km + self.dropoff_to_base_km


def battery_reserve_pct() -> float:
    """The battery a drone must still have when it lands back at its base."""
    return float(getattr(settings, "DRONE_BATTERY_RESERVE_PCT", 20))


def delivery_impossible_reason(
    *,
    pickup: Point,
    dropoff: Point,
    weight_kg: float,
    max_age_seconds: float = 0.0,
    router: Router = STRAIGHT,
) -> str | None:
    """Why no drone of the fleet could ever make this delivery, even idle and fully charged at
    its home base; None when some drone could (whether one is free now or not).

    With `max_age_seconds` the fleet's shape (which models live at which bases) may come from
    this process's memory, that old at most, to say yes: the API's early check uses it, since
    the shape changes when drones are bought, not per request. A no is always asked of the
    database, so that a drone added a moment ago serves the very next request.
    """
    trip = (pickup, dropoff, weight_kg, router)
    if max_age_seconds > 0:
        if _impossible_reason(_populated_pairs(max_age_seconds), *trip) is None:
            return None
        global _populated
        _populated = None
        return _impossible_reason(_populated_pairs(max_age_seconds), *trip)
    return _impossible_reason(fleet_pairs(), *trip, cached=False)


def _impossible_reason(
    pairs: list[_Pair],
    pickup: Point,
    dropoff: Point,
    weight_kg: float,
    router: Router,
    *,
    cached: bool = True,
) -> str | None:
    heaviest = max((p.model.max_payload_kg for p in pairs if p.model.has_drones), default=None)
    if heaviest is None:
        return "There are no drones in the fleet."
    if weight_kg > heaviest:
        return (
            f"The package weighs {weight_kg:g} kg; the most any drone of the fleet carries "
            f"is {heaviest:g} kg."
        )
    leg_km = router.km(pickup, dropoff)
    able = [p for p in pairs if p.model.has_drones and p.model.max_payload_kg >= weight_kg]

    def trip_km(pair: _Pair) -> float:
        return router.reach_km(pair.base, pickup) + leg_km + router.reach_km(dropoff, pair.base)

    def in_range(pair: _Pair) -> bool:
        return trip_km(pair) <= _usable_km(pair.model, battery_pct=100.0)

    if cached:
        # Every remembered pair has drones: the first one within range settles it.
        if any(in_range(pair) for pair in able):
            return None
    elif _any_drone_of([pair for pair in able if in_range(pair)]):
        return None
    shortest_km = min(trip_km(pair) for pair in able)
    longest_km = max(_usable_km(pair.model, battery_pct=100.0) for pair in able)
    return (
        f"The shortest trip base → pickup → dropoff → base is {shortest_km:.1f} km; "
        f"a drone able to carry {weight_kg:g} kg flies at most {longest_km:.1f} km "
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
    router: Router = STRAIGHT,
    fleet: list[_Pair] | None = None,
) -> FlightPlan | None:
    """The plan of the free drone that can carry the package, has the battery for
    position → pickup → dropoff → home base plus the reserve, and reaches the pickup soonest.
    Nothing is reserved.

    Distances are those of the routes `router` plans (around no-fly zones). The search's
    bounds stay straight-line distances, which are never longer, so they still prove the best.
    Raises airspace.routing.NoRoute when no route leads from the pickup to the dropoff.
    `fleet`: fleet_pairs() as read by the caller, when it plans several deliveries at once."""
    leg_km = router.km(pickup, dropoff)
    trip = _Trip(
        pickup=pickup,
        leg_km=leg_km,
        to_base={},
        homes={},
        models={},
        exclude=exclude,
        router=router,
    )
    pairs = []
    for pair in fleet if fleet is not None else fleet_pairs():
        to_base_km = router.reach_km(dropoff, pair.base)  # infinite: no way home there
        # What a full battery leaves for the flight to the pickup.
        spare_km = _usable_km(pair.model, battery_pct=100.0) - leg_km - to_base_km
        if pair.model.has_drones and pair.model.max_payload_kg >= weight_kg and spare_km >= 0:
            trip.models[pair.model.id] = pair.model
            trip.to_base[pair.base_id] = to_base_km
            trip.homes[pair.base_id] = pair.base
            pairs.append((pair, spare_km))
    if not pairs:
        return None
    arms = _arms(trip, [pair for pair, _ in pairs])
    fastest_kmh = max(m.cruise_speed_kmh for m in trip.models.values())
    # No drone further than this from the pickup could make the trip, whatever its battery.
    reach_km = max(spare_km for _, spare_km in pairs)
    # Step 2 goes along in the same query, searching as far out as a drone would have to be
    # to beat the soonest pair: enough whenever that pair has a free drone.
    half_width_km = reach_km
    if arms:
        half_width_km = min(arms[0].hours * fastest_kmh * (1 + _TOLERANCE), reach_km)
    limit = _FIRST_LIMIT
    home, away, last_hours = _search(
        trip, _home_sql(trip, arms[:_PAIRS_PER_QUERY]), _away_sql(trip, half_width_km, limit)
    )
    best = _best_feasible(trip, home)
    # The first query that finds drones at home has the best of them: the pairs left for
    # later are no sooner.
    for first in range(_PAIRS_PER_QUERY, len(arms), _PAIRS_PER_QUERY):
        if best is not None:
            break
        home, _, _ = _search(trip, _home_sql(trip, arms[first : first + _PAIRS_PER_QUERY]))
        best = _best_feasible(trip, home)
    while True:
        best = _sooner(best, _best_feasible(trip, away))
        # The soonest a drone not seen yet could reach the pickup, in hours.
        unseen_hours = math.inf if half_width_km >= reach_km else half_width_km / fastest_kmh
        truncated = len(away) == limit
        if truncated:
            unseen_hours = min(unseen_hours, last_hours * (1 + _TOLERANCE))
        if best is not None and best.hours <= unseen_hours:
            break
        if truncated and (best is None or best.hours > last_hours * (1 + _TOLERANCE)):
            limit *= 4  # the rows past the limit may hold a better one
        elif half_width_km >= reach_km:
            break
        elif best is None:
            half_width_km = reach_km  # nothing at home: drones away are rare, take them all
        else:
            # Just wide enough to prove it, or to find the one that beats it.
            half_width_km = min(best.hours * fastest_kmh * (1 + _TOLERANCE), reach_km)
        _, away, last_hours = _search(trip, _away_sql(trip, half_width_km, limit))
    if best is None:
        return None
    if best.serial is None:
        serial = Drone.objects.filter(pk=best.drone_id).values_list("serial", flat=True).first()
        best = dataclasses.replace(best, serial=serial or "")
    return _plan(best, start=start, not_before=not_before, trip=trip, dropoff=dropoff)


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
        serial=serial,
        hours=to_pickup_km / speed_kmh,
        battery_pct=0.0,
        speed_kmh=speed_kmh,
        to_pickup_km=to_pickup_km,
        leg_km=distance_km(pickup, dropoff),
        to_base_km=distance_km(dropoff, Point(base_lat, base_lon)),
        position=Point(lat, lon),
    )
    return _plan(candidate, start=start, not_before=not_before)


@dataclass(frozen=True)
class _Model:
    id: UUID
    max_payload_kg: float
    cruise_speed_kmh: float
    range_km: float
    has_drones: bool


@dataclass(frozen=True)
class _Pair:
    """A drone model and a base: the drones of that model living there."""

    model: _Model
    base_id: UUID
    base: Point


@dataclass
class _Trip:
    pickup: Point
    leg_km: float
    # The bases and models of the pairs that could make the trip; a base's distance from the
    # dropoff (the flight home).
    to_base: dict[UUID, float]
    homes: dict[UUID, Point]
    models: dict[UUID, _Model]
    exclude: frozenset[UUID]
    router: Router = STRAIGHT


@dataclass(frozen=True)
class _Candidate:
    drone_id: UUID
    serial: str | None
    hours: float
    battery_pct: float
    speed_kmh: float
    to_pickup_km: float
    leg_km: float
    to_base_km: float
    position: Point | None = None
    base_id: UUID | None = None


# (id, serial (None when not read), lat, lon, model_id, battery_pct, base_id)
_Row = tuple[UUID, str | None, float, float, UUID, float, UUID]
_COLUMNS = "id, serial, lat, lon, model_id, battery_pct, base_id"


def _usable_km(model: _Model, *, battery_pct: float) -> float:
    return model.range_km * (battery_pct - battery_reserve_pct()) / 100


def _table(model: type[Drone | DroneModel | Base]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def fleet_pairs() -> list[_Pair]:
    """Every (model, base) combination, whether it has drones or not (both tables are small),
    and whether each model has any drone at all.

    One round trip for both tables. Not a join: PostgreSQL estimates a table it has never
    analysed (a few rows never trigger autovacuum's analyse) at hundreds of rows, and the
    cost of a join of two such tables is high enough to have it JIT-compiled, which takes
    longer than everything else here together.
    """
    sql = f"""
        SELECT 'model', id, max_payload_kg, cruise_speed_kmh, range_km,
            EXISTS (SELECT 1 FROM {_table(Drone)} d WHERE d.model_id = m.id)
        FROM {_table(DroneModel)} m
        UNION ALL
        SELECT 'base', id, lat, lon, NULL, NULL FROM {_table(Base)}
    """  # noqa: S608  # nosec B608 # table names only
    with connection.cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    models = [
        _Model(_uuid(i), a, b, c, bool(has_drones))
        for kind, i, a, b, c, has_drones in rows
        if kind == "model"
    ]
    bases = [(_uuid(i), Point(a, b)) for kind, i, a, b, *_ in rows if kind == "base"]
    return [_Pair(m, base_id, point) for m in models for base_id, point in bases]


_populated: tuple[float, list[_Pair]] | None = None


def _populated_pairs(max_age_seconds: float) -> list[_Pair]:
    """The (model, base) pairs that have at least one drone; from memory while young enough."""
    global _populated
    now = time.monotonic()
    if _populated is not None and now - _populated[0] <= max_age_seconds:
        return _populated[1]
    with connection.cursor() as cursor:
        sql = f"SELECT DISTINCT model_id, base_id FROM {_table(Drone)}"  # noqa: S608  # nosec B608 # a table name
        cursor.execute(sql)
        present = {(_uuid(model_id), _uuid(base_id)) for model_id, base_id in cursor.fetchall()}
    pairs = [pair for pair in fleet_pairs() if (pair.model.id, pair.base_id) in present]
    _populated = (now, pairs)
    return pairs


def _any_drone_of(pairs: list[_Pair]) -> bool:
    """Whether any drone, busy or not, is of one of these (model, base) pairs."""
    if not pairs:
        return False
    one = f"""
        SELECT * FROM (
            SELECT 1 AS hit FROM {_table(Drone)} WHERE model_id = %s AND base_id = %s LIMIT 1
        ) AS pair{{}}
    """  # noqa: S608  # nosec B608 # placeholders and table names only
    sql = " UNION ALL ".join(one.format(i) for i in range(len(pairs))) + " LIMIT 1"
    db_uuid = _uuid_param()
    params = [x for p in pairs for x in (db_uuid(p.model.id), db_uuid(p.base_id))]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


@dataclass(frozen=True)
class _Arm:
    """A probe for the fullest free drone of a pair waiting at its base with enough battery."""

    hours: float
    pair: _Pair
    min_battery_pct: float


def _arms(trip: _Trip, pairs: list[_Pair]) -> list[_Arm]:
    """The probes of step 1, soonest first; only pairs whose drones could make the trip."""
    arms = []
    for pair in pairs:
        to_pickup_km = trip.router.reach_km(pair.base, trip.pickup)
        needed_km = to_pickup_km + trip.leg_km + trip.to_base[pair.base_id]
        if needed_km <= _usable_km(pair.model, battery_pct=100.0):
            min_battery_pct = battery_reserve_pct() + 100 * needed_km / pair.model.range_km
            arms.append(_Arm(to_pickup_km / pair.model.cruise_speed_kmh, pair, min_battery_pct))
    return sorted(arms, key=lambda arm: arm.hours)


def _home_sql(trip: _Trip, arms: list[_Arm]) -> tuple[str, list[Any]]:
    """Step 1: one index probe per pair."""
    one = f"""
        SELECT * FROM (
            SELECT 'home' AS kind, {_COLUMNS}, CAST(NULL AS DOUBLE PRECISION) AS hours2
            FROM {_table(Drone)}
            WHERE state = %s AND assigned_delivery_id IS NULL AND base_id = %s AND model_id = %s
                AND lat = %s AND lon = %s AND battery_pct >= %s {{not_in}}
            ORDER BY battery_pct DESC
            LIMIT 1
        ) AS home{{}}
    """  # noqa: S608  # nosec B608 # placeholders and table names only
    db_uuid = _uuid_param()
    not_in, excluded = _not_in("id", trip.exclude)
    one = one.replace("{not_in}", not_in)
    params: list[Any] = []
    for arm in arms:
        pair = arm.pair
        params += [Drone.State.IDLE.value, db_uuid(pair.base_id), db_uuid(pair.model.id)]
        params += [pair.base.lat, pair.base.lon, arm.min_battery_pct, *excluded]
    return " UNION ALL ".join(one.format(i) for i in range(len(arms))), params


def _search(trip: _Trip, *parts: tuple[str, list[Any]]) -> tuple[list[_Row], list[_Row], float]:
    """Run the parts as one query: the drones found at home, those found away (soonest first)
    and the estimated time of the last of these, in hours."""
    sql = " UNION ALL ".join(part for part, _ in parts if part)
    params = [param for part, part_params in parts if part for param in part_params]
    rows = _fetch(sql, params)
    home: list[_Row] = []
    away: list[tuple[float, _Row]] = []
    for kind, i, serial, lat, lon, m, battery, b, hours2 in rows:
        row = (_uuid(i), serial, lat, lon, _uuid(m), battery, _uuid(b))
        if kind == "home":
            home.append(row)
        else:
            away.append((hours2, row))
    away.sort(key=lambda hours2_row: hours2_row[0])
    last_hours = math.sqrt(away[-1][0]) if away else math.inf
    return home, [row for _, row in away], last_hours


def _fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of a search. On PostgreSQL as a prepared statement with its parameters bound
    by the server: the search's text is long and its parameters many, and planning it anew
    every time cost the database more than running it (Django binds parameters in the client,
    so its cursors never reuse a plan). The texts are few (a fleet's bases and models fix
    them), and psycopg keeps the prepared statements per connection."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    import psycopg

    _keep_long_parses()
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return list(cursor.fetchall())


@functools.cache
def _keep_long_parses() -> None:
    """psycopg parses a query's placeholders again on every call when its text is longer than
    4 KB or its parameters more than 50, as the search's are (a few texts, called all the
    time): the parse cost the worker more than the rest of the search. Raised once per
    process; tests/drones/test_selectors.py checks that these settings of psycopg's exist, so
    that an upgrade that drops them is seen."""
    from psycopg import _queries

    _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, 1 << 16)
    _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, 2048)


def _away_sql(trip: _Trip, half_width_km: float, limit: int) -> tuple[str, list[Any]]:
    """Step 2: free drones not at their base, within the box, that seem to have the battery for
    the trip, by estimated time to the pickup (squared, in hours). Only columns of the search
    index, so that it is read alone; the serial of a drone chosen here is read afterwards."""
    db_uuid = _uuid_param()
    lat0, lon0 = trip.pickup.lat, trip.pickup.lon
    dlat_deg = math.degrees(half_width_km / EARTH_RADIUS_KM)
    # "assigned_delivery_id IS NULL AND away": the search index's own condition, word for word.
    where = ["state = %s", "assigned_delivery_id IS NULL", "away", "lat >= %s", "lat <= %s"]
    params: list[Any] = [Drone.State.IDLE.value, lat0 - dlat_deg, lat0 + dlat_deg]
    # A point at a longitude difference of at least L is at least asin(cos(lat0)·sin(L)) away
    # (its distance to the meridian that bounds it), so this box loses no drone closer than
    # the half width. Fleets do not straddle the antimeridian.
    sin_l = math.sin(half_width_km / EARTH_RADIUS_KM) / max(math.cos(math.radians(lat0)), 1e-12)
    if sin_l < 1:
        dlon_deg = math.degrees(math.asin(sin_l))
        where += ["lon >= %s", "lon <= %s"]
        params += [lon0 - dlon_deg, lon0 + dlon_deg]
    models, bases = list(trip.models.values()), list(trip.to_base)
    where.append(f"model_id IN ({', '.join(['%s'] * len(models))})")
    params += [db_uuid(m.id) for m in models]
    # Step 1 counted the drones at their base, which `away` leaves out (the index holds only
    # the others). No "base_id IN": a drone of another base gets no budget below and is left
    # out all the same.
    not_in, excluded = _not_in("id", trip.exclude)
    where.append(not_in.removeprefix("AND ") or "1 = 1")
    params += excluded
    # Equirectangular distance with the cosine taken at the mid latitude, to first order
    # (cos(lat0 + d/2) ≈ cos(lat0) - sin(lat0)·d/2): plain arithmetic, so SQLite needs no
    # functions, and within 1e-5 of the haversine distance at a few hundred km.
    cos0, sin0 = math.cos(math.radians(lat0)), math.sin(math.radians(lat0))
    dx = f"((lon - {_F}) * ({_F} - {_F} * (lat - {_F})))"
    dx_params = [lon0, cos0, sin0 * math.pi / 360, lat0]
    km2 = f"(((lat - {_F}) * (lat - {_F}) + {dx} * {dx}) * {_F})"
    km2_params = [lat0, lat0, *dx_params, *dx_params, KM_PER_DEGREE**2]
    per_model = " ".join([f"WHEN %s THEN {_F}"] * len(models))
    per_base = " ".join([f"WHEN %s THEN {_F}"] * len(bases))
    km_per_pct = [x for m in models for x in (db_uuid(m.id), m.range_km / 100)]
    hours2_per_km2 = [x for m in models for x in (db_uuid(m.id), 1 / m.cruise_speed_kmh**2)]
    home_km = [x for b in bases for x in (db_uuid(b), trip.to_base[b])]
    # budget: what the battery leaves for the flight to the pickup once the leg to the
    # dropoff and the flight home are paid; the estimate must fit in it.
    sql = f"""
        SELECT * FROM (
            SELECT 'away' AS kind, id, NULL AS serial, lat, lon, model_id, battery_pct, base_id,
                km2 * hours2_per_km2 AS hours2
            FROM (
                SELECT id, lat, lon, model_id, battery_pct, base_id, {km2} AS km2,
                    CASE model_id {per_model} END * (battery_pct - {_F}) - {_F}
                        - CASE base_id {per_base} END AS budget_km,
                    CASE model_id {per_model} END AS hours2_per_km2
                FROM {_table(Drone)}
                WHERE {" AND ".join(where)}
            ) AS candidates
            WHERE budget_km >= 0 AND km2 <= budget_km * budget_km * {_F}
            ORDER BY hours2
            LIMIT %s
        ) AS away
    """  # noqa: S608  # nosec B608 # placeholders and table names only
    all_params = [
        *km2_params,
        *km_per_pct,
        battery_reserve_pct(),
        trip.leg_km,
        *home_km,
        *hours2_per_km2,
        *params,
        (1 + _TOLERANCE) ** 2,
        limit,
    ]
    return sql, all_params


# A float parameter. Cast, because PostgreSQL otherwise takes a literal for `numeric`
# and computes every row in decimal arithmetic; the cast of a constant costs nothing.
_F = "CAST(%s AS DOUBLE PRECISION)"


def _not_in(column: str, values: frozenset[UUID]) -> tuple[str, list[Any]]:
    """`column` is none of `values`: on PostgreSQL one array parameter, so that the query's
    text is the same however many (it is prepared, _search)."""
    if connection.vendor == "postgresql":
        # As an array's text: psycopg's dump of a list of UUIDs cost more than the search.
        return f"AND {column} <> ALL(CAST(%s AS uuid[]))", ["{" + ",".join(map(str, values)) + "}"]
    if not values:
        return "", []
    db_uuid = _uuid_param()
    return f"AND {column} NOT IN ({', '.join(['%s'] * len(values))})", [
        db_uuid(v) for v in sorted(values)
    ]


def _best_feasible(trip: _Trip, rows: list[_Row]) -> _Candidate | None:
    best: _Candidate | None = None
    for drone_id, serial, lat, lon, model_id, battery_pct, base_id in rows:
        model = trip.models[model_id]
        position = Point(lat, lon)
        if base_id not in trip.to_base:
            continue  # a base with no way home from the dropoff
        to_pickup_km = trip.router.reach_km(position, trip.pickup)
        needed_km = to_pickup_km + trip.leg_km + trip.to_base[base_id]
        if needed_km > _usable_km(model, battery_pct=battery_pct):
            continue
        best = _sooner(
            best,
            _Candidate(
                drone_id=drone_id,
                serial=serial,
                hours=to_pickup_km / model.cruise_speed_kmh,
                battery_pct=battery_pct,
                speed_kmh=model.cruise_speed_kmh,
                to_pickup_km=to_pickup_km,
                leg_km=trip.leg_km,
                to_base_km=trip.to_base[base_id],
                position=position,
                base_id=base_id,
            ),
        )
    return best


def _sooner(a: _Candidate | None, b: _Candidate | None) -> _Candidate | None:
    """Sooner wins; between equals, the fuller battery, then a stable order."""
    if a is None or b is None:
        return a or b
    key_a = (a.hours, -a.battery_pct, str(a.drone_id))
    key_b = (b.hours, -b.battery_pct, str(b.drone_id))
    return a if key_a <= key_b else b


def _uuid_param() -> Callable[[UUID], Any]:
    """How this database takes a UUID parameter: as is, or as the 32 hex digits Django's
    UUIDField stores (SQLite). Asked once per query built, since reaching the connection
    costs more than converting the few dozen ids of a search."""
    if connection.features.has_native_uuid_field:
        return lambda value: value
    return lambda value: value.hex


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _plan(
    candidate: _Candidate,
    *,
    start: datetime,
    not_before: datetime | None,
    trip: _Trip | None = None,
    dropoff: Point | None = None,
) -> FlightPlan:
    """The flight plan of a candidate, by the flight profile (climb, cruise, descent, handling;
    drones.flight): over the pickup after the flight there, or at `not_before` when later (the
    drone then takes off later); done at the dropoff after both handlings and the leg. With
    the trip, the routes it flies."""
    schedule = delivery_schedule(
        to_pickup_km=candidate.to_pickup_km,
        leg_km=candidate.leg_km,
        speed_kmh=candidate.speed_kmh,
    )
    pickup_eta = start + timedelta(seconds=schedule.to_pickup)
    if not_before is not None and pickup_eta < not_before:
        pickup_eta = not_before
    routes: dict[str, list[Point]] = {}
    if trip is not None and dropoff is not None and candidate.position is not None:
        home = trip.homes.get(candidate.base_id) if candidate.base_id else None
        routes["to_pickup"] = trip.router.route(candidate.position, trip.pickup)
        routes["to_dropoff"] = trip.router.route(trip.pickup, dropoff)
        if home is not None:
            routes["to_base"] = trip.router.route(dropoff, home)
    return FlightPlan(
        drone_id=candidate.drone_id,
        drone_serial=candidate.serial or "",
        to_pickup_km=candidate.to_pickup_km,
        pickup_to_dropoff_km=candidate.leg_km,
        dropoff_to_base_km=candidate.to_base_km,
        pickup_eta=pickup_eta,
        dropoff_eta=pickup_eta + timedelta(seconds=schedule.pickup_to_delivered),
        drone_position=candidate.position,
        routes=routes,
    )

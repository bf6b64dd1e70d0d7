from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from drones.geo import Point, distance_km
from drones.models import Drone
from drones.selectors import delivery_impossible_reason, drone_plan_best
from tests.drones.fleet import HERE, START, base, drone, drone_model, offset

pytestmark = pytest.mark.django_db

PICKUP = HERE
DROPOFF = offset(HERE, north_km=2.0)


def best(weight_kg: float = 1.0, **kwargs: object) -> Drone | None:
    plan = drone_plan_best(
        pickup=kwargs.pop("pickup", PICKUP),  # type: ignore[arg-type]
        dropoff=kwargs.pop("dropoff", DROPOFF),  # type: ignore[arg-type]
        weight_kg=weight_kg,
        start=START,
        **kwargs,  # type: ignore[arg-type]
    )
    return None if plan is None else Drone.objects.get(pk=plan.drone_id)


def test_a_faster_drone_further_away_beats_a_slow_one_nearby() -> None:
    slow = drone_model("slow", cruise_speed_kmh=20.0)
    fast = drone_model("fast", cruise_speed_kmh=60.0)
    near = drone(slow, base(offset(HERE, east_km=1.0)))  # 3 minutes away
    far = drone(fast, base(offset(HERE, east_km=-2.0)))  # 2 minutes away

    assert best() == far
    far.delete()
    assert best() == near


def test_the_nearest_of_equal_drones_is_chosen() -> None:
    model = drone_model()
    drone(model, base(offset(HERE, east_km=3.0)))
    nearest = drone(model, base(offset(HERE, north_km=-1.5)))
    drone(model, base(offset(HERE, east_km=-5.0)))

    assert best() == nearest


def test_a_drone_without_battery_for_the_flight_home_is_skipped() -> None:
    # Range 30 km, reserve 20 %: at 40 % a drone may fly 6 km. From its base 1 km east of the
    # pickup, to a dropoff x km west and home again is 2 + 2x km.
    model = drone_model(range_km=30.0)
    near = drone(model, base(offset(HERE, east_km=1.0)), battery_pct=40.0)
    far = drone(model, base(offset(HERE, east_km=-4.0)))

    assert best(dropoff=offset(HERE, east_km=-1.9)) == near  # 5.8 km
    assert best(dropoff=offset(HERE, east_km=-2.1)) == far  # 6.2 km
    near.battery_pct = 38.0  # 5.4 km
    near.save()
    assert best(dropoff=offset(HERE, east_km=-1.9)) == far


def test_drones_not_free_are_skipped() -> None:
    model = drone_model()
    home = base()
    for state in (Drone.State.GROUNDED, Drone.State.CHARGING, Drone.State.FLYING):
        drone(model, home, state=state)
    booked = drone(model, home)
    Drone.objects.filter(pk=booked.pk).update(
        assigned_delivery_id="00000000-0000-4000-8000-000000000001"
    )
    assert best() is None

    free = drone(model, base(offset(HERE, east_km=8.0)))
    assert best() == free


def test_a_drone_that_cannot_carry_the_weight_is_skipped() -> None:
    light = drone(drone_model("light", max_payload_kg=2.5), base())
    heavy = drone(drone_model("heavy", max_payload_kg=12.0), base(offset(HERE, east_km=5.0)))

    assert best(weight_kg=2.5) == light
    assert best(weight_kg=2.6) == heavy
    assert best(weight_kg=12.1) is None


def test_excluded_drones_are_skipped() -> None:
    model = drone_model()
    first = drone(model, base())
    second = drone(model, base(offset(HERE, east_km=1.0)))

    assert best(exclude=frozenset({first.pk})) == second
    assert best(exclude=frozenset({first.pk, second.pk})) is None


def test_a_lone_drone_far_away_is_found() -> None:
    model = drone_model(range_km=60.0)
    lonely = drone(model, base(offset(HERE, north_km=-20.0)))

    assert best() == lonely


def test_the_plan_gives_distances_and_etas_at_cruise_speed() -> None:
    model = drone_model(cruise_speed_kmh=60.0)
    home = base(offset(HERE, east_km=3.0))
    chosen = drone(model, home, at=offset(HERE, east_km=6.0))

    plan = drone_plan_best(pickup=PICKUP, dropoff=DROPOFF, weight_kg=1.0, start=START)

    assert plan is not None
    assert (plan.drone_id, plan.drone_serial) == (chosen.pk, chosen.serial)
    assert plan.to_pickup_km == pytest.approx(6.0, rel=1e-3)
    assert plan.pickup_to_dropoff_km == pytest.approx(2.0, rel=1e-3)
    assert plan.dropoff_to_base_km == pytest.approx(distance_km(DROPOFF, Point(home.lat, home.lon)))
    # The flight profile: a climb to 60 m at 5 m/s (12 s), 6 km at 60 km/h, a descent to the
    # 5 m handling height at 4 m/s (13.75 s).
    assert plan.pickup_eta == pytest.approx(
        START + timedelta(seconds=12 + 360 + 13.75), abs=timedelta(seconds=1)
    )
    # 30 s of handling, a climb from 5 m (11 s), 2 km, the descent, 30 s of handling.
    assert plan.dropoff_eta - plan.pickup_eta == pytest.approx(
        timedelta(seconds=30 + 11 + 120 + 13.75 + 30), abs=timedelta(seconds=1)
    )


def test_the_pickup_is_not_planned_before_the_requested_time() -> None:
    drone(drone_model(cruise_speed_kmh=60.0), base(offset(HERE, east_km=1.0)))
    later = START + timedelta(hours=2)

    plan = drone_plan_best(
        pickup=PICKUP, dropoff=DROPOFF, weight_kg=1.0, start=START, not_before=later
    )

    assert plan is not None
    assert plan.pickup_eta == later
    assert plan.dropoff_eta == pytest.approx(
        later + timedelta(seconds=30 + 11 + 120 + 13.75 + 30), abs=timedelta(seconds=1)
    )


def test_the_choice_matches_a_search_of_the_whole_fleet() -> None:
    """Against brute force over a random fleet, including crowded bases and low batteries."""
    rng = random.Random(7)
    models = [
        drone_model("light", max_payload_kg=2.5, cruise_speed_kmh=60.0, range_km=20.0),
        drone_model("standard", max_payload_kg=5.0, cruise_speed_kmh=55.0, range_km=30.0),
        drone_model("heavy", max_payload_kg=12.0, cruise_speed_kmh=45.0, range_km=25.0),
    ]
    bases = [
        base(offset(HERE, north_km=rng.uniform(-10, 10), east_km=rng.uniform(-10, 10)))
        for _ in range(6)
    ]
    drones = []
    for i in range(300):
        home = bases[i % len(bases)]
        # Most sit at their base, some are idle where they landed, a few are charging.
        at = Point(home.lat, home.lon)
        if i % 3 == 0:
            at = offset(HERE, north_km=rng.uniform(-12, 12), east_km=rng.uniform(-12, 12))
        drones.append(
            Drone(
                serial=f"R-{i:04d}",
                model=rng.choice(models),
                base=home,
                state=Drone.State.CHARGING if i % 7 == 0 else Drone.State.IDLE,
                battery_pct=rng.choice([25, 40, 60, 80, 100]),
                lat=at.lat,
                lon=at.lon,
            )
        )
    Drone.objects.bulk_create(drones)
    fleet = list(Drone.objects.select_related("model", "base"))

    found = 0
    for _ in range(60):
        pickup = offset(HERE, north_km=rng.uniform(-12, 12), east_km=rng.uniform(-12, 12))
        dropoff = offset(pickup, north_km=rng.uniform(-6, 6), east_km=rng.uniform(-6, 6))
        weight = rng.choice([0.5, 2.0, 4.0, 8.0])
        expected = _brute_force_hours(fleet, pickup=pickup, dropoff=dropoff, weight_kg=weight)
        plan = drone_plan_best(pickup=pickup, dropoff=dropoff, weight_kg=weight, start=START)
        if expected is None:
            assert plan is None
            continue
        assert plan is not None
        chosen = next(d for d in fleet if d.pk == plan.drone_id)
        assert plan.to_pickup_km / chosen.model.cruise_speed_kmh == pytest.approx(
            expected, rel=1e-3
        )
        found += 1
    assert found > 20  # the comparison is not vacuous


def _brute_force_hours(
    fleet: list[Drone], *, pickup: Point, dropoff: Point, weight_kg: float
) -> float | None:
    times = []
    for d in fleet:
        if d.state != Drone.State.IDLE or d.model.max_payload_kg < weight_kg:
            continue
        to_pickup = distance_km(Point(d.lat, d.lon), pickup)
        trip = (
            to_pickup
            + distance_km(pickup, dropoff)
            + distance_km(dropoff, Point(d.base.lat, d.base.lon))
        )
        if trip <= d.model.range_km * (d.battery_pct - 20) / 100:
            times.append(to_pickup / d.model.cruise_speed_kmh)
    return min(times, default=None)


class TestWhyNoDroneCouldEverDoIt:
    def test_a_package_too_heavy_for_every_model_says_the_heaviest_payload(self) -> None:
        drone(drone_model("light", max_payload_kg=2.5), base())
        drone(drone_model("heavy", max_payload_kg=12.0), base(offset(HERE, east_km=1)))
        drone_model("prototype", max_payload_kg=50.0)  # no drone of it in the fleet

        reason = delivery_impossible_reason(pickup=PICKUP, dropoff=DROPOFF, weight_kg=13.0)

        assert reason is not None
        assert "13 kg" in reason
        assert "12 kg" in reason

    def test_a_trip_beyond_every_capable_models_range_says_so(self) -> None:
        # Usable with the 20 % reserve: 16 km. Base at the pickup, dropoff 9 km away: 18 km.
        drone(drone_model(range_km=20.0), base())
        far = offset(HERE, north_km=9.0)

        reason = delivery_impossible_reason(pickup=PICKUP, dropoff=far, weight_kg=1.0)

        assert reason is not None
        assert "18.0 km" in reason
        assert "16.0 km" in reason
        assert (
            delivery_impossible_reason(
                pickup=PICKUP, dropoff=offset(HERE, north_km=7.9), weight_kg=1.0
            )
            is None
        )

    def test_range_counts_only_models_that_can_carry_the_weight(self) -> None:
        home = base()
        drone(drone_model("light", max_payload_kg=2.5, range_km=100.0), home)
        drone(drone_model("heavy", max_payload_kg=12.0, range_km=20.0), home)
        far = offset(HERE, north_km=9.0)

        assert delivery_impossible_reason(pickup=PICKUP, dropoff=far, weight_kg=1.0) is None
        assert delivery_impossible_reason(pickup=PICKUP, dropoff=far, weight_kg=5.0) is not None

    def test_an_empty_fleet_says_there_are_no_drones(self) -> None:
        drone_model()

        reason = delivery_impossible_reason(pickup=PICKUP, dropoff=DROPOFF, weight_kg=1.0)

        assert reason == "There are no drones in the fleet."

    def test_a_busy_or_grounded_fleet_could_still_do_it(self) -> None:
        model = drone_model()
        drone(model, base(), state=Drone.State.GROUNDED, battery_pct=0.0)

        assert delivery_impossible_reason(pickup=PICKUP, dropoff=DROPOFF, weight_kg=1.0) is None


def test_a_drone_away_from_home_beats_drones_waiting_at_a_base_further_off() -> None:
    model = drone_model(cruise_speed_kmh=60.0)
    home = base(offset(HERE, east_km=4.0))
    for _ in range(20):
        drone(model, home)
    landed = drone(model, home, at=offset(HERE, north_km=-1.0))

    assert best() == landed


def test_drones_that_only_seem_able_do_not_hide_one_that_is() -> None:
    # More than a query's LIMIT of drones ahead in the database's estimate, each a hair short of
    # battery (within the estimate's tolerance, so only the exact check in Python drops them).
    model = drone_model(cruise_speed_kmh=60.0, range_km=30.0)
    home = base(DROPOFF)
    spot = offset(HERE, north_km=-1.0)
    needed_km = distance_km(spot, PICKUP) + distance_km(PICKUP, DROPOFF)
    short = 20 + 100 * needed_km * (1 - 3e-4) / model.range_km
    for _ in range(20):
        drone(model, home, at=spot, battery_pct=short)
    able = drone(model, home, at=offset(HERE, north_km=-1.2))

    assert best() == able


def test_on_postgresql_the_search_is_prepared_and_its_text_the_same_whatever_it_excludes() -> None:
    """The search runs as a prepared statement (drones.selectors._fetch) whose text does not
    change with the drones passed over, and psycopg keeps its parse of long texts (the module
    settings that _fetch raises exist)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's; SQLite runs the search as it is")
    from psycopg import _queries

    from drones.selectors import _not_in

    assert isinstance(_queries.MAX_CACHED_STATEMENT_LENGTH, int)
    assert isinstance(_queries.MAX_CACHED_STATEMENT_PARAMS, int)
    model = drone_model()
    drones = [drone(model, base(offset(HERE, east_km=0.3 * i))) for i in range(4)]
    assert _not_in("id", frozenset())[0] == _not_in("id", frozenset(d.pk for d in drones))[0]
    # Excluding the best in turn gives the next, through the prepared statement each time.
    seen: list[Any] = []
    for _ in drones:
        found = best(exclude=frozenset(seen))
        assert found is not None and found.pk not in seen
        seen.append(found.pk)
    assert best(exclude=frozenset(seen)) is None
    assert _queries.MAX_CACHED_STATEMENT_LENGTH >= 1 << 16


def test_drones_know_their_home_and_whether_they_are_away_from_it() -> None:
    """`away` is the database's: true whenever a drone is not at its base's position, however
    the position, the base's position or the drone's base changed."""
    model = drone_model()
    home = base(HERE)
    landing = offset(HERE, north_km=1.0)
    waiting = drone(model, home)
    landed = drone(model, home, at=landing)
    Drone.objects.bulk_create(
        [Drone(serial="BULK-1", model=model, base=home, lat=home.lat, lon=home.lon)]
    )

    def away() -> dict[str, bool]:
        return dict(Drone.objects.values_list("serial", "away"))

    assert away() == {waiting.serial: False, landed.serial: True, "BULK-1": False}
    # A position written by an UPDATE, as telemetry writes it.
    Drone.objects.filter(pk=waiting.pk).update(lat=home.lat + 0.01)
    assert away()[waiting.serial] is True
    Drone.objects.filter(pk=waiting.pk).update(lat=home.lat)
    # The base moved to where the landed drone is: that one is home now, the others away.
    home.lat, home.lon = landing.lat, landing.lon
    home.save()
    assert away() == {waiting.serial: True, landed.serial: False, "BULK-1": True}
    # A drone given another base is away until it gets there.
    other = base(offset(HERE, east_km=3.0))
    landed.base = other
    landed.save()
    assert away()[landed.serial] is True
    assert Drone.objects.filter(pk=landed.pk, home_lat=other.lat, home_lon=other.lon).exists()
    # Moved to another base by an UPDATE: the home follows, so the drone waiting at its old
    # base (step 1 no longer finds it there) is away, for step 2 to find.
    Drone.objects.filter(pk=waiting.pk).update(base=other)
    assert away()[waiting.serial] is True
    assert Drone.objects.filter(pk=waiting.pk, home_lat=other.lat, home_lon=other.lon).exists()
    Drone.objects.filter(pk=waiting.pk).update(base_id=home.pk, lat=home.lat, lon=home.lon)
    assert away()[waiting.serial] is False


def test_the_search_of_drones_away_from_home_reads_its_own_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Step 2's query matches the partial index of drones away from home (drone_free_away_idx),
    so the 2,000 drones waiting at a base in its box never weigh on it."""
    from django.db import connection

    from drones import selectors

    model = drone_model()
    home = base(offset(HERE, north_km=1.0))  # within the box the search reads
    for i in range(3):
        drone(model, home, at=offset(HERE, east_km=i + 1.0))
    Drone.objects.bulk_create(
        Drone(serial=f"HOME-{i:04d}", model=model, base=home, lat=home.lat, lon=home.lon)
        for i in range(2000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # the statistics a fleet's database has
    searches: list[tuple[str, list[Any]]] = []
    fetch = selectors._fetch

    def kept(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        searches.append((sql, params))
        return fetch(sql, params)

    monkeypatch.setattr(selectors, "_fetch", kept)
    assert best() is not None
    sql, params = next((s, p) for s, p in searches if "'away'" in s)
    if connection.vendor == "postgresql":
        import psycopg

        with psycopg.Cursor(connection.connection) as server_bound:
            server_bound.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in server_bound.fetchall())
    else:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = "\n".join(str(row) for row in cursor.fetchall())
    assert "drone_free_away_idx" in plan, plan

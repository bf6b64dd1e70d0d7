"""Drone choice with a fleet of 10,000: how long drone_plan_best and drone_reserve take.

    .venv/bin/python bench/drone_choice.py [--drones 10000] [--samples 1000]

Runs on the database of DATABASE_URL, else on a throwaway SQLite file under .local/bench/ that
it creates and migrates. It seeds its own fleet (removed at the end), then times random
pickups and dropoffs in the fleet's area, with a primary-key lookup as the same-run baseline.
A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("FABRIKAM_IGNORE_LOCAL_SERVICES_FILE", "true")
if not os.environ.get("DATABASE_URL"):
    bench_db = BASE_DIR / ".local" / "bench" / "drone_choice.sqlite3"
    bench_db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in bench_db.parent.glob(bench_db.name + "*"):
        leftover.unlink()
    os.environ["DATABASE_URL"] = f"sqlite:///{bench_db}"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from drones.geo import EARTH_RADIUS_KM, Point  # noqa: E402
from drones.models import Base, Drone  # noqa: E402
from drones.selectors import delivery_impossible_reason, drone_plan_best  # noqa: E402
from drones.services import (  # noqa: E402
    DeliveryImpossible,
    NoDroneFree,
    drone_release,
    drone_reserve,
    fleet_seed,
)

# Away from any demo fleet, so that the figures are about this fleet alone.
CENTER = Point(52.52, 13.405)
RADIUS_KM = 10.0


def random_point(rng: random.Random) -> Point:
    distance = RADIUS_KM * rng.random() ** 0.5
    bearing = rng.uniform(0, 2 * math.pi)
    return Point(
        CENTER.lat + math.degrees(distance * math.cos(bearing) / EARTH_RADIUS_KM),
        CENTER.lon
        + math.degrees(
            distance * math.sin(bearing) / EARTH_RADIUS_KM / math.cos(math.radians(CENTER.lat))
        ),
    )


def parcel_kg(rng: random.Random) -> float:
    """Mostly small parcels, some for the heavy drones only."""
    share = rng.random()
    if share < 0.7:
        return rng.uniform(0.1, 2.5)
    return rng.uniform(2.5, 5.0) if share < 0.9 else rng.uniform(5.0, 12.0)


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p = statistics.quantiles(ms, n=100, method="inclusive")
    return f"{name:<34} p50 {p[49]:6.2f} ms   p99 {p[98]:6.2f} ms   max {ms[-1]:6.2f} ms"


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drones", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    call_command("migrate", "drones", verbosity=0)
    began = time.perf_counter()
    fleet = fleet_seed(count=args.drones, center=CENTER, radius_km=RADIUS_KM, seed=args.seed)
    seeded_in = time.perf_counter() - began
    try:
        with connection.cursor() as cursor:
            # What autovacuum does after a bulk load; SQLite has no such thing and gets none.
            if connection.vendor == "postgresql":
                cursor.execute("VACUUM ANALYZE drones_drone")
        print(
            f"{connection.vendor} {connection.settings_dict['NAME']}: seeded {args.drones} drones "
            f"on {len(fleet.bases)} bases in {seeded_in:.1f} s "
            f"({Drone.objects.count()} drones in the database)"
        )
        measure(rng, samples=args.samples)
        # A busy hour: most drones booked, so that the nearest bases often have none free.
        busy = rng.sample(fleet.drone_ids, k=len(fleet.drone_ids) * 9 // 10)
        Drone.objects.bulk_update(
            [Drone(pk=pk, assigned_delivery_id=uuid.uuid4()) for pk in busy],
            ["assigned_delivery_id"],
            batch_size=500,
        )
        print(f"\nwith {len(busy)} of the {args.drones} drones booked:")
        measure(rng, samples=args.samples)
    finally:
        # Only what this run made. Plain deletes: the bench made no deliveries, and on a
        # database migrated for drones alone the ORM's cascade would look for their table.
        for first in range(0, len(fleet.drone_ids), 500):
            chunk = fleet.drone_ids[first : first + 500]
            Drone.objects.filter(pk__in=chunk)._raw_delete(connection.alias)
        Base.objects.filter(pk__in=[b.id for b in fleet.bases])._raw_delete(connection.alias)


def measure(rng: random.Random, *, samples: int) -> None:
    ids = list(Drone.objects.values_list("pk", flat=True))
    trips = [(random_point(rng), random_point(rng), parcel_kg(rng)) for _ in range(samples)]
    start = datetime.now(UTC)

    def lookup() -> None:
        Drone.objects.filter(pk=rng.choice(ids)).first()

    def choose(pickup: Point, dropoff: Point, weight_kg: float) -> None:
        drone_plan_best(pickup=pickup, dropoff=dropoff, weight_kg=weight_kg, start=start)

    def reason(pickup: Point, dropoff: Point, weight_kg: float) -> None:
        delivery_impossible_reason(pickup=pickup, dropoff=dropoff, weight_kg=weight_kg)

    def reserve_and_release(pickup: Point, dropoff: Point, weight_kg: float) -> bool:
        delivery_id = uuid.uuid4()
        try:
            with transaction.atomic():
                plan = drone_reserve(
                    delivery_id=delivery_id,
                    pickup=pickup,
                    dropoff=dropoff,
                    weight_kg=weight_kg,
                    start=start,
                )
        except (NoDroneFree, DeliveryImpossible):
            return False
        drone_release(drone_id=plan.drone_id, delivery_id=delivery_id)
        return True

    for trip in trips[:50]:  # warm-up: connections, caches
        choose(*trip)
    # Interleaved, so that whatever else the machine is doing weighs on every figure alike.
    baseline, choice, reasons, reserve_release = [], [], [], []
    for trip in trips:
        baseline.append(timed(lookup))
        choice.append(timed(functools.partial(choose, *trip)))
        reasons.append(timed(functools.partial(reason, *trip)))
        reserve_release.append(timed(functools.partial(reserve_and_release, *trip)))
    booked = sum(reserve_and_release(*trip) for trip in trips[:100])
    queries: list[str] = []

    def count(execute: Callable[..., object], sql: str, *args: object) -> object:
        queries.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(count):
        for trip in trips[:100]:
            choose(*trip)
    print(
        f"{len(trips)} random trips within {RADIUS_KM:g} km; "
        "70 % up to 2.5 kg, 20 % up to 5 kg, 10 % up to 12 kg"
    )
    print(summary("baseline: Drone by primary key", baseline))
    print(summary("drone_plan_best", choice))
    print(summary("delivery_impossible_reason", reasons))
    print(summary("drone_reserve + drone_release", reserve_release))
    print(
        f"{booked} of the first 100 trips got a drone; "
        f"{len(queries) / 100:.1f} queries per choice on average; target: choice p99 <= 10 ms"
    )


if __name__ == "__main__":
    main()

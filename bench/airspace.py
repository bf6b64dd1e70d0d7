"""Route planning around no-fly zones: how long Airspace.route takes with 500 zones in a city.

    .venv/bin/python bench/airspace.py [--zones 500] [--samples 1000] [--seed 1] [--profile]
                                       [--plain]

Places random small zones (polygons 50-400 m across) over a 20 x 20 km area around Seattle,
builds the Airspace, then draws random pairs of stops in the area (none inside a zone) and sorts
them, with a check of its own, into `--samples` pairs whose straight line keeps the margin and
as many whose straight line does not. It plans their routes in a shuffled order twice: first on
a new Airspace (its caches of projections, projected zones and merged obstacles empty, as after
a zone changes), then again (caches filled). Prints p50 and p99 of each kind beside its target,
and the build time. `--plain`: with the plain search instead of the fast one (airspace.routing).
No database. A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

import numpy as np  # noqa: E402
import shapely  # noqa: E402
import shapely.geometry  # noqa: E402
from pyproj import CRS, Transformer  # noqa: E402

from airspace.geometry import zone_geometry_check  # noqa: E402
from airspace.routing import Airspace, NoRoute, Zone  # noqa: E402
from drones.geo import Point, distance_km  # noqa: E402

CENTER = Point(47.6062, -122.3321)
HALF_SIDE_M = 10_000.0
TARGET_CLEAR_MS = 5.0
TARGET_DETOUR_MS = 50.0

_LOCAL = Transformer.from_crs(
    "EPSG:4326",
    CRS.from_proj4(f"+proj=aeqd +lat_0={CENTER.lat} +lon_0={CENTER.lon} +datum=WGS84 +units=m"),
    always_xy=True,
)


def at(east: float, north: float) -> Point:
    lon, lat = _LOCAL.transform(east, north, direction="INVERSE")
    return Point(lat, lon)


def random_zone(rng: random.Random, number: int) -> Zone:
    """A star-shaped polygon (so never self-intersecting) 50-400 m across."""
    east = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M)
    north = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M)
    radius = rng.uniform(25, 200)
    corners = rng.randint(4, 9)
    angles = [2 * math.pi * (k + rng.uniform(-0.3, 0.3)) / corners for k in range(corners)]
    ring = []
    for angle in angles:
        r = radius * rng.uniform(0.6, 1.0)
        p = at(east + r * math.cos(angle), north + r * math.sin(angle))
        ring.append([p.lon, p.lat])
    geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    zone_geometry_check(geometry)
    return Zone(str(number), f"zone {number}", geometry)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def sample_stops(
    rng: random.Random, zones: list[Zone], samples: int, margin: float
) -> tuple[list[tuple[Point, Point]], list[tuple[Point, Point]]]:
    """Random pairs of stops in the area, sorted by whether the straight line between them keeps
    the margin from every zone (checked here, apart from the planner), until there are
    `samples` of each kind. Pairs with a stop inside a zone are left out."""
    shapes = shapely.transform(
        np.array([shapely.geometry.shape(z.geometry) for z in zones]),
        _LOCAL.transform,
        interleaved=False,
    )
    tree = shapely.STRtree(shapes)
    clear: list[tuple[Point, Point]] = []
    blocked: list[tuple[Point, Point]] = []
    while len(clear) < samples or len(blocked) < samples:
        ends = [rng.uniform(-HALF_SIDE_M, HALF_SIDE_M) for _ in range(4)]
        a, b = shapely.Point(ends[:2]), shapely.Point(ends[2:])
        if tree.query(a, predicate="intersects").size or tree.query(b, "intersects").size:
            continue
        line = shapely.LineString([ends[:2], ends[2:]])
        kind = blocked if tree.query(line, predicate="dwithin", distance=margin).size else clear
        if len(kind) < samples:
            kind.append((at(*ends[:2]), at(*ends[2:])))
    return clear, blocked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zones", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000, help="routes of each kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--margin", type=float, default=50.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the routes")
    parser.add_argument("--plain", action="store_true", help="the plain search (to compare)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    zones = [random_zone(rng, k) for k in range(args.zones)]
    began = time.perf_counter()
    airspace = Airspace(zones, margin_m=args.margin, plain=args.plain)
    build_ms = (time.perf_counter() - began) * 1000
    clear, blocked = sample_stops(rng, zones, args.samples, args.margin)
    tasks = [("clear", a, b) for a, b in clear] + [("detour", a, b) for a, b in blocked]
    rng.shuffle(tasks)

    profiler = cProfile.Profile() if args.profile else None
    timings: dict[str, dict[str, list[float]]] = {"cold": {}, "warm": {}}
    no_route, bends, lengths = 0, [], []
    for caches in ("cold", "warm"):  # the same routes twice: caches empty, then filled
        for kind, a, b in tasks:
            if profiler and caches == "cold":
                profiler.enable()
            began = time.perf_counter()
            try:
                route = airspace.route(a, b)
            except NoRoute:
                route = []
            elapsed_ms = (time.perf_counter() - began) * 1000
            if profiler:
                profiler.disable()
            timings[caches].setdefault(kind, []).append(elapsed_ms)
            if caches == "cold" and kind == "detour":
                no_route += not route
                bends.append(max(0, len(route) - 2))
                lengths.append(distance_km(a, b))

    side = 2 * HALF_SIDE_M / 1000
    print(
        f"Airspace: {args.zones} zones (50-400 m across) over {side:g} x {side:g} km around "
        f"Seattle, margin {args.margin:g} m, {len(tasks)} routes"
        f"{' (plain search)' if args.plain else ''}"
    )
    print(f"  build (index the zones)            {build_ms:7.2f} ms")
    print(
        f"  detours: straight line {statistics.mean(lengths):.1f} km on average, "
        f"{statistics.mean(bends):.1f} bends on average, {no_route} without a route"
    )
    for caches in ("cold", "warm"):
        for kind, target in (("clear", TARGET_CLEAR_MS), ("detour", TARGET_DETOUR_MS)):
            samples = timings[caches][kind]
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            verdict = "PASS" if p99 <= target else "MISS"
            name = f"{kind} ({caches} caches)"
            print(
                f"  {name:<22} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {max(samples):6.2f} ms"
                f"   target p99 <= {target:g} ms  {verdict}  (n={len(samples)})"
            )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()

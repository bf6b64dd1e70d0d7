from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta

import pytest
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from airspace.geometry import zone_shape
from airspace.routing import Airspace, InsideZone, NoRoute, Zone
from drones.geo import Point

CENTER = Point(47.6062, -122.3321)
MARGIN = 50.0
NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

# The tests' own metric view of the area, independent of the one the planner picks.
_METRES = Transformer.from_crs(
    "EPSG:4326",
    CRS.from_proj4(f"+proj=aeqd +lat_0={CENTER.lat} +lon_0={CENTER.lon} +datum=WGS84 +units=m"),
    always_xy=True,
)


def at(east: float, north: float) -> Point:
    """The point this many metres east and north of the centre."""
    lon, lat = _METRES.transform(east, north, direction="INVERSE")
    return Point(lat, lon)


def metres(geometry: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geometry, _METRES.transform, interleaved=False)


def ring(*corners: tuple[float, float]) -> list[list[float]]:
    points = [at(east, north) for east, north in corners]
    return [[p.lon, p.lat] for p in [*points, points[0]]]


def box(
    name: str,
    west: float,
    south: float,
    east: float,
    north: float,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> Zone:
    """A rectangular zone, its sides in metres from the centre."""
    outline = ring((west, south), (east, south), (east, north), (west, north))
    return Zone(name, name, {"type": "Polygon", "coordinates": [outline]}, valid_from, valid_until)


def polyline(route: list[Point]) -> BaseGeometry:
    return metres(shapely.LineString([(p.lon, p.lat) for p in route]))


def length_m(route: list[Point]) -> float:
    return float(polyline(route).length)


def clearance_m(route: list[Point], zones: list[Zone]) -> float:
    """The least distance from any segment of the route to any of the zones."""
    segments = [polyline(list(pair)) for pair in itertools.pairwise(route)]
    shapes = metres(shapely.GeometryCollection([zone_shape(z.geometry) for z in zones]))
    return float(shapely.distance(shapely.MultiLineString(segments), shapes))


WEST, EAST = at(-1000, 0), at(1000, 0)


# --- the straight line -------------------------------------------------------------------------


def test_the_route_is_the_straight_line_when_no_zone_is_near() -> None:
    airspace = Airspace([box("stadium", -100, 300, 100, 500)], margin_m=MARGIN)

    assert airspace.route(WEST, EAST) == [WEST, EAST]


def test_a_zone_just_beyond_the_margin_leaves_the_straight_line() -> None:
    airspace = Airspace([box("stadium", -100, 55, 100, 255)], margin_m=MARGIN)

    assert airspace.route(WEST, EAST) == [WEST, EAST]


def test_with_no_zones_every_route_is_straight() -> None:
    assert Airspace([]).route(WEST, EAST) == [WEST, EAST]


def test_a_route_far_from_every_zone_is_straight() -> None:
    # Beyond the zones' extent the index is not asked at all (Airspace._far).
    airspace = Airspace([box("stadium", -100, -100, 100, 100)], margin_m=MARGIN)
    far_west, far_east = at(-80_000, 50_000), at(-60_000, 50_000)

    assert airspace.route(far_west, far_east) == [far_west, far_east]


@pytest.mark.parametrize(
    "a, b",
    [
        ((-500, 140), (500, 140)),  # along the north side, 40 m out
        ((-500, -140), (500, -140)),  # the south side
        ((140, -500), (140, 500)),  # the east side
        ((-140, -500), (-140, 500)),  # the west side
    ],
)
def test_a_line_just_outside_the_zones_extent_still_keeps_the_margin(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    # The check of the zones' extent must not skip a zone within the margin of the line.
    zone = box("stadium", -100, -100, 100, 100)
    airspace = Airspace([zone], margin_m=MARGIN)

    route = airspace.route(at(*a), at(*b))

    assert len(route) > 2
    assert clearance_m(route, [zone]) >= MARGIN - 0.5


# --- detours -----------------------------------------------------------------------------------


def test_a_zone_across_the_line_is_flown_around_keeping_the_margin() -> None:
    zone = box("stadium", -100, -100, 100, 100)
    airspace = Airspace([zone], margin_m=MARGIN)

    route = airspace.route(WEST, EAST)

    assert len(route) > 2
    assert route[0] == WEST
    assert route[-1] == EAST
    assert clearance_m(route, [zone]) >= MARGIN - 0.5


def test_the_detour_around_a_convex_zone_is_the_shorter_way_around() -> None:
    # Off the line to the north: the way round by the south is much shorter.
    zone = box("stadium", -150, -60, 150, 400)
    airspace = Airspace([zone], margin_m=MARGIN)

    route = airspace.route(WEST, EAST)

    # The two ways around the zone's exact margin: the two halves of the convex hull of the
    # buffered zone and the stops, from one stop to the other.
    buffered = metres(zone_shape(zone.geometry)).buffer(MARGIN, quad_segs=64)
    a, b = metres(shapely.Point(WEST.lon, WEST.lat)), metres(shapely.Point(EAST.lon, EAST.lat))
    hull = shapely.union_all([buffered, a, b]).convex_hull.exterior
    one_way = abs(hull.project(b) - hull.project(a))
    shorter, longer = sorted([one_way, hull.length - one_way])
    assert longer - shorter > 200
    assert shorter <= length_m(route) <= shorter + 5.0
    assert all(p.lat < CENTER.lat for p in route[1:-1])  # by the south
    assert clearance_m(route, [zone]) >= MARGIN - 0.5


def test_overlapping_zones_are_flown_around_as_one() -> None:
    zones = [box("north", -100, -20, 100, 200), box("south", -60, -200, 60, 0)]
    airspace = Airspace(zones, margin_m=MARGIN)

    route = airspace.route(WEST, EAST)

    assert clearance_m(route, zones) >= MARGIN - 0.5


def test_the_route_does_not_squeeze_between_zones_closer_than_twice_the_margin() -> None:
    # A 60 m gap on the straight line: 30 m from each zone, too close to either.
    zones = [box("north", -100, 30, 100, 400), box("south", -100, -400, 100, -30)]
    airspace = Airspace(zones, margin_m=MARGIN)

    route = airspace.route(WEST, EAST)

    assert clearance_m(route, zones) >= MARGIN - 0.5
    assert length_m(route) > 2000 + 100  # around the pair, not through the gap


def test_a_zone_met_only_on_the_way_around_another_is_avoided_too() -> None:
    # The straight line keeps clear of "harbour", far from "stadium"; the way around "stadium"
    # by the south would cut through harbour's margin.
    stadium, harbour = box("stadium", -100, -150, 100, 300), box("harbour", -700, -300, -500, -90)
    airspace = Airspace([stadium, harbour], margin_m=MARGIN)
    assert clearance_m([WEST, EAST], [harbour]) > MARGIN

    route = airspace.route(WEST, EAST)

    assert clearance_m(route, [stadium, harbour]) >= MARGIN - 0.5


@pytest.mark.parametrize("sides", range(5, 13))
def test_the_margin_is_kept_around_the_rounded_corners_of_any_polygon(sides: int) -> None:
    # Corners of every angle: the buffer's arcs are cut into chords of uneven widths.
    corners = [
        (150 * math.cos(2 * math.pi * k / sides + 0.3), 150 * math.sin(2 * math.pi * k / sides))
        for k in range(sides)
    ]
    zone = Zone("z", "stadium", {"type": "Polygon", "coordinates": [ring(*corners)]})
    airspace = Airspace([zone], margin_m=MARGIN)

    for a, b in ((WEST, EAST), (at(-1000, 120), at(1000, -90)), (at(-300, -800), at(200, 900))):
        route = airspace.route(a, b)

        assert len(route) > 2
        assert clearance_m(route, [zone]) >= MARGIN - 0.05


def test_a_multipolygon_zone_is_avoided_in_every_part() -> None:
    parts = [
        [ring((-400, -80), (-250, -80), (-250, 80), (-400, 80))],
        [ring((250, -80), (400, -80), (400, 80), (250, 80))],
    ]
    zone = Zone("z", "two towers", {"type": "MultiPolygon", "coordinates": parts})
    airspace = Airspace([zone], margin_m=MARGIN)

    route = airspace.route(WEST, EAST)

    assert clearance_m(route, [zone]) >= MARGIN - 0.5
    assert airspace.zone_at(at(300, 0)) == zone


def test_routes_among_many_zones_keep_the_margin_from_every_one() -> None:
    rng = random.Random(11)
    zones = []
    for k in range(150):
        east, north = rng.uniform(-3000, 3000), rng.uniform(-3000, 3000)
        radius, sides = rng.uniform(25, 200), rng.randint(4, 9)
        corners = []
        for side in range(sides):
            angle = 2 * math.pi * (side + rng.uniform(-0.3, 0.3)) / sides
            r = radius * rng.uniform(0.6, 1.0)
            corners.append((east + r * math.cos(angle), north + r * math.sin(angle)))
        zones.append(
            Zone(str(k), f"zone {k}", {"type": "Polygon", "coordinates": [ring(*corners)]})
        )
    airspace = Airspace(zones, margin_m=MARGIN)
    detours = 0
    for _ in range(40):
        a = at(rng.uniform(-3500, 3500), rng.uniform(-3500, 3500))
        b = at(rng.uniform(-3500, 3500), rng.uniform(-3500, 3500))
        try:
            route = airspace.route(a, b)
        except InsideZone:
            continue
        detours += len(route) > 2
        if clearance_m([a, b], zones) >= MARGIN:
            assert route == [a, b]
            continue
        assert (
            len(route) > 2 or min(clearance_m([a, a], zones), clearance_m([b, b], zones)) < MARGIN
        )
        # A stop within a zone's margin is reached through it, no closer than 0.9 of its distance.
        stop_m = [clearance_m([p, p], zones) for p in (a, b)]
        inner = route[int(stop_m[0] < MARGIN) : len(route) - int(stop_m[1] < MARGIN)]
        if len(inner) >= 2:
            assert clearance_m(inner, zones) >= MARGIN - 0.5
        assert clearance_m(route, zones) >= min(MARGIN, *stop_m) * 0.9 - 0.5
    assert detours >= 10


# --- the stops ---------------------------------------------------------------------------------


def test_a_stop_within_a_zone_margin_is_reached_through_the_margin_only() -> None:
    zone = box("stadium", -100, -100, 100, 100)
    airspace = Airspace([zone], margin_m=MARGIN)
    near = at(0, -120)  # 20 m south of the zone

    route = airspace.route(WEST, near)

    assert route[-1] == near
    assert clearance_m(route[:-1], [zone]) >= MARGIN - 0.5
    assert clearance_m(route[-2:], [zone]) >= 20 * 0.9
    assert airspace.route(near, WEST) == route[::-1]


def test_a_stop_within_the_margin_on_the_far_side_is_reached_around_the_zone() -> None:
    zone = box("stadium", -100, -100, 100, 100)
    airspace = Airspace([zone], margin_m=MARGIN)
    behind = at(120, 0)  # 20 m east of the zone, seen from the west

    route = airspace.route(WEST, behind)

    assert route[-1] == behind
    assert clearance_m(route[:-1], [zone]) >= MARGIN - 0.5
    assert clearance_m(route, [zone]) >= 20 * 0.9


def test_a_stop_inside_a_zone_is_refused_naming_the_zone() -> None:
    zone = box("SEA airport", -100, -100, 100, 100)
    airspace = Airspace([zone], margin_m=MARGIN)

    for a, b in ((CENTER, EAST), (WEST, CENTER)):
        with pytest.raises(InsideZone) as refused:
            airspace.route(a, b)

        assert refused.value.zone == zone
        assert refused.value.zones == [zone]
        assert "inside the no-fly zone 'SEA airport'" in refused.value.message


def test_a_stop_ringed_by_zones_has_no_route_and_the_ring_is_named() -> None:
    ring_zones = [
        box("ring north", -300, 200, 300, 300),
        box("ring south", -300, -300, 300, -200),
        box("ring west", -300, -300, -200, 300),
        box("ring east", 200, -300, 300, 300),
    ]
    airspace = Airspace([*ring_zones, box("far away", 3000, 3000, 3100, 3100)], margin_m=MARGIN)

    for a, b in ((CENTER, EAST), (EAST, CENTER)):
        with pytest.raises(NoRoute) as refused:
            airspace.route(a, b)

        assert not isinstance(refused.value, InsideZone)
        assert sorted(z.name for z in refused.value.zones) == sorted(z.name for z in ring_zones)
        assert "'ring east', 'ring north', 'ring south', 'ring west'" in refused.value.message


def test_a_ring_with_a_gap_wider_than_twice_the_margin_lets_the_drone_out() -> None:
    ring_zones = [
        box("ring north", -300, 200, 300, 300),
        box("ring south", -300, -300, 300, -200),
        box("ring west", -300, -300, -200, 300),
        box("ring east", 200, -300, 300, 60),  # a 140 m gap at its north end
    ]
    airspace = Airspace(ring_zones, margin_m=MARGIN)

    route = airspace.route(CENTER, EAST)

    assert clearance_m(route, ring_zones) >= MARGIN - 0.5


# --- time windows ------------------------------------------------------------------------------


def test_a_zone_outside_the_flight_window_is_ignored() -> None:
    later = box("parade", -100, -100, 100, 100, valid_from=NOON + 2 * HOUR)
    earlier = box("match", -100, -100, 100, 100, valid_until=NOON - HOUR)
    airspace = Airspace([later, earlier], margin_m=MARGIN)

    assert airspace.route(WEST, EAST, start=NOON, end=NOON + HOUR) == [WEST, EAST]
    assert airspace.zone_at(CENTER, start=NOON, end=NOON + HOUR) is None


def test_a_zone_active_during_part_of_the_flight_counts() -> None:
    zone = box("parade", -100, -100, 100, 100, valid_from=NOON + HOUR / 2, valid_until=NOON + HOUR)
    airspace = Airspace([zone], margin_m=MARGIN)

    route = airspace.route(WEST, EAST, start=NOON, end=NOON + HOUR)

    assert clearance_m(route, [zone]) >= MARGIN - 0.5
    assert airspace.zone_at(CENTER, start=NOON, end=NOON + HOUR) == zone


def test_a_zone_ending_as_the_flight_starts_is_ignored() -> None:
    zone = box("parade", -100, -100, 100, 100, valid_until=NOON)
    airspace = Airspace([zone], margin_m=MARGIN)

    assert airspace.route(WEST, EAST, start=NOON, end=NOON + HOUR) == [WEST, EAST]


def test_an_open_flight_window_meets_every_zone_window() -> None:
    zone = box("parade", -100, -100, 100, 100, valid_from=NOON, valid_until=NOON + HOUR)
    airspace = Airspace([zone], margin_m=MARGIN)

    assert len(airspace.route(WEST, EAST)) > 2
    assert len(airspace.route(WEST, EAST, start=NOON - 5 * HOUR)) > 2
    assert airspace.route(WEST, EAST, end=NOON - HOUR) == [WEST, EAST]


def test_a_zone_without_a_window_is_always_active() -> None:
    airspace = Airspace([box("airport", -100, -100, 100, 100)], margin_m=MARGIN)

    assert len(airspace.route(WEST, EAST, start=NOON, end=NOON + HOUR)) > 2


def test_only_the_active_zone_of_two_overlapping_ones_is_avoided() -> None:
    big = box("parade", -400, -400, 400, 400, valid_from=NOON + 3 * HOUR)
    small = box("stadium", -100, -100, 100, 100)
    airspace = Airspace([big, small], margin_m=MARGIN)

    route = airspace.route(WEST, EAST, start=NOON, end=NOON + HOUR)

    assert clearance_m(route, [small]) >= MARGIN - 0.5
    assert clearance_m(route, [big]) < MARGIN  # it flies where the parade will be
    assert airspace.zone_at(at(300, 300), start=NOON, end=NOON + HOUR) is None
    assert airspace.zone_at(at(300, 300)) == big


def test_the_margin_is_the_one_given() -> None:
    zone = box("stadium", -100, 120, 100, 300)  # 120 m north of the line

    assert Airspace([zone], margin_m=100).route(WEST, EAST) == [WEST, EAST]
    route = Airspace([zone], margin_m=150).route(WEST, EAST)
    assert clearance_m(route, [zone]) >= 150 - 0.5


# --- the fast search against the plain one ------------------------------------------------------


def random_zones(
    rng: random.Random, count: int, half_side: float, *, windows: bool = False
) -> list[Zone]:
    """Star-shaped zones 50-400 m across over a square `2 * half_side` metres wide; with
    windows, a third of them in force only from an hour after noon."""
    zones = []
    for k in range(count):
        east, north = rng.uniform(-half_side, half_side), rng.uniform(-half_side, half_side)
        radius, sides = rng.uniform(25, 200), rng.randint(4, 9)
        corners = []
        for side in range(sides):
            angle = 2 * math.pi * (side + rng.uniform(-0.3, 0.3)) / sides
            r = radius * rng.uniform(0.6, 1.0)
            corners.append((east + r * math.cos(angle), north + r * math.sin(angle)))
        later = NOON + HOUR if windows and k % 3 == 0 else None
        outline = {"type": "Polygon", "coordinates": [ring(*corners)]}
        zones.append(Zone(str(k), f"zone {k}", outline, valid_from=later))
    return zones


@pytest.mark.parametrize(
    ("seed", "count", "half_side", "windows", "trips"),
    [
        (1, 150, 3000, False, 60),
        (2, 300, 2000, False, 15),
        (3, 250, 4000, True, 40),
        (4, 60, 1500, False, 60),
    ],
)
def test_the_fast_search_plans_the_routes_of_the_plain_one(
    seed: int, count: int, half_side: float, windows: bool, trips: int
) -> None:
    # Sparse and dense fields (in the dense one, zones merge and detours pass many obstacles),
    # zones with time windows, stops anywhere: also within a zone's margin or inside a zone.
    rng = random.Random(seed)
    zones = random_zones(rng, count, half_side, windows=windows)
    fast = Airspace(zones, margin_m=MARGIN)
    plain = Airspace(zones, margin_m=MARGIN, plain=True)
    start, end = (NOON, NOON + HOUR / 2) if windows else (None, None)
    detours = bends = 0
    for _ in range(trips):
        a = at(rng.uniform(-half_side, half_side), rng.uniform(-half_side, half_side))
        b = at(rng.uniform(-half_side, half_side), rng.uniform(-half_side, half_side))
        try:
            expected = plain.route(a, b, start=start, end=end)
        except NoRoute as refused:
            with pytest.raises(type(refused)) as also:
                fast.route(a, b, start=start, end=end)
            assert also.value.zones == refused.zones
            continue
        route = fast.route(a, b, start=start, end=end)
        assert route[0] == a and route[-1] == b
        assert abs(length_m(route) - length_m(expected)) <= 1.0
        # Again: from the cores the area keeps, and by the fast search for a graph of more
        # than FAST_MAX_OBSTACLES obstacles, which took the plain one the first time.
        assert fast.route(a, b, start=start, end=end) == route
        detours += len(expected) > 2
        bends = max(bends, len(expected) - 2)
    assert detours >= trips // 4
    assert bends >= 4

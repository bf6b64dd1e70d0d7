"""The grid that finds the zones near a line (airspace.routing._Grid): never fewer than the
zone index's own distance test finds, whatever the line's direction or where it meets the
grid's cells; and a zone too large for the grid is still avoided."""

from __future__ import annotations

import random

import numpy as np
import pytest
import shapely

from airspace.routing import GRID_DEG, Airspace, _degrees, _Window
from tests.airspace.test_routing import CENTER, MARGIN, at, box, metres, polyline, random_zones

ANY_TIME = _Window(None, None)


def lines(rng: random.Random, half_side: float, count: int) -> list[np.ndarray]:
    """Polylines (lon, lat) of one to four segments anywhere in the field, then the awkward
    ones: due north, due east, a single point, along a column's and a row's edge of cells,
    and through their corners."""
    found = []
    for _ in range(count):
        points = [at(rng.uniform(-half_side, half_side), rng.uniform(-half_side, half_side))]
        for _ in range(rng.randint(1, 4)):
            points.append(
                at(rng.uniform(-half_side, half_side), rng.uniform(-half_side, half_side))
            )
        found.append(np.array([[p.lon, p.lat] for p in points]))
    lon, lat = CENTER.lon, CENTER.lat
    edge_lon, edge_lat = round(lon / GRID_DEG) * GRID_DEG, round(lat / GRID_DEG) * GRID_DEG
    span = 10 * GRID_DEG
    found += [
        np.array([[lon, lat - span], [lon, lat + span]]),
        np.array([[lon - span, lat], [lon + span, lat]]),
        np.array([[lon, lat], [lon, lat]]),
        np.array([[edge_lon, edge_lat - span], [edge_lon, edge_lat + span]]),
        np.array([[edge_lon - span, edge_lat], [edge_lon + span, edge_lat]]),
        np.array([[edge_lon - span, edge_lat - span], [edge_lon + span, edge_lat + span]]),
    ]
    return found


@pytest.mark.parametrize(("seed", "count", "half_side"), [(1, 300, 3000), (2, 80, 8000)])
def test_the_zones_near_a_line_include_every_zone_within_the_distance(
    seed: int, count: int, half_side: float
) -> None:
    rng = random.Random(seed)
    airspace = Airspace(random_zones(rng, count, half_side, windows=False), margin_m=MARGIN)
    tree = shapely.STRtree(airspace._shapes)  # what the grid stands in for
    near_some = 0
    polylines = lines(rng, half_side, 200)
    for lonlat in polylines:
        south, north = float(lonlat[:, 1].min()), float(lonlat[:, 1].max())
        line = shapely.linestrings(lonlat)
        for distance_m in (MARGIN, airspace._radius):
            degrees = _degrees(south, north, distance_m)
            within = tree.query(line, predicate="dwithin", distance=degrees).tolist()
            found = airspace._near(lonlat, distance_m, ANY_TIME).tolist()
            assert set(within) <= set(found), (lonlat.tolist(), distance_m)
            assert found == sorted(found)
            near_some += bool(within)
    assert near_some > len(polylines)  # most lines pass near a zone


def test_a_zone_over_more_cells_than_the_grid_keeps_is_still_avoided() -> None:
    # 40 km from west to east: some 110 columns of cells by 6 rows, more than GRID_MAX_CELLS.
    wide = box("Wide restriction", -20_000, 2000, 20_000, 4000)
    stadium = box("Stadium", -200, -200, 200, 200)
    airspace = Airspace([stadium, wide], margin_m=MARGIN)
    assert airspace._grid.everywhere == [1]
    route = airspace.route(at(0, 6000), at(1000, 1000))
    assert len(route) > 2
    assert shapely.distance(polyline(route), metres(airspace._shapes[1])) >= MARGIN - 0.1
    # Any line finds it (the exact tests come after).
    short = np.array([[CENTER.lon, CENTER.lat], [CENTER.lon, CENTER.lat + 0.001]])
    assert 1 in airspace._near(short, MARGIN, ANY_TIME).tolist()

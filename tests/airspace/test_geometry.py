from __future__ import annotations

import json
import math
from typing import Any

import pytest

from airspace.geometry import InvalidZone, zone_geometry_check

# A 400 m square near Seattle's Space Needle, [lon, lat] as GeoJSON wants.
SQUARE = [[-122.350, 47.620], [-122.345, 47.620], [-122.345, 47.6236], [-122.350, 47.6236]]


def polygon(*rings: list[list[Any]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]] for ring in rings]}


def refusal(geojson: Any) -> str:
    with pytest.raises(InvalidZone) as refused:
        zone_geometry_check(geojson)
    assert str(refused.value) == refused.value.message
    return refused.value.message


def test_a_polygon_becomes_its_shapely_outline() -> None:
    shape = zone_geometry_check(polygon(SQUARE))

    assert shape.geom_type == "Polygon"
    assert shape.bounds == (-122.350, 47.620, -122.345, 47.6236)


def test_a_feature_holding_a_polygon_is_accepted_as_json_text() -> None:
    feature = {"type": "Feature", "properties": {"name": "x"}, "geometry": polygon(SQUARE)}

    assert zone_geometry_check(json.dumps(feature)).geom_type == "Polygon"


def test_a_ring_may_be_left_unclosed() -> None:
    shape = zone_geometry_check({"type": "Polygon", "coordinates": [SQUARE]})

    assert len(shape.exterior.coords) == 5


def test_a_polygon_with_a_hole_is_accepted() -> None:
    hole = [[-122.349, 47.621], [-122.346, 47.621], [-122.346, 47.622]]

    shape = zone_geometry_check(polygon(SQUARE, hole))

    assert len(shape.interiors) == 1


def test_a_multipolygon_is_accepted() -> None:
    east = [[lon + 0.01, lat] for lon, lat in SQUARE]
    geojson = {
        "type": "MultiPolygon",
        "coordinates": [polygon(SQUARE)["coordinates"], polygon(east)["coordinates"]],
    }

    shape = zone_geometry_check(geojson)

    assert shape.geom_type == "MultiPolygon"
    assert len(shape.geoms) == 2


@pytest.mark.parametrize("text", ["hello", "[1, 2", "42", '{"coordinates": []}'])
def test_what_is_not_geojson_is_refused(text: str) -> None:
    assert refusal(text).startswith("not GeoJSON")


def test_a_point_is_refused_as_not_a_zone() -> None:
    message = refusal({"type": "Point", "coordinates": [-122.35, 47.62]})

    assert message == "a no-fly zone is a Polygon or a MultiPolygon, not a Point"


def test_a_feature_collection_is_refused_as_several_zones() -> None:
    assert "several zones" in refusal({"type": "FeatureCollection", "features": []})


def test_a_feature_without_geometry_is_refused() -> None:
    assert refusal({"type": "Feature", "geometry": None}) == "the Feature has no geometry"


def test_a_ring_with_fewer_than_3_distinct_points_is_refused() -> None:
    message = refusal(polygon([SQUARE[0], SQUARE[1], SQUARE[0]]))

    assert message == "ring 1 (the outer boundary) has 2 distinct points; a ring needs at least 3"


def test_a_ring_whose_points_lie_on_a_line_is_refused() -> None:
    message = refusal(polygon([[-122.35, 47.62], [-122.34, 47.62], [-122.33, 47.62]]))

    assert message == "ring 1 (the outer boundary) has no area: its points lie on a line"


def test_a_self_intersecting_bow_tie_is_refused_saying_where_it_crosses() -> None:
    bow_tie = [[-122.350, 47.620], [-122.340, 47.630], [-122.340, 47.620], [-122.350, 47.630]]

    message = refusal(polygon(bow_tie))

    assert "crosses itself" in message
    assert "[-122.345000, 47.625000]" in message


def test_overlapping_parts_of_a_multipolygon_are_refused() -> None:
    shifted = [[lon + 0.001, lat] for lon, lat in SQUARE]
    geojson = {
        "type": "MultiPolygon",
        "coordinates": [polygon(SQUARE)["coordinates"], polygon(shifted)["coordinates"]],
    }

    assert "two of its polygons overlap" in refusal(geojson)


def test_a_position_out_of_range_is_refused() -> None:
    message = refusal(polygon([[-122.35, 47.62], [-190.0, 47.62], [-122.34, 47.63]]))

    assert message.startswith("ring 1 (the outer boundary): the position [-190, 47.62]")
    assert "out of range" in message


def test_latitude_and_longitude_given_the_wrong_way_round_are_named_as_such() -> None:
    message = refusal(polygon([[lat, lon] for lon, lat in SQUARE]))

    assert "looks like [latitude, longitude]" in message


def test_a_position_that_is_not_a_pair_of_numbers_is_refused() -> None:
    message = refusal(polygon([[-122.35, 47.62], ["-122.34", 47.62], [-122.34, 47.63]]))

    assert "not a [longitude, latitude]" in message


def test_a_zone_larger_than_5000_km2_is_refused() -> None:
    degree = [[-123.0, 47.0], [-122.0, 47.0], [-122.0, 48.0], [-123.0, 48.0]]  # ~8,300 km²

    message = refusal(polygon(degree))

    assert message.startswith("the zone covers 8,")
    assert "more than the 5,000 km²" in message


def circle(vertices: int) -> list[list[float]]:
    """A 1 km circle drawn with this many vertices."""
    return [
        [
            -122.35 + 0.013 * math.cos(2 * math.pi * k / vertices),
            47.62 + 0.009 * math.sin(2 * math.pi * k / vertices),
        ]
        for k in range(vertices)
    ]


def test_a_zone_with_more_than_10000_vertices_is_refused() -> None:
    assert zone_geometry_check(polygon(circle(9_999))).geom_type == "Polygon"

    assert refusal(polygon(circle(12_000))) == (
        "the zone has 12,001 vertices, more than 10,000: simplify its outline"
    )

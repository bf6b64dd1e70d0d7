"""No-fly zone outlines: GeoJSON in, a checked shapely geometry out.

Operators draw zones on a map or import them from files made by other tools; what arrives is
refused with a message saying what is wrong and where, in words they can act on.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import shapely
import shapely.geometry
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

MAX_AREA_KM2 = 5_000.0
MAX_VERTICES = 10_000

_GEOD = Geod(ellps="WGS84")
_ZONE_TYPES = ("Polygon", "MultiPolygon")
_GEOJSON_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "GeometryCollection",
    "Feature",
    "FeatureCollection",
    *_ZONE_TYPES,
)
# GEOS' validity reasons, in an operator's words.
_REASONS = {
    "Self-intersection": "its outline crosses itself",
    "Ring Self-intersection": "its outline touches itself",
    "Hole lies outside shell": "a hole lies outside the outer boundary",
    "Nested holes": "a hole lies inside another hole",
    "Interior is disconnected": "its holes cut it in pieces",
    "Nested shells": "one of its polygons lies inside another",
    "Duplicate Rings": "a ring is given twice",
}
_WHERE = re.compile(r"^(?P<reason>[^\[]+)\[(?P<x>\S+) (?P<y>\S+)\]$")


class InvalidZone(ValueError):
    """A zone outline that cannot be used; `message` says what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def zone_geometry_check(geojson: Any) -> BaseGeometry:
    """The shapely (WGS84, lon/lat) Polygon or MultiPolygon of a GeoJSON zone outline.

    Takes a GeoJSON Polygon or MultiPolygon, or a Feature holding one, as a dict or as JSON
    text. Rings may be left unclosed. Raises InvalidZone when it is not that, when a position is
    out of range, when a ring has fewer than 3 distinct points or no area, when the outline
    crosses itself, or when the zone is absurdly large.
    """
    geometry = _zone_geometry(geojson)
    multi = geometry["type"] == "MultiPolygon"
    polygons = geometry.get("coordinates")
    if not multi:
        polygons = [polygons]
    if not _is_list(polygons) or not polygons:
        raise InvalidZone(f"the {geometry['type']} has no coordinates")
    vertices = sum(
        len(ring) for rings in polygons if _is_list(rings) for ring in rings if _is_list(ring)
    )
    if vertices > MAX_VERTICES:
        raise InvalidZone(
            f"the zone has {vertices:,} vertices, more than {MAX_VERTICES:,}: simplify its outline"
        )
    parts = [
        _polygon(rings, f"polygon {number}, " if multi else "")
        for number, rings in enumerate(polygons, start=1)
    ]
    shape = shapely.MultiPolygon(parts) if multi else parts[0]
    _check_valid(shape)
    _check_size(shape)
    return shape


def _zone_geometry(geojson: Any) -> dict[str, Any]:
    if isinstance(geojson, str | bytes):
        try:
            geojson = json.loads(geojson)
        except ValueError as error:
            raise InvalidZone(f"not GeoJSON: the text is not JSON ({error})") from None
    if not isinstance(geojson, dict) or not isinstance(geojson.get("type"), str):
        raise InvalidZone('not GeoJSON: expected an object with a "type"')
    kind = geojson["type"]
    if kind not in _GEOJSON_TYPES:
        raise InvalidZone(f"not GeoJSON: unknown type {kind!r}")
    if kind == "FeatureCollection":
        raise InvalidZone(
            "a FeatureCollection holds several zones: give one zone's Feature or its geometry"
        )
    if kind == "Feature":
        geometry = geojson.get("geometry")
        if not isinstance(geometry, dict) or not isinstance(geometry.get("type"), str):
            raise InvalidZone("the Feature has no geometry")
        geojson, kind = geometry, geometry["type"]
    if kind not in _ZONE_TYPES:
        raise InvalidZone(f"a no-fly zone is a Polygon or a MultiPolygon, not a {kind}")
    return geojson


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _polygon(rings: Any, where: str) -> shapely.Polygon:
    if not _is_list(rings) or not rings:
        raise InvalidZone(f"{where}the polygon has no rings: give its outer boundary")
    checked = []
    for number, ring in enumerate(rings, start=1):
        name = f"{where}ring {number} ({'the outer boundary' if number == 1 else 'a hole'})"
        checked.append(_ring(ring, name))
    return shapely.Polygon(checked[0], checked[1:])


def _ring(ring: Any, name: str) -> list[tuple[float, float]]:
    if not _is_list(ring):
        raise InvalidZone(f"{name} is not a list of [longitude, latitude] positions")
    points = [_position(position, name) for position in ring]
    distinct = len(set(points))
    if distinct < 3:
        raise InvalidZone(f"{name} has {distinct} distinct points; a ring needs at least 3")
    if points[0] != points[-1]:
        points.append(points[0])
    if shapely.MultiPoint(points).convex_hull.area == 0:
        raise InvalidZone(f"{name} has no area: its points lie on a line")
    return points


def _position(position: Any, name: str) -> tuple[float, float]:
    if (
        not _is_list(position)
        or len(position) not in (2, 3)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in position)
    ):
        raise InvalidZone(
            f"{name} holds {json.dumps(position, default=str)[:40]}, not a [longitude, latitude]"
        )
    lon, lat = float(position[0]), float(position[1])
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        message = (
            f"{name}: the position [{lon:g}, {lat:g}] is out of range (longitude must be within "
            "-180..180 and latitude within -90..90)"
        )
        if abs(lon) <= 90 < abs(lat) <= 180:
            message += ": it looks like [latitude, longitude]; GeoJSON is [longitude, latitude]"
        raise InvalidZone(message)
    return lon, lat


def _check_valid(shape: BaseGeometry) -> None:
    reason = shapely.is_valid_reason(shape)
    if reason == "Valid Geometry":
        return
    match = _WHERE.match(reason)
    what = match["reason"] if match else reason
    words = _REASONS.get(what, f"it is not a valid outline ({what})")
    if what == "Self-intersection" and shape.geom_type == "MultiPolygon":
        words = "its outline crosses itself, or two of its polygons overlap"
    if match:
        lon, lat = float(match["x"]), float(match["y"])
        words += f" at [{lon:.6f}, {lat:.6f}] (latitude {lat:.6f}, longitude {lon:.6f})"
    raise InvalidZone(f"the zone is refused: {words}")


def _check_size(shape: BaseGeometry) -> None:
    area_m2, _ = _GEOD.geometry_area_perimeter(shapely.orient_polygons(shape))
    area_km2 = abs(area_m2) / 1e6
    if area_km2 > MAX_AREA_KM2:
        raise InvalidZone(
            f"the zone covers {area_km2:,.0f} km², more than the {MAX_AREA_KM2:,.0f} km² a zone "
            "may cover: check its coordinates (GeoJSON is [longitude, latitude])"
        )


def zone_shape(geojson: dict[str, Any]) -> BaseGeometry:
    """The shapely geometry of an outline already checked by zone_geometry_check."""
    if geojson.get("type") == "Feature":
        geojson = geojson["geometry"]
    return shapely.geometry.shape(geojson)

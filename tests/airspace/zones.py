"""Zones to test with: squares and a bow tie in central Seattle, features, collections."""

from __future__ import annotations

from typing import Any

from django_redis import get_redis_connection

from airspace.selectors import VERSION_KEY


def version() -> int:
    return int(get_redis_connection("default").get(VERSION_KEY) or 0)


def square(lon: float, lat: float, size: float = 0.01) -> dict[str, Any]:
    """A GeoJSON Polygon: a square `size` degrees wide with its south-west corner at lon, lat."""
    return {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
        ],
    }


# A bow tie: its outline crosses itself.
BOW_TIE = {
    "type": "Polygon",
    "coordinates": [
        [[-122.34, 47.60], [-122.33, 47.61], [-122.33, 47.60], [-122.34, 47.61], [-122.34, 47.60]]
    ],
}


def feature(name: str, geometry: dict[str, Any] | None = None, **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": geometry or square(-122.35, 47.60),
        "properties": {"name": name, "reason": "stadium", "active": True, **properties},
    }


def collection(*features: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}

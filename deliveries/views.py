"""The public tracking page: anyone with the unguessable link, no login.

It shows that one delivery and nothing else: its stage, a timeline of the stages with their
times, the ETAs, and a map (Leaflet, from our own static files) with the pickup, the dropoff, the
route and the drone. Rendered on the server with the current status (the drone's position in
words and on an SVG sketch, and a refresh every 15 s without JavaScript);
deliveries/static/deliveries/track.js then draws the map and follows the live feed
(deliveries.stream), whose address the page carries: LIVE_BASE_URL when the live process has a
host of its own, else this same origin (the ingress sends /live/ to the live process).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from shapely.geometry import box, shape

from airspace.selectors import zones_active
from deliveries import live, selectors
from deliveries.lifecycle import BEFORE_PICKUP, FINISHED
from deliveries.models import Delivery
from deliveries.reasons import customer_reason
from portal.errors import NotFound

STAGE_LABELS: dict[str, str] = {
    Delivery.Status.REQUESTED: "Requested: finding a drone",
    Delivery.Status.ASSIGNED: "Drone assigned",
    Delivery.Status.EN_ROUTE_TO_PICKUP: "On its way to the pickup",
    Delivery.Status.AT_PICKUP: "Picking up the package",
    Delivery.Status.EN_ROUTE_TO_DROPOFF: "On its way to you",
    Delivery.Status.AT_DROPOFF: "Dropping off the package",
    Delivery.Status.DELIVERED: "Delivered",
    Delivery.Status.CANCELLED: "Cancelled",
    Delivery.Status.FAILED: "Failed",
}
# Stages with the pickup still ahead (its ETA is worth showing).
PICKUP_AHEAD = {
    Delivery.Status.REQUESTED,
    Delivery.Status.ASSIGNED,
    Delivery.Status.EN_ROUTE_TO_PICKUP,
}
# Said when a delivery failed for a reason customers are not shown (an error, an operator's note).
FAILED_WITHOUT_REASON = "We could not complete this delivery."
# How far around the route a no-fly zone is still drawn on the map, in degrees (about 2 km).
ZONE_MARGIN_DEG = 0.02


def live_feed_url(token: str) -> str:
    path = reverse("live-track", kwargs={"token": token})
    base: str = getattr(settings, "LIVE_BASE_URL", "") or ""
    return f"{base.rstrip('/')}{path}" if base else path


def route_points(delivery: Delivery) -> list[list[float]]:
    """The whole flight as one line: to the pickup, then to the dropoff ([lat, lon] each)."""
    route = delivery.route or {}
    return [*route.get("to_pickup", [])[:-1], *route.get("to_dropoff", [])] or [
        [delivery.pickup_lat, delivery.pickup_lon],
        [delivery.dropoff_lat, delivery.dropoff_lon],
    ]


def route_sketch(delivery: Delivery, location: dict[str, Any] | None) -> dict[str, Any]:
    """An SVG sketch of the flight, the map's view without JavaScript: the route (around no-fly
    zones), the stops, the drone. In a flat projection (longitude scaled by the cosine of the
    latitude), 1,000 units across."""
    points = route_points(delivery)
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    k = math.cos(math.radians(sum(lats) / len(lats)))
    lat_max, lon_min = max(lats), min(lons)
    span = max(max(lats) - min(lats), (max(lons) - lon_min) * k, 1e-4)
    scale = 1000 / span

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return round((lon - lon_min) * k * scale, 1), round((lat_max - lat) * scale, 1)

    width, height = xy(min(lats), max(lons))
    drone = xy(location["lat"], location["lon"]) if location else None
    return {
        "view_box": f"-60 -60 {width + 120:.0f} {height + 120:.0f}",
        "path": " ".join(f"{x},{y}" for x, y in (xy(lat, lon) for lat, lon in points)),
        "pickup": xy(delivery.pickup_lat, delivery.pickup_lon),
        "dropoff": xy(delivery.dropoff_lat, delivery.dropoff_lon),
        "drone": drone,
    }


def _zones_near(points: list[list[float]]) -> list[dict[str, Any]]:
    """The no-fly zones in force now near the route (its way around them is what they explain),
    by name and GeoJSON shape; no other airspace detail."""
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    area = box(min(lons), min(lats), max(lons), max(lats)).buffer(ZONE_MARGIN_DEG)
    return [
        {"name": z.name, "geometry": z.geometry}
        for z in zones_active(start=timezone.now())
        if shape(z.geometry).intersects(area)
    ]


def map_data(delivery: Delivery, location: dict[str, Any] | None) -> dict[str, Any]:
    """What the map draws (the page's json_script block): only this delivery's places, route
    and drone position, the tiles to lay them on, and the no-fly zones near the route."""
    route = delivery.route or {}
    return {
        "pickup": [delivery.pickup_lat, delivery.pickup_lon],
        "dropoff": [delivery.dropoff_lat, delivery.dropoff_lon],
        "route": {
            "to_pickup": route.get("to_pickup") or [],
            "to_dropoff": route.get("to_dropoff")
            or [
                [delivery.pickup_lat, delivery.pickup_lon],
                [delivery.dropoff_lat, delivery.dropoff_lon],
            ],
        },
        "drone": location,
        "zones": _zones_near(route_points(delivery)),
        "tiles": settings.MAP_TILE_URL,
        "attribution": settings.MAP_TILE_ATTRIBUTION,
        "time_zone": settings.SITE_TIME_ZONE,
    }


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The great-circle distance between two (lat, lon), in metres (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_000 * math.asin(min(1.0, math.sqrt(h)))


def position_words(delivery: Delivery, status: str, location: dict[str, Any]) -> str:
    """Where the drone is, for people (and for the map's text alternative): how far from its
    next stop, how high, how fast, then the coordinates. track.js writes the same."""
    before_pickup = status in BEFORE_PICKUP
    name, stop = (
        ("the pickup", (delivery.pickup_lat, delivery.pickup_lon))
        if before_pickup
        else ("the dropoff", (delivery.dropoff_lat, delivery.dropoff_lon))
    )
    gap = _metres((location["lat"], location["lon"]), stop)
    if gap < 30:
        parts = [f"at {name}"]
    elif gap < 1000:
        parts = [f"{round(gap / 10) * 10} m from {name}"]
    else:
        parts = [f"{gap / 1000:.1f} km from {name}"]
    if isinstance(location.get("alt_m"), int | float):
        parts.append(f"{round(location['alt_m'])} m up")
    speed = location.get("ground_speed_mps")
    if isinstance(speed, int | float) and speed > 0:
        parts.append(f"{round(speed * 3.6)} km/h")
    return f"{', '.join(parts)} ({location['lat']:.5f}, {location['lon']:.5f})"


def _moment(value: Any) -> datetime | None:
    """An ISO time of the status document as an aware datetime (None when absent or bad)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def _timeline(delivery: Delivery) -> list[dict[str, Any]]:
    """Each stage the delivery reached, when (in the site's zone; the day too when not today).
    Only the status and the time of each event: never its note."""
    today = timezone.localdate()
    return [
        {
            "status": event.status,
            "label": STAGE_LABELS.get(event.status, event.status),
            "at": event.at,
            "other_day": timezone.localdate(event.at) != today,
        }
        for event in sorted(delivery.events.all(), key=lambda e: (e.at, e.id))
    ]


@require_GET
def track(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery = selectors.delivery_by_tracking_token(token=token)
    except NotFound:
        raise Http404("no delivery has this tracking link") from None
    status = live.status_read(delivery.id) or live.status_of(delivery)
    current = str(status.get("status"))
    finished = current in FINISHED
    location = None if finished else status.get("drone_location")
    failure = None
    if current == Delivery.Status.FAILED:
        words = customer_reason(delivery.failure_reason) if delivery.failure_reason else None
        failure = words or FAILED_WITHOUT_REASON
    context = {
        "delivery": delivery,
        "live": status,
        "status": current,
        "finished": finished,
        "stage": STAGE_LABELS.get(current, current),
        # The pickup's ETA until the package is on board, the dropoff's until the end.
        "pickup_eta": _moment(status.get("pickup_eta")) if current in PICKUP_AHEAD else None,
        "dropoff_eta": None if finished else _moment(status.get("dropoff_eta")),
        "location": location,
        "position": position_words(delivery, current, location) if location else "",
        "failure": failure,
        "timeline": _timeline(delivery),
        "live_url": live_feed_url(token),
        "stage_labels": STAGE_LABELS,
        "server_now_ms": int(timezone.now().timestamp() * 1000),
        "sketch": route_sketch(delivery, location),
        "map_data": map_data(delivery, location),
    }
    return render(request, "deliveries/track.html", context)

"""The public tracking page: anyone with the unguessable link, no login.

Rendered on the server with the current status (and a refresh every 15 s without JavaScript);
deliveries/static/deliveries/track.js then follows the live feed (deliveries.stream), whose
address the page carries: LIVE_BASE_URL when the live process has a host of its own, else this
same origin (the ingress sends /live/ to the live process).
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

from deliveries import live, selectors
from deliveries.models import Delivery
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


def live_feed_url(token: str) -> str:
    path = reverse("live-track", kwargs={"token": token})
    base: str = getattr(settings, "LIVE_BASE_URL", "") or ""
    return f"{base.rstrip('/')}{path}" if base else path


def route_sketch(delivery: Delivery, location: dict[str, Any] | None) -> dict[str, Any]:
    """An SVG sketch of the flight: the route (around no-fly zones), the stops, the drone. In a
    flat projection (longitude scaled by the cosine of the latitude), 1,000 units across."""
    route = delivery.route or {}
    points = [*route.get("to_pickup", [])[:-1], *route.get("to_dropoff", [])] or [
        [delivery.pickup_lat, delivery.pickup_lon],
        [delivery.dropoff_lat, delivery.dropoff_lon],
    ]
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
        "lat_max": lat_max,
        "lon_min": lon_min,
        "cos": k,
        "scale": scale,
    }


def _moment(value: Any) -> datetime | None:
    """An ISO time of the status document as an aware datetime (None when absent or bad)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


@require_GET
def track(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery = selectors.delivery_by_tracking_token(token=token)
    except NotFound:
        raise Http404("no delivery has this tracking link") from None
    status = live.status_read(delivery.id) or live.status_of(delivery)
    context = {
        "delivery": delivery,
        "live": status,
        "stage": STAGE_LABELS.get(str(status.get("status")), status.get("status")),
        "pickup_eta": _moment(status.get("pickup_eta")),
        "dropoff_eta": _moment(status.get("dropoff_eta")),
        "live_url": live_feed_url(token),
        "stage_labels": STAGE_LABELS,
        "server_now_ms": int(timezone.now().timestamp() * 1000),
        "sketch": route_sketch(delivery, status.get("drone_location")),
    }
    return render(request, "deliveries/track.html", context)

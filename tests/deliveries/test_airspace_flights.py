"""Deliveries and no-fly zones with real geometry: quotes and requests refused or routed around
zones, and the real simulator flying around a zone, also one that opens mid-flight."""

from __future__ import annotations

import math
import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy
import pytest
import requests
import shapely
from django.test import Client, override_settings
from django.utils import timezone
from pyproj import Transformer
from shapely.geometry import LineString, shape
from shapely.geometry import Point as ShapelyPoint

from airspace.selectors import airspace_cache_clear
from airspace.services import zone_upsert
from deliveries.models import Delivery, DeliveryEvent
from drones import telemetry
from drones.geo import Point
from tests.conftest import CENTER, MailSink, Tenant, make_fleet, worker_env
from tests.deliveries.test_fleet_end_to_end import fleet_simulator, post
from tests.support import celery_worker, wait_for

MARGIN_M = 50.0
KM_LAT = 1 / 111.2
KM_LON = 1 / (111.2 * math.cos(math.radians(CENTER.lat)))
# Straight north of the base: the pickup 1 km away, the dropoff 4 km, a zone between them.
PICKUP = Point(CENTER.lat + 1.0 * KM_LAT, CENTER.lon)
DROPOFF = Point(CENTER.lat + 4.0 * KM_LAT, CENTER.lon)


def square(center: Point, half_km: float) -> dict[str, Any]:
    """A GeoJSON square `2 * half_km` across around `center`."""
    dlat, dlon = half_km * KM_LAT, half_km * KM_LON
    ring = [
        [center.lon - dlon, center.lat - dlat],
        [center.lon + dlon, center.lat - dlat],
        [center.lon + dlon, center.lat + dlat],
        [center.lon - dlon, center.lat + dlat],
        [center.lon - dlon, center.lat - dlat],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def body(pickup: Point = PICKUP, dropoff: Point = DROPOFF) -> dict[str, Any]:
    return {
        "pickup": {"lat": pickup.lat, "lon": pickup.lon},
        "dropoff": {"lat": dropoff.lat, "lon": dropoff.lon},
        "package": {"size": "small", "weight_kg": 1.0},
    }


def metres() -> Transformer:
    """An azimuthal equidistant projection around the test area, in metres."""
    return Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={CENTER.lat} +lon_0={CENTER.lon} +units=m", always_xy=True
    )


def projected(geometry: dict[str, Any]) -> Any:
    to_metres = metres()

    def project(xy: Any) -> Any:
        return numpy.column_stack(to_metres.transform(xy[:, 0], xy[:, 1]))

    return shapely.transform(shape(geometry), project)


def distance_from_zone_m(zone: dict[str, Any], lat: float, lon: float) -> float:
    x, y = metres().transform(lon, lat)
    return float(projected(zone).distance(ShapelyPoint(x, y)))


def zone(name: str, geometry: dict[str, Any], *, on_commit: Any = None, **window: Any) -> None:
    """A zone, in force for this process at once (others see it within a second)."""
    if on_commit is not None:
        with on_commit(execute=True):
            zone_upsert(name=name, reason="stadium", geometry=geometry, **window)
    else:
        zone_upsert(name=name, reason="stadium", geometry=geometry, **window)
    airspace_cache_clear()


# --- requests and quotes ---------------------------------------------------------------------


def test_a_pickup_or_dropoff_inside_a_zone_is_422_naming_it(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    make_fleet(2)
    zone("Lumen Field", square(PICKUP, 0.3), on_commit=django_capture_on_commit_callbacks)
    for path in ("/api/v1/deliveries", "/api/v1/quotes"):
        response = tenant.client.post_json(path, body())
        assert response.status_code == 422, response.content
        error = response.json()["error"]
        assert error["code"] == "inside_no_fly_zone"
        assert error["message"] == "the pickup lies inside the no-fly zone 'Lumen Field'"
        assert "pickup" in error["fields"]
    swapped = tenant.client.post_json("/api/v1/deliveries", body(DROPOFF, PICKUP))
    assert swapped.json()["error"]["message"] == (
        "the dropoff lies inside the no-fly zone 'Lumen Field'"
    )
    # Both stops inside zones: the pickup is named.
    zone("Pier 57", square(DROPOFF, 0.3), on_commit=django_capture_on_commit_callbacks)
    both = tenant.client.post_json("/api/v1/deliveries", body(DROPOFF, PICKUP))
    assert both.status_code == 422
    assert both.json()["error"]["message"] == "the pickup lies inside the no-fly zone 'Pier 57'"


def test_a_straight_line_across_a_zone_is_routed_around_it_and_priced_for_the_detour(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    make_fleet(2)
    straight = tenant.client.post_json("/api/v1/deliveries", body()).json()
    assert len(straight["route"]["coordinates"]) == 2
    between = Point((PICKUP.lat + DROPOFF.lat) / 2, CENTER.lon)
    geometry = square(between, 0.4)
    zone("Stadium", geometry, on_commit=django_capture_on_commit_callbacks)

    around = tenant.client.post_json("/api/v1/deliveries", body())

    assert around.status_code == 202, around.json()
    coordinates = around.json()["route"]["coordinates"]
    assert len(coordinates) > 2
    assert coordinates[0] == pytest.approx([PICKUP.lon, PICKUP.lat], abs=1e-6)
    assert coordinates[-1] == pytest.approx([DROPOFF.lon, DROPOFF.lat], abs=1e-6)
    path = projected({"type": "LineString", "coordinates": coordinates})
    assert path.distance(projected(geometry)) >= MARGIN_M - 0.5
    assert float(around.json()["price"]["amount"]) > float(straight["price"]["amount"])


def test_a_zone_inactive_or_outside_its_window_is_ignored(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    make_fleet(2)
    between = Point((PICKUP.lat + DROPOFF.lat) / 2, CENTER.lon)
    later = timezone.now() + timedelta(days=2)
    zone(
        "Concert tomorrow",
        square(between, 0.4),
        on_commit=django_capture_on_commit_callbacks,
        valid_from=later,
        valid_until=later + timedelta(hours=3),
    )
    zone(
        "Switched off",
        square(between, 0.3),
        on_commit=django_capture_on_commit_callbacks,
        active=False,
    )
    response = tenant.client.post_json("/api/v1/deliveries", body())
    assert response.status_code == 202
    assert len(response.json()["route"]["coordinates"]) == 2
    # Picked up while the concert's zone is active, the same trip goes around it.
    during = body()
    during["pickup_time"] = (later + timedelta(hours=1)).isoformat()
    routed = tenant.client.post_json("/api/v1/deliveries", during)
    assert len(routed.json()["route"]["coordinates"]) > 2


# --- flown by the simulator -------------------------------------------------------------------


class Recorder:
    """Every report the telemetry service applies, as the live server receives them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.points: list[tuple[float, float, float]] = []
        self.lock = threading.Lock()
        real = telemetry.telemetry_apply

        def recording(**kwargs: Any) -> Any:
            with self.lock:
                self.points += [(r.lat, r.lon, r.alt_m) for _, r in kwargs["reports"]]
            return real(**kwargs)

        monkeypatch.setattr(telemetry, "telemetry_apply", recording)
        # The API module imported the function itself.
        from drones import api

        monkeypatch.setattr(api, "telemetry_apply", recording)


@pytest.mark.slow
def test_the_simulator_flies_around_a_zone_and_around_one_that_opens_mid_flight(
    live_server: Any, transactional_db: None, tenant: Tenant, process_env: dict[str, str],
    mail_server: tuple[MailSink, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    speedup = 30
    env = {**worker_env(process_env, mail_server[1]), "FLEET_SIM_SPEEDUP": str(speedup)}
    make_fleet(2)
    recorder = Recorder(monkeypatch)
    between = Point((PICKUP.lat + DROPOFF.lat) / 2, CENTER.lon)
    first = square(between, 0.4)
    zone("Stadium", first)
    # The second opens across the way home (between the base and the pickup), once the drone
    # has passed there on its way out.
    second = square(Point(CENTER.lat + 0.5 * KM_LAT, CENTER.lon), 0.2)
    with (
        override_settings(FLEET_SIM_SPEEDUP=speedup),
        celery_worker(env, log=tmp_path / "worker.log", concurrency=2),
        fleet_simulator(env, live_server.url, tmp_path / "simulator.log"),
    ):
        delivery_id = post(live_server, tenant, body())

        def stage(wanted: str) -> bool:
            return Delivery.objects.filter(pk=delivery_id, status=wanted).exists()

        wait_for(lambda: stage("en_route_to_dropoff"), timeout=120, what="picked up")
        opened = len(recorder.points)
        zone("Temporary flight restriction", second)
        assert telemetry.flights_reroute() == 1
        wait_for(lambda: stage("delivered"), timeout=120, what="delivered")
        delivery = Delivery.objects.get(pk=delivery_id)
        drone_id = delivery.drone_id
        assert drone_id is not None

        def home() -> bool:
            from drones.models import Drone

            return Drone.objects.get(pk=drone_id).state in ("idle", "charging")

        wait_for(home, timeout=120, what="the drone home")
    airborne = [(lat, lon) for lat, lon, alt in recorder.points if alt > 1.0]
    assert len(airborne) > 20
    closest = min(distance_from_zone_m(first, lat, lon) for lat, lon in airborne)
    assert closest >= MARGIN_M - 1.0, closest
    after = [(lat, lon) for lat, lon, alt in recorder.points[opened:] if alt > 1.0]
    closest_second = min(distance_from_zone_m(second, lat, lon) for lat, lon in after)
    assert closest_second >= MARGIN_M - 1.0, closest_second
    notes = DeliveryEvent.objects.filter(delivery_id=delivery_id).values_list("note", flat=True)
    assert "rerouted: the no-fly zones active changed" in notes
    # Not by luck: the straight way home crosses the second zone, and the stored way home,
    # planned again when it opened, keeps its margin.
    way_home = delivery.route["to_base"] if delivery.route else []
    straight_home = LineString([(DROPOFF.lon, DROPOFF.lat), (CENTER.lon, CENTER.lat)])
    assert projected(straight_home.__geo_interface__).intersects(projected(second))
    stored_home = {"type": "LineString", "coordinates": [[lon, lat] for lat, lon in way_home]}
    assert projected(stored_home).distance(projected(second)) >= MARGIN_M - 0.5
    shown = requests.get(
        f"{live_server.url}/api/v1/deliveries/{delivery_id}",
        headers={"Authorization": f"Api-Key {tenant.key}"},
        timeout=10,
    ).json()["route"]
    assert len(shown["coordinates"]) > 2  # around the first zone


def test_the_tracking_page_draws_the_route_around_the_zone(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    make_fleet(2)
    zone(
        "Stadium",
        square(Point((PICKUP.lat + DROPOFF.lat) / 2, CENTER.lon), 0.4),
        on_commit=django_capture_on_commit_callbacks,
    )
    created = tenant.client.post_json("/api/v1/deliveries", body()).json()
    token = created["tracking_url"].rsplit("/", 1)[1]

    page = Client().get(f"/track/{token}").content.decode()

    drawn = re.search(r'<polyline points="([^"]+)"', page)
    assert drawn is not None
    assert len(drawn[1].split()) == len(created["route"]["coordinates"]) > 2

"""The public tracking page: that one delivery and nothing else, its stages with their times, a
map's data, the site's layout, and a Content Security Policy without inline scripts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery, DeliveryEvent
from drones.models import Drone
from tests.conftest import Tenant, delivery_body, make_fleet

Status = Delivery.Status
ROUTE = {
    "to_pickup": [[47.6062, -122.3321], [47.6097, -122.3422]],
    "to_dropoff": [[47.6097, -122.3422], [47.6150, -122.3400], [47.6205, -122.3493]],
}

pytestmark = pytest.mark.django_db


def page_of(delivery: Delivery) -> str:
    response = Client().get(f"/track/{delivery.tracking_token}")
    assert response.status_code == 200
    return response.content.decode()


def map_data(page: str) -> dict[str, Any]:
    block = re.search(r'<script id="track-data" type="application/json">(.*?)</script>', page, re.S)
    assert block is not None
    data: dict[str, Any] = json.loads(block[1])
    return data


def timeline(page: str) -> list[tuple[str, str]]:
    """(status, shown time) of each item of the page's timeline, in order."""
    listed = re.search(r'<ol class="timeline" id="timeline">(.*?)</ol>', page, re.S)
    assert listed is not None
    return re.findall(r'<li [^>]*data-status="([a-z_]+)">.*?<time [^>]*>([^<]+)</time>', listed[1])


def flying(tenant: Tenant, **body: Any) -> tuple[Delivery, Drone]:
    """A delivery made through the API, then assigned and on its way to the pickup."""
    drone = make_fleet(1)[0]
    created = tenant.client.post_json("/api/v1/deliveries", delivery_body(**body))
    assert created.status_code == 202, created.content
    delivery = Delivery.objects.get(pk=created.json()["id"])
    Drone.objects.filter(pk=drone.pk).update(
        assigned_delivery_id=delivery.pk, lat=47.6080, lon=-122.3370, alt_m=60.0
    )
    delivery_move(delivery, Status.ASSIGNED, changes={"drone": drone, "route": ROUTE})
    delivery_move(delivery, Status.EN_ROUTE_TO_PICKUP, note="operator: battery swapped at base")
    return Delivery.objects.get(pk=delivery.pk), drone


def test_the_timeline_shows_each_stage_reached_with_its_time_in_the_site_zone(
    tenant: Tenant,
) -> None:
    delivery = Delivery.objects.create(
        business=tenant.business,
        status=Status.EN_ROUTE_TO_PICKUP,
        pickup_lat=47.6097,
        pickup_lon=-122.3422,
        dropoff_lat=47.6205,
        dropoff_lon=-122.3493,
        package_size=Delivery.Size.SMALL,
        package_weight_kg=2.0,
    )
    start = datetime(2026, 1, 15, 15, 4, tzinfo=UTC)  # 07:04 in Seattle, in winter
    for minutes, status in [
        (0, Status.REQUESTED),
        (1, Status.ASSIGNED),
        (2, Status.EN_ROUTE_TO_PICKUP),
    ]:
        DeliveryEvent.objects.create(
            delivery=delivery, status=status, at=start + timedelta(minutes=minutes)
        )

    shown = timeline(page_of(delivery))

    assert [status for status, _ in shown] == ["requested", "assigned", "en_route_to_pickup"]
    assert [time.rsplit(", ", 1)[-1] for _, time in shown] == [
        "07:04 PST",
        "07:05 PST",
        "07:06 PST",
    ]
    assert shown[0][1].startswith("Thu 15 Jan")  # not today: the day too


def test_the_page_follows_the_stages_the_lifecycle_writes(tenant: Tenant) -> None:
    delivery, _ = flying(tenant)
    page = page_of(delivery)
    assert [status for status, _ in timeline(page)] == [
        "requested",
        "assigned",
        "en_route_to_pickup",
    ]
    stage = re.search(r'<p [^>]*id="stage" data-status="([a-z_]+)"[^>]*>([^<]+)</p>', page)
    assert stage is not None and stage.groups() == (
        "en_route_to_pickup",
        "On its way to the pickup",
    )
    assert 'role="status" aria-live="polite"' in page


def test_the_map_data_is_the_route_the_stops_and_the_drone(tenant: Tenant) -> None:
    delivery, _ = flying(tenant)

    data = map_data(page_of(delivery))

    assert data["pickup"] == [47.6097, -122.3422] and data["dropoff"] == [47.6205, -122.3493]
    assert data["route"] == ROUTE
    assert (data["drone"]["lat"], data["drone"]["lon"]) == (47.6080, -122.3370)
    assert data["tiles"].startswith("https://") and "{z}" in data["tiles"]


def test_a_delivery_the_workflow_has_not_planned_yet_has_the_straight_line(
    tenant: Tenant,
) -> None:
    delivery = Delivery.objects.create(
        business=tenant.business,
        pickup_lat=47.6097,
        pickup_lon=-122.3422,
        dropoff_lat=47.6205,
        dropoff_lon=-122.3493,
        package_size=Delivery.Size.SMALL,
        package_weight_kg=2.0,
    )
    data = map_data(page_of(delivery))
    assert data["route"] == {
        "to_pickup": [],
        "to_dropoff": [[47.6097, -122.3422], [47.6205, -122.3493]],
    }
    assert data["drone"] is None


def test_without_javascript_the_drone_position_shows_in_words_and_on_the_sketch(
    tenant: Tenant,
) -> None:
    delivery, _ = flying(tenant)
    page = page_of(delivery)
    position = re.search(r'<dd id="position">([^<]+)</dd>', page)
    assert position is not None
    assert position[1] == "430 m from the pickup, 60 m up (47.60800, -122.33700)"
    assert re.search(r"<noscript>\s*<meta http-equiv=\"refresh\"", page)
    assert "<title>The drone</title>" in page  # on the SVG sketch inside the map's box
    assert re.search(r'<div id="track-map"[^>]*>\s*<svg id="route-sketch"', page)


def test_the_page_shows_nothing_but_this_delivery(tenant: Tenant) -> None:
    delivery, drone = flying(tenant, recipient={"name": "Ada Lovelace", "email": "ada@example.com"})
    other = tenant.client.post_json(
        "/api/v1/deliveries",
        delivery_body(dropoff={"lat": 47.62, "lon": -122.35, "address": "12 Secret Lane"}),
    ).json()

    page = page_of(delivery)

    for private in (
        tenant.business.name,  # the business behind it
        drone.serial,  # the drone that flies it
        str(drone.pk),
        "battery swapped",  # an operator's note on an event
        "ada@example.com",  # the recipient's contact details
        "Ada Lovelace",
        "12 Secret Lane",  # another delivery
        other["tracking_url"].rsplit("/", 1)[1],
        other["id"],
    ):
        assert private not in page, private


def test_an_operators_failure_reason_is_never_shown_only_the_workflows_in_customer_words(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    internal, _ = flying(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_move(
            internal,
            Status.FAILED,
            changes={"failure_reason": "Drone T-00042 lost: ConnectionError at 10.0.0.4:6379"},
        )
    ours, _ = flying(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_move(
            ours,
            Status.FAILED,
            changes={"failure_reason": "no drone can deliver before the deadline (15:00)"},
        )

    page = page_of(internal)
    assert "We could not complete this delivery." in page
    for internal_text in ("T-00042", "ConnectionError", "10.0.0.4", "lost:"):
        assert internal_text not in page
    page = page_of(ours)
    assert "no drone could deliver before the deadline" in page
    assert "15:00" not in page


def test_addresses_are_escaped(tenant: Tenant) -> None:
    delivery, _ = flying(
        tenant,
        pickup={"lat": 47.6097, "lon": -122.3422, "address": 'Pike "Place" <b>Market</b>'},
        dropoff={"lat": 47.6205, "lon": -122.3493, "address": "<script>alert(1)</script>"},
    )
    page = page_of(delivery)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    assert "&lt;b&gt;Market&lt;/b&gt;" in page and "<b>Market" not in page


def test_an_unknown_token_is_a_404(db: None) -> None:
    assert Client().get("/track/not-a-real-token").status_code == 404


def test_scripts_are_our_own_files_and_the_policy_allows_no_inline_script(
    tenant: Tenant,
) -> None:
    delivery, _ = flying(tenant)
    response = Client().get(f"/track/{delivery.tracking_token}")
    policy = response["Content-Security-Policy"]
    directives = dict(
        (part.split()[0], part.split()[1:]) for part in policy.split(";") if part.strip()
    )
    assert directives["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in directives["script-src"]
    page = response.content.decode()
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert "<style" not in page and " style=" not in page
    assert re.search(r'<script src="/static/leaflet/leaflet\.js">', page)
    assert re.search(r'<link rel="stylesheet" href="/static/leaflet/leaflet\.css">', page)
    for name in ("leaflet/leaflet.js", "leaflet/leaflet.css", "deliveries/track.css"):
        assert finders.find(name), name


def test_the_page_uses_the_sites_layout_and_keeps_the_hooks_browser_tests_use(
    tenant: Tenant,
) -> None:
    delivery, _ = flying(tenant)
    Delivery.objects.filter(pk=delivery.pk).update(
        dropoff_eta=timezone.now() + timedelta(minutes=9)
    )
    page = page_of(Delivery.objects.get(pk=delivery.pk))
    assert 'href="/static/portal/site.css"' in page and 'class="site-header"' in page
    assert 'href="/static/deliveries/track.css"' in page
    assert re.search(r'<p [^>]*id="stage" data-status="[a-z_]+"', page)
    assert re.search(r'<ol class="timeline" id="timeline">', page)
    assert 'id="track-map"' in page
    eta = re.search(
        r'<dd id="dropoff-eta">\s*<time data-eta datetime="([^"]+)">([^<]+)</time>', page
    )
    assert eta is not None
    assert re.fullmatch(r"\d\d:\d\d P[SD]T", eta[2])


def test_a_finished_delivery_shows_no_eta_no_drone_and_no_notify_form(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    delivery, _ = flying(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        for status in (Status.AT_PICKUP, Status.EN_ROUTE_TO_DROPOFF, Status.AT_DROPOFF):
            delivery_move(delivery, status)
        delivery_move(delivery, Status.DELIVERED)

    page = page_of(delivery)

    assert [status for status, _ in timeline(page)][-1] == "delivered"
    assert '<dd id="dropoff-eta" hidden>' in page and '<dd id="position" hidden>' in page
    assert map_data(page)["drone"] is None
    assert 'id="notify-me"' not in page

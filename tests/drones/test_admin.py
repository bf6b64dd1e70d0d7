from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deliveries import services as delivery_services
from deliveries.models import Delivery, DeliveryEvent
from drones import flight
from drones.geo import Point
from drones.models import Drone, TelemetryKey
from drones.services import telemetry_key_create
from tests.conftest import Tenant, delivery_body, make_fleet
from tests.drones.fleet import base, drone, drone_model

pytestmark = pytest.mark.django_db


def test_operators_see_the_fleet_with_state_battery_and_booking(admin_client: Client) -> None:
    d = drone(drone_model(), base(), battery_pct=73.0)
    booking = uuid.uuid4()
    Drone.objects.filter(pk=d.pk).update(assigned_delivery_id=booking)

    page = admin_client.get(reverse("admin:drones_drone_changelist"), {"q": d.serial})

    assert page.status_code == 200
    body = page.content.decode()
    assert d.serial in body
    assert "73.0" in body
    assert str(booking) in body


def test_operators_ground_drones_and_return_them_to_service(admin_client: Client) -> None:
    model, home = drone_model(), base()
    grounded, kept = drone(model, home), drone(model, home)
    url = reverse("admin:drones_drone_changelist")

    admin_client.post(url, {"action": "ground", "_selected_action": [str(grounded.pk)]})

    assert Drone.objects.get(pk=grounded.pk).state == Drone.State.GROUNDED
    assert Drone.objects.get(pk=kept.pk).state == Drone.State.IDLE

    admin_client.post(url, {"action": "return_to_service", "_selected_action": [str(grounded.pk)]})

    assert Drone.objects.get(pk=grounded.pk).state == Drone.State.IDLE


def test_the_admin_does_not_edit_state_or_delete_drones(admin_client: Client) -> None:
    d = drone(drone_model(), base())

    page = admin_client.get(reverse("admin:drones_drone_change", args=[d.pk]))

    assert page.status_code == 200
    assert 'name="state"' not in page.content.decode()
    assert admin_client.get(reverse("admin:drones_drone_delete", args=[d.pk])).status_code == 403


def test_operators_create_a_gateway_key_shown_once_and_it_reports(admin_client: Client) -> None:
    home = base()
    d = drone(drone_model(), home)
    response = admin_client.post(
        reverse("admin:drones_telemetrykey_add"),
        {"name": "north gateway", "bases": [str(home.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    key = next(m for m in shown if "north gateway" in m).split(" is: ")[1].split(". ")[0]
    record = TelemetryKey.objects.get(name="north gateway")
    assert key.startswith(record.prefix) and record.hashed_key not in key
    assert list(record.bases.all()) == [home]

    report = {
        "drone": d.serial, "time": "2026-01-01T00:00:00Z", "lat": home.lat, "lon": home.lon,
        "alt_m": 0, "ground_speed_mps": 0, "heading": 0, "battery_pct": 99,
    }  # fmt: skip
    answer = Client().post(
        "/api/v1/telemetry",
        {"reports": [report]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Telemetry-Key {key}",
    )
    assert answer.status_code == 200
    assert answer.json()["accepted"] == 1


def test_create_telemetry_key_prints_a_drone_key_last(capsys: pytest.CaptureFixture[str]) -> None:
    d = drone(drone_model(), base())
    call_command("create_telemetry_key", "its own", "--drone", d.serial)
    key = capsys.readouterr().out.strip().splitlines()[-1]
    record = TelemetryKey.objects.get(name="its own")
    assert record.drone_id == d.pk and key.startswith(record.prefix + ".")
    with pytest.raises(CommandError, match="no drone"):
        call_command("create_telemetry_key", "nobody's", "--drone", "NOPE")
    with pytest.raises(CommandError, match="either one drone's or a gateway's"):
        call_command("create_telemetry_key", "neither")


def test_operators_find_the_deliveries_that_need_attention(admin_client: Client) -> None:
    from businesses.services import business_create
    from deliveries.models import Delivery

    business, _ = business_create(name="Contoso")
    trip = {
        "pickup_lat": 47.6, "pickup_lon": -122.3, "dropoff_lat": 47.61, "dropoff_lon": -122.31,
        "package_size": "small", "package_weight_kg": 1.0,
    }  # fmt: skip
    flagged = Delivery.objects.create(
        business=business, attention="drone FD-0007 lost contact", **trip
    )
    calm = Delivery.objects.create(business=business, **trip)

    page = admin_client.get(
        reverse("admin:deliveries_delivery_changelist"), {"attention__isempty": "0"}
    )

    body = page.content.decode()
    assert "drone FD-0007 lost contact" in body
    assert str(flagged.pk) in body and str(calm.pk) not in body


# --- what an operator sees and does (issue 9) -------------------------------------------------


def report(key: str, drone: Drone, at: Point, alt_m: float, seconds_ago: float) -> Any:
    """One telemetry report from the drone's gateway; returns the drone's orders."""
    time = timezone.now() - timedelta(seconds=seconds_ago)
    body = {
        "drone": drone.serial, "time": time.isoformat().replace("+00:00", "Z"),
        "lat": at.lat, "lon": at.lon, "alt_m": alt_m, "ground_speed_mps": 15.0, "heading": 0.0,
        "battery_pct": 90.0,
    }  # fmt: skip
    answer = Client(HTTP_AUTHORIZATION=f"Telemetry-Key {key}").post(
        "/api/v1/telemetry", {"reports": [body]}, content_type="application/json"
    )
    assert answer.status_code == 200, answer.json()
    return answer.json()["commands"][drone.serial]


def assigned(tenant: Tenant) -> tuple[Delivery, Drone]:
    response = tenant.client.post_json("/api/v1/deliveries", delivery_body())
    assert response.status_code == 202, response.json()
    delivery_id = uuid.UUID(response.json()["id"])
    assert delivery_services.delivery_assign(delivery_id=delivery_id).result == "assigned"
    delivery = Delivery.objects.select_related("drone").get(pk=delivery_id)
    assert delivery.drone is not None
    return delivery, delivery.drone


def flying_to_pickup(tenant: Tenant) -> tuple[Delivery, Drone, str]:
    """A delivery whose drone has taken off for the pickup (told so by its telemetry)."""
    delivery, d = assigned(tenant)
    _, key = telemetry_key_create(name="gateway", base_ids=[d.base_id])
    home = Point(d.base.lat, d.base.lon)
    pickup = Point(delivery.pickup_lat, delivery.pickup_lon)
    assert report(key, d, home, 0.0, 30)["type"] == "deliver"
    report(key, d, home, 20.0, 20)
    report(key, d, flight.interpolate(home, pickup, 0.3), 60.0, 10)
    delivery.refresh_from_db()
    d.refresh_from_db()
    assert (delivery.status, d.state) == ("en_route_to_pickup", "flying")
    return delivery, d, key


def act(client: Client, action: str, *drones: Drone) -> list[str]:
    response = client.post(
        reverse("admin:drones_drone_changelist"),
        {"action": action, "_selected_action": [str(d.pk) for d in drones]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_a_drone_booked_but_still_idle_reads_booked_for_its_delivery(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(2)
    delivery, booked = assigned(tenant)
    assert booked.state == "idle"

    body = admin_client.get(reverse("admin:drones_drone_changelist")).content.decode()

    rows = [r.split("</tr>")[0] for r in body.split("<tr")]
    row = next(r for r in rows if booked.serial in r)
    assert "Booked for" in row and str(delivery.pk)[:8] in row and ">Idle<" not in row
    assert "(assigned)" in row  # its delivery's stage
    free = next(r for r in rows if ">T-" in r and booked.serial not in r)
    assert ">Idle<" in free and "Booked" not in free


def test_the_drone_page_shows_it_on_a_map_without_inline_scripts(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    delivery, d = assigned(tenant)

    page = admin_client.get(reverse("admin:drones_drone_change", args=[d.pk]))

    body = page.content.decode()
    assert (
        "'unsafe-inline'"
        not in page["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    )
    assert "leaflet/leaflet.js" in body and "drones/drone_map.js" in body
    options = re.search(
        r'<script id="drone-map-options" type="application/json">(.*?)</script>', body, re.S
    )
    assert options is not None
    data = json.loads(options.group(1))
    assert (data["drone"]["lat"], data["drone"]["lon"]) == (d.lat, d.lon)
    assert data["pickup"]["lat"] == delivery.pickup_lat
    for script in re.findall(r"<script[^>]*>", body):  # every script a file, or data
        assert " src=" in script or 'type="application/json"' in script, script
    assert f"{d.lat:.5f}, {d.lon:.5f}" in body


def test_an_operator_sends_a_drone_home_and_its_delivery_looks_for_another(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    delivery, d, key = flying_to_pickup(tenant)

    assert act(admin_client, "send_home", d) == [
        "1 drone sent home; its delivery looks for another drone."
    ]

    delivery.refresh_from_db()
    assert delivery.status == "requested" and delivery.drone_id is None
    last = DeliveryEvent.objects.filter(delivery=delivery).order_by("at", "id").last()
    assert last is not None
    assert last.note == f"drone {d.serial} sent home by operator admin; finding another drone"
    here = Point(d.lat, d.lon)
    assert report(key, d, here, 60.0, 0)["type"] == "return_to_base"
    # Still in the air, it is nobody's drone until it lands.
    outcome = delivery_services.delivery_assign(delivery_id=delivery.pk, attempt=delivery.attempts)
    assert outcome.result == "wait"


def test_sending_home_says_why_when_there_is_nothing_to_call_off(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(2)
    _, on_the_ground = assigned(tenant)

    messages = act(admin_client, "send_home", on_the_ground)

    assert messages == [
        f"Drone {on_the_ground.serial} not sent home: drone {on_the_ground.serial} is on the "
        "ground (idle); to give its delivery another drone, ground it."
    ]
    assert Drone.objects.get(pk=on_the_ground.pk).assigned_delivery_id is not None


def test_grounding_and_releasing_read_in_words_and_name_the_operator(
    admin_client: Client,
) -> None:
    from django.contrib.admin.models import LogEntry

    first, second = make_fleet(2)

    assert act(admin_client, "ground", first, second) == [
        "2 drones grounded: never assigned until they are released; deliveries they held "
        "before pickup look for other drones."
    ]
    assert act(admin_client, "return_to_service", first) == ["1 drone released back into service."]
    assert act(admin_client, "return_to_service", first) == [
        f"Drone {first.serial} not released: drone {first.serial} is idle, not grounded."
    ]
    history = LogEntry.objects.filter(object_id=str(first.pk)).order_by("action_time")
    assert [(e.user.get_username(), e.change_message) for e in history] == [
        ("admin", "Grounded."),
        ("admin", "Released back into service."),
    ]


def test_grounding_a_booked_drone_names_the_operator_in_its_deliverys_history(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(2)
    delivery, booked = assigned(tenant)

    act(admin_client, "ground", booked)

    notes = list(DeliveryEvent.objects.filter(delivery=delivery).values_list("note", flat=True))
    assert any(f"drone {booked.serial} grounded by operator admin" in note for note in notes), notes
    assert not any("business" in note for note in notes)

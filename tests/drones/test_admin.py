from __future__ import annotations

import uuid

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from drones.models import Drone, TelemetryKey
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

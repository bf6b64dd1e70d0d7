from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from drones.models import Drone
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

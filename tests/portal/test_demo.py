"""`manage.py load_demo`, as `make run` runs it: idempotent, with zones the demo trips avoid."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from airspace.models import NoFlyZone
from drones.models import Base, Drone

pytestmark = pytest.mark.django_db


@override_settings(DEBUG=True)  # as make run has it; the test runner turns it off
def test_the_demo_has_an_operator_a_key_a_fleet_and_zones_clear_of_its_bases() -> None:
    out = StringIO()
    call_command("load_demo", stdout=out)
    call_command("load_demo", stdout=out)  # a second run adds a key, nothing else

    text = out.getvalue()
    assert "business API key" in text
    assert "no-fly zones: Lumen Field, T-Mobile Park" in text
    assert Drone.objects.count() == 150
    assert NoFlyZone.objects.count() == 2
    from airspace.selectors import airspace_cache_clear, airspace_get
    from drones.geo import Point

    airspace_cache_clear()
    for base in Base.objects.all():
        assert airspace_get().zone_at(Point(base.lat, base.lon)) is None

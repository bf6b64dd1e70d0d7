"""`manage.py load_demo`, as `make run` runs it: idempotent, with zones the demo trips avoid,
and accounts that sign in where it says."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.test import override_settings

from airspace.models import NoFlyZone
from businesses.models import BusinessMember
from drones.models import Base, Drone

pytestmark = pytest.mark.django_db


@override_settings(DEBUG=True)  # as make run has it; the test runner turns it off
def test_the_demo_has_an_operator_a_key_a_fleet_and_zones_clear_of_its_bases() -> None:
    out = StringIO()
    call_command("load_demo", stdout=out)
    call_command("load_demo", stdout=out)  # a second run adds a key, nothing else

    text = out.getvalue()
    assert len(re.findall(r"^API key: +\S+", text, re.MULTILINE)) == 2
    assert "No-fly zones:   Lumen Field, T-Mobile Park" in text
    assert Drone.objects.count() == 150
    assert NoFlyZone.objects.count() == 2
    from airspace.selectors import airspace_cache_clear, airspace_get
    from drones.geo import Point

    airspace_cache_clear()
    for base in Base.objects.all():
        assert airspace_get().zone_at(Point(base.lat, base.lon)) is None


@override_settings(DEBUG=True, PUBLIC_BASE_URL="http://127.0.0.1:9123")
def test_the_demo_prints_where_to_sign_in_and_the_accounts_sign_in() -> None:
    out = StringIO()
    call_command("load_demo", stdout=out)
    call_command("load_demo", stdout=StringIO())  # the accounts are made once

    lines = {
        line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in out.getvalue().splitlines()
    }
    base = "http://127.0.0.1:9123"
    assert lines["Home"] == [f"{base}/"]
    assert lines["Admin"][:2] == [f"{base}/admin/", "admin"]
    assert lines["API docs"] == [f"{base}/api/v1/docs/"]
    assert lines["Customer login"][:4] == [
        f"{base}/login",
        "customer@fabrikam.example",
        "/",
        "fabrikam-demo",
    ]
    assert lines["Business login"][:4] == [
        f"{base}/login",
        "business@fabrikam.example",
        "/",
        "fabrikam-demo",
    ]

    operator = authenticate(username="admin", password="fabrikam-demo")
    assert operator is not None and operator.is_staff and operator.is_superuser
    customer = authenticate(username="customer@fabrikam.example", password="fabrikam-demo")
    assert customer is not None and not customer.is_staff
    assert customer.email == "customer@fabrikam.example"
    assert not BusinessMember.objects.filter(user=customer).exists()
    member = authenticate(username="business@fabrikam.example", password="fabrikam-demo")
    assert member is not None and not member.is_staff
    (membership,) = BusinessMember.objects.filter(user=member)
    assert membership.business.name == "Fabrikam Demo Business"

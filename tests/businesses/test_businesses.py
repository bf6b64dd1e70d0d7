from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from businesses.models import Business, BusinessAPIKey
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db


def test_create_business_prints_a_working_key_as_its_last_line() -> None:
    out = StringIO()
    call_command("create_business", "Wingtip Toys", "--email", "ops@wingtip.example", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    business = Business.objects.get(name="Wingtip Toys")
    assert business.email == "ops@wingtip.example"
    api_key = BusinessAPIKey.objects.get(business=business)
    assert key.startswith(f"{api_key.prefix}.")
    assert key not in api_key.hashed_key  # hashed at rest
    assert ApiClient(key).get("/api/v1/deliveries").status_code == 200


def test_a_deactivated_business_cannot_call_the_api() -> None:
    out = StringIO()
    call_command("create_business", "Tailspin", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    Business.objects.filter(name="Tailspin").update(is_active=False)
    from django.core.cache import cache

    cache.clear()
    assert ApiClient(key).get("/api/v1/deliveries").status_code == 401

"""A business member in the browser: makes an API key (shown once, and it works), revokes it."""

from __future__ import annotations

import re

import pytest
import requests
from django.contrib.auth.models import User
from playwright.sync_api import expect

from businesses.models import BusinessMember
from businesses.services import business_create
from tests.browser.conftest import Site

pytestmark = pytest.mark.browser


def test_a_business_member_makes_a_key_seen_once_and_revokes_it(site: Site) -> None:
    business, _ = business_create(name="Contoso Pharmacy", email="ops@contoso.example")
    user = User.objects.create_user("lee@contoso.example", "lee@contoso.example", "x" * 12)
    BusinessMember.objects.create(user=user, business=business)

    page = site.signed_in(user)
    page.goto("/business/keys")
    page.get_by_label("Name of the key").fill("order system")
    page.get_by_role("button", name="Create the key").click()
    key = page.locator("#new-key").inner_text().strip()
    assert len(key) > 20
    site.shoot(page, "api-keys", again=False)

    deliveries = f"{site.url}/api/v1/deliveries"
    answer = requests.get(deliveries, headers={"Authorization": f"Api-Key {key}"}, timeout=10)
    assert answer.status_code == 200

    # Shown once: not on the page again.
    page.goto("/business/keys")
    expect(page.locator("#new-key")).to_have_count(0)
    assert key not in page.content()

    page.get_by_role("button", name="Revoke the key order system").click()
    expect(page.locator(".messages")).to_contain_text(re.compile(r"is revoked: it stops working"))
    answer = requests.get(deliveries, headers={"Authorization": f"Api-Key {key}"}, timeout=10)
    assert answer.status_code == 401
    site.assert_clean()

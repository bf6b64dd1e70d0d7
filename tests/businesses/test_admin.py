"""Operators' businesses, API keys and people in Django admin: what they change holds at once."""

from __future__ import annotations

import zoneinfo
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from businesses.models import Business, BusinessAPIKey, BusinessMember
from tests.conftest import ApiClient, Tenant

pytestmark = pytest.mark.django_db

DELIVERIES = "/api/v1/deliveries"


def shown(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def business_form(business: Business, **fields: Any) -> dict[str, Any]:
    """What the business's page posts: its fields and its two inlines' management forms."""
    members = list(BusinessMember.objects.filter(business=business).order_by("pk"))
    keys = list(BusinessAPIKey.objects.filter(business=business).order_by("-created"))
    data: dict[str, Any] = {
        "name": business.name,
        "email": business.email,
        "members-TOTAL_FORMS": len(members),
        "members-INITIAL_FORMS": len(members),
        "members-MIN_NUM_FORMS": 0,
        "members-MAX_NUM_FORMS": 1000,
        "api_keys-TOTAL_FORMS": len(keys),
        "api_keys-INITIAL_FORMS": len(keys),
        "api_keys-MIN_NUM_FORMS": 0,
        "api_keys-MAX_NUM_FORMS": 1000,
    }
    if business.is_active:
        data["is_active"] = "on"
    for i, member in enumerate(members):
        data.update({f"members-{i}-id": member.pk, f"members-{i}-user": member.user_id})
        data[f"members-{i}-business"] = str(business.pk)
    for i, key in enumerate(keys):
        data.update({f"api_keys-{i}-id": key.pk, f"api_keys-{i}-business": str(business.pk)})
    data.update(fields)
    return {name: value for name, value in data.items() if value is not None}


def test_a_business_deactivated_on_its_page_is_refused_by_the_api_at_once(
    admin_client: Client, tenant: Tenant
) -> None:
    assert tenant.client.get(DELIVERIES).status_code == 200  # its key is now cached

    saved = admin_client.post(
        reverse("admin:businesses_business_change", args=[tenant.business.pk]),
        business_form(tenant.business, is_active=None),
    )

    assert saved.status_code == 302
    assert tenant.client.get(DELIVERIES).status_code == 401


def test_the_deactivate_action_stops_every_key_at_once_and_activate_starts_them_again(
    admin_client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    from businesses.services import api_key_create

    _, second_key = api_key_create(business=tenant.business, name="warehouse")
    second = ApiClient(second_key)
    for client in (tenant.client, second, other_tenant.client):
        assert client.get(DELIVERIES).status_code == 200
    url = reverse("admin:businesses_business_changelist")
    both = [str(tenant.business.pk), str(other_tenant.business.pk)]

    answer = admin_client.post(url, {"action": "deactivate", "_selected_action": both}, follow=True)

    assert shown(answer) == [
        "2 businesses deactivated: their API keys are refused from the next call."
    ]
    for client in (tenant.client, second, other_tenant.client):
        assert client.get(DELIVERIES).status_code == 401

    answer = admin_client.post(
        url,
        {"action": "activate", "_selected_action": [str(tenant.business.pk)]},
        follow=True,
    )

    assert shown(answer) == ["1 business activated: its API keys that are not revoked work again."]
    assert tenant.client.get(DELIVERIES).status_code == 200  # the refusal was not kept
    assert other_tenant.client.get(DELIVERIES).status_code == 401


def test_a_key_revoked_in_admin_is_refused_at_once(admin_client: Client, tenant: Tenant) -> None:
    assert tenant.client.get(DELIVERIES).status_code == 200
    key = BusinessAPIKey.objects.get(business=tenant.business)

    answer = admin_client.post(
        reverse("admin:businesses_businessapikey_changelist"),
        {"action": "revoke", "_selected_action": [str(key.pk)]},
        follow=True,
    )

    assert shown(answer) == ["1 API key revoked: it is refused from the next call."]
    assert tenant.client.get(DELIVERIES).status_code == 401


def test_a_key_revoked_on_its_page_is_refused_at_once(admin_client: Client, tenant: Tenant) -> None:
    assert tenant.client.get(DELIVERIES).status_code == 200
    key = BusinessAPIKey.objects.get(business=tenant.business)

    saved = admin_client.post(
        reverse("admin:businesses_businessapikey_change", args=[key.pk]),
        {"name": key.name, "revoked": "on"},
    )

    assert saved.status_code == 302
    assert BusinessAPIKey.objects.get(pk=key.pk).revoked
    assert tenant.client.get(DELIVERIES).status_code == 401


def test_a_business_created_in_admin_gets_a_key_shown_once_that_works(
    admin_client: Client,
) -> None:
    answer = admin_client.post(
        reverse("admin:businesses_business_add"),
        {
            "name": "Wingtip Toys",
            "email": "ops@wingtip.example",
            "is_active": "on",
            "members-TOTAL_FORMS": 0,
            "members-INITIAL_FORMS": 0,
            "api_keys-TOTAL_FORMS": 0,
            "api_keys-INITIAL_FORMS": 0,
        },
        follow=True,
    )

    (shown_key,) = [m for m in shown(answer) if m.startswith("The API key of Wingtip Toys is: ")]
    key = shown_key.split(" is: ")[1].split(". ")[0]
    business = Business.objects.get(name="Wingtip Toys")
    assert BusinessAPIKey.objects.get(business=business).hashed_key not in shown_key
    assert ApiClient(key).get(DELIVERIES).status_code == 200


def test_operators_attach_a_user_to_a_business_as_a_member(
    admin_client: Client, tenant: Tenant
) -> None:
    person = User.objects.create_user("bea", "bea@contoso.example", "a long passphrase")
    form = business_form(tenant.business)
    form.update({"members-TOTAL_FORMS": 1, "members-0-user": person.pk})

    saved = admin_client.post(
        reverse("admin:businesses_business_change", args=[tenant.business.pk]), form
    )

    assert saved.status_code == 302
    assert BusinessMember.objects.get(user=person).business == tenant.business
    people = admin_client.get(reverse("admin:auth_user_changelist"), {"kind": "member"})
    assert "bea" in people.content.decode() and "Contoso Pharmacy" in people.content.decode()
    customers = admin_client.get(reverse("admin:auth_user_changelist"), {"kind": "customer"})
    assert "bea" not in customers.content.decode()


def test_a_customer_deactivated_in_admin_is_signed_out_at_the_next_request(
    admin_client: Client,
) -> None:
    customer = User.objects.create_user("cy", "cy@example.com", "a long passphrase")
    browser = Client()
    browser.force_login(customer)
    assert get_user(browser).is_authenticated

    joined = timezone.localtime(customer.date_joined, zoneinfo.ZoneInfo(settings.SITE_TIME_ZONE))

    saved = admin_client.post(
        reverse("admin:auth_user_change", args=[customer.pk]),
        {
            "username": "cy",
            "email": "cy@example.com",
            "date_joined_0": f"{joined:%Y-%m-%d}",
            "date_joined_1": f"{joined:%H:%M:%S}",
            "business_membership-TOTAL_FORMS": 0,
            "business_membership-INITIAL_FORMS": 0,
        },  # is_active unticked
    )

    assert saved.status_code == 302
    assert not get_user(browser).is_authenticated


def test_businesses_and_keys_are_deactivated_or_revoked_not_deleted(
    admin_client: Client, tenant: Tenant
) -> None:
    key = BusinessAPIKey.objects.get(business=tenant.business)
    business_delete = reverse("admin:businesses_business_delete", args=[tenant.business.pk])
    key_delete = reverse("admin:businesses_businessapikey_delete", args=[key.pk])

    assert admin_client.get(business_delete).status_code == 403
    assert admin_client.get(key_delete).status_code == 403
    assert tenant.client.get(DELIVERIES).status_code == 200

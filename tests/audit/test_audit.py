"""The audit trail: every operator and business action that changes state, through its real door
(admin, the API with a key, the site), leaves one entry saying who, when, from where and what;
a refused action leaves none; admin shows the entries and never lets them be changed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from airspace.models import NoFlyZone
from airspace.services import zone_upsert
from audit.models import AuditEntry
from businesses.models import Business, BusinessAPIKey
from deliveries.models import Delivery
from drones.models import Drone, TelemetryKey
from tests.airspace.test_admin import drawn, form
from tests.airspace.zones import feature, square
from tests.conftest import Tenant, delivery_body, make_fleet
from tests.deliveries.test_admin import a_delivery, change_form, on_site
from tests.drones.fleet import base
from tests.drones.test_admin import flying_to_pickup
from tests.portal.test_site import member_of, schedule, signed_up
from webhooks import services as webhook_services
from webhooks.models import WebhookEndpoint, WebhookMessage

pytestmark = pytest.mark.django_db

ADDRESS = "203.0.113.7"  # where every request of these tests comes from (TEST-NET-3)
AT: dict[str, Any] = {"REMOTE_ADDR": ADDRESS}


@pytest.fixture(autouse=True)
def webhook_settings(settings: Any) -> Iterator[None]:
    """Endpoints on 127.0.0.1 over http, as in the other webhook tests."""
    settings.DEBUG = True
    settings.WEBHOOK_ALLOW_PRIVATE = True
    webhook_services.endpoints_cache_clear()
    yield
    webhook_services.endpoints_cache_clear()


def the_entry(action: str, **expected: Any) -> AuditEntry:
    """The one entry of `action`, checked against `expected` (and the test's address)."""
    entries = list(AuditEntry.objects.filter(action=action))
    assert len(entries) == 1, [(e.action, e.target_id) for e in AuditEntry.objects.all()]
    entry = entries[0]
    assert entry.address == ADDRESS
    assert timezone.now() - entry.at < timedelta(minutes=1)
    for name, value in expected.items():
        assert getattr(entry, name) == value, (name, getattr(entry, name), value)
    return entry


def by_operator(entry: AuditEntry) -> None:
    assert entry.actor_kind == "operator" and entry.actor == "admin"
    assert entry.actor_user == User.objects.get(username="admin")


def by_key(entry: AuditEntry, tenant: Tenant) -> None:
    prefix = tenant.key.partition(".")[0]
    assert entry.actor_kind == "business" and entry.business == tenant.business
    assert entry.api_key_prefix == prefix and entry.actor == f"Contoso Pharmacy (key {prefix})"
    assert entry.actor_user is None


def admin_action(client: Client, changelist: str, action: str, *objects: Any) -> None:
    response = client.post(
        reverse(changelist),
        {"action": action, "_selected_action": [str(o.pk) for o in objects]},
        **AT,
    )
    assert response.status_code == 302, response.content.decode()[:2000]


# --- operators in admin -----------------------------------------------------------------------


def test_grounding_releasing_and_sending_home_a_drone_are_recorded(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(2)
    _, flying, _ = flying_to_pickup(tenant)
    idle = Drone.objects.exclude(pk=flying.pk).get()
    changelist = "admin:drones_drone_changelist"

    admin_action(admin_client, changelist, "send_home", flying)
    admin_action(admin_client, changelist, "ground", idle)
    admin_action(admin_client, changelist, "return_to_service", idle)

    home = the_entry("drone.send_home", target_type="drones.drone", target_id=str(flying.pk))
    assert home.target_repr == flying.serial and home.changes == {"from": "flying"}
    by_operator(home)
    grounded = the_entry("drone.ground", target_id=str(idle.pk), changes={"from": "idle"})
    by_operator(grounded)
    the_entry("drone.release", target_id=str(idle.pk), changes={"from": "grounded"})


def test_a_refused_action_leaves_no_entry(admin_client: Client, tenant: Tenant) -> None:
    make_fleet(1)
    idle = Drone.objects.get()

    admin_action(admin_client, "admin:drones_drone_changelist", "send_home", idle)

    assert not AuditEntry.objects.exists()
    delivered = a_delivery(tenant)
    Delivery.objects.filter(pk=delivered.pk).update(status="delivered")
    assert tenant.client.post(f"/api/v1/deliveries/{delivered.pk}/cancel").status_code == 409
    assert not AuditEntry.objects.exists()


def test_cancelling_failing_retrying_and_a_new_deadline_are_recorded(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    cancelled, failed = a_delivery(tenant), a_delivery(tenant)
    changelist = "admin:deliveries_delivery_changelist"

    admin_action(admin_client, changelist, "cancel", cancelled)
    admin_action(admin_client, changelist, "mark_failed", failed)
    deadline = on_site(timezone.now() + timedelta(hours=3)).replace(second=0, microsecond=0)
    answer = admin_client.post(
        reverse("admin:deliveries_delivery_change", args=[failed.pk]),
        change_form(
            failed,
            deadline_0=deadline.strftime("%Y-%m-%d"),
            deadline_1=deadline.strftime("%H:%M:%S"),
        ),
        **AT,
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]
    admin_action(admin_client, changelist, "retry_failed", failed)

    by_operator(the_entry("delivery.cancel", target_id=str(cancelled.pk)))
    the_entry("delivery.fail", target_id=str(failed.pk), changes={"from": "requested"})
    moved = the_entry("delivery.deadline_set", target_type="deliveries.delivery")
    assert moved.changes["deadline"][0] is None
    assert moved.changes["deadline"][1].startswith(deadline.strftime("%Y-%m-%dT%H:%M"))
    the_entry("delivery.retry", target_id=str(failed.pk), changes={"from": "failed"})


def test_businesses_and_their_keys_made_deactivated_and_revoked_in_admin_are_recorded(
    admin_client: Client,
) -> None:
    answer = admin_client.post(
        reverse("admin:businesses_business_add"),
        {
            "name": "Fourth Coffee",
            "email": "ops@fourth.example",
            "is_active": "on",
            "members-TOTAL_FORMS": 0,
            "members-INITIAL_FORMS": 0,
            "api_keys-TOTAL_FORMS": 0,
            "api_keys-INITIAL_FORMS": 0,
        },
        **AT,
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]
    business = Business.objects.get(name="Fourth Coffee")
    first_key = BusinessAPIKey.objects.get(business=business)
    admin_action(admin_client, "admin:businesses_business_changelist", "deactivate", business)
    answer = admin_client.post(
        reverse("admin:businesses_businessapikey_add"),
        {"name": "second", "business": str(business.pk)},
        **AT,
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]
    second_key = BusinessAPIKey.objects.get(business=business, name="second")
    admin_action(admin_client, "admin:businesses_businessapikey_changelist", "revoke", first_key)

    created = the_entry("business.create", target_id=str(business.pk))
    assert created.changes["name"] == "Fourth Coffee"
    by_operator(created)
    the_entry("business.deactivate", target_id=str(business.pk), target_repr="Fourth Coffee")
    keys = AuditEntry.objects.filter(action="api_key.create").order_by("id")
    assert [(e.target_type, e.target_id) for e in keys] == [
        ("businesses.businessapikey", first_key.prefix),
        ("businesses.businessapikey", second_key.prefix),
    ]
    the_entry("api_key.revoke", target_id=first_key.prefix)
    # Never the key or its hash.
    assert not AuditEntry.objects.filter(changes__icontains=first_key.hashed_key).exists()


def test_telemetry_keys_made_and_revoked_in_admin_are_recorded(admin_client: Client) -> None:
    home = base()
    answer = admin_client.post(
        reverse("admin:drones_telemetrykey_add"),
        {"name": "north gateway", "bases": [str(home.pk)]},
        **AT,
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]
    record = TelemetryKey.objects.get(name="north gateway")
    answer = admin_client.post(
        reverse("admin:drones_telemetrykey_change", args=[record.pk]),
        {"name": "north gateway", "bases": [str(home.pk)], "revoked": "on"},
        **AT,
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]

    made = the_entry("telemetry_key.create", target_id=record.prefix, target_repr="north gateway")
    assert made.changes["bases"] == [str(home.pk)]
    by_operator(made)
    the_entry("telemetry_key.revoke", target_id=record.prefix, changes={"revoked": True})


def test_zones_drawn_edited_imported_and_deleted_in_admin_are_recorded(
    admin_client: Client,
) -> None:
    answer = admin_client.post(reverse("admin:airspace_noflyzone_add"), form(), **AT)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    zone = NoFlyZone.objects.get(name="Lumen Field")
    change = reverse("admin:airspace_noflyzone_change", args=[zone.pk])
    moved = form(geometry=drawn(square(-122.34, 47.59, 0.004)))
    assert admin_client.post(change, moved, **AT).status_code == 302
    collection = {"type": "FeatureCollection", "features": [feature("Climate Pledge Arena")]}
    answer = admin_client.post(
        reverse("admin:airspace_noflyzone_import"), {"text": json.dumps(collection)}, **AT
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]
    answer = admin_client.post(
        reverse("admin:airspace_noflyzone_delete", args=[zone.pk]), {"post": "yes"}, **AT
    )
    assert answer.status_code == 302

    created = the_entry("zone.create", target_id=str(zone.pk), target_repr="Lumen Field")
    assert created.changes["geometry"] == "changed" and created.changes["reason"] == "stadium"
    by_operator(created)
    the_entry("zone.update", target_id=str(zone.pk), changes={"geometry": "changed"})
    imported = the_entry("zone.import", target_type="airspace.noflyzone")
    assert imported.changes == {"created": 1, "updated": 0, "zones": ["Climate Pledge Arena"]}
    the_entry("zone.delete", target_id=str(zone.pk), target_repr="Lumen Field")


def endpoint_of(tenant: Tenant) -> WebhookEndpoint:
    return webhook_services.webhook_endpoint_create(
        business_id=tenant.business.pk,
        url="http://127.0.0.1:9/hooks",
        events=["delivery.assigned"],
    )


def message_of(endpoint: WebhookEndpoint) -> WebhookMessage:
    return WebhookMessage.objects.create(
        endpoint=endpoint,
        delivery_id=uuid.uuid4(),
        type="delivery.assigned",
        payload={},
        sequence=1,
        status=WebhookMessage.Status.FAILED,
        next_attempt_at=timezone.now(),
        retry_until=timezone.now(),
    )


def test_webhook_endpoints_edited_and_messages_resent_in_admin_are_recorded(
    admin_client: Client, tenant: Tenant
) -> None:
    endpoint = endpoint_of(tenant)
    message = message_of(endpoint)

    admin_action(admin_client, "admin:webhooks_webhookmessage_changelist", "resend", message)
    answer = admin_client.post(
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
        {"events": '["delivery.assigned", "delivery.failed"]', "description": "night shift"},
        **AT,
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]

    by_operator(the_entry("webhook_message.resend", target_id=message.pk))
    edited = the_entry("webhook_endpoint.update", target_id=str(endpoint.pk))
    assert edited.changes["description"] == "night shift"


# --- businesses through the API ---------------------------------------------------------------


def test_a_business_cancelling_and_rescheduling_through_the_api_is_recorded(
    tenant: Tenant,
) -> None:
    make_fleet(1)
    cancelled, moved = a_delivery(tenant), a_delivery(tenant)
    later = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)

    answer = tenant.client.patch_json(
        f"/api/v1/deliveries/{moved.pk}", {"pickup_time": later.isoformat()}, **AT
    )
    assert answer.status_code == 200, answer.json()
    answer = tenant.client.post(f"/api/v1/deliveries/{cancelled.pk}/cancel", **AT)
    assert answer.status_code == 200, answer.json()
    # A replay of the same answer (same Idempotency-Key) changes nothing and is not recorded.
    for _ in range(2):
        answer = tenant.client.post_json(
            f"/api/v1/deliveries/{moved.pk}/cancel", HTTP_IDEMPOTENCY_KEY="once", **AT
        )
        assert answer.status_code == 200, answer.json()

    entry = the_entry(
        "delivery.reschedule", target_type="deliveries.delivery", target_id=str(moved.pk)
    )
    assert entry.changes == {"pickup_time": later.isoformat().replace("+00:00", "Z")}
    by_key(entry, tenant)
    assert AuditEntry.objects.filter(action="delivery.cancel").count() == 2
    by_key(AuditEntry.objects.get(action="delivery.cancel", target_id=str(cancelled.pk)), tenant)


def test_a_business_managing_webhooks_through_the_api_is_recorded(tenant: Tenant) -> None:
    made = tenant.client.post_json(
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/hooks", "events": ["delivery.assigned"]},
        **AT,
    )
    assert made.status_code == 201, made.json()
    endpoint_id = made.json()["id"]
    path = f"/api/v1/webhooks/{endpoint_id}"
    assert tenant.client.patch_json(path, {"active": False}, **AT).status_code == 200
    assert tenant.client.post(f"{path}/rotate", **AT).status_code == 200
    message = message_of(WebhookEndpoint.objects.get(pk=endpoint_id))
    assert tenant.client.post(f"{path}/messages/{message.pk}/resend", **AT).status_code == 202
    assert tenant.client.delete(path, **AT).status_code == 204

    created = the_entry("webhook_endpoint.create", target_id=endpoint_id)
    assert created.changes["url"] == "http://127.0.0.1:9/hooks"
    by_key(created, tenant)
    the_entry("webhook_endpoint.update", target_id=endpoint_id, changes={"active": False})
    rotated = the_entry("webhook_endpoint.rotate", target_id=endpoint_id)
    assert rotated.changes == {}  # never a secret
    the_entry("webhook_message.resend", target_id=message.pk)
    the_entry("webhook_endpoint.delete", target_id=endpoint_id)
    assert not AuditEntry.objects.filter(changes__icontains="whsec_").exists()


def test_operators_changing_zones_through_the_staff_api_are_recorded(
    admin_client: Client,
) -> None:
    collection = {"type": "FeatureCollection", "features": [feature("Lumen Field")]}
    answer = admin_client.post("/api/v1/zones", collection, content_type="application/json", **AT)
    assert answer.status_code == 200, answer.json()
    zone = NoFlyZone.objects.get(name="Lumen Field")
    answer = admin_client.patch(
        f"/api/v1/zones/{zone.pk}",
        {"properties": {"active": False}},
        content_type="application/json",
        **AT,
    )
    assert answer.status_code == 200, answer.json()
    assert admin_client.delete(f"/api/v1/zones/{zone.pk}", **AT).status_code == 204

    imported = the_entry("zone.import", changes={"created": 1, "updated": 0, "zones": [zone.name]})
    by_operator(imported)
    the_entry("zone.update", target_id=str(zone.pk), changes={"active": False})
    the_entry("zone.delete", target_id=str(zone.pk))


# --- people on the site -----------------------------------------------------------------------


def test_a_customer_cancelling_on_the_site_is_recorded_and_scheduling_is_not(
    fleet: list[Drone],
) -> None:
    client = signed_up("ada@example.com")
    delivery = schedule(client)
    assert not AuditEntry.objects.exists()

    url = reverse("site-delivery-cancel", kwargs={"delivery_id": delivery.id})
    assert client.post(url, **AT).status_code == 302

    entry = the_entry("delivery.cancel", target_id=str(delivery.pk), actor="ada@example.com")
    assert entry.actor_kind == "user" and entry.business is None
    assert entry.actor_user == User.objects.get(username="ada@example.com")


def test_a_member_managing_keys_and_webhooks_on_the_site_is_recorded(tenant: Tenant) -> None:
    client = member_of(tenant)
    assert client.post(reverse("site-keys"), {"name": "shop"}, **AT).status_code == 200
    key = BusinessAPIKey.objects.get(business=tenant.business, name="shop")
    revoke = reverse("site-key-revoke", kwargs={"prefix": key.prefix})
    assert client.post(revoke, **AT).status_code == 302

    page = client.post(
        reverse("site-webhooks"),
        {"url": "http://127.0.0.1:9/hooks", "events": ["delivery.assigned"], "active": "on"},
        **AT,
    )
    assert page.status_code == 200, page.content.decode()[:3000]
    endpoint = WebhookEndpoint.objects.get(business=tenant.business)
    detail = reverse("site-webhook", kwargs={"endpoint_id": endpoint.pk})
    assert client.post(detail, {"action": "rotate"}, **AT).status_code == 200
    saved = client.post(
        detail,
        {"action": "save", "url": endpoint.url, "events": ["delivery.failed"], "active": "on"},
        **AT,
    )
    assert saved.status_code == 302, saved.content.decode()[:3000]
    message = message_of(endpoint)
    resend = reverse(
        "site-webhook-resend", kwargs={"endpoint_id": endpoint.pk, "message_id": message.pk}
    )
    assert client.post(resend, **AT).status_code == 302
    delete = reverse("site-webhook-delete", kwargs={"endpoint_id": endpoint.pk})
    assert client.post(delete, **AT).status_code == 302

    member = User.objects.get(username="ops@contoso.example")
    made = the_entry("api_key.create", target_id=key.prefix, target_repr="shop")
    assert (made.actor_kind, made.actor_user, made.business) == ("user", member, tenant.business)
    the_entry("api_key.revoke", target_id=key.prefix, actor="ops@contoso.example")
    the_entry("webhook_endpoint.create", target_id=str(endpoint.pk))
    the_entry("webhook_endpoint.rotate", target_id=str(endpoint.pk))
    edited = the_entry("webhook_endpoint.update", target_id=str(endpoint.pk))
    assert edited.changes["events"] == ["delivery.failed"]
    the_entry("webhook_message.resend", target_id=message.pk)
    the_entry("webhook_endpoint.delete", target_id=str(endpoint.pk))


# --- the address ------------------------------------------------------------------------------


def test_the_address_behind_the_ingress_is_believed_only_when_configured(
    tenant: Tenant, settings: Any
) -> None:
    make_fleet(1)
    first, second = a_delivery(tenant), a_delivery(tenant)
    # The client forged the first entry; the ingress appended the address it was reached from.
    proxied: dict[str, Any] = {
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.9",
    }

    settings.TRUSTED_PROXY_COUNT = 0
    tenant.client.post(f"/api/v1/deliveries/{first.pk}/cancel", **proxied)
    settings.TRUSTED_PROXY_COUNT = 1
    tenant.client.post(f"/api/v1/deliveries/{second.pk}/cancel", **proxied)

    addresses = dict(AuditEntry.objects.values_list("target_id", "address"))
    assert addresses == {str(first.pk): "10.0.0.5", str(second.pk): "203.0.113.9"}


# --- the trail in admin -----------------------------------------------------------------------


def test_operators_find_entries_by_kind_action_type_date_and_object_id(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    delivery = a_delivery(tenant)
    tenant.client.post(f"/api/v1/deliveries/{delivery.pk}/cancel", **AT)
    zone, _ = zone_upsert(name="Lumen Field", reason="stadium", geometry=square(-122.35, 47.6))
    admin_client.delete(f"/api/v1/zones/{zone.pk}", **AT)
    url = reverse("admin:audit_auditentry_changelist")

    page = admin_client.get(url).content.decode()
    assert str(delivery.pk) in page and str(zone.pk) in page and ADDRESS in page
    for query in (
        {"actor_kind__exact": "business"},
        {"action": "delivery.cancel"},
        {"target_type": "deliveries.delivery"},
        {"q": str(delivery.pk)},
        {"q": str(delivery.pk)[:8]},
    ):
        page = admin_client.get(url, query).content.decode()
        assert str(delivery.pk) in page and str(zone.pk) not in page, query
    # The admin shows and filters dates in the site's zone, which can be a day behind UTC's.
    today = on_site(the_entry("delivery.cancel").at).date()
    on_the_day = {"at__year": today.year, "at__month": today.month, "at__day": today.day}
    assert str(delivery.pk) in admin_client.get(url, on_the_day).content.decode()
    a_year_ago = {"at__year": today.year - 1}
    assert str(delivery.pk) not in admin_client.get(url, a_year_ago).content.decode()


def test_the_trail_cannot_be_added_to_changed_or_deleted_in_admin(
    admin_client: Client, tenant: Tenant
) -> None:
    make_fleet(1)
    delivery = a_delivery(tenant)
    tenant.client.post(f"/api/v1/deliveries/{delivery.pk}/cancel", **AT)
    entry = AuditEntry.objects.get()
    change = reverse("admin:audit_auditentry_change", args=[entry.pk])

    assert admin_client.get(reverse("admin:audit_auditentry_add")).status_code == 403
    page = admin_client.get(change)
    assert page.status_code == 200 and "delivery.cancel" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(change, {"action": "forged"}).status_code == 403
    delete = reverse("admin:audit_auditentry_delete", args=[entry.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    listing = admin_client.post(
        reverse("admin:audit_auditentry_changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert listing.status_code in (200, 302)
    entry.refresh_from_db()
    assert entry.action == "delivery.cancel"


def test_staff_without_the_view_permission_do_not_see_the_trail(
    client: Client, tenant: Tenant
) -> None:
    operator = User.objects.create_user(username="night", password="x-flying-9", is_staff=True)
    client.force_login(operator)
    url = reverse("admin:audit_auditentry_changelist")
    assert client.get(url).status_code == 403
    operator.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    assert client.get(url).status_code == 200


def test_scheduling_a_delivery_through_the_api_is_not_recorded(tenant: Tenant) -> None:
    make_fleet(1)
    answer = tenant.client.post_json("/api/v1/deliveries", delivery_body(), **AT)
    assert answer.status_code == 202
    assert not AuditEntry.objects.exists()

"""A business's webhook pages on the site, through Django's test client against the real database,
Redis and a real local receiver: what is made there works through the API, the same rules hold,
every attempt shows, and nothing of another business can be reached."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from businesses.models import BusinessMember
from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery
from devtools.localservices import free_port
from tests.conftest import Tenant
from tests.webhooks.conftest import Receiver
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

PASSWORD = "flying-parcel-9"
EVENTS = ["delivery.assigned", "delivery.delivered"]


@pytest.fixture(autouse=True)
def webhook_settings(settings: Any) -> Iterator[None]:
    """http:// to a receiver on 127.0.0.1, and retries without waiting; tests of the production
    rules turn these back."""
    settings.DEBUG = True
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0
    services.endpoints_cache_clear()
    yield
    services.endpoints_cache_clear()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(port=free_port())
    receiver.start()
    yield receiver
    receiver.stop()


def member_of(tenant: Tenant, email: str = "ops@contoso.example") -> Client:
    user = User.objects.create_user(username=email, email=email, password=PASSWORD)
    BusinessMember.objects.create(user=user, business=tenant.business)
    client = Client()
    client.force_login(user)
    return client


def add(client: Client, url: str, events: list[str] = EVENTS, **fields: Any) -> Any:
    return client.post(
        reverse("site-webhooks"), {"url": url, "events": events, "active": "on", **fields}
    )


def secret_on(page: Any) -> str:
    found = re.search(r'id="new-secret">([^<]+)<', page.content.decode())
    return found[1] if found else ""


def field_error(page: Any, field: str) -> str:
    found = re.search(rf'id="id_{field}_error">([^<]+)<', page.content.decode())
    return found[1] if found else ""


def detail_url(endpoint: WebhookEndpoint | str) -> str:
    pk = endpoint.pk if isinstance(endpoint, WebhookEndpoint) else endpoint
    return reverse("site-webhook", kwargs={"endpoint_id": pk})


def make_delivery(tenant: Tenant) -> Delivery:
    return Delivery.objects.create(
        business=tenant.business,
        pickup_lat=47.6097,
        pickup_lon=-122.3422,
        dropoff_lat=47.6205,
        dropoff_lon=-122.3493,
        package_size=Delivery.Size.SMALL,
        package_weight_kg=2.0,
    )


def test_an_endpoint_added_on_the_site_shows_its_secret_once_and_works_through_the_api(
    tenant: Tenant, receiver: Receiver
) -> None:
    member = member_of(tenant)
    page = add(member, receiver.url, description="order system")
    assert page.status_code == 200
    secret = secret_on(page)
    assert secret.startswith("whsec_")
    Webhook(secret)  # the library takes it
    endpoint = WebhookEndpoint.objects.get(business=tenant.business)
    assert endpoint.secret == secret
    assert (endpoint.url, endpoint.events, endpoint.active) == (receiver.url, EVENTS, True)

    listed = tenant.client.get("/api/v1/webhooks").json()["results"]
    assert [(e["id"], e["url"], e["events"]) for e in listed] == [
        (str(endpoint.pk), receiver.url, EVENTS)
    ]
    again = member.get(reverse("site-webhooks")).content.decode()
    assert secret not in again  # shown once
    assert receiver.url in again and "order system" in again
    assert detail_url(endpoint) in again
    assert secret not in member.get(detail_url(endpoint)).content.decode()

    # It is sent to, signed with that secret.
    receiver.secret = secret
    delivery_move(make_delivery(tenant), Delivery.Status.ASSIGNED)
    services.webhooks_dispatch(rounds=3)
    assert receiver.types() == ["delivery.assigned"]


def test_every_event_is_offered_and_the_nav_links_the_page_for_members_only(
    tenant: Tenant,
) -> None:
    member = member_of(tenant)
    page = member.get(reverse("site-webhooks")).content.decode()
    for event in services.EVENT_TYPES:
        assert f'value="{event}"' in page
    assert f'href="{reverse("site-webhooks")}" aria-current="page">Webhooks<' in page
    customer = Client()
    customer.force_login(User.objects.create_user(username="ada@example.com", password=PASSWORD))
    assert reverse("site-webhooks") not in customer.get(reverse("site-deliveries")).content.decode()


def test_refusals_sit_next_to_their_field_in_plain_words(settings: Any, tenant: Tenant) -> None:
    settings.DEBUG = False
    settings.WEBHOOK_ALLOW_PRIVATE = False
    member = member_of(tenant)

    plain_http = add(member, "http://example.com/hooks")
    assert plain_http.status_code == 422
    assert "starts with https://" in field_error(plain_http, "url")

    private = add(member, "https://127.0.0.1/hooks")
    assert private.status_code == 422
    assert "private, local or reserved network" in field_error(private, "url")

    garbage = add(member, "not an address")
    assert "Enter a whole web address" in field_error(garbage, "url")

    unknown = add(member, "https://example.com/hooks", events=["delivery.exploded"])
    assert unknown.status_code == 422
    assert "is not an event we send" in field_error(unknown, "events")
    assert field_error(unknown, "url") == ""

    none = add(member, "https://example.com/hooks", events=[])
    assert field_error(none, "events") == "Choose at least one event."

    assert not WebhookEndpoint.objects.exists()
    # What was typed stays in the form.
    assert 'value="https://127.0.0.1/hooks"' in private.content.decode()


def test_urls_and_descriptions_are_escaped(tenant: Tenant, receiver: Receiver) -> None:
    member = member_of(tenant)
    url = f"{receiver.url}?next=<script>alert(1)</script>"
    page = add(member, url, description="<b>orders</b>")
    assert secret_on(page)
    endpoint = WebhookEndpoint.objects.get()
    for html in (
        member.get(reverse("site-webhooks")).content.decode(),
        member.get(detail_url(endpoint)).content.decode(),
    ):
        assert "<script>alert(1)" not in html and "<b>orders" not in html
        assert "&lt;script&gt;alert(1)" in html


def test_a_member_changes_an_endpoint_and_a_refused_url_is_said_next_to_it(
    settings: Any, tenant: Tenant, receiver: Receiver
) -> None:
    member = member_of(tenant)
    add(member, receiver.url)
    endpoint = WebhookEndpoint.objects.get()
    saved = member.post(
        detail_url(endpoint),
        {"action": "save", "url": receiver.url, "events": ["delivery.failed"], "description": "x"},
    )
    assert saved.status_code == 302
    assert "The endpoint is saved." in member.get(saved["Location"]).content.decode()
    read = tenant.client.get(f"/api/v1/webhooks/{endpoint.pk}").json()
    assert (read["events"], read["active"], read["description"]) == (
        ["delivery.failed"],
        False,
        "x",
    )

    settings.DEBUG = False
    refused = member.post(
        detail_url(endpoint),
        {"action": "save", "url": "http://example.com/h", "events": EVENTS, "active": "on"},
    )
    assert refused.status_code == 422
    assert "starts with https://" in field_error(refused, "url")
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.events, endpoint.active) == (
        receiver.url,
        ["delivery.failed"],
        False,
    )


def test_re_activating_a_disabled_endpoint_says_its_waiting_events_are_sent(
    tenant: Tenant, receiver: Receiver
) -> None:
    member = member_of(tenant)
    add(member, receiver.url)
    now = timezone.now()
    WebhookEndpoint.objects.update(active=False, disabled_at=now, failing_since=now)
    endpoint = WebhookEndpoint.objects.get()
    assert "Disabled" in member.get(detail_url(endpoint)).content.decode()
    saved = member.post(
        detail_url(endpoint),
        {"action": "save", "url": receiver.url, "events": EVENTS, "active": "on"},
    )
    assert "its waiting events are sent now" in member.get(saved["Location"]).content.decode()
    endpoint.refresh_from_db()
    assert endpoint.active and endpoint.disabled_at is None


def test_rotating_shows_the_new_secret_once_and_says_the_old_one_signs_for_24_hours(
    tenant: Tenant, receiver: Receiver
) -> None:
    member = member_of(tenant)
    old = secret_on(add(member, receiver.url))
    endpoint = WebhookEndpoint.objects.get()
    page = member.post(detail_url(endpoint), {"action": "rotate"})
    new = secret_on(page)
    assert new.startswith("whsec_") and new != old
    endpoint.refresh_from_db()
    assert (endpoint.secret, endpoint.previous_secret) == (new, old)
    assert endpoint.previous_secret_until is not None
    assert endpoint.previous_secret_until > timezone.now() + timedelta(hours=23)
    assert "24 hours" in page.content.decode()
    assert new not in member.get(detail_url(endpoint)).content.decode()


def test_deleting_asks_first_then_the_endpoint_is_gone_for_the_api_too(
    tenant: Tenant, receiver: Receiver
) -> None:
    member = member_of(tenant)
    add(member, receiver.url)
    endpoint = WebhookEndpoint.objects.get()
    delete_url = reverse("site-webhook-delete", kwargs={"endpoint_id": endpoint.pk})
    assert delete_url not in member.get(detail_url(endpoint)).content.decode()
    asking = member.get(detail_url(endpoint) + "?delete").content.decode()
    assert "Delete this endpoint?" in asking and f'action="{delete_url}"' in asking

    assert member.get(delete_url).status_code == 405  # a link cannot delete it
    gone = member.post(delete_url)
    assert gone.status_code == 302 and gone["Location"] == reverse("site-webhooks")
    listing = member.get(gone["Location"]).content.decode()
    assert "is deleted: no more events are sent to it." in listing
    assert not WebhookEndpoint.objects.exists()
    assert tenant.client.get(f"/api/v1/webhooks/{endpoint.pk}").status_code == 404


def test_every_attempt_shows_with_its_time_status_latency_and_a_resend(
    tenant: Tenant, receiver: Receiver
) -> None:
    member = member_of(tenant)
    receiver.secret = secret_on(add(member, receiver.url))
    endpoint = WebhookEndpoint.objects.get()
    receiver.fail_next = 1
    delivery_move(make_delivery(tenant), Delivery.Status.ASSIGNED)
    services.webhooks_dispatch(rounds=5)
    attempts = list(WebhookAttempt.objects.order_by("at", "id"))
    assert [a.status_code for a in attempts] == [500, 200]

    page = member.get(detail_url(endpoint)).content.decode()
    table = page.split('id="webhook-attempts"', 1)[1]
    assert table.count("<tr>") == 3  # the head and two attempts
    assert "HTTP 500" in table and "HTTP 200" in table
    assert table.count("delivery.assigned</code>") == 2
    assert f"{attempts[1].latency_ms} ms" in table
    local = attempts[1].at.astimezone(zoneinfo.ZoneInfo(settings.SITE_TIME_ZONE))
    assert local.strftime("%H:%M:%S") in table
    # One Resend per event, not per attempt.
    message = WebhookMessage.objects.get()
    resend_url = reverse(
        "site-webhook-resend", kwargs={"endpoint_id": endpoint.pk, "message_id": message.pk}
    )
    assert table.count(f'action="{resend_url}"') == 1
    listing = member.get(reverse("site-webhooks")).content.decode()
    assert "HTTP 200" in listing.split('id="webhook-endpoints"', 1)[1]

    resent = member.post(resend_url)
    assert resent.status_code == 302
    assert resent["Location"].endswith(f"?resent={message.pk}#attempts")
    told = member.get(resent["Location"]).content.decode()
    assert "event is queued to be sent again" in told.split('id="attempts"', 1)[1]
    services.webhooks_dispatch(rounds=3)
    assert [r.webhook_id for r in receiver.received] == [message.pk] * 3
    assert WebhookAttempt.objects.count() == 3
    assert "event was sent again" in member.get(resent["Location"]).content.decode()


def test_an_attempt_that_got_no_answer_shows_the_error(tenant: Tenant) -> None:
    member = member_of(tenant)
    add(member, f"http://127.0.0.1:{free_port()}/nobody-listens")
    endpoint = WebhookEndpoint.objects.get()
    delivery_move(make_delivery(tenant), Delivery.Status.ASSIGNED)
    services.webhooks_dispatch(rounds=1)
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None and attempt.error
    page = member.get(detail_url(endpoint)).content.decode()
    table = page.split('id="webhook-attempts"', 1)[1]
    assert "No answer" in table
    assert "Nothing accepted the connection at that address and port." in table
    assert "Failing" in page


def test_another_business_endpoint_is_a_404_and_customers_have_no_webhook_pages(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver
) -> None:
    theirs = other_tenant.client.post_json(
        "/api/v1/webhooks", {"url": receiver.url, "events": EVENTS}
    ).json()["id"]
    member = member_of(tenant)
    assert theirs not in member.get(reverse("site-webhooks")).content.decode()
    kwargs = {"endpoint_id": theirs}
    assert member.get(detail_url(theirs)).status_code == 404
    assert member.post(detail_url(theirs), {"action": "rotate"}).status_code == 404
    saved = member.post(
        detail_url(theirs), {"action": "save", "url": receiver.url, "events": ["delivery.failed"]}
    )
    assert saved.status_code == 404
    assert member.post(reverse("site-webhook-delete", kwargs=kwargs)).status_code == 404
    delivery_move(make_delivery(other_tenant), Delivery.Status.ASSIGNED)
    message = WebhookMessage.objects.get()
    resend = reverse("site-webhook-resend", kwargs={**kwargs, "message_id": message.pk})
    assert member.post(resend).status_code == 404
    assert member.get(detail_url("not-a-uuid")).status_code == 404
    endpoint = WebhookEndpoint.objects.get(pk=theirs)
    assert endpoint.events == EVENTS and not endpoint.previous_secret

    # A message of theirs through an endpoint of ours is a 404 as well.
    add(member, receiver.url)
    ours = WebhookEndpoint.objects.get(business=tenant.business)
    crossed = reverse(
        "site-webhook-resend", kwargs={"endpoint_id": ours.pk, "message_id": message.pk}
    )
    assert member.post(crossed).status_code == 404

    customer = Client()
    customer.force_login(User.objects.create_user(username="ada@example.com", password=PASSWORD))
    assert customer.get(reverse("site-webhooks")).status_code == 404
    assert customer.get(detail_url(theirs)).status_code == 404
    anonymous = Client().get(reverse("site-webhooks"))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))


def test_webhook_forms_refuse_a_post_without_the_csrf_token(
    tenant: Tenant, receiver: Receiver
) -> None:
    member = member_of(tenant)
    add(member, receiver.url)
    endpoint = WebhookEndpoint.objects.get()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.get(username="ops@contoso.example"))
    delete_url = reverse("site-webhook-delete", kwargs={"endpoint_id": endpoint.pk})
    assert strict.post(reverse("site-webhooks"), {"url": receiver.url}).status_code == 403
    assert strict.post(detail_url(endpoint), {"action": "rotate"}).status_code == 403
    assert strict.post(delete_url).status_code == 403
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, previous_secret="").exists()


def test_webhook_pages_carry_no_inline_scripts(tenant: Tenant, receiver: Receiver) -> None:
    member = member_of(tenant)
    add(member, receiver.url)
    endpoint = WebhookEndpoint.objects.get()
    for url in (reverse("site-webhooks"), detail_url(endpoint), detail_url(endpoint) + "?delete"):
        answer = member.get(url)
        assert answer.status_code == 200
        script_src = re.search(r"script-src ([^;]+)", answer["Content-Security-Policy"])
        assert script_src is not None and "unsafe-inline" not in script_src[1]
        assert "<script" not in answer.content.decode()


def test_an_address_with_a_control_character_is_refused_as_the_api_does(tenant: Tenant) -> None:
    member = member_of(tenant)
    page = add(member, "https://example.com/a\x19b")
    assert "no spaces or control characters" in field_error(page, "url")
    assert not WebhookEndpoint.objects.exists()

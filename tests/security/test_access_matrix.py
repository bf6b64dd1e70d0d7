"""Who may reach every URL of the project, and that no tenant reaches another's things.

`MATRIX` has a row for every URL name (or, for admin's unnamed redirects, pattern) that Django
resolves, including admin's. The test walks the resolver, so a URL added without a row fails it.
Each row says which callers may reach it; the test calls it as every caller, with objects that
belong to that caller where the path names one (a fresh one per request, so that a revoke or a
delete in one call does not decide the next), and checks that exactly those callers get past
authentication: a refusal is 401, 403, 404 or a redirect to a sign-in page.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core import signing
from django.test import AsyncClient, Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from airspace.services import zone_upsert
from businesses.models import Business, BusinessMember
from businesses.services import api_key_create, business_create
from deliveries.models import Delivery
from drones.services import telemetry_key_create
from notifications.models import Subscription
from portal.customers import customers_business
from tests.conftest import ApiClient, make_fleet
from webhooks.models import WebhookEndpoint, WebhookMessage
from webhooks.services import secret_generate

pytestmark = pytest.mark.django_db

ANON, CUSTOMER, MEMBER, API_KEY, TELEMETRY, STAFF = (
    "anonymous", "customer", "member", "api key", "telemetry", "staff",
)  # fmt: skip
CALLERS = (ANON, CUSTOMER, MEMBER, API_KEY, TELEMETRY, STAFF)
EVERYONE = frozenset(CALLERS)
SITE_USERS = frozenset({CUSTOMER, MEMBER, STAFF})  # signed in on the site (staff are users too)


@dataclass(frozen=True)
class Row:
    may: frozenset[str]
    method: str = "get"
    why: str = ""


def row(*callers: str, method: str = "get", why: str = "") -> Row:
    return Row(frozenset(callers), method, why)


PUBLIC = Row(EVERYONE)
PUBLIC_POST = Row(EVERYONE, "post")

MATRIX: dict[str, Row] = {
    # The site: public pages, then the signed-in ones (customers and business members).
    "home": PUBLIC,
    "signup": PUBLIC,  # a signed-in user is sent on to the deliveries: reached, not refused
    "login": PUBLIC,
    "logout": PUBLIC_POST,
    "password_reset": PUBLIC,
    "password_reset_done": PUBLIC,
    "password_reset_confirm": row(*EVERYONE, why="the signed token is the credential"),
    "password_reset_complete": PUBLIC,
    "track-lookup": PUBLIC,
    "favicon": PUBLIC,  # a redirect to the static icon
    "site-deliveries": Row(SITE_USERS),
    "site-schedule": Row(SITE_USERS),
    "site-delivery": row(CUSTOMER, MEMBER, STAFF, why="each their own delivery"),
    "site-delivery-cancel": row(CUSTOMER, MEMBER, STAFF, method="post"),
    "site-keys": row(MEMBER),
    "site-key-revoke": row(MEMBER, method="post"),
    "site-webhooks": row(MEMBER),
    "site-webhook": row(MEMBER),
    "site-webhook-delete": row(MEMBER, method="post"),
    "site-webhook-resend": row(MEMBER, method="post"),
    # Probes: the kubelet calls them without credentials.
    "healthz-live": PUBLIC,
    "healthz-ready": PUBLIC,
    "healthz-dependencies": row(*EVERYONE, why="cluster only: 404 through the ingress"),
    # The business API, its schema and docs (public, like any API reference).
    "schema": PUBLIC,
    "docs": PUBLIC,
    "quote-create": row(API_KEY, method="post"),
    "delivery-list": row(API_KEY),
    "delivery-detail": row(API_KEY),
    "delivery-status": row(API_KEY),
    "delivery-cancel": row(API_KEY, method="post"),
    "webhook-list": row(API_KEY),
    "webhook-detail": row(API_KEY),
    "webhook-rotate": row(API_KEY, method="post"),
    "webhook-attempts": row(API_KEY),
    "webhook-message-resend": row(API_KEY, method="post"),
    # Drones and their gateways.
    "telemetry": row(TELEMETRY, method="post"),
    # Operators' zone API (the admin map uses it with the staff session).
    "zone-list": row(STAFF),
    "zone-detail": row(STAFF),
    # Recipients: the unguessable tracking token, the signed unsubscribe link.
    "track": PUBLIC,
    "track-notify": PUBLIC_POST,
    "notifications-unsubscribe": PUBLIC,
    # The live process's feeds (served over ASGI).
    "live-delivery": row(API_KEY),
    "live-track-status": PUBLIC,
    "live-track": PUBLIC,
    # Admin: its sign-in pages are public, everything else is staff only (ADMIN_RULE).
    "admin:login": PUBLIC,
    "admin:logout": PUBLIC_POST,
}

# Every other admin URL, named or not (new models' pages included): staff only.
ADMIN_RULE = Row(frozenset({STAFF}))


def walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str]]:
    """(route, key) of every URL pattern: the key is the (namespaced) name, else the route."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace or ""
            spaced = f"{namespace}:{inner}" if namespace and inner else namespace or inner
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), spaced)
        elif isinstance(pattern, URLPattern):
            route = prefix + str(pattern.pattern)
            name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
            yield route, name or route


def every_url() -> list[tuple[str, str]]:
    return list(walk(get_resolver().url_patterns))


def row_for(route: str, key: str) -> Row | None:
    if key in MATRIX:
        return MATRIX[key]
    if route.startswith("admin/"):
        return ADMIN_RULE
    return None


def test_every_url_has_a_row_in_the_matrix() -> None:
    missing = [key for route, key in every_url() if row_for(route, key) is None]
    assert not missing, (
        f"URLs without a row in tests/security/test_access_matrix.py MATRIX: {missing}. "
        "Add a row saying who may reach each (anonymous, customer, member, api key, "
        "telemetry, staff)."
    )
    stale = set(MATRIX) - {key for _, key in every_url()}
    assert not stale, f"rows for URLs that no longer exist: {stale}"


# --- the callers and their things -------------------------------------------------------------


class World:
    """Business A with a member and an API key, a customer, a drone with its own key, staff."""

    def __init__(self) -> None:
        users = get_user_model().objects
        self.business, self.key = business_create(name="Contoso", email="ops@contoso.example")
        self.member = users.create_user("m@contoso.example", "m@contoso.example", "pw-4711-x")
        BusinessMember.objects.create(user=self.member, business=self.business)
        self.customer = users.create_user("c@example.com", "c@example.com", "pw-4711-x")
        self.staff = users.create_superuser("op@fabrikam.example", "op@fabrikam.example", "pw")
        self.drone = make_fleet(1)[0]
        _, self.telemetry_key = telemetry_key_create(name="own", drone_id=self.drone.pk)
        self.zone, _ = zone_upsert(
            name="Stadium",
            reason="stadium",
            geometry={
                "type": "Polygon",
                "coordinates": [[[-122.33, 47.59], [-122.32, 47.59], [-122.32, 47.60],
                                 [-122.33, 47.59]]],
            },
        )  # fmt: skip

    def client(self, caller: str) -> Client:
        if caller == API_KEY:
            return ApiClient(self.key)
        if caller == TELEMETRY:
            return Client(HTTP_AUTHORIZATION=f"Telemetry-Key {self.telemetry_key}")
        client = Client()
        user = {CUSTOMER: self.customer, MEMBER: self.member, STAFF: self.staff}.get(caller)
        if user is not None:
            client.force_login(user)
        return client

    def delivery(self, caller: str) -> Delivery:
        """A new delivery of the caller's own: a customer's (or staff's) on the site, else the
        business's."""
        user = {CUSTOMER: self.customer, STAFF: self.staff}.get(caller)
        return new_delivery(customers_business() if user else self.business, customer=user)

    def endpoint(self, business: Business | None = None) -> WebhookEndpoint:
        return WebhookEndpoint.objects.create(
            business=business or self.business, url="https://hooks.example.com/in",
            events=[], secret=secret_generate(),
        )  # fmt: skip

    def path_for(self, route: str, caller: str) -> str:
        """The route with every parameter filled in with a new thing of the caller's."""
        values: dict[str, str] = {}
        delivery: Delivery | None = None

        def delivery_once() -> Delivery:
            nonlocal delivery
            delivery = delivery or self.delivery(caller)
            return delivery

        endpoint = self.endpoint() if "endpoint_id" in route else None
        fillers: dict[str, Callable[[], str]] = {
            "delivery_id": lambda: str(delivery_once().id),
            "token": lambda: delivery_once().tracking_token,
            "endpoint_id": lambda: str(endpoint and endpoint.id),
            "message_id": lambda: new_message(endpoint, delivery_once()).id,
            "prefix": lambda: api_key_create(business=self.business, name="spare")[0].prefix,
            "zone_id": lambda: str(self.zone.pk),
            "signed": lambda: signing.Signer(salt="notifications.unsubscribe").sign(
                Subscription.objects.create(
                    delivery=delivery_once(), email="r@example.com", source="notify_me"
                ).token
            ),
            "uidb64": lambda: "MQ",
            "object_id": lambda: "1",
            "app_label": lambda: "deliveries",
            "url": lambda: "nothing/",
        }
        path = route
        for match in re.finditer(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)", route):
            name = match.group(1) or match.group(2)
            if name not in values:
                if name == "token" and "uidb64" in route:
                    values[name] = "set-password"
                else:  # an unknown parameter gets "1": its allowed callers fail, saying so
                    values[name] = fillers.get(name, lambda: "1")()
            path = path.replace(match.group(0), values[name], 1)
        return "/" + path.lstrip("^").rstrip("$")


def new_delivery(business: Business, *, customer: User | None = None) -> Delivery:
    return Delivery.objects.create(
        business=business, customer=customer, pickup_lat=47.6097, pickup_lon=-122.3422,
        dropoff_lat=47.6205, dropoff_lon=-122.3493, package_size="small", package_weight_kg=1.0,
    )  # fmt: skip


def new_message(endpoint: WebhookEndpoint | None, delivery: Delivery) -> WebhookMessage:
    assert endpoint is not None
    now = timezone.now()
    return WebhookMessage.objects.create(
        endpoint=endpoint, delivery_id=delivery.id, type="delivery.requested", payload={},
        sequence=1, next_attempt_at=now, retry_until=now + timedelta(hours=1),
    )  # fmt: skip


SIGN_IN = {"/login", "/admin/login/"}


def refused(response: Any, route: str) -> bool:
    """401, 403, 404, or sent to sign in. (Admin sends every caller but staff to sign in; past
    that, a 404 is about the object (a made-up id, a package not in the store) and a 403 about
    what no operator may do there, such as adding a delivery.)"""
    if response.status_code in ((401,) if route.startswith("admin/") else (401, 403, 404)):
        return True
    location = urlsplit(response.get("Location", "")).path
    return response.status_code in (301, 302, 303) and location in SIGN_IN


def call(world: World, caller: str, route: str, row: Row) -> Any:
    path = world.path_for(route, caller)
    client = world.client(caller)
    if path.startswith("/live/"):
        # The feeds answer over ASGI only; their streams are not read, only their status.
        authorization = client.defaults.get("HTTP_AUTHORIZATION")
        async_client = AsyncClient()
        if client.cookies:
            async_client.cookies = client.cookies
        headers = {"Authorization": authorization} if authorization else {}
        return async_to_sync(async_client.get)(path, headers=headers)
    if row.method == "post":
        return client.post(path, {}, content_type="application/json")
    return client.get(path)


# A wrong key from this test's callers is expected, and is not what this test is about.
@override_settings(AUTH_FAILURE_RATE_LIMIT="100000/minute", API_RATE_LIMIT="100000/second")
def test_each_url_is_reached_by_exactly_the_callers_its_row_names() -> None:
    world = World()
    wrong: list[str] = []
    urls = every_url()
    for route, key in urls:
        table_row = row_for(route, key)
        assert table_row is not None  # test_every_url_has_a_row_in_the_matrix says which
        for caller in CALLERS:
            response = call(world, caller, route, table_row)
            if response.status_code >= 500:
                wrong.append(f"{key} as {caller}: {response.status_code}")
            elif refused(response, route) == (caller in table_row.may):
                verdict = "refused" if caller in table_row.may else "let in"
                wrong.append(f"{key} as {caller}: {verdict} ({response.status_code})")
    assert not wrong, "\n".join(wrong)
    assert len(urls) > 100  # the walk reached admin's URLs too


# --- across tenants ---------------------------------------------------------------------------


@override_settings(AUTH_FAILURE_RATE_LIMIT="100000/minute")
def test_business_b_can_neither_read_nor_change_business_a_s_things_by_api_or_site() -> None:
    world = World()
    other, other_key = business_create(name="Northwind", email="ops@northwind.example")
    other_member = get_user_model().objects.create_user("m@nw.example", "m@nw.example", "pw-x-4711")
    BusinessMember.objects.create(user=other_member, business=other)
    delivery = new_delivery(world.business)
    endpoint = world.endpoint()
    message = new_message(endpoint, delivery)
    spare, spare_key = api_key_create(business=world.business, name="warehouse")
    api, site = ApiClient(other_key), Client()
    site.force_login(other_member)
    d, e = f"/api/v1/deliveries/{delivery.id}", f"/api/v1/webhooks/{endpoint.id}"
    answers = {
        "GET delivery": api.get(d),
        "GET status": api.get(f"{d}/status"),
        "PATCH delivery": api.patch_json(
            d, {"deadline": (timezone.now() + timedelta(hours=3)).isoformat()}
        ),
        "POST cancel": api.post_json(f"{d}/cancel", {}),
        "GET webhook": api.get(e),
        "PATCH webhook": api.patch_json(e, {"active": False}),
        "DELETE webhook": api.delete(e),
        "POST rotate": api.post_json(f"{e}/rotate", {}),
        "GET attempts": api.get(f"{e}/attempts"),
        "POST resend": api.post_json(f"{e}/messages/{message.id}/resend", {}),
        "site webhook": site.get(f"/business/webhooks/{endpoint.id}"),
        "site webhook edit": site.post(f"/business/webhooks/{endpoint.id}", {"url": "x"}),
        "site webhook delete": site.post(f"/business/webhooks/{endpoint.id}/delete"),
        "site resend": site.post(f"/business/webhooks/{endpoint.id}/messages/{message.id}/resend"),
        "site key revoke": site.post(f"/business/keys/{spare.prefix}/revoke"),
        "site delivery": site.get(f"/deliveries/{delivery.id}"),
        "site cancel": site.post(f"/deliveries/{delivery.id}/cancel"),
        "live feed": async_to_sync(AsyncClient().get)(
            f"/live/deliveries/{delivery.id}", headers={"Authorization": f"Api-Key {other_key}"}
        ),
    }
    assert {what: r.status_code for what, r in answers.items() if r.status_code != 404} == {}
    # Nor do A's things show up in B's lists.
    assert api.get("/api/v1/deliveries").json()["results"] == []
    assert api.get("/api/v1/webhooks").json()["results"] == []
    assert str(endpoint.id) not in site.get("/business/webhooks").content.decode()
    assert spare.prefix not in site.get("/business/keys").content.decode()
    # And nothing changed.
    delivery.refresh_from_db()
    endpoint.refresh_from_db()
    assert delivery.status == Delivery.Status.REQUESTED
    assert endpoint.active and WebhookMessage.objects.get(pk=message.pk).attempts == 0
    assert ApiClient(spare_key).get("/api/v1/deliveries").status_code == 200


def test_a_customer_can_neither_read_nor_cancel_another_customer_s_delivery() -> None:
    world = World()
    theirs = world.delivery(CUSTOMER)
    other = get_user_model().objects.create_user("o@example.com", "o@example.com", "pw-x-4711")
    client = Client()
    client.force_login(other)
    assert client.get(f"/deliveries/{theirs.id}").status_code == 404
    assert client.post(f"/deliveries/{theirs.id}/cancel").status_code == 404
    assert str(theirs.id) not in client.get("/deliveries/").content.decode()
    theirs.refresh_from_db()
    assert theirs.status == Delivery.Status.REQUESTED


def test_a_drone_credential_cannot_report_for_another_drone() -> None:
    world = World()
    other = make_fleet(1)[0]
    now = timezone.now().isoformat().replace("+00:00", "Z")
    report = {
        "drone": other.serial, "time": now, "lat": other.lat, "lon": other.lon, "alt_m": 0.0,
        "ground_speed_mps": 0.0, "heading": 0.0, "battery_pct": 50.0,
    }  # fmt: skip
    response = world.client(TELEMETRY).post(
        "/api/v1/telemetry", {"reports": [report]}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["refused"] == 1
    other.refresh_from_db()
    assert other.last_report_at is None and other.battery_pct != 50.0

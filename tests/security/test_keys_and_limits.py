"""Keys of a made-up shape refused before any lookup, failed authentications limited per client
address, per-business and per-customer delivery limits, pagination caps."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_redis import get_redis_connection

from businesses.services import api_key_cache_key
from deliveries.models import Delivery
from portal.customers import customers_business
from tests.conftest import ApiClient, Tenant, delivery_body

pytestmark = pytest.mark.django_db

DELIVERIES = "/api/v1/deliveries"
TELEMETRY = "/api/v1/telemetry"


def address() -> str:
    """A client address of this test alone (the failure counters live in the shared Redis)."""
    return f"2001:db8::{random.getrandbits(16):x}:{random.getrandbits(16):x}"


def redis_keys() -> set[bytes]:
    return set(get_redis_connection("default").keys("*"))


# --- the issued format, checked before any lookup ---------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "path"), [("Api-Key", DELIVERIES), ("Telemetry-Key", TELEMETRY)]
)
@pytest.mark.parametrize(
    "key",
    [
        "A" * 7000,  # the made-up key
        "Abcd1234." + "x" * 7000,
        "Abcd1234.short",
        "Abcd12345." + "x" * 32,  # a prefix one too long
        "Abcd123!." + "x" * 32,  # not of the letters and digits issued
        "Abcd1234." + "x" * 31 + "\x00",
    ],
)
def test_a_key_not_of_the_issued_format_is_401_before_any_cache_or_database_lookup(
    keyword: str, path: str, key: str
) -> None:
    before = redis_keys()
    with CaptureQueriesContext(connection) as queries:
        response = Client(HTTP_AUTHORIZATION=f"{keyword} {key}", REMOTE_ADDR=address()).post(
            path, {}, content_type="application/json"
        )
    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "malformed API key" if keyword == "Api-Key" else "malformed telemetry key"
    )
    assert list(queries) == []
    # Nothing of the key reached Redis: neither a cached lookup nor a per-key counter. (Only
    # the address's failure counter was written.)
    added = redis_keys() - before
    assert added and all(name.startswith(b"failures:auth:") for name in added), added


def test_an_issued_key_still_works(tenant: Tenant) -> None:
    assert tenant.client.get(DELIVERIES).status_code == 200
    assert get_redis_connection("default").exists(api_key_cache_key(tenant.key.split(".")[0]))


# --- failed authentications per client address ------------------------------------------------


@pytest.mark.usefixtures("whole_rate_window")
@override_settings(AUTH_FAILURE_RATE_LIMIT="3/minute")
def test_failed_authentications_are_limited_per_address_with_retry_after(tenant: Tenant) -> None:
    attacker = Client(REMOTE_ADDR=address())
    prefix = tenant.key.split(".")[0]
    wrong = [f"Api-Key {prefix}.{'x' * 32}", "Api-Key made-up", f"Api-Key {'y' * 8}.{'z' * 32}"]
    codes = [attacker.get(DELIVERIES, HTTP_AUTHORIZATION=h).status_code for h in wrong]
    assert codes == [401, 401, 401]
    refused = attacker.get(DELIVERIES, HTTP_AUTHORIZATION=wrong[0])
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "failed authentications" in refused.json()["error"]["message"]
    # Even the right key is refused from that address until the window ends...
    assert attacker.get(DELIVERIES, HTTP_AUTHORIZATION=f"Api-Key {tenant.key}").status_code == 429
    # ...and telemetry keys count in the same window.
    assert attacker.post(TELEMETRY, {}, HTTP_AUTHORIZATION="Telemetry-Key nope").status_code == 429
    # Another address is not affected.
    assert ApiClient(tenant.key, REMOTE_ADDR=address()).get(DELIVERIES).status_code == 200


@pytest.mark.usefixtures("whole_rate_window")
@override_settings(AUTH_FAILURE_RATE_LIMIT="2/minute")
def test_wrong_telemetry_keys_are_limited_per_address(db: None) -> None:
    drone_client = Client(REMOTE_ADDR=address())
    wrong = f"Telemetry-Key {'a' * 8}.{'b' * 32}"
    codes = [
        drone_client.post(TELEMETRY, {}, content_type="application/json",
                          HTTP_AUTHORIZATION=wrong).status_code
        for _ in range(3)
    ]  # fmt: skip
    assert codes == [401, 401, 429]


@pytest.mark.usefixtures("whole_rate_window")
@override_settings(AUTH_FAILURE_RATE_LIMIT="2/minute")
def test_successful_authentications_are_not_counted(tenant: Tenant) -> None:
    client = ApiClient(tenant.key, REMOTE_ADDR=address())
    assert {client.get(DELIVERIES).status_code for _ in range(5)} == {200}


@pytest.mark.usefixtures("whole_rate_window")
@override_settings(AUTH_FAILURE_RATE_LIMIT="2/minute", TRUSTED_PROXY_COUNT=1)
def test_behind_the_ingress_the_address_is_the_one_it_appended(tenant: Tenant) -> None:
    ingress = address()
    # The client's own X-Forwarded-For entries are whatever it likes; the ingress's is last.
    first = Client(REMOTE_ADDR=ingress, HTTP_X_FORWARDED_FOR=f"10.0.0.1, {address()}")
    second = Client(REMOTE_ADDR=ingress, HTTP_X_FORWARDED_FOR=f"10.0.0.1, {address()}")
    bad: dict[str, Any] = {"HTTP_AUTHORIZATION": "Api-Key made-up"}
    assert [first.get(DELIVERIES, **bad).status_code for _ in range(3)] == [401, 401, 429]
    # Another client behind the same ingress is not refused for the first one's failures.
    assert second.get(DELIVERIES, **bad).status_code == 401


@pytest.mark.usefixtures("whole_rate_window")
@override_settings(AUTH_FAILURE_RATE_LIMIT="2/minute", TRUSTED_PROXY_COUNT=0)
def test_without_a_trusted_proxy_x_forwarded_for_is_not_believed(tenant: Tenant) -> None:
    same = address()
    bad: dict[str, Any] = {"HTTP_AUTHORIZATION": "Api-Key made-up", "REMOTE_ADDR": same}
    codes = [
        Client(HTTP_X_FORWARDED_FOR=address()).get(DELIVERIES, **bad).status_code for _ in range(3)
    ]
    assert codes == [401, 401, 429]


# --- deliveries a business or a customer may hold ---------------------------------------------


@override_settings(BUSINESS_MAX_ACTIVE_DELIVERIES=2)
def test_a_business_past_its_active_deliveries_gets_a_clear_429(
    tenant: Tenant, other_tenant: Tenant, fleet: Any
) -> None:
    codes = [tenant.client.post_json(DELIVERIES, delivery_body()).status_code for _ in range(2)]
    assert codes == [202, 202]
    refused = tenant.client.post_json(DELIVERIES, delivery_body())
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "limit_reached"
    assert "2 deliveries under way" in error["message"]
    # Another business is not limited by this one's deliveries.
    assert other_tenant.client.post_json(DELIVERIES, delivery_body()).status_code == 202
    # A finished delivery frees its place.
    Delivery.objects.filter(business=tenant.business).update(status=Delivery.Status.DELIVERED)
    assert tenant.client.post_json(DELIVERIES, delivery_body()).status_code == 202


@override_settings(BUSINESS_MAX_SCHEDULED_DELIVERIES=2, BUSINESS_MAX_ACTIVE_DELIVERIES=1)
def test_deliveries_booked_ahead_have_their_own_limit(tenant: Tenant, fleet: Any) -> None:
    later = (timezone.now() + timedelta(days=2)).isoformat()
    ahead = [
        tenant.client.post_json(DELIVERIES, delivery_body(pickup_time=later)).status_code
        for _ in range(3)
    ]
    assert ahead == [202, 202, 429]
    refused = tenant.client.post_json(DELIVERIES, delivery_body(pickup_time=later))
    assert "2 deliveries booked ahead" in refused.json()["error"]["message"]
    # Booked-ahead deliveries hold no drone and do not count as under way.
    assert tenant.client.post_json(DELIVERIES, delivery_body()).status_code == 202


@override_settings(CUSTOMER_MAX_ACTIVE_DELIVERIES=1, BUSINESS_MAX_ACTIVE_DELIVERIES=1)
def test_on_the_site_each_customer_has_a_limit_of_their_own(fleet: Any) -> None:
    from deliveries.services import DeliveryRequest, Place, delivery_create
    from drones.geo import Point
    from portal.errors import LimitReached

    business = customers_business()
    users = get_user_model().objects
    ada = users.create_user("ada@example.com", "ada@example.com", "pw-ada-123456")
    bob = users.create_user("bob@example.com", "bob@example.com", "pw-bob-123456")
    request = DeliveryRequest(
        pickup=Place(Point(47.6097, -122.3422)),
        dropoff=Place(Point(47.6205, -122.3493)),
        package_size="small",
        package_weight_kg=1.0,
    )
    delivery_create(business_id=business.id, request=request, customer_id=ada.pk)
    # The customers' business serves both: Bob is not refused for Ada's delivery.
    delivery_create(business_id=business.id, request=request, customer_id=bob.pk)
    with pytest.raises(LimitReached, match="this customer already has 1"):
        delivery_create(business_id=business.id, request=request, customer_id=ada.pk)


# --- pagination -------------------------------------------------------------------------------


def test_page_size_is_capped(tenant: Tenant, fleet: Any) -> None:
    response = tenant.client.get(DELIVERIES, {"page_size": 10**9})
    assert response.status_code == 200
    for value in ("-1", "0", "x", "9" * 5000):
        assert tenant.client.get(DELIVERIES, {"page_size": value}).status_code in (200, 404)
        assert tenant.client.get(DELIVERIES, {"cursor": value}).status_code == 404


def test_pagination_caps_at_200(tenant: Tenant, fleet: Any) -> None:
    Delivery.objects.bulk_create(
        Delivery(
            business=tenant.business, pickup_lat=47.6, pickup_lon=-122.3, dropoff_lat=47.61,
            dropoff_lon=-122.31, package_size="small", package_weight_kg=1.0,
            status=Delivery.Status.DELIVERED, tracking_token=f"t-{i}-{random.getrandbits(64)}",
        )
        for i in range(205)
    )  # fmt: skip
    page = tenant.client.get(DELIVERIES, {"page_size": 10**9}).json()
    assert len(page["results"]) == 200
    assert page["next"]


@pytest.mark.parametrize("page", ["2", "99999", "9" * 5000, "0", "-3", "last-but-one"])
def test_a_page_number_is_refused_saying_to_follow_the_links(tenant: Tenant, page: str) -> None:
    """Lists page by cursor (README: no count, no ?page=N): a page number is a 400 that says
    what to do instead, never a 500 nor a silently ignored parameter."""
    response = tenant.client.get(DELIVERIES, {"page": page})
    assert response.status_code == 400
    assert "next" in json.dumps(response.json())


@pytest.mark.parametrize("cursor", ["2", "x" * 5000, "bm90IGEgY3Vyc29y", "%00", "-3"])
def test_a_cursor_not_handed_out_is_a_clean_404(tenant: Tenant, cursor: str) -> None:
    response = tenant.client.get(DELIVERIES, {"cursor": cursor})
    assert response.status_code == 404
    assert response.json()["error"]["message"]


def test_the_webhook_lists_are_paginated_alike(tenant: Tenant) -> None:
    from webhooks.models import WebhookEndpoint
    from webhooks.services import secret_generate

    endpoint = WebhookEndpoint.objects.create(
        business=tenant.business, url="https://hooks.example.com/in", events=[],
        secret=secret_generate(),
    )  # fmt: skip
    for path in ("/api/v1/webhooks", f"/api/v1/webhooks/{endpoint.id}/attempts"):
        assert tenant.client.get(path, {"page_size": 10**9}).status_code == 200, path
        assert tenant.client.get(path, {"page": "99"}).status_code == 400, path
        unknown = tenant.client.get(path, {"cursor": "bm90IGEgY3Vyc29y"})
        assert unknown.status_code == 404, path
        assert unknown.json()["error"]["message"]

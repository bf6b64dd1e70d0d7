"""The business API through Django's full HTTP stack (no worker: the workflow has its own tests)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from businesses.services import api_key_revoke
from deliveries import services
from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery, DeliveryEvent, IdempotencyRecord, OutboxMessage
from drones.models import Drone
from tests.conftest import ApiClient, Tenant, delivery_body, make_fleet

pytestmark = pytest.mark.django_db

DELIVERIES = "/api/v1/deliveries"


def create(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    response = tenant.client.post_json(DELIVERIES, delivery_body(**overrides))
    assert response.status_code == 202, response.json()
    return response.json()


def assign(delivery_id: str) -> Delivery:
    outcome = services.delivery_assign(delivery_id=uuid.UUID(delivery_id))
    assert outcome.result == "assigned", outcome
    return Delivery.objects.get(pk=delivery_id)


def advance(
    delivery_id: uuid.UUID, *stages: str, position: tuple[float, float, float] | None = None
) -> None:
    """Move the delivery through `stages` as telemetry would, each through the lifecycle."""
    for stage in stages:
        delivery_move(Delivery.objects.get(pk=delivery_id), stage, position=position)


# --- authentication and rate limits -----------------------------------------------------------


def test_a_request_without_a_key_is_401(fleet: Any) -> None:
    response = Client().post(DELIVERIES, delivery_body(), content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


def test_a_wrong_or_malformed_key_is_401(tenant: Tenant) -> None:
    prefix = tenant.key.split(".")[0]
    for header in (f"Api-Key {prefix}.wrongsecret", "Api-Key nodot", f"Bearer {tenant.key}"):
        response = Client(HTTP_AUTHORIZATION=header).get(DELIVERIES)
        assert response.status_code == 401, header
        assert response.json()["error"]["message"]


def test_a_revoked_key_is_401_at_once(tenant: Tenant) -> None:
    assert tenant.client.get(DELIVERIES).status_code == 200  # the key is now cached
    api_key_revoke(business=tenant.business, prefix=tenant.key.split(".")[0])
    assert tenant.client.get(DELIVERIES).status_code == 401


def test_a_business_may_hold_several_keys_each_working(tenant: Tenant) -> None:
    from businesses.services import api_key_create

    api_key, key = api_key_create(business=tenant.business, name="warehouse")
    assert key.startswith(api_key.prefix + ".")
    assert api_key.hashed_key != key and key not in api_key.hashed_key
    assert ApiClient(key).get(DELIVERIES).status_code == 200


@pytest.mark.usefixtures("whole_rate_window")
def test_too_many_requests_are_429_with_retry_after(tenant: Tenant) -> None:
    with override_settings(API_RATE_LIMIT="3/minute"):
        codes = [tenant.client.get(DELIVERIES).status_code for _ in range(5)]
        response = tenant.client.get(DELIVERIES)
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429]
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60


@pytest.mark.usefixtures("whole_rate_window")
def test_the_rate_limit_is_per_key(tenant: Tenant, other_tenant: Tenant) -> None:
    with override_settings(API_RATE_LIMIT="2/minute"):
        for _ in range(3):
            tenant.client.get(DELIVERIES)
        assert tenant.client.get(DELIVERIES).status_code == 429
        assert other_tenant.client.get(DELIVERIES).status_code == 200


@pytest.mark.usefixtures("whole_rate_window")
def test_the_rate_windows_counter_expires_with_its_window(tenant: Tenant) -> None:
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    with override_settings(API_RATE_LIMIT="5/minute"):
        before = set(redis.scan_iter("throttle:*"))
        for _ in range(2):
            assert tenant.client.get(DELIVERIES).status_code == 200
        (counter,) = set(redis.scan_iter("throttle:*")) - before
    assert int(redis.get(counter)) == 2
    assert 0 < redis.ttl(counter) <= 61


@pytest.mark.usefixtures("whole_rate_window")
def test_wrong_secrets_under_a_keys_prefix_do_not_use_up_its_limit(tenant: Tenant) -> None:
    prefix = tenant.key.split(".")[0]
    with override_settings(API_RATE_LIMIT="2/minute"):
        intruder = ApiClient(f"{prefix}.not-the-secret")
        assert [intruder.get(DELIVERIES).status_code for _ in range(4)] == [401] * 4
        codes = [tenant.client.get(DELIVERIES).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


# --- creating deliveries ----------------------------------------------------------------------


def test_a_delivery_is_accepted_with_202_location_and_tracking_url(
    tenant: Tenant, fleet: Any
) -> None:
    response = tenant.client.post_json(DELIVERIES, delivery_body())
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "requested"
    assert response["Location"] == f"/api/v1/deliveries/{body['id']}"
    assert "/track/" in body["tracking_url"]
    assert body["price"]["currency"] == "USD" and float(body["price"]["amount"]) > 0
    delivery = Delivery.objects.get(pk=body["id"])
    assert delivery.business_id == tenant.business.id
    assert list(delivery.events.values_list("status", flat=True)) == ["requested"]
    # Published at once: nothing waits in the outbox for the relay.
    assert not OutboxMessage.objects.exists()


def test_the_tracking_link_shows_the_status_without_login(tenant: Tenant, fleet: Any) -> None:
    body = create(tenant)
    path = body["tracking_url"].split("127.0.0.1:8000")[-1]
    response = Client().get(path)
    assert response.status_code == 200
    assert b'data-status="requested"' in response.content
    assert Client().get("/track/not-a-real-token").status_code == 404


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"pickup", "dropoff", "package"}),
        ({**delivery_body(), "pickup": {"lat": "north", "lon": 1}}, {"pickup"}),
        ({**delivery_body(), "package": {"size": "huge", "weight_kg": 1}}, {"package"}),
        ({**delivery_body(), "package": {"size": "small"}}, {"package"}),
        ({**delivery_body(), "pickup_time": "tomorrow"}, {"pickup_time"}),
        ({**delivery_body(), "pickup_time": "2030-01-01T10:00:00"}, {"pickup_time"}),
        ({**delivery_body(), "confirmation_required": "retina"}, {"confirmation_required"}),
        ({**delivery_body(), "recipient": {"name": "A", "email": "not-an-email"}}, {"recipient"}),
        ({**delivery_body(), "colour": "blue"}, {"colour"}),
        ({**delivery_body(), "quote_id": "nope"}, {"quote_id"}),
    ],
)
def test_malformed_input_is_400_naming_each_bad_field(
    tenant: Tenant, fleet: Any, body: dict[str, Any], fields: set[str]
) -> None:
    response = tenant.client.post_json(DELIVERIES, body)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) == fields
    assert not Delivery.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'"a string"', b"null", b"42", b'{"pickup": null}', b"\xff\xfe"],
)
def test_garbage_bodies_are_400_never_500(tenant: Tenant, raw: bytes) -> None:
    response = tenant.client.post(DELIVERIES, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_a_non_json_content_type_is_415(tenant: Tenant) -> None:
    response = tenant.client.post(DELIVERIES, data="a=b", content_type="text/plain")
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"pickup": {"lat": 95, "lon": -122.34}}, "invalid_coordinates", "latitude 95"),
        ({"dropoff": {"lat": 47.62, "lon": -190}}, "invalid_coordinates", "longitude -190"),
        ({"package": {"size": "large", "weight_kg": 80}}, "no_drone_can_do_it", "kg"),
        ({"package": {"size": "small", "weight_kg": -1}}, "unprocessable", "more than 0"),
        ({"dropoff": {"lat": 47.6097, "lon": -122.3422}}, "same_place", "same place"),
        ({"dropoff": {"lat": 48.9, "lon": -122.3}}, "no_drone_can_do_it", "at most"),
        ({"pickup_time": "2020-01-01T10:00:00Z"}, "pickup_time_in_past", "past"),
        ({"deadline": "2020-01-01T10:00:00Z"}, "deadline_in_past", "past"),
    ],
)
def test_well_formed_but_impossible_input_is_422_saying_why(
    tenant: Tenant, fleet: Any, overrides: dict[str, Any], code: str, words: str
) -> None:
    response = tenant.client.post_json(DELIVERIES, delivery_body(**overrides))
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert not Delivery.objects.exists()


def test_a_deadline_before_the_pickup_time_is_422(tenant: Tenant, fleet: Any) -> None:
    soon = timezone.now() + timedelta(hours=2)
    response = tenant.client.post_json(
        DELIVERIES,
        delivery_body(
            pickup_time=soon.isoformat(), deadline=(soon - timedelta(hours=1)).isoformat()
        ),
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "deadline_before_pickup"


# --- idempotency ------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_replay_the_first_answer(
    tenant: Tenant, fleet: Any
) -> None:
    first = tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="order-1")
    again = tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="order-1")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true"
    assert Delivery.objects.count() == 1
    assert DeliveryEvent.objects.count() == 1


def test_the_same_idempotency_key_with_another_body_is_409(tenant: Tenant, fleet: Any) -> None:
    tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="order-2")
    other = delivery_body(package={"size": "medium", "weight_kg": 3.0})
    response = tenant.client.post_json(DELIVERIES, other, HTTP_IDEMPOTENCY_KEY="order-2")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Delivery.objects.count() == 1


def test_idempotency_keys_belong_to_one_business(
    tenant: Tenant, other_tenant: Tenant, fleet: Any
) -> None:
    a = tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="same")
    b = other_tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="same")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_a_refused_request_stores_no_idempotency_record(tenant: Tenant, fleet: Any) -> None:
    bad = delivery_body(pickup={"lat": 95, "lon": 0})
    assert tenant.client.post_json(DELIVERIES, bad, HTTP_IDEMPOTENCY_KEY="k").status_code == 422
    assert not IdempotencyRecord.objects.exists()
    # The corrected request may use the same key: the refused one left nothing behind.
    good = tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="k")
    assert good.status_code == 202


def test_idempotency_keys_expire_after_24_hours(tenant: Tenant, fleet: Any) -> None:
    tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    response = tenant.client.post_json(DELIVERIES, delivery_body(), HTTP_IDEMPOTENCY_KEY="old")
    assert response.status_code == 202
    assert "Idempotent-Replayed" not in response
    assert Delivery.objects.count() == 2


# --- reading ----------------------------------------------------------------------------------


def test_the_list_is_paginated_and_filterable_by_status(tenant: Tenant, fleet: Any) -> None:
    ids = [create(tenant)["id"] for _ in range(3)]
    assign(ids[0])
    listing = tenant.client.get(DELIVERIES, {"page_size": 2}).json()
    assert set(listing) == {"next", "previous", "results"}  # no count: nothing counts the rows
    assert [d["id"] for d in listing["results"]] == ids[:0:-1]  # newest first
    assert listing["previous"] is None
    rest = tenant.client.get(listing["next"]).json()
    assert [d["id"] for d in rest["results"]] == ids[:1]
    assert rest["next"] is None
    assert [d["id"] for d in tenant.client.get(rest["previous"]).json()["results"]] == ids[:0:-1]
    assigned = tenant.client.get(DELIVERIES, {"status": "assigned"}).json()
    assert [d["id"] for d in assigned["results"]] == [ids[0]]
    assert tenant.client.get(DELIVERIES, {"status": "lost"}).status_code == 400


def test_pages_neither_skip_nor_repeat_deliveries_made_at_the_same_moment(
    tenant: Tenant, fleet: Any
) -> None:
    ids = [create(tenant)["id"] for _ in range(7)]
    same = timezone.now() - timedelta(minutes=5)
    Delivery.objects.filter(pk__in=ids[1:6]).update(created_at=same)
    seen: list[str] = []
    url = f"{DELIVERIES}?page_size=2"
    while url:
        page = tenant.client.get(url).json()
        seen += [d["id"] for d in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    back: list[str] = []
    url = page["previous"]
    while url:
        page = tenant.client.get(url).json()
        back = [d["id"] for d in page["results"]] + back
        url = page["previous"]
    assert back == seen[:-1]  # every page before the last, in the same order


def test_a_page_is_named_by_its_cursor_not_by_a_number(tenant: Tenant, fleet: Any) -> None:
    create(tenant)
    refused = tenant.client.get(DELIVERIES, {"page": 2})
    assert refused.status_code == 400
    assert "next" in refused.json()["error"]["fields"]["page"][0]
    for cursor in ("nonsense", "bz0x", "byAyMDI2IG5vdCBhIHRpbWU"):
        answer = tenant.client.get(DELIVERIES, {"cursor": cursor})
        assert answer.status_code == 404
        assert "cursor" in answer.json()["error"]["message"]


def test_a_delivery_shows_drone_etas_and_events(tenant: Tenant, fleet: Any) -> None:
    body = create(tenant)
    delivery = assign(body["id"])
    detail = tenant.client.get(f"{DELIVERIES}/{body['id']}").json()
    assert detail["status"] == "assigned"
    assert detail["drone"]["serial"] == Drone.objects.get(deliveries=delivery).serial
    assert [e["status"] for e in detail["events"]] == ["requested", "assigned"]
    assert detail["pickup_eta"] < detail["dropoff_eta"]


def test_status_comes_from_redis_and_falls_back_to_the_database(tenant: Tenant, fleet: Any) -> None:
    from django_redis import get_redis_connection

    from deliveries.live import status_key

    body = create(tenant)
    assign(body["id"])
    status = tenant.client.get(f"{DELIVERIES}/{body['id']}/status").json()
    assert status["status"] == "assigned"
    assert status["drone_location"] is not None
    assert set(status) >= {"status", "drone_location", "pickup_eta", "dropoff_eta", "updated_at"}
    # Written after commit (on_commit does not run inside a test transaction): the first read
    # came from the database. Put a marker in Redis and see it read from there.
    get_redis_connection("default").set(
        status_key(body["id"]), '0,0\n{"status": "from-redis", "drone_location": null}'
    )
    assert tenant.client.get(f"{DELIVERIES}/{body['id']}/status").json()["status"] == "from-redis"


# --- tenant isolation -------------------------------------------------------------------------


def test_another_business_sees_none_of_it_anywhere(
    tenant: Tenant, other_tenant: Tenant, fleet: Any
) -> None:
    body = create(tenant)
    intruder = other_tenant.client
    path = f"{DELIVERIES}/{body['id']}"
    assert intruder.get(path).status_code == 404
    assert intruder.get(f"{path}/status").status_code == 404
    assert intruder.patch_json(path, {"pickup_time": None}).status_code in (400, 404)
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert intruder.patch_json(path, {"pickup_time": future}).status_code == 404
    assert intruder.post_json(f"{path}/cancel").status_code == 404
    assert intruder.get(DELIVERIES).json()["results"] == []
    # And nothing changed for the owner.
    assert tenant.client.get(path).json()["status"] == "requested"
    # Ids that are no UUID at all are 404 too, in JSON.
    assert intruder.get(f"{DELIVERIES}/12345").json()["error"]["code"] == "not_found"


def test_a_quote_of_another_business_cannot_be_used(
    tenant: Tenant, other_tenant: Tenant, fleet: Any
) -> None:
    quote = tenant.client.post_json("/api/v1/quotes", delivery_body()).json()
    response = other_tenant.client.post_json(DELIVERIES, delivery_body(quote_id=quote["quote_id"]))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_quote"


# --- cancel and reschedule --------------------------------------------------------------------


def test_cancel_before_pickup_releases_the_drone(tenant: Tenant, fleet: Any) -> None:
    body = create(tenant)
    drone = Drone.objects.get(deliveries=assign(body["id"]))
    response = tenant.client.post_json(f"{DELIVERIES}/{body['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    drone.refresh_from_db()
    assert drone.assigned_delivery_id is None
    # Cancelling again is harmless.
    assert tenant.client.post_json(f"{DELIVERIES}/{body['id']}/cancel").status_code == 200


def test_cancel_after_pickup_is_refused_with_the_reason(tenant: Tenant, fleet: Any) -> None:
    body = create(tenant)
    delivery = assign(body["id"])
    advance(delivery.id, "en_route_to_pickup", "at_pickup", "en_route_to_dropoff")
    response = tenant.client.post_json(f"{DELIVERIES}/{body['id']}/cancel")
    assert response.status_code == 409
    assert "picked up" in response.json()["error"]["message"]
    assert Drone.objects.get(deliveries=delivery).assigned_delivery_id == delivery.id


def test_reschedule_before_pickup_moves_it_reprices_it_and_looks_for_a_drone_again(
    tenant: Tenant, fleet: Any
) -> None:
    body = create(tenant)
    delivery = assign(body["id"])
    later = timezone.now() + timedelta(hours=3)
    farther = {"lat": 47.64, "lon": -122.30}
    response = tenant.client.patch_json(
        f"{DELIVERIES}/{body['id']}", {"pickup_time": later.isoformat(), "dropoff": farther}
    )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "requested"
    assert response.json()["dropoff"]["lat"] == 47.64
    # A longer trip costs more.
    assert float(response.json()["price"]["amount"]) > float(body["price"]["amount"])
    assert delivery.drone_id is not None
    assert Drone.objects.get(pk=delivery.drone_id).assigned_delivery_id is None
    # Three hours ahead: no drone is held until shortly before the pickup.
    rescheduled = Delivery.objects.get(pk=body["id"])
    assert rescheduled.book_at == later - timedelta(seconds=settings.DELIVERY_BOOKING_LEAD_SECONDS)
    assert (
        services.delivery_assign(delivery_id=delivery.id, attempt=rescheduled.attempts).result
        == "done"
    )
    # When the booking time comes, the workflow finds a drone, honouring the new pickup time.
    Delivery.objects.filter(pk=body["id"]).update(book_at=timezone.now() - timedelta(seconds=1))
    assert services.deliveries_book_due() == 1
    outcome = services.delivery_assign(delivery_id=delivery.id, attempt=rescheduled.attempts)
    assert outcome.result == "assigned"
    assert outcome.delivery is not None and outcome.delivery.pickup_eta is not None
    assert outcome.delivery.pickup_eta >= later


def test_reschedule_after_the_drone_set_off_is_409(tenant: Tenant, fleet: Any) -> None:
    body = create(tenant)
    delivery = assign(body["id"])
    advance(delivery.id, "en_route_to_pickup")
    later = (timezone.now() + timedelta(hours=3)).isoformat()
    response = tenant.client.patch_json(f"{DELIVERIES}/{body['id']}", {"pickup_time": later})
    assert response.status_code == 409


def test_reschedule_refuses_other_fields_and_impossible_values(tenant: Tenant, fleet: Any) -> None:
    body = create(tenant)
    path = f"{DELIVERIES}/{body['id']}"
    changed_package = tenant.client.patch_json(path, {"package": {"size": "large"}})
    assert changed_package.status_code == 400
    assert "package" in changed_package.json()["error"]["fields"]
    assert tenant.client.patch_json(path, {}).status_code == 400
    past = tenant.client.patch_json(path, {"pickup_time": "2020-01-01T00:00:00Z"})
    assert past.status_code == 422


# --- quotes -----------------------------------------------------------------------------------


def test_a_quote_prices_the_delivery_and_estimates_it(tenant: Tenant, fleet: Any) -> None:
    response = tenant.client.post_json("/api/v1/quotes", delivery_body())
    assert response.status_code == 200
    quote = response.json()
    now = timezone.now().isoformat()
    assert quote["pickup_eta"] > now and quote["dropoff_eta"] > quote["pickup_eta"]
    assert quote["expires_at"] > now
    assert quote["price"]["currency"] == "USD"
    expedited = tenant.client.post_json("/api/v1/quotes", delivery_body(expedited=True)).json()
    assert float(expedited["price"]["amount"]) > float(quote["price"]["amount"])
    # A delivery made from the quote carries its price.
    body = create(tenant, quote_id=quote["quote_id"])
    assert body["price"] == quote["price"]
    assert body["quote_id"] == quote["quote_id"]


def test_a_quote_says_why_no_drone_can_do_it(tenant: Tenant, fleet: Any) -> None:
    heavy = tenant.client.post_json(
        "/api/v1/quotes", delivery_body(package={"size": "large", "weight_kg": 50})
    )
    assert heavy.status_code == 422
    assert heavy.json()["error"]["code"] == "no_drone_can_do_it"
    Drone.objects.update(state=Drone.State.CHARGING)
    busy = tenant.client.post_json("/api/v1/quotes", delivery_body())
    assert busy.status_code == 422
    assert busy.json()["error"]["code"] == "no_drone_free"


def test_a_quote_says_when_the_deadline_cannot_be_met(tenant: Tenant, fleet: Any) -> None:
    deadline = (timezone.now() + timedelta(minutes=2)).isoformat()
    response = tenant.client.post_json("/api/v1/quotes", delivery_body(deadline=deadline))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "deadline_unreachable"


def test_a_delivery_that_differs_from_its_quote_or_comes_late_is_422(
    tenant: Tenant, fleet: Any
) -> None:
    quote = tenant.client.post_json("/api/v1/quotes", delivery_body()).json()
    other = delivery_body(quote_id=quote["quote_id"], package={"size": "small", "weight_kg": 4})
    assert tenant.client.post_json(DELIVERIES, other).json()["error"]["code"] == "quote_mismatch"
    from deliveries.models import Quote

    Quote.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    late = tenant.client.post_json(DELIVERIES, delivery_body(quote_id=quote["quote_id"]))
    assert late.json()["error"]["code"] == "quote_expired"


# --- the schema -------------------------------------------------------------------------------


def test_the_openapi_schema_and_docs_are_served() -> None:
    schema = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    expected = {"/api/v1/deliveries", "/api/v1/quotes", "/api/v1/deliveries/{delivery_id}/cancel"}
    assert expected <= set(paths)
    docs = Client().get("/api/v1/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


# --- an event per change ----------------------------------------------------------------------


def test_every_stage_change_is_an_event_and_impossible_jumps_are_refused(
    tenant: Tenant, fleet: Any
) -> None:
    body = create(tenant)
    delivery = assign(body["id"])
    with pytest.raises(services.InvalidStageTransition):
        advance(delivery.id, "delivered")
    stages = ["en_route_to_pickup", "at_pickup", "en_route_to_dropoff", "at_dropoff", "delivered"]
    advance(delivery.id, *stages, position=(47.6, -122.3, 8))
    events = DeliveryEvent.objects.filter(delivery=delivery)
    assert list(events.values_list("status", flat=True)) == ["requested", "assigned", *stages]
    assert Drone.objects.get(deliveries=delivery).assigned_delivery_id is None


def test_a_fleet_of_one_is_booked_once(tenant: Tenant) -> None:
    make_fleet(1)
    first, second = create(tenant), create(tenant)
    assign(first["id"])
    outcome = services.delivery_assign(delivery_id=uuid.UUID(second["id"]))
    assert outcome.result == "wait"
    assert Delivery.objects.get(pk=second["id"]).status == "requested"


def test_the_schema_generates_without_a_single_warning(tmp_path: Any) -> None:
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    assert "ApiKey" in schema and "Idempotency-Key" in schema


def test_a_zone_offset_without_a_colon_is_a_zone(tenant: Tenant, fleet: Any) -> None:
    soon = (timezone.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    response = tenant.client.post_json(DELIVERIES, delivery_body(pickup_time=soon))
    assert response.status_code == 202, response.json()


def test_the_dropoff_can_move_after_the_requested_pickup_time_has_passed(
    tenant: Tenant, fleet: Any
) -> None:
    body = create(tenant, pickup_time=(timezone.now() + timedelta(seconds=5)).isoformat())
    # The drone is late: the pickup time passes before it sets off.
    Delivery.objects.filter(pk=body["id"]).update(pickup_time=timezone.now() - timedelta(minutes=5))
    response = tenant.client.patch_json(
        f"{DELIVERIES}/{body['id']}", {"dropoff": {"lat": 47.615, "lon": -122.32}}
    )
    assert response.status_code == 200, response.json()


def test_a_failed_or_cancelled_stage_frees_the_drone(tenant: Tenant, fleet: Any) -> None:
    for final in ("failed", "cancelled"):
        delivery = assign(create(tenant)["id"])
        advance(delivery.id, final)
        assert not Drone.objects.filter(assigned_delivery_id=delivery.id).exists(), final


def test_an_unreachable_redis_is_503_not_500(tenant: Tenant) -> None:
    from devtools.localservices import free_port

    dead = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    with override_settings(CACHES=dead):
        response = tenant.client.get(DELIVERIES)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response["Retry-After"]


# --- scheduled pickups ------------------------------------------------------------------------


def test_a_pickup_days_ahead_holds_no_drone_until_shortly_before_it(
    tenant: Tenant, fleet: Any
) -> None:
    pickup_time = timezone.now() + timedelta(days=2)
    body = create(tenant, pickup_time=pickup_time.isoformat())
    delivery = Delivery.objects.get(pk=body["id"])
    lead = timedelta(seconds=settings.DELIVERY_BOOKING_LEAD_SECONDS)
    assert delivery.book_at == pickup_time - lead
    # Not yet: a message that arrives anyway does nothing, and no drone is held.
    assert services.delivery_assign(delivery_id=delivery.pk).result == "done"
    assert services.deliveries_book_due() == 0
    assert not Drone.objects.filter(assigned_delivery_id__isnull=False).exists()
    # Nor does the sweeper of lost messages start it early.
    Delivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert services.deliveries_sweep() == 0

    Delivery.objects.filter(pk=delivery.pk).update(book_at=timezone.now())
    assert services.deliveries_book_due() == 1
    assert services.deliveries_book_due() == 0  # once
    outcome = services.delivery_assign(delivery_id=delivery.pk)
    assert outcome.result == "assigned"
    assert outcome.delivery is not None and outcome.delivery.pickup_eta == pickup_time


@pytest.mark.parametrize(
    "pickup_time", ["9999-12-31T23:59:59Z", "2999-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z"]
)
def test_an_absurd_pickup_time_is_422_never_500(
    tenant: Tenant, fleet: Any, pickup_time: str
) -> None:
    for path in (DELIVERIES, "/api/v1/quotes"):
        response = tenant.client.post_json(path, delivery_body(pickup_time=pickup_time))
        assert response.status_code == 422, response.content
        assert response.json()["error"]["fields"]["pickup_time"]


def test_a_pickup_more_than_the_allowed_days_ahead_is_422_saying_so(
    tenant: Tenant, fleet: Any
) -> None:
    days = settings.DELIVERY_MAX_DAYS_AHEAD
    too_far = (timezone.now() + timedelta(days=days, hours=1)).isoformat()
    response = tenant.client.post_json(DELIVERIES, delivery_body(pickup_time=too_far))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "pickup_time_too_far"
    assert f"at most {days} days ahead" in response.json()["error"]["message"]
    within = (timezone.now() + timedelta(days=days - 1)).isoformat()
    assert tenant.client.post_json(DELIVERIES, delivery_body(pickup_time=within)).status_code == 202


def test_the_wait_for_a_drone_counts_from_the_pickup_time(tenant: Tenant) -> None:
    make_fleet(1)
    busy = create(tenant)
    assign(busy["id"])
    soon = timezone.now() + timedelta(minutes=10)  # within the booking lead: booked at once
    waiting = create(tenant, pickup_time=soon.isoformat())
    # Created long ago, but its pickup is still ahead: it keeps waiting instead of failing.
    Delivery.objects.filter(pk=waiting["id"]).update(created_at=timezone.now() - timedelta(hours=3))
    DeliveryEvent.objects.filter(delivery_id=waiting["id"]).update(
        at=timezone.now() - timedelta(hours=3)
    )
    outcome = services.delivery_assign(delivery_id=uuid.UUID(waiting["id"]))
    assert outcome.result == "wait"
    assert Delivery.objects.get(pk=waiting["id"]).status == "requested"


def test_an_absurdly_long_key_is_refused_without_a_lookup(
    fleet: Any, django_assert_num_queries: Any
) -> None:
    client = ApiClient("x" * 3500 + "." + "y" * 3500)
    with django_assert_num_queries(0):
        response = client.post_json(DELIVERIES, delivery_body())
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "malformed API key"

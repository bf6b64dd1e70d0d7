"""What the fuzzing found (issue 15), each answered as a clean 4xx that says what was wrong."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from drones.services import telemetry_key_create
from tests.conftest import Tenant, delivery_body

pytestmark = pytest.mark.django_db

DELIVERIES = "/api/v1/deliveries"


def refused(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    error = response.json()["error"]
    assert error["message"].strip()
    return error


@pytest.mark.parametrize("moment", ["2027-02-30T10:00:00Z", "2027-02-01T25:00:00Z"])
def test_a_pickup_time_that_does_not_exist_is_a_400_naming_the_field(
    tenant: Tenant, fleet: Any, moment: str
) -> None:
    response = tenant.client.post_json(DELIVERIES, delivery_body(pickup_time=moment))
    assert "pickup_time" in refused(response)["fields"]


def test_rescheduling_to_an_impossible_date_is_a_400_not_a_500(tenant: Tenant, fleet: Any) -> None:
    created = tenant.client.post_json(DELIVERIES, delivery_body()).json()
    response = tenant.client.patch_json(
        f"{DELIVERIES}/{created['id']}", {"pickup_time": "2027-02-30T10:00:00Z"}
    )
    assert "pickup_time" in refused(response)["fields"]


@pytest.mark.parametrize("path", [DELIVERIES, "/api/v1/quotes", "/api/v1/webhooks"])
def test_json_nested_a_hundred_thousand_deep_is_a_400_on_every_post(
    tenant: Tenant, path: str
) -> None:
    response = tenant.client.post(path, "[" * 100_000, content_type="application/json")
    assert "JSON" in refused(response)["message"]


def test_deeply_nested_telemetry_is_a_400(fleet: Any) -> None:
    _, key = telemetry_key_create(name="gateway", base_ids=[fleet[0].base_id])
    client = Client(HTTP_AUTHORIZATION=f"Telemetry-Key {key}")
    response = client.post("/api/v1/telemetry", "[" * 100_000, content_type="application/json")
    refused(response)


def schema_pattern(component: str, field: str) -> re.Pattern[str]:
    """The pattern the published schema gives a component's field."""
    schema = Client().get("/api/v1/schema/?format=json").json()
    return re.compile(schema["components"]["schemas"][component]["properties"][field]["pattern"])


@pytest.mark.parametrize("serial", ["\u00a0", "\x1c", " \u3000 "])
def test_a_drone_serial_of_whitespace_only_is_malformed_as_the_schema_says(
    fleet: Any, serial: str
) -> None:
    # Python's str.strip() takes U+00A0 and U+001C for whitespace; the schema said only
    # "at least one character", and schemathesis sent one the API called malformed.
    pattern = schema_pattern("ReportInRequest", "drone")
    assert not pattern.search(serial) and pattern.search(f"{serial}FD-1{serial}")
    _, key = telemetry_key_create(name="gateway", base_ids=[fleet[0].base_id])
    client = Client(HTTP_AUTHORIZATION=f"Telemetry-Key {key}")
    report = {
        "drone": serial,
        "time": "2026-05-01T14:30:00Z",
        "lat": 47.6,
        "lon": -122.3,
        "alt_m": 100,
        "ground_speed_mps": 0,
        "heading": 0,
        "battery_pct": 90,
    }
    response = client.post(
        "/api/v1/telemetry", {"reports": [report]}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["results"][0]["result"] == "malformed"
    assert list(response.json()["results"][0]["fields"]) == ["drone"]


@pytest.mark.parametrize("name", ["\f", "\x1c", " \u3000 "])
def test_a_recipient_name_of_whitespace_only_is_refused_as_the_schema_says(
    tenant: Tenant, fleet: Any, name: str
) -> None:
    # DRF strips a string before it refuses a blank one; the schema said only "no NUL", and
    # schemathesis sent a form feed the API refused as blank (a valid request rejected).
    pattern = schema_pattern("RecipientInRequest", "name")
    assert not pattern.search(name) and pattern.search(f"{name}Ada{name}")
    response = tenant.client.post_json(DELIVERIES, delivery_body(recipient={"name": name}))
    assert refused(response)["fields"] == {"recipient": {"name": ["This field may not be blank."]}}


def test_a_tracking_link_with_a_nul_byte_is_a_404(db: None) -> None:
    assert Client().get("/track/%00abc").status_code == 404


def test_a_page_size_that_is_not_a_whole_number_is_a_404_that_says_so(tenant: Tenant) -> None:
    for value in ("null", "-1", "0", "²"):
        response = tenant.client.get(DELIVERIES, {"page_size": value})
        assert "page_size" in refused(response, 404)["message"]


def test_a_field_the_api_does_not_know_is_refused_by_name(tenant: Tenant, fleet: Any) -> None:
    response = tenant.client.post_json(DELIVERIES, delivery_body(colour="red"))
    assert refused(response)["fields"] == {"colour": ["unknown field"]}


def test_a_webhook_url_that_is_a_url_but_not_usable_is_a_422_saying_why(tenant: Tenant) -> None:
    body = {"url": "ftp://hooks.example.com/in", "events": ["delivery.delivered"]}
    response = tenant.client.post_json("/api/v1/webhooks", body)
    assert "https://" in refused(response, 422)["message"]


def test_an_empty_status_filter_is_a_400_naming_the_statuses(tenant: Tenant) -> None:
    response = tenant.client.get(DELIVERIES, {"status": ""})
    assert "status" in refused(response)["fields"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/telemetry", {"reports": [{"drone": "FD\u0000"}]}),
        ("/api/v1/webhooks", {"url": "https://a.example/\u0000", "events": ["delivery.failed"]}),
    ],
)
def test_a_nul_character_in_a_json_string_is_a_400_not_a_500(
    tenant: Tenant, fleet: Any, path: str, body: dict[str, Any]
) -> None:
    _, key = telemetry_key_create(name="gateway", base_ids=[fleet[0].base_id])
    client = (
        tenant.client
        if path != "/api/v1/telemetry"
        else Client(HTTP_AUTHORIZATION=f"Telemetry-Key {key}")
    )
    response = client.post(path, body, content_type="application/json")
    assert "NUL" in refused(response)["message"]


@pytest.mark.django_db
def test_a_failed_delivery_tells_the_business_plain_words_not_the_error(
    tenant: Tenant, fleet: list[Any]
) -> None:
    from deliveries.models import Delivery

    made = tenant.client.post_json("/api/v1/deliveries", delivery_body())
    assert made.status_code == 202, made.content
    delivery_id = made.json()["id"]
    Delivery.objects.filter(pk=delivery_id).update(
        status="failed", failure_reason="pymongo.errors.ServerSelectionTimeoutError: 10.0.0.7:27017"
    )
    shown = tenant.client.get(f"/api/v1/deliveries/{delivery_id}").json()["failure_reason"]
    assert shown and "pymongo" not in shown and "10.0.0.7" not in shown
    Delivery.objects.filter(pk=delivery_id).update(failure_reason="no drone became free in time")
    shown = tenant.client.get(f"/api/v1/deliveries/{delivery_id}").json()["failure_reason"]
    assert shown == "no drone was free in time"

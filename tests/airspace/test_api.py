from __future__ import annotations

import base64
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from airspace.models import NoFlyZone
from airspace.services import zone_upsert
from tests.airspace.zones import BOW_TIE, collection, feature, square
from tests.conftest import Tenant

pytestmark = pytest.mark.django_db

ZONES = "/api/v1/zones"


def post_json(client: Client, path: str, data: Any, **extra: Any) -> Any:
    return client.post(path, data=data, content_type="application/json", **extra)


def patch_json(client: Client, path: str, data: Any) -> Any:
    return client.patch(path, data=data, content_type="application/json")


def test_staff_import_zones_and_read_them_back_as_geojson(admin_client: Client) -> None:
    response = post_json(
        admin_client,
        ZONES,
        collection(
            feature("Lumen Field"),
            feature(
                "Storm cell",
                square(-122.30, 47.60),
                reason="weather",
                active=False,
                valid_until="2026-05-01T18:00:00Z",
            ),
        ),
    )
    assert response.status_code == 200, response.json()
    assert response.json() == {"created": 2, "updated": 0}

    listed = admin_client.get(ZONES).json()
    assert listed["type"] == "FeatureCollection"
    assert [f["properties"]["name"] for f in listed["features"]] == ["Lumen Field", "Storm cell"]
    storm = listed["features"][1]
    assert storm["type"] == "Feature"
    assert storm["geometry"] == square(-122.30, 47.60)
    assert storm["properties"] == {
        "name": "Storm cell",
        "reason": "weather",
        "active": False,
        "valid_from": None,
        "valid_until": "2026-05-01T18:00:00Z",
    }
    assert storm["id"] == str(NoFlyZone.objects.get(name="Storm cell").pk)

    active = admin_client.get(ZONES, {"active": "true"}).json()
    assert [f["properties"]["name"] for f in active["features"]] == ["Lumen Field"]
    inactive = admin_client.get(ZONES, {"active": "false"}).json()
    assert [f["properties"]["name"] for f in inactive["features"]] == ["Storm cell"]
    assert admin_client.get(ZONES, {"active": "maybe"}).status_code == 400

    # What was read imports back: an update of both.
    again = post_json(admin_client, ZONES, listed)
    assert again.json() == {"created": 0, "updated": 2}


def test_bad_geojson_is_a_422_saying_what_is_wrong_and_nothing_is_imported(
    admin_client: Client,
) -> None:
    response = post_json(
        admin_client, ZONES, collection(feature("Fine"), feature("Bow tie", BOW_TIE))
    )

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_zone"
    assert 'feature 1 ("Bow tie")' in error["message"]
    assert "crosses itself" in error["message"]
    assert list(error["fields"]) == ["features[1].geometry"]
    assert not NoFlyZone.objects.exists()

    not_a_collection = post_json(admin_client, ZONES, {"type": "Polygon", "coordinates": []})
    assert not_a_collection.status_code == 422
    assert "expected a GeoJSON FeatureCollection" in not_a_collection.json()["error"]["message"]

    not_json = admin_client.post(ZONES, data="{oops", content_type="application/json")
    assert not_json.status_code == 400
    assert "error" in not_json.json()


def test_staff_read_change_and_delete_one_zone(admin_client: Client) -> None:
    zone, _ = zone_upsert(name="Lumen Field", reason="stadium", geometry=square(-122.35, 47.60))
    url = f"{ZONES}/{zone.pk}"

    read = admin_client.get(url)
    assert read.status_code == 200
    assert read.json()["properties"]["name"] == "Lumen Field"

    changed = patch_json(
        admin_client,
        url,
        {
            "properties": {
                "name": "Lumen Field (game day)",
                "valid_from": "2026-05-01T17:00:00Z",
                "valid_until": "2026-05-01T23:00:00Z",
            }
        },
    )
    assert changed.status_code == 200, changed.json()
    body = changed.json()
    assert body["properties"]["name"] == "Lumen Field (game day)"
    assert body["properties"]["valid_until"] == "2026-05-01T23:00:00Z"
    assert body["properties"]["reason"] == "stadium"  # left out: kept
    assert body["geometry"] == square(-122.35, 47.60)

    reshaped = patch_json(
        admin_client,
        url,
        {
            "type": "Feature",
            "geometry": square(-122.34, 47.59, 0.02),
            "properties": {"valid_from": None, "active": False},
        },
    )
    assert reshaped.status_code == 200
    zone.refresh_from_db()
    assert zone.geometry == square(-122.34, 47.59, 0.02)
    assert (zone.valid_from, zone.active) == (None, False)
    assert zone.valid_until is not None

    refused = patch_json(admin_client, url, {"geometry": BOW_TIE})
    assert refused.status_code == 422
    assert "crosses itself" in refused.json()["error"]["message"]
    assert list(refused.json()["error"]["fields"]) == ["geometry"]

    backwards = patch_json(
        admin_client, url, {"properties": {"valid_from": "2026-06-01T00:00:00Z"}}
    )
    assert backwards.status_code == 422
    assert "must be later than valid_from" in backwards.json()["error"]["message"]

    assert admin_client.delete(url).status_code == 204
    assert not NoFlyZone.objects.filter(pk=zone.pk).exists()
    gone = admin_client.get(url)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"


def test_a_zone_cannot_take_another_zones_name(admin_client: Client) -> None:
    zone_upsert(name="A", reason="other", geometry=square(-122.35, 47.60))
    b, _ = zone_upsert(name="B", reason="other", geometry=square(-122.30, 47.60))
    response = patch_json(admin_client, f"{ZONES}/{b.pk}", {"properties": {"name": "A"}})
    assert response.status_code == 409
    assert "another zone is named 'A'" in response.json()["error"]["message"]


def test_an_unknown_or_malformed_zone_id_is_a_404(admin_client: Client) -> None:
    assert admin_client.get(f"{ZONES}/not-a-uuid").status_code == 404
    assert admin_client.delete(f"{ZONES}/00000000-0000-0000-0000-000000000000").status_code == 404


def test_businesses_and_strangers_are_refused(tenant: Tenant, client: Client) -> None:
    zone, _ = zone_upsert(name="A", reason="other", geometry=square(-122.35, 47.60))
    attempts = [
        ("get", ZONES, None),
        ("post", ZONES, collection(feature("Mine now"))),
        ("get", f"{ZONES}/{zone.pk}", None),
        ("patch", f"{ZONES}/{zone.pk}", {"properties": {"active": False}}),
        ("delete", f"{ZONES}/{zone.pk}", None),
    ]
    for who in (tenant.client, client):
        for method, path, body in attempts:
            response = getattr(who, method)(path, data=body, content_type="application/json")
            assert response.status_code in (401, 403), (method, path, response.status_code)
            assert "error" in response.json()
    assert list(NoFlyZone.objects.values_list("name", "active")) == [("A", True)]


def test_a_signed_in_user_who_is_not_staff_is_refused(client: Client) -> None:
    User.objects.create_user("pilot", password="a long enough password")
    client.login(username="pilot", password="a long enough password")
    assert client.get(ZONES).status_code == 403


def test_staff_may_use_http_basic(client: Client) -> None:
    User.objects.create_user("ops", password="a long enough password", is_staff=True)
    token = base64.b64encode(b"ops:a long enough password").decode()
    response = client.get(ZONES, HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.status_code == 200
    assert response.json() == {"type": "FeatureCollection", "features": []}


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "FeatureCollection",
        {"type": "FeatureCollection", "features": {"0": {}}},
        collection(None, [], "x"),
        collection({"type": "Feature", "geometry": "not json", "properties": {"name": 5}}),
        collection({"type": "Feature", "geometry": {"type": "Polygon"}, "properties": []}),
        collection(
            feature("A", {"type": "Polygon", "coordinates": [[[1e400, 0], [0, 1], [1, 1]]]})
        ),
        collection(feature("A", {"type": "MultiPolygon", "coordinates": [[[["a"]]]]})),
        collection(feature("A", valid_from=12, valid_until=["2026"])),
        collection(feature("A", valid_from="2026-13-45T99:00:00Z")),
    ],
)
def test_odd_bodies_are_refused_never_a_server_error(admin_client: Client, body: Any) -> None:
    response = post_json(admin_client, ZONES, body)
    assert 400 <= response.status_code < 500, response.content
    assert "error" in response.json()
    zone, _ = zone_upsert(name="Z", reason="other", geometry=square(-122.35, 47.60))
    patched = patch_json(admin_client, f"{ZONES}/{zone.pk}", body)
    assert 400 <= patched.status_code < 500, patched.content

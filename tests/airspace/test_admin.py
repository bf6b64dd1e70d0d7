from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from airspace.models import NoFlyZone
from airspace.services import zone_upsert, zones_export
from drones.geo import Point
from tests.airspace.zones import BOW_TIE, collection, feature, square
from tests.drones.fleet import base

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:airspace_noflyzone_changelist")
ADD = reverse("admin:airspace_noflyzone_add")
IMPORT = reverse("admin:airspace_noflyzone_import")


def drawn(*polygons: dict[str, Any]) -> str:
    """What the map's textarea holds after drawing: always a MultiPolygon (L.GeometryField)."""
    return json.dumps(
        {"type": "MultiPolygon", "coordinates": [p["coordinates"] for p in polygons]},
        separators=(",", ":"),
    )


def form(**fields: Any) -> dict[str, Any]:
    data = {
        "name": "Lumen Field",
        "reason": "stadium",
        "active": "on",
        "valid_from_0": "",
        "valid_from_1": "",
        "valid_until_0": "",
        "valid_until_1": "",
        "geometry": drawn(square(-122.332, 47.594, 0.005)),
    }
    data.update(fields)
    return {name: value for name, value in data.items() if value is not None}


def test_operators_see_zones_with_reason_state_and_window(admin_client: Client) -> None:
    zone_upsert(name="Lumen Field", reason="stadium", geometry=square(-122.35, 47.60))
    zone_upsert(
        name="Marathon",
        reason="temporary_flight_restriction",
        geometry=square(-122.30, 47.60),
        active=False,
        valid_from=datetime(2026, 5, 1, 8, tzinfo=UTC),
        valid_until=datetime(2026, 5, 1, 14, tzinfo=UTC),
    )

    page = admin_client.get(CHANGELIST)

    assert page.status_code == 200
    body = page.content.decode()
    assert "Lumen Field" in body and "Marathon" in body
    assert "Temporary Flight Restriction" in body
    # Admin shows times in the service area's zone (Seattle: UTC-7 in May), named.
    assert "2026-05-01 01:00 to 07:00 PDT" in body
    assert "always" in body
    assert IMPORT in body  # the "Import GeoJSON" button

    inactive = admin_client.get(CHANGELIST, {"active__exact": "0"}).content.decode()
    assert "Marathon" in inactive and "Lumen Field" not in inactive
    stadiums = admin_client.get(CHANGELIST, {"reason__exact": "stadium"}).content.decode()
    assert "Lumen Field" in stadiums and "Marathon" not in stadiums
    over = admin_client.get(CHANGELIST, {"window": "over"}).content.decode()
    assert "Marathon" in over and "Lumen Field" not in over


def test_an_operator_draws_a_zone_on_the_map(admin_client: Client) -> None:
    page = admin_client.get(ADD)
    assert page.status_code == 200
    body = page.content.decode()
    # The map and its scripts, all served by the project.
    for asset in (
        "leaflet/leaflet.js",
        "leaflet/draw/leaflet.draw.js",
        "leaflet/leaflet.forms.js",
        "airspace/zone_map.js",
        "leaflet/leaflet.css",
    ):
        assert f"/static/{asset}" in body
    assert 'class="airspace-zone-map"' in body
    assert "id_geometry-map-options" in body

    response = admin_client.post(
        ADD,
        form(
            valid_from_0="2026-05-01",
            valid_from_1="17:00:00",
            valid_until_0="2026-05-01",
            valid_until_1="23:30:00",
        ),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    zone = NoFlyZone.objects.get(name="Lumen Field")
    # One shape drawn: a Polygon, not a MultiPolygon of one.
    assert zone.geometry == square(-122.332, 47.594, 0.005)
    # Typed in the service area's zone (UTC-7 in May).
    assert zone.valid_from == datetime(2026, 5, 2, 0, tzinfo=UTC)
    assert zone.valid_until == datetime(2026, 5, 2, 6, 30, tzinfo=UTC)
    assert response["Location"] == CHANGELIST

    two = admin_client.post(
        ADD,
        form(
            name="Airport",
            reason="airport",
            geometry=drawn(square(-122.31, 47.44), square(-122.29, 47.44)),
        ),
    )
    assert two.status_code == 302
    assert NoFlyZone.objects.get(name="Airport").geometry["type"] == "MultiPolygon"


def test_the_map_shows_the_zone_the_other_zones_and_the_bases(admin_client: Client) -> None:
    base(Point(47.6117, -122.3503), name="Pier 66")
    zone, _ = zone_upsert(name="Lumen Field", reason="stadium", geometry=square(-122.35, 47.60))
    zone_upsert(name="Boeing Field", reason="airport", geometry=square(-122.31, 47.52))

    page = admin_client.get(reverse("admin:airspace_noflyzone_change", args=[zone.pk]))

    assert page.status_code == 200
    body = page.content.decode()
    script = re.search(r'id="id_geometry-map-options"[^>]*>(.*?)</script>', body)
    assert script is not None
    options = json.loads(script[1])
    labels = [f["properties"]["label"] for f in options["context"]["features"]]
    assert labels == ["Boeing Field (airport)", "base Pier 66"]
    assert options["field"] == "id_geometry"
    # The zone itself is in the textarea the map edits.
    textarea = body.split('name="geometry"')[1].split(">", 1)[1].split("</textarea>")[0]
    assert json.loads(textarea.replace("&quot;", '"')) == square(-122.35, 47.60)


def test_a_refused_zone_is_shown_on_the_form_not_a_server_error(admin_client: Client) -> None:
    cases = {
        "crosses itself": form(geometry=drawn(BOW_TIE)),
        "Enter a valid JSON": form(geometry="{not json"),
        "This field is required": form(geometry=""),
        "must be later than valid_from": form(
            valid_from_0="2026-05-02",
            valid_from_1="00:00:00",
            valid_until_0="2026-05-01",
            valid_until_1="00:00:00",
        ),
        "a Polygon or a MultiPolygon": form(geometry='{"type": "Point", "coordinates": [0, 0]}'),
    }
    for says, data in cases.items():
        response = admin_client.post(ADD, data)
        assert response.status_code == 200, says
        assert says in response.content.decode(), says
    assert not NoFlyZone.objects.exists()

    zone_upsert(name="Lumen Field", reason="stadium", geometry=square(-122.35, 47.60))
    taken = admin_client.post(ADD, form())
    assert "already exists" in taken.content.decode()


def test_an_operator_edits_a_zone_and_renames_it(admin_client: Client) -> None:
    zone, _ = zone_upsert(name="Lumen Field", reason="stadium", geometry=square(-122.35, 47.60))
    url = reverse("admin:airspace_noflyzone_change", args=[zone.pk])

    response = admin_client.post(
        url, form(name="Lumen Field (game day)", active=None, geometry=drawn(square(-122.34, 47.6)))
    )

    assert response.status_code == 302
    zone.refresh_from_db()
    assert (zone.name, zone.active) == ("Lumen Field (game day)", False)
    assert zone.geometry == square(-122.34, 47.6)
    assert NoFlyZone.objects.count() == 1


def test_operators_import_a_file_and_see_what_is_wrong_with_one(admin_client: Client) -> None:
    assert admin_client.get(IMPORT).status_code == 200
    good = json.dumps(collection(feature("Lumen Field"), feature("Airport", reason="airport")))

    response = admin_client.post(
        IMPORT, {"file": SimpleUploadedFile("zones.geojson", good.encode())}, follow=True
    )

    assert response.redirect_chain[-1][0] == CHANGELIST
    assert "Zones imported: 2 created, 0 updated." in response.content.decode()
    assert NoFlyZone.objects.count() == 2

    bad = json.dumps(collection(feature("Lumen Field", active=False), feature("Tie", BOW_TIE)))
    refused = admin_client.post(IMPORT, {"text": bad})
    assert refused.status_code == 200
    body = refused.content.decode()
    assert "feature 1 (&quot;Tie&quot;)" in body and "crosses itself" in body
    assert NoFlyZone.objects.get(name="Lumen Field").active is True

    not_json = admin_client.post(
        IMPORT, {"file": SimpleUploadedFile("zones.geojson", b'{"type": ')}
    )
    assert "not JSON: Expecting value at line 1, column 10" in not_json.content.decode()
    empty = admin_client.post(IMPORT, {})
    assert "Choose a file, or paste a FeatureCollection." in empty.content.decode()


def test_operators_export_selected_zones_as_geojson(admin_client: Client) -> None:
    a, _ = zone_upsert(name="A", reason="other", geometry=square(-122.35, 47.60))
    zone_upsert(name="B", reason="other", geometry=square(-122.30, 47.60))

    response = admin_client.post(
        CHANGELIST, {"action": "export_geojson", "_selected_action": [str(a.pk)]}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/geo+json"
    assert response["Content-Disposition"].startswith('attachment; filename="no-fly-zones-')
    document = json.loads(response.content)
    assert [f["properties"]["name"] for f in document["features"]] == ["A"]
    assert document == zones_export(NoFlyZone.objects.filter(pk=a.pk))


def test_operators_switch_zones_off_and_on_and_delete_them(admin_client: Client) -> None:
    a, _ = zone_upsert(name="A", reason="other", geometry=square(-122.35, 47.60))
    b, _ = zone_upsert(name="B", reason="other", geometry=square(-122.30, 47.60))
    both = [str(a.pk), str(b.pk)]

    off = admin_client.post(
        CHANGELIST, {"action": "deactivate", "_selected_action": both}, follow=True
    )
    assert "2 zone(s) deactivated." in off.content.decode()
    assert not NoFlyZone.objects.filter(active=True).exists()

    admin_client.post(CHANGELIST, {"action": "activate", "_selected_action": [str(a.pk)]})
    assert list(NoFlyZone.objects.filter(active=True).values_list("name", flat=True)) == ["A"]

    admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": both, "post": "yes"}
    )
    assert not NoFlyZone.objects.exists()


def test_staff_who_may_only_view_zones_see_them(client: Client) -> None:
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("viewer", password="a long enough password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_noflyzone"))
    client.force_login(viewer)
    zone, _ = zone_upsert(name="Lumen Field", reason="stadium", geometry=square(-122.35, 47.60))

    assert client.get(CHANGELIST).status_code == 200
    page = client.get(reverse("admin:airspace_noflyzone_change", args=[zone.pk]))
    assert page.status_code == 200
    assert "Lumen Field" in page.content.decode()
    assert client.get(IMPORT).status_code == 403

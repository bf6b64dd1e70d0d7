from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airspace.models import NoFlyZone
from airspace.services import (
    InvalidZoneInput,
    zone_delete,
    zone_update,
    zone_upsert,
    zones_activate,
    zones_export,
    zones_import,
)
from portal.errors import Conflict
from tests.airspace.zones import BOW_TIE, collection, feature, square, version

pytestmark = pytest.mark.django_db


def test_an_import_creates_zones_and_updates_those_of_the_same_name() -> None:
    first = zones_import(
        collection(
            feature("Lumen Field", reason="stadium"),
            feature("Boeing Field", square(-122.31, 47.52), reason="airport"),
        )
    )
    assert (first.created, first.updated) == (2, 0)

    again = zones_import(
        collection(
            feature("Lumen Field", square(-122.332, 47.594, 0.005), reason="stadium", active=False),
            feature(
                "Marathon",
                reason="temporary_flight_restriction",
                valid_from="2026-05-01T08:00:00Z",
                valid_until="2026-05-01T14:00:00+02:00",
            ),
        )
    )

    assert (again.created, again.updated) == (1, 1)
    assert NoFlyZone.objects.count() == 3
    lumen = NoFlyZone.objects.get(name="Lumen Field")
    assert lumen.active is False
    assert lumen.geometry == square(-122.332, 47.594, 0.005)
    marathon = NoFlyZone.objects.get(name="Marathon")
    assert marathon.valid_from == datetime(2026, 5, 1, 8, tzinfo=UTC)
    assert marathon.valid_until == datetime(2026, 5, 1, 12, tzinfo=UTC)


def test_an_import_with_one_bad_feature_imports_nothing_and_names_it() -> None:
    zones_import(collection(feature("Lumen Field")))

    with pytest.raises(InvalidZoneInput) as refused:
        zones_import(
            collection(
                feature("Lumen Field", active=False),
                feature("New zone"),
                feature("Bow tie", BOW_TIE),
            )
        )

    message = refused.value.message
    assert 'feature 2 ("Bow tie")' in message
    assert "crosses itself" in message
    assert "nothing was imported" in message
    assert refused.value.field == "features[2].geometry"
    assert NoFlyZone.objects.get(name="Lumen Field").active is True
    assert not NoFlyZone.objects.filter(name="New zone").exists()


def test_an_import_lists_every_feature_at_fault() -> None:
    with pytest.raises(InvalidZoneInput) as refused:
        zones_import(
            collection(
                feature("Fine"),
                feature("Unknown reason", reason="birds"),
                feature(
                    "Window backwards",
                    valid_from="2026-05-02T00:00:00Z",
                    valid_until="2026-05-01T00:00:00Z",
                ),
                feature("No zone", valid_from="tomorrow"),
                feature("Fine"),
                {"type": "Feature", "geometry": square(0, 0), "properties": {"reason": "other"}},
            )
        )

    message = refused.value.message
    assert message.startswith("5 of 6 features are invalid: ")
    assert 'feature 1 ("Unknown reason"): reason must be one of airport, stadium' in message
    assert (
        'feature 2 ("Window backwards"): valid_until (2026-05-01T00:00:00Z) must be later'
        in message
    )
    assert 'feature 3 ("No zone"): valid_from must be an ISO 8601 time' in message
    assert 'feature 4 ("Fine"): feature 0 has the same name' in message
    assert "feature 5 (no name): a zone needs a name" in message
    assert not NoFlyZone.objects.exists()


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"type": "Feature"}, "expected a GeoJSON FeatureCollection"),
        ([1, 2], "expected a GeoJSON FeatureCollection"),
        ({"type": "FeatureCollection"}, "no list of features"),
        (collection(7), "feature 0 (no name): not a GeoJSON Feature"),
        (
            collection({"type": "Feature", "properties": {"name": "X"}}),
            'feature 0 ("X"): the feature has no geometry',
        ),
        (
            collection(feature("Naive", valid_until="2026-05-01T10:00:00")),
            "valid_until '2026-05-01T10:00:00' has no time zone",
        ),
        (collection(feature("Flag", active="yes")), "active must be true or false"),
        (collection(feature("A point", {"type": "Point", "coordinates": [0, 0]})), "not a Point"),
        (collection(feature("x" * 101)), "at most 100"),
    ],
)
def test_what_an_import_refuses_is_said_in_words(document: Any, says: str) -> None:
    with pytest.raises(InvalidZoneInput) as refused:
        zones_import(document)
    assert says in refused.value.message


def test_an_export_imports_back_as_it_was() -> None:
    zones_import(
        collection(
            feature("Lumen Field"),
            feature(
                "Airport",
                {
                    "type": "MultiPolygon",
                    "coordinates": [
                        square(-122.31, 47.44)["coordinates"],
                        square(-122.29, 47.44)["coordinates"],
                    ],
                },
                reason="airport",
            ),
            feature(
                "Concert",
                reason="temporary_flight_restriction",
                active=False,
                valid_from="2026-07-04T18:00:00Z",
                valid_until="2026-07-05T01:30:00Z",
            ),
        )
    )
    exported = zones_export()
    # Through JSON, as a file or the API would carry it.
    document = json.loads(json.dumps(exported))

    result = zones_import(document)

    assert (result.created, result.updated) == (0, 3)
    assert zones_export() == exported
    assert [f["properties"]["name"] for f in exported["features"]] == [
        "Airport",
        "Concert",
        "Lumen Field",
    ]
    concert = exported["features"][1]
    assert concert["properties"] == {
        "name": "Concert",
        "reason": "temporary_flight_restriction",
        "active": False,
        "valid_from": "2026-07-04T18:00:00Z",
        "valid_until": "2026-07-05T01:30:00Z",
    }
    NoFlyZone.objects.all().delete()
    assert zones_import(document).created == 3
    assert [f["properties"] for f in zones_export()["features"]] == [
        f["properties"] for f in exported["features"]
    ]


def test_an_unclosed_ring_is_stored_closed_and_a_feature_as_its_geometry() -> None:
    open_ring = {
        "type": "Polygon",
        "coordinates": [[[-122.35, 47.6], [-122.34, 47.6], [-122.34, 47.61]]],
    }
    as_feature = {"type": "Feature", "geometry": open_ring, "properties": {}}
    zone, created = zone_upsert(name="Triangle", reason="other", geometry=as_feature)
    assert created
    assert zone.geometry == {
        "type": "Polygon",
        "coordinates": [[[-122.35, 47.6], [-122.34, 47.6], [-122.34, 47.61], [-122.35, 47.6]]],
    }


def test_upsert_refuses_a_window_that_ends_before_it_begins() -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(InvalidZoneInput) as refused:
        zone_upsert(
            name="Backwards",
            reason="weather",
            geometry=square(-122.35, 47.6),
            valid_from=start,
            valid_until=start,
        )
    assert refused.value.field == "valid_until"
    assert "must be later than valid_from" in refused.value.message


def test_renaming_a_zone_to_another_zones_name_is_a_conflict() -> None:
    a, _ = zone_upsert(name="A", reason="other", geometry=square(-122.35, 47.6))
    zone_upsert(name="B", reason="other", geometry=square(-122.30, 47.6))
    with pytest.raises(Conflict):
        zone_update(
            zone_id=a.pk,
            name="B",
            reason="other",
            geometry=a.geometry,
            active=True,
            valid_from=None,
            valid_until=None,
        )


def test_every_committed_change_bumps_the_airspace_version(
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = version()
    with django_capture_on_commit_callbacks(execute=True):
        zone, _ = zone_upsert(name="A", reason="other", geometry=square(-122.35, 47.6))
    assert version() == before + 1
    with django_capture_on_commit_callbacks(execute=True):
        zones_import(collection(feature("B"), feature("C")))
    assert version() == before + 2
    with django_capture_on_commit_callbacks(execute=True):
        zones_activate(zone_ids=[zone.pk], active=False)
    assert version() == before + 3
    with django_capture_on_commit_callbacks(execute=True):
        zone_delete(zone_id=zone.pk)
    assert version() == before + 4

    # A refused change commits nothing, and says nothing either.
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(InvalidZoneInput):
        zones_import(collection(feature("D", BOW_TIE)))
    assert version() == before + 4


def test_the_version_is_bumped_only_once_the_change_is_committed(
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = version()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        zone_upsert(name="A", reason="other", geometry=square(-122.35, 47.6))
        assert version() == before
    assert len(callbacks) == 1


def test_a_zone_without_a_window_and_one_with_half_a_window_are_kept_as_given() -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    zone, _ = zone_upsert(
        name="Open end", reason="weather", geometry=square(-122.35, 47.6), valid_from=later
    )
    assert (zone.valid_from, zone.valid_until) == (later, None)

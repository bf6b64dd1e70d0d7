from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from airspace import selectors
from airspace.selectors import airspace_get, zones_active
from airspace.services import zone_upsert, zones_activate
from drones.geo import Point
from tests.airspace.zones import square

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
# Inside square(-122.35, 47.60) and square(-122.30, 47.60).
IN_WEST = Point(lat=47.605, lon=-122.345)
IN_EAST = Point(lat=47.605, lon=-122.295)


class Clock:
    """selectors.clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr(selectors, "clock", moved)
    return moved


def names(zones: Any) -> set[str]:
    return {zone.name for zone in zones}


def test_active_zones_are_those_switched_on_and_in_force_during_the_period() -> None:
    hour = timedelta(hours=1)
    zone_upsert(name="Always", reason="airport", geometry=square(-122.35, 47.60))
    zone_upsert(name="Off", reason="airport", geometry=square(-122.35, 47.60), active=False)
    zone_upsert(
        name="Morning",
        reason="weather",
        geometry=square(-122.35, 47.60),
        valid_from=T0 - 4 * hour,
        valid_until=T0,
    )
    zone_upsert(
        name="Afternoon", reason="weather", geometry=square(-122.35, 47.60), valid_from=T0 + hour
    )
    zone_upsert(
        name="Until two",
        reason="weather",
        geometry=square(-122.35, 47.60),
        valid_until=T0 + 2 * hour,
    )

    assert names(zones_active()) == {"Always", "Morning", "Afternoon", "Until two"}
    assert names(zones_active(start=T0, end=T0)) == {"Always", "Until two"}
    assert names(zones_active(start=T0 - hour, end=T0 + 30 * (hour / 60))) == {
        "Always",
        "Morning",
        "Until two",
    }
    assert names(zones_active(start=T0 + 3 * hour)) == {"Always", "Afternoon"}
    assert names(zones_active(end=T0 - 5 * hour)) == {"Always", "Until two"}


def test_the_airspace_holds_the_active_zones_and_their_windows() -> None:
    zone_upsert(
        name="West",
        reason="stadium",
        geometry=square(-122.35, 47.60),
        valid_from=T0,
        valid_until=T0 + timedelta(hours=3),
    )
    zone_upsert(name="East", reason="stadium", geometry=square(-122.30, 47.60), active=False)

    airspace = airspace_get()

    west = airspace.zone_at(IN_WEST, start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=1))
    assert west is not None and west.name == "West"
    assert (
        airspace.zone_at(IN_WEST, start=T0 + timedelta(hours=4), end=T0 + timedelta(hours=5))
        is None
    )
    assert airspace.zone_at(IN_EAST) is None


def test_the_airspace_is_rebuilt_after_a_change_and_only_then(
    clock: Clock, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        west, _ = zone_upsert(name="West", reason="stadium", geometry=square(-122.35, 47.60))
    first = airspace_get()
    assert first.zone_at(IN_WEST) is not None

    clock.now += 10
    assert airspace_get() is first  # nothing changed: the same airspace, not rebuilt

    with django_capture_on_commit_callbacks(execute=True):
        zone_upsert(name="East", reason="airport", geometry=square(-122.30, 47.60))
    assert airspace_get() is first  # Redis is read at most once a second
    clock.now += 1.01
    second = airspace_get()
    assert second is not first
    east = second.zone_at(IN_EAST)
    assert east is not None and east.name == "East"

    with django_capture_on_commit_callbacks(execute=True):
        zones_activate(zone_ids=[west.pk], active=False)
    clock.now += 1.01
    third = airspace_get()
    assert third is not second
    assert third.zone_at(IN_WEST) is None


def test_a_change_that_is_not_committed_does_not_rebuild_the_airspace(
    clock: Clock, django_capture_on_commit_callbacks: Any
) -> None:
    first = airspace_get()
    with django_capture_on_commit_callbacks(execute=False):
        zone_upsert(name="West", reason="stadium", geometry=square(-122.35, 47.60))
    clock.now += 5
    assert airspace_get() is first


def test_without_redis_the_airspace_is_rebuilt_from_the_database_every_five_seconds(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = airspace_get()

    def down(alias: str) -> Any:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(selectors, "get_redis_connection", down)
    # Written while Redis is down: no process hears of it.
    zone_upsert(name="West", reason="stadium", geometry=square(-122.35, 47.60))

    clock.now += 2
    assert airspace_get() is first  # built 2 s ago: not yet
    clock.now += 2
    assert airspace_get() is first
    clock.now += 1.5
    rebuilt = airspace_get()
    assert rebuilt is not first
    assert rebuilt.zone_at(IN_WEST) is not None
    clock.now += 3
    assert airspace_get() is rebuilt


def test_a_change_whose_signal_was_lost_is_seen_within_a_minute(clock: Clock) -> None:
    first = airspace_get()
    # Written without its version bump (the callbacks of the test's transaction never run).
    zone_upsert(name="West", reason="stadium", geometry=square(-122.35, 47.60))
    clock.now += 30
    assert airspace_get() is first
    clock.now += 31
    assert airspace_get().zone_at(IN_WEST) is not None


def test_the_margin_comes_from_the_settings(settings: Any) -> None:
    zone_upsert(name="West", reason="stadium", geometry=square(-122.35, 47.60))
    # A line about 300 m east of the square: clear of a 50 m margin, not of a 500 m one.
    south, north = Point(lat=47.59, lon=-122.336), Point(lat=47.62, lon=-122.336)

    settings.AIRSPACE_MARGIN_M = 50.0
    assert airspace_get().route(south, north) == [south, north]

    settings.AIRSPACE_MARGIN_M = 500.0
    selectors.airspace_cache_clear()
    assert len(airspace_get().route(south, north)) > 2


def test_a_rebuild_that_finds_the_same_zones_keeps_the_airspace_and_its_caches(
    clock: Clock, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        west, _ = zone_upsert(name="West", reason="stadium", geometry=square(-122.35, 47.60))
    first = airspace_get()
    # A route around the zone fills the airspace's caches (its area, the zone's obstacle).
    assert len(first.route(Point(47.605, -122.37), Point(47.605, -122.33))) > 2
    assert first._areas

    clock.now += 61  # the rebuild due every minute, with nothing changed
    assert airspace_get() is first

    # Switched off, then on again: the airspace without it, then the one with it once more.
    with django_capture_on_commit_callbacks(execute=True):
        zones_activate(zone_ids=[west.pk], active=False)
    clock.now += 1.01
    without = airspace_get()
    assert without is not first and without.zone_at(IN_WEST) is None
    with django_capture_on_commit_callbacks(execute=True):
        zones_activate(zone_ids=[west.pk], active=True)
    clock.now += 1.01
    assert airspace_get() is first

    # The same zones with another shape make another airspace; the process keeps two.
    with django_capture_on_commit_callbacks(execute=True):
        zone_upsert(name="West", reason="stadium", geometry=square(-122.30, 47.60))
    clock.now += 1.01
    moved = airspace_get()
    assert moved is not first and moved.zone_at(IN_EAST) is not None
    assert moved.zone_at(IN_WEST) is None
    with django_capture_on_commit_callbacks(execute=True):
        zones_activate(zone_ids=[west.pk], active=False)
    clock.now += 1.01
    assert airspace_get() is not without  # three sets since: the one without it was let go
    assert len(selectors._kept) == selectors.KEEP_AIRSPACES


def test_the_kept_airspaces_are_told_apart_by_margin(settings: Any) -> None:
    zone_upsert(name="West", reason="stadium", geometry=square(-122.35, 47.60))
    settings.AIRSPACE_MARGIN_M = 50.0
    narrow = airspace_get()
    settings.AIRSPACE_MARGIN_M = 500.0
    selectors._built = None  # the next call rebuilds, keeping what was built
    wide = airspace_get()
    assert wide is not narrow and wide.margin_m == 500.0
    settings.AIRSPACE_MARGIN_M = 50.0
    selectors._built = None
    assert airspace_get() is narrow

"""Reads of no-fly zones, and the airspace every route is planned in.

`airspace_get()` is on the path of every quote and delivery, so each process keeps the
Airspace it built (zones projected, buffered and indexed once) and rebuilds it only when a zone
changed: the services INCR the Redis counter `airspace:version` after each committed change,
and this reads it at most once a second.

An Airspace fills caches as routes are planned (projected zones, merged obstacles, the edges
between them), and its first thousand routes cost about twice what later ones do. A rebuild
that finds the same zones (the rebuild due every minute, a zone switched off and on again)
takes the Airspace built before for them, caches and all: processes keep the last
KEEP_AIRSPACES, by what they hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db.models import Q, QuerySet
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from airspace.models import NoFlyZone
from airspace.routing import Airspace, Zone
from portal.errors import NotFound

logger = logging.getLogger(__name__)

VERSION_KEY = "airspace:version"
# How often a process asks Redis whether the zones changed.
VERSION_CHECK_SECONDS = 1.0
# With Redis unreachable, how often a process rebuilds from the database instead.
FALLBACK_REBUILD_SECONDS = 5.0
# A process rebuilds at least this often whatever the counter says: a change whose INCR was
# lost (Redis down at that moment, or restarted and its counter back at an old value) still
# reaches every process within a minute.
MAX_AGE_SECONDS = 60.0

# Airspaces a process keeps, by their zones and margin: the one in use and the one before.
KEEP_AIRSPACES = 2

# The monotonic clock the cache goes by (tests move it forward instead of sleeping).
clock: Callable[[], float] = time.monotonic


def zones_active(
    *, start: datetime | None = None, end: datetime | None = None
) -> QuerySet[NoFlyZone]:
    """Active zones in force at some moment of [start, end] (an open bound: any time).

    A zone's window runs from `valid_from` (included) to `valid_until` (excluded); a zone
    without a window is in force whenever it is active.
    """
    zones = NoFlyZone.objects.filter(active=True)
    if end is not None:
        zones = zones.filter(Q(valid_from__isnull=True) | Q(valid_from__lte=end))
    if start is not None:
        zones = zones.filter(Q(valid_until__isnull=True) | Q(valid_until__gt=start))
    return zones


def zones_list(*, active: bool | None = None) -> QuerySet[NoFlyZone]:
    zones = NoFlyZone.objects.all()
    if active is not None:
        zones = zones.filter(active=active)
    return zones.order_by("name")


def zone_get(*, zone_id: UUID | str) -> NoFlyZone:
    try:
        zone = NoFlyZone.objects.filter(pk=UUID(str(zone_id))).first()
    except ValueError:
        zone = None
    if zone is None:
        raise NotFound(f"no zone {zone_id}")
    return zone


# --- the airspace, cached per process ---------------------------------------------------------


@dataclass(frozen=True)
class _Built:
    airspace: Airspace
    version: int | None  # the counter it was built at; None: Redis was unreachable
    built_at: float
    next_check: float


_built: _Built | None = None
_refreshing = threading.Lock()
_kept: OrderedDict[str, Airspace] = OrderedDict()


def airspace_get() -> Airspace:
    """The active zones as an Airspace (margin: AIRSPACE_MARGIN_M), windows and all.

    Zones outside their window are in it: `Airspace` itself ignores a zone at the times it is
    not in force, so one Airspace serves every departure time.
    """
    built = _built
    if built is not None and clock() < built.next_check:
        return built.airspace
    # One thread checks (and rebuilds); the others fly with the airspace they have meanwhile.
    if not _refreshing.acquire(blocking=built is None):
        assert built is not None
        return built.airspace
    try:
        return _refresh().airspace
    finally:
        _refreshing.release()


def airspace_cache_clear() -> None:
    """Forget this process's airspace: the next `airspace_get()` rebuilds it (tests)."""
    global _built
    _built = None
    _kept.clear()


def _refresh() -> _Built:
    global _built
    built = _built
    now = clock()
    if built is not None and now < built.next_check:
        return built  # another thread refreshed it while this one waited
    # The counter is read before the zones: a change committed in between bumps it again, so
    # the next check rebuilds; the other order could miss that change for good.
    version = _version_read()
    if version is not None:
        if (
            built is not None
            and built.version == version
            and now - built.built_at < MAX_AGE_SECONDS
        ):
            _built = replace(built, next_check=now + VERSION_CHECK_SECONDS)
        else:
            _built = _build(version=version, now=now, next_check=now + VERSION_CHECK_SECONDS)
    elif built is not None and now - built.built_at < FALLBACK_REBUILD_SECONDS:
        # Redis is down: do not ask it again (each try may wait for its timeout) before a
        # rebuild from the database is due anyway.
        _built = replace(built, next_check=built.built_at + FALLBACK_REBUILD_SECONDS)
    else:
        _built = _build(version=None, now=now, next_check=now + FALLBACK_REBUILD_SECONDS)
    return _built


def _version_read() -> int | None:
    try:
        value = get_redis_connection("default").get(VERSION_KEY)
        return int(value or 0)
    except (RedisError, ValueError) as exc:
        logger.warning("airspace version unreadable (%s); rebuilding from the database", exc)
        return None


def _build(*, version: int | None, now: float, next_check: float) -> _Built:
    zones = [
        Zone(
            id=str(zone.pk),
            name=zone.name,
            geometry=zone.geometry,
            valid_from=zone.valid_from,
            valid_until=zone.valid_until,
        )
        for zone in zones_active().only("id", "name", "geometry", "valid_from", "valid_until")
    ]
    margin_m = float(getattr(settings, "AIRSPACE_MARGIN_M", 50.0))
    key = _key(zones, margin_m)
    airspace = _kept.pop(key, None)
    if airspace is None:
        airspace = Airspace(zones, margin_m=margin_m)
    _kept[key] = airspace  # the newest last
    while len(_kept) > KEEP_AIRSPACES:
        _kept.popitem(last=False)
    return _Built(airspace=airspace, version=version, built_at=now, next_check=next_check)


def _key(zones: list[Zone], margin_m: float) -> str:
    """What an Airspace is made of (its zones, in their order, and the margin), as a digest."""
    made_of = [[z.id, z.name, z.geometry, _iso(z.valid_from), _iso(z.valid_until)] for z in zones]
    text = json.dumps([margin_m, made_of], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()

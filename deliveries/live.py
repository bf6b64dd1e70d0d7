"""The live status of each delivery in Redis, a copy of the database for fast polling.

Written after the database commits; read by the status endpoint and the tracking page, which
fall back to the database (and refill Redis) when the copy is missing or Redis is down.

Every copy carries a version, (the delivery's version, the time of what it describes in ms):
a write with an older version than the stored copy's is dropped, so a late write (a worker's
`assigned` after the business cancelled, a telemetry report that arrived late) never takes the
status back in time. A write that lands is published on `delivery:{id}:live` for live feeds.

A process whose write fails (Redis unreachable) remembers the delivery and deletes its copy at
its next use of the live copies that works (a write or a read), so that readers fall back to
the database and refill it: otherwise the copy from before the outage, `at_dropoff` say, would
be served as the status of a delivery since delivered until its TTL ran out a week later. A
process that dies before Redis comes back leaves its stale copies to that TTL.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from django_redis import get_redis_connection

from deliveries.models import Delivery
from deliveries.reasons import customer_reason
from portal.timefmt import iso

logger = logging.getLogger(__name__)
TTL_SECONDS = 7 * 24 * 3600

# KEYS: the status key, the channel. ARGV: version, time (ms), the document, the TTL.
# The stored value is "version,time_ms\n<document>", so the script compares without JSON.
_WRITE = """
local stored = redis.call('GET', KEYS[1])
local version, t = tonumber(ARGV[1]), tonumber(ARGV[2])
if stored then
  local sv, st = string.match(stored, '^(%d+),(%d+)\\n')
  sv, st = tonumber(sv), tonumber(st)
  if sv and (sv > version or (sv == version and st >= t)) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ',' .. ARGV[2] .. '\\n' .. ARGV[3], 'EX', ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""
_scripts: dict[int, Any] = {}

# Deliveries whose copy this process could neither write nor delete (see the module's doc).
_unwritten: set[str] = set()
_unwritten_lock = threading.Lock()
UNWRITTEN_MAX = 100_000


def status_key(delivery_id: UUID | str) -> str:
    return f"delivery:{delivery_id}:status"


def channel(delivery_id: UUID | str) -> str:
    return f"delivery:{delivery_id}:live"


def status_of(
    delivery: Delivery,
    drone_location: tuple[float, float, float] | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status document, from the database record (and a position, when known)."""
    location: dict[str, Any] | None = None
    if isinstance(drone_location, dict):
        location = drone_location
    elif drone_location is not None:
        location = {"lat": drone_location[0], "lon": drone_location[1], "alt_m": drone_location[2]}
    elif delivery.drone_id and delivery.status not in (
        Delivery.Status.REQUESTED,
        Delivery.Status.DELIVERED,
        Delivery.Status.CANCELLED,
        Delivery.Status.FAILED,
    ):
        drone = delivery.drone
        if drone is not None:
            location = {"lat": drone.lat, "lon": drone.lon, "alt_m": drone.alt_m}
    if location is not None:
        location = {
            "lat": location["lat"],
            "lon": location["lon"],
            "alt_m": location.get("alt_m"),
            "heading": location.get("heading"),
            "ground_speed_mps": location.get("ground_speed_mps"),
            "at": location.get("at"),
        }
    return {
        "status": delivery.status,
        "drone_location": location,
        "pickup_eta": iso(delivery.pickup_eta),
        "dropoff_eta": iso(delivery.dropoff_eta),
        "updated_at": iso(delivery.updated_at),
        # Customers follow this (the public tracking page and feed): the workflow's reasons in
        # their words, never an operator's note or an error.
        "failure_reason": customer_reason(delivery.failure_reason)
        if delivery.failure_reason
        else None,
    }


def _script() -> Any:
    redis = get_redis_connection("default")
    script = _scripts.get(id(redis))
    if script is None:
        script = _scripts[id(redis)] = redis.register_script(_WRITE)
    return script


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def status_write(
    delivery: Delivery,
    drone_location: tuple[float, float, float] | dict[str, Any] | None = None,
    *,
    at: datetime | None = None,
) -> None:
    """Store the status in Redis once the current transaction (if any) has committed, unless
    Redis holds a newer one. `at`: the time the status describes (default now)."""
    document = json.dumps(status_of(delivery, drone_location))
    version, t = delivery.version, _ms(at or timezone.now())

    def write() -> None:
        try:
            redis = get_redis_connection("default")
            _repair(redis)
            _script()(
                keys=[status_key(delivery.id), channel(delivery.id)],
                args=[version, t, document, TTL_SECONDS],
            )
        except Exception as exc:  # noqa: BLE001 - Redis is a copy; readers fall back to the database
            logger.warning("live status of %s not written to Redis: %s", delivery.id, exc)
            _remember([delivery.id])

    transaction.on_commit(write)


def statuses_write(writes: Iterable[tuple[UUID, int, datetime, dict[str, Any]]]) -> None:
    """Several (delivery id, version, time, document) at once, in one round trip (telemetry)."""
    writes = list(writes)
    if not writes:
        return
    try:
        script = _script()
        redis = get_redis_connection("default")
        _repair(redis)
        pipeline = redis.pipeline(transaction=False)
        for delivery_id, version, at, document in writes:
            script(
                keys=[status_key(delivery_id), channel(delivery_id)],
                args=[version, _ms(at), json.dumps(document), TTL_SECONDS],
                client=pipeline,
            )
        pipeline.execute()
    except Exception as exc:  # noqa: BLE001 - Redis is a copy; readers fall back to the database
        logger.warning("live statuses of %d deliveries not written to Redis: %s", len(writes), exc)
        _remember([delivery_id for delivery_id, *_ in writes])


def statuses_write_after_commit(
    writes: Iterable[tuple[UUID, int, datetime, dict[str, Any]]],
) -> None:
    """statuses_write once the current transaction has committed (a round of assignments)."""
    writes = list(writes)
    transaction.on_commit(lambda: statuses_write(writes))


def _remember(delivery_ids: list[UUID]) -> None:
    """Copies a write could not update, to delete at this process's next use of Redis (not
    now: Redis is most likely unreachable, and asking again would wait for its timeout)."""
    with _unwritten_lock:
        room = max(0, UNWRITTEN_MAX - len(_unwritten))
        _unwritten.update(str(delivery_id) for delivery_id in delivery_ids[:room])
    if room < len(delivery_ids):
        logger.error(
            "%d live statuses may stay stale in Redis: more than %d remembered",
            len(delivery_ids) - room,
            UNWRITTEN_MAX,
        )


def _repair(redis: Any) -> None:
    """Delete the copies this process could not write or delete before, now that Redis
    answers (raises, keeping them, when it does not)."""
    if not _unwritten:
        return
    with _unwritten_lock:
        ids = list(_unwritten)
    for first in range(0, len(ids), 1000):
        redis.delete(*(status_key(delivery_id) for delivery_id in ids[first : first + 1000]))
    with _unwritten_lock:
        _unwritten.difference_update(ids)
    logger.info("deleted %d live statuses not written while Redis was unreachable", len(ids))


def _document(raw: bytes | str) -> dict[str, Any]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    _, _, document = text.partition("\n")
    parsed: dict[str, Any] = json.loads(document)
    return parsed


def status_read(delivery_id: UUID | str) -> dict[str, Any] | None:
    try:
        redis = get_redis_connection("default")
        _repair(redis)
        raw = redis.get(status_key(delivery_id))
    except Exception as exc:  # noqa: BLE001 - fall back to the database
        logger.warning("live status of %s not read from Redis: %s", delivery_id, exc)
        return None
    return _document(raw) if raw else None

"""The live status of each delivery in Redis, a copy of the database for fast polling.

Written after the database commits; read by the status endpoint and the tracking page, which
fall back to the database (and refill Redis) when the copy is missing or Redis is down.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import transaction
from django_redis import get_redis_connection

from deliveries.models import Delivery

logger = logging.getLogger(__name__)
TTL_SECONDS = 7 * 24 * 3600


def status_key(delivery_id: UUID | str) -> str:
    return f"delivery:{delivery_id}:status"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status_of(
    delivery: Delivery, drone_location: tuple[float, float, float] | None = None
) -> dict[str, Any]:
    """The status document, from the database record."""
    location = None
    if drone_location is not None:
        location = {"lat": drone_location[0], "lon": drone_location[1], "alt_m": drone_location[2]}
    elif delivery.drone_id and delivery.status not in (
        Delivery.Status.REQUESTED,
        Delivery.Status.DELIVERED,
    ):
        drone = delivery.drone
        if drone is not None:
            location = {"lat": drone.lat, "lon": drone.lon, "alt_m": drone.alt_m}
    return {
        "status": delivery.status,
        "drone_location": location,
        "pickup_eta": _iso(delivery.pickup_eta),
        "dropoff_eta": _iso(delivery.dropoff_eta),
        "updated_at": _iso(delivery.updated_at),
        "failure_reason": delivery.failure_reason or None,
    }


def status_write(
    delivery: Delivery, drone_location: tuple[float, float, float] | None = None
) -> None:
    """Store the status in Redis once the current transaction (if any) has committed."""
    document = status_of(delivery, drone_location)

    def write() -> None:
        try:
            get_redis_connection("default").set(
                status_key(delivery.id), json.dumps(document), ex=TTL_SECONDS
            )
        except Exception as exc:  # noqa: BLE001 - Redis is a copy; readers fall back to the database
            logger.warning("live status of %s not written to Redis: %s", delivery.id, exc)
            _forget(delivery.id)

    transaction.on_commit(write)


def _forget(delivery_id: UUID) -> None:
    # Redis down: nothing stale can be read from it either.
    with contextlib.suppress(Exception):
        get_redis_connection("default").delete(status_key(delivery_id))


def status_read(delivery_id: UUID) -> dict[str, Any] | None:
    try:
        raw = get_redis_connection("default").get(status_key(delivery_id))
    except Exception as exc:  # noqa: BLE001 - fall back to the database
        logger.warning("live status of %s not read from Redis: %s", delivery_id, exc)
        return None
    return json.loads(raw) if raw else None

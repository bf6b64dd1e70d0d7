from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.utils import timezone
from pymongo import UpdateOne

from packages.store import packages_collection


def package_upsert(
    *,
    package_id: UUID,
    business_id: UUID,
    delivery_id: UUID,
    size: str,
    weight_kg: float,
    tag: str,
) -> dict[str, Any]:
    """Create or update the package document; running it twice leaves one document."""
    packages_collection().update_one(
        *_upsert(package_id, business_id, delivery_id, size, weight_kg, tag, timezone.now()),
        upsert=True,
    )
    return {"_id": str(package_id), "tag": tag, "size": size, "weight_kg": weight_kg}


def packages_upsert(deliveries: Iterable[Any]) -> int:
    """package_upsert for the package of each delivery, in one round trip; how many."""
    now = timezone.now()
    writes = [
        UpdateOne(
            *_upsert(
                d.package_id,
                d.business_id,
                d.id,
                d.package_size,
                d.package_weight_kg,
                d.package_tag or d.package_size,
                now,
            ),
            upsert=True,
        )
        for d in deliveries
    ]
    if writes:
        packages_collection().bulk_write(writes, ordered=False)
    return len(writes)


def _upsert(
    package_id: UUID,
    business_id: UUID,
    delivery_id: UUID,
    size: str,
    weight_kg: float,
    tag: str,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"_id": str(package_id)},
        {
            "$set": {
                "tag": tag,
                "size": size,
                "weight_kg": weight_kg,
                "business_id": str(business_id),
                "delivery_id": str(delivery_id),
                "updated_at": now,
            },
            "$setOnInsert": {"created_at": now},
        },
    )

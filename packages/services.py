from __future__ import annotations

from typing import Any
from uuid import UUID

from django.utils import timezone

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
    now = timezone.now()
    packages_collection().update_one(
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
        upsert=True,
    )
    return {"_id": str(package_id), "tag": tag, "size": size, "weight_kg": weight_kg}

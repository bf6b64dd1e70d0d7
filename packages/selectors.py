from __future__ import annotations

from typing import Any
from uuid import UUID

from packages.store import packages_collection


def package_get(*, package_id: UUID) -> dict[str, Any] | None:
    return packages_collection().find_one({"_id": str(package_id)})


def packages_by_tag(*, tag: str, limit: int = 100) -> list[dict[str, Any]]:
    return list(packages_collection().find({"tag": tag}).limit(limit))

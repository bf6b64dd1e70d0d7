"""Reads of deliveries, always scoped to the calling business."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from deliveries import live
from deliveries.models import Delivery
from portal.errors import NotFound


def deliveries_of(*, business_id: UUID) -> QuerySet[Delivery]:
    """The one place a business's view of deliveries starts: nobody else's are in it."""
    return Delivery.objects.filter(business_id=business_id)


def delivery_get(*, business_id: UUID, delivery_id: UUID) -> Delivery:
    delivery = (
        deliveries_of(business_id=business_id)
        .select_related("drone")
        .prefetch_related("events")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise NotFound("no such delivery")
    return delivery


def delivery_list(*, business_id: UUID, status: str | None = None) -> QuerySet[Delivery]:
    deliveries = deliveries_of(business_id=business_id).select_related("drone")
    if status:
        deliveries = deliveries.filter(status=status)
    return deliveries.order_by("-created_at", "-id")


def delivery_status_get(*, business_id: UUID, delivery_id: UUID) -> dict[str, Any]:
    """The live status from Redis; from the database (refilling Redis) when it is not there."""
    # The ownership check comes first and is one indexed lookup; the live copy carries no owner.
    if not deliveries_of(business_id=business_id).filter(pk=delivery_id).exists():
        raise NotFound("no such delivery")
    cached = live.status_read(delivery_id)
    if cached is not None:
        return cached
    delivery = Delivery.objects.select_related("drone").get(pk=delivery_id)
    live.status_write(delivery)
    return live.status_of(delivery)


def delivery_by_tracking_token(*, token: str) -> Delivery:
    delivery = Delivery.objects.select_related("drone").filter(tracking_token=token).first()
    if delivery is None:
        raise NotFound("no delivery has this tracking link")
    return delivery

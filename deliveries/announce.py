"""What a delivery's changes announce: the business's signed webhooks and the customers' emails.

Called by the lifecycle in the transaction of every stage change, and by telemetry when it
writes new ETAs, so that what must be sent is stored with the change itself (the outbox
pattern): workers send it after commit, with retries, and a change rolled back announces
nothing. Each announcer records, it never sends here.
"""

from __future__ import annotations

from datetime import datetime

from deliveries.models import Delivery
from notifications.services import notifications_record, notifications_record_many
from webhooks import services as webhooks


def stage_changed(delivery: Delivery, *, previous: str, at: datetime) -> None:
    """`delivery` (already updated) has just moved from `previous` to `delivery.status`."""
    notifications_record(delivery, previous=previous)
    webhooks.webhooks_stage_record(delivery, previous=previous, at=at)


def stage_changed_together(deliveries: list[Delivery], *, previous: str, at: datetime) -> None:
    """stage_changed for several deliveries that made the same change in one transaction."""
    notifications_record_many(deliveries, previous=previous)
    for delivery in deliveries:
        webhooks.webhooks_stage_record(delivery, previous=previous, at=at)


def eta_changed(delivery: Delivery, *, at: datetime) -> None:
    """Telemetry has just written `delivery`'s new ETAs to the database."""
    webhooks.webhooks_eta_record(delivery, at=at)

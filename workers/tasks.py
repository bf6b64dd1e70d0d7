"""Celery tasks: thin, each translating a message into service calls.

Tasks take ids and re-read the world, so a redelivered message is harmless; that is what makes
`acks_late` with `reject_on_worker_lost` (settings) safe for all of them.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from celery import Task, shared_task

from deliveries import services
from deliveries.models import Delivery
from drones import telemetry
from notifications import services as notifications
from packages.services import package_upsert
from portal import telemetry as tracing
from webhooks import services as webhooks

logger = logging.getLogger(__name__)

MAX_RETRIES = 8


@shared_task(name="workers.ping")
def ping() -> str:
    """Round trip through the broker and a worker, used by tests and operators."""
    return "pong"


@shared_task(bind=True, name=services.WORKFLOW_TASK, max_retries=MAX_RETRIES)
def delivery_process(self: Task, delivery_id: str, attempt: int = 0) -> str:
    """The delivery workflow: package document, drone, live status (the customer's emails are
    recorded by the stage change, notifications).

    A step that raises is retried with exponential backoff; when the retries run out the
    delivery is failed with the reason and its drone released, for operators to retry.
    """
    try:
        return _delivery_process(UUID(delivery_id), attempt)
    except Exception as exc:
        if self.request.retries >= MAX_RETRIES:
            logger.exception("delivery %s: workflow gave up", delivery_id)
            services.delivery_fail(
                delivery_id=UUID(delivery_id),
                # The error itself goes to the log above, not to the business or its customers.
                reason=f"gave up after {MAX_RETRIES} retries: a service it needs kept failing",
            )
            return "failed"
        countdown = min(300, 2 ** (self.request.retries + 1))
        logger.warning("delivery %s: step failed, retry in %s s: %s", delivery_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc


def _delivery_process(delivery_id: UUID, attempt: int) -> str:
    # get() rather than first(), which orders by the model's ordering: compiling that ORDER BY
    # cost as much as the rest of the read.
    tracing.annotate(delivery_id=delivery_id, attempt=attempt)
    try:
        with tracing.step("load", delivery_id=delivery_id):
            delivery = Delivery.objects.get(pk=delivery_id)
    except Delivery.DoesNotExist:
        return "gone"
    tracing.annotate(business_id=delivery.business_id)
    if delivery.status == Delivery.Status.REQUESTED:
        ids = {"delivery_id": delivery_id, "business_id": delivery.business_id}
        with tracing.step("package", **ids, package_id=delivery.package_id):
            package_upsert(
                package_id=delivery.package_id,
                business_id=delivery.business_id,
                delivery_id=delivery.id,
                size=delivery.package_size,
                weight_kg=delivery.package_weight_kg,
                tag=delivery.package_tag or delivery.package_size,
            )
        # The drone, the schedule and the live status (the stage change writes it), and the
        # emails and webhooks the stage change records.
        with tracing.step("assign", **ids) as span:
            outcome = services.delivery_assign(
                delivery_id=delivery_id, attempt=attempt, delivery=delivery
            )
            if span is not None and span.is_recording():
                span.set_attribute("workflow.outcome", outcome.result)
                if outcome.delivery is not None and outcome.delivery.drone_id:
                    span.set_attribute("drone.id", str(outcome.delivery.drone_id))
        if outcome.delivery is not None:
            tracing.annotate(drone_id=outcome.delivery.drone_id)
        if outcome.result == "wait":
            delivery_process.apply_async(
                kwargs={"delivery_id": str(delivery_id), "attempt": outcome.attempt},
                countdown=outcome.retry_in,
            )
            return "waiting"
    return "done"


@shared_task(name="workers.outbox_relay")
def outbox_relay() -> int:
    return services.outbox_relay()


@shared_task(name="workers.deliveries_sweep")
def deliveries_sweep() -> int:
    return services.deliveries_sweep()


@shared_task(name="workers.deliveries_book_due")
def deliveries_book_due() -> int:
    return services.deliveries_book_due()


@shared_task(name="workers.drones_watch")
def drones_watch() -> int:
    return telemetry.drones_watch()


@shared_task(name="workers.flights_reroute")
def flights_reroute() -> int:
    return telemetry.flights_reroute()


@shared_task(name="workers.housekeeping")
def housekeeping() -> dict[str, Any]:
    return {
        "idempotency_records": services.idempotency_prune(),
        "outbox_messages": services.outbox_prune(),
    }


@shared_task(name="workers.notification_send")
def notification_send(notification_id: str) -> bool:
    """Send one stage email, once: the service claims it first, so a duplicate does nothing."""
    return notifications.notification_send(notification_id=UUID(notification_id))


@shared_task(name="workers.notifications_sweep")
def notifications_sweep() -> int:
    return notifications.notifications_sweep()


@shared_task(name="workers.notifications_housekeeping")
def notifications_housekeeping() -> int:
    return notifications.notifications_prune()


# --- webhooks ---------------------------------------------------------------------------------


@shared_task(name="workers.webhooks_dispatch")
def webhooks_dispatch() -> int:
    """Beat, every 2 s: claim the due webhook messages and hand each to a sender."""
    return webhooks.webhooks_dispatch(send=lambda message_id: webhook_send.delay(message_id))


@shared_task(name="workers.webhook_send")
def webhook_send(message_id: str) -> bool | None:
    """Send one claimed message; when it got through, its stream's next one follows at once."""
    sent = webhooks.webhook_message_send(message_id=message_id)
    if sent:
        for next_id in webhooks.webhook_stream_next(message_id=message_id):
            webhook_send.delay(next_id)
    return sent


@shared_task(name="workers.webhooks_housekeeping")
def webhooks_housekeeping() -> int:
    return webhooks.webhooks_prune()

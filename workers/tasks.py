"""Celery tasks: thin, each translating a message into service calls.

Tasks take ids and re-read the world, so a redelivered message is harmless; that is what makes
`acks_late` with `reject_on_worker_lost` (settings) safe for all of them.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from celery import Task, shared_task
from django.conf import settings

from deliveries import services
from deliveries.models import Delivery
from drones import telemetry
from notifications import services as notifications
from packages.services import package_upsert
from portal import outages
from portal import telemetry as tracing
from portal.yielding import run_yielding
from webhooks import services as webhooks

logger = logging.getLogger(__name__)

# An error that is not an outage (a bug, a refused write) is tried this many times, then the
# delivery fails; an outage is retried until the delivery's own deadline (below).
MAX_RETRIES = 8


@shared_task(name="workers.ping")
def ping() -> str:
    """Round trip through the broker and a worker, used by tests and operators."""
    return "pong"


@shared_task(bind=True, name=services.WORKFLOW_TASK)
def delivery_process(
    self: Task,
    delivery_id: str,
    attempt: int = 0,
    not_before: float | None = None,
    unrecorded: int = 0,
) -> str:
    """The delivery workflow: package document, drone, live status (the customer's emails are
    recorded by the stage change, notifications).

    A step that fails because a dependency is out of reach (MongoDB, Redis, the broker, the
    database, the mail server) is tried again with backoff until the delivery's own assignment
    deadline, however long the outage; any other error MAX_RETRIES times. Then the delivery
    fails, its drone released, with the error for operators (customers see plain words,
    deliveries.reasons). Every retry is a new attempt, taken by compare-and-swap on the
    delivery, so that a duplicate message or the sweeper's never runs a second chain.

    `not_before`: a wait longer than BROKER_MAX_COUNTDOWN_SECONDS (under the Service Bus lock)
    is taken in hops, each message publishing the next until then. `unrecorded`: how many
    times in a row this attempt found the database out of reach, so that its retry could not
    be recorded there (its backoff grows with it).
    """
    if not_before is not None and not_before - time.time() > 0.5:
        _publish_next(
            delivery_id,
            attempt,
            not_before - time.time(),
            retries=self.request.retries,
            unrecorded=unrecorded,
        )
        return "waiting"
    if _delivered_too_often(self, delivery_id):
        return "failed"
    try:
        return _delivery_process(UUID(delivery_id), attempt)
    except Exception as exc:
        transient = outages.transient(exc)
        retries = self.request.retries or 0
        detail = outages.describe(exc)
        if not transient and retries >= MAX_RETRIES:
            logger.exception("delivery %s: workflow gave up", delivery_id)
            services.delivery_fail(
                delivery_id=UUID(delivery_id),
                reason=f"{services.STEP_FAILED_REASON} {MAX_RETRIES + 1} times ({detail})",
            )
            return "failed"
        logger.warning("delivery %s: step failed, retrying: %s", delivery_id, detail)
        try:
            outcome = services.delivery_retry_later(
                delivery_id=UUID(delivery_id),
                attempt=attempt,
                reason=f"{services.UNAVAILABLE_REASON} ({detail})",
            )
        except Exception as again:
            if not outages.database_unavailable(again):
                raise
            # The database itself is out of reach, so the next attempt cannot be recorded: the
            # same attempt comes back through the broker after a backoff, instead of this
            # message ending here and the delivery waiting minutes for the sweeper.
            delay = min(
                settings.DELIVERY_RETRY_MAX_SECONDS,
                settings.DELIVERY_RETRY_BASE_SECONDS * 2 ** min(unrecorded, 12),
            )
            _publish_next(delivery_id, attempt, delay, retries=retries, unrecorded=unrecorded + 1)
            return "retrying"
        if outcome.result != "wait":
            return outcome.result
        _publish_next(
            delivery_id, outcome.attempt, outcome.retry_in, retries=0 if transient else retries + 1
        )
        return "retrying"


def _publish_next(
    delivery_id: str, attempt: int, delay: float, *, retries: int, unrecorded: int = 0
) -> None:
    """The workflow's next message in `delay` seconds: a countdown of at most
    BROKER_MAX_COUNTDOWN_SECONDS, and `not_before` for the rest. Unpublished (the broker down),
    the delivery's next_attempt_at brings the sweeper to it."""
    kwargs: dict[str, Any] = {
        "delivery_id": delivery_id,
        "attempt": attempt,
        "not_before": time.time() + delay,
    }
    if unrecorded:
        kwargs["unrecorded"] = unrecorded
    try:
        delivery_process.apply_async(  # type: ignore[call-arg] # retries: Celery's own option
            kwargs=kwargs,
            countdown=max(0.0, min(delay, settings.BROKER_MAX_COUNTDOWN_SECONDS)),
            retries=retries,
        )
    except Exception as exc:  # noqa: BLE001 - the sweeper republishes it
        logger.warning(
            "delivery %s: next message not published, the sweeper will: %s", delivery_id, exc
        )


def _delivered_too_often(task: Task, delivery_id: str) -> bool:
    """The broker's dead-letter count, kept by us: a message delivered WORKFLOW_MAX_DELIVERIES
    times without finishing (its worker killed each time, a lock lost each time) fails its
    delivery for operators to see and retry, instead of going round for ever. Counted in Redis
    per message id (a redelivery keeps its id); without Redis, not counted."""
    from django_redis import get_redis_connection

    message_id = task.request.id
    if not message_id or task.request.is_eager:
        return False
    try:
        client = get_redis_connection("default")
        key = f"workflow:deliveries:{message_id}"
        # One round trip: the count, and a day to live from the latest delivery.
        count = int(
            client.pipeline(transaction=False).incr(key).expire(key, 24 * 3600).execute()[0]
        )
    except Exception:  # noqa: BLE001 - Redis down: the broker's own count still applies
        return False
    if count <= settings.WORKFLOW_MAX_DELIVERIES:
        return False
    logger.error("delivery %s: message %s delivered %s times", delivery_id, message_id, count)
    services.delivery_fail(
        delivery_id=UUID(delivery_id),
        reason=f"{services.DEAD_LETTER_REASON} ({count} deliveries of message {message_id})",
    )
    return True


def _delivery_process(delivery_id: UUID, attempt: int) -> str:
    tracing.annotate(delivery_id=delivery_id, attempt=attempt)
    with tracing.step("load", delivery_id=delivery_id):
        # Most messages find their delivery assigned already by another's round: its status and
        # attempt alone say so, for less than loading the row through the ORM.
        state = services.delivery_state(delivery_id)
        if state is None:
            return "gone"
        if state[0] != Delivery.Status.REQUESTED:
            return "done"
        if state[1] != attempt:
            return "stale"  # a newer attempt has its own message: one chain per delivery
        # get() rather than first(), which orders by the model's ordering: compiling that
        # ORDER BY cost as much as the rest of the read.
        try:
            delivery = Delivery.objects.get(pk=delivery_id)
        except Delivery.DoesNotExist:
            return "gone"
    tracing.annotate(business_id=delivery.business_id)
    if delivery.status == Delivery.Status.REQUESTED and delivery.attempts != attempt:
        return "stale"  # a newer attempt has its own message: one chain per delivery
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
            # With the new deliveries waiting behind it when there are (a round), else alone.
            outcome = services.deliveries_assign_round(
                first=delivery, attempt=attempt
            ) or services.delivery_assign(
                delivery_id=delivery_id, attempt=attempt, delivery=delivery
            )
            if span is not None and span.is_recording():
                span.set_attribute("workflow.outcome", outcome.result)
                if outcome.delivery is not None and outcome.delivery.drone_id:
                    span.set_attribute("drone.id", str(outcome.delivery.drone_id))
        if outcome.delivery is not None:
            tracing.annotate(drone_id=outcome.delivery.drone_id)
        if outcome.result == "wait":
            _publish_next(str(delivery_id), outcome.attempt, outcome.retry_in, retries=0)
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


@shared_task(name="workers.notifications_send")
def notifications_send(notification_ids: list[str]) -> int:
    """Send the stage emails of one change, each once: the service claims them first, so a
    duplicate message does nothing."""
    return notifications.notifications_send(notification_ids=[UUID(i) for i in notification_ids])


@shared_task(name="workers.notification_send")
def notification_send(notification_id: str) -> bool:
    """One stage email: the messages published before notifications_send, still in a queue
    when a worker of this version starts."""
    return notifications.notification_send(notification_id=UUID(notification_id))


@shared_task(name="workers.notifications_sweep")
def notifications_sweep() -> int:
    return notifications.notifications_sweep()


@shared_task(name="workers.notifications_housekeeping")
def notifications_housekeeping() -> int:
    return notifications.notifications_prune()


# --- webhooks ---------------------------------------------------------------------------------
# Bulk work: run where it yields the CPU to the workflow and to requests (portal/yielding.py).


@shared_task(name="workers.webhooks_dispatch")
def webhooks_dispatch() -> int:
    """Beat, every 2 s: claim the due webhook messages and hand them to senders in batches."""
    return run_yielding(
        lambda: webhooks.webhooks_dispatch(
            send_batch=lambda ids, until: webhooks_send.delay(ids, until.isoformat())
        )
    )


@shared_task(name="workers.webhooks_send")
def webhooks_send(message_ids: list[str], claimed_until: str) -> int:
    """Send a claimed batch; the next message of each stream that got through follows as the
    next batch, through the queue, so that other work gets its turn between batches."""
    following = run_yielding(
        lambda: webhooks.webhook_batch_send(
            message_ids=message_ids, claimed_until=datetime.fromisoformat(claimed_until)
        )
    )
    if following.ids and following.until is not None:
        webhooks_send.delay(following.ids, following.until.isoformat())
    return len(message_ids)


@shared_task(name="workers.webhook_send")
def webhook_send(message_id: str) -> bool | None:
    """One message (sent by the dispatcher before batches; kept for messages still queued)."""
    sent = run_yielding(lambda: webhooks.webhook_message_send(message_id=message_id))
    if sent:
        for next_id in webhooks.webhook_stream_next(message_id=message_id):
            webhook_send.delay(next_id)
    return sent


@shared_task(name="workers.webhooks_housekeeping")
def webhooks_housekeeping() -> int:
    return webhooks.webhooks_prune()

"""Sending in batches (webhooks.services): what a batch sends and records is what sending one
message at a time does, for a few queries per batch instead of some per message; connections
kept open; a claim honoured even when its lease ran out; two dispatchers at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries.models import Delivery
from tests.conftest import Tenant
from tests.webhooks.conftest import Receiver
from tests.webhooks.test_sending import FLIGHT, endpoint_for, fly, make_delivery
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookMessage

Status = Delivery.Status


def ids_of(deliveries: list[Delivery]) -> list[str]:
    return list(
        WebhookMessage.objects.filter(delivery_id__in=[d.pk for d in deliveries]).values_list(
            "id", flat=True
        )
    )


def test_a_batch_sends_and_records_what_one_at_a_time_does_in_a_few_queries(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    plain = [fly(make_delivery(tenant), [Status.ASSIGNED]) for _ in range(8)]
    batched = [fly(make_delivery(tenant), [Status.ASSIGNED]) for _ in range(8)]

    with CaptureQueriesContext(connection) as one_by_one:
        for message_id in ids_of(plain):
            assert services.webhook_message_send(message_id=message_id) is True
    claim = services.webhooks_claim()
    assert sorted(claim.ids) == sorted(ids_of(batched))  # the plain ones went already
    with CaptureQueriesContext(connection) as in_a_batch:
        sent = services.webhook_messages_send(message_ids=claim.ids, claimed_until=claim.until)

    assert sent == dict.fromkeys(claim.ids, True)
    # The same outcome: each message once, signed, delivered, its attempt kept.
    assert sorted(r.webhook_id for r in receiver.received) == sorted(ids_of(plain + batched))
    assert all(r.verified for r in receiver.received)
    assert set(WebhookMessage.objects.values_list("status", "attempts")) == {("delivered", 1)}
    codes = WebhookAttempt.objects.values_list("message_id", "status_code")
    assert sorted(codes) == sorted((i, 200) for i in ids_of(plain + batched))
    # One at a time pays several queries per message; a batch pays a few for all of them.
    assert len(one_by_one) >= 4 * len(plain)
    assert len(in_a_batch) <= 8, [q["sql"][:80] for q in in_a_batch.captured_queries]


def test_a_stream_drains_batch_after_batch_in_order(tenant: Tenant, receiver: Receiver) -> None:
    endpoint_for(tenant, receiver)
    deliveries = [fly(make_delivery(tenant)) for _ in range(3)]

    claim = services.webhooks_claim()
    assert len(claim.ids) == 3  # the head of each stream only
    batches = 0
    while claim.ids:
        assert claim.until is not None
        claim = services.webhook_batch_send(message_ids=claim.ids, claimed_until=claim.until)
        batches += 1

    assert batches == 3
    for delivery in deliveries:
        stream = [p["type"] for p in receiver.processed if p["data"]["id"] == str(delivery.pk)]
        assert stream == ["delivery.assigned", "delivery.picked_up", "delivery.delivered"]


def test_the_next_of_a_stream_is_claimed_only_when_pending_and_due(
    tenant: Tenant, receiver: Receiver
) -> None:
    # The stream's next message is looked up by its key and checked on the locked row: one
    # waiting out a backoff, or no longer pending, stays where it is.
    endpoint_for(tenant, receiver)
    ready, later, done = (fly(make_delivery(tenant)) for _ in range(3))

    def second(delivery: Delivery) -> WebhookMessage:
        return WebhookMessage.objects.filter(delivery_id=delivery.pk).order_by("sequence")[1]

    WebhookMessage.objects.filter(pk=second(later).pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    WebhookMessage.objects.filter(pk=second(done).pk).update(status=WebhookMessage.Status.FAILED)
    claim = services.webhooks_claim()
    assert len(claim.ids) == 3 and claim.until is not None

    following = services.webhook_batch_send(message_ids=claim.ids, claimed_until=claim.until)

    assert following.ids == [second(ready).pk]
    assert following.until is not None
    assert second(ready).next_attempt_at == following.until  # leased to this sender
    assert second(later).next_attempt_at > timezone.now() + timedelta(minutes=4)


@pytest.mark.parametrize("how", ["switched off", "disabled"])
def test_a_batch_claimed_before_its_endpoint_was_switched_off_sends_nothing_and_waits(
    tenant: Tenant, receiver: Receiver, how: str
) -> None:
    # A batch can wait in the queue after its claim; by the time it runs, the business may
    # have switched the endpoint off (or it was disabled for failing): nothing more is sent,
    # and the messages go out, in order, once it is on again.
    endpoint = endpoint_for(tenant, receiver)
    deliveries = [fly(make_delivery(tenant)) for _ in range(2)]
    claim = services.webhooks_claim()
    assert len(claim.ids) == 2 and claim.until is not None
    if how == "disabled":
        endpoint.disabled_at = timezone.now()
    endpoint.active = False
    endpoint.save(update_fields=["active", "disabled_at"])

    following = services.webhook_batch_send(message_ids=claim.ids, claimed_until=claim.until)

    assert following.ids == [] and receiver.received == []
    held = WebhookMessage.objects.filter(pk__in=claim.ids)
    assert {(m.status, m.attempts) for m in held} == {("pending", 0)}
    # Released from the lease (not waiting for it to run out), yet not claimed while off.
    assert all(m.next_attempt_at <= timezone.now() for m in held)
    assert services.webhooks_claim().ids == []

    endpoint.active, endpoint.disabled_at = True, None
    endpoint.save(update_fields=["active", "disabled_at"])
    services.webhooks_dispatch(rounds=3)

    for delivery in deliveries:
        stream = [p["type"] for p in receiver.processed if p["data"]["id"] == str(delivery.pk)]
        assert stream == ["delivery.assigned", "delivery.picked_up", "delivery.delivered"]


def test_connections_to_a_receiver_are_kept_between_messages_and_batches(
    tenant: Tenant, receiver: Receiver
) -> None:
    receiver.stop()
    receiver.keep_alive = True
    receiver.start()
    endpoint_for(tenant, receiver)
    for _ in range(12):
        fly(make_delivery(tenant), [Status.ASSIGNED])

    for message_id in ids_of(list(Delivery.objects.all()))[:4]:
        services.webhook_message_send(message_id=message_id)
    assert len(receiver.connections) == 1
    services.webhooks_dispatch(rounds=3)

    assert len(receiver.received) == 12
    assert len(receiver.connections) <= services.SEND_THREADS


def test_a_claim_that_ran_out_and_was_taken_again_is_sent_by_the_new_sender_only(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    for _ in range(3):
        fly(make_delivery(tenant), [Status.ASSIGNED])
    first = services.webhooks_claim()
    WebhookMessage.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    second = services.webhooks_claim()
    assert sorted(second.ids) == sorted(first.ids) and second.until != first.until

    assert services.webhook_messages_send(message_ids=first.ids, claimed_until=first.until) == {}
    sent = services.webhook_messages_send(message_ids=second.ids, claimed_until=second.until)

    assert sent == dict.fromkeys(second.ids, True)
    assert sorted(r.webhook_id for r in receiver.received) == sorted(first.ids)


def test_a_batch_picked_up_late_renews_its_claim_before_sending(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    fly(make_delivery(tenant), [Status.ASSIGNED])
    claim = services.webhooks_claim()
    nearly_out = timezone.now() + timedelta(seconds=2)
    WebhookMessage.objects.update(next_attempt_at=nearly_out)  # as if it waited 58 s

    assert services.webhook_messages_send(message_ids=claim.ids, claimed_until=nearly_out) == {
        claim.ids[0]: True
    }


def test_an_endpoint_failing_and_recovering_in_one_batch_keeps_the_last_word(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = endpoint_for(tenant, receiver)
    for _ in range(2):
        fly(make_delivery(tenant), [Status.ASSIGNED])
    claim = services.webhooks_claim()
    receiver.fail_next = 2
    services.webhook_messages_send(message_ids=claim.ids, claimed_until=claim.until)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None
    services.webhooks_dispatch(rounds=5)  # after the backoff (0 s in tests): both get through
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None
    assert set(WebhookMessage.objects.values_list("status", "attempts")) == {("delivered", 2)}


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_send_every_message_once_and_in_order(
    tenant: Tenant, receiver: Receiver
) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no row locks; the claim relies on PostgreSQL's")
    endpoint_for(tenant, receiver)
    deliveries = [fly(make_delivery(tenant), FLIGHT) for _ in range(6)]
    errors: list[BaseException] = []

    def dispatcher() -> None:
        try:
            for _ in range(40):
                services.webhooks_dispatch(limit=3, batch=2)
        except Exception as exc:  # noqa: BLE001 - reported by the test, in this thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    ids = [r.webhook_id for r in receiver.received]
    assert len(ids) == len(set(ids)) == 18
    for delivery in deliveries:
        stream = [p["type"] for p in receiver.processed if p["data"]["id"] == str(delivery.pk)]
        assert stream == ["delivery.assigned", "delivery.picked_up", "delivery.delivered"]

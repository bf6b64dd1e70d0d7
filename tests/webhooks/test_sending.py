"""Recording and sending webhooks, against a real local receiver and the test database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from deliveries import announce
from deliveries.api import delivery_document
from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery
from tests.conftest import Tenant
from tests.webhooks.conftest import Receiver, payload_of
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

Status = Delivery.Status
FLIGHT = [
    Status.ASSIGNED,
    Status.EN_ROUTE_TO_PICKUP,
    Status.AT_PICKUP,
    Status.EN_ROUTE_TO_DROPOFF,
    Status.AT_DROPOFF,
    Status.DELIVERED,
]


def make_delivery(tenant: Tenant) -> Delivery:
    return Delivery.objects.create(
        business=tenant.business,
        pickup_lat=47.6097,
        pickup_lon=-122.3422,
        dropoff_lat=47.6205,
        dropoff_lon=-122.3493,
        package_size=Delivery.Size.SMALL,
        package_weight_kg=2.0,
    )


def endpoint_for(tenant: Tenant, receiver: Receiver, **kwargs: Any) -> WebhookEndpoint:
    endpoint = services.webhook_endpoint_create(
        business_id=tenant.business.pk,
        url=receiver.url,
        events=kwargs.pop("events", list(services.EVENT_TYPES)),
        **kwargs,
    )
    receiver.secret = endpoint.secret
    return endpoint


def fly(delivery: Delivery, stages: Sequence[str] = FLIGHT) -> Delivery:
    for stage in stages:
        changes = (
            {"dropoff_eta": timezone.now() + timedelta(minutes=10)} if stage == "assigned" else {}
        )
        delivery = delivery_move(delivery, stage, changes=changes)
    return delivery


def send_all(rounds: int = 20) -> int:
    return services.webhooks_dispatch(rounds=rounds)


def test_a_flight_sends_assigned_picked_up_and_delivered_in_order_each_signed(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    delivery = fly(make_delivery(tenant))

    send_all()

    assert receiver.types() == ["delivery.assigned", "delivery.picked_up", "delivery.delivered"]
    assert all(r.verified for r in receiver.received)
    last = receiver.processed[-1]
    delivery.refresh_from_db()
    assert last["data"] == delivery_document(delivery)
    assert last["data"]["status"] == "delivered"
    assert WebhookMessage.objects.filter(status="delivered").count() == 3


def test_a_receiver_failing_twice_then_succeeding_processes_the_event_once(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    fly(make_delivery(tenant), [Status.ASSIGNED])
    receiver.fail_next = 2

    send_all()

    ids = [r.webhook_id for r in receiver.received]
    assert len(ids) == 3 and len(set(ids)) == 1 and ids[0].startswith("msg_")
    assert all(r.verified for r in receiver.received)
    assert receiver.types() == ["delivery.assigned"]
    codes = list(WebhookAttempt.objects.order_by("at", "id").values_list("status_code", flat=True))
    assert codes == [500, 500, 200]
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts) == ("delivered", 3)


def test_a_receiver_down_for_a_while_gets_every_event_in_order_once_back(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    receiver.stop()
    first, second = make_delivery(tenant), make_delivery(tenant)
    fly(first)
    fly(second, [Status.ASSIGNED, Status.CANCELLED])

    send_all(rounds=5)
    assert receiver.received == []
    # Only the head of each stream was tried: the later events wait behind it.
    tried = set(WebhookAttempt.objects.values_list("message__type", flat=True))
    assert tried == {"delivery.assigned"}
    assert WebhookAttempt.objects.exclude(error="").count() == WebhookAttempt.objects.count()

    receiver.start()
    send_all()

    def stream(delivery: Delivery) -> list[str]:
        return [p["type"] for p in receiver.processed if p["data"]["id"] == str(delivery.pk)]

    assert stream(first) == ["delivery.assigned", "delivery.picked_up", "delivery.delivered"]
    assert stream(second) == ["delivery.assigned", "delivery.cancelled"]
    assert len(receiver.received) == 5


def test_after_a_rotation_both_secrets_verify_for_24_hours_then_only_the_new(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = endpoint_for(tenant, receiver)
    old = endpoint.secret
    rotated = services.webhook_endpoint_rotate(
        business_id=tenant.business.pk, endpoint_id=endpoint.pk
    )
    assert rotated.secret != old and rotated.secret.startswith("whsec_")
    receiver.secret = rotated.secret
    delivery = fly(make_delivery(tenant), [Status.ASSIGNED])
    send_all()

    received = receiver.received[-1]
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(received.body, received.headers)
    Webhook(rotated.secret).verify(received.body, received.headers)

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_until=timezone.now() - timedelta(seconds=1)
    )
    fly(delivery, [Status.CANCELLED])
    send_all()
    received = receiver.received[-1]
    assert len(received.headers["webhook-signature"].split(" ")) == 1
    Webhook(rotated.secret).verify(received.body, received.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(old).verify(received.body, received.headers)


def test_a_rolled_back_stage_change_records_no_event(tenant: Tenant, receiver: Receiver) -> None:
    endpoint_for(tenant, receiver)
    delivery = make_delivery(tenant)
    with pytest.raises(RuntimeError), transaction.atomic():
        delivery_move(delivery, Status.ASSIGNED)
        assert WebhookMessage.objects.count() == 1  # recorded in the change's transaction
        raise RuntimeError("the rest of the step failed")
    assert WebhookMessage.objects.count() == 0


def test_one_message_per_active_endpoint_subscribed_to_the_event(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    endpoint_for(tenant, receiver, events=["delivery.delivered"])
    endpoint_for(tenant, receiver, active=False)
    endpoint_for(other_tenant, receiver)
    fly(make_delivery(tenant), [Status.ASSIGNED])
    assert WebhookMessage.objects.count() == 1


def test_eta_changed_only_past_the_threshold_and_without_queries_when_no_endpoint(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, django_assert_num_queries: Any
) -> None:
    endpoint_for(tenant, receiver)
    delivery = fly(make_delivery(tenant), [Status.ASSIGNED])
    assert delivery.dropoff_eta is not None
    delivery.dropoff_eta += timedelta(seconds=60)
    announce.eta_changed(delivery, at=timezone.now())
    assert not WebhookMessage.objects.filter(type="delivery.eta_changed").exists()
    delivery.dropoff_eta += timedelta(seconds=90)  # 150 s from the announced one
    announce.eta_changed(delivery, at=timezone.now())
    assert WebhookMessage.objects.filter(type="delivery.eta_changed").count() == 1
    delivery.dropoff_eta += timedelta(seconds=60)  # 60 s from the last announced
    announce.eta_changed(delivery, at=timezone.now())
    assert WebhookMessage.objects.filter(type="delivery.eta_changed").count() == 1

    quiet = make_delivery(other_tenant)
    quiet.dropoff_eta = timezone.now()
    announce.eta_changed(quiet, at=timezone.now())  # learns the business has no endpoint
    with django_assert_num_queries(0):
        for _ in range(10):
            quiet.dropoff_eta += timedelta(minutes=5)
            announce.eta_changed(quiet, at=timezone.now())


def test_an_endpoint_failing_too_long_is_disabled_and_the_business_emailed(
    tenant: Tenant, receiver: Receiver, settings: Any
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 0
    endpoint = endpoint_for(tenant, receiver)
    receiver.fail_next = 100
    fly(make_delivery(tenant), [Status.ASSIGNED])

    send_all()

    endpoint.refresh_from_db()
    assert endpoint.disabled_at is not None and not endpoint.active
    assert len(mail.outbox) == 1 and endpoint.url in mail.outbox[0].body
    assert mail.outbox[0].to == ["ops@contoso.example"]
    # Disabled: nothing is sent any more, nor recorded for it.
    tried = len(receiver.received)
    send_all()
    assert len(receiver.received) == tried


def test_a_message_is_failed_when_its_retry_window_ends(tenant: Tenant, receiver: Receiver) -> None:
    endpoint_for(tenant, receiver)
    receiver.fail_next = 1
    fly(make_delivery(tenant), [Status.ASSIGNED])
    WebhookMessage.objects.update(retry_until=timezone.now())
    send_all()
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts) == ("failed", 1)
    assert receiver.processed == []


def test_a_resent_message_arrives_again_with_the_same_webhook_id(
    tenant: Tenant, receiver: Receiver
) -> None:
    endpoint_for(tenant, receiver)
    fly(make_delivery(tenant), [Status.ASSIGNED])
    send_all()
    message = WebhookMessage.objects.get()
    services.webhook_message_resend(message_id=message.pk)
    send_all()
    assert [r.webhook_id for r in receiver.received] == [message.pk, message.pk]
    assert payload_of(receiver.received[0]) == payload_of(receiver.received[1])


def test_old_attempts_are_pruned(tenant: Tenant, receiver: Receiver) -> None:
    endpoint_for(tenant, receiver)
    fly(make_delivery(tenant), [Status.ASSIGNED, Status.CANCELLED])
    send_all()
    WebhookAttempt.objects.filter(message__type="delivery.assigned").update(
        at=timezone.now() - timedelta(days=15)
    )
    assert services.webhooks_prune() == 1
    assert WebhookAttempt.objects.count() == 1

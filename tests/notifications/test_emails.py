"""Stage emails through the real services and a real SMTP server (tests/conftest.py's
mail_server): recorded with each stage change, claimed and sent once, retried after an outage."""

from __future__ import annotations

import email
import time
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery
from deliveries.services import delivery_assign, delivery_cancel, delivery_fail
from devtools.localservices import free_port
from drones.models import Drone
from notifications.models import Notification
from notifications.services import (
    notification_send,
    notifications_prune,
    notifications_send,
    notifications_sweep,
)
from tests.conftest import MailSink, Tenant, delivery_body, make_fleet


def create(tenant: Tenant, **overrides: Any) -> Delivery:
    response = tenant.client.post_json("/api/v1/deliveries", delivery_body(**overrides))
    assert response.status_code == 202, response.content
    return Delivery.objects.get(pk=response.json()["id"])


def send_due() -> int:
    """What the workers do after commit: one task for the emails a change recorded."""
    pending = Notification.objects.filter(status=Notification.Status.PENDING)
    return notifications_send(notification_ids=list(pending.values_list("id", flat=True)))


def assigned_many(tenant: Tenant, count: int, **overrides: Any) -> list[Delivery]:
    make_fleet(count)
    return [assigned(tenant, [], **overrides) for _ in range(count)]


def move(delivery: Delivery, *stages: str) -> Delivery:
    for stage in stages:
        delivery = delivery_move(Delivery.objects.get(pk=delivery.pk), stage)
    return delivery


def emails(sink: MailSink) -> list[Message]:
    return [email.message_from_bytes(raw) for raw in sink.messages]


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def assigned(tenant: Tenant, fleet: list[Drone], **overrides: Any) -> Delivery:
    delivery = create(tenant, **overrides)
    assert delivery_assign(delivery_id=delivery.id).result == "assigned"
    return Delivery.objects.select_related("drone").get(pk=delivery.pk)


def test_each_stage_emails_the_recipient_once_with_the_tracking_link(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    delivery = assigned(tenant, fleet)
    assert send_due() == 1
    [first] = emails(smtp)
    assert first["To"] == "ada@example.com"
    assert "arrives around" in first["Subject"]
    text = body(first)
    tracking = f"http://127.0.0.1:8000/track/{delivery.tracking_token}"
    assert tracking in text
    assert delivery.drone is not None and delivery.drone.serial in text
    assert delivery.pickup_eta is not None and delivery.dropoff_eta is not None
    assert f"Pickup around {delivery.pickup_eta:%H:%M} UTC" in text
    assert f"dropoff around {delivery.dropoff_eta:%H:%M} UTC" in text
    assert "/notifications/unsubscribe/" in first["List-Unsubscribe"]
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    move(delivery, "en_route_to_pickup", "at_pickup")
    assert send_due() == 0  # no email for the drone's way to the pickup
    move(delivery, "en_route_to_dropoff")
    assert send_due() == 1
    move(delivery, "at_dropoff", "delivered")
    assert send_due() == 1
    assert send_due() == 0

    subjects = [m["Subject"] for m in emails(smtp)]
    assert subjects[1:] == ["Your package is on its way", "Your package was delivered"]
    assert all(m["To"] == "ada@example.com" for m in emails(smtp))
    assert all(tracking in body(m) for m in emails(smtp))


def test_without_a_recipient_email_the_business_is_emailed(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    assigned(tenant, fleet, recipient={"name": "Ada"})
    assert send_due() == 1
    [message] = emails(smtp)
    assert message["To"] == "ops@contoso.example"


def test_a_duplicate_task_sends_nothing_more(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    delivery = assigned(tenant, fleet)
    [notification] = Notification.objects.filter(delivery=delivery)
    assert notification_send(notification_id=notification.id) is True
    assert notification_send(notification_id=notification.id) is False
    assert len(smtp.messages) == 1
    notification.refresh_from_db()
    assert notification.status == "sent" and notification.sent_at is not None


def test_an_email_sent_again_keeps_its_message_id_so_mail_clients_show_it_once(
    tenant: Tenant, smtp: MailSink
) -> None:
    first, _ = assigned_many(tenant, 2)
    [notification] = Notification.objects.filter(delivery=first)
    assert send_due() == 2
    # The mail server took it but its answer was lost (a cut): it is sent again.
    Notification.objects.filter(pk=notification.pk).update(
        status="pending", next_attempt_at=timezone.now()
    )
    assert send_due() == 1
    ids = [m["Message-ID"] for m in emails(smtp)]
    assert ids[0] == ids[2] == f"<notification.{notification.id}@127.0.0.1>"
    assert ids[1] != ids[0]


def test_an_email_claimed_by_a_live_worker_is_not_sent_again_until_its_claim_is_stale(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    delivery = assigned(tenant, fleet)
    [notification] = Notification.objects.filter(delivery=delivery)
    claimed = Notification.objects.filter(pk=notification.pk)
    claimed.update(status="sending", claimed_at=timezone.now())
    assert notification_send(notification_id=notification.id) is False
    assert notifications_sweep() == 0
    assert smtp.messages == []

    # Its worker died mid-send: after the claim timeout another one sends it.
    claimed.update(claimed_at=timezone.now() - timedelta(minutes=10))
    assert notifications_sweep() == 1
    assert len(smtp.messages) == 1


def test_a_mail_outage_leaves_the_email_pending_and_the_sweep_sends_it_later(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    with override_settings(EMAIL_PORT=free_port()):  # nothing listens there
        delivery = assigned(tenant, fleet)
        assert send_due() == 0
        assert notifications_sweep() == 0
    [notification] = Notification.objects.filter(delivery=delivery)
    assert notification.status == "pending"
    assert notification.last_error
    assert notification.next_attempt_at > timezone.now()  # backed off
    assert Delivery.objects.get(pk=delivery.pk).status == "assigned"  # the delivery goes on

    assert notifications_sweep() == 0  # not yet due again
    Notification.objects.filter(pk=notification.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=1)
    )
    assert notifications_sweep() == 1
    assert notifications_sweep() == 0
    [message] = emails(smtp)
    assert message["To"] == "ada@example.com"


def test_the_emails_of_a_round_go_out_in_one_batch_over_one_connection(
    tenant: Tenant, smtp: MailSink
) -> None:
    deliveries = assigned_many(tenant, 4)
    ids = list(Notification.objects.values_list("id", flat=True))
    assert notifications_send(notification_ids=ids) == 4
    assert smtp.sessions == 1
    assert sorted(m["To"] for m in emails(smtp)) == ["ada@example.com"] * 4
    assert all(sum(str(d.id) in body(m) for m in emails(smtp)) == 1 for d in deliveries)
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}
    assert notifications_send(notification_ids=ids) == 0  # a duplicate message
    assert len(smtp.messages) == 4


def test_an_address_the_mail_server_refuses_waits_alone_while_the_others_go(
    tenant: Tenant, smtp: MailSink
) -> None:
    make_fleet(4)
    assigned(tenant, [])
    refused = assigned(tenant, [], recipient={"name": "Bo", "email": "bo@example.com"})
    assigned(tenant, [])
    assigned(tenant, [])
    smtp.refuse = {"bo@example.com"}
    assert send_due() == 3
    assert sorted(m["To"] for m in emails(smtp)) == ["ada@example.com"] * 3
    waiting = Notification.objects.get(delivery=refused)
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert "no such mailbox" in waiting.last_error
    assert waiting.next_attempt_at > timezone.now()  # backed off, alone
    assert Notification.objects.filter(status="sent").count() == 3


def test_a_mail_server_out_of_reach_puts_the_rest_of_the_batch_back_untried(
    tenant: Tenant, smtp: MailSink
) -> None:
    assigned_many(tenant, 3)
    with override_settings(EMAIL_PORT=free_port()):  # nothing listens there
        assert send_due() == 0
    rows = list(Notification.objects.order_by("created_at", "id"))
    assert [(n.status, n.attempts) for n in rows] == [
        ("pending", 1),
        ("pending", 0),
        ("pending", 0),
    ]
    assert rows[0].last_error and not rows[1].last_error and not rows[2].last_error
    assert len({n.next_attempt_at for n in rows}) == 1  # all due again together
    assert rows[0].next_attempt_at > timezone.now()

    Notification.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=1))
    assert notifications_sweep() == 3
    assert smtp.sessions == 1


@pytest.mark.django_db(transaction=True)
def test_a_long_batch_renews_its_claim_so_no_sweep_sends_its_emails_again(
    tenant: Tenant, smtp: MailSink, settings: Any
) -> None:
    import threading

    from django.db import connection

    assigned_many(tenant, 4)
    ids = list(Notification.objects.values_list("id", flat=True))
    # Each email takes 0.4 s; a claim is stale after 1 s, so the last ones would be taken
    # again by a sweep were the batch's claim not renewed.
    settings.NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS = 1
    settings.NOTIFICATIONS_SWEEP_GRACE_SECONDS = 0
    smtp.delay = 0.4
    sent: list[int] = []

    def batch() -> None:
        try:
            sent.append(notifications_send(notification_ids=ids))
        finally:
            connection.close()

    worker = threading.Thread(target=batch)
    worker.start()
    while not Notification.objects.filter(status="sending").exists():
        time.sleep(0.01)  # the batch claims them first
    swept = 0
    while worker.is_alive():
        swept += notifications_sweep()
        time.sleep(0.05)
    worker.join()
    assert sent == [4] and swept == 0
    assert len(smtp.messages) == 4
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


def test_a_cancelled_delivery_says_so(tenant: Tenant, fleet: list[Drone], smtp: MailSink) -> None:
    delivery = assigned(tenant, fleet)
    delivery_cancel(business_id=tenant.business.id, delivery_id=delivery.id, note="oops, typo")
    assert send_due() == 2
    cancelled = emails(smtp)[-1]
    assert cancelled["Subject"] == "Your drone delivery was cancelled"
    assert "was cancelled" in body(cancelled)
    assert "typo" not in body(cancelled)


def test_a_failure_is_told_plainly_without_internal_text(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    delivery = assigned(tenant, fleet)
    reason = "gave up after 8 retries: OperationalError: connection to 10.0.0.4 refused"
    assert delivery_fail(delivery_id=delivery.id, reason=reason)
    assert send_due() == 2
    failed = emails(smtp)[-1]
    assert failed["Subject"] == "We could not complete your drone delivery"
    text = body(failed)
    assert f"We could not complete delivery {delivery.id}." in text
    assert "OperationalError" not in text and "10.0.0.4" not in text and "retries" not in text


def test_a_failure_of_ours_gives_the_customer_its_reason(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    delivery = create(tenant)
    assert delivery_fail(delivery_id=delivery.id, reason="no drone became free in time")
    assert send_due() == 1
    [failed] = emails(smtp)
    assert f"We could not complete delivery {delivery.id}: no drone was free in time." in body(
        failed
    )


def test_a_stage_change_rolled_back_owes_no_email(tenant: Tenant, fleet: list[Drone]) -> None:
    from django.db import transaction

    delivery = create(tenant)
    with pytest.raises(RuntimeError), transaction.atomic():
        delivery_fail(delivery_id=delivery.id, reason="no drone became free in time")
        raise RuntimeError
    assert not Notification.objects.exists()


def test_an_email_whose_task_was_lost_is_sent_by_the_sweep(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink, settings: Any
) -> None:
    delivery = assigned(tenant, fleet)  # its task was never run
    assert notifications_sweep() == 0  # within the grace left to the task
    settings.NOTIFICATIONS_SWEEP_GRACE_SECONDS = 0
    assert notifications_sweep() == 1
    assert notifications_sweep() == 0
    [message] = emails(smtp)
    assert str(delivery.id) in body(message)


@pytest.mark.django_db(transaction=True)
def test_two_workers_sending_the_same_email_at_once_send_it_once(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    delivery = assigned(tenant, fleet)
    [notification] = Notification.objects.filter(delivery=delivery)
    smtp.delay = 0.3  # both are in flight together

    def send(_: int) -> bool:
        try:
            return notification_send(notification_id=notification.id)
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert results.count(True) == 1
    assert len(smtp.messages) == 1


def test_emails_done_with_are_pruned_after_a_while(
    tenant: Tenant, fleet: list[Drone], smtp: MailSink
) -> None:
    delivery = assigned(tenant, fleet)
    send_due()
    move(delivery, "en_route_to_pickup", "at_pickup", "en_route_to_dropoff")  # left pending
    assert notifications_prune() == 0
    Notification.objects.update(created_at=timezone.now() - timedelta(days=31))
    assert notifications_prune() == 1
    assert list(Notification.objects.values_list("kind", flat=True)) == ["picked_up"]

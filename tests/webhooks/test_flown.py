"""A delivery flown by the real simulator, its webhooks sent by real worker and beat processes to
a receiver that verifies every signature, its emails to a real SMTP server: each once, in order,
also with the worker killed while it sends."""

from __future__ import annotations

import email
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from deliveries.models import Delivery
from tests.conftest import MailSink, Tenant, delivery_body, make_fleet, worker_env
from tests.deliveries.test_fleet_end_to_end import fleet_simulator, post
from tests.support import celery_beat, celery_worker, stop_process_group, wait_for
from tests.webhooks.conftest import Receiver
from webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.slow


def subjects(mailbox: MailSink) -> list[str]:
    return [str(email.message_from_bytes(raw)["Subject"]) for raw in mailbox.messages]


def test_a_flown_delivery_sends_its_webhooks_in_order_and_its_emails_each_once(
    live_server: Any, transactional_db: None, tenant: Tenant, process_env: dict[str, str],
    mail_server: tuple[MailSink, int], mailbox: MailSink, receiver: Receiver, tmp_path: Path,
) -> None:  # fmt: skip
    speedup = 30
    env = {
        **worker_env(process_env, mail_server[1]),
        "FLEET_SIM_SPEEDUP": str(speedup),
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    }
    make_fleet(2)
    endpoint = webhook_endpoint_create(
        business_id=tenant.business.pk,
        url=receiver.url,
        events=["delivery.assigned", "delivery.picked_up", "delivery.delivered"],
    )
    receiver.secret = endpoint.secret
    # The receiver fails the first attempt of the first event: it is sent again, same id.
    receiver.fail_next = 1
    with (
        override_settings(FLEET_SIM_SPEEDUP=speedup),
        celery_worker(env, log=tmp_path / "worker.log", concurrency=2),
        celery_beat(env, tmp_path),
        fleet_simulator(env, live_server.url, tmp_path / "simulator.log"),
    ):
        delivery_id = post(live_server, tenant, delivery_body())
        wait_for(
            lambda: Delivery.objects.filter(pk=delivery_id, status="delivered").exists(),
            timeout=120,
            what="the delivery delivered",
        )
        wait_for(lambda: len(receiver.processed) == 3, timeout=60, what="three webhook events")
        wait_for(lambda: len(mailbox.messages) >= 3, timeout=60, what="three emails")

    assert receiver.types() == ["delivery.assigned", "delivery.picked_up", "delivery.delivered"]
    assert all(r.verified for r in receiver.received)
    first = receiver.processed[0]["webhook_id"]
    assert [r.webhook_id for r in receiver.received].count(first) == 2  # the retry, same id
    assert all(p["data"]["id"] == delivery_id for p in receiver.processed)
    assert receiver.processed[-1]["data"]["status"] == "delivered"
    sent = subjects(mailbox)
    assert len(sent) == 3, sent
    assert sent[0].startswith("Your drone delivery arrives around")
    assert sent[1:] == ["Your package is on its way", "Your package was delivered"]


def test_an_email_cut_off_by_a_killed_worker_is_sent_once_by_another(
    live_server: Any, transactional_db: None, tenant: Tenant, process_env: dict[str, str],
    mail_server: tuple[MailSink, int], mailbox: MailSink, tmp_path: Path,
) -> None:  # fmt: skip
    env = {
        **worker_env(process_env, mail_server[1]),
        # A claim whose worker died may be taken again after 2 s (default 180).
        "NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS": "2",
        "NOTIFICATIONS_SWEEP_GRACE_SECONDS": "1",
    }
    make_fleet(1)
    mailbox.delay = 3.0  # the mail server holds the message: the worker is killed meanwhile
    with celery_beat(env, tmp_path):
        with celery_worker(env, log=tmp_path / "worker.log", concurrency=1, name="doomed") as w:
            delivery_id = post(live_server, tenant, delivery_body())
            wait_for(lambda: mailbox.started >= 1, timeout=60, what="the email being sent")
            stop_process_group(w, timeout=0.1)  # SIGTERM, then SIGKILL at once
        assert mailbox.messages == []  # cut off before the server took it
        mailbox.delay = 0.0
        with celery_worker(env, log=tmp_path / "worker2.log", concurrency=1, name="spare"):
            wait_for(lambda: len(mailbox.messages) >= 1, timeout=90, what="the email sent again")
            assert Delivery.objects.get(pk=delivery_id).status == "assigned"
    sent = subjects(mailbox)
    assert len(sent) == 1 and sent[0].startswith("Your drone delivery arrives around"), sent

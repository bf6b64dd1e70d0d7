"""A MongoDB outage longer than the old retry budget (eight retries) delays deliveries but
fails none; past a delivery's own deadline it fails with the detail for operators and plain
words for everyone else; web stays ready throughout."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from deliveries import services
from deliveries.models import Delivery, DeliveryEvent
from deliveries.reasons import public_reason
from devtools.localservices import free_port, mongo_server
from tests.conftest import MailSink, Tenant, make_fleet, worker_env
from tests.deliveries.test_services import request
from tests.support import celery_worker, wait_for
from workers.tasks import MAX_RETRIES, delivery_process

OLD_RETRY_BUDGET = MAX_RETRIES


@pytest.mark.slow
def test_a_mongodb_outage_longer_than_the_old_retry_budget_delays_deliveries_but_fails_none(
    transactional_db: None,
    tenant: Tenant,
    client: Client,
    process_env: dict[str, str],
    mail_server: tuple[MailSink, int],
    tmp_path: Path,
) -> None:
    make_fleet(3)
    mongo = mongo_server(tmp_path / "mongo").start()
    assert mongo.process is not None
    env = {
        **worker_env(process_env, mail_server[1]),
        "MONGODB_URI": mongo.url,
        "MONGODB_TIMEOUT_MS": "300",
        # The backoff shortened so that the outage outlasts many more retries than the old 8.
        "DELIVERY_RETRY_BASE_SECONDS": "0.1",
        "DELIVERY_RETRY_MAX_SECONDS": "0.4",
    }
    try:
        with celery_worker(env, log=tmp_path / "worker.log"):
            os.kill(mongo.process.pid, signal.SIGSTOP)  # paused: every call times out
            ids = [
                services.delivery_create(business_id=tenant.business.id, request=request()).id
                for _ in range(3)
            ]
            with override_settings(MONGODB_URI=mongo.url):
                assert client.get("/healthz/ready").status_code == 200

            def retried_past_the_old_budget() -> bool:
                rows = Delivery.objects.filter(pk__in=ids).values_list("attempts", flat=True)
                return min(rows) > OLD_RETRY_BUDGET + 2

            wait_for(retried_past_the_old_budget, timeout=90, what="retries past the old budget")
            statuses = set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True))
            assert statuses == {"requested"}  # delayed, none failed
            with override_settings(MONGODB_URI=mongo.url):
                assert client.get("/healthz/ready").status_code == 200

            os.kill(mongo.process.pid, signal.SIGCONT)
            wait_for(
                lambda: (
                    set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True))
                    == {"assigned"}
                ),
                timeout=60,
                what="every delivery assigned once MongoDB is back",
            )
        attempts = list(Delivery.objects.filter(pk__in=ids).values_list("attempts", flat=True))
        print(f"\nMongoDB paused: attempts before assignment {attempts}, none failed")
        for delivery_id in ids:
            assert (
                DeliveryEvent.objects.filter(delivery_id=delivery_id, status="assigned").count()
                == 1
            )
    finally:
        if mongo.process.poll() is None:
            os.kill(mongo.process.pid, signal.SIGCONT)
        mongo.stop()


@pytest.mark.django_db(transaction=True)
def test_past_its_deadline_an_outage_fails_the_delivery_with_detail_for_operators_only(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    published: list[dict[str, Any]] = []
    monkeypatch.setattr(
        delivery_process, "apply_async", lambda kwargs, **options: published.append(kwargs)
    )
    dead = f"mongodb://127.0.0.1:{free_port()}/"
    with override_settings(MONGODB_URI=dead, MONGODB_TIMEOUT_MS=200):
        assert delivery_process.apply(kwargs={"delivery_id": str(delivery.id)}).get() == "retrying"
        assert published[-1]["attempt"] == 1  # a new attempt: older messages do nothing
        assert delivery_process.apply(kwargs={"delivery_id": str(delivery.id)}).get() == "stale"
        # The deadline of its assignment passes while MongoDB is still down.
        DeliveryEvent.objects.filter(delivery=delivery).update(
            at=timezone.now() - timedelta(hours=3)
        )
        result = delivery_process.apply(kwargs={"delivery_id": str(delivery.id), "attempt": 1})
        assert result.get() == "done"
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "MongoDB" in delivery.failure_reason  # the operator's detail
    assert "ServerSelectionTimeoutError" in delivery.failure_reason
    words = public_reason(delivery.failure_reason)
    assert "Mongo" not in words and "Error" not in words
    note = DeliveryEvent.objects.get(delivery=delivery, status="failed").note
    assert note == words


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_starts_no_second_chain_while_a_retry_is_pending(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    Delivery.objects.filter(pk=delivery.id).update(created_at=timezone.now() - timedelta(minutes=5))
    monkeypatch.setattr(delivery_process, "apply_async", lambda kwargs, **options: None)
    with override_settings(
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/", MONGODB_TIMEOUT_MS=200
    ):
        delivery_process.apply(kwargs={"delivery_id": str(delivery.id)})
    # The retry's next attempt is due: nothing is overdue for the sweeper.
    assert services.deliveries_sweep() == 0

"""The workflow end to end: HTTP into a live server, real Celery worker processes, real Redis,
the MongoDB-protocol server, and the test database (PostgreSQL in CI)."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from deliveries.models import Delivery, DeliveryEvent, OutboxMessage
from deliveries.services import outbox_relay
from devtools.localservices import redis_server
from drones.flight import delivery_schedule
from drones.geo import Point, distance_km
from drones.models import Drone
from notifications.models import Notification
from packages.selectors import package_get
from tests.conftest import CENTER, MailSink, Tenant, delivery_body, make_fleet, worker_env
from tests.support import (
    BASE_DIR,
    PYTHON,
    broker_for_this_process,
    celery_worker,
    stop_process_group,
    wait_for,
)

pytestmark = pytest.mark.slow


def post(live_server: Any, tenant: Tenant, body: dict[str, Any], **headers: str) -> Any:
    return requests.post(
        f"{live_server.url}/api/v1/deliveries",
        json=body,
        headers={"Authorization": f"Api-Key {tenant.key}", **headers},
        timeout=30,
    )


def status_of(delivery_id: str) -> str:
    return Delivery.objects.values_list("status", flat=True).get(pk=delivery_id)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_delivery_is_assigned_by_a_worker_with_eta_and_email(
    live_server: Any, worker: Any, tenant: Tenant, mailbox: MailSink
) -> None:
    make_fleet(3)
    before = timezone.now()
    response = post(live_server, tenant, delivery_body())
    assert response.status_code == 202
    delivery_id = response.json()["id"]
    status_url = f"{live_server.url}/api/v1/deliveries/{delivery_id}/status"
    auth = {"Authorization": f"Api-Key {tenant.key}"}

    wait_for(
        lambda: requests.get(status_url, headers=auth, timeout=5).json()["status"] == "assigned",
        timeout=60,
        what="the delivery assigned by the worker",
    )
    status = requests.get(status_url, headers=auth, timeout=5).json()
    assert status["drone_location"] is not None

    # ETAs from the flight plan: base → pickup → dropoff at the model's 60 km/h, with the climbs,
    # descents and handling of the flight profile.
    body = delivery_body()
    pickup = Point(lat=body["pickup"]["lat"], lon=body["pickup"]["lon"])
    dropoff = Point(lat=body["dropoff"]["lat"], lon=body["dropoff"]["lon"])
    schedule = delivery_schedule(
        to_pickup_km=distance_km(CENTER, pickup), leg_km=distance_km(pickup, dropoff), speed_kmh=60
    )
    to_pickup = timedelta(seconds=schedule.to_pickup)
    pickup_eta, dropoff_eta = parse(status["pickup_eta"]), parse(status["dropoff_eta"])
    assert before + to_pickup - timedelta(seconds=5) <= pickup_eta
    assert pickup_eta <= timezone.now() + to_pickup + timedelta(seconds=5)
    assert abs((dropoff_eta - pickup_eta).total_seconds() - schedule.pickup_to_delivered) < 5

    delivery = Delivery.objects.get(pk=delivery_id)
    assert Drone.objects.get(deliveries=delivery).assigned_delivery_id == delivery.id
    document = package_get(package_id=delivery.package_id)
    assert document is not None
    assert document["tag"] == "pharmacy" and document["weight_kg"] == 2.0

    wait_for(lambda: len(mailbox.messages) == 1, timeout=30, what="the ETA email")
    assert str(delivery_id).encode() in mailbox.messages[0]
    assert b"ada@example.com" in mailbox.messages[0]
    assert delivery.tracking_token.encode() in mailbox.messages[0]


def test_a_delivery_no_drone_can_carry_fails_with_the_reason(
    live_server: Any, worker: Any, tenant: Tenant
) -> None:
    make_fleet(2)
    response = post(live_server, tenant, delivery_body())
    assert response.status_code == 202
    # The fleet changed after the request was accepted: no drone can carry 2 kg any more.
    Drone.objects.all().delete()
    make_fleet(1)
    from drones.models import DroneModel

    DroneModel.objects.update(max_payload_kg=1.0)
    wait_for(
        lambda: status_of(response.json()["id"]) == "failed", timeout=60, what="a failed delivery"
    )
    delivery = Delivery.objects.get(pk=response.json()["id"])
    assert "kg" in delivery.failure_reason


def test_200_concurrent_requests_for_10_drones_never_double_book(
    live_server: Any, worker: Any, tenant: Tenant
) -> None:
    make_fleet(10)
    unlimited = override_settings(API_RATE_LIMIT="100000/second", BUSINESS_MAX_ACTIVE_DELIVERIES=0)
    with unlimited, ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda _: post(live_server, tenant, delivery_body()), range(200)))
    assert [r.status_code for r in responses] == [202] * 200
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 200

    def settled() -> bool:
        # The test plays beat's outbox relay: a request whose publish outran the broker budget
        # (BROKER_PUBLISH_TIMEOUT_MS; 24 request threads of one process share its GIL with the
        # publishing thread here, unlike gunicorn's one request per process) waits there.
        outbox_relay(older_than_seconds=1.0)
        # Every delivery was looked at by the workflow: assigned, or waiting for a drone.
        assigned = Delivery.objects.filter(status="assigned").count()
        unvisited = Delivery.objects.filter(status="requested", attempts=0).count()
        return assigned == 10 and unvisited == 0

    wait_for(settled, timeout=120, what="10 deliveries assigned and 190 waiting")
    assert Delivery.objects.count() == 200
    assert set(Delivery.objects.values_list("status", flat=True)) == {"assigned", "requested"}
    assigned = list(Delivery.objects.filter(status="assigned").values_list("id", "drone_id"))
    assert len({drone for _, drone in assigned}) == 10, "a drone was booked twice"
    booked = dict(
        Drone.objects.filter(assigned_delivery_id__isnull=False).values_list(
            "assigned_delivery_id", "id"
        )
    )
    assert booked == dict(assigned)
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0


def test_a_worker_killed_mid_workflow_still_completes_the_delivery_once(
    live_server: Any,
    transactional_db: None,
    tenant: Tenant,
    process_env: dict[str, str],
    mail_server: tuple[MailSink, int],
    tmp_path: Path,
) -> None:
    sink, port = mail_server
    sink.messages.clear()
    sink.started = 0
    sink.delay = 60.0  # the worker will be stuck in the email step, mid-workflow
    make_fleet(2)
    # A short visibility timeout, so that the message the dead worker held returns quickly,
    # and a short claim on the email, so that the redelivered message may take it over.
    env = {
        **worker_env(process_env, port),
        "CELERY_VISIBILITY_TIMEOUT": "8",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS": "5",
    }
    with celery_worker(env, log=tmp_path / "first.log", name="first") as first:
        response = post(live_server, tenant, delivery_body())
        delivery_id = response.json()["id"]
        wait_for(lambda: sink.started == 1, timeout=60, what="the worker in the email step")
        assert status_of(delivery_id) == "assigned"
        drone_id = Delivery.objects.get(pk=delivery_id).drone_id
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    sink.delay = 0.0

    with celery_worker(env, log=tmp_path / "second.log", name="second"):
        wait_for(
            lambda: Notification.objects.filter(delivery_id=delivery_id, status="sent").exists(),
            timeout=90,
            what="the redelivered email sent by the second worker",
        )
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == "assigned"
    assert delivery.drone_id == drone_id
    assert DeliveryEvent.objects.filter(delivery=delivery, status="assigned").count() == 1
    assert Drone.objects.filter(assigned_delivery_id=delivery.id).count() == 1
    assert len(sink.messages) == 1
    assert Notification.objects.filter(delivery_id=delivery_id).count() == 1


def test_requests_arriving_while_the_broker_is_down_are_processed_once_it_is_back(
    live_server: Any,
    transactional_db: None,
    tenant: Tenant,
    process_env: dict[str, str],
    mail_server: tuple[MailSink, int],
    tmp_path: Path,
) -> None:
    make_fleet(5)
    # Durable, as a production broker is: what was queued before it stopped is there after.
    broker = redis_server(tmp_path / "broker", durable=True).start()
    env = {**worker_env(process_env, mail_server[1]), "CELERY_BROKER_URL": broker.url}
    beat_log = (tmp_path / "beat.log").open("wb")
    beat = None
    try:
        with broker_for_this_process(broker.url), celery_worker(env, log=tmp_path / "w.log"):
            accepted_before = post(live_server, tenant, delivery_body())
            assert accepted_before.status_code == 202

            broker.stop()
            during = [post(live_server, tenant, delivery_body()) for _ in range(10)]
            codes = {r.status_code for r in during}
            assert codes <= {202, 503}, codes
            accepted = [r.json()["id"] for r in during if r.status_code == 202]
            refused = [r for r in during if r.status_code == 503]
            for response in refused:
                assert response.json()["error"]["message"]
            assert OutboxMessage.objects.filter(published_at__isnull=True).count() == len(accepted)

            broker.start()
            # Beat's outbox relay publishes what the broker missed.
            import subprocess

            beat = subprocess.Popen(
                [PYTHON, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO",
                 "--schedule", str(tmp_path / "beat-schedule")],
                cwd=BASE_DIR, env=env, stdout=beat_log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            everyone = [accepted_before.json()["id"], *accepted]

            def taken_up() -> bool:
                rows = Delivery.objects.filter(pk__in=everyone).values_list("status", "attempts")
                return all(status == "assigned" or attempts > 0 for status, attempts in rows)

            wait_for(taken_up, timeout=90, what="every accepted delivery taken up")
            statuses = [status_of(i) for i in everyone]
            assert statuses.count("assigned") == 5
            assert set(statuses) <= {"assigned", "requested"}
            assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0
    finally:
        if beat is not None:
            stop_process_group(beat)
        beat_log.close()
        broker.stop()

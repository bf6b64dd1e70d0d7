"""The workflow's services: outbox relay, sweeper, giving up with compensation, operator retry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from deliveries import services
from deliveries.models import Delivery, DeliveryEvent, OutboxMessage
from devtools.localservices import free_port
from drones.models import Drone, DroneModel
from tests.conftest import Tenant, make_fleet
from tests.support import broker_for_this_process
from workers.tasks import MAX_RETRIES, delivery_process


def request(**overrides: Any) -> services.DeliveryRequest:
    from drones.geo import Point

    fields: dict[str, Any] = {
        "pickup": services.Place(Point(lat=47.6097, lon=-122.3422)),
        "dropoff": services.Place(Point(lat=47.6205, lon=-122.3493)),
        "package_size": "small",
        "package_weight_kg": 2.0,
    }
    fields.update(overrides)
    return services.DeliveryRequest(**fields)


def queue_length() -> int:
    import redis
    from django.conf import settings

    return int(redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("celery"))


@pytest.mark.django_db(transaction=True)
def test_a_request_accepted_while_the_broker_is_down_waits_in_the_outbox_for_the_relay(
    tenant: Tenant,
) -> None:
    make_fleet(1)
    with broker_for_this_process(f"redis://127.0.0.1:{free_port()}/0"):
        delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    message = OutboxMessage.objects.get(payload__delivery_id=str(delivery.id))
    assert message.published_at is None
    assert message.attempts == 1 and "111" in message.last_error  # connection refused

    assert services.outbox_relay(older_than_seconds=60) == 0  # too fresh to relay yet
    before = queue_length()
    assert services.outbox_relay(older_than_seconds=0) == 1
    message.refresh_from_db()
    assert message.published_at is not None
    assert queue_length() == before + 1


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_republishes_a_delivery_whose_message_was_lost(tenant: Tenant) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    # The broker lost the message (a Redis restart without persistence, say).
    Delivery.objects.filter(pk=delivery.id).update(created_at=timezone.now() - timedelta(minutes=5))
    before = queue_length()
    assert services.deliveries_sweep() == 1
    assert queue_length() == before + 1
    # Its next attempt is now due later: a second sweep right away does nothing.
    assert services.deliveries_sweep() == 0


@pytest.mark.django_db(transaction=True)
def test_a_workflow_that_keeps_failing_gives_up_with_the_reason(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pymongo.errors

    from workers import tasks

    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())

    # An error, not an outage (MongoDB refuses the document): it fails on the last allowed
    # try. (An outage is retried until the delivery's deadline: tests/outages.)
    def refused(**_: object) -> None:
        raise pymongo.errors.OperationFailure("Document failed validation", code=121)

    monkeypatch.setattr(tasks, "package_upsert", refused)
    result = delivery_process.apply(
        kwargs={"delivery_id": str(delivery.id)}, retries=MAX_RETRIES
    ).get()
    assert result == "failed"
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.failure_reason.startswith(services.STEP_FAILED_REASON)
    assert "Document failed validation" in delivery.failure_reason  # for operators
    assert not Drone.objects.filter(assigned_delivery_id=delivery.id).exists()


@pytest.mark.django_db(transaction=True)
def test_giving_up_on_an_assigned_delivery_releases_its_drone(tenant: Tenant) -> None:
    (drone,) = make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    assert services.delivery_assign(delivery_id=delivery.id).result == "assigned"
    drone.refresh_from_db()
    assert drone.assigned_delivery_id == delivery.id

    assert services.delivery_fail(delivery_id=delivery.id, reason="telemetry lost")
    drone.refresh_from_db()
    assert drone.assigned_delivery_id is None
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.failure_reason == "telemetry lost"
    # Failing twice changes nothing.
    assert not services.delivery_fail(delivery_id=delivery.id, reason="again")


@pytest.mark.django_db(transaction=True)
def test_an_operator_retries_a_failed_delivery_and_it_gets_a_drone(tenant: Tenant) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    services.delivery_fail(delivery_id=delivery.id, reason="no drone in time")
    retried = services.delivery_retry(delivery_id=delivery.id)
    assert retried.status == "requested" and retried.failure_reason == ""
    outcome = services.delivery_assign(delivery_id=delivery.id, attempt=retried.attempts)
    assert outcome.result == "assigned"
    statuses = list(
        DeliveryEvent.objects.filter(delivery=delivery).values_list("status", flat=True)
    )
    assert statuses == ["requested", "failed", "requested", "assigned"]
    with pytest.raises(services.InvalidStageTransition):
        services.delivery_retry(delivery_id=delivery.id)


@pytest.mark.django_db(transaction=True)
def test_waiting_past_the_deadline_fails_the_delivery(tenant: Tenant) -> None:
    (drone,) = make_fleet(1)
    Drone.objects.filter(pk=drone.pk).update(state=Drone.State.CHARGING)
    deadline = timezone.now() + timedelta(hours=1)
    delivery = services.delivery_create(
        business_id=tenant.business.id, request=request(deadline=deadline)
    )
    assert services.delivery_assign(delivery_id=delivery.id).result == "wait"
    Delivery.objects.filter(pk=delivery.id).update(deadline=timezone.now() - timedelta(seconds=1))
    outcome = services.delivery_assign(delivery_id=delivery.id, attempt=1)
    assert outcome.result == "done"
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "in time" in delivery.failure_reason


@pytest.mark.django_db(transaction=True)
def test_a_stale_message_does_nothing_when_a_newer_one_carries_the_delivery(
    tenant: Tenant,
) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    Delivery.objects.filter(pk=delivery.id).update(attempts=3)
    assert services.delivery_assign(delivery_id=delivery.id, attempt=1).result == "done"
    assert Delivery.objects.get(pk=delivery.id).status == "requested"
    assert services.delivery_assign(delivery_id=delivery.id, attempt=3).result == "assigned"


@pytest.mark.django_db
def test_the_api_may_use_a_recent_fleet_shape_but_the_workflow_asks_the_database(
    django_assert_num_queries: Any,
) -> None:
    from drones import selectors
    from drones.geo import Point

    make_fleet(2)
    trip: dict[str, Any] = {
        "pickup": Point(lat=47.6097, lon=-122.3422),
        "dropoff": Point(lat=47.6205, lon=-122.3493),
        "weight_kg": 2.0,
    }
    selectors._populated = None
    assert selectors.delivery_impossible_reason(**trip, max_age_seconds=60) is None
    with django_assert_num_queries(0):
        assert selectors.delivery_impossible_reason(**trip, max_age_seconds=60) is None
    # A no is asked of the database: a drone bought a moment ago serves the next request.
    heavy = selectors.delivery_impossible_reason(**{**trip, "weight_kg": 9.0}, max_age_seconds=60)
    assert heavy is not None and "5 kg" in heavy
    DroneModel.objects.filter(name="standard").update(max_payload_kg=10.0)
    assert (
        selectors.delivery_impossible_reason(**{**trip, "weight_kg": 9.0}, max_age_seconds=60)
        is None
    )
    DroneModel.objects.filter(name="standard").update(max_payload_kg=5.0)
    Drone.objects.all().delete()
    # Within its age the remembered shape still says yes; the database says no.
    assert selectors.delivery_impossible_reason(**trip, max_age_seconds=60) is None
    assert selectors.delivery_impossible_reason(**trip) == "There are no drones in the fleet."
    selectors._populated = None


@pytest.mark.django_db(transaction=True)
def test_a_mail_outage_delays_the_email_but_never_fails_the_delivery(tenant: Tenant) -> None:
    from notifications.models import Notification
    from notifications.services import notification_send

    make_fleet(1)
    delivery = services.delivery_create(
        business_id=tenant.business.id, request=request(recipient={"email": "ada@example.com"})
    )
    before = queue_length()
    result = delivery_process.apply(kwargs={"delivery_id": str(delivery.id)}).get()
    assert result == "done"
    delivery.refresh_from_db()
    assert delivery.status == "assigned"
    assert queue_length() == before + 1  # the email's own task, published after commit
    [email] = Notification.objects.filter(delivery=delivery)
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=free_port(),
        EMAIL_USE_TLS=False,
    ):
        assert notification_send(notification_id=email.id) is False
    email.refresh_from_db()
    assert email.status == "pending" and email.last_error  # for the sweep, later
    assert Delivery.objects.get(pk=delivery.id).status == "assigned"


@pytest.mark.django_db
def test_a_message_for_an_unknown_delivery_is_harmless() -> None:
    import uuid

    # Deleted, or another environment's: nothing happens, nothing is retried.
    assert delivery_process.apply(kwargs={"delivery_id": str(uuid.uuid4())}).get() == "gone"


@pytest.mark.django_db(transaction=True)
def test_an_operator_retry_restarts_the_waiting_clock_and_keeps_the_creation_time(
    tenant: Tenant,
) -> None:
    (drone,) = make_fleet(1)
    Drone.objects.filter(pk=drone.pk).update(state=Drone.State.CHARGING)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    # It waited past the limit and failed.
    Delivery.objects.filter(pk=delivery.id).update(created_at=timezone.now() - timedelta(hours=3))
    DeliveryEvent.objects.filter(delivery=delivery).update(at=timezone.now() - timedelta(hours=3))
    assert services.delivery_assign(delivery_id=delivery.id).result == "done"
    assert Delivery.objects.get(pk=delivery.id).status == "failed"

    retried = services.delivery_retry(delivery_id=delivery.id)
    assert retried.created_at < timezone.now() - timedelta(hours=2)  # not rewritten
    # Waiting again counts from the retry, so it waits instead of failing at once.
    outcome = services.delivery_assign(delivery_id=delivery.id, attempt=retried.attempts)
    assert outcome.result == "wait"


@pytest.mark.django_db(transaction=True)
def test_a_retried_delivery_emails_its_new_eta(tenant: Tenant) -> None:
    from django.core import mail

    from notifications.models import Notification
    from notifications.services import notification_send

    def send_emails() -> None:
        for pending in Notification.objects.filter(status="pending"):
            notification_send(notification_id=pending.id)

    make_fleet(1)
    delivery = services.delivery_create(
        business_id=tenant.business.id, request=request(recipient={"email": "ada@example.com"})
    )
    assert delivery_process.apply(kwargs={"delivery_id": str(delivery.id)}).get() == "done"
    send_emails()
    assert len(mail.outbox) == 1
    services.delivery_fail(delivery_id=delivery.id, reason="the drone broke down")

    retried = services.delivery_retry(delivery_id=delivery.id)
    assert retried.failure_reason == ""
    kwargs = {"delivery_id": str(delivery.id), "attempt": retried.attempts}
    assert delivery_process.apply(kwargs=kwargs).get() == "done"
    assert Delivery.objects.get(pk=delivery.id).status == "assigned"
    send_emails()
    send_emails()  # nothing more
    assert [m.subject.split(" around")[0] for m in mail.outbox] == [
        "Your drone delivery arrives",
        "We could not complete your drone delivery",
        "Your drone delivery arrives",
    ]


@pytest.mark.django_db
def test_a_retry_past_the_deadline_is_refused_and_the_delivery_stays_failed(
    tenant: Tenant,
) -> None:
    make_fleet(1)
    delivery = services.delivery_create(
        business_id=tenant.business.id,
        request=request(deadline=timezone.now() + timedelta(hours=1)),
    )
    Delivery.objects.filter(pk=delivery.id).update(deadline=timezone.now() - timedelta(minutes=1))
    services.delivery_fail(
        delivery_id=delivery.id, reason="no drone can deliver before the deadline"
    )

    with pytest.raises(services.RetryRefused, match="has passed; change it first"):
        services.delivery_retry(delivery_id=delivery.id)
    assert Delivery.objects.get(pk=delivery.id).status == "failed"

    services.delivery_deadline_set(
        delivery_id=delivery.id, deadline=timezone.now() + timedelta(hours=2), operator="alice"
    )
    retried = services.delivery_retry(delivery_id=delivery.id, operator="alice")
    assert retried.status == "requested"
    last = DeliveryEvent.objects.filter(delivery=delivery).order_by("at", "id").last()
    assert last is not None and last.note == "retried by operator alice"


@pytest.mark.django_db
def test_only_a_failed_delivery_gets_a_new_deadline_and_only_one_ahead(tenant: Tenant) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    ahead = timezone.now() + timedelta(hours=2)
    with pytest.raises(services.Conflict, match="only a failed delivery's deadline"):
        services.delivery_deadline_set(delivery_id=delivery.id, deadline=ahead)

    services.delivery_fail(delivery_id=delivery.id, reason="no drone became free in time")
    with pytest.raises(services.Unprocessable, match="is in the past"):
        services.delivery_deadline_set(
            delivery_id=delivery.id, deadline=timezone.now() - timedelta(minutes=1)
        )
    with pytest.raises(services.Unprocessable, match="at most 8 days ahead"):
        services.delivery_deadline_set(
            delivery_id=delivery.id, deadline=timezone.now() + timedelta(days=9)
        )
    assert services.delivery_deadline_set(delivery_id=delivery.id, deadline=ahead).deadline == ahead
    assert Delivery.objects.get(pk=delivery.id).deadline == ahead
    assert services.delivery_deadline_set(delivery_id=delivery.id, deadline=None).deadline is None

"""A workflow step that finds the database down cannot record its retry there: the same attempt
comes back through the broker, with a growing backoff, instead of waiting for the sweeper.

Found by the chaos test (tests/chaos): a delivery whose step ran into a database outage of a few
seconds was left to the sweeper, finished minutes after the database was back."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from django.conf import settings
from django.db import OperationalError

from deliveries import services
from deliveries.models import Delivery
from tests.conftest import Tenant, make_fleet
from tests.deliveries.test_services import request
from workers import tasks
from workers.tasks import delivery_process


def database_down(*args: Any, **kwargs: Any) -> NoReturn:
    raise OperationalError("connection failed: server closed the connection unexpectedly")


@pytest.mark.django_db(transaction=True)
def test_a_step_that_finds_the_database_down_comes_back_through_the_broker(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())
    published: list[tuple[dict[str, Any], dict[str, Any]]] = []
    monkeypatch.setattr(
        delivery_process,
        "apply_async",
        lambda kwargs, **options: published.append((kwargs, options)),
    )
    with monkeypatch.context() as outage:
        outage.setattr(tasks, "_delivery_process", database_down)
        outage.setattr(services, "delivery_retry_later", database_down)
        message: dict[str, Any] = {"delivery_id": str(delivery.id)}
        for unrecorded in (1, 2, 3):
            assert delivery_process.apply(kwargs=message).get() == "retrying"
            message, options = published[-1]
            assert message["attempt"] == 0  # nothing could be recorded: the same attempt
            assert message["unrecorded"] == unrecorded
            expected = settings.DELIVERY_RETRY_BASE_SECONDS * 2 ** (unrecorded - 1)
            assert options["countdown"] == pytest.approx(
                min(expected, settings.BROKER_MAX_COUNTDOWN_SECONDS), abs=0.1
            )
            message = {**message, "not_before": None}

    # The database is back: that message carries the delivery on.
    assert delivery_process.apply(kwargs=message).get() == "done"
    assert Delivery.objects.get(pk=delivery.id).status == "assigned"


@pytest.mark.django_db(transaction=True)
def test_an_error_that_is_not_an_outage_while_recording_the_retry_is_raised(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fleet(1)
    delivery = services.delivery_create(business_id=tenant.business.id, request=request())

    def bug(**kwargs: Any) -> NoReturn:
        raise ValueError("a bug")

    monkeypatch.setattr(tasks, "_delivery_process", database_down)
    monkeypatch.setattr(services, "delivery_retry_later", bug)
    result = delivery_process.apply(kwargs={"delivery_id": str(delivery.id)})
    assert isinstance(result.result, ValueError)

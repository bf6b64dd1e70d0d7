"""portal.db: the prepared INSERT writes what Model.save would, compiled once per model."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries.models import Delivery, DeliveryEvent
from portal import db
from tests.conftest import Tenant


def delivery(tenant: Tenant, **changes: object) -> Delivery:
    fields: dict[str, object] = {
        "business_id": tenant.business.id,
        "pickup_lat": 47.6,
        "pickup_lon": -122.3,
        "dropoff_lat": 47.62,
        "dropoff_lon": -122.33,
        "package_size": "small",
        "package_weight_kg": 1.5,
        "recipient_name": "Ada",
        "price_amount": Decimal("7.25"),
        "price_currency": "USD",
    }
    return Delivery(**{**fields, **changes})


def test_an_inserted_row_reads_back_as_the_orm_would_have_saved_it(tenant: Tenant) -> None:
    mine, orms = delivery(tenant), delivery(tenant)
    db.insert(mine)
    orms.save(force_insert=True)
    stored, expected = Delivery.objects.get(pk=mine.pk), Delivery.objects.get(pk=orms.pk)
    for field in Delivery._meta.concrete_fields:
        if field.name in ("id", "package_id", "tracking_token", "created_at", "updated_at"):
            continue
        assert getattr(stored, field.attname) == getattr(expected, field.attname), field.name
    # Defaults and auto_now(_add) were applied on the instance and stored.
    assert stored.tracking_token == mine.tracking_token and len(mine.tracking_token) > 20
    assert stored.created_at == mine.created_at and mine.created_at <= timezone.now()
    assert stored.updated_at == mine.updated_at
    assert not mine._state.adding


def test_rows_of_an_auto_increment_model_take_one_insert_each_and_read_back(
    tenant: Tenant,
) -> None:
    parent = delivery(tenant)
    db.insert(parent)
    with CaptureQueriesContext(connection) as queries:
        db.insert(
            DeliveryEvent(delivery=parent, status="requested", at=timezone.now()),
            DeliveryEvent(delivery=parent, status="assigned", at=timezone.now(), note="drone x"),
        )
    assert [q["sql"].split(" (")[0] for q in queries] == [
        'INSERT INTO "deliveries_deliveryevent"'
    ] * 2
    assert list(parent.events.order_by("at").values_list("status", "note")) == [
        ("requested", ""),
        ("assigned", "drone x"),
    ]


def test_rows_written_together_are_one_statement_on_postgresql_and_stored_together(
    tenant: Tenant,
) -> None:
    parent = delivery(tenant)
    rows = db.prepare_insert(
        parent, DeliveryEvent(delivery=parent, status="requested", at=timezone.now())
    )
    with CaptureQueriesContext(connection) as queries:
        db.execute_together(rows)
    statements = [q["sql"] for q in queries]
    if connection.vendor == "postgresql":
        # No BEGIN and COMMIT around it: one round trip, atomic on its own.
        assert len(statements) == 1 and statements[0].startswith('WITH w0 AS (INSERT INTO "')
    assert Delivery.objects.filter(pk=parent.pk).exists()
    assert list(parent.events.values_list("status", flat=True)) == ["requested"]


@pytest.mark.django_db(transaction=True)
def test_rows_written_together_are_all_or_none(tenant: Tenant) -> None:
    """The event's row names a delivery that does not exist: the delivery written with it in
    the same call is not stored either, outside any transaction of the caller's."""
    parent = delivery(tenant)
    broken = DeliveryEvent(delivery_id=uuid.uuid4(), status="requested", at=timezone.now())
    with pytest.raises(DatabaseError):
        db.execute_together(db.prepare_insert(parent, broken))
    assert not Delivery.objects.filter(pk=parent.pk).exists()


@pytest.mark.parametrize("refused", [False, True])
def test_rows_written_together_unless_a_check_refuses(tenant: Tenant, refused: bool) -> None:
    parent = delivery(tenant)
    rows = db.prepare_insert(
        parent, DeliveryEvent(delivery=parent, status="requested", at=timezone.now())
    )
    with CaptureQueriesContext(connection) as queries:
        written = db.execute_together(rows, unless=("SELECT %s = %s", [1, 1 if refused else 2]))
    assert written is not refused
    assert Delivery.objects.filter(pk=parent.pk).exists() is not refused
    assert DeliveryEvent.objects.filter(delivery_id=parent.pk).exists() is not refused
    if connection.vendor == "postgresql":
        assert len(queries) == 1  # the check and the INSERTs in one statement

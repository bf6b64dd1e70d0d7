"""portal.api's output plans give what DRF's own `to_representation` gives, key by key, in the
same order and with the same types, for every output serializer the API answers with."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone
from rest_framework import serializers

from deliveries import selectors, services
from deliveries.api import DeliveryOut, DeliveryWithEventsOut, QuoteOut, StatusOut
from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery
from drones.api import TelemetryOut
from drones.geo import Point
from portal.api import ErrorOut, represented, represented_many
from tests.conftest import Tenant, delivery_body, make_fleet

OTHER_ZONE = "America/Los_Angeles"


def plain(serializer_class: type[serializers.Serializer], instance: Any) -> Any:
    """What DRF itself makes of it."""
    return serializer_class().to_representation(instance)


def assert_same(serializer_class: type[serializers.Serializer], instance: Any) -> None:
    planned, drf = represented(serializer_class, instance), plain(serializer_class, instance)
    assert planned == drf
    # Equal dicts may still differ in order or in type (1 == 1.0, "a" != UUID but 1 == True).
    assert json.dumps(planned, default=repr) == json.dumps(drf, default=repr)
    assert [type(v) for v in planned.values()] == [type(v) for v in drf.values()]


def deliveries_of_every_kind(tenant: Tenant) -> list[Delivery]:
    """Waiting, booked ahead with a deadline, assigned, flying, delivered and failed."""
    make_fleet(3)
    made = []
    for overrides in (
        {},
        {
            "pickup_time": (timezone.now() + timedelta(days=1)).isoformat(),
            "deadline": (timezone.now() + timedelta(days=1, hours=2)).isoformat(),
            "expedited": True,
            "confirmation_required": "picture",
        },
        {"recipient": None},
        {},
        {},
        {},
    ):
        body = {k: v for k, v in delivery_body(**overrides).items() if v is not None}
        response = tenant.client.post_json("/api/v1/deliveries", body)
        assert response.status_code == 202, response.json()
        made.append(uuid.UUID(response.json()["id"]))
    for delivery_id in made[3:]:
        assert services.delivery_assign(delivery_id=delivery_id).result == "assigned"
    delivery_move(Delivery.objects.get(pk=made[4]), "en_route_to_pickup")
    delivery = Delivery.objects.get(pk=made[5])
    for stage in (
        "en_route_to_pickup",
        "at_pickup",
        "en_route_to_dropoff",
        "at_dropoff",
        "delivered",
    ):
        delivery_move(delivery, stage, position=(47.62, -122.349, 0.0))
        delivery.refresh_from_db()
    failed = Delivery.objects.get(pk=made[0])
    services.delivery_fail(delivery_id=failed.pk, reason="no drone could reach the pickup")
    return list(selectors.delivery_list(business_id=tenant.business.pk))


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", OTHER_ZONE])  # the API's, and the site's
def test_deliveries_come_out_as_drf_makes_them(tenant: Tenant, zone: str) -> None:
    deliveries = deliveries_of_every_kind(tenant)
    assert {d.status for d in deliveries} >= {"requested", "assigned", "delivered", "failed"}
    assert any(d.drone_id for d in deliveries) and any(d.pickup_time for d in deliveries)
    with timezone.override(zone):
        for delivery in deliveries:
            assert_same(DeliveryOut, delivery)
            assert_same(DeliveryWithEventsOut, delivery)
            status = selectors.delivery_status_get(
                business_id=tenant.business.pk, delivery_id=delivery.pk
            )
            assert_same(StatusOut, status)
        many = represented_many(DeliveryOut, deliveries)
        assert many == [plain(DeliveryOut, d) for d in deliveries]
    assert many[0]["created_at"].endswith(("-08:00", "-07:00") if zone == OTHER_ZONE else "Z")


@pytest.mark.django_db
def test_a_flying_drones_status_and_a_quote_come_out_as_drf_makes_them(tenant: Tenant) -> None:
    make_fleet(2)
    quote = services.quote_create(
        business_id=tenant.business.pk,
        request=services.DeliveryRequest(
            pickup=services.Place(Point(47.6097, -122.3422), "Pike Place Market"),
            dropoff=services.Place(Point(47.6205, -122.3493), "Space Needle"),
            package_size="small",
            package_weight_kg=2.0,
        ),
    )
    assert_same(QuoteOut, quote)
    status = {
        "status": "en_route_to_dropoff",
        "drone_location": {
            "lat": 47.61,
            "lon": -122.34,
            "alt_m": 80,
            "heading": None,
            "ground_speed_mps": 12.5,
            "at": timezone.now(),
        },
        "pickup_eta": timezone.now(),
        "dropoff_eta": timezone.now() + timedelta(minutes=4),
        "updated_at": timezone.now(),
        "failure_reason": None,
    }
    assert_same(StatusOut, status)


def test_telemetry_answers_and_errors_come_out_as_drf_makes_them() -> None:
    answer: dict[str, Any] = {
        "accepted": 1,
        "ignored": 1,
        "refused": 0,
        "malformed": 1,
        "results": [
            {"index": 0, "drone": "D-1", "result": "accepted"},
            {"index": 1, "drone": "D-2", "result": "ignored", "reason": "an older report"},
            {"index": 2, "drone": None, "result": "malformed", "fields": {"lat": ["required"]}},
        ],
        "commands": {"D-1": {"type": "stand_by"}},
    }
    assert_same(TelemetryOut, answer)  # no "error": omitted, as DRF omits it
    assert "error" not in represented(TelemetryOut, answer)
    answer["error"] = {"code": "invalid", "message": "1 report is malformed", "fields": {}}
    assert_same(TelemetryOut, answer)
    assert_same(ErrorOut, {"error": {"code": "not_found", "message": "no such delivery"}})


class Colour(enum.Enum):
    RED = "red"


class Everything(serializers.Serializer):
    """Each way a field can leave the plain read or the plain conversion."""

    dotted = serializers.CharField(source="inner.name")
    called = serializers.CharField()
    absent = serializers.CharField(required=False)
    absent_default = serializers.CharField(default="the default")
    absent_null = serializers.CharField(allow_null=True)
    naive = serializers.DateTimeField()
    aware = serializers.DateTimeField()
    text_time = serializers.DateTimeField()
    formatted = serializers.DateTimeField(format="%Y-%m-%d %H:%M")
    fixed_zone = serializers.DateTimeField(default_timezone=dt_timezone(timedelta(hours=3)))
    enum_choice = serializers.ChoiceField(choices=["red", "blue"])
    empty_choice = serializers.ChoiceField(choices=["", "blue"])
    unknown_choice = serializers.ChoiceField(choices=["blue"])
    flag_one = serializers.BooleanField()
    flag_text = serializers.BooleanField()
    number = serializers.IntegerField()
    ratio = serializers.FloatField()
    identifier = serializers.UUIDField()
    hex_identifier = serializers.UUIDField(format="hex")
    money = serializers.DecimalField(max_digits=6, decimal_places=2)
    method = serializers.SerializerMethodField()
    nothing = serializers.CharField()
    nested = ErrorOut()
    nested_none = ErrorOut(allow_null=True)

    def get_method(self, instance: Any) -> str:
        return f"made for {instance.called()}"


def test_every_kind_of_field_comes_out_as_drf_makes_it() -> None:
    instance = SimpleNamespace(
        inner=SimpleNamespace(name="inside"),
        called=lambda: "by a call",
        naive=datetime(2026, 1, 2, 3, 4, 5),
        aware=datetime(2026, 7, 1, 12, 0, tzinfo=UTC),
        text_time="2026-01-01T00:00:00Z",
        formatted=datetime(2026, 7, 1, 12, 0, tzinfo=UTC),
        fixed_zone=datetime(2026, 7, 1, 12, 0, tzinfo=UTC),
        enum_choice=Colour.RED,
        empty_choice="",
        unknown_choice="green",
        flag_one=1,
        flag_text="true",
        number="7",
        ratio=2,
        identifier=uuid.UUID(int=5),
        hex_identifier=uuid.UUID(int=6),
        money=Decimal("12.5"),
        nothing=None,
        nested={"error": {"code": "c", "message": "m"}},
        nested_none=None,
    )
    for zone in ("UTC", OTHER_ZONE):
        with timezone.override(zone):
            assert_same(Everything, instance)
    document = represented(Everything, instance)
    assert "absent" not in document
    assert document["absent_default"] == "the default" and document["absent_null"] is None
    assert document["dotted"] == "inside" and document["called"] == "by a call"
    assert document["aware"] == "2026-07-01T12:00:00Z" and document["fixed_zone"].endswith("+03:00")


class Shouting(serializers.Serializer):
    name = serializers.CharField()

    def to_representation(self, instance: Any) -> dict[str, str]:
        return {"NAME": instance.name.upper()}


class Backwards(serializers.ListSerializer):
    def to_representation(self, data: Any) -> list[Any]:
        return list(reversed(super().to_representation(data)))


class Plain(serializers.Serializer):
    name = serializers.CharField()

    class Meta:
        list_serializer_class = Backwards


class Holder(serializers.Serializer):
    one = Shouting()
    several = Shouting(many=True)
    backwards = Plain(many=True)


def test_a_serializers_own_to_representation_is_kept() -> None:
    a, b = SimpleNamespace(name="ann"), SimpleNamespace(name="bob")
    assert represented(Shouting, a) == {"NAME": "ANN"}
    holder = SimpleNamespace(one=a, several=[a, b], backwards=[a, b])
    assert_same(Holder, holder)
    assert represented(Holder, holder)["backwards"] == [{"name": "bob"}, {"name": "ann"}]

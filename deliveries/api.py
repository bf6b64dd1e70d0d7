"""The business API for quotes and deliveries (`/api/v1/`)."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.services import audited
from deliveries import selectors, services
from deliveries.models import Delivery, Quote
from deliveries.reasons import public_reason
from drones.geo import Point
from portal.api import PAGES, Pagination, represented, represented_many, validated
from portal.errors import NotFound

# --- input ------------------------------------------------------------------------------------


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a zone; a time without one is ambiguous and refused."""

    def to_internal_value(self, value: Any) -> datetime:
        # DRF reads a time without a zone in the server's zone; ask Django's parser instead.
        try:
            given = parse_datetime(value.strip()) if isinstance(value, str) else None
        except ValueError:  # well-formed but no such time: 2027-02-30, 25:00
            self.fail("invalid", format="ISO 8601, e.g. 2026-05-01T14:30:00Z")
        if given is not None and given.tzinfo is None:
            raise serializers.ValidationError(
                "include a time zone, e.g. 2026-05-01T14:30:00Z or +02:00"
            )
        return super().to_internal_value(value)


class _Closed(serializers.Serializer):
    """An input object whose members are all its fields: any other is refused by name."""

    refuses_unknown_fields = True  # the schema says so (portal/schema.py)

    def to_internal_value(self, data: Any) -> Any:
        _refuse_unknown_fields(self, data)
        return super().to_internal_value(data)


class PlaceIn(_Closed):
    lat = serializers.FloatField(help_text="WGS84 latitude in decimal degrees")
    lon = serializers.FloatField(help_text="WGS84 longitude in decimal degrees")
    address = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class PackageIn(_Closed):
    size = serializers.ChoiceField(choices=Delivery.Size.choices)
    weight_kg = serializers.FloatField()
    tag = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class RecipientIn(_Closed):
    name = serializers.CharField(max_length=200)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")


class DeliveryIn(serializers.Serializer):
    pickup = PlaceIn()
    dropoff = PlaceIn()
    package = PackageIn()
    pickup_time = AwareDateTimeField(required=False, allow_null=True, default=None)
    deadline = AwareDateTimeField(required=False, allow_null=True, default=None)
    expedited = serializers.BooleanField(required=False, default=False)
    confirmation_required = serializers.ChoiceField(
        choices=Delivery.Confirmation.choices, required=False, default=Delivery.Confirmation.NONE
    )
    recipient = RecipientIn(required=False, allow_null=True, default=None)
    quote_id = serializers.UUIDField(required=False, allow_null=True, default=None)
    refuses_unknown_fields = True  # the schema says so (portal/schema.py)

    def to_internal_value(self, data: Any) -> Any:
        _refuse_unknown_fields(self, data)
        return super().to_internal_value(data)


class RescheduleIn(serializers.Serializer):
    pickup_time = AwareDateTimeField(required=False)
    dropoff = PlaceIn(required=False)
    deadline = AwareDateTimeField(required=False)
    refuses_unknown_fields = True
    min_properties = 1

    def to_internal_value(self, data: Any) -> Any:
        _refuse_unknown_fields(self, data, hint="only pickup_time, dropoff and deadline change")
        if isinstance(data, dict) and not data:
            raise serializers.ValidationError(
                {"non_field_errors": ["give at least one of pickup_time, dropoff, deadline"]}
            )
        return super().to_internal_value(data)


def _refuse_unknown_fields(serializer: serializers.Serializer, data: Any, hint: str = "") -> None:
    if not isinstance(data, dict):
        return
    unknown = sorted(set(data) - set(serializer.fields))
    if unknown:
        message = "unknown field" + (f"; {hint}" if hint else "")
        raise serializers.ValidationError({name: [message] for name in unknown})


def _place(data: dict[str, Any]) -> services.Place:
    return services.Place(Point(lat=data["lat"], lon=data["lon"]), data.get("address", ""))


def delivery_request_from(data: dict[str, Any]) -> services.DeliveryRequest:
    recipient = data.get("recipient") or {}
    return services.DeliveryRequest(
        pickup=_place(data["pickup"]),
        dropoff=_place(data["dropoff"]),
        package_size=data["package"]["size"],
        package_weight_kg=data["package"]["weight_kg"],
        package_tag=data["package"].get("tag", ""),
        pickup_time=data.get("pickup_time"),
        deadline=data.get("deadline"),
        expedited=data.get("expedited", False),
        confirmation_required=data.get("confirmation_required", Delivery.Confirmation.NONE),
        recipient={k: v for k, v in recipient.items() if v},
    )


# --- output -----------------------------------------------------------------------------------
# What the API sends, each answer through one of these (so the schema is what is sent).


class MoneyOut(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=10, decimal_places=2)
    currency = serializers.CharField()


class QuoteOut(serializers.Serializer):
    quote_id = serializers.UUIDField(source="id")
    price = serializers.SerializerMethodField()
    pickup_eta = serializers.DateTimeField()
    dropoff_eta = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()

    @extend_schema_field(MoneyOut)
    def get_price(self, quote: Quote) -> dict[str, str]:
        return {"amount": str(quote.price_amount), "currency": quote.price_currency}


class LocationOut(serializers.Serializer):
    lat = serializers.FloatField()
    lon = serializers.FloatField()
    alt_m = serializers.FloatField(allow_null=True)
    heading = serializers.FloatField(allow_null=True, help_text="degrees from north")
    ground_speed_mps = serializers.FloatField(allow_null=True)
    at = serializers.DateTimeField(allow_null=True, help_text="when the drone reported it")


class StatusOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=Delivery.Status.choices)
    drone_location = LocationOut(allow_null=True)
    pickup_eta = serializers.DateTimeField(allow_null=True)
    dropoff_eta = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    failure_reason = serializers.CharField(allow_null=True)


class EventLocationOut(serializers.Serializer):
    lat = serializers.FloatField()
    lon = serializers.FloatField()
    alt_m = serializers.FloatField(allow_null=True)


class EventOut(serializers.Serializer):
    status = serializers.CharField()
    at = serializers.DateTimeField()
    location = serializers.SerializerMethodField()
    note = serializers.CharField()

    @extend_schema_field(EventLocationOut(allow_null=True))
    def get_location(self, event: Any) -> dict[str, float | None] | None:
        if event.lat is None:
            return None
        return {"lat": event.lat, "lon": event.lon, "alt_m": event.alt_m}


class PlaceOut(serializers.Serializer):
    lat = serializers.FloatField(help_text="WGS84 latitude in decimal degrees")
    lon = serializers.FloatField(help_text="WGS84 longitude in decimal degrees")
    address = serializers.CharField(allow_blank=True)


class PackageOut(serializers.Serializer):
    id = serializers.UUIDField(help_text="the package document's id")
    size = serializers.ChoiceField(choices=Delivery.Size.choices)
    weight_kg = serializers.FloatField()
    tag = serializers.CharField(allow_blank=True)


class RecipientOut(serializers.Serializer):
    name = serializers.CharField()
    email = serializers.CharField(allow_blank=True)
    phone = serializers.CharField(allow_blank=True)


class DroneRefOut(serializers.Serializer):
    id = serializers.UUIDField()
    serial = serializers.CharField()


class RouteOut(serializers.Serializer):
    type = serializers.ChoiceField(choices=["LineString"])
    coordinates = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="[lon, lat] pairs: around every no-fly zone active when planned",
    )


@extend_schema_serializer(component_name="Delivery")
class DeliveryOut(serializers.Serializer):
    """A delivery, as every answer about one (and each webhook's `data`) shows it."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Delivery.Status.choices)
    tracking_url = serializers.SerializerMethodField()
    pickup = serializers.SerializerMethodField()
    dropoff = serializers.SerializerMethodField()
    package = serializers.SerializerMethodField()
    pickup_time = serializers.DateTimeField(allow_null=True)
    deadline = serializers.DateTimeField(allow_null=True)
    expedited = serializers.BooleanField()
    confirmation_required = serializers.ChoiceField(choices=Delivery.Confirmation.choices)
    recipient = serializers.SerializerMethodField()
    price = serializers.SerializerMethodField()
    quote_id = serializers.UUIDField(allow_null=True)
    drone = serializers.SerializerMethodField()
    pickup_eta = serializers.DateTimeField(allow_null=True)
    dropoff_eta = serializers.DateTimeField(allow_null=True)
    failure_reason = serializers.SerializerMethodField()
    route = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(serializers.URLField(help_text="the public tracking page"))
    def get_tracking_url(self, delivery: Delivery) -> str:
        return tracking_url(delivery)

    @extend_schema_field(PlaceOut)
    def get_pickup(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "lat": delivery.pickup_lat,
            "lon": delivery.pickup_lon,
            "address": delivery.pickup_address,
        }

    @extend_schema_field(PlaceOut)
    def get_dropoff(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "lat": delivery.dropoff_lat,
            "lon": delivery.dropoff_lon,
            "address": delivery.dropoff_address,
        }

    @extend_schema_field(PackageOut)
    def get_package(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "id": str(delivery.package_id),
            "size": delivery.package_size,
            "weight_kg": delivery.package_weight_kg,
            "tag": delivery.package_tag,
        }

    @extend_schema_field(RecipientOut(allow_null=True))
    def get_recipient(self, delivery: Delivery) -> dict[str, str] | None:
        if not delivery.recipient_name:
            return None
        return {
            "name": delivery.recipient_name,
            "email": delivery.recipient_email,
            "phone": delivery.recipient_phone,
        }

    @extend_schema_field(MoneyOut(allow_null=True))
    def get_price(self, delivery: Delivery) -> dict[str, str] | None:
        if delivery.price_amount is None:
            return None
        return {"amount": str(delivery.price_amount), "currency": delivery.price_currency}

    @extend_schema_field(DroneRefOut(allow_null=True))
    def get_drone(self, delivery: Delivery) -> dict[str, str] | None:
        if not delivery.drone_id or not delivery.drone:
            return None
        return {"id": str(delivery.drone_id), "serial": delivery.drone.serial}

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_failure_reason(self, delivery: Delivery) -> str | None:
        # Plain words, never an error's text or an operator's note (which stay in admin).
        return public_reason(delivery.failure_reason) if delivery.failure_reason else None

    @extend_schema_field(RouteOut(allow_null=True))
    def get_route(self, delivery: Delivery) -> dict[str, Any] | None:
        return route_geojson(delivery.route)


@extend_schema_serializer(component_name="DeliveryWithEvents")
class DeliveryWithEventsOut(DeliveryOut):
    events = EventOut(many=True, source="events.all", help_text="every stage change, in order")


def delivery_document(delivery: Delivery) -> Any:
    """A delivery as the API and webhooks send it (DeliveryOut)."""
    return represented(DeliveryOut, delivery)


def route_geojson(route: dict[str, Any] | None) -> dict[str, Any] | None:
    """The flight path as a GeoJSON LineString ([lon, lat]): from the drone's start through the
    pickup to the dropoff once a drone is assigned, the pickup to the dropoff before."""
    if not route or not route.get("to_dropoff"):
        return None
    points = [*route.get("to_pickup", [])[:-1], *route["to_dropoff"]]
    return {"type": "LineString", "coordinates": [[lon, lat] for lat, lon in points]}


def tracking_url(delivery: Delivery) -> str:
    return f"{settings.PUBLIC_BASE_URL}{_path('track', delivery.tracking_token)}"


_MARK = "__argument__"


@functools.cache
def _path_around(name: str) -> tuple[str, str]:
    head, _, tail = reverse(name, args=[_MARK]).partition(_MARK)
    return head, tail


def _path(name: str, value: Any) -> str:
    """`reverse(name, args=[value])` for a URL with one argument, the URL tree walked once per
    name rather than per call (twice per accepted delivery). The values are ids and tracking
    tokens, URL-safe already, so nothing needs quoting."""
    head, tail = _path_around(name)
    return f"{head}{value}{tail}"


ERRORS = {
    400: OpenApiResponse(description="malformed input: `error.fields` names each bad field"),
    401: OpenApiResponse(description="missing, invalid or revoked API key"),
    404: OpenApiResponse(description="no such delivery for this business"),
    409: OpenApiResponse(description="not possible in the delivery's current state"),
    422: OpenApiResponse(description="well-formed but impossible; `error.message` says why"),
    429: OpenApiResponse(description="rate limit; see Retry-After"),
}
DELIVERY_EXAMPLE = OpenApiExample(
    "Across central Seattle",
    request_only=True,
    value={
        "pickup": {"lat": 47.6097, "lon": -122.3422, "address": "Pike Place Market"},
        "dropoff": {"lat": 47.6205, "lon": -122.3493, "address": "Space Needle"},
        "package": {"size": "small", "weight_kg": 2.0, "tag": "pharmacy"},
        "recipient": {"name": "Ada", "email": "ada@example.com"},
    },
)
RESCHEDULE_EXAMPLE = OpenApiExample(
    "A new dropoff",
    request_only=True,
    value={"dropoff": {"lat": 47.6154, "lon": -122.3376, "address": "Westlake Center"}},
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Replays the first answer for 24 hours; the same key with another body is a 409.",
)


# --- views ------------------------------------------------------------------------------------


def _delivery_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such delivery") from None


def _business_id(request: Request) -> Any:
    return request.user.pk


def _idempotent_post(request: Request, produce: Any) -> Response:
    key = request.headers.get("Idempotency-Key")
    method = request.method or "POST"
    # Hashing the body is needed only to compare it with a stored request.
    fingerprint = (
        services.request_fingerprint(method=method, path=request.path, body=request.data)
        if key
        else ""
    )
    stored = services.idempotent(
        business_id=_business_id(request),
        key=key,
        method=method,
        path=request.path,
        fingerprint=fingerprint,
        produce=produce,
    )
    response = Response(stored.body, status=stored.status, headers=stored.headers)
    if stored.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


class QuoteCreateApi(APIView):
    @extend_schema(
        summary="Price a delivery and estimate its pickup and dropoff",
        request=DeliveryIn,
        examples=[DELIVERY_EXAMPLE],
        responses={200: QuoteOut, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = validated(DeliveryIn, request.data)
        quote = services.quote_create(
            business_id=_business_id(request), request=delivery_request_from(data)
        )
        return Response(represented(QuoteOut, quote), status=status.HTTP_200_OK)


class DeliveryListCreateApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        operation_id="deliveries_list",
        summary="List the caller's deliveries, newest first",
        description=PAGES,
        parameters=[OpenApiParameter("status", str, enum=list(Delivery.Status.values))],
        responses={200: DeliveryOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        wanted = request.query_params.get("status")
        if wanted is not None and wanted not in Delivery.Status.values:
            raise serializers.ValidationError(
                {"status": [f"one of {', '.join(Delivery.Status.values)}"]}
            )
        deliveries = selectors.delivery_list(business_id=_business_id(request), status=wanted)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(represented_many(DeliveryOut, page or []))

    @extend_schema(
        summary="Schedule a delivery",
        description=(
            "Stores the request and answers 202 at once; workers assign a drone. Follow it with "
            "`GET /api/v1/deliveries/{id}/status` or the tracking URL."
        ),
        request=DeliveryIn,
        parameters=[IDEMPOTENCY_KEY],
        examples=[DELIVERY_EXAMPLE],
        responses={202: DeliveryOut, 409: ERRORS[409], **ERRORS},
    )
    def post(self, request: Request) -> Response:
        def produce() -> services.StoredResponse:
            data = validated(DeliveryIn, request.data)
            delivery = services.delivery_create(
                business_id=_business_id(request),
                request=delivery_request_from(data),
                quote_id=data.get("quote_id"),
            )
            location = _path("delivery-detail", delivery.id)
            return services.StoredResponse(
                status.HTTP_202_ACCEPTED, delivery_document(delivery), {"Location": location}
            )

        return _idempotent_post(request, produce)


class DeliveryDetailApi(APIView):
    @extend_schema(
        summary="A delivery with its events", responses={200: DeliveryWithEventsOut, **ERRORS}
    )
    def get(self, request: Request, delivery_id: str) -> Response:
        delivery = selectors.delivery_get(
            business_id=_business_id(request), delivery_id=_delivery_id(delivery_id)
        )
        return Response(represented(DeliveryWithEventsOut, delivery))

    @extend_schema(
        summary="Reschedule before pickup: pickup time, dropoff, deadline",
        request=RescheduleIn,
        examples=[RESCHEDULE_EXAMPLE],
        responses={200: DeliveryWithEventsOut, **ERRORS},
    )
    def patch(self, request: Request, delivery_id: str) -> Response:
        data = validated(RescheduleIn, request.data)
        with audited(
            request, "delivery.reschedule", (Delivery, _delivery_id(delivery_id)), dict(data)
        ):
            delivery = services.delivery_reschedule(
                business_id=_business_id(request),
                delivery_id=_delivery_id(delivery_id),
                pickup_time=data.get("pickup_time"),
                dropoff=_place(data["dropoff"]) if "dropoff" in data else None,
                deadline=data.get("deadline"),
            )
        return Response(represented(DeliveryWithEventsOut, delivery))


class DeliveryStatusApi(APIView):
    @extend_schema(summary="The live status and ETAs", responses={200: StatusOut, **ERRORS})
    def get(self, request: Request, delivery_id: str) -> Response:
        document = selectors.delivery_status_get(
            business_id=_business_id(request), delivery_id=_delivery_id(delivery_id)
        )
        return Response(represented(StatusOut, document))


class DeliveryCancelApi(APIView):
    @extend_schema(
        summary="Cancel before pickup; the drone is released",
        request=None,
        parameters=[IDEMPOTENCY_KEY],
        responses={200: DeliveryOut, **ERRORS},
    )
    def post(self, request: Request, delivery_id: str) -> Response:
        def produce() -> services.StoredResponse:
            with audited(request, "delivery.cancel", (Delivery, _delivery_id(delivery_id))):
                delivery = services.delivery_cancel(
                    business_id=_business_id(request), delivery_id=_delivery_id(delivery_id)
                )
            return services.StoredResponse(status.HTTP_200_OK, delivery_document(delivery), {})

        return _idempotent_post(request, produce)

"""The business API for webhook endpoints (`/api/v1/webhooks`)."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.services import audited
from portal.api import PAGES, Pagination, validated
from portal.errors import NotFound
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

ERRORS = {
    400: OpenApiResponse(description="malformed input: `error.fields` names each bad field"),
    401: OpenApiResponse(description="missing, invalid or revoked API key"),
    404: OpenApiResponse(description="no such webhook endpoint for this business"),
    422: OpenApiResponse(description="an unsafe URL or unknown events; `error.message` says why"),
    429: OpenApiResponse(description="rate limit; see Retry-After"),
}


# --- input ------------------------------------------------------------------------------------


class _NoUnknownFields(serializers.Serializer):
    refuses_unknown_fields = True  # the schema says so (portal/schema.py)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s\x00-\x1f\x7f-\x9f\[\]]+"
        r"[^\s\x00-\x1f\x7f-\x9f\[\]]*$",
        "maxLength": 2000,
        "description": "https:// (http:// only in development), to a public host",
    }
)
class UrlField(serializers.CharField):
    """A URL: a scheme and a host. Whether it may be used (https, a host that resolves to a
    public address, a real port) is the service's check, a 422 that says why."""

    default_error_messages = {"invalid": "Enter a valid URL."}
    # No URL holds whitespace or a control character (stored, it would not be an IRI).
    _UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2000, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        try:
            parts = urlsplit(value)
        except ValueError:
            self.fail("invalid")
        if not parts.scheme or not parts.netloc or self._UNSAFE.search(value):
            self.fail("invalid")
        return value


class EndpointIn(_NoUnknownFields):
    url = UrlField()
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=services.EVENT_TYPES), min_length=1
    )
    active = serializers.BooleanField(required=False, default=True)
    description = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )


class EndpointChangeIn(_NoUnknownFields):
    url = UrlField(required=False)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=services.EVENT_TYPES),
        min_length=1,
        required=False,
    )
    active = serializers.BooleanField(required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)


# --- output -----------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "format": "iri"})
class IriField(serializers.CharField):
    """A URL as it was given: an IRI, whose host may be internationalized (bücher.example)."""


class EndpointOut(serializers.Serializer):
    id = serializers.UUIDField()
    url = IriField()
    events = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField()
    description = serializers.CharField()
    disabled_at = serializers.DateTimeField(
        allow_null=True, help_text="when it was disabled for failing too long"
    )
    failing_since = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class EndpointWithSecretOut(EndpointOut):
    secret = serializers.CharField(help_text="the signing secret; shown only in this answer")


class RotatedOut(serializers.Serializer):
    secret = serializers.CharField(help_text="the new signing secret; shown only in this answer")
    previous_secret_until = serializers.DateTimeField(
        help_text="until when the previous secret also signs every message"
    )


class AttemptOut(serializers.Serializer):
    message_id = serializers.CharField(help_text="the message's webhook-id")
    type = serializers.CharField(source="message.type")
    delivery_id = serializers.UUIDField(source="message.delivery_id")
    at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()


class MessageOut(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    delivery_id = serializers.UUIDField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()


# --- views ------------------------------------------------------------------------------------


def _business_id(request: Request) -> Any:
    return request.user.pk


def _endpoint_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such webhook endpoint") from None


class EndpointListCreateApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        operation_id="webhooks_list",
        summary="List the caller's webhook endpoints",
        description=PAGES,
        responses={200: EndpointOut(many=True)},
    )
    def get(self, request: Request) -> Response:
        endpoints = WebhookEndpoint.objects.filter(business_id=_business_id(request))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(endpoints, request, view=self)
        return paginator.get_paginated_response(EndpointOut(page, many=True).data)

    @extend_schema(
        summary="Register a webhook endpoint; the answer carries its secret, once",
        request=EndpointIn,
        responses={201: EndpointWithSecretOut, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = validated(EndpointIn, request.data)
        with audited(request, "webhook_endpoint.create", changes=dict(data)) as audit:
            endpoint = services.webhook_endpoint_create(business_id=_business_id(request), **data)
            audit.target = endpoint
        return Response(EndpointWithSecretOut(endpoint).data, status=status.HTTP_201_CREATED)


class EndpointDetailApi(APIView):
    @extend_schema(summary="A webhook endpoint", responses={200: EndpointOut, **ERRORS})
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.webhook_endpoint_get(
            business_id=_business_id(request), endpoint_id=_endpoint_id(endpoint_id)
        )
        return Response(EndpointOut(endpoint).data)

    @extend_schema(
        summary="Change a webhook endpoint; active=true re-enables a disabled one",
        request=EndpointChangeIn,
        responses={200: EndpointOut, **ERRORS},
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        data = validated(EndpointChangeIn, request.data)
        with audited(
            request, "webhook_endpoint.update", (WebhookEndpoint, _endpoint_id(endpoint_id)), data
        ):
            endpoint = services.webhook_endpoint_update(
                business_id=_business_id(request),
                endpoint_id=_endpoint_id(endpoint_id),
                changes=dict(data),
            )
        return Response(EndpointOut(endpoint).data)

    @extend_schema(summary="Remove a webhook endpoint", responses={204: None, **ERRORS})
    def delete(self, request: Request, endpoint_id: str) -> Response:
        with audited(
            request, "webhook_endpoint.delete", (WebhookEndpoint, _endpoint_id(endpoint_id))
        ):
            services.webhook_endpoint_delete(
                business_id=_business_id(request), endpoint_id=_endpoint_id(endpoint_id)
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateApi(APIView):
    @extend_schema(
        summary="A new signing secret; the previous one keeps signing for 24 hours",
        request=None,
        responses={200: RotatedOut, **ERRORS},
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        with audited(
            request, "webhook_endpoint.rotate", (WebhookEndpoint, _endpoint_id(endpoint_id))
        ):
            endpoint = services.webhook_endpoint_rotate(
                business_id=_business_id(request), endpoint_id=_endpoint_id(endpoint_id)
            )
        return Response(RotatedOut(endpoint).data)


class EndpointAttemptsApi(APIView):
    pagination_class = Pagination
    cursor_by = "at"

    @extend_schema(
        operation_id="webhooks_attempts_list",
        summary="The endpoint's attempts, newest first (kept 14 days)",
        description=PAGES,
        responses={200: AttemptOut(many=True), **ERRORS},
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.webhook_endpoint_get(
            business_id=_business_id(request), endpoint_id=_endpoint_id(endpoint_id)
        )
        attempts = (
            WebhookAttempt.objects.filter(endpoint=endpoint)
            .select_related("message")
            .order_by("-at", "-id")
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(attempts, request, view=self)
        return paginator.get_paginated_response(AttemptOut(page, many=True).data)


class MessageResendApi(APIView):
    @extend_schema(
        summary="Send a message again, with the same webhook-id",
        request=None,
        responses={202: MessageOut, **ERRORS},
    )
    def post(self, request: Request, endpoint_id: str, message_id: str) -> Response:
        endpoint = services.webhook_endpoint_get(
            business_id=_business_id(request), endpoint_id=_endpoint_id(endpoint_id)
        )
        with audited(request, "webhook_message.resend", (WebhookMessage, message_id)):
            message = services.webhook_message_resend(
                message_id=message_id, business_id=endpoint.business_id, endpoint_id=endpoint.pk
            )
        return Response(MessageOut(message).data, status=status.HTTP_202_ACCEPTED)

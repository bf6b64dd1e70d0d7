"""The OpenAPI schema's generator: drf-spectacular's, with every error answer documented."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework.authentication import SessionAuthentication
from rest_framework.fields import CharField

from portal.api import ErrorOut

NO_NUL = r"^[^\x00]*$"
# No NUL, and something besides whitespace: DRF strips a string before it refuses a blank one.
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"

# The answers any operation may give besides its own, by what the operation has.
_ANY_ERRORS = {
    "400": "malformed input: `error.fields` names each bad field",
    "401": "missing, invalid or revoked credentials",
    "403": "these credentials may not do this",
    "404": "no such resource (or page) for these credentials",
    "413": "the body is over the size cap",
    "415": "the body is not JSON",
    "429": "rate limit, or too many failed authentications; see Retry-After",
    "503": (
        "a service it needs is briefly down; retry after Retry-After, with the same "
        "Idempotency-Key if one was sent (the request may have been stored as it went down)"
    ),
}


class ApiSchema(AutoSchema):
    """drf-spectacular's schema, with the error answers every operation can give and the one
    error body (ErrorOut) on each 4xx and 5xx answer, so that none is left undocumented."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        bodies: dict[str, Any] = super()._get_response_bodies(direction)
        for code in self._possible_errors():
            bodies.setdefault(code, {"description": _ANY_ERRORS[code]})
        for code, body in bodies.items():
            if int(code) >= 400 and "content" not in body:
                error = OpenApiResponse(ErrorOut, description=body["description"])
                bodies[code] = self._get_response_for_code(error, code, direction=direction)
        return dict(sorted(bodies.items()))

    def _possible_errors(self) -> list[str]:
        view = self.view
        authenticators = [cls() for cls in view.authentication_classes]
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer()
        codes = ["503"]
        if has_body or self._get_parameters():
            codes.append("400")
        if authenticators:
            codes.append("429")
            if any(isinstance(a, SessionAuthentication) for a in authenticators):
                codes.append("403")  # CSRF, and DRF's answer when the first has no challenge
            else:
                codes.append("401")
        if "{" in self.path or getattr(view, "pagination_class", None):
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
        return codes

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        """Inputs say what their serializer refuses besides its fields' own rules: members it
        does not know (`refuses_unknown_fields`), an empty object (`min_properties`)."""
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        if direction == "request":
            if getattr(serializer, "refuses_unknown_fields", False):
                schema["additionalProperties"] = False
            if getattr(serializer, "min_properties", 0):
                schema["minProperties"] = serializer.min_properties
        return schema

    def _get_request_body(self, direction: Any = "request") -> dict[str, Any] | None:
        body: dict[str, Any] | None = super()._get_request_body(direction)
        if body is not None and hasattr(self.get_request_serializer(), "min_properties"):
            body["required"] = True  # an empty PATCH changes nothing: say what is needed
        return body

    def _map_serializer_field(
        self, field: Any, direction: Any, bypass_extensions: bool = False
    ) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # DRF refuses a NUL character in any string input (PostgreSQL could not store it), and
        # one of only whitespace where a blank is not allowed (it strips it first). A field
        # with a pattern of its own (a RegexValidator, mapped later) says so in it.
        if (
            direction == "request"
            and isinstance(schema, dict)
            and isinstance(field, CharField)
            and schema.get("type") == "string"
            and "pattern" not in schema
            and "enum" not in schema
            and not any(isinstance(v, RegexValidator) for v in field.validators)
        ):
            blank_refused = not field.allow_blank and field.trim_whitespace
            schema["pattern"] = NOT_BLANK if blank_refused else NO_NUL
        return schema


def _link(operation_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters}


# OpenAPI links from the operations that create a resource to those that take its id, by
# operationId: clients (and schemathesis' stateful testing) follow them from one answer to the next.
_DELIVERY = {"delivery_id": "$response.body#/id"}
_ENDPOINT = {"endpoint_id": "$response.body#/id"}
LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("deliveries_create", "202"): {
        "GetDelivery": _link("deliveries_retrieve", **_DELIVERY),
        "GetDeliveryStatus": _link("deliveries_status_retrieve", **_DELIVERY),
        "RescheduleDelivery": _link("deliveries_partial_update", **_DELIVERY),
        "CancelDelivery": _link("deliveries_cancel_create", **_DELIVERY),
    },
    ("webhooks_create", "201"): {
        "GetEndpoint": _link("webhooks_retrieve", **_ENDPOINT),
        "ChangeEndpoint": _link("webhooks_partial_update", **_ENDPOINT),
        "RotateEndpointSecret": _link("webhooks_rotate_create", **_ENDPOINT),
        "ListEndpointAttempts": _link("webhooks_attempts_list", **_ENDPOINT),
        "DeleteEndpoint": _link("webhooks_destroy", **_ENDPOINT),
    },
    ("webhooks_attempts_list", "200"): {
        "ResendMessage": _link(
            "webhooks_messages_resend_create",
            endpoint_id="$request.path.endpoint_id",
            message_id="$response.body#/results/0/message_id",
        ),
    },
}


def add_links(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the LINKS on the answers they follow from."""
    answers = {
        (operation["operationId"], code): answer
        for item in result.get("paths", {}).values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
        for code, answer in operation.get("responses", {}).items()
    }
    for key, links in LINKS.items():
        if key in answers:  # the operation may be left out (a schema for some endpoints only)
            answers[key].setdefault("links", {}).update(links)
    return result

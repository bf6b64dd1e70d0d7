"""What every API view shares: input validation, the error body, pagination."""

from __future__ import annotations

import io
import logging
import threading
import uuid
from typing import Any, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import BasePagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param

from portal import keyset
from portal.errors import Conflict, DomainError, LimitReached, NotFound, Unavailable

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=serializers.Serializer)
_bound = threading.local()


def validated(serializer_class: type[S], data: Any) -> Any:
    """`serializer_class(data=data)`'s validated data, or the ValidationError DRF raises.

    DRF deep-copies every declared field, nested serializers included, for each serializer it
    makes: for a delivery that is four times the cost of the validation itself. So each thread
    keeps one bound instance per class and gives it each new input; what it validated is a new
    dict every time, and nothing else of one input outlives its call.
    """
    kept: dict[type[serializers.Serializer], serializers.Serializer]
    kept = _bound.__dict__.setdefault("serializers", {})
    serializer = kept.get(serializer_class)
    if serializer is None:
        serializer = kept[serializer_class] = serializer_class()
    serializer.initial_data = data
    for result in ("_validated_data", "_errors", "_data"):
        serializer.__dict__.pop(result, None)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def represented(serializer_class: type[S], instance: Any) -> Any:
    """`serializer_class(instance).data`, from one bound instance per class and thread: the
    output twin of `validated` (the deep copy of the fields would cost more than the output)."""
    kept: dict[type[serializers.Serializer], serializers.Serializer]
    kept = _bound.__dict__.setdefault("outputs", {})
    serializer = kept.get(serializer_class)
    if serializer is None:
        serializer = kept[serializer_class] = serializer_class()
    return serializer.to_representation(instance)


DOMAIN_STATUS = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    LimitReached: status.HTTP_429_TOO_MANY_REQUESTS,
}


def _domain_status(exc: DomainError) -> int:
    for kind, code in DOMAIN_STATUS.items():
        if isinstance(exc, kind):
            return code
    return status.HTTP_422_UNPROCESSABLE_ENTITY


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """One stable error body: `{"error": {"code", "message", "fields"?}}`."""
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.field:
            body["fields"] = {exc.field: [exc.message]}
        return Response(error_document(body), status=_domain_status(exc))
    if isinstance(exc, DatabaseError | InterfaceError | RedisError | ConnectionInterrupted):
        return _dependency_error(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.messages)
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES (this module's
    # JsonParser) when it is first imported, which must not happen while this module loads.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        names = ", ".join(str(name) for name in fields)
        response.data = error_document(
            {"code": "invalid", "message": f"invalid input: {names}", "fields": fields}
        )
    elif isinstance(exc, exceptions.APIException):
        response.data = error_document({"code": exc.get_codes(), "message": str(exc.detail)})
    return response


def _dependency_error(exc: Exception) -> Response:
    """503 with Retry-After for a lost or refused connection to the database or Redis (keys,
    rate limits): an outage, retry. Any other database or Redis error (an integrity or
    programming error, a refused command) is a bug: a logged 500 whose body carries only an
    error id, for the client to quote and operators to find in the log."""
    from portal import outages

    if outages.unavailable(exc):
        logger.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
        return Response(
            error_document(
                {"code": "unavailable", "message": "the service is briefly unavailable; retry"}
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    error_id = uuid.uuid4().hex
    logger.error("unexpected error %s", error_id, exc_info=exc, extra={"error_id": error_id})
    return Response(
        error_document(
            {
                "code": "server_error",
                "message": f"an unexpected error occurred; quote error id {error_id}",
            }
        ),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


class ErrorDetailOut(serializers.Serializer):
    code = serializers.CharField(help_text="stable, for programs: invalid, not_found, conflict")
    message = serializers.CharField(help_text="what was wrong, in words")

    def get_fields(self) -> dict[str, serializers.Field]:
        # `fields` names a Serializer attribute, so it cannot be declared like the others.
        return {
            **super().get_fields(),
            "fields": serializers.DictField(
                child=serializers.JSONField(),
                required=False,
                help_text="each field at fault and its messages (nested as the input is)",
            ),
        }


class ErrorOut(serializers.Serializer):
    """The body of every error answer: `{"error": {"code", "message", "fields"?}}`."""

    error = ErrorDetailOut()


def error_document(body: dict[str, Any]) -> Any:
    return ErrorOut({"error": body}).data


class JsonParser(JSONParser):
    """DRF's, refusing as malformed, like any other bad JSON: a body nested too deeply for the
    decoder (`[` x 100,000: a RecursionError, so a 500), and a NUL character in any string
    (`\\u0000`: PostgreSQL cannot store one, so a 500 wherever a string reaches the database;
    DRF's CharField refuses it too, but not every input passes one)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        body = stream.read() if stream is not None else b""
        if b"\\u0000" in body:
            raise exceptions.ParseError("JSON parse error - a string holds a NUL (\\u0000)")
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


PAGES = (
    "In pages by cursor, newest first: `next` links to the older rows, `previous` to the newer "
    "ones (each null at its end); follow them as given. No `count`, no page numbers: a page "
    "costs the same however deep it is."
)


class Pagination(BasePagination):
    """Cursor pages, newest first: `next` and `previous` are links (null at either end), and no
    count. A page is a keyset read (portal.keyset), as fast at the millionth row as at the
    first; the view names its time field in `cursor_by` (created_at unless it says otherwise)."""

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    page_size = api_settings.PAGE_SIZE
    max_page_size = 200

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any]:
        if "page" in request.query_params:
            raise exceptions.ValidationError(
                {"page": ["pages are cursors: follow the answer's `next` and `previous` links"]}
            )
        self.request = request
        try:
            self.page = keyset.page_of(
                queryset,
                cursor=request.query_params.get(self.cursor_query_param),
                size=self.get_page_size(request),
                by=getattr(view, "cursor_by", "created_at"),
            )
        except keyset.BadCursor:
            raise exceptions.NotFound(
                "no such cursor: take the `next` and `previous` links as they are"
            ) from None
        return self.page.items

    def get_page_size(self, request: Any) -> int:
        """Above the cap meaning the cap; but a page size that is not a whole number of at
        least 1 is refused as a page that does not exist is, rather than ignored."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return int(self.page_size or 50)
        if not (raw.isascii() and raw.isdigit()) or not raw.strip("0"):
            raise exceptions.NotFound("page_size is a whole number from 1 (at most 200 are sent)")
        return self.max_page_size if len(raw) > 4 else min(int(raw), self.max_page_size)

    def _link(self, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, cursor)

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "next": self._link(self.page.older),
                "previous": self._link(self.page.newer),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "the older rows' page; null on the last"},
                "previous": {**link, "description": "the newer rows' page; null on the first"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "a page's position, as the `next` and `previous` links carry it",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"rows per page, {self.page_size} unless given; at most "
                f"{self.max_page_size} are sent",
                "schema": {"type": "integer", "minimum": 1},
            },
        ]

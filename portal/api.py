"""What every API view shares: input validation, the error body, pagination."""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from enum import Enum
from typing import Any, TypeGuard, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError
from django.db.models.manager import BaseManager
from django.utils import timezone
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import ISO_8601, exceptions, serializers, status
from rest_framework.fields import SkipField
from rest_framework.pagination import BasePagination
from rest_framework.parsers import JSONParser
from rest_framework.relations import PKOnlyObject
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
    """`serializer_class(instance).data`, from one bound instance per class and thread (the
    deep copy of the fields would cost more than the output), through its `_Output` plan."""
    return _output(serializer_class)(instance, _zone())


def represented_many(serializer_class: type[S], instances: Iterable[Any]) -> list[Any]:
    """`represented` of each instance (a page of a list): the time zone looked up once."""
    plan, zone = _output(serializer_class), _zone()
    return [plan(instance, zone) for instance in instances]


def _output(serializer_class: type[S]) -> _Output | _Own:
    kept: dict[type[serializers.Serializer], _Output | _Own]
    kept = _bound.__dict__.setdefault("outputs", {})
    plan = kept.get(serializer_class)
    if plan is None:
        serializer = serializer_class()
        plan = kept[serializer_class] = (
            _Output(serializer) if _planned(serializer) else _Own(serializer)
        )
    return plan


class _Own:
    """A serializer with a `to_representation` of its own: called as it is."""

    def __init__(self, serializer: serializers.Serializer) -> None:
        self.serializer = serializer

    def __call__(self, instance: Any, zone: tzinfo | None) -> Any:
        return self.serializer.to_representation(instance)


def _zone() -> tzinfo | None:
    """The zone DRF's DateTimeField writes times in (the active one; the API's is UTC)."""
    return timezone.get_current_timezone() if settings.USE_TZ else None


_Convert = Callable[[Any, "tzinfo | None"], Any]


class _Output:
    """A serializer's `to_representation`, planned once per class: the same dict, key by key,
    in the same order, with the same values (tests/api/test_output_plans.py compares the two
    on every output serializer of the API, in UTC and in another time zone).

    DRF's generic `to_representation` asks each field for its attribute through a chain of
    lookups and converts the value through the field's class, and each DateTimeField looks up
    the active time zone again (an asgiref Local, several calls deep). Here a field that reads
    one attribute or key by name (or the whole instance, as method fields do) reads it with
    getattr or [], and the fields whose conversion is a plain function (UUIDs, strings,
    numbers, booleans, choices, ISO 8601 times, method fields) use that function, the zone
    looked up once per call; nested serializers and lists of them are planned too. Any other
    field, and any value the plain read does not cover (a callable, a missing attribute, an
    enum), takes DRF's own path.

    Measured in one process on PostgreSQL, old and new alternated three times: a DeliveryOut
    25-33 us against 46-66 us; through Django's test client, with bench/scale.py's 1,000,000
    deliveries, the median CPU of a list page of 50 was 5.8-7.4 ms against 8.0-8.4 ms, and of
    one delivery with its events 3.5-5.3 ms against 5.0-5.3 ms. No database or broker in the
    conversion itself: the same on SQLite."""

    def __init__(self, serializer: serializers.Serializer) -> None:
        # The fields hold their serializer (field.parent), which method fields are bound to.
        self.fields = [
            (str(field.field_name), field, _plain_source(field), _converter(field))
            for field in serializer._readable_fields
        ]

    def __call__(self, instance: Any, zone: tzinfo | None) -> dict[str, Any]:
        document: dict[str, Any] = {}
        mapping = isinstance(instance, Mapping)
        for name, field, source, convert in self.fields:
            value: Any = _MISSING
            if source is _WHOLE:
                value = instance
            elif source is not None:
                try:
                    value = instance[source] if mapping else getattr(instance, source)
                except Exception:  # noqa: BLE001 - DRF's own read below says what it means
                    value = _MISSING
                if callable(value):
                    value = _MISSING
            if value is _MISSING:
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
                if isinstance(value, PKOnlyObject):
                    document[name] = None if value.pk is None else field.to_representation(value)
                    continue
            document[name] = None if value is None else convert(value, zone)
        return document


_MISSING = object()
_WHOLE = "*"  # a field of the whole instance (source="*": a method field)


def _plain_source(field: serializers.Field) -> str | None:
    """The attribute (or key) the field reads, when it reads one by name, DRF's own way;
    _WHOLE for a field of the whole instance."""
    attrs = field.source_attrs
    if len(attrs) > 1 or type(field).get_attribute is not serializers.Field.get_attribute:
        return None
    return attrs[0] if attrs else _WHOLE


def _converter(field: serializers.Field) -> _Convert:
    kind = type(field)
    if kind is serializers.SerializerMethodField and isinstance(
        field, serializers.SerializerMethodField
    ):
        method = getattr(field.parent, str(field.method_name))
        return lambda value, _: method(value)
    if kind is serializers.UUIDField and getattr(field, "uuid_format", "") == "hex_verbose":
        return lambda value, _: str(value)
    if kind is serializers.CharField:
        return lambda value, _: str(value)
    if kind is serializers.IntegerField:
        return lambda value, _: int(value)
    if kind is serializers.FloatField:
        return lambda value, _: float(value)
    if kind is serializers.BooleanField:
        return lambda value, _: value if isinstance(value, bool) else field.to_representation(value)
    if kind is serializers.ChoiceField and isinstance(field, serializers.ChoiceField):
        return _choice(field)
    if kind is serializers.DateTimeField and isinstance(field, serializers.DateTimeField):
        return _moment(field)
    if (
        isinstance(field, serializers.ListSerializer)
        and type(field).to_representation is serializers.ListSerializer.to_representation
        and _planned(field.child)
    ):
        child = _Output(field.child)
        return lambda value, zone: [
            child(item, zone) for item in (value.all() if isinstance(value, BaseManager) else value)
        ]
    if _planned(field):
        nested = _Output(field)
        return nested
    return lambda value, _: field.to_representation(value)


def _planned(field: Any) -> TypeGuard[serializers.Serializer]:
    """A serializer whose output is its fields' (to_representation not its own)."""
    return (
        isinstance(field, serializers.Serializer)
        and type(field).to_representation is serializers.Serializer.to_representation
    )


def _choice(field: serializers.ChoiceField) -> _Convert:
    values = field.choice_strings_to_values

    def convert(value: Any, _: Any) -> Any:
        if value == "" or isinstance(value, Enum):
            return field.to_representation(value)
        return values.get(str(value), value)

    return convert


def _moment(field: serializers.DateTimeField) -> _Convert:
    iso = str(getattr(field, "format", api_settings.DATETIME_FORMAT) or "").lower() == ISO_8601
    if not iso or hasattr(field, "timezone"):
        return lambda value, _: field.to_representation(value)

    def convert(value: Any, zone: tzinfo | None) -> Any:
        if zone is None or not isinstance(value, datetime) or value.utcoffset() is None:
            return field.to_representation(value)
        try:
            text = value.astimezone(zone).isoformat()
        except OverflowError:
            return field.to_representation(value)
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return convert


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

"""What every API view shares: the error body, pagination."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.errors import Conflict, DomainError, NotFound, Unavailable

logger = logging.getLogger(__name__)

DOMAIN_STATUS = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
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
        return Response({"error": body}, status=_domain_status(exc))
    if isinstance(exc, DatabaseError | RedisError | ConnectionInterrupted):
        # The database or the Redis that holds keys and rate limits is down: retry, not a bug.
        logger.exception("dependency unavailable")
        return Response(
            {
                "error": {
                    "code": "unavailable",
                    "message": "the service is briefly unavailable; retry",
                }
            },
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.messages)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        names = ", ".join(str(name) for name in fields)
        response.data = {
            "error": {"code": "invalid", "message": f"invalid input: {names}", "fields": fields}
        }
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        response.data = {"error": {"code": exc.get_codes(), "message": str(detail)}}
    return response


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200

"""Live feeds of a delivery's status as server-sent events, served by the ASGI `live` process.

    GET /live/deliveries/<id>   Authorization: Api-Key <key>   (the business's own deliveries)
    GET /live/track/<token>                                     (the public tracking link)

Each feed sends the current status first, then every status published on the delivery's
channel (deliveries.hub), as `event: status` with the whole document in `data:`; a comment
every 15 s keeps proxies from closing an idle feed; the feed ends after a terminal status
(delivered, cancelled, failed), which a client should take as the end, not reconnect. A feed
that breaks (Redis or the database down) just ends: EventSource reconnects after `retry`.

The views are async, so that an open feed costs a coroutine, not a thread: run them under an
ASGI server (portal.asgi, the Procfile's `live`). Served by a WSGI worker a feed would hold the
worker for its whole life, so there they answer 503 instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.request import Request

from businesses.auth import KEYWORD, ApiKeyAuthentication, ApiKeyRateThrottle, BusinessPrincipal
from deliveries import live, selectors
from deliveries.hub import HubUnavailable, Update, channel_of, hub
from deliveries.models import Delivery
from portal.errors import NotFound

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000
Document = dict[str, Any]
# The database or Redis down: the client is told to retry, never what broke.
DEPENDENCY_ERRORS = (DatabaseError, RedisError, ConnectionInterrupted)


def _error(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    """The API's error body, `{"error": {"code", "message"}}`."""
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _not_found() -> JsonResponse:
    return _error(404, "not_found", "no such delivery")


def _allow_origin(request: HttpRequest, response: HttpResponseBase) -> None:
    """CORS for the public feed, only for the origins LIVE_ALLOW_ORIGIN names (or `*`)."""
    configured: str = getattr(settings, "LIVE_ALLOW_ORIGIN", "") or ""
    allowed = [origin.strip() for origin in configured.split(",") if origin.strip()]
    if "*" in allowed:
        response["Access-Control-Allow-Origin"] = "*"
    elif allowed:
        origin = request.headers.get("Origin", "")
        if origin in allowed:
            response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"


# --- reads (sync: the ORM and django-redis) ---------------------------------------------------


def status_now(delivery_id: uuid.UUID) -> Document:
    """The live status from Redis, else from the database, as the status API reads it.

    Read-only: the web process refills Redis, whose copies are versioned by their writers."""
    cached = live.status_read(delivery_id)
    if cached is not None:
        return cached
    return live.status_of(Delivery.objects.select_related("drone").get(pk=delivery_id))


def _business_delivery(request: HttpRequest, delivery_id: str) -> uuid.UUID | HttpResponse:
    """The delivery's id if the caller's key may follow it, else the error to answer."""
    api = Request(request, authenticators=[ApiKeyAuthentication()])
    try:
        principal = api.user
    except exceptions.AuthenticationFailed as exc:
        return _error(401, "authentication_failed", str(exc.detail), WWW_Authenticate=KEYWORD)
    except exceptions.Throttled as exc:  # too many failed authentications from the address
        return _error(
            429,
            "throttled",
            str(exc.detail),
            Retry_After=str(math.ceil(getattr(exc, "wait", None) or 1)),
        )
    if not isinstance(principal, BusinessPrincipal):
        return _error(
            401,
            "not_authenticated",
            f"use the header 'Authorization: {KEYWORD} <key>'",
            WWW_Authenticate=KEYWORD,
        )
    throttle = ApiKeyRateThrottle()
    if not throttle.allow_request(api, None):
        wait = math.ceil(throttle.wait() or 1)
        return _error(429, "throttled", "too many requests", Retry_After=str(wait))
    try:
        wanted = uuid.UUID(delivery_id)
    except ValueError:
        return _not_found()
    owned = selectors.deliveries_of(business_id=principal.business_id).filter(pk=wanted)
    return wanted if owned.exists() else _not_found()


def _tracked_delivery(token: str) -> uuid.UUID | None:
    try:
        return selectors.delivery_by_tracking_token(token=token).id
    except NotFound:
        return None


# --- the feed ---------------------------------------------------------------------------------


def _event(number: int, data: str) -> str:
    return f"id: {number}\nevent: status\ndata: {data}\n\n"


async def events(delivery_id: uuid.UUID) -> AsyncIterator[str]:
    """The feed's text: the current status, then each update, until a terminal one."""
    number = 0
    try:
        async with hub().listen(channel_of(delivery_id)) as listener:
            # Subscribed first, read second: nothing published in between is missed.
            update = Update.of(await sync_to_async(status_now)(delivery_id))
            number += 1
            yield f"retry: {RETRY_MS}\n" + _event(number, update.data or "")
            while not update.terminal:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        update = await listener.next()
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if update.data is None:  # Redis came back: updates may have been missed
                    update = Update.of(await sync_to_async(status_now)(delivery_id))
                number += 1
                yield _event(number, update.data or "")
    except HubUnavailable as exc:
        logger.warning("live feed of %s ended: %s", delivery_id, exc)
    except Exception:  # the client reconnects; it is never told why
        logger.exception("live feed of %s failed", delivery_id)


def _feed(delivery_id: uuid.UUID) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        events(delivery_id), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"  # nginx ingress: pass each event on at once
    return response


def _served_by_wsgi(request: HttpRequest) -> HttpResponse | None:
    if isinstance(request, ASGIRequest):
        return None
    return _error(503, "unavailable", "live feeds are served under /live/", Retry_After="60")


def _unavailable() -> JsonResponse:
    return _error(503, "unavailable", "the service is briefly unavailable; retry", Retry_After="5")


@require_GET
async def delivery_feed(request: HttpRequest, delivery_id: str) -> HttpResponseBase:
    """The live status of one of the calling business's deliveries."""
    refused = _served_by_wsgi(request)
    if refused is not None:
        return refused
    try:
        found = await sync_to_async(_business_delivery)(request, delivery_id)
    except DEPENDENCY_ERRORS:
        logger.exception("live feed refused: a dependency is down")
        return _unavailable()
    if isinstance(found, HttpResponse):
        return found
    return _feed(found)


@require_GET
async def track_feed(request: HttpRequest, token: str) -> HttpResponseBase:
    """The live status behind a public tracking link."""
    refused = _served_by_wsgi(request)
    if refused is not None:
        return refused
    response: HttpResponseBase
    try:
        delivery_id = await sync_to_async(_tracked_delivery)(token)
    except DEPENDENCY_ERRORS:
        logger.exception("live feed refused: a dependency is down")
        response = _unavailable()
    else:
        response = _not_found() if delivery_id is None else _feed(delivery_id)
    _allow_origin(request, response)
    return response


@require_GET
def track_status(request: HttpRequest, token: str) -> HttpResponse:
    """The same status as one JSON document, for clients that poll instead."""
    response: HttpResponse
    try:
        delivery_id = _tracked_delivery(token)
        response = _not_found() if delivery_id is None else JsonResponse(status_now(delivery_id))
    except DEPENDENCY_ERRORS:
        logger.exception("tracking status refused: a dependency is down")
        response = _unavailable()
    response["Cache-Control"] = "no-cache"
    _allow_origin(request, response)
    return response

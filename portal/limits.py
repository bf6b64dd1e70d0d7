"""Limits on failures by client address: wrong API keys and telemetry keys, failed sign-ins;
and on password reset requests, by client address and by email address (portal/views.py).

Fixed-window counters in the Redis that holds the API's rate limits (businesses/auth.py), one
atomic INCR per failure. Only failures are counted: a caller that authenticates costs one read
of its address's counter, in the round trip that reads its key. A password reset sends email
whether or not it "fails", so each request is counted (`FailureWindow.take`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_redis import get_redis_connection


def parse_rate(rate: str, *, setting: str = "API_RATE_LIMIT") -> tuple[int, int]:
    """DRF's rate syntax, `100/second`, `5000/hour` (only the unit's first letter counts), as
    (requests, seconds); a number of units is allowed too: `10/15minutes`."""
    try:
        count, per = rate.split("/")
        per = per.strip()
        digits = len(per) - len(per.lstrip("0123456789"))
        units = int(per[:digits]) if digits else 1
        seconds = units * {"s": 1, "m": 60, "h": 3600, "d": 86400}[per[digits]]
        if int(count) < 1 or seconds < 1:
            raise ValueError(rate)
        return int(count), seconds
    except (ValueError, KeyError, IndexError):
        raise ImproperlyConfigured(f"{setting} {rate!r} is not like 100/second") from None


parsed_rate = functools.lru_cache(maxsize=16)(parse_rate)


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or, behind TRUSTED_PROXY_COUNT proxies (the
    ingress), the X-Forwarded-For entry the outermost trusted proxy appended. Entries left of
    it are whatever the client sent and are never believed."""
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    chain = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    chain = [part for part in chain if part]
    # Each trusted proxy appends the address it was reached from: the last `proxies` entries
    # are theirs, and the first of them is the address of the client.
    return chain[-proxies] if len(chain) >= proxies else remote


@dataclass(frozen=True)
class FailureWindow:
    """One fixed-window failure counter: `kind` (auth, login-address, ...) for one `who`."""

    key: str
    limit: int
    duration: int
    ends: float

    @classmethod
    def of(cls, kind: str, who: str, *, setting: str) -> FailureWindow:
        rate = getattr(settings, setting)
        limit, duration = parsed_rate(rate, setting=setting)
        window = int(time.time() // duration)
        digest = hashlib.blake2b(who.encode(), digest_size=12).hexdigest()
        return cls(f"failures:{kind}:{digest}:{window}", limit, duration, (window + 1) * duration)

    def retry_after(self) -> int:
        return max(1, math.ceil(self.ends - time.time()))

    def exceeded(self, count: object) -> bool:
        """Whether `count` (the counter's value as Redis gave it) uses up the window."""
        return int(count or 0) >= self.limit  # type: ignore[call-overload]

    def count(self) -> int:
        return int(get_redis_connection("default").get(self.key) or 0)

    def record(self) -> int:
        """Count one failure; the count after it."""
        pipeline = get_redis_connection("default").pipeline(transaction=False)
        pipeline.incr(self.key)
        pipeline.expire(self.key, self.duration + 1)
        count, _ = pipeline.execute()
        return int(count)

    def take(self) -> bool:
        """Count one request (for a limit on requests, not on failures); whether it is within
        the limit. One INCR: concurrent requests cannot all slip in under it."""
        return self.record() <= self.limit


def auth_failures(request: HttpRequest) -> FailureWindow:
    """The counter of failed API and telemetry authentications from the request's address."""
    return FailureWindow.of("auth", client_address(request), setting="AUTH_FAILURE_RATE_LIMIT")


# --- request bodies over the cap --------------------------------------------------------------

# Up to this many times the cap is read and thrown away before a 413 is answered, so that the
# client, still sending, reads the answer instead of a reset connection. A body larger still
# gets its 413 and the connection closed under it: reading it would keep the worker busy.
DRAIN_FACTOR = 16
DRAIN_CHUNK = 64 * 1024


class RequestBodyLimitMiddleware:
    """`413 Payload Too Large`, with the error body, for a body over DATA_UPLOAD_MAX_MEMORY_SIZE.

    Django raises RequestDataTooBig when a view reads such a body and answers 400 without
    reading it; gunicorn then closes the connection while the client is still sending, and the
    client sees the connection reset, not the answer. Here a declared Content-Length over the
    cap is refused before any view runs, and a body that turns out too big while read (chunked,
    no length) is refused when the view raises; either way the rest of the body is read first.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if cap is not None and length > cap:
            return self._too_big(request, cap, remaining=length)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if isinstance(exception, RequestDataTooBig) and cap is not None:
            return self._too_big(request, cap, remaining=None)
        return None

    def _too_big(self, request: HttpRequest, cap: int, *, remaining: int | None) -> HttpResponse:
        drained = _drain(request, limit=cap * DRAIN_FACTOR, remaining=remaining)
        message = f"the request body is larger than {cap} bytes, the most accepted"
        response: HttpResponse
        if request.path.startswith("/api/"):
            body = {"error": {"code": "too_large", "message": message}}
            response = JsonResponse(body, status=413)
        else:
            response = HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        if not drained:
            response["Connection"] = "close"
        return response


def _drain(request: HttpRequest, *, limit: int, remaining: int | None) -> bool:
    """Read and discard what is left of the body (at most `limit` bytes); whether all was read."""
    if remaining is not None and remaining > limit:
        return False
    stream = request.META.get("wsgi.input")
    if stream is None:  # ASGI: the server has read the body already
        return True
    left = limit
    try:
        while left > 0:
            chunk = stream.read(min(DRAIN_CHUNK, left))
            if not chunk:
                return True
            left -= len(chunk)
    except OSError:  # the client went away
        return True
    return False

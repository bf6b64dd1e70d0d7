"""`Authorization: Api-Key <key>` authentication and the per-key rate limit."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework_api_key.crypto import KeyGenerator

from businesses.models import BusinessAPIKey
from businesses.services import api_key_cache_key
from portal.limits import FailureWindow, auth_failures, parsed_rate

KEYWORD = "Api-Key"
# How long a verified key is trusted without asking the database again. Revocation through the
# service deletes the cached entry, so it takes effect at once. The entry is JSON in Redis itself,
# not through Django's cache: its pickling and key versioning cost more than the round trip.
KEY_CACHE_SECONDS = 30
# What djangorestframework-api-key's KeyGenerator issues (prefix 8, secret 32, from
# get_random_string's letters and digits). Anything else is refused before Redis or the
# database is asked about it.
_issued = KeyGenerator()
ISSUED_KEY = re.compile(
    rf"[A-Za-z0-9]{{{_issued.prefix_length}}}\.[A-Za-z0-9]{{{_issued.secret_key_length}}}"
)


@dataclass(frozen=True)
class BusinessPrincipal:
    """`request.user` for API calls: the business the key belongs to."""

    business_id: Any
    business_name: str
    key_prefix: str
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def pk(self) -> Any:
        return self.business_id


@dataclass(frozen=True)
class KeyUse:
    """`request.auth` for API calls: how many requests the key has made in the current rate
    window (this one included), for ApiKeyRateThrottle. (The key's prefix is on request.user.)"""

    count: int
    window_ends: float


def presented_key(request: Request, keyword: str, *, what: str) -> tuple[str, str] | None:
    """The (prefix, key) of `Authorization: <keyword> <prefix>.<secret>`; None without the
    header; AuthenticationFailed, saying what is expected, for anything else.

    A key not of the issued format is refused here, before any cache or database lookup, and
    counts as a failure of the client's address (auth_failures_check); so does whatever the
    caller's lookup refuses."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    given, _, key = header.partition(" ")
    key = key.strip()
    if given != keyword or not key:
        auth_failure(request)
        raise exceptions.AuthenticationFailed(f"use the header 'Authorization: {keyword} <key>'")
    if not ISSUED_KEY.fullmatch(key):
        auth_failure(request)
        raise exceptions.AuthenticationFailed(f"malformed {what}")
    prefix, _, _ = key.partition(".")
    return prefix, key


def auth_failure(request: Request, window: FailureWindow | None = None) -> None:
    """Count a failed authentication against the client's address (AUTH_FAILURE_RATE_LIMIT);
    Throttled once it is past the limit."""
    window = window or auth_failures(request)
    auth_failures_check(window, window.record() - 1)


def auth_failures_check(window: FailureWindow, count: object) -> None:
    """Throttled (429, Retry-After) when the client's address has used up its failures: it
    is refused, right key or wrong, until the window ends."""
    if window.exceeded(count):
        raise exceptions.Throttled(
            wait=window.retry_after(),
            detail="too many failed authentications from this address; retry later",
        )


class ApiKeyAuthentication(BaseAuthentication):
    """Verifies the key and counts it against its rate window in one Redis round trip.

    The counter is the presented key's own (its digest names it): a request with a wrong secret
    under someone's prefix is refused here and counts against nobody's limit.
    """

    generator = KeyGenerator()

    def authenticate(self, request: Request) -> tuple[BusinessPrincipal, KeyUse] | None:
        presented = presented_key(request, KEYWORD, what="API key")
        if presented is None:
            return None
        prefix, key = presented
        _, duration = rate_limit()
        now = time.time()
        window = int(now // duration)
        digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
        counter = f"throttle:{digest}:{window}"
        failures = auth_failures(request)
        redis = get_redis_connection("default")
        pipeline = redis.pipeline(transaction=False)
        pipeline.get(failures.key)
        pipeline.get(api_key_cache_key(prefix))
        # The window's counter is made with its expiry by the window's first request (a key
        # per window, so set once), in the same round trip rather than a second one after.
        pipeline.set(counter, 0, ex=duration + 1, nx=True)
        pipeline.incr(counter)
        failed, stored, _, count = pipeline.execute()
        auth_failures_check(failures, failed)
        if stored is None:
            cached = self._load(prefix)
            redis.set(api_key_cache_key(prefix), json.dumps(cached), ex=KEY_CACHE_SECONDS)
        else:
            cached = json.loads(stored)
        if not cached or not self.generator.verify(key, cached["hashed_key"]):
            auth_failure(request, failures)
            raise exceptions.AuthenticationFailed("invalid or revoked API key")
        if cached["expires"] is not None and cached["expires"] < time.time():
            auth_failure(request, failures)
            raise exceptions.AuthenticationFailed("this API key has expired")
        principal = BusinessPrincipal(
            business_id=uuid.UUID(cached["business_id"]),
            business_name=cached["business_name"],
            key_prefix=prefix,
        )
        return principal, KeyUse(count, (window + 1) * duration)

    def _load(self, prefix: str) -> dict[str, Any]:
        api_key = (
            BusinessAPIKey.objects.filter(prefix=prefix, revoked=False, business__is_active=True)
            .select_related("business")
            .first()
        )
        if api_key is None:
            return {}  # cached too, so a flood of bad keys does not reach the database
        return {
            "hashed_key": api_key.hashed_key,
            "business_id": str(api_key.business_id),
            "business_name": api_key.business.name,
            "expires": api_key.expiry_date.timestamp() if api_key.expiry_date else None,
        }

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


def rate_limit() -> tuple[int, int]:
    """API_RATE_LIMIT as (requests, seconds)."""
    return parsed_rate(settings.API_RATE_LIMIT)


class ApiKeyRateThrottle(BaseThrottle):
    """A fixed-window counter per API key in Redis, counted with one atomic INCR per request.

    ApiKeyAuthentication counts, in the round trip that reads the key; this refuses what is
    over the limit. DRF's own throttles keep a history list with get-then-set, which lets
    concurrent requests through past the limit; INCR cannot.
    """

    def __init__(self) -> None:
        self.num_requests, self.duration = rate_limit()
        self.wait_seconds: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        use = request.auth
        if not isinstance(use, KeyUse) or use.count <= self.num_requests:
            return True
        self.wait_seconds = max(0.0, use.window_ends - time.time())
        return False

    def wait(self) -> float | None:
        return self.wait_seconds

"""Probes, and the operators' report of every dependency.

- `/healthz/live` touches nothing: a dependency's outage must not restart every web pod.
- `/healthz/ready` is what Kubernetes and the gateway route by: ready means the pod can accept
  and store a request. That takes the database and Redis (API keys and rate limits live in
  Redis: no request is served without it), and nothing else: with MongoDB or the broker down a
  delivery is still stored and answered 202, and its message waits in the outbox (the workflow
  catches up when they are back). Taking web out of rotation then would turn a partial outage
  into a total one. `HEALTHCHECK_READY_CHECKS` narrows or widens the list per process.
- `/healthz/dependencies` checks all four, for operators (503 when any is down; not a probe).

All three answer only requests that did not come through a proxy (the kubelet, the gateway's
own probes, a port-forward), like /metrics (portal.metrics): the check is on the view Django
resolved, so no spelling or encoding of the path gets past it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pymongo
import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection

_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="healthz")
_mongo_clients: dict[str, pymongo.MongoClient[dict[str, Any]]] = {}
_mongo_lock = threading.Lock()


def _timeout() -> float:
    return float(settings.HEALTHCHECK_TIMEOUT_SECONDS)


def check_database() -> None:
    # Runs in a pool thread, which has its own connection; close it so none is left open.
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=_timeout(), socket_connect_timeout=_timeout()
    )
    try:
        client.ping()
    finally:
        client.close()


def _mongo_client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    # One client per URI: a client starts monitor threads, too costly to make per probe.
    with _mongo_lock:
        if uri not in _mongo_clients:
            timeout_ms = int(_timeout() * 1000)
            _mongo_clients[uri] = pymongo.MongoClient(
                uri,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                socketTimeoutMS=timeout_ms,
            )
        return _mongo_clients[uri]


def check_mongodb() -> None:
    _mongo_client(settings.MONGODB_URI).admin.command("ping")


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=_timeout()) as connection:
        connection.ensure_connection(max_retries=1, timeout=math.ceil(_timeout()))


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "mongodb": check_mongodb,
    "broker": check_broker,
}
# What a request cannot be accepted and stored without.
READY_CHECKS = ("database", "redis")


def run_checks(names: list[str] | tuple[str, ...] | None = None) -> dict[str, str]:
    """Run the named checks (default: those readiness needs, HEALTHCHECK_READY_CHECKS or
    READY_CHECKS) at once, each bounded by the timeout; 'ok' or the reason it failed."""
    wanted = names or settings.HEALTHCHECK_READY_CHECKS or list(READY_CHECKS)
    futures = {name: _executor.submit(CHECKS[name]) for name in wanted}
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=_timeout() + 0.5)
            results[name] = "ok"
        except FutureTimeout:
            results[name] = f"no answer within {_timeout():.1f} s"
        except Exception as exc:  # noqa: BLE001 - any failure makes the dependency not ready
            results[name] = f"{type(exc).__name__}: {exc}"[:300]
    return results


def _private(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """404 to a request that came through a proxy (the ingress): these are for the cluster."""
    from portal.metrics import came_through_proxy

    def wrapped(request: HttpRequest) -> HttpResponse:
        if came_through_proxy(request):
            return HttpResponseNotFound(b"", content_type="text/plain")
        return view(request)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _report(results: dict[str, str], *, down: str) -> JsonResponse:
    failed = sorted(name for name, outcome in results.items() if outcome != "ok")
    return JsonResponse(
        {"status": down if failed else "ok", "failed": failed, "checks": results},
        status=503 if failed else 200,
    )


@_private
@never_cache
@require_GET
def live(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@_private
@never_cache
@require_GET
def ready(request: HttpRequest) -> HttpResponse:
    return _report(run_checks(), down="unavailable")


@_private
@never_cache
@require_GET
def dependencies(request: HttpRequest) -> HttpResponse:
    """Every dependency, for operators: what is down even while the pods stay ready."""
    return _report(run_checks(list(CHECKS)), down="degraded")

"""Kubernetes probes: `/healthz/live` touches nothing; `/healthz/ready` checks every dependency."""

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
from django.http import HttpRequest, JsonResponse
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


def run_checks() -> dict[str, str]:
    """Run the checks this process needs (HEALTHCHECK_READY_CHECKS, default all) at once, each
    bounded by the timeout; 'ok' or the reason it failed."""
    wanted = settings.HEALTHCHECK_READY_CHECKS or list(CHECKS)
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


@never_cache
@require_GET
def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    failed = sorted(name for name, outcome in results.items() if outcome != "ok")
    return JsonResponse(
        {"status": "unavailable" if failed else "ok", "failed": failed, "checks": results},
        status=503 if failed else 200,
    )

"""Webhook endpoints (register, change, rotate, remove), the events recorded for them in the
transaction of a delivery's change, and their sending by workers.

Sending: beat runs `webhooks_dispatch` every 2 s; it claims due messages (a lease, so a message
whose worker died is sent again) and hands them to senders in batches, signed with the Standard
Webhooks scheme (`standardwebhooks`), with the same `webhook-id` on every retry. A message is due
only when no earlier message of its (endpoint, delivery) stream is pending, so a delivery's
events arrive in order even across retries.

Speed-up (batches): one task, one claim and four writes per message cost the workers ~6.7 ms of
CPU per event in-process and 16-26 ms through Celery (PostgreSQL 15, Redis broker, a TLS
receiver keeping connections open; bench/webhooks.py and a cProfile of the sending loop). A
batch of 25 pays them once: one task, one load, the posts over a few threads on kept
connections, the attempts in one INSERT, the delivered in one UPDATE, and the next message of
each stream found by its own index; ~1-1.7 ms per event in-process, ~3 ms through Celery.
tests/webhooks/test_batches.py compares a batch with one message at a time.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import random
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import urllib3
from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.db.models.fields.tuple_lookups import Tuple, TupleIn
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from businesses.models import Business
from deliveries.models import Delivery
from portal import telemetry
from portal.errors import NotFound, Unprocessable
from portal.timefmt import iso
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

logger = logging.getLogger(__name__)

Status = Delivery.Status
ETA_CHANGED = "delivery.eta_changed"
# Which stage announces which event.
STAGE_EVENTS: dict[str, str] = {
    Status.ASSIGNED: "delivery.assigned",
    Status.EN_ROUTE_TO_DROPOFF: "delivery.picked_up",
    Status.DELIVERED: "delivery.delivered",
    Status.CANCELLED: "delivery.cancelled",
    Status.FAILED: "delivery.failed",
}
EVENT_TYPES: tuple[str, ...] = (*STAGE_EVENTS.values(), ETA_CHANGED)
PREVIOUS_SECRET_VALID = timedelta(hours=24)
RESPONSE_BODY_CAP = 4096
# How long a claimed message is left to its sender before another may take it.
CLAIM_LEASE = timedelta(seconds=60)
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


class UnsafeUrl(Unprocessable):
    code = "unsafe_url"


# --- endpoints --------------------------------------------------------------------------------


def secret_generate() -> str:
    """A signing secret as the Standard Webhooks libraries write them: `whsec_` and base64 of
    random bytes (32 here; the specification asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def url_check(url: str) -> None:
    """Refuse what a business may not make us post to: anything but https (http too when
    DEBUG), and, unless WEBHOOK_ALLOW_PRIVATE, a host that resolves to a private, loopback,
    link-local or reserved address. Raises UnsafeUrl."""
    parts = urlsplit(url)
    allowed = ("https", "http") if settings.DEBUG else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl("the URL must start with https://", field="url")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host", field="url")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL may not carry a user or password", field="url")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL's port must be a number from 1 to 65535", field="url") from None
    address_resolve(parts.hostname, port or (443 if parts.scheme == "https" else 80))


def _refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    )


def address_resolve(host: str, port: int) -> str:
    """The address to connect to for `host`; UnsafeUrl when it does not resolve or when any of
    its addresses is not public (unless WEBHOOK_ALLOW_PRIVATE). The sender connects to this
    very address, so a name that resolves differently a moment later cannot redirect it."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeUrl(f"the host {host} does not resolve", field="url") from None
    addresses = [str(info[4][0]) for info in found]
    if not addresses:
        raise UnsafeUrl(f"the host {host} does not resolve", field="url")
    if not settings.WEBHOOK_ALLOW_PRIVATE and any(_refused(a) for a in addresses):
        raise UnsafeUrl(
            "the URL resolves to a private, loopback, link-local or reserved address",
            field="url",
        )
    return addresses[0]


def _events_check(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise Unprocessable(f"unknown events: {', '.join(unknown)}", field="events")
    if not events:
        raise Unprocessable("subscribe to at least one event", field="events")
    return sorted(set(events))


def webhook_endpoint_create(
    *, business_id: UUID, url: str, events: list[str], active: bool = True, description: str = ""
) -> WebhookEndpoint:
    """A new endpoint; its `secret` is shown to the business once, in the answer to this."""
    url_check(url)
    endpoint = WebhookEndpoint.objects.create(
        business_id=business_id,
        url=url,
        events=_events_check(events),
        active=active,
        description=description,
        secret=secret_generate(),
    )
    endpoints_cache_clear(business_id)
    return endpoint


def webhook_endpoint_get(*, business_id: UUID, endpoint_id: UUID) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, business_id=business_id).first()
    if endpoint is None:
        raise NotFound("no such webhook endpoint")
    return endpoint


def webhook_endpoint_update(
    *, business_id: UUID, endpoint_id: UUID, changes: dict[str, Any]
) -> WebhookEndpoint:
    """Change url, events, active, description; re-activating a disabled endpoint clears its
    failure record."""
    endpoint = webhook_endpoint_get(business_id=business_id, endpoint_id=endpoint_id)
    if "url" in changes:
        url_check(changes["url"])
        endpoint.url = changes["url"]
    if "events" in changes:
        endpoint.events = _events_check(changes["events"])
    if "description" in changes:
        endpoint.description = changes["description"]
    if "active" in changes:
        endpoint.active = changes["active"]
        if changes["active"]:
            endpoint.disabled_at = None
            endpoint.failing_since = None
    endpoint.save()
    endpoints_cache_clear(business_id)
    return endpoint


def webhook_endpoint_delete(*, business_id: UUID, endpoint_id: UUID) -> None:
    webhook_endpoint_get(business_id=business_id, endpoint_id=endpoint_id).delete()
    endpoints_cache_clear(business_id)


def webhook_endpoint_rotate(*, business_id: UUID, endpoint_id: UUID) -> WebhookEndpoint:
    """A new secret; the current one keeps signing (beside it) for 24 hours."""
    endpoint = webhook_endpoint_get(business_id=business_id, endpoint_id=endpoint_id)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = timezone.now() + PREVIOUS_SECRET_VALID
    endpoint.secret = secret_generate()
    endpoint.save(
        update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"]
    )
    return endpoint


def webhook_message_resend(
    *, message_id: str, business_id: UUID | None = None, endpoint_id: UUID | None = None
) -> WebhookMessage:
    """Send a message again (same `webhook-id`), soon, retried as a new one would be.
    `business_id` and `endpoint_id` scope it (the API); operators leave them out."""
    messages = WebhookMessage.objects.select_related("endpoint")
    if business_id is not None:
        messages = messages.filter(endpoint__business_id=business_id)
    if endpoint_id is not None:
        messages = messages.filter(endpoint_id=endpoint_id)
    message = messages.filter(pk=message_id).first()
    if message is None:
        raise NotFound("no such webhook message")
    now = timezone.now()
    message.status = WebhookMessage.Status.PENDING
    message.next_attempt_at = now
    message.retry_until = now + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
    message.attempts = 0  # a fresh start: its backoff begins short again
    message.save(update_fields=["status", "next_attempt_at", "retry_until", "attempts"])
    return message


# --- recording (in the transaction of the delivery's change) ----------------------------------

_has_endpoints: dict[Any, tuple[float, bool]] = {}


def endpoints_cache_clear(business_id: Any = None) -> None:
    if business_id is None:
        _has_endpoints.clear()
    else:
        _has_endpoints.pop(business_id, None)


def business_has_endpoints(business_id: Any) -> bool:
    """Whether the business has an active endpoint, as this process saw it at most
    WEBHOOK_ENDPOINTS_CACHE_SECONDS ago: telemetry asks every few seconds per flying drone,
    and most businesses have none."""
    now = time.monotonic()
    known = _has_endpoints.get(business_id)
    if known is not None and known[0] > now:
        return known[1]
    has = WebhookEndpoint.objects.filter(
        business_id=business_id, active=True, disabled_at__isnull=True
    ).exists()
    _has_endpoints[business_id] = (now + settings.WEBHOOK_ENDPOINTS_CACHE_SECONDS, has)
    return has


def _record(delivery: Delivery, event: str, at: datetime) -> int:
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(
            business_id=delivery.business_id, active=True, disabled_at__isnull=True
        ).only("id", "events")
        if event in endpoint.events
    ]
    if not endpoints:
        return 0
    from deliveries.api import delivery_document  # the API imports the lifecycle, which calls us

    payload = {
        "type": event,
        "timestamp": iso(at),
        "data": delivery_document(delivery),
    }
    # The delivery's row, swapped in this transaction, serialises its changes: max + 1 is safe.
    last = dict(
        WebhookMessage.objects.filter(delivery_id=delivery.pk, endpoint__in=endpoints)
        .values("endpoint_id")
        .annotate(last=Max("sequence"))
        .values_list("endpoint_id", "last")
    )
    now = timezone.now()
    until = now + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
    WebhookMessage.objects.bulk_create(
        WebhookMessage(
            endpoint=endpoint,
            delivery_id=delivery.pk,
            type=event,
            payload=payload,
            sequence=last.get(endpoint.pk, 0) + 1,
            next_attempt_at=now,
            retry_until=until,
        )
        for endpoint in endpoints
    )
    return len(endpoints)


def webhooks_stage_record(delivery: Delivery, *, previous: str, at: datetime) -> int:
    """Record the event of `delivery`'s new stage for every endpoint that wants it; how many."""
    event = STAGE_EVENTS.get(delivery.status)
    if event is None or previous == delivery.status:
        return 0
    if not business_has_endpoints(delivery.business_id):
        return 0
    return _record(delivery, event, at)


def webhooks_eta_record(delivery: Delivery, *, at: datetime) -> int:
    """Record `delivery.eta_changed` when the dropoff ETA moved by more than
    WEBHOOK_ETA_CHANGE_SECONDS since the last one announced (by any of its events)."""
    if delivery.dropoff_eta is None or not business_has_endpoints(delivery.business_id):
        return 0
    # The newest of its events, whichever endpoint (sequences count per endpoint).
    last = (
        WebhookMessage.objects.filter(delivery_id=delivery.pk)
        .order_by("-created_at")
        .values_list("payload", flat=True)
        .first()
    )
    announced = _parse((last or {}).get("data", {}).get("dropoff_eta"))
    if announced is not None:
        moved = abs((delivery.dropoff_eta - announced).total_seconds())
        if moved <= settings.WEBHOOK_ETA_CHANGE_SECONDS:
            return 0
    return _record(delivery, ETA_CHANGED, at)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- sending ----------------------------------------------------------------------------------
#
# Beat claims the due messages (the head of each stream) and hands them to senders in batches;
# a sender sends its batch, records every attempt in one transaction, and claims the next
# message of each stream that got through, which it hands on as the next batch (through the
# queue, so that other work gets its turn between batches).

# How many due messages beat claims every 2 s, and how many a sender sends in one task.
DISPATCH_LIMIT = 100
BATCH_SIZE = 25
# A batch is posted over this many threads: a slow receiver holds up one thread, not the batch.
SEND_THREADS = 8


def _sendable() -> Any:
    """Messages whose endpoint is on and which no earlier pending message of their stream
    holds back; `_due` adds that they are pending and their time has come."""
    earlier_pending = WebhookMessage.objects.filter(
        endpoint_id=OuterRef("endpoint_id"),
        delivery_id=OuterRef("delivery_id"),
        sequence__lt=OuterRef("sequence"),
        status=WebhookMessage.Status.PENDING,
    )
    return WebhookMessage.objects.filter(
        endpoint__active=True, endpoint__disabled_at__isnull=True
    ).exclude(Exists(earlier_pending))


def _due() -> Any:
    return _sendable().filter(
        status=WebhookMessage.Status.PENDING, next_attempt_at__lte=timezone.now()
    )


@dataclass(frozen=True)
class Claim:
    """Messages claimed by one sender until `until`, their lease. `until` is also what the
    sender shows when it sends them: a message whose lease ran out and that another sender
    claimed meanwhile has another, so only that sender sends it."""

    ids: list[str]
    until: datetime | None = None


def _locked(messages: Any) -> Any:
    if connection.features.has_select_for_update_skip_locked:
        # Concurrent dispatchers skip each other's rows instead of queueing behind them.
        return messages.select_for_update(skip_locked=True, of=("self",))
    return messages


def _claim(due: Any, limit: int) -> Claim:
    with transaction.atomic():
        ids = list(_locked(due.order_by("next_attempt_at")).values_list("id", flat=True)[:limit])
        return _lease(ids)


def _lease(ids: list[str]) -> Claim:
    """In the transaction that locked them: claim `ids` for a lease."""
    if not ids:
        return Claim([])
    until = timezone.now() + CLAIM_LEASE
    WebhookMessage.objects.filter(pk__in=ids).update(next_attempt_at=until)
    return Claim(ids, until)


def webhooks_claim(*, limit: int = DISPATCH_LIMIT) -> Claim:
    """Claim up to `limit` due messages (the head of each stream) for one sender: their next
    attempt moves a lease ahead, so no other sender takes them meanwhile, and a sender that
    dies only delays them."""
    return _claim(_due(), limit)


def webhook_streams_next(*, message_ids: list[str], limit: int = BATCH_SIZE) -> Claim:
    """Claim the message after each of `message_ids` in its stream where it is due now, so a
    stream that was waiting behind them drains without waiting for beat."""
    after = WebhookMessage.objects.filter(pk__in=message_ids).values_list(
        "endpoint_id", "delivery_id", "sequence"
    )
    return _streams_next(list(after), limit)


def _streams_next(after: list[tuple[UUID, UUID, int]], limit: int) -> Claim:
    # Found by the stream's own index (endpoint, delivery, sequence + 1), not by scanning every
    # due message: a sequence has no gaps. Still only when due (no earlier one pending, as
    # after a resend of an older message).
    # One row-value IN, `(endpoint_id, delivery_id, sequence) IN ((...), ...)`, rather than an
    # OR of a Q per stream: building and compiling 25 Qs cost more than the query itself.
    #
    # Whether each is pending and due is read from the locked rows, not asked in the WHERE:
    # given those conditions, PostgreSQL's planner may AND a scan of the whole partial index
    # of pending messages into the lookup, once per endpoint. That index holds an entry for
    # every version a message has had since the last VACUUM (each claim and each send writes
    # one), so during a fan-out the claim grew from a millisecond to 70-120 ms (EXPLAIN
    # ANALYZE: 99,394 entries read per endpoint, 20 endpoints). Without them, only the
    # streams' unique index can serve the lookup.
    if not after:
        return Claim([])
    stream = Tuple(F("endpoint_id"), F("delivery_id"), F("sequence"))
    following = [
        (endpoint_id, delivery_id, sequence + 1) for endpoint_id, delivery_id, sequence in after
    ]
    now = timezone.now()
    with transaction.atomic():
        rows = _locked(_sendable().filter(TupleIn(stream, following))).values_list(
            "id", "status", "next_attempt_at"
        )
        due = sorted(
            (at, pk)
            for pk, status, at in rows
            if status == WebhookMessage.Status.PENDING and at <= now
        )
        return _lease([pk for _, pk in due[:limit]])


def webhook_messages_claim(
    *, limit: int = DISPATCH_LIMIT, endpoint_id: UUID | None = None, delivery_id: UUID | None = None
) -> list[str]:
    """The ids of webhooks_claim (of one stream when `endpoint_id` and `delivery_id` are
    given); for the one-message-per-task sender."""
    due = _due()
    if endpoint_id is not None:
        due = due.filter(endpoint_id=endpoint_id, delivery_id=delivery_id)
    return _claim(due, limit).ids


def webhook_stream_next(*, message_id: str) -> list[str]:
    """webhook_streams_next for one message; for the one-message-per-task sender."""
    return webhook_streams_next(message_ids=[message_id], limit=1).ids


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str
    latency_ms: int
    body: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signature_headers(endpoint: WebhookEndpoint, message_id: str, body: str) -> dict[str, str]:
    """The Standard Webhooks headers: one signature per valid secret, space-separated."""
    now = timezone.now()
    secrets_valid = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_until
        and endpoint.previous_secret_until > now
    ):
        secrets_valid.append(endpoint.previous_secret)
    signatures = [
        Webhook(secret).sign(msg_id=message_id, timestamp=now, data=body)
        for secret in secrets_valid
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def _target(url: str, checked: dict[tuple[str, int], str | UnsafeUrl]) -> str | UnsafeUrl:
    """The checked address to post `url` to, or why not; resolved once per host and port in
    `checked` (one batch), so the check is made at send time, not at registration only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (host, port)
    if key not in checked:
        try:
            checked[key] = address_resolve(host, port)
        except UnsafeUrl as exc:
            checked[key] = exc
    return checked[key]


def _post(url: str, body: str, headers: dict[str, str], address: str | UnsafeUrl) -> Outcome:
    """POST to `address`, what `url`'s host resolved to and was checked as, not following
    redirects, reading at most RESPONSE_BODY_CAP bytes of the answer."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    if isinstance(address, UnsafeUrl):
        return Outcome(None, f"refused: {address.message}"[:300], elapsed(), "")
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pool = _pool(parts.scheme, address, port, host)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    default_port = port == (443 if parts.scheme == "https" else 80)
    request_headers = {
        **headers,
        "Host": host if default_port else f"{host}:{port}",
        "Content-Type": "application/json",
        "User-Agent": "Fabrikam-Webhooks/1",
    }

    def send() -> Any:
        return pool.urlopen(
            "POST",
            path,
            body=body.encode(),
            headers=request_headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )

    try:
        try:
            response = send()
        except urllib3.exceptions.ProtocolError:
            # A kept connection the receiver had closed meanwhile: once more on a new one (the
            # same webhook-id, so a receiver that did get it drops the second).
            response = send()
        try:
            read = response.read(RESPONSE_BODY_CAP + 1)
        except BaseException:
            response.close()
            raise
        if len(read) > RESPONSE_BODY_CAP:
            response.close()  # more than we read: this connection is not reused
        else:
            response.release_conn()  # read to its end (a short read is the end)
        text = read[:RESPONSE_BODY_CAP].decode("utf-8", "replace")
        return Outcome(response.status, "", elapsed(), text)
    except urllib3.exceptions.HTTPError as exc:
        # The exception's text may carry the URL, which may carry a token: name the kind only.
        return Outcome(None, type(exc).__name__, elapsed(), "")


# Connections kept open between messages, one pool per checked address: a new TLS connection
# per message cost the workers about 5 ms of CPU each (bench/webhooks.py). Keyed by the address
# the host name resolved to and was checked as, so a pool never reaches an unchecked address.
_pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
_pools_lock = threading.Lock()
MAX_POOLS = 256
_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """One TLS context for every pool: urllib3 builds one per connection otherwise, loading
    the system's certificates each time (about 1 ms of CPU per new connection)."""
    global _tls
    if _tls is None:
        context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        context.load_default_certs()  # honours SSL_CERT_FILE, as urllib3's own would
        _tls = context
    return _tls


def _pool(scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
    key = (scheme, address, port, host)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is not None:
            return pool
        if len(_pools) >= MAX_POOLS:
            _pools.pop(next(iter(_pools))).close()
        timeout = urllib3.Timeout(total=settings.WEBHOOK_TIMEOUT_SECONDS)
        if scheme == "https":
            # Connect to the checked address; the certificate is verified for the URL's host.
            pool = urllib3.HTTPSConnectionPool(
                address,
                port,
                timeout=timeout,
                retries=False,
                server_hostname=host,
                assert_hostname=host,
                cert_reqs="CERT_REQUIRED",
                ssl_context=_tls_context(),
                maxsize=SEND_THREADS,
            )
        else:
            pool = urllib3.HTTPConnectionPool(
                address, port, timeout=timeout, retries=False, maxsize=SEND_THREADS
            )
        _pools[key] = pool
        return pool


_threads: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """This process's sending threads (made after a worker's fork, never inherited)."""
    global _threads
    if _threads is None or _threads[0] != os.getpid():
        _threads = (os.getpid(), ThreadPoolExecutor(SEND_THREADS, "webhook-send"))
    return _threads[1]


def _backoff(attempts: int) -> float:
    """Exponential, capped, with full jitter over its upper half."""
    ceiling = min(
        settings.WEBHOOK_RETRY_MAX_SECONDS,
        settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1),
    )
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def webhook_messages_send(
    *, message_ids: list[str], claimed_until: datetime | None = None
) -> dict[str, bool]:
    """Send these messages now, signed (the same `webhook-id` on every retry), and record every
    attempt, in one transaction. Per message: True when the receiver took it (2xx), False when
    it will be retried or has failed; left out when there was nothing to send (not pending, or,
    with `claimed_until`, no longer claimed by this sender)."""
    return {message.id: ok for message, ok in _send(message_ids, claimed_until)}


def _send(
    message_ids: list[str], claimed_until: datetime | None
) -> list[tuple[WebhookMessage, bool]]:
    messages = WebhookMessage.objects.select_related("endpoint").filter(
        pk__in=message_ids, status=WebhookMessage.Status.PENDING
    )
    if claimed_until is not None:
        # Only while still claimed by us: a message whose lease ran out and that another sender
        # claimed since has another lease, and is that sender's alone.
        # The longest the posts can take: each may time out twice (a kept connection found
        # closed is tried once more), SEND_THREADS at a time.
        rounds = -(-len(message_ids) // SEND_THREADS)
        longest = timedelta(seconds=2 * settings.WEBHOOK_TIMEOUT_SECONDS * rounds + 5)
        if claimed_until - timezone.now() < longest:
            # Late (the batch waited in the queue): renew the lease by compare-and-swap, so
            # that it cannot run out while we send.
            renewed = timezone.now() + CLAIM_LEASE
            WebhookMessage.objects.filter(
                pk__in=message_ids,
                status=WebhookMessage.Status.PENDING,
                next_attempt_at=claimed_until,
            ).update(next_attempt_at=renewed)
            claimed_until = renewed
        messages = messages.filter(next_attempt_at=claimed_until)
    batch = list(messages)
    # An endpoint switched off (or disabled) since its messages were claimed is sent nothing
    # more: they stay pending, released from this sender's lease, and go out in order when it
    # is switched on again. (A batch can wait in the queue a while after its claim.)
    held = {m.pk for m in batch if not m.endpoint.active or m.endpoint.disabled_at is not None}
    if held:
        if claimed_until is not None:
            WebhookMessage.objects.filter(
                pk__in=held, status=WebhookMessage.Status.PENDING, next_attempt_at=claimed_until
            ).update(next_attempt_at=timezone.now())
        batch = [m for m in batch if m.pk not in held]
    if not batch:
        return []
    telemetry.link_deliveries(message.delivery_id for message in batch)
    checked: dict[tuple[str, int], str | UnsafeUrl] = {}
    posts = []
    for message in batch:
        # The payload was rendered once, when the event was recorded; this only serialises it.
        body = json.dumps(message.payload, separators=(",", ":"))
        headers = signature_headers(message.endpoint, message.id, body)
        address = _target(message.endpoint.url, checked)
        posts.append((message.endpoint.url, body, headers, address))
    if len(posts) == 1:
        outcomes = [_post(*posts[0])]
    else:
        outcomes = list(_executor().map(lambda post: _post(*post), posts))
    now = timezone.now()
    failing = _outcomes_record(batch, outcomes, now)
    for endpoint_id in failing:
        _disable_if_failing_too_long(endpoint_id, now)
    return [(message, outcome.ok) for message, outcome in zip(batch, outcomes, strict=True)]


def _outcomes_record(
    batch: list[WebhookMessage], outcomes: list[Outcome], now: datetime
) -> list[UUID]:
    """Every attempt, each message's new state and each endpoint's failure record, in one
    transaction; the endpoints whose last attempt failed."""
    delivered: list[str] = []
    last_ok: dict[UUID, bool] = {}
    some_ok: set[UUID] = set()
    with transaction.atomic():
        WebhookAttempt.objects.bulk_create(
            WebhookAttempt(
                message=message,
                endpoint_id=message.endpoint_id,
                at=now,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=(outcome.error or ("" if outcome.ok else f"HTTP {outcome.status_code}"))[
                    :300
                ],
                response_body=outcome.body[:1000],
            )
            for message, outcome in zip(batch, outcomes, strict=True)
        )
        for message, outcome in zip(batch, outcomes, strict=True):
            last_ok[message.endpoint_id] = outcome.ok
            if outcome.ok:
                delivered.append(message.id)
                some_ok.add(message.endpoint_id)
                continue
            attempts = message.attempts + 1
            retry_at = now + timedelta(seconds=_backoff(attempts))
            if retry_at > message.retry_until:
                WebhookMessage.objects.filter(pk=message.pk).update(
                    status=WebhookMessage.Status.FAILED, attempts=attempts
                )
            else:
                WebhookMessage.objects.filter(pk=message.pk).update(
                    attempts=attempts, next_attempt_at=retry_at
                )
        if delivered:
            WebhookMessage.objects.filter(pk__in=delivered).update(
                status=WebhookMessage.Status.DELIVERED, attempts=F("attempts") + 1
            )
        recovered = [pk for pk, ok in last_ok.items() if ok]
        failing = [pk for pk, ok in last_ok.items() if not ok]
        if recovered:
            WebhookEndpoint.objects.filter(pk__in=recovered, failing_since__isnull=False).update(
                failing_since=None
            )
        # Failing since now, unless it was failing before this batch and nothing got through.
        if failing:
            endpoints = WebhookEndpoint.objects.filter(pk__in=failing)
            endpoints.filter(Q(pk__in=some_ok) | Q(failing_since__isnull=True)).update(
                failing_since=now
            )
    return failing


def webhook_message_send(*, message_id: str) -> bool | None:
    """Send one message now and record the attempt; True when the receiver took it (2xx),
    False when it will be retried or has failed, None when there was nothing to send."""
    return webhook_messages_send(message_ids=[message_id]).get(message_id)


def webhook_batch_send(*, message_ids: list[str], claimed_until: datetime) -> Claim:
    """Send a claimed batch, then claim the next message of each stream that got through: the
    batch for the sender to hand on (empty when none is due)."""
    through = [
        (message.endpoint_id, message.delivery_id, message.sequence)
        for message, ok in _send(message_ids, claimed_until)
        if ok
    ]
    return _streams_next(through, max(1, len(through)))


def _disable_if_failing_too_long(endpoint_id: UUID, now: datetime) -> None:
    limit = now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    # Compare-and-swap: one sender disables it and sends the email.
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint_id, disabled_at__isnull=True, failing_since__lte=limit
    ).update(disabled_at=now, active=False)
    if not disabled:
        return
    endpoint = WebhookEndpoint.objects.select_related("business").get(pk=endpoint_id)
    endpoints_cache_clear(endpoint.business_id)
    logger.warning("webhook endpoint %s disabled after failing since %s", endpoint_id, limit)
    business: Business = endpoint.business
    if business.email:
        _disabled_mail(endpoint, business.email)


def _disabled_mail(endpoint: WebhookEndpoint, email: str) -> None:
    """Tell the business. The endpoint is disabled already, whether this gets through or not:
    a mail outage must not fail the send that found it failing (the API shows it disabled)."""
    try:
        send_mail(
            subject="Fabrikam: a webhook endpoint was disabled",
            message=(
                f"Every attempt to send events to {endpoint.url} has failed since "
                f"{endpoint.failing_since:%Y-%m-%d %H:%M} UTC, so the endpoint was disabled.\n"
                "Fix the receiver, then re-activate it (PATCH /api/v1/webhooks/"
                f"{endpoint.pk} with active=true); its pending events are then sent."
            ),
            from_email=None,
            recipient_list=[email],
        )
    except Exception:  # SMTP of any kind; logged for operators
        logger.exception("the email about disabled webhook endpoint %s was not sent", endpoint.pk)


def webhooks_dispatch(
    *,
    limit: int = DISPATCH_LIMIT,
    batch: int = BATCH_SIZE,
    send_batch: Callable[[list[str], datetime], Any] | None = None,
    send: Callable[[str], Any] | None = None,
    rounds: int = 1,
) -> int:
    """Claim due messages and send them in batches of `batch` (by `send_batch`, e.g. a task's
    delay, else here; `send` hands them on one by one instead); `rounds` claims again after
    sending, for the next message of each stream. How many were claimed."""
    total = 0
    for _ in range(rounds):
        claim = webhooks_claim(limit=limit)
        if not claim.ids or claim.until is None:
            break
        total += len(claim.ids)
        for first in range(0, len(claim.ids), batch):
            ids = claim.ids[first : first + batch]
            if send_batch is not None:
                send_batch(ids, claim.until)
            elif send is not None:
                for message_id in ids:
                    send(message_id)
            else:
                webhook_messages_send(message_ids=ids, claimed_until=claim.until)
    return total


def webhooks_prune() -> int:
    """Forget attempts, and finished messages, older than WEBHOOK_KEEP_DAYS."""
    limit = timezone.now() - timedelta(days=settings.WEBHOOK_KEEP_DAYS)
    attempts, _ = WebhookAttempt.objects.filter(at__lt=limit).delete()
    messages, _ = (
        WebhookMessage.objects.filter(created_at__lt=limit)
        .exclude(status=WebhookMessage.Status.PENDING)
        .delete()
    )
    return attempts + messages

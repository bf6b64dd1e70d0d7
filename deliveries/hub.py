"""One Redis pub/sub connection per live process, shared by every open live feed.

Each delivery's live status is published on `delivery:{id}:live` after every write (see
deliveries.live). The hub subscribes a channel when its first listener arrives and unsubscribes
it when its last one leaves, so a thousand trackers cost one Redis connection, not a thousand,
and a message is parsed once however many trackers follow that delivery.

A listener keeps only the newest update: every update is the whole status document, so a slow
client skips to the latest instead of queueing stale positions. When the connection to Redis
breaks, the hub reconnects, subscribes again and tells every listener to re-read the status,
since updates published meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"delivered", "cancelled", "failed"})
# How long a read of the subscription connection waits before looking again; with the health
# check it bounds how long a silently dead connection goes unnoticed.
READ_TIMEOUT_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 15
# How long a new listener waits for Redis to confirm its subscription before reading the
# status (after the confirmation no published update can slip between the two).
CONFIRM_TIMEOUT_SECONDS = 2.0
RECONNECT_MAX_SECONDS = 5.0


def channel_of(delivery_id: Any) -> str:
    return f"delivery:{delivery_id}:live"


class HubUnavailable(Exception):
    """Redis cannot be reached for the subscription; the client should retry later."""


@dataclass(frozen=True, slots=True)
class Update:
    """A status document as published (compact JSON on one line), or a request to re-read it."""

    data: str | None
    status: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def parse(cls, raw: str) -> Update | None:
        """The published text as an update; None when it is no status document."""
        try:
            document = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(document, dict) or not isinstance(document.get("status"), str):
            return None
        return cls.of(document)

    @classmethod
    def of(cls, document: dict[str, Any]) -> Update:
        # Compact and on one line, as an SSE `data:` field needs, whatever the publisher sent.
        return cls(json.dumps(document, separators=(",", ":")), document.get("status"))


RESYNC = Update(None)


class Listener:
    """One feed's mailbox: the newest update wins; a terminal one is never overwritten."""

    __slots__ = ("_latest", "_ready")

    def __init__(self) -> None:
        self._latest: Update | None = None
        self._ready = asyncio.Event()

    def deliver(self, update: Update) -> None:
        if self._latest is not None and self._latest.terminal:
            return
        self._latest = update
        self._ready.set()

    async def next(self) -> Update:
        await self._ready.wait()
        self._ready.clear()
        update, self._latest = self._latest, None
        assert update is not None
        return update


class Hub:
    """Subscriptions of this process's event loop, on one pub/sub connection."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: dict[str, set[Listener]] = {}

    def _bind(self) -> None:
        """State belongs to the running loop (uvicorn has one; a new loop starts afresh)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._listeners = {}
        self._subscribed: set[str] = set()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._up = asyncio.Event()
        self._pubsub: aioredis.client.PubSub | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A context of its own: the reader outlives the request that happened to start it.
        self._reader = loop.create_task(self._read(), context=contextvars.Context())

    def listeners(self) -> int:
        return sum(len(group) for group in self._listeners.values())

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listener]:
        """A listener on `channel`, subscribed (and confirmed by Redis) when this yields."""
        self._bind()
        listener = Listener()
        self._listeners.setdefault(channel, set()).add(listener)
        try:
            await self._reconcile(channel)
            yield listener
        finally:
            group = self._listeners.get(channel)
            if group is not None:
                group.discard(listener)
                if not group:
                    del self._listeners[channel]
                    # Not awaited here: this runs while the feed's task is being cancelled.
                    self._spawn(self._reconcile(channel))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconcile(self, channel: str) -> None:
        """Subscribe or unsubscribe `channel` so that Redis matches the listeners.

        One at a time, each subscription confirmed before the next command: a channel left and
        joined again in quick succession ends up subscribed, and a listener's wait ends only
        when its subscription is in force."""
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT_SECONDS):
                await self._up.wait()
        except TimeoutError:
            raise HubUnavailable("no connection to Redis") from None
        async with self._lock:
            wanted = channel in self._listeners
            if wanted == (channel in self._subscribed) or self._pubsub is None:
                return
            pubsub = self._pubsub
            try:
                if not wanted:
                    self._subscribed.discard(channel)
                    await pubsub.unsubscribe(channel)
                    return
                confirmed = asyncio.get_running_loop().create_future()
                self._confirmations[channel] = confirmed
                self._subscribed.add(channel)
                await pubsub.subscribe(channel)
                async with asyncio.timeout(CONFIRM_TIMEOUT_SECONDS):
                    await confirmed
            except TimeoutError:
                logger.warning("Redis did not confirm the subscription to %s in time", channel)
            except Exception as exc:
                # The reader notices the broken connection, reconnects and subscribes again.
                logger.warning("live hub could not (un)subscribe %s: %s", channel, exc)
                if wanted:
                    raise HubUnavailable("subscription failed") from exc
            finally:
                self._confirmations.pop(channel, None)

    async def _read(self) -> None:
        delay = 0.25
        reconnecting = False
        while True:
            client = aioredis.Redis.from_url(
                self._url,
                decode_responses=True,
                health_check_interval=HEALTH_CHECK_SECONDS,
                # Failures reach this loop, which subscribes again and has feeds re-read.
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=2,
            )
            pubsub = client.pubsub()
            try:
                await pubsub.connect()
                async with self._lock:
                    self._pubsub = pubsub
                    self._subscribed = set(self._listeners)
                    if self._subscribed:
                        await pubsub.subscribe(*self._subscribed)
                    self._up.set()
                if reconnecting:
                    logger.info("live hub reconnected to Redis; %d feeds re-read", self.listeners())
                    for group in self._listeners.values():
                        for listener in group:
                            listener.deliver(RESYNC)
                delay = 0.25
                while True:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_SECONDS)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect and resubscribe
                logger.warning("live hub lost Redis (%s); reconnecting in %.2f s", exc, delay)
            finally:
                self._up.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            reconnecting = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message.get("type"), message.get("channel")
        if kind == "subscribe":
            confirmed = self._confirmations.get(channel) if isinstance(channel, str) else None
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind == "message" and isinstance(channel, str):
            group = self._listeners.get(channel)
            if not group:
                return
            update = Update.parse(message["data"])
            if update is None:
                logger.warning("ignored a malformed live status on %s", channel)
                return
            for listener in group:
                listener.deliver(update)


_hub: Hub | None = None


def hub() -> Hub:
    """The process's hub (created on first use, so that settings are read once configured)."""
    global _hub
    if _hub is None:
        _hub = Hub(settings.REDIS_URL)
    return _hub

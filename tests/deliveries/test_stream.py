"""The live feeds (server-sent events) through a real `live` process: the Procfile's uvicorn
command on the test database and Redis, read with a plain HTTP client."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client, override_settings
from django.utils import timezone

from businesses.models import Business
from deliveries import live
from deliveries.models import Delivery
from tests.conftest import Tenant, database_url
from tests.support import BASE_DIR, LiveProcess, live_process_running, wait_for


@pytest.fixture(scope="module")
def live_process(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProcess]:
    """The Procfile's `live` process on this session's Redis and test database."""
    env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1"}
    with live_process_running(env, tmp_path_factory.mktemp("live") / "uvicorn.log") as server:
        yield server


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client: redis.Redis = redis.Redis.from_url(os.environ["REDIS_URL"])
    yield client
    client.close()


class Feed:
    """One server-sent events connection, read event by event."""

    def __init__(self, server: LiveProcess, path: str, headers: dict[str, str] | None = None):
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.connection.request(
            "GET", path, headers={"Accept": "text/event-stream", **(headers or {})}
        )
        self.response = self.connection.getresponse()
        self.buffer = b""

    @property
    def status(self) -> int:
        return self.response.status

    def body(self) -> Any:
        return json.loads(self.response.read())

    def next_event(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next event (comments skipped), or None when the server ended the feed."""
        assert self.connection.sock is not None
        self.connection.sock.settimeout(timeout)
        while True:
            while b"\n\n" not in self.buffer:
                chunk = self.response.read1(65536)
                if not chunk:
                    return None
                self.buffer += chunk
            block, _, self.buffer = self.buffer.partition(b"\n\n")
            fields: dict[str, Any] = {}
            for line in block.decode().splitlines():
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                return fields

    def close(self) -> None:
        self.connection.close()


def make_delivery(business: Business, **fields: Any) -> Delivery:
    return Delivery.objects.create(
        business=business,
        pickup_lat=47.6097,
        pickup_lon=-122.3422,
        dropoff_lat=47.6205,
        dropoff_lon=-122.3493,
        package_size=Delivery.Size.SMALL,
        package_weight_kg=2.0,
        **fields,
    )


def document(status: str, lat: float = 47.61, **more: Any) -> dict[str, Any]:
    now = timezone.now().isoformat()
    return {
        "status": status,
        "drone_location": {
            "lat": lat, "lon": -122.34, "alt_m": 60.0, "heading": 90.0,
            "ground_speed_mps": 15.0, "at": now,
        },
        "pickup_eta": None,
        "dropoff_eta": None,
        "updated_at": now,
        "failure_reason": None,
        **more,
    }  # fmt: skip


def api_key(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Api-Key {tenant.key}"}


# --- through the live process -----------------------------------------------------------------


@pytest.mark.slow
def test_a_feed_starts_with_the_current_status_from_redis(
    live_process: LiveProcess, transactional_db: None, tenant: Tenant
) -> None:
    delivery = make_delivery(tenant.business, status=Delivery.Status.EN_ROUTE_TO_PICKUP)
    live.status_write(delivery, (47.615, -122.345, 60.0))  # committed: written at once

    feed = Feed(live_process, f"/live/deliveries/{delivery.id}", api_key(tenant))
    try:
        assert feed.status == 200
        assert feed.response.getheader("Content-Type", "").startswith("text/event-stream")
        first = feed.next_event()
        assert first is not None
        assert first["event"] == "status" and first["id"] == "1" and first["retry"] == "2000"
        assert first["data"]["status"] == "en_route_to_pickup"
        assert first["data"]["drone_location"]["lat"] == pytest.approx(47.615)
    finally:
        feed.close()


@pytest.mark.slow
def test_without_a_copy_in_redis_the_first_status_comes_from_the_database(
    live_process: LiveProcess, transactional_db: None, tenant: Tenant
) -> None:
    delivery = make_delivery(tenant.business)
    feed = Feed(live_process, f"/live/track/{delivery.tracking_token}")
    try:
        assert feed.status == 200
        first = feed.next_event()
        assert first is not None and first["data"]["status"] == "requested"
        assert first["data"]["drone_location"] is None
    finally:
        feed.close()


@pytest.mark.slow
def test_a_status_published_on_the_channel_arrives_within_a_second(
    live_process: LiveProcess,
    transactional_db: None,
    tenant: Tenant,
    redis_client: redis.Redis,
) -> None:
    delivery = make_delivery(tenant.business, status=Delivery.Status.EN_ROUTE_TO_DROPOFF)
    feed = Feed(live_process, f"/live/track/{delivery.tracking_token}")
    try:
        assert feed.next_event() is not None
        published = time.monotonic()
        receivers = redis_client.publish(
            f"delivery:{delivery.id}:live", json.dumps(document("en_route_to_dropoff", lat=47.7))
        )
        update = feed.next_event(timeout=1.0)
        arrived = time.monotonic() - published
        assert receivers == 1  # the process's one subscription
        assert update is not None and update["id"] == "2"
        assert update["data"]["drone_location"]["lat"] == pytest.approx(47.7)
        assert arrived < 1.0
    finally:
        feed.close()


@pytest.mark.slow
def test_the_feed_ends_after_a_terminal_status(
    live_process: LiveProcess, transactional_db: None, tenant: Tenant
) -> None:
    delivery = make_delivery(tenant.business, status=Delivery.Status.AT_DROPOFF)
    feed = Feed(live_process, f"/live/deliveries/{delivery.id}", api_key(tenant))
    try:
        assert feed.next_event() is not None
        # The real writer: the versioned copy in Redis, published after it is stored.
        delivery.status = Delivery.Status.DELIVERED
        delivery.version += 1
        delivery.save()
        live.status_write(delivery)
        last = feed.next_event()
        assert last is not None and last["data"]["status"] == "delivered"
        assert feed.next_event(timeout=3.0) is None  # the server closed the feed
    finally:
        feed.close()


@pytest.mark.slow
def test_a_feed_of_a_finished_delivery_sends_its_status_and_ends(
    live_process: LiveProcess, transactional_db: None, tenant: Tenant
) -> None:
    delivery = make_delivery(tenant.business, status=Delivery.Status.CANCELLED)
    feed = Feed(live_process, f"/live/track/{delivery.tracking_token}")
    try:
        first = feed.next_event()
        assert first is not None and first["data"]["status"] == "cancelled"
        assert feed.next_event(timeout=3.0) is None
    finally:
        feed.close()


@pytest.mark.slow
def test_another_business_delivery_is_404_and_a_bad_key_401(
    live_process: LiveProcess, transactional_db: None, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = make_delivery(other_tenant.business)
    path = f"/live/deliveries/{theirs.id}"
    answers = {
        "another business's delivery": (Feed(live_process, path, api_key(tenant)), 404),
        "a wrong secret": (
            Feed(live_process, path, {"Authorization": f"Api-Key {tenant.key}x"}),
            401,
        ),
        "no key": (Feed(live_process, path), 401),
        "not an id": (Feed(live_process, "/live/deliveries/nope", api_key(tenant)), 404),
    }
    for what, (feed, expected) in answers.items():
        try:
            assert feed.status == expected, what
            body = feed.body()
            assert set(body["error"]) >= {"code", "message"}, what
            assert "Traceback" not in json.dumps(body)
            if expected == 401:
                assert feed.response.getheader("WWW-Authenticate") == "Api-Key"
        finally:
            feed.close()
    own = Feed(live_process, path, api_key(other_tenant))
    try:
        assert own.status == 200
    finally:
        own.close()


@pytest.mark.slow
def test_an_unknown_tracking_token_is_404(
    live_process: LiveProcess, transactional_db: None
) -> None:
    feed = Feed(live_process, "/live/track/not-a-real-token")
    try:
        assert feed.status == 404
        assert feed.body()["error"]["code"] == "not_found"
    finally:
        feed.close()


@pytest.mark.slow
def test_fifty_feeds_of_one_delivery_all_receive_an_update_over_one_subscription(
    live_process: LiveProcess,
    transactional_db: None,
    tenant: Tenant,
    redis_client: redis.Redis,
) -> None:
    delivery = make_delivery(tenant.business, status=Delivery.Status.EN_ROUTE_TO_PICKUP)
    path = f"/live/track/{delivery.tracking_token}"
    channel = f"delivery:{delivery.id}:live"

    def open_feed(_: int) -> Feed:
        feed = Feed(live_process, path)
        assert feed.next_event() is not None
        return feed

    with ThreadPoolExecutor(max_workers=50) as pool:
        feeds = list(pool.map(open_feed, range(50)))
    try:
        subscribers = [c for c in redis_client.client_list() if int(c.get("sub", 0)) > 0]
        assert len(subscribers) == 1, subscribers  # one connection for every feed
        assert redis_client.pubsub_numsub(channel) == [(channel.encode(), 1)]
        # A coroutine per feed, not a thread (nor a database connection) per feed.
        assert psutil.Process(live_process.process.pid).num_threads() < 20

        published = time.monotonic()
        redis_client.publish(channel, json.dumps(document("at_pickup", lat=47.65)))
        updates = [feed.next_event(timeout=2.0) for feed in feeds]
        elapsed = time.monotonic() - published
        assert all(u is not None and u["data"]["status"] == "at_pickup" for u in updates)
        assert elapsed < 2.0
    finally:
        for feed in feeds:
            feed.close()
    # The last feed gone, the channel is given up.
    wait_for(
        lambda: redis_client.pubsub_numsub(channel) == [(channel.encode(), 0)],
        timeout=5,
        what="the channel unsubscribed",
    )


# --- in this process --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_tracking_page_points_its_script_at_the_live_feed(tenant: Tenant) -> None:
    delivery = make_delivery(tenant.business)
    path = f"/track/{delivery.tracking_token}"
    page = Client().get(path).content.decode()
    assert f'data-live-url="/live/track/{delivery.tracking_token}"' in page
    assert re.search(r'<script src="[^"]*deliveries/track\.js"', page)
    assert "<script>" not in page  # no inline script
    assert re.search(r"<noscript>\s*<meta http-equiv=\"refresh\"", page)
    assert 'aria-live="polite"' in page

    with override_settings(LIVE_BASE_URL="https://live.fabrikam.example/"):
        page = Client().get(path).content.decode()
    assert (
        f'data-live-url="https://live.fabrikam.example/live/track/{delivery.tracking_token}"'
        in page
    )


@pytest.mark.django_db
def test_the_tracking_script_is_served_by_the_project(tenant: Tenant) -> None:
    from django.contrib.staticfiles import finders

    assert finders.find("deliveries/track.js")


@pytest.mark.django_db
def test_the_status_can_also_be_polled_as_json(tenant: Tenant) -> None:
    delivery = make_delivery(tenant.business)
    response = Client().get(f"/live/track/{delivery.tracking_token}.json")
    assert response.status_code == 200
    assert response.json()["status"] == "requested"
    assert Client().get("/live/track/nope.json").status_code == 404


@pytest.mark.django_db
def test_cross_origin_reads_are_allowed_only_for_the_configured_origins(tenant: Tenant) -> None:
    delivery = make_delivery(tenant.business)
    path = f"/live/track/{delivery.tracking_token}.json"
    origin = {"Origin": "https://shop.example"}
    assert "Access-Control-Allow-Origin" not in Client().get(path, headers=origin)
    with override_settings(LIVE_ALLOW_ORIGIN="https://shop.example, https://other.example"):
        assert (
            Client().get(path, headers=origin)["Access-Control-Allow-Origin"]
            == "https://shop.example"
        )
        elsewhere = Client().get(path, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in elsewhere
    with override_settings(LIVE_ALLOW_ORIGIN="*"):
        assert Client().get(path, headers=origin)["Access-Control-Allow-Origin"] == "*"


@pytest.mark.django_db
def test_a_feed_reached_through_a_wsgi_worker_is_refused_instead_of_holding_it(
    tenant: Tenant,
) -> None:
    delivery = make_delivery(tenant.business)
    response = Client().get(f"/live/track/{delivery.tracking_token}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


@pytest.mark.django_db
def test_the_public_feed_names_an_allowed_origin_too() -> None:
    with override_settings(LIVE_ALLOW_ORIGIN="https://shop.example"):
        response = async_to_sync(AsyncClient().get)(
            "/live/track/not-a-real-token", headers={"Origin": "https://shop.example"}
        )
    assert response.status_code == 404
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


def test_the_hub_subscribes_again_after_redis_comes_back_and_has_feeds_re_read(
    tmp_path: Path,
) -> None:
    import asyncio

    from deliveries.hub import Hub
    from devtools.localservices import redis_server

    server = redis_server(tmp_path).start()
    channel = "delivery:hub-test:live"

    async def publish(status: str) -> None:
        async with redis.asyncio.Redis.from_url(server.url) as client:
            await client.publish(channel, json.dumps({"status": status}))

    async def scenario() -> list[str | None]:
        hub = Hub(server.url)
        seen: list[str | None] = []
        async with hub.listen(channel) as listener:
            await publish("assigned")
            seen.append((await asyncio.wait_for(listener.next(), 2)).status)

            server.stop()  # Redis goes away, then comes back on the same port
            server.start()
            update = await asyncio.wait_for(listener.next(), 10)
            seen.append(update.data)  # None: re-read the status, updates may have been lost
            await publish("at_pickup")
            seen.append((await asyncio.wait_for(listener.next(), 2)).status)
        return seen

    try:
        assert asyncio.run(scenario()) == ["assigned", None, "at_pickup"]
    finally:
        server.stop()


@pytest.mark.django_db
def test_every_element_the_tracking_script_updates_is_on_the_page(tenant: Tenant) -> None:
    delivery = make_delivery(tenant.business)
    page = Client().get(f"/track/{delivery.tracking_token}").content.decode()
    script = (BASE_DIR / "deliveries" / "static" / "deliveries" / "track.js").read_text()
    ids = set(re.findall(r'getElementById\("([\w-]+)"\)', script))
    for shown in re.findall(r'show\("([\w-]+)"', script):
        ids |= {shown, f"{shown}-label"}
    for eta in re.findall(r'setEta\("([\w-]+)"', script):
        ids |= {f"{eta}-eta", f"{eta}-eta-label"}
    for countdown in re.findall(r'data-countdown-for="([\w-]+)"', page):
        ids.add(f"{countdown}-eta")
    assert len(ids) > 8
    missing = sorted(i for i in ids if f'id="{i}"' not in page)
    assert not missing, f"track.js looks for ids the page lacks: {missing}"

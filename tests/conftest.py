from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.test import Client

from businesses.models import Business
from businesses.services import business_create
from devtools.localservices import free_port
from drones.geo import Point
from drones.models import Base, Drone, DroneModel
from tests.support import celery_worker

pytest_plugins = ["tests.browser_check"]  # no chromium, no quiet skip: the run stops saying why

# The demo area of the tests: central Seattle.
CENTER = Point(lat=47.6062, lon=-122.3321)


def database_url() -> str:
    """The URL of the database the tests run on (the test database, not the configured one)."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def process_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a process that must share this test's services and database."""
    env = dict(os.environ)
    env["WORKER_HEARTBEAT_FILE"] = str(tmp_path / "worker-heartbeat")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _ServerErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The API's 500 (portal.api logs it with its error id), and Django's for other views.
        if hasattr(record, "error_id") or getattr(record, "status_code", None) == 500:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_unexpected_server_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A 500 answered in this process fails the test: it is a bug, not an outage (an outage is
    a 503). A test that provokes one on purpose asks for `expect_server_error`."""
    handler = _ServerErrors()
    loggers = [logging.getLogger("portal.api"), logging.getLogger("django.request")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    if handler.records and "expect_server_error" not in request.fixturenames:
        pytest.fail(
            "unexpected 500: " + "; ".join(record.getMessage() for record in handler.records)
        )


@pytest.fixture
def expect_server_error() -> None:
    """This test answers a 500 on purpose (see no_unexpected_server_errors)."""


@pytest.fixture(autouse=True)
def fresh_airspace() -> Iterator[None]:
    """No airspace cached in the process from another test (whose zones were rolled back)."""
    from airspace import selectors

    selectors.airspace_cache_clear()
    yield
    selectors.airspace_cache_clear()


# --- businesses and their API clients ---------------------------------------------------------


class ApiClient(Client):
    """A test client that sends a business's API key and JSON bodies."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(HTTP_AUTHORIZATION=f"Api-Key {key}", **kwargs)

    def post_json(self, path: str, data: Any = None, **extra: Any) -> Any:
        return self.post(path, data=data, content_type="application/json", **extra)

    def patch_json(self, path: str, data: Any = None, **extra: Any) -> Any:
        return self.patch(path, data=data, content_type="application/json", **extra)


@dataclass
class Tenant:
    business: Business
    key: str
    client: ApiClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = ApiClient(self.key)


# Rate limits count in fixed windows aligned to the clock (`int(time.time() // duration)`),
# and every window of whole minutes starts on a minute: a test that makes a few requests against
# a small limit and expects the last refused would see the count start again if its requests
# straddled that boundary (a failure seen once in CI-like runs on a slow machine).
WINDOW_MARGIN_SECONDS = 5.0


@pytest.fixture
def whole_rate_window() -> None:
    """Start the test at least WINDOW_MARGIN_SECONDS before the next minute begins."""
    left = 60.0 - time.time() % 60.0
    if left < WINDOW_MARGIN_SECONDS:
        time.sleep(left + 0.05)


@pytest.fixture
def tenant(db: None) -> Tenant:
    business, key = business_create(name="Contoso Pharmacy", email="ops@contoso.example")
    return Tenant(business, key)


@pytest.fixture
def other_tenant(db: None) -> Tenant:
    business, key = business_create(name="Northwind Flowers", email="ops@northwind.example")
    return Tenant(business, key)


# --- the fleet --------------------------------------------------------------------------------


def make_fleet(count: int, *, center: Point = CENTER, battery: float = 100.0) -> list[Drone]:
    """`count` idle standard drones (5 kg, 60 km/h, 30 km) at one base in the centre."""
    model, _ = DroneModel.objects.get_or_create(
        name="standard",
        defaults={"max_payload_kg": 5.0, "cruise_speed_kmh": 60.0, "range_km": 30.0},
    )
    base, _ = Base.objects.get_or_create(
        name="Central", defaults={"lat": center.lat, "lon": center.lon}
    )
    start = Drone.objects.count()
    return Drone.objects.bulk_create(
        Drone(
            serial=f"T-{start + i:05d}",
            model=model,
            base=base,
            state=Drone.State.IDLE,
            battery_pct=battery,
            lat=base.lat,
            lon=base.lon,
            alt_m=0.0,
        )
        for i in range(count)
    )


@pytest.fixture
def fleet(db: None) -> list[Drone]:
    return make_fleet(3)


def delivery_body(**overrides: Any) -> dict[str, Any]:
    """A delivery of 2 kg over about 3 km in central Seattle."""
    body: dict[str, Any] = {
        "pickup": {"lat": 47.6097, "lon": -122.3422, "address": "Pike Place Market"},
        "dropoff": {"lat": 47.6205, "lon": -122.3493, "address": "Space Needle"},
        "package": {"size": "small", "weight_kg": 2.0, "tag": "pharmacy"},
        "recipient": {"name": "Ada", "email": "ada@example.com"},
    }
    body.update(overrides)
    return body


# --- a mail server standing in for the provider -----------------------------------------------


class MailSink:
    """Collects every message an SMTP client delivers; `delay` holds each DATA that long,
    `refuse` answers 550 to those recipients; `sessions` counts the clients' greetings."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.started = 0
        self.delay = 0.0
        self.refuse: set[str] = set()
        self.sessions = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.sessions += 1
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        self.started += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        # A message is delivered when the server says 250 to a client still there to hear it.
        if server.transport is None or server.transport.is_closing():
            return "421 client went away"
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture(scope="session")
def mail_server() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


@pytest.fixture
def mailbox(mail_server: tuple[MailSink, int]) -> MailSink:
    sink, _ = mail_server
    sink.messages.clear()
    sink.delay = 0.0
    sink.refuse = set()
    sink.sessions = 0
    return sink


def worker_env(env: dict[str, str], mail_port: int) -> dict[str, str]:
    return {
        **env,
        "DATABASE_URL": database_url(),
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(mail_port),
        "EMAIL_USE_TLS": "false",
        "DELIVERY_RETRY_BASE_SECONDS": "0.5",
        "DELIVERY_RETRY_MAX_SECONDS": "2",
    }


@pytest.fixture
def worker(
    transactional_db: None,
    process_env: dict[str, str],
    mail_server: tuple[MailSink, int],
    tmp_path: Path,
) -> Iterator[Any]:
    """A real Celery worker process on the test database, services and broker."""
    env = worker_env(process_env, mail_server[1])
    with celery_worker(env, log=tmp_path / "worker.log", concurrency=2) as process:
        yield process

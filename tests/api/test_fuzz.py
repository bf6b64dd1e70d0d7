"""Schemathesis against the API's own OpenAPI schema, through the WSGI app in this process.

Every operation of `/api/v1/schema/` is fuzzed (schemathesis's examples, coverage and fuzzing
phases) with a business's API key (deliveries, quotes, webhooks), a gateway's telemetry key
(telemetry) and a staff user by HTTP Basic (the zones). Checked on every answer: no 5xx, the
status code, headers and body conform to the schema, a request the schema forbids is refused
and one it allows is accepted or refused with the documented 422, and every 4xx says what was
wrong (`error.message` is not empty).

`FUZZ_EXAMPLES` sets the examples per operation (`make test`: 25, about a minute; `make fuzz`:
300, or EXAMPLES=n).

Then statefully: the schema's links (portal/schema.py) lead from a delivery or webhook endpoint
just created to the operations on it (get, status, reschedule, cancel; get, change, rotate,
attempts, delete), which random ids only ever answer with 404. Scenarios of up to 6 steps, of
schema-valid requests (the invalid ones are the first test's), with the same checks;
`FUZZ_SCENARIOS` sets how many (as many as FUZZ_EXAMPLES unless told: 25 take about 4 s).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings
from hypothesis import HealthCheck, Phase, settings
from rest_framework_api_key.crypto import KeyGenerator
from schemathesis.core.failures import Failure
from schemathesis.core.result import Ok

from businesses.services import api_key_forget, business_create
from drones.services import telemetry_key_create
from portal.wsgi import application
from tests.conftest import make_fleet

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SCENARIOS = int(os.environ.get("FUZZ_SCENARIOS", EXAMPLES))
STEPS = 6
STAFF = ("fuzz-operator", "fuzz-operator-password")

CONFIG = schemathesis.Config.from_dict(
    {
        # NUL is refused in every JSON string, keys and open values (GeoJSON coordinates)
        # included, which a schema cannot say of the latter: tests/api/test_hostile_input.py
        # sends it instead.
        "generation": {"allow-x00": False},
        # Stateful scenarios follow links from what they created: valid requests only (an invalid
        # one mostly leaves out the credentials, and creates nothing to follow).
        "phases": {"stateful": {"generation": {"mode": "positive"}}},
        "checks": {
            # A request the schema allows may still be impossible: a route through a no-fly
            # zone, a package no drone carries, a self-crossing zone. That is the documented
            # 422 with a message, not a rejection of valid input.
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
            },
        },
    }
)
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application, config=CONFIG)

# The keys the `credentials` fixture issues (as prefix, secret), known in advance because
# schemathesis builds some of its cases, credentials included, when it collects the tests. Given
# through auth providers so that schemathesis knows them: its checks of refused credentials then
# send none or wrong ones.
ISSUED = {"api": ("FuzzApiK", "a" * 32), "telemetry": ("FuzzTele", "t" * 32)}
KEYS = {name: f"{prefix}.{secret}" for name, (prefix, secret) in ISSUED.items()}


@schema.auth(refresh_interval=None).apply_to(path_regex="^/api/v1/(deliveries|quotes|webhooks)")
class ApiKeyAuth:
    def get(self, case: Any, ctx: Any) -> str:
        return KEYS["api"]

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Api-Key {data}"}


@schema.auth(refresh_interval=None).apply_to(path="/api/v1/telemetry")
class TelemetryKeyAuth:
    def get(self, case: Any, ctx: Any) -> str:
        return KEYS["telemetry"]

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Telemetry-Key {data}"}


@schema.auth(refresh_interval=None).apply_to(path_regex="^/api/v1/zones")
class StaffBasicAuth:
    def get(self, case: Any, ctx: Any) -> str:
        return base64.b64encode(f"{STAFF[0]}:{STAFF[1]}".encode()).decode()

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Basic {data}"}


# Every request the fuzzing sent, for the count printed at the end of the module.
SENT: dict[str, int] = {}
SECONDS: dict[str, float] = {}
ANSWERED: set[tuple[str, int]] = set()


class ErrorSaysNothing(Failure):
    """A 4xx whose body does not say what was wrong."""


def error_says_what_was_wrong(ctx: Any, response: Any, case: Any) -> bool | None:
    SENT[case.operation.label] = SENT.get(case.operation.label, 0) + 1
    ANSWERED.add((case.operation.label, response.status_code))
    return _error_has_message(response, case)


def _error_has_message(response: Any, case: Any) -> bool | None:
    if not 400 <= response.status_code < 500:
        return None
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if not isinstance(message, str) or not message.strip():
        raise ErrorSaysNothing(
            operation=case.operation.label,
            title="A 4xx answer without error.message",
            message=f"{response.status_code}: {response.text[:300]!r}",
        )
    return True


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook hosts resolve to a public address without asking DNS (outside the system, and
    slow or absent here); addresses and localhost resolve as they do."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if name != "localhost":
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("20.112.52.29", port or 443))]
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def in_process_requests(public_dns: None) -> Iterator[None]:
    """Requests share the test's database connection (and its transaction), as Django's test
    client arranges: the request signals would otherwise close it after each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        with override_settings(
            API_RATE_LIMIT="1000000/second",
            AUTH_FAILURE_RATE_LIMIT="1000000/minute",
            LOGIN_FAILURE_RATE_LIMIT="1000000/minute",
            # The staff user's HTTP Basic password is checked on every zones request.
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        ):
            yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def credentials(
    db: None, in_process_requests: None, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    issued = iter([ISSUED["api"], ISSUED["telemetry"]])
    pending: list[str] = []

    def prefix(self: Any) -> str:
        name, secret = next(issued)
        pending.append(secret)
        return name

    monkeypatch.setattr(KeyGenerator, "get_prefix", prefix)
    monkeypatch.setattr(KeyGenerator, "get_secret_key", lambda self: pending.pop())
    _, api = business_create(name="Fuzz Couriers", email="ops@fuzz.example")
    drones = make_fleet(3)
    _, telemetry = telemetry_key_create(name="gateway", base_ids=[drones[0].base_id])
    assert {"api": api, "telemetry": telemetry} == KEYS
    api_key_forget(ISSUED["api"][0])  # the last test's business, verified and kept in Redis
    get_user_model().objects.create_user(
        username=STAFF[0], email="operator@fabrikam.example", password=STAFF[1], is_staff=True
    )
    return KEYS


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.django_db
@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_answers_as_documented(case: Any, credentials: dict[str, str]) -> None:
    started = time.perf_counter()
    case.call_and_validate(additional_checks=[error_says_what_was_wrong])
    label = case.operation.label
    SECONDS[label] = SECONDS.get(label, 0.0) + time.perf_counter() - started


def test_the_fuzzing_covered_every_operation() -> None:
    assert set(SENT) == {operation.label for operation in _operations()}, sorted(SENT)
    # The keys worked: each kind of credential got past authentication somewhere.
    for accepted in [
        ("POST /api/v1/deliveries", 202),
        ("POST /api/v1/telemetry", 200),
        ("GET /api/v1/zones", 200),
    ]:
        assert accepted in ANSWERED, sorted(a for a in ANSWERED if a[0] == accepted[0])
    print(f"\nfuzzed {sum(SENT.values())} requests over {len(SENT)} operations")
    for label, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        print(f"  {label}: {SENT.get(label, 0)} requests, {seconds:.1f} s")


def _operations() -> Iterator[Any]:
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            yield result.ok()


# The stateful scenarios' answers: (operation, status) -> how many.
STATEFUL: dict[tuple[str, int], int] = {}


def error_says_what_was_wrong_stateful(ctx: Any, response: Any, case: Any) -> bool | None:
    answer = (case.operation.label, response.status_code)
    STATEFUL[answer] = STATEFUL.get(answer, 0) + 1
    return _error_has_message(response, case)


class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
    def before_call(self, case: Any) -> None:
        # Webhook URLs the schema allows are mostly of other schemes, which the API refuses
        # (https:// only): with the scheme made https:// most endpoints get created, and the
        # links from them followed.
        if case.operation.label == "POST /api/v1/webhooks" and isinstance(case.body, dict):
            url = case.body.get("url")
            if isinstance(url, str) and "://" in url and not url.startswith("https://"):
                case.body = {**case.body, "url": "https://" + url.split("://", 1)[1]}

    def validate_response(
        self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
    ) -> None:
        checks = [*(additional_checks or []), error_says_what_was_wrong_stateful]
        super().validate_response(response, case, additional_checks=checks, **kwargs)


@pytest.mark.django_db
def test_created_resources_answer_as_documented(credentials: dict[str, str]) -> None:
    started = time.perf_counter()
    Scenarios.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            phases=[Phase.generate],
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    seconds = time.perf_counter() - started
    print(f"\n{sum(STATEFUL.values())} stateful requests in {SCENARIOS} scenarios, {seconds:.1f} s")
    for (label, status), count in sorted(STATEFUL.items()):
        print(f"  {label} -> {status}: {count}")
    # The links were followed: an operation on one resource succeeded.
    assert any("{" in label and status < 300 for label, status in STATEFUL), sorted(STATEFUL)

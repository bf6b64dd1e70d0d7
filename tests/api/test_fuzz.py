"""Schemathesis against the API's own OpenAPI schema, through the WSGI app in this process.

Every operation of `/api/v1/schema/` is fuzzed (schemathesis's examples, coverage and fuzzing
phases) with a business's API key (deliveries, quotes, webhooks), a gateway's telemetry key
(telemetry) and a staff user by HTTP Basic (the zones). Checked on every answer: no 5xx, the
status code, headers and body conform to the schema, a request the schema forbids is refused
and one it allows is accepted or refused with the documented 422, and every 4xx says what was
wrong (`error.message` is not empty).

`FUZZ_EXAMPLES` sets the examples per operation (`make test`: 25, about a minute; `make fuzz`:
300, or EXAMPLES=n).

Random ids only ever find nothing (404), so the operations on one resource are fuzzed again
with the ids of what the business holds (`held`): a delivery just requested, a zone, and a
webhook endpoint with a message the sender has tried once. Each example in a savepoint rolled
back after it, so that every one finds the same world (a delete or a cancel included).

Then statefully: the schema's links (portal/schema.py) lead from a delivery or webhook endpoint
just created to the operations on it (get, status, reschedule, cancel; get, change, rotate,
attempts, delete; attempts -> resend). Scenarios of up to 6 steps, of schema-valid requests
(the invalid ones are the first test's), with the same checks, each rolled back after it;
`FUZZ_SCENARIOS` sets how many (as many as FUZZ_EXAMPLES unless told: 25 take about 4 s).

Every operation must have been answered with a 2xx somewhere: the answers per operation and
status are printed at the end.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from django.test import override_settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework_api_key.crypto import KeyGenerator
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure
from schemathesis.core.result import Ok

from airspace.models import NoFlyZone
from businesses.models import Business
from businesses.services import api_key_forget, business_create
from deliveries.lifecycle import delivery_move
from deliveries.models import Delivery
from devtools.localservices import free_port
from drones.services import telemetry_key_create
from portal.wsgi import application
from tests.airspace.zones import collection, feature, square
from tests.conftest import delivery_body, make_fleet
from webhooks.models import WebhookAttempt, WebhookMessage
from webhooks.services import (
    EVENT_TYPES,
    endpoints_cache_clear,
    webhook_endpoint_create,
    webhook_message_send,
)

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
# Every answer of every phase: (operation, status) -> how many.
STATUSES: Counter[tuple[str, int]] = Counter()


class ErrorSaysNothing(Failure):
    """A 4xx whose body does not say what was wrong."""


def error_says_what_was_wrong(ctx: Any, response: Any, case: Any) -> bool | None:
    SENT[case.operation.label] = SENT.get(case.operation.label, 0) + 1
    ANSWERED.add((case.operation.label, response.status_code))
    _count(case, response)
    return _error_has_message(response, case)


def _count(case: Any, response: Any) -> None:
    """One answer in STATUSES, under its operation's label; a method the operation does not
    have (the coverage phase sends OPTIONS, TRACE, ...) under a label of its own."""
    label = case.operation.label
    if case.method.upper() != case.operation.method.upper():
        label = f"{case.method.upper()} {case.operation.path} (not documented)"
    STATUSES[label, response.status_code] += 1


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


@pytest.fixture
def held(credentials: dict[str, str]) -> dict[str, str]:
    """What the fuzzed business holds, by the path parameter that names it: a delivery just
    requested, a zone (the operator's), and a webhook endpoint with a message the sender has
    tried to send once: its receiver, a closed port on this machine, refused the connection,
    and the attempt was stored as any failed one is."""
    business = Business.objects.get(name="Fuzz Couriers")
    # Through the API, as the fuzzing's own requests go (Django's test client would connect
    # close_old_connections again, and the next request would close the test's connection).
    requested = _call(
        "POST /api/v1/deliveries", body=delivery_body(), auth=f"Api-Key {credentials['api']}"
    )
    assert requested.status_code == 202, requested.text
    zones = collection(feature("Fuzz zone", square(-122.20, 47.70, size=0.002)))
    staff = f"Basic {StaffBasicAuth().get(None, None)}"
    imported = _call("POST /api/v1/zones", body=zones, auth=staff)
    assert imported.status_code == 200, imported.text
    # A receiver on this machine, reached without asking DNS: allowed as in development.
    with override_settings(DEBUG=True, WEBHOOK_ALLOW_PRIVATE=True):
        endpoint = webhook_endpoint_create(
            business_id=business.pk,
            url=f"http://127.0.0.1:{free_port()}/hooks/fabrikam",
            events=list(EVENT_TYPES),
        )
        endpoints_cache_clear(business.pk)
        delivery = Delivery.objects.create(
            business=business,
            pickup_lat=47.6097,
            pickup_lon=-122.3422,
            dropoff_lat=47.6205,
            dropoff_lon=-122.3493,
            package_size=Delivery.Size.SMALL,
            package_weight_kg=2.0,
        )
        delivery_move(delivery, "cancelled")
        message = WebhookMessage.objects.get(endpoint=endpoint)
        assert webhook_message_send(message_id=message.id) is False
    assert WebhookAttempt.objects.filter(message=message, status_code=None).exists()
    return {
        "delivery_id": requested.json()["id"],
        "zone_id": str(NoFlyZone.objects.get(name="Fuzz zone").pk),
        "endpoint_id": str(endpoint.pk),
        "message_id": message.id,
    }


def _call(label: str, *, body: Any, auth: str) -> Any:
    operation = schema.find_operation_by_label(label)
    assert operation is not None
    case = operation.Case(body=body, headers={"Authorization": auth}, media_type="application/json")
    return case.call()


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


def _operations() -> Iterator[Any]:
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            yield result.ok()


# The operations on one resource: those with a parameter in their path.
ON_ONE = sorted(operation.label for operation in _operations() if "{" in operation.path)


@pytest.mark.django_db
@pytest.mark.parametrize("label", ON_ONE)
def test_operations_on_what_the_business_holds_answer_as_documented(
    label: str, held: dict[str, str]
) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None
    ids = {p.name: held[p.name] for p in operation.path_parameters}
    # Generated cases, valid and not, and the schema's examples (a plausible trip: a random one
    # is almost never possible).
    cases = st.one_of(
        *(
            operation.as_strategy(mode, path_parameters=ids, auth_storage=schema.auth)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ),
        *operation.get_strategies_from_examples(auth_storage=schema.auth),
    )

    @given(case=cases)
    @FUZZ_SETTINGS
    def answers_as_documented(case: Any) -> None:
        started = time.perf_counter()
        case.path_parameters = {**(case.path_parameters or {}), **ids}
        # Every example finds the same world: a delete or a cancel is undone after it.
        with transaction.atomic():
            case.call_and_validate(additional_checks=[error_says_what_was_wrong])
            transaction.set_rollback(True)
        SECONDS[label] = SECONDS.get(label, 0.0) + time.perf_counter() - started

    answers_as_documented()
    assert any(200 <= status < 300 for (name, status) in STATUSES if name == label), sorted(
        answer for answer in STATUSES.items() if answer[0][0] == label
    )


# The stateful scenarios' answers: (operation, status) -> how many.
STATEFUL: dict[tuple[str, int], int] = {}


def error_says_what_was_wrong_stateful(ctx: Any, response: Any, case: Any) -> bool | None:
    answer = (case.operation.label, response.status_code)
    STATEFUL[answer] = STATEFUL.get(answer, 0) + 1
    _count(case, response)
    return _error_has_message(response, case)


class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
    def setup(self) -> None:
        # Each scenario starts from the same world (what the business holds, nothing the
        # scenarios before made), so that Hypothesis, replaying one, sees the same answers.
        self.world = transaction.atomic()
        self.world.__enter__()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.world.__exit__(None, None, None)

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
def test_created_resources_answer_as_documented(held: dict[str, str]) -> None:
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


def test_the_fuzzing_covered_every_operation() -> None:
    operations = {operation.label for operation in _operations()}
    assert set(SENT) == operations, sorted(SENT)
    # The keys worked: each kind of credential got past authentication somewhere.
    for accepted in [
        ("POST /api/v1/deliveries", 202),
        ("POST /api/v1/telemetry", 200),
        ("GET /api/v1/zones", 200),
    ]:
        assert accepted in ANSWERED, sorted(a for a in ANSWERED if a[0] == accepted[0])
    print(f"\nfuzzed {sum(STATUSES.values())} requests over {len(operations)} operations")
    for label, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        print(f"  {label}: {SENT.get(label, 0)} requests, {seconds:.1f} s")
    print("answers, by operation and status:")
    labels = sorted({label for label, _ in STATUSES})
    for label in labels:
        answers = ", ".join(
            f"{s}: {n}" for (name, s), n in sorted(STATUSES.items()) if name == label
        )
        print(f"  {label}: {answers}")
    # Each operation did what it is for at least once, not only refuse.
    succeeded = {label for label, status in STATUSES if 200 <= status < 300}
    assert operations <= succeeded, sorted(operations - succeeded)

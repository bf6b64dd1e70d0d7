"""Log lines: JSON, each with the trace it was written in; one access line per request; no
secret in any line."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from tests.conftest import Tenant, delivery_body, make_fleet
from tests.observability.conftest import OtlpReceiver, Stack
from tests.observability.test_traces import has_request_span, request_span, workflow_done
from tests.support import wait_for


def lines(path: Path) -> list[dict[str, Any]]:
    """The log lines (JSON objects) of a process's output."""
    parsed = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            parsed.append(json.loads(line))
    return parsed


def test_lines_written_while_handling_a_request_carry_its_trace_id(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    make_fleet(1)
    response = requests.post(
        f"{stack.web.url}/api/v1/deliveries",
        json=delivery_body(),
        headers={"Authorization": f"Api-Key {tenant.key}"},
        timeout=30,
    )
    assert response.status_code == 202
    delivery_id = response.json()["id"]
    wait_for(lambda: has_request_span(otlp, delivery_id), timeout=20, what="the POST's span")
    request = request_span(otlp, delivery_id)
    wait_for(lambda: workflow_done(otlp, request.trace_id), timeout=30, what="the workflow")

    def access_line() -> dict[str, Any] | None:
        for line in lines(stack.web.log):
            if line.get("name") == "portal.access" and line.get("trace_id") == request.trace_id:
                return line
        return None

    wait_for(lambda: access_line() is not None, timeout=10, what="the request's access line")
    line = access_line()
    assert line is not None
    assert (line["method"], line["route"], line["status"]) == ("POST", "/api/v1/deliveries", 202)
    assert line["duration_ms"] > 0 and line["level"] == "INFO" and line["span_id"]
    # The worker's lines about the workflow are in the same trace.
    wait_for(
        lambda: any(w.get("trace_id") == request.trace_id for w in lines(stack.worker_log)),
        timeout=10,
        what="a worker line in the request's trace",
    )
    # Every line gunicorn and Django wrote is JSON with the ids' fields (empty outside a trace);
    # the worker's too, but for Celery's start-up banner (printed, not logged).
    web_text = [x for x in stack.web.log.read_text().splitlines() if x.strip()]
    assert web_text and all(x.startswith("{") for x in web_text), web_text[:3]
    for path in (stack.web.log, stack.worker_log):
        assert all("trace_id" in o and "span_id" in o for o in lines(path))


def test_no_api_key_or_secret_reaches_any_log_line(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    make_fleet(1)
    auth = {"Authorization": f"Api-Key {tenant.key}"}
    # A webhook endpoint: its signing secret is answered once, and must be logged never.
    created = requests.post(
        f"{stack.web.url}/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/fabrikam", "events": ["delivery.failed"]},
        headers=auth,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    bogus = "Zk3Qx9Lm.Pq7Rs1Tu5Vw8Xy2Za4Bc6De"
    refused = requests.get(
        f"{stack.web.url}/api/v1/deliveries",
        headers={"Authorization": f"Api-Key {bogus}", "Telemetry-Key": bogus},
        timeout=30,
    )
    assert refused.status_code in (401, 403)
    broken = requests.post(
        f"{stack.web.url}/api/v1/telemetry",
        data=b"not json",
        headers={"Telemetry-Key": bogus, "Content-Type": "application/json"},
        timeout=30,
    )
    assert broken.status_code >= 400
    wait_for(
        lambda: sum(1 for x in lines(stack.web.log) if x.get("name") == "portal.access") >= 3,
        timeout=10,
        what="the access lines",
    )
    for path in (stack.web.log, stack.worker_log):
        text = path.read_text()
        for value in (tenant.key, tenant.key.split(".")[-1], secret, bogus):
            assert value not in text, (path.name, value)


@pytest.mark.parametrize(
    ("logged", "secret"),
    [
        ("headers {'Authorization': 'Api-Key Ab12Cd34.Ef56Gh78Ij90Kl12'}", "Ef56Gh78Ij90Kl12"),
        ("HTTP_AUTHORIZATION=Api-Key Ab12Cd34.Ef56Gh78Ij90Kl12", "Ef56Gh78Ij90Kl12"),
        ("sent Telemetry-Key: tk_Zz99Yy88Xx77Ww66", "Zz99Yy88Xx77Ww66"),
        (
            "endpoint secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        ("login failed: password=hunter2hunter2", "hunter2hunter2"),
        ("connecting to postgres://app:S3cretPass@db:5432/app", "S3cretPass"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "eyJhbGciOiJIUzI1NiJ9"),
    ],
)
def test_the_log_handler_redacts_credentials_whatever_logged_them(logged: str, secret: str) -> None:
    stream = io.StringIO()
    config = json.loads(json.dumps(settings.LOGGING))  # a copy: the process keeps its own
    config["handlers"]["console"]["stream"] = stream
    config["root"]["handlers"] = ["console"]
    logging.config.dictConfig(config)
    try:
        logging.getLogger("anything").warning("%s", logged)
        try:
            raise ValueError(logged)
        except ValueError:
            logging.getLogger("anything").exception("failed")
    finally:
        logging.config.dictConfig(settings.LOGGING)
    output = stream.getvalue()
    assert secret not in output
    assert output.count("[redacted]") >= 2

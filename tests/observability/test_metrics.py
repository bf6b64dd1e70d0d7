"""Metrics at /metrics (Prometheus' format) for scrapers inside the cluster, never through the
gateway; telemetry reports and the stage changes they cause, linked to the delivery's trace."""

from __future__ import annotations

import re
from typing import Any

import requests
from django.utils import timezone

from deliveries.models import Delivery
from drones.flight import CRUISE_ALT_M
from drones.services import telemetry_key_create
from tests.conftest import Tenant, delivery_body, make_fleet
from tests.observability.conftest import OtlpReceiver, Stack
from tests.observability.test_traces import SERVER, post_delivery, request_span
from tests.support import wait_for


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_telemetry_moves_a_delivery_in_a_trace_linked_to_its_request_and_everything_is_counted(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    drone = make_fleet(1)[0]
    response = requests.post(
        f"{stack.web.url}/api/v1/deliveries",
        json=delivery_body(),
        headers={"Authorization": f"Api-Key {tenant.key}"},
        timeout=30,
    )
    delivery_id = response.json()["id"]
    wait_for(
        lambda: Delivery.objects.get(pk=delivery_id).status == "assigned",
        timeout=30,
        what="the delivery assigned",
    )
    _, key = telemetry_key_create(name="gateway", base_ids=[drone.base_id])
    report: dict[str, Any] = {
        "drone": drone.serial,
        "time": timezone.now().isoformat().replace("+00:00", "Z"),
        "lat": drone.lat,
        "lon": drone.lon,
        "alt_m": CRUISE_ALT_M,
        "ground_speed_mps": 16.0,
        "heading": 0.0,
        "battery_pct": 90.0,
    }
    answer = requests.post(
        f"{stack.web.url}/api/v1/telemetry",
        json={"reports": [report, {**report, "drone": "NOPE-1"}]},
        headers={"Authorization": f"Telemetry-Key {key}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["refused"] == 1, answer.text
    assert Delivery.objects.get(pk=delivery_id).status == "en_route_to_pickup"

    # The takeoff is in the telemetry request's trace, linked to the delivery request's.
    request = request_span(otlp, delivery_id)
    wait_for(
        lambda: bool(otlp.find(name="delivery.stage_change", stage_to="en_route_to_pickup")),
        timeout=20,
        what="the takeoff's span",
    )
    (takeoff,) = otlp.find(name="delivery.stage_change", stage_to="en_route_to_pickup")
    assert takeoff.service == "fabrikam-web" and takeoff.trace_id != request.trace_id
    assert takeoff.attributes["delivery.id"] == delivery_id
    assert takeoff.links == ((request.trace_id, request.span_id),)
    # The request's own span ends last, and may come in a later batch than the takeoff's.
    wait_for(
        lambda: any(s.kind == SERVER for s in otlp.trace(takeoff.trace_id)),
        timeout=20,
        what="the telemetry request's span",
    )
    (report_span,) = [s for s in otlp.trace(takeoff.trace_id) if s.kind == SERVER]
    assert report_span.attributes["http.route"] == "api/v1/telemetry"
    assert (request.trace_id, request.span_id) in report_span.links

    # The web process's /metrics (summed over its gunicorn workers).
    text = requests.get(f"{stack.web.url}/metrics", timeout=10).text
    assert sample(text, "fabrikam_telemetry_reports_total", result="accepted") >= 1
    assert sample(text, "fabrikam_telemetry_reports_total", result="refused") >= 1
    assert sample(text, "fabrikam_deliveries", stage="en_route_to_pickup") >= 1
    assert sample(text, "fabrikam_drones", state="flying") >= 1
    assert sample(text, "fabrikam_delivery_stage_changes_total", stage="requested") >= 1
    assert sample(text, "fabrikam_delivery_stage_changes_total", stage="en_route_to_pickup") >= 1
    assert (
        sample(
            text,
            "fabrikam_http_request_duration_seconds_count",
            method="POST",
            route="/api/v1/deliveries",
            status="202",
        )
        >= 1
    )
    # The worker's: its steps, the queue wait, the assignment.
    text = requests.get(stack.worker_metrics_url, timeout=10).text
    for step in ("load", "package", "assign"):
        labels = {"step": step, "outcome": "ok"}
        assert sample(text, "fabrikam_workflow_step_duration_seconds_count", **labels) >= 1
    wait = "fabrikam_task_queue_wait_seconds_count"
    assert sample(text, wait, task="workers.delivery_process") >= 1
    assert sample(text, "fabrikam_delivery_stage_changes_total", stage="assigned") >= 1


def test_metrics_are_not_served_to_a_request_that_came_through_the_gateway(
    stack: Stack,
) -> None:
    direct = requests.get(f"{stack.web.url}/metrics", timeout=10)
    assert direct.status_code == 200
    assert direct.headers["Content-Type"].startswith("text/plain")
    for header in ("X-Forwarded-For", "X-Original-Host"):
        proxied = requests.get(f"{stack.web.url}/metrics", headers={header: "1"}, timeout=10)
        assert proxied.status_code == 404
        assert "fabrikam_" not in proxied.text
    # Nor written: only GET.
    assert requests.post(f"{stack.web.url}/metrics", timeout=10).status_code == 404


def test_metrics_reach_the_exporter_and_a_request_s_duration_is_exported_once(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    make_fleet(1)
    post_delivery(stack.web.url, tenant)
    accepted = {"http.method": "POST", "http.status_code": 202, "http.target": "api/v1/deliveries"}
    stored = {"stage": "requested"}

    def exported() -> bool:
        return bool(
            otlp.metric("http.server.duration", accepted)
            and otlp.metric("fabrikam_delivery_stage_changes_total", stored)
        )

    wait_for(exported, timeout=20, what="the web process's metrics exported")
    assert {p.service for p in otlp.metric("http.server.duration", accepted)} == {"fabrikam-web"}
    assert "fabrikam-web" in {
        p.service for p in otlp.metric("fabrikam_delivery_stage_changes_total", stored)
    }
    # The request's duration once: the Django instrumentation's, ours at /metrics only.
    assert not otlp.metric("fabrikam_http_request_duration_seconds")

"""One trace per delivery request, across the web process and a real worker, exported over
OTLP/HTTP to a receiver in the test; also when the message went through the outbox relay."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from deliveries.models import Delivery, OutboxMessage
from tests.conftest import Tenant, delivery_body, make_fleet
from tests.observability.conftest import OtlpReceiver, Span, Stack
from tests.support import wait_for

SERVER, PRODUCER, CONSUMER = 2, 4, 5  # OTLP's SpanKind numbers


def post_delivery(url: str, tenant: Tenant) -> str:
    response = requests.post(
        f"{url}/api/v1/deliveries",
        json=delivery_body(),
        headers={"Authorization": f"Api-Key {tenant.key}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def has_request_span(otlp: OtlpReceiver, delivery_id: str) -> bool:
    """Whether the POST's own span has come: spans of one request arrive in several batches
    (the server span ends last), so another span of the delivery may come first."""
    return any(s.kind == SERVER for s in otlp.find(delivery_id=delivery_id))


def request_span(otlp: OtlpReceiver, delivery_id: str) -> Span:
    spans = [s for s in otlp.find(delivery_id=delivery_id) if s.kind == SERVER]
    assert len(spans) == 1, spans
    return spans[0]


def workflow_done(otlp: OtlpReceiver, trace_id: str) -> bool:
    names = {span.name for span in otlp.trace(trace_id)}
    return {"workflow.package", "workflow.assign", "run/workers.delivery_process"} <= names


def one(spans: list[Span], name: str) -> Span:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def assert_workflow_under(spans: list[Span], producer: Span, delivery: Delivery) -> None:
    """The message's run in the worker is the producer's child; every step is the run's."""
    run = one(spans, "run/workers.delivery_process")
    assert run.service == "fabrikam-worker" and run.kind == CONSUMER
    assert run.parent_id == producer.span_id
    assert run.attributes["delivery.id"] == str(delivery.id)
    assert run.attributes["business.id"] == str(delivery.business_id)
    assert run.attributes["drone.id"] == str(delivery.drone_id)
    for name in ("workflow.load", "workflow.package", "workflow.assign"):
        assert one(spans, name).parent_id == run.span_id, name
    assign = one(spans, "workflow.assign")
    assert assign.attributes["drone.id"] == str(delivery.drone_id)
    assert assign.attributes["workflow.outcome"] == "assigned"
    # The stage change inside the step, and the database under it.
    stage = one(spans, "delivery.stage_change")
    assert stage.parent_id == assign.span_id and stage.attributes["stage.to"] == "assigned"
    assert any(s.parent_id == stage.span_id and s.attributes.get("db.system") for s in spans)


def test_a_delivery_request_and_its_whole_workflow_are_one_trace_across_web_and_worker(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    make_fleet(3)
    delivery_id = post_delivery(stack.web.url, tenant)
    wait_for(lambda: has_request_span(otlp, delivery_id), timeout=20, what="the POST's span")
    request = request_span(otlp, delivery_id)
    wait_for(lambda: workflow_done(otlp, request.trace_id), timeout=30, what="the worker's spans")
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == "assigned"
    spans = otlp.trace(request.trace_id)

    assert request.service == "fabrikam-web" and request.parent_id == ""
    assert request.attributes["business.id"] == str(tenant.business.id)
    assert request.attributes["http.route"] == "api/v1/deliveries"
    # Stored with the delivery, for the sweeper and the booking to continue it.
    assert delivery.traceparent.split("-")[1] == request.trace_id
    producer = one(spans, "apply_async/workers.delivery_process")
    assert producer.service == "fabrikam-web" and producer.kind == PRODUCER
    assert producer.parent_id == request.span_id
    assert_workflow_under(spans, producer, delivery)
    assert {span.service for span in spans} == {"fabrikam-web", "fabrikam-worker"}


def test_a_request_that_waited_in_the_outbox_is_relayed_inside_its_own_trace(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    make_fleet(3)
    # The web process finds the broker down; the worker and the relay find it back.
    delivery_id = post_delivery(stack.web_broker_down.url, tenant)
    wait_for(lambda: has_request_span(otlp, delivery_id), timeout=20, what="the POST's span")
    request = request_span(otlp, delivery_id)
    message = OutboxMessage.objects.get(payload__delivery_id=delivery_id)
    assert message.published_at is None
    assert message.traceparent.split("-")[1] == request.trace_id
    # The failed publish is in the trace too, closed and marked as an error.
    failed = one(otlp.trace(request.trace_id), "apply_async/workers.delivery_process")
    assert failed.parent_id == request.span_id and failed.status_code == 2  # ERROR

    # Beat's relay, run by the worker as beat would have it run, in a trace of its own.
    OutboxMessage.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - timedelta(minutes=1)
    )
    from portal.celery import app

    app.send_task("workers.outbox_relay")
    wait_for(lambda: workflow_done(otlp, request.trace_id), timeout=30, what="the relayed run")

    spans = otlp.trace(request.trace_id)
    relay = one(spans, "outbox.relay")
    assert relay.service == "fabrikam-worker" and relay.parent_id == request.span_id
    relay_run = one(otlp.find(name="run/workers.outbox_relay"), "run/workers.outbox_relay")
    assert relay_run.trace_id != request.trace_id  # not an unrelated trace: only linked
    assert relay.links == ((relay_run.trace_id, relay_run.span_id),)
    producers = [s for s in spans if s.name == "apply_async/workers.delivery_process"]
    relayed = one([s for s in producers if s.parent_id == relay.span_id], producers[0].name)
    assert relayed.service == "fabrikam-worker"
    assert_workflow_under(spans, relayed, Delivery.objects.get(pk=delivery_id))


def test_nothing_is_set_up_without_an_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (no OTLP endpoint, no connection string): nothing instrumented, no cost."""
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    from portal import telemetry

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with override_settings(APPLICATIONINSIGHTS_CONNECTION_STRING=None):
        assert telemetry.configure_telemetry(service_name="fabrikam-test") is False
    assert not telemetry.enabled() and telemetry.traceparent() == ""
    assert not DjangoInstrumentor().is_instrumented_by_opentelemetry


def test_a_request_the_sampler_left_out_is_not_traced_and_its_workflow_follows_it(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    """A caller's traceparent with the sampled flag off: nothing of the request or of its
    workflow is exported, yet the decision travels with the message (the worker does not start
    a trace of its own) and the trace id is stored with the delivery."""
    make_fleet(3)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = requests.post(
        f"{stack.web.url}/api/v1/deliveries",
        json=delivery_body(),
        headers={
            "Authorization": f"Api-Key {tenant.key}",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-00",
        },
        timeout=30,
    )
    assert response.status_code == 202, response.text
    delivery_id = response.json()["id"]
    wait_for(
        lambda: Delivery.objects.get(pk=delivery_id).status == "assigned",
        timeout=30,
        what="the delivery assigned",
    )
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.traceparent.startswith(f"00-{trace_id}-") and delivery.traceparent[-2:] == "00"
    # A sampled request made after it is exported whole, so the unsampled one had its chance.
    later = post_delivery(stack.web.url, tenant)
    wait_for(lambda: has_request_span(otlp, later), timeout=20, what="the later POST's span")
    wait_for(
        lambda: workflow_done(otlp, request_span(otlp, later).trace_id),
        timeout=30,
        what="the later workflow's spans",
    )
    assert otlp.trace(trace_id) == []
    assert otlp.find(delivery_id=delivery_id) == []


def test_inside_a_request_the_sampler_left_out_the_other_instrumentations_are_off() -> None:
    """The database, Redis, MongoDB and HTTP client instrumentations do nothing for it (they
    would wrap every call in a span nobody records); a sampled request keeps them."""
    from django.test import RequestFactory
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from portal import telemetry

    request = RequestFactory().post("/api/v1/deliveries")
    left_out = NonRecordingSpan(SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(0)))
    telemetry._request_started(left_out, request)
    try:
        assert not is_instrumentation_enabled()
    finally:
        telemetry._request_finished(left_out, request, None)
    assert is_instrumentation_enabled()

    sampled = TracerProvider().get_tracer("test").start_span("POST")
    telemetry._request_started(sampled, request)
    assert is_instrumentation_enabled()
    telemetry._request_finished(sampled, request, None)
    sampled.end()


def test_sending_a_deliverys_webhook_is_linked_to_the_delivery_request_trace(
    stack: Stack, otlp: OtlpReceiver, transactional_db: None, tenant: Tenant
) -> None:
    """Beat starts the dispatch in a trace of its own; the sender's run links to the trace of
    the request that created the delivery, as the relay does."""
    from portal.celery import app
    from webhooks.models import WebhookMessage

    make_fleet(3)
    created = requests.post(
        f"{stack.web.url}/api/v1/webhooks",
        # Nothing listens there: the attempt fails and is recorded, which is all this needs.
        json={"url": "http://127.0.0.1:9/fabrikam", "events": ["delivery.assigned"]},
        headers={"Authorization": f"Api-Key {tenant.key}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    delivery_id = post_delivery(stack.web.url, tenant)
    wait_for(lambda: has_request_span(otlp, delivery_id), timeout=20, what="the POST's span")
    request = request_span(otlp, delivery_id)

    def attempted() -> bool:
        message = WebhookMessage.objects.filter(delivery_id=delivery_id).first()
        if message is None or message.attempts == 0:
            app.send_task("workers.webhooks_dispatch")  # as beat would, every 2 s
            return False
        return True

    wait_for(attempted, timeout=30, what="the webhook attempted")

    def sender_runs() -> list[Span]:
        return [
            s
            for s in otlp.find(service="fabrikam-worker")
            if s.name.startswith("run/workers.webhook")
            and (request.trace_id, request.span_id) in s.links
        ]

    wait_for(lambda: bool(sender_runs()), timeout=20, what="the sender's run, linked")
    assert all(s.trace_id != request.trace_id for s in sender_runs())

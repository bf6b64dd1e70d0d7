"""Traces and metrics through OpenTelemetry, set up once at the start of every process.

Where they go is configuration alone:

- `APPLICATIONINSIGHTS_CONNECTION_STRING`: Application Insights, through Microsoft's
  `azure-monitor-opentelemetry` distro (the `applicationinsights` package is unmaintained);
- the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) with the
  other standard `OTEL_*` variables: any OpenTelemetry collector, over OTLP/HTTP protobuf;
- both: both; neither (or `OTEL_SDK_DISABLED=true`): nothing is set up, nothing instrumented,
  and every helper below costs a check of one module global.

Each process names itself (`fabrikam-web`, `-worker`, `-beat`, `-simulator`, `-live`) and takes
the rest of its resource from `OTEL_RESOURCE_ATTRIBUTES` (the chart puts the pod, namespace and
node there from the Downward API), so a dependency map shows every component.

One trace per delivery: the request's context travels with the workflow message in the
message's headers (the Celery instrumentation), and is stored with the delivery
(`Delivery.traceparent`) and with a message the broker refused (`OutboxMessage.traceparent`),
so the outbox relay and the sweeper publish inside the original trace (`continued`) instead of
starting their own. Stage changes and telemetry reports are linked to it (`link_delivery`), and
so is the sending of its webhooks (`link_deliveries`), which beat starts in a trace of its own.

What a request the sampler left out costs (OTEL_TRACES_SAMPLER=parentbased_traceidratio, as the
chart samples a tenth): its spans are non-recording, so nothing of it is exported, but the
database, Redis, MongoDB and HTTP client instrumentations would still wrap every call in one.
Inside such a request or workflow step they are switched off (`suppress_instrumentation`, which
they all honour; the Celery instrumentation does not, so the message still carries the trace
and its decision to the worker). Measured on `POST /api/v1/deliveries` called in-process (the
WSGI application in a loop, PostgreSQL, Redis broker, OTLP to a no-op collector), CPU time in
40-50 alternating rounds, two runs: telemetry at 10 % sampling cost 22.7-25.0 % more CPU than
off before this, 17.7-20.8 % after (every request traced: 40.5-40.9 %, 36.8-39.2 %). What
remains is mostly the Django instrumentation's own work per request (attributes, span name,
metrics) and the Celery producer span; bench/telemetry_cost.py measures it through gunicorn.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

_configured = False
_service_name = ""
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("fabrikam")


def enabled() -> bool:
    """Whether this process exports traces (set up by `configure_telemetry`)."""
    return _configured


def service_name() -> str:
    return _service_name


def _otlp_wanted() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_telemetry(*, service_name: str) -> bool:
    """Set up export and instrumentation for this process, once; False when nothing is wanted.

    Call it after Django's settings are loaded and, in a forking server, in each child (the
    exporters' threads do not survive a fork)."""
    global _configured, _service_name, _tracer
    from django.conf import settings

    _service_name = service_name
    if _configured:
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    connection_string = settings.APPLICATIONINSIGHTS_CONNECTION_STRING
    if not connection_string and not _otlp_wanted():
        return False

    from opentelemetry.sdk.resources import Resource

    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES (the pod, namespace, node) and
    # OTEL_SERVICE_NAME, which wins over the name given here when set.
    attributes: dict[str, Any] = {
        "service.namespace": "fabrikam",
        "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
    }
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service_name
    resource = Resource.create(attributes)

    span_processors: list[Any] = []
    metric_readers: list[Any] = []
    if _otlp_wanted():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Endpoint, headers, timeout, compression: the standard OTEL_EXPORTER_OTLP_* variables.
        span_processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        metric_readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))

    if connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=connection_string,
            resource=resource,
            span_processors=span_processors,
            metric_readers=metric_readers,
            # Logs reach Azure Monitor as the container's JSON lines (with trace ids); live
            # metrics' extra thread is not needed by any dashboard here.
            enable_live_metrics=False,
            # Django is instrumented below, with the probes left out and the hooks that spare
            # an unsampled request the other instrumentations' work.
            instrumentation_options={"django": {"enabled": False}},
        )
    else:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider

        # The sampler is the SDK's, from OTEL_TRACES_SAMPLER (default: parent-based, always on).
        provider = TracerProvider(resource=resource)
        for processor in span_processors:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=metric_readers))
    _instrument()
    _tracer = trace.get_tracer("fabrikam")
    _configured = True
    logger.info(
        "telemetry on as %s: %s",
        service_name,
        " and ".join(
            name
            for name, on in (
                ("Azure Monitor", bool(connection_string)),
                ("OTLP", _otlp_wanted()),
            )
            if on
        ),
    )
    return True


def _instrument() -> None:
    """Django, Celery, the database, Redis, pymongo and outgoing HTTP (requests, urllib3).

    The Azure distro instruments psycopg2, requests, urllib and urllib3 itself (Django is left
    to this function); those it already did are skipped."""
    from django.conf import settings
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    instrumentors: list[Any] = [
        DjangoInstrumentor(),
        CeleryInstrumentor(),
        RedisInstrumentor(),
        PymongoInstrumentor(),
        RequestsInstrumentor(),
        URLLib3Instrumentor(),
    ]
    if settings.DATABASES["default"]["ENGINE"] == "portal.sqlite":  # settings: any SQLite
        from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

        instrumentors.append(SQLite3Instrumentor())
    else:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        instrumentors.append(PsycopgInstrumentor())
    # The Celery instrumentation finds a published task by its name in the app's registry and
    # leaves the producer span open for a name it does not know: register them all here too.
    import workers.tasks  # noqa: F401

    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            kwargs = (
                {
                    # The probes and /metrics are polled every few seconds: no trace for them.
                    "excluded_urls": "healthz/,metrics",
                    "request_hook": _request_started,
                    "response_hook": _request_finished,
                }
                if instrumentor is instrumentors[0]
                else {}
            )
            instrumentor.instrument(**kwargs)


_QUIET = "_fabrikam_quiet"


def _request_started(span: Span, request: Any) -> None:
    """The Django instrumentation's request hook: a request the sampler left out runs with the
    other instrumentations switched off, until `_request_finished`."""
    if not span.is_recording():
        quiet = suppress_instrumentation()
        quiet.__enter__()
        setattr(request, _QUIET, quiet)


def _request_finished(span: Span, request: Any, response: Any) -> None:
    quiet = getattr(request, _QUIET, None)
    if quiet is not None:
        delattr(request, _QUIET)
        quiet.__exit__(None, None, None)


# --- one trace per delivery -------------------------------------------------------------------


def traceparent() -> str:
    """The W3C `traceparent` of the current span; '' when nothing is traced."""
    if not _configured:
        return ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _span_context(parent: str) -> trace.SpanContext | None:
    if not parent:
        return None
    context = trace.get_current_span(_propagator.extract({"traceparent": parent}))
    span_context = context.get_span_context()
    return span_context if span_context.is_valid else None


@contextmanager
def continued(parent: str, name: str, **attributes: Any) -> Iterator[None]:
    """Run the block in a span of the trace `parent` (a stored traceparent) names, linked to the
    span that is current now (the relay's or the sweeper's run): work done later on behalf of a
    request joins that request's trace."""
    if not _configured or not parent:
        yield
        return
    remote = _propagator.extract({"traceparent": parent})
    current = trace.get_current_span().get_span_context()
    links = [Link(current)] if current.is_valid else None
    with _tracer.start_as_current_span(
        name, context=remote, links=links, kind=SpanKind.INTERNAL
    ) as span:
        if not span.is_recording():
            with suppress_instrumentation():
                yield
            return
        span.set_attributes(_attrs(attributes))
        yield


def _attrs(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        key.replace("_", "."): str(value) if not isinstance(value, int | float | bool) else value
        for key, value in attributes.items()
        if value is not None and value != ""
    }


def annotate(**attributes: Any) -> None:
    """Put ids on the current span: `delivery_id=...` becomes the attribute `delivery.id`."""
    if not _configured:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(_attrs(attributes))


def annotate_delivery(delivery: Any) -> None:
    annotate(delivery_id=delivery.pk, business_id=delivery.business_id, drone_id=delivery.drone_id)


def link_delivery(delivery: Any) -> None:
    """Link the current span to the trace of the request that created `delivery` (a telemetry
    report about it), unless it is that trace already."""
    if not _configured:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    linked = _span_context(getattr(delivery, "traceparent", "") or "")
    if linked is not None and linked.trace_id != span.get_span_context().trace_id:
        span.add_link(
            linked, {"fabrikam.link": "delivery.request", "delivery.id": str(delivery.pk)}
        )


def link_deliveries(delivery_ids: Iterable[Any]) -> None:
    """Link the current span (a webhook sender's run, say) to the traces of the requests that
    created these deliveries, once per trace. Only for a recording span: an unsampled run
    neither reads the deliveries' traceparents nor links anything."""
    if not _configured:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    from deliveries.models import Delivery

    own = span.get_span_context().trace_id
    seen: set[int] = set()
    rows = Delivery.objects.filter(pk__in={str(pk) for pk in delivery_ids}).exclude(traceparent="")
    for pk, parent in rows.values_list("pk", "traceparent"):
        linked = _span_context(parent)
        if linked is None or linked.trace_id in seen or linked.trace_id == own:
            continue
        seen.add(linked.trace_id)
        span.add_link(linked, {"fabrikam.link": "delivery.request", "delivery.id": str(pk)})


@contextmanager
def step(name: str, **attributes: Any) -> Iterator[Span | None]:
    """One step of the delivery workflow: a span (when traced) and its duration in the
    `fabrikam_workflow_step_duration_seconds` metric."""
    from portal import metrics

    started = time.perf_counter()
    outcome = "ok"
    try:
        if not _configured:
            yield None
        else:
            with _tracer.start_as_current_span(f"workflow.{name}") as span:
                if span.is_recording():
                    span.set_attributes(_attrs(attributes))
                    yield span
                else:
                    with suppress_instrumentation():
                        yield span
    except BaseException:
        outcome = "error"
        raise
    finally:
        metrics.WORKFLOW_STEP_SECONDS.observe(
            time.perf_counter() - started, step=name, outcome=outcome
        )


@contextmanager
def linked(name: str, delivery: Any, **attributes: Any) -> Iterator[None]:
    """A span for work on `delivery` done outside its request's trace (a stage change caused
    by telemetry, an operator, a sweeper), linked to that trace."""
    if not _configured:
        yield
        return
    with _tracer.start_as_current_span(name) as span:
        if not span.is_recording():
            with suppress_instrumentation():
                yield
            return
        delivery_trace = _span_context(getattr(delivery, "traceparent", "") or "")
        if delivery_trace is not None and delivery_trace.trace_id != (
            span.get_span_context().trace_id
        ):
            span.add_link(delivery_trace, {"fabrikam.link": "delivery.request"})
        ids = {
            "delivery_id": delivery.pk,
            "business_id": delivery.business_id,
            "drone_id": delivery.drone_id,
        }
        span.set_attributes(_attrs(ids | attributes))
        yield

"""The platform's metrics: recorded once, read two ways.

Each instrument below records into prometheus_client (served at `/metrics`, for clusters that
scale or alert on Prometheus metrics) and into an OpenTelemetry instrument of the same name,
exported with the traces when `portal.telemetry` set an exporter up (a no-op otherwise).
Except the HTTP requests' durations: OpenTelemetry has them already, as the Django
instrumentation's `http.server.duration` (by method, route and status), which Azure Monitor turns
into Application Insights' standard request metrics; a copy of our own would be recorded on every
request and exported twice.

Processes with several children (gunicorn's workers, Celery's prefork pool) use
prometheus_client's multiprocess mode when `PROMETHEUS_MULTIPROC_DIR` names a directory (the
chart sets it): each child writes its samples there and `/metrics` sums them, whichever child
answers. gunicorn.conf.py and portal/celery.py empty that directory when the server starts and
forget children that exit. Without it each process serves its own figures, which is honest only
for a single process (`make run`, one gunicorn worker).

What the database knows (deliveries by stage, drones by state) is counted when scraped, by the
web process's `/metrics`, and exported through OpenTelemetry by beat alone (one replica), so
that no gauge is summed over replicas.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import prometheus_client
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from opentelemetry import metrics as otel
from prometheus_client.core import GaugeMetricFamily

_meter = otel.get_meter("fabrikam")

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(
        self, name: str, documentation: str, labels: Iterable[str], *, otel: bool = True
    ) -> None:
        self.prometheus = prometheus_client.Histogram(
            name, documentation, list(labels), buckets=SECONDS_BUCKETS
        )
        self.otel = (
            _meter.create_histogram(name, unit="s", description=documentation) if otel else None
        )

    def observe(self, value: float, **labels: str) -> None:
        self.prometheus.labels(**labels).observe(value)
        if self.otel is not None:
            self.otel.record(value, labels)


class Counter:
    def __init__(self, name: str, documentation: str, labels: Iterable[str]) -> None:
        self.prometheus = prometheus_client.Counter(name, documentation, list(labels))
        self.otel = _meter.create_counter(f"{name}_total", description=documentation)

    def inc(self, amount: float = 1, **labels: str) -> None:
        self.prometheus.labels(**labels).inc(amount)
        self.otel.add(amount, labels)


HTTP_REQUEST_SECONDS = Histogram(
    "fabrikam_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status",
    ["method", "route", "status"],
    otel=False,  # OpenTelemetry's is the Django instrumentation's http.server.duration
)
WORKFLOW_STEP_SECONDS = Histogram(
    "fabrikam_workflow_step_duration_seconds",
    "Time taken by one step of the delivery workflow",
    ["step", "outcome"],
)
TASK_QUEUE_WAIT_SECONDS = Histogram(
    "fabrikam_task_queue_wait_seconds",
    "Time a task message waited on the broker before a worker started it (from when it was "
    "published, or from its countdown's end)",
    ["task"],
)
DELIVERY_STAGE_CHANGES = Counter(
    "fabrikam_delivery_stage_changes",
    "Deliveries that entered a stage",
    ["stage"],
)
TELEMETRY_REPORTS = Counter(
    "fabrikam_telemetry_reports",
    "Drone telemetry reports, by result: accepted, ignored (not newer) or refused",
    ["result"],
)


def deliveries_by_stage() -> dict[str, int]:
    from django.db.models import Count

    from deliveries.models import Delivery

    rows = Delivery.objects.order_by().values_list("status").annotate(n=Count("pk"))
    counts = dict.fromkeys(Delivery.Status.values, 0)
    counts.update({status: n for status, n in rows})
    return counts


def drones_by_state() -> dict[str, int]:
    from django.db.models import Count

    from drones.models import Drone

    rows = Drone.objects.order_by().values_list("state").annotate(n=Count("pk"))
    counts = dict.fromkeys(Drone.State.values, 0)
    counts.update({state: n for state, n in rows})
    return counts


class DatabaseCollector:
    """Deliveries by stage and drones by state, counted in the database when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stages = GaugeMetricFamily(
            "fabrikam_deliveries", "Deliveries in each stage now", labels=["stage"]
        )
        for stage, count in deliveries_by_stage().items():
            stages.add_metric([stage], count)
        yield stages
        states = GaugeMetricFamily("fabrikam_drones", "Drones in each state now", labels=["state"])
        for state, count in drones_by_state().items():
            states.add_metric([state], count)
        yield states


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def registry(*, with_database: bool) -> prometheus_client.CollectorRegistry:
    """What `/metrics` shows: this process's metrics, or every child's in multiprocess mode."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        collected = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
    else:
        collected = prometheus_client.CollectorRegistry()
        collected.register(_Own())
    if with_database:
        collected.register(DatabaseCollector())
    return collected


class _Own:
    """The process's default registry, minus nothing: wrapped so it can join another registry."""

    def collect(self) -> Iterable[Any]:
        return prometheus_client.REGISTRY.collect()


def multiprocess_reset() -> None:
    """Forget the samples of a previous run (a restarted container keeps its /tmp)."""
    path = multiprocess_dir()
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def child_exited(pid: int) -> None:
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


_server_lock = threading.Lock()
_server_started = False


def serve(port: int, *, with_database: bool = False) -> bool:
    """Serve `/metrics` on `port` from this process (workers, beat and the simulator, which have
    no web server of their own). Once per process; False when no port is given."""
    global _server_started
    with _server_lock:
        if not port or _server_started:
            return False
        prometheus_client.start_http_server(port, registry=registry(with_database=with_database))
        _server_started = True
    return True


def observe_database_gauges() -> None:
    """Export deliveries by stage and drones by state through OpenTelemetry (beat only)."""

    def stages(_: Any) -> Iterable[otel.Observation]:
        return _observations(deliveries_by_stage, "stage")

    def states(_: Any) -> Iterable[otel.Observation]:
        return _observations(drones_by_state, "state")

    _meter.create_observable_gauge("fabrikam_deliveries", [stages], description="Deliveries now")
    _meter.create_observable_gauge("fabrikam_drones", [states], description="Drones now")


def _observations(count: Callable[[], dict[str, int]], label: str) -> list[otel.Observation]:
    from django.db import connection

    try:
        return [otel.Observation(n, {label: key}) for key, n in count().items()]
    finally:
        # The exporter's thread is not a request: nothing else closes its connection.
        connection.close()


# --- /metrics in web and live -----------------------------------------------------------------

# Headers a reverse proxy adds: the Application Gateway always sets X-Forwarded-For (and
# X-Original-Host), and a client cannot remove what the gateway appends.
_PROXIED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_ORIGINAL_HOST", "HTTP_X_FORWARDED_HOST")


def came_through_proxy(request: HttpRequest) -> bool:
    """Whether a reverse proxy (the ingress) forwarded this request: such a request never
    reaches /metrics or the probes, which are for the cluster only."""
    return any(header in request.META for header in _PROXIED)


class MetricsEndpointMiddleware:
    """`GET /metrics` in Prometheus' text format, for scrapers inside the cluster only.

    Kept private the way the probes are (deploy/README.md): no Ingress path publishes it, the
    WAF policy blocks it, the network policy admits only the gateway and the scraper; and this
    answers 404 to any request that came through a proxy. Answered before Django's host check
    (scrapers reach pods by IP) and HTTPS redirect."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != "/metrics":
            return self.get_response(request)
        if request.method not in ("GET", "HEAD") or came_through_proxy(request):
            return HttpResponseNotFound(b"", content_type="text/plain")
        body = prometheus_client.generate_latest(registry(with_database=True))
        response = HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)
        response["Cache-Control"] = "no-store"
        return response

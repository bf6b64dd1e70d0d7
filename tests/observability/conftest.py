"""An OTLP/HTTP receiver inside the test, and the web and worker processes exporting to it."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from devtools.localservices import free_port
from tests.conftest import MailSink, database_url, worker_env
from tests.support import BASE_DIR, PYTHON, celery_worker, stop_process_group, wait_for


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]
    status_code: int


@dataclass(frozen=True)
class MetricPoint:
    service: str
    name: str
    attributes: dict[str, Any]


def _value(kv: KeyValue) -> Any:
    which = kv.value.WhichOneof("value")
    return getattr(kv.value, which) if which else None


@dataclass
class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf on /v1/traces and /v1/metrics (and takes /v1/logs whole)."""

    spans: list[Span] = field(default_factory=list)
    # Each metric's data points as exported (cumulative: every export repeats the earlier ones).
    points: list[MetricPoint] = field(default_factory=list)
    other_posts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def receive(self, path: str, body: bytes) -> bytes:
        if path == "/v1/metrics":
            return self._metrics(body)
        if path != "/v1/traces":
            with self.lock:
                self.other_posts[path] = self.other_posts.get(path, 0) + 1
            return b""
        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        Span(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={kv.key: _value(kv) for kv in span.attributes},
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                            status_code=span.status.code,
                        )
                    )
        with self.lock:
            self.spans.extend(received)
        return bytes(ExportTraceServiceResponse().SerializeToString())

    def _metrics(self, body: bytes) -> bytes:
        request = ExportMetricsServiceRequest.FromString(body)
        received = []
        for resource_metrics in request.resource_metrics:
            resource = {kv.key: _value(kv) for kv in resource_metrics.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points if kind else ():
                        attributes = {kv.key: _value(kv) for kv in point.attributes}
                        received.append(MetricPoint(service, metric.name, attributes))
        with self.lock:
            self.points.extend(received)
        return bytes(ExportMetricsServiceResponse().SerializeToString())

    def metric(self, name: str, wanted: dict[str, Any] | None = None) -> list[MetricPoint]:
        """The points of the metric `name` whose attributes include `wanted`."""
        with self.lock:
            points = list(self.points)
        return [
            point
            for point in points
            if point.name == name
            and all(point.attributes.get(k) == v for k, v in (wanted or {}).items())
        ]

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def find(self, **wanted: Any) -> list[Span]:
        with self.lock:
            spans = list(self.spans)
        return [
            span
            for span in spans
            if all(
                span.attributes.get(k.replace("_", ".")) == v
                if k not in ("name", "service")
                else getattr(span, k) == v
                for k, v in wanted.items()
            )
        ]


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            answer = receiver.receive(self.path, body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()


def traced_env(mail_port: int, otlp: OtlpReceiver, tmp: Path) -> dict[str, str]:
    """The environment of a process on the test's services that exports to the receiver."""
    env = {**os.environ, "WORKER_HEARTBEAT_FILE": str(tmp / "heartbeat"), "PYTHONUNBUFFERED": "1"}
    return {
        **worker_env(env, mail_port),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        # Spans leave within a tenth of a second rather than the SDK's 5 s; metrics every half
        # second rather than every minute.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "LOG_FORMAT": "json",
        # Celery's line for each task received and done (off by default): lines of the
        # workflow's, which must carry its trace, and more lines for the secrets test to read.
        "TASK_LOG_LEVEL": "INFO",
        # The webhook endpoint a test registers is on this machine.
        "WEBHOOK_ALLOW_PRIVATE": "true",
    }


@dataclass
class Web:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


def web_start(env: dict[str, str], *, log: Path) -> Web:
    """gunicorn serving portal.wsgi, as the Procfile and the chart start it (one worker)."""
    port = free_port()
    command = [
        PYTHON, "-m", "gunicorn", "portal.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "1",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Web(f"http://127.0.0.1:{port}", log, process)


def web_wait(web: Web) -> None:
    wait_for(
        lambda: requests.get(f"{web.url}/healthz/live", timeout=2).ok,
        timeout=30,
        what=f"gunicorn answering (log: {web.log})",
    )


@dataclass
class Stack:
    web: Web
    # Its broker is a port nothing listens on: every publish goes to the outbox.
    web_broker_down: Web
    worker_log: Path
    # The worker's own /metrics (its main process serves what the pool's children recorded).
    worker_metrics_url: str


@pytest.fixture(scope="package")
def stack(
    django_db_setup: None,
    mail_server: tuple[MailSink, int],
    otlp: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """gunicorn twice and a real Celery worker, started side by side, all exporting to `otlp`;
    shared by this folder's tests (each test makes its own rows)."""
    tmp = tmp_path_factory.mktemp("observability")
    env = traced_env(mail_server[1], otlp, tmp)
    # Multiprocess metrics, as the chart runs them: each process's children write here.
    web_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics-web")}
    down = {
        **env,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics-web-down"),
    }
    metrics_port = free_port()
    worker_env = {
        **env,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics-worker"),
        "METRICS_PORT": str(metrics_port),
    }
    worker_log = tmp / "worker.log"
    with celery_worker(worker_env, log=worker_log, concurrency=1, name="traced") as worker:
        webs = [web_start(web_env, log=tmp / "web.log"), web_start(down, log=tmp / "down.log")]
        try:
            for web in webs:
                web_wait(web)
            yield Stack(webs[0], webs[1], worker_log, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            for process in (worker, *(web.process for web in webs)):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for web in webs:
                stop_process_group(web.process)


__all__ = ["MetricPoint", "OtlpReceiver", "Span", "Stack", "Web", "database_url"]

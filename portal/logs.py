"""Log lines: JSON by default, each with the trace and span ids, never a secret; one access-log
line per request.

Settings' LOGGING uses these (LOG_FORMAT=json, the default, or text for a human at a terminal);
every process applies it once: Django at set-up, Celery through its `setup_logging` signal
(portal/celery.py), so a worker's lines look like the web process's. Both filters sit on the
one handler, so they see every record, whichever logger it came from.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

# What must never reach a log line, whatever logged it: API keys and other credentials in
# headers (Authorization, Api-Key, Telemetry-Key, cookies), webhook signing secrets, passwords
# and tokens in URLs, query strings, form dumps or reprs.
_SECRETS = re.compile(
    r"(?i)"
    r"(?P<header>(?:authorization|api[-_]key|telemetry[-_]key|x-api-key|cookie|set-cookie)"
    r"['\"]?\s*[:=]\s*['\"]?)(?:(?:api-key|bearer|basic|token)\s+)?[^\s'\",;}]+"
    r"|(?P<scheme>\b(?:api-key|bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|(?P<whsec>whsec_)[A-Za-z0-9+/=_-]+"
    r"|(?P<field>(?:password|passwd|secret|token|api_key|client_secret|sessionid|csrftoken)"
    r"['\"]?\s*[:=]\s*['\"]?)[^\s'\"&,;}]+"
    r"|(?P<userinfo>://[^/\s:@]+:)[^@\s/]+(?=@)"
)
REDACTED = "[redacted]"


def _redact_match(match: re.Match[str]) -> str:
    for group in ("header", "scheme", "whsec", "field", "userinfo"):
        if match.group(group):
            return match.group(group) + REDACTED
    return REDACTED


def redact(text: str) -> str:
    return _SECRETS.sub(_redact_match, text)


class RedactSecrets(logging.Filter):
    """Formats the message once and removes credentials from it (and from a traceback's text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # The formatters then print the cleaned text rather than format the exception anew.
            record.exc_text = redact(record.exc_text)
            record.exc_info = None
        return True


class TraceContext(logging.Filter):
    """Puts the current trace and span ids (empty outside any trace) and the service's name on
    every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from portal import telemetry

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        else:
            record.trace_id = record.span_id = ""
        record.service = telemetry.service_name()
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object a line: time, level, logger, message, trace_id, span_id, service, and
    whatever `extra` the call gave (the access log's method, route, status, duration_ms)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "fmt", "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s"
        )
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level"})
        kwargs.setdefault("timestamp", False)
        super().__init__(*args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
            f".{int(record.msecs):03d}Z"
        )


class TextFormatter(logging.Formatter):
    """For a terminal (LOG_FORMAT=text): the plain line, with the trace id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        return f"{line} trace_id={trace_id}" if trace_id else line


# --- the access log ---------------------------------------------------------------------------

access_logger = logging.getLogger("portal.access")
QUIET_PATHS = ("/healthz/", "/metrics")


class AccessLogMiddleware:
    """One line per request: method, route template (not the path: no ids or tracking tokens),
    status and latency; and the request latency metric by route and status. Outermost, so the
    time covers every other middleware. Probes and /metrics are counted but not logged."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from portal import metrics

        started = time.perf_counter()
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        route = f"/{match.route}" if match is not None and match.route else "unmatched"
        status = response.status_code
        metrics.HTTP_REQUEST_SECONDS.observe(
            seconds, method=request.method or "", route=route, status=str(status)
        )
        if not request.path.startswith(QUIET_PATHS):
            access_logger.info(
                "%s %s %s %.1f ms",
                request.method,
                route,
                status,
                seconds * 1000,
                extra={
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
        return response


def console_handler_parts() -> tuple[logging.Formatter, list[logging.Filter]]:
    """The formatter and filters of settings' console handler, for loggers Django's LOGGING does
    not reach (gunicorn's own, configured before the application is loaded)."""
    import os

    if (os.environ.get("LOG_FORMAT") or "json").lower() == "text":
        formatter: logging.Formatter = TextFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    else:
        formatter = JsonFormatter()
    return formatter, [RedactSecrets(), TraceContext()]

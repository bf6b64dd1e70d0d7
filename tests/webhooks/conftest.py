"""A business's webhook receiver: a real HTTP server on 127.0.0.1 that verifies every signature
with the `standardwebhooks` library, as a receiver would."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devtools.localservices import free_port
from webhooks.services import endpoints_cache_clear


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    port: int
    secret: str = ""
    # Answer this many requests with 500 before taking them.
    fail_next: int = 0
    # HTTP/1.1 keeping connections open, as most servers do; else HTTP/1.0, one per request.
    keep_alive: bool = False
    # The sender's end of every connection made to it.
    connections: set[tuple[str, int]] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    # The events processed: each webhook-id once, however often it arrives.
    processed: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/fabrikam"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    payload, verified = None, False
                with receiver.lock:
                    receiver.connections.add(self.client_address)
                    receiver.received.append(
                        Received(headers.get("webhook-id", ""), headers, body, verified)
                    )
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    elif verified:
                        seen = {p["webhook_id"] for p in receiver.processed}
                        if headers["webhook-id"] not in seen:
                            receiver.processed.append(
                                {"webhook_id": headers["webhook-id"], **payload}
                            )
                code = 500 if failing else (200 if verified else 401)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def types(self) -> list[str]:
        return [p["type"] for p in self.processed]


@pytest.fixture(autouse=True)
def webhook_settings(settings: Any) -> Iterator[None]:
    """http:// to a receiver on 127.0.0.1, and retries without waiting."""
    settings.DEBUG = True
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0
    endpoints_cache_clear()
    yield
    endpoints_cache_clear()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(port=free_port())
    receiver.start()
    yield receiver
    receiver.stop()


def payload_of(received: Received) -> Any:
    return json.loads(received.body)
